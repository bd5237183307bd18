//! Certified exact minimal ℓ2 sign-flipping distance (SPEC §4).
//!
//! For x0 with s0 = sign N(x0) ≠ 0 we compute dist(x0) = min ‖δ‖ s.t.
//! s0·N(x0 + δ) ≤ 0, with a witness and a proven lower bound.
//!
//! **Why branch-and-bound over *hurting* neurons only.** Write
//! s0·N = Σ_{help} |v_j| ReLU(u_j) − Σ_{hurt} |v_j| ReLU(u_j), where a neuron
//! "helps" when s0·v_j > 0. The helping part is convex in x, so once every
//! hurting neuron's state is fixed (active: u_j ≥ 0 and contributes
//! −|v_j|u_j; inactive: u_j ≤ 0 and contributes 0) the flip set is convex and
//! the node problem is a convex QP — exact, whatever the degeneracy of the
//! arrangement (coincident hyperplanes, duplicated or zero neurons need no
//! special case: there is no facet walking). Free hurting neurons are relaxed
//! by the chord (triangle) upper bound of ReLU over [l_j, h_j], the range of
//! u_j on the ball of the incumbent radius R; neurons whose sign cannot change
//! within R are fixed up front. Best-first search on the nodes' lower bounds
//! closes when the best open bound reaches the incumbent.
//!
//! **Tighter chords.** Three things narrow [l_j, h_j] inside a node, all
//! sound because a flip of norm below r lies in the ball of radius r:
//! (i) the ball is cut by each branched neuron's half-space (the extremes of
//! w_jᵀδ over a ball cut by one plane are in closed form), (ii) the
//! radius itself is searched: min(r, LB(r)) bounds the node for every
//! r ≤ R, so the node's bound is the fixed point LB(r) = r (bisection),
//! which on a width-200 GD net with a wide gap raised the bound reached
//! in 20 s from 1.57 to 3.11 (the incumbent: 4.97; with the capped QP's
//! cheaper nodes since, 3.53).
//!
//! (iii) **Dual cuts.** Any dual point z of a node's relaxation on the
//! ball of radius r aggregates its rows Mδ ≤ −r into one half-space,
//! (Mᵀz)ᵀδ ≤ −rᵀz, that holds at every flip of the node within r: the
//! tangent plane at the relaxed optimum, beyond which every such flip lies.
//! Cutting the ball with it narrows every chord again, the re-solved
//! relaxation has a higher bound and a deeper cut, and the rounds repeat
//! while the bound rises ([`DistanceOptions::cut_rounds`]); a cut found
//! on one ball serves every smaller ball of the node, the bisection's
//! included. This is
//! bound tightening by the node's own dual — the role LP-based bound
//! tightening plays in MIP solvers — at the price of one QP per round. On
//! GD nets of width 400 (k=6, d=100) it took every point from `bounded`
//! after 60 s (55,000–160,000 nodes) to `exact` in 1–5 nodes and at most
//! 0.06 s.
//!
//! (iv) **The quadratic bound** ([`crate::distance::shor`]). Where the chords
//! leave a node open, a second bound couples its free hurting neurons:
//! each ReLU under a parabola valid everywhere, the S-lemma on the sum
//! (the dual of the Shor SDP relaxation, maximised by L-BFGS, behind a
//! log-det barrier from a cold start and warm started from the parent's
//! maximiser elsewhere). The maximiser, not the relaxation, was what left
//! the sweep's last ten GD distances `bounded` (SPEC note 22): at one of
//! their roots the Shor SDP's value is the distance itself. The chords
//! produce the candidates; the node's bound is the larger of the two; it
//! is tried only where the chords leave more than 1% open
//! (`QUADRATIC_GAP`). Where it is the larger, every other level of a
//! path branches on the neuron whose parabola is loosest at the
//! relaxation's minimiser (`shor::loosest`) instead of the chords'
//! widest: each rule misses slack the other sees (SPEC note 21; the full
//! sweep's `bounded` GD distances went from 23 to 10).
//! On GD nets trained from a large initialisation the quadratic bound is
//! what closes the search: a k=8, d=1600, width-80 net went from 0/10
//! points `exact` after 1,500 nodes to 10/10 in at most 0.36 s each.
//!
//! (v) **Probing** (`shor::probe`). After a node's quadratic
//! bound, the bound of each child that fixes one free hurting neuron has a
//! closed form at the node's maximiser (deleting a row and column of the
//! Woodbury matrix, O(1) per child after one pass over the inverse's
//! diagonal). A child it proves pruned, after a full certified evaluation,
//! needs no node: its sibling's state is fixed in place, as many at once
//! as the probe certifies (`PROBE_BUDGET`). On a width-1000 GD net this
//! replaced chains of hundreds of nodes, each pruning one child, by a few
//! nodes. The children of a node whose quadratic bound beat its chords
//! go to the quadratic bound directly, with one chord solve for the
//! branching and the witness; the quadratic minimiser δ* is tried as a
//! witness too. Width 1000 (d = 784) went from 0/5 points `exact` in 60 s
//! to 5/5 in 3–18 s.
//!
//! **Node problem and its dual.** With rows M (each a combination of the w_j)
//! the node is min ½‖δ‖² s.t. the output row gᵀδ + Σ_H c_j t_j + h0 ≤ 0,
//! w_jᵀδ + u_j0 ≤ t_j, t_j ≥ 0 (helping neurons, c_j = |v_j|), and the fixed
//! neurons' sign rows. Its Lagrange dual is
//! max −½‖Mᵀz‖² + rᵀz over z = (μ0, α, ν) ≥ 0 with α_j ≤ c_j μ0, which is
//! exactly the capped QP of [`crate::linalg::qp_capped`] on the Gram matrix
//! C (W Wᵀ) Cᵀ — a few hundred flops per entry, independent of d. Every
//! dual-feasible z gives a valid lower bound (weak duality); δ = −Mᵀz is the
//! primal point, re-checked by a fresh forward pass before it becomes the
//! incumbent.

use crate::error::{Error, Result};
use crate::linalg::{qp_capped, Cap, Constraints, Finish};
use crate::model::data::Dataset;
use crate::model::net::{relu, Network};
pub mod shor;
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};
use shor::{Probe, Warm};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::Instant;

/// Options of the exact search.
#[derive(Clone, Debug)]
pub struct DistanceOptions {
    /// Most branch-and-bound nodes per point.
    pub max_nodes: usize,
    /// Wall-clock limit per point, seconds.
    pub time_limit: Option<f64>,
    /// `exact` when upper − lower ≤ rel_gap·max(1, upper).
    pub rel_gap: f64,
    /// Most dual-cut rounds per node and radius (0: chords over the ball
    /// and the branched half-spaces only; see the module doc).
    pub cut_rounds: usize,
    /// L-BFGS iterations of the quadratic (S-lemma) bound per node, tried
    /// where the chords leave the node open (0 turns it off; see
    /// [`crate::distance::shor`]).
    pub quadratic_iterations: usize,
}

impl Default for DistanceOptions {
    fn default() -> Self {
        Self {
            max_nodes: 5_000_000,
            time_limit: Some(60.0),
            rel_gap: 1e-9,
            cut_rounds: 100,
            quadratic_iterations: 50,
        }
    }
}

/// How a point's search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// upper − lower within the tolerance.
    Exact,
    /// A limit stopped the search: [lower, upper] is proven, not tight.
    Bounded,
    /// No input of the other sign exists (proven).
    NoFlip,
    /// N(x0) = 0: the point is already on the decision boundary.
    OnBoundary,
}

/// The certified result for one point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PointDistance {
    pub index: usize,
    pub label: f64,
    pub output: f64,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub status: Status,
    pub reason: Option<String>,
    /// x0 + δ*, whose forward pass was re-checked to satisfy s0·N ≤ 0.
    pub witness: Option<Vec<f64>>,
    /// s0·N(witness), from the fresh forward pass.
    pub witness_output: Option<f64>,
    pub nodes: usize,
    /// Hurting neurons that could switch within the final radius.
    pub unstable_hurting: usize,
    pub seconds: f64,
}

/// Role of a neuron relative to the sign s0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Help,
    Hurt,
    Idle,
}

/// Per-point data shared by all nodes.
struct Search<'a> {
    /// The network searched (merged, in the span of W).
    net: &'a Network,
    /// The network as given, on which every candidate is checked.
    original: &'a Network,
    /// Q of the span of W (None: the search runs in input space).
    basis: Option<&'a DMatrix<f64>>,
    /// The original first layer in the search's coordinates, W Q, and its
    /// pre-activations at x0: with them a candidate's original output costs
    /// O(m²), not O(md) (the final witness gets a literal forward pass).
    original_in_basis: Option<&'a DMatrix<f64>>,
    original_u0: DVector<f64>,
    /// x0 in input space (`x0` below is in the search's coordinates).
    x0_input: DVector<f64>,
    kmat: &'a DMatrix<f64>,
    x0: DVector<f64>,
    s0: f64,
    u0: DVector<f64>,
    wnorm: &'a [f64],
    /// ‖W‖_F of the searched network (the rounding bound of δ).
    wfrob: f64,
    roles: Vec<Role>,
    /// [`DistanceOptions::cut_rounds`].
    cut_rounds: usize,
    /// [`DistanceOptions::quadratic_iterations`].
    quadratic_iterations: usize,
    /// |v_j| of the searched network.
    abs_v: Vec<f64>,
}

/// A hurting neuron's state in a node: `None` free, `Some(true)` active.
type Assign = Vec<Option<bool>>;

/// A node's convex relaxation on a ball: the ranges and effective states
/// of the neurons, the output row (γ, h0) scaled by 1/κ, the unit rows
/// (helping first, then fixed: (neuron, sign/‖w_j‖)) and the helping rows'
/// caps.
struct Relaxation {
    ranges: Vec<(f64, f64)>,
    eff: Assign,
    gamma: DVector<f64>,
    h0: f64,
    rows: Vec<(usize, f64)>,
    caps: Vec<f64>,
}

/// A solved node.
struct NodeSol {
    lb: f64,
    delta: DVector<f64>,
    /// The free hurting neuron with the largest relaxation gap at δ, if any gap is non-zero.
    branch: Option<usize>,
    /// The half-space the dual point proves the node's flips lie in.
    cut: Option<DualCut>,
}

/// What a node's quadratic bound leaves the search: its maximiser, to
/// warm-start the children and to probe, and the relaxation's minimiser δ*,
/// a direction to look for flips in.
struct Quadratic {
    warm: Warm,
    delta: DVector<f64>,
    /// It proved more than the chords.
    decisive: bool,
}

/// The nearer of two verified flips.
fn nearer(
    a: Option<(f64, DVector<f64>)>,
    b: Option<(f64, DVector<f64>)>,
) -> Option<(f64, DVector<f64>)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// A dual-feasible point z of a node's relaxation, as far as its proofs
/// need it: rᵀz rounded down, ‖δ‖ of the computed δ ≈ −Mᵀz, and a bound on
/// ‖δ + Mᵀz‖ (the rounding of δ).
struct DualPoint {
    rz: f64,
    norm: f64,
    err: f64,
}

impl DualPoint {
    /// The lower bound z proves, max over t ≥ 0 of the dual at t·z,
    /// sqrt(2(t rᵀz − ½t²‖Mᵀz‖²)) = (rᵀz)₊/‖Mᵀz‖: free of z's scale (a QP
    /// stopped far along an unbounded direction still gives a meaningful
    /// bound) and safe against rounding (‖Mᵀz‖ ≤ ‖δ‖ + err).
    fn bound(&self) -> f64 {
        if self.rz <= 0.0 {
            return 0.0;
        }
        let norm = self.norm + self.err;
        if norm > 0.0 {
            self.rz / norm
        } else {
            f64::INFINITY
        }
    }

    /// The half-space z proves the node's flips within `radius` lie in
    /// (see [`DualCut`]), given W δ: with v = −δ ≈ Mᵀz, every such flip
    /// has vᵀx ≤ −rᵀz + ‖v − Mᵀz‖·radius. `None` when it says nothing
    /// (rᵀz ≤ 0).
    fn cut(&self, wd: &DVector<f64>, radius: f64) -> Option<DualCut> {
        if self.rz <= 0.0 || self.norm == 0.0 {
            return None;
        }
        let c = (-self.rz + self.err * radius) / self.norm;
        Some(DualCut {
            along: -wd / self.norm,
            c: c + 4.0 * f64::EPSILON * (c.abs() + radius),
            radius,
        })
    }
}

/// A half-space âᵀδ ≤ c that every flip of a node within `radius` lies in:
/// the dual point z of the node's relaxation on that ball aggregates its
/// rows Mδ ≤ −r into (Mᵀz)ᵀδ ≤ −rᵀz, so â = Mᵀz/‖Mᵀz‖ (with rounding
/// folded into c). Stored as the neurons' projections w_jᵀâ, which is all
/// the range computation needs.
#[derive(Clone)]
struct DualCut {
    along: DVector<f64>,
    c: f64,
    radius: f64,
}

impl Search<'_> {
    /// s0·N at the search point `x`, by a forward pass of the original
    /// network at its input-space image: a candidate counts only when the
    /// network as given confirms it.
    fn out(&self, x: &DVector<f64>) -> f64 {
        let Some(a) = self.original_in_basis else {
            return self.s0 * self.original.output(&self.lift(x));
        };
        let u = &self.original_u0 + a * (x - &self.x0);
        let n: f64 = u
            .iter()
            .zip(self.original.v().iter())
            .map(|(u, v)| v * relu(*u))
            .sum();
        self.s0 * n
    }

    /// A search point in input space: x0 + Q(x − Qᵀx0), or x itself.
    fn lift(&self, x: &DVector<f64>) -> DVector<f64> {
        match self.basis {
            Some(q) => &self.x0_input + q * (x - &self.x0),
            None => x.clone(),
        }
    }

    /// 1/‖w_j‖ (1 for a zero neuron): scales a sign row to a unit normal.
    fn unit(&self, j: usize) -> f64 {
        if self.wnorm[j] > 0.0 {
            1.0 / self.wnorm[j]
        } else {
            1.0
        }
    }

    /// Range of u_j over the ball of radius `r` around x0.
    fn range(&self, j: usize, r: f64) -> (f64, f64) {
        (
            self.u0[j] - r * self.wnorm[j],
            self.u0[j] + r * self.wnorm[j],
        )
    }

    /// Ranges of every u_j over the ball of radius `r` intersected with the
    /// half-space of each branched neuron's state, one half-space at a time
    /// (in closed form: the extremes of a linear function over a ball cut by
    /// a plane), or `None` when a half-space misses the ball, so that no
    /// point of the node lies within `r`. Widened by 1e-12 relative against
    /// rounding, which only loosens the chords.
    fn ranges(&self, assign: &Assign, r: f64, dual: &[DualCut]) -> Option<Vec<(f64, f64)>> {
        // (i, s_i/‖w_i‖, c_i): the cut (s_i/‖w_i‖)·w_iᵀδ ≤ c_i.
        let mut cuts = Vec::new();
        for (i, state) in assign.iter().enumerate() {
            let (Some(active), n) = (*state, self.wnorm[i]) else {
                continue;
            };
            if n == 0.0 {
                continue;
            }
            let sign = if active { -1.0 } else { 1.0 };
            let c = -sign * self.u0[i] / n;
            if c < -r {
                return None;
            }
            cuts.push((i, sign / n, c));
        }
        let dual: Vec<&DualCut> = dual.iter().filter(|cut| cut.radius >= r).collect();
        if dual.iter().any(|cut| cut.c < -r) {
            return None;
        }
        let ranges = (0..self.roles.len()).map(|j| {
            let wn = self.wnorm[j];
            let (mut lo, mut hi) = (-r * wn, r * wn);
            let along = cuts
                .iter()
                .map(|&(i, scale, c)| (scale * self.kmat[(i, j)], c))
                .chain(dual.iter().map(|cut| (cut.along[j], cut.c)));
            for (along, c) in along {
                hi = hi.min(cut_max(wn, along, c, r));
                lo = lo.max(-cut_max(wn, -along, c, r));
            }
            let pad = 1e-12 * r * wn;
            (self.u0[j] + lo - pad, self.u0[j] + hi + pad)
        });
        Some(ranges.collect())
    }

    /// Hurting neurons fixed by their ranges or by the assignment.
    fn effective(&self, assign: &Assign, ranges: &[(f64, f64)]) -> Assign {
        (0..self.roles.len())
            .map(|j| {
                if self.roles[j] != Role::Hurt {
                    return None;
                }
                let (l, h) = ranges[j];
                assign[j].or(if l >= 0.0 {
                    Some(true)
                } else if h <= 0.0 {
                    Some(false)
                } else {
                    None
                })
            })
            .collect()
    }

    /// Solves the node's convex relaxation on the ball of radius `r`, with
    /// every row tightened by the distance `tighten` (0 for the bound; a
    /// tiny positive value to get a strictly flipped witness at a leaf whose
    /// optimum sits exactly on the boundary).
    fn solve(
        &self,
        assign: &Assign,
        r: f64,
        tighten: f64,
        finish: Finish,
        cuts: &[DualCut],
    ) -> NodeSol {
        let Some(rel) = self.relaxation(assign, r, cuts) else {
            return NodeSol {
                lb: f64::INFINITY,
                delta: DVector::zeros(self.x0.len()),
                branch: None,
                cut: None,
            };
        };
        let (hm, rv, qcaps) = self.dual_qp(&rel, tighten);
        // A bound search needs only to know whether the bound reaches r:
        // the dual value ½r² (objective −½r²) settles it.
        let floor = match finish {
            Finish::Fast => -0.5 * r * r * (1.0 + 1e-9),
            Finish::Exact => f64::NEG_INFINITY,
        };
        let k = rv.len();
        let cons = Constraints {
            caps: &qcaps,
            a: &DMatrix::zeros(0, k),
            b: &DVector::zeros(0),
        };
        let mut z = qp_capped(&hm, &rv, &cons, finish, floor, &[]).z;
        for (a, cap) in qcaps.iter().enumerate() {
            if let Some(cap) = cap {
                z[a] = z[a].min(cap.c * z[cap.master]);
            }
        }
        // δ = −Mᵀz = −Wᵀ(Cᵀz), and |C|ᵀz for its rounding error.
        let mut ctz = &rel.gamma * z[0];
        let mut abs_ctz = rel.gamma.abs() * z[0];
        for (a, &(j, s)) in rel.rows.iter().enumerate() {
            ctz[j] += s * z[a + 1];
            abs_ctz[j] += s.abs() * z[a + 1];
        }
        let delta = -(self.net.w().transpose() * ctz);
        // W δ, the pre-activations' change: for the branching and the cut.
        let wd = self.net.w() * &delta;
        let dual = self.dual_point(&rv, &z, &delta, &abs_ctz);
        NodeSol {
            lb: dual.bound(),
            branch: self.branching(&rel, &wd),
            cut: dual.cut(&wd, r),
            delta,
        }
    }

    /// The node's convex relaxation on the ball of radius `r`, or `None`
    /// when no point of the node flips within it. Rows are scaled for
    /// conditioning: the output row by 1/κ (κ the largest |v_j|), helping
    /// and sign rows to unit normals. A helping row's dual variable is then
    /// capped by α_j ≤ (|v_j|‖w_j‖/κ)·μ0: the coefficient sits in the cap,
    /// not in the Gram matrix, so a neuron with a tiny |v_j| (a nearly
    /// cancelled pair) does not make the QP ill-conditioned.
    fn relaxation(&self, assign: &Assign, r: f64, cuts: &[DualCut]) -> Option<Relaxation> {
        let m = self.roles.len();
        let ranges = self.ranges(assign, r, cuts)?;
        let eff = self.effective(assign, &ranges);
        // Output row: coefficients γ over neurons (g = Wᵀγ) and constant h0.
        let mut gamma = DVector::zeros(m);
        let mut h0 = 0.0;
        // Unit rows: (neuron, sign s) meaning s·(w_jᵀδ + u_j0) ≤ … .
        let mut help = Vec::new();
        let mut fixed = Vec::new();
        for j in 0..m {
            let a = self.net.v()[j].abs();
            if self.wnorm[j] == 0.0 {
                // A constant neuron (w_j = 0: an output bias in disguise, or
                // a dead neuron) adds s0·v_j·ReLU(b_j) everywhere. Folding it
                // into the constant keeps a zero row out of the dual's Gram
                // matrix, where it made the QP singular and the bound stall.
                h0 += self.s0 * self.net.v()[j] * relu(self.u0[j]);
                continue;
            }
            match (self.roles[j], eff[j]) {
                (Role::Help, _) if ranges[j].1 > 0.0 => help.push(j),
                (Role::Hurt, Some(true)) => {
                    gamma[j] -= a;
                    h0 -= a * self.u0[j];
                    fixed.push((j, -self.unit(j)));
                }
                (Role::Hurt, Some(false)) => fixed.push((j, self.unit(j))),
                (Role::Hurt, None) => {
                    let (l, h) = ranges[j];
                    let slope = h / (h - l);
                    gamma[j] -= a * slope;
                    h0 -= a * slope * (self.u0[j] - l);
                }
                _ => {}
            }
        }
        if h0 > 0.0 && gamma.iter().all(|&g| g == 0.0) {
            // The output row reads Σ c_j t_j + h0 ≤ 0 with t ≥ 0 and h0 > 0
            // (a positive constant neuron, nothing hurting left active): no
            // δ flips this piece.
            return None;
        }
        let kappa = self.net.v().amax();
        let caps = help
            .iter()
            .map(|&j| self.net.v()[j].abs() / kappa / self.unit(j))
            .collect();
        let rows = help
            .iter()
            .map(|&j| (j, self.unit(j)))
            .chain(fixed)
            .collect();
        Some(Relaxation {
            ranges,
            eff,
            gamma: gamma / kappa,
            h0: h0 / kappa,
            rows,
            caps,
        })
    }

    /// The dual QP of a relaxation: the Gram matrix of its rows M (through
    /// W Wᵀ), their constants r (sign rows tightened by `tighten` times
    /// their norm), and the helping rows' caps on μ0. Rows: 0 = output, then
    /// helping (w_j, u_j0), then fixed (s·w_j, s·u_j0).
    fn dual_qp(
        &self,
        rel: &Relaxation,
        tighten: f64,
    ) -> (DMatrix<f64>, DVector<f64>, Vec<Option<Cap>>) {
        let rows = &rel.rows;
        let k = 1 + rows.len();
        let kg = self.kmat * &rel.gamma;
        let mut hm = DMatrix::zeros(k, k);
        hm[(0, 0)] = rel.gamma.dot(&kg);
        for (a, &(j, s)) in rows.iter().enumerate() {
            hm[(0, a + 1)] = s * kg[j];
            hm[(a + 1, 0)] = s * kg[j];
            for (b, &(l, t)) in rows.iter().enumerate() {
                hm[(a + 1, b + 1)] = s * t * self.kmat[(j, l)];
            }
        }
        // Tightening the sign rows (not the output row) moves the optimum
        // strictly inside its piece; the helping rows t_j ≥ u_j + η then make
        // the true output strictly below the relaxed one, or exactly 0 where
        // every helping neuron is off.
        let mut rv = DVector::zeros(k);
        rv[0] = rel.h0;
        for (a, &(j, s)) in rows.iter().enumerate() {
            rv[a + 1] = s * self.u0[j] + tighten * hm[(a + 1, a + 1)].sqrt();
        }
        let caps = std::iter::once(None)
            .chain(rel.caps.iter().map(|&c| Some(Cap { master: 0, c })))
            .chain((rel.caps.len()..rows.len()).map(|_| None))
            .collect();
        (hm, rv, caps)
    }

    /// The branching choice: None when every free hurting neuron's chord is
    /// exact at δ (the relaxed optimum is then a flip of the node), else
    /// the free hurting neuron whose chord is loosest at its worst point,
    /// the kink: |v_j|·h·(−l)/(h − l), the widest piece of the relaxation
    /// (as BaBSR-style rules score it). Measured against the looseness at
    /// δ itself: 8% fewer nodes over 16 exact points of a k=8, d=400,
    /// width-80 GD net (14,650 against 15,922) and higher bounds after
    /// 1,500 nodes on the k=32, width-320 net's points 0–2 (3.11, 3.23,
    /// 3.48 against 3.05, 3.16, 3.39).
    fn branching(&self, rel: &Relaxation, wd: &DVector<f64>) -> Option<usize> {
        let free = || {
            (0..self.roles.len()).filter(|&j| self.roles[j] == Role::Hurt && rel.eff[j].is_none())
        };
        let loose_at_delta = free().any(|j| {
            let (l, h) = rel.ranges[j];
            let u = self.u0[j] + wd[j];
            h * (u - l) / (h - l) - relu(u) > 0.0
        });
        if !loose_at_delta {
            return None;
        }
        let widest = |j: usize| {
            let (l, h) = rel.ranges[j];
            self.net.v()[j].abs() * h * -l / (h - l)
        };
        free().max_by(|&a, &b| widest(a).total_cmp(&widest(b)))
    }

    /// What the dual-feasible z proves (see [`DualPoint`]), with rᵀz
    /// rounded down and the rounding of the computed δ bounded by Higham's
    /// bound for sums, γ_N·Σ|terms| with γ_N = N·ε/(1 − N·ε) (doubled for
    /// the two products behind δ, and ‖|W|ᵀa‖ ≤ ‖W‖_F‖a‖).
    fn dual_point(
        &self,
        r: &DVector<f64>,
        z: &DVector<f64>,
        delta: &DVector<f64>,
        abs_ctz: &DVector<f64>,
    ) -> DualPoint {
        let n = (z.len() + self.roles.len() + 2) as f64;
        let g = n * f64::EPSILON / (1.0 - n * f64::EPSILON);
        let norm = delta.norm();
        DualPoint {
            rz: r.dot(z) - g * r.abs().dot(z),
            norm,
            err: g * norm + 2.0 * g * self.wfrob * abs_ctz.norm(),
        }
    }

    /// The node's certified lower bound: the chords' ([`Self::chord_bound`])
    /// and, where they leave more than [`QUADRATIC_GAP`] open on the
    /// incumbent's ball, the quadratic bound's, warm-started from the
    /// parent's maximiser. A node whose parent's quadratic bound beat its
    /// chords goes to it directly: its chords get one solve on the
    /// incumbent's ball, for the branching, the witness and the leaf test.
    /// Their cut rounds and bisection were 86% of a width-1000 search's
    /// time once probing was in, and decided nothing there. Returns the
    /// solution the branching should use, its radius, the dual cuts, and
    /// what the quadratic bound reached. The entry's bound is the parent's.
    fn bound(
        &self,
        assign: &Assign,
        big_r: f64,
        tol: f64,
        entry: &Entry,
    ) -> (NodeSol, f64, Vec<DualCut>, Option<Quadratic>) {
        let parent = entry.lb;
        let (mut sol, hi, cuts, open) = if entry.quadratic_first {
            let sol = self.solve(assign, big_r, 0.0, Finish::Fast, &[]);
            (sol, big_r, Vec::new(), true)
        } else {
            self.chord_bound(assign, big_r, parent, tol)
        };
        sol.lb = sol.lb.max(parent);
        let mut reached = None;
        let open = open && sol.branch.is_some() && sol.lb < big_r - tol;
        if open && self.quadratic_iterations > 0 {
            let warm = entry.warm.as_deref();
            let (qlb, w, y) = self.quadratic_bound(assign, big_r, big_r - tol, warm);
            // The two rules miss different slack (SPEC note 21): where the
            // quadratic bound binds, they alternate along each path.
            let decisive = qlb > sol.lb;
            let depth = assign.iter().flatten().count();
            if decisive && depth.is_multiple_of(2) {
                sol.branch = self.loosest(assign, big_r, &cuts, &w, &y).or(sol.branch);
            }
            reached = Some(Quadratic {
                warm: w,
                delta: self.net.w().transpose() * y * 0.5,
                decisive,
            });
            sol.lb = sol.lb.max(qlb);
        }
        (sol, hi, cuts, reached)
    }

    /// The chords' bound, from relaxations on balls of several radii: a
    /// flip of norm below r lies in the ball of radius r, where the chords
    /// over that ball's ranges hold, so min(r, LB(r)) bounds the node for
    /// every r ≤ `big_r` (the incumbent) and the best r is the fixed point
    /// LB(r) = r, found by bisection from the parent's bound `parent`. Returns the solution whose relaxation
    /// the branching should use (the smallest radius whose optimum lies
    /// inside its ball, with the bound proven as its `lb`), that radius,
    /// the cuts, and whether the chords on the incumbent's ball left more
    /// than [`QUADRATIC_GAP`] open.
    fn chord_bound(
        &self,
        assign: &Assign,
        big_r: f64,
        parent: f64,
        tol: f64,
    ) -> (NodeSol, f64, Vec<DualCut>, bool) {
        let mut cuts = Vec::new();
        let mut hi = big_r;
        let mut sol = self.cut_rounds(assign, hi, tol, &mut cuts);
        let open = sol.lb < big_r * (1.0 - QUADRATIC_GAP);
        let mut lb = sol.lb.max(parent);
        for _ in 0..BISECTIONS {
            if sol.branch.is_none() || lb >= hi - tol || hi - lb <= BISECTION_GAP * hi {
                break;
            }
            let r = 0.5 * (lb + hi);
            let trial = self.cut_rounds(assign, r, tol, &mut cuts);
            if trial.lb >= r {
                lb = r;
            } else {
                lb = lb.max(trial.lb);
                hi = r;
                sol = trial;
            }
        }
        sol.lb = lb;
        (sol, hi, cuts, open)
    }

    /// The node's lower bound from quadratic over-estimators of its free
    /// hurting neurons ([`crate::distance::shor`]), started from parabolas
    /// fitted to the ball of the incumbent radius `big_r` or from `warm`, a
    /// parent's maximiser.
    fn quadratic_bound(
        &self,
        assign: &Assign,
        big_r: f64,
        target: f64,
        warm: Option<&Warm>,
    ) -> (f64, Warm, DVector<f64>) {
        let node = self.quadratic_node(assign);
        // A cold start (the root) gets more iterations than a warm one.
        let iterations = self.quadratic_iterations * if warm.is_some() { 1 } else { 4 };
        shor::lower_bound(&node, warm, big_r, target, iterations)
    }

    /// Where a node whose quadratic bound binds should branch: the free
    /// hurting neuron (free also on the incumbent's ball cut by `cuts`, so
    /// that both children can hold flips) whose parabola is loosest at the
    /// relaxation's minimiser ([`shor::loosest`]).
    fn loosest(
        &self,
        assign: &Assign,
        big_r: f64,
        cuts: &[DualCut],
        warm: &Warm,
        y: &DVector<f64>,
    ) -> Option<usize> {
        let ranges = self.ranges(assign, big_r, cuts)?;
        let eff = self.effective(assign, &ranges);
        let node = self.quadratic_node(assign);
        let free: Vec<usize> = (0..eff.len())
            .filter(|&j| self.roles[j] == Role::Hurt && eff[j].is_none())
            .collect();
        shor::loosest(&node, warm, y, &free)
    }

    /// The hurting neurons of the node that [`shor::probe`] proves
    /// can be fixed (their other state has no flip nearer than `target`),
    /// from the node's quadratic maximiser `warm`.
    fn probe(&self, assign: &Assign, warm: &Warm, target: f64) -> Probe {
        shor::probe(&self.quadratic_node(assign), warm, target, PROBE_BUDGET)
    }

    /// The node as the quadratic bound sees it.
    fn quadratic_node(&self, assign: &Assign) -> shor::Node<'_> {
        let (terms, k0) = shor::terms(self.s0, self.net.v(), self.wnorm, &self.u0, assign);
        shor::Node {
            kmat: self.kmat,
            u0: &self.u0,
            a: &self.abs_v,
            terms,
            k0,
        }
    }

    /// The relaxation on the ball of radius `r`, re-solved with each
    /// solution's dual cut added to `cuts` (at most `cut_rounds` times)
    /// while the bound still rises by [`CUT_GAIN`] and stays below r.
    fn cut_rounds(&self, assign: &Assign, r: f64, tol: f64, cuts: &mut Vec<DualCut>) -> NodeSol {
        let mut sol = self.solve(assign, r, 0.0, Finish::Fast, cuts);
        for _ in 0..self.cut_rounds {
            if sol.branch.is_none() || sol.lb >= r - tol {
                break;
            }
            let Some(cut) = sol.cut.take() else {
                break;
            };
            cuts.push(cut);
            let trial = self.solve(assign, r, 0.0, Finish::Fast, cuts);
            let improved = trial.lb > sol.lb * (1.0 + CUT_GAIN);
            if trial.lb >= sol.lb {
                sol = trial;
            }
            if !improved {
                break;
            }
        }
        sol
    }

    /// A verified flip point near x0 + δ: δ itself, pushed outward against
    /// rounding, or else the first flip on the ray through δ.
    fn verify(&self, delta: &DVector<f64>) -> Option<(f64, DVector<f64>)> {
        [0.0, 1e-12, 1e-10]
            .iter()
            .find_map(|&push| {
                let x = &self.x0 + delta * (1.0 + push);
                (self.out(&x) <= 0.0).then(|| ((&x - &self.x0).norm(), x))
            })
            .or_else(|| self.ray(delta))
    }

    /// First verified flip along the ray x0 + r·e (e ≠ 0).
    fn ray(&self, e: &DVector<f64>) -> Option<(f64, DVector<f64>)> {
        let n = e.norm();
        if n == 0.0 {
            return None;
        }
        let e = e / n;
        let r = crate::model::ray::critical_radius(self.net, &self.x0, self.s0, &(-&e * self.s0))?;
        [0.0, 1e-12, 1e-10, 1e-8].iter().find_map(|&push| {
            let x = &self.x0 + &e * (r * (1.0 + push));
            (self.out(&x) <= 0.0).then(|| ((&x - &self.x0).norm(), x))
        })
    }
}

/// max wᵀδ over ‖δ‖ ≤ r and aᵀδ ≤ c (‖a‖ = 1, |c| ≤ r), given ‖w‖ and
/// aᵀw (`along`). Writing δ = s·a + t·e with e ⊥ a in the plane of a and w,
/// the objective is along·s + across·t over s ≤ c, s² + t² ≤ r², concave
/// on the circle: its peak s* = r·along/‖w‖ if that satisfies the cut
/// (value r‖w‖), else s = c (value along·c + across·√(r² − c²)).
fn cut_max(wn: f64, along: f64, c: f64, r: f64) -> f64 {
    if r * along <= c * wn {
        return r * wn;
    }
    let across = (wn * wn - along * along).max(0.0).sqrt();
    along * c + across * (r * r - c * c).max(0.0).sqrt()
}

/// The search tree, one record per node: its parent and the hurting neuron
/// it fixed (the root fixes none). An open node costs 16 bytes, not an
/// m-entry assignment, so millions of nodes fit in memory and the time
/// limit, not the node limit, is what ends a long search.
struct Tree {
    nodes: Vec<(usize, u32, bool)>,
}

impl Tree {
    const ROOT: usize = 0;

    fn new() -> Self {
        Self {
            nodes: vec![(usize::MAX, u32::MAX, false)],
        }
    }

    /// The child of `parent` with neuron j fixed (active or not).
    fn child(&mut self, parent: usize, j: usize, active: bool) -> usize {
        let j = u32::try_from(j).expect("a width fits in u32");
        self.nodes.push((parent, j, active));
        self.nodes.len() - 1
    }

    /// The states fixed along the path from the root to `node`.
    fn assignment(&self, mut node: usize, m: usize) -> Assign {
        let mut a = vec![None; m];
        while node != Self::ROOT {
            let (parent, j, active) = self.nodes[node];
            a[j as usize] = Some(active);
            node = parent;
        }
        a
    }
}

/// What a branch-and-bound established: the incumbent (in the search's
/// coordinates), the proven lower bound, and the limit that stopped it.
struct Searched {
    best: (f64, DVector<f64>),
    lower: f64,
    stopped: Option<String>,
    nodes: usize,
}

/// The node or time limit, if reached (as the reason a search stopped).
fn limit_reached(opts: &DistanceOptions, nodes: usize, t0: Instant) -> Option<String> {
    if nodes >= opts.max_nodes {
        return Some(format!("node limit {} reached", opts.max_nodes));
    }
    opts.time_limit
        .filter(|&t| t0.elapsed().as_secs_f64() > t)
        .map(|t| format!("time limit {t:.1}s reached"))
}

/// A node whose relaxation is exact on the ball of `radius` cut by `cuts`.
struct Leaf<'a> {
    assign: &'a Assign,
    cuts: &'a [DualCut],
    radius: f64,
}

/// Best-first queue entry (min-heap on the bound), with the parent's
/// quadratic maximiser as the warm start of its bound.
struct Entry {
    lb: f64,
    node: usize,
    warm: Option<Rc<Warm>>,
    /// The parent's quadratic bound beat its chords: go to it directly.
    quadratic_first: bool,
}

impl Entry {
    fn root() -> Self {
        Self {
            lb: 0.0,
            node: Tree::ROOT,
            warm: None,
            quadratic_first: false,
        }
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.lb == o.lb
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        o.lb.total_cmp(&self.lb)
    }
}

/// Precomputed per-network data for many points.
///
/// **The span of W.** Only W δ enters the problem, so the nearest flip lies
/// in x0 + row-space(W): with Wᵀ = Q R (Householder QR, Q d×m orthonormal),
/// the search runs on the network with first layer W' = Rᵀ (m × m) at the
/// point Qᵀx0, and the witness y maps back to x0 + Q(y − Qᵀx0), which is
/// confirmed by a forward pass of the original network. When d > m this
/// makes every node's work independent of d (the rays, the verifications
/// and δ itself live in m dimensions); the reduction is exact up to the
/// rounding of an orthogonal factorisation.
pub struct DistanceSolver<'a> {
    /// The network as given: witnesses are confirmed on it.
    original: &'a Network,
    /// The same function with exact duplicates merged (what is searched),
    /// in the coordinates of `basis` when there is one.
    net: Network,
    /// Q (d × m) when d > m: inputs are searched as Qᵀx.
    basis: Option<DMatrix<f64>>,
    /// The original network's W Q (rows of every original neuron).
    original_in_basis: Option<DMatrix<f64>>,
    kmat: DMatrix<f64>,
    wnorm: Vec<f64>,
    /// Points of known other sign used to seed the incumbent (may be empty).
    references: Vec<DVector<f64>>,
    /// Extra attack directions (e.g. the universal direction).
    directions: Vec<DVector<f64>>,
}

impl<'a> DistanceSolver<'a> {
    /// Prepares the search for `net`.
    pub fn new(original: &'a Network) -> Self {
        let merged = original.merged_duplicates();
        let (net, basis) = if merged.dim() > merged.width() {
            let qr = merged.w().transpose().qr();
            let reduced = Network::new(qr.r().transpose(), merged.b().clone(), merged.v().clone())
                .expect("a factor of a finite matrix is finite");
            (reduced, Some(qr.q()))
        } else {
            (merged, None)
        };
        let kmat = net.w() * net.w().transpose();
        let wnorm = (0..net.width()).map(|j| net.w().row(j).norm()).collect();
        // The O(m²) proxy pays only when d ≫ m; below, candidates get the
        // literal forward pass (whose rounding the final check repeats).
        let original_in_basis = basis
            .as_ref()
            .filter(|_| original.dim() > 4 * original.width())
            .map(|q| original.w() * q);
        Self {
            original,
            net,
            basis,
            original_in_basis,
            kmat,
            wnorm,
            references: Vec::new(),
            directions: Vec::new(),
        }
    }

    /// An input in the search's coordinates (Qᵀx, or x itself).
    fn project(&self, x: &DVector<f64>) -> DVector<f64> {
        match &self.basis {
            Some(q) => q.tr_mul(x),
            None => x.clone(),
        }
    }

    /// Adds reference inputs (e.g. the dataset) used to seed incumbents.
    pub fn with_references(mut self, data: &Dataset) -> Self {
        self.references = (0..data.n())
            .map(|i| self.project(&data.point(i)))
            .collect();
        self
    }

    /// Adds attack directions tried in both senses (e.g. the universal direction).
    pub fn with_direction(mut self, dir: DVector<f64>) -> Self {
        let d = self.project(&dir);
        self.directions.push(d);
        self
    }

    /// The per-point search data; `x0r` is x0 in the search's coordinates.
    fn search(&self, x0: &DVector<f64>, x0r: &DVector<f64>, opts: &DistanceOptions) -> Search<'_> {
        let s0 = self.original.output(x0).signum();
        let roles = (0..self.net.width())
            .map(|j| {
                let sv = s0 * self.net.v()[j];
                if sv > 0.0 {
                    Role::Help
                } else if sv < 0.0 {
                    Role::Hurt
                } else {
                    Role::Idle
                }
            })
            .collect();
        Search {
            net: &self.net,
            original: self.original,
            basis: self.basis.as_ref(),
            original_in_basis: self.original_in_basis.as_ref(),
            original_u0: self.original.w() * x0 + self.original.b(),
            x0_input: x0.clone(),
            kmat: &self.kmat,
            x0: x0r.clone(),
            s0,
            u0: self.net.w() * x0r + self.net.b(),
            wnorm: &self.wnorm,
            wfrob: self.net.w().norm(),
            roles,
            cut_rounds: opts.cut_rounds,
            quadratic_iterations: opts.quadratic_iterations,
            abs_v: self.net.v().iter().map(|v| v.abs()).collect(),
        }
    }

    /// Cheap attacks: rays along the input gradient, given directions,
    /// neuron normals, and segments toward reference points of the other sign.
    fn seed(&self, s: &Search) -> Option<(f64, DVector<f64>)> {
        let net = &self.net;
        let mut dirs: Vec<DVector<f64>> = Vec::new();
        let grad = (0..net.width())
            .filter(|&j| s.u0[j] > 0.0)
            .fold(DVector::zeros(net.dim()), |g, j| {
                g + net.w().row(j).transpose() * net.v()[j]
            });
        dirs.push(-grad * s.s0);
        for d in &self.directions {
            dirs.push(d.clone());
            dirs.push(-d);
        }
        for j in 0..net.width() {
            let w = net.w().row(j).transpose();
            match s.roles[j] {
                Role::Hurt => dirs.push(w),
                Role::Help if s.u0[j] > 0.0 => dirs.push(-w),
                _ => {}
            }
        }
        let mut others: Vec<(f64, &DVector<f64>)> = self
            .references
            .iter()
            .filter(|x| s.out(x) <= 0.0)
            .map(|x| ((x - &s.x0).norm(), x))
            .collect();
        others.sort_by(|a, b| a.0.total_cmp(&b.0));
        dirs.extend(others.iter().take(32).map(|(_, x)| *x - &s.x0));
        dirs.iter()
            .filter_map(|e| s.ray(e))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// Improves an incumbent by solving the convex piece of its hurting pattern, repeatedly.
    fn refine(&self, s: &Search, mut best: (f64, DVector<f64>)) -> (f64, DVector<f64>) {
        for _ in 0..20 {
            let u = self.net.w() * &best.1 + self.net.b();
            let assign: Assign = (0..u.len())
                .map(|j| (s.roles[j] == Role::Hurt).then_some(u[j] > 0.0))
                .collect();
            let sol = s.solve(&assign, best.0, 0.0, Finish::Exact, &[]);
            match s.verify(&sol.delta) {
                Some(c) if c.0 < best.0 * (1.0 - 1e-13) => best = c,
                _ => break,
            }
        }
        best
    }

    /// The certified distance of `x0` (with its dataset index and label, for the report).
    pub fn distance(
        &self,
        x0: &DVector<f64>,
        index: usize,
        label: f64,
        opts: &DistanceOptions,
    ) -> Result<PointDistance> {
        let t0 = Instant::now();
        if x0.len() != self.original.dim() {
            return Err(Error::Mismatch(format!(
                "point has d = {}, network d = {}",
                x0.len(),
                self.original.dim()
            )));
        }
        let x0r = self.project(x0);
        let s = self.search(x0, &x0r, opts);
        let output = self.original.output(x0);
        let mut res = PointDistance {
            index,
            label,
            output,
            lower: None,
            upper: None,
            status: Status::Exact,
            reason: None,
            witness: None,
            witness_output: None,
            nodes: 0,
            unstable_hurting: 0,
            seconds: 0.0,
        };
        if output == 0.0 {
            res.status = Status::OnBoundary;
            res.lower = Some(0.0);
            res.upper = Some(0.0);
            res.witness = Some(x0.iter().copied().collect());
            res.witness_output = Some(0.0);
            return Ok(res);
        }
        let seeded = match self.seed(&s) {
            Some(b) => Ok(Some(b)),
            None => self.complete_seed(&s),
        };
        let best = match seeded {
            Ok(Some(b)) => self.refine(&s, b),
            Ok(None) => {
                res.status = Status::NoFlip;
                res.seconds = t0.elapsed().as_secs_f64();
                return Ok(res);
            }
            Err(reason) => {
                res.status = Status::Bounded;
                res.lower = Some(0.0);
                res.reason = Some(reason);
                res.seconds = t0.elapsed().as_secs_f64();
                return Ok(res);
            }
        };
        let searched = self.branch_and_bound(&s, best, opts, t0);
        res.nodes = searched.nodes;
        self.conclude(&s, x0, searched, opts, &mut res);
        res.seconds = t0.elapsed().as_secs_f64();
        Ok(res)
    }

    /// Best-first branch-and-bound from the incumbent `best` until the best
    /// open bound reaches it or a limit stops the search.
    fn branch_and_bound(
        &self,
        s: &Search,
        mut best: (f64, DVector<f64>),
        opts: &DistanceOptions,
        t0: Instant,
    ) -> Searched {
        let mut tree = Tree::new();
        let mut heap = BinaryHeap::new();
        heap.push(Entry::root());
        let mut lower = best.0;
        let mut stopped = None;
        let mut nodes = 0;
        while let Some(e) = heap.pop() {
            let tol = opts.rel_gap * best.0.max(1.0);
            if e.lb >= best.0 - tol {
                lower = lower.min(e.lb);
                heap.clear();
                break;
            }
            stopped = limit_reached(opts, nodes, t0);
            if stopped.is_some() {
                heap.push(e);
                break;
            }
            nodes += 1;
            // Internal nodes need only a valid bound; a node whose
            // relaxation is exact is re-solved accurately for its witness.
            let assign = tree.assignment(e.node, self.net.width());
            let (mut sol, radius, cuts, quad) = s.bound(&assign, best.0, tol, &e);
            if sol.branch.is_none() {
                sol = s.solve(&assign, radius, 0.0, Finish::Exact, &cuts);
            }
            let lb = sol.lb.max(e.lb);
            if lb >= best.0 - tol {
                lower = lower.min(lb);
                continue;
            }
            let mut candidate = s.verify(&sol.delta);
            if let Some(q) = quad.as_ref().filter(|q| q.delta.norm() < best.0) {
                candidate = nearer(candidate, s.verify(&q.delta));
            }
            if sol.branch.is_none() {
                let leaf = Leaf {
                    assign: &assign,
                    cuts: &cuts,
                    radius,
                };
                candidate = self.leaf_witness(s, &leaf, &sol.delta, lb, tol, candidate);
            }
            if let Some(c) = candidate.filter(|c| c.0 < best.0) {
                best = self.refine(s, c);
            }
            if let Some(j) = sol.branch {
                // Probing first: neurons it fixes need no branching.
                let quadratic_first = quad.as_ref().is_some_and(|q| q.decisive);
                let (fixed, warm) = match quad.map(|q| s.probe(&assign, &q.warm, best.0 - tol)) {
                    Some(Probe::Pruned(plb)) => {
                        lower = lower.min(plb);
                        continue;
                    }
                    Some(Probe::Fixed { fixes, lb, warm }) => {
                        lower = lower.min(lb);
                        (fixes, Some(warm))
                    }
                    None => (Vec::new(), None),
                };
                // Warm starts cost m + 1 floats per open parent: kept while
                // the queue's share stays under WARM_FLOATS.
                let warm = warm
                    .filter(|_| heap.len() * (self.net.width() + 1) < WARM_FLOATS)
                    .map(Rc::new);
                if !fixed.is_empty() {
                    let node = fixed
                        .iter()
                        .fold(e.node, |n, &(k, state)| tree.child(n, k, state));
                    heap.push(Entry {
                        lb,
                        node,
                        warm,
                        quadratic_first,
                    });
                    continue;
                }
                for state in [true, false] {
                    let node = tree.child(e.node, j, state);
                    heap.push(Entry {
                        lb,
                        node,
                        warm: warm.clone(),
                        quadratic_first,
                    });
                }
            } else {
                // The relaxation is exact here: its optimum is this node's value.
                lower = lower.min(lb);
            }
        }
        if let Some(top) = heap.peek() {
            lower = lower.min(top.lb);
        }
        Searched {
            best,
            lower,
            stopped,
            nodes,
        }
    }

    /// A verified flip near the optimum δ (bound `lb`) of a node whose
    /// relaxation is exact: the optimum touches the boundary, so rounding
    /// can put δ on the wrong side. Tries the rows tightened by 1e-12..1e-10
    /// relative, the region's LDP, then the segment toward the piece's
    /// interior, keeping the nearest verified point (`candidate` to start).
    fn leaf_witness(
        &self,
        s: &Search,
        leaf: &Leaf,
        delta: &DVector<f64>,
        lb: f64,
        tol: f64,
        mut candidate: Option<(f64, DVector<f64>)>,
    ) -> Option<(f64, DVector<f64>)> {
        let near =
            |c: &Option<(f64, DVector<f64>)>| c.as_ref().is_some_and(|c| c.0 <= lb + tol / 2.0);
        for rel in [1e-12, 1e-11, 1e-10] {
            if near(&candidate) {
                return candidate;
            }
            let tight = s.solve(
                leaf.assign,
                leaf.radius,
                rel * lb.max(1e-300),
                Finish::Exact,
                leaf.cuts,
            );
            candidate = nearer(candidate, s.verify(&tight.delta));
        }
        if !near(&candidate) {
            candidate = nearer(candidate, self.region_witness(s, delta, lb));
        }
        if !near(&candidate) {
            candidate = nearer(candidate, self.toward_interior(s, leaf.assign, delta));
        }
        candidate
    }

    /// The result from a finished search: the witness confirmed on the
    /// network as given, the bracket, and whether it is exact.
    fn conclude(
        &self,
        s: &Search,
        x0: &DVector<f64>,
        searched: Searched,
        opts: &DistanceOptions,
        res: &mut PointDistance,
    ) {
        let lifted = s.lift(&searched.best.1);
        let confirmed = self.confirm(s, x0, &lifted);
        let best = confirmed
            .clone()
            .unwrap_or_else(|| ((&lifted - x0).norm(), lifted));
        let upper = best.0;
        let lower = searched.lower.min(upper);
        res.unstable_hurting = (0..self.net.width())
            .filter(|&j| {
                s.roles[j] == Role::Hurt && {
                    let (l, h) = s.range(j, upper);
                    l < 0.0 && h > 0.0
                }
            })
            .count();
        res.upper = Some(upper);
        res.lower = Some(lower);
        res.witness_output = Some(s.s0 * self.original.output(&best.1));
        res.witness = Some(best.1.iter().copied().collect());
        let exact = confirmed.is_some() && upper - lower <= opts.rel_gap * upper.max(1.0);
        res.status = if exact {
            Status::Exact
        } else {
            Status::Bounded
        };
        res.reason = (!exact).then(|| {
            searched.stopped.unwrap_or_else(|| {
                if confirmed.is_some() {
                    "gap not closed".into()
                } else {
                    "the witness flips the merged network but a forward pass of the original did not confirm it".into()
                }
            })
        });
    }

    /// The witness `x` (in input space) confirmed by a fresh forward pass of
    /// the network as given (the search ran on its merged form in the span
    /// of W, which differs by rounding), pushed outward along x − x0 by at
    /// most 1e-10 relative if rounding needs it.
    fn confirm(
        &self,
        s: &Search,
        x0: &DVector<f64>,
        x: &DVector<f64>,
    ) -> Option<(f64, DVector<f64>)> {
        let delta = x - x0;
        let flips = |y: DVector<f64>| {
            (s.s0 * self.original.output(&y) <= 0.0).then(|| ((&y - x0).norm(), y))
        };
        const PUSHES: [f64; 5] = [0.0, 1e-13, 1e-12, 1e-11, 1e-10];
        PUSHES
            .iter()
            .find_map(|&push| flips(x0 + &delta * (1.0 + push)))
            .or_else(|| {
                // The exact first crossing of the original network along the
                // same ray (a witness on a tangent piece of the boundary).
                let n = delta.norm();
                let e = &delta / n;
                let r = crate::model::ray::critical_radius(self.original, x0, s.s0, &(-&e * s.s0))?;
                PUSHES
                    .iter()
                    .find_map(|&push| flips(x0 + &e * (r * (1.0 + push))))
            })
    }

    /// When the attacks found nothing: decide every convex piece (one per
    /// state of the hurting neurons) by an LP feasibility problem. A feasible
    /// piece yields an incumbent; all pieces infeasible proves that no input
    /// of the other sign exists. Exponential in the number of hurting
    /// neurons, so capped at [`MAX_ENUMERATED`].
    fn complete_seed(
        &self,
        s: &Search,
    ) -> std::result::Result<Option<(f64, DVector<f64>)>, String> {
        let hurt: Vec<usize> = (0..s.roles.len())
            .filter(|&j| s.roles[j] == Role::Hurt)
            .collect();
        if hurt.len() > MAX_ENUMERATED {
            return Err(format!(
                "no flip found by the seeding attacks, and {} hurting neurons are too many to enumerate (max {MAX_ENUMERATED})",
                hurt.len()
            ));
        }
        let mut best: Option<(f64, DVector<f64>)> = None;
        let mut unverified = false;
        for mask in 0u64..(1u64 << hurt.len()) {
            let mut assign: Assign = vec![None; s.roles.len()];
            for (t, &j) in hurt.iter().enumerate() {
                assign[j] = Some(mask >> t & 1 == 1);
            }
            if let Some(x) = self.piece_point(s, &assign) {
                let delta = &x - &s.x0;
                match s.verify(&delta) {
                    Some(c) if best.as_ref().is_none_or(|b| c.0 < b.0) => best = Some(c),
                    Some(_) => {}
                    None => unverified = true,
                }
            }
        }
        if best.is_none() && unverified {
            return Err("the flip set is degenerate: LP-feasible points with s0·N = 0 could not be confirmed by a forward pass".into());
        }
        Ok(best)
    }

    /// The region LDP of the full activation pattern at x0 + δ, solved by
    /// the stable Lawson–Hanson NNLS (no normal equations), with the sign
    /// rows and then the output row tightened by a tiny distance until a
    /// forward pass confirms the flip.
    fn region_witness(
        &self,
        s: &Search,
        delta: &DVector<f64>,
        radius: f64,
    ) -> Option<(f64, DVector<f64>)> {
        let (m, d) = (self.net.width(), self.net.dim());
        let u = &s.u0 + self.net.w() * delta;
        let live: Vec<usize> = (0..m).filter(|&j| s.roles[j] != Role::Idle).collect();
        let mut gm = DMatrix::zeros(live.len() + 1, d);
        let mut h = DVector::zeros(live.len() + 1);
        let mut out_row = DVector::zeros(d);
        let mut out_const = 0.0;
        for (r, &j) in live.iter().enumerate() {
            let sign = if u[j] > 0.0 { 1.0 } else { -1.0 };
            gm.row_mut(r).copy_from(&(self.net.w().row(j) * sign));
            h[r] = -sign * s.u0[j];
            if u[j] > 0.0 {
                out_row += self.net.w().row(j).transpose() * self.net.v()[j];
                out_const += self.net.v()[j] * s.u0[j];
            }
        }
        let last = live.len();
        gm.row_mut(last).copy_from(&(-&out_row * s.s0).transpose());
        h[last] = s.s0 * out_const;
        let norms: Vec<f64> = (0..=last).map(|r| gm.row(r).norm()).collect();
        [0.0, 1e-12, 1e-11, 1e-10].iter().find_map(|&rel| {
            let eta = rel * radius;
            let ht = DVector::from_fn(last + 1, |r, _| h[r] + eta * norms[r]);
            match crate::linalg::ldp(&gm, &ht) {
                crate::linalg::Ldp::Solution(dl) => s.verify(&dl),
                crate::linalg::Ldp::Infeasible => None,
            }
        })
    }

    /// A verified point on the segment from x0 + δ (a leaf optimum a hair
    /// outside its piece) toward a deep point of the piece: convexity puts
    /// the segment inside the piece after a tiny step.
    fn toward_interior(
        &self,
        s: &Search,
        assign: &Assign,
        delta: &DVector<f64>,
    ) -> Option<(f64, DVector<f64>)> {
        let full: Assign = (0..s.roles.len())
            .map(|j| {
                (s.roles[j] == Role::Hurt).then(|| {
                    assign[j].unwrap_or(s.u0[j] + self.net.w().row(j).dot(&delta.transpose()) > 0.0)
                })
            })
            .collect();
        let deep = self.piece_point(s, &full)? - &s.x0;
        [1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8]
            .iter()
            .find_map(|&tau| {
                let d = delta + (&deep - delta) * tau;
                let x = &s.x0 + &d;
                (s.out(&x) <= 0.0).then(|| (d.norm(), x))
            })
    }

    /// A point of the convex piece with the hurting states `assign`, by LP,
    /// as deep inside the sign constraints as possible (a distance margin s ≤ 1), so
    /// that a forward pass can confirm it. `None` when the piece is empty.
    fn piece_point(&self, s: &Search, assign: &Assign) -> Option<DVector<f64>> {
        use good_lp::{microlp, variable, Expression, ProblemVariables, Solution, SolverModel};
        let (m, d) = (self.net.width(), self.net.dim());
        let mut pv = ProblemVariables::new();
        let xs = pv.add_vector(variable(), d);
        let ts = pv.add_vector(variable().min(0.0), m);
        // The margin is a distance: rows are scaled by ‖w_j‖ (zero neurons are constants).
        let margin = pv.add(variable().min(0.0).max(1.0));
        let wn = &self.wnorm;
        let pre = |j: usize| {
            let mut e = Expression::with_capacity(d + 1);
            for (c, &x) in xs.iter().enumerate() {
                e.add_mul(self.net.w()[(j, c)], x);
            }
            e + self.net.b()[j]
        };
        let mut model = pv.maximise(margin).using(microlp);
        let mut output = Expression::with_capacity(m);
        for j in 0..m {
            let a = self.net.v()[j].abs();
            match (s.roles[j], assign[j]) {
                (Role::Help, _) => {
                    model =
                        model.with((Expression::from(ts[j]) - pre(j) - margin * wn[j]).geq(0.0));
                    output.add_mul(a, ts[j]);
                }
                (Role::Hurt, Some(true)) => {
                    model = model.with((pre(j) - margin * wn[j]).geq(0.0));
                    output -= pre(j) * a;
                }
                (Role::Hurt, _) => model = model.with((pre(j) + margin * wn[j]).leq(0.0)),
                (Role::Idle, _) => {}
            }
        }
        let sol = model.with(output.leq(0.0)).solve().ok()?;
        Some(DVector::from_iterator(d, xs.iter().map(|&x| sol.value(x))))
    }
}

/// A node's dual-cut rounds stop once a round raises its bound by less than
/// this fraction. Measured on GD nets of width 400 (k=6, d=100): with at
/// most 20 rounds, 1e-2 left points at 0.2–17 s and 1e-3 at 0.03–0.34 s;
/// with 100, 1e-5 at 0.03–0.06 s with 1–5 nodes; 0 (rounds until no rise
/// at all, at most 1000) spent up to 1.2 s in rounds that gained nothing.
const CUT_GAIN: f64 = 1e-5;

/// The quadratic bound is tried at a node only when the chords on the
/// incumbent's ball leave at least this relative gap: where they are
/// nearly tight (GD nets from a small initialisation, where a search
/// takes 1–5 nodes) it cost up to 20× their time for nothing, and where
/// they are not (init 0.5: root gaps of 17–56% to the incumbent) it is what closes
/// the search.
const QUADRATIC_GAP: f64 = 0.01;

/// Most children a probe certifies per node: one factorisation of the
/// free neurons' matrix each, against 65–115 for the node's own bound.
/// Width-1000 points took a median 5.4 s with 128 and 7.6 s with 32; on a
/// k=32 width-320 net more than 128 certified nothing more.
const PROBE_BUDGET: usize = 128;

/// Most floats the queue's warm starts of the quadratic bound may hold
/// (32 M: 256 MB); beyond it children start cold.
const WARM_FLOATS: usize = 1 << 25;

/// Radii tried per node after the incumbent's (see [`Search::bound`]).
const BISECTIONS: usize = 4;

/// The bisection stops once the node's bracket [bound, radius] is this
/// narrow relative to the radius. Measured on GD nets of width 200 (20 s
/// per point): 0.03 left the bounds of a far-from-closed search
/// (k=6, d=100) as high as 0.001 did, with twice the nodes where the
/// incumbent is near-optimal (`std`); 0.1 cost the first case 0.05.
const BISECTION_GAP: f64 = 0.03;

/// Most hurting neurons [`DistanceSolver`] enumerates when no attack finds a flip.
pub const MAX_ENUMERATED: usize = 14;

/// Summary of a batch of distances.
#[derive(Clone, Debug, Serialize)]
pub struct DistanceSummary {
    pub count: usize,
    pub exact: usize,
    pub bounded: usize,
    pub no_flip: usize,
    pub on_boundary: usize,
    /// Over points with an upper bound.
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl DistanceSummary {
    /// Summarises per-point results (distances taken from `upper`).
    pub fn of(points: &[PointDistance]) -> Self {
        let count = |st| points.iter().filter(|p| p.status == st).count();
        let mut v: Vec<f64> = points.iter().filter_map(|p| p.upper).collect();
        v.sort_by(f64::total_cmp);
        Self {
            count: points.len(),
            exact: count(Status::Exact),
            bounded: count(Status::Bounded),
            no_flip: count(Status::NoFlip),
            on_boundary: count(Status::OnBoundary),
            median: (!v.is_empty()).then(|| crate::model::net::median_sorted(&v)),
            min: v.first().copied(),
            max: v.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cut_max, Assign, DistanceSolver, DualCut, Entry, Finish, Search};
    use crate::model::net::Network;
    use nalgebra::{DMatrix, DVector};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    /// A point drawn uniformly from the ball of radius r in `dim` dimensions.
    fn in_ball(rng: &mut ChaCha8Rng, dim: usize, r: f64) -> DVector<f64> {
        let g = DVector::from_fn(dim, |_, _| rng.sample::<f64, _>(StandardNormal));
        g.normalize() * (r * rng.gen::<f64>().powf(1.0 / dim as f64))
    }

    /// Five rounds of dual cuts on the node `assign` at radius r.
    fn cuts_of(s: &Search, assign: &Assign, r: f64) -> Vec<DualCut> {
        let mut cuts = Vec::new();
        for _ in 0..5 {
            match s.solve(assign, r, 0.0, Finish::Exact, &cuts).cut {
                Some(cut) => cuts.push(cut),
                None => break,
            }
        }
        cuts
    }

    #[test]
    fn dual_cuts_keep_every_sampled_flip() {
        // The oracle is sampling: every flip of a node inside the ball must
        // keep its pre-activations inside the cut ranges, and the node's
        // bound with the cuts must not exceed its norm. Small dimensions
        // make flips common in the ball; nodes fix one neuron at random.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut flips = 0;
        for _ in 0..60 {
            let (m, d) = (rng.gen_range(3..9), rng.gen_range(2..4));
            let mut normal = |r: usize, c: usize| {
                DMatrix::from_fn(r, c, |_, _| rng.sample::<f64, _>(StandardNormal))
            };
            let (w, b, v) = (normal(m, d), normal(m, 1), normal(m, 1));
            let net = Network::new(w, b.column(0).into(), v.column(0).into()).unwrap();
            let x0 = DVector::from_fn(d, |_, _| rng.gen_range(-1.0..1.0));
            if net.output(&x0) == 0.0 {
                continue;
            }
            let solver = DistanceSolver::new(&net);
            let s = solver.search(
                &x0,
                &solver.project(&x0),
                &super::DistanceOptions::default(),
            );
            let mut assign: Assign = vec![None; m];
            let j = rng.gen_range(0..m);
            assign[j] = Some(rng.gen());
            let r = rng.gen_range(0.5..3.0);
            let cuts = cuts_of(&s, &assign, r);
            let ranges = s.ranges(&assign, r, &cuts);
            let lb = s.bound(&assign, r, 0.0, &Entry::root()).0.lb;
            for _ in 0..4000 {
                let delta = in_ball(&mut rng, s.x0.len(), r);
                let u = &s.u0 + s.net.w() * &delta;
                let in_node = assign[j].is_none_or(|active| (u[j] >= 0.0) == active);
                if !in_node || s.out(&(&s.x0 + &delta)) > 0.0 {
                    continue;
                }
                flips += 1;
                let ranges = ranges.as_ref().expect("a flip lies in the ball");
                for (k, &(lo, hi)) in ranges.iter().enumerate() {
                    assert!(lo <= u[k] && u[k] <= hi, "u_{k} = {} ∉ [{lo}, {hi}]", u[k]);
                }
                assert!(
                    lb <= delta.norm() * (1.0 + 1e-12),
                    "bound {lb} > flip {}",
                    delta.norm()
                );
            }
        }
        assert!(flips > 10_000, "only {flips} flips sampled");
    }

    #[test]
    fn cut_ball_extremes_bound_and_attain() {
        // Against sampling the boundary of the cut disc in the plane of a
        // and w (where the maximiser lies): no feasible point exceeds the
        // closed form, and the best sample comes within 1e-6 of it.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let wn: f64 = rng.gen_range(0.1..3.0);
            let along: f64 = wn * rng.gen_range(-1.0..1.0);
            let r = rng.gen_range(0.1..5.0);
            let c = r * rng.gen_range(-0.99..1.0);
            let across = (wn * wn - along * along).sqrt();
            let want = cut_max(wn, along, c, r);
            // The feasible disc's boundary: the arc s ≤ c and the chord s = c.
            let mut best = f64::NEG_INFINITY;
            let half = (r * r - c * c).sqrt();
            for k in 0..=20_000 {
                let phi = std::f64::consts::TAU * k as f64 / 20_000.0;
                let (s, t) = (r * phi.cos(), r * phi.sin());
                if s <= c {
                    best = best.max(along * s + across * t);
                }
                let t = half * (2.0 * k as f64 / 20_000.0 - 1.0);
                best = best.max(along * c + across * t);
            }
            assert!(best <= want + 1e-12 * r * wn, "{best} > {want}");
            assert!(best >= want - 1e-6 * r * wn, "{best} ≪ {want}");
        }
    }
}
