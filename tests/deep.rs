//! Deep and multi-class ReLU nets: loading PyTorch-layout state dicts of any
//! depth, `eval`'s margins against a forward pass written out here with
//! plain loops, and the errors for files that are not a chain of layers.

mod common;
use common::*;
use rand::{Rng, SeedableRng};
use safetensors::{tensor::TensorView, Dtype};
use std::path::{Path, PathBuf};

/// A layer as the test holds it: weight rows \[out\]\[in\] and an optional bias.
struct Dense {
    w: Vec<Vec<f64>>,
    b: Option<Vec<f64>>,
}

fn random_layers(rng: &mut rand::rngs::StdRng, widths: &[usize], biases: &[bool]) -> Vec<Dense> {
    widths
        .windows(2)
        .zip(biases)
        .map(|(io, &has_bias)| Dense {
            w: (0..io[1])
                .map(|_| (0..io[0]).map(|_| rng.gen_range(-1.0..1.0)).collect())
                .collect(),
            b: has_bias.then(|| (0..io[1]).map(|_| rng.gen_range(-0.5..0.5)).collect()),
        })
        .collect()
}

/// Rounds to f32 (what the file will hold), so both sides see equal weights.
fn as_f32(layers: &mut [Dense]) {
    for l in layers {
        for row in &mut l.w {
            row.iter_mut().for_each(|v| *v = *v as f32 as f64);
        }
        if let Some(b) = &mut l.b {
            b.iter_mut().for_each(|v| *v = *v as f32 as f64);
        }
    }
}

/// Writes `layers` as an F32 PyTorch state dict under `prefixes`.
fn state_dict(path: &Path, layers: &[Dense], prefixes: &[&str]) {
    let f32_bytes =
        |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect() };
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (l, p) in layers.iter().zip(prefixes) {
        let flat: Vec<f64> = l.w.iter().flatten().copied().collect();
        owned.push((
            format!("{p}.weight"),
            vec![l.w.len(), l.w[0].len()],
            f32_bytes(&flat),
        ));
        if let Some(b) = &l.b {
            owned.push((format!("{p}.bias"), vec![b.len()], f32_bytes(b)));
        }
    }
    let views: Vec<(&str, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| {
            (
                n.as_str(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// Points `X` (F64) and integer labels `y` (I64).
fn points(path: &Path, x: &[Vec<f64>], y: &[i64]) {
    let xb: Vec<u8> = x.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    let yb: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "X",
            TensorView::new(Dtype::F64, vec![x.len(), x[0].len()], &xb).unwrap(),
        ),
        (
            "y",
            TensorView::new(Dtype::I64, vec![y.len()], &yb).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// f(x) by plain loops: ReLU after every layer but the last.
fn forward(layers: &[Dense], x: &[f64]) -> Vec<f64> {
    let mut h = x.to_vec();
    for (i, l) in layers.iter().enumerate() {
        h =
            l.w.iter()
                .enumerate()
                .map(|(r, row)| {
                    let u: f64 = row.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>()
                        + l.b.as_ref().map_or(0.0, |b| b[r]);
                    if i + 1 < layers.len() {
                        u.max(0.0)
                    } else {
                        u
                    }
                })
                .collect();
    }
    h
}

fn margin(f: &[f64], y: usize) -> f64 {
    let rival = f
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != y)
        .map(|(_, &v)| v)
        .fold(f64::NEG_INFINITY, f64::max);
    f[y] - rival
}

struct Case {
    dir: tempfile::TempDir,
    layers: Vec<Dense>,
    x: Vec<Vec<f64>>,
    y: Vec<i64>,
}

impl Case {
    fn net(&self) -> PathBuf {
        self.dir.path().join("net.safetensors")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data.safetensors")
    }
}

/// A 3-hidden-layer, 3-class net under the prefixes `layers.0/2/4/10` (the
/// last must sort after `4`: natural, not lexicographic, order).
fn three_hidden(biases: &[bool]) -> Case {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut layers = random_layers(&mut rng, &[5, 8, 6, 4, 3], biases);
    as_f32(&mut layers);
    let x: Vec<Vec<f64>> = (0..40)
        .map(|_| (0..5).map(|_| rng.gen_range(-2.0..2.0)).collect())
        .collect();
    let y: Vec<i64> = (0..40).map(|i| i % 3).collect();
    let dir = tempfile::tempdir().unwrap();
    let case = Case { dir, layers, x, y };
    state_dict(
        &case.net(),
        &case.layers,
        &["layers.0", "layers.2", "layers.4", "layers.10"],
    );
    points(&case.data(), &case.x, &case.y);
    case
}

fn eval_json(case: &Case) -> serde_json::Value {
    let out = case.dir.path().join("eval.json");
    ok(&[
        "eval",
        "--net",
        s(&case.net()),
        "--data",
        s(&case.data()),
        "--json",
        s(&out),
    ]);
    read_json(&out)
}

#[test]
fn eval_of_a_deep_multiclass_state_dict_matches_a_plain_forward_pass() {
    let case = three_hidden(&[true, false, false, false]);
    let e = eval_json(&case);
    assert_eq!(e["hidden_layers"], 3);
    assert_eq!(e["output"]["classes"], 3);
    assert_eq!(e["homogeneity"]["homogeneous"]["degree"], 4);
    let margins: Vec<f64> = case
        .x
        .iter()
        .zip(&case.y)
        .map(|(x, &y)| margin(&forward(&case.layers, x), y as usize))
        .collect();
    for (i, (got, want)) in e["margins"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&margins)
        .enumerate()
    {
        let got = got.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
            "point {i}: {got} vs {want}"
        );
    }
    let errors = margins.iter().filter(|&&q| q <= 0.0).count();
    assert_eq!(e["errors"], errors);
    let norm_sq: f64 = case
        .layers
        .iter()
        .map(|l| {
            l.w.iter().flatten().map(|v| v * v).sum::<f64>()
                + l.b.iter().flatten().map(|v| v * v).sum::<f64>()
        })
        .sum();
    let min_q = margins.iter().copied().fold(f64::INFINITY, f64::min);
    let want = min_q / norm_sq.powi(2);
    let got = e["normalized_margin"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
}

#[test]
fn a_bias_after_the_first_layer_leaves_the_normalised_margin_undefined() {
    let case = three_hidden(&[true, true, false, false]);
    let e = eval_json(&case);
    assert_eq!(e["homogeneity"]["not_homogeneous"]["layer"], 2);
    assert!(e["normalized_margin"].is_null());
}

#[test]
fn a_two_layer_state_dict_keeps_the_two_layer_report() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut layers = random_layers(&mut rng, &[4, 6, 1], &[true, false]);
    as_f32(&mut layers);
    let dir = tempfile::tempdir().unwrap();
    let (net, data, out) = (
        dir.path().join("n.safetensors"),
        dir.path().join("d.safetensors"),
        dir.path().join("e.json"),
    );
    state_dict(&net, &layers, &["0", "2"]);
    let x: Vec<Vec<f64>> = (0..10)
        .map(|_| (0..4).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect();
    let y: Vec<i64> = x
        .iter()
        .map(|x| if forward(&layers, x)[0] > 0.0 { 1 } else { -1 })
        .collect();
    points(&data, &x, &y);
    ok(&[
        "eval",
        "--net",
        s(&net),
        "--data",
        s(&data),
        "--json",
        s(&out),
    ]);
    let e = read_json(&out);
    assert!(e.get("hidden_layers").is_none(), "{e}");
    assert_eq!(e["accuracy"], 1.0);
}

#[test]
fn layers_that_do_not_chain_are_refused_naming_the_shapes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut layers = random_layers(&mut rng, &[5, 8, 6, 3], &[true, false, false]);
    layers[2].w = vec![vec![0.5; 7]; 3];
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net.safetensors");
    state_dict(&net, &layers, &["0", "2", "4"]);
    let data = dir.path().join("d.safetensors");
    points(&data, &[vec![0.0; 5]], &[0]);
    fails_with(
        &["eval", "--net", s(&net), "--data", s(&data)],
        &["net.safetensors", "`4.weight` takes 7 inputs", "6 outputs"],
    );
}

#[test]
fn a_class_label_out_of_range_is_refused_naming_the_field() {
    let case = three_hidden(&[true, false, false, false]);
    points(&case.data(), &case.x[..2], &[0, 3]);
    fails_with(
        &["eval", "--net", s(&case.net()), "--data", s(&case.data())],
        &["data.safetensors", "`y`", "expected a class 0…2"],
    );
}

// ---- the deep certificate ----

use kktcert::kkt::deep::{certify_deep, DeepCertifyOptions};
use kktcert::kkt::{certify, CertifyOptions, Norm, Verdict};
use kktcert::model::deep::{DeepNet, Labels, Layer};
use nalgebra::{DMatrix, DVector};

fn deep_opts(delta: Option<f64>) -> DeepCertifyOptions {
    DeepCertifyOptions {
        tol: 1e-4,
        delta_rel: delta,
        act_tol: 1e-9,
    }
}

#[test]
fn the_two_layer_certificate_is_the_case_of_one_hidden_layer() {
    let data = clustered(3, 30);
    let net = gd(
        &data,
        &kktcert::fit::gd::TrainConfig {
            width: 12,
            ..Default::default()
        },
    );
    let deep = DeepNet::from_network(&net, 0.0);
    let labels = Labels::Signs(data.y().to_vec());
    for delta in [Some(1e-4), Some(1e-2), None] {
        let two = certify(
            &net,
            &data,
            Norm::L2,
            &CertifyOptions {
                tol: 1e-4,
                delta_rel: delta,
                act_tol: 1e-9,
                ..Default::default()
            },
        )
        .unwrap();
        let d = certify_deep(&deep, data.x(), &labels, &deep_opts(delta)).unwrap();
        assert!(
            two.ambiguous_pairs.is_empty(),
            "a generic GD net has no kinks"
        );
        for (a, b) in [(d.upper, two.upper), (d.lower, two.lower)] {
            assert!(
                (a - b).abs() <= 1e-9 * two.upper.max(1e-12),
                "δ {delta:?}: deep {a} vs two-layer {b}"
            );
        }
        assert_eq!(d.verdict, two.verdict);
    }
}

/// f(x) = w₃ᵀ ReLU(W₂ ReLU(W₁ x)) with one path alive: W₁ = e₁ᵀ-ish so the
/// net is the scalar a·b·c·x₁ on x₁ > 0. With one point x = (1, 0) of
/// label +1 and a = b = c, θ = ∇q·λ holds for λ = 1/(3a²)·… exactly: the
/// three weights of the path are equal, which is the KKT condition of
/// min ½(a² + b² + c²) s.t. abc ≥ 1.
#[test]
fn a_single_path_net_with_equal_weights_is_kkt_and_unequal_is_not() {
    let x = DMatrix::from_row_slice(1, 2, &[1.0, 0.0]);
    let labels = Labels::Signs(vec![1.0]);
    let path = |a: f64, b: f64, c: f64| {
        DeepNet::new(vec![
            Layer::new(DMatrix::from_row_slice(1, 2, &[a, 0.0]), None).unwrap(),
            Layer::new(DMatrix::from_row_slice(1, 1, &[b]), None).unwrap(),
            Layer::new(DMatrix::from_row_slice(1, 1, &[c]), None).unwrap(),
        ])
        .unwrap()
    };
    let ok = certify_deep(&path(1.3, 1.3, 1.3), &x, &labels, &deep_opts(Some(1e-4))).unwrap();
    assert_eq!(ok.verdict, Verdict::Kkt, "{ok:?}");
    assert!(ok.relative_upper < 1e-12);
    // Unequal: the best residual is the distance from θ̂ to the ray of ∇q,
    // a closed form: θ̂ = s(a, b, c), ∇q ∝ (bc, ac, ab) at θ̂.
    let (a, b, c) = (2.0f64, 1.0f64, 0.5f64);
    let bad = certify_deep(&path(a, b, c), &x, &labels, &deep_opts(None)).unwrap();
    let th = DVector::from_vec(vec![a, b, c]);
    let g = DVector::from_vec(vec![b * c, a * c, a * b]);
    let want = (&th - &g * (th.dot(&g) / g.norm_squared())).norm() / th.norm();
    assert!(
        (bad.relative_upper - want).abs() < 1e-12,
        "{} vs {want}",
        bad.relative_upper
    );
    assert!((bad.relative_lower - want).abs() < 1e-9);
    assert_eq!(bad.verdict, Verdict::NotKkt);
}

#[test]
fn an_exact_kink_keeps_the_bracket_sound_and_says_so() {
    // A second hidden neuron with pre-activation exactly 0 at the point.
    let x = DMatrix::from_row_slice(1, 2, &[1.0, 0.0]);
    let net = DeepNet::new(vec![
        Layer::new(DMatrix::from_row_slice(2, 2, &[1.3, 0.0, 0.0, 1.0]), None).unwrap(),
        Layer::new(DMatrix::from_row_slice(1, 2, &[1.3, 0.7]), None).unwrap(),
        Layer::new(DMatrix::from_row_slice(1, 1, &[1.3]), None).unwrap(),
    ])
    .unwrap();
    let c = certify_deep(&net, &x, &Labels::Signs(vec![1.0]), &deep_opts(Some(1e-4))).unwrap();
    assert_eq!(c.exact_kink_points, 1);
    assert!(c.lower <= c.upper + 1e-15);
    // The upper bound may not use the kinked point: λ = 0, residual ‖θ̂‖.
    assert!((c.relative_upper - 1.0).abs() < 1e-12);
    assert_ne!(c.verdict, Verdict::Kkt);
}

#[test]
fn a_bias_after_the_first_layer_is_refused() {
    let net = DeepNet::new(vec![
        Layer::new(DMatrix::from_row_slice(1, 1, &[1.0]), None).unwrap(),
        Layer::new(
            DMatrix::from_row_slice(1, 1, &[1.0]),
            Some(DVector::from_vec(vec![0.5])),
        )
        .unwrap(),
    ])
    .unwrap();
    let x = DMatrix::from_row_slice(1, 1, &[1.0]);
    let e = certify_deep(&net, &x, &Labels::Signs(vec![1.0]), &deep_opts(None)).unwrap_err();
    assert!(e.to_string().contains("layer 2 has a nonzero bias"), "{e}");
}

#[test]
fn the_polish_carries_an_unbalanced_path_to_its_kkt_point() {
    // min ½(a² + b² + c²) s.t. a·b·c ≥ 1 has its KKT point at a = b = c = 1.
    use kktcert::fit::deep::{polish_deep, DeepPolishOptions};
    let x = DMatrix::from_row_slice(1, 2, &[1.0, 0.0]);
    let labels = Labels::Signs(vec![1.0]);
    let net = DeepNet::new(vec![
        Layer::new(DMatrix::from_row_slice(1, 2, &[2.0, 0.0]), None).unwrap(),
        Layer::new(DMatrix::from_row_slice(1, 1, &[1.0]), None).unwrap(),
        Layer::new(DMatrix::from_row_slice(1, 1, &[0.5]), None).unwrap(),
    ])
    .unwrap();
    let (out, rep) = polish_deep(&net, &x, &labels, &DeepPolishOptions::default(), |_| {}).unwrap();
    assert_eq!(rep.certificate.verdict, Verdict::Kkt, "{:?}", rep.rounds);
    for (got, l) in out.layers().iter().map(|l| l.weight()[(0, 0)]).zip(0..) {
        assert!((got - 1.0).abs() < 1e-4, "layer {l}: {got}");
    }
    assert_eq!(rep.train_agreement, 1.0);
    // The certificate it reports is the one `certify` gives the returned net.
    let again = certify_deep(
        &out,
        &x,
        &labels,
        &DeepCertifyOptions {
            tol: 1e-4,
            delta_rel: Some(1e-4),
            act_tol: 1e-6,
        },
    )
    .unwrap();
    assert!((again.relative_upper - rep.certificate.relative_upper).abs() < 1e-9);
}

/// A random bias-free 2-hidden-layer, 3-class net and its own predictions
/// as labels (every margin positive), from `seed`.
fn random_case(seed: u64) -> (DeepNet, DMatrix<f64>, Labels) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let widths = [4usize, 7, 6, 3];
    let layers: Vec<Layer> = widths
        .windows(2)
        .enumerate()
        .map(|(i, io)| {
            let w = DMatrix::from_fn(io[1], io[0], |_, _| rng.gen_range(-1.0..1.0));
            let b = (i == 0).then(|| DVector::from_fn(io[1], |_, _| rng.gen_range(-0.3..0.3)));
            Layer::new(w, b).unwrap()
        })
        .collect();
    let net = DeepNet::new(layers).unwrap();
    let x = DMatrix::from_fn(12, 4, |_, _| rng.gen_range(-2.0..2.0));
    let f = net.forward(&x);
    let y = f.row_iter().map(|r| r.transpose().argmax().0).collect();
    (net, x, Labels::Classes(y))
}

/// The certificate is unchanged by a permutation of a hidden layer's
/// neurons and by θ ↦ αθ (the net is rescaled onto min-margin 1 first), to
/// 1e-9 relative; and its bracket is ordered.
fn deep_invariances(seed: u64, alpha: u8) -> quickcheck::TestResult {
    let (net, x, labels) = random_case(seed);
    let Ok(base) = certify_deep(&net, &x, &labels, &deep_opts(Some(1e-2))) else {
        return quickcheck::TestResult::discard(); // a tie: a zero margin
    };
    let alpha = 0.25 + alpha as f64 / 64.0;
    let scaled = net.with_flat(&(net.flat() * alpha)).unwrap();
    let mut layers = net.layers().to_vec();
    let m = layers[0].outputs();
    let shift = (seed % m as u64) as usize;
    let perm: Vec<usize> = (0..m).map(|i| (i * 3 + shift) % m).collect();
    let (w0, b0, w1) = (
        layers[0].weight().clone(),
        layers[0].bias().cloned(),
        layers[1].weight().clone(),
    );
    layers[0] = Layer::new(w0.select_rows(&perm), b0.map(|b| b.select_rows(&perm))).unwrap();
    layers[1] = Layer::new(w1.select_columns(&perm), None).unwrap();
    let permuted = DeepNet::new(layers).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12);
    let ok = [scaled, permuted].iter().all(|other| {
        let c = certify_deep(other, &x, &labels, &deep_opts(Some(1e-2))).unwrap();
        close(c.relative_upper, base.relative_upper) && close(c.relative_lower, base.relative_lower)
    });
    quickcheck::TestResult::from_bool(ok && base.lower <= base.upper)
}

#[test]
fn the_deep_certificate_is_invariant_under_permutation_and_scale() {
    quickcheck::QuickCheck::new()
        .tests(40)
        .max_tests(400)
        .min_tests_passed(40)
        .quickcheck(deep_invariances as fn(u64, u8) -> quickcheck::TestResult);
}

/// `distance` on a deep 3-class state dict with biases everywhere: every
/// point exact inside the box, each witness flips the prediction under
/// this file's own forward pass at the reported distance; bad options
/// exit 2 naming them.
#[test]
fn distance_of_a_deep_multiclass_state_dict_is_exact_and_its_witnesses_flip() {
    let case = three_hidden(&[true, true, true, true]);
    let out = case.dir.path().join("distance.json");
    let (net, data) = (case.net(), case.data());
    let common = ["distance", "--net", s(&net), "--data", s(&data)];
    ok(&[
        &common[..],
        &["--indices", "0:12", "--box", "-3:3", "--json", s(&out)],
    ]
    .concat());
    let j = read_json(&out);
    let points = j["points"].as_array().unwrap();
    assert_eq!(points.len(), 12);
    for p in points {
        let i = p["index"].as_u64().unwrap() as usize;
        assert_eq!(p["status"], "exact", "point {i}: {p}");
        let f0 = forward(&case.layers, &case.x[i]);
        let c = (0..3).max_by(|&a, &b| f0[a].total_cmp(&f0[b])).unwrap();
        assert_eq!(p["leaves"], c as i64);
        let w: Vec<f64> = p["witness"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            w.iter().all(|v| (-3.0..=3.0).contains(v)),
            "point {i} leaves the box"
        );
        let f = forward(&case.layers, &w);
        let rival = (0..3)
            .filter(|&j| j != c)
            .map(|j| f[j])
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(rival >= f[c], "point {i}: the witness keeps class {c}");
        let dist = w
            .iter()
            .zip(&case.x[i])
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let (lower, upper) = (p["lower"].as_f64().unwrap(), p["upper"].as_f64().unwrap());
        assert!(
            (dist - upper).abs() <= 1e-12 * upper.max(1.0),
            "point {i}: {dist} vs {upper}"
        );
        assert!(
            upper - lower <= 1e-9 * upper.max(1.0),
            "point {i}: [{lower}, {upper}]"
        );
    }
    fails_with(
        &[&common[..], &["--box", "1:0"]].concat(),
        &["--box", "LO:HI"],
    );
    fails_with(
        &[&common[..], &["--target", "3"]].concat(),
        &["target", "class 3"],
    );
    fails_with(
        &[&common[..], &["--box", "0:1"]].concat(),
        &["box", "outside"],
    );
}
