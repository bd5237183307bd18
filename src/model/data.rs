//! The clustered distribution of SPEC §1: fixtures, seeded generation and
//! dataset files.
//!
//! Everything here is a pure function of a [`FixtureSpec`]: the same spec
//! gives the same bytes on every machine, because all randomness comes from
//! `ChaCha8Rng` streams seeded from the spec's seed (one stream per purpose:
//! means, labels, training set, test set) and every float operation is
//! deterministic IEEE arithmetic.

use crate::error::{Error, Result};
use nalgebra::{DMatrix, DVector};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Version tag written into every fixture description.
pub const FIXTURE_FORMAT: &str = "kktcert/fixture/v1";

/// How the cluster means are drawn (all have norm √d).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MeansKind {
    /// i.i.d. uniform on the sphere of radius √d.
    Sphere,
    /// k ≤ d orthonormal directions (QR of a Gaussian matrix), scaled by √d.
    Orthogonal,
}

/// How cluster labels are assigned.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "rule", content = "p")]
pub enum LabelRule {
    /// ⌈k/2⌉ positive clusters, shuffled.
    Balanced,
    /// round(p·k) positive clusters, shuffled.
    Fraction(f64),
}

impl std::str::FromStr for LabelRule {
    type Err = Error;

    /// `balanced` or `fraction:P` with P in [0, 1].
    fn from_str(s: &str) -> Result<Self> {
        if s == "balanced" {
            return Ok(Self::Balanced);
        }
        s.strip_prefix("fraction:")
            .and_then(|p| p.parse().ok())
            .filter(|p: &f64| (0.0..=1.0).contains(p))
            .map(Self::Fraction)
            .ok_or_else(|| {
                Error::param(
                    "labels",
                    format!("`{s}`, expected balanced or fraction:P with 0 ≤ P ≤ 1"),
                )
            })
    }
}

/// Every parameter of a fixture; regenerates it bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixtureSpec {
    /// The format tag (`FIXTURE_FORMAT`).
    pub format: String,
    /// Number of clusters.
    pub k: usize,
    /// Input dimension.
    pub d: usize,
    /// Within-cluster noise σ.
    pub sigma: f64,
    /// Training points.
    pub n: usize,
    /// Test points.
    pub n_test: usize,
    /// Seed of every random stream.
    pub seed: u64,
    /// How the cluster means are drawn.
    pub means: MeansKind,
    /// How cluster labels are assigned.
    pub labels: LabelRule,
}

impl FixtureSpec {
    /// Checks the parameters (k ≥ 2, d ≥ 1, σ ≥ 0 finite, n ≥ 1, …).
    pub fn validate(&self) -> Result<()> {
        if self.format != FIXTURE_FORMAT {
            return Err(Error::param(
                "format",
                format!("`{}`, expected `{FIXTURE_FORMAT}`", self.format),
            ));
        }
        if self.k < 2 {
            return Err(Error::param("k", format!("{}, expected k ≥ 2", self.k)));
        }
        if self.d == 0 {
            return Err(Error::param("d", "0, expected d ≥ 1"));
        }
        if !(self.sigma.is_finite() && self.sigma >= 0.0) {
            return Err(Error::param(
                "sigma",
                format!("{}, expected a finite σ ≥ 0", self.sigma),
            ));
        }
        if self.n == 0 {
            return Err(Error::param("n", "0, expected n ≥ 1"));
        }
        if self.means == MeansKind::Orthogonal && self.k > self.d {
            return Err(Error::param(
                "means",
                format!("orthogonal means need k ≤ d (k={}, d={})", self.k, self.d),
            ));
        }
        let positives = self.positive_count()?;
        if positives == 0 || positives == self.k {
            return Err(Error::param(
                "labels",
                format!(
                    "{positives} of {} clusters positive; both labels must be present",
                    self.k
                ),
            ));
        }
        Ok(())
    }

    fn positive_count(&self) -> Result<usize> {
        match self.labels {
            LabelRule::Balanced => Ok(self.k.div_ceil(2)),
            LabelRule::Fraction(p) if (0.0..=1.0).contains(&p) => {
                Ok((p * self.k as f64).round() as usize)
            }
            LabelRule::Fraction(p) => Err(Error::param(
                "labels",
                format!("fraction {p}, expected 0 ≤ p ≤ 1"),
            )),
        }
    }

    /// A seeded stream for one purpose, independent of the others.
    fn rng(&self, stream: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        rng
    }

    /// Draws the cluster means and labels.
    pub fn means(&self) -> Result<Means> {
        self.validate()?;
        let mut rng = self.rng(1);
        let (k, d) = (self.k, self.d);
        let gauss = DMatrix::from_fn(k, d, |_, _| rng.sample::<f64, _>(StandardNormal));
        let dirs = match self.means {
            MeansKind::Sphere => gauss,
            MeansKind::Orthogonal => gauss.transpose().qr().q().transpose(),
        };
        // Row norms once (computing them per entry made gen O(k·d²)).
        let norms: Vec<f64> = (0..k).map(|i| dirs.row(i).norm()).collect();
        let mu = DMatrix::from_fn(k, d, |i, j| dirs[(i, j)] / norms[i] * (d as f64).sqrt());
        let positives = self.positive_count()?;
        let mut labels: Vec<f64> = (0..k)
            .map(|j| if j < positives { 1.0 } else { -1.0 })
            .collect();
        labels.shuffle(&mut self.rng(2));
        Means::new(mu, labels)
    }

    /// Draws the training (`test = false`) or test set from the means.
    pub fn sample(&self, means: &Means, test: bool) -> Result<Dataset> {
        let n = if test { self.n_test } else { self.n };
        if n == 0 {
            return Err(Error::param(
                if test { "n_test" } else { "n" },
                "0, expected at least one sample",
            ));
        }
        let mut rng = self.rng(if test { 4 } else { 3 });
        let mut x = DMatrix::zeros(n, self.d);
        let mut y = Vec::with_capacity(n);
        let mut cluster = Vec::with_capacity(n);
        for i in 0..n {
            let j = rng.gen_range(0..self.k);
            for c in 0..self.d {
                let xi: f64 = rng.sample(StandardNormal);
                x[(i, c)] = means.mu[(j, c)] + self.sigma * xi;
            }
            y.push(means.labels[j]);
            cluster.push(j);
        }
        Dataset::new(x, y, Some(cluster))
    }
}

/// Cluster means `mu` [k, d] with labels ±1.
#[derive(Clone, Debug)]
pub struct Means {
    mu: DMatrix<f64>,
    labels: Vec<f64>,
}

impl Means {
    /// Checks shapes, finiteness and that labels are ±1 with both present.
    pub fn new(mu: DMatrix<f64>, labels: Vec<f64>) -> Result<Self> {
        if mu.nrows() != labels.len() || mu.nrows() < 2 {
            return Err(Error::Mismatch(format!(
                "{} means and {} labels (need k ≥ 2 of each)",
                mu.nrows(),
                labels.len()
            )));
        }
        check_labels(&labels).map_err(|msg| Error::param("labels", msg))?;
        if mu.iter().any(|v| !v.is_finite()) {
            return Err(Error::param("mu", "non-finite mean"));
        }
        Ok(Self { mu, labels })
    }

    /// The means, one per row.
    pub fn mu(&self) -> &DMatrix<f64> {
        &self.mu
    }

    /// Cluster labels (±1).
    pub fn labels(&self) -> &[f64] {
        &self.labels
    }

    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.mu.nrows()
    }

    /// Input dimension.
    pub fn d(&self) -> usize {
        self.mu.ncols()
    }

    /// The universal direction Σ_q y_q μ_q, unnormalised (SPEC §6).
    pub fn signed_sum(&self) -> DVector<f64> {
        let y = DVector::from_column_slice(&self.labels);
        self.mu.transpose() * y
    }
}

/// A labelled sample: `x` [n, d], `y` ∈ {±1}ⁿ and, when known, the cluster of
/// each point.
#[derive(Clone, Debug)]
pub struct Dataset {
    x: DMatrix<f64>,
    y: Vec<f64>,
    cluster: Option<Vec<usize>>,
}

impl Dataset {
    /// Checks n ≥ 1, matching lengths, finite inputs, labels ±1.
    pub fn new(x: DMatrix<f64>, y: Vec<f64>, cluster: Option<Vec<usize>>) -> Result<Self> {
        if x.nrows() == 0 || x.ncols() == 0 {
            return Err(Error::param("X", "empty dataset (need n ≥ 1 and d ≥ 1)"));
        }
        if y.len() != x.nrows() || cluster.as_ref().is_some_and(|c| c.len() != x.nrows()) {
            return Err(Error::Mismatch(format!(
                "X has {} rows but y/cluster have {}/{}",
                x.nrows(),
                y.len(),
                cluster.as_ref().map_or(0, Vec::len)
            )));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::param("X", "non-finite value"));
        }
        check_labels(&y).map_err(|msg| Error::param("y", msg))?;
        Ok(Self { x, y, cluster })
    }

    /// Inputs, one per row.
    pub fn x(&self) -> &DMatrix<f64> {
        &self.x
    }

    /// Labels ±1.
    pub fn y(&self) -> &[f64] {
        &self.y
    }

    /// Cluster ids, when the file carried them.
    pub fn cluster(&self) -> Option<&[usize]> {
        self.cluster.as_deref()
    }

    /// Number of samples.
    pub fn n(&self) -> usize {
        self.x.nrows()
    }

    /// Input dimension.
    pub fn d(&self) -> usize {
        self.x.ncols()
    }

    /// Sample `i` as a column vector.
    pub fn point(&self, i: usize) -> DVector<f64> {
        self.x.row(i).transpose()
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let x = self.x.select_rows(indices);
        let y = indices.iter().map(|&i| self.y[i]).collect();
        let cluster = self
            .cluster
            .as_ref()
            .map(|c| indices.iter().map(|&i| c[i]).collect());
        Self::new(x, y, cluster)
    }
}

/// Labels must be exactly ±1 (the error says which index is not).
pub(crate) fn check_labels(y: &[f64]) -> std::result::Result<(), String> {
    match y.iter().position(|&v| v != 1.0 && v != -1.0) {
        Some(i) => Err(format!("label {} at index {i}, expected +1 or -1", y[i])),
        None => Ok(()),
    }
}

/// A matrix's entries in row-major order (safetensors' layout).
pub fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

/// A fixture directory: `fixture.json`, `means.safetensors`,
/// `train.safetensors`, `test.safetensors`.
pub struct Fixture {
    /// The parameters that regenerate it.
    pub spec: FixtureSpec,
    /// The cluster means and their labels.
    pub means: Means,
    /// Training data.
    pub train: Dataset,
    /// Test data.
    pub test: Dataset,
}

impl Fixture {
    /// Generates all parts of a fixture from its spec.
    pub fn generate(spec: FixtureSpec) -> Result<Self> {
        let means = spec.means()?;
        let train = spec.sample(&means, false)?;
        let test = spec.sample(&means, true)?;
        Ok(Self {
            spec,
            means,
            train,
            test,
        })
    }
}
