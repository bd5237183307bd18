//! `kktcert reproduce`: the end-to-end sweep, optionally one shard of its cells.

use super::{fmt_opt, progress};
use kktcert::experiment::regime::hypotheses;
use kktcert::experiment::render::write;
use kktcert::experiment::sweep::{cell_count, run as sweep, SweepConfig};
use kktcert::io::tensors::write_json;
use kktcert::jobs::shard::{Shard, ShardInfo, ShardKind};
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A few small sizes (about a minute) instead of the full sweep.
    #[arg(long)]
    quick: bool,
    /// Output directory (default: out/quick or out/full).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// outside: the default sweep (k ∈ {4..32}, d ≤ 1600, σ = 1, where
    /// Assumption 2.2 fails); hypotheses: cells chosen by searching the
    /// audit so that Assumption 2.2 and P1–P6 hold (plus boundary cells).
    #[arg(long, value_enum, default_value = "outside")]
    regime: Regime,
    /// Run only shard i of N of the cells (0-based); the directory then holds
    /// the shard's report.json, for `merge`.
    #[arg(long, value_name = "i/N")]
    shard: Option<Shard>,
}

/// `--regime`: which cells the sweep runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Regime {
    Outside,
    Hypotheses,
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let cfg = match (a.regime, a.quick) {
        (Regime::Outside, true) => SweepConfig::quick(a.seed),
        (Regime::Outside, false) => SweepConfig::full(a.seed),
        (Regime::Hypotheses, quick) => hypotheses(a.seed, quick)?,
    };
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from(format!(
            "out/{}{}",
            if a.regime == Regime::Hypotheses {
                "hypotheses-"
            } else {
                ""
            },
            if a.quick { "quick" } else { "full" }
        ))
    });
    let shard = a.shard;
    let cells = cell_count(&cfg);
    let mine = shard.map_or(cells, |s| (0..cells).filter(|&c| s.owns(c)).count());
    let bar = progress(mine as u64, quiet, "reproduce");
    let mut rep = sweep(&cfg, shard, |row| {
        bar.inc(1);
        bar.suspend(|| eprintln!(
            "k={} d={} width={} seed={}: test error {}, KKT ε_rel {}, universal ‖z‖ GD/KKT/robust {}/{}/{}, {}",
            row.k,
            row.d,
            row.width,
            row.seed,
            fmt_opt(row.test_error),
            row.kkt_relative_upper.map_or("-".into(), |v| format!("{v:.2e}")),
            fmt_opt(row.universal_median),
            fmt_opt(row.kkt_universal_median),
            fmt_opt(row.robust_universal_median),
            row.error.as_deref().unwrap_or(&row.edge)
        ))
    })?;
    bar.finish_and_clear();
    match shard {
        Some(s) => {
            rep.shard = Some(ShardInfo::new(ShardKind::Reproduce, s, cells, &[])?);
            write_json(&out.join("report.json"), &rep)?;
            say!(
                "shard {}/{}: {} of {cells} cells in {:.0}s → {}/report.json (combine with `kktcert merge`)",
                s.index,
                s.count,
                rep.rows.len(),
                rep.seconds,
                out.display()
            );
        }
        None => {
            write(&rep, &out)?;
            say!(
                "{} cells in {:.0}s → {} (report.md, report.json, figures/*.svg)",
                rep.rows.len(),
                rep.seconds,
                out.display()
            );
        }
    }
    Ok(())
}
