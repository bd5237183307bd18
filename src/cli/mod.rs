//! The `kktcert` command line: one module per subcommand, each with its
//! clap arguments and a `run` that wires the library together. Shared
//! helpers (progress bars, option parsing) live here; all numerics live in
//! the library.

/// `println!` for results: a closed pipe (`kktcert … | head`) ends the
/// program quietly with status 0, as it does other Unix tools, instead of
/// panicking; any other failure to write is an error with status 2.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::emit(format_args!($($arg)*))
    };
}

mod attack;
mod audit;
mod certify;
mod distance;
mod eval;
mod gen;
mod kkt_path;
mod merge;
mod polish;
mod reproduce;
mod robust;
mod train;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kktcert::io::checkpoint::{load_deep, looks_deep, Checkpoint, LoadOptions};
use kktcert::io::layout::TensorNames;
use kktcert::kkt::Certificate;
use kktcert::model::deep::DeepNet;
use kktcert::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes one line of results to stdout (see `say!`).
fn emit(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(2);
    }
}

#[derive(Parser)]
#[command(
    name = "kktcert",
    version,
    about = "Certificates for 'The Double-Edged Sword of Implicit Bias': KKT brackets, exact ReLU flip distances, universal attacks",
    long_about = "kktcert checks the claims of Frei, Vardi, Bartlett & Srebro (NeurIPS 2023) on real two-layer ReLU networks.\n\nTypical flow:\n  kktcert gen --k 10 --d 400 --out fx        # clustered data\n  kktcert train --data fx/train.safetensors --width 100 --out net.safetensors\n  kktcert eval --net net.safetensors --data fx/test.safetensors\n\nEvery subcommand has --help. Errors are one line on stderr with exit status 2."
)]
pub struct Cli {
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a clustered fixture (SPEC §1) into a directory.
    Gen(gen::Args),
    /// Train a two-layer ReLU net by full-batch gradient descent.
    Train(train::Args),
    /// Accuracy, margins and normalised margin of a net on a dataset.
    Eval(eval::Args),
    /// Certify KKT-ness for Problem (2): a proven [lower, upper] residual bracket.
    Certify(certify::Args),
    /// Certify every checkpoint of a GD path; write a table and an SVG of ε_rel and the normalised margin against the step.
    KktPath(kkt_path::Args),
    /// Polish a trained net into a certified KKT point of Problem (2).
    Polish(polish::Args),
    /// Build the robust width-k network of Theorem 4.1 from a fixture's means.
    Robust(robust::Args),
    /// The universal attack along Σ y_q μ_q: exact critical radii and flip rates.
    Attack(attack::Args),
    /// Certified exact minimal ℓ2 sign-flipping distance of data points.
    Distance(distance::Args),
    /// The end-to-end experiment: sweep (k, d), train, polish, attack, certify; write tables and figures.
    Reproduce(reproduce::Args),
    /// Audit Assumption 2.2 and properties P1–P6 on a fixture (exit 0 whatever the verdict).
    Audit(audit::Args),
    /// Combine the outputs of `--shard i/N` runs into what the unsharded run writes.
    Merge(merge::Args),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> Result<()> {
        let quiet = self.quiet;
        match self.command {
            Command::Gen(a) => gen::run(a),
            Command::Train(a) => train::run(a, quiet),
            Command::Eval(a) => eval::run(a),
            Command::Certify(a) => certify::run(a, quiet),
            Command::KktPath(a) => kkt_path::run(a, quiet),
            Command::Robust(a) => robust::run(a),
            Command::Polish(a) => polish::run(a),
            Command::Attack(a) => attack::run(a),
            Command::Audit(a) => audit::run(a),
            Command::Reproduce(a) => reproduce::run(a, quiet),
            Command::Distance(a) => distance::run(a, quiet),
            Command::Merge(a) => merge::run(a),
        }
    }
}

/// How to find the network's tensors in a checkpoint: shared by every
/// subcommand that reads one.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NetFormat {
    /// Tensor names, overriding the automatic recognition of the layout:
    /// W=NAME,b=NAME,v=NAME[,c=NAME] (c: an output bias).
    #[arg(long)]
    tensors: Option<String>,
}

impl NetFormat {
    /// The loader options these flags describe.
    pub fn options(&self) -> Result<LoadOptions> {
        let tensors = self
            .tensors
            .as_deref()
            .map(TensorNames::parse)
            .transpose()?;
        Ok(LoadOptions { tensors })
    }

    /// Whether the tensors were named explicitly.
    pub fn is_explicit(&self) -> bool {
        self.tensors.is_some()
    }

    /// The net at `path` when it is deep or multi-class (not the two-layer
    /// net, and no `--tensors`): `None` sends the caller down its two-layer
    /// path, whose errors explain a bad two-layer file; a file that looks
    /// deep gets the deep loader's error.
    pub fn deep(&self, path: &Path) -> Result<Option<DeepNet>> {
        if self.is_explicit() {
            return Ok(None);
        }
        match load_deep(path) {
            Ok(net) => Ok(net.as_network().is_none().then_some(net)),
            Err(e) if looks_deep(path) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Loads a checkpoint (safetensors in any recognised layout, or ONNX).
    pub fn load(&self, path: &Path) -> Result<Checkpoint> {
        Checkpoint::load_with(path, &self.options()?)
    }
}

/// A progress bar that draws only on a terminal and never with `--quiet`.
pub fn progress(len: u64, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    // The template is a constant that indicatif accepts; should a future
    // indicatif refuse it, the default bar is still a bar.
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}<{eta} {prefix}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

/// A number with four decimals, or "never" for a missing one.
pub fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("never".into(), |x| format!("{x:.4}"))
}

/// Parses a comma-separated list of numbers for the option `name`.
pub fn parse_list(name: &str, s: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|t| t.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Param {
            name: name.into(),
            msg: format!("`{s}`, expected comma-separated numbers"),
        })
}

/// Stores a polished net's certified numbers in its checkpoint metadata.
pub fn record_certificate(meta: &mut BTreeMap<String, String>, c: &Certificate) {
    meta.insert(
        "kkt_relative_upper".into(),
        format!("{:e}", c.relative_upper),
    );
    meta.insert(
        "kkt_relative_complementarity".into(),
        format!("{:e}", c.relative_complementarity),
    );
    meta.insert("kkt_verdict".into(), format!("{:?}", c.verdict));
    // The certificate's own tolerances, so `certify` can reproduce it.
    meta.insert("kkt_tol".into(), format!("{:e}", c.tol));
    meta.insert("kkt_act_tol".into(), format!("{:e}", c.act_tol));
    if let Some(d) = c.delta_rel {
        meta.insert("kkt_delta_rel".into(), format!("{d:e}"));
    }
}
