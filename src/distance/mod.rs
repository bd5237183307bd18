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
//! the sweep's last ten GD distances `bounded` (SPEC §4, "A multi-neuron bound"): at one of
//! their roots the Shor SDP's value is the distance itself. The chords
//! produce the candidates; the node's bound is the larger of the two; it
//! is tried only where the chords leave more than 1% open
//! (`QUADRATIC_GAP`). Where it is the larger, every other level of a
//! path branches on the neuron whose parabola is loosest at the
//! relaxation's minimiser (`shor::loosest`) instead of the chords'
//! widest: each rule misses slack the other sees (SPEC §4, "Branching"; the full
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

pub mod deep;
mod node;
pub mod shor;
mod tree;
mod witness;

pub use witness::MAX_ENUMERATED;

use crate::error::{Error, Result};
use crate::linalg::Finish;
use crate::model::data::Dataset;
use crate::model::net::Network;
use nalgebra::{DMatrix, DVector};
use node::{Assign, Role, Search};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tree::Searched;

/// A flip the network as given confirmed: a point of the other sign (in the
/// search's coordinates) and its distance from x0.
#[derive(Clone, Debug)]
struct Flip {
    distance: f64,
    point: DVector<f64>,
}

impl Flip {
    /// The nearer of two optional flips.
    fn nearer(a: Option<Flip>, b: Option<Flip>) -> Option<Flip> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.distance < a.distance { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The flip at `point`, `x0` being the search's origin.
    fn to(x0: &DVector<f64>, point: DVector<f64>) -> Flip {
        Flip {
            distance: (&point - x0).norm(),
            point,
        }
    }
}

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
    /// Index of the point in its dataset.
    pub index: usize,
    /// Its label s0 = ±1 (the sign a flip must change).
    pub label: f64,
    /// N(x0), the network's output at the point.
    pub output: f64,
    /// The proven lower bound on the distance.
    pub lower: Option<f64>,
    /// The norm of the nearest verified flip (none if no flip was found).
    pub upper: Option<f64>,
    /// What was proven: `exact`, `bounded`, `no_flip` or `on_boundary`.
    pub status: Status,
    /// Why a result is `bounded` (the limit that stopped the search).
    pub reason: Option<String>,
    /// x0 + δ*, whose forward pass was re-checked to satisfy s0·N ≤ 0.
    pub witness: Option<Vec<f64>>,
    /// s0·N(witness), from the fresh forward pass.
    pub witness_output: Option<f64>,
    /// Branch-and-bound nodes explored.
    pub nodes: usize,
    /// Hurting neurons that could switch within the final radius.
    pub unstable_hurting: usize,
    /// Wall time of the search.
    pub seconds: f64,
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
    /// When d > m, only Wδ enters the problem: with Wᵀ = QR the search runs
    /// on the net with first layer Rᵀ (m × m), and a point t of that space
    /// is δ = Qt. `None` when d ≤ m, or if the factor overflowed (then the
    /// search runs in the input space, which is exact too).
    fn span_of_w(net: &Network) -> Option<(Network, DMatrix<f64>)> {
        if net.dim() <= net.width() {
            return None;
        }
        let qr = net.w().transpose().qr();
        let reduced = Network::new(qr.r().transpose(), net.b().clone(), net.v().clone()).ok()?;
        Some((reduced, qr.q()))
    }

    /// Prepares the search for `net`.
    pub fn new(original: &'a Network) -> Self {
        let merged = original.merged_duplicates();
        let (net, basis) = match Self::span_of_w(&merged) {
            Some((reduced, q)) => (reduced, Some(q)),
            None => (merged, None),
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
    fn seed(&self, s: &Search) -> Option<Flip> {
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
            .min_by(|a, b| a.distance.total_cmp(&b.distance))
    }

    /// Improves an incumbent by solving the convex piece of its hurting pattern, repeatedly.
    fn refine(&self, s: &Search, mut best: Flip) -> Flip {
        for _ in 0..20 {
            let u = self.net.w() * &best.point + self.net.b();
            let assign: Assign = (0..u.len())
                .map(|j| (s.roles[j] == Role::Hurt).then_some(u[j] > 0.0))
                .collect();
            let sol = s.solve(&assign, best.distance, 0.0, Finish::Exact, &[]);
            match s.verify(&sol.delta) {
                Some(c) if c.distance < best.distance * (1.0 - 1e-13) => best = c,
                _ => break,
            }
        }
        best
    }

    /// The certified distance of `x0` (with its dataset index and label, for the report).
    ///
    /// ```
    /// use kktcert::distance::{DistanceOptions, DistanceSolver, Status};
    /// # use kktcert::fit::gd::{train, TrainConfig};
    /// # use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
    /// # let spec = FixtureSpec { format: FIXTURE_FORMAT.into(), k: 4, d: 20, sigma: 0.3, n: 40,
    /// #     n_test: 10, seed: 0, means: MeansKind::Orthogonal, labels: LabelRule::Balanced };
    /// # let fx = Fixture::generate(spec)?;
    /// # let net = train(&fx.train, &TrainConfig { width: 8, ..TrainConfig::default() }, |_, _, _| Ok(()))?.net;
    /// let solver = DistanceSolver::new(&net);
    /// let (x0, y0) = (fx.test.point(0), fx.test.y()[0]);
    /// let p = solver.distance(&x0, 0, y0, &DistanceOptions::default())?;
    /// assert_eq!(p.status, Status::Exact);
    /// let (lower, upper) = (p.lower.unwrap_or(0.0), p.upper.unwrap_or(f64::INFINITY));
    /// assert!(upper - lower <= 1e-9 * upper.max(1.0));
    /// # Ok::<(), kktcert::Error>(())
    /// ```
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
        let lifted = s.lift(&searched.best.point);
        let confirmed = self.confirm(s, x0, &lifted);
        let best = confirmed.clone().unwrap_or_else(|| Flip::to(x0, lifted));
        let upper = best.distance;
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
        res.witness_output = Some(s.s0 * self.original.output(&best.point));
        res.witness = Some(best.point.iter().copied().collect());
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
    fn confirm(&self, s: &Search, x0: &DVector<f64>, x: &DVector<f64>) -> Option<Flip> {
        let delta = x - x0;
        let flips =
            |y: DVector<f64>| (s.s0 * self.original.output(&y) <= 0.0).then(|| Flip::to(x0, y));
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
}

/// Summary of a batch of distances.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DistanceSummary {
    /// Points summarised.
    pub count: usize,
    /// Of which `exact`.
    pub exact: usize,
    /// Of which `bounded`.
    pub bounded: usize,
    /// Of which `no_flip`.
    pub no_flip: usize,
    /// Of which `on_boundary` (N(x0) = 0).
    pub on_boundary: usize,
    /// Over points with an upper bound.
    pub median: Option<f64>,
    /// Smallest distance (upper end).
    pub min: Option<f64>,
    /// Largest distance (upper end).
    pub max: Option<f64>,
}

impl DistanceSummary {
    /// Summarises per-point results (distances taken from `upper`).
    pub fn of(points: &[PointDistance]) -> Self {
        Self::tally(points.iter().map(|p| (p.status, p.upper)).collect())
    }

    /// Summarises a deep net's per-point results.
    pub fn of_deep(points: &[deep::DeepPointDistance]) -> Self {
        Self::tally(points.iter().map(|p| (p.status, p.upper)).collect())
    }

    /// The summary of (status, upper end) pairs.
    fn tally(points: Vec<(Status, Option<f64>)>) -> Self {
        let count = |st| points.iter().filter(|p| p.0 == st).count();
        let mut v: Vec<f64> = points.iter().filter_map(|p| p.1).collect();
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
