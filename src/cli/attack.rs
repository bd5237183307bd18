//! `kktcert attack`: the universal attack, one row per net (the transfer
//! table), optionally sharded over the test points.

use super::{fmt_opt, NetFormat};
use kktcert::io::tensors::write_json;
use kktcert::jobs::output::{AttackOutput, NetAttack};
use kktcert::jobs::shard::{Shard, ShardInfo, ShardKind};
use kktcert::model::data::{Dataset, Fixture};
use kktcert::paper::attack::attack_points;
use kktcert::Result;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// One or more checkpoints (several give the transfer table).
    #[arg(long, required = true, num_args = 1..)]
    net: Vec<PathBuf>,
    #[command(flatten)]
    format: NetFormat,
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
    /// Attack only shard i of N of the test points (0-based; see `merge`).
    #[arg(long, value_name = "i/N")]
    shard: Option<Shard>,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Prints the transfer table.
fn print_table(reports: &[NetAttack]) {
    say!("net | median r* | r*/√(d/k) | r*/√d | never flipped | flip rate at √(d/k)");
    for NetAttack { net, report: rep } in reports {
        let at = rep.scale_sqrt_d_over_k;
        let n = rep.points.len().max(1) as f64;
        let rate = rep
            .points
            .iter()
            .filter(|p| p.critical_radius.is_some_and(|r| r <= at))
            .count() as f64
            / n;
        say!(
            "{} | {} | {} | {} | {} | {:.3}",
            net,
            fmt_opt(rep.median),
            fmt_opt(rep.median_over_sqrt_d_over_k),
            fmt_opt(rep.median_over_sqrt_d),
            rep.never_flipped,
            rate
        );
    }
}

pub fn run(a: Args) -> Result<()> {
    let fx = Fixture::load(&a.fixture)?;
    let data = match &a.data {
        Some(p) => Dataset::load(p)?,
        None => fx.test.clone(),
    };
    let all: Vec<usize> = (0..data.n()).collect();
    let shard = match a.shard {
        Some(s) => {
            let mut inputs: Vec<&Path> = a.net.iter().map(|p| p.as_path()).collect();
            inputs.push(&a.fixture);
            inputs.extend(a.data.as_deref());
            Some((s, ShardInfo::new(ShardKind::Attack, s, data.n(), &inputs)?))
        }
        None => None,
    };
    let idx = shard.as_ref().map_or(all.clone(), |(s, _)| s.select(&all));
    let mut reports = Vec::new();
    for path in &a.net {
        let net = a.format.load(path)?.function();
        let rep = attack_points(&net, &data, &fx.means, a.grid, a.max_radius, &idx)?;
        reports.push(NetAttack {
            net: path.display().to_string(),
            report: rep,
        });
    }
    print_table(&reports);
    if let Some(path) = &a.json {
        let out = match shard {
            Some((_, shard)) => AttackOutput::Shard { shard, reports },
            None => AttackOutput::new(reports),
        };
        write_json(path, &out)?;
    }
    Ok(())
}
