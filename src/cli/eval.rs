//! `kktcert eval`: accuracy, margins and normalised margin, for the
//! two-layer net and for fully connected ReLU nets of any depth.

use super::NetFormat;
use kktcert::io::fixture::load_points;
use kktcert::io::tensors::write_json;
use kktcert::model::data::Dataset;
use kktcert::model::deep::{DeepEvaluation, DeepNet};
use kktcert::model::net::Evaluation;
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    net: PathBuf,
    #[command(flatten)]
    format: NetFormat,
    /// Points `X` [n, d] and labels `y` [n]: ±1 for one output, classes
    /// 0…C−1 (float or integer) for C outputs.
    #[arg(long)]
    data: PathBuf,
    /// Also write the result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    // A deep or multi-class net gets the deep report; a two-layer file (or
    // one named with --tensors) keeps the two-layer report and its errors.
    if let Some(net) = a.format.deep(&a.net)? {
        return deep(&net, &a);
    }
    two_layer(&a.format.load(&a.net)?.function(), &a)
}

fn two_layer(net: &kktcert::model::net::Network, a: &Args) -> Result<()> {
    let data = Dataset::load(&a.data)?;
    let e = Evaluation::of(net, &data)?;
    say!(
        "n={} accuracy={:.4} errors={} margin min/median/max={:.4e}/{:.4e}/{:.4e} ‖θ‖²={:.4e} normalised margin={:.4e}",
        e.n, e.accuracy, e.errors, e.min_margin, e.median_margin, e.max_margin, e.norm_sq, e.normalized_margin
    );
    if let Some(path) = &a.json {
        write_json(path, &e)?;
    }
    Ok(())
}

fn deep(net: &DeepNet, a: &Args) -> Result<()> {
    let (x, labels) = load_points(&a.data, net.output())?;
    let e = DeepEvaluation::of(net, &x, &labels)?;
    let normalised = match (e.normalized_margin, net.homogeneity().degree()) {
        (Some(q), Some(deg)) => format!("normalised margin (min q/‖θ‖^{deg})={q:.4e}"),
        _ => "normalised margin undefined (not homogeneous)".into(),
    };
    say!(
        "{} hidden layer(s), output {:?}: n={} accuracy={:.4} errors={} margin min/median/max={:.4e}/{:.4e}/{:.4e} ‖θ‖²={:.4e} {normalised}",
        e.hidden_layers, e.output, e.n, e.accuracy, e.errors, e.min_margin, e.median_margin, e.max_margin, e.norm_sq
    );
    if let Some(path) = &a.json {
        write_json(path, &e)?;
    }
    Ok(())
}
