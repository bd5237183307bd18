//! Oracles for the cone-program finish: every net it returns is a feasible
//! KKT point the certificate passes, and its value is never above the value
//! of a KKT point of the same pattern (which is feasible for the program).

mod common;
use common::*;
use kktcert::fit::cone::{finish, FinishOptions};
use kktcert::fit::gd::{train, TrainConfig};
use kktcert::fit::polish::{polish, PolishOptions};
use kktcert::kkt::{certify, CertifyOptions, Norm, Verdict};
use kktcert::model::data::Dataset;
use kktcert::model::net::Network;

/// Σ_j |v_j|·‖(w_j, b_j)‖: ‖θ‖²/2 of the balanced net, the program's value.
fn value(net: &Network) -> f64 {
    net.masses().iter().sum()
}

/// A continuation iterate: GD, then two smoothing stages without the finish.
fn iterate(data: &Dataset, width: usize, seed: u64) -> Option<Network> {
    let cfg = TrainConfig {
        width,
        seed,
        steps: 400,
        ..Default::default()
    };
    let net = train(data, &cfg, |_, _, _| Ok(())).ok()?.net;
    let opts = PolishOptions {
        beta_factors: vec![4.0, 16.0],
        finish: None,
        time_limit: None,
        ..Default::default()
    };
    polish(&net, data, None, &opts, |_| {}).ok().map(|(p, _)| p)
}

/// The finished net is feasible (min margin 1), certified KKT at 1e-5 (ten
/// times below the polish's default tolerance) by the independent
/// certificate, and its value is the program's.
fn assert_finished_is_kkt(net: &Network, data: &Dataset) -> bool {
    let Some(f) = finish(net, data, &FinishOptions::default()) else {
        return false;
    };
    let q = f.net.margins(data);
    let min = q.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(min >= 1.0 - 1e-7, "min margin {min}");
    let rel = (value(&f.net) - f.objective).abs() / f.objective;
    assert!(
        rel < 1e-9,
        "value {} vs objective {}",
        value(&f.net),
        f.objective
    );
    let copts = CertifyOptions {
        tol: 1e-5,
        delta_rel: Some(1e-5),
        act_tol: 1e-4,
        ..Default::default()
    };
    let c = certify(&f.net, data, Norm::L2, &copts).unwrap();
    assert_eq!(
        c.verdict,
        Verdict::Kkt,
        "ε_rel {} δ_rel {}",
        c.relative_upper,
        c.relative_complementarity
    );
    true
}

#[test]
fn finished_iterates_of_random_clustered_problems_are_certified_kkt() {
    let (mut tried, mut finished) = (0, 0);
    for seed in 0..100 {
        let data = clustered(seed, 6 + (seed % 13) as usize);
        // GD that does not classify every point has no iterate to finish.
        let Some(net) = iterate(&data, 3 + (seed % 6) as usize, seed) else {
            continue;
        };
        tried += 1;
        finished += assert_finished_is_kkt(&net, &data) as usize;
        if tried == 30 {
            break;
        }
    }
    // The finish may decline (a pattern that does not settle), but it must
    // not decline on most iterates: that would make the property vacuous.
    assert!(tried == 30 && finished >= 24, "{finished} of {tried}");
}

#[test]
fn finish_value_is_at_most_a_kkt_point_of_the_same_pattern() {
    // A certified KKT point from the continuation alone: feasible for the
    // program of its own pattern, so the program's optimum is no larger.
    let data = tiny16();
    let net = gd(
        &data,
        &TrainConfig {
            width: 6,
            ..Default::default()
        },
    );
    let opts = PolishOptions {
        stop_when_certified: true,
        finish: None,
        ..Default::default()
    };
    let (kkt, rep) = polish(&net, &data, None, &opts, |_| {}).unwrap();
    assert_eq!(rep.certificate.verdict, Verdict::Kkt);
    assert!(rep.stages.iter().all(|st| !st.finished));
    let f = finish(&kkt, &data, &FinishOptions::default()).expect("finished");
    assert!(
        f.objective <= value(&kkt) * (1.0 + 1e-7),
        "{} > {}",
        f.objective,
        value(&kkt)
    );
    assert!(assert_finished_is_kkt(&kkt, &data));
    // A program above the size limit is refused, not built.
    let tiny = FinishOptions {
        max_entries: 10,
        ..Default::default()
    };
    assert!(finish(&kkt, &data, &tiny).is_none());
}

#[test]
fn polish_ends_at_the_first_finished_stage() {
    let data = tiny16();
    let net = gd(
        &data,
        &TrainConfig {
            width: 8,
            ..Default::default()
        },
    );
    let opts = PolishOptions {
        mode: kktcert::fit::polish::PolishMode::Sparse,
        ..Default::default()
    };
    let (_, rep) = polish(&net, &data, None, &opts, |_| {}).unwrap();
    let last = rep.stages.last().unwrap();
    assert!(last.finished, "{:?}", rep.stages);
    assert_eq!(rep.certificate.verdict, Verdict::Kkt);
    assert!(rep.stages.len() < PolishOptions::default().beta_factors.len());
}
