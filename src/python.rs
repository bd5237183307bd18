//! The Python module `kktcert._native` (PyO3), wrapped by the pure-Python
//! package in `python/kktcert`, which normalises arrays (any float dtype,
//! any memory order → C-contiguous float64, exactly) before they get here.
//!
//! Every function returns what the CLI writes for the same inputs: the
//! dicts are the CLI's JSON, serialised by the same code. Solves run with
//! the GIL released; library errors become `ValueError` with the CLI's
//! message.

use crate::distance::deep::{
    DeepDistanceOptions, DeepDistanceSolver, DeepPointDistance, InputBox, Side,
};
use crate::distance::{DistanceOptions, DistanceSolver, PointDistance};
use crate::error::Error;
use crate::fit::deep::{polish_deep, DeepPolishOptions};
use crate::fit::polish::{polish, PolishMode, PolishOptions};
use crate::io::checkpoint::{load_deep, Checkpoint, LoadOptions};
use crate::io::layout::TensorNames;
use crate::jobs::par_map;
use crate::kkt::deep::{certify_deep, DeepCertifyOptions};
use crate::kkt::{certificates_json, certify, parse_norms, CertifyOptions};
use crate::model::data::{Dataset, Means};
use crate::model::deep::{DeepNet, Labels, Layer};
use crate::model::net::Network;
use crate::paper::attack::attack;
use nalgebra::{DMatrix, DVector};
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyMemoryError, PyValueError};
use pyo3::prelude::*;
use std::path::Path;

/// The Python exception that fits: a missing file is `FileNotFoundError`,
/// a problem refused for its memory `MemoryError`, any other bad input
/// `ValueError`; each carries the CLI's one-line message.
fn value_error(e: Error) -> PyErr {
    match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        Error::OutOfMemory { .. } => PyMemoryError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

fn matrix(a: &PyReadonlyArray2<f64>, name: &str) -> PyResult<DMatrix<f64>> {
    let shape = a.shape();
    let data = a
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name}: expected a C-contiguous array")))?;
    Ok(DMatrix::from_row_slice(shape[0], shape[1], data))
}

fn vector(a: &PyReadonlyArray1<f64>) -> DVector<f64> {
    let view = a.as_array();
    DVector::from_iterator(view.len(), view.iter().copied())
}

fn network(
    w: &PyReadonlyArray2<f64>,
    b: &PyReadonlyArray1<f64>,
    v: &PyReadonlyArray1<f64>,
) -> PyResult<Network> {
    Network::new(matrix(w, "W")?, vector(b), vector(v)).map_err(value_error)
}

fn dataset(x: &PyReadonlyArray2<f64>, y: &PyReadonlyArray1<f64>) -> PyResult<Dataset> {
    Dataset::new(matrix(x, "X")?, y.as_array().to_vec(), None).map_err(value_error)
}

fn to_json<T: serde::Serialize>(v: &T) -> crate::Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Numerical(format!("cannot serialise: {e}")))
}

type Arrays<'py> = (
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
);

/// A matrix as a NumPy array of the same shape.
fn matrix_array<'py>(py: Python<'py>, m: &DMatrix<f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let rows: Vec<Vec<f64>> = m.row_iter().map(|r| r.iter().copied().collect()).collect();
    PyArray2::from_vec2(py, &rows).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn arrays<'py>(py: Python<'py>, net: &Network) -> PyResult<Arrays<'py>> {
    Ok((
        matrix_array(py, net.w())?,
        PyArray1::from_slice(py, net.b().as_slice()),
        PyArray1::from_slice(py, net.v().as_slice()),
    ))
}

/// (W, b, v, c) of a checkpoint in any layout kktcert reads.
#[pyfunction]
#[pyo3(signature = (path, tensors=None))]
fn load_net<'py>(
    py: Python<'py>,
    path: &str,
    tensors: Option<&str>,
) -> PyResult<(Arrays<'py>, f64)> {
    let opts = LoadOptions {
        tensors: tensors
            .map(TensorNames::parse)
            .transpose()
            .map_err(value_error)?,
    };
    let ck = Checkpoint::load_with(Path::new(path), &opts).map_err(value_error)?;
    Ok((arrays(py, &ck.net)?, ck.output_bias))
}

/// A deep net's layers `[(W, b or None), …]`, input first, from any file
/// `load_deep` reads.
#[pyfunction]
fn load_layers<'py>(py: Python<'py>, path: &str) -> PyResult<Vec<LayerArrays<'py>>> {
    let net = load_deep(Path::new(path)).map_err(value_error)?;
    layer_arrays(py, &net)
}

type LayerArrays<'py> = (Bound<'py, PyArray2<f64>>, Option<Bound<'py, PyArray1<f64>>>);

/// The certificate JSON (`certify --json`).
#[pyfunction]
#[pyo3(signature = (w, b, v, x, y, norm, tol, delta, act_tol, method))]
#[allow(clippy::too_many_arguments)]
fn certify_json(
    py: Python<'_>,
    w: PyReadonlyArray2<f64>,
    b: PyReadonlyArray1<f64>,
    v: PyReadonlyArray1<f64>,
    x: PyReadonlyArray2<f64>,
    y: PyReadonlyArray1<f64>,
    norm: &str,
    tol: f64,
    delta: Option<f64>,
    act_tol: f64,
    method: &str,
) -> PyResult<String> {
    let net = network(&w, &b, &v)?;
    let data = dataset(&x, &y)?;
    let norms = parse_norms(norm).map_err(value_error)?;
    let opts = CertifyOptions {
        tol,
        delta_rel: delta,
        act_tol,
        method: method.parse().map_err(value_error)?,
        warm: None,
    };
    py.detach(|| {
        net.check_dim(&data)?;
        let certs = norms
            .iter()
            .map(|&n| certify(&net, &data, n, &opts))
            .collect::<crate::Result<Vec<_>>>()?;
        to_json(&certificates_json(&certs))
    })
    .map_err(value_error)
}

type PyLayers<'py> = Vec<(
    PyReadonlyArray2<'py, f64>,
    Option<PyReadonlyArray1<'py, f64>>,
)>;

/// A deep net, its points and their labels from Python arrays.
fn deep_problem(
    layers: &PyLayers<'_>,
    x: &PyReadonlyArray2<f64>,
    y: &PyReadonlyArray1<f64>,
) -> PyResult<(DeepNet, DMatrix<f64>, Labels)> {
    let net = deep_net(layers)?;
    let labels = Labels::for_output(&y.as_array().to_vec(), net.output())
        .map_err(|m| PyValueError::new_err(format!("invalid parameter `y`: {m}")))?;
    Ok((net, matrix(x, "X")?, labels))
}

/// A deep net from `[(W, b or None), …]`.
fn deep_net(layers: &PyLayers<'_>) -> PyResult<DeepNet> {
    let layers = layers
        .iter()
        .enumerate()
        .map(|(i, (w, b))| {
            Layer::new(
                matrix(w, &format!("layers[{i}].W"))?,
                b.as_ref().map(vector),
            )
            .map_err(value_error)
        })
        .collect::<PyResult<Vec<_>>>()?;
    DeepNet::new(layers).map_err(value_error)
}

/// A deep net's layers as `[(W, b or None), …]` NumPy arrays.
fn layer_arrays<'py>(py: Python<'py>, net: &DeepNet) -> PyResult<Vec<LayerArrays<'py>>> {
    net.layers()
        .iter()
        .map(|layer| {
            let b = layer.bias().map(|b| PyArray1::from_slice(py, b.as_slice()));
            Ok((matrix_array(py, layer.weight())?, b))
        })
        .collect()
}

/// `polish` of a deep net: its layers and the report JSON.
#[pyfunction]
#[pyo3(signature = (layers, x, y, tol, act_tol, iterations))]
fn polish_deep_json<'py>(
    py: Python<'py>,
    layers: PyLayers<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    tol: f64,
    act_tol: f64,
    iterations: usize,
) -> PyResult<(Vec<LayerArrays<'py>>, String)> {
    let (net, x, labels) = deep_problem(&layers, &x, &y)?;
    let opts = DeepPolishOptions {
        tol,
        act_tol,
        iterations,
        ..Default::default()
    };
    let (out, rep) = py
        .detach(|| {
            let (out, rep) = polish_deep(&net, &x, &labels, &opts, |_| {})?;
            Ok::<_, Error>((out, to_json(&rep)?))
        })
        .map_err(value_error)?;
    Ok((layer_arrays(py, &out)?, rep))
}

/// The deep certificate JSON (`certify --json` of a deep net); `layers`
/// as `load_layers` returns them, `y` ±1 or classes 0…C−1.
#[pyfunction]
#[pyo3(signature = (layers, x, y, tol, delta, act_tol))]
fn certify_deep_json(
    py: Python<'_>,
    layers: PyLayers<'_>,
    x: PyReadonlyArray2<f64>,
    y: PyReadonlyArray1<f64>,
    tol: f64,
    delta: Option<f64>,
    act_tol: f64,
) -> PyResult<String> {
    let (net, x, labels) = deep_problem(&layers, &x, &y)?;
    let opts = DeepCertifyOptions {
        tol,
        delta_rel: delta,
        act_tol,
    };
    py.detach(|| to_json(&certify_deep(&net, &x, &labels, &opts)?))
        .map_err(value_error)
}

/// The `points` of `distance --json`.
#[pyfunction]
#[pyo3(signature = (w, b, v, c, x, y, indices, time_limit, max_nodes, threads))]
#[allow(clippy::too_many_arguments)]
fn distance_json(
    py: Python<'_>,
    w: PyReadonlyArray2<f64>,
    b: PyReadonlyArray1<f64>,
    v: PyReadonlyArray1<f64>,
    c: f64,
    x: PyReadonlyArray2<f64>,
    y: PyReadonlyArray1<f64>,
    indices: Vec<usize>,
    time_limit: Option<f64>,
    max_nodes: Option<usize>,
    threads: Option<usize>,
) -> PyResult<String> {
    let net = network(&w, &b, &v)?.with_output_bias(c);
    let data = dataset(&x, &y)?;
    if let Some(&i) = indices.iter().find(|&&i| i >= data.n()) {
        return Err(PyValueError::new_err(format!(
            "invalid parameter `indices`: {i} ≥ n = {}",
            data.n()
        )));
    }
    let opts = DistanceOptions {
        max_nodes: max_nodes.unwrap_or(DistanceOptions::default().max_nodes),
        time_limit,
        ..Default::default()
    };
    py.detach(|| {
        net.check_dim(&data)?;
        let solver = DistanceSolver::new(&net).with_references(&data);
        let points: Vec<PointDistance> = par_map(threads, &indices, |i| {
            solver.distance(&data.point(i), i, data.y()[i], &opts)
        })?;
        to_json(&points)
    })
    .map_err(value_error)
}

/// The deep search's `points` (`distance --json` of a deep net): leave
/// each point's label when `y` is given, its predicted class otherwise.
#[pyfunction]
#[pyo3(signature = (layers, x, y, indices, time_limit, max_nodes, threads, box_bounds, target))]
#[allow(clippy::too_many_arguments)]
fn distance_deep_json(
    py: Python<'_>,
    layers: PyLayers<'_>,
    x: PyReadonlyArray2<f64>,
    y: Option<PyReadonlyArray1<f64>>,
    indices: Vec<usize>,
    time_limit: Option<f64>,
    max_nodes: Option<usize>,
    threads: Option<usize>,
    box_bounds: Option<(PyReadonlyArray1<f64>, PyReadonlyArray1<f64>)>,
    target: Option<usize>,
) -> PyResult<String> {
    let net = deep_net(&layers)?;
    let x = matrix(&x, "X")?;
    net.check_dim(&x).map_err(value_error)?;
    let labels = y
        .map(|y| Labels::for_output(&y.as_array().to_vec(), net.output()))
        .transpose()
        .map_err(|m| PyValueError::new_err(format!("invalid parameter `y`: {m}")))?;
    if let Some(&i) = indices.iter().find(|&&i| i >= x.nrows()) {
        return Err(PyValueError::new_err(format!(
            "invalid parameter `indices`: {i} ≥ n = {}",
            x.nrows()
        )));
    }
    let input_box = box_bounds
        .map(|(lo, hi)| InputBox::new(vector(&lo), vector(&hi)))
        .transpose()
        .map_err(value_error)?;
    let opts = DeepDistanceOptions {
        max_nodes: max_nodes.unwrap_or(DeepDistanceOptions::default().max_nodes),
        time_limit,
        input_box,
        target,
        ..Default::default()
    };
    let side = |i: usize| labels.as_ref().map(|l| Side::of_label(l, i));
    py.detach(|| {
        let solver = DeepDistanceSolver::new(&net).with_references(&x);
        let points: Vec<DeepPointDistance> = par_map(threads, &indices, |i| {
            solver.distance(&x.row(i).transpose(), i, side(i), &opts)
        })?;
        to_json(&points)
    })
    .map_err(value_error)
}

/// The polished (W, b, v) and the `polish --json` report.
#[pyfunction]
#[pyo3(signature = (w, b, v, x, y, tol, act_tol, mode, proximal, iterations, time_limit, stop_when_certified))]
#[allow(clippy::too_many_arguments)]
fn polish_json<'py>(
    py: Python<'py>,
    w: PyReadonlyArray2<f64>,
    b: PyReadonlyArray1<f64>,
    v: PyReadonlyArray1<f64>,
    x: PyReadonlyArray2<f64>,
    y: PyReadonlyArray1<f64>,
    tol: f64,
    act_tol: f64,
    mode: &str,
    proximal: f64,
    iterations: usize,
    time_limit: Option<f64>,
    stop_when_certified: bool,
) -> PyResult<(Arrays<'py>, String)> {
    let net = network(&w, &b, &v)?;
    let data = dataset(&x, &y)?;
    let opts = PolishOptions {
        tol,
        act_tol,
        mode: PolishMode::parse(mode).map_err(value_error)?,
        proximal,
        iteration_budget: Some(iterations),
        time_limit,
        stop_when_certified,
        ..Default::default()
    };
    let (polished, report) = py
        .detach(|| {
            net.check_dim(&data)?;
            let (n, r) = polish(&net, &data, None, &opts, |_| {})?;
            Ok((n, to_json(&r)?))
        })
        .map_err(value_error)?;
    Ok((arrays(py, &polished)?, report))
}

/// The `attack --json` report of one net.
#[pyfunction]
#[pyo3(signature = (w, b, v, c, means, mean_labels, x, y, grid, max_radius))]
#[allow(clippy::too_many_arguments)]
fn attack_json(
    py: Python<'_>,
    w: PyReadonlyArray2<f64>,
    b: PyReadonlyArray1<f64>,
    v: PyReadonlyArray1<f64>,
    c: f64,
    means: PyReadonlyArray2<f64>,
    mean_labels: PyReadonlyArray1<f64>,
    x: PyReadonlyArray2<f64>,
    y: PyReadonlyArray1<f64>,
    grid: usize,
    max_radius: Option<f64>,
) -> PyResult<String> {
    let net = network(&w, &b, &v)?.with_output_bias(c);
    let data = dataset(&x, &y)?;
    let means = Means::new(matrix(&means, "means")?, mean_labels.as_array().to_vec())
        .map_err(value_error)?;
    py.detach(|| to_json(&attack(&net, &data, &means, grid, max_radius)?))
        .map_err(value_error)
}

/// Merges `--shard i/N` outputs into what the unsharded run writes;
/// returns the command's name and the number of shards.
#[pyfunction]
fn merge(py: Python<'_>, shards: Vec<String>, out: &str) -> PyResult<(String, usize)> {
    let paths: Vec<std::path::PathBuf> = shards.iter().map(Into::into).collect();
    py.detach(|| crate::jobs::merge::merge(&paths, Path::new(out)))
        .map(|m| (m.kind.name().to_string(), m.shards))
        .map_err(value_error)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load_net, m)?)?;
    m.add_function(wrap_pyfunction!(load_layers, m)?)?;
    m.add_function(wrap_pyfunction!(certify_json, m)?)?;
    m.add_function(wrap_pyfunction!(certify_deep_json, m)?)?;
    m.add_function(wrap_pyfunction!(polish_deep_json, m)?)?;
    m.add_function(wrap_pyfunction!(distance_json, m)?)?;
    m.add_function(wrap_pyfunction!(distance_deep_json, m)?)?;
    m.add_function(wrap_pyfunction!(polish_json, m)?)?;
    m.add_function(wrap_pyfunction!(attack_json, m)?)?;
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    Ok(())
}
