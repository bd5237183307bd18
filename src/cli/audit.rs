//! `kktcert audit`: Assumption 2.2, label balance and P1–P6.

use kktcert::io::tensors::write_json;
use kktcert::model::data::{Dataset, Fixture};
use kktcert::paper::audit::{audit, AuditOptions, LogBase};
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    fixture: PathBuf,
    /// Training set to audit for P1–P6 (default: the fixture's).
    #[arg(long)]
    data: Option<PathBuf>,
    /// C_A of Assumption 2.2(3).
    #[arg(long, default_value_t = AuditOptions::default().c_a)]
    c_a: f64,
    /// C_P, the polylog multiplier in P1–P5.
    #[arg(long, default_value_t = AuditOptions::default().c_p)]
    c_p: f64,
    /// σ_max of Assumption 2.2(2).
    #[arg(long, default_value_t = AuditOptions::default().sigma_max)]
    sigma_max: f64,
    /// c_bal of the label balance.
    #[arg(long, default_value_t = AuditOptions::default().c_bal)]
    c_bal: f64,
    /// Base of `log` in A3 and P1–P5: 2 (the paper's `log`) or e (its `ln`).
    #[arg(long, value_enum, default_value = "2")]
    log_base: LogBase,
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let fx = Fixture::load(&a.fixture)?;
    let train = match &a.data {
        Some(p) => Dataset::load(p)?,
        None => fx.train.clone(),
    };
    let opts = AuditOptions {
        c_a: a.c_a,
        c_p: a.c_p,
        sigma_max: a.sigma_max,
        c_bal: a.c_bal,
        log_base: a.log_base,
        ..Default::default()
    };
    let rep = audit(&fx.means, fx.spec.sigma, Some(&train), &opts)?;
    say!(
        "{:<8} {:>14} {:>14} {:>14}  pass  witness",
        "check",
        "value",
        "threshold",
        "slack"
    );
    for c in &rep.checks {
        say!(
            "{:<8} {:>14.6e} {:>14.6e} {:>14.6e}  {:<5} {}",
            c.name,
            c.value,
            c.threshold,
            c.slack,
            if c.pass { "yes" } else { "NO" },
            c.witness
        );
    }
    say!(
        "log base {}; A3 holds for every C_A ≤ {:.4} (the largest C_A for which it holds)",
        opts.log_base.name(),
        rep.max_c_a()
    );
    say!(
        "Assumption 2.2: {}; dataset properties P1–P6: {}",
        if rep.assumption_holds {
            "holds"
        } else {
            "fails"
        },
        if rep.data_nice == Some(true) {
            "hold"
        } else {
            "fail"
        }
    );
    if let Some(path) = &a.json {
        write_json(path, &rep)?;
    }
    Ok(())
}
