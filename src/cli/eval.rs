//! `kktcert eval`: accuracy, margins and normalised margin.

use super::NetFormat;
use kktcert::io::tensors::write_json;
use kktcert::model::data::Dataset;
use kktcert::model::net::Evaluation;
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    net: PathBuf,
    #[command(flatten)]
    format: NetFormat,
    #[arg(long)]
    data: PathBuf,
    /// Also write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let net = a.format.load(&a.net)?.function();
    let data = Dataset::load(&a.data)?;
    let e = Evaluation::of(&net, &data)?;
    say!(
        "n={} accuracy={:.4} errors={} margin min/median/max={:.4e}/{:.4e}/{:.4e} ‖θ‖²={:.4e} normalised margin={:.4e}",
        e.n, e.accuracy, e.errors, e.min_margin, e.median_margin, e.max_margin, e.norm_sq, e.normalized_margin
    );
    if let Some(path) = &a.json {
        write_json(path, &e)?;
    }
    Ok(())
}
