//! The two-layer ReLU network of SPEC §2:
//! N(x; θ) = Σ_j v_j · ReLU(w_j · x + b_j), θ = (W \[m,d\], b \[m\], v \[m\]).
//!
//! A [`Network`] cannot hold inconsistent shapes or non-finite values: the
//! constructor checks both. The flattening order of θ is fixed — W row-major,
//! then b, then v — and every module that flattens uses [`Network::flat`].

use crate::error::{Error, Result};
use crate::linalg::product;
use crate::model::data::Dataset;
use nalgebra::{DMatrix, DVector};

/// The factor 1/√(min q) that rescales a net with margins `q` to min-margin
/// 1 (θ ↦ αθ multiplies every margin by α²); fails when some point is
/// misclassified or on the boundary.
pub fn unit_margin_scale(margins: &[f64]) -> Result<f64> {
    let min_q = margins.iter().copied().fold(f64::INFINITY, f64::min);
    if min_q.is_nan() || min_q <= 0.0 {
        return Err(Error::Numerical(format!(
            "minimum margin is {min_q:.3e} ≤ 0: the network does not classify every training point correctly, so it cannot be rescaled onto the max-margin constraint set"
        )));
    }
    Ok(1.0 / min_q.sqrt())
}

/// ReLU.
#[inline]
pub fn relu(u: f64) -> f64 {
    u.max(0.0)
}

/// A validated two-layer ReLU network.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    w: DMatrix<f64>,
    b: DVector<f64>,
    v: DVector<f64>,
}

impl Network {
    /// Builds a network, rejecting mismatched shapes, width 0 and non-finite values.
    pub fn new(w: DMatrix<f64>, b: DVector<f64>, v: DVector<f64>) -> Result<Self> {
        let m = w.nrows();
        if m == 0 || w.ncols() == 0 {
            return Err(Error::param(
                "W",
                format!("shape [{m}, {}], expected m ≥ 1, d ≥ 1", w.ncols()),
            ));
        }
        if b.len() != m || v.len() != m {
            return Err(Error::Mismatch(format!(
                "W has {m} rows but b has {} and v has {} entries",
                b.len(),
                v.len()
            )));
        }
        for (name, finite) in [
            ("W", w.iter().all(|x| x.is_finite())),
            ("b", b.iter().all(|x| x.is_finite())),
            ("v", v.iter().all(|x| x.is_finite())),
        ] {
            if !finite {
                return Err(Error::param(name, "non-finite value"));
            }
        }
        Ok(Self { w, b, v })
    }

    /// Rebuilds a network of width `m` and input dimension `d` from a flat θ.
    pub fn from_flat(m: usize, d: usize, theta: &[f64]) -> Result<Self> {
        if theta.len() != m * (d + 2) {
            return Err(Error::Mismatch(format!(
                "θ has {} entries, expected m(d+2) = {}",
                theta.len(),
                m * (d + 2)
            )));
        }
        let w = DMatrix::from_row_slice(m, d, &theta[..m * d]);
        let b = DVector::from_column_slice(&theta[m * d..m * d + m]);
        let v = DVector::from_column_slice(&theta[m * d + m..]);
        Self::new(w, b, v)
    }

    /// [`Network::from_flat`] without the finiteness check, for an
    /// optimiser's trial points (`m(d+2)` entries, which the caller
    /// guarantees): a non-finite entry must be able to reach the objective
    /// as a non-finite value rather than abort the optimisation.
    pub(crate) fn from_flat_unchecked(m: usize, d: usize, theta: &[f64]) -> Self {
        debug_assert_eq!(theta.len(), m * (d + 2));
        Self {
            w: DMatrix::from_row_slice(m, d, &theta[..m * d]),
            b: DVector::from_column_slice(&theta[m * d..m * d + m]),
            v: DVector::from_column_slice(&theta[m * d + m..]),
        }
    }

    /// The same network computing N(x) + c: a nonzero c is appended as a
    /// constant neuron (w = 0, b = |c|, v = sign c), whose output
    /// sign(c)·ReLU(|c|) is c exactly. This is how an output bias enters
    /// every routine that only evaluates the function (eval, distance,
    /// attack); the KKT routines refuse it upstream.
    pub fn with_output_bias(&self, c: f64) -> Network {
        if c == 0.0 {
            return self.clone();
        }
        let (m, d) = (self.width(), self.dim());
        let mut w = DMatrix::zeros(m + 1, d);
        w.rows_mut(0, m).copy_from(&self.w);
        let b = self.b.clone().insert_row(m, c.abs());
        let v = self.v.clone().insert_row(m, c.signum());
        Network { w, b, v }
    }

    /// The same function with exact duplicates merged: neurons with
    /// bit-identical (w_j, b_j) become one with Σ v_j, and neurons whose
    /// output weight is then 0 are dropped (at least one neuron is kept).
    /// Cancelling pairs and copies are what makes a branch-and-bound over
    /// neurons degenerate; after merging, each hyperplane appears once. The
    /// outputs agree with the original up to the rounding of the summed v.
    pub fn merged_duplicates(&self) -> Network {
        // First neuron of each (w, b) and the summed v, in order of appearance.
        let mut groups: Vec<(usize, f64)> = Vec::new();
        let mut index: std::collections::HashMap<Vec<u64>, usize> =
            std::collections::HashMap::new();
        for j in 0..self.width() {
            let key: Vec<u64> = self
                .w
                .row(j)
                .iter()
                .chain(std::iter::once(&self.b[j]))
                .map(|x| (x + 0.0).to_bits())
                .collect();
            match index.get(&key) {
                Some(&g) => groups[g].1 += self.v[j],
                None => {
                    index.insert(key, groups.len());
                    groups.push((j, self.v[j]));
                }
            }
        }
        groups.retain(|(_, v)| *v != 0.0);
        if groups.is_empty() {
            return Network {
                w: DMatrix::zeros(1, self.dim()),
                b: DVector::zeros(1),
                v: DVector::zeros(1),
            };
        }
        let first: Vec<usize> = groups.iter().map(|g| g.0).collect();
        Network {
            w: self.w.select_rows(&first),
            b: self.b.select_rows(&first),
            v: DVector::from_iterator(groups.len(), groups.iter().map(|g| g.1)),
        }
    }

    /// θ flattened: W row-major, then b, then v.
    pub fn flat(&self) -> Vec<f64> {
        let mut t = crate::model::data::row_major(&self.w);
        t.extend(self.b.iter());
        t.extend(self.v.iter());
        t
    }

    /// First-layer weights, one neuron per row.
    pub fn w(&self) -> &DMatrix<f64> {
        &self.w
    }

    /// First-layer biases.
    pub fn b(&self) -> &DVector<f64> {
        &self.b
    }

    /// Output weights.
    pub fn v(&self) -> &DVector<f64> {
        &self.v
    }

    /// Width m.
    pub fn width(&self) -> usize {
        self.w.nrows()
    }

    /// Input dimension d.
    pub fn dim(&self) -> usize {
        self.w.ncols()
    }

    /// Number of parameters p = m(d+2).
    pub fn num_params(&self) -> usize {
        self.width() * (self.dim() + 2)
    }

    /// ‖θ‖².
    pub fn norm_sq(&self) -> f64 {
        self.w.norm_squared() + self.b.norm_squared() + self.v.norm_squared()
    }

    /// Fails unless the network's input dimension is that of `data`.
    pub fn check_dim(&self, data: &Dataset) -> Result<()> {
        if self.dim() == data.d() {
            Ok(())
        } else {
            Err(Error::Mismatch(format!(
                "network input dimension d = {} but data has d = {}",
                self.dim(),
                data.d()
            )))
        }
    }

    /// Pre-activations U = X Wᵀ + 1 bᵀ, shape \[n, m\].
    pub fn preactivations(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        let mut u = product(x, false, &self.w, true);
        for (j, mut col) in u.column_iter_mut().enumerate() {
            col.add_scalar_mut(self.b[j]);
        }
        u
    }

    /// Outputs N(x_i) for every row of `x`.
    pub fn forward(&self, x: &DMatrix<f64>) -> DVector<f64> {
        self.preactivations(x).map(relu) * &self.v
    }

    /// Output at a single point.
    pub fn output(&self, x: &DVector<f64>) -> f64 {
        let u = &self.w * x + &self.b;
        u.iter().zip(self.v.iter()).map(|(u, v)| v * relu(*u)).sum()
    }

    /// Margins q_i = y_i N(x_i).
    pub fn margins(&self, data: &Dataset) -> Vec<f64> {
        self.forward(data.x())
            .iter()
            .zip(data.y())
            .map(|(f, y)| f * y)
            .collect()
    }

    /// Activation pattern at a point: which neurons have w_j·x + b_j > 0.
    pub fn pattern(&self, x: &DVector<f64>) -> Vec<bool> {
        (&self.w * x + &self.b).iter().map(|&u| u > 0.0).collect()
    }

    /// ∇_θ N(x) in the flat order, with ReLU'(0) = 0.
    pub fn gradient(&self, x: &DVector<f64>) -> Vec<f64> {
        let (m, d) = (self.width(), self.dim());
        let u = &self.w * x + &self.b;
        let mut g = vec![0.0; m * (d + 2)];
        for j in 0..m {
            if u[j] > 0.0 {
                for c in 0..d {
                    g[j * d + c] = self.v[j] * x[c];
                }
                g[m * d + j] = self.v[j];
            }
            g[m * d + m + j] = relu(u[j]);
        }
        g
    }

    /// θ ← θ + α·g in place; an error (and a net to discard) if any entry
    /// becomes non-finite, so a `Network` still never holds NaN for long.
    pub fn add_scaled(&mut self, alpha: f64, g: &Network) -> Result<()> {
        if g.w.shape() != self.w.shape() {
            return Err(Error::Mismatch("gradient and network shapes differ".into()));
        }
        // One pass per block over plain slices (vectorised); Σ x·0 is NaN
        // exactly when some x is ±∞ or NaN, which checks finiteness without
        // a branch per entry.
        let mut poison = 0.0;
        for (t, d) in [
            (self.w.as_mut_slice(), g.w.as_slice()),
            (self.b.as_mut_slice(), g.b.as_slice()),
            (self.v.as_mut_slice(), g.v.as_slice()),
        ] {
            for (x, dx) in t.iter_mut().zip(d) {
                *x += alpha * dx;
                poison += *x * 0.0;
            }
        }
        let finite = poison == 0.0;
        if finite {
            Ok(())
        } else {
            Err(Error::Numerical("non-finite parameters".into()))
        }
    }

    /// α·θ (outputs scale by α², by 2-homogeneity).
    pub fn scaled(&self, alpha: f64) -> Self {
        Self {
            w: &self.w * alpha,
            b: &self.b * alpha,
            v: &self.v * alpha,
        }
    }

    /// Rescales θ so that min_i q_i = 1; returns the network and the factor
    /// 1/√(min q). Fails when some point is misclassified or on the boundary.
    pub fn rescaled_to_unit_margin(&self, data: &Dataset) -> Result<(Self, f64)> {
        let alpha = unit_margin_scale(&self.margins(data))?;
        Ok((self.scaled(alpha), alpha))
    }

    /// The same function with every neuron balanced, |v_j| = ‖(w_j, b_j)‖
    /// (ReLU is positively homogeneous, so (αw, αb, v/α) computes the same
    /// output); this minimises ‖θ‖² among rescalings, as every KKT point of
    /// Problem (2) must.
    pub fn balanced(&self) -> Network {
        let mut out = self.clone();
        for j in 0..self.width() {
            let a = self.incoming_norm(j);
            let v = self.v[j].abs();
            if a > 0.0 && v > 0.0 {
                let alpha = (v / a).sqrt();
                out.w.row_mut(j).scale_mut(alpha);
                out.b[j] *= alpha;
                out.v[j] /= alpha;
            }
        }
        out
    }

    /// ‖(w_j, b_j)‖, neuron j's incoming weights with its bias.
    pub fn incoming_norm(&self, j: usize) -> f64 {
        (self.w.row(j).norm_squared() + self.b[j].powi(2)).sqrt()
    }

    /// Each neuron's mass |v_j|·‖(w_j, b_j)‖: its share of ‖θ‖²/2 once
    /// balanced.
    pub fn masses(&self) -> Vec<f64> {
        (0..self.width())
            .map(|j| self.v[j].abs() * self.incoming_norm(j))
            .collect()
    }

    /// Neurons whose contribution is non-negligible: |v_j|·‖(w_j, b_j)‖ above
    /// `rel` times the largest such product.
    pub fn live_neurons(&self, rel: f64) -> usize {
        let mass = self.masses();
        let top = mass.iter().cloned().fold(0.0, f64::max);
        mass.iter().filter(|&&m| m > rel * top && m > 0.0).count()
    }
}

/// The hidden activation: ReLU, or its smooth surrogate softplus_β(u) =
/// log(1 + e^{βu})/β used by the polish continuation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// ReLU(u) = max(u, 0).
    Relu,
    /// softplus_β(u) = log(1 + e^{βu})/β, with β given.
    Softplus(f64),
}

impl Activation {
    /// σ(u).
    #[inline]
    pub fn value(self, u: f64) -> f64 {
        match self {
            Activation::Relu => relu(u),
            Activation::Softplus(beta) => {
                let t = beta * u;
                (t.max(0.0) + (-t.abs()).exp().ln_1p()) / beta
            }
        }
    }

    /// (σ(u), σ'(u)) together (ReLU'(0) = 0): for softplus one exponential serves both
    /// (e = e^{−|βu|}), and beyond |βu| > 40, where e < 5e-18 is below the
    /// resolution of either, none is taken — the profile of the polish was
    /// a third exponentials, much of it in libm's underflow path.
    #[inline]
    pub fn value_and_slope(self, u: f64) -> (f64, f64) {
        match self {
            Activation::Relu => (relu(u), f64::from(u > 0.0)),
            Activation::Softplus(beta) => {
                let t = beta * u;
                let e = if t.abs() > 40.0 {
                    0.0
                } else {
                    (-t.abs()).exp()
                };
                let value = (t.max(0.0) + e.ln_1p()) / beta;
                let slope = if t >= 0.0 {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                };
                (value, slope)
            }
        }
    }
}

/// σ(U) and σ'(U) of a layer's pre-activations, for one pass of an optimiser.
pub struct Activations {
    /// σ(u) for every (point, neuron).
    pub value: DMatrix<f64>,
    /// σ'(u) for every (point, neuron).
    pub slope: DMatrix<f64>,
}

impl Activations {
    /// σ and σ' of every entry of `u`, each computed once
    /// (see [`Activation::value_and_slope`]).
    pub fn of(u: &DMatrix<f64>, act: Activation) -> Self {
        let mut value = DMatrix::zeros(u.nrows(), u.ncols());
        let mut slope = DMatrix::zeros(u.nrows(), u.ncols());
        for ((t, v), s) in u.iter().zip(value.iter_mut()).zip(slope.iter_mut()) {
            (*v, *s) = act.value_and_slope(*t);
        }
        Self { value, slope }
    }
}

impl Network {
    /// Pre-activations U and outputs Σ_j v_j σ(u_ij) for every row of `x`.
    pub fn outputs_with(&self, x: &DMatrix<f64>, act: Activation) -> (DMatrix<f64>, DVector<f64>) {
        let u = self.preactivations(x);
        let out = u.map(|t| act.value(t)) * &self.v;
        (u, out)
    }

    /// σ(U), σ'(U) and the outputs for every row of `x`.
    pub fn activations(&self, x: &DMatrix<f64>, act: Activation) -> (Activations, DVector<f64>) {
        let acts = Activations::of(&self.preactivations(x), act);
        let out = &acts.value * &self.v;
        (acts, out)
    }

    /// Σ_i coef_i ∇_θ N(x_i) for the activation `act`, given U from
    /// [`Network::outputs_with`] — the one pullback that training, polishing
    /// and certification share.
    pub fn pullback(
        &self,
        x: &DMatrix<f64>,
        u: &DMatrix<f64>,
        coef: &DVector<f64>,
        act: Activation,
    ) -> Network {
        self.pullback_from(x, Activations::of(u, act), coef)
    }

    /// [`Network::pullback`] from precomputed σ(U) and σ'(U) (σ'(U) is
    /// reused in place as the pullback's coefficient matrix).
    pub fn pullback_from(
        &self,
        x: &DMatrix<f64>,
        acts: Activations,
        coef: &DVector<f64>,
    ) -> Network {
        let gv = acts.value.transpose() * coef;
        let mut m = acts.slope;
        for (j, mut col) in m.column_iter_mut().enumerate() {
            col.component_mul_assign(coef);
            col *= self.v[j];
        }
        let gw = product(&m, true, x, false);
        let gb = DVector::from_iterator(self.width(), m.column_iter().map(|c| c.sum()));
        Network {
            w: gw,
            b: gb,
            v: gv,
        }
    }
}

/// Summary statistics of a network on a dataset.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evaluation {
    /// Points evaluated.
    pub n: usize,
    /// Share classified correctly.
    pub accuracy: f64,
    /// Points misclassified.
    pub errors: usize,
    /// Smallest margin y_i N(x_i).
    pub min_margin: f64,
    /// Median margin.
    pub median_margin: f64,
    /// Largest margin.
    pub max_margin: f64,
    /// ‖θ‖², for the normalised margin.
    pub norm_sq: f64,
    /// min_i q_i / ‖θ‖² — invariant under rescaling θ.
    pub normalized_margin: f64,
}

impl Evaluation {
    /// Evaluates `net` on `data`.
    pub fn of(net: &Network, data: &Dataset) -> Result<Self> {
        net.check_dim(data)?;
        let m = MarginSummary::of(&net.margins(data))?;
        let norm_sq = net.norm_sq();
        Ok(Self {
            n: m.n,
            accuracy: m.accuracy,
            errors: m.errors,
            min_margin: m.min,
            median_margin: m.median,
            max_margin: m.max,
            norm_sq,
            normalized_margin: if norm_sq > 0.0 { m.min / norm_sq } else { 0.0 },
        })
    }
}

/// What an evaluation reports of a set of margins (either network model):
/// a margin ≤ 0 is an error, ties included.
pub(crate) struct MarginSummary {
    pub n: usize,
    pub accuracy: f64,
    pub errors: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl MarginSummary {
    /// The summary of `margins`, which must not be empty.
    pub(crate) fn of(margins: &[f64]) -> Result<Self> {
        let mut q = margins.to_vec();
        q.sort_by(f64::total_cmp);
        let n = q.len();
        if n == 0 {
            return Err(Error::param("X", "no points"));
        }
        let errors = q.iter().filter(|&&v| v <= 0.0).count();
        Ok(Self {
            n,
            accuracy: 1.0 - errors as f64 / n as f64,
            errors,
            min: q[0],
            median: median_sorted(&q),
            max: q[n - 1],
        })
    }
}

/// Median of a sorted, non-empty slice.
pub fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
