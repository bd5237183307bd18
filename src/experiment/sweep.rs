//! The `reproduce` pipeline: fixtures → audit → GD nets → polished KKT
//! points → robust net → universal attack and exact distances → tables and
//! figures.
//!
//! Every number in the report comes from the library's own certified
//! routines; this module only orchestrates and formats. A failing cell is
//! recorded with its error and the run goes on.

use crate::distance::{DistanceOptions, DistanceSolver, PointDistance, Status};
use crate::error::Result;
use crate::experiment::edge::{
    bootstrap_median, check_point, double_edge, exact_median, exponent_in_k, Interval, PointRecord,
};
use crate::fit::gd::{train, TrainConfig};
use crate::fit::polish::{polish, PolishMode, PolishOptions};
use crate::jobs::shard::{Shard, ShardInfo};
use crate::kkt::Verdict;
use crate::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
use crate::model::net::{median_sorted, Evaluation, Network};
use crate::paper::attack::{attack, AttackReport};
use crate::paper::audit::LogBase;
use crate::paper::audit::{audit, Audit, AuditOptions};
use crate::paper::robust::robust_network;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One size of the sweep: k clusters in dimension d with noise σ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Size {
    /// Number of clusters.
    pub k: usize,
    /// Input dimension.
    pub d: usize,
    /// Within-cluster noise σ.
    pub sigma: f64,
}

/// One candidate the hypotheses regime's search audited (see `regime`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchRow {
    /// The cell's (k, d, σ).
    pub size: Size,
    /// Assumption 2.2(3) lhs/rhs at C_A = 1 (≤ 1: holds).
    pub a3_ratio: f64,
    /// Whether Assumption 2.2 holds for this fixture.
    pub assumption_holds: bool,
    /// Whether P1–P6 hold (none when not audited).
    pub data_nice: Option<bool>,
    /// `hypotheses`, `boundary`, `outside`, or `unused` when not swept.
    pub chosen: String,
}

/// What to sweep and how hard to work on each cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepConfig {
    /// `outside` (the default sweep, whose cells the audit does not pass) or
    /// `hypotheses` (cells chosen by searching the audit).
    pub regime: String,
    /// The cells of the sweep.
    pub sizes: Vec<Size>,
    /// The audit search that chose the sizes (empty for `outside`).
    pub search: Vec<SearchRow>,
    /// Training points per cluster.
    pub n_per_cluster: usize,
    /// Test points per fixture.
    pub n_test: usize,
    /// Widths as multiples of k.
    pub width_factors: Vec<usize>,
    /// Fixture seeds per cell.
    pub seeds: Vec<u64>,
    /// How the cluster means are drawn.
    pub means: MeansKind,
    /// Test points given to the exact distance search.
    pub distance_points: usize,
    /// Branch-and-bound nodes per point (a work limit, not a time limit, so
    /// that a seed gives the same report on any machine).
    pub distance_max_nodes: usize,
    /// Safety net for the polish, which otherwise stops at its first
    /// certified stage; a net it stops short is visible in the row's
    /// `kkt_verdict`. A work limit (total
    /// L-BFGS iterations), not a time limit, so that the same seed gives the
    /// same report on any machine under any load (and in any shard).
    pub polish_iteration_budget: usize,
    /// Which KKT point the polish heads for (`near`: the one GD is heading for).
    pub polish_mode: PolishMode,
    /// Most GD steps per net.
    pub train_steps: usize,
    /// GD initialisation scale (0.1 leaves width-k nets with dead neurons on these fixtures).
    pub init_scale: f64,
    /// Points of the flip-rate curve.
    pub grid: usize,
    /// The base of `log` in the audit (the paper's `log` is base 2).
    #[serde(default)]
    pub log_base: LogBase,
}

impl SweepConfig {
    /// A few small sizes, for a run of about a minute.
    pub fn quick(seed: u64) -> Self {
        let size = |k, d| Size { k, d, sigma: 1.0 };
        Self {
            regime: "outside".into(),
            sizes: vec![size(4, 64), size(8, 256)],
            search: Vec::new(),
            n_per_cluster: 10,
            n_test: 200,
            width_factors: vec![1, 10],
            seeds: vec![seed],
            means: MeansKind::Orthogonal,
            distance_points: 8,
            distance_max_nodes: 1500,
            polish_iteration_budget: 100_000,
            polish_mode: PolishMode::Near,
            train_steps: 2000,
            init_scale: 0.5,
            grid: 41,
            log_base: LogBase::Two,
        }
    }

    /// The default sweep: k ∈ {4, 8, 16, 32}, d ∈ {100, 400, 1600}, widths k and 10k, 3 seeds.
    pub fn full(seed: u64) -> Self {
        let mut sizes = Vec::new();
        for k in [4, 8, 16, 32] {
            for d in [100, 400, 1600] {
                sizes.push(Size { k, d, sigma: 1.0 });
            }
        }
        Self {
            sizes,
            n_test: 500,
            seeds: vec![seed, seed + 1, seed + 2],
            distance_points: 10,
            distance_max_nodes: 1500,
            polish_iteration_budget: 200_000,
            ..Self::quick(seed)
        }
    }
}

/// Medians for one kind of network.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KindResult {
    /// Test error of the net.
    pub test_error: f64,
    /// Median exact critical ‖z‖ along the universal direction (null: never flips).
    pub universal_median: Option<f64>,
    /// Flip rate on the grid of ‖z‖/√(d/k).
    pub flip_curve: Vec<(f64, f64)>,
    /// Median of the certified distances' upper ends.
    pub distance_median: Option<f64>,
    /// The distances computed (upper ends).
    pub distances: Vec<f64>,
    /// How many of them are `exact`.
    pub distance_exact: usize,
    /// How many are `bounded`.
    pub distance_bounded: usize,
    /// Both theorems' quantities on the distance points, point by point.
    #[serde(default)]
    pub points: Vec<PointRecord>,
    /// Distance points left out of `distance_median`: not `exact`, or
    /// misclassified (at distance 0, which says nothing of robustness).
    #[serde(default)]
    pub distance_excluded: usize,
}

/// One row of the headline table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Position of the cell in the sweep (sizes × seeds × widths, in that order).
    pub cell: usize,
    /// Number of clusters.
    pub k: usize,
    /// Input dimension.
    pub d: usize,
    /// Within-cluster noise σ.
    pub sigma: f64,
    /// Training points.
    pub n: usize,
    /// `hypotheses` (Assumption 2.2 and P1–P6 hold), `boundary` (they do
    /// not, but the A3 ratio is within [0.5, 2]) or `outside`.
    pub regime: String,
    /// Width of the trained net.
    pub width: usize,
    /// The fixture's seed.
    pub seed: u64,
    /// Test error of the GD net (none if it failed).
    pub test_error: Option<f64>,
    /// The polished net's certified ε_rel upper bound.
    pub kkt_relative_upper: Option<f64>,
    /// Its δ_rel.
    pub kkt_relative_complementarity: Option<f64>,
    /// Its certificate's verdict.
    pub kkt_verdict: Option<String>,
    /// Whether the certifier passed the polished net (`kkt` at the polish
    /// tolerance); the report never counts an uncertified net as KKT.
    pub kkt_certified: bool,
    /// How the KKT net was reached: `near` (pulled toward the GD net) or
    /// `sparse` (no pull).
    pub kkt_mode: String,
    /// GD net: median critical radius along the universal direction.
    pub universal_median: Option<f64>,
    /// GD net: median exact flip distance.
    pub distance_median: Option<f64>,
    /// Polished net: median critical radius along the universal direction.
    pub kkt_universal_median: Option<f64>,
    /// Polished net: median exact flip distance.
    pub kkt_distance_median: Option<f64>,
    /// Robust net: median critical radius along the universal direction.
    pub robust_universal_median: Option<f64>,
    /// Robust net: median exact flip distance.
    pub robust_distance_median: Option<f64>,
    /// √(d/k), Theorem 4.2's scale.
    pub sqrt_d_over_k: f64,
    /// √d, Theorem 4.1's scale.
    pub sqrt_d: f64,
    /// Whether Assumption 2.2 holds for this fixture.
    pub assumption_holds: bool,
    /// Worst slack of Assumption 2.2(3) (ratio lhs/rhs).
    pub assumption_ratio: f64,
    /// The largest C_A for which Assumption 2.2(3) holds.
    #[serde(default)]
    pub max_c_a: f64,
    /// GD steps the GD net was trained for.
    #[serde(default)]
    pub gd_steps: usize,
    /// Its final mean training loss.
    #[serde(default)]
    pub gd_final_loss: f64,
    /// cos(θ_GD, θ_KKT) between the GD net and its polished KKT point.
    #[serde(default)]
    pub gd_kkt_cosine: Option<f64>,
    /// Robust over KKT exact distance on the same test points: median and
    /// 95% bootstrap interval (null: the KKT net is not certified, or no
    /// point has both distances exact).
    #[serde(default)]
    pub double_edge_ratio: Option<Interval>,
    /// Non-exact distances that entered a median (medians use exact
    /// distances of correctly classified points only, so 0).
    #[serde(default)]
    pub bounded_in_medians: usize,
    /// Whether P1–P6 hold (none when not audited).
    pub data_nice: Option<bool>,
    /// Whether the double edge is observed in this row, in words.
    pub edge: String,
    /// Wall time of the polish.
    pub polish_seconds: Option<f64>,
    /// Why the row failed, if it did.
    pub error: Option<String>,
    /// Per kind of net: flip curve, all distances, exact/bounded counts.
    pub kinds: Vec<(String, KindResult)>,
}

/// A fitted log–log slope and the cells it was fitted on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Slope {
    /// Which net: `GD`, `polished` or `robust`.
    pub kind: String,
    /// Slope and its standard error (null: fewer than 3 usable cells).
    pub fit: Option<(f64, f64)>,
    /// Cells in the fit; for `polished`, only cells whose KKT net is certified.
    pub cells: usize,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Which shard of which job this report is (absent for a whole run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// The base of `log` in the audit behind every row's regime.
    #[serde(default)]
    pub log_base: LogBase,
    /// The sweep's configuration.
    pub config: SweepConfig,
    /// One row per (cell, width, seed).
    pub rows: Vec<Row>,
    /// Fitted log–log slope of the median universal radius against √(d/k), per kind.
    pub slopes: Vec<Slope>,
    /// Wall time of the run.
    pub seconds: f64,
}

/// The audit of a fixture with the documented constants (its training set
/// for P1–P6).
pub(crate) fn audit_fixture(fx: &Fixture, log_base: LogBase) -> Result<Audit> {
    let opts = AuditOptions {
        log_base,
        ..AuditOptions::default()
    };
    audit(&fx.means, fx.spec.sigma, Some(&fx.train), &opts)
}

/// The fixture of one size of the sweep.
pub(crate) fn spec(size: Size, cfg: &SweepConfig, seed: u64) -> FixtureSpec {
    FixtureSpec {
        format: FIXTURE_FORMAT.into(),
        k: size.k,
        d: size.d,
        sigma: size.sigma,
        n: cfg.n_per_cluster * size.k,
        n_test: cfg.n_test,
        seed,
        means: cfg.means,
        labels: LabelRule::Balanced,
    }
}

/// Universal attack and exact distances on the test set for one network.
fn measure(kind: &str, net: &Network, fx: &Fixture, cfg: &SweepConfig) -> Result<KindResult> {
    let scale = ((fx.spec.d as f64) / fx.spec.k as f64).sqrt();
    let rep: AttackReport = attack(
        net,
        &fx.test,
        &fx.means,
        cfg.grid,
        Some(4.0 * scale.max((fx.spec.d as f64).sqrt() / 2.0)),
    )?;
    let flip_curve = rep
        .grid
        .iter()
        .zip(&rep.flip_rate)
        .map(|(r, f)| (r / scale, *f))
        .collect();
    let dir = crate::paper::attack::universal_direction(&fx.means)?;
    let solver = DistanceSolver::new(net)
        .with_references(&fx.train)
        .with_direction(dir);
    let opts = DistanceOptions {
        max_nodes: cfg.distance_max_nodes,
        time_limit: None,
        ..Default::default()
    };
    let idx: Vec<usize> = (0..fx.test.n().min(cfg.distance_points)).collect();
    let points: Vec<PointDistance> = idx
        .par_iter()
        .map(|&i| solver.distance(&fx.test.point(i), i, fx.test.y()[i], &opts))
        .collect::<Result<_>>()?;
    let records = points
        .iter()
        .map(|p| {
            let universal = rep.points.get(p.index).and_then(|a| a.critical_radius);
            check_point(kind, p, universal, p.label * p.output > 0.0)
        })
        .collect::<Result<Vec<_>>>()?;
    let distances: Vec<f64> = points.iter().filter_map(|p| p.upper).collect();
    Ok(KindResult {
        test_error: 1.0 - Evaluation::of(net, &fx.test)?.accuracy,
        universal_median: rep.median,
        flip_curve,
        distance_median: exact_median(&records),
        distance_excluded: records.iter().filter(|r| r.exact().is_none()).count(),
        points: records,
        distances,
        distance_exact: points.iter().filter(|p| p.status == Status::Exact).count(),
        distance_bounded: points
            .iter()
            .filter(|p| p.status == Status::Bounded)
            .count(),
    })
}

/// Where a cell sits relative to the theorem's hypotheses.
pub fn regime_of(assumption_holds: bool, a3_ratio: f64, data_nice: Option<bool>) -> &'static str {
    if assumption_holds && data_nice == Some(true) {
        "hypotheses"
    } else if (0.5..=2.0).contains(&a3_ratio) {
        "boundary"
    } else {
        "outside"
    }
}

/// The double edge a row shows, in words: the robust net's exact
/// distance over the KKT net's on the same points, against √k/2.
fn edge(row: &Row) -> String {
    match row.double_edge_ratio {
        Some(i) => format!(
            "robust/KKT distance {:.3} [{:.3}, {:.3}] (√k/2 = {:.3})",
            i.median,
            i.lo,
            i.hi,
            (row.k as f64).sqrt() / 2.0
        ),
        None if !row.kkt_certified => "no certified KKT net".into(),
        None => "no point with both distances exact".into(),
    }
}

/// One cell of the sweep.
fn cell(index: usize, fx: &Fixture, width: usize, cfg: &SweepConfig, aud: &Audit) -> Row {
    let (k, d, seed) = (fx.spec.k, fx.spec.d, fx.spec.seed);
    let mut row = Row {
        cell: index,
        k,
        d,
        sigma: fx.spec.sigma,
        n: fx.train.n(),
        regime: regime_of(aud.assumption_holds, aud.a3_ratio(), aud.data_nice).into(),
        width,
        seed,
        test_error: None,
        kkt_relative_upper: None,
        kkt_relative_complementarity: None,
        kkt_verdict: None,
        kkt_certified: false,
        kkt_mode: cfg.polish_mode.name().into(),
        universal_median: None,
        distance_median: None,
        kkt_universal_median: None,
        kkt_distance_median: None,
        robust_universal_median: None,
        robust_distance_median: None,
        sqrt_d_over_k: (d as f64 / k as f64).sqrt(),
        sqrt_d: (d as f64).sqrt(),
        assumption_holds: aud.assumption_holds,
        assumption_ratio: aud.a3_ratio(),
        max_c_a: aud.max_c_a(),
        gd_steps: 0,
        gd_final_loss: f64::NAN,
        gd_kkt_cosine: None,
        double_edge_ratio: None,
        bounded_in_medians: 0,
        data_nice: aud.data_nice,
        edge: String::new(),
        polish_seconds: None,
        error: None,
        kinds: Vec::new(),
    };
    if let Err(e) = fill(&mut row, fx, cfg) {
        row.error = Some(e.to_string());
    }
    row.edge = edge(&row);
    row
}

/// Measures the three kinds of net; a failure in one is recorded and the
/// others still run.
fn fill(row: &mut Row, fx: &Fixture, cfg: &SweepConfig) -> Result<()> {
    let mut errors = Vec::new();
    let tcfg = TrainConfig {
        width: row.width,
        seed: row.seed,
        steps: cfg.train_steps,
        init_scale: cfg.init_scale,
        ..Default::default()
    };
    let trained = train(&fx.train, &tcfg, |_, _, _| Ok(()))?;
    row.gd_steps = trained.steps;
    row.gd_final_loss = trained.log.last().map_or(f64::NAN, |l| l.loss);
    let gd = trained.net;
    let g = measure("GD", &gd, fx, cfg)?;
    row.test_error = Some(g.test_error);
    row.universal_median = g.universal_median;
    row.distance_median = g.distance_median;
    row.kinds.push(("GD".into(), g));
    let popts = PolishOptions {
        time_limit: None,
        iteration_budget: Some(cfg.polish_iteration_budget),
        mode: cfg.polish_mode,
        stop_when_certified: true,
        ..Default::default()
    };
    match polish(&gd, &fx.train, Some(&fx.test), &popts, |_| {}) {
        Ok((pol, rep)) => {
            row.kkt_relative_upper = Some(rep.certificate.relative_upper);
            row.kkt_relative_complementarity = Some(rep.certificate.relative_complementarity);
            row.kkt_verdict = Some(format!("{:?}", rep.certificate.verdict));
            row.kkt_certified = rep.certificate.verdict == Verdict::Kkt;
            row.polish_seconds = Some(rep.seconds);
            row.gd_kkt_cosine = Some(rep.movement.cosine);
            let p = measure("polished", &pol, fx, cfg)?;
            row.kkt_universal_median = p.universal_median;
            row.kkt_distance_median = p.distance_median;
            row.kinds.push(("polished".into(), p));
        }
        Err(e) => errors.push(format!("polish: {e}")),
    }
    let rob = robust_network(&fx.means, None)?;
    let r = measure("robust", &rob, fx, cfg)?;
    row.robust_universal_median = r.universal_median;
    row.robust_distance_median = r.distance_median;
    if row.kkt_certified {
        if let Some((_, p)) = row.kinds.iter().find(|(n, _)| n == "polished") {
            row.double_edge_ratio = double_edge(&p.points, &r.points);
        }
    }
    row.kinds.push(("robust".into(), r));
    if !errors.is_empty() {
        row.error = Some(errors.join("; "));
    }
    Ok(())
}

/// The number of cells of a sweep.
pub fn cell_count(cfg: &SweepConfig) -> usize {
    cfg.sizes.len() * cfg.seeds.len() * cfg.width_factors.len()
}

/// Runs the sweep (or, with `shard`, only the cells it owns); `on_cell` sees
/// each finished row.
pub fn run(
    cfg: &SweepConfig,
    shard: Option<Shard>,
    mut on_cell: impl FnMut(&Row),
) -> Result<Report> {
    let t0 = std::time::Instant::now();
    let owns = |c: usize| shard.is_none_or(|s| s.owns(c));
    let per_fixture = cfg.width_factors.len();
    let mut rows = Vec::new();
    let mut fixture_index = 0;
    for &size in &cfg.sizes {
        for &seed in &cfg.seeds {
            let first = fixture_index * per_fixture;
            fixture_index += 1;
            if !(first..first + per_fixture).any(owns) {
                continue;
            }
            let fx = Fixture::generate(spec(size, cfg, seed))?;
            let aud = audit_fixture(&fx, cfg.log_base)?;
            for (w, &f) in cfg.width_factors.iter().enumerate() {
                if !owns(first + w) {
                    continue;
                }
                let row = cell(first + w, &fx, f * size.k, cfg, &aud);
                on_cell(&row);
                rows.push(row);
            }
        }
    }
    Ok(assemble(cfg.clone(), rows, t0.elapsed().as_secs_f64()))
}

/// The report of `rows` (in cell order), with the fitted slopes.
fn assemble(config: SweepConfig, mut rows: Vec<Row>, seconds: f64) -> Report {
    rows.sort_by_key(|r| r.cell);
    let slopes = ["GD", "polished", "robust"]
        .iter()
        .map(|kind| fit_slope(&rows, kind))
        .collect();
    Report {
        shard: None,
        log_base: config.log_base,
        config,
        rows,
        slopes,
        seconds,
    }
}

/// Combines the reports of the shards of one sweep into the report of the
/// whole sweep (the caller checks the shard records); the run time is the
/// longest shard's, as for shards run side by side.
pub fn merge(parts: Vec<Report>) -> Result<Report> {
    let config = parts
        .first()
        .map(|p| p.config.clone())
        .ok_or_else(|| crate::error::Error::param("shards", "no reports to merge"))?;
    let seconds = parts.iter().map(|p| p.seconds).fold(0.0, f64::max);
    let rows = parts.into_iter().flat_map(|p| p.rows).collect();
    Ok(assemble(config, rows, seconds))
}

/// Least-squares slope of log(median universal radius) on log √(d/k), and
/// its standard error; the polished kind uses certified cells only.
fn fit_slope(rows: &[Row], kind: &str) -> Slope {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| kind != "polished" || r.kkt_certified)
        .filter_map(|r| {
            let m = r
                .kinds
                .iter()
                .find(|(n, _)| n == kind)?
                .1
                .universal_median?;
            Some((r.sqrt_d_over_k.ln(), m.ln()))
        })
        .collect();
    Slope {
        kind: kind.into(),
        fit: least_squares(&pts),
        cells: pts.len(),
    }
}

/// Slope of y on x and its standard error (None: fewer than 3 points or x constant).
fn least_squares(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = pts.len() as f64;
    if pts.len() < 3 {
        return None;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
    let resid: f64 = pts
        .iter()
        .map(|p| (p.1 - my - slope * (p.0 - mx)).powi(2))
        .sum();
    Some((slope, (resid / (n - 2.0) / sxx).sqrt()))
}

/// The double edge at one k of one regime.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EdgeAtK {
    /// Number of clusters.
    pub k: usize,
    /// Independent datasets (fixtures) with a measured ratio.
    pub datasets: usize,
    /// Robust over KKT exact distance: median over datasets (each the mean
    /// of its rows' medians, since the widths of one dataset are not
    /// independent) with a 95% bootstrap interval over datasets.
    pub ratio: Option<Interval>,
    /// What the constructions predict, √k/2: the robust net's exact
    /// distance is √d/2, a KKT net's ≈ √(d/k).
    pub predicted: f64,
}

/// The constants of one regime over its rows: C (certified KKT univ /
/// √(d/k), Theorem 4.2), c (robust exact distance / √d, Theorem 4.1), and
/// the double edge, robust over KKT exact distance on the same points.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegimeVerdict {
    /// The regime the verdict is about.
    pub regime: String,
    /// Rows in it.
    pub rows: usize,
    /// Rows whose KKT net is certified (the only ones in `big_c` and the ratios).
    pub certified: usize,
    /// (min, median, max) of KKT univ / √(d/k); the max is the smallest C
    /// with "every certified KKT net is flipped at ≤ C·√(d/k)".
    pub big_c: Option<(f64, f64, f64)>,
    /// (min, median, max) of the robust net's median exact distance / √d;
    /// the min is the largest c with "the robust net's distance is ≥ c·√d".
    pub small_c: Option<(f64, f64, f64)>,
    /// The double edge per k.
    pub edge: Vec<EdgeAtK>,
    /// The exponent a of ratio ∝ k^a (the constructions predict ½), fitted
    /// over datasets, with its 95% bootstrap interval.
    pub exponent: Option<Interval>,
}

fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| (v[0], median_sorted(&v), v[v.len() - 1]))
}

/// A dataset of the sweep: (k, d, σ's bits, seed).
type DatasetKey = (usize, usize, u64, u64);

/// One ratio per dataset (k, d, σ, seed): the mean of its rows' medians.
fn ratios_by_dataset(rows: &[&Row]) -> Vec<(usize, f64)> {
    let mut groups: Vec<(DatasetKey, Vec<f64>)> = Vec::new();
    for r in rows {
        let Some(i) = r.double_edge_ratio else {
            continue;
        };
        let key = (r.k, r.d, r.sigma.to_bits(), r.seed);
        match groups.iter_mut().find(|(g, _)| *g == key) {
            Some((_, v)) => v.push(i.median),
            None => groups.push((key, vec![i.median])),
        }
    }
    groups
        .into_iter()
        .map(|((k, ..), v)| (k, v.iter().sum::<f64>() / v.len() as f64))
        .collect()
}

fn edge_by_k(replicates: &[(usize, f64)]) -> Vec<EdgeAtK> {
    let mut ks: Vec<usize> = replicates.iter().map(|r| r.0).collect();
    ks.sort_unstable();
    ks.dedup();
    ks.into_iter()
        .map(|k| {
            let v: Vec<f64> = replicates
                .iter()
                .filter(|r| r.0 == k)
                .map(|r| r.1)
                .collect();
            EdgeAtK {
                k,
                datasets: v.len(),
                ratio: bootstrap_median(&v),
                predicted: (k as f64).sqrt() / 2.0,
            }
        })
        .collect()
}

/// The verdict per regime, in the order hypotheses, boundary, outside.
pub fn verdicts(rep: &Report) -> Vec<RegimeVerdict> {
    ["hypotheses", "boundary", "outside"]
        .iter()
        .filter_map(|&regime| {
            let rows: Vec<&Row> = rep.rows.iter().filter(|r| r.regime == regime).collect();
            if rows.is_empty() {
                return None;
            }
            let certified: Vec<&Row> = rows.iter().copied().filter(|r| r.kkt_certified).collect();
            let replicates = ratios_by_dataset(&certified);
            Some(RegimeVerdict {
                regime: regime.into(),
                rows: rows.len(),
                certified: certified.len(),
                big_c: spread(
                    certified
                        .iter()
                        .filter_map(|r| Some(r.kkt_universal_median? / r.sqrt_d_over_k))
                        .collect(),
                ),
                small_c: spread(
                    rows.iter()
                        .filter_map(|r| Some(r.robust_distance_median? / r.sqrt_d))
                        .collect(),
                ),
                edge: edge_by_k(&replicates),
                exponent: exponent_in_k(&replicates),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regimes_follow_the_audit() {
        assert_eq!(regime_of(true, 0.8, Some(true)), "hypotheses");
        // A3 holds but P1–P6 fail: not inside the hypotheses.
        assert_eq!(regime_of(true, 0.8, Some(false)), "boundary");
        assert_eq!(regime_of(false, 1.9, Some(true)), "boundary");
        assert_eq!(regime_of(false, 2.1, Some(true)), "outside");
        assert_eq!(regime_of(true, 0.3, Some(false)), "outside");
    }

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread(vec![f64::NAN]), None);
    }
}
