//! The capped QP's singular faces: where a pivot of the factor of PᵀHP is
//! clamped, the face has a direction of (nearly) zero curvature, and the
//! step follows it to a bound instead of trusting a ridged solve.

use super::Capped;
use crate::linalg::CLAMPED_PIVOT;
use nalgebra::DVector;

/// The direction of (nearly) zero curvature of the k-th free unit, whose
/// pivot is clamped: d = e_k − Σ_t c_t e_t in reduced coordinates, Pd, and
/// the objective's slope ∇ᵀPd and curvature (Pd)ᵀH(Pd) along it.
pub(super) struct NullDirection {
    pub(super) k: usize,
    d: Vec<f64>,
    pd: DVector<f64>,
    slope: f64,
    curvature: f64,
}

impl Capped<'_> {
    /// Where a free unit's column (nearly) depends on those freed before it
    /// (the k-th pivot is clamped), PᵀHP is singular to working precision
    /// and the face has a direction of (nearly) zero curvature
    /// d = e_k − Σ_t c_t e_t, c = L₁₁⁻ᵀ l₂₁ (p_k's expansion in the earlier
    /// units). A ridged solve would aim ~1/ρ away in a direction rounding
    /// decides, and the variable just freed could block at once and be
    /// barred, stalling short of the optimum. Instead the target is the
    /// minimiser along d, t* = −∇ᵀPd / (Pd)ᵀH(Pd) (far away when the
    /// curvature vanishes, flagged `true`: the ratio test then stops at the
    /// block, or nothing blocks and the problem is unbounded). Where the
    /// objective is flat along d to working precision, every point of the
    /// line is as good, and the target is where the k-th unit reaches 0:
    /// the ratio test stops there or at an earlier bound or cap, a step of
    /// at most z_k along d that leaves the singular face. (A ridged solve
    /// there aimed wherever rounding pointed: on warm starts it left z in
    /// the hundreds of thousands, where the objective of a rounded H is
    /// determined only to 1e-9 relative.)
    pub(super) fn null_target(&self, nd: &NullDirection) -> (Vec<f64>, bool) {
        let far = 1e8 * (1.0 + self.z.amax()) / nd.pd.amax();
        let (t, is_far) = if self.flat(nd) {
            (-self.z[self.factor.order[nd.k]], false)
        } else if nd.curvature * far > nd.slope.abs() {
            (-nd.slope / nd.curvature, false)
        } else {
            (-nd.slope.signum() * far, true)
        };
        let y = (self.factor.order.iter())
            .zip(&nd.d)
            .map(|(&u, dt)| self.z[u] + t * dt);
        (y.collect(), is_far)
    }

    /// The null direction of the k-th (clamped) unit; `None` if Pd
    /// vanishes.
    pub(super) fn null_direction(&self, k: usize) -> Option<NullDirection> {
        let order = &self.factor.order;
        let mut c: Vec<f64> = (0..k).map(|t| self.factor.l[(k, t)]).collect();
        self.factor.upper(&mut c);
        let mut d = vec![0.0; order.len()];
        d[k] = 1.0;
        for (t, ct) in c.iter().enumerate() {
            d[t] = -ct;
        }
        let mut pd = DVector::zeros(self.z.len());
        let mut hpd = DVector::zeros(self.z.len());
        for (&u, &dt) in order.iter().zip(&d).filter(|(_, &dt)| dt != 0.0) {
            for (p, w) in self.column(u) {
                pd[p] += w * dt;
            }
            hpd.axpy(dt, &self.hp[u], 1.0);
        }
        if pd.amax() == 0.0 {
            return None;
        }
        let (grad, _) = self.gradient();
        Some(NullDirection {
            k,
            slope: grad.dot(&pd),
            curvature: pd.dot(&hpd).max(0.0),
            d,
            pd,
        })
    }

    /// Flat to working precision: on a true null direction the slope is 0
    /// whenever g lies in the range of H, and a far step would only
    /// amplify rounding.
    fn flat(&self, nd: &NullDirection) -> bool {
        nd.slope.abs() <= 1e-10 * self.g.norm() * nd.pd.norm()
    }

    /// The unit of a clamped pivot (its null direction `nd`, no general row
    /// working), if it sits at 0 and the objective is flat along `nd`:
    /// freeing it gained nothing, and its singular face would make a
    /// ridged solve aim anywhere along the null direction.
    pub(super) fn flat_dependent(&self, nd: &NullDirection) -> Option<usize> {
        let u = self.factor.order[nd.k];
        (self.z[u] == 0.0 && self.flat(nd)).then_some(u)
    }

    /// The position of the first clamped pivot in the factor, if any: the
    /// face is then singular, and the pivot's unit gives its null direction.
    pub(super) fn clamped(&self) -> Option<usize> {
        self.thin_pivot(CLAMPED_PIVOT)
    }

    /// The position of the first pivot that keeps at most the share
    /// `share` of its diagonal (or sits near the ridge), if any.
    pub(super) fn thin_pivot(&self, share: f64) -> Option<usize> {
        self.factor.thin_pivot(|u| self.diag[u], share)
    }
}
