//! Full-batch gradient descent on both layers and the biases (SPEC §7).
//!
//! The loss is the mean of ℓ(q_i) over the training set, with ℓ logistic or
//! exponential. After interpolation the loss decays and a fixed step stalls,
//! so the optional loss-normalised step η_t = min(η / L(θ_t), η_max) keeps the
//! margin growing, as in the implicit-bias analyses.

use crate::error::{Error, Result};
use crate::model::data::Dataset;
use crate::model::net::{Activation, Network};
use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// The per-sample loss ℓ(q).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// ℓ(q) = log(1 + e^{−q}).
    Logistic,
    /// ℓ(q) = e^{−q}.
    Exp,
}

impl Loss {
    /// ℓ(q), computed without overflow.
    pub fn value(self, q: f64) -> f64 {
        match self {
            Loss::Logistic if q > 0.0 => (-q).exp().ln_1p(),
            Loss::Logistic => -q + q.exp().ln_1p(),
            Loss::Exp => (-q).exp(),
        }
    }

    /// ℓ'(q) (negative).
    pub fn derivative(self, q: f64) -> f64 {
        match self {
            Loss::Logistic => -1.0 / (1.0 + q.exp()),
            Loss::Exp => -(-q).exp(),
        }
    }
}

/// Training options; defaults reach zero training error on the shipped fixtures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Width m of the network.
    pub width: usize,
    /// The per-sample loss.
    pub loss: Loss,
    /// Most GD steps.
    pub steps: usize,
    /// Step size η.
    pub lr: f64,
    /// Use η_t = min(η / L, `lr_cap`).
    pub normalized_lr: bool,
    /// Cap on the loss-normalised step η/L.
    pub lr_cap: f64,
    /// Initial weights are N(0, s²/d) (first layer) and N(0, s²/m) (second).
    pub init_scale: f64,
    /// Seed of the initialisation.
    pub seed: u64,
    /// Stop as soon as the mean loss is below this.
    pub target_loss: f64,
    /// Record a log row every this many steps (and at the end).
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            width: 100,
            loss: Loss::Logistic,
            steps: 2000,
            lr: 0.2,
            normalized_lr: false,
            lr_cap: 1e3,
            init_scale: 0.1,
            seed: 0,
            target_loss: 1e-3,
            log_every: 10,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::param(
                    name,
                    format!("{v}, expected a finite value > 0"),
                ))
            }
        };
        if self.width == 0 {
            return Err(Error::param("width", "0, expected m ≥ 1"));
        }
        positive("lr", self.lr)?;
        positive("lr_cap", self.lr_cap)?;
        positive("init_scale", self.init_scale)?;
        if self.target_loss.is_nan() || self.target_loss < 0.0 {
            return Err(Error::param("target_loss", "expected ≥ 0"));
        }
        Ok(())
    }
}

/// One row of the training log.
#[derive(Clone, Debug, Serialize)]
pub struct LogRow {
    /// GD step.
    pub step: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Smallest margin y_i N(x_i).
    pub min_margin: f64,
    /// min_i q_i / ‖θ‖².
    pub normalized_margin: f64,
}

/// Loss value and gradient at θ.
pub struct LossGrad {
    /// Mean training loss.
    pub loss: f64,
    /// Margins y_i N(x_i).
    pub margins: Vec<f64>,
    /// The gradient, as a network of the same shape.
    pub grad: Network,
}

/// Mean loss and its gradient with respect to (W, b, v), ReLU'(0) = 0.
pub fn loss_and_grad(net: &Network, data: &Dataset, loss: Loss) -> LossGrad {
    let n = data.n() as f64;
    let (u, out) = net.outputs_with(data.x(), Activation::Relu);
    let margins: Vec<f64> = out.iter().zip(data.y()).map(|(f, y)| f * y).collect();
    let value = margins.iter().map(|&q| loss.value(q)).sum::<f64>() / n;
    let coef = DVector::from_iterator(
        margins.len(),
        margins
            .iter()
            .zip(data.y())
            .map(|(&q, &y)| loss.derivative(q) * y / n),
    );
    LossGrad {
        loss: value,
        margins,
        grad: net.pullback(data.x(), &u, &coef, Activation::Relu),
    }
}

/// θ ← θ − η·g, in place (no allocation: a GD step is memory-bound at
/// these sizes); fails, leaving θ unusable, if the step leaves the finite range.
pub fn step(net: &mut Network, grad: &Network, eta: f64) -> Result<()> {
    net.add_scaled(-eta, grad).map_err(|_| {
        Error::Numerical(format!(
            "gradient step diverged (η = {eta:.3e}); lower --lr"
        ))
    })
}

/// A random small initialisation of width `cfg.width` for inputs of dimension `d`.
pub fn init(cfg: &TrainConfig, d: usize) -> Result<Network> {
    cfg.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let m = cfg.width;
    let sw = cfg.init_scale / (d as f64).sqrt();
    let sv = cfg.init_scale / (m as f64).sqrt();
    let w = DMatrix::from_fn(m, d, |_, _| sw * rng.sample::<f64, _>(StandardNormal));
    let b = DVector::from_fn(m, |_, _| sw * rng.sample::<f64, _>(StandardNormal));
    let v = DVector::from_fn(m, |_, _| sv * rng.sample::<f64, _>(StandardNormal));
    Network::new(w, b, v)
}

/// The result of a training run.
pub struct Trained {
    /// The trained network.
    pub net: Network,
    /// Steps taken.
    pub steps: usize,
    /// One row per logged step, the last included.
    pub log: Vec<LogRow>,
}

fn log_row(step: usize, lg: &LossGrad, net: &Network) -> LogRow {
    let n = lg.margins.len() as f64;
    let min_margin = lg.margins.iter().cloned().fold(f64::INFINITY, f64::min);
    LogRow {
        step,
        loss: lg.loss,
        train_accuracy: lg.margins.iter().filter(|&&q| q > 0.0).count() as f64 / n,
        min_margin,
        normalized_margin: min_margin / net.norm_sq(),
    }
}

/// Runs GD from a seeded initialisation; `on_step` sees every step's log
/// row and the net at that step (before the step is taken), and may fail
/// (e.g. writing a checkpoint), which stops the run.
pub fn train(
    data: &Dataset,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(usize, &LogRow, &Network) -> Result<()>,
) -> Result<Trained> {
    let mut net = init(cfg, data.d())?;
    let mut log = Vec::new();
    let mut t = 0;
    loop {
        let lg = loss_and_grad(&net, data, cfg.loss);
        let row = log_row(t, &lg, &net);
        let done = t >= cfg.steps || lg.loss < cfg.target_loss;
        if t % cfg.log_every.max(1) == 0 || done {
            log.push(row.clone());
        }
        on_step(t, &row, &net)?;
        if done {
            break;
        }
        let eta = if cfg.normalized_lr {
            (cfg.lr / lg.loss).min(cfg.lr_cap)
        } else {
            cfg.lr
        };
        step(&mut net, &lg.grad, eta)?;
        t += 1;
    }
    Ok(Trained { net, steps: t, log })
}

/// The log as CSV text.
pub fn log_csv(log: &[LogRow]) -> String {
    let mut s = String::from("step,loss,train_accuracy,min_margin,normalized_margin\n");
    for r in log {
        s.push_str(&format!(
            "{},{:.10e},{},{:.10e},{:.10e}\n",
            r.step, r.loss, r.train_accuracy, r.min_margin, r.normalized_margin
        ));
    }
    s
}
