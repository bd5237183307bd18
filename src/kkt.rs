//! KKT certificates for Problem (2), min ½‖θ‖² s.t. q_i(θ) ≥ 1 (SPEC §2–§3).
//!
//! The network is rescaled to min-margin 1 (θ̂). With f = θ̂ and E the matrix
//! whose columns are h_i = y_i ∇_θ N(x_i) (strict activations) plus, for every
//! Clarke-ambiguous pair (i, j) (|u_ij| ≤ τ‖(w_j, b_j)‖(‖x_i‖+1)), a column
//! y_i v_j (x_i, 1) in neuron j's (w, b) block with weight γ_ij ≤ λ_i, the
//! certificate problem is
//!
//! ```text
//!   min ‖f − E z‖   over z = (λ, γ) ≥ 0,   γ_ij − λ_i ≤ 0,   Σ_i λ_i (q̂_i − 1) ≤ δ.
//! ```
//!
//! E is never formed: p = m(d+2) is large and N = n + #ambiguous is small, so
//! every product with E or Eᵀ goes through the per-neuron structure (two
//! n×m×d matrix products), and the ℓ2 problem is solved on the N×N Gram
//! system with the exact active-set QP of [`crate::linalg`].
//!
//! **Certified bracket.** `upper` is ‖f − Ez‖ recomputed from the returned,
//! repaired-to-feasible z. `lower` is the weak-duality bound
//! (uᵀf − μᵀb)/‖u‖_* for a (u, μ ≥ 0) whose dual feasibility Eᵀu ≤ Aᵀμ is
//! *checked*, with an a-priori floating-point error bound added to each
//! checked entry; violated entries are repaired by projecting u, never
//! assumed away. Rounding in the final quotient is bounded the same way.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::linalg::qp_nonneg;
use crate::net::{relu, Network};
use good_lp::{
    clarabel, variable, DualValues, Expression, ProblemVariables, Solution, SolutionWithDual,
    SolverModel, Variable,
};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;

/// Residual norm of the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    L2,
    Linf,
}

/// Options of [`certify`].
#[derive(Clone, Debug)]
pub struct CertifyOptions {
    /// Tolerance on ε_rel and δ_rel for the verdict.
    pub tol: f64,
    /// δ_rel of the complementarity row; `None` drops the row.
    pub delta_rel: Option<f64>,
    /// τ_act: relative threshold for Clarke-ambiguous pairs.
    pub act_tol: f64,
}

impl Default for CertifyOptions {
    fn default() -> Self {
        Self {
            tol: 1e-4,
            delta_rel: Some(1e-4),
            act_tol: 1e-6,
        }
    }
}

/// Verdict of a certificate against its tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Kkt,
    NotKkt,
    Undecided,
}

/// Residual norms per parameter block.
#[derive(Clone, Debug, Serialize)]
pub struct BlockResiduals {
    #[serde(rename = "W")]
    pub w: f64,
    pub b: f64,
    pub v: f64,
}

/// A Clarke-ambiguous (point, neuron) pair and the s_ij the certificate chose.
#[derive(Clone, Debug, Serialize)]
pub struct AmbiguousPair {
    pub sample: usize,
    pub neuron: usize,
    pub preactivation: f64,
    pub s: f64,
}

/// A support vector: λ_i > 0.
#[derive(Clone, Debug, Serialize)]
pub struct Support {
    pub index: usize,
    pub lambda: f64,
    pub margin: f64,
}

/// What was proven about one norm.
#[derive(Clone, Debug, Serialize)]
pub struct Certificate {
    pub norm: Norm,
    pub scale: f64,
    pub margins: Vec<f64>,
    pub upper: f64,
    pub lower: f64,
    pub relative_upper: f64,
    pub relative_lower: f64,
    /// 2 Σ λ_i (q̂_i − 1) / ‖θ̂‖² of the returned λ.
    pub relative_complementarity: f64,
    /// The δ_rel bound imposed (null: no complementarity row).
    pub delta_rel: Option<f64>,
    pub tol: f64,
    /// τ_act: (point, neuron) pairs with |u_ij| ≤ τ‖(w_j, b_j)‖(‖x_i‖ + 1)
    /// were given Clarke freedom (listed in `ambiguous_pairs`).
    pub act_tol: f64,
    pub lambda: Vec<f64>,
    pub support: Vec<Support>,
    pub block_residuals: BlockResiduals,
    pub ambiguous_pairs: Vec<AmbiguousPair>,
    pub verdict: Verdict,
    pub theta_norm: f64,
    pub solver_iterations: usize,
    pub seconds: f64,
}

impl Certificate {
    /// `net` rescaled by this certificate's factor (min-margin 1).
    pub fn scale_net(&self, net: &Network) -> Network {
        net.scaled(self.scale)
    }
}

/// Parameters laid out as blocks: W [m,d], b [m], v [m].
#[derive(Clone, Debug)]
struct Params {
    w: DMatrix<f64>,
    b: DVector<f64>,
    v: DVector<f64>,
}

impl Params {
    fn of(net: &Network) -> Self {
        Self {
            w: net.w().clone(),
            b: net.b().clone(),
            v: net.v().clone(),
        }
    }
    fn sub(&self, o: &Params) -> Params {
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
    fn norm(&self, norm: Norm) -> f64 {
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
    fn len(&self) -> usize {
        self.w.len() + self.b.len() + self.v.len()
    }
    /// Sets flat entry k.
    fn set(&mut self, k: usize, val: f64) {
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
    fn get(&self, k: usize) -> f64 {
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

/// The certificate's linear system at the rescaled network.
pub struct KktSystem<'a> {
    theta: Params,
    x: &'a DMatrix<f64>,
    y: DVector<f64>,
    /// 1 where u_ij is strictly positive and not ambiguous.
    strict: DMatrix<f64>,
    relu_u: DMatrix<f64>,
    u: DMatrix<f64>,
    amb: Vec<(usize, usize)>,
    margins: Vec<f64>,
    /// c_i = q̂_i − 1, clamped at 0 (rounding can leave −1e−16).
    c: DVector<f64>,
    scale: f64,
    /// Constraint rows A z ≤ b: [complementarity row], then γ_a − λ_i ≤ 0.
    a: DMatrix<f64>,
    bvec: DVector<f64>,
    delta_rel: Option<f64>,
}

impl<'a> KktSystem<'a> {
    /// Rescales `net` to min-margin 1 on `data` and sets up the system.
    pub fn new(net: &Network, data: &'a Dataset, opts: &CertifyOptions) -> Result<Self> {
        net.check_dim(data)?;
        if opts.act_tol.is_nan() || opts.act_tol < 0.0 {
            return Err(Error::param("act_tol", "expected τ ≥ 0"));
        }
        let (hat, scale) = net.rescaled_to_unit_margin(data)?;
        let x = data.x();
        let (n, m) = (data.n(), hat.width());
        let u = hat.preactivations(x);
        let xnorm: Vec<f64> = (0..n).map(|i| x.row(i).norm()).collect();
        let wnorm: Vec<f64> = (0..m)
            .map(|j| (hat.w().row(j).norm_squared() + hat.b()[j].powi(2)).sqrt())
            .collect();
        let mut amb = Vec::new();
        let mut strict = DMatrix::zeros(n, m);
        for j in 0..m {
            for i in 0..n {
                let uij = u[(i, j)];
                if uij.abs() <= opts.act_tol * wnorm[j] * (xnorm[i] + 1.0) && hat.v()[j] != 0.0 {
                    amb.push((i, j));
                } else if uij > 0.0 {
                    strict[(i, j)] = 1.0;
                }
            }
        }
        amb.sort();
        let margins = hat.margins(data);
        let c = DVector::from_iterator(n, margins.iter().map(|q| (q - 1.0).max(0.0)));
        let theta = Params::of(&hat);
        let half_norm_sq = 0.5 * hat.norm_sq();
        let delta_rel = opts.delta_rel.filter(|d| d.is_finite());
        let nrows = amb.len() + usize::from(delta_rel.is_some());
        let mut a = DMatrix::zeros(nrows, n + amb.len());
        let mut bvec = DVector::zeros(nrows);
        let mut row = 0;
        if let Some(dr) = delta_rel {
            if dr.is_nan() || dr < 0.0 {
                return Err(Error::param("delta", "expected δ_rel ≥ 0"));
            }
            a.view_mut((0, 0), (1, n)).copy_from(&c.transpose());
            bvec[0] = dr * half_norm_sq;
            row = 1;
        }
        for (t, &(i, _)) in amb.iter().enumerate() {
            a[(row + t, n + t)] = 1.0;
            a[(row + t, i)] = -1.0;
        }
        Ok(Self {
            theta,
            x,
            y: DVector::from_column_slice(data.y()),
            strict,
            relu_u: u.map(relu),
            u,
            amb,
            margins,
            c,
            scale,
            a,
            bvec,
            delta_rel,
        })
    }

    fn n(&self) -> usize {
        self.x.nrows()
    }

    fn nvars(&self) -> usize {
        self.n() + self.amb.len()
    }

    /// Coefficients C_ij = y_i v_j (λ_i S_ij + Σ_{a=(i,j)} γ_a) of the (W, b) blocks of E z.
    fn coef(&self, z: &DVector<f64>) -> DMatrix<f64> {
        let n = self.n();
        let v = &self.theta.v;
        let mut cm = DMatrix::from_fn(n, v.len(), |i, j| z[i] * self.strict[(i, j)]);
        for (t, &(i, j)) in self.amb.iter().enumerate() {
            cm[(i, j)] += z[n + t];
        }
        for (j, mut col) in cm.column_iter_mut().enumerate() {
            col.component_mul_assign(&self.y);
            col *= v[j];
        }
        cm
    }

    /// E z as parameters.
    fn apply(&self, z: &DVector<f64>) -> Params {
        let cm = self.coef(z);
        let n = self.n();
        let ly = DVector::from_fn(n, |i, _| z[i] * self.y[i]);
        Params {
            w: cm.transpose() * self.x,
            b: DVector::from_iterator(cm.ncols(), cm.column_iter().map(|c| c.sum())),
            v: self.relu_u.transpose() * ly,
        }
    }

    /// Eᵀr; with `abs`, |E|ᵀ|r| (for rounding-error bounds).
    fn adjoint(&self, r: &Params, abs: bool) -> DVector<f64> {
        let (n, m) = (self.n(), self.theta.v.len());
        let (p, rv, v) = if abs {
            let xa = self.x.abs();
            let mut p = xa * r.w.abs().transpose();
            for (j, mut col) in p.column_iter_mut().enumerate() {
                col.add_scalar_mut(r.b[j].abs());
            }
            (p, r.v.abs(), self.theta.v.abs())
        } else {
            let mut p = self.x * r.w.transpose();
            for (j, mut col) in p.column_iter_mut().enumerate() {
                col.add_scalar_mut(r.b[j]);
            }
            (p, r.v.clone(), self.theta.v.clone())
        };
        let mut out = DVector::zeros(self.nvars());
        for i in 0..n {
            let mut s = 0.0;
            for j in 0..m {
                s += self.strict[(i, j)] * v[j] * p[(i, j)] + self.relu_u[(i, j)] * rv[j];
            }
            out[i] = if abs { s } else { self.y[i] * s };
        }
        for (t, &(i, j)) in self.amb.iter().enumerate() {
            let s = v[j] * p[(i, j)];
            out[n + t] = if abs { s } else { self.y[i] * s };
        }
        out
    }

    /// H = EᵀE and g = Eᵀf.
    fn gram(&self) -> (DMatrix<f64>, DVector<f64>) {
        let (n, na) = (self.n(), self.amb.len());
        let v = &self.theta.v;
        let mut k = self.x * self.x.transpose();
        k.add_scalar_mut(1.0);
        let bmat = DMatrix::from_fn(n, v.len(), |i, j| self.strict[(i, j)] * v[j]);
        let bb = &bmat * bmat.transpose();
        let rr = &self.relu_u * self.relu_u.transpose();
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
        (h, self.adjoint(&self.theta, false))
    }

    /// Makes z feasible: z ≥ 0, γ ≤ λ, and the complementarity row (by scaling).
    fn repair_primal(&self, z: &mut DVector<f64>) {
        let n = self.n();
        z.iter_mut().for_each(|v| *v = v.max(0.0));
        for (t, &(i, _)) in self.amb.iter().enumerate() {
            z[n + t] = z[n + t].min(z[i]);
        }
        if self.delta_rel.is_some() {
            let used = self.c.dot(&z.rows(0, n));
            if used > self.bvec[0] && used > 0.0 {
                *z *= self.bvec[0] / used * (1.0 - 4.0 * f64::EPSILON);
            }
        }
    }

    /// An a-priori bound on the rounding in one computed entry of Eᵀu − Aᵀμ.
    fn rounding(&self) -> f64 {
        let depth = (self.x.ncols() + self.theta.v.len() + self.n() + 16) as f64;
        4.0 * depth * f64::EPSILON
    }

    /// Repairs (u, μ) until Eᵀu ≤ Aᵀμ holds with rounding accounted for.
    fn repair_dual(&self, mut u: Params, mu: &DVector<f64>, h: &DMatrix<f64>) -> Option<Params> {
        let kappa = self.rounding();
        let atmu = self.a.transpose() * mu;
        let aabs_mu = self.a.abs().transpose() * mu;
        for _ in 0..8 {
            let etu = self.adjoint(&u, false);
            let err = (self.adjoint(&u, true) + &aabs_mu) * kappa;
            let viol: Vec<usize> = (0..etu.len())
                .filter(|&k| etu[k] - atmu[k] + err[k] > 0.0)
                .collect();
            if viol.is_empty() {
                return Some(u);
            }
            let rhs = DVector::from_iterator(
                viol.len(),
                viol.iter().map(|&k| etu[k] - atmu[k] + 2.0 * err[k]),
            );
            let hv = DMatrix::from_fn(viol.len(), viol.len(), |r, c| h[(viol[r], viol[c])]);
            let ridge = 1e-14 * hv.diagonal().amax().max(f64::MIN_POSITIVE);
            let hv = hv + DMatrix::identity(viol.len(), viol.len()) * ridge;
            let w = hv.clone().cholesky().map(|ch| ch.solve(&rhs))?;
            let mut zc = DVector::zeros(self.nvars());
            for (t, &k) in viol.iter().enumerate() {
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
        let num = u.dot(&self.theta) - mu.dot(&self.bvec);
        let num_err =
            (p + 4.0) * f64::EPSILON * (u.abs().dot(&self.theta.abs()) + mu.dot(&self.bvec));
        let den = u.dual_norm(norm) * (1.0 + (p + 4.0) * f64::EPSILON);
        if den > 0.0 {
            ((num - num_err) / den).max(0.0)
        } else {
            0.0
        }
    }

    /// Assembles the report for a primal z and a dual-feasible u.
    fn report(
        &self,
        norm: Norm,
        z: &DVector<f64>,
        lower: f64,
        opts: &CertifyOptions,
        iterations: usize,
        t0: std::time::Instant,
    ) -> Certificate {
        let n = self.n();
        let r = self.theta.sub(&self.apply(z));
        let upper = r.norm(norm);
        let theta_norm = self.theta.norm(norm);
        let theta_sq = self.theta.norm(Norm::L2).powi(2);
        let lambda: Vec<f64> = z.rows(0, n).iter().copied().collect();
        let comp = 2.0 * self.c.dot(&z.rows(0, n)) / theta_sq;
        let relative_upper = upper / theta_norm;
        let relative_lower = lower.min(upper) / theta_norm;
        let verdict = if relative_upper <= opts.tol && comp <= opts.tol {
            Verdict::Kkt
        } else if relative_lower > opts.tol {
            Verdict::NotKkt
        } else {
            Verdict::Undecided
        };
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
            seconds: t0.elapsed().as_secs_f64(),
        }
    }

    /// The ℓ2 certificate.
    pub fn certify_l2(&self, opts: &CertifyOptions) -> Result<Certificate> {
        let t0 = std::time::Instant::now();
        let (h, g) = self.gram();
        let sol = qp_nonneg(&h, &g, &self.a, &self.bvec);
        let mut z = sol.z.clone();
        self.repair_primal(&mut z);
        let r = self.theta.sub(&self.apply(&z));
        let lower = match self.repair_dual(r, &sol.mu, &h) {
            Some(u) => self.dual_bound(&u, &sol.mu, Norm::L2),
            None => 0.0,
        };
        Ok(self.report(Norm::L2, &z, lower, opts, sol.iterations, t0))
    }
}

/// Relative violation below which the ℓ∞ cutting planes stop adding rows.
const LINF_SLACK: f64 = 1e-8;

/// Most rounds of the ℓ∞ cutting-plane loop.
const MAX_ROUNDS: usize = 60;

impl KktSystem<'_> {
    /// Row k of E (the coefficients of z in parameter k).
    fn row(&self, k: usize) -> Vec<f64> {
        let (n, m, d) = (self.n(), self.theta.v.len(), self.x.ncols());
        let mut out = vec![0.0; self.nvars()];
        if k >= m * d + m {
            let j = k - m * d - m;
            for (i, o) in out.iter_mut().enumerate().take(n) {
                *o = self.y[i] * self.relu_u[(i, j)];
            }
            return out;
        }
        let (j, feat) = if k < m * d {
            (k / d, Some(k % d))
        } else {
            (k - m * d, None)
        };
        let xv = |i: usize| feat.map_or(1.0, |c| self.x[(i, c)]);
        let vj = self.theta.v[j];
        for (i, o) in out.iter_mut().enumerate().take(n) {
            *o = self.y[i] * self.strict[(i, j)] * vj * xv(i);
        }
        for (t, &(i, j2)) in self.amb.iter().enumerate() {
            if j2 == j {
                out[n + t] = self.y[i] * vj * xv(i);
            }
        }
        out
    }

    fn expr(coeffs: &[f64], vars: &[Variable]) -> Expression {
        let mut e = Expression::with_capacity(coeffs.len());
        for (&c, &v) in coeffs.iter().zip(vars) {
            if c != 0.0 {
                e.add_mul(c, v);
            }
        }
        e
    }

    /// The restricted primal LP: min t s.t. |f_k − E_k z| ≤ t (k ∈ rows),
    /// A z ≤ b, solved by Clarabel through good_lp. Returns z and the
    /// multipliers (u on the rows, μ on A) that the lower bound needs; the
    /// certificate re-checks both, so the interior-point tolerance only
    /// widens the bracket, never falsifies it.
    fn restricted_lp(&self, rows: &[usize]) -> Result<(DVector<f64>, Params, DVector<f64>)> {
        let mut pv = ProblemVariables::new();
        let t = pv.add(variable().min(0.0));
        let zs = pv.add_vector(variable().min(0.0), self.nvars());
        let mut model = pv.minimise(t).using(clarabel);
        model
            .settings()
            .tol_gap_abs(1e-12)
            .tol_gap_rel(1e-12)
            .tol_feas(1e-12)
            .verbose(false);
        let mut plus = Vec::with_capacity(rows.len());
        let mut minus = Vec::with_capacity(rows.len());
        for &k in rows {
            let e = Self::expr(&self.row(k), &zs);
            let fk = self.theta.get(k);
            plus.push(model.add_constraint((e.clone() + t).geq(fk)));
            minus.push(model.add_constraint((Expression::from(t) - e).geq(-fk)));
        }
        let arows: Vec<_> = (0..self.a.nrows())
            .map(|r| {
                let coeffs: Vec<f64> = self.a.row(r).iter().copied().collect();
                model.add_constraint(Self::expr(&coeffs, &zs).leq(self.bvec[r]))
            })
            .collect();
        let mut sol = model
            .solve()
            .map_err(|e| Error::Numerical(format!("ℓ∞ certificate LP failed: {e}")))?;
        let z = DVector::from_iterator(zs.len(), zs.iter().map(|&v| sol.value(v).max(0.0)));
        let dual = sol.compute_dual();
        let mut u = self.theta.sub(&self.theta);
        for (t, &k) in rows.iter().enumerate() {
            u.set(
                k,
                dual.dual(plus[t].clone()).abs() - dual.dual(minus[t].clone()).abs(),
            );
        }
        let mu = DVector::from_iterator(
            arows.len(),
            arows.iter().map(|c| dual.dual(c.clone()).abs()),
        );
        Ok((z, u, mu))
    }

    /// Flat indices of the `count` largest |r_k| above `level`.
    fn worst_rows(r: &Params, level: f64, count: usize, taken: &[bool]) -> Vec<usize> {
        let mut cand: Vec<(f64, usize)> = (0..r.len())
            .filter(|&k| !taken[k])
            .map(|k| (r.get(k).abs(), k))
            .filter(|(v, _)| *v > level)
            .collect();
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        cand.into_iter().take(count).map(|(_, k)| k).collect()
    }

    /// The ℓ∞ certificate by cutting planes: the LP only ever sees the rows
    /// of E that the residual has shown to matter (at most a few times N),
    /// never the 2p rows of the naive primal.
    pub fn certify_linf(&self, opts: &CertifyOptions) -> Result<Certificate> {
        let t0 = std::time::Instant::now();
        let p = self.theta.len();
        let batch = 2 * self.nvars() + 2;
        let mut taken = vec![false; p];
        // Seed the rows with the ℓ2 optimum's largest residuals: the ℓ∞
        // optimum is usually tight on many of them, which saves rounds.
        let (h, g) = self.gram();
        let mut z2 = qp_nonneg(&h, &g, &self.a, &self.bvec).z;
        self.repair_primal(&mut z2);
        let r2 = self.theta.sub(&self.apply(&z2));
        let mut rows = Self::worst_rows(&r2, -1.0, 4 * batch, &taken);
        rows.iter().for_each(|&k| taken[k] = true);
        let mut rounds = 0;
        let (z, u, mu) = loop {
            rounds += 1;
            let (mut z, u, mu) = self.restricted_lp(&rows)?;
            self.repair_primal(&mut z);
            let r = self.theta.sub(&self.apply(&z));
            let restricted = rows.iter().map(|&k| r.get(k).abs()).fold(0.0, f64::max);
            // Rows violated by less than LINF_SLACK (relative) are not worth
            // a round: the bracket stays certified, its gap at most that much.
            let level = restricted * (1.0 + LINF_SLACK) + 1e-300;
            let new = Self::worst_rows(&r, level, batch, &taken);
            if new.is_empty() || rounds >= MAX_ROUNDS {
                break (z, u, mu);
            }
            new.iter().for_each(|&k| taken[k] = true);
            rows.extend(new);
        };
        let lower = match self.repair_dual(u, &mu, &h) {
            Some(u) => self.dual_bound(&u, &mu, Norm::Linf),
            None => 0.0,
        };
        Ok(self.report(Norm::Linf, &z, lower, opts, rounds, t0))
    }
}

/// Certifies `net` on the training set `data` in the given norm.
pub fn certify(
    net: &Network,
    data: &Dataset,
    norm: Norm,
    opts: &CertifyOptions,
) -> Result<Certificate> {
    let (n, m) = (data.n() as f64, net.width() as f64);
    // U, ReLU(U) and the strict pattern, n×m each, plus the products with E.
    let base = 8.0 * 5.0 * n * m;
    crate::resources::ensure_fits(
        &format!(
            "certify ({} training points, {} neurons)",
            data.n(),
            net.width()
        ),
        base,
        "certify a subset of the training points, or run on a machine with more memory",
    )?;
    let sys = KktSystem::new(net, data, opts)?;
    if norm == Norm::L2 {
        // The N×N Gram system (N = n + ambiguous pairs): H, three n×n
        // products and the QP's factorisation.
        let nv = sys.nvars() as f64;
        crate::resources::ensure_fits(
            &format!(
                "the ℓ2 certificate's {}×{} Gram system",
                sys.nvars(),
                sys.nvars()
            ),
            base + 8.0 * (3.0 * n * n + 3.0 * nv * nv),
            "certify a subset of the training points (the working-set method for large n is not built yet), or run on a machine with more memory",
        )?;
    }
    match norm {
        Norm::L2 => sys.certify_l2(opts),
        Norm::Linf => sys.certify_linf(opts),
    }
}

/// The norms named by `l2`, `linf` or `both` (the CLI's and Python's `norm`).
pub fn parse_norms(s: &str) -> Result<Vec<Norm>> {
    match s {
        "l2" => Ok(vec![Norm::L2]),
        "linf" => Ok(vec![Norm::Linf]),
        "both" => Ok(vec![Norm::L2, Norm::Linf]),
        _ => Err(Error::param(
            "norm",
            format!("`{s}`, expected l2, linf or both"),
        )),
    }
}

/// The JSON of one checkpoint's certificates as `certify --json` writes it:
/// the certificate itself for one norm, `{l2, linf}` for both.
pub fn certificates_json(certs: &[Certificate]) -> serde_json::Value {
    if let [c] = certs {
        return serde_json::to_value(c).expect("certificate serialises");
    }
    let mut out = serde_json::Map::new();
    for c in certs {
        let key = if c.norm == Norm::L2 { "l2" } else { "linf" };
        out.insert(key.into(), serde_json::to_value(c).expect("serialises"));
    }
    out.into()
}
