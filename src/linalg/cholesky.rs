//! A dense Cholesky factorisation L Lᵀ = S, blocked so that most of its
//! n³/3 multiply-adds run in matrixmultiply's register-tiled dgemm.
//!
//! The quadratic bound of the distance search factorises one matrix of
//! order |F| (the free hurting neurons, 500 and more on width-1000 nets)
//! per evaluation, and that factorisation was four fifths of the search's
//! time. nalgebra's factorisation is unblocked (a column at a time, 4.7 ms
//! at n = 538 on this machine); this one factors a panel of [`BLOCK`]
//! columns left-looking, with contiguous column updates, and then updates
//! the trailing lower triangle by dgemm in [`BLOCK`]-wide column strips
//! (2.0 ms at n = 538).
//!
//! Rounding: every entry is still a_ij − Σ_p l_ip l_jp, evaluated in some
//! order of its partial sums (a panel's dgemm sums its block's terms, then
//! subtracts them), so the standard backward-error bound of Cholesky,
//! |ΔS| ≤ γ_{n+1}|L||Lᵀ| (Higham, Thm 10.3), which holds for any order of
//! the inner products, holds here too. That is what Rump's positive
//! definiteness test, used by `quadratic`, rests on.

use nalgebra::{DMatrix, DVector};

/// Columns per panel: small enough for the panel's left-looking updates to
/// stay in cache, large enough for dgemm to reach its speed.
const BLOCK: usize = 32;

/// The lower Cholesky factor of a symmetric positive definite matrix.
pub(crate) struct Cholesky {
    /// Column-major, lower triangle (the upper holds stale entries of S).
    l: DMatrix<f64>,
}

impl Cholesky {
    /// Factors `s` (only its lower triangle is read), or `None` when a pivot
    /// is not positive: `s` is then not (numerically) positive definite.
    pub(crate) fn new(mut s: DMatrix<f64>) -> Option<Self> {
        let n = s.nrows();
        assert_eq!(n, s.ncols(), "square matrix");
        let mut k = 0;
        while k < n {
            let b = BLOCK.min(n - k);
            factor_panel(&mut s, k, b)?;
            update_trailing(&mut s, k, b);
            k += b;
        }
        Some(Self { l: s })
    }

    /// ln det S = 2 Σ ln L_ii.
    pub(crate) fn log_det(&self) -> f64 {
        self.l.diagonal().iter().map(|d| 2.0 * d.ln()).sum()
    }

    /// The order n.
    pub(crate) fn order(&self) -> usize {
        self.l.nrows()
    }

    /// S⁻¹ y, by forward and back substitution.
    pub(crate) fn solve(&self, y: &DVector<f64>) -> DVector<f64> {
        let n = self.order();
        let l = self.l.as_slice();
        let mut x = y.clone();
        self.forward(x.as_mut_slice(), 0);
        for j in (0..n).rev() {
            let col = &l[j * n..(j + 1) * n];
            let dot: f64 = (j + 1..n).map(|i| col[i] * x[i]).sum();
            x[j] = (x[j] - dot) / col[j];
        }
        x
    }

    /// The diagonal of S⁻¹ = L⁻ᵀL⁻¹: (S⁻¹)_ii = ‖L⁻¹e_i‖², one forward
    /// substitution per column from row i down (n³/3 multiply-adds).
    pub(crate) fn inverse_diagonal(&self) -> DVector<f64> {
        let n = self.order();
        let mut y = vec![0.0; n];
        DVector::from_iterator(
            n,
            (0..n).map(|i| {
                y[i..].fill(0.0);
                y[i] = 1.0;
                self.forward(&mut y, i);
                y[i..].iter().map(|v| v * v).sum()
            }),
        )
    }

    /// L y = b in place (b in `y`), for a b that is zero above row `from`:
    /// the substitution starts there. Column-oriented, so each step is a
    /// contiguous axpy.
    fn forward(&self, y: &mut [f64], from: usize) {
        let n = self.order();
        let l = self.l.as_slice();
        for j in from..n {
            let col = &l[j * n..(j + 1) * n];
            y[j] /= col[j];
            let yj = y[j];
            for (yr, lr) in y[j + 1..].iter_mut().zip(&col[j + 1..]) {
                *yr -= yj * lr;
            }
        }
    }
}

/// Factors columns k..k + b from row k down, given that the trailing
/// updates of the earlier panels are applied: each column subtracts the
/// panel's earlier columns (contiguous axpys), then is scaled by its pivot.
fn factor_panel(s: &mut DMatrix<f64>, k: usize, b: usize) -> Option<()> {
    let n = s.nrows();
    let a = s.as_mut_slice();
    for j in k..k + b {
        let (done, rest) = a.split_at_mut(j * n);
        let col = &mut rest[..n];
        for p in k..j {
            let prev = &done[p * n..(p + 1) * n];
            let ljp = prev[j];
            for i in j..n {
                col[i] -= ljp * prev[i];
            }
        }
        let pivot = col[j];
        if pivot.is_nan() || pivot <= 0.0 || pivot.is_infinite() {
            return None;
        }
        let d = pivot.sqrt();
        col[j] = d;
        for v in &mut col[j + 1..] {
            *v /= d;
        }
    }
    Some(())
}

/// S₂₂ −= L₂₁L₂₁ᵀ on the lower triangle of the trailing block (rows and
/// columns from k + b), a strip of [`BLOCK`] columns per dgemm.
fn update_trailing(s: &mut DMatrix<f64>, k: usize, b: usize) {
    let n = s.nrows();
    let ld = n as isize;
    let base = s.as_mut_ptr();
    let mut c0 = k + b;
    while c0 < n {
        let w = BLOCK.min(n - c0);
        let rows = n - c0;
        // SAFETY: all offsets are inside the n × n column-major buffer: the
        // panel L[c0.., k..k+b] and L[c0..c0+w, k..k+b] are read, the strip
        // S[c0.., c0..c0+w] is written; the strip's columns (≥ k + b) are
        // disjoint from the panel's columns (< k + b).
        unsafe {
            let panel = base.add(k * n);
            matrixmultiply::dgemm(
                rows,
                b,
                w,
                -1.0,
                panel.add(c0),
                1,
                ld,
                panel.add(c0),
                ld,
                1,
                1.0,
                base.add(c0 * n + c0),
                1,
                ld,
            );
        }
        c0 += w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random symmetric positive definite matrix of order n.
    fn spd(n: usize, seed: u64) -> DMatrix<f64> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let g = DMatrix::from_fn(n, n + 3, |_, _| rng.gen_range(-1.0..1.0));
        &g * g.transpose() + DMatrix::identity(n, n) * 0.1
    }

    #[test]
    fn agrees_with_nalgebra() {
        for (n, seed) in [(1, 1), (7, 2), (32, 3), (33, 4), (100, 5), (131, 6)] {
            let s = spd(n, seed);
            let ours = Cholesky::new(s.clone()).expect("positive definite");
            let theirs = s.clone().cholesky().expect("positive definite");
            let y = DVector::from_fn(n, |i, _| (i as f64 * 0.37).sin());
            let (a, b) = (ours.solve(&y), theirs.solve(&y));
            assert!((&a - &b).norm() <= 1e-9 * b.norm(), "n = {n}");
            let inv = theirs.inverse();
            let diag = ours.inverse_diagonal();
            for i in 0..n {
                assert!(
                    (diag[i] - inv[(i, i)]).abs() <= 1e-9 * inv[(i, i)],
                    "n = {n}"
                );
            }
        }
    }

    #[test]
    fn refuses_indefinite() {
        let mut s = spd(70, 7);
        s[(50, 50)] = -1.0;
        assert!(Cholesky::new(s).is_none());
        assert!(Cholesky::new(DMatrix::from_element(1, 1, f64::NAN)).is_none());
    }
}
