//! Fixtures, networks, checkpoints and training.

mod common;
use common::*;
use kktcert::fit::gd::{loss_and_grad, train, Loss, TrainConfig};
use kktcert::io::checkpoint::{load_net, Checkpoint};
use kktcert::model::data::{Dataset, Fixture};
use kktcert::model::net::{Evaluation, Network};
use nalgebra::{DMatrix, DVector};
use std::collections::BTreeMap;

#[test]
fn shipped_fixtures_are_up_to_date_and_deterministic() {
    let args = [
        ("tiny", ["4", "20", "0.5", "40", "200"]),
        ("small", ["6", "100", "1", "60", "500"]),
        ("std", ["10", "400", "1", "100", "1000"]),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (name, [k, d, sigma, n, t]) in args {
        let out = tmp.path().join(name);
        ok(&[
            "gen",
            "--k",
            k,
            "--d",
            d,
            "--sigma",
            sigma,
            "--n",
            n,
            "--n-test",
            t,
            "--seed",
            "0",
            "--means",
            "orthogonal",
            "--out",
            s(&out),
        ]);
        for file in [
            "fixture.json",
            "means.safetensors",
            "train.safetensors",
            "test.safetensors",
        ] {
            let fresh = std::fs::read(out.join(file)).unwrap();
            let shipped = std::fs::read(fixture(name).join(file)).unwrap();
            assert!(
                fresh == shipped,
                "fixtures/{name}/{file} is stale: run scripts/gen_fixtures.sh"
            );
        }
    }
}

#[test]
fn fixture_means_have_norm_sqrt_d_and_both_labels() {
    let fx = Fixture::load(&fixture("small")).unwrap();
    let d = fx.spec.d as f64;
    for j in 0..fx.means.k() {
        assert!((fx.means.mu().row(j).norm() - d.sqrt()).abs() < 1e-9);
    }
    // Orthogonal means: Gram matrix d·I.
    let g = fx.means.mu() * fx.means.mu().transpose();
    assert!((g - DMatrix::identity(6, 6) * d).amax() < 1e-9);
    assert!(fx.means.labels().contains(&1.0) && fx.means.labels().contains(&-1.0));
    assert_eq!(fx.train.n(), 60);
    let c = fx.train.cluster().unwrap();
    for (y, &ci) in fx.train.y().iter().zip(c) {
        assert_eq!(*y, fx.means.labels()[ci]);
    }
}

fn random_net(m: usize, d: usize, seed: u64) -> Network {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut r = || rng.gen_range(-1.0..1.0);
    Network::new(
        DMatrix::from_fn(m, d, |_, _| r()),
        DVector::from_fn(m, |_, _| r()),
        DVector::from_fn(m, |_, _| r()),
    )
    .unwrap()
}

#[test]
fn gradient_matches_finite_differences_and_homogeneity() {
    let net = random_net(7, 5, 1);
    let x = DVector::from_vec(vec![0.3, -0.2, 0.9, 0.1, -0.5]);
    let g = net.gradient(&x);
    let theta = net.flat();
    let h = 1e-6;
    for k in 0..theta.len() {
        let mut tp = theta.clone();
        tp[k] += h;
        let mut tm = theta.clone();
        tm[k] -= h;
        let fp = Network::from_flat(7, 5, &tp).unwrap().output(&x);
        let fm = Network::from_flat(7, 5, &tm).unwrap().output(&x);
        assert!(((fp - fm) / (2.0 * h) - g[k]).abs() < 1e-7, "param {k}");
    }
    // Euler: θ·∇N = 2N.
    let dot: f64 = theta.iter().zip(&g).map(|(a, b)| a * b).sum();
    assert!((dot - 2.0 * net.output(&x)).abs() < 1e-12);
    assert!((net.scaled(3.0).output(&x) - 9.0 * net.output(&x)).abs() < 1e-12);
}

/// The batch gradient equals the sum of per-sample gradients; `std` with
/// width 100 exercises the path that splits the products across cores.
fn check_batch_gradient(name: &str, m: usize) {
    let data = Dataset::load(&fixture(name).join("train.safetensors")).unwrap();
    let net = random_net(m, data.d(), 2);
    let lg = loss_and_grad(&net, &data, Loss::Exp);
    let mut expect = vec![0.0; net.num_params()];
    for i in 0..data.n() {
        let gi = net.gradient(&data.point(i));
        let q = lg.margins[i];
        let c = -(-q).exp() * data.y()[i] / data.n() as f64;
        for (e, g) in expect.iter_mut().zip(gi) {
            *e += c * g;
        }
    }
    let got = lg.grad.flat();
    let scale = expect.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let err = got
        .iter()
        .zip(&expect)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        err <= 1e-12 * scale.max(1.0),
        "{name}: max error {err} (scale {scale})"
    );
}

#[test]
fn batch_gradient_matches_per_sample_gradients() {
    check_batch_gradient("tiny", 6);
    check_batch_gradient("std", 100);
}

#[test]
fn rescaling_puts_min_margin_at_one() {
    let data = Dataset::load(&fixture("tiny").join("train.safetensors")).unwrap();
    let trained = train(
        &data,
        &TrainConfig {
            width: 8,
            ..Default::default()
        },
        |_, _, _| Ok(()),
    )
    .unwrap();
    let (hat, alpha) = trained.net.rescaled_to_unit_margin(&data).unwrap();
    let min_q = hat.margins(&data).into_iter().fold(f64::INFINITY, f64::min);
    assert!((min_q - 1.0).abs() < 1e-12);
    assert!(alpha > 0.0);
}

#[test]
fn training_on_std_generalises() {
    let fx = Fixture::load(&fixture("std")).unwrap();
    let cfg = TrainConfig {
        width: 100,
        ..Default::default()
    };
    let trained = train(&fx.train, &cfg, |_, _, _| Ok(())).unwrap();
    let tr = Evaluation::of(&trained.net, &fx.train).unwrap();
    let te = Evaluation::of(&trained.net, &fx.test).unwrap();
    assert_eq!(tr.accuracy, 1.0);
    assert!(te.accuracy > 0.99, "test accuracy {}", te.accuracy);
    // The log's normalised margin is min q / ‖θ‖².
    let last = trained.log.last().unwrap();
    assert!(
        (last.normalized_margin - tr.normalized_margin).abs()
            < 1e-12 * tr.normalized_margin.abs().max(1.0)
    );
}

#[test]
fn checkpoint_round_trip_and_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let net = random_net(3, 4, 3);
    let mut meta = BTreeMap::new();
    meta.insert("producer".to_string(), "test".to_string());
    let path = tmp.path().join("net.safetensors");
    Checkpoint::new(net.clone(), meta).save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back.net, net);
    assert_eq!(
        back.metadata["format"],
        kktcert::io::checkpoint::CHECKPOINT_FORMAT
    );
    assert_eq!(back.metadata["producer"], "test");
    // An F32 file written by hand loads and widens exactly.
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let w = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f32s(&[0.5, -0.5]);
    let v = f32s(&[1.0, -1.0]);
    use safetensors::{tensor::TensorView, Dtype};
    let tensors = vec![
        ("W", TensorView::new(Dtype::F32, vec![2, 3], &w).unwrap()),
        ("b", TensorView::new(Dtype::F32, vec![2], &b).unwrap()),
        ("v", TensorView::new(Dtype::F32, vec![2], &v).unwrap()),
    ];
    let p32 = tmp.path().join("f32.safetensors");
    safetensors::serialize_to_file(tensors, &None, &p32).unwrap();
    let net = load_net(&p32).unwrap();
    assert_eq!(net.w()[(1, 0)], 4.0);
    assert_eq!(net.b()[1], -0.5);
}

#[test]
fn train_and_eval_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("net.safetensors");
    let log = tmp.path().join("log.csv");
    let train = fixture("tiny").join("train.safetensors");
    let text = ok(&[
        "train",
        "--data",
        s(&train),
        "--width",
        "8",
        "--out",
        s(&out),
        "--log",
        s(&log),
    ]);
    assert!(text.contains("train accuracy 1.0000"), "{text}");
    let csv = std::fs::read_to_string(&log).unwrap();
    assert!(csv.starts_with("step,loss,train_accuracy,min_margin,normalized_margin"));
    let json = tmp.path().join("eval.json");
    let test = fixture("tiny").join("test.safetensors");
    ok(&[
        "eval",
        "--net",
        s(&out),
        "--data",
        s(&test),
        "--json",
        s(&json),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert!(v["accuracy"].as_f64().unwrap() > 0.95);
}
