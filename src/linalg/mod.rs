//! Exact small solvers: a primal active-set method for the convex QP
//!
//! ```text
//!   minimise ½ zᵀ H z − gᵀ z   subject to   z ≥ 0,  A z ≤ b   (b ≥ 0)
//! ```
//!
//! ([`qp_nonneg`]), its variant for rows that cap one variable by another
//! ([`qp_capped`], what both certificates solve: see `capped`), and
//! Lawson–Hanson's least-distance program (LDP).
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

use nalgebra::{DMatrix, DVector};

mod capped;
mod cholesky;
pub mod lbfgs;
pub use capped::{qp_capped, Cap, CappedSolution, Constraints};
pub(crate) use cholesky::Cholesky;

/// Products below this many multiply-adds run on one thread.
const PARALLEL_WORK: usize = 1 << 24;

/// op(A)·op(B), op = transpose when the flag is set, through matrixmultiply's
/// strided dgemm: the transposes are stride swaps, not copies (nalgebra
/// would copy, and its `tr_mul` is a dot-product loop). Large products are
/// split by rows of the output over rayon's pool; every chunk is the same
/// dgemm on a row offset, so each entry is summed in the same order.
pub(crate) fn product(a: &DMatrix<f64>, ta: bool, b: &DMatrix<f64>, tb: bool) -> DMatrix<f64> {
    use rayon::prelude::*;
    let (m, k) = if ta {
        (a.ncols(), a.nrows())
    } else {
        (a.nrows(), a.ncols())
    };
    let (kb, n) = if tb {
        (b.ncols(), b.nrows())
    } else {
        (b.nrows(), b.ncols())
    };
    assert_eq!(k, kb, "inner dimensions agree");
    let mut out = DMatrix::zeros(m, n);
    // Column-major: (i, j) at i + j·nrows, so (row, column) strides are
    // (1, nrows), swapped for the transpose.
    let strides = |x: &DMatrix<f64>, t: bool| {
        let r = x.nrows() as isize;
        if t {
            (r, 1)
        } else {
            (1, r)
        }
    };
    let (rsa, csa) = strides(a, ta);
    let (rsb, csb) = strides(b, tb);
    let chunks = if m * k * n < PARALLEL_WORK {
        1
    } else {
        (4 * rayon::current_num_threads())
            .min(m.div_ceil(64))
            .max(1)
    };
    let rows = m.div_ceil(chunks.max(1)).max(1);
    // Addresses as integers so the closure is Send; chunks write disjoint rows.
    let (pa, pb, po) = (
        a.as_ptr() as usize,
        b.as_ptr() as usize,
        out.as_mut_ptr() as usize,
    );
    (0..chunks).into_par_iter().for_each(|c| {
        let i0 = c * rows;
        if i0 >= m {
            return;
        }
        let len = rows.min(m - i0);
        // SAFETY: the pointers address live matrices whose extents match the
        // dimensions and strides given; row chunk [i0, i0 + len) of op(A)
        // starts i0·rsa elements in, of `out` i0 elements in; `out` aliases
        // neither input and the chunks' output rows are disjoint.
        unsafe {
            matrixmultiply::dgemm(
                len,
                k,
                n,
                1.0,
                (pa as *const f64).offset(i0 as isize * rsa),
                rsa,
                csa,
                pb as *const f64,
                rsb,
                csb,
                0.0,
                (po as *mut f64).add(i0),
                1,
                m as isize,
            );
        }
    });
    out
}

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

/// A Cholesky pivot whose square keeps at most this share of its diagonal
/// is *clamped*: its column depends on those before it to working
/// precision, and the matrix is treated as singular (duplicated columns).
const CLAMPED_PIVOT: f64 = 1e-10;

/// How hard [`qp_capped`] works on the end game.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Re-solve the final working set on the exact rows and continue
    /// (rounding-level accuracy).
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

/// The Cholesky factor L Lᵀ = H_FF of the free variables F, rows and
/// columns in `order` (the order they were freed). Stored in the top-left
/// |F|×|F| corner of a matrix that doubles as F grows, column-major, so
/// that substitutions run down contiguous columns.
struct Factor {
    order: Vec<usize>,
    l: DMatrix<f64>,
    ridge: f64,
}

impl Factor {
    fn new(nv: usize, ridge: f64) -> Self {
        Self {
            order: Vec::with_capacity(nv),
            l: DMatrix::zeros(0, 0),
            ridge,
        }
    }

    /// A fresh factor of `hff` (no ridge) for the variables `fi`, if every
    /// pivot keeps a fair share of its diagonal.
    fn exact(hff: &DMatrix<f64>, fi: &[usize]) -> Option<Self> {
        let ch = hff
            .clone()
            .cholesky()
            .filter(|ch| well_conditioned(ch, hff))?;
        Some(Self {
            order: fi.to_vec(),
            l: ch.unpack(),
            ridge: 0.0,
        })
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    /// Every pivot keeps a fair share of its diagonal (as [`well_conditioned`])
    /// and stays well above the ridge (a zero column's pivot is √ρ, which
    /// is a fair share of nothing).
    fn well_conditioned(&self, h: &DMatrix<f64>) -> bool {
        self.thin_pivot(|i| h[(i, i)], CLAMPED_PIVOT).is_none()
    }

    /// The position of the first pivot that keeps at most the share
    /// `share` of its variable's diagonal `diag(i)` (or sits near the
    /// ridge), if any.
    fn thin_pivot(&self, diag: impl Fn(usize) -> f64, share: f64) -> Option<usize> {
        self.order.iter().enumerate().position(|(k, &i)| {
            let p = self.l[(k, k)].powi(2);
            p <= share * diag(i) || p <= 100.0 * self.ridge
        })
    }

    /// x ← L⁻¹ x.
    fn lower(&self, x: &mut [f64]) {
        for j in 0..x.len() {
            x[j] /= self.l[(j, j)];
            let xj = x[j];
            let col = self.l.column(j);
            for i in j + 1..x.len() {
                x[i] -= col[i] * xj;
            }
        }
    }

    /// x ← L⁻ᵀ x.
    fn upper(&self, x: &mut [f64]) {
        for j in (0..x.len()).rev() {
            let col = self.l.column(j);
            let s: f64 = (j + 1..x.len()).map(|i| col[i] * x[i]).sum();
            x[j] = (x[j] - s) / self.l[(j, j)];
        }
    }

    /// Frees variable i: appends its row, L₂₁ = L⁻¹ H_Fi and
    /// l₂₂ = √(h_ii − ‖L₂₁‖²), clamped at √ρ for a (numerically) dependent
    /// column, which [`Factor::well_conditioned`] then reports.
    fn push(&mut self, h: &DMatrix<f64>, i: usize) {
        let row: Vec<f64> = self.order.iter().map(|&j| h[(j, i)]).collect();
        self.append(i, row, h[(i, i)], h.nrows());
    }

    /// Appends the column `i` whose entries against `order` are `row` and
    /// whose diagonal is `diag` (at most `nmax` columns ever live).
    fn append(&mut self, i: usize, mut row: Vec<f64>, diag: f64, nmax: usize) {
        let k = self.len();
        self.lower(&mut row);
        let d = diag - row.iter().map(|v| v * v).sum::<f64>();
        if k == self.l.nrows() {
            // Storage doubles as F grows: |F|² memory, not N².
            let cap = (2 * k).max(16).min(nmax);
            let old = std::mem::replace(&mut self.l, DMatrix::zeros(0, 0));
            self.l = old.resize(cap, cap, 0.0);
        }
        for (j, v) in row.into_iter().enumerate() {
            self.l[(k, j)] = v;
        }
        self.l[(k, k)] = d.max(self.ridge).max(f64::MIN_POSITIVE).sqrt();
        self.order.push(i);
    }

    /// Fixes variable i: deletes its row and column; the trailing block
    /// L₃₃ then needs L₃₃' L₃₃'ᵀ = L₃₃ L₃₃ᵀ + l₃₂ l₃₂ᵀ, a rank-one update by
    /// Givens-like rotations (always stable, unlike a downdate).
    fn remove(&mut self, i: usize) {
        let Some(p) = self.order.iter().position(|&j| j == i) else {
            return;
        };
        let n = self.len();
        let mut x: Vec<f64> = (p + 1..n).map(|r| self.l[(r, p)]).collect();
        for c in 0..n - 1 {
            let src_c = if c < p { c } else { c + 1 };
            for r in (c.max(p))..n - 1 {
                self.l[(r, c)] = self.l[(r + 1, src_c)];
            }
        }
        for (k, c) in (p..n - 1).enumerate() {
            let lkk = self.l[(c, c)];
            let r = lkk.hypot(x[k]);
            let (cs, sn) = (r / lkk, x[k] / lkk);
            self.l[(c, c)] = r;
            for (t, row) in (c + 1..n - 1).enumerate() {
                let lik = (self.l[(row, c)] + sn * x[k + 1 + t]) / cs;
                x[k + 1 + t] = cs * x[k + 1 + t] - sn * lik;
                self.l[(row, c)] = lik;
            }
        }
        self.order.remove(p);
    }

    /// The equality-constrained subproblem on the free variables and the
    /// working rows `wi` of A z ≤ b ([`Factor::solve_rows`] on them).
    /// Returns (z_F in `order`, μ_W).
    fn solve(
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

    /// The subproblem in the factor's own coordinates: minimise
    /// ½yᵀ(LLᵀ)y − tᵀy subject to r_pᵀy = b_p for the working rows r_p
    /// (each given in `order`): y = (LLᵀ)⁻¹(t − Rᵀμ) with μ from the Schur
    /// complement S μ = R (LLᵀ)⁻¹ t − b, S = R (LLᵀ)⁻¹ Rᵀ. `None` if S is
    /// ill-conditioned.
    fn solve_rows(
        &self,
        mut t: Vec<f64>,
        rows: &[Vec<f64>],
        b: &[f64],
    ) -> Option<(Vec<f64>, Vec<f64>)> {
        self.lower(&mut t);
        let nw = rows.len();
        if nw == 0 || self.order.is_empty() {
            self.upper(&mut t);
            return Some((t, vec![0.0; nw]));
        }
        let nf = self.order.len();
        let mut ys = DMatrix::zeros(nf, nw);
        for (p, row) in rows.iter().enumerate() {
            let mut y = row.clone();
            self.lower(&mut y);
            ys.set_column(p, &DVector::from_vec(y));
        }
        let s = product(&ys, true, &ys, false);
        let tv = DVector::from_column_slice(&t);
        let rhs = DVector::from_fn(nw, |p, _| ys.column(p).dot(&tv) - b[p]);
        let mu = s
            .clone()
            .cholesky()
            .filter(|ch| well_conditioned(ch, &s))?
            .solve(&rhs);
        let ymu = &ys * &mu;
        t.iter_mut().zip(ymu.iter()).for_each(|(ti, yi)| *ti -= yi);
        self.upper(&mut t);
        Some((t, mu.as_slice().to_vec()))
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

/// The KKT matrix [[H_FF, Rᵀ], [R, 0]] and right-hand side [g_F; b_W] for
/// the working rows R (each over the free variables) and their b_W.
fn kkt_system(
    hff: &DMatrix<f64>,
    gf: &DVector<f64>,
    rows: &[Vec<f64>],
    bw: &[f64],
) -> (DMatrix<f64>, DVector<f64>) {
    let (nf, nw) = (hff.nrows(), rows.len());
    let dim = nf + nw;
    let mut k = DMatrix::zeros(dim, dim);
    k.view_mut((0, 0), (nf, nf)).copy_from(hff);
    let mut rhs = DVector::zeros(dim);
    rhs.rows_mut(0, nf).copy_from(gf);
    for (t, row) in rows.iter().enumerate() {
        for (s, &v) in row.iter().enumerate() {
            k[(nf + t, s)] = v;
            k[(s, nf + t)] = v;
        }
        rhs[nf + t] = bw[t];
    }
    (k, rhs)
}

/// A Cholesky factor whose pivots all keep more than [`CLAMPED_PIVOT`] of
/// their diagonal (a tiny pivot means H_FF is numerically singular:
/// duplicated columns).
fn well_conditioned(ch: &nalgebra::Cholesky<f64, nalgebra::Dyn>, h: &DMatrix<f64>) -> bool {
    let l = ch.l_dirty();
    (0..h.nrows()).all(|i| l[(i, i)] * l[(i, i)] > CLAMPED_PIVOT * h[(i, i)])
}

/// Minimum-norm least-squares solution through the SVD (the rare singular
/// case), checked by its normal equations.
///
/// nalgebra's SVD (0.33) can return a decomposition that does not
/// recompose its matrix when its convergence threshold is too fine
/// (dimforge/nalgebra#1172, #1072): on an 8×7 matrix of 0s and ±1s from
/// the capped QP's KKT oracle (columns e_a − e_m and −e_i), `svd` put a
/// singular value at 1.0000626 instead of 1 and recomposed with error
/// 9.4e-3, and the NNLS built on it stopped 1.4e-3 short of a residual of
/// 0. So the solution x must satisfy ‖Aᵀ(Ax − r)‖∞ ≤ 1e-10·‖A‖(‖A‖‖x‖∞ +
/// ‖r‖∞) (a truncated singular value leaves at most 1e-14·‖A‖‖r‖ there);
/// if not, the SVD is recomputed with the coarser thresholds
/// [`SVD_RETRY_THRESHOLDS`] (relative to ‖A‖), and the best of the tries
/// is returned.
fn lstsq(m: &DMatrix<f64>, r: &DVector<f64>) -> DVector<f64> {
    let norm = m.norm();
    let slack = |x: &DVector<f64>| -> f64 {
        let excess = (m.transpose() * (m * x - r)).amax();
        excess - 1e-10 * norm * (norm * x.amax() + r.amax())
    };
    let mut best: Option<(f64, DVector<f64>)> = None;
    let tries = std::iter::once(Some(m.clone().svd(true, true))).chain(
        SVD_RETRY_THRESHOLDS
            .iter()
            .map(|&t| m.clone().try_svd(true, true, t * norm, 0)),
    );
    for svd in tries.flatten() {
        let eps = 1e-14 * svd.singular_values.max();
        let x = svd
            .solve(r, eps)
            .unwrap_or_else(|_| DVector::zeros(m.ncols()));
        let s = slack(&x);
        if s <= 0.0 {
            return x;
        }
        if best.as_ref().is_none_or(|(b, _)| s < *b) {
            best = Some((s, x));
        }
    }
    best.map_or_else(|| DVector::zeros(m.ncols()), |(_, x)| x)
}

/// The SVD's convergence thresholds, relative to ‖A‖_F, that [`lstsq`]
/// retries when nalgebra's default one returns a decomposition that
/// fails the normal equations (1e-14 recomposed the 8×7 case to 2.7e-14).
const SVD_RETRY_THRESHOLDS: [f64; 2] = [1e-14, 1e-12];

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

    /// The capped QP oracle's KKT system on which nalgebra's default SVD
    /// recomposes with error 9.4e-3 (see [`lstsq`]): columns e_5 − e_4,
    /// e_6 − e_0, e_7 − e_3 and −e_i for i ∈ {0, 1, 3, 4, 5, 6, 7}, and a
    /// right-hand side (a QP's −∇ at its optimum) that the cone reaches
    /// exactly: u_{−e_1} = −f_1 alone fits row 1. Before the check, NNLS
    /// stopped with u_{−e_1} = 0.95539 and a residual of 1.4e-3.
    #[test]
    fn least_squares_survive_an_inaccurate_svd() {
        let mut e = DMatrix::zeros(8, 10);
        for (c, (a, m)) in [(5, 4), (6, 0), (7, 3)].into_iter().enumerate() {
            e[(a, c)] = 1.0;
            e[(m, c)] = -1.0;
        }
        for (c, i) in [0, 1, 3, 4, 5, 6, 7].into_iter().enumerate() {
            e[(i, 3 + c)] = -1.0;
        }
        let f = DVector::from_vec(vec![
            -1.1206559786861314,
            -0.956755995585496,
            -5.551115123125783e-17,
            -0.014332963178007307,
            -0.34944475514665474,
            -0.5537693971472333,
            0.5111265818055339,
            -0.956755995585496,
        ]);
        let ep = e.select_columns(&[0, 1, 2, 3, 4, 7, 9]);
        let x = lstsq(&ep, &f);
        let normal = (ep.transpose() * (&ep * &x - &f)).amax();
        assert!(normal <= 1e-14, "normal equations off by {normal:e}");
        assert!((x[4] + f[1]).abs() <= 1e-14, "u_(-e_1) = {}", x[4]);
        let u = nnls(&e, &f);
        let res = (&e * &u - &f).norm();
        assert!(res <= 1e-13, "NNLS residual {res:e}");
    }

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
