//! Helpers shared by the integration tests.
#![allow(dead_code)]

use kktcert::fit::gd::{train, TrainConfig};
use kktcert::model::data::{Dataset, Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
use kktcert::model::net::Network;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped fixture directory.
pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// The first 16 points of the `tiny` fixture's training set.
pub fn tiny16() -> Dataset {
    let full = Dataset::load(&fixture("tiny").join("train.safetensors")).unwrap();
    full.subset(&(0..16).collect::<Vec<_>>()).unwrap()
}

/// A small clustered training set (k = 2–6 clusters of 4 points, σ = 1)
/// of dimension `d`, drawn from `seed`.
pub fn clustered(seed: u64, d: usize) -> Dataset {
    let k = 2 + (seed % 5) as usize;
    let spec = FixtureSpec {
        format: FIXTURE_FORMAT.into(),
        k,
        d,
        sigma: 1.0,
        n: 4 * k,
        n_test: 1,
        seed,
        means: MeansKind::Sphere,
        labels: LabelRule::Balanced,
    };
    Fixture::generate(spec).unwrap().train
}

/// The net gradient descent trains on `data` with `cfg` (and no callback).
pub fn gd(data: &Dataset, cfg: &TrainConfig) -> Network {
    train(data, cfg, |_, _, _| Ok(())).unwrap().net
}

/// Runs the kktcert binary with `args`.
pub fn kktcert(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kktcert"))
        .args(args)
        .arg("--quiet")
        .output()
        .expect("binary runs")
}

/// Runs the binary, asserts success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = kktcert(args);
    assert!(
        out.status.success(),
        "kktcert {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the binary, asserts exit status 2 with a one-line error containing every `needle`.
pub fn fails_with(args: &[&str], needles: &[&str]) {
    let out = kktcert(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "kktcert {args:?}: stderr {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "error `{err}` should mention `{n}`");
    }
}

/// The interpreter for the Python cross-checks. Those tests are
/// `#[ignore]`d (a machine without Python lists them as ignored, never as
/// passed); run with `--include-ignored`, as `scripts/test.sh` does when
/// `KKTCERT_PYTHON` is set, a missing interpreter fails them.
pub fn python() -> PathBuf {
    match configured_python() {
        Some(p) => p,
        None => panic!(
            "this test needs KKTCERT_PYTHON: an interpreter with numpy, scipy and safetensors"
        ),
    }
}

fn configured_python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("KKTCERT_PYTHON")?);
    let ok = Command::new(&p)
        .args(["-c", "import numpy, safetensors, scipy"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(p)
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `scripts/NAME` with `py` on path arguments; asserts success and
/// parses its standard output as JSON.
pub fn run_script(py: &Path, name: &str, args: &[&Path]) -> serde_json::Value {
    let out = Command::new(py)
        .arg(root().join("scripts").join(name))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// JSON without wall-clock fields (`seconds`, `*_seconds`), recursively.
pub fn strip_timing(mut v: serde_json::Value) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.contains("seconds"));
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// Reads a JSON file.
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("file exists")).expect("valid JSON")
}
