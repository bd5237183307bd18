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
//! ridge of `1e-13·max diag(H)` makes it solvable. Rows that are tight at
//! z = 0 make the method degenerate (it can cycle), so the right-hand sides
//! are relaxed by 1e-12 relative: the returned z may exceed a row by that
//! much, and callers repair it onto the exact rows. Callers certify their
//! results independently of this solver (see `kkt` and `distance`).

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

/// Relative relaxation of the rows' right-hand sides against degeneracy.
const DEGENERACY_SHIFT: f64 = 1e-12;

/// Relative tolerance on multipliers and feasibility inside the active set.
const TOL: f64 = 1e-13;

/// How hard [`qp_nonneg_with`] works on the end game.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Re-solve the final working set on the exact rows by SVD and continue
    /// (rounding-level accuracy; an O(N³) SVD).
    Exact,
    /// Stop after phase 1: a feasible, near-optimal z — enough wherever any
    /// dual-feasible point gives a valid bound, as inside a branch-and-bound.
    Fast,
}

/// Solves min ½zᵀHz − gᵀz s.t. z ≥ 0, Az ≤ b with b ≥ 0 (so z = 0 is feasible).
pub fn qp_nonneg(
    h: &DMatrix<f64>,
    g: &DVector<f64>,
    a: &DMatrix<f64>,
    b: &DVector<f64>,
) -> QpSolution {
    qp_nonneg_with(h, g, a, b, Finish::Exact)
}

/// [`qp_nonneg`] with a choice of end game.
pub fn qp_nonneg_with(
    h: &DMatrix<f64>,
    g: &DVector<f64>,
    a: &DMatrix<f64>,
    b: &DVector<f64>,
    finish: Finish,
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
    let mut st = ActiveSet::new(nv, nr);
    let max_iter = 10 * (nv + nr) + 50;
    let (mut iterations, mut converged) = st.run(h, g, a, &shifted, ridge, gscale, max_iter);
    // Phase 2: from the phase-1 working set re-solved on the exact rows,
    // continue on the exact rows (the start is feasible; a degenerate cycle
    // is now unlikely, and the barring safeguard still holds).
    if finish == Finish::Exact && converged && st.refine(h, g, a, b) {
        let (more, ok) = st.run(h, g, a, b, ridge, gscale, max_iter);
        iterations += more;
        converged = ok;
        st.refine(h, g, a, b);
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
}

impl ActiveSet {
    fn new(nv: usize, nr: usize) -> Self {
        Self {
            z: DVector::zeros(nv),
            mu: DVector::zeros(nr),
            free: vec![false; nv],
            working: vec![false; nr],
        }
    }

    /// Active-set iterations until optimality (true) or `max_iter`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        h: &DMatrix<f64>,
        g: &DVector<f64>,
        a: &DMatrix<f64>,
        b: &DVector<f64>,
        ridge: f64,
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
            let fi: Vec<usize> = (0..nv).filter(|&i| self.free[i]).collect();
            let wi: Vec<usize> = (0..nr).filter(|&k| self.working[k]).collect();
            let (target, mu_w) = solve_subproblem(h, g, a, b, &fi, &wi, ridge);
            let (alpha, block) = step_length(a, b, &self.z, &target, &fi, &self.working);
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
                    self.z[i] = 0.0;
                    self.free[i] = false;
                    // A working row left without free variables is implied by
                    // the bounds; keeping it would leave its multiplier
                    // undetermined (and the method cycling).
                    for k in 0..nr {
                        if self.working[k] && (0..nv).all(|j| !self.free[j] || a[(k, j)] == 0.0) {
                            self.working[k] = false;
                        }
                    }
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
            let grad = h * &self.z - g + a.transpose() * &self.mu;
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

    /// Re-solves the working set on the rows `b` without ridge (SVD least
    /// squares), accurate to rounding even when H is singular; adopted (and
    /// true returned) only if the result is feasible for those rows.
    fn refine(
        &mut self,
        h: &DMatrix<f64>,
        g: &DVector<f64>,
        a: &DMatrix<f64>,
        b: &DVector<f64>,
    ) -> bool {
        let fi: Vec<usize> = (0..self.z.len()).filter(|&i| self.free[i]).collect();
        let wi: Vec<usize> = (0..self.mu.len()).filter(|&k| self.working[k]).collect();
        if fi.is_empty() {
            return (a * &self.z - b).iter().all(|&v| v <= 0.0);
        }
        let (hff, gf) = restrict(h, g, &fi);
        let (k, rhs) = kkt_system(&hff, &gf, a, b, &fi, &wi);
        let sol = lstsq(&k, &rhs);
        let mut cand = self.z.clone();
        for (t, &i) in fi.iter().enumerate() {
            cand[i] = sol[t].max(0.0);
        }
        let scale = 1e-12 * (1.0 + cand.amax());
        let feasible = sol.rows(0, fi.len()).iter().all(|&v| v >= -scale)
            && (a * &cand - b).iter().all(|&v| v <= scale)
            && sol.iter().all(|v| v.is_finite());
        if feasible {
            self.z = cand;
            for (t, &k) in wi.iter().enumerate() {
                self.mu[k] = sol[fi.len() + t];
            }
        }
        feasible
    }
}

/// The largest step in [0, 1] from z toward `target` (on the free
/// variables) that keeps z ≥ 0 and the non-working rows, and what blocks it.
fn step_length(
    a: &DMatrix<f64>,
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
    for (t, &i) in fi.iter().enumerate() {
        let p = target[t] - z[i];
        if target[t] < -ztol && p < 0.0 {
            let s = z[i] / -p;
            if s < alpha {
                alpha = s;
                block = Some(Block::Bound(i));
            }
        }
    }
    for k in (0..a.nrows()).filter(|&k| !working[k]) {
        let ap: f64 = fi
            .iter()
            .enumerate()
            .map(|(t, &i)| a[(k, i)] * (target[t] - z[i]))
            .sum();
        if ap > TOL * (1.0 + b[k].abs()) {
            let slack = b[k] - fi.iter().map(|&i| a[(k, i)] * z[i]).sum::<f64>();
            let s = slack.max(0.0) / ap;
            if s < alpha {
                alpha = s;
                block = Some(Block::Row(k));
            }
        }
    }
    (alpha, block)
}

#[derive(Clone, Copy, PartialEq, Eq)]
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
    let (mut hff, gf) = restrict(h, g, fi);
    if nw == 0 {
        if let Some(ch) = hff
            .clone()
            .cholesky()
            .filter(|ch| well_conditioned(ch, &hff))
        {
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
    let (k, rhs) = kkt_system(&hff, &gf, a, b, fi, wi);
    let sol = k
        .clone()
        .lu()
        .solve(&rhs)
        .unwrap_or_else(|| lstsq(&k, &rhs));
    (sol.rows(0, nf).into_owned(), sol.rows(nf, nw).into_owned())
}

/// H and g restricted to the free variables `fi`.
fn restrict(h: &DMatrix<f64>, g: &DVector<f64>, fi: &[usize]) -> (DMatrix<f64>, DVector<f64>) {
    let nf = fi.len();
    (
        DMatrix::from_fn(nf, nf, |r, c| h[(fi[r], fi[c])]),
        DVector::from_fn(nf, |r, _| g[fi[r]]),
    )
}

/// The KKT matrix [[H_FF, A_WFᵀ], [A_WF, 0]] and right-hand side [g_F; b_W].
fn kkt_system(
    hff: &DMatrix<f64>,
    gf: &DVector<f64>,
    a: &DMatrix<f64>,
    b: &DVector<f64>,
    fi: &[usize],
    wi: &[usize],
) -> (DMatrix<f64>, DVector<f64>) {
    let (nf, nw) = (fi.len(), wi.len());
    let dim = nf + nw;
    let mut k = DMatrix::zeros(dim, dim);
    k.view_mut((0, 0), (nf, nf)).copy_from(hff);
    let mut rhs = DVector::zeros(dim);
    rhs.rows_mut(0, nf).copy_from(gf);
    for (t, &row) in wi.iter().enumerate() {
        for (s, &i) in fi.iter().enumerate() {
            k[(nf + t, s)] = a[(row, i)];
            k[(s, nf + t)] = a[(row, i)];
        }
        rhs[nf + t] = b[row];
    }
    (k, rhs)
}

/// A Cholesky factor whose pivots all keep a fair share of their diagonal
/// (a tiny pivot means H_FF is numerically singular: duplicated columns).
fn well_conditioned(ch: &nalgebra::Cholesky<f64, nalgebra::Dyn>, h: &DMatrix<f64>) -> bool {
    let l = ch.l_dirty();
    (0..h.nrows()).all(|i| l[(i, i)] * l[(i, i)] > 1e-10 * h[(i, i)])
}

/// Minimum-norm least-squares solution through the SVD (the rare singular case).
fn lstsq(m: &DMatrix<f64>, r: &DVector<f64>) -> DVector<f64> {
    let svd = m.clone().svd(true, true);
    let eps = 1e-14 * svd.singular_values.max();
    svd.solve(r, eps)
        .unwrap_or_else(|_| DVector::zeros(m.ncols()))
}

/// Lawson–Hanson NNLS on the matrix itself: min ‖E u − f‖ over u ≥ 0.
///
/// Unlike [`qp_nonneg`] on the normal equations, this never forms EᵀE, so it keeps the accuracy of E
/// when columns are (nearly) dependent — duplicated or opposite constraints
/// in a least-distance program. The passive least-squares problems are
/// solved by SVD; a column whose entry comes out non-positive right after it
/// entered is barred until the next change (Lawson & Hanson's safeguard).
pub fn nnls(e: &DMatrix<f64>, f: &DVector<f64>) -> DVector<f64> {
    let n = e.ncols();
    let mut x: DVector<f64> = DVector::zeros(n);
    let mut passive = vec![false; n];
    let mut barred = vec![false; n];
    let tol = 10.0
        * f64::EPSILON
        * e.amax().max(f64::MIN_POSITIVE)
        * (e.nrows().max(n) as f64)
        * f.amax().max(1.0);
    for _ in 0..3 * n + 10 {
        let w = e.transpose() * (f - e * &x);
        let Some(t) = (0..n)
            .filter(|&j| !passive[j] && !barred[j] && w[j] > tol)
            .max_by(|&a, &b| w[a].total_cmp(&w[b]))
        else {
            break;
        };
        passive[t] = true;
        let mut entered = Some(t);
        loop {
            let pi: Vec<usize> = (0..n).filter(|&j| passive[j]).collect();
            let sp = lstsq(&e.select_columns(&pi), f);
            if let Some(t) = entered.take() {
                let pos = pi.iter().position(|&j| j == t).expect("t is passive");
                if sp[pos] <= 0.0 {
                    passive[t] = false;
                    barred[t] = true;
                    break;
                }
            }
            if sp.iter().all(|&v| v > 0.0) {
                x.fill(0.0);
                for (k, &j) in pi.iter().enumerate() {
                    x[j] = sp[k];
                }
                barred.fill(false);
                break;
            }
            let alpha = pi
                .iter()
                .enumerate()
                .filter(|(k, _)| sp[*k] <= 0.0)
                .map(|(k, &j)| x[j] / (x[j] - sp[k]))
                .fold(f64::INFINITY, f64::min);
            for (k, &j) in pi.iter().enumerate() {
                x[j] += alpha * (sp[k] - x[j]);
                if x[j] <= tol {
                    x[j] = 0.0;
                    passive[j] = false;
                }
            }
        }
    }
    x
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
    let (rows, d) = (gm.nrows(), gm.ncols());
    let mut e = DMatrix::zeros(d + 1, rows);
    e.view_mut((0, 0), (d, rows)).copy_from(&gm.transpose());
    e.row_mut(d).copy_from(&h.transpose());
    let mut f = DVector::zeros(d + 1);
    f[d] = 1.0;
    let u = nnls(&e, &f);
    let r = &e * &u - f;
    if r[d] >= 0.0 {
        return Ldp::Infeasible;
    }
    // Near-infeasible systems leave r_{d+1} at rounding level with a huge,
    // wrong x: a feasible optimum satisfies its constraints, so check them.
    let x = r.rows(0, d) / -r[d];
    let scale = 1e-9 * (1.0 + h.amax() + gm.amax() * x.amax());
    if (gm * &x - h).iter().all(|&v| v >= -scale) {
        Ldp::Solution(x)
    } else {
        Ldp::Infeasible
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
