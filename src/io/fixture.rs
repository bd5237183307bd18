//! Fixture and dataset files: `X` \[n,d\] F64, `y` \[n\] F64 (±1; integers are
//! read too) and the
//! optional `cluster` \[n\] I64 of a dataset; `mu` \[k,d\] and `labels` \[k\] of
//! the means; and a fixture directory, whose `fixture.json` regenerates the
//! other three files bit for bit.

use crate::error::{Error, Result};
use crate::io::tensors::{read_json, write_json, write_tensors, Dim, OwnedTensor, TensorFile};
use crate::model::data::{check_labels, row_major, Dataset, Fixture, FixtureSpec, Means};
use crate::model::deep::{Labels, Output};
use nalgebra::DMatrix;
use std::collections::BTreeMap;
use std::path::Path;

impl Means {
    /// Writes `mu` \[k,d\] and `labels` \[k\] as F64.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_tensors(
            path,
            &[
                (
                    "mu",
                    OwnedTensor::f64(vec![self.k(), self.d()], row_major(self.mu())),
                ),
                (
                    "labels",
                    OwnedTensor::f64(vec![self.k()], self.labels().to_vec()),
                ),
            ],
            BTreeMap::new(),
        )
    }

    /// Reads a means file written by [`Means::save`] or by another program.
    pub fn load(path: &Path) -> Result<Self> {
        let f = TensorFile::open(path)?;
        let (mu, shape) = f.floats("mu", &[Dim::Any, Dim::Any])?;
        let (labels, _) = f.floats("labels", &[Dim::Is(shape[0])])?;
        check_labels(&labels).map_err(|msg| Error::field(path, "labels", msg))?;
        if shape[0] < 2 {
            return Err(Error::field(path, "mu", "k = 1, expected k ≥ 2 clusters"));
        }
        Means::new(DMatrix::from_row_slice(shape[0], shape[1], &mu), labels)
            .map_err(|e| Error::file(path, e.to_string()))
    }
}

impl Dataset {
    /// Writes `X` \[n,d\] F64, `y` \[n\] F64 and, when known, `cluster` \[n\] I64.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = vec![
            (
                "X",
                OwnedTensor::f64(vec![self.n(), self.d()], row_major(self.x())),
            ),
            ("y", OwnedTensor::f64(vec![self.n()], self.y().to_vec())),
        ];
        if let Some(c) = self.cluster() {
            tensors.push((
                "cluster",
                OwnedTensor::i64(vec![self.n()], c.iter().map(|&v| v as i64)),
            ));
        }
        write_tensors(path, &tensors, BTreeMap::new())
    }

    /// Reads a dataset; `cluster` is optional, `X` and `y` are required.
    pub fn load(path: &Path) -> Result<Self> {
        let f = TensorFile::open(path)?;
        let (x, shape) = f.floats("X", &[Dim::Any, Dim::Any])?;
        let n = shape[0];
        let y = label_values(&f, n)?;
        check_labels(&y).map_err(|msg| Error::field(path, "y", msg))?;
        let cluster = if f.has("cluster") {
            let c = f.ints("cluster", &[Dim::Is(n)])?;
            if let Some(bad) = c.iter().find(|&&v| v < 0) {
                return Err(Error::field(
                    path,
                    "cluster",
                    format!("negative cluster id {bad}"),
                ));
            }
            Some(c.into_iter().map(|v| v as usize).collect())
        } else {
            None
        };
        Self::new(DMatrix::from_row_slice(n, shape[1], &x), y, cluster)
            .map_err(|e| Error::file(path, e.to_string()))
    }
}

/// The `n` labels `y`, stored as floats or as integers.
fn label_values(f: &TensorFile, n: usize) -> Result<Vec<f64>> {
    match f.floats("y", &[Dim::Is(n)]) {
        Ok((y, _)) => Ok(y),
        Err(float_err) => match f.ints("y", &[Dim::Is(n)]) {
            Ok(y) => Ok(y.into_iter().map(|v| v as f64).collect()),
            Err(_) => Err(float_err),
        },
    }
}

/// Labelled points for a net with `output`: `X` \[n, d\] (float) and `y`
/// \[n\], float or integer — ±1 for a scalar output, classes 0…C−1 for C
/// outputs (as `torch.save`-then-safetensors or NumPy write them).
pub fn load_points(path: &Path, output: Output) -> Result<(DMatrix<f64>, Labels)> {
    let f = TensorFile::open(path)?;
    let (x, shape) = f.floats("X", &[Dim::Any, Dim::Any])?;
    let n = shape[0];
    let y = label_values(&f, n)?;
    let labels = Labels::for_output(&y, output).map_err(|msg| Error::field(path, "y", msg))?;
    Ok((DMatrix::from_row_slice(n, shape[1], &x), labels))
}

impl Fixture {
    /// Writes the four files into `dir` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join("fixture.json"), &self.spec)?;
        self.means.save(&dir.join("means.safetensors"))?;
        self.train.save(&dir.join("train.safetensors"))?;
        self.test.save(&dir.join("test.safetensors"))
    }

    /// Loads a fixture directory, checking the parts agree with each other.
    pub fn load(dir: &Path) -> Result<Self> {
        let spec_path = dir.join("fixture.json");
        let spec: FixtureSpec = read_json(&spec_path)?;
        spec.validate()
            .map_err(|e| Error::file(&spec_path, e.to_string()))?;
        let means = Means::load(&dir.join("means.safetensors"))?;
        let train = Dataset::load(&dir.join("train.safetensors"))?;
        let test = Dataset::load(&dir.join("test.safetensors"))?;
        for (name, d) in [
            ("means", means.d()),
            ("train", train.d()),
            ("test", test.d()),
        ] {
            if d != spec.d {
                return Err(Error::Mismatch(format!(
                    "{}: {name} has d = {d}, fixture.json says d = {}",
                    dir.display(),
                    spec.d
                )));
            }
        }
        Ok(Self {
            spec,
            means,
            train,
            test,
        })
    }
}
