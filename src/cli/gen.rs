//! `kktcert gen`: a clustered fixture (SPEC §1).

use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
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
    /// How the cluster means are drawn.
    #[arg(long, value_enum, default_value = "sphere")]
    means: MeansKind,
    /// Label rule: balanced | fraction:P (round(P·k) positive clusters).
    #[arg(long, default_value = "balanced")]
    labels: LabelRule,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let spec = FixtureSpec {
        format: FIXTURE_FORMAT.into(),
        k: a.k,
        d: a.d,
        sigma: a.sigma,
        n: a.n,
        n_test: a.n_test,
        seed: a.seed,
        means: a.means,
        labels: a.labels,
    };
    let fx = Fixture::generate(spec)?;
    fx.save(&a.out)?;
    say!(
        "wrote {} (k={}, d={}, n={}, n_test={})",
        a.out.display(),
        fx.spec.k,
        fx.spec.d,
        fx.train.n(),
        fx.test.n()
    );
    Ok(())
}
