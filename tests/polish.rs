//! The polish reaches a certified KKT point on a small problem, and says why
//! when a checkpoint cannot be polished.

mod common;
use common::*;
use kktcert::data::Dataset;
use kktcert::kkt::Verdict;
use kktcert::net::Network;
use kktcert::polish::{polish, PolishOptions};
use kktcert::train::TrainConfig;
use nalgebra::{DMatrix, DVector};

#[test]
fn polish_certifies_a_small_trained_net() {
    let data = tiny16();
    let net = gd(
        &data,
        &TrainConfig {
            width: 4,
            init_scale: 0.5,
            ..Default::default()
        },
    );
    let opts = PolishOptions {
        time_limit: Some(60.0),
        stop_when_certified: true,
        ..Default::default()
    };
    let mut seen = 0;
    let (pol, rep) = polish(&net, &data, None, &opts, |_| seen += 1).unwrap();
    assert_eq!(seen, rep.stages.len());
    let c = &rep.certificate;
    assert_eq!(
        c.verdict,
        Verdict::Kkt,
        "ε_rel {} δ_rel {}",
        c.relative_upper,
        c.relative_complementarity
    );
    assert!(c.relative_upper <= 1e-4 && c.relative_complementarity <= 1e-4);
    assert!(rep.start.relative_upper > 100.0 * c.relative_upper);
    // The saved net is at min-margin 1 and classifies every training point.
    let q = pol.margins(&data);
    assert!(
        q.iter().all(|&v| v >= 1.0 - 1e-9),
        "min margin {:?}",
        q.iter().cloned().fold(f64::INFINITY, f64::min)
    );
    assert_eq!(rep.movement.train_agreement, 1.0);
}

#[test]
fn a_net_that_misclassifies_cannot_be_polished() {
    let data = Dataset::load(&fixture("tiny").join("train.safetensors")).unwrap();
    let net = Network::new(
        DMatrix::zeros(2, data.d()),
        DVector::zeros(2),
        DVector::zeros(2),
    )
    .unwrap();
    let err = polish(&net, &data, None, &PolishOptions::default(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("cannot polish"), "{err}");
}

#[test]
fn train_with_polish_saves_a_certified_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("net.safetensors");
    let train = fixture("tiny").join("train.safetensors");
    let text = ok(&[
        "train",
        "--data",
        s(&train),
        "--width",
        "8",
        "--polish",
        "--out",
        s(&out),
    ]);
    assert!(text.contains("→ Kkt"), "{text}");
    let ck = kktcert::checkpoint::Checkpoint::load(&out).unwrap();
    assert_eq!(ck.metadata["kkt_verdict"], "Kkt");
    assert_eq!(ck.metadata["polish_mode"], "near");
    let rel: f64 = ck.metadata["kkt_relative_upper"].parse().unwrap();
    assert!(rel <= 1e-4, "{rel}");
}

/// A GD net of `width` on the training set of `name`, polished in the
/// default (near) mode until certified.
fn polished(name: &str, width: usize) -> (Dataset, Network, kktcert::polish::PolishReport) {
    let data = Dataset::load(&fixture(name).join("train.safetensors")).unwrap();
    let cfg = TrainConfig {
        width,
        ..Default::default()
    };
    let net = gd(&data, &cfg);
    let opts = PolishOptions {
        stop_when_certified: true,
        ..Default::default()
    };
    let (kkt, rep) = polish(&net, &data, None, &opts, |_| {}).unwrap();
    assert_eq!(rep.certificate.verdict, Verdict::Kkt);
    (data, kkt, rep)
}

#[test]
fn near_mode_leaves_a_kkt_point_where_it_is() {
    let (data, kkt, rep) = polished("tiny", 8);
    assert!(rep.movement.cosine <= rep.movement.cosine_bound + 1e-12);
    let opts = PolishOptions {
        stop_when_certified: true,
        ..Default::default()
    };
    let (again, rep2) = polish(&kkt, &data, None, &opts, |_| {}).unwrap();
    assert!(
        rep2.movement.cosine >= 1.0 - 1e-9,
        "{}",
        rep2.movement.cosine
    );
    // The same function (the start is only re-balanced, which ReLU's
    // homogeneity leaves invisible).
    let (qa, qk) = (again.margins(&data), kkt.margins(&data));
    let diff = qa
        .iter()
        .zip(&qk)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-9, "{diff}");
}

#[test]
fn cosine_bound_is_the_start_outside_the_span() {
    // d > n: the span form is active; a KKT point cannot beat the bound.
    let (data, _, rep) = polished("small", 12);
    assert!(data.n() < data.d());
    let mv = &rep.movement;
    assert!(
        mv.cosine_bound < 1.0 && mv.cosine <= mv.cosine_bound + 1e-12,
        "{mv:?}"
    );
}
