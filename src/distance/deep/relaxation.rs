//! A node's convex relaxation and its certified lower bound.
//!
//! Variables v = (δ, h_U): the perturbation and the post-activations of
//! the node's unstable neurons. Each pre-activation is affine in v,
//! ẑ = P v + q, built layer by layer (an active neuron passes ẑ on, an
//! inactive one 0, an unstable one its own variable). The node's program
//!
//! ```text
//!   min ½‖δ‖²  s.t.  ẑ ≥ 0 (active),  ẑ ≤ 0 (inactive),
//!                    h ≥ 0,  h ≥ ẑ,  h ≤ u (ẑ − l)/(u − l)   (unstable),
//!                    aᵀ f ≥ 0 (the goal's margin),  lo ≤ x0 + δ ≤ hi (box),
//! ```
//!
//! written G v ≤ g, contains every flip of the node inside the domain, and
//! is the node's exact problem when no neuron is unstable.
//!
//! **Why the bound is certified.** The interior-point solution is only
//! accurate to its tolerance, so the bound is not its objective but weak
//! duality at its multipliers z ≥ 0: with Gᵀz = (a_δ, c_h),
//! ½‖δ‖² + zᵀ(G v − g) ≤ ½‖δ‖² at every feasible v, and its minimum over δ
//! and over h ∈ [0, U] (each unstable neuron's true output lies in
//! [0, u] inside the domain) is −½‖a_δ‖² − zᵀg + Σ_k min(0, c_k) U_k.
//! Scaling z by the best t > 0 gives ‖δ‖ ≥ A / ‖a_δ‖ with
//! A = −zᵀg + Σ_k min(0, c_k) U_k, for any z ≥ 0 at all — an optimal
//! multiplier, an infeasibility ray (‖a_δ‖ = 0 < A proves the node empty)
//! or a poor one, which only weakens the bound.

use super::bounds::{Phase, Relu};
use super::InputBox;
use crate::linalg::{ldp, Ldp};
use crate::model::deep::DeepNet;
use clarabel::algebra::CscMatrix;
use clarabel::solver::{DefaultSettingsBuilder, DefaultSolver, IPSolver, SupportedConeT};
use nalgebra::{DMatrix, DVector};

/// Clarabel's tolerances: tight, because a leaf closes only when its
/// certified bound meets a confirmed flip to `rel_gap` (1e-8 left most
/// leaves open).
const TOL: f64 = 1e-11;

/// Which fixed neurons get their sign row.
#[derive(Clone, Copy)]
pub(super) enum Signs<'a> {
    /// Every one: the program of a linear region.
    All,
    /// The branched ones only. A neuron the bounds prove stable keeps its
    /// sign at every point of the ball ∩ box, so its row cuts nothing
    /// the node needs: the program stays a relaxation of the node, and on
    /// a node with no unstable neuron a minimiser inside the ball is the
    /// network's own point (layer by layer, each stable neuron's sign is
    /// the bounds'). Leaving the rows out takes the densest rows out of
    /// every node's program.
    Branched(&'a [Phase]),
}

impl Signs<'_> {
    fn wants(self, neuron: usize) -> bool {
        match self {
            Signs::All => true,
            Signs::Branched(phases) => phases[neuron] != Phase::Free,
        }
    }
}

/// The margin a flip must make nonnegative: aᵀh_L + a0, h_L the last
/// hidden layer's output.
pub(super) struct GoalRow<'a> {
    pub weights: &'a DVector<f64>,
    pub offset: f64,
}

/// A solved node relaxation.
pub(super) struct Relaxed {
    /// Certified: every flip of the node inside the domain has ‖δ‖ ≥ this.
    pub lower: f64,
    /// The relaxation's minimiser δ, when the solver returned one.
    pub delta: Option<DVector<f64>>,
    /// For each unstable neuron (flat index), h − relu(ẑ) at the minimiser:
    /// how far the relaxation is from the network there.
    pub gaps: Vec<(usize, f64)>,
    /// For each unstable neuron (flat index), its chord's multiplier times
    /// the chord's height: the bound the triangle's looseness costs there
    /// (the score of BaBSR-style branching, Bunel et al. 2020).
    pub chord_costs: Vec<(usize, f64)>,
}

/// The rows G v ≤ g and what the bound and the gaps need.
struct Program {
    g_mat: DMatrix<f64>,
    g_rhs: DVector<f64>,
    /// (flat neuron, column, upper bound u) of each unstable neuron.
    unstable: Vec<(usize, usize, f64)>,
    /// The row of each unstable neuron's chord and the chord's height
    /// −u l/(u − l) (its gap above ReLU at z = 0).
    chords: Vec<(usize, f64)>,
    /// ẑ = P v + q of each unstable neuron, one row each.
    pre_p: DMatrix<f64>,
    pre_q: DVector<f64>,
}

/// Rows of the program being assembled.
struct Rows {
    rows: Vec<DVector<f64>>,
    rhs: Vec<f64>,
}

impl Rows {
    fn push(&mut self, row: DVector<f64>, rhs: f64) {
        self.rows.push(row);
        self.rhs.push(rhs);
    }
}

/// What a program is built from: the net, the point, every hidden
/// neuron's state and the goal, inside the box.
pub(super) struct Cell<'a> {
    pub net: &'a DeepNet,
    pub x0: &'a DVector<f64>,
    pub relus: &'a [Vec<Relu>],
    pub goal: &'a GoalRow<'a>,
    pub input_box: Option<&'a InputBox>,
}

fn build(cell: &Cell, signs: Signs, interior: f64) -> Program {
    let Cell {
        net,
        x0,
        relus,
        goal,
        input_box,
    } = *cell;
    let d = x0.len();
    let n_unstable: usize = relus
        .iter()
        .flatten()
        .filter(|r| matches!(r, Relu::Unstable { .. }))
        .count();
    let nv = d + n_unstable;
    let mut s_mat = DMatrix::zeros(d, nv);
    s_mat.view_mut((0, 0), (d, d)).fill_with_identity();
    let mut s_vec = x0.clone();
    let mut rows = Rows {
        rows: Vec::new(),
        rhs: Vec::new(),
    };
    let mut unstable = Vec::with_capacity(n_unstable);
    let mut pre = Vec::with_capacity(n_unstable);
    let mut chords = Vec::with_capacity(n_unstable);
    let (mut col, mut flat) = (d, 0);
    for (layer, states) in net.layers().iter().zip(relus) {
        let p = layer.weight() * &s_mat;
        let q = layer.weight() * &s_vec + super::bounds::bias_or_zero(layer);
        let mut next = DMatrix::zeros(states.len(), nv);
        let mut next_s = DVector::zeros(states.len());
        for (j, state) in states.iter().enumerate() {
            let pj = p.row(j).transpose();
            match *state {
                Relu::Active => {
                    if signs.wants(flat + j) {
                        rows.push(-&pj, q[j]);
                    }
                    next.set_row(j, &pj.transpose());
                    next_s[j] = q[j];
                }
                Relu::Inactive if signs.wants(flat + j) => rows.push(pj, -q[j]),
                Relu::Inactive => {}
                Relu::Unstable { lower, upper } => {
                    let e = DVector::from_fn(nv, |i, _| if i == col { 1.0 } else { 0.0 });
                    let s = upper / (upper - lower);
                    rows.push(-&e, 0.0);
                    rows.push(&pj - &e, -q[j]);
                    chords.push((rows.rows.len(), -s * lower));
                    rows.push(&e - &pj * s, s * (q[j] - lower));
                    next[(j, col)] = 1.0;
                    unstable.push((flat + j, col, upper));
                    pre.push((pj, q[j]));
                    col += 1;
                }
            }
        }
        flat += states.len();
        s_mat = next;
        s_vec = next_s;
    }
    let out = s_mat.tr_mul(goal.weights);
    rows.push(-out, goal.weights.dot(&s_vec) + goal.offset);
    if let Some(b) = input_box {
        for i in 0..d {
            let e = DVector::from_fn(nv, |k, _| if k == i { 1.0 } else { 0.0 });
            rows.push(e.clone(), b.upper[i] - x0[i]);
            rows.push(-e, x0[i] - b.lower[i]);
        }
    }
    let g_mat = DMatrix::from_fn(rows.rows.len(), nv, |i, j| rows.rows[i][j]);
    for (g, row) in rows.rhs.iter_mut().zip(&rows.rows) {
        *g -= interior * row.norm();
    }
    let pre_p = DMatrix::from_fn(pre.len(), nv, |i, j| pre[i].0[j]);
    let pre_q = DVector::from_iterator(pre.len(), pre.iter().map(|p| p.1));
    Program {
        g_mat,
        g_rhs: DVector::from_vec(rows.rhs),
        unstable,
        chords,
        pre_p,
        pre_q,
    }
}

impl Program {
    /// ‖δ‖ ≥ A/‖a_δ‖ from any z (module doc); negative z are clipped.
    fn dual_bound(&self, z: &[f64], d: usize) -> f64 {
        let z = DVector::from_iterator(z.len(), z.iter().map(|&v| v.max(0.0)));
        let gz = self.g_mat.tr_mul(&z);
        let a_delta = gz.rows(0, d).norm();
        let h_part: f64 = self
            .unstable
            .iter()
            .map(|&(_, col, upper)| gz[col].min(0.0) * upper)
            .sum();
        let a = -z.dot(&self.g_rhs) + h_part;
        if a <= 0.0 {
            0.0
        } else if a_delta == 0.0 {
            f64::INFINITY
        } else {
            a / a_delta
        }
    }

    /// h − relu(ẑ) of each unstable neuron at v.
    fn gaps(&self, v: &DVector<f64>) -> Vec<(usize, f64)> {
        let z = &self.pre_p * v + &self.pre_q;
        self.unstable
            .iter()
            .zip(z.iter())
            .map(|(&(flat, col, _), &zk)| (flat, v[col] - zk.max(0.0)))
            .collect()
    }

    /// Clarabel on min ½‖δ‖² s.t. G v ≤ g: the multipliers and the point.
    fn solve(&self, d: usize) -> Option<(Vec<f64>, Vec<f64>)> {
        let (m, nv) = self.g_mat.shape();
        let mut triplets = (Vec::new(), Vec::new(), Vec::new());
        for j in 0..nv {
            for i in 0..m {
                let v = self.g_mat[(i, j)];
                if v != 0.0 {
                    triplets.0.push(i);
                    triplets.1.push(j);
                    triplets.2.push(v);
                }
            }
        }
        let a = CscMatrix::new_from_triplets(m, nv, triplets.0, triplets.1, triplets.2);
        let p =
            CscMatrix::new_from_triplets(nv, nv, (0..d).collect(), (0..d).collect(), vec![1.0; d]);
        let settings = DefaultSettingsBuilder::default()
            .verbose(false)
            .tol_gap_abs(TOL)
            .tol_gap_rel(TOL)
            .tol_feas(TOL)
            .tol_ktratio(1e-9)
            .max_iter(100)
            .build()
            .ok()?;
        let q = vec![0.0; nv];
        let cones = [SupportedConeT::NonnegativeConeT(m)];
        let mut solver =
            DefaultSolver::new(&p, &q, &a, self.g_rhs.as_slice(), &cones, settings).ok()?;
        solver.solve();
        Some((solver.solution.z.clone(), solver.solution.x.clone()))
    }
}

/// The nearest point of one linear region's flip set (every neuron fixed,
/// so the program is in δ alone: min ‖δ‖ s.t. G δ ≤ g, a least-distance
/// program), solved by Lawson–Hanson's active set to rounding accuracy,
/// with every row moved `interior` inside; `None` when it is empty. The
/// cell's `relus` are the region's pattern (none unstable).
pub(super) fn region_point(cell: &Cell, interior: f64) -> Option<DVector<f64>> {
    let program = build(cell, Signs::All, interior);
    match ldp(&-&program.g_mat, &-&program.g_rhs) {
        Ldp::Solution(delta) => Some(delta),
        Ldp::Infeasible => None,
    }
}

/// Solves the node whose ReLU states are `relus` for `goal`.
pub(super) fn relax(cell: &Cell, signs: Signs) -> Relaxed {
    let d = cell.x0.len();
    let program = build(cell, signs, 0.0);
    let Some((z, x)) = program.solve(d) else {
        return Relaxed {
            lower: 0.0,
            delta: None,
            gaps: Vec::new(),
            chord_costs: Vec::new(),
        };
    };
    let v = DVector::from_vec(x);
    let finite = v.iter().all(|t| t.is_finite());
    Relaxed {
        lower: program.dual_bound(&z, d),
        delta: finite.then(|| v.rows(0, d).into_owned()),
        gaps: if finite { program.gaps(&v) } else { Vec::new() },
        chord_costs: program
            .unstable
            .iter()
            .zip(&program.chords)
            .map(|(&(flat, _, _), &(row, height))| (flat, z[row].max(0.0) * height))
            .collect(),
    }
}
