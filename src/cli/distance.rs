//! `kktcert distance`: certified exact minimal ℓ2 flip distances, over
//! threads and (with `--shard`) over machines.

use super::{fmt_opt, progress, NetFormat};
use kktcert::distance::deep::{
    DeepDistanceOptions, DeepDistanceSolver, DeepPointDistance, InputBox, Side,
};
use kktcert::distance::{DistanceOptions, DistanceSolver, DistanceSummary, PointDistance};
use kktcert::io::checkpoint::load_deep;
use kktcert::io::fixture::load_points;
use kktcert::io::tensors::write_json;
use kktcert::jobs::output::{DeepDistanceOutput, DistanceOutput};
use kktcert::jobs::par_map;
use kktcert::jobs::shard::{Shard, ShardInfo, ShardKind};
use kktcert::model::data::{Dataset, Fixture};
use kktcert::model::deep::DeepNet;
use kktcert::paper::attack::universal_direction;
use kktcert::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    net: PathBuf,
    #[command(flatten)]
    format: NetFormat,
    /// Points to certify (safetensors with X, y).
    #[arg(long)]
    data: PathBuf,
    /// Index range START:END (default: all points).
    #[arg(long, value_name = "START:END")]
    indices: Option<IndexRange>,
    /// Most branch-and-bound nodes per point.
    #[arg(long, default_value_t = DistanceOptions::default().max_nodes)]
    max_regions: usize,
    /// Seconds per point before reporting a bounded result.
    #[arg(long, default_value_t = 60.0)]
    time_limit: f64,
    /// Dual-cut rounds per node and radius (0 turns the cuts off).
    #[arg(long, default_value_t = DistanceOptions::default().cut_rounds)]
    cut_rounds: usize,
    /// L-BFGS iterations of the quadratic (S-lemma) bound per open node (0 turns it off)
    #[arg(long, default_value_t = DistanceOptions::default().quadratic_iterations)]
    quadratic_iterations: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Fixture whose universal direction seeds the incumbent.
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Certify only shard i of N of the points (0-based; see `merge`).
    #[arg(long, value_name = "i/N")]
    shard: Option<Shard>,
    /// Inputs allowed, the interval LO:HI on every coordinate (e.g. 0:1
    /// for pixels); runs the deep search, on a two-layer net too.
    #[arg(long = "box", value_name = "LO:HI", allow_hyphen_values = true)]
    input_box: Option<Interval>,
    /// Only flips to this class (C-class nets).
    #[arg(long)]
    target: Option<usize>,
    /// Leave each point's label in --data, not the class predicted there
    /// (deep search).
    #[arg(long)]
    from_labels: bool,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--box LO:HI`.
#[derive(Clone, Copy, Debug)]
struct Interval {
    lo: f64,
    hi: f64,
}

impl std::str::FromStr for Interval {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`, expected LO:HI with finite LO ≤ HI");
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let (lo, hi) = (
            a.parse::<f64>().map_err(|_| bad())?,
            b.parse::<f64>().map_err(|_| bad())?,
        );
        (lo.is_finite() && hi.is_finite() && lo <= hi)
            .then_some(Self { lo, hi })
            .ok_or_else(bad)
    }
}

/// `--indices START:END`: a range of points, either end may be empty.
#[derive(Clone, Copy, Debug)]
struct IndexRange {
    start: Option<usize>,
    end: Option<usize>,
}

impl std::str::FromStr for IndexRange {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`, expected START:END (either may be empty)");
        let (a, b) = s.split_once(':').ok_or_else(bad)?;
        let end = |t: &str| {
            (!t.is_empty())
                .then(|| t.parse())
                .transpose()
                .map_err(|_| bad())
        };
        Ok(Self {
            start: end(a)?,
            end: end(b)?,
        })
    }
}

impl IndexRange {
    /// The indices of this range among `n` points.
    fn resolve(self, n: usize) -> Result<Vec<usize>> {
        let (start, end) = (self.start.unwrap_or(0), self.end.unwrap_or(n));
        if start >= end || end > n {
            return Err(Error::param(
                "indices",
                format!("{start}:{end}, expected 0 ≤ START < END ≤ {n}"),
            ));
        }
        Ok((start..end).collect())
    }
}

/// Prints the per-point table and the summary line.
pub fn print_points(points: &[PointDistance]) {
    say!("index label   lower        upper        status     nodes  unstable  seconds");
    for p in points {
        say!(
            "{:>5} {:>5} {:>12} {:>12} {:<10} {:>6} {:>8} {:>8.3}",
            p.index,
            p.label,
            fmt_opt(p.lower),
            fmt_opt(p.upper),
            format!("{:?}", p.status),
            p.nodes,
            p.unstable_hurting,
            p.seconds
        );
    }
    print_summary(&DistanceSummary::of(points));
}

/// The summary line under a table of distances.
fn print_summary(summary: &DistanceSummary) {
    say!(
        "{} points: {} exact, {} bounded, {} no flip; distance median {} min {} max {}",
        summary.count,
        summary.exact,
        summary.bounded,
        summary.no_flip,
        fmt_opt(summary.median),
        fmt_opt(summary.min),
        fmt_opt(summary.max)
    );
}

/// The deep net `distance` runs on: a deep or multi-class file, or any
/// net when the deep search's options (`--box`, `--target`,
/// `--from-labels`) are asked for.
fn deep_net(a: &Args) -> Result<Option<DeepNet>> {
    if let Some(net) = a.format.deep(&a.net)? {
        return Ok(Some(net));
    }
    let wants_deep = a.input_box.is_some() || a.target.is_some() || a.from_labels;
    if wants_deep && a.format.is_explicit() {
        return Err(Error::param(
            "tensors",
            "--box, --target and --from-labels need a net kktcert recognises without --tensors",
        ));
    }
    wants_deep.then(|| load_deep(&a.net)).transpose()
}

/// Prints the deep search's per-point table and the summary line.
fn print_deep_points(points: &[DeepPointDistance]) {
    say!("index leaves   lower        upper        status     to     nodes  unstable  seconds");
    for p in points {
        say!(
            "{:>5} {:>6} {:>12} {:>12} {:<10} {:>5} {:>6} {:>8} {:>8.3}",
            p.index,
            p.leaves,
            fmt_opt(p.lower),
            fmt_opt(p.upper),
            format!("{:?}", p.status),
            p.witness_class.map_or("-".into(), |c| c.to_string()),
            p.nodes,
            p.unstable,
            p.seconds
        );
    }
    print_summary(&DistanceSummary::of_deep(points));
}

/// The deep search over the selected points.
fn run_deep(net: &DeepNet, a: &Args, quiet: bool) -> Result<()> {
    if a.fixture.is_some() || a.shard.is_some() {
        return Err(Error::param(
            "fixture",
            "--fixture and --shard apply to two-layer nets without --box, --target or --from-labels",
        ));
    }
    let (x, labels) = load_points(&a.data, net.output())?;
    net.check_dim(&x)?;
    let idx = a
        .indices
        .map_or(Ok((0..x.nrows()).collect()), |r| r.resolve(x.nrows()))?;
    let opts = DeepDistanceOptions {
        max_nodes: a.max_regions,
        time_limit: Some(a.time_limit),
        input_box: a
            .input_box
            .map(|b| InputBox::uniform(x.ncols(), b.lo, b.hi))
            .transpose()?,
        target: a.target,
        ..Default::default()
    };
    let side = |i: usize| a.from_labels.then(|| Side::of_label(&labels, i));
    let solver = DeepDistanceSolver::new(net).with_references(&x);
    let bar = progress(idx.len() as u64, quiet, "distance");
    let points = par_map(a.threads, &idx, |i| {
        let r = solver.distance(&x.row(i).transpose(), i, side(i), &opts);
        bar.inc(1);
        r
    })?;
    bar.finish_and_clear();
    print_deep_points(&points);
    if let Some(path) = &a.json {
        write_json(path, &DeepDistanceOutput::new(points))?;
    }
    Ok(())
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    if let Some(net) = deep_net(&a)? {
        return run_deep(&net, &a, quiet);
    }
    let net = a.format.load(&a.net)?.function();
    let data = Dataset::load(&a.data)?;
    net.check_dim(&data)?;
    let range = a
        .indices
        .map_or(Ok((0..data.n()).collect()), |r| r.resolve(data.n()))?;
    let shard = match a.shard {
        Some(s) => {
            let mut inputs: Vec<&Path> = vec![&a.net, &a.data];
            inputs.extend(a.fixture.as_deref());
            Some((
                s,
                ShardInfo::new(ShardKind::Distance, s, range.len(), &inputs)?,
            ))
        }
        None => None,
    };
    let idx = shard
        .as_ref()
        .map_or(range.clone(), |(s, _)| s.select(&range));
    let mut solver = DistanceSolver::new(&net).with_references(&data);
    if let Some(fx) = &a.fixture {
        let fx = Fixture::load(fx)?;
        solver = solver.with_direction(universal_direction(&fx.means)?);
    }
    let opts = DistanceOptions {
        max_nodes: a.max_regions,
        time_limit: Some(a.time_limit),
        cut_rounds: a.cut_rounds,
        quadratic_iterations: a.quadratic_iterations,
        ..Default::default()
    };
    let bar = progress(idx.len() as u64, quiet, "distance");
    let points = par_map(a.threads, &idx, |i| {
        let r = solver.distance(&data.point(i), i, data.y()[i], &opts);
        bar.inc(1);
        r
    })?;
    bar.finish_and_clear();
    print_points(&points);
    if let Some(path) = &a.json {
        write_json(path, &DistanceOutput::new(points, shard.map(|s| s.1)))?;
    }
    Ok(())
}
