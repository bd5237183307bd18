//! Certified exact minimal ℓ2 distances for deep ReLU nets with a scalar or
//! a C-class output (SPEC §4, deep nets) — the problem of GeoCert (Jordan et
//! al., 2019):
//!
//! ```text
//!   dist(x0) = min ‖δ‖  s.t.  max_{j ≠ c} f_j(x0 + δ) ≥ f_c(x0 + δ),   lo ≤ x0 + δ ≤ hi,
//! ```
//!
//! c the class the flip must leave (the prediction at x0, or the label
//! given); with a scalar output, s0 f(x0 + δ) ≤ 0. The flip set is a union
//! of *goals*, one per rival class j (or the one `target`), each the set
//! where the margin a_jᵀ f = f_j − f_c is nonnegative; dist is the least
//! of the goals' distances.
//!
//! **The search.** Best-first branch and bound over (goal, activation
//! phases): a node fixes some hidden neurons active or inactive, and
//! bounds the others on the ball of the incumbent radius R (every nearer
//! flip lies in it) by linear bound propagation ([`bounds`]); neurons the
//! bounds prove stable need no branch. Its lower bound is the convex
//! relaxation of [`relaxation`] — exact on a fixed activation pattern, the
//! triangle hull of ReLU on each unstable neuron — certified by weak
//! duality at the solver's multipliers, not by its objective. A node is
//! closed when its bound reaches the incumbent, when its relaxation's
//! minimiser is a flip of the network at the bound (the relaxation is
//! tight there), or when no neuron is left unstable; otherwise it branches
//! on the unstable neuron whose relaxation is loosest at the minimiser.
//!
//! **Incumbents.** Every candidate is confirmed by a fresh forward pass
//! before it counts: the relaxation's minimisers; the point where the ray
//! through a minimiser first changes class; DeepFool steps from x0 and the
//! segments to reference points of another class. Each flip found is then
//! *polished*: the program of its own activation pattern (no unstable
//! neuron) is solved and its minimiser, when confirmed, is the nearest flip
//! in that linear region.
//!
//! **What is proven.** `exact` when upper − lower ≤ rel_gap·max(1, upper):
//! upper is the distance of a witness confirmed by the network's forward
//! pass, lower the least bound over the open nodes. Without an input box
//! the search runs in a ball: if no flip is found in it, the point is
//! `bounded` below by its radius; with a box, an empty search is a proof
//! of `no_flip`.

mod bounds;
mod relaxation;
mod search;

pub use search::DeepDistanceSolver;

use crate::distance::Status;
use crate::error::{Error, Result};
use crate::model::deep::Labels;
use nalgebra::DVector;
use serde::{Deserialize, Serialize};

/// Per-coordinate input bounds lo ≤ x ≤ hi (e.g. pixels in [0, 1]).
#[derive(Clone, Debug, PartialEq)]
pub struct InputBox {
    lower: DVector<f64>,
    upper: DVector<f64>,
}

impl InputBox {
    /// The box [lower, upper], rejecting lower > upper and non-finite ends.
    pub fn new(lower: DVector<f64>, upper: DVector<f64>) -> Result<Self> {
        if lower.len() != upper.len() {
            return Err(Error::Mismatch(format!(
                "box bounds of lengths {} and {}",
                lower.len(),
                upper.len()
            )));
        }
        let bad = lower
            .iter()
            .zip(upper.iter())
            .position(|(l, u)| !(l.is_finite() && u.is_finite() && l <= u));
        if let Some(i) = bad {
            return Err(Error::param(
                "box",
                format!(
                    "[{}, {}] at coordinate {i}, expected finite lo ≤ hi",
                    lower[i], upper[i]
                ),
            ));
        }
        Ok(Self { lower, upper })
    }

    /// The same interval [lo, hi] on each of `d` coordinates.
    pub fn uniform(d: usize, lo: f64, hi: f64) -> Result<Self> {
        Self::new(DVector::from_element(d, lo), DVector::from_element(d, hi))
    }

    /// Whether x lies in the box.
    pub fn contains(&self, x: &DVector<f64>) -> bool {
        x.len() == self.lower.len()
            && x.iter()
                .zip(self.lower.iter().zip(self.upper.iter()))
                .all(|(v, (l, u))| l <= v && v <= u)
    }

    /// x moved to the nearest point of the box.
    fn clamp(&self, x: &DVector<f64>) -> DVector<f64> {
        DVector::from_fn(x.len(), |i, _| x[i].clamp(self.lower[i], self.upper[i]))
    }

    /// The distance from x to the farthest corner: the box lies in the ball
    /// of this radius about x.
    fn farthest(&self, x: &DVector<f64>) -> f64 {
        x.iter()
            .zip(self.lower.iter().zip(self.upper.iter()))
            .map(|(v, (l, u))| (v - l).abs().max((u - v).abs()).powi(2))
            .sum::<f64>()
            .sqrt()
    }
}

/// What a flip must leave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    /// The sign s0 = ±1 of a scalar output.
    Sign(f64),
    /// The class c of a C-class output.
    Class(usize),
}

impl Side {
    /// The side of point `i`'s label.
    pub fn of_label(labels: &Labels, i: usize) -> Self {
        match labels {
            Labels::Signs(y) => Side::Sign(y[i]),
            Labels::Classes(y) => Side::Class(y[i]),
        }
    }

    /// The side as a number: ±1 or the class index.
    fn value(self) -> i64 {
        match self {
            Side::Sign(s) => s as i64,
            Side::Class(c) => c as i64,
        }
    }
}

/// Options of the deep search.
#[derive(Clone, Debug)]
pub struct DeepDistanceOptions {
    /// Most branch-and-bound nodes per point.
    pub max_nodes: usize,
    /// Wall-clock limit per point, seconds (`None`: nodes only, the same
    /// result on any machine).
    pub time_limit: Option<f64>,
    /// `exact` when upper − lower ≤ rel_gap·max(1, upper).
    pub rel_gap: f64,
    /// Inputs allowed (the flip must lie in the box; x0 must too).
    pub input_box: Option<InputBox>,
    /// Only flips to this class (C-class outputs).
    pub target: Option<usize>,
    /// The search ball's radius when no flip is known to seed it and there
    /// is no box (default 10·max(1, ‖x0‖)).
    pub radius: Option<f64>,
}

impl Default for DeepDistanceOptions {
    fn default() -> Self {
        Self {
            max_nodes: 200_000,
            time_limit: Some(60.0),
            rel_gap: 1e-9,
            input_box: None,
            target: None,
            radius: None,
        }
    }
}

/// The certified result for one point of a deep net.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeepPointDistance {
    /// Index of the point in its dataset.
    pub index: usize,
    /// What a flip must leave: the class (or the sign ±1 of a scalar output).
    pub leaves: i64,
    /// The proven lower bound on the distance.
    pub lower: Option<f64>,
    /// The norm of the nearest confirmed flip (none if none was found).
    pub upper: Option<f64>,
    /// What was proven: `exact`, `bounded`, `no_flip` or `on_boundary`.
    pub status: Status,
    /// Why a result is `bounded`.
    pub reason: Option<String>,
    /// x0 + δ*, confirmed by a fresh forward pass.
    pub witness: Option<Vec<f64>>,
    /// The class the witness reaches (−s0 for a scalar output): the rival
    /// with the largest margin f_j − f_c ≥ 0 there.
    pub witness_class: Option<i64>,
    /// That margin, from the fresh forward pass (≥ 0).
    pub witness_margin: Option<f64>,
    /// Branch-and-bound nodes explored.
    pub nodes: usize,
    /// Hidden neurons unstable in the first node's ball.
    pub unstable: usize,
    /// Wall time of the search.
    pub seconds: f64,
}
