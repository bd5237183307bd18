//! `kktcert kkt-path`: certify every checkpoint of a GD path and draw ε_rel
//! and the normalised margin against the step.

use super::certify::{certify_series, CertArgs};
use super::NetFormat;
use kktcert::experiment::path::{csv, list_checkpoints, write_path_figure};
use kktcert::io::tensors::{read_metadata, write_atomic, write_json};
use kktcert::model::data::Dataset;
use kktcert::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Directory of checkpoints (e.g. from `train --save-every N --out-dir DIR`).
    dir: PathBuf,
    #[command(flatten)]
    format: NetFormat,
    /// Training set (default: the `train_data` recorded in the checkpoints).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    cert: CertArgs,
    /// Where to write path.csv, path.json and path.svg (default: DIR).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let nets = list_checkpoints(std::slice::from_ref(&a.dir))?;
    let data_path = match &a.data {
        Some(p) => p.clone(),
        // An ONNX file has no metadata: it then asks for --data like a
        // checkpoint without `train_data`.
        None => read_metadata(&nets[0])
            .unwrap_or_default()
            .get("train_data")
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::file(
                    &nets[0],
                    "records no `train_data`; pass the training set with --data",
                )
            })?,
    };
    let data = Dataset::load(&data_path)?;
    let all: Vec<usize> = (0..nets.len()).collect();
    let rows = certify_series(&nets, &all, &a.format, &data, &a.cert, quiet)?;
    let out = a.out.unwrap_or_else(|| a.dir.clone());
    write_atomic(&out.join("path.csv"), csv(&rows).as_bytes())?;
    write_json(&out.join("path.json"), &rows)?;
    write_path_figure(&rows, &out.join("path.svg"))?;
    say!(
        "{} checkpoints → {} (path.csv, path.json, path.svg)",
        rows.len(),
        out.display()
    );
    Ok(())
}
