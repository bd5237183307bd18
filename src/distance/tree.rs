//! The best-first branch-and-bound over the hurting neurons' states.

use super::node::{Assign, Inherited, Quadratic, Search};
use super::shor::{Probe, Warm};
use super::witness::Leaf;
use super::{DistanceOptions, DistanceSolver, Flip};
use crate::linalg::Finish;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::Instant;

/// The search tree, one record per node: its parent and the hurting neuron
/// it fixed (the root fixes none). An open node costs 16 bytes, not an
/// m-entry assignment, so millions of nodes fit in memory and the time
/// limit, not the node limit, is what ends a long search.
pub(super) struct Tree {
    pub(super) nodes: Vec<(usize, u32, bool)>,
}

impl Tree {
    const ROOT: usize = 0;

    pub(super) fn new() -> Self {
        Self {
            nodes: vec![(usize::MAX, u32::MAX, false)],
        }
    }

    /// The child of `parent` with neuron j fixed (active or not).
    pub(super) fn child(&mut self, parent: usize, j: usize, active: bool) -> usize {
        // Neuron indices are stored as u32 to keep a node at 16 bytes; a
        // width above 2³² would need more than 2³²·(d+2)·8 bytes of weights,
        // which `io::resources` refuses long before the search starts.
        let j = u32::try_from(j).unwrap_or(u32::MAX);
        self.nodes.push((parent, j, active));
        self.nodes.len() - 1
    }

    /// The states fixed along the path from the root to `node`.
    pub(super) fn assignment(&self, mut node: usize, m: usize) -> Assign {
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
pub(super) struct Searched {
    pub(super) best: Flip,
    pub(super) lower: f64,
    pub(super) stopped: Option<String>,
    pub(super) nodes: usize,
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

/// Best-first queue entry (min-heap on the bound), with the parent's
/// quadratic maximiser as the warm start of its bound.
pub(super) struct Entry {
    pub(super) lb: f64,
    pub(super) node: usize,
    pub(super) warm: Option<Rc<Warm>>,
    /// The parent's quadratic bound beat its chords: go to it directly.
    pub(super) quadratic_first: bool,
}

impl Entry {
    pub(super) fn root() -> Self {
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

impl Entry {
    /// What the node inherits for its own bound.
    fn inherited(&self) -> Inherited<'_> {
        Inherited {
            lb: self.lb,
            warm: self.warm.as_deref(),
            quadratic_first: self.quadratic_first,
        }
    }
}

/// A node to branch: its bound, the neuron to branch on, and its
/// quadratic bound's maximiser (to probe with and warm-start the children).
struct Branch<'a> {
    node: usize,
    assign: &'a Assign,
    lb: f64,
    neuron: usize,
    quadratic: Option<Quadratic>,
}

/// The open nodes: the tree of their assignments and the best-first queue.
struct Open {
    tree: Tree,
    heap: BinaryHeap<Entry>,
    /// The smallest bound of a node closed without a flip beating the incumbent.
    lower: f64,
}

impl Open {
    /// Queues the children of a node, after probing: neurons the probe fixes need no
    /// branching, and a probe that prunes both children closes the node.
    fn branch(&mut self, s: &Search, b: Branch, target: f64) {
        let Branch {
            node: parent,
            assign,
            lb,
            neuron: j,
            quadratic,
        } = b;
        let quadratic_first = quadratic.as_ref().is_some_and(|q| q.decisive);
        let (fixed, warm) = match quadratic.map(|q| s.probe(assign, &q.warm, target)) {
            Some(Probe::Pruned(plb)) => {
                self.lower = self.lower.min(plb);
                return;
            }
            Some(Probe::Fixed { fixes, lb, warm }) => {
                self.lower = self.lower.min(lb);
                (fixes, Some(warm))
            }
            None => (Vec::new(), None),
        };
        // Warm starts cost m + 1 floats per open parent: kept while the
        // queue's share stays under WARM_FLOATS.
        let warm: Option<Rc<Warm>> = warm
            .filter(|_| self.heap.len() * (s.roles.len() + 1) < WARM_FLOATS)
            .map(Rc::new);
        let children: Vec<usize> = if fixed.is_empty() {
            [true, false]
                .into_iter()
                .map(|state| self.tree.child(parent, j, state))
                .collect()
        } else {
            let node = fixed
                .iter()
                .fold(parent, |n, &(k, state)| self.tree.child(n, k, state));
            vec![node]
        };
        for node in children {
            self.heap.push(Entry {
                lb,
                node,
                warm: warm.clone(),
                quadratic_first,
            });
        }
    }
}

impl DistanceSolver<'_> {
    /// Best-first branch-and-bound from the incumbent `best` until the best
    /// open bound reaches it or a limit stops the search.
    pub(super) fn branch_and_bound(
        &self,
        s: &Search,
        mut best: Flip,
        opts: &DistanceOptions,
        t0: Instant,
    ) -> Searched {
        let mut open = Open {
            tree: Tree::new(),
            heap: BinaryHeap::new(),
            lower: best.distance,
        };
        open.heap.push(Entry::root());
        let mut stopped = None;
        let mut nodes = 0;
        while let Some(e) = open.heap.pop() {
            let tol = opts.rel_gap * best.distance.max(1.0);
            if e.lb >= best.distance - tol {
                open.lower = open.lower.min(e.lb);
                open.heap.clear();
                break;
            }
            stopped = limit_reached(opts, nodes, t0);
            if stopped.is_some() {
                open.heap.push(e);
                break;
            }
            nodes += 1;
            self.expand(s, &mut open, e, &mut best, tol);
        }
        let lower = open
            .heap
            .peek()
            .map_or(open.lower, |top| open.lower.min(top.lb));
        Searched {
            best,
            lower,
            stopped,
            nodes,
        }
    }

    /// Bounds the node `e`, closes it or queues its children, and improves
    /// the incumbent with whatever flip its relaxations point at. Internal
    /// nodes need only a valid bound; a node whose relaxation is exact is
    /// re-solved accurately for its witness.
    fn expand(&self, s: &Search, open: &mut Open, e: Entry, best: &mut Flip, tol: f64) {
        let assign = open.tree.assignment(e.node, self.net.width());
        let mut nb = s.bound(&assign, best.distance, tol, &e.inherited());
        if nb.sol.branch.is_none() {
            nb.sol = s.solve(&assign, nb.radius, 0.0, Finish::Exact, &nb.cuts);
        }
        let lb = nb.sol.lb.max(e.lb);
        if lb >= best.distance - tol {
            open.lower = open.lower.min(lb);
            return;
        }
        let mut candidate = s.verify(&nb.sol.delta);
        if let Some(q) = nb
            .quadratic
            .as_ref()
            .filter(|q| q.delta.norm() < best.distance)
        {
            candidate = Flip::nearer(candidate, s.verify(&q.delta));
        }
        if nb.sol.branch.is_none() {
            let leaf = Leaf {
                assign: &assign,
                cuts: &nb.cuts,
                radius: nb.radius,
            };
            candidate = self.leaf_witness(s, &leaf, &nb.sol.delta, lb, tol, candidate);
        }
        if let Some(c) = candidate.filter(|c| c.distance < best.distance) {
            *best = self.refine(s, c);
        }
        match nb.sol.branch {
            Some(neuron) => {
                let b = Branch {
                    node: e.node,
                    assign: &assign,
                    lb,
                    neuron,
                    quadratic: nb.quadratic,
                };
                open.branch(s, b, best.distance - tol)
            }
            // The relaxation is exact here: its optimum is this node's value.
            None => open.lower = open.lower.min(lb),
        }
    }
}

/// Most floats the queue's warm starts of the quadratic bound may hold
/// (32 M: 256 MB); beyond it children start cold.
const WARM_FLOATS: usize = 1 << 25;
