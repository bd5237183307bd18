//! The branch and bound of [`super`]: nodes, incumbents and the verdict.

use super::bounds::{self, Domain, Phase, Relu};
use super::relaxation::{region_point, relax, Cell, GoalRow, Relaxed, Signs};
use super::{DeepDistanceOptions, DeepPointDistance, InputBox, Side};
use crate::distance::Status;
use crate::error::{Error, Result};
use crate::model::deep::{DeepNet, Output};
use nalgebra::{DMatrix, DVector};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A relaxation whose every unstable neuron is within this of relu(ẑ) (per
/// unit of ‖x0‖ + 1) is treated as tight when choosing the branch.
const TIGHT: f64 = 1e-9;
/// DeepFool steps from x0, and how far each overshoots the linearised flip.
const DEEPFOOL_STEPS: usize = 50;
const OVERSHOOT: f64 = 0.02;
/// Reference points of another class tried as seeds, nearest first.
const REFERENCES: usize = 16;
/// Relative pushes of a candidate away from x0, tried in turn until the
/// forward pass confirms it: a minimiser on the flip set's boundary can
/// miss it by rounding.
const PUSHES: [f64; 5] = [0.0, 1e-15, 1e-13, 1e-12, 1e-11];
/// Coordinates within this of zero (per unit of ‖x0‖∞ + 1) are snapped to
/// it in a last confirmation attempt.
const SNAP: f64 = 1e-12;
/// How far inside its rows (per unit of ‖x0‖∞ + 1) a region's program is
/// re-solved when its boundary minimiser does not survive the forward pass.
const INTERIOR: f64 = 1e-11;
/// A margin at least this (per unit of ‖f‖∞ + 1) survives another
/// implementation's rounding of the forward pass.
const CLEAR: f64 = 1e-13;
/// Bisection steps on a segment.
const BISECTIONS: usize = 80;
/// Polishes of one flip (each re-solves the pattern of the last point).
const POLISHES: usize = 4;

/// Exact minimal ℓ2 distances on one deep net, for many points.
///
/// ```
/// use kktcert::distance::deep::{DeepDistanceOptions, DeepDistanceSolver};
/// use kktcert::distance::Status;
/// use kktcert::model::deep::{DeepNet, Layer};
/// use nalgebra::{dmatrix, dvector};
/// // f(x) = relu(x1) − relu(x2) − 1 with a second hidden layer passing both on:
/// let net = DeepNet::new(vec![
///     Layer::new(dmatrix![1.0, 0.0; 0.0, 1.0], None)?,
///     Layer::new(dmatrix![1.0, 0.0; 0.0, 1.0], None)?,
///     Layer::new(dmatrix![1.0, -1.0], Some(dvector![-1.0]))?,
/// ])?;
/// let solver = DeepDistanceSolver::new(&net);
/// // At (3, 0) the output is 2; the nearest point with f ≤ 0 is (2, 1),
/// // across the plane x1 − x2 = 1 at distance √2.
/// let p = solver.distance(&dvector![3.0, 0.0], 0, None, &DeepDistanceOptions::default())?;
/// assert_eq!(p.status, Status::Exact);
/// let root2 = 2f64.sqrt();
/// assert!((p.upper.unwrap() - root2).abs() < 1e-9 && (p.lower.unwrap() - root2).abs() < 1e-9);
/// assert_eq!(p.witness_class, Some(-1)); // the sign a flip reaches
/// # Ok::<(), kktcert::Error>(())
/// ```
pub struct DeepDistanceSolver<'a> {
    net: &'a DeepNet,
    references: Vec<DVector<f64>>,
}

/// One way to flip: the margin aᵀf ≥ 0 (a over the outputs), written
/// on the last hidden layer as wᵀh_L + w0.
struct Goal {
    class: i64,
    scores: DVector<f64>,
    hidden: DVector<f64>,
    offset: f64,
}

/// A flip the forward pass confirmed.
#[derive(Clone, Debug)]
struct Flip {
    point: DVector<f64>,
    distance: f64,
    goal: usize,
    margin: f64,
}

/// An open node: a goal and the branch decisions, with the bound it
/// inherited.
struct Node {
    goal: usize,
    phases: Vec<Phase>,
    lower: f64,
    depth: usize,
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Node {}
impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Node {
    /// The max-heap pops the least bound first, the deepest among equals.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .lower
            .total_cmp(&self.lower)
            .then(self.depth.cmp(&other.depth))
    }
}

/// Why a search stopped early.
enum Stop {
    Nodes,
    Time,
}

impl<'a> DeepDistanceSolver<'a> {
    /// Prepares the search on `net`.
    pub fn new(net: &'a DeepNet) -> Self {
        Self {
            net,
            references: Vec::new(),
        }
    }

    /// Points whose segments from x0 seed the incumbent when their class
    /// differs (e.g. the other points of the batch).
    pub fn with_references(mut self, x: &DMatrix<f64>) -> Self {
        self.references = x.row_iter().map(|r| r.transpose()).collect();
        self
    }

    /// The pre-activations of every hidden layer and the output at x.
    fn trace(&self, x: &DVector<f64>) -> (Vec<DVector<f64>>, DVector<f64>) {
        let layers = self.net.layers();
        let mut pre = Vec::with_capacity(layers.len() - 1);
        let mut h = x.clone();
        for layer in layers {
            let mut z = layer.weight() * &h;
            if let Some(b) = layer.bias() {
                z += b;
            }
            h = z.map(|v| v.max(0.0));
            pre.push(z);
        }
        let out = pre.pop().expect("a net has an output layer");
        (pre, out)
    }

    /// The side a flip must leave: the one given (checked against the
    /// output), or the prediction at x0 (`None` on a tie).
    fn side(&self, f0: &DVector<f64>, given: Option<Side>) -> Result<Option<Side>> {
        match (given, self.net.output()) {
            (Some(Side::Sign(s)), Output::Scalar) if s == 1.0 || s == -1.0 => Ok(given),
            (Some(Side::Class(c)), Output::Classes(n)) if c < n => Ok(given),
            (Some(s), out) => Err(Error::param(
                "label",
                format!(
                    "{s:?} for a net with output {out:?}, expected ±1 (scalar) or a class 0…C−1"
                ),
            )),
            (None, Output::Scalar) => Ok((f0[0] != 0.0).then(|| Side::Sign(f0[0].signum()))),
            (None, Output::Classes(_)) => {
                let best = f0.imax();
                let tie = f0
                    .iter()
                    .enumerate()
                    .any(|(j, &v)| j != best && v == f0[best]);
                Ok((!tie).then_some(Side::Class(best)))
            }
        }
    }

    /// The goals of point `index` leaving `side`: one per rival class (or
    /// the target).
    fn goals(&self, side: Side, target: Option<usize>, index: usize) -> Result<Vec<Goal>> {
        let out = &self.net.layers()[self.net.hidden_layers()];
        let c = out.outputs();
        let scores: Vec<(i64, DVector<f64>)> = match side {
            Side::Sign(s) => vec![(-s as i64, DVector::from_element(1, -s))],
            Side::Class(leave) => {
                if let Some(t) = target.filter(|&t| t >= c) {
                    return Err(Error::param(
                        "target",
                        format!("class {t}, expected a class 0…{}", c - 1),
                    ));
                }
                if target == Some(leave) {
                    return Err(Error::param(
                        "target",
                        format!("class {leave} is the class point {index} leaves; a flip cannot reach it"),
                    ));
                }
                (0..c)
                    .filter(|&j| j != leave && target.is_none_or(|t| t == j))
                    .map(|j| {
                        let a = DVector::from_fn(c, |i, _| {
                            (i == j) as u8 as f64 - (i == leave) as u8 as f64
                        });
                        (j as i64, a)
                    })
                    .collect()
            }
        };
        let bias = bounds::bias_or_zero(out);
        Ok(scores
            .into_iter()
            .map(|(class, a)| Goal {
                class,
                hidden: out.weight().tr_mul(&a),
                offset: a.dot(&bias),
                scores: a,
            })
            .collect())
    }

    /// The certified distance from `x0` (point `index` of its dataset) to
    /// the nearest input whose class leaves `side` (default: the class
    /// predicted at x0).
    pub fn distance(
        &self,
        x0: &DVector<f64>,
        index: usize,
        side: Option<Side>,
        opts: &DeepDistanceOptions,
    ) -> Result<DeepPointDistance> {
        let t0 = Instant::now();
        if x0.len() != self.net.input_dim() {
            return Err(Error::Mismatch(format!(
                "point {index} has d = {}, the net takes {} inputs",
                x0.len(),
                self.net.input_dim()
            )));
        }
        if opts.input_box.as_ref().is_some_and(|b| !b.contains(x0)) {
            return Err(Error::param(
                "box",
                format!("point {index} lies outside the input box"),
            ));
        }
        let (_, f0) = self.trace(x0);
        let side = self.side(&f0, side)?;
        let mut res = DeepPointDistance {
            index,
            leaves: side.map_or(0, Side::value),
            lower: None,
            upper: None,
            status: Status::OnBoundary,
            reason: None,
            witness: None,
            witness_class: None,
            witness_margin: None,
            nodes: 0,
            unstable: 0,
            seconds: 0.0,
        };
        let Some(side) = side else {
            res.lower = Some(0.0);
            res.upper = Some(0.0);
            res.witness = Some(x0.iter().copied().collect());
            res.seconds = t0.elapsed().as_secs_f64();
            return Ok(res);
        };
        let goals = self.goals(side, opts.target, index)?;
        let mut search = Search::new(self, x0, goals, opts);
        search.run(opts, t0, &mut res);
        res.seconds = t0.elapsed().as_secs_f64();
        Ok(res)
    }
}

/// One point's search.
struct Search<'s, 'a> {
    solver: &'s DeepDistanceSolver<'a>,
    x0: &'s DVector<f64>,
    goals: Vec<Goal>,
    input_box: Option<&'s InputBox>,
    best: Option<Flip>,
    /// The ball searched while no flip is known.
    radius: f64,
    /// The least bound of leaves whose minimiser no forward pass confirmed.
    floor: f64,
    rel_gap: f64,
    nodes: usize,
    unstable: Option<usize>,
}

impl<'s, 'a> Search<'s, 'a> {
    fn new(
        solver: &'s DeepDistanceSolver<'a>,
        x0: &'s DVector<f64>,
        goals: Vec<Goal>,
        opts: &'s DeepDistanceOptions,
    ) -> Self {
        let radius = match &opts.input_box {
            Some(b) => b.farthest(x0),
            None => opts.radius.unwrap_or(10.0 * x0.norm().max(1.0)),
        };
        Self {
            solver,
            x0,
            goals,
            input_box: opts.input_box.as_ref(),
            best: None,
            radius,
            floor: f64::INFINITY,
            rel_gap: opts.rel_gap,
            nodes: 0,
            unstable: None,
        }
    }

    fn net(&self) -> &'a DeepNet {
        self.solver.net
    }

    /// The radius every open question lies within: the incumbent's.
    fn reach(&self) -> f64 {
        self.best.as_ref().map_or(self.radius, |b| b.distance)
    }

    fn tol(&self, r: f64) -> f64 {
        self.rel_gap * r.max(1.0)
    }

    /// The largest goal margin at x and its goal.
    fn margin(&self, x: &DVector<f64>) -> (f64, usize) {
        self.margin_of(&self.solver.trace(x).1)
    }

    /// The largest goal margin of the scores f and its goal.
    fn margin_of(&self, f: &DVector<f64>) -> (f64, usize) {
        self.goals
            .iter()
            .enumerate()
            .map(|(g, goal)| (goal.scores.dot(f), g))
            .fold((f64::NEG_INFINITY, 0), |a, b| if b.0 > a.0 { b } else { a })
    }

    /// x0 + (c − x0)(1 + push), inside the box.
    fn pushed(&self, c: &DVector<f64>, push: f64) -> DVector<f64> {
        let p = self.x0 + (c - self.x0) * (1.0 + push);
        self.input_box.map_or(p.clone(), |b| b.clamp(&p))
    }

    /// The candidate as a flip, if a forward pass confirms it: as given,
    /// pushed away from x0, or with its rounding-level coordinates set to
    /// zero (a flip set without interior, such as the origin of a
    /// bias-free net whose output has one sign elsewhere, is met only by
    /// exact zeros). A point whose margin clears `CLEAR` is preferred, so
    /// that another forward pass (torch's, with its own summation order)
    /// agrees; one that only reaches 0 is taken when no push clears it.
    fn confirm(&self, c: &DVector<f64>) -> Option<Flip> {
        let scale = SNAP * (1.0 + self.x0.amax());
        let snapped = c.map(|v| if v.abs() <= scale { 0.0 } else { v });
        let candidates = PUSHES
            .iter()
            .map(|&push| self.pushed(c, push))
            .chain(std::iter::once(snapped));
        let mut reached = None;
        for point in candidates {
            let (_, f) = self.solver.trace(&point);
            let (margin, goal) = self.margin_of(&f);
            if margin < 0.0 {
                continue;
            }
            let clear = margin >= CLEAR * (1.0 + f.amax());
            let flip = Flip {
                distance: (&point - self.x0).norm(),
                point,
                goal,
                margin,
            };
            if clear {
                return Some(flip);
            }
            reached.get_or_insert(flip);
        }
        reached
    }

    /// The activation pattern at x (ẑ ≥ 0 active).
    fn pattern(&self, x: &DVector<f64>) -> Vec<Vec<Relu>> {
        let (pre, _) = self.solver.trace(x);
        pre.iter()
            .map(|z| {
                z.iter()
                    .map(|&v| {
                        if v >= 0.0 {
                            Relu::Active
                        } else {
                            Relu::Inactive
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The nearest confirmed flip in the linear region of `flip` (and of
    /// the regions its successive minimisers land in).
    fn polish(&self, mut flip: Flip) -> Flip {
        for _ in 0..POLISHES {
            let goal = &self.goals[flip.goal];
            let row = GoalRow {
                weights: &goal.hidden,
                offset: goal.offset,
            };
            let pattern = self.pattern(&flip.point);
            let better = self
                .region_minimum(&pattern, &row)
                .filter(|f| f.distance < flip.distance - self.tol(flip.distance));
            match better {
                Some(f) => flip = f,
                None => break,
            }
        }
        flip
    }

    /// The nearest flip of one activation pattern, confirmed: the exact
    /// program's minimiser, or failing that, the minimiser of the program
    /// moved `INTERIOR` inside.
    fn region_minimum(&self, pattern: &[Vec<Relu>], row: &GoalRow) -> Option<Flip> {
        let at = |interior: f64| {
            let cell = Cell {
                net: self.net(),
                x0: self.x0,
                relus: pattern,
                goal: row,
                input_box: self.input_box,
            };
            region_point(&cell, interior).and_then(|d| self.confirm(&(self.x0 + d)))
        };
        at(0.0).or_else(|| at(INTERIOR * (1.0 + self.x0.amax())))
    }

    /// Offers a candidate: confirmed, polished and kept if nearest.
    fn offer(&mut self, c: &DVector<f64>) -> bool {
        let Some(flip) = self.confirm(c) else {
            return false;
        };
        let flip = self.polish(flip);
        self.keep(flip);
        true
    }

    /// Makes `flip` the incumbent if it is the nearest so far.
    fn keep(&mut self, flip: Flip) {
        if flip.distance < self.reach() {
            self.best = Some(flip);
        }
    }

    /// The first flip on the segment x0 + tδ, t ∈ (0, 1], by bisection
    /// (x0 itself does not flip).
    fn segment(&self, delta: &DVector<f64>) -> Option<DVector<f64>> {
        let at = |t: f64| self.x0 + delta * t;
        if self.margin(&at(1.0)).0 < 0.0 {
            return None;
        }
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..BISECTIONS {
            let mid = 0.5 * (lo + hi);
            if self.margin(&at(mid)).0 >= 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(at(hi))
    }

    /// The ray through δ up to the current reach (and the box).
    fn ray(&self, delta: &DVector<f64>) -> Option<DVector<f64>> {
        let norm = delta.norm();
        if norm == 0.0 {
            return None;
        }
        let mut t = self.reach() / norm;
        if let Some(b) = self.input_box {
            for i in 0..delta.len() {
                let room = if delta[i] > 0.0 {
                    (b.upper[i] - self.x0[i]) / delta[i]
                } else if delta[i] < 0.0 {
                    (b.lower[i] - self.x0[i]) / delta[i]
                } else {
                    f64::INFINITY
                };
                t = t.min(room);
            }
        }
        self.segment(&(delta * t))
    }

    /// ∇_x (aᵀf) at the point whose pre-activations are `pre`.
    fn gradient(&self, pre: &[DVector<f64>], a: &DVector<f64>) -> DVector<f64> {
        let layers = self.net().layers();
        let mut r = layers[layers.len() - 1].weight().tr_mul(a);
        for (k, z) in pre.iter().enumerate().rev() {
            r.zip_apply(z, |ri, zi| {
                if zi < 0.0 {
                    *ri = 0.0
                }
            });
            r = layers[k].weight().tr_mul(&r);
        }
        r
    }

    /// DeepFool (Moosavi-Dezfooli et al., 2016): linearise every goal's
    /// margin, step to the nearest linearised flip, repeat.
    fn deepfool(&self) -> Option<DVector<f64>> {
        let mut x = self.x0.clone();
        for _ in 0..DEEPFOOL_STEPS {
            let (pre, f) = self.solver.trace(&x);
            let mut step: Option<(f64, DVector<f64>)> = None;
            for goal in &self.goals {
                let m = goal.scores.dot(&f);
                if m >= 0.0 {
                    return Some(x);
                }
                let g = self.gradient(&pre, &goal.scores);
                let gg = g.norm_squared();
                if gg > 0.0 && step.as_ref().is_none_or(|s| -m / gg.sqrt() < s.0) {
                    step = Some((-m / gg.sqrt(), g * (-m / gg)));
                }
            }
            let (_, s) = step?;
            x += s * (1.0 + OVERSHOOT);
            if let Some(b) = self.input_box {
                x = b.clamp(&x);
            }
        }
        (self.margin(&x).0 >= 0.0).then_some(x)
    }

    /// Seeds the incumbent: DeepFool, then the segments to the nearest
    /// reference points of another class.
    fn seed(&mut self) {
        if let Some(x) = self.deepfool() {
            self.offer(&x);
        }
        let mut refs: Vec<&DVector<f64>> = self.solver.references.iter().collect();
        refs.sort_by(|a, b| (*a - self.x0).norm().total_cmp(&(*b - self.x0).norm()));
        for r in refs.into_iter().take(REFERENCES) {
            if let Some(x) = self.segment(&(r - self.x0)) {
                self.offer(&x);
            }
        }
    }

    /// Bounds, relaxes and branches one node; its children.
    fn expand(&mut self, node: Node) -> Vec<Node> {
        let r = self.reach();
        let domain = Domain {
            x0: self.x0,
            radius: r,
            input_box: self.input_box,
        };
        let net = self.net();
        let Some(relus) = bounds::relus(net, &domain, &node.phases) else {
            return Vec::new();
        };
        let hidden = &net.layers()[..net.hidden_layers()];
        let unstable: Vec<(usize, f64)> = relus
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(k, r)| match *r {
                Relu::Unstable { lower, upper } => Some((k, -lower * upper / (upper - lower))),
                _ => None,
            })
            .collect();
        self.unstable.get_or_insert(unstable.len());
        let goal = &self.goals[node.goal];
        let (weights, offset) = (goal.hidden.clone(), goal.offset);
        let reachable = bounds::upper_through(
            &relus,
            hidden,
            &domain,
            DMatrix::from_row_slice(1, weights.len(), weights.as_slice()),
            DVector::from_element(1, offset),
        );
        if reachable[0] < 0.0 {
            return Vec::new();
        }
        let row = GoalRow {
            weights: &weights,
            offset,
        };
        let signs = Signs::Branched(&node.phases);
        let cell = Cell {
            net,
            x0: self.x0,
            relus: &relus,
            goal: &row,
            input_box: self.input_box,
        };
        let relaxed = relax(&cell, signs);
        let lower = node.lower.max(relaxed.lower);
        if lower >= r - self.tol(r) {
            return Vec::new();
        }
        if let Some(delta) = &relaxed.delta {
            if !self.offer(&(self.x0 + delta)) {
                if let Some(x) = self.ray(delta) {
                    self.offer(&x);
                }
            }
        }
        let r = self.reach();
        if lower >= r - self.tol(r) {
            return Vec::new();
        }
        if unstable.is_empty() {
            if let Some(flip) = self.region_minimum(&relus, &row) {
                self.keep(flip);
            }
            let r = self.reach();
            if lower < r - self.tol(r) {
                self.floor = self.floor.min(lower);
            }
            return Vec::new();
        }
        let split = self.branching(&relaxed, &unstable);
        [Phase::Active, Phase::Inactive]
            .into_iter()
            .map(|phase| {
                let mut phases = node.phases.clone();
                phases[split] = phase;
                Node {
                    goal: node.goal,
                    phases,
                    lower,
                    depth: node.depth + 1,
                }
            })
            .collect()
    }

    /// The neuron to split: the one whose chord costs the bound most (its
    /// multiplier times its height), else the loosest at the relaxation's
    /// minimiser, else (where the relaxation is tight or unsolved) the
    /// tallest triangle.
    fn branching(&self, relaxed: &Relaxed, unstable: &[(usize, f64)]) -> usize {
        let scale = TIGHT * (1.0 + self.x0.norm());
        let largest = |v: &[(usize, f64)]| {
            v.iter()
                .filter(|g| g.1 > scale)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|g| g.0)
        };
        largest(&relaxed.chord_costs)
            .or_else(|| largest(&relaxed.gaps))
            .or_else(|| largest(unstable))
            .unwrap_or(unstable[0].0)
    }

    /// The search and its verdict, into `res`.
    fn run(&mut self, opts: &DeepDistanceOptions, t0: Instant, res: &mut DeepPointDistance) {
        self.seed();
        let width: usize = self.net().layers()[..self.net().hidden_layers()]
            .iter()
            .map(|l| l.outputs())
            .sum();
        let mut heap: BinaryHeap<Node> = (0..self.goals.len())
            .map(|goal| Node {
                goal,
                phases: vec![Phase::Free; width],
                lower: 0.0,
                depth: 0,
            })
            .collect();
        let stop = loop {
            let Some(node) = heap.pop() else { break None };
            let r = self.reach();
            if node.lower >= r - self.tol(r) {
                heap.push(node);
                break None;
            }
            if self.nodes >= opts.max_nodes {
                heap.push(node);
                break Some(Stop::Nodes);
            }
            if opts
                .time_limit
                .is_some_and(|t| t0.elapsed().as_secs_f64() > t)
            {
                heap.push(node);
                break Some(Stop::Time);
            }
            self.nodes += 1;
            heap.extend(self.expand(node));
        };
        let open = heap.peek().map_or(f64::INFINITY, |n| n.lower);
        let lower = open.min(self.floor).min(self.reach());
        self.conclude(lower, stop, res);
    }

    fn conclude(&self, lower: f64, stop: Option<Stop>, res: &mut DeepPointDistance) {
        res.nodes = self.nodes;
        res.unstable = self.unstable.unwrap_or(0);
        res.lower = Some(lower);
        let reason = match stop {
            Some(Stop::Nodes) => format!("node limit ({}) reached", self.nodes),
            Some(Stop::Time) => "time limit reached".to_string(),
            None if self.floor <= lower => {
                "a region's minimiser was not confirmed by the forward pass".to_string()
            }
            None => format!("no flip within radius {}", self.radius),
        };
        match &self.best {
            Some(b) => {
                res.upper = Some(b.distance);
                res.witness = Some(b.point.iter().copied().collect());
                res.witness_class = Some(self.goals[b.goal].class);
                res.witness_margin = Some(b.margin);
                let closed = b.distance - lower <= self.tol(b.distance);
                res.status = if closed {
                    Status::Exact
                } else {
                    Status::Bounded
                };
                res.reason = (!closed).then_some(reason);
            }
            None if stop.is_none() && self.input_box.is_some() && self.floor.is_infinite() => {
                res.status = Status::NoFlip;
                res.lower = None;
            }
            None => {
                res.status = Status::Bounded;
                res.reason = Some(reason);
            }
        }
    }
}
