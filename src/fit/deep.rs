//! Polishing a deep homogeneous ReLU net toward a certified KKT point of
//! Lyu & Li's problem min ½‖θ‖² s.t. q_c(θ) ≥ 1 (SPEC §7, deep nets).
//!
//! From the checkpoint rescaled to min-margin 1, an augmented Lagrangian
//!
//! ```text
//!   L_ρ(θ; λ) = ½‖θ‖² + (1/2ρ) Σ_c [ max(0, λ_c + ρ(1 − q_c(θ)))² − λ_c² ]
//! ```
//!
//! is minimised by L-BFGS (its gradient θ − Σ_c max(0, λ_c + ρ(1 − q_c)) ∇q_c
//! is one batched backward pass), then λ_c ← max(0, λ_c + ρ(1 − q_c)), and ρ
//! grows tenfold whenever the worst violation has not fallen by four. Each
//! outer round ends with the deep certificate ([`crate::kkt::deep`]); the
//! polish stops at the first round it certifies `kkt`, or when the L-BFGS
//! budget is spent, returning the best round. Started at the checkpoint, the
//! method converges to a nearby KKT point of the same activation regions,
//! so the predictions are kept (the report says how many).
//!
//! Why not the two-layer polish's smoothing and cone finish: both lean on
//! the two-layer structure (a convex program on a fixed pattern). On a deep
//! net, a fixed pattern still leaves a non-convex multilinear problem, so
//! the augmented Lagrangian works on the net itself and the certificate is
//! the judge.

use crate::error::{Error, Result};
use crate::kkt::deep::{
    all_constraints, certify_deep, cotangent, DeepCertificate, DeepCertifyOptions,
};
use crate::kkt::Verdict;
use crate::linalg::lbfgs::minimize;
use crate::model::deep::{flatten, DeepNet, Labels};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use std::time::Instant;

/// L-BFGS iterations of one round at most.
const ROUND_ITERATIONS: usize = 20_000;

/// ρ stops growing here: beyond it the inner problems are too ill-conditioned
/// for L-BFGS, and the multiplier updates alone drive the violation down.
const MAX_RHO: f64 = 1e3;

/// Options of [`polish_deep`].
#[derive(Clone, Debug)]
pub struct DeepPolishOptions {
    /// Tolerance of the certificate's verdict.
    pub tol: f64,
    /// τ of the certificate.
    pub act_tol: f64,
    /// L-BFGS iterations over all rounds.
    pub iterations: usize,
    /// Outer rounds at most.
    pub rounds: usize,
    /// ρ of the first round.
    pub rho: f64,
}

impl Default for DeepPolishOptions {
    fn default() -> Self {
        Self {
            tol: 1e-4,
            act_tol: 1e-6,
            iterations: 20_000,
            rounds: 30,
            rho: 10.0,
        }
    }
}

/// One outer round.
#[derive(Clone, Debug, Serialize)]
pub struct DeepRound {
    /// ρ of the round.
    pub rho: f64,
    /// max_c (1 − q_c)⁺ at its end.
    pub violation: f64,
    /// L-BFGS iterations of the round.
    pub iterations: usize,
    /// The certificate's relative bracket.
    pub relative_lower: f64,
    /// Upper end.
    pub relative_upper: f64,
    /// The certificate's relative complementarity.
    pub relative_complementarity: f64,
    /// Its verdict.
    pub verdict: Verdict,
}

/// What the polish did.
#[derive(Clone, Debug, Serialize)]
pub struct DeepPolishReport {
    /// The returned net's certificate.
    pub certificate: DeepCertificate,
    /// Every round.
    pub rounds: Vec<DeepRound>,
    /// cos(θ₀, θ) between the checkpoint and the returned net.
    pub cosine_to_start: f64,
    /// Share of training points whose prediction is unchanged.
    pub train_agreement: f64,
    /// Wall time.
    pub seconds: f64,
}

/// The batched pass: the augmented Lagrangian's value and gradient at θ.
fn lagrangian(
    net: &DeepNet,
    x: &DMatrix<f64>,
    labels: &Labels,
    lambda: &[f64],
    rho: f64,
) -> (f64, DVector<f64>, Vec<f64>) {
    let layers = net.layers();
    let mut h = vec![x.clone()];
    let mut active = Vec::new();
    for l in &layers[..layers.len() - 1] {
        let u = l.apply(&h[h.len() - 1]);
        active.push(u.map(|v| if v > 0.0 { 1.0 } else { 0.0 }));
        h.push(u.map(|v| v.max(0.0)));
    }
    let last = &layers[layers.len() - 1];
    let f = last.apply(&h[h.len() - 1]);
    let (q, cot) = margins_and_cotangent(&f, labels, lambda, rho);
    let penalty: f64 = q
        .iter()
        .zip(lambda)
        .map(|(q, l)| {
            let w = (l + rho * (1.0 - q)).max(0.0);
            (w * w - l * l) / (2.0 * rho)
        })
        .sum();
    // Backward: Δ_L = cotangent; grad W_l = Δ_lᵀ H_l; Δ_{l−1} = (Δ_l W_l) ⊙ active.
    let mut grads: Vec<(DMatrix<f64>, Option<DVector<f64>>)> = Vec::new();
    let mut delta = cot;
    for l in (0..layers.len()).rev() {
        let gw = delta.transpose() * &h[l];
        let gb = layers[l].bias().map(|_| delta.row_sum().transpose());
        if l > 0 {
            delta = (&delta * layers[l].weight()).component_mul(&active[l - 1]);
        }
        grads.push((gw, gb));
    }
    grads.reverse();
    let theta = net.flat();
    let grad = &theta - flatten(grads.iter().map(|(gw, gb)| (gw, gb.as_ref())));
    (0.5 * theta.norm_squared() + penalty, grad, q)
}

/// Every constraint's margin, and the cotangent Σ_c w_c ∂q_c/∂f per point
/// with w_c = max(0, λ_c + ρ(1 − q_c)), constraints in `kkt::deep`'s order.
fn margins_and_cotangent(
    f: &DMatrix<f64>,
    labels: &Labels,
    lambda: &[f64],
    rho: f64,
) -> (Vec<f64>, DMatrix<f64>) {
    let mut cot = DMatrix::zeros(f.nrows(), f.ncols());
    let q = all_constraints(labels, f.ncols())
        .into_iter()
        .zip(lambda)
        .map(|(c, l)| {
            let a = cotangent(c, labels, f.ncols());
            let q = a.dot(&f.row(c.point).transpose());
            let w = (l + rho * (1.0 - q)).max(0.0);
            let mut row = cot.row_mut(c.point);
            row += a.transpose() * w;
            q
        })
        .collect();
    (q, cot)
}

/// The predicted class (a scalar output: 1 when positive) of every point.
fn predictions(net: &DeepNet, x: &DMatrix<f64>) -> Vec<usize> {
    let f = net.forward(x);
    f.row_iter()
        .map(|r| match r.len() {
            1 => usize::from(r[0] > 0.0),
            _ => {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |a, (i, &v)| if v > a.1 { (i, v) } else { a },
                    )
                    .0
            }
        })
        .collect()
}

/// Polishes `net` toward a certified KKT point near it.
///
/// `on_round` sees every round as it ends (progress for long polishes).
pub fn polish_deep(
    net: &DeepNet,
    x: &DMatrix<f64>,
    labels: &Labels,
    opts: &DeepPolishOptions,
    mut on_round: impl FnMut(&DeepRound),
) -> Result<(DeepNet, DeepPolishReport)> {
    let start = Instant::now();
    if let Some(why) = net.homogeneity().refusal() {
        return Err(Error::param("net", why));
    }
    let cert_opts = DeepCertifyOptions {
        tol: opts.tol,
        delta_rel: Some(opts.tol),
        act_tol: opts.act_tol,
    };
    // Rescale onto the constraint set: q(αθ) = α^D q(θ).
    let first = certify_deep(net, x, labels, &cert_opts)?;
    let theta0 = net.flat() * first.scale;
    let mut current = net.with_flat(&theta0)?;
    let mut lambda = vec![0.0; first.constraints];
    let mut rho = opts.rho;
    let mut best = (current.clone(), first);
    let mut rounds = Vec::new();
    let mut spent = 0;
    let mut last_violation = f64::INFINITY;
    let blocks = net.blocks();
    while rounds.len() < opts.rounds && spent < opts.iterations && best.1.verdict != Verdict::Kkt {
        let template = current.clone();
        let objective = |theta: &DVector<f64>| match template.with_flat(theta) {
            Ok(n) => {
                let (v, g, _) = lagrangian(&n, x, labels, &lambda, rho);
                (v, g)
            }
            Err(_) => (f64::INFINITY, DVector::zeros(theta.len())),
        };
        // Inner accuracy tightens with the rounds, as augmented Lagrangians need.
        let gtol = theta0.norm() * (1e-4 * 0.1f64.powi(rounds.len() as i32)).max(1e-12);
        let cap = (opts.iterations - spent).min(ROUND_ITERATIONS);
        let min = minimize(objective, current.flat(), gtol, cap, 20, &blocks);
        spent += min.iterations.max(1);
        current = current.with_flat(&min.x)?;
        let (_, _, q) = lagrangian(&current, x, labels, &lambda, rho);
        let violation = q.iter().map(|q| (1.0 - q).max(0.0)).fold(0.0, f64::max);
        for (l, q) in lambda.iter_mut().zip(&q) {
            *l = (*l + rho * (1.0 - q)).max(0.0);
        }
        let round_rho = rho;
        if violation > 0.25 * last_violation {
            rho = (rho * 10.0).min(MAX_RHO);
        }
        last_violation = violation;
        let cert = match certify_deep(&current, x, labels, &cert_opts) {
            Ok(c) => c,
            Err(_) => continue, // a point misclassified mid-way: no certificate this round
        };
        rounds.push(DeepRound {
            rho: round_rho,
            violation,
            iterations: min.iterations,
            relative_lower: cert.relative_lower,
            relative_upper: cert.relative_upper,
            relative_complementarity: cert.relative_complementarity,
            verdict: cert.verdict,
        });
        on_round(&rounds[rounds.len() - 1]);
        if better(&cert, &best.1) {
            best = (current.clone(), cert);
        }
    }
    let (out, certificate) = best;
    let out = out.with_flat(&(out.flat() * certificate.scale))?;
    let (a, b) = (predictions(net, x), predictions(&out, x));
    let agree = a.iter().zip(&b).filter(|(a, b)| a == b).count() as f64 / a.len().max(1) as f64;
    let (t0, t1) = (net.flat(), out.flat());
    Ok((
        out,
        DeepPolishReport {
            cosine_to_start: t0.dot(&t1) / (t0.norm() * t1.norm()).max(f64::MIN_POSITIVE),
            train_agreement: agree,
            certificate,
            rounds,
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}

/// A certified `kkt` beats anything; otherwise the smaller upper end.
fn better(a: &DeepCertificate, b: &DeepCertificate) -> bool {
    match (a.verdict == Verdict::Kkt, b.verdict == Verdict::Kkt) {
        (true, false) => true,
        (false, true) => false,
        _ => {
            a.relative_upper.max(a.relative_complementarity)
                < b.relative_upper.max(b.relative_complementarity)
        }
    }
}
