//! Exact small solvers: a primal active-set method for the convex QP
//!
//! ```text
//!   minimise ½ zᵀ H z − gᵀ z   subject to   z ≥ 0,  A z ≤ b   (b ≥ 0)
//! ```
//!
//! and Lawson–Hanson's least-distance program (LDP) on top of it.
//!
//! Why hand-written: the certificates need the *exact* active set (so that the
//! multipliers are those of a vertex of the KKT system, not an interior-point
//! approximation), and the problems are small and dense (n ≤ a few hundred)
//! while their number is large (one per region in the distance search). The
//! method is Lawson–Hanson NNLS generalised to a few extra rows: bounds z_i ≥ 0
//! are handled by elimination (variables at 0 drop out of the linear algebra),
//! the general rows by a working set solved through the KKT system
//!
//! ```text
//!   [ H_FF  A_WFᵀ ] [ z_F ]   [ g_F ]
//!   [ A_WF   0    ] [ μ_W ] = [ b_W ]
//! ```
//!
//! From the feasible start z = 0 each iteration either moves to the
//! equality-constrained minimiser (then drops the constraint with the most
//! negative multiplier, or stops: all multipliers ≥ 0 is optimality) or stops
//! at the first blocking constraint and adds it. In exact arithmetic this
//! terminates with the exact optimum (finitely many working sets, strict
//! decrease). `H` need only be positive semidefinite: when a subsystem is
//! singular (and always when general rows are in the working set), a relative
//! ridge of `1e-13·max diag(H)` makes it solvable, and the callers certify
//! their results independently of this solver (see `kkt` and `distance`).

use nalgebra::{DMatrix, DVector};

/// Result of [`qp_nonneg`].
#[derive(Clone, Debug)]
pub struct QpSolution {
    /// The minimiser (z ≥ 0 exactly).
    pub z: DVector<f64>,
    /// Multipliers of the rows `A z ≤ b` (≥ 0).
    pub mu: DVector<f64>,
    /// Active-set iterations used.
    pub iterations: usize,
    /// False if the iteration limit stopped the method.
    pub converged: bool,
}

/// Relative tolerance on multipliers and feasibility inside the active set.
const TOL: f64 = 1e-13;

/// Solves min ½zᵀHz − gᵀz s.t. z ≥ 0, Az ≤ b with b ≥ 0 (so z = 0 is feasible).
pub fn qp_nonneg(
    h: &DMatrix<f64>,
    g: &DVector<f64>,
    a: &DMatrix<f64>,
    b: &DVector<f64>,
) -> QpSolution {
    let nv = h.nrows();
    let nr = a.nrows();
    debug_assert!(b.iter().all(|&x| x >= 0.0));
    let hscale = h
        .diagonal()
        .iter()
        .cloned()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let ridge = 1e-13 * hscale;
    let gscale = g.amax().max(f64::MIN_POSITIVE);
    let mut z: DVector<f64> = DVector::zeros(nv);
    let mut free = vec![false; nv];
    let mut working = vec![false; nr];
    let mut mu: DVector<f64> = DVector::zeros(nr);
    let max_iter = 10 * (nv + nr) + 50;
    for it in 0..max_iter {
        let fi: Vec<usize> = (0..nv).filter(|&i| free[i]).collect();
        let wi: Vec<usize> = (0..nr).filter(|&k| working[k]).collect();
        let (target, mu_w): (DVector<f64>, DVector<f64>) =
            solve_subproblem(h, g, a, b, &fi, &wi, ridge);
        // Largest step toward the target that keeps z feasible.
        let mut alpha = 1.0;
        let mut block: Option<Block> = None;
        for (t, &i) in fi.iter().enumerate() {
            let p = target[t] - z[i];
            if target[t] < 0.0 && p < 0.0 {
                let s = z[i] / -p;
                if s < alpha {
                    alpha = s;
                    block = Some(Block::Bound(i));
                }
            }
        }
        for k in (0..nr).filter(|&k| !working[k]) {
            let ap: f64 = fi
                .iter()
                .enumerate()
                .map(|(t, &i)| a[(k, i)] * (target[t] - z[i]))
                .sum();
            let slack = b[k] - fi.iter().map(|&i| a[(k, i)] * z[i]).sum::<f64>();
            if ap > TOL * (1.0 + b[k].abs()) {
                let s = (slack.max(0.0)) / ap;
                if s < alpha {
                    alpha = s;
                    block = Some(Block::Row(k));
                }
            }
        }
        for (t, &i) in fi.iter().enumerate() {
            z[i] += alpha * (target[t] - z[i]);
        }
        match block {
            Some(Block::Bound(i)) => {
                z[i] = 0.0;
                free[i] = false;
            }
            Some(Block::Row(k)) => working[k] = true,
            None => {
                // At the subproblem's minimiser: check the multipliers.
                mu.fill(0.0);
                for (t, &k) in wi.iter().enumerate() {
                    mu[k] = mu_w[t];
                }
                let grad = h * &z - g + a.transpose() * &mu;
                // Bound multipliers ν_i = grad_i for i not free; row multipliers μ_k.
                let worst_bound = (0..nv)
                    .filter(|&i| !free[i])
                    .map(|i| (grad[i], i))
                    .min_by(|x, y| x.0.total_cmp(&y.0));
                let worst_row = wi
                    .iter()
                    .map(|&k| (mu[k], k))
                    .min_by(|x, y| x.0.total_cmp(&y.0));
                let bound_bad = worst_bound.filter(|(v, _)| *v < -TOL * gscale);
                let row_bad = worst_row.filter(|(v, _)| *v < -TOL * gscale);
                match (bound_bad, row_bad) {
                    (None, None) => {
                        mu.iter_mut().for_each(|m| *m = m.max(0.0));
                        return QpSolution {
                            z,
                            mu,
                            iterations: it + 1,
                            converged: true,
                        };
                    }
                    (Some((vb, i)), Some((vr, k))) => {
                        if vb <= vr {
                            free[i] = true
                        } else {
                            working[k] = false
                        }
                    }
                    (Some((_, i)), None) => free[i] = true,
                    (None, Some((_, k))) => working[k] = false,
                }
            }
        }
    }
    mu.iter_mut().for_each(|m| *m = m.max(0.0));
    QpSolution {
        z,
        mu,
        iterations: max_iter,
        converged: false,
    }
}

enum Block {
    Bound(usize),
    Row(usize),
}

/// Solves the equality-constrained subproblem on free variables `fi` and
/// working rows `wi`; returns (z_F, μ_W).
fn solve_subproblem(
    h: &DMatrix<f64>,
    g: &DVector<f64>,
    a: &DMatrix<f64>,
    b: &DVector<f64>,
    fi: &[usize],
    wi: &[usize],
    ridge: f64,
) -> (DVector<f64>, DVector<f64>) {
    let (nf, nw) = (fi.len(), wi.len());
    if nf == 0 {
        return (DVector::zeros(0), DVector::zeros(nw));
    }
    let mut hff = DMatrix::from_fn(nf, nf, |r, c| h[(fi[r], fi[c])]);
    let gf = DVector::from_fn(nf, |r, _| g[fi[r]]);
    if nw == 0 {
        if let Some(ch) = hff.clone().cholesky() {
            return (ch.solve(&gf), DVector::zeros(0));
        }
    }
    // Singular or constrained: the ridge keeps the system solvable.
    for r in 0..nf {
        hff[(r, r)] += ridge;
    }
    if nw == 0 {
        let sol = match hff.clone().cholesky() {
            Some(ch) => ch.solve(&gf),
            None => lstsq(&hff, &gf),
        };
        return (sol, DVector::zeros(0));
    }
    let dim = nf + nw;
    let mut k = DMatrix::zeros(dim, dim);
    k.view_mut((0, 0), (nf, nf)).copy_from(&hff);
    let mut rhs = DVector::zeros(dim);
    rhs.rows_mut(0, nf).copy_from(&gf);
    for (t, &row) in wi.iter().enumerate() {
        for (s, &i) in fi.iter().enumerate() {
            k[(nf + t, s)] = a[(row, i)];
            k[(s, nf + t)] = a[(row, i)];
        }
        rhs[nf + t] = b[row];
    }
    let sol = k
        .clone()
        .lu()
        .solve(&rhs)
        .unwrap_or_else(|| lstsq(&k, &rhs));
    (sol.rows(0, nf).into_owned(), sol.rows(nf, nw).into_owned())
}

/// Minimum-norm least-squares solution through the SVD (the rare singular case).
fn lstsq(m: &DMatrix<f64>, r: &DVector<f64>) -> DVector<f64> {
    let svd = m.clone().svd(true, true);
    let eps = 1e-12 * svd.singular_values.max();
    svd.solve(r, eps)
        .unwrap_or_else(|_| DVector::zeros(m.ncols()))
}

/// Non-negative least squares on the normal equations:
/// min ‖f − E z‖ over z ≥ 0 given H = EᵀE and g = Eᵀf.
pub fn nnls_gram(h: &DMatrix<f64>, g: &DVector<f64>) -> QpSolution {
    let none = DMatrix::zeros(0, h.nrows());
    qp_nonneg(h, g, &none, &DVector::zeros(0))
}

/// Result of a least-distance program.
#[derive(Clone, Debug)]
pub enum Ldp {
    /// The minimiser x with G x ≥ h.
    Solution(DVector<f64>),
    /// {x : G x ≥ h} is empty (certified by the NNLS residual).
    Infeasible,
}

/// Lawson–Hanson LDP: min ‖x‖ s.t. G x ≥ h (G has one constraint per row).
///
/// Solves NNLS min ‖Eu − f‖, u ≥ 0 with E = [Gᵀ; hᵀ] and f = e_{d+1};
/// with r = Eu − f, r_{d+1} = 0 means infeasible and x = −r_{1..d}/r_{d+1}
/// otherwise (Lawson & Hanson, *Solving Least Squares Problems*, ch. 23).
pub fn ldp(gm: &DMatrix<f64>, h: &DVector<f64>) -> Ldp {
    let hh = gm * gm.transpose() + h * h.transpose();
    // Eᵀf = h (the last row of E).
    let sol = nnls_gram(&hh, h);
    let u = &sol.z;
    let r_last = h.dot(u) - 1.0;
    if r_last.abs() < 1e-12 {
        return Ldp::Infeasible;
    }
    let x = gm.transpose() * u / -r_last;
    Ldp::Solution(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_small_known() {
        // E = I, f = (1, -2) → z = (1, 0).
        let h = DMatrix::identity(2, 2);
        let g = DVector::from_vec(vec![1.0, -2.0]);
        let s = nnls_gram(&h, &g);
        assert!((s.z[0] - 1.0).abs() < 1e-14 && s.z[1] == 0.0);
    }

    #[test]
    fn row_constraint_binds() {
        // min ½‖z − (1,1)‖² s.t. z1 + z2 ≤ 1 → (0.5, 0.5), μ = 0.5.
        let h = DMatrix::identity(2, 2);
        let g = DVector::from_vec(vec![1.0, 1.0]);
        let a = DMatrix::from_row_slice(1, 2, &[1.0, 1.0]);
        let s = qp_nonneg(&h, &g, &a, &DVector::from_vec(vec![1.0]));
        assert!((s.z[0] - 0.5).abs() < 1e-14 && (s.z[1] - 0.5).abs() < 1e-14);
        assert!((s.mu[0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn ldp_halfspace() {
        // min ‖x‖ s.t. x1 + x2 ≥ 2 → (1, 1).
        let gm = DMatrix::from_row_slice(1, 2, &[1.0, 1.0]);
        match ldp(&gm, &DVector::from_vec(vec![2.0])) {
            Ldp::Solution(x) => assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12),
            Ldp::Infeasible => panic!("feasible"),
        }
        // x1 ≥ 1 and −x1 ≥ 0 is empty.
        let gm = DMatrix::from_row_slice(2, 1, &[1.0, -1.0]);
        assert!(matches!(
            ldp(&gm, &DVector::from_vec(vec![1.0, 0.0])),
            Ldp::Infeasible
        ));
    }
}
