//! The `reproduce` pipeline on a miniature sweep: deterministic for a seed,
//! every file written, the robust net at its predicted scale.

mod common;
use common::strip_timing;
use kktcert::experiment::render::write;
use kktcert::experiment::sweep::{run, SweepConfig};

fn mini() -> SweepConfig {
    SweepConfig {
        sizes: vec![kktcert::experiment::sweep::Size {
            k: 4,
            d: 36,
            sigma: 1.0,
        }],
        n_test: 60,
        width_factors: vec![2],
        distance_points: 3,
        distance_max_nodes: 300,
        ..SweepConfig::quick(3)
    }
}

/// The report as JSON without wall-clock fields.
fn numbers(rep: &kktcert::experiment::sweep::Report) -> serde_json::Value {
    strip_timing(serde_json::to_value(rep).unwrap())
}

#[test]
fn mini_sweep_is_deterministic_and_complete() {
    let cfg = mini();
    let a = run(&cfg, None, |_| {}).unwrap();
    let b = run(&cfg, None, |_| {}).unwrap();
    assert_eq!(numbers(&a), numbers(&b));
    let row = &a.rows[0];
    assert!(row.error.is_none(), "{:?}", row.error);
    assert_eq!(row.test_error, Some(0.0));
    // Robust net: universal radius of order √d (≥ √d/2 on these clusters).
    let robust = row.robust_universal_median.unwrap();
    assert!(
        robust >= row.sqrt_d / 2.0,
        "robust {robust} vs √d/2 = {}",
        row.sqrt_d / 2.0
    );
    let tmp = tempfile::tempdir().unwrap();
    write(&a, tmp.path()).unwrap();
    for f in [
        "report.md",
        "report.json",
        "figures/flip_rate.svg",
        "figures/critical_vs_scale.svg",
        "figures/distance_hist.svg",
    ] {
        let meta = std::fs::metadata(tmp.path().join(f));
        assert!(meta.is_ok_and(|m| m.len() > 100), "{f} missing or empty");
    }
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(md.contains("| 4 | 36 | 1 | 40 | 8 | 3 | "), "{md}");
}
