//! The `kktcert` command line: argument parsing, progress bars and exit
//! codes. All numerics live in the library; this file only wires them up.

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kktcert::attack::attack;
use kktcert::audit::{audit, AuditOptions};
use kktcert::checkpoint::{load_net, Checkpoint};
use kktcert::data::{Dataset, Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
use kktcert::distance::{DistanceOptions, DistanceSolver, DistanceSummary};
use kktcert::kkt::{certify, Certificate, CertifyOptions, Norm};
use kktcert::net::Evaluation;
use kktcert::polish::{polish, PolishOptions};
use kktcert::robust::robust_network;
use kktcert::tensors::{write_atomic, write_json};
use kktcert::train::{log_csv, train, Loss, TrainConfig};
use kktcert::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kktcert",
    version,
    about = "Certificates for 'The Double-Edged Sword of Implicit Bias': KKT brackets, exact ReLU flip distances, universal attacks",
    long_about = "kktcert checks the claims of Frei, Vardi, Bartlett & Srebro (NeurIPS 2023) on real two-layer ReLU networks.\n\nTypical flow:\n  kktcert gen --k 10 --d 400 --out fx        # clustered data\n  kktcert train --data fx/train.safetensors --width 100 --out net.safetensors\n  kktcert eval --net net.safetensors --data fx/test.safetensors\n\nEvery subcommand has --help. Errors are one line on stderr with exit status 2."
)]
struct Cli {
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a clustered fixture (SPEC §1) into a directory.
    Gen(GenArgs),
    /// Train a two-layer ReLU net by full-batch gradient descent.
    Train(TrainArgs),
    /// Accuracy, margins and normalised margin of a net on a dataset.
    Eval(EvalArgs),
    /// Certify KKT-ness for Problem (2): a proven [lower, upper] residual bracket.
    Certify(CertifyArgs),
    /// Polish a trained net into a certified KKT point of Problem (2).
    Polish(PolishArgs),
    /// Build the robust width-k network of Theorem 4.1 from a fixture's means.
    Robust(RobustArgs),
    /// The universal attack along Σ y_q μ_q: exact critical radii and flip rates.
    Attack(AttackArgs),
    /// Certified exact minimal ℓ2 sign-flipping distance of data points.
    Distance(DistanceArgs),
    /// The end-to-end experiment: sweep (k, d), train, polish, attack, certify; write tables and figures.
    Reproduce(ReproduceArgs),
    /// Audit Assumption 2.2 and properties P1–P6 on a fixture (exit 0 whatever the verdict).
    Audit(AuditArgs),
}

#[derive(clap::Args)]
struct PolishArgs {
    #[arg(long)]
    net: PathBuf,
    /// Training set of Problem (2).
    #[arg(long)]
    data: PathBuf,
    /// Test set, to report prediction agreement before/after.
    #[arg(long)]
    test: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Tolerance on ε_rel and δ_rel for the verdict.
    #[arg(long, default_value_t = PolishOptions::default().tol)]
    tol: f64,
    /// τ_act of the certificate (Clarke ambiguity for pairs on a kink).
    #[arg(long, default_value_t = PolishOptions::default().act_tol)]
    act_tol: f64,
    /// κ₀ of the proximal term that keeps the polish near the start (0: off).
    #[arg(long, default_value_t = 0.0)]
    proximal: f64,
    /// Comma-separated β factors (β = factor / median|u_ij|).
    #[arg(long)]
    betas: Option<String>,
    /// Stop at the first stage certified KKT.
    #[arg(long)]
    stop_when_certified: bool,
    /// Seconds before the polish stops with the best stage so far.
    #[arg(long, default_value_t = 120.0)]
    time_limit: f64,
    /// Write the polish report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RobustArgs {
    /// Fixture directory (uses means.safetensors).
    #[arg(long)]
    fixture: PathBuf,
    /// Width m ≥ k (extra neurons are zero).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct AttackArgs {
    /// One or more checkpoints (several give the transfer table).
    #[arg(long, required = true, num_args = 1..)]
    net: Vec<PathBuf>,
    /// Fixture directory whose means define the universal direction.
    #[arg(long)]
    fixture: PathBuf,
    /// Test set (default: the fixture's test set).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Number of radii on the flip-rate curve.
    #[arg(long, default_value_t = 41)]
    grid: usize,
    /// Largest radius of the curve (default 2√d).
    #[arg(long)]
    max_radius: Option<f64>,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DistanceArgs {
    #[arg(long)]
    net: PathBuf,
    /// Points to certify (safetensors with X, y).
    #[arg(long)]
    data: PathBuf,
    /// Index range START:END (default: all points).
    #[arg(long)]
    indices: Option<String>,
    /// Most branch-and-bound nodes per point.
    #[arg(long, default_value_t = DistanceOptions::default().max_nodes)]
    max_regions: usize,
    /// Seconds per point before reporting a bounded result.
    #[arg(long, default_value_t = 60.0)]
    time_limit: f64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Fixture whose universal direction seeds the incumbent.
    #[arg(long)]
    fixture: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReproduceArgs {
    /// A few small sizes (about a minute) instead of the full sweep.
    #[arg(long)]
    quick: bool,
    /// Output directory (default: out/quick or out/full).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct AuditArgs {
    #[arg(long)]
    fixture: PathBuf,
    /// Training set to audit for P1–P6 (default: the fixture's).
    #[arg(long)]
    data: Option<PathBuf>,
    /// C_A of Assumption 2.2(3).
    #[arg(long, default_value_t = AuditOptions::default().c_a)]
    c_a: f64,
    /// C_P, the polylog multiplier in P1–P5.
    #[arg(long, default_value_t = AuditOptions::default().c_p)]
    c_p: f64,
    /// σ_max of Assumption 2.2(2).
    #[arg(long, default_value_t = AuditOptions::default().sigma_max)]
    sigma_max: f64,
    /// c_bal of the label balance.
    #[arg(long, default_value_t = AuditOptions::default().c_bal)]
    c_bal: f64,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GenArgs {
    /// Number of clusters (≥ 2).
    #[arg(long)]
    k: usize,
    /// Input dimension.
    #[arg(long)]
    d: usize,
    /// Noise standard deviation σ.
    #[arg(long, default_value_t = 1.0)]
    sigma: f64,
    /// Training-set size.
    #[arg(long)]
    n: usize,
    /// Test-set size.
    #[arg(long, default_value_t = 1000)]
    n_test: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Mean generator: sphere | orthogonal.
    #[arg(long, default_value = "sphere")]
    means: String,
    /// Label rule: balanced | fraction:P.
    #[arg(long, default_value = "balanced")]
    labels: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Training set (safetensors with X, y).
    #[arg(long)]
    data: PathBuf,
    /// Width m.
    #[arg(long)]
    width: usize,
    /// logistic | exp.
    #[arg(long, default_value = "logistic")]
    loss: String,
    /// Maximum number of GD steps.
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    steps: usize,
    /// Step size η.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Use the loss-normalised step η/L (capped by --lr-cap).
    #[arg(long)]
    normalized_lr: bool,
    #[arg(long, default_value_t = TrainConfig::default().lr_cap)]
    lr_cap: f64,
    /// Initialisation scale s.
    #[arg(long, default_value_t = TrainConfig::default().init_scale)]
    init_scale: f64,
    /// Stop when the mean loss falls below this.
    #[arg(long, default_value_t = TrainConfig::default().target_loss)]
    target_loss: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Write the training log (CSV) here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Log every this many steps.
    #[arg(long, default_value_t = TrainConfig::default().log_every)]
    log_every: usize,
    /// Then polish the trained net into a certified KKT point (default
    /// options, stopping at the first certified stage) and save that instead.
    #[arg(long)]
    polish: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    #[arg(long)]
    net: PathBuf,
    #[arg(long)]
    data: PathBuf,
    /// Also write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CertifyArgs {
    #[arg(long)]
    net: PathBuf,
    /// The training set the net should be a KKT point for.
    #[arg(long)]
    data: PathBuf,
    /// l2 | linf | both.
    #[arg(long, default_value = "l2")]
    norm: String,
    /// Tolerance on ε_rel and δ_rel for the verdict.
    #[arg(long, default_value_t = 1e-4)]
    tol: f64,
    /// δ_rel of the complementarity row (default: --tol; `inf` drops the row).
    #[arg(long)]
    delta: Option<String>,
    /// τ_act: relative threshold for Clarke-ambiguous (point, neuron) pairs.
    #[arg(long, default_value_t = 1e-6)]
    act_tol: f64,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Gen(a) => gen(a),
        Command::Train(a) => train_cmd(a, quiet),
        Command::Eval(a) => eval(a),
        Command::Certify(a) => certify_cmd(a),
        Command::Robust(a) => robust_cmd(a),
        Command::Polish(a) => polish_cmd(a),
        Command::Attack(a) => attack_cmd(a),
        Command::Audit(a) => audit_cmd(a),
        Command::Reproduce(a) => reproduce_cmd(a, quiet),
        Command::Distance(a) => distance_cmd(a, quiet),
    }
}

/// A progress bar that draws only on a terminal and never with `--quiet`.
fn progress(len: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}<{eta} {prefix}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn parse_means(s: &str) -> Result<MeansKind> {
    match s {
        "sphere" => Ok(MeansKind::Sphere),
        "orthogonal" => Ok(MeansKind::Orthogonal),
        _ => Err(Error::Param {
            name: "means".into(),
            msg: format!("`{s}`, expected sphere or orthogonal"),
        }),
    }
}

fn parse_labels(s: &str) -> Result<LabelRule> {
    if s == "balanced" {
        return Ok(LabelRule::Balanced);
    }
    s.strip_prefix("fraction:")
        .and_then(|p| p.parse().ok())
        .map(LabelRule::Fraction)
        .ok_or_else(|| Error::Param {
            name: "labels".into(),
            msg: format!("`{s}`, expected balanced or fraction:P"),
        })
}

fn gen(a: GenArgs) -> Result<()> {
    let spec = FixtureSpec {
        format: FIXTURE_FORMAT.into(),
        k: a.k,
        d: a.d,
        sigma: a.sigma,
        n: a.n,
        n_test: a.n_test,
        seed: a.seed,
        means: parse_means(&a.means)?,
        labels: parse_labels(&a.labels)?,
    };
    let fx = Fixture::generate(spec)?;
    fx.save(&a.out)?;
    println!(
        "wrote {} (k={}, d={}, n={}, n_test={})",
        a.out.display(),
        fx.spec.k,
        fx.spec.d,
        fx.train.n(),
        fx.test.n()
    );
    Ok(())
}

fn parse_loss(s: &str) -> Result<Loss> {
    match s {
        "logistic" => Ok(Loss::Logistic),
        "exp" => Ok(Loss::Exp),
        _ => Err(Error::Param {
            name: "loss".into(),
            msg: format!("`{s}`, expected logistic or exp"),
        }),
    }
}

fn train_cmd(a: TrainArgs, quiet: bool) -> Result<()> {
    let data = Dataset::load(&a.data)?;
    let cfg = TrainConfig {
        width: a.width,
        loss: parse_loss(&a.loss)?,
        steps: a.steps,
        lr: a.lr,
        normalized_lr: a.normalized_lr,
        lr_cap: a.lr_cap,
        init_scale: a.init_scale,
        seed: a.seed,
        target_loss: a.target_loss,
        log_every: a.log_every,
    };
    let bar = progress(cfg.steps as u64, quiet, "train");
    let trained = train(&data, &cfg, |t, row| {
        if t % 50 == 0 {
            bar.set_position(t as u64);
            bar.set_prefix(format!(
                "loss {:.3e} acc {:.3}",
                row.loss, row.train_accuracy
            ));
        }
    })?;
    bar.finish_and_clear();
    let last = trained.log.last().expect("log has the final row");
    let mut meta = BTreeMap::new();
    meta.insert("producer".into(), "kktcert train".into());
    meta.insert("train_data".into(), a.data.display().to_string());
    meta.insert(
        "train_config".into(),
        serde_json::to_string(&cfg).expect("config serialises"),
    );
    meta.insert("steps".into(), trained.steps.to_string());
    meta.insert("final_loss".into(), format!("{:e}", last.loss));
    let net = if a.polish {
        let opts = PolishOptions {
            stop_when_certified: true,
            ..Default::default()
        };
        let (net, rep) = polish(&trained.net, &data, None, &opts, |st| {
            eprintln!(
                "polish β={:.3e}: ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?}",
                st.beta,
                st.relative_lower,
                st.relative_upper,
                st.relative_complementarity,
                st.verdict
            )
        })?;
        let c = &rep.certificate;
        record_certificate(&mut meta, c);
        println!(
            "polished: ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?}",
            c.relative_lower, c.relative_upper, c.relative_complementarity, c.verdict
        );
        net
    } else {
        trained.net
    };
    Checkpoint::new(net, meta).save(&a.out)?;
    if let Some(path) = &a.log {
        write_atomic(path, log_csv(&trained.log).as_bytes())?;
    }
    println!(
        "trained {} steps: loss {:.3e}, train accuracy {:.4}, min margin {:.4e}, normalised margin {:.4e} → {}",
        trained.steps,
        last.loss,
        last.train_accuracy,
        last.min_margin,
        last.normalized_margin,
        a.out.display()
    );
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let net = load_net(&a.net)?;
    let data = Dataset::load(&a.data)?;
    let e = Evaluation::of(&net, &data)?;
    println!(
        "n={} accuracy={:.4} errors={} margin min/median/max={:.4e}/{:.4e}/{:.4e} ‖θ‖²={:.4e} normalised margin={:.4e}",
        e.n, e.accuracy, e.errors, e.min_margin, e.median_margin, e.max_margin, e.norm_sq, e.normalized_margin
    );
    if let Some(path) = &a.json {
        write_json(path, &e)?;
    }
    Ok(())
}

fn parse_norms(s: &str) -> Result<Vec<Norm>> {
    match s {
        "l2" => Ok(vec![Norm::L2]),
        "linf" => Ok(vec![Norm::Linf]),
        "both" => Ok(vec![Norm::L2, Norm::Linf]),
        _ => Err(Error::Param {
            name: "norm".into(),
            msg: format!("`{s}`, expected l2, linf or both"),
        }),
    }
}

fn parse_delta(s: Option<&str>, tol: f64) -> Result<Option<f64>> {
    match s {
        None => Ok(Some(tol)),
        Some("inf") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| Error::Param {
            name: "delta".into(),
            msg: format!("`{v}`, expected a number or inf"),
        }),
    }
}

fn certify_cmd(a: CertifyArgs) -> Result<()> {
    let net = load_net(&a.net)?;
    let data = Dataset::load(&a.data)?;
    let opts = CertifyOptions {
        tol: a.tol,
        delta_rel: parse_delta(a.delta.as_deref(), a.tol)?,
        act_tol: a.act_tol,
    };
    let mut out = serde_json::Map::new();
    let norms = parse_norms(&a.norm)?;
    for &norm in &norms {
        let c = certify(&net, &data, norm, &opts)?;
        print_certificate(&c);
        let value = serde_json::to_value(&c).expect("certificate serialises");
        if norms.len() == 1 {
            if let Some(path) = &a.json {
                write_json(path, &value)?;
            }
            return Ok(());
        }
        out.insert(if norm == Norm::L2 { "l2" } else { "linf" }.into(), value);
    }
    if let Some(path) = &a.json {
        write_json(path, &out)?;
    }
    Ok(())
}

fn print_certificate(c: &Certificate) {
    println!(
        "{:?}: scale {:.6e}, residual ∈ [{:.6e}, {:.6e}] (relative [{:.3e}, {:.3e}]), δ_rel {:.3e}, support {} points, {} ambiguous pairs, {:.3}s → {:?}",
        c.norm,
        c.scale,
        c.lower,
        c.upper,
        c.relative_lower,
        c.relative_upper,
        c.relative_complementarity,
        c.support.len(),
        c.ambiguous_pairs.len(),
        c.seconds,
        c.verdict
    );
}

fn robust_cmd(a: RobustArgs) -> Result<()> {
    let fx = Fixture::load(&a.fixture)?;
    let net = robust_network(&fx.means, a.width)?;
    let mut meta = BTreeMap::new();
    meta.insert("producer".into(), "kktcert robust (Theorem 4.1)".into());
    meta.insert("fixture".into(), a.fixture.display().to_string());
    meta.insert(
        "construction".into(),
        "w_j = mu_j/sqrt(d), b_j = -sqrt(d)/2, v_j = y_j".into(),
    );
    let width = net.width();
    Checkpoint::new(net, meta).save(&a.out)?;
    println!("robust network of width {width} → {}", a.out.display());
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("never".into(), |x| format!("{x:.4}"))
}

fn attack_cmd(a: AttackArgs) -> Result<()> {
    let fx = Fixture::load(&a.fixture)?;
    let data = match &a.data {
        Some(p) => Dataset::load(p)?,
        None => fx.test.clone(),
    };
    let mut reports = Vec::new();
    println!("net | median r* | r*/√(d/k) | r*/√d | never flipped | flip rate at √(d/k)");
    for path in &a.net {
        let net = load_net(path)?;
        let rep = attack(&net, &data, &fx.means, a.grid, a.max_radius)?;
        let at = rep.scale_sqrt_d_over_k;
        let rate = rep
            .points
            .iter()
            .filter(|p| p.critical_radius.is_some_and(|r| r <= at))
            .count() as f64
            / data.n() as f64;
        println!(
            "{} | {} | {} | {} | {} | {:.3}",
            path.display(),
            fmt_opt(rep.median),
            fmt_opt(rep.median_over_sqrt_d_over_k),
            fmt_opt(rep.median_over_sqrt_d),
            rep.never_flipped,
            rate
        );
        reports.push(serde_json::json!({ "net": path.display().to_string(), "report": rep }));
    }
    if let Some(path) = &a.json {
        if reports.len() == 1 {
            write_json(path, &reports[0]["report"])?;
        } else {
            write_json(path, &reports)?;
        }
    }
    Ok(())
}

fn audit_cmd(a: AuditArgs) -> Result<()> {
    let fx = Fixture::load(&a.fixture)?;
    let train = match &a.data {
        Some(p) => Dataset::load(p)?,
        None => fx.train.clone(),
    };
    let opts = AuditOptions {
        c_a: a.c_a,
        c_p: a.c_p,
        sigma_max: a.sigma_max,
        c_bal: a.c_bal,
        ..Default::default()
    };
    let rep = audit(&fx.means, fx.spec.sigma, Some(&train), &opts)?;
    println!(
        "{:<8} {:>14} {:>14} {:>14}  pass  witness",
        "check", "value", "threshold", "slack"
    );
    for c in &rep.checks {
        println!(
            "{:<8} {:>14.6e} {:>14.6e} {:>14.6e}  {:<5} {}",
            c.name,
            c.value,
            c.threshold,
            c.slack,
            if c.pass { "yes" } else { "NO" },
            c.witness
        );
    }
    println!(
        "Assumption 2.2: {}; dataset properties P1–P6: {}",
        if rep.assumption_holds {
            "holds"
        } else {
            "fails"
        },
        if rep.data_nice == Some(true) {
            "hold"
        } else {
            "fail"
        }
    );
    if let Some(path) = &a.json {
        write_json(path, &rep)?;
    }
    Ok(())
}

fn parse_range(s: Option<&str>, n: usize) -> Result<Vec<usize>> {
    let Some(s) = s else {
        return Ok((0..n).collect());
    };
    let bad = || Error::Param {
        name: "indices".into(),
        msg: format!("`{s}`, expected START:END with 0 ≤ START < END ≤ {n}"),
    };
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let start: usize = if a.is_empty() {
        0
    } else {
        a.parse().map_err(|_| bad())?
    };
    let end: usize = if b.is_empty() {
        n
    } else {
        b.parse().map_err(|_| bad())?
    };
    if start >= end || end > n {
        return Err(bad());
    }
    Ok((start..end).collect())
}

fn distance_cmd(a: DistanceArgs, quiet: bool) -> Result<()> {
    use rayon::prelude::*;
    let net = load_net(&a.net)?;
    let data = Dataset::load(&a.data)?;
    net.check_dim(&data)?;
    let idx = parse_range(a.indices.as_deref(), data.n())?;
    let mut solver = DistanceSolver::new(&net).with_references(&data);
    if let Some(fx) = &a.fixture {
        let fx = Fixture::load(fx)?;
        solver = solver.with_direction(kktcert::attack::universal_direction(&fx.means)?);
    }
    let opts = DistanceOptions {
        max_nodes: a.max_regions,
        time_limit: Some(a.time_limit),
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Param {
            name: "threads".into(),
            msg: e.to_string(),
        })?;
    let bar = progress(idx.len() as u64, quiet, "distance");
    let points: Vec<_> = pool.install(|| {
        idx.par_iter()
            .map(|&i| {
                let r = solver.distance(&data.point(i), i, data.y()[i], &opts);
                bar.inc(1);
                r
            })
            .collect::<Result<Vec<_>>>()
    })?;
    bar.finish_and_clear();
    println!("index label   lower        upper        status     nodes  unstable  seconds");
    for p in &points {
        println!(
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
    let summary = DistanceSummary::of(&points);
    println!(
        "{} points: {} exact, {} bounded, {} no flip; distance median {} min {} max {}",
        summary.count,
        summary.exact,
        summary.bounded,
        summary.no_flip,
        fmt_opt(summary.median),
        fmt_opt(summary.min),
        fmt_opt(summary.max)
    );
    if let Some(path) = &a.json {
        write_json(
            path,
            &serde_json::json!({ "summary": summary, "points": points }),
        )?;
    }
    Ok(())
}

fn polish_cmd(a: PolishArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.net)?;
    let train = Dataset::load(&a.data)?;
    ck.net.check_dim(&train)?;
    let test = a.test.as_deref().map(Dataset::load).transpose()?;
    let mut opts = PolishOptions {
        tol: a.tol,
        act_tol: a.act_tol,
        proximal: a.proximal,
        stop_when_certified: a.stop_when_certified,
        time_limit: Some(a.time_limit),
        ..Default::default()
    };
    if let Some(b) = &a.betas {
        opts.beta_factors = b
            .split(',')
            .map(|t| t.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::Param {
                name: "betas".into(),
                msg: format!("`{b}`, expected comma-separated numbers"),
            })?;
    }
    println!("stage  beta          ε_rel ∈ [lower, upper]        δ_rel      violation  verdict     seconds");
    let (net, rep) = polish(&ck.net, &train, test.as_ref(), &opts, |st| {
        println!(
            "       {:<12.4e}  [{:.3e}, {:.3e}]  {:.3e}  {:.2e}  {:<10} {:.2}",
            st.beta,
            st.relative_lower,
            st.relative_upper,
            st.relative_complementarity,
            st.max_violation,
            format!("{:?}", st.verdict),
            st.seconds
        );
    })?;
    let c = &rep.certificate;
    let mv = &rep.movement;
    println!(
        "start: ε_rel ∈ [{:.3e}, {:.3e}]; polished: ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?} ({:.1}s)",
        rep.start.relative_lower, rep.start.relative_upper, c.relative_lower, c.relative_upper, c.relative_complementarity, c.verdict, rep.seconds
    );
    println!(
        "moved: cos(θ0, θ) = {:.4}, train agreement {:.4}, test agreement {}, live neurons {} → {}",
        mv.cosine,
        mv.train_agreement,
        mv.test_agreement.map_or("-".into(), |t| format!("{t:.4}")),
        mv.live_neurons_before,
        mv.live_neurons_after
    );
    let mut meta = ck.metadata.clone();
    meta.insert("producer".into(), "kktcert polish".into());
    meta.insert("polished_from".into(), a.net.display().to_string());
    record_certificate(&mut meta, c);
    Checkpoint::new(net, meta).save(&a.out)?;
    if let Some(path) = &a.json {
        write_json(path, &rep)?;
    }
    Ok(())
}

fn reproduce_cmd(a: ReproduceArgs, quiet: bool) -> Result<()> {
    use kktcert::report::{run, write, SweepConfig};
    let cfg = if a.quick {
        SweepConfig::quick(a.seed)
    } else {
        SweepConfig::full(a.seed)
    };
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(if a.quick { "out/quick" } else { "out/full" }));
    let cells = cfg.sizes.len() * cfg.seeds.len() * cfg.width_factors.len();
    let bar = progress(cells as u64, quiet, "reproduce");
    let rep = run(&cfg, |row| {
        bar.inc(1);
        bar.suspend(|| eprintln!(
            "k={} d={} width={} seed={}: test error {}, KKT ε_rel {}, universal ‖z‖ GD/KKT/robust {}/{}/{}, {}",
            row.k,
            row.d,
            row.width,
            row.seed,
            fmt_opt(row.test_error),
            row.kkt_relative_upper.map_or("-".into(), |v| format!("{v:.2e}")),
            fmt_opt(row.universal_median),
            fmt_opt(row.kkt_universal_median),
            fmt_opt(row.robust_universal_median),
            row.error.as_deref().unwrap_or(&row.edge)
        ))
    })?;
    bar.finish_and_clear();
    write(&rep, &out)?;
    println!(
        "{} cells in {:.0}s → {} (report.md, report.json, figures/*.svg)",
        rep.rows.len(),
        rep.seconds,
        out.display()
    );
    Ok(())
}

/// Stores a polished net's certified numbers in its checkpoint metadata.
fn record_certificate(meta: &mut BTreeMap<String, String>, c: &Certificate) {
    meta.insert(
        "kkt_relative_upper".into(),
        format!("{:e}", c.relative_upper),
    );
    meta.insert(
        "kkt_relative_complementarity".into(),
        format!("{:e}", c.relative_complementarity),
    );
    meta.insert("kkt_verdict".into(), format!("{:?}", c.verdict));
}
