//! Sharded-and-merged runs equal the unsharded run (timing fields aside),
//! and `merge` refuses shards that do not make up one job.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// Runs `args` unsharded (→ `whole`) and as `n` shards merged (→ `merged`).
fn sharded_equals_whole(dir: &Path, args: &[&str], n: usize) -> (PathBuf, PathBuf) {
    let whole = dir.join("whole.json");
    let mut a = args.to_vec();
    a.extend(["--json", s(&whole)]);
    ok(&a);
    let parts: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("shard{i}.json"))).collect();
    for (i, p) in parts.iter().enumerate() {
        let shard = format!("{i}/{n}");
        let mut a = args.to_vec();
        a.extend(["--shard", &shard, "--json", s(p)]);
        ok(&a);
    }
    let merged = dir.join("merged.json");
    let mut m = vec!["merge"];
    m.extend(parts.iter().map(|p| s(p)));
    m.extend(["--out", s(&merged)]);
    ok(&m);
    assert_eq!(
        strip_timing(read_json(&merged)),
        strip_timing(read_json(&whole)),
        "merged {args:?} differs from the unsharded run"
    );
    (whole, merged)
}

/// A width-12 GD net on the `small` fixture, saved in `dir`.
fn small_net(dir: &Path) -> PathBuf {
    let net = dir.join("net.safetensors");
    let train = fixture("small").join("train.safetensors");
    ok(&[
        "train",
        "--data",
        s(&train),
        "--width",
        "12",
        "--out",
        s(&net),
    ]);
    net
}

#[test]
fn distance_shards_merge_to_the_unsharded_run() {
    let t = tempfile::tempdir().unwrap();
    let fx = fixture("small");
    let net = small_net(t.path());
    let test = fx.join("test.safetensors");
    sharded_equals_whole(
        t.path(),
        &[
            "distance",
            "--net",
            s(&net),
            "--data",
            s(&test),
            "--indices",
            "0:7",
            "--threads",
            "1",
        ],
        3,
    );
}

#[test]
fn attack_shards_merge_to_the_unsharded_run() {
    let t = tempfile::tempdir().unwrap();
    let fx = fixture("small");
    let net = small_net(t.path());
    let robust = t.path().join("robust.safetensors");
    ok(&["robust", "--fixture", s(&fx), "--out", s(&robust)]);
    sharded_equals_whole(
        t.path(),
        &["attack", "--net", s(&net), "--fixture", s(&fx)],
        2,
    );
    let t2 = tempfile::tempdir().unwrap();
    sharded_equals_whole(
        t2.path(),
        &["attack", "--net", s(&net), s(&robust), "--fixture", s(&fx)],
        3,
    );
}

#[test]
fn certify_series_shards_merge_and_bad_shard_sets_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let train = fixture("tiny").join("train.safetensors");
    let path = t.path().join("path");
    ok(&[
        "train",
        "--data",
        s(&train),
        "--width",
        "8",
        "--steps",
        "300",
        "--target-loss",
        "0",
        "--save-every",
        "100",
        "--out-dir",
        s(&path),
    ]);
    let files: Vec<_> = std::fs::read_dir(&path).unwrap().collect();
    assert_eq!(files.len(), 4, "steps 0, 100, 200, 300");
    let (whole, _) = sharded_equals_whole(
        t.path(),
        &[
            "certify",
            "--net",
            s(&path),
            "--data",
            s(&train),
            "--delta",
            "inf",
        ],
        2,
    );
    let rows = read_json(&whole)["rows"].as_array().unwrap().clone();
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 100, 200, 300]);
    // Missing, duplicated and foreign shards are named in one-line errors.
    let (a, b) = (t.path().join("shard0.json"), t.path().join("shard1.json"));
    let out = t.path().join("bad.json");
    fails_with(
        &["merge", s(&a), "--out", s(&out)],
        &["missing shard(s) 1/2"],
    );
    fails_with(
        &["merge", s(&a), s(&a), "--out", s(&out)],
        &["shard 0/2 given twice"],
    );
    let other = t.path().join("other.json");
    ok(&[
        "certify",
        "--net",
        s(&path),
        "--data",
        s(&train),
        "--shard",
        "1/2",
        "--json",
        s(&other),
    ]);
    fails_with(
        &["merge", s(&a), s(&other), "--out", s(&out)],
        &["shards of different jobs"],
    );
    fails_with(
        &["merge", s(&whole), "--out", s(&out)],
        &["field `shard`", "not the output of a --shard run"],
    );
    assert!(
        std::fs::metadata(&out).is_err(),
        "nothing written on refusal"
    );
    assert!(b.exists());
}
