//! The Python round trip: NumPy reads kktcert files, recomputes the outputs,
//! and writes a checkpoint (from a non-contiguous array) that kktcert reads.

mod common;
use common::*;
use kktcert::io::checkpoint::load_net;
use kktcert::model::data::Dataset;

#[test]
#[ignore = "needs KKTCERT_PYTHON (numpy, scipy, safetensors); CI runs it"]
fn numpy_round_trip_agrees_to_1e12() {
    let py = python();
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("net.safetensors");
    let back = tmp.path().join("from_python.safetensors");
    let data = fixture("small").join("test.safetensors");
    ok(&[
        "train",
        "--data",
        s(&fixture("small").join("train.safetensors")),
        "--width",
        "12",
        "--out",
        s(&net),
    ]);
    let v = run_script(&py, "interop.py", &[&net, &data, &back]);
    let ds = Dataset::load(&data).unwrap();
    let ours = load_net(&net).unwrap().forward(ds.x());
    let theirs = load_net(&back).unwrap().forward(ds.x());
    for (i, (py_out, py_back)) in v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["written_outputs"].as_array().unwrap())
        .enumerate()
    {
        let (a, b) = (py_out.as_f64().unwrap(), py_back.as_f64().unwrap());
        let tol = 1e-12 * (1.0 + a.abs());
        assert!(
            (ours[i] - a).abs() <= tol,
            "point {i}: kktcert {} vs NumPy {a}",
            ours[i]
        );
        assert!(
            (theirs[i] - b).abs() <= tol,
            "point {i}: Python-written net {} vs {b}",
            theirs[i]
        );
        assert!(
            (theirs[i] - ours[i]).abs() <= tol,
            "point {i}: the written net computes another function"
        );
    }
}
