//! The certificate's linear system E z ≈ f at the rescaled network θ̂, its
//! products, its Gram blocks, and the two repairs that make the bracket
//! certified: the primal z onto the feasible set, the dual (u, μ) onto
//! Eᵀu ≤ Aᵀμ with rounding accounted for.
//!
//! Nothing here is O(n²) unless asked for: products with E and Eᵀ go through
//! the per-neuron structure, the constraint rows A are applied structurally
//! (one dense complementarity row, one sparse row per ambiguous pair), and a
//! Gram block is formed only for the variables it is asked for. That is what
//! lets [`super::working_set`] certify n in the tens of thousands.

use super::{AmbiguousPair, BlockResiduals, Certificate, CertifyOptions, Norm, Support, Verdict};
use crate::error::{Error, Result};
use crate::linalg::{product, qp_capped, Cap, Constraints, Finish};
use crate::model::data::Dataset;
use crate::model::net::{relu, unit_margin_scale, Network};
use nalgebra::{DMatrix, DVector};
use std::borrow::Cow;

/// Parameters laid out as blocks: W [m,d], b [m], v [m].
#[derive(Clone, Debug)]
pub(super) struct Params {
    pub(super) w: DMatrix<f64>,
    pub(super) b: DVector<f64>,
    pub(super) v: DVector<f64>,
}

impl Params {
    fn of(net: &Network) -> Self {
        Self {
            w: net.w().clone(),
            b: net.b().clone(),
            v: net.v().clone(),
        }
    }
    pub(super) fn zeros_like(&self) -> Params {
        Params {
            w: DMatrix::zeros(self.w.nrows(), self.w.ncols()),
            b: DVector::zeros(self.b.len()),
            v: DVector::zeros(self.v.len()),
        }
    }
    pub(super) fn sub(&self, o: &Params) -> Params {
        Params {
            w: &self.w - &o.w,
            b: &self.b - &o.b,
            v: &self.v - &o.v,
        }
    }
    fn abs(&self) -> Params {
        Params {
            w: self.w.abs(),
            b: self.b.abs(),
            v: self.v.abs(),
        }
    }
    pub(super) fn norm(&self, norm: Norm) -> f64 {
        match norm {
            Norm::L2 => {
                (self.w.norm_squared() + self.b.norm_squared() + self.v.norm_squared()).sqrt()
            }
            Norm::Linf => self.w.amax().max(self.b.amax()).max(self.v.amax()),
        }
    }
    fn dual_norm(&self, norm: Norm) -> f64 {
        match norm {
            Norm::L2 => self.norm(Norm::L2),
            Norm::Linf => self.w.abs().sum() + self.b.abs().sum() + self.v.abs().sum(),
        }
    }
    fn dot(&self, o: &Params) -> f64 {
        self.w.dot(&o.w) + self.b.dot(&o.b) + self.v.dot(&o.v)
    }
    fn blocks(&self, norm: Norm) -> BlockResiduals {
        let n = |x: &DMatrix<f64>| match norm {
            Norm::L2 => x.norm(),
            Norm::Linf => x.amax(),
        };
        let nv = |x: &DVector<f64>| match norm {
            Norm::L2 => x.norm(),
            Norm::Linf => x.amax(),
        };
        BlockResiduals {
            w: n(&self.w),
            b: nv(&self.b),
            v: nv(&self.v),
        }
    }
    pub(super) fn len(&self) -> usize {
        self.w.len() + self.b.len() + self.v.len()
    }
    /// Sets flat entry k.
    pub(super) fn set(&mut self, k: usize, val: f64) {
        let (m, d) = (self.w.nrows(), self.w.ncols());
        if k < m * d {
            self.w[(k / d, k % d)] = val;
        } else if k < m * d + m {
            self.b[k - m * d] = val;
        } else {
            self.v[k - m * d - m] = val;
        }
    }

    /// Flat entry k (W row-major, b, v).
    pub(super) fn get(&self, k: usize) -> f64 {
        let (m, d) = (self.w.nrows(), self.w.ncols());
        if k < m * d {
            self.w[(k / d, k % d)]
        } else if k < m * d + m {
            self.b[k - m * d]
        } else {
            self.v[k - m * d - m]
        }
    }
}

/// The completed μ and the violated entries of Eᵀu ≤ Aᵀμ with their
/// excesses ([`KktSystem::violations`]).
pub(super) type Priced = (DVector<f64>, Vec<(usize, f64)>);

/// Margins y_i Σ_j v_j ReLU(u_ij) from formed pre-activations.
fn margins_of(u: &DMatrix<f64>, v: &DVector<f64>, y: &DVector<f64>) -> Vec<f64> {
    let mut q = vec![0.0; u.nrows()];
    for (j, col) in u.column_iter().enumerate() {
        for (qi, &uij) in q.iter_mut().zip(col.iter()) {
            *qi += v[j] * relu(uij);
        }
    }
    q.iter_mut().zip(y.iter()).for_each(|(qi, yi)| *qi *= yi);
    q
}

/// A primal z with its residual r = f − Ez, and the (u, μ) the lower bound
/// is built from (u = r for ℓ2; the LP's row duals for ℓ∞).
pub(super) struct Solved {
    pub(super) z: DVector<f64>,
    pub(super) r: Params,
    pub(super) u: Params,
    pub(super) mu: DVector<f64>,
    pub(super) iterations: usize,
}

/// The certificate's linear system at the rescaled network.
pub struct KktSystem<'a> {
    pub(super) theta: Params,
    pub(super) x: Cow<'a, DMatrix<f64>>,
    /// ‖x_i‖, for the a-priori rounding bounds.
    xnorm: DVector<f64>,
    pub(super) y: DVector<f64>,
    /// Pre-activations u_ij at θ̂.
    u: DMatrix<f64>,
    /// u_ij > 0 and (i, j) not ambiguous.
    strict: DMatrix<bool>,
    pub(super) amb: Vec<(usize, usize)>,
    pub(super) margins: Vec<f64>,
    /// c_i = q̂_i − 1, clamped at 0 (rounding can leave −1e−16).
    c: DVector<f64>,
    scale: f64,
    /// Right-hand side of the complementarity row Σ λ_i c_i ≤ δ_rel ‖θ̂‖²/2,
    /// `None` when the row is dropped. The other rows, γ_a − λ_i ≤ 0, have
    /// right-hand side 0 and are applied structurally.
    budget: Option<f64>,
    delta_rel: Option<f64>,
    /// Variables the ℓ2 solve frees first (the warm start's, if any).
    start: Vec<usize>,
}

impl<'a> KktSystem<'a> {
    /// Rescales `net` to min-margin 1 on `data` and sets up the system.
    pub fn new(net: &Network, data: &'a Dataset, opts: &CertifyOptions) -> Result<Self> {
        net.check_dim(data)?;
        if opts.act_tol.is_nan() || opts.act_tol < 0.0 {
            return Err(Error::param("act_tol", "expected τ ≥ 0"));
        }
        let delta_rel = opts.delta_rel.filter(|d| d.is_finite());
        if delta_rel.is_some_and(|d| d.is_nan() || d < 0.0) {
            return Err(Error::param("delta", "expected δ_rel ≥ 0"));
        }
        // One n×d×m product: θ ↦ αθ scales every pre-activation by α
        // (to rounding, which the certificate's bounds already absorb).
        let x = data.x();
        let mut u = net.preactivations(x);
        let y = DVector::from_column_slice(data.y());
        let scale = unit_margin_scale(&margins_of(&u, net.v(), &y))?;
        u *= scale;
        let hat = net.scaled(scale);
        let (n, m) = (data.n(), hat.width());
        let xnorm = DVector::from_iterator(n, x.row_iter().map(|r| r.norm()));
        let wnorm: Vec<f64> = (0..m).map(|j| hat.incoming_norm(j)).collect();
        let mut amb = Vec::new();
        let mut strict = DMatrix::from_element(n, m, false);
        for j in 0..m {
            for i in 0..n {
                let uij = u[(i, j)];
                if uij.abs() <= opts.act_tol * wnorm[j] * (xnorm[i] + 1.0) && hat.v()[j] != 0.0 {
                    amb.push((i, j));
                } else if uij > 0.0 {
                    strict[(i, j)] = true;
                }
            }
        }
        amb.sort();
        let margins = margins_of(&u, hat.v(), &y);
        let c = DVector::from_iterator(n, margins.iter().map(|q| (q - 1.0).max(0.0)));
        let budget = delta_rel.map(|dr| dr * 0.5 * hat.norm_sq());
        let start = opts.warm.as_ref().map_or_else(Vec::new, |w| {
            let pairs = w.pairs.iter().filter_map(|p| amb.binary_search(p).ok());
            let points = w.points.iter().copied().filter(|&i| i < n);
            points.chain(pairs.map(|t| n + t)).collect()
        });
        Ok(Self {
            theta: Params::of(&hat),
            x: Cow::Borrowed(x),
            xnorm,
            y,
            u,
            strict,
            amb,
            margins,
            c,
            scale,
            budget,
            delta_rel,
            start,
        })
    }

    /// The system of the points `keep` and the ambiguous pairs `pairs`
    /// alone (both sorted and distinct, every pair's point kept): the same
    /// θ̂, scale and complementarity row, the columns of those variables.
    /// Also returns where each of its variables sits in `self`.
    pub(super) fn restrict(
        &self,
        keep: &[usize],
        pairs: &[usize],
    ) -> (KktSystem<'static>, Vec<usize>) {
        let n = self.n();
        let mut pos = vec![usize::MAX; n];
        keep.iter().enumerate().for_each(|(s, &i)| pos[i] = s);
        let amb = pairs
            .iter()
            .map(|&t| (pos[self.amb[t].0], self.amb[t].1))
            .collect();
        let map = keep.iter().copied().chain(pairs.iter().map(|&t| n + t));
        let sub = KktSystem {
            theta: self.theta.clone(),
            x: Cow::Owned(self.x.select_rows(keep)),
            xnorm: self.xnorm.select_rows(keep),
            y: self.y.select_rows(keep),
            u: self.u.select_rows(keep),
            strict: self.strict.select_rows(keep),
            amb,
            margins: keep.iter().map(|&i| self.margins[i]).collect(),
            c: self.c.select_rows(keep),
            scale: self.scale,
            budget: self.budget,
            delta_rel: self.delta_rel,
            start: Vec::new(),
        };
        (sub, map.collect())
    }

    pub(super) fn n(&self) -> usize {
        self.x.nrows()
    }

    pub(super) fn nvars(&self) -> usize {
        self.n() + self.amb.len()
    }

    /// Number of constraint rows: [complementarity], then one per ambiguous pair.
    pub(super) fn nrows(&self) -> usize {
        self.amb_row0() + self.amb.len()
    }

    /// Index of the first ambiguous-pair row.
    pub(super) fn amb_row0(&self) -> usize {
        usize::from(self.budget.is_some())
    }

    fn s(&self, i: usize, j: usize) -> f64 {
        if self.strict[(i, j)] {
            1.0
        } else {
            0.0
        }
    }

    pub(super) fn relu_u(&self, i: usize, j: usize) -> f64 {
        relu(self.u[(i, j)])
    }

    /// E_k for a (W, b)-block parameter of neuron j at point i: strict
    /// columns only (ambiguous pairs are separate variables).
    pub(super) fn strict_coef(&self, i: usize, j: usize) -> f64 {
        self.y[i] * self.s(i, j) * self.theta.v[j]
    }

    /// ‖E_k‖ for variable k (√H_kk), without forming H.
    pub(super) fn column_norm(&self, k: usize) -> f64 {
        let (n, v) = (self.n(), &self.theta.v);
        let sq: f64 = if k < n {
            let x2 = self.xnorm[k].powi(2) + 1.0;
            (0..v.len())
                .map(|j| self.s(k, j) * v[j] * v[j] * x2 + self.relu_u(k, j).powi(2))
                .sum()
        } else {
            let (i, j) = self.amb[k - n];
            v[j] * v[j] * (self.xnorm[i].powi(2) + 1.0)
        };
        sq.sqrt()
    }

    /// The complementarity row cᵀλ ≤ budget, if any (0 or 1 rows).
    fn budget_row(&self) -> (DMatrix<f64>, DVector<f64>) {
        let r0 = self.amb_row0();
        let mut a = DMatrix::zeros(r0, self.nvars());
        if r0 > 0 {
            a.view_mut((0, 0), (1, self.n()))
                .copy_from(&self.c.transpose());
        }
        (a, DVector::from_iterator(r0, self.budget))
    }

    /// The constraint rows as a dense matrix (for the small QP/LP solvers).
    pub(super) fn constraint_matrix(&self) -> (DMatrix<f64>, DVector<f64>) {
        let (budget_a, budget_b) = self.budget_row();
        let r0 = self.amb_row0();
        let mut a = DMatrix::zeros(self.nrows(), self.nvars());
        let mut b = DVector::zeros(self.nrows());
        a.view_mut((0, 0), (r0, self.nvars())).copy_from(&budget_a);
        b.rows_mut(0, r0).copy_from(&budget_b);
        for (t, &(i, _)) in self.amb.iter().enumerate() {
            a[(r0 + t, self.n() + t)] = 1.0;
            a[(r0 + t, i)] = -1.0;
        }
        (a, b)
    }

    /// Aᵀμ; with `abs`, |A|ᵀμ.
    fn at_mu(&self, mu: &DVector<f64>, abs: bool) -> DVector<f64> {
        let n = self.n();
        let mut out = DVector::zeros(self.nvars());
        if self.budget.is_some() {
            out.rows_mut(0, n).axpy(mu[0], &self.c, 0.0);
        }
        let r0 = self.amb_row0();
        let sign = if abs { 1.0 } else { -1.0 };
        for (t, &(i, _)) in self.amb.iter().enumerate() {
            out[n + t] += mu[r0 + t];
            out[i] += sign * mu[r0 + t];
        }
        out
    }

    /// Coefficients C_ij = y_i v_j (λ_i S_ij + Σ_{a=(i,j)} γ_a) of the (W, b)
    /// blocks of E z, for the points `rows` only.
    fn coef(&self, z: &DVector<f64>, rows: &[usize]) -> DMatrix<f64> {
        let m = self.theta.v.len();
        let mut pos = vec![usize::MAX; self.n()];
        rows.iter().enumerate().for_each(|(s, &i)| pos[i] = s);
        let mut cm = DMatrix::from_fn(rows.len(), m, |s, j| z[rows[s]] * self.s(rows[s], j));
        let n = self.n();
        for (t, &(i, j)) in self.amb.iter().enumerate() {
            if z[n + t] != 0.0 {
                cm[(pos[i], j)] += z[n + t];
            }
        }
        for (j, mut col) in cm.column_iter_mut().enumerate() {
            for (s, c) in col.iter_mut().enumerate() {
                *c *= self.y[rows[s]] * self.theta.v[j];
            }
        }
        cm
    }

    /// E z as parameters; only the points z touches enter the products.
    pub(super) fn apply(&self, z: &DVector<f64>) -> Params {
        let n = self.n();
        let mut touched: Vec<bool> = (0..n).map(|i| z[i] != 0.0).collect();
        for (t, &(i, _)) in self.amb.iter().enumerate() {
            touched[i] |= z[n + t] != 0.0;
        }
        let rows: Vec<usize> = (0..n).filter(|&i| touched[i]).collect();
        let cm = self.coef(z, &rows);
        let xs = self.x.select_rows(&rows);
        let v = DVector::from_fn(cm.ncols(), |j, _| {
            rows.iter()
                .map(|&i| z[i] * self.y[i] * self.relu_u(i, j))
                .sum()
        });
        Params {
            w: product(&cm, true, &xs, false),
            b: DVector::from_iterator(cm.ncols(), cm.column_iter().map(|c| c.sum())),
            v,
        }
    }

    /// Eᵀr, and an upper bound on |E|ᵀ|r| (for the rounding bounds): the
    /// (W, b) part of the latter is bounded by Cauchy–Schwarz,
    /// Σ_k |x_ik||r_jk| ≤ ‖x_i‖‖r_j‖, so it costs no second n×d×m product.
    pub(super) fn adjoint(&self, r: &Params) -> (DVector<f64>, DVector<f64>) {
        let (n, m) = (self.n(), self.theta.v.len());
        let mut p = product(&self.x, false, &r.w, true);
        for (j, mut col) in p.column_iter_mut().enumerate() {
            col.add_scalar_mut(r.b[j]);
        }
        let rwnorm: Vec<f64> = r.w.row_iter().map(|row| row.norm()).collect();
        let pabs = |i: usize, j: usize| self.xnorm[i] * rwnorm[j] + r.b[j].abs();
        let v = &self.theta.v;
        let mut out = DVector::zeros(self.nvars());
        let mut abs = DVector::zeros(self.nvars());
        for i in 0..n {
            let (mut s, mut sa) = (0.0, 0.0);
            for j in 0..m {
                let (sij, rij) = (self.s(i, j), self.relu_u(i, j));
                s += sij * v[j] * p[(i, j)] + rij * r.v[j];
                sa += sij * (v[j] * pabs(i, j)).abs() + rij * r.v[j].abs();
            }
            out[i] = self.y[i] * s;
            abs[i] = sa;
        }
        for (t, &(i, j)) in self.amb.iter().enumerate() {
            out[n + t] = self.y[i] * v[j] * p[(i, j)];
            abs[n + t] = (v[j] * pabs(i, j)).abs();
        }
        (out, abs)
    }

    /// H = EᵀE (formed: only for systems of a few thousand variables).
    pub(super) fn gram(&self) -> DMatrix<f64> {
        let (n, na, m) = (self.n(), self.amb.len(), self.theta.v.len());
        let v = &self.theta.v;
        let mut k = product(&self.x, false, &self.x, true);
        k.add_scalar_mut(1.0);
        let bmat = DMatrix::from_fn(n, m, |i, j| self.s(i, j) * v[j]);
        let relu_u = self.u.map(relu);
        let bb = product(&bmat, false, &bmat, true);
        let rr = product(&relu_u, false, &relu_u, true);
        let nv = n + na;
        let mut h = DMatrix::zeros(nv, nv);
        for i in 0..n {
            for l in 0..n {
                h[(i, l)] = self.y[i] * self.y[l] * (bb[(i, l)] * k[(i, l)] + rr[(i, l)]);
            }
        }
        for (t, &(i, j)) in self.amb.iter().enumerate() {
            for l in 0..n {
                let val = self.y[l] * self.y[i] * bmat[(l, j)] * v[j] * k[(l, i)];
                h[(l, n + t)] = val;
                h[(n + t, l)] = val;
            }
            for (s, &(i2, j2)) in self.amb.iter().enumerate() {
                if j2 == j {
                    h[(n + t, n + s)] = self.y[i] * self.y[i2] * v[j] * v[j] * k[(i, i2)];
                }
            }
        }
        h
    }

    /// The Gram block of the variables `vars` (any subset), formed through
    /// the restriction to them.
    pub(super) fn gram_block(&self, vars: &[usize]) -> DMatrix<f64> {
        let n = self.n();
        let mut pairs: Vec<usize> = vars.iter().filter(|&&k| k >= n).map(|&k| k - n).collect();
        let mut points: Vec<usize> = vars.iter().filter(|&&k| k < n).copied().collect();
        points.extend(pairs.iter().map(|&t| self.amb[t].0));
        points.sort_unstable();
        points.dedup();
        pairs.sort_unstable();
        let (sub, map) = self.restrict(&points, &pairs);
        let h = sub.gram();
        let mut at = vec![usize::MAX; self.nvars()];
        map.iter().enumerate().for_each(|(s, &k)| at[k] = s);
        DMatrix::from_fn(vars.len(), vars.len(), |r, c| h[(at[vars[r]], at[vars[c]])])
    }

    /// Makes z feasible: z ≥ 0, γ ≤ λ, and the complementarity row (by scaling).
    pub(super) fn repair_primal(&self, z: &mut DVector<f64>) {
        let n = self.n();
        z.iter_mut().for_each(|v| *v = v.max(0.0));
        for (t, &(i, _)) in self.amb.iter().enumerate() {
            z[n + t] = z[n + t].min(z[i]);
        }
        if let Some(budget) = self.budget {
            let used = self.c.dot(&z.rows(0, n));
            if used > budget && used > 0.0 {
                *z *= budget / used * (1.0 - 4.0 * f64::EPSILON);
            }
        }
    }

    /// An a-priori bound on the rounding in one computed entry of Eᵀu − Aᵀμ.
    fn rounding(&self) -> f64 {
        let depth = (self.x.ncols() + self.theta.v.len() + self.n() + 16) as f64;
        4.0 * depth * f64::EPSILON
    }

    /// Checks Eᵀu ≤ Aᵀμ entrywise with rounding accounted for. The
    /// multipliers of the ambiguous-pair rows are first *completed*: their
    /// right-hand sides are 0, so any μ_a ≥ 0 leaves the bound unchanged, and
    /// the smallest μ_a that satisfies γ_a's entry is also the best for λ_i's
    /// (row a enters λ_i's entry as −μ_a). Returns the completed μ and the
    /// violated entries (only λ's can remain), each with the margin by which
    /// it must be pushed down.
    pub(super) fn violations(&self, u: &Params, mu: &DVector<f64>) -> Priced {
        let (n, kappa) = (self.n(), self.rounding());
        let (etu, etu_abs) = self.adjoint(u);
        let mut mu = mu.clone();
        let r0 = self.amb_row0();
        for t in 0..self.amb.len() {
            let need = (etu[n + t] + 2.0 * kappa * etu_abs[n + t]) / (1.0 - 2.0 * kappa);
            mu[r0 + t] = mu[r0 + t].max(need);
        }
        let atmu = self.at_mu(&mu, false);
        let aabs_mu = self.at_mu(&mu, true);
        let viol = (0..etu.len())
            .filter_map(|k| {
                let err = (etu_abs[k] + aabs_mu[k]) * kappa;
                let excess = etu[k] - atmu[k] + err;
                (excess > 0.0).then_some((k, excess + err))
            })
            .collect();
        (mu, viol)
    }

    /// Repairs (u, μ) until Eᵀu ≤ Aᵀμ holds with rounding accounted for, by
    /// subtracting E_V w for the violated set V (H_VV w = the excess), which
    /// leaves every other entry's slack untouched up to H_·V w.
    fn repair_dual(
        &self,
        mut u: Params,
        mu: &DVector<f64>,
        block: &dyn Fn(&[usize]) -> DMatrix<f64>,
        mut priced: Option<Priced>,
    ) -> Option<(Params, DVector<f64>)> {
        for _ in 0..8 {
            let (mu, viol) = priced.take().unwrap_or_else(|| self.violations(&u, mu));
            if viol.is_empty() {
                return Some((u, mu));
            }
            let (idx, excess): (Vec<usize>, Vec<f64>) = viol.into_iter().unzip();
            let hv = block(&idx);
            let ridge = 1e-14 * hv.diagonal().amax().max(f64::MIN_POSITIVE);
            let hv = hv + DMatrix::identity(idx.len(), idx.len()) * ridge;
            let w = hv
                .cholesky()
                .map(|ch| ch.solve(&DVector::from_vec(excess)))?;
            let mut zc = DVector::zeros(self.nvars());
            for (t, &k) in idx.iter().enumerate() {
                zc[k] = w[t];
            }
            u = u.sub(&self.apply(&zc));
        }
        None
    }

    /// The lower bound (uᵀf − μᵀb)/‖u‖_* for a dual-feasible (u, μ), with
    /// rounding subtracted; 0 when nothing positive can be proven.
    fn dual_bound(&self, u: &Params, mu: &DVector<f64>, norm: Norm) -> f64 {
        let p = u.len() as f64;
        let mub = self.budget.map_or(0.0, |b| mu[0] * b);
        let num = u.dot(&self.theta) - mub;
        let num_err = (p + 4.0) * f64::EPSILON * (u.abs().dot(&self.theta.abs()) + mub);
        let den = u.dual_norm(norm) * (1.0 + (p + 4.0) * f64::EPSILON);
        if den > 0.0 {
            ((num - num_err) / den).max(0.0)
        } else {
            0.0
        }
    }

    /// The solve in `norm` on the formed Gram system `h`.
    pub(super) fn solve(&self, norm: Norm, h: &DMatrix<f64>) -> Result<Solved> {
        match norm {
            Norm::L2 => Ok(self.solve_l2(h)),
            Norm::Linf => self.solve_linf(h),
        }
    }

    /// The ℓ2 solve: the exact QP on the formed Gram system, each ambiguous
    /// pair's row γ_a ≤ λ_i a cap eliminated by aggregation (hundreds of
    /// them are working at a polished wide net's optimum, where carrying them
    /// as rows cost a Schur complement over all of them per iteration).
    pub(super) fn solve_l2(&self, h: &DMatrix<f64>) -> Solved {
        let (a, b) = self.budget_row();
        let n = self.n();
        let caps: Vec<Option<Cap>> = (0..n)
            .map(|_| None)
            .chain(
                self.amb
                    .iter()
                    .map(|&(i, _)| Some(Cap { master: i, c: 1.0 })),
            )
            .collect();
        let cons = Constraints {
            caps: &caps,
            a: &a,
            b: &b,
        };
        let (g, _) = self.adjoint(&self.theta);
        let sol = qp_capped(h, &g, &cons, Finish::Exact, f64::NEG_INFINITY, &self.start);
        let mu = DVector::from_iterator(
            self.nrows(),
            sol.mu
                .iter()
                .copied()
                .chain((0..self.amb.len()).map(|t| sol.pi[n + t])),
        );
        let mut z = sol.z;
        self.repair_primal(&mut z);
        let r = self.theta.sub(&self.apply(&z));
        Solved {
            z,
            u: r.clone(),
            r,
            mu,
            iterations: sol.iterations,
        }
    }

    /// The certified bracket of a solve: the dual repaired (Gram blocks from
    /// `block`; `priced`, if given, is [`Self::violations`] of the solve's
    /// (u, μ), already computed), the lower bound, and the report.
    pub(super) fn finish(
        &self,
        norm: Norm,
        solved: Solved,
        block: &dyn Fn(&[usize]) -> DMatrix<f64>,
        priced: Option<Priced>,
        opts: &CertifyOptions,
        t0: std::time::Instant,
    ) -> Certificate {
        let lower = match self.repair_dual(solved.u, &solved.mu, block, priced) {
            Some((u, mu)) => self.dual_bound(&u, &mu, norm),
            None => 0.0,
        };
        self.report(
            norm,
            &solved.z,
            &solved.r,
            lower,
            opts,
            solved.iterations,
            t0,
        )
    }

    /// Assembles the report for a primal z (residual r) and a lower bound.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        norm: Norm,
        z: &DVector<f64>,
        r: &Params,
        lower: f64,
        opts: &CertifyOptions,
        iterations: usize,
        t0: std::time::Instant,
    ) -> Certificate {
        let n = self.n();
        let upper = r.norm(norm);
        let theta_norm = self.theta.norm(norm);
        let theta_sq = self.theta.norm(Norm::L2).powi(2);
        let lambda: Vec<f64> = z.rows(0, n).iter().copied().collect();
        let comp = 2.0 * self.c.dot(&z.rows(0, n)) / theta_sq;
        let relative_upper = upper / theta_norm;
        let relative_lower = lower.min(upper) / theta_norm;
        let verdict = Verdict::of(relative_lower, relative_upper, comp, opts.tol);
        Certificate {
            norm,
            scale: self.scale,
            margins: self.margins.clone(),
            upper,
            lower: lower.min(upper),
            relative_upper,
            relative_lower,
            relative_complementarity: comp,
            delta_rel: self.delta_rel,
            tol: opts.tol,
            act_tol: opts.act_tol,
            support: (0..n)
                .filter(|&i| lambda[i] > 0.0)
                .map(|i| Support {
                    index: i,
                    lambda: lambda[i],
                    margin: self.margins[i],
                })
                .collect(),
            lambda,
            block_residuals: r.blocks(norm),
            ambiguous_pairs: self
                .amb
                .iter()
                .enumerate()
                .map(|(t, &(i, j))| AmbiguousPair {
                    sample: i,
                    neuron: j,
                    preactivation: self.u[(i, j)],
                    s: if z[i] > 0.0 { z[n + t] / z[i] } else { 0.0 },
                })
                .collect(),
            verdict,
            theta_norm,
            solver_iterations: iterations,
            working_set: None,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }
}
