//! Every kind of bad input gives a one-line error naming the file and the
//! field, with exit status 2 — never a panic.

mod common;
use common::*;
use safetensors::{tensor::TensorView, Dtype};
use std::path::{Path, PathBuf};

fn bytes_f64(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a safetensors file from (name, dtype, shape, raw bytes).
fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, dt, sh, b)| (*n, TensorView::new(*dt, sh.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

fn net_file(dir: &Path, w: Vec<f64>, wshape: Vec<usize>, b: Vec<f64>, v: Vec<f64>) -> PathBuf {
    let p = dir.join("net.safetensors");
    let (nb, nv) = (b.len(), v.len());
    write(
        &p,
        &[
            ("W", Dtype::F64, wshape, bytes_f64(&w)),
            ("b", Dtype::F64, vec![nb], bytes_f64(&b)),
            ("v", Dtype::F64, vec![nv], bytes_f64(&v)),
        ],
    );
    p
}

fn data_file(dir: &Path, x: Vec<f64>, n: usize, d: usize, y: Vec<f64>) -> PathBuf {
    let p = dir.join("data.safetensors");
    let ny = y.len();
    write(
        &p,
        &[
            ("X", Dtype::F64, vec![n, d], bytes_f64(&x)),
            ("y", Dtype::F64, vec![ny], bytes_f64(&y)),
        ],
    );
    p
}

fn good_data(dir: &Path) -> PathBuf {
    data_file(dir, vec![1.0, 0.0, 0.0, 1.0], 2, 2, vec![1.0, -1.0])
}

fn eval(net: &Path, data: &Path, needles: &[&str]) {
    fails_with(&["eval", "--net", s(net), "--data", s(data)], needles);
}

#[test]
fn wrong_shape_of_b() {
    let t = tempfile::tempdir().unwrap();
    let net = net_file(
        t.path(),
        vec![1.0; 4],
        vec![2, 2],
        vec![0.0; 3],
        vec![1.0; 2],
    );
    eval(
        &net,
        &good_data(t.path()),
        &["net.safetensors", "`b`", "expected [2]"],
    );
}

#[test]
fn nan_in_weights() {
    let t = tempfile::tempdir().unwrap();
    let net = net_file(
        t.path(),
        vec![1.0, f64::NAN, 0.0, 1.0],
        vec![2, 2],
        vec![0.0; 2],
        vec![1.0; 2],
    );
    eval(
        &net,
        &good_data(t.path()),
        &["net.safetensors", "`W`", "non-finite"],
    );
}

#[test]
fn infinity_in_data() {
    let t = tempfile::tempdir().unwrap();
    let net = net_file(
        t.path(),
        vec![1.0; 4],
        vec![2, 2],
        vec![0.0; 2],
        vec![1.0; 2],
    );
    let data = data_file(
        t.path(),
        vec![1.0, f64::INFINITY, 0.0, 1.0],
        2,
        2,
        vec![1.0, -1.0],
    );
    eval(&net, &data, &["data.safetensors", "`X`", "non-finite"]);
}

#[test]
fn dimension_mismatch_between_net_and_data() {
    let t = tempfile::tempdir().unwrap();
    let net = net_file(
        t.path(),
        vec![1.0; 6],
        vec![2, 3],
        vec![0.0; 2],
        vec![1.0; 2],
    );
    eval(&net, &good_data(t.path()), &["d = 3", "d = 2"]);
}

#[test]
fn truncated_file() {
    let t = tempfile::tempdir().unwrap();
    let net = net_file(
        t.path(),
        vec![1.0; 4],
        vec![2, 2],
        vec![0.0; 2],
        vec![1.0; 2],
    );
    let bytes = std::fs::read(&net).unwrap();
    std::fs::write(&net, &bytes[..bytes.len() - 5]).unwrap();
    eval(
        &net,
        &good_data(t.path()),
        &["net.safetensors", "truncated"],
    );
}

#[test]
fn not_a_safetensors_file() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("net.safetensors");
    std::fs::write(&p, "hello, I am text").unwrap();
    eval(
        &p,
        &good_data(t.path()),
        &["net.safetensors", "not a valid safetensors"],
    );
}

#[test]
fn missing_tensor() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("net.safetensors");
    write(
        &p,
        &[
            ("W", Dtype::F64, vec![1, 2], bytes_f64(&[1.0, 1.0])),
            ("b", Dtype::F64, vec![1], bytes_f64(&[0.0])),
        ],
    );
    eval(
        &p,
        &good_data(t.path()),
        &["net.safetensors", "`v`", "missing"],
    );
}

#[test]
fn wrong_dtype() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("net.safetensors");
    write(
        &p,
        &[
            ("W", Dtype::I64, vec![1, 2], vec![0u8; 16]),
            ("b", Dtype::F64, vec![1], bytes_f64(&[0.0])),
            ("v", Dtype::F64, vec![1], bytes_f64(&[1.0])),
        ],
    );
    eval(
        &p,
        &good_data(t.path()),
        &["net.safetensors", "`W`", "expected F64, F32, F16 or BF16"],
    );
}

#[test]
fn empty_dataset() {
    let t = tempfile::tempdir().unwrap();
    let net = net_file(
        t.path(),
        vec![1.0; 4],
        vec![2, 2],
        vec![0.0; 2],
        vec![1.0; 2],
    );
    let data = data_file(t.path(), vec![], 0, 2, vec![]);
    eval(&net, &data, &["data.safetensors", "`X`", "shape [0, 2]"]);
}

#[test]
fn labels_other_than_plus_minus_one() {
    let t = tempfile::tempdir().unwrap();
    let net = net_file(
        t.path(),
        vec![1.0; 4],
        vec![2, 2],
        vec![0.0; 2],
        vec![1.0; 2],
    );
    let data = data_file(t.path(), vec![1.0, 0.0, 0.0, 1.0], 2, 2, vec![1.0, 0.0]);
    eval(
        &net,
        &data,
        &["data.safetensors", "`y`", "label 0 at index 1"],
    );
}

#[test]
fn unreadable_path() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope.safetensors");
    eval(
        &missing,
        &good_data(t.path()),
        &["nope.safetensors", "cannot read"],
    );
}

#[test]
fn bad_fixture_json() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("fx");
    ok(&[
        "gen",
        "--k",
        "2",
        "--d",
        "3",
        "--n",
        "4",
        "--n-test",
        "4",
        "--out",
        s(&dir),
    ]);
    std::fs::write(dir.join("fixture.json"), "{ not json").unwrap();
    fails_with(
        &["audit", "--fixture", s(&dir)],
        &["fixture.json", "invalid JSON"],
    );
}

#[test]
fn negative_sigma_and_too_few_clusters() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("fx");
    fails_with(
        &[
            "gen",
            "--k",
            "3",
            "--d",
            "5",
            "--n",
            "4",
            "--sigma=-1",
            "--out",
            s(&out),
        ],
        &["sigma", "σ ≥ 0"],
    );
    fails_with(
        &["gen", "--k", "1", "--d", "5", "--n", "4", "--out", s(&out)],
        &["`k`", "k ≥ 2"],
    );
    fails_with(
        &[
            "gen",
            "--k",
            "3",
            "--d",
            "5",
            "--n",
            "4",
            "--labels",
            "fraction:0",
            "--out",
            s(&out),
        ],
        &["labels", "both labels"],
    );
}

#[test]
fn certificate_too_large_for_memory_is_refused_not_aborted() {
    let fx = fixture("tiny");
    let t = tempfile::tempdir().unwrap();
    let net = t.path().join("net.safetensors");
    ok(&[
        "train",
        "--data",
        s(&fx.join("train.safetensors")),
        "--width",
        "8",
        "--out",
        s(&net),
    ]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kktcert"))
        .args([
            "certify",
            "--net",
            s(&net),
            "--data",
            s(&fx.join("train.safetensors")),
        ])
        .env("KKTCERT_MEMORY_LIMIT", "2K")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("`memory`") && err.contains("needs about") && err.contains("is available"),
        "{err}"
    );
}

/// `kktcert … | head` closes the pipe before the results are written:
/// the program ends quietly with status 0, not with a panic.
#[test]
fn closed_stdout_ends_quietly() {
    let t = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kktcert"))
        .args(["gen", "--k", "4", "--d", "20", "--n", "40", "--out"])
        .arg(t.path().join("fx"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(t.path().join("fx").join("fixture.json").exists());
}
