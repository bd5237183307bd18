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

/// A 2×2 net with the given W, b and v (F64).
fn net_with(dir: &Path, w: Vec<f64>, b: Vec<f64>) -> PathBuf {
    let wshape = vec![2, w.len() / 2];
    net_file(dir, w, wshape, b, vec![1.0; 2])
}

fn good_net(dir: &Path) -> PathBuf {
    net_with(dir, vec![1.0; 4], vec![0.0; 2])
}

/// A net file whose bytes are then changed by `edit`.
fn edited_net(dir: &Path, edit: fn(Vec<u8>) -> Vec<u8>) -> PathBuf {
    let p = good_net(dir);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, edit(bytes)).unwrap();
    p
}

/// A net file with exactly these tensors.
fn raw_net(dir: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
    let p = dir.join("net.safetensors");
    write(&p, tensors);
    p
}

/// One bad input to `eval`: how to write the net and the data, and what
/// the one-line error must say.
struct Case {
    name: &'static str,
    net: fn(&Path) -> PathBuf,
    data: fn(&Path) -> PathBuf,
    says: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "wrong shape of b",
        net: |t| net_with(t, vec![1.0; 4], vec![0.0; 3]),
        data: good_data,
        says: &["net.safetensors", "`b`", "expected [2]"],
    },
    Case {
        name: "NaN in the weights",
        net: |t| net_with(t, vec![1.0, f64::NAN, 0.0, 1.0], vec![0.0; 2]),
        data: good_data,
        says: &["net.safetensors", "`W`", "non-finite"],
    },
    Case {
        name: "infinity in the data",
        net: good_net,
        data: |t| data_file(t, vec![1.0, f64::INFINITY, 0.0, 1.0], 2, 2, vec![1.0, -1.0]),
        says: &["data.safetensors", "`X`", "non-finite"],
    },
    Case {
        name: "d of the net and of the data differ",
        net: |t| net_with(t, vec![1.0; 6], vec![0.0; 2]),
        data: good_data,
        says: &["d = 3", "d = 2"],
    },
    Case {
        name: "truncated file",
        net: |t| edited_net(t, |b| b[..b.len() - 5].to_vec()),
        data: good_data,
        says: &["net.safetensors", "truncated"],
    },
    Case {
        name: "not a safetensors file",
        net: |t| edited_net(t, |_| b"hello, I am text".to_vec()),
        data: good_data,
        says: &["net.safetensors", "not a valid safetensors"],
    },
    Case {
        name: "a missing tensor",
        net: |t| {
            raw_net(
                t,
                &[
                    ("W", Dtype::F64, vec![1, 2], bytes_f64(&[1.0, 1.0])),
                    ("b", Dtype::F64, vec![1], bytes_f64(&[0.0])),
                ],
            )
        },
        data: good_data,
        says: &["net.safetensors", "`v`", "missing"],
    },
    Case {
        name: "an integer weight",
        net: |t| {
            raw_net(
                t,
                &[
                    ("W", Dtype::I64, vec![1, 2], vec![0u8; 16]),
                    ("b", Dtype::F64, vec![1], bytes_f64(&[0.0])),
                    ("v", Dtype::F64, vec![1], bytes_f64(&[1.0])),
                ],
            )
        },
        data: good_data,
        says: &["net.safetensors", "`W`", "expected F64, F32, F16 or BF16"],
    },
    Case {
        name: "an empty dataset",
        net: good_net,
        data: |t| data_file(t, vec![], 0, 2, vec![]),
        says: &["data.safetensors", "`X`", "shape [0, 2]"],
    },
    Case {
        name: "a label other than ±1",
        net: good_net,
        data: |t| data_file(t, vec![1.0, 0.0, 0.0, 1.0], 2, 2, vec![1.0, 0.0]),
        says: &["data.safetensors", "`y`", "label 0 at index 1"],
    },
    Case {
        name: "a missing file",
        net: |t| t.join("nope.safetensors"),
        data: good_data,
        says: &["nope.safetensors", "cannot read"],
    },
];

#[test]
fn bad_files_give_one_line_errors() {
    for case in CASES {
        let t = tempfile::tempdir().unwrap();
        let (net, data) = ((case.net)(t.path()), (case.data)(t.path()));
        eprintln!("case: {}", case.name);
        fails_with(&["eval", "--net", s(&net), "--data", s(&data)], case.says);
    }
}

/// Flags with a malformed value: clap's parsers refuse them with status 2.
#[test]
fn malformed_flag_values_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (net, data) = (good_net(t.path()), good_data(t.path()));
    let cases: &[(&[&str], &[&str])] = &[
        (&["distance", "--shard", "3/2"], &["--shard", "0 ≤ i < N"]),
        (
            &["distance", "--indices", "a:b"],
            &["--indices", "START:END"],
        ),
        (&["distance", "--indices", "1:9"], &["indices", "END ≤ 2"]),
        (&["certify", "--delta=-1"], &["--delta", "or inf"]),
        (
            &["certify", "--norm", "l3"],
            &["--norm", "possible values: l2, linf, both"],
        ),
        (
            &["certify", "--method", "fast"],
            &["--method", "working-set"],
        ),
    ];
    for (args, says) in cases {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--net", s(&net), "--data", s(&data)]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kktcert"))
            .args(&all)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(!err.contains("panicked"), "{all:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
        for needle in *says {
            assert!(err.contains(needle), "{all:?}: `{needle}` not in {err}");
        }
    }
}

/// A shard record edited by hand (an index beyond its count) is refused,
/// not indexed out of bounds.
#[test]
fn merge_refuses_an_impossible_shard_record() {
    let t = tempfile::tempdir().unwrap();
    let shard = t.path().join("0.json");
    std::fs::write(
        &shard,
        r#"{"shard": {"kind": "distance", "index": 5, "count": 2, "job": "ab", "args": [], "items": 1}, "summary": {}, "points": []}"#,
    )
    .unwrap();
    let out = t.path().join("out.json");
    fails_with(
        &["merge", s(&shard), "--out", s(&out)],
        &["0.json", "shard 5/2"],
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
