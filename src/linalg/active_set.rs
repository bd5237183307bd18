//! The general active-set method for the convex QP
//!
//! ```text
//!   minimise ½ zᵀ H z − gᵀ z   subject to   z ≥ 0,  A z ≤ b   (b ≥ 0)
//! ```
//!
//! with general rows — the oracle the tests hold [`super::qp_capped`]
//! against. No production path calls it: both certificates' duals have only
//! cap rows z_a ≤ c·z_m, which the capped method eliminates instead of
//! carrying.
//!
//! Why hand-written: the certificates need the *exact* active set (so that the
//! multipliers are those of a vertex of the KKT system, not an interior-point
//! approximation), and the problems are small and dense (n ≤ a few thousand)
//! while their number is large (one per node in the distance search). The
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
//! decrease). `H` need only be positive semidefinite: a relative ridge of
//! `1e-13·max diag(H)` keeps every subsystem solvable. The subsystems are
//! not factorised from scratch: a Cholesky factor L Lᵀ = H_FF is kept in
//! the order the variables were freed and updated when one enters (a
//! forward substitution) or leaves (deleting its row, then a stable
//! rank-one update of the trailing block), O(|F|²) per iteration instead of
//! O(|F|³). Working rows enter through their Schur complement
//! A_W H_FF⁻¹ A_Wᵀ; a singular H_FF or Schur complement makes the method
//! factorise the ridged KKT system afresh instead. The end game re-solves
//! the final working set without the ridge, through a fresh Cholesky factor
//! and the rows' Schur complement (SVD least squares if H_FF is singular).
//! Rows that are tight at z = 0 make the method degenerate (it can cycle),
//! so the right-hand sides are relaxed by 1e-12 relative: the returned z
//! may exceed a row by that much, and callers repair it onto the exact
//! rows. Callers certify their results independently of these solvers (see
//! `kkt` and `distance`).

use super::factor::{kkt_system, Factor};
use super::lstsq::lstsq;
use super::{CLAMPED_PIVOT, DEGENERACY_SHIFT, TOL};
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
    // Rows tight at the start (b_k = 0, all of them at z = 0) make the method
    // degenerate and it can cycle; a tiny relative relaxation of b breaks the
    // ties. Callers repair z onto the exact rows (their certificates never
    // trust this solver).
    let shifted = b.map(|bk| bk + DEGENERACY_SHIFT * (1.0 + bk.abs()));
    let rows = sparse_rows(a);
    let mut st = ActiveSet::new(nv, nr, ridge);
    let max_iter = 10 * (nv + nr) + 50;
    let (mut iterations, converged) = st.run(h, g, a, &rows, &shifted, gscale, max_iter);
    // Phase 2: from the phase-1 working set re-solved on the exact rows,
    // continue on the exact rows (the start is feasible). Should it cycle on
    // rows tight at 0 after all, the re-solved phase-1 point stands: it is
    // optimal up to the 1e-12 relaxation.
    if converged && st.refine(h, g, a, b) {
        let refined = (st.z.clone(), st.mu.clone());
        let (more, ok) = st.run(h, g, a, &rows, b, gscale, nv + nr + 50);
        iterations += more;
        if ok {
            st.refine(h, g, a, b);
        } else {
            (st.z, st.mu) = refined;
        }
    }
    st.mu.iter_mut().for_each(|m| *m = m.max(0.0));
    QpSolution {
        z: st.z,
        mu: st.mu,
        iterations,
        converged,
    }
}

/// The iterate and working sets of [`qp_nonneg`].
struct ActiveSet {
    z: DVector<f64>,
    mu: DVector<f64>,
    free: Vec<bool>,
    working: Vec<bool>,
    /// The factor of the free variables (kept equal to `free`).
    factor: Factor,
}

impl ActiveSet {
    fn new(nv: usize, nr: usize, ridge: f64) -> Self {
        Self {
            z: DVector::zeros(nv),
            mu: DVector::zeros(nr),
            free: vec![false; nv],
            working: vec![false; nr],
            factor: Factor::new(nv, ridge),
        }
    }

    /// Active-set iterations until optimality (true) or `max_iter`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        h: &DMatrix<f64>,
        g: &DVector<f64>,
        a: &DMatrix<f64>,
        rows: &SparseRows,
        b: &DVector<f64>,
        gscale: f64,
        max_iter: usize,
    ) -> (usize, bool) {
        let (nv, nr) = (self.z.len(), self.mu.len());
        // Lawson–Hanson's safeguard against dependent columns: a constraint
        // released and immediately blocking again (zero step) is barred from
        // release until the iterate moves.
        let mut barred_bound = vec![false; nv];
        let mut barred_row = vec![false; nr];
        let mut released: Option<Block> = None;
        for it in 0..max_iter {
            let fi = self.factor.order.clone();
            let wi: Vec<usize> = (0..nr).filter(|&k| self.working[k]).collect();
            let (target, mu_w) = self.subproblem(h, g, a, b, &wi);
            let (alpha, block) = step_length(rows, b, &self.z, &target, &fi, &self.working);
            let mut moved = 0.0f64;
            for (t, &i) in fi.iter().enumerate() {
                let dz = alpha * (target[t] - self.z[i]);
                moved = moved.max(dz.abs());
                self.z[i] = (self.z[i] + dz).max(0.0);
            }
            if moved > 1e-15 * (1.0 + self.z.amax()) {
                barred_bound.fill(false);
                barred_row.fill(false);
            } else if block.is_some() && block == released {
                match block {
                    Some(Block::Bound(i)) => barred_bound[i] = true,
                    Some(Block::Row(k)) => barred_row[k] = true,
                    None => {}
                }
            }
            released = None;
            match block {
                Some(Block::Bound(i)) => {
                    self.fix(i, rows);
                    continue;
                }
                Some(Block::Row(k)) => {
                    self.working[k] = true;
                    continue;
                }
                None => {}
            }
            // At the subproblem's minimiser: check the multipliers.
            self.mu.fill(0.0);
            for (t, &k) in wi.iter().enumerate() {
                self.mu[k] = mu_w[t];
            }
            // Hz − g + Aᵀμ through the free columns and the working rows
            // only (z vanishes off F, μ off W): O(N·|F|), not O(N²).
            let mut grad = -g;
            for &i in &self.factor.order {
                grad.axpy(self.z[i], &h.column(i), 1.0);
            }
            for &k in &wi {
                for &(i, v) in &rows[k] {
                    grad[i] += self.mu[k] * v;
                }
            }
            // Bound multipliers ν_i = grad_i for i at 0; row multipliers μ_k.
            let bound_bad = (0..nv)
                .filter(|&i| !self.free[i] && !barred_bound[i])
                .map(|i| (grad[i], Block::Bound(i)));
            let row_bad = wi
                .iter()
                .filter(|&&k| !barred_row[k])
                .map(|&k| (self.mu[k], Block::Row(k)));
            let worst = bound_bad
                .chain(row_bad)
                .filter(|(v, _)| *v < -TOL * gscale)
                .min_by(|x, y| x.0.total_cmp(&y.0));
            match worst {
                None => return (it + 1, true),
                Some((_, Block::Bound(i))) => {
                    self.free[i] = true;
                    self.factor.push(h, i);
                    released = Some(Block::Bound(i));
                }
                Some((_, Block::Row(k))) => {
                    self.working[k] = false;
                    released = Some(Block::Row(k));
                }
            }
        }
        (max_iter, false)
    }

    /// The equality-constrained subproblem on the free variables and the
    /// working rows, through the updated factor and the rows' Schur
    /// complement when both are well conditioned. Otherwise H_FF + ρI (and
    /// the KKT system, if rows are working) is factorised afresh: a Schur
    /// complement through a near-singular H_FF would lose every digit.
    fn subproblem(
        &self,
        h: &DMatrix<f64>,
        g: &DVector<f64>,
        a: &DMatrix<f64>,
        b: &DVector<f64>,
        wi: &[usize],
    ) -> (DVector<f64>, DVector<f64>) {
        if self.factor.well_conditioned(h) {
            if let Some(sol) = self.factor.solve(g, a, b, wi) {
                return sol;
            }
        }
        let fi = &self.factor.order;
        let (mut hff, gf) = restrict(h, g, fi);
        for r in 0..fi.len() {
            hff[(r, r)] += self.factor.ridge;
        }
        if wi.is_empty() {
            let sol = match hff.clone().cholesky() {
                Some(ch) => ch.solve(&gf),
                None => lstsq(&hff, &gf),
            };
            return (sol, DVector::zeros(0));
        }
        let bw: Vec<f64> = wi.iter().map(|&k| b[k]).collect();
        let (k, rhs) = kkt_system(&hff, &gf, &rows_of(a, fi, wi), &bw);
        let sol = k
            .clone()
            .lu()
            .solve(&rhs)
            .unwrap_or_else(|| lstsq(&k, &rhs));
        (
            sol.rows(0, fi.len()).into_owned(),
            sol.rows(fi.len(), wi.len()).into_owned(),
        )
    }

    /// Fixes variable i at its bound 0.
    fn fix(&mut self, i: usize, rows: &SparseRows) {
        self.z[i] = 0.0;
        self.free[i] = false;
        self.factor.remove(i);
        // A working row left without free variables is implied by the
        // bounds; keeping it would leave its multiplier undetermined (and
        // the method cycling).
        for (working, row) in self.working.iter_mut().zip(rows) {
            if *working && row.iter().all(|&(j, _)| !self.free[j]) {
                *working = false;
            }
        }
    }

    /// Re-solves the working set on the rows `b` without ridge (a fresh
    /// Cholesky factor when H_FF is well conditioned, SVD least squares of
    /// the KKT system when not), accurate to rounding even when H is
    /// singular; adopted (and true returned) only if the result is feasible
    /// for those rows.
    fn refine(
        &mut self,
        h: &DMatrix<f64>,
        g: &DVector<f64>,
        a: &DMatrix<f64>,
        b: &DVector<f64>,
    ) -> bool {
        let fi = self.factor.order.clone();
        let wi: Vec<usize> = (0..self.mu.len()).filter(|&k| self.working[k]).collect();
        if fi.is_empty() {
            return (a * &self.z - b).iter().all(|&v| v <= 0.0);
        }
        let (hff, gf) = restrict(h, g, &fi);
        let (zf, mu_w) = match Factor::exact(&hff, &fi).and_then(|f| f.solve(g, a, b, &wi)) {
            Some(sol) => sol,
            None => {
                let bw: Vec<f64> = wi.iter().map(|&k| b[k]).collect();
                let (k, rhs) = kkt_system(&hff, &gf, &rows_of(a, &fi, &wi), &bw);
                let sol = lstsq(&k, &rhs);
                (
                    sol.rows(0, fi.len()).into_owned(),
                    sol.rows(fi.len(), wi.len()).into_owned(),
                )
            }
        };
        let mut cand = self.z.clone();
        for (t, &i) in fi.iter().enumerate() {
            cand[i] = zf[t].max(0.0);
        }
        let scale = 1e-12 * (1.0 + cand.amax());
        let feasible = zf.iter().all(|&v| v >= -scale)
            && (a * &cand - b).iter().all(|&v| v <= scale)
            && zf.iter().chain(mu_w.iter()).all(|v| v.is_finite());
        if feasible {
            self.z = cand;
            for (t, &k) in wi.iter().enumerate() {
                self.mu[k] = mu_w[t];
            }
        }
        feasible
    }
}

/// The largest step in [0, 1] from z toward `target` (on the free
/// variables) that keeps z ≥ 0 and the non-working rows, and what blocks it.
fn step_length(
    rows: &SparseRows,
    b: &DVector<f64>,
    z: &DVector<f64>,
    target: &DVector<f64>,
    fi: &[usize],
    working: &[bool],
) -> (f64, Option<Block>) {
    let mut alpha = 1.0;
    let mut block = None;
    // A target within rounding of 0 is 0 (the caller clamps): blocking on it
    // would re-fix a variable that a working row holds at exactly 0.
    let ztol = 1e-14 * (1.0 + z.amax() + target.amax());
    let mut dz = vec![0.0; z.len()];
    for (t, &i) in fi.iter().enumerate() {
        let p = target[t] - z[i];
        dz[i] = p;
        if target[t] < -ztol && p < 0.0 {
            let s = z[i] / -p;
            if s < alpha {
                alpha = s;
                block = Some(Block::Bound(i));
            }
        }
    }
    // z vanishes off F, so the rows' sums run over their nonzeros.
    for (k, row) in rows.iter().enumerate().filter(|&(k, _)| !working[k]) {
        let ap: f64 = row.iter().map(|&(i, v)| v * dz[i]).sum();
        if ap > TOL * (1.0 + b[k].abs()) {
            let slack = b[k] - row.iter().map(|&(i, v)| v * z[i]).sum::<f64>();
            let s = slack.max(0.0) / ap;
            if s < alpha {
                alpha = s;
                block = Some(Block::Row(k));
            }
        }
    }
    (alpha, block)
}

/// The rows of A as (column, value) lists of their nonzeros: the
/// certificate's rows γ_a − λ_i ≤ 0 have two, and a column-major dense
/// row is a strided walk.
type SparseRows = Vec<Vec<(usize, f64)>>;

fn sparse_rows(a: &DMatrix<f64>) -> SparseRows {
    (0..a.nrows())
        .map(|k| {
            (0..a.ncols())
                .filter(|&i| a[(k, i)] != 0.0)
                .map(|i| (i, a[(k, i)]))
                .collect()
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Bound(usize),
    Row(usize),
}

/// H and g restricted to the free variables `fi`.
fn restrict(h: &DMatrix<f64>, g: &DVector<f64>, fi: &[usize]) -> (DMatrix<f64>, DVector<f64>) {
    let nf = fi.len();
    (
        DMatrix::from_fn(nf, nf, |r, c| h[(fi[r], fi[c])]),
        DVector::from_fn(nf, |r, _| g[fi[r]]),
    )
}

/// The working rows `wi` of A restricted to the free variables `fi`.
fn rows_of(a: &DMatrix<f64>, fi: &[usize], wi: &[usize]) -> Vec<Vec<f64>> {
    wi.iter()
        .map(|&k| fi.iter().map(|&i| a[(k, i)]).collect())
        .collect()
}

impl Factor {
    /// Every pivot keeps a fair share of its diagonal (as the free function
    /// `well_conditioned` checks a fresh factor)
    /// and stays well above the ridge (a zero column's pivot is √ρ, which
    /// is a fair share of nothing).
    pub(super) fn well_conditioned(&self, h: &DMatrix<f64>) -> bool {
        self.thin_pivot(|i| h[(i, i)], CLAMPED_PIVOT).is_none()
    }

    /// Frees variable i: appends its row, L₂₁ = L⁻¹ H_Fi and
    /// l₂₂ = √(h_ii − ‖L₂₁‖²), clamped at √ρ for a (numerically) dependent
    /// column, which [`Factor::well_conditioned`] then reports.
    pub(super) fn push(&mut self, h: &DMatrix<f64>, i: usize) {
        let row: Vec<f64> = self.order.iter().map(|&j| h[(j, i)]).collect();
        self.append(i, row, h[(i, i)], h.nrows());
    }

    /// The equality-constrained subproblem on the free variables and the
    /// working rows `wi` of A z ≤ b ([`Factor::solve_rows`] on them).
    /// Returns (z_F in `order`, μ_W).
    pub(super) fn solve(
        &self,
        g: &DVector<f64>,
        a: &DMatrix<f64>,
        b: &DVector<f64>,
        wi: &[usize],
    ) -> Option<(DVector<f64>, DVector<f64>)> {
        let t = self.order.iter().map(|&i| g[i]).collect();
        let bw: Vec<f64> = wi.iter().map(|&k| b[k]).collect();
        let (y, mu) = self.solve_rows(t, &rows_of(a, &self.order, wi), &bw)?;
        Some((DVector::from_vec(y), DVector::from_vec(mu)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_small_known() {
        // E = I, f = (1, -2) → z = (1, 0).
        let h = DMatrix::identity(2, 2);
        let g = DVector::from_vec(vec![1.0, -2.0]);
        let s = qp_nonneg(&h, &g, &DMatrix::zeros(0, 2), &DVector::zeros(0));
        assert!((s.z[0] - 1.0).abs() < 1e-14 && s.z[1] == 0.0);
    }

    #[test]
    fn row_constraint_binds() {
        // min ½‖z − (1,1)‖² s.t. z1 + z2 ≤ 1 → (0.5, 0.5), μ = 0.5.
        let h = DMatrix::identity(2, 2);
        let g = DVector::from_vec(vec![1.0, 1.0]);
        let a = DMatrix::from_row_slice(1, 2, &[1.0, 1.0]);
        let s = qp_nonneg(&h, &g, &a, &DVector::from_vec(vec![1.0]));
        assert!((s.z[0] - 0.5).abs() < 1e-11 && (s.z[1] - 0.5).abs() < 1e-11);
        assert!((s.mu[0] - 0.5).abs() < 1e-11);
    }

    /// Independent optimality check of a convex QP solution: primal
    /// feasibility, stationarity with ν = Hz − g + Aᵀμ ≥ 0 on the bounds,
    /// ν = 0 where z > 0, μ ≥ 0, and complementarity on the rows.
    fn kkt_residual(
        h: &DMatrix<f64>,
        g: &DVector<f64>,
        a: &DMatrix<f64>,
        b: &DVector<f64>,
        s: &QpSolution,
    ) -> f64 {
        let nu = h * &s.z - g + a.transpose() * &s.mu;
        let slack = b - a * &s.z;
        let mut worst = 0.0f64;
        for i in 0..s.z.len() {
            worst = worst.max((-s.z[i]).max(0.0)).max((-nu[i]).max(0.0));
            worst = worst.max((s.z[i] * nu[i]).abs());
        }
        for k in 0..s.mu.len() {
            worst = worst.max((-slack[k]).max(0.0)).max((-s.mu[k]).max(0.0));
            worst = worst.max((s.mu[k] * slack[k]).abs());
        }
        worst
    }

    /// A random PSD QP (rank r ≤ n: duplicated columns are common) with a
    /// few rows of the kkt/distance shapes (b ≥ 0).
    fn random_qp(seed: u64) -> (DMatrix<f64>, DVector<f64>, DMatrix<f64>, DVector<f64>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = rng.gen_range(1..30);
        let r = rng.gen_range(1..=n + 3);
        let mut e = DMatrix::from_fn(r, n, |_, _| rng.gen_range(-1.0..1.0));
        if n > 2 && rng.gen_bool(0.5) {
            let c = e.column(0).into_owned();
            e.set_column(n - 1, &c);
        }
        let f = DVector::from_fn(r, |_, _| rng.gen_range(-1.0..1.0));
        if rng.gen_bool(0.3) {
            // The distance search's caps: z_{1+j} − cap_j z_0 ≤ 0, all tight at 0.
            let nr = rng.gen_range(1..n.max(2));
            let mut a = DMatrix::zeros(nr, n);
            for r in 0..nr.min(n - 1) {
                a[(r, r + 1)] = 1.0;
                a[(r, 0)] = -rng.gen_range(0.0..2.0);
            }
            return (e.transpose() * &e, e.transpose() * f, a, DVector::zeros(nr));
        }
        let nr = rng.gen_range(0..4);
        let a = DMatrix::from_fn(nr, n, |_, _| {
            if rng.gen_bool(0.4) {
                rng.gen_range(-1.0..1.0)
            } else {
                0.0
            }
        });
        let b = DVector::from_fn(nr, |_, _| {
            if rng.gen_bool(0.5) {
                0.0
            } else {
                rng.gen_range(0.0..1.0)
            }
        });
        (e.transpose() * &e, e.transpose() * f, a, b)
    }

    #[test]
    fn factor_updates_match_the_matrix() {
        let (h, _, _, _) = random_qp(7);
        let n = h.nrows();
        let h = h + DMatrix::identity(n, n);
        let mut f = Factor::new(n, 0.0);
        let ops: Vec<(bool, usize)> = (0..n)
            .map(|i| (true, i))
            .chain([
                (false, 2),
                (false, 0),
                (true, 0),
                (false, n - 1),
                (false, 5),
            ])
            .collect();
        for (add, i) in ops {
            if i >= n {
                continue;
            }
            if add {
                f.push(&h, i);
            } else {
                f.remove(i);
            }
            let k = f.len();
            let l = f.l.view((0, 0), (k, k)).lower_triangle();
            let got = &l * l.transpose();
            let want = DMatrix::from_fn(k, k, |r, c| h[(f.order[r], f.order[c])]);
            assert!((got - want).amax() < 1e-10, "after {add} {i}");
        }
    }

    #[test]
    fn updated_factor_solutions_satisfy_kkt() {
        for seed in 0..2000 {
            let (h, g, a, b) = random_qp(seed);
            let what = "qp_nonneg";
            {
                let s = qp_nonneg(&h, &g, &a, &b);
                let scale = 1.0 + h.amax() + g.amax();
                let res = kkt_residual(&h, &g, &a, &b, &s);
                assert!(
                    s.converged && res <= 1e-9 * scale,
                    "seed {seed} {what}: KKT residual {res:e} converged {} it {}",
                    s.converged,
                    s.iterations
                );
            }
        }
    }

    #[test]
    fn coupled_row_at_origin() {
        // min ½‖(μ, α)‖² + μ − 2α  s.t. α ≤ μ, z ≥ 0 → optimum μ = α = 0.5.
        let h = DMatrix::identity(2, 2);
        let g = DVector::from_vec(vec![-1.0, 2.0]);
        let a = DMatrix::from_row_slice(1, 2, &[-1.0, 1.0]);
        let s = qp_nonneg(&h, &g, &a, &DVector::zeros(1));
        assert!((s.z[0] - 0.5).abs() < 1e-9 && (s.z[1] - 0.5).abs() < 1e-9);
    }
}
