//! `kktcert certify`: KKT certificates for one checkpoint, or one row per
//! checkpoint of a series (several `--net`, or directories), optionally
//! sharded across machines.

use super::{progress, NetFormat};
use kktcert::experiment::path::{certify_row, list_checkpoints, SeriesRow};
use kktcert::io::fixture::load_points;
use kktcert::io::tensors::write_json;
use kktcert::jobs::output::SeriesOutput;
use kktcert::jobs::shard::{Shard, ShardInfo, ShardKind};
use kktcert::kkt::deep::{certify_deep, DeepCertifyOptions};
use kktcert::kkt::{certificates_json, certify, Certificate, CertifyOptions, Method, Norm};
use kktcert::model::data::Dataset;
use kktcert::model::deep::DeepNet;
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// One or more checkpoints or directories of checkpoints (a series).
    #[arg(long, required = true, num_args = 1..)]
    net: Vec<PathBuf>,
    #[command(flatten)]
    format: NetFormat,
    /// The training set the net should be a KKT point for.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    cert: CertArgs,
    /// Certify only shard i of N of the series (0-based; see `merge`).
    #[arg(long, value_name = "i/N")]
    shard: Option<Shard>,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The certificate's options, shared with `kkt-path`.
#[derive(clap::Args)]
pub struct CertArgs {
    /// The residual's norm.
    #[arg(long, value_enum, default_value = "l2")]
    norm: NormChoice,
    /// Tolerance on ε_rel and δ_rel for the verdict.
    #[arg(long, default_value_t = 1e-4)]
    tol: f64,
    /// δ_rel of the complementarity row (default: --tol; `inf` drops the row).
    #[arg(long, value_name = "δ|inf")]
    delta: Option<Delta>,
    /// τ_act: relative threshold for Clarke-ambiguous (point, neuron) pairs.
    #[arg(long, default_value_t = 1e-6)]
    act_tol: f64,
    /// How the problem is solved over the points: auto (the full Gram
    /// system up to 2000 points and 8000 variables, the working set above) | full |
    /// working-set (column generation with exact pricing of every point).
    #[arg(long, value_enum, default_value = "auto")]
    method: Method,
}

/// `--norm`: which residual norms to certify.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum NormChoice {
    L2,
    Linf,
    Both,
}

impl NormChoice {
    fn norms(self) -> Vec<Norm> {
        match self {
            Self::L2 => vec![Norm::L2],
            Self::Linf => vec![Norm::Linf],
            Self::Both => vec![Norm::L2, Norm::Linf],
        }
    }
}

/// `--delta`: a relative complementarity tolerance, or none (`inf`).
#[derive(Clone, Copy, Debug)]
enum Delta {
    Rel(f64),
    Off,
}

impl std::str::FromStr for Delta {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "inf" => Ok(Self::Off),
            _ => s
                .parse::<f64>()
                .ok()
                .filter(|d| *d >= 0.0 && d.is_finite())
                .map(Self::Rel)
                .ok_or_else(|| format!("`{s}`, expected a number ≥ 0 or inf")),
        }
    }
}

impl CertArgs {
    /// The norms and certificate options these flags describe.
    pub fn parse(&self) -> Result<(Vec<Norm>, CertifyOptions)> {
        let norms = self.norm.norms();
        let delta_rel = match self.delta {
            None => Some(self.tol),
            Some(Delta::Off) => None,
            Some(Delta::Rel(d)) => Some(d),
        };
        let opts = CertifyOptions {
            tol: self.tol,
            delta_rel,
            act_tol: self.act_tol,
            method: self.method,
            warm: None,
        };
        Ok((norms, opts))
    }
}

pub fn print_certificate(c: &Certificate) {
    say!(
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

/// The deep net's certificate (SPEC §3, deep nets): ℓ2 only.
fn certify_one_deep(net: &DeepNet, a: &Args) -> Result<()> {
    let (norms, opts) = a.cert.parse()?;
    if norms != [Norm::L2] {
        return Err(kktcert::Error::param(
            "norm",
            "deep and multi-class nets are certified in ℓ2 only",
        ));
    }
    let (x, labels) = load_points(&a.data, net.output())?;
    let deep_opts = DeepCertifyOptions {
        tol: opts.tol,
        delta_rel: opts.delta_rel,
        act_tol: opts.act_tol,
    };
    let c = certify_deep(net, &x, &labels, &deep_opts)?;
    say!(
        "L2 ({} hidden layers): scale {:.6e}, residual ∈ [{:.6e}, {:.6e}] (relative [{:.3e}, {:.3e}]), δ_rel {:.3e}, {} of {} constraints in support, {} near-kink points, {:.3}s → {:?}",
        net.hidden_layers(),
        c.scale,
        c.lower,
        c.upper,
        c.relative_lower,
        c.relative_upper,
        c.relative_complementarity,
        c.support.len(),
        c.constraints,
        c.near_kink_points,
        c.seconds,
        c.verdict
    );
    if let Some(path) = &a.json {
        write_json(path, &c)?;
    }
    Ok(())
}

/// Certifies the checkpoints at `indices` of `nets`, printing each row.
pub fn certify_series(
    nets: &[PathBuf],
    indices: &[usize],
    format: &NetFormat,
    data: &Dataset,
    cert: &CertArgs,
    quiet: bool,
) -> Result<Vec<SeriesRow>> {
    let (norms, opts) = cert.parse()?;
    let load = format.options()?;
    let bar = progress(indices.len() as u64, quiet, "certify");
    let mut rows = Vec::new();
    for &i in indices {
        let row = certify_row(i, &nets[i], &load, data, &norms, &opts)?;
        bar.inc(1);
        let verdict = match (row.certificates.first(), &row.skipped) {
            (Some(c), _) => format!(
                "ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?}",
                c.relative_lower, c.relative_upper, c.relative_complementarity, c.verdict
            ),
            (None, why) => format!("skipped: {}", why.as_deref().unwrap_or("-")),
        };
        bar.suspend(|| {
            say!(
                "{} step {}: normalised margin {:.4e}, {verdict}",
                row.net,
                row.step.map_or("-".into(), |s| s.to_string()),
                row.normalized_margin,
            )
        });
        rows.push(row);
    }
    bar.finish_and_clear();
    Ok(rows)
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let nets = list_checkpoints(&a.net)?;
    let series = nets.len() > 1 || a.net[0].is_dir() || a.shard.is_some();
    if !series {
        if let Some(net) = a.format.deep(&nets[0])? {
            return certify_one_deep(&net, &a);
        }
    }
    let data = Dataset::load(&a.data)?;
    if !series {
        let ck = a.format.load(&nets[0])?;
        let net = ck.homogeneous(&nets[0], "certify")?;
        let (norms, opts) = a.cert.parse()?;
        let certs = norms
            .iter()
            .map(|&n| certify(net, &data, n, &opts))
            .collect::<Result<Vec<_>>>()?;
        certs.iter().for_each(print_certificate);
        if let Some(path) = &a.json {
            write_json(path, &certificates_json(&certs))?;
        }
        return Ok(());
    }
    let all: Vec<usize> = (0..nets.len()).collect();
    let (indices, shard) = match a.shard {
        Some(s) => {
            let mut inputs: Vec<&std::path::Path> = nets.iter().map(|p| p.as_path()).collect();
            inputs.push(&a.data);
            (
                s.select(&all),
                Some(ShardInfo::new(ShardKind::Certify, s, nets.len(), &inputs)?),
            )
        }
        None => (all, None),
    };
    let rows = certify_series(&nets, &indices, &a.format, &data, &a.cert, quiet)?;
    if let Some(path) = &a.json {
        write_json(path, &SeriesOutput { shard, rows })?;
    }
    Ok(())
}
