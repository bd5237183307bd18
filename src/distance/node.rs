//! A node of the search: its convex relaxation on a ball, the dual QP
//! that bounds it, the dual cuts that tighten it, and the quadratic
//! (Shor) bound beside it. See the module doc of [`super`] for the
//! mathematics.

use super::shor::{self, Probe, Warm};
use crate::linalg::{qp_capped, Cap, Constraints, Finish};
use crate::model::net::{relu, Network};
use nalgebra::{DMatrix, DVector};

/// Role of a neuron relative to the sign s0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Help,
    Hurt,
    Idle,
}

/// Per-point data shared by all nodes.
pub(super) struct Search<'a> {
    /// The network searched (merged, in the span of W).
    pub(super) net: &'a Network,
    /// The network as given, on which every candidate is checked.
    pub(super) original: &'a Network,
    /// Q of the span of W (None: the search runs in input space).
    pub(super) basis: Option<&'a DMatrix<f64>>,
    /// The original first layer in the search's coordinates, W Q, and its
    /// pre-activations at x0: with them a candidate's original output costs
    /// O(m²), not O(md) (the final witness gets a literal forward pass).
    pub(super) original_in_basis: Option<&'a DMatrix<f64>>,
    pub(super) original_u0: DVector<f64>,
    /// x0 in input space (`x0` below is in the search's coordinates).
    pub(super) x0_input: DVector<f64>,
    pub(super) kmat: &'a DMatrix<f64>,
    pub(super) x0: DVector<f64>,
    pub(super) s0: f64,
    pub(super) u0: DVector<f64>,
    pub(super) wnorm: &'a [f64],
    /// ‖W‖_F of the searched network (the rounding bound of δ).
    pub(super) wfrob: f64,
    pub(super) roles: Vec<Role>,
    /// [`DistanceOptions::cut_rounds`].
    pub(super) cut_rounds: usize,
    /// [`DistanceOptions::quadratic_iterations`].
    pub(super) quadratic_iterations: usize,
    /// |v_j| of the searched network.
    pub(super) abs_v: Vec<f64>,
}

/// A hurting neuron's state in a node: `None` free, `Some(true)` active.
pub(super) type Assign = Vec<Option<bool>>;

/// A node's convex relaxation on a ball: the ranges and effective states
/// of the neurons, the output row (γ, h0) scaled by 1/κ, the unit rows
/// (helping first, then fixed: (neuron, sign/‖w_j‖)) and the helping rows'
/// caps.
pub(super) struct Relaxation {
    pub(super) ranges: Vec<(f64, f64)>,
    pub(super) eff: Assign,
    pub(super) gamma: DVector<f64>,
    pub(super) h0: f64,
    pub(super) rows: Vec<(usize, f64)>,
    pub(super) caps: Vec<f64>,
}

/// A solved node.
pub(super) struct NodeSol {
    pub(super) lb: f64,
    pub(super) delta: DVector<f64>,
    /// The free hurting neuron with the largest relaxation gap at δ, if any gap is non-zero.
    pub(super) branch: Option<usize>,
    /// The half-space the dual point proves the node's flips lie in.
    pub(super) cut: Option<DualCut>,
}

/// What a node's quadratic bound leaves the search: its maximiser, to
/// warm-start the children and to probe, and the relaxation's minimiser δ*,
/// a direction to look for flips in.
pub(super) struct Quadratic {
    pub(super) warm: Warm,
    pub(super) delta: DVector<f64>,
    /// It proved more than the chords.
    pub(super) decisive: bool,
}

/// What a node's bound established.
pub(super) struct NodeBound {
    /// The solution the branching should use, its `lb` the node's proven bound.
    pub(super) sol: NodeSol,
    /// The radius of the ball `sol`'s relaxation was solved on.
    pub(super) radius: f64,
    /// The dual cuts found on the way, each valid on balls up to its radius.
    pub(super) cuts: Vec<DualCut>,
    /// The chords on the incumbent's ball left more than [`QUADRATIC_GAP`]
    /// open: the quadratic bound may help.
    pub(super) open: bool,
    /// What the quadratic bound reached, where it ran.
    pub(super) quadratic: Option<Quadratic>,
}

/// What a node inherits from its parent: its bound, its quadratic
/// maximiser (to warm-start the child's), and whether that bound beat
/// the chords (then the child goes to it directly).
pub(super) struct Inherited<'a> {
    pub(super) lb: f64,
    pub(super) warm: Option<&'a Warm>,
    pub(super) quadratic_first: bool,
}

/// A dual-feasible point z of a node's relaxation, as far as its proofs
/// need it: rᵀz rounded down, ‖δ‖ of the computed δ ≈ −Mᵀz, and a bound on
/// ‖δ + Mᵀz‖ (the rounding of δ).
pub(super) struct DualPoint {
    pub(super) rz: f64,
    pub(super) norm: f64,
    pub(super) err: f64,
}

impl DualPoint {
    /// The lower bound z proves, max over t ≥ 0 of the dual at t·z,
    /// sqrt(2(t rᵀz − ½t²‖Mᵀz‖²)) = (rᵀz)₊/‖Mᵀz‖: free of z's scale (a QP
    /// stopped far along an unbounded direction still gives a meaningful
    /// bound) and safe against rounding (‖Mᵀz‖ ≤ ‖δ‖ + err).
    pub(super) fn bound(&self) -> f64 {
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
    pub(super) fn cut(&self, wd: &DVector<f64>, radius: f64) -> Option<DualCut> {
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
pub(super) struct DualCut {
    pub(super) along: DVector<f64>,
    pub(super) c: f64,
    pub(super) radius: f64,
}

impl Search<'_> {
    /// s0·N at the search point `x`, by a forward pass of the original
    /// network at its input-space image: a candidate counts only when the
    /// network as given confirms it.
    pub(super) fn out(&self, x: &DVector<f64>) -> f64 {
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
    pub(super) fn lift(&self, x: &DVector<f64>) -> DVector<f64> {
        match self.basis {
            Some(q) => &self.x0_input + q * (x - &self.x0),
            None => x.clone(),
        }
    }

    /// 1/‖w_j‖ (1 for a zero neuron): scales a sign row to a unit normal.
    pub(super) fn unit(&self, j: usize) -> f64 {
        if self.wnorm[j] > 0.0 {
            1.0 / self.wnorm[j]
        } else {
            1.0
        }
    }

    /// Range of u_j over the ball of radius `r` around x0.
    pub(super) fn range(&self, j: usize, r: f64) -> (f64, f64) {
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
    pub(super) fn ranges(
        &self,
        assign: &Assign,
        r: f64,
        dual: &[DualCut],
    ) -> Option<Vec<(f64, f64)>> {
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
    pub(super) fn effective(&self, assign: &Assign, ranges: &[(f64, f64)]) -> Assign {
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
    pub(super) fn solve(
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
    pub(super) fn relaxation(
        &self,
        assign: &Assign,
        r: f64,
        cuts: &[DualCut],
    ) -> Option<Relaxation> {
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
    pub(super) fn dual_qp(
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
    pub(super) fn branching(&self, rel: &Relaxation, wd: &DVector<f64>) -> Option<usize> {
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
    pub(super) fn dual_point(
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
    /// time once probing was in, and decided nothing there.
    pub(super) fn bound(
        &self,
        assign: &Assign,
        big_r: f64,
        tol: f64,
        parent: &Inherited,
    ) -> NodeBound {
        let mut nb = if parent.quadratic_first {
            let sol = self.solve(assign, big_r, 0.0, Finish::Fast, &[]);
            NodeBound {
                sol,
                radius: big_r,
                cuts: Vec::new(),
                open: true,
                quadratic: None,
            }
        } else {
            self.chord_bound(assign, big_r, parent.lb, tol)
        };
        nb.sol.lb = nb.sol.lb.max(parent.lb);
        let open = nb.open && nb.sol.branch.is_some() && nb.sol.lb < big_r - tol;
        if open && self.quadratic_iterations > 0 {
            let (qlb, w, y) = self.quadratic_bound(assign, big_r, big_r - tol, parent.warm);
            // The two rules miss different slack (SPEC, "Branching"): where
            // the quadratic bound binds, they alternate along each path.
            let decisive = qlb > nb.sol.lb;
            let depth = assign.iter().flatten().count();
            if decisive && depth.is_multiple_of(2) {
                nb.sol.branch = self
                    .loosest(assign, big_r, &nb.cuts, &w, &y)
                    .or(nb.sol.branch);
            }
            nb.quadratic = Some(Quadratic {
                warm: w,
                delta: self.net.w().transpose() * y * 0.5,
                decisive,
            });
            nb.sol.lb = nb.sol.lb.max(qlb);
        }
        nb
    }

    /// The chords' bound, from relaxations on balls of several radii: a
    /// flip of norm below r lies in the ball of radius r, where the chords
    /// over that ball's ranges hold, so min(r, LB(r)) bounds the node for
    /// every r ≤ `big_r` (the incumbent) and the best r is the fixed point
    /// LB(r) = r, found by bisection from the parent's bound `parent`. The
    /// solution kept is the one whose relaxation the branching should use
    /// (the smallest radius whose optimum lies inside its ball).
    pub(super) fn chord_bound(
        &self,
        assign: &Assign,
        big_r: f64,
        parent: f64,
        tol: f64,
    ) -> NodeBound {
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
        NodeBound {
            sol,
            radius: hi,
            cuts,
            open,
            quadratic: None,
        }
    }

    /// The node's lower bound from quadratic over-estimators of its free
    /// hurting neurons ([`crate::distance::shor`]), started from parabolas
    /// fitted to the ball of the incumbent radius `big_r` or from `warm`, a
    /// parent's maximiser.
    pub(super) fn quadratic_bound(
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
    pub(super) fn loosest(
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
    pub(super) fn probe(&self, assign: &Assign, warm: &Warm, target: f64) -> Probe {
        shor::probe(&self.quadratic_node(assign), warm, target, PROBE_BUDGET)
    }

    /// The node as the quadratic bound sees it.
    pub(super) fn quadratic_node(&self, assign: &Assign) -> shor::Node<'_> {
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
    pub(super) fn cut_rounds(
        &self,
        assign: &Assign,
        r: f64,
        tol: f64,
        cuts: &mut Vec<DualCut>,
    ) -> NodeSol {
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
}

/// max wᵀδ over ‖δ‖ ≤ r and aᵀδ ≤ c (‖a‖ = 1, |c| ≤ r), given ‖w‖ and
/// aᵀw (`along`). Writing δ = s·a + t·e with e ⊥ a in the plane of a and w,
/// the objective is along·s + across·t over s ≤ c, s² + t² ≤ r², concave
/// on the circle: its peak s* = r·along/‖w‖ if that satisfies the cut
/// (value r‖w‖), else s = c (value along·c + across·√(r² − c²)).
pub(super) fn cut_max(wn: f64, along: f64, c: f64, r: f64) -> f64 {
    if r * along <= c * wn {
        return r * wn;
    }
    let across = (wn * wn - along * along).max(0.0).sqrt();
    along * c + across * (r * r - c * c).max(0.0).sqrt()
}

/// A node's dual-cut rounds stop once a round raises its bound by less than
/// this fraction. Measured on GD nets of width 400 (k=6, d=100): with at
/// most 20 rounds, 1e-2 left points at 0.2–17 s and 1e-3 at 0.03–0.34 s;
/// with 100, 1e-5 at 0.03–0.06 s with 1–5 nodes; 0 (rounds until no rise
/// at all, at most 1000) spent up to 1.2 s in rounds that gained nothing.
pub(super) const CUT_GAIN: f64 = 1e-5;

/// The quadratic bound is tried at a node only when the chords on the
/// incumbent's ball leave at least this relative gap: where they are
/// nearly tight (GD nets from a small initialisation, where a search
/// takes 1–5 nodes) it cost up to 20× their time for nothing, and where
/// they are not (init 0.5: root gaps of 17–56% to the incumbent) it is what closes
/// the search.
pub(super) const QUADRATIC_GAP: f64 = 0.01;

/// Most children a probe certifies per node: one factorisation of the
/// free neurons' matrix each, against 65–115 for the node's own bound.
/// Width-1000 points took a median 5.4 s with 128 and 7.6 s with 32; on a
/// k=32 width-320 net more than 128 certified nothing more.
pub(super) const PROBE_BUDGET: usize = 128;

/// Radii tried per node after the incumbent's (see [`Search::bound`]).
pub(super) const BISECTIONS: usize = 4;

/// The bisection stops once the node's bracket [bound, radius] is this
/// narrow relative to the radius. Measured on GD nets of width 200 (20 s
/// per point): 0.03 left the bounds of a far-from-closed search
/// (k=6, d=100) as high as 0.001 did, with twice the nodes where the
/// incumbent is near-optimal (`std`); 0.1 cost the first case 0.05.
pub(super) const BISECTION_GAP: f64 = 0.03;

#[cfg(test)]
mod tests {
    use super::{cut_max, Assign, DualCut, Finish, Inherited, Search};
    use crate::distance::{DistanceOptions, DistanceSolver};
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
            let s = solver.search(&x0, &solver.project(&x0), &DistanceOptions::default());
            let mut assign: Assign = vec![None; m];
            let j = rng.gen_range(0..m);
            assign[j] = Some(rng.gen());
            let r = rng.gen_range(0.5..3.0);
            let cuts = cuts_of(&s, &assign, r);
            let ranges = s.ranges(&assign, r, &cuts);
            let root = Inherited {
                lb: 0.0,
                warm: None,
                quadratic_first: false,
            };
            let lb = s.bound(&assign, r, 0.0, &root).sol.lb;
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
