//! Fully connected ReLU networks of any depth, with a scalar or a C-class
//! output — the nets of Lyu & Li (2020):
//!
//! ```text
//!   h₀ = x,   h_l = ReLU(W_l h_{l−1} + b_l)   (l = 1, …, L),
//!   f(x; θ) = W_{L+1} h_L + b_{L+1} ∈ ℝ^C,     θ = (W_1, b_1, …, W_{L+1}, b_{L+1}),
//! ```
//!
//! any bias possibly absent. With C = 1 the output is classified by its sign
//! (labels ±1) and the margin of a point is q = y f(x); with C ≥ 2 by the
//! argmax (labels 0…C−1) and q = f_y(x) − max_{j≠y} f_j(x). The two-layer
//! net of SPEC §2, N(x) = Σ_j v_j ReLU(w_j·x + b_j), is L = 1, C = 1 with no
//! output bias ([`DeepNet::from_network`], [`DeepNet::as_network`]).
//!
//! **Homogeneity.** Scaling every parameter by α scales f by α^{L+1} exactly
//! when no layer after the first has a nonzero bias: b_1 has degree 1, like
//! W_1 x, but a bias b_l at layer l ≥ 2 has degree 1 while W_l h_{l−1} has
//! degree l. Lyu & Li's theorem — gradient flow converges in direction to a
//! KKT point of min ½‖θ‖² s.t. q_i(θ) ≥ 1 — needs homogeneity, and so does
//! the normalised margin min_i q_i / ‖θ‖^{L+1}, the quantity gradient flow
//! increases; [`DeepNet::homogeneity`] says whether it holds and, if not,
//! which layer breaks it.

use crate::error::{Error, Result};
use crate::model::net::{MarginSummary, Network};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;

/// One affine layer, `x ↦ W x + b` with W \[out, in\].
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    weight: DMatrix<f64>,
    bias: Option<DVector<f64>>,
}

impl Layer {
    /// A layer, rejecting an empty weight, a bias of the wrong length and
    /// non-finite values.
    pub fn new(weight: DMatrix<f64>, bias: Option<DVector<f64>>) -> Result<Self> {
        let (out, inp) = weight.shape();
        if out == 0 || inp == 0 {
            return Err(Error::param(
                "weight",
                format!("shape [{out}, {inp}], expected both dimensions ≥ 1"),
            ));
        }
        if let Some(b) = bias.as_ref().filter(|b| b.len() != out) {
            return Err(Error::Mismatch(format!(
                "a weight with {out} rows has a bias of length {}",
                b.len()
            )));
        }
        let finite = weight
            .iter()
            .chain(bias.iter().flatten())
            .all(|v| v.is_finite());
        if !finite {
            return Err(Error::param("weight", "non-finite value"));
        }
        Ok(Self { weight, bias })
    }

    /// The weight \[out, in\].
    pub fn weight(&self) -> &DMatrix<f64> {
        &self.weight
    }

    /// The bias \[out\], when the layer has one.
    pub fn bias(&self) -> Option<&DVector<f64>> {
        self.bias.as_ref()
    }

    /// Inputs of the layer.
    pub fn inputs(&self) -> usize {
        self.weight.ncols()
    }

    /// Outputs of the layer.
    pub fn outputs(&self) -> usize {
        self.weight.nrows()
    }

    /// Whether the layer has a bias with a nonzero entry.
    fn has_nonzero_bias(&self) -> bool {
        self.bias
            .as_ref()
            .is_some_and(|b| b.iter().any(|&v| v != 0.0))
    }

    /// `H Wᵀ + 1 bᵀ` for a batch H \[n, in\], one point per row.
    pub(crate) fn apply(&self, h: &DMatrix<f64>) -> DMatrix<f64> {
        let mut out = h * self.weight.transpose();
        if let Some(b) = &self.bias {
            for mut row in out.row_iter_mut() {
                row += b.transpose();
            }
        }
        out
    }
}

/// What the last layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// One number, classified by its sign; labels ±1.
    Scalar,
    /// C ≥ 2 scores, classified by the argmax; labels 0…C−1.
    Classes(usize),
}

/// Whether f(x; αθ) = α^degree f(x; θ) for every α > 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Homogeneity {
    /// Homogeneous of this degree (the number of layers).
    Homogeneous {
        /// L + 1.
        degree: usize,
    },
    /// Layer `layer` (1-based) is after the first and has a nonzero bias.
    NotHomogeneous {
        /// The first offending layer, counted from 1.
        layer: usize,
    },
}

impl Homogeneity {
    /// The degree, when homogeneous.
    pub fn degree(self) -> Option<usize> {
        match self {
            Homogeneity::Homogeneous { degree } => Some(degree),
            Homogeneity::NotHomogeneous { .. } => None,
        }
    }

    /// Why a command that needs homogeneity refuses the net (None when it holds).
    pub fn refusal(self) -> Option<String> {
        match self {
            Homogeneity::Homogeneous { .. } => None,
            Homogeneity::NotHomogeneous { layer } => Some(format!(
                "layer {layer} has a nonzero bias: a bias after the first layer makes the net non-homogeneous in θ, and the max-margin problem's KKT conditions (Lyu & Li) are stated for homogeneous nets; train with bias=False after the first layer"
            )),
        }
    }
}

/// Labels of a classification problem, matched to a net's [`Output`].
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// ±1, for a scalar output.
    Signs(Vec<f64>),
    /// 0…C−1, for C classes.
    Classes(Vec<usize>),
}

impl Labels {
    /// Reads raw label values for a net with `output`, checking each one:
    /// ±1 for a scalar output, an integer in 0…C−1 for C classes.
    pub fn for_output(values: &[f64], output: Output) -> std::result::Result<Self, String> {
        match output {
            Output::Scalar => match values.iter().position(|&v| v != 1.0 && v != -1.0) {
                Some(i) => Err(format!(
                    "label {} at index {i}, expected +1 or -1 (the net has one output)",
                    values[i]
                )),
                None => Ok(Labels::Signs(values.to_vec())),
            },
            Output::Classes(c) => {
                let bad = |v: f64| v.fract() != 0.0 || v < 0.0 || v >= c as f64;
                match values.iter().position(|&v| bad(v)) {
                    Some(i) => Err(format!(
                        "label {} at index {i}, expected a class 0…{} (the net has {c} outputs)",
                        values[i],
                        c - 1
                    )),
                    None => Ok(Labels::Classes(
                        values.iter().map(|&v| v as usize).collect(),
                    )),
                }
            }
        }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        match self {
            Labels::Signs(y) => y.len(),
            Labels::Classes(y) => y.len(),
        }
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A validated fully connected ReLU network: consecutive layers chain
/// (each layer's inputs are the previous layer's outputs), there are at
/// least two layers, and every value is finite.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepNet {
    layers: Vec<Layer>,
}

impl DeepNet {
    /// A network from its layers, input first.
    ///
    /// ```
    /// use kktcert::model::deep::{DeepNet, Layer, Output};
    /// use nalgebra::{dmatrix, dvector};
    /// let net = DeepNet::new(vec![
    ///     Layer::new(dmatrix![1.0, 0.0; 0.0, 1.0], Some(dvector![0.0, -1.0]))?,
    ///     Layer::new(dmatrix![1.0, 1.0; 1.0, -1.0; 0.0, 2.0], None)?,
    ///     Layer::new(dmatrix![1.0, 0.0, 0.0; 0.0, 1.0, 0.0; 0.0, 0.0, 1.0], None)?,
    /// ])?;
    /// assert_eq!((net.hidden_layers(), net.output()), (2, Output::Classes(3)));
    /// let f = net.forward(&dmatrix![2.0, 3.0]); // h1 = (2, 2), h2 = (4, 0, 4)
    /// assert_eq!(f.row(0).iter().copied().collect::<Vec<_>>(), [4.0, 0.0, 4.0]);
    /// # Ok::<(), kktcert::Error>(())
    /// ```
    pub fn new(layers: Vec<Layer>) -> Result<Self> {
        if layers.len() < 2 {
            return Err(Error::param(
                "layers",
                format!(
                    "{} linear layer(s), expected at least two (a hidden ReLU layer and the output)",
                    layers.len()
                ),
            ));
        }
        for (l, pair) in layers.windows(2).enumerate() {
            if pair[1].inputs() != pair[0].outputs() {
                return Err(Error::Mismatch(format!(
                    "layer {} has {} outputs but layer {} takes {} inputs",
                    l + 1,
                    pair[0].outputs(),
                    l + 2,
                    pair[1].inputs()
                )));
            }
        }
        Ok(Self { layers })
    }

    /// The two-layer net N(x) + c as the case L = 1 (the output bias only
    /// when c ≠ 0).
    pub fn from_network(net: &Network, output_bias: f64) -> Self {
        let hidden = Layer {
            weight: net.w().clone(),
            bias: Some(net.b().clone()),
        };
        let out = Layer {
            weight: DMatrix::from_row_slice(1, net.width(), net.v().as_slice()),
            bias: (output_bias != 0.0).then(|| DVector::from_element(1, output_bias)),
        };
        Self {
            layers: vec![hidden, out],
        }
    }

    /// The net as SPEC §2's two-layer network and its output bias, when it
    /// is one (one hidden layer, one output).
    pub fn as_network(&self) -> Option<(Network, f64)> {
        let [hidden, out] = self.layers.as_slice() else {
            return None;
        };
        if out.outputs() != 1 {
            return None;
        }
        let b = hidden
            .bias
            .clone()
            .unwrap_or_else(|| DVector::zeros(hidden.outputs()));
        let c = out.bias.as_ref().map_or(0.0, |c| c[0]);
        let net = Network::new(hidden.weight.clone(), b, out.weight.row(0).transpose()).ok()?;
        Some((net, c))
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// L, the number of hidden (ReLU) layers.
    pub fn hidden_layers(&self) -> usize {
        self.layers.len() - 1
    }

    /// Input dimension d.
    pub fn input_dim(&self) -> usize {
        self.layers[0].inputs()
    }

    /// What the last layer computes.
    pub fn output(&self) -> Output {
        match self.layers[self.layers.len() - 1].outputs() {
            1 => Output::Scalar,
            c => Output::Classes(c),
        }
    }

    /// Parameters in θ (weights and present biases).
    pub fn num_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.as_ref().map_or(0, |b| b.len()))
            .sum()
    }

    /// θ flattened: per layer, W row-major, then b when present.
    pub fn flat(&self) -> DVector<f64> {
        flatten(self.layers.iter().map(|l| (&l.weight, l.bias.as_ref())))
    }

    /// A net of the same shapes (and biases) with parameters `theta`, in
    /// [`DeepNet::flat`]'s order.
    pub fn with_flat(&self, theta: &DVector<f64>) -> Result<Self> {
        if theta.len() != self.num_params() {
            return Err(Error::Mismatch(format!(
                "{} parameters for a net with {}",
                theta.len(),
                self.num_params()
            )));
        }
        let shapes = self
            .layers
            .iter()
            .map(|l| (l.weight.shape(), l.bias.as_ref().map(|b| b.len())));
        let layers = unflatten(shapes, theta)
            .into_iter()
            .map(|(w, b)| Layer::new(w, b))
            .collect::<Result<Vec<_>>>()?;
        Self::new(layers)
    }

    /// Each layer's coordinate range in [`DeepNet::flat`].
    pub fn blocks(&self) -> Vec<std::ops::Range<usize>> {
        let mut at = 0;
        self.layers
            .iter()
            .map(|l| {
                let k = l.weight.len() + l.bias.as_ref().map_or(0, |b| b.len());
                at += k;
                at - k..at
            })
            .collect()
    }

    /// ‖θ‖².
    pub fn norm_sq(&self) -> f64 {
        self.layers
            .iter()
            .map(|l| l.weight.norm_squared() + l.bias.as_ref().map_or(0.0, |b| b.norm_squared()))
            .sum()
    }

    /// Whether the net is homogeneous in θ, and of which degree.
    pub fn homogeneity(&self) -> Homogeneity {
        match self.layers.iter().skip(1).position(Layer::has_nonzero_bias) {
            Some(i) => Homogeneity::NotHomogeneous { layer: i + 2 },
            None => Homogeneity::Homogeneous {
                degree: self.layers.len(),
            },
        }
    }

    /// f on a batch X \[n, d\]: the scores \[n, C\] (C = 1 for a scalar output).
    pub fn forward(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        let (hidden, last) = self.layers.split_at(self.layers.len() - 1);
        let h = hidden
            .iter()
            .fold(x.clone(), |h, layer| layer.apply(&h).map(|u| u.max(0.0)));
        last[0].apply(&h)
    }

    /// Checks that `x` has the net's input dimension.
    pub fn check_dim(&self, x: &DMatrix<f64>) -> Result<()> {
        if x.ncols() != self.input_dim() {
            return Err(Error::Mismatch(format!(
                "the data has dimension {} but the net takes {} inputs",
                x.ncols(),
                self.input_dim()
            )));
        }
        Ok(())
    }

    /// The margin q_i of every point: y_i f(x_i) for a scalar output,
    /// f_{y_i}(x_i) − max_{j≠y_i} f_j(x_i) for classes.
    pub fn margins(&self, x: &DMatrix<f64>, labels: &Labels) -> Result<Vec<f64>> {
        self.check_dim(x)?;
        if labels.len() != x.nrows() {
            return Err(Error::Mismatch(format!(
                "{} points but {} labels",
                x.nrows(),
                labels.len()
            )));
        }
        let f = self.forward(x);
        match (labels, self.output()) {
            (Labels::Signs(y), Output::Scalar) => Ok(y
                .iter()
                .zip(f.column(0).iter())
                .map(|(y, f)| y * f)
                .collect()),
            (Labels::Classes(y), Output::Classes(_)) => Ok(y
                .iter()
                .zip(f.row_iter())
                .map(|(&yi, row)| {
                    let rival = row
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != yi)
                        .map(|(_, &v)| v)
                        .fold(f64::NEG_INFINITY, f64::max);
                    row[yi] - rival
                })
                .collect()),
            _ => Err(Error::Mismatch(format!(
                "labels of the wrong kind for a net with output {:?}",
                self.output()
            ))),
        }
    }
}

/// θ flattened from per-layer blocks (W, b): W row-major, then b when
/// present — the one order in which every module flattens a deep net.
pub(crate) fn flatten<'a>(
    blocks: impl IntoIterator<Item = (&'a DMatrix<f64>, Option<&'a DVector<f64>>)>,
) -> DVector<f64> {
    let mut out = Vec::new();
    for (w, b) in blocks {
        out.extend(w.transpose().iter());
        if let Some(b) = b {
            out.extend(b.iter());
        }
    }
    DVector::from_vec(out)
}

/// The inverse of [`flatten`]: `v` cut into blocks of the given weight
/// shapes and bias lengths. The caller guarantees the lengths add up.
pub(crate) fn unflatten(
    shapes: impl IntoIterator<Item = ((usize, usize), Option<usize>)>,
    v: &DVector<f64>,
) -> Vec<(DMatrix<f64>, Option<DVector<f64>>)> {
    let mut at = 0;
    let mut take = |k: usize| {
        let s = v.rows(at, k).into_owned();
        at += k;
        s
    };
    shapes
        .into_iter()
        .map(|((r, c), bias)| {
            let w = DMatrix::from_row_slice(r, c, take(r * c).as_slice());
            (w, bias.map(&mut take))
        })
        .collect()
}

/// Summary statistics of a deep net on labelled points.
#[derive(Clone, Debug, Serialize)]
pub struct DeepEvaluation {
    /// Points evaluated.
    pub n: usize,
    /// Share classified correctly (a margin > 0).
    pub accuracy: f64,
    /// Points misclassified (margin ≤ 0: ties count as errors).
    pub errors: usize,
    /// Hidden layers L.
    pub hidden_layers: usize,
    /// The output.
    pub output: Output,
    /// Whether the net is homogeneous.
    pub homogeneity: Homogeneity,
    /// Smallest margin.
    pub min_margin: f64,
    /// Median margin.
    pub median_margin: f64,
    /// Largest margin.
    pub max_margin: f64,
    /// ‖θ‖².
    pub norm_sq: f64,
    /// min_i q_i / ‖θ‖^{L+1}, invariant under θ ↦ αθ; only for a homogeneous net.
    pub normalized_margin: Option<f64>,
    /// Every point's margin, in the data's order.
    pub margins: Vec<f64>,
}

impl DeepEvaluation {
    /// Evaluates `net` on `x` with `labels`.
    pub fn of(net: &DeepNet, x: &DMatrix<f64>, labels: &Labels) -> Result<Self> {
        let margins = net.margins(x, labels)?;
        let m = MarginSummary::of(&margins)?;
        let norm_sq = net.norm_sq();
        let homogeneity = net.homogeneity();
        let normalized_margin = homogeneity.degree().map(|deg| {
            if norm_sq > 0.0 {
                m.min / norm_sq.powf(deg as f64 / 2.0)
            } else {
                0.0
            }
        });
        Ok(Self {
            n: m.n,
            accuracy: m.accuracy,
            errors: m.errors,
            hidden_layers: net.hidden_layers(),
            output: net.output(),
            homogeneity,
            min_margin: m.min,
            median_margin: m.median,
            max_margin: m.max,
            norm_sq,
            normalized_margin,
            margins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{dmatrix, dvector};

    fn three_class() -> DeepNet {
        DeepNet::new(vec![
            Layer::new(dmatrix![1.0, -1.0; 2.0, 0.5; -1.0, 1.0], None).unwrap(),
            Layer::new(dmatrix![1.0, 0.0, 1.0; 0.5, 1.0, -1.0], None).unwrap(),
            Layer::new(dmatrix![1.0, 0.0; 0.0, 1.0; 1.0, -1.0], None).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn a_bias_free_deep_net_is_homogeneous_of_its_layer_count() {
        let net = three_class();
        assert_eq!(net.homogeneity(), Homogeneity::Homogeneous { degree: 3 });
        let x = dmatrix![0.3, -0.7; 1.5, 0.2];
        let scaled = DeepNet::new(
            net.layers()
                .iter()
                .map(|l| Layer::new(l.weight() * 2.0, None).unwrap())
                .collect(),
        )
        .unwrap();
        let (f, g) = (net.forward(&x), scaled.forward(&x));
        assert!((g - f * 8.0).norm() < 1e-12);
    }

    #[test]
    fn a_later_bias_breaks_homogeneity_and_says_where() {
        let mut layers = three_class().layers;
        layers[2].bias = Some(dvector![0.0, 0.1, 0.0]);
        let net = DeepNet::new(layers).unwrap();
        assert_eq!(net.homogeneity(), Homogeneity::NotHomogeneous { layer: 3 });
        assert!(net.homogeneity().refusal().unwrap().contains("layer 3"));
    }

    #[test]
    fn multiclass_margins_are_the_gap_to_the_best_rival() {
        // x = (1, 0): h1 = (1, 2, 0), h2 = (1, 2.5), f = (1, 2.5, -1.5).
        let net = three_class();
        let x = dmatrix![1.0, 0.0];
        let q = net.margins(&x, &Labels::Classes(vec![1])).unwrap();
        assert!((q[0] - 1.5).abs() < 1e-15);
        let q = net.margins(&x, &Labels::Classes(vec![2])).unwrap();
        assert!((q[0] + 4.0).abs() < 1e-15);
    }

    #[test]
    fn the_two_layer_net_is_the_case_of_one_hidden_layer() {
        let w = dmatrix![1.0, 2.0; -1.0, 0.5; 0.0, 1.0];
        let net = Network::new(w, dvector![0.1, -0.2, 0.3], dvector![1.0, -2.0, 0.5]).unwrap();
        let deep = DeepNet::from_network(&net, 0.25);
        let x = dmatrix![0.3, -0.7; 1.5, 0.2; -2.0, 1.0];
        let f = deep.forward(&x);
        for i in 0..3 {
            assert!((f[(i, 0)] - net.output(&x.row(i).transpose()) - 0.25).abs() < 1e-14);
        }
        assert_eq!(deep.as_network(), Some((net, 0.25)));
        assert_eq!(deep.homogeneity(), Homogeneity::NotHomogeneous { layer: 2 });
    }

    #[test]
    fn labels_are_checked_against_the_output() {
        assert!(Labels::for_output(&[1.0, -1.0], Output::Scalar).is_ok());
        assert!(Labels::for_output(&[0.0], Output::Scalar).is_err());
        assert!(Labels::for_output(&[0.0, 2.0], Output::Classes(3)).is_ok());
        let e = Labels::for_output(&[3.0], Output::Classes(3)).unwrap_err();
        assert!(e.contains("expected a class 0…2"), "{e}");
        assert!(Labels::for_output(&[0.5], Output::Classes(3)).is_err());
    }
}
