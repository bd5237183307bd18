//! Oracles for the KKT certificate: constructed KKT points, far-from-KKT
//! nets, and quickcheck properties of the certified bracket.

mod common;
use common::*;
use kktcert::fit::gd::{train, TrainConfig};
use kktcert::kkt::{certify, CertifyOptions, Method, Norm, Verdict, WarmStart};
use kktcert::model::data::Dataset;
use kktcert::model::net::Network;
use nalgebra::{DMatrix, DVector};
use quickcheck::{QuickCheck, TestResult};

fn opts(delta: Option<f64>) -> CertifyOptions {
    CertifyOptions {
        tol: 1e-6,
        delta_rel: delta,
        act_tol: 1e-9,
        ..Default::default()
    }
}

/// One point x (label +1) and one neuron (w, b) = (x, 1)/√(‖x‖²+1), v = 1,
/// plus `zeros` all-zero neurons: θ = λ h(x) with λ² = 1/(‖x‖²+1), so KKT.
fn single_point_kkt(zeros: usize) -> (Network, Dataset) {
    let x: DVector<f64> = DVector::from_vec(vec![0.6, -0.3, 1.2]);
    let s = (x.norm_squared() + 1.0).sqrt();
    let m = 1 + zeros;
    let mut w = DMatrix::zeros(m, 3);
    w.row_mut(0).copy_from(&(x.transpose() / s));
    let mut b = DVector::zeros(m);
    b[0] = 1.0 / s;
    let mut v = DVector::zeros(m);
    v[0] = 1.0;
    let data = Dataset::new(DMatrix::from_row_slice(1, 3, x.as_slice()), vec![1.0], None).unwrap();
    (Network::new(w, b, v).unwrap(), data)
}

#[test]
fn single_point_is_certified_kkt_in_both_norms() {
    for zeros in [0, 3] {
        let (net, data) = single_point_kkt(zeros);
        for norm in [Norm::L2, Norm::Linf] {
            let c = certify(&net.scaled(3.7), &data, norm, &opts(Some(1e-6))).unwrap();
            assert_eq!(c.verdict, Verdict::Kkt, "{norm:?} zeros={zeros}: {c:?}");
            assert!(c.relative_upper < 1e-12, "{}", c.relative_upper);
            assert_eq!(c.support.len(), 1);
            // Euler: ‖θ̂‖² = 2 Σ λ_i at an exact KKT point.
            let theta_sq = c.theta_norm.powi(2);
            if norm == Norm::L2 {
                assert!((theta_sq - 2.0 * c.lambda[0]).abs() < 1e-12 * theta_sq);
            }
        }
    }
}

#[test]
fn unbalanced_layers_are_not_kkt() {
    // Same function, layers unbalanced (w ×2, v ×½): never a KKT point of (2).
    let (net, data) = single_point_kkt(0);
    let skew = Network::new(net.w() * 2.0, net.b() * 2.0, net.v() * 0.5).unwrap();
    let c = certify(&skew, &data, Norm::L2, &opts(Some(1e-6))).unwrap();
    assert_eq!(c.verdict, Verdict::NotKkt);
    assert!(c.relative_lower > 0.1);
}

#[test]
fn gd_net_on_std_brackets_tightly_and_is_not_kkt() {
    let data = Dataset::load(&fixture("std").join("train.safetensors")).unwrap();
    let net = gd(
        &data,
        &TrainConfig {
            width: 100,
            ..Default::default()
        },
    );
    for norm in [Norm::L2, Norm::Linf] {
        let c = certify(&net, &data, norm, &CertifyOptions::default()).unwrap();
        assert!(
            (c.upper - c.lower) / c.upper <= 1e-6,
            "{norm:?}: [{}, {}]",
            c.lower,
            c.upper
        );
        assert_eq!(c.verdict, Verdict::NotKkt);
        assert!(c.relative_complementarity <= 1e-4 * (1.0 + 1e-9));
    }
}

/// A small net trained on a subset of `tiny`, so every margin is positive.
fn small_case(seed: u64) -> Option<(Network, Dataset)> {
    let full = Dataset::load(&fixture("tiny").join("train.safetensors")).ok()?;
    let idx: Vec<usize> = (0..full.n())
        .filter(|i| (i + seed as usize).is_multiple_of(3))
        .collect();
    let data = full.subset(&idx).ok()?;
    let cfg = TrainConfig {
        width: 2 + (seed % 5) as usize,
        seed,
        steps: 300,
        ..Default::default()
    };
    let net = train(&data, &cfg, |_, _, _| Ok(())).ok()?.net;
    net.rescaled_to_unit_margin(&data).ok()?;
    Some((net, data))
}

fn bracket_properties(seed: u64) -> TestResult {
    let Some((net, data)) = small_case(seed) else {
        return TestResult::discard();
    };
    let o = opts(Some(1e-3));
    let l2 = certify(&net, &data, Norm::L2, &o).unwrap();
    let li = certify(&net, &data, Norm::Linf, &o).unwrap();
    let ok_bracket =
        |c: &kktcert::kkt::Certificate| 0.0 <= c.lower && c.lower <= c.upper * (1.0 + 1e-12);
    // Rescaling θ and permuting neurons change nothing.
    let m = net.width();
    let perm: Vec<usize> = (0..m).rev().collect();
    let permuted = Network::new(
        net.w().select_rows(&perm),
        DVector::from_iterator(m, perm.iter().map(|&j| net.b()[j])),
        DVector::from_iterator(m, perm.iter().map(|&j| net.v()[j])),
    )
    .unwrap();
    let scaled = certify(&net.scaled(2.5), &data, Norm::L2, &o).unwrap();
    let perm_c = certify(&permuted, &data, Norm::L2, &o).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-8 * a.abs().max(1e-12);
    // Norm sandwich: ‖r‖∞ ≤ ‖r‖₂ ≤ √p ‖r‖∞ carries over to the optima.
    let p = net.num_params() as f64;
    let sandwich =
        li.lower <= l2.upper * (1.0 + 1e-9) && l2.lower <= p.sqrt() * li.upper * (1.0 + 1e-9);
    // A looser complementarity row never raises the optimum.
    let loose = certify(&net, &data, Norm::L2, &opts(None)).unwrap();
    let monotone = loose.lower <= l2.upper * (1.0 + 1e-9);
    let ok = ok_bracket(&l2)
        && ok_bracket(&li)
        && close(scaled.relative_upper, l2.relative_upper)
        && close(perm_c.relative_upper, l2.relative_upper)
        && sandwich
        && monotone;
    if !ok {
        eprintln!(
            "seed {seed}: l2 [{}, {}] linf [{}, {}] scaled {} perm {} loose {}",
            l2.lower,
            l2.upper,
            li.lower,
            li.upper,
            scaled.relative_upper,
            perm_c.relative_upper,
            loose.lower
        );
    }
    TestResult::from_bool(ok)
}

#[test]
fn certified_bracket_properties() {
    QuickCheck::new()
        .tests(40)
        .max_tests(800)
        .min_tests_passed(40)
        .quickcheck(bracket_properties as fn(u64) -> TestResult);
}

/// The working set (from 2 points, so it must generate columns and pairs)
/// returns the full Gram's bracket to 1e-9 relative, in both norms, with and
/// without the complementarity row, with many ambiguous pairs (τ = 0.05);
/// so does the full Gram warm-started from its own support or from every
/// point and pair (a hint never changes the bracket).
fn working_set_matches_full(seed: u64) -> TestResult {
    let Some((net, data)) = small_case(seed) else {
        return TestResult::discard();
    };
    let mut ok = true;
    for (norm, delta) in [
        (Norm::L2, Some(1e-3)),
        (Norm::L2, None),
        (Norm::Linf, Some(1e-3)),
    ] {
        let base = CertifyOptions {
            act_tol: 0.05,
            ..opts(delta)
        };
        let with = |method| {
            certify(
                &net,
                &data,
                norm,
                &CertifyOptions {
                    method,
                    ..base.clone()
                },
            )
        };
        let full = with(Method::Full).unwrap();
        let ws = with(Method::WorkingSet { initial: 2 }).unwrap();
        let stats = ws.working_set.as_ref().unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * full.upper.max(1e-12);
        let everything = WarmStart {
            points: (0..data.n()).collect(),
            pairs: full
                .ambiguous_pairs
                .iter()
                .map(|p| (p.sample, p.neuron))
                .collect(),
        };
        for warm in [full.warm_start(), everything] {
            let warmed = certify(
                &net,
                &data,
                norm,
                &CertifyOptions {
                    method: Method::Full,
                    warm: Some(warm),
                    ..base.clone()
                },
            )
            .unwrap();
            ok &= close(full.upper, warmed.upper) && close(full.lower, warmed.lower);
        }
        let agree = close(full.upper, ws.upper) && close(full.lower, ws.lower);
        if !agree || !stats.converged {
            eprintln!(
                "seed {seed} {norm:?} δ {delta:?}: full [{}, {}] ws [{}, {}] {stats:?}",
                full.lower, full.upper, ws.lower, ws.upper
            );
        }
        ok &= agree && stats.converged;
    }
    TestResult::from_bool(ok)
}

#[test]
fn working_set_brackets_equal_the_full_grams() {
    QuickCheck::new()
        .tests(25)
        .max_tests(500)
        .min_tests_passed(25)
        .quickcheck(working_set_matches_full as fn(u64) -> TestResult);
}

#[test]
#[ignore = "needs KKTCERT_PYTHON (numpy, scipy, safetensors); CI runs it"]
fn scipy_agrees_on_the_same_g() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net.safetensors");
    let train = fixture("small").join("train.safetensors");
    ok(&[
        "train",
        "--data",
        s(&train),
        "--width",
        "20",
        "--out",
        s(&net),
    ]);
    let want = run_script(&py, "kkt_scipy.py", &[&net, &train]);
    for norm in ["l2", "linf"] {
        let json = tmp.path().join(format!("{norm}.json"));
        ok(&[
            "certify",
            "--net",
            s(&net),
            "--data",
            s(&train),
            "--norm",
            norm,
            "--delta",
            "inf",
            "--act-tol",
            "0",
            "--json",
            s(&json),
        ]);
        let got: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        let (lo, up) = (
            got["lower"].as_f64().unwrap(),
            got["upper"].as_f64().unwrap(),
        );
        let w = want[norm].as_f64().unwrap();
        assert!(
            lo <= w * (1.0 + 1e-9) && w <= up * (1.0 + 1e-9),
            "{norm}: SciPy {w} outside [{lo}, {up}]"
        );
        assert!((up - w).abs() <= 1e-7 * w, "{norm}: {up} vs SciPy {w}");
    }
}

/// The span form loses nothing: on random GD nets of small clustered
/// problems with d > n (so W keeps an initialisation part W⊥ outside
/// span{x_i}), the certificate of the span coordinates (C, b, v) on Z
/// equals that of the in-span net C Qᵀ on X, and W⊥, orthogonal to every
/// margin gradient, adds exactly (scale·‖W⊥‖)² to the squared residual.
#[test]
fn span_form_and_full_form_certificates_agree() {
    let exact = CertifyOptions {
        tol: 1e-6,
        delta_rel: None,
        act_tol: 0.0,
        ..Default::default()
    };
    let mut checked = 0;
    for seed in 0..12u64 {
        let data = clustered(seed, 40);
        let cfg = TrainConfig {
            width: 3 + (seed % 4) as usize,
            init_scale: 0.5,
            seed,
            steps: 300,
            ..Default::default()
        };
        let net = train(&data, &cfg, |_, _, _| Ok(())).unwrap().net;
        if net.margins(&data).iter().any(|&q| q <= 0.0) {
            continue;
        }
        let span = kktcert::fit::span::Span::of(data.x());
        let (c, perp) = span.project(data.x(), net.w());
        assert!(perp.norm() > 1e-3 * net.w().norm(), "W⊥ is not exercised");
        let reduced = Network::new(c, net.b().clone(), net.v().clone()).unwrap();
        let z = Dataset::new(span.coords().clone(), data.y().to_vec(), None).unwrap();
        let in_span = span
            .full_net(
                data.x(),
                &reduced,
                &DMatrix::zeros(perp.nrows(), perp.ncols()),
            )
            .unwrap();
        let of_span = certify(&reduced, &z, Norm::L2, &exact).unwrap();
        let of_in = certify(&in_span, &data, Norm::L2, &exact).unwrap();
        let of_full = certify(&net, &data, Norm::L2, &exact).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-8 * (1.0 + a.abs().max(b.abs()));
        assert!(
            close(of_span.upper, of_in.upper),
            "{} vs {}",
            of_span.upper,
            of_in.upper
        );
        assert!(
            close(of_span.lower, of_in.lower),
            "{} vs {}",
            of_span.lower,
            of_in.lower
        );
        let perp_sq = (of_full.scale * perp.norm()).powi(2);
        let want = (of_in.upper.powi(2) + perp_sq).sqrt();
        assert!(close(of_full.upper, want), "{} vs {want}", of_full.upper);
        assert!(of_full.lower <= of_full.upper && of_full.lower >= of_in.lower * (1.0 - 1e-8));
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} nets fit");
}
