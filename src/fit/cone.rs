//! Finishing a polish: the convex program of a fixed activation pattern.
//!
//! Write each neuron in balanced form, β_j = v_j·(w_j, b_j) ∈ ℝ^{d+1}, with
//! σ_j = sign v_j and x̃_i = (x_i, 1). Its contribution to point i's margin
//! is y_i σ_j relu(σ_j β_jᵀx̃_i), and ½(v_j² + ‖(w_j, b_j)‖²) ≥ ‖β_j‖ with
//! equality when the neuron is balanced. Two kinds of (point, neuron) pairs:
//!
//! - *harmful*, σ_j = −y_i: the term is min(0, y_i β_jᵀx̃_i), concave in β_j;
//! - *helpful*, σ_j = y_i: the term is relu, convex. Replacing it by its
//!   linear piece y_i β_jᵀx̃_i on a chosen set A of pairs and by 0 off A
//!   bounds it from below.
//!
//! So for fixed signs and A,
//!
//! ```text
//!   min Σ_j ‖β_j‖   s.t.   Σ_{j:(i,j)∈A} y_i β_jᵀx̃_i + Σ_{j harmful at i} min(0, y_i β_jᵀx̃_i) ≥ 1   ∀ i
//! ```
//!
//! is a second-order cone program and a *restriction* of Problem (2): every
//! feasible point is a feasible network. At its optimum, if every helpful
//! pair agrees with A (σ_j β_jᵀx̃_i ≥ 0 on A, ≤ 0 off it), the restriction
//! touches the true margins there, and its KKT conditions are Clarke KKT
//! conditions of Problem (2): the linear pieces' slopes 1 and 0 both lie in
//! relu's Clarke subdifferential [0, 1] at a kink, min(0, ·) is exact, and a
//! neuron the program zeroes is dead, which stationarity allows. Where a pair
//! disagrees, A takes the sign the optimum gave it and the program is solved
//! again; a pair that crosses twice is pinned in A with σ_j β_jᵀx̃_i ≥ 0,
//! which lets the optimum hold it on the kink with a fractional slope. A
//! few rounds suffice once a continuation stage has found the pattern.
//!
//! Why this and not the smoothing to the end: the augmented-Lagrangian
//! endgame converges linearly at best, with the kinks (hundreds of pairs
//! exactly at zero on a wide net's KKT point) making each β stage harder;
//! an interior-point method reaches 1e-9 in a few dozen iterations whatever
//! the kinks. Clarabel solves the cone program: it is the pure-Rust conic
//! solver `good_lp` already builds on. The certificate of [`crate::kkt`],
//! not this construction, is the judge of the result.

use crate::fit::span::augmented;
use crate::model::data::Dataset;
use crate::model::net::Network;
use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, SolverStatus, SupportedConeT,
};
use nalgebra::{DMatrix, DVector};

/// Options of [`finish`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FinishOptions {
    /// The program is built only for nets with at most this many live
    /// neurons: its constraint matrix has about live·n·(d+1)/2 entries.
    pub max_live: usize,
    /// Largest constraint matrix (entries, Σ over groups of points × basis
    /// size) the program is built with: beyond it the finish is skipped,
    /// not attempted at a size that would exhaust memory or time. At 0.6
    /// million entries (k = 32, n = 320) one solve takes 2–3 s.
    pub max_entries: usize,
    /// Re-solves after helpful pairs disagreed with the assumed pattern.
    pub pattern_rounds: usize,
    /// Relative (to the largest) mass |v_j|·‖(w_j, b_j)‖ of a neuron taken into the program.
    pub live_rel: f64,
    /// Near-mode polish only: the finished net's cosine with the start may
    /// fall at most this far below the iterate's. The program heads for the
    /// least-norm point of the iterate's pattern, which is the nearby KKT
    /// point once the continuation has found that pattern, and can be a
    /// distant one before.
    pub near_slack: f64,
}

impl Default for FinishOptions {
    fn default() -> Self {
        Self {
            max_live: 256,
            max_entries: 2_000_000,
            pattern_rounds: 10,
            live_rel: 1e-3,
            near_slack: 0.1,
        }
    }
}

/// A finished network and how it was reached.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The finished network.
    pub net: Network,
    /// Σ_j ‖β_j‖ = ‖θ‖²/2 of the balanced result.
    pub objective: f64,
    /// Cone programs solved.
    pub solves: usize,
}

/// A live neuron: its index in the net, the sign of v_j and its mass
/// |v_j|·‖(w_j, b_j)‖.
struct Live {
    index: usize,
    sign: f64,
    mass: f64,
}

/// Which pairs of a neuron the program models: A, its helpful pairs on the
/// linear piece, and W, the harmful pairs given their min(0, ·) term. A
/// harmful pair off W is left out, a relaxation that is exact as long as the
/// optimum leaves it inactive (σ_j β_jᵀx̃_i ≤ 0); the rounds add any that it
/// does not. Most harmful pairs are far inactive, and each modelled one is
/// a dense row of the cone program.
#[derive(Clone, PartialEq)]
struct Pattern {
    active: Vec<bool>,
    harmful: Vec<bool>,
    /// Helpful pairs the rounds have already moved once across A.
    flipped: Vec<bool>,
    /// Helpful pairs of A held on the linear piece's domain, σ_j β_jᵀx̃_i ≥ 0:
    /// a pair that keeps crossing sits on a kink with a fractional Clarke
    /// multiplier, which neither side of A represents. Pinned, the
    /// program's multiplier ν of the row makes the pair's slope 1 − ν/λ_i
    /// (Clarke when ν ≤ λ_i, which the certificate checks).
    pinned: Vec<bool>,
}

impl Pattern {
    /// The points whose pairs the program models: A and W.
    fn modelled(&self) -> Vec<usize> {
        (0..self.active.len())
            .filter(|&i| self.active[i] || self.harmful[i])
            .collect()
    }
}

/// Live neurons with the same sign and the same A. The program needs one β
/// per group: neurons sharing (σ, A) contribute through their sum on the
/// linear pieces, and splitting a group's β_G among them in proportion to
/// their masses keeps Σ‖β_j‖ = ‖β_G‖ and every min(0, ·) term (positive
/// scaling commutes with min), so merging changes neither the optimum nor
/// its value.
struct Group {
    sign: f64,
    pattern: Pattern,
    members: Vec<usize>,
}

/// The groups of `live` under `patterns` (one per live neuron); a group
/// models the union of its members' harmful, flipped and pinned pairs.
fn groups(live: &[Live], patterns: &[Pattern]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (l, lv) in live.iter().enumerate() {
        let same = |g: &&mut Group| g.sign == lv.sign && g.pattern.active == patterns[l].active;
        match out.iter_mut().find(same) {
            Some(g) => {
                g.members.push(l);
                let (gp, lp) = (&mut g.pattern, &patterns[l]);
                for i in 0..gp.active.len() {
                    gp.harmful[i] |= lp.harmful[i];
                    gp.flipped[i] |= lp.flipped[i];
                    gp.pinned[i] |= lp.pinned[i];
                }
            }
            None => out.push(Group {
                sign: lv.sign,
                pattern: patterns[l].clone(),
                members: vec![l],
            }),
        }
    }
    out
}

/// The initial pattern of a live neuron: A from the signs of its
/// pre-activations u, W the harmful pairs within `HARMFUL_BAND` of active.
fn initial_pattern(lv: &Live, u: &DMatrix<f64>, y: &[f64], xnorm: &[f64], wnorm: f64) -> Pattern {
    let n = y.len();
    let uj = |i: usize| u[(i, lv.index)];
    Pattern {
        active: (0..n).map(|i| lv.sign == y[i] && uj(i) > 0.0).collect(),
        harmful: (0..n)
            .map(|i| lv.sign != y[i] && uj(i) > -HARMFUL_BAND * wnorm * xnorm[i])
            .collect(),
        flipped: vec![false; n],
        pinned: vec![false; n],
    }
}

/// Harmful pairs whose pre-activation is above −HARMFUL_BAND·‖(w_j, b_j)‖·‖x̃_i‖
/// start in W. Wider costs rows; narrower costs rounds: on the sweep's
/// k = 32, d = 100, width-320 cell, 0 left five rounds of 2–5 s each
/// unsettled at every stage, 0.02 finished in two.
const HARMFUL_BAND: f64 = 0.02;

/// A solved program: β_G per group (rows) and Σ‖β_G‖.
struct Solution {
    beta: DMatrix<f64>,
    objective: f64,
}

/// The data of one cone program.
struct Program<'a> {
    /// x̃_i as rows: (n, d + 1).
    xt: &'a DMatrix<f64>,
    xnorm: &'a [f64],
    y: &'a [f64],
    groups: &'a [Group],
    max_entries: usize,
}

/// Finishes `net` (any KKT-near iterate) into the optimum of the cone
/// program of its pattern on `data`, or None when the net has too many live
/// neurons, the program is infeasible or unsolved, or the pattern does not
/// settle within the allowed rounds.
pub fn finish(net: &Network, data: &Dataset, opts: &FinishOptions) -> Option<Finished> {
    let u = net.preactivations(data.x());
    let y = data.y();
    let live = live_neurons(net, &u, y, opts.live_rel);
    if live.is_empty() || live.len() > opts.max_live {
        return None;
    }
    let xt = augmented(data.x());
    let xnorm: Vec<f64> = xt.row_iter().map(|row| row.norm()).collect();
    let mut patterns: Vec<Pattern> = live
        .iter()
        .map(|lv| initial_pattern(lv, &u, y, &xnorm, net.incoming_norm(lv.index)))
        .collect();
    for solves in 1..=opts.pattern_rounds + 1 {
        let groups = groups(&live, &patterns);
        let prog = Program {
            xt: &xt,
            xnorm: &xnorm,
            y,
            groups: &groups,
            max_entries: opts.max_entries,
        };
        let sol = prog.solve()?;
        match prog.disagreements(&sol.beta) {
            Some(next) => {
                for (g, pattern) in groups.iter().zip(next) {
                    for &l in &g.members {
                        patterns[l] = pattern.clone();
                    }
                }
            }
            None => {
                return Some(Finished {
                    net: assemble(net, &live, &groups, &sol.beta)?,
                    objective: sol.objective,
                    solves,
                });
            }
        }
    }
    None
}

/// Neurons active somewhere whose mass reaches `rel` of the largest, and for every point no
/// such neuron helps, the neuron that helps it most: without one the program
/// would be infeasible at that point.
fn live_neurons(net: &Network, u: &DMatrix<f64>, y: &[f64], rel: f64) -> Vec<Live> {
    let m = net.width();
    let mass = net.masses();
    let top = mass.iter().cloned().fold(0.0, f64::max);
    // A neuron active on no point adds nothing to any margin: it stays dead.
    let active_somewhere = |j: usize| (0..u.nrows()).any(|i| u[(i, j)] > 0.0);
    let mut keep: Vec<bool> = (0..m)
        .map(|j| top > 0.0 && mass[j] >= rel * top && active_somewhere(j))
        .collect();
    // y_i v_j relu(u_ij): what neuron j adds to point i's margin.
    let help = |i: usize, j: usize| y[i] * net.v()[j] * u[(i, j)].max(0.0);
    for i in 0..u.nrows() {
        if !(0..m).any(|j| keep[j] && help(i, j) > 0.0) {
            let best = (0..m).max_by(|&a, &b| help(i, a).total_cmp(&help(i, b)));
            if let Some(j) = best.filter(|&j| help(i, j) > 0.0) {
                keep[j] = true;
            }
        }
    }
    (0..m)
        .filter(|&j| keep[j])
        .map(|j| Live {
            index: j,
            sign: net.v()[j].signum(),
            mass: mass[j],
        })
        .collect()
}

/// Below this relative size, σ_j β_jᵀx̃_i counts as zero when checking
/// pairs against the pattern: the interior-point solution is accurate to
/// about 1e-9, and a pair on a kink agrees with either choice.
const SIGN_TOL: f64 = 1e-7;

/// A group's coordinates: β_G = Q γ_G with Q an orthonormal basis of the
/// x̃_i its pattern models (the optimum's β_G lies in their span: any other
/// component only adds norm), and the coordinates Qᵀx̃_i of those points.
struct Basis {
    q: DMatrix<f64>,
    /// Column c: the coordinates of point points[c].
    coords: DMatrix<f64>,
    points: Vec<usize>,
}

impl Basis {
    fn of(xt: &DMatrix<f64>, pattern: &Pattern) -> Self {
        let points = pattern.modelled();
        let cols = DMatrix::from_fn(xt.ncols(), points.len(), |k, c| xt[(points[c], k)]);
        let qr = cols.qr();
        Self {
            q: qr.q(),
            coords: qr.r(),
            points,
        }
    }

    fn dim(&self) -> usize {
        self.q.ncols()
    }
}

impl Program<'_> {
    /// Solves the program: the β_G (one row per group) and Σ‖β_G‖.
    ///
    /// Variables x = (γ_G per group, t_G per group, h_p per modelled harmful
    /// pair p) with ‖γ_G‖ ≤ t_G, h_p ≤ 0, h_p ≤ y_i γ_Gᵀ(Qᵀx̃_i), and the
    /// margin rows Σ_A y_i γ_Gᵀ(Qᵀx̃_i) + Σ_p h_p ≥ 1, in Clarabel's form
    /// Ax + s = b.
    fn solve(&self) -> Option<Solution> {
        let n = self.xt.nrows();
        // A point no neuron can help makes the restriction infeasible.
        if (0..n).any(|i| !self.groups.iter().any(|g| g.pattern.active[i])) {
            return None;
        }
        if self.entries() > self.max_entries {
            return None;
        }
        let bases: Vec<Basis> = self
            .groups
            .iter()
            .map(|g| Basis::of(self.xt, &g.pattern))
            .collect();
        let mut offset = Vec::with_capacity(bases.len());
        let mut nvar = 0;
        for basis in &bases {
            offset.push(nvar);
            nvar += basis.dim();
        }
        let t0 = nvar;
        nvar += bases.len();
        let h0 = nvar;
        let mut tr = Triplets::default();
        let (mut p, mut next) = (0, n);
        // Margin rows 0..n: −(Σ_A y_i x̃_iᵀβ + Σ h_p) + s = −1. After them,
        // one row per pinned pair, −σ x̃_iᵀβ ≤ 0, and two per harmful pair,
        // h_p ≤ 0 and h_p − y_i x̃_iᵀβ ≤ 0.
        for (g, (group, basis)) in self.groups.iter().zip(&bases).enumerate() {
            for (c, &i) in basis.points.iter().enumerate() {
                let coords = basis.coords.column(c);
                if group.pattern.active[i] {
                    tr.row_dot(i, offset[g], coords.iter(), -self.y[i]);
                    if group.pattern.pinned[i] {
                        tr.row_dot(next, offset[g], coords.iter(), -group.sign);
                        next += 1;
                    }
                } else {
                    tr.push(i, h0 + p, -1.0);
                    tr.push(next, h0 + p, 1.0);
                    tr.push(next + 1, h0 + p, 1.0);
                    tr.row_dot(next + 1, offset[g], coords.iter(), -self.y[i]);
                    next += 2;
                    p += 1;
                }
            }
        }
        nvar += p;
        let nonneg = next;
        // Cones (t_G, γ_G): rows −t_G, −γ_G.
        let mut row = nonneg;
        for (g, basis) in bases.iter().enumerate() {
            tr.push(row, t0 + g, -1.0);
            for k in 0..basis.dim() {
                tr.push(row + 1 + k, offset[g] + k, -1.0);
            }
            row += basis.dim() + 1;
        }
        let mut b = vec![0.0; row];
        b[..n].fill(-1.0);
        let mut q = vec![0.0; nvar];
        q[t0..h0].fill(1.0);
        let mut cones = vec![SupportedConeT::NonnegativeConeT(nonneg)];
        cones.extend(
            bases
                .iter()
                .map(|bs| SupportedConeT::SecondOrderConeT(bs.dim() + 1)),
        );
        let x = solve_cone(tr.matrix(row, nvar), &q, &b, &cones)?;
        let r = self.xt.ncols();
        let mut beta = DMatrix::zeros(bases.len(), r);
        for (g, basis) in bases.iter().enumerate() {
            let gamma = DVector::from_column_slice(&x[offset[g]..offset[g] + basis.dim()]);
            beta.row_mut(g).copy_from(&(&basis.q * gamma).transpose());
        }
        let objective = beta.row_iter().map(|row| row.norm()).sum();
        Some(Solution { beta, objective })
    }

    /// The constraint matrix's size: each modelled point of a group is a row
    /// over its basis, of dimension at most min(points, d + 1).
    fn entries(&self) -> usize {
        let r = self.xt.ncols();
        self.groups
            .iter()
            .map(|g| {
                let s = g.pattern.modelled().len();
                s * s.min(r)
            })
            .sum()
    }

    /// None when the optimum agrees with every group's pattern: each helpful
    /// pair on its assumed piece, each unmodelled harmful pair inactive.
    /// Otherwise the patterns to solve next: A as the optimum has it, W
    /// grown by the harmful pairs it activated.
    fn disagreements(&self, beta: &DMatrix<f64>) -> Option<Vec<Pattern>> {
        let z = beta * self.xt.transpose();
        let norms: Vec<f64> = beta.row_iter().map(|row| row.norm()).collect();
        let top = norms.iter().cloned().fold(0.0, f64::max);
        let mut changed = false;
        let next = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let mut pattern = group.pattern.clone();
                if norms[g] <= SIGN_TOL * top {
                    return pattern;
                }
                for i in 0..self.y.len() {
                    let zi = group.sign * z[(g, i)];
                    let tol = SIGN_TOL * norms[g] * self.xnorm[i];
                    if group.sign != self.y[i] {
                        pattern.harmful[i] |= zi > tol;
                        continue;
                    }
                    let crossed = if pattern.active[i] {
                        zi < -tol && !pattern.pinned[i]
                    } else {
                        zi > tol
                    };
                    if crossed && pattern.flipped[i] {
                        pattern.active[i] = true;
                        pattern.pinned[i] = true;
                    } else if crossed {
                        pattern.active[i] = !pattern.active[i];
                        pattern.flipped[i] = true;
                    }
                }
                changed |= pattern != group.pattern;
                pattern
            })
            .collect();
        changed.then_some(next)
    }
}

/// Sparse triplets of a constraint matrix.
#[derive(Default)]
struct Triplets {
    rows: Vec<usize>,
    cols: Vec<usize>,
    vals: Vec<f64>,
}

impl Triplets {
    fn push(&mut self, row: usize, col: usize, val: f64) {
        if val != 0.0 {
            self.rows.push(row);
            self.cols.push(col);
            self.vals.push(val);
        }
    }

    /// Adds scale·xᵀβ on `row`, β starting at column `col0`.
    fn row_dot<'a>(
        &mut self,
        row: usize,
        col0: usize,
        x: impl Iterator<Item = &'a f64>,
        scale: f64,
    ) {
        for (k, v) in x.enumerate() {
            self.push(row, col0 + k, scale * v);
        }
    }

    fn matrix(self, nrows: usize, ncols: usize) -> CscMatrix<f64> {
        CscMatrix::new_from_triplets(nrows, ncols, self.rows, self.cols, self.vals)
    }
}

/// Clarabel on min qᵀx s.t. Ax + s = b, s ∈ cones; the primal solution if
/// it reports one.
fn solve_cone(
    a: CscMatrix<f64>,
    q: &[f64],
    b: &[f64],
    cones: &[SupportedConeT<f64>],
) -> Option<Vec<f64>> {
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .tol_gap_abs(1e-9)
        .tol_gap_rel(1e-9)
        .tol_feas(1e-9)
        .max_iter(200)
        .build()
        .ok()?;
    let p = CscMatrix::zeros((q.len(), q.len()));
    let mut solver = DefaultSolver::new(&p, q, &a, b, cones, settings).ok()?;
    solver.solve();
    matches!(
        solver.solution.status,
        SolverStatus::Solved | SolverStatus::AlmostSolved
    )
    .then(|| solver.solution.x.clone())
}

/// The balanced network of the groups' β: each member gets the share of
/// β_G its mass has in the group, β_j, and v_j = σ_j √‖β_j‖,
/// (w_j, b_j) = β_j / v_j; neurons outside the program, or in a group it
/// zeroes, are dead.
fn assemble(
    net: &Network,
    live: &[Live],
    groups: &[Group],
    beta: &DMatrix<f64>,
) -> Option<Network> {
    let (m, d) = (net.width(), net.dim());
    let mut w = DMatrix::zeros(m, d);
    let mut b = DVector::zeros(m);
    let mut v = DVector::zeros(m);
    let top = beta.row_iter().map(|row| row.norm()).fold(0.0, f64::max);
    for (g, group) in groups.iter().enumerate() {
        let norm = beta.row(g).norm();
        if norm <= SIGN_TOL * top {
            continue;
        }
        let total: f64 = group.members.iter().map(|&l| live[l].mass).sum();
        for &l in &group.members {
            let share = live[l].mass / total;
            let vj = group.sign * (share * norm).sqrt();
            let j = live[l].index;
            for k in 0..d {
                w[(j, k)] = share * beta[(g, k)] / vj;
            }
            b[j] = share * beta[(g, d)] / vj;
            v[j] = vj;
        }
    }
    Network::new(w, b, v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One positive group on two positive points x̃ = (1, 1) and (−1, 1).
    fn program<'a>(xt: &'a DMatrix<f64>, groups: &'a [Group]) -> Program<'a> {
        const XNORM: [f64; 2] = [std::f64::consts::SQRT_2; 2];
        const Y: [f64; 2] = [1.0, 1.0];
        Program {
            xt,
            xnorm: &XNORM,
            y: &Y,
            groups,
            max_entries: usize::MAX,
        }
    }

    fn group(active: [bool; 2], flipped: [bool; 2], pinned: [bool; 2]) -> Group {
        Group {
            sign: 1.0,
            pattern: Pattern {
                active: active.to_vec(),
                harmful: vec![false; 2],
                flipped: flipped.to_vec(),
                pinned: pinned.to_vec(),
            },
            members: vec![0],
        }
    }

    #[test]
    fn a_pair_that_crosses_twice_is_pinned_on_the_linear_piece() {
        let xt = DMatrix::from_row_slice(2, 2, &[1.0, 1.0, -1.0, 1.0]);
        // β = (−1, 0.5): β·x̃ = −0.5 on point 0 (assumed active) and 1.5 on
        // point 1 (assumed inactive): both cross.
        let beta = DMatrix::from_row_slice(1, 2, &[-1.0, 0.5]);
        // First crossing of each: moved across A, marked flipped.
        let groups = [group([true, false], [false, false], [false, false])];
        let next = program(&xt, &groups).disagreements(&beta).unwrap();
        assert_eq!(next[0].active, [false, true]);
        assert_eq!(next[0].flipped, [true, true]);
        assert_eq!(next[0].pinned, [false, false]);
        // Point 0 crossed before: now pinned in A (its row σβᵀx̃ ≥ 0 holds it
        // at the kink), not moved back; point 1's first crossing moves it.
        let groups = [group([true, false], [true, false], [false, false])];
        let next = program(&xt, &groups).disagreements(&beta).unwrap();
        assert_eq!(next[0].active, [true, true]);
        assert_eq!(next[0].pinned, [true, false]);
        // A pinned pair below zero is no disagreement: the pattern settles.
        let groups = [group([true, true], [true, true], [true, false])];
        assert!(program(&xt, &groups).disagreements(&beta).is_none());
    }
}
