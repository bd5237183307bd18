//! Polishing a trained network into a KKT point of Problem (2) (SPEC §7).
//!
//! Smoothing continuation: ReLU is replaced by softplus_β and the smooth
//! problem min ½‖θ‖² s.t. y_i N_β(x_i) ≥ 1 is solved by a PHR augmented
//! Lagrangian,
//!
//! ```text
//!   L(θ) = ½‖θ‖² + (1/2ρ) Σ_i [max(0, λ_i − ρ c_i)² − λ_i²] + (κ/2)‖θ − θ₀‖²,
//! ```
//!
//! c_i = q_i − 1, with L-BFGS inner solves, λ_i ← max(0, λ_i − ρ c_i) and
//! ρ ×3 while the violation does not fall fast enough, warm-started along an
//! increasing sequence of β. β is set relative to the typical |u_ij| of the
//! rescaled starting net, so the schedule does not depend on the data's units.
//! The optional proximal term (κ > 0, fading ×0.1 per stage and absent in the
//! last) keeps the polish near the user's own checkpoint instead of running
//! to whatever KKT point is nearest in function space. After every stage the
//! ReLU network with the current parameters is certified by [`crate::kkt`];
//! that certificate, not this optimiser, is the judge.

use crate::error::{Error, Result};
use crate::fit::cone::{finish, FinishOptions};
use crate::fit::span::{kkt_cosine_bound, Span};
use crate::kkt::{certify, Certificate, CertifyOptions, Norm, Verdict, WarmStart};
use crate::linalg::lbfgs::minimize;
use crate::model::data::Dataset;
use crate::model::net::{median_sorted, Activation, Network};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;
use std::cell::Cell;
use std::time::Instant;

/// Default work budget (L-BFGS iterations over all stages; the sweep's).
pub const ITERATION_BUDGET: usize = 100_000;

/// Which KKT point the polish heads for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PolishMode {
    /// Near the given checkpoint: a proximal pull κ₀‖θ − θ₀‖²/2 toward the
    /// starting direction, fading ×0.1 per stage and absent in the last —
    /// the KKT point gradient descent is heading for, not a different one.
    Near,
    /// No pull: the continuation runs to whichever KKT point its smoothing
    /// finds, typically a sparse one with few live neurons.
    Sparse,
}

impl PolishMode {
    /// Parses `near` or `sparse`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "near" => Ok(Self::Near),
            "sparse" => Ok(Self::Sparse),
            _ => Err(Error::param(
                "mode",
                format!("`{s}`, expected near or sparse"),
            )),
        }
    }

    /// The name used in reports and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Near => "near",
            Self::Sparse => "sparse",
        }
    }
}

/// Options of [`polish`].
#[derive(Clone, Debug, Serialize)]
pub struct PolishOptions {
    /// β_k · median|u_ij| of the rescaled start, one stage each.
    pub beta_factors: Vec<f64>,
    /// Certificate options for the stage reports and the verdict.
    pub tol: f64,
    /// τ_act of the certificate (Clarke ambiguity at kinks).
    pub act_tol: f64,
    /// Which KKT point to head for.
    pub mode: PolishMode,
    /// κ₀ of the near mode's proximal term toward the starting direction.
    pub proximal: f64,
    /// Augmented-Lagrangian rounds per stage that starts within 10·tol.
    pub max_outer: usize,
    /// Rounds per stage that starts farther (a continuation step: the next
    /// β moves its point anyway).
    pub far_outer: usize,
    /// L-BFGS iterations per round.
    pub max_inner: usize,
    /// Stop after a stage certified `kkt`.
    pub stop_when_certified: bool,
    /// Wall-clock budget, seconds: only when asked for, since a verdict
    /// reached under it depends on the machine and its load.
    pub time_limit: Option<f64>,
    /// Work budget: total L-BFGS iterations over all stages. Unlike the
    /// time limit it stops at the same point on any machine under any load,
    /// which is what a reproducible sweep needs.
    pub iteration_budget: Option<usize>,
    /// After each uncertified stage, try the cone program of the stage's
    /// activation pattern ([`crate::fit::cone`]); None skips it.
    pub finish: Option<FinishOptions>,
}

impl Default for PolishOptions {
    fn default() -> Self {
        Self {
            beta_factors: (1..=13).map(|k| 4f64.powi(k)).collect(),
            tol: 1e-4,
            act_tol: 1e-4,
            mode: PolishMode::Near,
            proximal: 1.0,
            max_outer: 30,
            far_outer: 3,
            max_inner: 500,
            stop_when_certified: false,
            time_limit: None,
            iteration_budget: Some(ITERATION_BUDGET),
            finish: Some(FinishOptions::default()),
        }
    }
}

/// One continuation stage.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// The stage's softplus sharpness β.
    pub beta: f64,
    /// Certified relative residual bracket of the ReLU net after the stage.
    pub relative_lower: f64,
    /// Certified ε_rel upper bound after the stage.
    pub relative_upper: f64,
    /// δ_rel after the stage.
    pub relative_complementarity: f64,
    /// The certificate's verdict after the stage.
    pub verdict: Verdict,
    /// Largest margin violation of the smooth problem.
    pub max_violation: f64,
    /// Penalty ρ of the augmented Lagrangian.
    pub rho: f64,
    /// L-BFGS iterations of the stage.
    pub lbfgs_iterations: usize,
    /// The stage's certificate is of the cone program's finish of its iterate.
    pub finished: bool,
    /// Wall time.
    pub seconds: f64,
}

/// How far the polish moved the network.
#[derive(Clone, Debug, Serialize)]
pub struct Movement {
    /// cos∠(θ_start, θ_polished).
    pub cosine: f64,
    /// The largest cosine any KKT point can have with θ_start
    /// ([`kkt_cosine_bound`]: every KKT point's (w_j, b_j) lies in
    /// span{(x_i, 1)} and is balanced against v_j). The part of w_j outside
    /// the span — what GD keeps from its initialisation — caps how near a
    /// KKT point can be.
    pub cosine_bound: f64,
    /// Share of training points on which start and result agree in sign.
    pub train_agreement: f64,
    /// The same on the test points, if given.
    pub test_agreement: Option<f64>,
    /// Neurons with nonzero output weight at the start.
    pub live_neurons_before: usize,
    /// The same at the end.
    pub live_neurons_after: usize,
}

/// The polish's record.
#[derive(Clone, Debug, Serialize)]
pub struct PolishReport {
    /// The options used.
    pub options: PolishOptions,
    /// The starting net's certificate.
    pub start: Certificate,
    /// One entry per continuation stage.
    pub stages: Vec<Stage>,
    /// The result's certificate.
    pub certificate: Certificate,
    /// How far the result is from the start.
    pub movement: Movement,
    /// Wall time.
    pub seconds: f64,
}

/// Relative threshold (to the largest neuron) for counting a neuron as live.
const LIVE_REL: f64 = 1e-3;

/// Smallest inner gradient tolerance (relative to 1 + ‖θ‖∞).
const GTOL_FLOOR: f64 = 1e-9;

/// Relative mass below which the polish prunes a neuron (see `Lagrangian::prune`).
const PRUNE_REL: f64 = 1e-7;

fn flat(net: &Network) -> DVector<f64> {
    DVector::from_vec(net.flat())
}

/// What one augmented-Lagrangian round did.
struct Round {
    iterations: usize,
    grad_norm: f64,
    /// max_i (1 − q_i)⁺ after the round.
    violation: f64,
    /// ‖Δλ‖∞ of the multiplier update.
    multiplier_change: f64,
}

/// The augmented Lagrangian's value and gradient at θ.
struct Lagrangian<'a> {
    data: &'a Dataset,
    m: usize,
    act: Activation,
    lambda: DVector<f64>,
    rho: f64,
    kappa: f64,
    anchor: DVector<f64>,
    /// Per flat coordinate: 1 for a live neuron's parameters, 0 for pruned.
    mask: DVector<f64>,
}

impl Lagrangian<'_> {
    /// The iterate for the objective: a non-finite trial point shows as a
    /// non-finite objective, which the line search rejects.
    fn net(&self, theta: &DVector<f64>) -> Network {
        Network::from_flat_unchecked(self.m, self.data.d(), theta.as_slice())
    }

    /// The iterate to judge or return: finite, or an error.
    fn checked_net(&self, theta: &DVector<f64>) -> Result<Network> {
        Network::from_flat(self.m, self.data.d(), theta.as_slice())
    }

    fn constraints(&self, theta: &DVector<f64>) -> DVector<f64> {
        let (_, out) = self.net(theta).outputs_with(self.data.x(), self.act);
        DVector::from_iterator(
            out.len(),
            out.iter().zip(self.data.y()).map(|(f, y)| f * y - 1.0),
        )
    }

    fn eval(&self, theta: &DVector<f64>) -> (f64, DVector<f64>) {
        if theta.iter().any(|v| !v.is_finite()) {
            return (f64::INFINITY, theta.clone());
        }
        let net = self.net(theta);
        let (acts, out) = net.activations(self.data.x(), self.act);
        let y = DVector::from_column_slice(self.data.y());
        let c = out.component_mul(&y).add_scalar(-1.0);
        let a = (&self.lambda - &c * self.rho).map(|v| v.max(0.0));
        let diff = theta - &self.anchor;
        let value = 0.5 * theta.norm_squared()
            + (a.norm_squared() - self.lambda.norm_squared()) / (2.0 * self.rho)
            + 0.5 * self.kappa * diff.norm_squared();
        let pull = net.pullback_from(self.data.x(), acts, &a.component_mul(&y));
        let grad = theta - flat(&pull) + diff * self.kappa;
        (value, grad.component_mul(&self.mask))
    }

    /// One augmented-Lagrangian round from `theta`: the inner L-BFGS solve
    /// (pruning once the proximal term is off) and the multiplier update
    /// λ ← max(0, λ − ρc).
    fn round(&mut self, theta: &mut DVector<f64>, gtol: f64, max_inner: usize) -> Round {
        let (m, d) = (self.m, self.data.d());
        // L-BFGS scales W, b and v separately.
        let blocks = [0..m * d, m * d..m * d + m, m * d + m..m * (d + 2)];
        let min = minimize(
            |t| self.eval(t),
            theta.clone(),
            gtol,
            max_inner,
            12,
            &blocks,
        );
        *theta = min.x;
        if self.kappa == 0.0 {
            self.prune(theta);
        }
        let c = self.constraints(theta);
        let new_lambda = (&self.lambda - &c * self.rho).map(|v| v.max(0.0));
        let multiplier_change = (&new_lambda - &self.lambda).amax();
        self.lambda = new_lambda;
        Round {
            iterations: min.iterations,
            grad_norm: min.grad_norm,
            violation: (-c.min()).max(0.0),
            multiplier_change,
        }
    }

    /// Zeroes and freezes neurons whose mass |v_j|·‖(w_j, b_j)‖ fell below
    /// `PRUNE_REL` of the largest: at such a neuron the KKT equations hold
    /// trivially once it is exactly zero, and dropping it from the iteration
    /// removes the slow, ill-conditioned decay that dominates the run.
    fn prune(&mut self, theta: &mut DVector<f64>) {
        let net = self.net(theta);
        let (m, d) = (self.m, self.data.d());
        let mass = net.masses();
        let top = mass.iter().cloned().fold(0.0, f64::max);
        for j in (0..m).filter(|&j| mass[j] < PRUNE_REL * top) {
            for k in (j * d..(j + 1) * d).chain([m * d + j, m * d + m + j]) {
                theta[k] = 0.0;
                self.mask[k] = 0.0;
            }
        }
    }
}

/// The ℓ2 certificate of `net` (rescaled inside) with the polish's options,
/// warm-started from a nearby net's support if given.
fn judge(
    net: &Network,
    data: &Dataset,
    opts: &PolishOptions,
    warm: Option<WarmStart>,
) -> Result<Certificate> {
    let copts = CertifyOptions {
        tol: opts.tol,
        delta_rel: Some(opts.tol),
        act_tol: opts.act_tol,
        warm,
        ..CertifyOptions::default()
    };
    certify(net, data, Norm::L2, &copts)
}

/// Polishes `net` toward a KKT point of Problem (2) on `train`; `on_stage`
/// sees each stage's certified numbers as they fall.
///
/// ```
/// use kktcert::fit::polish::{polish, PolishOptions};
/// use kktcert::kkt::Verdict;
/// # use kktcert::fit::gd::{train, TrainConfig};
/// # use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
/// # let spec = FixtureSpec { format: FIXTURE_FORMAT.into(), k: 4, d: 20, sigma: 0.3, n: 40,
/// #     n_test: 10, seed: 0, means: MeansKind::Orthogonal, labels: LabelRule::Balanced };
/// # let fx = Fixture::generate(spec)?;
/// # let net = train(&fx.train, &TrainConfig { width: 8, ..TrainConfig::default() }, |_, _, _| Ok(()))?.net;
/// let opts = PolishOptions { stop_when_certified: true, ..PolishOptions::default() };
/// let (kkt_net, report) = polish(&net, &fx.train, Some(&fx.test), &opts, |_| {})?;
/// assert_eq!(report.certificate.verdict, Verdict::Kkt);
/// assert_eq!(kkt_net.dim(), 20);
/// # Ok::<(), kktcert::Error>(())
/// ```
pub fn polish(
    net: &Network,
    train: &Dataset,
    test: Option<&Dataset>,
    opts: &PolishOptions,
    mut on_stage: impl FnMut(&Stage),
) -> Result<(Network, PolishReport)> {
    let t0 = Instant::now();
    let (start, _) = net
        .balanced()
        .rescaled_to_unit_margin(train)
        .map_err(|e| Error::Numerical(format!("cannot polish: {e}")))?;
    if start.live_neurons(LIVE_REL) == 0 {
        return Err(Error::Numerical(
            "cannot polish: the network has no live neuron".into(),
        ));
    }
    let start_cert = judge(&start, train, opts, None)?;
    if start_cert.verdict == Verdict::Kkt && opts.mode == PolishMode::Near {
        // Already a certified KKT point: the nearest one is itself.
        let movement = movement(&start, &start, train, test);
        let report = PolishReport {
            options: opts.clone(),
            start: start_cert.clone(),
            stages: Vec::new(),
            certificate: start_cert,
            movement,
            seconds: t0.elapsed().as_secs_f64(),
        };
        return Ok((start, report));
    }
    let (run, reduced) = Run::new(start, train, opts, &start_cert, t0)?;
    let mut lag = run.lagrangian(reduced, &start_cert);
    let mut theta = lag.anchor.clone();
    let mut best: Option<(Network, Certificate)> = None;
    let mut stages: Vec<Stage> = Vec::new();
    for k in 0..opts.beta_factors.len() {
        let close = stages
            .last()
            .is_some_and(|st| st.relative_upper <= 10.0 * opts.tol);
        let (stage, outcome) = run.stage(&mut lag, &mut theta, k, close);
        if let Some((relu_net, cert)) = outcome {
            if best
                .as_ref()
                .is_none_or(|(_, b)| cert.relative_upper < b.relative_upper)
            {
                best = Some((cert.scale_net(&relu_net), cert));
            }
        }
        on_stage(&stage);
        // A finished point is the polish's end: later stages only re-find it.
        let done = stage.verdict == Verdict::Kkt && (opts.stop_when_certified || stage.finished);
        stages.push(stage);
        if done || run.out_of_work() {
            break;
        }
    }
    let (polished, certificate) = best.ok_or_else(|| {
        Error::Numerical("polish produced no network that classifies the training set".into())
    })?;
    let movement = movement(&run.start, &polished, train, test);
    Ok((
        polished,
        PolishReport {
            options: opts.clone(),
            start: start_cert,
            stages,
            certificate,
            movement,
            seconds: t0.elapsed().as_secs_f64(),
        },
    ))
}

/// The span form of the training data ([`crate::fit::span`]), used when it is
/// smaller: the optimiser works on (C, b, v) over Z, and W⊥ only decays
/// toward its proximal anchor.
struct SpanForm {
    span: Span,
    /// The training set in span coordinates (Z, y).
    data: Dataset,
    /// The start's W⊥, the part of W outside span{x_i}.
    perp: DMatrix<f64>,
}

/// What every stage of one polish shares: the start, the space the
/// optimiser works in, the budget spent so far and the certifier's warm
/// start.
struct Run<'a> {
    opts: &'a PolishOptions,
    train: &'a Dataset,
    /// The balanced start rescaled to unit margin (θ₀).
    start: Network,
    span: Option<SpanForm>,
    /// The unit of β: median |u_ij| of the start.
    u_scale: f64,
    /// κ₀ of the mode (0 in the sparse mode).
    kappa0: f64,
    /// Consecutive certificates share most of their support.
    warm: Cell<Option<WarmStart>>,
    iterations: Cell<usize>,
    t0: Instant,
}

impl<'a> Run<'a> {
    /// The run and the start in the optimiser's coordinates.
    fn new(
        start: Network,
        train: &'a Dataset,
        opts: &'a PolishOptions,
        start_cert: &Certificate,
        t0: Instant,
    ) -> Result<(Self, Network)> {
        let u_scale = median_abs_preactivation(&start, train);
        let (span, reduced) = if train.n() < train.d() {
            let span = Span::of(train.x());
            let (c, perp) = span.project(train.x(), start.w());
            let data = Dataset::new(span.coords().clone(), train.y().to_vec(), None)?;
            let reduced = Network::new(c, start.b().clone(), start.v().clone())?;
            (Some(SpanForm { span, data, perp }), reduced)
        } else {
            (None, start.clone())
        };
        let kappa0 = match opts.mode {
            PolishMode::Near => opts.proximal,
            PolishMode::Sparse => 0.0,
        };
        let run = Self {
            opts,
            train,
            start,
            span,
            u_scale,
            kappa0,
            warm: Cell::new(Some(start_cert.warm_start())),
            iterations: Cell::new(0),
            t0,
        };
        Ok((run, reduced))
    }

    /// The data the optimiser sees.
    fn data(&self) -> &Dataset {
        self.span.as_ref().map_or(self.train, |s| &s.data)
    }

    /// The augmented Lagrangian anchored at `reduced`, with the start's
    /// certified multipliers.
    fn lagrangian(&self, reduced: Network, start_cert: &Certificate) -> Lagrangian<'_> {
        let anchor = flat(&reduced);
        Lagrangian {
            data: self.data(),
            m: reduced.width(),
            act: Activation::Relu,
            lambda: DVector::from_vec(start_cert.lambda.clone()),
            rho: 10.0,
            kappa: self.kappa0,
            mask: DVector::from_element(anchor.len(), 1.0),
            anchor,
        }
    }

    /// Stage k's smoothing: β_k in units of the start's median |u_ij|.
    fn beta(&self, k: usize) -> f64 {
        self.opts.beta_factors[k] / self.u_scale
    }

    /// Stage k's proximal weight: κ₀·0.1^k, and 0 in the last stage.
    fn kappa(&self, k: usize) -> f64 {
        if k + 1 == self.opts.beta_factors.len() {
            0.0
        } else {
            self.kappa0 * 0.1f64.powi(k as i32)
        }
    }

    fn out_of_work(&self) -> bool {
        self.opts
            .time_limit
            .is_some_and(|t| self.t0.elapsed().as_secs_f64() > t)
            || self
                .opts
                .iteration_budget
                .is_some_and(|b| self.iterations.get() >= b)
    }

    /// The full network for reduced parameters at proximal weight κ: the
    /// minimiser of ½‖W⊥‖² + κ/2‖W⊥ − W⊥₀‖² is κ/(1+κ)·W⊥₀.
    fn full(&self, net: &Network, kappa: f64) -> Result<Network> {
        match &self.span {
            Some(s) => s
                .span
                .full_net(self.train.x(), net, &(&s.perp * (kappa / (1.0 + kappa)))),
            None => Ok(net.clone()),
        }
    }

    /// The ReLU net of reduced parameters θ at the stage's κ, and its
    /// certificate.
    fn judged(&self, lag: &Lagrangian, theta: &DVector<f64>) -> Result<(Network, Certificate)> {
        let relu_net = self.full(&lag.checked_net(theta)?, lag.kappa)?;
        let cert = judge(&relu_net, self.train, self.opts, self.warm.take())?;
        self.warm.set(Some(cert.warm_start()));
        Ok((relu_net, cert))
    }

    /// Continuation stage k: augmented-Lagrangian rounds from θ at the
    /// stage's β and κ, the certificate of the ReLU net they reach, and the
    /// cone program's finish when that is not `kkt`.
    fn stage(
        &self,
        lag: &mut Lagrangian,
        theta: &mut DVector<f64>,
        k: usize,
        close: bool,
    ) -> (Stage, Option<(Network, Certificate)>) {
        let ts = Instant::now();
        lag.act = Activation::Softplus(self.beta(k));
        lag.kappa = self.kappa(k);
        if std::env::var_os("POLISH_TRACE").is_some() {
            eprintln!("stage {k}: β={:.3e} κ={:.1e}", self.beta(k), lag.kappa);
        }
        let (viol, iterations, early) = self.rounds(lag, theta, close);
        let mut outcome = early.map_or_else(|| self.judged(lag, theta), Ok).ok();
        let certified = outcome
            .as_ref()
            .is_some_and(|(_, c)| c.verdict == Verdict::Kkt);
        let mut finished = false;
        if !certified {
            let iterate = outcome.as_ref().map(|(net, _)| net);
            if let Some(done) = self.finish_stage(lag, theta, iterate) {
                outcome = Some(done);
                finished = true;
            }
        }
        let record = StageRecord {
            beta: self.beta(k),
            max_violation: viol,
            rho: lag.rho,
            lbfgs_iterations: iterations,
            finished,
            seconds: ts.elapsed().as_secs_f64(),
        };
        (record.stage(outcome.as_ref().map(|(_, c)| c)), outcome)
    }

    /// The stage's augmented-Lagrangian rounds: the last violation, the
    /// L-BFGS iterations spent, and the certified net if one round's
    /// iterate already passed (checked only for a stage that starts `close`
    /// to certified under `stop_when_certified`).
    fn rounds(
        &self,
        lag: &mut Lagrangian,
        theta: &mut DVector<f64>,
        close: bool,
    ) -> (f64, usize, Option<(Network, Certificate)>) {
        let opts = self.opts;
        let ts = Instant::now();
        let floor = GTOL_FLOOR;
        // Inexact inner solves early, exact ones late (the usual AL schedule).
        let mut gtol = 1e-5 * (1.0 + theta.amax());
        // A stage far from certified is a continuation step: a few outer
        // rounds bring it far enough, and more would polish a point the next
        // β moves anyway. Measured on `std` (near mode, 3 runs each): 10
        // rounds 8.5–8.7 s to a certified point, 3 rounds 2.9–3.0 s,
        // certified all the same.
        let outer = if close {
            opts.max_outer
        } else {
            opts.far_outer.max(1)
        };
        let (mut iters, mut viol, mut prev_viol) = (0, f64::INFINITY, f64::INFINITY);
        for _ in 0..outer {
            let round = lag.round(theta, gtol, opts.max_inner);
            let inner_done = round.grad_norm <= gtol;
            // Below ~1e-9 the Armijo test drowns in rounding of L itself.
            gtol = (gtol * 0.1).max(floor * (1.0 + theta.amax()));
            trace_round(lag.rho, &round, gtol, &ts);
            iters += round.iterations;
            self.iterations
                .set(self.iterations.get() + round.iterations);
            viol = round.violation;
            let dl = round.multiplier_change;
            let floor_reached = gtol <= floor * (1.0 + theta.amax()) && inner_done;
            if floor_reached && viol < 1e-10 && dl < 1e-8 * (1.0 + lag.lambda.amax()) {
                break;
            }
            // Raise ρ only when the inner solve finished: an unfinished one
            // says nothing about the penalty, and a large ρ ruins conditioning.
            if inner_done && viol > 0.25 * prev_viol {
                lag.rho = (lag.rho * 3.0).min(1e9);
            }
            prev_viol = viol;
            // Asked only for a certified point, and the previous stage came
            // within 10× of the tolerance: one certificate per outer
            // iteration ends the stage as soon as the ReLU net passes,
            // instead of after max_outer rounds. (Earlier stages are not
            // checked: a certificate with hundreds of near-kink pairs costs
            // as much as a few hundred L-BFGS steps.)
            if opts.stop_when_certified && close {
                if let Ok((net, cert)) = self.judged(lag, theta) {
                    if cert.verdict == Verdict::Kkt {
                        return (viol, iters, Some((net, cert)));
                    }
                }
            }
            if self.out_of_work() {
                break;
            }
        }
        (viol, iters, None)
    }

    /// The cone program's finish of a stage's iterate (whose ReLU net is
    /// `iterate` when the stage could lift it), kept only if certified
    /// and, in the near mode, no farther from the start than the iterate.
    fn finish_stage(
        &self,
        lag: &Lagrangian,
        theta: &DVector<f64>,
        iterate: Option<&Network>,
    ) -> Option<(Network, Certificate)> {
        let fopts = self.opts.finish.as_ref()?;
        let tf = Instant::now();
        let trace = |what: String| {
            if std::env::var_os("POLISH_TRACE").is_some() {
                eprintln!("  finish: {what} ({:.2}s)", tf.elapsed().as_secs_f64());
            }
        };
        let Some(finished) = finish(&lag.checked_net(theta).ok()?, self.data(), fopts) else {
            trace("declined (size, infeasible pattern or unsettled)".into());
            return None;
        };
        let relu_net = self.full(&finished.net, 0.0).ok()?;
        if self.opts.mode == PolishMode::Near {
            let ci = match iterate {
                Some(net) => cosine(&self.start, net),
                None => cosine(
                    &self.start,
                    &self.full(&lag.checked_net(theta).ok()?, lag.kappa).ok()?,
                ),
            };
            let cf = cosine(&self.start, &relu_net);
            if cf < ci - fopts.near_slack {
                trace(format!("cos {cf:.4} vs the iterate's {ci:.4}: too far"));
                return None;
            }
        }
        let cert = judge(&relu_net, self.train, self.opts, None).ok()?;
        trace(format!(
            "{} solves, ε_rel ≤ {:.3e}, {:?}",
            finished.solves, cert.relative_upper, cert.verdict
        ));
        (cert.verdict == Verdict::Kkt).then_some((relu_net, cert))
    }
}

/// `POLISH_TRACE=1`: one line per augmented-Lagrangian round.
fn trace_round(rho: f64, round: &Round, gtol: f64, since: &Instant) {
    if std::env::var_os("POLISH_TRACE").is_some() {
        eprintln!(
            "  ρ={:.1e} it={} |g|={:.2e} gtol={:.1e} t={:.1}s",
            rho,
            round.iterations,
            round.grad_norm,
            gtol,
            since.elapsed().as_secs_f64()
        );
    }
}

/// A stage's own numbers, before its certificate.
struct StageRecord {
    beta: f64,
    max_violation: f64,
    rho: f64,
    lbfgs_iterations: usize,
    finished: bool,
    seconds: f64,
}

impl StageRecord {
    /// The stage with its certificate's numbers (NaN and `undecided` when
    /// the net could not be certified at all).
    fn stage(self, cert: Option<&Certificate>) -> Stage {
        let (lower, upper, compl, verdict) =
            cert.map_or((f64::NAN, f64::NAN, f64::NAN, Verdict::Undecided), |c| {
                (
                    c.relative_lower,
                    c.relative_upper,
                    c.relative_complementarity,
                    c.verdict,
                )
            });
        Stage {
            beta: self.beta,
            relative_lower: lower,
            relative_upper: upper,
            relative_complementarity: compl,
            verdict,
            max_violation: self.max_violation,
            rho: self.rho,
            lbfgs_iterations: self.lbfgs_iterations,
            finished: self.finished,
            seconds: self.seconds,
        }
    }
}

/// The median |u_ij| over nonzero pre-activations (1 if none): the unit of
/// β, so the schedule does not depend on the data's scale.
fn median_abs_preactivation(net: &Network, data: &Dataset) -> f64 {
    let mut abs_u: Vec<f64> = net
        .preactivations(data.x())
        .iter()
        .map(|u| u.abs())
        .filter(|u| *u > 0.0)
        .collect();
    abs_u.sort_by(f64::total_cmp);
    if abs_u.is_empty() {
        1.0
    } else {
        median_sorted(&abs_u)
    }
}

/// cos∠ of two nets' parameter vectors.
fn cosine(a: &Network, b: &Network) -> f64 {
    let (a, b) = (flat(a), flat(b));
    a.dot(&b) / (a.norm() * b.norm())
}

/// Fraction of points on which two nets predict the same sign.
fn agreement(a: &Network, b: &Network, data: &Dataset) -> f64 {
    let fa = a.forward(data.x());
    let fb = b.forward(data.x());
    let same = fa
        .iter()
        .zip(fb.iter())
        .filter(|(p, q)| p.signum() == q.signum())
        .count();
    same as f64 / data.n() as f64
}

fn movement(start: &Network, end: &Network, train: &Dataset, test: Option<&Dataset>) -> Movement {
    Movement {
        cosine: cosine(start, end),
        cosine_bound: kkt_cosine_bound(start, train.x()),
        train_agreement: agreement(start, end, train),
        test_agreement: test.map(|t| agreement(start, end, t)),
        live_neurons_before: start.live_neurons(LIVE_REL),
        live_neurons_after: end.live_neurons(LIVE_REL),
    }
}
