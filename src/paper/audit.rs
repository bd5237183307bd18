//! The audit of SPEC §1: Assumption 2.2, label balance and the dataset
//! properties P1–P6, each with the measured worst value, its threshold, the
//! slack (positive = satisfied) and the sample or pair attaining it.
//!
//! The paper's constants are unknown; C_A, C_P, σ_max and c_bal are options
//! with the spec's defaults, never literals. The paper's notation section
//! writes `log` for the base-2 logarithm and `ln` for the natural one, and
//! Assumption 2.2 and P1–P6 are stated with `log`: base 2 is the default
//! ([`LogBase`]), the natural logarithm an option.
//!
//! C_A is "sufficiently large" in the paper, so whether a fixture is inside
//! the assumption at C_A = 1 is a convention. The audit therefore also
//! reports, for A3 (the one condition C_A enters), the largest C_A for
//! which it holds: A3's right-hand side d/(C_A·log d) falls like 1/C_A, so
//! A3 holds exactly for C_A ≤ d/(lhs·log d).

use crate::error::{Error, Result};
use crate::model::data::{Dataset, Means};
use serde::{Deserialize, Serialize};

/// The base of the logarithm in Assumption 2.2 and P1–P6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum LogBase {
    /// log₂, the paper's `log` (its notation section).
    #[default]
    #[serde(rename = "2")]
    #[value(name = "2")]
    Two,
    /// The natural logarithm, the paper's `ln`.
    #[serde(rename = "e")]
    #[value(name = "e")]
    E,
}

impl LogBase {
    /// log x in this base.
    pub fn log(self, x: f64) -> f64 {
        match self {
            Self::Two => x.log2(),
            Self::E => x.ln(),
        }
    }

    /// The base as written in reports: `2` or `e`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Two => "2",
            Self::E => "e",
        }
    }
}

/// The audit's constants.
#[derive(Clone, Debug, Serialize)]
pub struct AuditOptions {
    /// C_A of Assumption 2.2(3).
    pub c_a: f64,
    /// C_P, the polylog multiplier of P1–P5.
    pub c_p: f64,
    /// σ_max of Assumption 2.2(2).
    pub sigma_max: f64,
    /// c_bal: the smaller of k+/k−, k−/k+ must be at least this.
    pub c_bal: f64,
    /// Relative tolerance for ‖μ_j‖ = √d.
    pub norm_tol: f64,
    /// The base of `log` in A3 and in L = log(n·d) of P1–P5.
    pub log_base: LogBase,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            c_a: 1.0,
            c_p: 1.0,
            sigma_max: 1.0,
            c_bal: 1.0 / 3.0,
            norm_tol: 1e-9,
            log_base: LogBase::Two,
        }
    }
}

/// One audited condition.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Short name (A1…A3, P1…P6, balance).
    pub name: String,
    /// What is checked, in words.
    pub description: String,
    /// The measured value.
    pub value: f64,
    /// The bound it is held to.
    pub threshold: f64,
    /// threshold − value for "≤" checks, value − threshold for "≥" checks.
    pub slack: f64,
    /// Whether it holds.
    pub pass: bool,
    /// Which cluster, sample or pair attains the worst value.
    pub witness: String,
    /// For A3: the largest C_A for which it holds (None for the others,
    /// which C_A does not enter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_c_a: Option<f64>,
}

fn at_most(name: &str, description: &str, value: f64, threshold: f64, witness: String) -> Check {
    Check {
        name: name.into(),
        description: description.into(),
        value,
        threshold,
        slack: threshold - value,
        pass: value <= threshold,
        witness,
        max_c_a: None,
    }
}

fn at_least(name: &str, description: &str, value: f64, threshold: f64, witness: String) -> Check {
    Check {
        slack: value - threshold,
        pass: value >= threshold,
        ..at_most(name, description, value, threshold, witness)
    }
}

/// The audit's findings.
#[derive(Clone, Debug, Serialize)]
pub struct Audit {
    /// The constants used.
    pub options: AuditOptions,
    /// One entry per condition.
    pub checks: Vec<Check>,
    /// Assumption 2.2 (items 1–3) holds.
    pub assumption_holds: bool,
    /// P1–P6 hold (null when no training set was audited).
    pub data_nice: Option<bool>,
}

impl Audit {
    /// Assumption 2.2(3)'s lhs/rhs (≤ 1: it holds; NaN when not audited).
    pub fn a3_ratio(&self) -> f64 {
        self.checks
            .iter()
            .find(|c| c.name == "A3")
            .map_or(f64::NAN, |c| c.value / c.threshold)
    }

    /// The largest C_A for which Assumption 2.2(3) holds (NaN when not
    /// audited).
    pub fn max_c_a(&self) -> f64 {
        self.checks
            .iter()
            .find_map(|c| c.max_c_a)
            .unwrap_or(f64::NAN)
    }
}

/// Worst (largest) value of `f` over i < l, with its pair.
fn worst_pair(n: usize, mut f: impl FnMut(usize, usize) -> Option<f64>) -> (f64, usize, usize) {
    let mut best = (f64::NEG_INFINITY, 0, 0);
    for i in 0..n {
        for l in i + 1..n {
            if let Some(v) = f(i, l) {
                if v > best.0 {
                    best = (v, i, l);
                }
            }
        }
    }
    best
}

/// Audits the means (Assumption 2.2, balance) and optionally a training set (P1–P6).
///
/// ```
/// use kktcert::paper::audit::{audit, AuditOptions};
/// # use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
/// # let spec = FixtureSpec { format: FIXTURE_FORMAT.into(), k: 4, d: 20, sigma: 0.3, n: 40,
/// #     n_test: 10, seed: 0, means: MeansKind::Orthogonal, labels: LabelRule::Balanced };
/// # let fx = Fixture::generate(spec)?;
/// let a = audit(&fx.means, 0.3, Some(&fx.train), &AuditOptions::default())?;
/// for c in &a.checks {
///     println!("{}: {} (value {:.3}, threshold {:.3})", c.name, if c.pass { "holds" } else { "fails" }, c.value, c.threshold);
/// }
/// # Ok::<(), kktcert::Error>(())
/// ```
pub fn audit(
    means: &Means,
    sigma: f64,
    train: Option<&Dataset>,
    opts: &AuditOptions,
) -> Result<Audit> {
    let (k, d) = (means.k(), means.d());
    let df = d as f64;
    let sd = df.sqrt();
    let mu = means.mu();
    let mut checks = Vec::new();
    let (norm_dev, jn) = (0..k)
        .map(|j| ((mu.row(j).norm() - sd).abs() / sd, j))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    checks.push(at_most(
        "A1",
        "max_j |‖μ_j‖ − √d| / √d",
        norm_dev,
        opts.norm_tol,
        format!("cluster {jn}"),
    ));
    checks.push(at_most(
        "A2",
        "σ ≤ σ_max",
        sigma,
        opts.sigma_max,
        "noise level".into(),
    ));
    let gram = mu * mu.transpose();
    let (max_ip, i0, l0) = worst_pair(k, |i, l| Some(gram[(i, l)].abs()));
    let max_ip = max_ip.max(0.0);
    let logd = opts.log_base.log(df).max(f64::MIN_POSITIVE);
    let lhs = k as f64 * (max_ip + sigma * sd * logd);
    let rhs = df / (opts.c_a * logd);
    checks.push(Check {
        max_c_a: Some(df / (lhs * logd)),
        ..at_most(
            "A3",
            &format!(
                "k·(max_{{i≠j}}|⟨μ_i,μ_j⟩| + σ√d·log d) ≤ d/(C_A·log d), log base {}",
                opts.log_base.name()
            ),
            lhs,
            rhs,
            format!("clusters ({i0}, {l0}), ratio lhs/rhs = {:.3}", lhs / rhs),
        )
    });
    let kp = means.labels().iter().filter(|&&y| y > 0.0).count() as f64;
    let km = k as f64 - kp;
    checks.push(at_least(
        "balance",
        "min(k+/k−, k−/k+) ≥ c_bal",
        (kp / km).min(km / kp),
        opts.c_bal,
        format!("k+ = {kp}, k− = {km}"),
    ));
    let assumption_holds = checks.iter().take(3).all(|c| c.pass);
    let data_nice = match train {
        Some(data) => {
            let props = properties(means, sigma, data, opts)?;
            let nice = props.iter().all(|c| c.pass);
            checks.extend(props);
            Some(nice)
        }
        None => None,
    };
    Ok(Audit {
        options: opts.clone(),
        checks,
        assumption_holds,
        data_nice,
    })
}

/// P1–P6 on a training set with known clusters.
fn properties(
    means: &Means,
    sigma: f64,
    data: &Dataset,
    opts: &AuditOptions,
) -> Result<Vec<Check>> {
    let cl = data.cluster().ok_or_else(|| {
        Error::param(
            "cluster",
            "the audit of P1–P6 needs the `cluster` tensor in the training set",
        )
    })?;
    if data.d() != means.d() {
        return Err(Error::Mismatch(format!(
            "means have d = {}, data has d = {}",
            means.d(),
            data.d()
        )));
    }
    if let Some(&bad) = cl.iter().find(|&&c| c >= means.k()) {
        return Err(Error::param(
            "cluster",
            format!("cluster id {bad} ≥ k = {}", means.k()),
        ));
    }
    let (n, d, k) = (data.n(), data.d() as f64, means.k());
    let sd = d.sqrt();
    let l = opts.log_base.log(n as f64 * d);
    let cp = opts.c_p;
    let mu = means.mu();
    let xi = data.x() - mu.select_rows(cl);
    let xg = data.x() * data.x().transpose();
    let ng = &xi * xi.transpose();
    let mg = mu * mu.transpose();
    let mut out = Vec::new();
    let (p1, i1) = (0..n)
        .map(|i| ((ng[(i, i)] - sigma * sigma * d).abs(), i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    out.push(at_most(
        "P1",
        "max_i |‖ξ_i‖² − σ²d| ≤ C_P σ²√d L",
        p1,
        cp * sigma * sigma * sd * l,
        format!("sample {i1}"),
    ));
    let (p2, a, b) = worst_pair(n, |i, j| Some(ng[(i, j)].abs()));
    out.push(at_most(
        "P2",
        "max_{i≠l} |⟨ξ_i, ξ_l⟩| ≤ C_P σ²√d L",
        p2.max(0.0),
        cp * sigma * sigma * sd * l,
        format!("samples ({a}, {b})"),
    ));
    let nm = &xi * mu.transpose();
    let (p3, (i3, j3)) = (0..n)
        .flat_map(|i| (0..k).map(move |j| (i, j)))
        .map(|(i, j)| (nm[(i, j)].abs(), (i, j)))
        .fold((0.0, (0, 0)), |a, b| if b.0 > a.0 { b } else { a });
    out.push(at_most(
        "P3",
        "max_{i,j} |⟨μ_j, ξ_i⟩| ≤ C_P σ√d L",
        p3,
        cp * sigma * sd * l,
        format!("sample {i3}, cluster {j3}"),
    ));
    let dev = cp * (2.0 * sigma * sd * l + sigma * sigma * sd * l);
    let (p4, a, b) = worst_pair(n, |i, j| (cl[i] == cl[j]).then(|| -xg[(i, j)]));
    let p4 = if p4.is_finite() { -p4 } else { f64::INFINITY };
    out.push(at_least(
        "P4",
        "min_{c_i=c_l} ⟨x_i, x_l⟩ ≥ d − C_P(2σ√dL + σ²√dL)",
        p4,
        d - dev,
        format!("samples ({a}, {b})"),
    ));
    let (p5, a, b) = worst_pair(n, |i, j| {
        (cl[i] != cl[j]).then(|| xg[(i, j)].abs() - mg[(cl[i], cl[j])].abs())
    });
    out.push(at_most(
        "P5",
        "max_{c_i≠c_l} |⟨x_i, x_l⟩| − |⟨μ_ci, μ_cl⟩| ≤ C_P(2σ√dL + σ²√dL)",
        p5.max(f64::MIN),
        dev,
        format!("samples ({a}, {b})"),
    ));
    let mut counts = vec![0usize; k];
    cl.iter().for_each(|&c| counts[c] += 1);
    let (lo, hi) = (n as f64 / (2.0 * k as f64), 2.0 * n as f64 / k as f64);
    // Coverage as one number: the worst relative distance outside [lo, hi] (≤ 0 passes).
    let (worst, jc) = counts
        .iter()
        .enumerate()
        .map(|(j, &c)| (((lo - c as f64) / lo).max((c as f64 - hi) / hi), j))
        .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a });
    out.push(at_most(
        "P6",
        "every cluster has between n/(2k) and 2n/k samples (value: worst relative excess)",
        worst,
        0.0,
        format!(
            "cluster {jc} has {} samples, allowed [{lo:.1}, {hi:.1}]",
            counts[jc]
        ),
    ));
    Ok(out)
}
