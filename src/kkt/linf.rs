//! The ℓ∞ certificate, min t s.t. |f_k − E_k z| ≤ t over the p = m(d+2)
//! parameters, by cutting planes: the LP only ever sees the rows of E that
//! the residual has shown to matter (at most a few times N), never the 2p
//! rows of the naive primal. Each restricted LP is solved by Clarabel
//! through good_lp; its duals (u on the rows, μ on A) feed the certified
//! lower bound, which re-checks them, so the interior-point tolerance only
//! widens the bracket, never falsifies it.

use super::system::{KktSystem, Params, Solved};
use crate::error::{Error, Result};
use good_lp::{
    clarabel, variable, DualValues, Expression, ProblemVariables, Solution, SolutionWithDual,
    SolverModel, Variable,
};
use nalgebra::{DMatrix, DVector};

/// Relative violation below which the cutting planes stop adding rows.
const LINF_SLACK: f64 = 1e-8;

/// Most rounds of the cutting-plane loop.
const MAX_ROUNDS: usize = 60;

impl KktSystem<'_> {
    /// Row k of E (the coefficients of z in parameter k).
    fn row(&self, k: usize) -> Vec<f64> {
        let (n, m, d) = (self.n(), self.theta.v.len(), self.x.ncols());
        let mut out = vec![0.0; self.nvars()];
        if k >= m * d + m {
            let j = k - m * d - m;
            for (i, o) in out.iter_mut().enumerate().take(n) {
                *o = self.y[i] * self.relu_u(i, j);
            }
            return out;
        }
        let (j, feat) = if k < m * d {
            (k / d, Some(k % d))
        } else {
            (k - m * d, None)
        };
        let xv = |i: usize| feat.map_or(1.0, |c| self.x[(i, c)]);
        for (i, o) in out.iter_mut().enumerate().take(n) {
            *o = self.strict_coef(i, j) * xv(i);
        }
        let vj = self.theta.v[j];
        for (t, &(i, j2)) in self.amb.iter().enumerate() {
            if j2 == j {
                out[n + t] = self.y[i] * vj * xv(i);
            }
        }
        out
    }

    fn expr(coeffs: &[f64], vars: &[Variable]) -> Expression {
        let mut e = Expression::with_capacity(coeffs.len());
        for (&c, &v) in coeffs.iter().zip(vars) {
            if c != 0.0 {
                e.add_mul(c, v);
            }
        }
        e
    }

    /// The restricted primal LP: min t s.t. |f_k − E_k z| ≤ t (k ∈ rows),
    /// A z ≤ b. Returns z and the multipliers (u on the rows, μ on A).
    fn restricted_lp(&self, rows: &[usize]) -> Result<(DVector<f64>, Params, DVector<f64>)> {
        let mut pv = ProblemVariables::new();
        let t = pv.add(variable().min(0.0));
        let zs = pv.add_vector(variable().min(0.0), self.nvars());
        let mut model = pv.minimise(t).using(clarabel);
        model
            .settings()
            .tol_gap_abs(1e-12)
            .tol_gap_rel(1e-12)
            .tol_feas(1e-12)
            .verbose(false);
        let mut plus = Vec::with_capacity(rows.len());
        let mut minus = Vec::with_capacity(rows.len());
        for &k in rows {
            let e = Self::expr(&self.row(k), &zs);
            let fk = self.theta.get(k);
            plus.push(model.add_constraint((e.clone() + t).geq(fk)));
            minus.push(model.add_constraint((Expression::from(t) - e).geq(-fk)));
        }
        let (a, b) = self.constraint_matrix();
        let arows: Vec<_> = (0..a.nrows())
            .map(|r| {
                let coeffs: Vec<f64> = a.row(r).iter().copied().collect();
                model.add_constraint(Self::expr(&coeffs, &zs).leq(b[r]))
            })
            .collect();
        let mut sol = model
            .solve()
            .map_err(|e| Error::Numerical(format!("ℓ∞ certificate LP failed: {e}")))?;
        let z = DVector::from_iterator(zs.len(), zs.iter().map(|&v| sol.value(v).max(0.0)));
        let dual = sol.compute_dual();
        let mut u = self.theta.zeros_like();
        for (t, &k) in rows.iter().enumerate() {
            u.set(
                k,
                dual.dual(plus[t].clone()).abs() - dual.dual(minus[t].clone()).abs(),
            );
        }
        let mu = DVector::from_iterator(
            arows.len(),
            arows.iter().map(|c| dual.dual(c.clone()).abs()),
        );
        Ok((z, u, mu))
    }

    /// Flat indices of the `count` largest |r_k| above `level`.
    fn worst_rows(r: &Params, level: f64, count: usize, taken: &[bool]) -> Vec<usize> {
        let mut cand: Vec<(f64, usize)> = (0..r.len())
            .filter(|&k| !taken[k])
            .map(|k| (r.get(k).abs(), k))
            .filter(|(v, _)| *v > level)
            .collect();
        cand.sort_by(|a, b| b.0.total_cmp(&a.0));
        cand.into_iter().take(count).map(|(_, k)| k).collect()
    }

    /// The ℓ∞ solve on the formed Gram system `h` (whose ℓ2 optimum seeds
    /// the rows).
    pub(super) fn solve_linf(&self, h: &DMatrix<f64>) -> Result<Solved> {
        let p = self.theta.len();
        let batch = 2 * self.nvars() + 2;
        let mut taken = vec![false; p];
        // Seed the rows with the ℓ2 optimum's largest residuals: the ℓ∞
        // optimum is usually tight on many of them, which saves rounds.
        let l2 = self.solve_l2(h);
        let mut rows = Self::worst_rows(&l2.r, -1.0, 4 * batch, &taken);
        rows.iter().for_each(|&k| taken[k] = true);
        let mut rounds = 0;
        loop {
            rounds += 1;
            let (mut z, u, mu) = self.restricted_lp(&rows)?;
            self.repair_primal(&mut z);
            let r = self.theta.sub(&self.apply(&z));
            let restricted = rows.iter().map(|&k| r.get(k).abs()).fold(0.0, f64::max);
            // Rows violated by less than LINF_SLACK (relative) are not worth
            // a round: the bracket stays certified, its gap at most that much.
            let level = restricted * (1.0 + LINF_SLACK) + 1e-300;
            let new = Self::worst_rows(&r, level, batch, &taken);
            if new.is_empty() || rounds >= MAX_ROUNDS {
                return Ok(Solved {
                    z,
                    r,
                    u,
                    mu,
                    iterations: rounds,
                });
            }
            new.iter().for_each(|&k| taken[k] = true);
            rows.extend(new);
        }
    }
}
