//! `kktcert polish`: toward a certified KKT point of Problem (2).

use super::{parse_list, record_certificate, NetFormat};
use kktcert::fit::cone::FinishOptions;
use kktcert::fit::deep::{polish_deep, DeepPolishOptions};
use kktcert::fit::polish::{polish, PolishMode, PolishOptions, ITERATION_BUDGET};
use kktcert::io::checkpoint::{save_deep, Checkpoint};
use kktcert::io::fixture::load_points;
use kktcert::io::tensors::write_json;
use kktcert::model::data::Dataset;
use kktcert::model::deep::DeepNet;
use kktcert::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    net: PathBuf,
    #[command(flatten)]
    format: NetFormat,
    /// Training set of Problem (2).
    #[arg(long)]
    data: PathBuf,
    /// Test set, to report prediction agreement before/after.
    #[arg(long)]
    test: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Tolerance on ε_rel and δ_rel for the verdict.
    #[arg(long, default_value_t = PolishOptions::default().tol)]
    tol: f64,
    /// τ_act of the certificate (Clarke ambiguity for pairs on a kink).
    #[arg(long, default_value_t = PolishOptions::default().act_tol)]
    act_tol: f64,
    /// near: a certified KKT point close to the checkpoint (the one GD is
    /// heading for); sparse: no pull toward the start.
    #[arg(long, value_enum, default_value = PolishOptions::default().mode.name())]
    mode: PolishMode,
    /// κ₀ of the near mode's proximal term (fading ×0.1 per stage).
    #[arg(long, default_value_t = PolishOptions::default().proximal)]
    proximal: f64,
    /// Comma-separated β factors (β = factor / median|u_ij|).
    #[arg(long)]
    betas: Option<String>,
    /// Stop at the first stage certified KKT.
    #[arg(long)]
    stop_when_certified: bool,
    /// Finish a stage by the cone program of its activation pattern when the
    /// iterate has at most this many live neurons (0: never).
    #[arg(long, default_value_t = FinishOptions::default().max_live)]
    finish_max_live: usize,
    /// Work budget: L-BFGS iterations over all stages before the polish
    /// stops with the best stage so far (the same on every machine).
    #[arg(long, default_value_t = ITERATION_BUDGET)]
    iterations: usize,
    /// Also stop after this many seconds (the verdict then depends on the
    /// machine's speed and load).
    #[arg(long)]
    time_limit: Option<f64>,
    /// Write the polish report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(net) = a.format.deep(&a.net)? {
        return polish_one_deep(&net, &a);
    }
    let ck = a.format.load(&a.net)?;
    let net = ck.homogeneous(&a.net, "polish")?;
    let train = Dataset::load(&a.data)?;
    net.check_dim(&train)?;
    let test = a.test.as_deref().map(Dataset::load).transpose()?;
    let mut opts = PolishOptions {
        tol: a.tol,
        act_tol: a.act_tol,
        mode: a.mode,
        proximal: a.proximal,
        stop_when_certified: a.stop_when_certified,
        time_limit: a.time_limit,
        iteration_budget: Some(a.iterations),
        finish: (a.finish_max_live > 0).then(|| FinishOptions {
            max_live: a.finish_max_live,
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some(b) = &a.betas {
        opts.beta_factors = parse_list("betas", b)?;
    }
    say!("stage  beta          ε_rel ∈ [lower, upper]        δ_rel      violation  verdict     seconds");
    let (polished, rep) = polish(net, &train, test.as_ref(), &opts, |st| {
        say!(
            "       {:<12.4e}  [{:.3e}, {:.3e}]  {:.3e}  {:.2e}  {:<10} {:.2}",
            st.beta,
            st.relative_lower,
            st.relative_upper,
            st.relative_complementarity,
            st.max_violation,
            format!(
                "{:?}{}",
                st.verdict,
                if st.finished { " (cone)" } else { "" }
            ),
            st.seconds
        );
    })?;
    let c = &rep.certificate;
    let mv = &rep.movement;
    say!(
        "start: ε_rel ∈ [{:.3e}, {:.3e}]; polished: ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?} at τ_act = {:e} (`certify --act-tol {:e}` reproduces it) ({:.1}s)",
        rep.start.relative_lower, rep.start.relative_upper, c.relative_lower, c.relative_upper, c.relative_complementarity, c.verdict, c.act_tol, c.act_tol, rep.seconds
    );
    say!(
        "moved: cos(θ0, θ) = {:.4} (no KKT point can exceed {:.4}: the start's part outside span{{(x_i, 1)}}), train agreement {:.4}, test agreement {}, live neurons {} → {}",
        mv.cosine,
        mv.cosine_bound,
        mv.train_agreement,
        mv.test_agreement.map_or("-".into(), |t| format!("{t:.4}")),
        mv.live_neurons_before,
        mv.live_neurons_after
    );
    let mut meta = ck.metadata.clone();
    meta.insert("producer".into(), "kktcert polish".into());
    meta.insert("polished_from".into(), a.net.display().to_string());
    meta.insert("polish_mode".into(), opts.mode.name().into());
    record_certificate(&mut meta, c);
    Checkpoint::new(polished, meta).save(&a.out)?;
    if let Some(path) = &a.json {
        write_json(path, &rep)?;
    }
    Ok(())
}

/// The deep net's polish (SPEC §7, deep nets): an augmented Lagrangian
/// judged by the deep certificate each round.
fn polish_one_deep(net: &DeepNet, a: &Args) -> Result<()> {
    let (x, labels) = load_points(&a.data, net.output())?;
    let opts = DeepPolishOptions {
        tol: a.tol,
        act_tol: a.act_tol,
        iterations: a.iterations,
        ..Default::default()
    };
    say!("rho         violation  ε_rel ∈ [lower, upper]        δ_rel      iterations  verdict");
    let (polished, rep) = polish_deep(net, &x, &labels, &opts, |r| {
        say!(
            "{:<10.3e}  {:.2e}  [{:.3e}, {:.3e}]  {:.3e}  {:<10}  {:?}",
            r.rho,
            r.violation,
            r.relative_lower,
            r.relative_upper,
            r.relative_complementarity,
            r.iterations,
            r.verdict
        );
    })?;
    let c = &rep.certificate;
    say!(
        "polished: ε_rel ∈ [{:.3e}, {:.3e}], δ_rel {:.3e} → {:?}; cos(θ0, θ) = {:.4}, train agreement {:.4} ({:.1}s)",
        c.relative_lower, c.relative_upper, c.relative_complementarity, c.verdict, rep.cosine_to_start, rep.train_agreement, rep.seconds
    );
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("producer".into(), "kktcert polish".into());
    meta.insert("polished_from".into(), a.net.display().to_string());
    meta.insert(
        "kkt_verdict".into(),
        format!("{:?}", c.verdict).to_lowercase(),
    );
    meta.insert(
        "kkt_relative_upper".into(),
        format!("{:e}", c.relative_upper),
    );
    save_deep(&a.out, &polished, meta)?;
    if let Some(path) = &a.json {
        write_json(path, &rep)?;
    }
    Ok(())
}
