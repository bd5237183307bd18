//! The polish reaches a certified KKT point on a small problem, and says why
//! when a checkpoint cannot be polished.

mod common;
use common::*;
use kktcert::fit::gd::{train, TrainConfig};
use kktcert::fit::polish::{polish, PolishOptions, ITERATION_BUDGET};
use kktcert::kkt::{certify, CertifyOptions, Norm, Verdict};
use kktcert::model::data::Dataset;
use kktcert::model::net::Network;
use nalgebra::{DMatrix, DVector};
use quickcheck::{QuickCheck, TestResult};
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The default stop is a work budget, not wall clock: a polish cut short by
/// it ends at the same iterate on every run, whatever the machine's load.
#[test]
fn the_default_budget_stops_at_the_same_point_every_time() {
    let defaults = PolishOptions::default();
    assert_eq!(defaults.time_limit, None);
    assert_eq!(defaults.iteration_budget, Some(ITERATION_BUDGET));
    let data = tiny16();
    let net = gd(
        &data,
        &TrainConfig {
            width: 6,
            init_scale: 0.5,
            ..Default::default()
        },
    );
    let opts = PolishOptions {
        iteration_budget: Some(300),
        ..defaults
    };
    let run = || polish(&net, &data, None, &opts, |_| {}).unwrap();
    let ((a, ra), (b, rb)) = (run(), run());
    assert_eq!(a.w(), b.w());
    assert_eq!(a.v(), b.v());
    assert_eq!(ra.stages.len(), rb.stages.len());
    let iterations: usize = ra.stages.iter().map(|s| s.lbfgs_iterations).sum();
    assert!(
        iterations <= 300 + opts.max_inner,
        "{iterations} iterations"
    );
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
    let ck = kktcert::io::checkpoint::Checkpoint::load(&out).unwrap();
    assert_eq!(ck.metadata["kkt_verdict"], "Kkt");
    assert_eq!(ck.metadata["polish_mode"], "near");
    let rel: f64 = ck.metadata["kkt_relative_upper"].parse().unwrap();
    assert!(rel <= 1e-4, "{rel}");
}

/// A GD net of `width` on the training set of `name`, polished in the
/// default (near) mode until certified.
fn polished(name: &str, width: usize) -> (Dataset, Network, kktcert::fit::polish::PolishReport) {
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

static RUN: AtomicUsize = AtomicUsize::new(0);
static CERTIFIED: AtomicUsize = AtomicUsize::new(0);

/// A random clustered problem (k 2–6, d 4–40, so the span form is on for
/// some and off for others), GD of width 2–9 from a random initialisation
/// scale, then the default (near) polish under a small budget: it refuses
/// a net that misclassifies, saying so, and otherwise ends either `kkt`
/// (which an independent certificate reproduces, at min margin 1 and a
/// cosine within the bound no KKT point exceeds) or with the certificate's
/// numbers for the stage it reached.
fn polish_says_kkt_or_why(seed: u64) -> TestResult {
    let data = clustered(seed, 4 + (seed % 37) as usize);
    let cfg = TrainConfig {
        width: 2 + (seed % 8) as usize,
        init_scale: [0.01, 0.1, 0.5][(seed % 3) as usize],
        seed,
        steps: 500,
        ..Default::default()
    };
    let Ok(trained) = train(&data, &cfg, |_, _, _| Ok(())) else {
        return TestResult::discard();
    };
    let opts = PolishOptions {
        stop_when_certified: true,
        time_limit: None,
        iteration_budget: Some(20_000),
        ..Default::default()
    };
    let fits = trained.net.margins(&data).iter().all(|&q| q > 0.0);
    let polished = polish(&trained.net, &data, None, &opts, |_| {});
    if !fits {
        // GD left a point misclassified: the polish must refuse, saying so.
        let refused = polished.is_err_and(|e| e.to_string().contains("does not classify"));
        return TestResult::from_bool(refused);
    }
    RUN.fetch_add(1, Ordering::Relaxed);
    let Ok((net, rep)) = polished else {
        return TestResult::failed();
    };
    let c = &rep.certificate;
    let mv = &rep.movement;
    // Whatever the verdict, the numbers are the certificate's, and no net
    // the polish returns is nearer the start than any KKT point can be.
    let stated = c.relative_lower <= c.relative_upper && c.relative_upper.is_finite();
    let capped = c.verdict != Verdict::Kkt || mv.cosine <= mv.cosine_bound + 1e-6;
    if c.verdict != Verdict::Kkt {
        return TestResult::from_bool(stated && !rep.stages.is_empty());
    }
    CERTIFIED.fetch_add(1, Ordering::Relaxed);
    // A `kkt` verdict is reproduced by an independent certificate of the
    // returned net, which sits at min margin 1.
    let again = certify(
        &net,
        &data,
        Norm::L2,
        &CertifyOptions {
            tol: opts.tol,
            delta_rel: Some(opts.tol),
            act_tol: opts.act_tol,
            ..Default::default()
        },
    )
    .unwrap();
    let min = net
        .margins(&data)
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min);
    TestResult::from_bool(stated && capped && again.verdict == Verdict::Kkt && min >= 1.0 - 1e-7)
}

#[test]
fn every_polished_random_problem_certifies_or_says_why() {
    QuickCheck::new()
        .tests(60)
        .max_tests(600)
        .quickcheck(polish_says_kkt_or_why as fn(u64) -> TestResult);
    // Not vacuous: GD fits most problems, and most of those end certified.
    let (run, kkt) = (
        RUN.load(Ordering::Relaxed),
        CERTIFIED.load(Ordering::Relaxed),
    );
    assert!(run >= 20 && kkt * 10 >= run * 9, "{kkt} of {run} certified");
}
