//! KKT certificates for deep and multi-class homogeneous ReLU nets: Lyu &
//! Li's problem
//!
//! ```text
//!   min ½‖θ‖²   s.t.   q_ij(θ) = f_{y_i}(x_i; θ) − f_j(x_i; θ) ≥ 1   (i ≤ n, j ≠ y_i)
//! ```
//!
//! (one constraint y_i f(x_i) ≥ 1 per point for a scalar output). The net is
//! rescaled to min-margin 1, θ̂ = αθ with α = (min q)^{−1/D} (D = L + 1, the
//! degree of homogeneity), and the certificate brackets
//!
//! ```text
//!   ε* = min ‖θ̂ − Σ λ_c g_c‖   over λ ≥ 0 with Σ λ_c (q̂_c − 1) ≤ δ,   δ = δ_rel · ½‖θ̂‖²,
//! ```
//!
//! g_c a generalised gradient of constraint c's margin (SPEC §3, deep nets).
//!
//! **Which gradients.** A neuron of point i is *near a kink* when its
//! pre-activation is within τ‖(w, b)‖(‖h‖ + 1) of 0 (h its layer's input).
//! Let J_i(s) be the chain-rule gradient with the ReLU slopes of those K_i
//! neurons fixed to s ∈ {0,1}^{K_i} (the others by their sign). Every
//! gradient at a nearby differentiable θ is some J_i(s), so the Clarke
//! subdifferential lies in conv{J_i(s)}: the **lower bound** ranges over that
//! hull (priced exactly for K_i ≤ [`MAX_KINKS`] and at most [`MAX_VERTICES`]
//! vertices in all; beyond that the lower bound is 0). The **upper bound** uses only gradients that *are* Clarke elements:
//! the gradient itself at points with no pre-activation exactly 0 (there f
//! is differentiable in θ), and λ = 0 at points with an exact kink. Where the
//! two sets differ the bracket shows it and the verdict is `undecided`.
//!
//! **Solve.** A working set of constraints (smallest margins first) is
//! solved exactly as the QP min ½‖θ̂ − Gλ‖² over λ ≥ 0, cᵀλ ≤ δ on its
//! formed Gram matrix ([`crate::linalg::qp_capped`], no caps); every constraint is
//! then priced by one forward-mode pass per point (t_c = ⟨g_c, r⟩ for the
//! residual r), violated ones join, and the loop repeats.
//!
//! **Certified bracket.** `upper` is ‖θ̂ − Gλ‖ recomputed for the final λ,
//! scaled onto cᵀλ ≤ δ. `lower` is weak duality with the residual u = r and
//! the row's multiplier μ, made robust to whatever pricing found violated:
//! for any feasible λ no worse than λ = 0, Euler's identity ⟨g_c, θ̂⟩ =
//! D q_c gives Σ λ_c ≤ Λ = 2‖θ̂‖² / (D min_c q_c), so
//!
//! ```text
//!   ε* ≥ (uᵀθ̂ − μδ − Λ · max_c (t_c − μ c_c)⁺) / ‖u‖,
//! ```
//!
//! with q_c for a hull vertex J_i(s) the margin of the net with those slopes.

use crate::error::{Error, Result};
use crate::kkt::Verdict;
use crate::linalg::{product, qp_capped, Constraints, Finish};
use crate::model::deep::{flatten, unflatten, DeepNet, Labels};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use std::time::Instant;

/// Most near-kink neurons of one point whose 2^K hull vertices are priced;
/// beyond it the lower bound is 0.
pub const MAX_KINKS: usize = 10;

/// Most hull vertices over all points (each is a forward pass and a group of
/// columns); beyond it the lower bound is 0 rather than the memory exhausted.
pub const MAX_VERTICES: usize = 4096;

/// Columns in the first working set (those of smallest margin).
const INITIAL_WORKING: usize = 400;

/// Most columns that join the working set per round.
const JOIN_PER_ROUND: usize = 1000;

/// Rounds of column generation before the bracket is taken as it stands.
const MAX_ROUNDS: usize = 50;

/// Options of [`certify_deep`].
#[derive(Clone, Debug)]
pub struct DeepCertifyOptions {
    /// Tolerance on ε_rel and δ_rel for the verdict.
    pub tol: f64,
    /// δ_rel of the complementarity row; `None` drops it.
    pub delta_rel: Option<f64>,
    /// τ: the relative threshold for near-kink neurons.
    pub act_tol: f64,
}

/// One constraint with λ > 0.
#[derive(Clone, Debug, Serialize)]
pub struct DeepSupport {
    /// The training point.
    pub index: usize,
    /// The rival class j (absent for a scalar output).
    pub rival: Option<usize>,
    /// λ.
    pub lambda: f64,
    /// q̂ of the constraint.
    pub margin: f64,
}

/// A certificate for a deep net (the `certify --json` of a deep net).
#[derive(Clone, Debug, Serialize)]
pub struct DeepCertificate {
    /// Proven upper bound on ε*.
    pub upper: f64,
    /// Proven lower bound on ε*.
    pub lower: f64,
    /// upper / ‖θ̂‖.
    pub relative_upper: f64,
    /// lower / ‖θ̂‖.
    pub relative_lower: f64,
    /// Σ λ_c (q̂_c − 1) / (½‖θ̂‖²).
    pub relative_complementarity: f64,
    /// δ_rel of the row (None: dropped).
    pub delta_rel: Option<f64>,
    /// The verdict's tolerance.
    pub tol: f64,
    /// τ for near-kink neurons.
    pub act_tol: f64,
    /// α with θ̂ = αθ.
    pub scale: f64,
    /// D = L + 1.
    pub degree: usize,
    /// ‖θ̂‖.
    pub theta_norm: f64,
    /// Margin constraints in the problem.
    pub constraints: usize,
    /// Constraints in the final working set.
    pub working_set: usize,
    /// Column-generation rounds.
    pub rounds: usize,
    /// Points with a neuron near a kink (their hull is priced for the lower bound).
    pub near_kink_points: usize,
    /// Points with a pre-activation exactly 0 (λ = 0 for them in the upper bound).
    pub exact_kink_points: usize,
    /// Near-kink points left unpriced: those with more than [`MAX_KINKS`]
    /// near-kink neurons, or all of them when their hull would exceed
    /// [`MAX_VERTICES`] vertices (the lower bound is then 0).
    pub unpriced_points: usize,
    /// What each bound ranges over.
    pub gradients: &'static str,
    /// Constraints with λ > 0.
    pub support: Vec<DeepSupport>,
    /// The verdict.
    pub verdict: Verdict,
    /// Wall time.
    pub seconds: f64,
}

const GRADIENTS: &str = "lower: conv{J_i(s)}, the chain-rule gradients with every near-kink ReLU slope s ∈ {0,1}, a superset of the Clarke subdifferential; upper: the gradient at points with no exact kink (an element of it), λ = 0 at points with an exact kink";

/// A net's parameters as one flat vector per layer: W row-major, then b.
#[derive(Clone, Debug)]
struct Params {
    w: Vec<DMatrix<f64>>,
    b: Vec<Option<DVector<f64>>>,
}

impl Params {
    fn of(net: &DeepNet, scale: f64) -> Self {
        Self {
            w: net.layers().iter().map(|l| l.weight() * scale).collect(),
            b: net
                .layers()
                .iter()
                .map(|l| l.bias().map(|b| b * scale))
                .collect(),
        }
    }

    /// The flat vector: per layer, W row-major then b.
    fn flat(&self) -> DVector<f64> {
        flatten(self.w.iter().zip(self.b.iter().map(Option::as_ref)))
    }

    /// The inverse of [`Params::flat`] in the shapes of `self`.
    fn unflat(&self, v: &DVector<f64>) -> Self {
        let shapes = self
            .w
            .iter()
            .zip(&self.b)
            .map(|(w, b)| (w.shape(), b.as_ref().map(|b| b.len())));
        let (w, b) = unflatten(shapes, v).into_iter().unzip();
        Self { w, b }
    }
}

/// One point's forward pass: every hidden layer's input h and pre-activation u.
#[derive(Clone)]
struct Pass {
    h: Vec<DVector<f64>>,
    u: Vec<DVector<f64>>,
    out: DVector<f64>,
}

/// Slopes of the hidden neurons: 1 or 0 per neuron and layer.
type Slopes = Vec<DVector<f64>>;

fn affine(p: &Params, l: usize, h: &DVector<f64>) -> DVector<f64> {
    let mut u = &p.w[l] * h;
    if let Some(b) = &p.b[l] {
        u += b;
    }
    u
}

/// The pass with the slopes `s` (h_l = s_l ⊙ u_l); `None`: the ReLU's own.
fn forward(p: &Params, x: &DVector<f64>, s: Option<&Slopes>) -> (Pass, Slopes) {
    let hidden = p.w.len() - 1;
    let (mut h, mut u, mut slopes) = (vec![x.clone()], Vec::new(), Vec::new());
    for l in 0..hidden {
        let ul = affine(p, l, &h[l]);
        let sl = s.map_or_else(
            || ul.map(|v| if v > 0.0 { 1.0 } else { 0.0 }),
            |s| s[l].clone(),
        );
        h.push(ul.component_mul(&sl));
        u.push(ul);
        slopes.push(sl);
    }
    let out = affine(p, hidden, &h[hidden]);
    (Pass { h, u, out }, slopes)
}

/// The directional derivative of f(x) along the parameters `t`, slopes `s`.
fn tangent(p: &Params, t: &Params, pass: &Pass, s: &Slopes) -> DVector<f64> {
    let last = p.w.len() - 1;
    let mut dh = DVector::zeros(pass.h[0].len());
    for (l, ((w, tw), (tb, h))) in
        p.w.iter()
            .zip(&t.w)
            .zip(t.b.iter().zip(&pass.h))
            .enumerate()
    {
        let mut du = tw * h + w * &dh;
        if let Some(b) = tb {
            du += b;
        }
        if l == last {
            return du;
        }
        dh = du.component_mul(&s[l]);
    }
    dh
}

/// A margin constraint: point, rival class (None: scalar output).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Constraint {
    pub(crate) point: usize,
    pub(crate) rival: Option<usize>,
}

/// ∂q_c/∂f: y_i for a scalar output, e_{y_i} − e_j for classes.
pub(crate) fn cotangent(c: Constraint, labels: &Labels, outputs: usize) -> DVector<f64> {
    let mut a = DVector::zeros(outputs);
    match (labels, c.rival) {
        (Labels::Signs(y), _) => a[0] = y[c.point],
        (Labels::Classes(y), Some(j)) => {
            a[y[c.point]] = 1.0;
            a[j] = -1.0;
        }
        (Labels::Classes(_), None) => {}
    }
    a
}

fn margin_of(out: &DVector<f64>, c: Constraint, labels: &Labels) -> f64 {
    cotangent(c, labels, out.len()).dot(out)
}

/// Per point: its near-kink neurons (layer, index) and whether a
/// pre-activation is exactly 0.
struct PointInfo {
    near: Vec<(usize, usize)>,
    exact_kink: bool,
}

/// Point `i`'s own pass (the group of its true gradients) and its kinks.
fn point_info(p: &Params, i: usize, x: &DVector<f64>, act_tol: f64) -> (Group, PointInfo) {
    let (pass, slopes) = forward(p, x, None);
    let mut near = Vec::new();
    let mut exact_kink = false;
    for (l, u) in pass.u.iter().enumerate() {
        let hnorm = pass.h[l].norm();
        for (k, &v) in u.iter().enumerate() {
            let row = p.w[l].row(k).norm_squared() + p.b[l].as_ref().map_or(0.0, |b| b[k] * b[k]);
            if v.abs() <= act_tol * row.sqrt() * (hnorm + 1.0) {
                near.push((l, k));
            }
            exact_kink |= v == 0.0;
        }
    }
    let group = Group {
        point: i,
        pass,
        slopes,
        own: true,
    };
    (group, PointInfo { near, exact_kink })
}

/// A point's pass under some slopes: the point's own, or a hull vertex.
struct Group {
    point: usize,
    pass: Pass,
    slopes: Slopes,
    /// The slopes are the point's own (the ReLU's at θ̂).
    own: bool,
}

/// A candidate column: a constraint of a group's point.
#[derive(Clone, Copy, Debug)]
struct Column {
    group: usize,
    constraint: usize,
}

/// The columns' backprop signals δ_l and layer inputs h_l, one matrix
/// column per candidate column and layer: ⟨g_c, g_c'⟩ =
/// Σ_l (δ_l^c·δ_l^c')(h_l^c·h_l^c' + [layer l has a bias]).
struct Signals {
    delta: Vec<DMatrix<f64>>,
    h: Vec<DMatrix<f64>>,
}

/// Certifies `net` on (`x`, `labels`).
pub fn certify_deep(
    net: &DeepNet,
    x: &DMatrix<f64>,
    labels: &Labels,
    opts: &DeepCertifyOptions,
) -> Result<DeepCertificate> {
    let start = Instant::now();
    if let Some(why) = net.homogeneity().refusal() {
        return Err(Error::param("net", why));
    }
    if opts.act_tol.is_nan() || opts.act_tol < 0.0 {
        return Err(Error::param("act_tol", "expected τ ≥ 0"));
    }
    let degree = net.layers().len();
    let margins = net.margins(x, labels)?;
    let min_q = margins.iter().copied().fold(f64::INFINITY, f64::min);
    if min_q.is_nan() || min_q <= 0.0 {
        return Err(Error::Numerical(format!(
            "minimum margin is {min_q:.3e} ≤ 0: the network does not classify every training point correctly, so it cannot be rescaled onto the max-margin constraint set"
        )));
    }
    let scale = min_q.powf(-1.0 / degree as f64);
    let p = Params::of(net, scale);
    let theta = p.flat();
    let theta_norm_sq = theta.norm_squared();
    // The upper bound's columns: true gradients at points without an exact kink.
    let (own, points): (Vec<Group>, Vec<PointInfo>) = (0..x.nrows())
        .map(|i| point_info(&p, i, &x.row(i).transpose(), opts.act_tol))
        .unzip();
    let outputs = net.layers().last().map_or(1, |l| l.outputs());
    let constraints = all_constraints(labels, outputs);
    let q: Vec<f64> = constraints
        .iter()
        .map(|&c| margin_of(&own[c.point].pass.out, c, labels))
        .collect();
    let vertices_needed: usize = points
        .iter()
        .filter(|pt| !pt.near.is_empty())
        .map(|pt| 1usize << pt.near.len().min(MAX_KINKS + 1))
        .sum();
    let unpriced = if vertices_needed > MAX_VERTICES {
        points.iter().filter(|pt| !pt.near.is_empty()).count()
    } else {
        points.iter().filter(|pt| pt.near.len() > MAX_KINKS).count()
    };
    let problem = Problem {
        p: &p,
        theta: &theta,
        constraints: &constraints,
        by_point: by_point(&constraints, points.len()),
        labels,
        c_row: q.iter().map(|q| (q - 1.0).max(0.0)).collect(),
        budget: opts
            .delta_rel
            .filter(|d| d.is_finite())
            .map(|d| d * 0.5 * theta_norm_sq),
    };
    let usable: Vec<bool> = points.iter().map(|pt| !pt.exact_kink).collect();
    let upper_sol = problem.generate(&own, &usable, &[]);
    // The lower bound's columns: the hull at near-kink points, when there are any.
    let hull_needed = points.iter().any(|pt| !pt.near.is_empty()) && unpriced == 0;
    let lower_sol = if hull_needed {
        let hull = hull_groups(&p, &own, &points);
        // Warm: the upper bound's support, as the same constraints at each point's own slopes.
        let warm: Vec<usize> = upper_sol.working.iter().map(|c| c.constraint).collect();
        Some(problem.generate(&hull, &vec![true; points.len()], &warm))
    } else {
        None
    };
    let lower_from = lower_sol.as_ref().unwrap_or(&upper_sol);
    let lower = if unpriced > 0 { 0.0 } else { lower_from.lower };
    let upper = upper_sol.residual.norm();
    let comp = upper_sol.complementarity;
    let theta_norm = theta_norm_sq.sqrt();
    let relative_complementarity = comp / (0.5 * theta_norm_sq);
    let lower = lower.min(upper);
    let (relative_upper, relative_lower) = (upper / theta_norm, lower / theta_norm);
    let verdict = Verdict::of(
        relative_lower,
        relative_upper,
        relative_complementarity,
        opts.tol,
    );
    Ok(DeepCertificate {
        upper,
        lower,
        relative_upper,
        relative_lower,
        relative_complementarity,
        delta_rel: problem.budget.and(opts.delta_rel),
        tol: opts.tol,
        act_tol: opts.act_tol,
        scale,
        degree,
        theta_norm,
        constraints: constraints.len(),
        working_set: upper_sol.working.len(),
        rounds: upper_sol.rounds + lower_sol.as_ref().map_or(0, |s| s.rounds),
        near_kink_points: points.iter().filter(|pt| !pt.near.is_empty()).count(),
        exact_kink_points: points.iter().filter(|pt| pt.exact_kink).count(),
        unpriced_points: unpriced,
        gradients: GRADIENTS,
        support: upper_sol
            .working
            .iter()
            .zip(upper_sol.lambda.iter())
            .filter(|(_, &l)| l > 0.0)
            .map(|(col, &l)| {
                let c = constraints[col.constraint];
                DeepSupport {
                    index: c.point,
                    rival: c.rival,
                    lambda: l,
                    margin: q[col.constraint],
                }
            })
            .collect(),
        verdict,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Every hull vertex of every point: the point's own slopes with its
/// near-kink neurons' slopes set every way.
fn hull_groups(p: &Params, own: &[Group], points: &[PointInfo]) -> Vec<Group> {
    own.iter()
        .zip(points)
        .flat_map(|(g, pt)| {
            vertices(&g.slopes, &pt.near).into_iter().map(move |s| {
                let own = s == g.slopes;
                Group {
                    point: g.point,
                    pass: if own {
                        g.pass.clone()
                    } else {
                        forward(p, &g.pass.h[0], Some(&s)).0
                    },
                    own,
                    slopes: s,
                }
            })
        })
        .collect()
}

fn by_point(constraints: &[Constraint], n: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); n];
    for (c, con) in constraints.iter().enumerate() {
        out[con.point].push(c);
    }
    out
}

/// Every margin constraint, point by point (rivals in class order): the
/// order of λ in the certificate and the polish.
pub(crate) fn all_constraints(labels: &Labels, outputs: usize) -> Vec<Constraint> {
    match labels {
        Labels::Signs(y) => (0..y.len())
            .map(|i| Constraint {
                point: i,
                rival: None,
            })
            .collect(),
        Labels::Classes(y) => y
            .iter()
            .enumerate()
            .flat_map(|(i, &yi)| {
                (0..outputs)
                    .filter(move |&j| j != yi)
                    .map(move |j| Constraint {
                        point: i,
                        rival: Some(j),
                    })
            })
            .collect(),
    }
}

/// The data of one certificate problem.
struct Problem<'a> {
    p: &'a Params,
    theta: &'a DVector<f64>,
    constraints: &'a [Constraint],
    by_point: Vec<Vec<usize>>,
    labels: &'a Labels,
    c_row: Vec<f64>,
    budget: Option<f64>,
}

/// The outcome of column generation over a set of groups.
struct Solution {
    working: Vec<Column>,
    lambda: DVector<f64>,
    residual: DVector<f64>,
    complementarity: f64,
    /// The weak-duality bound of the module docs for these groups' columns.
    lower: f64,
    rounds: usize,
}

impl Problem<'_> {
    /// Column generation over the columns of `groups` at `usable` points,
    /// from the smallest margins and the constraints `warm` (own slopes).
    fn generate(&self, groups: &[Group], usable: &[bool], warm: &[usize]) -> Solution {
        let candidates: Vec<Column> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| usable[g.point])
            .flat_map(|(gi, g)| {
                self.by_point[g.point].iter().map(move |&c| Column {
                    group: gi,
                    constraint: c,
                })
            })
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| {
            self.c_row[candidates[a].constraint].total_cmp(&self.c_row[candidates[b].constraint])
        });
        let mut in_set = vec![false; candidates.len()];
        let mut is_warm = vec![false; self.constraints.len()];
        warm.iter().for_each(|&c| is_warm[c] = true);
        let mut working: Vec<usize> = (0..candidates.len())
            .filter(|&k| is_warm[candidates[k].constraint] && groups[candidates[k].group].own)
            .collect();
        working.extend(order.into_iter().take(INITIAL_WORKING));
        working.retain(|&k| !std::mem::replace(&mut in_set[k], true));
        let mut free: Vec<usize> = Vec::new();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let cols: Vec<Column> = working.iter().map(|&k| candidates[k]).collect();
            let (lambda, mu, residual) = self.solve(groups, &cols, &free);
            free = (0..cols.len()).filter(|&k| lambda[k] > 0.0).collect();
            let t = self.price(groups, &candidates, &residual);
            let reduced: Vec<f64> = candidates
                .iter()
                .zip(&t)
                .map(|(col, t)| t - mu * self.c_row[col.constraint])
                .collect();
            // Rounding in t is ~1e-16 ‖g‖‖u‖; joining stops well above it.
            let noise = 1e-13 * residual.norm() * self.theta.norm();
            let mut joining: Vec<usize> = (0..candidates.len())
                .filter(|&k| !in_set[k] && reduced[k] > noise)
                .collect();
            joining.sort_by(|&a, &b| reduced[b].total_cmp(&reduced[a]));
            joining.truncate(JOIN_PER_ROUND);
            if joining.is_empty() || rounds >= MAX_ROUNDS {
                let c_of: Vec<f64> = candidates
                    .iter()
                    .map(|col| self.c_row[col.constraint])
                    .collect();
                let min_q = self.min_margin(groups, usable);
                // Columns without slack (c = 0) that the rounded optimum leaves
                // slightly violated: project u off them, so that Λ never
                // multiplies a rounding error.
                let tight: Vec<Column> = (0..candidates.len())
                    .filter(|&k| c_of[k] == 0.0 && t[k] > 0.0)
                    .map(|k| candidates[k])
                    .collect();
                let (u, t) = if tight.is_empty() {
                    (residual.clone(), t)
                } else {
                    let u = self.project_off(groups, &tight, &residual);
                    let t = self.price(groups, &candidates, &u);
                    (u, t)
                };
                let lower = self.lower_bound(&u, mu, &t, &c_of, min_q);
                let complementarity = cols
                    .iter()
                    .zip(lambda.iter())
                    .map(|(col, l)| l * self.c_row[col.constraint])
                    .sum();
                return Solution {
                    working: cols,
                    lambda,
                    residual,
                    complementarity,
                    lower,
                    rounds,
                };
            }
            for k in joining {
                in_set[k] = true;
                working.push(k);
            }
        }
    }

    /// The smallest margin of any column (a hull vertex's under its slopes).
    fn min_margin(&self, groups: &[Group], usable: &[bool]) -> f64 {
        groups
            .iter()
            .filter(|g| usable[g.point])
            .flat_map(|g| {
                self.by_point[g.point]
                    .iter()
                    .map(move |&c| margin_of(&g.pass.out, self.constraints[c], self.labels))
            })
            .fold(f64::INFINITY, f64::min)
    }

    fn signals(&self, groups: &[Group], cols: &[Column]) -> Signals {
        let layers = self.p.w.len();
        let mut delta: Vec<DMatrix<f64>> = (0..layers)
            .map(|l| DMatrix::zeros(self.p.w[l].nrows(), cols.len()))
            .collect();
        let mut h: Vec<DMatrix<f64>> = (0..layers)
            .map(|l| DMatrix::zeros(self.p.w[l].ncols(), cols.len()))
            .collect();
        for (k, col) in cols.iter().enumerate() {
            let g = &groups[col.group];
            let con = self.constraints[col.constraint];
            let mut d = cotangent(con, self.labels, g.pass.out.len());
            for l in (0..layers).rev() {
                if l + 1 < layers {
                    d = d.component_mul(&g.slopes[l]);
                }
                delta[l].set_column(k, &d);
                h[l].set_column(k, &g.pass.h[l]);
                d = self.p.w[l].transpose() * &d;
            }
        }
        Signals { delta, h }
    }

    /// λ ≥ 0 on `cols`, scaled onto cᵀλ ≤ δ, the row's μ (0 without the
    /// row) and the residual θ̂ − Gλ.
    fn solve(
        &self,
        groups: &[Group],
        cols: &[Column],
        start: &[usize],
    ) -> (DVector<f64>, f64, DVector<f64>) {
        let sig = self.signals(groups, cols);
        let n = cols.len();
        let mut gram = DMatrix::zeros(n, n);
        let mut rhs = DVector::zeros(n);
        for l in 0..self.p.w.len() {
            let dd = product(&sig.delta[l], true, &sig.delta[l], false);
            let mut hh = product(&sig.h[l], true, &sig.h[l], false);
            if self.p.b[l].is_some() {
                hh.add_scalar_mut(1.0);
            }
            gram += dd.component_mul(&hh);
            // ⟨g_c, θ̂⟩ over layer l: δᵀ (W h + b).
            let mut u = &self.p.w[l] * &sig.h[l];
            if let Some(b) = &self.p.b[l] {
                for mut c in u.column_iter_mut() {
                    c += b;
                }
            }
            rhs += sig.delta[l].component_mul(&u).row_sum().transpose();
        }
        let (a, b) = match self.budget {
            Some(delta) => (
                DMatrix::from_row_iterator(1, n, cols.iter().map(|c| self.c_row[c.constraint])),
                DVector::from_element(1, delta),
            ),
            None => (DMatrix::zeros(0, n), DVector::zeros(0)),
        };
        let caps = vec![None; n];
        let cons = Constraints {
            caps: &caps,
            a: &a,
            b: &b,
        };
        let sol = qp_capped(&gram, &rhs, &cons, Finish::Exact, f64::NEG_INFINITY, start);
        let mut lambda = sol.z;
        if let Some(delta) = self.budget {
            let used: f64 = cols
                .iter()
                .zip(lambda.iter())
                .map(|(c, l)| l * self.c_row[c.constraint])
                .sum();
            if used > delta {
                lambda *= delta / used;
            }
        }
        let residual = self.residual(&sig, &lambda);
        let mu = if self.budget.is_some() {
            sol.mu.iter().copied().next().unwrap_or(0.0)
        } else {
            0.0
        };
        (lambda, mu, residual)
    }

    /// u − G_T a with a the least-squares coefficients, so that ⟨g_c, u⟩ = 0
    /// (up to rounding) for the columns `tight`.
    fn project_off(&self, groups: &[Group], tight: &[Column], u: &DVector<f64>) -> DVector<f64> {
        let sig = self.signals(groups, tight);
        let cols: Vec<DVector<f64>> = (0..tight.len())
            .map(|k| {
                let w: Vec<DMatrix<f64>> = (0..self.p.w.len())
                    .map(|l| sig.delta[l].column(k) * sig.h[l].column(k).transpose())
                    .collect();
                let b = (0..self.p.w.len())
                    .map(|l| {
                        self.p.b[l]
                            .as_ref()
                            .map(|_| sig.delta[l].column(k).into_owned())
                    })
                    .collect();
                Params { w, b }.flat()
            })
            .collect();
        let g = DMatrix::from_columns(&cols);
        match (g.transpose() * &g)
            .svd(true, true)
            .solve(&(g.transpose() * u), 1e-14)
        {
            Ok(a) => u - g * a,
            Err(_) => u.clone(),
        }
    }

    /// θ̂ − Gλ, per layer W_l − Δ_l diag(λ) H_lᵀ (and b_l − Δ_l λ).
    fn residual(&self, sig: &Signals, lambda: &DVector<f64>) -> DVector<f64> {
        let mut w = Vec::new();
        let mut b = Vec::new();
        for l in 0..self.p.w.len() {
            let mut scaled = sig.delta[l].clone();
            for (mut c, &lam) in scaled.column_iter_mut().zip(lambda.iter()) {
                c *= lam;
            }
            w.push(&self.p.w[l] - product(&scaled, false, &sig.h[l], true));
            b.push(self.p.b[l].as_ref().map(|bl| bl - scaled.column_sum()));
        }
        Params { w, b }.flat()
    }

    /// t = ⟨g, u⟩ for every candidate column: one forward-mode pass per group.
    fn price(&self, groups: &[Group], candidates: &[Column], u: &DVector<f64>) -> Vec<f64> {
        let t = self.p.unflat(u);
        let df: Vec<DVector<f64>> = groups
            .iter()
            .map(|g| tangent(self.p, &t, &g.pass, &g.slopes))
            .collect();
        candidates
            .iter()
            .map(|col| {
                let d = &df[col.group];
                cotangent(self.constraints[col.constraint], self.labels, d.len()).dot(d)
            })
            .collect()
    }

    /// The weak-duality bound of the module docs for u = the residual, with
    /// t_c = ⟨g_c, u⟩ and c_c the slack of every column, at the best μ ≥ the
    /// row's multiplier: min μδ + Λ max_c (t_c − μ c_c)⁺ is convex and
    /// piecewise linear in μ, so its minimum is at μ_QP or at a breakpoint
    /// t_c / c_c of the most violated columns.
    fn lower_bound(&self, u: &DVector<f64>, mu_qp: f64, t: &[f64], c: &[f64], min_q: f64) -> f64 {
        let unorm = u.norm();
        if unorm == 0.0 || min_q <= 0.0 {
            return 0.0;
        }
        let degree = self.p.w.len() as f64;
        let big_lambda = 2.0 * self.theta.norm_squared() / (degree * min_q);
        let delta = self.budget.unwrap_or(0.0);
        let loss = |mu: f64| {
            let worst = t.iter().zip(c).map(|(t, c)| t - mu * c).fold(0.0, f64::max);
            mu * delta + big_lambda * worst
        };
        let mut candidates = vec![mu_qp];
        if self.budget.is_some() {
            let mut breaks: Vec<f64> = t
                .iter()
                .zip(c)
                .filter(|&(&t, &c)| c > 0.0 && t > mu_qp * c)
                .map(|(t, c)| t / c)
                .collect();
            breaks.sort_by(|a, b| b.total_cmp(a));
            candidates.extend(breaks.into_iter().take(64));
        }
        let (best, mu) = candidates
            .into_iter()
            .map(|mu| (loss(mu), mu))
            .fold((f64::INFINITY, mu_qp), |a, b| if b.0 < a.0 { b } else { a });
        // Rounding in uᵀθ̂ and the norms: a relative 1e-13 of the terms.
        let slack = 1e-13 * (unorm * self.theta.norm() + mu * delta);
        ((u.dot(self.theta) - best - slack) / unorm).max(0.0)
    }
}

/// Every choice of the near-kink slopes, the others as in `own`.
fn vertices(own: &Slopes, near: &[(usize, usize)]) -> Vec<Slopes> {
    (0..1usize << near.len())
        .map(|mask| {
            let mut s = own.clone();
            for (bit, &(l, k)) in near.iter().enumerate() {
                s[l][k] = ((mask >> bit) & 1) as f64;
            }
            s
        })
        .collect()
}
