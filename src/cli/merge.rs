//! `kktcert merge`: the outputs of `--shard i/N` runs combined into exactly
//! what the unsharded run writes (the work is `jobs::merge`).

use kktcert::jobs::merge::merge;
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Shard outputs: JSON files (distance, certify, attack) or `reproduce` directories.
    #[arg(required = true, num_args = 1..)]
    shards: Vec<PathBuf>,
    /// The merged output: a JSON file, or a directory for `reproduce`.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let merged = merge(&a.shards, &a.out)?;
    say!(
        "merged {} {} shards → {}",
        merged.shards,
        merged.kind,
        a.out.display()
    );
    Ok(())
}
