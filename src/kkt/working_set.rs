//! The certificate for many training points: column generation over the
//! points, with exact pricing of every column.
//!
//! The certificate problem min ‖f − Ez‖ over the feasible z (mod.rs) has one
//! column per training point (and per ambiguous pair); its N×N Gram does not
//! fit once n reaches the tens of thousands. But only a few columns carry
//! weight at the optimum: the complementarity row makes λ_i expensive for
//! every point whose margin is not (nearly) minimal. So the problem is solved
//! on a working set S of points (their λ's and γ's; every other variable
//! fixed at 0), which gives a feasible z and a residual r = f − E_S z_S, and
//! then *priced* over all n points: the optimality conditions of the full
//! problem are exactly dual feasibility of (u, μ),
//!
//! ```text
//!   (Eᵀu)_k ≤ (Aᵀμ)_k   for every variable k,
//! ```
//!
//! (u = r for ℓ2, the LP's row duals for ℓ∞), and Eᵀu over all columns costs
//! one n×d×m product streamed through the per-neuron structure, not the
//! n×n Gram. Points whose columns violate it enter S (the most violated
//! first, by the steepest-edge score excess/‖E_k‖, at most |S| of them per
//! round so S at most doubles), and the restricted problem is solved again.
//! When nothing outside S violates, the restricted optimum is the full one.
//!
//! The ambiguous pairs are generated the same way, one by one: a pair's
//! γ_a ≤ λ_i row makes the restricted QP larger and degenerate (it is tight
//! at 0), and only the pairs of support points can matter. A pair outside
//! the working set has γ_a = 0 and a free multiplier μ_a ≥ 0 (its row's
//! right-hand side is 0), which the pricing completes optimally (see
//! [`KktSystem::violations`]); a pair enters with its point when that point's
//! λ entry is violated and the pair's completed μ_a is positive.
//!
//! The bracket is certified exactly as for the full Gram: `upper` from the
//! feasible z, `lower` from (u, μ) repaired onto the *full* dual-feasible set
//! (the repair needs Gram blocks only for the violated columns). If the
//! round limit stops the generation early, the bracket is still valid, only
//! wider.

use super::system::{KktSystem, Priced, Solved};
use super::{Certificate, CertifyOptions, Norm};
use crate::error::Result;
use nalgebra::DVector;
use serde::Serialize;

/// Most column-generation rounds.
const MAX_ROUNDS: usize = 40;

/// What the column generation did.
#[derive(Clone, Debug, Serialize)]
pub struct WorkingSetStats {
    /// Points in the final working set.
    pub points: usize,
    /// Ambiguous pairs in the final working set.
    pub pairs: usize,
    /// Restricted solves.
    pub rounds: usize,
    /// False if the round limit stopped it with columns still violated
    /// (the bracket is valid, possibly wider than the full optimum's).
    pub converged: bool,
}

/// Certifies `full` by column generation over its points and pairs.
pub(super) fn certify(
    full: &KktSystem,
    norm: Norm,
    initial: usize,
    opts: &CertifyOptions,
    t0: std::time::Instant,
) -> Result<Certificate> {
    let mut set = WorkingSet::initial(full, initial.max(1));
    for round in 1.. {
        crate::io::resources::ensure_fits(
            &format!(
                "the certificate's working set of {} points",
                set.points.len()
            ),
            8.0 * 6.0 * (set.points.len() as f64).powi(2),
            "certify a subset of the training points, or run on a machine with more memory",
        )?;
        let (sub, map) = full.restrict(&set.points, &set.pairs);
        let solved = lift(full, &sub, &map, sub.solve(norm, &sub.gram())?);
        let priced = full.violations(&solved.u, &solved.mu);
        let grew = set.grow(full, &solved.z, &priced, initial.max(1));
        if !grew || round == MAX_ROUNDS {
            let stats = WorkingSetStats {
                points: set.points.len(),
                pairs: set.pairs.len(),
                rounds: round,
                converged: !grew,
            };
            let block = |vars: &[usize]| full.gram_block(vars);
            let mut cert = full.finish(norm, solved, &block, Some(priced), opts, t0);
            cert.working_set = Some(stats);
            return Ok(cert);
        }
    }
    unreachable!("the loop returns at MAX_ROUNDS")
}

/// The variables of the restricted problem: points (their λ) and ambiguous
/// pairs (their γ, each with its point), sorted.
struct WorkingSet {
    points: Vec<usize>,
    pairs: Vec<usize>,
}

impl WorkingSet {
    /// The `count` points of smallest margin, no pairs.
    fn initial(full: &KktSystem, count: usize) -> Self {
        let mut order: Vec<usize> = (0..full.n()).collect();
        order.sort_by(|&a, &b| full.margins[a].total_cmp(&full.margins[b]));
        order.truncate(count);
        order.sort_unstable();
        Self {
            points: order,
            pairs: Vec::new(),
        }
    }

    /// From the pricing of every column at the restricted optimum z: drops
    /// the variables at 0 (the optimum stays feasible, so the next
    /// restricted optimum is no worse, and strictly better once a violated
    /// column enters) and adds the most violated points (steepest edge, at
    /// most max(`floor`, |support|) of them) with their pairs whose completed
    /// multiplier is positive. False when nothing entered: the restricted
    /// optimum is the full one (what is left is rounding, for the
    /// certificate's dual repair), and the set is left as it was.
    fn grow(
        &mut self,
        full: &KktSystem,
        z: &DVector<f64>,
        (mu, viol): &Priced,
        floor: usize,
    ) -> bool {
        let n = full.n();
        let mut in_points = vec![false; n];
        self.points.iter().for_each(|&i| in_points[i] = true);
        let mut in_pairs = vec![false; full.amb.len()];
        self.pairs.iter().for_each(|&t| in_pairs[t] = true);
        let r0 = full.amb_row0();
        let mut cand: Vec<(f64, usize, Vec<usize>)> = viol
            .iter()
            .filter(|&&(k, _)| k < n)
            .filter_map(|&(i, excess)| {
                let lo = full.amb.partition_point(|&(p, _)| p < i);
                let hi = full.amb.partition_point(|&(p, _)| p <= i);
                let pairs: Vec<usize> = (lo..hi)
                    .filter(|&t| !in_pairs[t] && mu[r0 + t] > 0.0)
                    .collect();
                let score = excess / full.column_norm(i).max(f64::MIN_POSITIVE);
                (!in_points[i] || !pairs.is_empty()).then_some((score, i, pairs))
            })
            .collect();
        if cand.is_empty() {
            return false;
        }
        self.pairs.retain(|&t| z[n + t] > 0.0);
        let mut has_pair = vec![false; n];
        self.pairs
            .iter()
            .for_each(|&t| has_pair[full.amb[t].0] = true);
        self.points.retain(|&i| z[i] > 0.0 || has_pair[i]);
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        cand.truncate(self.points.len().max(floor));
        for (_, i, pairs) in &cand {
            self.points.push(*i);
            self.pairs.extend(pairs);
        }
        self.points.sort_unstable();
        self.points.dedup();
        self.pairs.sort_unstable();
        true
    }
}

/// A restricted solve as a point of the full problem: z and μ scattered to
/// the full indices (r and u live in θ-space and are unchanged).
fn lift(full: &KktSystem, sub: &KktSystem, map: &[usize], solved: Solved) -> Solved {
    let mut z = DVector::zeros(full.nvars());
    map.iter()
        .enumerate()
        .for_each(|(s, &k)| z[k] = solved.z[s]);
    let mut mu = DVector::zeros(full.nrows());
    if full.amb_row0() == 1 {
        mu[0] = solved.mu[0];
    }
    let (n, ns) = (full.n(), sub.n());
    for t in 0..sub.amb.len() {
        mu[full.amb_row0() + map[ns + t] - n] = solved.mu[sub.amb_row0() + t];
    }
    Solved { z, mu, ..solved }
}
