//! `kktcert gen`: a clustered fixture (SPEC §1).

use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
use kktcert::{Error, Result};
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

pub fn run(a: Args) -> Result<()> {
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
