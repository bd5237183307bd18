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
//! E is never formed: p = m(d+2) is large, so every product with E or Eᵀ goes
//! through the per-neuron structure (n×m×d matrix products, `system`).
//! With N = n + #ambiguous up to a few thousand, the ℓ2 problem is solved on
//! the formed N×N Gram system with the exact active-set QP of
//! [`crate::linalg`], and the ℓ∞ problem by cutting planes (`linf`); for
//! larger n, both are solved on a working set of points priced exactly
//! against all the others (`working_set`).
//!
//! **Certified bracket.** `upper` is ‖f − Ez‖ recomputed from the returned,
//! repaired-to-feasible z. `lower` is the weak-duality bound
//! (uᵀf − μᵀb)/‖u‖_* for a (u, μ ≥ 0) whose dual feasibility Eᵀu ≤ Aᵀμ is
//! *checked*, with an a-priori floating-point error bound added to each
//! checked entry; violated entries are repaired by projecting u, never
//! assumed away. Rounding in the final quotient is bounded the same way.

pub mod deep;
mod linf;
mod system;
mod working_set;

pub use system::KktSystem;
pub use working_set::WorkingSetStats;

use crate::error::{Error, Result};
use crate::model::data::Dataset;
use crate::model::net::Network;
use nalgebra::DMatrix;
use serde::Serialize;

/// Residual norm of the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// The Euclidean norm.
    L2,
    /// The maximum norm.
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
    /// How the ℓ2/ℓ∞ problem is solved over the points.
    pub method: Method,
    /// Variables the ℓ2 solve frees first (from a nearby net's certificate).
    pub warm: Option<WarmStart>,
}

/// Points and ambiguous pairs expected to carry weight (the support of a
/// nearby net's certificate, as the polish's consecutive certificates are):
/// the full-Gram ℓ2 solve frees them before its first step instead of one
/// per iteration. Any hint is safe; the bracket does not depend on it.
#[derive(Clone, Debug, Default)]
pub struct WarmStart {
    /// Points free at the previous optimum.
    pub points: Vec<usize>,
    /// (sample, neuron) of ambiguous pairs with γ > 0.
    pub pairs: Vec<(usize, usize)>,
}

/// How the certificate problem is solved over the training points. Both
/// methods return the same certified bracket (up to the solvers' rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// The full Gram system up to [`FULL_GRAM_POINTS`] points and
    /// [`FULL_GRAM_VARS`] variables, the working set above.
    #[default]
    Auto,
    /// The formed N×N Gram system (N = n + ambiguous pairs).
    Full,
    /// Column generation over the points with exact pricing, from the
    /// `initial` points of smallest margin.
    WorkingSet {
        /// Points in the first round.
        initial: usize,
    },
}

/// Points in the working set's first round (those of smallest margin).
pub const WORKING_SET_INITIAL: usize = 256;

/// Most points for which [`Method::Auto`] forms the full Gram system. The
/// working set is over points: it wins when few of many points are support
/// (n = 5,000 at d = 784: 0.6 s against 2.8 s), and loses when nearly all
/// are, as at a polished wide net whose ~1,900 ambiguous pairs make
/// N = 2,204 from 320 points (27 s in six rounds against 7 s).
pub const FULL_GRAM_POINTS: usize = 2000;

/// Most variables (points and ambiguous pairs) for which [`Method::Auto`]
/// forms the full Gram system: its N² doubles take 512 MB.
pub const FULL_GRAM_VARS: usize = 8000;

impl clap::ValueEnum for Method {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Method::Auto,
            Method::Full,
            Method::WorkingSet {
                initial: WORKING_SET_INITIAL,
            },
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Method::Auto => "auto",
            Method::Full => "full",
            Method::WorkingSet { .. } => "working-set",
        }))
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Method::Auto),
            "full" => Ok(Method::Full),
            "working-set" => Ok(Method::WorkingSet {
                initial: WORKING_SET_INITIAL,
            }),
            _ => Err(Error::param(
                "method",
                format!("`{s}`, expected auto, full or working-set"),
            )),
        }
    }
}

impl Default for CertifyOptions {
    fn default() -> Self {
        Self {
            tol: 1e-4,
            delta_rel: Some(1e-4),
            act_tol: 1e-6,
            method: Method::Auto,
            warm: None,
        }
    }
}

/// Verdict of a certificate against its tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// ε_rel upper ≤ tol and δ_rel ≤ tol: a certified KKT point.
    Kkt,
    /// ε_rel lower > tol: certainly not a KKT point at this tolerance.
    NotKkt,
    /// The bracket straddles the tolerance.
    Undecided,
}

impl Verdict {
    /// The verdict of a relative bracket [lower, upper] on ε and a relative
    /// complementarity, at tolerance `tol`: `kkt` needs both ends of the
    /// KKT conditions within it, `not_kkt` a lower bound above it.
    pub fn of(relative_lower: f64, relative_upper: f64, complementarity: f64, tol: f64) -> Self {
        if relative_upper <= tol && complementarity <= tol {
            Verdict::Kkt
        } else if relative_lower > tol {
            Verdict::NotKkt
        } else {
            Verdict::Undecided
        }
    }
}

/// Residual norms per parameter block.
#[derive(Clone, Debug, Serialize)]
pub struct BlockResiduals {
    #[serde(rename = "W")]
    /// Residual of the W block.
    pub w: f64,
    /// Residual of the b block.
    pub b: f64,
    /// Residual of the v block.
    pub v: f64,
}

/// A Clarke-ambiguous (point, neuron) pair and the s_ij the certificate chose.
#[derive(Clone, Debug, Serialize)]
pub struct AmbiguousPair {
    /// The training point.
    pub sample: usize,
    /// The neuron.
    pub neuron: usize,
    /// w_j·x_i + b_j, near 0.
    pub preactivation: f64,
    /// The Clarke slope chosen in \[0, 1\].
    pub s: f64,
}

/// A support vector: λ_i > 0.
#[derive(Clone, Debug, Serialize)]
pub struct Support {
    /// The training point.
    pub index: usize,
    /// Its multiplier λ_i.
    pub lambda: f64,
    /// Its margin after rescaling.
    pub margin: f64,
}

/// What was proven about one norm.
#[derive(Clone, Debug, Serialize)]
pub struct Certificate {
    /// The residual's norm.
    pub norm: Norm,
    /// The factor that puts the net on the constraint set (min margin 1).
    pub scale: f64,
    /// Margins of the rescaled net.
    pub margins: Vec<f64>,
    /// Proven upper bound on the best KKT residual.
    pub upper: f64,
    /// Proven lower bound on it.
    pub lower: f64,
    /// upper / ‖θ̂‖ (ε_rel's upper end).
    pub relative_upper: f64,
    /// lower / ‖θ̂‖.
    pub relative_lower: f64,
    /// 2 Σ λ_i (q̂_i − 1) / ‖θ̂‖² of the returned λ.
    pub relative_complementarity: f64,
    /// The δ_rel bound imposed (null: no complementarity row).
    pub delta_rel: Option<f64>,
    /// The verdict's tolerance.
    pub tol: f64,
    /// τ_act: (point, neuron) pairs with |u_ij| ≤ τ‖(w_j, b_j)‖(‖x_i‖ + 1)
    /// were given Clarke freedom (listed in `ambiguous_pairs`).
    pub act_tol: f64,
    /// The multipliers λ (one per training point).
    pub lambda: Vec<f64>,
    /// Points with λ_i > 0.
    pub support: Vec<Support>,
    /// The residual by parameter block.
    pub block_residuals: BlockResiduals,
    /// (point, neuron) pairs given Clarke freedom.
    pub ambiguous_pairs: Vec<AmbiguousPair>,
    /// `kkt`, `not_kkt` or `undecided`.
    pub verdict: Verdict,
    /// ‖θ̂‖ of the rescaled net.
    pub theta_norm: f64,
    /// Iterations of the QP (or LP rounds).
    pub solver_iterations: usize,
    /// Present when the working-set method solved it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set: Option<WorkingSetStats>,
    /// Wall time.
    pub seconds: f64,
}

impl Certificate {
    /// The support and the weighted ambiguous pairs, to warm-start the
    /// certificate of a nearby net.
    pub fn warm_start(&self) -> WarmStart {
        WarmStart {
            points: self.support.iter().map(|s| s.index).collect(),
            pairs: self
                .ambiguous_pairs
                .iter()
                .filter(|p| p.s > 0.0)
                .map(|p| (p.sample, p.neuron))
                .collect(),
        }
    }

    /// `net` rescaled by this certificate's factor (min-margin 1).
    pub fn scale_net(&self, net: &Network) -> Network {
        net.scaled(self.scale)
    }
}

/// Certifies `net` on the training set `data` in the given norm.
///
/// ```
/// use kktcert::kkt::{certify, CertifyOptions, Norm};
/// # use kktcert::fit::gd::{train, TrainConfig};
/// # use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
/// # let spec = FixtureSpec { format: FIXTURE_FORMAT.into(), k: 4, d: 20, sigma: 0.3, n: 40,
/// #     n_test: 10, seed: 0, means: MeansKind::Orthogonal, labels: LabelRule::Balanced };
/// # let fx = Fixture::generate(spec)?;
/// # let net = train(&fx.train, &TrainConfig { width: 8, ..TrainConfig::default() }, |_, _, _| Ok(()))?.net;
/// let cert = certify(&net, &fx.train, Norm::L2, &CertifyOptions::default())?;
/// assert!(0.0 <= cert.lower && cert.lower <= cert.upper);
/// println!("ε_rel ∈ [{:.2e}, {:.2e}]: {:?}", cert.relative_lower, cert.relative_upper, cert.verdict);
/// # Ok::<(), kktcert::Error>(())
/// ```
pub fn certify(
    net: &Network,
    data: &Dataset,
    norm: Norm,
    opts: &CertifyOptions,
) -> Result<Certificate> {
    let t0 = std::time::Instant::now();
    let (n, m) = (data.n() as f64, net.width() as f64);
    // U and the strict pattern, a transient ReLU(U), and one n×m product
    // with Eᵀ.
    let base = 8.0 * 3.2 * n * m;
    let instead = "certify a subset of the training points, or run on a machine with more memory";
    let what = format!(
        "certify ({} training points, {} neurons)",
        data.n(),
        net.width()
    );
    crate::io::resources::ensure_fits(&what, base, instead)?;
    let sys = KktSystem::new(net, data, opts)?;
    let method = match opts.method {
        Method::Auto if sys.n() > FULL_GRAM_POINTS || sys.nvars() > FULL_GRAM_VARS => {
            Method::WorkingSet {
                initial: WORKING_SET_INITIAL,
            }
        }
        Method::Auto => Method::Full,
        chosen => chosen,
    };
    if let Method::WorkingSet { initial } = method {
        return working_set::certify(&sys, norm, initial, opts, t0);
    }
    // The N×N Gram system: H, three n×n products and the QP's factorisation.
    let nv = sys.nvars() as f64;
    crate::io::resources::ensure_fits(
        &format!("the certificate's {0}×{0} Gram system", sys.nvars()),
        base + 8.0 * (3.0 * n * n + 3.0 * nv * nv),
        "use the working-set method (`--method working-set`), certify a subset of the training points, or run on a machine with more memory",
    )?;
    let h = sys.gram();
    let solved = sys.solve(norm, &h)?;
    let block =
        |vars: &[usize]| DMatrix::from_fn(vars.len(), vars.len(), |r, c| h[(vars[r], vars[c])]);
    Ok(sys.finish(norm, solved, &block, None, opts, t0))
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

/// One checkpoint's certificates as `certify --json` writes them: the
/// certificate itself for one norm, `{l2, linf}` for both.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Certificates<'a> {
    /// One norm.
    One(&'a Certificate),
    /// Both norms, keyed by name.
    ByNorm {
        #[serde(skip_serializing_if = "Option::is_none")]
        /// The ℓ2 certificate.
        l2: Option<&'a Certificate>,
        #[serde(skip_serializing_if = "Option::is_none")]
        /// The ℓ∞ certificate.
        linf: Option<&'a Certificate>,
    },
}

/// The [`Certificates`] document of `certs` (one per norm).
pub fn certificates_json(certs: &[Certificate]) -> Certificates<'_> {
    match certs {
        [c] => Certificates::One(c),
        _ => Certificates::ByNorm {
            l2: certs.iter().find(|c| c.norm == Norm::L2),
            linf: certs.iter().find(|c| c.norm == Norm::Linf),
        },
    }
}
