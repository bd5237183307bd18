//! Witnesses: flips confirmed by a fresh forward pass, found along rays,
//! at exact leaves (tightened rows, the region's LDP, the segment toward
//! the piece's interior), and by enumerating the pieces when no attack
//! finds one.

use super::node::{Assign, DualCut, Role, Search};
use super::{DistanceSolver, Flip};
use crate::linalg::Finish;
use nalgebra::{DMatrix, DVector};

impl Search<'_> {
    /// A verified flip point near x0 + δ: δ itself, pushed outward against
    /// rounding, or else the first flip on the ray through δ.
    pub(super) fn verify(&self, delta: &DVector<f64>) -> Option<Flip> {
        [0.0, 1e-12, 1e-10]
            .iter()
            .find_map(|&push| {
                let x = &self.x0 + delta * (1.0 + push);
                (self.out(&x) <= 0.0).then(|| Flip::to(&self.x0, x))
            })
            .or_else(|| self.ray(delta))
    }

    /// First verified flip along the ray x0 + r·e (e ≠ 0).
    pub(super) fn ray(&self, e: &DVector<f64>) -> Option<Flip> {
        let n = e.norm();
        if n == 0.0 {
            return None;
        }
        let e = e / n;
        let r = crate::model::ray::critical_radius(self.net, &self.x0, self.s0, &(-&e * self.s0))?;
        [0.0, 1e-12, 1e-10, 1e-8].iter().find_map(|&push| {
            let x = &self.x0 + &e * (r * (1.0 + push));
            (self.out(&x) <= 0.0).then(|| Flip::to(&self.x0, x))
        })
    }
}

/// A node whose relaxation is exact on the ball of `radius` cut by `cuts`.
pub(super) struct Leaf<'a> {
    pub(super) assign: &'a Assign,
    pub(super) cuts: &'a [DualCut],
    pub(super) radius: f64,
}

impl DistanceSolver<'_> {
    /// A verified flip near the optimum δ (bound `lb`) of a node whose
    /// relaxation is exact: the optimum touches the boundary, so rounding
    /// can put δ on the wrong side. Tries the rows tightened by 1e-12..1e-10
    /// relative, the region's LDP, then the segment toward the piece's
    /// interior, keeping the nearest verified point (`candidate` to start).
    pub(super) fn leaf_witness(
        &self,
        s: &Search,
        leaf: &Leaf,
        delta: &DVector<f64>,
        lb: f64,
        tol: f64,
        mut candidate: Option<Flip>,
    ) -> Option<Flip> {
        let near = |c: &Option<Flip>| c.as_ref().is_some_and(|c| c.distance <= lb + tol / 2.0);
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
            candidate = Flip::nearer(candidate, s.verify(&tight.delta));
        }
        if !near(&candidate) {
            candidate = Flip::nearer(candidate, self.region_witness(s, delta, lb));
        }
        if !near(&candidate) {
            candidate = Flip::nearer(candidate, self.toward_interior(s, leaf.assign, delta));
        }
        candidate
    }

    /// When the attacks found nothing: decide every convex piece (one per
    /// state of the hurting neurons) by an LP feasibility problem. A feasible
    /// piece yields an incumbent; all pieces infeasible proves that no input
    /// of the other sign exists. Exponential in the number of hurting
    /// neurons, so capped at [`MAX_ENUMERATED`].
    pub(super) fn complete_seed(&self, s: &Search) -> std::result::Result<Option<Flip>, String> {
        let hurt: Vec<usize> = (0..s.roles.len())
            .filter(|&j| s.roles[j] == Role::Hurt)
            .collect();
        if hurt.len() > MAX_ENUMERATED {
            return Err(format!(
                "no flip found by the seeding attacks, and {} hurting neurons are too many to enumerate (max {MAX_ENUMERATED})",
                hurt.len()
            ));
        }
        let mut best: Option<Flip> = None;
        let mut unverified = false;
        for mask in 0u64..(1u64 << hurt.len()) {
            let mut assign: Assign = vec![None; s.roles.len()];
            for (t, &j) in hurt.iter().enumerate() {
                assign[j] = Some(mask >> t & 1 == 1);
            }
            if let Some(x) = self.piece_point(s, &assign) {
                let delta = &x - &s.x0;
                match s.verify(&delta) {
                    Some(c) if best.as_ref().is_none_or(|b| c.distance < b.distance) => {
                        best = Some(c)
                    }
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
    pub(super) fn region_witness(
        &self,
        s: &Search,
        delta: &DVector<f64>,
        radius: f64,
    ) -> Option<Flip> {
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
    pub(super) fn toward_interior(
        &self,
        s: &Search,
        assign: &Assign,
        delta: &DVector<f64>,
    ) -> Option<Flip> {
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
                (s.out(&x) <= 0.0).then(|| Flip {
                    distance: d.norm(),
                    point: x,
                })
            })
    }

    /// A point of the convex piece with the hurting states `assign`, by LP,
    /// as deep inside the sign constraints as possible (a distance margin s ≤ 1), so
    /// that a forward pass can confirm it. `None` when the piece is empty.
    pub(super) fn piece_point(&self, s: &Search, assign: &Assign) -> Option<DVector<f64>> {
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

/// Most hurting neurons [`DistanceSolver`] enumerates when no attack finds a flip.
pub const MAX_ENUMERATED: usize = 14;
