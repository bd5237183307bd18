//! A multi-neuron lower bound on a node's flip distance: quadratic
//! over-estimators of the hurting ReLUs and the S-lemma (the dual of the
//! Shor semidefinite relaxation, solved without an SDP solver).
//!
//! **The bound.** Write the flip condition of a node as Φ(δ) ≥ 0 with
//! Φ = −s0·N(x0 + δ) = Σ_j φ_j(z_j) + k0, z_j = u_j0 + w_jᵀδ. Each term has
//! a quadratic upper bound valid on the whole node (not only on a ball):
//! - a free hurting neuron (s0·v_j < 0, a_j = |v_j|), for any p > 0,
//!   a·ReLU(z) ≤ p z² + (a/2) z + a²/(16p)
//!   (the right side minus a·ReLU(z) is p(z ± a/(4p))² on either side of 0:
//!   the parabola touches 0 at z = −a/(4p) and a·z at z = a/(4p));
//! - a helping neuron: −a·ReLU(z) ≤ −λ a z for any λ ∈ [0, 1];
//! - a hurting neuron fixed active (z ≥ 0 on the node): a z + ρ z, ρ ≥ 0;
//!   fixed inactive (z ≤ 0): −ρ z, ρ ≥ 0 (Lagrange terms of its sign row).
//!
//! Their sum is a quadratic Q(δ) = δᵀAδ + gᵀδ + k with A = Σ_free p_j w_j w_jᵀ
//! ⪰ 0, and every flip of the node has Q(δ) ≥ 0. For any ν > 0 with
//! I − νA ≻ 0, weak duality gives
//!
//!   dist² ≥ min_δ ‖δ‖² − ν Q(δ) = −νk − (ν²/4) gᵀ(I − νA)⁻¹g =: D,
//!
//! and by the S-lemma the best ν makes this min{‖δ‖² : Q(δ) ≥ 0} exactly.
//! In the variables (ν, νp, νλ, νρ) the value D is jointly concave (each
//! term of ‖δ‖² − νQ is affine in them except −ν²a²/(16·νp), which is
//! concave). We maximise by L-BFGS over ln ν, ln(νp), θ with λ = sin²θ,
//! and √(νρ) (which keeps the constraints p > 0, λ ∈ [0, 1], ρ ≥ 0
//! implicit) and keep the best D evaluated: every evaluated point is a
//! valid bound, optimal or not. (Solving for ν in closed form instead, D
//! being a concave quadratic in ν once the rest is fixed, gave worse
//! maxima and four to ten evaluations per iteration: not kept.)
//!
//! **Why sin², not logit** (SPEC §4, "The multi-neuron bound"). At the maximiser most helping
//! neurons' λ sit at an end of [0, 1]: on a k=16, d=100, width-160 root,
//! the Shor SDP (cvxpy + Clarabel) puts 71 of 74 there. λ = sin²θ
//! reaches both ends at finite θ (0 and π/2), as √ does for ρ ≥ 0; the
//! logistic function reaches them only as θ → ±∞, with a slope λ(1 − λ)
//! that vanishes on the way, so L-BFGS crawled toward them. On that root
//! the logit parametrisation stalled at 4.0785 (4.0601 after 50
//! iterations); sin² reaches 4.2842 after 50 and 4.317406 after 3,200,
//! the SDP's value and the point's distance.
//!
//! **Why it is needed.** The chord relaxation bounds each hurting ReLU
//! separately over its range; with hundreds of them unstable, the relaxed
//! optimum uses every chord's slack at once. The quadratic couples them
//! through A: the ball's budget ‖δ‖² is charged once for all neurons, which
//! is where the Shor relaxation's strength comes from. On GD nets trained
//! from a large initialisation this bound is nearly tight where the chords
//! are far off: a k=8, d=1600, width-80 net's point 0 is at distance
//! 14.5659; the search's chords with dual cuts bound it by 9.16 at the
//! root, a NumPy prototype of this bound by 14.5, and the Shor SDP itself
//! (cvxpy + Clarabel, 70 s per radius) by 14.5 as well.
//!
//! **Cost.** With F the free hurting neurons, Woodbury gives
//! (I − νA)⁻¹ = I + W_Fᵀ S⁻¹ W_F with S = diag(1/(νp_F)) − K_FF (K = WWᵀ), so
//! one evaluation is a Cholesky factorisation of S (|F|³/3 flops, blocked:
//! `linalg::Cholesky`) and a few products with K: nothing in the
//! input dimension. It is hand-written for that reason (a generic SDP
//! solver would carry the d × d block).
//!
//! **Probing** (`probe`). A child of the node fixes one free neuron j:
//! its parabola leaves (row and column i of S, and a²/(16α_j) from k) and
//! c_j moves by some δ, to c_j' ≤ 0 fixed inactive (c_j' = −ρ) or
//! c_j' ≥ νa_j fixed active (c_j' = νa_j + ρ). At the node's other
//! parameters the child's D is a concave quadratic in δ: with Z = S⁻¹,
//! s = Zf, h = K_{F,j}, and y = f + δh − (f_i + δK_jj)e_i the child's
//! f' padded with a zero, deleting row and column i gives
//! f'ᵀS'⁻¹f' = yᵀZy − (e_iᵀZy)²/Z_ii, and since K_FF = diag(1/α) − S,
//! Zh = Z_{:,i}/α_j − e_i: every term is one of s_i, f_i, Z_ii, α_j,
//! K_jj. So all 2|F| children cost one pass for diag(Z) (|F|³/3) and O(1)
//! each, with the best ρ in closed form. The closed form is not rounded
//! safely; a child it screens as pruned is certified by a full evaluation
//! at the same parameters before anything is fixed.
//!
//! **Tolerance.** D is evaluated in floating point, not in interval
//! arithmetic, with two safeguards sized by [`gamma`]`(n)` = 4n·ε (the
//! rounding constant of an n-term sum, doubled twice). S (order n = |F|)
//! is factorised after a shift down by n·γ(n + 1)·diag(S): by Rump's test
//! for positive definiteness (BIT 46, 2006), applied to S scaled to a unit
//! diagonal, success proves S ≻ 0; and since the shifted inverse dominates
//! S⁻¹ it only lowers D. The bound is then √(D − τ) with τ = γ(3m + 1)
//! times the magnitude of D's terms, including (Σ √S_ii |(S⁻¹f)_i|)² for
//! the solve (the Cholesky solve's backward error, Higham Thm 10.4). The
//! optimum is often near the domain's edge (the "hard case" of the
//! trust-region problem), where S is nearly singular: two checks tried
//! first (pivots above 1e-12 of S's diagonal, solve residuals below 1e-9)
//! rejected two thirds of the points the maximisation visits on a k=32
//! node, and the best ones with them.

use crate::linalg::lbfgs;
use crate::linalg::Cholesky;
use crate::model::net::Network;
use nalgebra::{DMatrix, DVector};

/// 4n·ε: the rounding constant γ_n = nε/(1 − nε) of an n-term sum, with
/// a factor of two for the 1/(1 − nε) and one for the power-of-two
/// scaling the shift's argument assumes.
pub fn gamma(n: usize) -> f64 {
    4.0 * n as f64 * f64::EPSILON
}

/// A neuron's part in a node, as the bound treats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Term {
    /// Helping (s0·v_j > 0): bounded by its linearisation λ z.
    Help,
    /// Hurting and free: bounded by a parabola.
    Free,
    /// Hurting, fixed active on the node.
    Active,
    /// Hurting, fixed inactive on the node.
    Inactive,
    /// Contributes nothing that depends on δ (v_j = 0 or w_j = 0).
    Constant,
}

/// A node of the search as the bound sees it: the Gram matrix K = W Wᵀ,
/// the pre-activations u0 at x0, |v|, each neuron's term, and the constant
/// part k0 of Φ (the neurons with w_j = 0, such as an output bias).
pub(crate) struct Node<'a> {
    pub kmat: &'a DMatrix<f64>,
    pub u0: &'a DVector<f64>,
    pub a: &'a [f64],
    pub terms: Vec<Term>,
    pub k0: f64,
}

/// The terms of a node whose hurting neurons are fixed as in `fixed`
/// (`None`: free), given s0, v, ‖w_j‖ and u0; and the constant part k0 of
/// Φ, from the neurons with w_j = 0.
pub(crate) fn terms(
    s0: f64,
    v: &DVector<f64>,
    wnorm: &[f64],
    u0: &DVector<f64>,
    fixed: &[Option<bool>],
) -> (Vec<Term>, f64) {
    let mut k0 = 0.0;
    let terms = (0..v.len())
        .map(|j| {
            let sv = s0 * v[j];
            if wnorm[j] == 0.0 || sv == 0.0 {
                k0 -= sv * u0[j].max(0.0);
                return Term::Constant;
            }
            match (sv > 0.0, fixed[j]) {
                (true, _) => Term::Help,
                (false, None) => Term::Free,
                (false, Some(true)) => Term::Active,
                (false, Some(false)) => Term::Inactive,
            }
        })
        .collect();
    (terms, k0)
}

/// A lower bound on the flip distance of x0 (N(x0) ≠ 0) from the whole
/// net's quadratic over-estimator, every hurting neuron free: the root of
/// the search's tree, for callers that want the bound alone. `radius`
/// seeds the parabolas (any upper bound on the distance, e.g. an attack's).
pub fn flip_distance_bound(
    net: &Network,
    x0: &DVector<f64>,
    radius: f64,
    iterations: usize,
) -> f64 {
    let s0 = net.output(x0).signum();
    let kmat = net.w() * net.w().transpose();
    let wnorm: Vec<f64> = net.w().row_iter().map(|r| r.norm()).collect();
    let u0 = net.w() * x0 + net.b();
    let (terms, k0) = terms(s0, net.v(), &wnorm, &u0, &vec![None; net.width()]);
    let a: Vec<f64> = net.v().iter().map(|v| v.abs()).collect();
    let node = Node {
        kmat: &kmat,
        u0: &u0,
        a: &a,
        terms,
        k0,
    };
    lower_bound(&node, None, radius, f64::INFINITY, iterations).0
}

/// Stages of a cold start's maximisation. All but the last maximise
/// D + τ·ln det(I − νA), with τ = [`BARRIER_WEIGHT`]·D/|F| at the stage's
/// start and a further tenfold smaller per stage (no barrier where
/// D ≤ 0): the log-det barrier keeps the iterates off the domain's edge
/// I − νA ⪰ 0 (S ⪰ 0), where the maximiser often lies (the trust-region
/// "hard case") and where plain L-BFGS, its steps cut back by every
/// evaluation outside, crawls. The last stage maximises D itself from
/// there. Each stage gets an equal share of the iterations; the bound is
/// the best D evaluated in any stage (SPEC §4, "The multi-neuron bound"). Warm starts, near
/// their parent's maximiser already, get the last stage only.
const BARRIER_STAGES: usize = 3;

/// The first stage's barrier weight relative to D/|F|: the barrier's
/// duality gap is τ·|F|, half of D to start with; the later stages close
/// it.
const BARRIER_WEIGHT: f64 = 0.5;

/// Indices of the neurons by term.
struct Groups {
    free: Vec<usize>,
    help: Vec<usize>,
    fixed: Vec<usize>,
}

/// One evaluation: the objective (D, plus a barrier in a cold start's
/// early stages), what D proves, and the objective's gradient in the
/// parameters.
struct Eval {
    value: f64,
    /// D less its rounding discount, γ(3m + 1) times the magnitude of
    /// its terms: what the evaluation proves.
    proven: f64,
    grad: DVector<f64>,
    /// The minimiser of ‖δ‖² − νQ(δ) is ½Wᵀy.
    y: DVector<f64>,
}

/// Where a node's maximisation ended: its parameters (ln ν, then one per
/// neuron) and the terms they belong to. A child differs from its
/// parent in one neuron, so the parent's maximiser is a near-optimal start.
#[derive(Clone)]
pub(crate) struct Warm {
    x: DVector<f64>,
    terms: Vec<Term>,
}

/// The best lower bound on the node's flip distance the quadratic
/// over-estimators prove within `max_iter` L-BFGS iterations (stopping
/// early once it reaches `target`), started from
/// `warm` (a parent's maximiser) where a neuron's term is unchanged and
/// elsewhere from parabolas fitted to the ball of radius `radius` (the
/// incumbent). Returns 0 when nothing better than 0 was proven, the
/// maximiser reached, and y with δ* = ½Wᵀy the minimiser of ‖δ‖² − νQ(δ)
/// at the best parameters (zero if none was better than 0): a direction
/// in which flips are likely near.
pub(crate) fn lower_bound(
    node: &Node,
    warm: Option<&Warm>,
    radius: f64,
    target: f64,
    max_iter: usize,
) -> (f64, Warm, DVector<f64>) {
    let groups = Groups::of(&node.terms);
    let kff = node
        .kmat
        .select_rows(&groups.free)
        .select_columns(&groups.free);
    let mut x = start(node, &kff, &groups, warm, radius);
    let mut best = 0.0f64;
    let mut y = DVector::zeros(node.u0.len());
    let stages = match (groups.free.len(), warm) {
        (0, _) => 0,
        (_, Some(_)) => 1,
        (_, None) => BARRIER_STAGES,
    };
    for stage in 0..stages {
        let tau = if stage + 1 < stages {
            let d = evaluate(node, &groups, &kff, &x, 0.0).map_or(0.0, |e| e.value);
            BARRIER_WEIGHT * d.max(0.0) / groups.free.len() as f64 / 10f64.powi(stage as i32)
        } else {
            0.0
        };
        let mut f = |x: &DVector<f64>| match evaluate(node, &groups, &kff, x, tau) {
            Some(e) => {
                if e.proven > best {
                    best = e.proven;
                    y = e.y;
                }
                if best >= target * target {
                    return (f64::NEG_INFINITY, e.grad);
                }
                (-e.value, -e.grad)
            }
            None => (f64::INFINITY, DVector::zeros(x.len())),
        };
        let m = lbfgs::minimize(&mut f, x, 1e-9, max_iter / stages, 8, &[]);
        x = m.x;
        if m.value == f64::NEG_INFINITY {
            break;
        }
    }
    let terms = node.terms.clone();
    (best.max(0.0).sqrt(), Warm { x, terms }, y)
}

impl Groups {
    fn of(terms: &[Term]) -> Self {
        let pick = |t: fn(&Term) -> bool| {
            (0..terms.len())
                .filter(|&j| t(&terms[j]))
                .collect::<Vec<_>>()
        };
        Self {
            free: pick(|t| *t == Term::Free),
            help: pick(|t| *t == Term::Help),
            fixed: pick(|t| matches!(t, Term::Active | Term::Inactive)),
        }
    }
}

/// Parameters: x[0] = ln ν, and x[1 + j] for neuron j: ln(νp_j) if free,
/// θ_j with λ_j = sin²θ_j if helping, √(νρ_j) if fixed. A neuron whose
/// term the warm start shares keeps its value (and ν is the warm start's);
/// otherwise a free parabola touches a·ReLU at ±r‖w_j‖/2, ν is half the
/// largest value the domain allows (from a trace bound on ‖A‖), λ = ½
/// (θ = π/4) and ρ = 0.
fn start(
    node: &Node,
    kff: &DMatrix<f64>,
    g: &Groups,
    warm: Option<&Warm>,
    radius: f64,
) -> DVector<f64> {
    let kept = |j: usize| {
        warm.filter(|w| w.terms[j] == node.terms[j])
            .map(|w| w.x[1 + j])
    };
    let p = |i: usize| {
        let reach = (radius * kff[(i, i)].sqrt() / 2.0).max(1e-12);
        node.a[g.free[i]] / (4.0 * reach)
    };
    let trace: f64 = (0..g.free.len()).map(|i| p(i) * kff[(i, i)]).sum();
    let nu = warm.map_or(0.5 / trace.max(1e-300), |w| w.x[0].exp());
    let mut x = DVector::zeros(1 + node.terms.len());
    x[0] = nu.ln();
    for (i, &j) in g.free.iter().enumerate() {
        x[1 + j] = kept(j).unwrap_or_else(|| (nu * p(i)).ln());
    }
    for &j in &g.help {
        x[1 + j] = kept(j).unwrap_or(std::f64::consts::FRAC_PI_4);
    }
    for &j in &g.fixed {
        x[1 + j] = kept(j).unwrap_or(0.0);
    }
    x
}

/// The scaled over-estimator νQ = Σ_j α_j z_j² + (β0_j + ν β1_j) z_j +
/// ν² γ1_j + ν k0 at the parameters x: α = νp on the free neurons, β1 the
/// part of the linear coefficient that scales with ν (a/2 free, −λa
/// helping, a active), β0 the multipliers' part (±νρ), γ1 = a²/(16α).
struct Terms {
    alpha: DVector<f64>,
    beta0: DVector<f64>,
    beta1: DVector<f64>,
    gamma1: DVector<f64>,
}

impl Terms {
    fn at(node: &Node, g: &Groups, x: &DVector<f64>) -> Self {
        let m = node.u0.len();
        let mut t = Self {
            alpha: DVector::zeros(m),
            beta0: DVector::zeros(m),
            beta1: DVector::zeros(m),
            gamma1: DVector::zeros(m),
        };
        for &j in &g.free {
            t.alpha[j] = x[1 + j].exp();
            t.beta1[j] = node.a[j] / 2.0;
            t.gamma1[j] = node.a[j] * node.a[j] / (16.0 * t.alpha[j]);
        }
        for &j in &g.help {
            t.beta1[j] = -x[1 + j].sin().powi(2) * node.a[j];
        }
        for &j in &g.fixed {
            let rho = x[1 + j] * x[1 + j];
            if node.terms[j] == Term::Active {
                t.beta1[j] = node.a[j];
                t.beta0[j] = rho;
            } else {
                t.beta0[j] = -rho;
            }
        }
        t
    }
}

/// The pieces of one evaluation that [`evaluate`] and [`probe`] share:
/// the terms at the parameters, ν, c (the linear coefficients of νQ in
/// Wδ), e = Kc, f = e_F, S's factor, S⁻¹f, √diag(S), and k (νQ's
/// constant) with the magnitude of its terms.
struct Parts {
    t: Terms,
    nu: f64,
    c: DVector<f64>,
    e: DVector<f64>,
    f: DVector<f64>,
    chol: Cholesky,
    solved: DVector<f64>,
    root_diag: Vec<f64>,
    k: f64,
    k_scale: f64,
    /// cᵀKc and fᵀS⁻¹f.
    ce: f64,
    fs: f64,
}

impl Parts {
    /// `None` outside the domain (S not proven positive definite).
    fn at(node: &Node, g: &Groups, kff: &DMatrix<f64>, x: &DVector<f64>) -> Option<Self> {
        let t = Terms::at(node, g, x);
        let u0 = node.u0;
        // S = diag(1/α_F) − K_FF must be positive definite. Factor
        // S − n·γ(n + 1)·diag(S): success proves S ≻ 0 despite rounding, and
        // the shifted inverse dominates S⁻¹, so it only lowers D.
        let n = g.free.len();
        let shrink = 1.0 - n as f64 * gamma(n + 1);
        let mut s = -kff.clone();
        let mut root_diag = Vec::with_capacity(n);
        for (i, &j) in g.free.iter().enumerate() {
            let sii = s[(i, i)] + 1.0 / t.alpha[j];
            root_diag.push(sii.max(0.0).sqrt());
            s[(i, i)] = sii * shrink;
        }
        let chol = Cholesky::new(s)?;
        let nu = x[0].exp();
        let beta = &t.beta0 + &t.beta1 * nu;
        let c = t.alpha.component_mul(u0) * 2.0 + &beta;
        let quad = t.alpha.dot(&u0.component_mul(u0));
        let gam = nu * nu * t.gamma1.sum();
        let k = quad + beta.dot(u0) + gam + nu * node.k0;
        let k_scale = quad + beta.abs().dot(&u0.abs()) + gam + nu * node.k0.abs();
        let e = node.kmat * &c;
        let f = DVector::from_iterator(n, g.free.iter().map(|&j| e[j]));
        let solved = chol.solve(&f);
        let (ce, fs) = (c.dot(&e), f.dot(&solved));
        Some(Self {
            t,
            nu,
            c,
            e,
            f,
            chol,
            solved,
            root_diag,
            k,
            k_scale,
            ce,
            fs,
        })
    }

    /// D = −k − ¼ cᵀ(K + K_{:,F} S⁻¹ K_{F,:})c and the magnitude of its terms.
    fn value(&self) -> (f64, f64) {
        let (ce, fs) = (self.ce, self.fs);
        // The solve's rounding moves fᵀS⁻¹f by O(m·ε·(Σ √S_ii |x_i|)²).
        let spread: f64 = self
            .root_diag
            .iter()
            .zip(self.solved.iter())
            .map(|(d, x)| d * x.abs())
            .sum();
        let value = -self.k - 0.25 * (ce + fs);
        let scale = self.k_scale + 0.25 * (ce.abs() + fs.abs() + spread * spread);
        (value, scale)
    }
}

/// The objective D + τ·ln det(I − νA) at the parameters `x` and its gradient
/// (τ = 0: D itself), with what D proves; `None` outside the domain.
fn evaluate(
    node: &Node,
    g: &Groups,
    kff: &DMatrix<f64>,
    x: &DVector<f64>,
    tau: f64,
) -> Option<Eval> {
    let p = Parts::at(node, g, kff, x)?;
    let (d, scale) = p.value();
    // δ* = ½Wᵀy with y = c + S⁻¹f scattered on F; W δ* = ½Ky, z at δ*.
    let mut wd = p.e.clone();
    let mut y = p.c.clone();
    for (i, &j) in g.free.iter().enumerate() {
        wd.axpy(p.solved[i], &node.kmat.column(j), 1.0);
        y[j] += p.solved[i];
    }
    let z = node.u0 + wd * 0.5;
    let (nu, t) = (p.nu, &p.t);
    let mut grad = gradient(node, g, x, nu, t, &z);
    grad[0] = nu * (-node.k0 - t.beta1.dot(&z) - 2.0 * nu * t.gamma1.sum());
    let mut value = d;
    if tau > 0.0 {
        // The barrier ln det(I − νA) = ln det S + Σ_F ln α_j (the matrix
        // determinant lemma), bounded above by 0 where ln det S alone is
        // not (α → 0); ∂/∂ ln α_j = 1 − (S⁻¹)_ii/α_j, as S_ii = 1/α_j − K_jj.
        let zdiag = p.chol.inverse_diagonal();
        let mut barrier = p.chol.log_det();
        for (i, &j) in g.free.iter().enumerate() {
            grad[1 + j] += tau * (1.0 - zdiag[i] / t.alpha[j]);
            barrier += x[1 + j]; // ln α_j
        }
        value += tau * barrier;
    }
    Some(Eval {
        value,
        proven: d - gamma(3 * node.u0.len() + 1) * scale,
        grad,
        y,
    })
}

/// Of the free hurting neurons `among`, the one whose parabola is
/// loosest at the minimiser δ* = ½Wᵀy of the node's relaxation at
/// `warm`: where νQ over-estimates ν·a·ReLU most, α_j(z_j ∓ νa_j/(4α_j))²
/// at z* = u0 + ½Ky. `None` if `among` is empty.
pub(crate) fn loosest(
    node: &Node,
    warm: &Warm,
    y: &DVector<f64>,
    among: &[usize],
) -> Option<usize> {
    let nu = warm.x[0].exp();
    let gap = |j: usize| {
        let alpha = warm.x[1 + j].exp();
        let z = node.u0[j] + 0.5 * node.kmat.column(j).dot(y);
        let touch = nu * node.a[j] / (4.0 * alpha);
        let d = if z > 0.0 { z - touch } else { z + touch };
        alpha * d * d
    };
    among
        .iter()
        .copied()
        .filter(|&j| node.terms[j] == Term::Free)
        .max_by(|&a, &b| gap(a).total_cmp(&gap(b)))
}

/// What probing a node's free neurons proved (see [`probe`]).
pub(crate) enum Probe {
    /// Both states of some neuron are pruned, so the node is: the least
    /// bound proven on the two.
    Pruned(f64),
    /// The free hurting neurons whose other state is pruned, as (neuron,
    /// state kept: true = active); the least bound proven on the pruned
    /// parts (∞ when none); and the warm start of the node with them fixed.
    Fixed {
        fixes: Vec<(usize, bool)>,
        lb: f64,
        warm: Warm,
    },
}

/// Probing: which free hurting neurons can be fixed without branching.
/// Fixing neuron j in a state removes its parabola (row and column i of
/// S) and changes c_j, so the child's D at the node's maximiser `warm`,
/// with the best multiplier of the new sign row, has a closed form in
/// S⁻¹f and diag(S⁻¹) (deleting a row and column of S is a rank-one
/// correction of S⁻¹): O(1) per child after one O(|F|³/3) inversion of
/// the diagonal. Children whose closed form reaches `target` are then
/// certified by a full evaluation, at most `budget` of them, best first;
/// a certified child is pruned, so the node keeps its sibling state.
pub(crate) fn probe(node: &Node, warm: &Warm, target: f64, budget: usize) -> Probe {
    let g = Groups::of(&node.terms);
    let kff = node.kmat.select_rows(&g.free).select_columns(&g.free);
    let Some(p) = Parts::at(node, &g, &kff, &warm.x) else {
        return Probe::Fixed {
            fixes: Vec::new(),
            lb: f64::INFINITY,
            warm: warm.clone(),
        };
    };
    let zdiag = p.chol.inverse_diagonal();
    let children: Vec<[Child; 2]> = (0..g.free.len())
        .map(|i| [true, false].map(|active| Child::screen(node, &g, &p, &zdiag, i, active)))
        .collect();
    let mut screened: Vec<&Child> = children
        .iter()
        .flatten()
        .filter(|c| c.value >= target * target)
        .collect();
    screened.sort_by(|a, b| b.value.total_cmp(&a.value));
    // The certified bound of each neuron's pruned states: [active, inactive].
    let mut pruned: Vec<[Option<f64>; 2]> = vec![[None; 2]; g.free.len()];
    for child in screened.into_iter().take(budget) {
        if let Some(lb) = child
            .certify(node, &g, &kff, &warm.x)
            .filter(|&lb| lb >= target)
        {
            pruned[child.index][usize::from(!child.active)] = Some(lb);
        }
    }
    let (mut x, mut terms) = (warm.x.clone(), node.terms.clone());
    let (mut fixes, mut lb) = (Vec::new(), f64::INFINITY);
    for (i, states) in pruned.iter().enumerate() {
        let j = g.free[i];
        match *states {
            [Some(a), Some(b)] => return Probe::Pruned(a.min(b)),
            [Some(a), None] | [None, Some(a)] => {
                let keep = states[0].is_none();
                lb = lb.min(a);
                fixes.push((j, keep));
                terms[j] = if keep { Term::Active } else { Term::Inactive };
                x[1 + j] = children[i][usize::from(!keep)].param;
            }
            [None, None] => {}
        }
    }
    Probe::Fixed {
        fixes,
        lb,
        warm: Warm { x, terms },
    }
}

/// A node's child that fixes its i-th free neuron, screened by the closed
/// form of its D at the node's parameters.
struct Child {
    index: usize,
    active: bool,
    /// The closed-form D (not certified).
    value: f64,
    /// The new sign row's parameter √(νρ) at the best ρ.
    param: f64,
}

impl Child {
    /// With δ the change of c_j, the child's D is C0 + C1·δ − C2·δ²:
    /// νQ loses j's parabola (α_j, and γ1_j from k) and its c_j becomes
    /// c_j + δ, which must be ≤ 0 fixed inactive (c_j = −ρ) or
    /// ≥ νa_j fixed active (c_j = νa_j + ρ).
    fn screen(
        node: &Node,
        g: &Groups,
        p: &Parts,
        zdiag: &DVector<f64>,
        i: usize,
        active: bool,
    ) -> Self {
        let j = g.free[i];
        let (alpha, u, cj, kjj) = (p.t.alpha[j], node.u0[j], p.c[j], node.kmat[(j, j)]);
        let (fi, si, z) = (p.f[i], p.solved[i], zdiag[i]);
        // With h = K_{F,j}: S⁻¹h = S⁻¹_{:,i}/α_j − e_i (as K_FF = diag(1/α) − S).
        let q = z / alpha - 1.0;
        let fzh = si / alpha - fi;
        let hzh = q / alpha - kjj;
        // y = f + δh − (f_i + δK_jj)e_i: yᵀS⁻¹y = Y0 + Y1δ + Y2δ², and
        // e_iᵀS⁻¹y = w0 + w1δ; the child's f'ᵀS'⁻¹f' = yᵀS⁻¹y − (e_iᵀS⁻¹y)²/z.
        let y0 = p.fs - 2.0 * fi * si + fi * fi * z;
        let y1 = 2.0 * (fzh - kjj * si - fi * q + fi * kjj * z);
        let y2 = hzh - 2.0 * kjj * q + kjj * kjj * z;
        let (w0, w1) = (si - fi * z, q - kjj * z);
        let child = [y0 - w0 * w0 / z, y1 - 2.0 * w0 * w1 / z, y2 - w1 * w1 / z];
        let beta = cj - 2.0 * alpha * u;
        let k_rest = p.k - alpha * u * u - beta * u - p.nu * p.nu * p.t.gamma1[j];
        let c0 = -k_rest - cj * u - 0.25 * (p.ce + child[0]);
        let c1 = -u - 0.25 * (2.0 * p.e[j] + child[1]);
        let c2 = 0.25 * (kjj + child[2]);
        let edge = if active { p.nu * node.a[j] } else { 0.0 };
        let free_best = if c2 > 0.0 { cj + c1 / (2.0 * c2) } else { edge };
        let c_new = if active {
            free_best.max(edge)
        } else {
            free_best.min(edge)
        };
        let delta = c_new - cj;
        Self {
            index: i,
            active,
            value: c0 + c1 * delta - c2 * delta * delta,
            param: (c_new - edge).abs().sqrt(),
        }
    }

    /// The child's certified lower bound at the node's parameters `x` with
    /// this child's sign-row parameter, or `None` outside the domain.
    fn certify(
        &self,
        node: &Node,
        g: &Groups,
        kff: &DMatrix<f64>,
        x: &DVector<f64>,
    ) -> Option<f64> {
        let j = g.free[self.index];
        let mut terms = node.terms.clone();
        terms[j] = if self.active {
            Term::Active
        } else {
            Term::Inactive
        };
        let child = Node { terms, ..*node };
        let cg = Groups::of(&child.terms);
        let ckff = kff.clone().remove_row(self.index).remove_column(self.index);
        let mut cx = x.clone();
        cx[1 + j] = self.param;
        let e = evaluate(&child, &cg, &ckff, &cx, 0.0)?;
        Some(e.proven.max(0.0).sqrt())
    }
}

/// ∂D/∂x[1..] by the envelope theorem: ∂D/∂(α_j, β_j, γ_j) = −(z_j², z_j, 1)
/// at the minimiser, chained through the parametrisation ([`evaluate`]
/// fills in ∂D/∂ ln ν).
fn gradient(
    node: &Node,
    g: &Groups,
    x: &DVector<f64>,
    nu: f64,
    t: &Terms,
    z: &DVector<f64>,
) -> DVector<f64> {
    let mut grad = DVector::zeros(x.len());
    for &j in &g.free {
        grad[1 + j] = -z[j] * z[j] * t.alpha[j] + nu * nu * t.gamma1[j];
    }
    for &j in &g.help {
        grad[1 + j] = z[j] * nu * node.a[j] * (2.0 * x[1 + j]).sin();
    }
    for &j in &g.fixed {
        let sign = if node.terms[j] == Term::Active {
            -1.0
        } else {
            1.0
        };
        grad[1 + j] = sign * z[j] * 2.0 * x[1 + j];
    }
    grad
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random node: m neurons in d dimensions, each term drawn at random.
    fn random_node(
        seed: u64,
        m: usize,
        d: usize,
    ) -> (DMatrix<f64>, DVector<f64>, Vec<f64>, Vec<Term>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let w = DMatrix::from_fn(m, d, |_, _| rng.gen_range(-1.0..1.0));
        let u0 = DVector::from_fn(m, |_, _| rng.gen_range(-2.0..2.0));
        let a = (0..m).map(|_| rng.gen_range(0.1..2.0)).collect();
        let kinds = [
            Term::Free,
            Term::Free,
            Term::Help,
            Term::Active,
            Term::Inactive,
        ];
        let terms = (0..m)
            .map(|_| kinds[rng.gen_range(0..kinds.len())])
            .collect();
        (&w * w.transpose(), u0, a, terms)
    }

    /// Runs `f` on the random node of [`random_node`] with k0 = 0.3, its
    /// groups, K_FF and the cold start for a ball of radius 1.5.
    fn on_random_node(
        seed: u64,
        m: usize,
        d: usize,
        f: impl FnOnce(&Node, &Groups, &DMatrix<f64>, &DVector<f64>),
    ) {
        let (kmat, u0, a, terms) = random_node(seed, m, d);
        let node = Node {
            kmat: &kmat,
            u0: &u0,
            a: &a,
            terms,
            k0: 0.3,
        };
        let g = Groups::of(&node.terms);
        let kff = kmat.select_rows(&g.free).select_columns(&g.free);
        let x = start(&node, &kff, &g, None, 1.5);
        f(&node, &g, &kff, &x);
    }

    /// The objective's gradient, barrier (τ > 0) or not, against central
    /// differences in every parameter, at perturbed cold starts.
    #[test]
    fn objective_gradient_matches_differences() {
        let mut checked = 0;
        for seed in 0..30 {
            on_random_node(seed, 12, 5, |node, g, kff, x| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 100);
                let x = x.map(|v| v + rng.gen_range(-0.3..0.3));
                for tau in [0.0, 0.05] {
                    let at = |x: &DVector<f64>| evaluate(node, g, kff, x, tau);
                    let Some(e) = at(&x) else {
                        continue;
                    };
                    let h = 1e-6;
                    for k in 0..x.len() {
                        let step = DVector::from_fn(x.len(), |i, _| if i == k { h } else { 0.0 });
                        let (Some(up), Some(down)) = (at(&(&x + &step)), at(&(&x - &step))) else {
                            continue;
                        };
                        let diff = (up.value - down.value) / (2.0 * h);
                        assert!(
                            (diff - e.grad[k]).abs() <= 1e-5 * (1.0 + diff.abs()),
                            "seed {seed}, τ {tau}, x[{k}]: {} vs {diff}",
                            e.grad[k]
                        );
                        checked += 1;
                    }
                }
            });
        }
        assert!(checked > 500, "only {checked} partial derivatives checked");
    }

    /// `loosest` picks, among the neurons offered, the free one where νQ
    /// exceeds ν·a·ReLU most at the relaxation's minimiser, computed here
    /// from the over-estimator's expanded form αz² + (νa/2)z + ν²a²/(16α)
    /// rather than the completed square.
    #[test]
    fn loosest_is_where_the_parabola_exceeds_the_relu_most() {
        let mut checked = 0;
        for seed in 0..40 {
            on_random_node(seed, 12, 5, |node, g, kff, x| {
                let (kmat, u0, a) = (node.kmat, node.u0, node.a);
                let Some(e) = evaluate(node, g, kff, x, 0.0) else {
                    return;
                };
                let warm = Warm {
                    x: x.clone(),
                    terms: node.terms.clone(),
                };
                let nu = x[0].exp();
                let excess = |j: usize| {
                    let alpha = x[1 + j].exp();
                    let z = u0[j] + 0.5 * (kmat * &e.y)[j];
                    alpha * z * z + nu * a[j] / 2.0 * z + nu * nu * a[j] * a[j] / (16.0 * alpha)
                        - nu * a[j] * z.max(0.0)
                };
                let among: Vec<usize> = (0..12).filter(|j| j % 3 != 0).collect();
                let want = among
                    .iter()
                    .copied()
                    .filter(|&j| node.terms[j] == Term::Free)
                    .max_by(|&p, &q| excess(p).total_cmp(&excess(q)));
                let got = loosest(node, &warm, &e.y, &among);
                assert_eq!(got, want, "seed {seed}");
                if let Some(j) = got {
                    assert!(excess(j) > 0.0, "seed {seed}");
                    checked += 1;
                }
            });
        }
        assert!(
            checked > 25,
            "only {checked} nodes had a free neuron offered"
        );
    }

    /// The closed form a probe screens children with equals a full
    /// evaluation of the child, and its multiplier of the new sign row is
    /// the best one: moving it either way lowers the child's D.
    #[test]
    fn probe_screen_is_the_childs_value_at_its_best_row_multiplier() {
        let mut checked = 0;
        for seed in 0..40 {
            on_random_node(seed, 14, 6, |node, g, kff, x| {
                let Some(p) = Parts::at(node, g, kff, x) else {
                    return;
                };
                let zdiag = p.chol.inverse_diagonal();
                for i in 0..g.free.len() {
                    for active in [true, false] {
                        let child = Child::screen(node, g, &p, &zdiag, i, active);
                        let value = |param: f64| {
                            let j = g.free[i];
                            let mut terms = node.terms.clone();
                            terms[j] = if active { Term::Active } else { Term::Inactive };
                            let cn = Node { terms, ..*node };
                            let cg = Groups::of(&cn.terms);
                            let ckff = kff.clone().remove_row(i).remove_column(i);
                            let mut cx = x.clone();
                            cx[1 + j] = param;
                            evaluate(&cn, &cg, &ckff, &cx, 0.0)
                                .expect("a principal submatrix")
                                .value
                        };
                        let full = value(child.param);
                        let tol = 1e-8 * (1.0 + full.abs());
                        assert!(
                            (child.value - full).abs() <= tol,
                            "{} vs {full}",
                            child.value
                        );
                        for step in [0.9, 1.1] {
                            assert!(value(child.param * step + 1e-3 * (step - 1.0)) <= full + tol);
                        }
                        checked += 1;
                    }
                }
            });
        }
        assert!(checked > 300, "only {checked} children checked");
    }
}
