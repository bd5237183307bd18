//! `kktcert train`: full-batch GD, optionally saving checkpoints along the
//! path (for `kkt-path`) and polishing the result into a certified KKT point.

use super::{progress, record_certificate};
use kktcert::fit::gd::{log_csv, train, Loss, TrainConfig};
use kktcert::fit::polish::{polish, PolishOptions};
use kktcert::io::checkpoint::Checkpoint;
use kktcert::io::tensors::write_atomic;
use kktcert::model::data::Dataset;
use kktcert::model::net::Network;
use kktcert::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Training set (safetensors with X, y).
    #[arg(long)]
    data: PathBuf,
    /// Width m.
    #[arg(long)]
    width: usize,
    /// The per-sample loss.
    #[arg(long, value_enum, default_value = "logistic")]
    loss: Loss,
    /// Maximum number of GD steps.
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    steps: usize,
    /// Step size η.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// Use the loss-normalised step η/L (capped by --lr-cap).
    #[arg(long)]
    normalized_lr: bool,
    #[arg(long, default_value_t = TrainConfig::default().lr_cap)]
    lr_cap: f64,
    /// Initialisation scale s.
    #[arg(long, default_value_t = TrainConfig::default().init_scale)]
    init_scale: f64,
    /// Stop when the mean loss falls below this.
    #[arg(long, default_value_t = TrainConfig::default().target_loss)]
    target_loss: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint (required unless --out-dir is given).
    #[arg(long, required_unless_present = "out_dir")]
    out: Option<PathBuf>,
    /// Write the training log (CSV) here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Log every this many steps.
    #[arg(long, default_value_t = TrainConfig::default().log_every)]
    log_every: usize,
    /// Save a checkpoint every this many steps (and the last one) into --out-dir.
    #[arg(long, requires = "out_dir")]
    save_every: Option<usize>,
    /// Directory for the checkpoints along the path: step-00000100.safetensors, …
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Then polish the trained net into a certified KKT point (near mode,
    /// stopping at the first certified stage) and save that instead.
    #[arg(long)]
    polish: bool,
}

/// The file name of the checkpoint at GD step `t` in a path directory.
pub fn path_checkpoint(dir: &Path, t: usize) -> PathBuf {
    dir.join(format!("step-{t:08}.safetensors"))
}

fn save_step(dir: &Path, t: usize, net: &Network, meta: &BTreeMap<String, String>) -> Result<()> {
    let mut meta = meta.clone();
    meta.insert("step".into(), t.to_string());
    Checkpoint::new(net.clone(), meta).save(&path_checkpoint(dir, t))
}

fn config(a: &Args) -> Result<TrainConfig> {
    Ok(TrainConfig {
        width: a.width,
        loss: a.loss,
        steps: a.steps,
        lr: a.lr,
        normalized_lr: a.normalized_lr,
        lr_cap: a.lr_cap,
        init_scale: a.init_scale,
        seed: a.seed,
        target_loss: a.target_loss,
        log_every: a.log_every,
    })
}

fn polished(net: Network, data: &Dataset, meta: &mut BTreeMap<String, String>) -> Result<Network> {
    let opts = PolishOptions {
        stop_when_certified: true,
        ..Default::default()
    };
    let (net, rep) = polish(&net, data, None, &opts, |st| {
        eprintln!(
            "polish β={:.3e}: ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?}",
            st.beta, st.relative_lower, st.relative_upper, st.relative_complementarity, st.verdict
        )
    })?;
    let c = &rep.certificate;
    record_certificate(meta, c);
    meta.insert("polish_mode".into(), opts.mode.name().into());
    say!(
        "polished: ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?}",
        c.relative_lower,
        c.relative_upper,
        c.relative_complementarity,
        c.verdict
    );
    Ok(net)
}

pub fn run(a: Args, quiet: bool) -> Result<()> {
    let data = Dataset::load(&a.data)?;
    let cfg = config(&a)?;
    if a.save_every == Some(0) {
        return Err(Error::param("save-every", "0, expected ≥ 1"));
    }
    let mut meta = BTreeMap::new();
    meta.insert("producer".into(), "kktcert train".into());
    meta.insert("train_data".into(), a.data.display().to_string());
    meta.insert(
        "train_config".into(),
        serde_json::to_string(&cfg).map_err(|e| Error::param("config", e.to_string()))?,
    );
    let bar = progress(cfg.steps as u64, quiet, "train");
    let mut saved = 0usize;
    let trained = train(&data, &cfg, |t, row, net| {
        if t % 50 == 0 {
            bar.set_position(t as u64);
            bar.set_prefix(format!(
                "loss {:.3e} acc {:.3}",
                row.loss, row.train_accuracy
            ));
        }
        match (a.save_every, &a.out_dir) {
            (Some(every), Some(dir)) if t % every == 0 => {
                saved += 1;
                save_step(dir, t, net, &meta)
            }
            _ => Ok(()),
        }
    })?;
    bar.finish_and_clear();
    let last = trained
        .log
        .last()
        .ok_or_else(|| Error::param("steps", "training logged no step"))?;
    if let (Some(every), Some(dir)) = (a.save_every, &a.out_dir) {
        if trained.steps % every != 0 {
            saved += 1;
            save_step(dir, trained.steps, &trained.net, &meta)?;
        }
        say!("{saved} checkpoints along the path → {}", dir.display());
    }
    meta.insert("steps".into(), trained.steps.to_string());
    meta.insert("final_loss".into(), format!("{:e}", last.loss));
    if let Some(out) = &a.out {
        let net = if a.polish {
            polished(trained.net, &data, &mut meta)?
        } else {
            trained.net
        };
        Checkpoint::new(net, meta).save(out)?;
    }
    if let Some(path) = &a.log {
        write_atomic(path, log_csv(&trained.log).as_bytes())?;
    }
    say!(
        "trained {} steps: loss {:.3e}, train accuracy {:.4}, min margin {:.4e}, normalised margin {:.4e}{}",
        trained.steps,
        last.loss,
        last.train_accuracy,
        last.min_margin,
        last.normalized_margin,
        a.out.as_ref().map_or(String::new(), |o| format!(" → {}", o.display()))
    );
    Ok(())
}
