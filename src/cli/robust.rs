//! `kktcert robust`: the Theorem 4.1 network.

use kktcert::io::checkpoint::Checkpoint;
use kktcert::model::data::Fixture;
use kktcert::paper::robust::robust_network;
use kktcert::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Fixture directory (uses means.safetensors).
    #[arg(long)]
    fixture: PathBuf,
    /// Width m ≥ k (extra neurons are zero).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
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
    say!("robust network of width {width} → {}", a.out.display());
    Ok(())
}
