//! The active-set QP with *cap rows* eliminated by aggregation:
//!
//! ```text
//!   minimise ½ zᵀHz − gᵀz   subject to   z ≥ 0,   z_a ≤ c_a · z_m(a)   (a capped)
//! ```
//!
//! where every capped variable a has one master m(a), itself uncapped, and
//! c_a ≥ 0. The distance search's node duals have exactly this shape: each
//! helping neuron's multiplier is capped by the output row's,
//! α_j ≤ (|v_j|‖w_j‖/κ)·μ0.
//!
//! **Why aggregation.** A tight cap row is an equality between two
//! variables, z_a = c_a z_m. Carried as a working row of the general method
//! ([`super::qp_nonneg_with`]) it costs a KKT factorisation per iteration,
//! O(k³): 82% of the distance search's time at width 200. Eliminated, it
//! turns the master's column into the *group* column
//! p_m = e_m + Σ_{a tight} c_a e_a, and the problem stays bound-constrained
//! in the reduced variables y (z = P y). The Cholesky factor of PᵀHP is
//! updated as in the general method: a cap that becomes tight deletes the
//! dependent's column and replaces the master's (O(k²) each); a tight cap
//! whose multiplier turns negative does the reverse.
//!
//! **Optimality.** With ∇ = Hz − g, the minimiser of the reduced system is
//! optimal iff
//! - ∇_i ≥ 0 for every variable at 0 that could move alone (uncapped, or
//!   capped under a positive master);
//! - π_a = −∇_a ≥ 0 for every tight cap (its multiplier);
//! - ∇_m + Σ_a c_a·min(∇_a, 0) ≥ 0 for every master at 0: its dependents
//!   at 0 can move only with it, and those with ∇_a < 0 would.
//!
//! The most negative of these is released (Dantzig's rule); a master leaves
//! 0 together with the dependents that pull it. Every iterate is feasible
//! (tight dependents are set to c_a·z_m exactly), so even a run stopped by
//! its iteration limit returns a feasible z: all that the callers'
//! weak-duality bounds need.

use super::{lstsq, well_conditioned, Factor, Finish, QpSolution, TOL};
use nalgebra::{DMatrix, DVector};

/// The cap row z_a ≤ c·z_master of a capped variable a.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cap {
    pub master: usize,
    pub c: f64,
}

/// Solves min ½zᵀHz − gᵀz s.t. z ≥ 0 and z_a ≤ c_a·z_m(a) for every
/// `caps[a] = Some(Cap { master, c })` (masters uncapped, c ≥ 0). The
/// returned `mu[a]` is the multiplier of a's cap (0 for uncapped variables).
///
/// The method stops early, unconverged, once the objective reaches `floor`
/// (a branch-and-bound node whose bound already prunes it; pass
/// `f64::NEG_INFINITY` to solve to optimality), and when rounding makes the
/// objective rise (an unbounded problem: a singular PᵀHP with g off its
/// range), returning the best iterate.
///
/// # Panics
/// If a master is itself capped, or `caps` and H disagree in size: both
/// are errors of the calling code, not of its input.
pub fn qp_capped(
    h: &DMatrix<f64>,
    g: &DVector<f64>,
    caps: &[Option<Cap>],
    finish: Finish,
    floor: f64,
) -> QpSolution {
    let n = h.nrows();
    assert_eq!(caps.len(), n, "one cap entry per variable");
    let mut deps = vec![Vec::new(); n];
    for (a, cap) in caps.iter().enumerate() {
        if let Some(cap) = cap {
            assert!(
                caps[cap.master].is_none() && cap.master != a && cap.c >= 0.0,
                "variable {a}: a cap's master must be uncapped and its factor ≥ 0"
            );
            deps[cap.master].push(a);
        }
    }
    let hscale = h.diagonal().amax().max(f64::MIN_POSITIVE);
    let mut st = Capped {
        h,
        g,
        caps,
        deps,
        z: DVector::zeros(n),
        state: vec![State::Zero; n],
        members: vec![Vec::new(); n],
        factor: Factor::new(n, 1e-13 * hscale),
        diag: vec![0.0; n],
    };
    let (iterations, converged) = st.run(10 * n + 50, floor);
    if finish == Finish::Exact && converged {
        st.refine();
    }
    let grad = st.gradient();
    let mu = DVector::from_fn(n, |a, _| match caps[a] {
        Some(cap) if st.state[a] == State::Tight || st.state[cap.master] == State::Zero => {
            (-grad[a]).max(0.0)
        }
        _ => 0.0,
    });
    QpSolution {
        z: st.z,
        mu,
        iterations,
        converged,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At its bound 0.
    Zero,
    /// A column of its own in the factor (a master: with its group).
    Free,
    /// A dependent held at c_a·z_m by its cap, inside its master's group.
    Tight,
}

/// What blocks a step, or what was last released: a unit's bound or a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    Bound(usize),
    Cap(usize),
}

struct Capped<'a> {
    h: &'a DMatrix<f64>,
    g: &'a DVector<f64>,
    caps: &'a [Option<Cap>],
    /// The capped variables of each master.
    deps: Vec<Vec<usize>>,
    z: DVector<f64>,
    state: Vec<State>,
    /// The tight dependents of each free master (its group).
    members: Vec<Vec<usize>>,
    /// The factor of PᵀHP over the free units, in `factor.order`.
    factor: Factor,
    /// p_uᵀHp_u of each free unit (its pivot's scale).
    diag: Vec<f64>,
}

impl Capped<'_> {
    /// Active-set iterations until optimality (true) or `max_iter`.
    fn run(&mut self, max_iter: usize, floor: f64) -> (usize, bool) {
        let n = self.z.len();
        let mut best = (0.0f64, self.z.clone());
        let gscale = self.g.amax().max(f64::MIN_POSITIVE);
        // Lawson–Hanson's safeguard: a constraint released and immediately
        // blocking again (zero step) is barred until the iterate moves.
        let mut barred = vec![false; n];
        let mut released: Option<Move> = None;
        for it in 0..max_iter {
            let y = self.target();
            let (alpha, block) = self.step_length(&y);
            let moved = self.advance(&y, alpha);
            if moved > 1e-15 * (1.0 + self.z.amax()) {
                barred.fill(false);
            } else if let Some(b) = block.filter(|b| Some(*b) == released) {
                let (Move::Bound(i) | Move::Cap(i)) = b;
                barred[i] = true;
            }
            released = None;
            let optimal = match block {
                Some(Move::Bound(u)) => {
                    self.fix(u);
                    false
                }
                Some(Move::Cap(a)) => {
                    self.tighten(a);
                    false
                }
                None => {
                    let grad = self.gradient();
                    // ½zᵀHz − gᵀz = ½zᵀ∇ − ½gᵀz.
                    let f = 0.5 * (self.z.dot(&grad) - self.g.dot(&self.z));
                    if f > best.0 + 1e-8 * (1.0 + best.0.abs()) {
                        self.z = best.1;
                        return (it + 1, false);
                    }
                    if f <= floor {
                        return (it + 1, false);
                    }
                    best = (f, self.z.clone());
                    let worst = self.worst(&grad, &barred, gscale);
                    match worst {
                        Some(Move::Bound(i)) => self.release(i),
                        Some(Move::Cap(a)) => self.loosen(a),
                        None => {}
                    }
                    released = worst;
                    worst.is_none()
                }
            };
            if optimal {
                return (it + 1, true);
            }
        }
        (max_iter, false)
    }

    fn cap(&self, a: usize) -> f64 {
        self.caps[a].map_or(0.0, |cap| cap.c)
    }

    /// The unit u's column of P: e_u plus its group.
    fn column(&self, u: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        std::iter::once((u, 1.0)).chain(self.members[u].iter().map(|&a| (a, self.cap(a))))
    }

    /// H p_u (dense, n entries).
    fn h_column(&self, u: usize) -> DVector<f64> {
        let mut hp = DVector::zeros(self.z.len());
        for (p, w) in self.column(u) {
            hp.axpy(w, &self.h.column(p), 1.0);
        }
        hp
    }

    /// Appends unit u to the factor: its entries p_vᵀ H p_u against the
    /// units already there, and p_uᵀ H p_u.
    fn push(&mut self, u: usize) {
        let hp = self.h_column(u);
        let dot = |v: usize| -> f64 { self.column(v).map(|(q, w)| w * hp[q]).sum() };
        let row: Vec<f64> = self.factor.order.iter().map(|&v| dot(v)).collect();
        let diag = dot(u);
        self.diag[u] = diag;
        self.factor.append(u, row, diag, self.z.len());
    }

    /// The reduced right-hand side Pᵀg in the factor's order.
    fn reduced_g(&self) -> Vec<f64> {
        self.factor
            .order
            .iter()
            .map(|&u| self.column(u).map(|(p, w)| w * self.g[p]).sum())
            .collect()
    }

    /// The minimiser of the reduced problem on the free units: through the
    /// updated factor while every pivot keeps a fair share of its diagonal,
    /// else (numerically dependent columns, where updates lose every digit)
    /// through a fresh factorisation of the ridged PᵀHP + ρI.
    fn target(&self) -> Vec<f64> {
        let order = &self.factor.order;
        let conditioned = order.iter().enumerate().all(|(k, &u)| {
            let p = self.factor.l[(k, k)].powi(2);
            p > 1e-10 * self.diag[u] && p > 100.0 * self.factor.ridge
        });
        if conditioned {
            let mut y = self.reduced_g();
            self.factor.lower(&mut y);
            self.factor.upper(&mut y);
            return y;
        }
        let mut hr = self.reduced_h();
        for k in 0..order.len() {
            hr[(k, k)] += self.factor.ridge;
        }
        let gr = DVector::from_vec(self.reduced_g());
        let y = match hr.clone().cholesky() {
            Some(ch) => ch.solve(&gr),
            None => lstsq(&hr, &gr),
        };
        y.as_slice().to_vec()
    }

    /// PᵀHP over the free units, in the factor's order.
    fn reduced_h(&self) -> DMatrix<f64> {
        let order = &self.factor.order;
        let hp: Vec<DVector<f64>> = order.iter().map(|&u| self.h_column(u)).collect();
        DMatrix::from_fn(order.len(), order.len(), |r, c| {
            self.column(order[r])
                .map(|(q, w)| w * hp[c][q])
                .sum::<f64>()
        })
    }

    /// The largest step in [0, 1] toward `y` keeping every unit ≥ 0 and
    /// every free capped variable under its cap, and what blocks it.
    fn step_length(&self, y: &[f64]) -> (f64, Option<Move>) {
        let order = &self.factor.order;
        let ymax = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        // A target within rounding of 0 is 0 (the move clamps it).
        let ztol = 1e-14 * (1.0 + self.z.amax() + ymax);
        let mut dz = vec![0.0; self.z.len()];
        let mut alpha = 1.0;
        let mut block = None;
        for (t, &u) in order.iter().enumerate() {
            let p = y[t] - self.z[u];
            dz[u] = p;
            if y[t] < -ztol && p < 0.0 && self.z[u] / -p < alpha {
                alpha = self.z[u] / -p;
                block = Some(Move::Bound(u));
            }
        }
        for &a in order {
            let Some(cap) = self.caps[a] else { continue };
            let ds = cap.c * dz[cap.master] - dz[a];
            if -ds > 1e-14 * (dz[a].abs() + (cap.c * dz[cap.master]).abs()) {
                let slack = (cap.c * self.z[cap.master] - self.z[a]).max(0.0);
                if slack / -ds < alpha {
                    alpha = slack / -ds;
                    block = Some(Move::Cap(a));
                }
            }
        }
        (alpha, block)
    }

    /// Moves a fraction `alpha` toward `y`, exactly feasible; returns the
    /// largest change of a unit.
    fn advance(&mut self, y: &[f64], alpha: f64) -> f64 {
        let mut moved = 0.0f64;
        for (t, &u) in self.factor.order.iter().enumerate() {
            let dz = alpha * (y[t] - self.z[u]);
            moved = moved.max(dz.abs());
            self.z[u] = (self.z[u] + dz).max(0.0);
        }
        for t in 0..self.factor.order.len() {
            let u = self.factor.order[t];
            for &a in &self.members[u] {
                self.z[a] = self.cap(a) * self.z[u];
            }
            if let Some(cap) = self.caps[u] {
                self.z[u] = self.z[u].min(cap.c * self.z[cap.master]);
            }
        }
        moved
    }

    /// ½zᵀHz − gᵀz.
    fn objective(&self, z: &DVector<f64>) -> f64 {
        0.5 * z.dot(&(self.h * z)) - self.g.dot(z)
    }

    /// ∇ = Hz − g, over the nonzero entries of z.
    fn gradient(&self) -> DVector<f64> {
        let mut grad = -self.g;
        for (i, &zi) in self.z.iter().enumerate().filter(|(_, &zi)| zi != 0.0) {
            grad.axpy(zi, &self.h.column(i), 1.0);
        }
        grad
    }

    /// The most violated optimality condition (see the module doc), if any
    /// is violated by more than the tolerance: `Bound(i)` releases variable
    /// i (a master with its pulling dependents), `Cap(a)` loosens a tight cap.
    fn worst(&self, grad: &DVector<f64>, barred: &[bool], gscale: f64) -> Option<Move> {
        let mut best: Option<(f64, Move)> = None;
        for i in (0..self.z.len()).filter(|&i| !barred[i]) {
            let candidate = match (self.state[i], self.caps[i]) {
                (State::Tight, _) => Some((-grad[i], Move::Cap(i))),
                (State::Zero, Some(cap)) => (self.state[cap.master] == State::Free && cap.c > 0.0)
                    .then_some((grad[i], Move::Bound(i))),
                (State::Zero, None) => {
                    let pull: f64 = self.pulling(i, grad).map(|a| self.cap(a) * grad[a]).sum();
                    Some((grad[i] + pull, Move::Bound(i)))
                }
                (State::Free, _) => None,
            };
            if let Some((v, m)) = candidate {
                if v < -TOL * gscale && best.is_none_or(|(b, _)| v < b) {
                    best = Some((v, m));
                }
            }
        }
        best.map(|(_, m)| m)
    }

    /// The dependents of master m at 0 that would rise with it (∇_a < 0).
    fn pulling<'b>(&'b self, m: usize, grad: &'b DVector<f64>) -> impl Iterator<Item = usize> + 'b {
        self.deps[m]
            .iter()
            .copied()
            .filter(move |&a| self.state[a] == State::Zero && self.cap(a) > 0.0 && grad[a] < 0.0)
    }

    /// Frees variable i from its bound (a master with its pulling dependents).
    fn release(&mut self, i: usize) {
        if self.caps[i].is_none() {
            let grad = self.gradient();
            let pull: Vec<usize> = self.pulling(i, &grad).collect();
            for &a in &pull {
                self.state[a] = State::Tight;
            }
            self.members[i] = pull;
        }
        self.state[i] = State::Free;
        self.push(i);
    }

    /// Unit u hit 0: it leaves the factor with its group; free dependents
    /// of a master at 0 are held at 0 by their caps.
    fn fix(&mut self, u: usize) {
        self.factor.remove(u);
        self.state[u] = State::Zero;
        self.z[u] = 0.0;
        for a in std::mem::take(&mut self.members[u]) {
            self.state[a] = State::Zero;
            self.z[a] = 0.0;
        }
        for t in 0..self.deps[u].len() {
            let a = self.deps[u][t];
            if self.state[a] == State::Free {
                self.factor.remove(a);
                self.state[a] = State::Zero;
                self.z[a] = 0.0;
            }
        }
    }

    /// The free variable a reached its cap: it joins its master's group.
    fn tighten(&mut self, a: usize) {
        let Some(cap) = self.caps[a] else { return };
        self.factor.remove(a);
        if self.state[cap.master] != State::Free {
            self.state[a] = State::Zero;
            self.z[a] = 0.0;
            return;
        }
        self.state[a] = State::Tight;
        self.members[cap.master].push(a);
        self.z[a] = cap.c * self.z[cap.master];
        self.factor.remove(cap.master);
        self.push(cap.master);
    }

    /// The tight cap of a has a negative multiplier: a leaves the group.
    fn loosen(&mut self, a: usize) {
        let Some(cap) = self.caps[a] else { return };
        self.members[cap.master].retain(|&x| x != a);
        self.state[a] = State::Free;
        self.factor.remove(cap.master);
        self.push(cap.master);
        self.push(a);
    }

    /// Re-solves the final reduced system from a fresh, ridge-free
    /// factorisation (SVD least squares if PᵀHP is singular); adopted only
    /// if the result stays feasible and does not raise the objective.
    fn refine(&mut self) {
        let order = self.factor.order.clone();
        let k = order.len();
        if k == 0 {
            return;
        }
        let hr = self.reduced_h();
        let gr = DVector::from_vec(self.reduced_g());
        let y = match hr.clone().cholesky().filter(|ch| well_conditioned(ch, &hr)) {
            Some(ch) => ch.solve(&gr),
            None => lstsq(&hr, &gr),
        };
        let scale = 1e-12 * (1.0 + y.amax());
        let mut cand = self.z.clone();
        for (t, &u) in order.iter().enumerate() {
            cand[u] = y[t].max(0.0);
            for &a in &self.members[u] {
                cand[a] = self.cap(a) * cand[u];
            }
        }
        let within_caps = order
            .iter()
            .all(|&a| self.caps[a].is_none_or(|cap| cand[a] <= cap.c * cand[cap.master] + scale));
        if y.iter().all(|&v| v >= -scale && v.is_finite()) && within_caps {
            for &a in &order {
                if let Some(cap) = self.caps[a] {
                    cand[a] = cand[a].min(cap.c * cand[cap.master]);
                }
            }
            // An unbounded problem (a singular PᵀHP and g off its range)
            // has no minimiser to refine to: the iterate, however large,
            // stands unless the re-solve does at least as well.
            if self.objective(&cand) <= self.objective(&self.z) {
                self.z = cand;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::qp_nonneg;
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// ½zᵀHz − gᵀz.
    fn objective(h: &DMatrix<f64>, g: &DVector<f64>, z: &DVector<f64>) -> f64 {
        0.5 * z.dot(&(h * z)) - g.dot(z)
    }

    /// A random instance shaped like a distance node's dual: variable 0
    /// the master, `nc` capped variables, the rest uncapped; H a Gram
    /// matrix of rank ≤ `rank` (so often singular), with duplicated columns,
    /// and g in its range.
    fn instance(rng: &mut ChaCha8Rng) -> (DMatrix<f64>, DVector<f64>, Vec<Option<Cap>>) {
        let n = rng.gen_range(1..14);
        let rank = rng.gen_range(1..=n + 2);
        let mut m = DMatrix::from_fn(rank, n, |_, _| rng.gen_range(-1.0..1.0));
        if n > 2 && rng.gen_bool(0.3) {
            let col = m.column(1).into_owned();
            m.set_column(n - 1, &col);
        }
        let h = m.transpose() * &m;
        // g in the range of H keeps the problem bounded: f ≥ −½‖f‖².
        let f = DVector::from_fn(rank, |_, _| rng.gen_range(-1.0..1.0));
        let g = m.transpose() * f;
        let nc = rng.gen_range(0..n);
        let caps = (0..n)
            .map(|a| {
                (a >= 1 && a <= nc).then(|| Cap {
                    master: 0,
                    c: rng.gen_range(0.0..2.0),
                })
            })
            .collect();
        (h, g, caps)
    }

    /// The same constraints as rows z_a − c z_m ≤ 0 for [`qp_nonneg`].
    fn as_rows(caps: &[Option<Cap>]) -> DMatrix<f64> {
        let capped: Vec<(usize, Cap)> = caps
            .iter()
            .enumerate()
            .filter_map(|(a, c)| c.map(|c| (a, c)))
            .collect();
        let mut a = DMatrix::zeros(capped.len(), caps.len());
        for (r, (i, cap)) in capped.iter().enumerate() {
            a[(r, *i)] = 1.0;
            a[(r, cap.master)] -= cap.c;
        }
        a
    }

    /// The KKT residual of z: min ‖∇ + Σ π_a (e_a − c_a e_m) − Σ ν_i e_i‖
    /// over π, ν ≥ 0 on the caps and bounds tight at z (within `tol`), by
    /// Lawson–Hanson NNLS: 0 exactly when z is optimal (the problem is convex).
    fn kkt_residual(
        h: &DMatrix<f64>,
        g: &DVector<f64>,
        caps: &[Option<Cap>],
        z: &DVector<f64>,
        tol: f64,
    ) -> f64 {
        let n = z.len();
        let grad = h * z - g;
        let mut cols: Vec<DVector<f64>> = Vec::new();
        for (a, cap) in caps.iter().enumerate() {
            if let Some(cap) = cap.filter(|cap| z[a] >= cap.c * z[cap.master] - tol) {
                let mut e = DVector::zeros(n);
                e[a] = 1.0;
                e[cap.master] -= cap.c;
                cols.push(e);
            }
        }
        for i in (0..n).filter(|&i| z[i] <= tol) {
            let mut e = DVector::zeros(n);
            e[i] = -1.0;
            cols.push(e);
        }
        if cols.is_empty() {
            return grad.norm();
        }
        let e = DMatrix::from_columns(&cols);
        let u = super::super::nnls(&e, &-&grad);
        (&grad + e * u).norm()
    }

    #[test]
    fn aggregation_satisfies_kkt_and_matches_the_general_rows() {
        // Oracles: the KKT residual (independent of either method), and the
        // general method with the caps as rows where it converges (its
        // degenerate start at z = 0 makes it cycle on some instances; the
        // aggregated method must then do at least as well).
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut compared = 0;
        for case in 0..2000 {
            let (h, g, caps) = instance(&mut rng);
            let a = as_rows(&caps);
            let rows = qp_nonneg(&h, &g, &a, &DVector::zeros(a.nrows()));
            let agg = qp_capped(&h, &g, &caps, Finish::Exact, f64::NEG_INFINITY);
            assert!(agg.converged, "case {case}");
            assert!(agg.z.iter().all(|&v| v >= 0.0));
            for (i, cap) in caps.iter().enumerate() {
                if let Some(cap) = cap {
                    assert!(
                        agg.z[i] <= cap.c * agg.z[cap.master],
                        "case {case}: cap {i}"
                    );
                }
            }
            let scale = 1.0 + g.norm() * (1.0 + agg.z.norm());
            let res = kkt_residual(&h, &g, &caps, &agg.z, 1e-10 * (1.0 + agg.z.amax()));
            assert!(res <= 1e-8 * scale, "case {case}: KKT residual {res}");
            let (fa, fr) = (objective(&h, &g, &agg.z), objective(&h, &g, &rows.z));
            assert!(fa <= fr + 1e-9 * scale, "case {case}: {fa} vs {fr}");
            if rows.converged {
                compared += 1;
                assert!((fa - fr).abs() <= 1e-9 * scale, "case {case}: {fa} vs {fr}");
            }
            let fast = qp_capped(&h, &g, &caps, Finish::Fast, f64::NEG_INFINITY);
            let ff = objective(&h, &g, &fast.z);
            assert!(
                (ff - fa).abs() <= 1e-9 * scale,
                "case {case}: fast {ff} vs {fa}"
            );
        }
        assert!(compared > 1500, "only {compared} general solves converged");
    }

    #[test]
    fn a_tight_cap_carries_its_multiplier() {
        // min ½(z0² + z1²) − 2 z1 s.t. z1 ≤ z0: optimum z0 = z1 = 1, the cap's
        // multiplier π = 1 (∇_1 = z1 − 2 = −1 = −π).
        let h = DMatrix::identity(2, 2);
        let g = DVector::from_vec(vec![0.0, 2.0]);
        let caps = [None, Some(Cap { master: 0, c: 1.0 })];
        let s = qp_capped(&h, &g, &caps, Finish::Exact, f64::NEG_INFINITY);
        assert!((s.z[0] - 1.0).abs() < 1e-14 && (s.z[1] - 1.0).abs() < 1e-14);
        assert!((s.mu[1] - 1.0).abs() < 1e-14 && s.mu[0] == 0.0);
    }
}
