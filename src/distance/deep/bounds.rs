//! Layer-wise bounds on the pre-activations inside a node: linear bound
//! propagation (CROWN, Zhang et al. 2018) over the ball ∩ box.
//!
//! Every flip nearer than the incumbent R lies in the ball B(x0, R) (and
//! in the input box when there is one), so bounds that hold there are
//! sound for the search. For hidden layer k, ẑ_k = W_k h_{k−1} + b_k is
//! bounded above by replacing each earlier ReLU with a line that bounds it
//! on its own interval [l, u] — above by the chord
//!
//! ```text
//!   relu(z) ≤ u (z − l) / (u − l)                  (l < 0 < u),
//! ```
//!
//! below by relu(z) ≥ α z with α ∈ {0, 1} (the one with the smaller area,
//! α = 1 iff u ≥ −l), choosing the upper line where the coefficient is
//! positive and the lower one where it is negative. The layers collapse
//! to Λ x + c, whose maximum over the ball is Λ x0 + c + R‖Λ_i‖ row by
//! row, and over the ball ∩ box is found exactly by [`ball_in_box`] (on
//! images many pixels sit at a bound, and the intersection is far smaller
//! than either set). A neuron branched active (or
//! inactive) is the line z (or 0) on both sides, which is exact inside
//! its branch; a stable one (l ≥ 0 or u ≤ 0) likewise. The lower bound
//! is −(the upper bound of −Λ).

use super::InputBox;
use crate::model::deep::{DeepNet, Layer};
use nalgebra::{DMatrix, DVector};

/// A branch decision on one hidden neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not branched on: its state comes from the bounds.
    Free,
    /// Branched z ≥ 0.
    Active,
    /// Branched z ≤ 0.
    Inactive,
}

/// What a node knows of one ReLU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Relu {
    /// z ≥ 0 throughout the node: relu(z) = z.
    Active,
    /// z ≤ 0 throughout the node: relu(z) = 0.
    Inactive,
    /// z ranges over [lower, upper] ∋ 0 in the node.
    Unstable { lower: f64, upper: f64 },
}

impl Relu {
    /// The state of a neuron branched `phase` with pre-activation in
    /// [lower, upper]; `None` when the branch is empty.
    fn of(phase: Phase, lower: f64, upper: f64) -> Option<Self> {
        match phase {
            Phase::Active => (upper >= 0.0).then_some(Relu::Active),
            Phase::Inactive => (lower <= 0.0).then_some(Relu::Inactive),
            Phase::Free if lower >= 0.0 => Some(Relu::Active),
            Phase::Free if upper <= 0.0 => Some(Relu::Inactive),
            Phase::Free => Some(Relu::Unstable { lower, upper }),
        }
    }

    /// relu(z) ≤ s z + t on the node: (s, t).
    pub(super) fn upper_line(self) -> (f64, f64) {
        match self {
            Relu::Active => (1.0, 0.0),
            Relu::Inactive => (0.0, 0.0),
            Relu::Unstable { lower, upper } => {
                let s = upper / (upper - lower);
                (s, -s * lower)
            }
        }
    }

    /// relu(z) ≥ s z + t on the node: (s, t).
    fn lower_line(self) -> (f64, f64) {
        match self {
            Relu::Active => (1.0, 0.0),
            Relu::Inactive => (0.0, 0.0),
            Relu::Unstable { lower, upper } => (if upper >= -lower { 1.0 } else { 0.0 }, 0.0),
        }
    }
}

/// Where the flips that matter lie: the ball B(x0, radius) ∩ the box.
pub(super) struct Domain<'a> {
    pub x0: &'a DVector<f64>,
    pub radius: f64,
    pub input_box: Option<&'a InputBox>,
}

impl Domain<'_> {
    /// The maximum of each row of Λ x + c over the domain.
    fn upper(&self, lam: &DMatrix<f64>, c: &DVector<f64>) -> DVector<f64> {
        let centre = lam * self.x0 + c;
        DVector::from_fn(lam.nrows(), |i, _| {
            let row = lam.row(i).transpose();
            centre[i] + self.reach(&row)
        })
    }

    /// max λᵀδ over ‖δ‖ ≤ R and the box shifted to x0.
    fn reach(&self, lam: &DVector<f64>) -> f64 {
        match self.input_box {
            None => self.radius * lam.norm(),
            Some(b) => ball_in_box(
                lam,
                self.radius,
                &(&b.lower - self.x0),
                &(&b.upper - self.x0),
            ),
        }
    }
}

/// max λᵀδ over ‖δ‖ ≤ R, a ≤ δ ≤ b (a ≤ 0 ≤ b): the maximiser is
/// δ(s) = clip(sλ, a, b) at the s ≥ 0 where ‖δ(s)‖ reaches R (or the box's
/// corner, when it lies inside the ball). ‖δ(s)‖² is Σ_clipped δ_i² +
/// s² Σ_free λ_i² between consecutive breakpoints s_i = (b_i or a_i)/λ_i,
/// so one pass over the sorted breakpoints finds s exactly.
fn ball_in_box(lam: &DVector<f64>, radius: f64, a: &DVector<f64>, b: &DVector<f64>) -> f64 {
    let mut breaks: Vec<(f64, usize)> = Vec::with_capacity(lam.len());
    let mut free_sq = 0.0;
    for (i, &l) in lam.iter().enumerate() {
        if l != 0.0 {
            let end = if l > 0.0 { b[i] } else { a[i] };
            breaks.push((end / l, i));
            free_sq += l * l;
        }
    }
    breaks.sort_by(|x, y| x.0.total_cmp(&y.0));
    let r2 = radius * radius;
    let (mut clipped_sq, mut clipped_val) = (0.0, 0.0);
    for &(s_i, i) in &breaks {
        // On [previous break, s_i] every coordinate after i is still free.
        if free_sq > 0.0 && clipped_sq + s_i * s_i * free_sq >= r2 {
            let s = ((r2 - clipped_sq).max(0.0) / free_sq).sqrt();
            return clipped_val + s * free_sq;
        }
        let end = s_i * lam[i];
        clipped_sq += end * end;
        clipped_val += lam[i] * end;
        free_sq -= lam[i] * lam[i];
    }
    clipped_val
}

/// The maximum of Λ h + c over the domain, h the post-activations of the
/// last layer in `known` (the input x when `known` is empty).
pub(super) fn upper_through(
    known: &[Vec<Relu>],
    hidden: &[Layer],
    domain: &Domain,
    mut lam: DMatrix<f64>,
    mut c: DVector<f64>,
) -> DVector<f64> {
    for (k, relus) in known.iter().enumerate().rev() {
        for (j, r) in relus.iter().enumerate() {
            let (up, lo) = (r.upper_line(), r.lower_line());
            for i in 0..lam.nrows() {
                let l = lam[(i, j)];
                let (s, t) = if l >= 0.0 { up } else { lo };
                c[i] += l * t;
                lam[(i, j)] = l * s;
            }
        }
        if let Some(b) = hidden[k].bias() {
            c += &lam * b;
        }
        lam = &lam * hidden[k].weight();
    }
    domain.upper(&lam, &c)
}

/// Every hidden ReLU's state in the node whose branch decisions are
/// `phases` (all hidden neurons, layer by layer); `None` when a branch
/// contradicts the bounds (the node holds no point of the domain).
pub(super) fn relus(net: &DeepNet, domain: &Domain, phases: &[Phase]) -> Option<Vec<Vec<Relu>>> {
    let hidden = &net.layers()[..net.hidden_layers()];
    let mut known: Vec<Vec<Relu>> = Vec::with_capacity(hidden.len());
    let mut at = 0;
    for layer in hidden {
        let (w, b) = (layer.weight(), bias_or_zero(layer));
        let up = upper_through(&known, hidden, domain, w.clone(), b.clone());
        let lo = -upper_through(&known, hidden, domain, -w, -b);
        let row = (0..w.nrows())
            .map(|j| Relu::of(phases[at + j], lo[j], up[j]))
            .collect::<Option<Vec<_>>>()?;
        at += w.nrows();
        known.push(row);
    }
    Some(known)
}

/// The layer's bias, zeros when it has none.
pub(super) fn bias_or_zero(layer: &Layer) -> DVector<f64> {
    layer
        .bias()
        .cloned()
        .unwrap_or_else(|| DVector::zeros(layer.outputs()))
}
