//! The span form: a two-layer net seen through the n-dimensional span of
//! its training inputs.
//!
//! Every gradient of a training margin has its W-block in span{x_i}
//! (∂q_i/∂w_j = y_i v_j ReLU'(u_ij) x_i), so gradient descent changes w_j
//! only inside that span, and every KKT point of Problem (2) has
//! w_j ∈ span{x_i}. With the eigendecomposition X Xᵀ = V Λ Vᵀ (rank r ≤ n),
//! Q = Xᵀ V Λ^{-1/2} is an orthonormal basis of the span and Z = X Q =
//! V Λ^{1/2} are the training inputs in it. Writing w_j = Q c_j + w_j^⊥,
//!
//! ```text
//!   u_ij = z_i·c_j + b_j          (w_j^⊥ never reaches a training point)
//!   ‖w_j‖² = ‖c_j‖² + ‖w_j^⊥‖²
//! ```
//!
//! so an optimiser over θ = (W, b, v) on X is exactly an optimiser over
//! (C, b, v) on Z plus a decoupled W^⊥ block — with r ≤ n in place of d.
//! The data enter once (X Xᵀ and W Xᵀ, O(n²d + nmd)) and the full W is
//! assembled once at the end (C Λ^{-1/2} Vᵀ X + W^⊥). Certificates are then
//! computed for the full θ, so the reduction costs no exactness.
//! Hand-written because it is the product: no library offers this
//! reduction, and it is a few dense products and one symmetric eigensolve.

use crate::model::net::Network;
use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Eigenvalues below this fraction of the largest are treated as zero: the
/// directions they span carry no training signal above rounding.
const RANK_TOL: f64 = 1e-12;

/// The span of a training set's inputs.
pub struct Span {
    /// Eigenvectors of X Xᵀ with non-negligible eigenvalues, n × r.
    v: DMatrix<f64>,
    /// Λ^{-1/2} of those eigenvalues.
    inv_sqrt: DVector<f64>,
    /// Z = V Λ^{1/2}, the training inputs in the basis Q, n × r.
    coords: DMatrix<f64>,
}

impl Span {
    /// The span of the rows of `x`.
    pub fn of(x: &DMatrix<f64>) -> Self {
        let k = x * x.transpose();
        let eig = SymmetricEigen::new(k);
        let top = eig.eigenvalues.amax();
        let keep: Vec<usize> = (0..eig.eigenvalues.len())
            .filter(|&i| eig.eigenvalues[i] > RANK_TOL * top)
            .collect();
        let v = eig.eigenvectors.select_columns(&keep);
        let lam = DVector::from_iterator(keep.len(), keep.iter().map(|&i| eig.eigenvalues[i]));
        let coords = DMatrix::from_fn(v.nrows(), v.ncols(), |i, c| v[(i, c)] * lam[c].sqrt());
        Self {
            inv_sqrt: lam.map(|l| 1.0 / l.sqrt()),
            v,
            coords,
        }
    }

    /// The dimension r of the span.
    pub fn rank(&self) -> usize {
        self.v.ncols()
    }

    /// Z: the training inputs in the span's orthonormal basis.
    pub fn coords(&self) -> &DMatrix<f64> {
        &self.coords
    }

    /// V Λ^{-1/2} (n × r): W Xᵀ times this is W Q, and C times its transpose, times X, is C Qᵀ.
    fn basis_map(&self) -> DMatrix<f64> {
        let mut m = self.v.clone();
        for (c, mut col) in m.column_iter_mut().enumerate() {
            col *= self.inv_sqrt[c];
        }
        m
    }

    /// C = W Q (m × r) and W^⊥ = W − C Qᵀ (m × d) for inputs `x`.
    pub fn project(&self, x: &DMatrix<f64>, w: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
        let c = (w * x.transpose()) * self.basis_map();
        let perp = w - self.lift(x, &c);
        (c, perp)
    }

    /// C Qᵀ (m × d): span coordinates back to input space.
    pub fn lift(&self, x: &DMatrix<f64>, c: &DMatrix<f64>) -> DMatrix<f64> {
        (c * self.basis_map().transpose()) * x
    }

    /// The full network with span coordinates `reduced` (W = C) and
    /// out-of-span part `perp`.
    /// Fails only if the lift overflows to a non-finite weight.
    pub fn full_net(
        &self,
        x: &DMatrix<f64>,
        reduced: &Network,
        perp: &DMatrix<f64>,
    ) -> crate::error::Result<Network> {
        let w = self.lift(x, reduced.w()) + perp;
        Network::new(w, reduced.b().clone(), reduced.v().clone())
    }
}

/// The rows (x_i, 1) of `x`: the inputs as the first layer with its bias
/// sees them.
pub fn augmented(x: &DMatrix<f64>) -> DMatrix<f64> {
    let (n, d) = x.shape();
    DMatrix::from_fn(n, d + 1, |i, k| if k < d { x[(i, k)] } else { 1.0 })
}

/// The largest cos∠(θ₀, θ*) any KKT point θ* of Problem (2) can have with
/// `start` on training inputs `x`.
///
/// At a KKT point every neuron's (w_j, b_j) = v_j Σ_i λ_i y_i ∂ReLU_ij (x_i, 1)
/// lies in S = span{(x_i, 1)} ⊂ R^{d+1}, and stationarity balances it:
/// ‖(w_j, b_j)‖ = |v_j|. So θ* lies in the product of the cones
/// K_j = {(a, v) : a ∈ S, |v| = ‖a‖}, on whose unit sphere ⟨θ₀_j, ·⟩ is at
/// most h_j = (‖P a₀_j‖ + |v₀_j|)/√2 (P projecting onto S), and by
/// Cauchy–Schwarz across neurons
///
/// ```text
///   cos∠(θ₀, θ*) ≤ Σ_j ‖θ*_j‖ h_j / (‖θ*‖ ‖θ₀‖) ≤ ‖h‖ / ‖θ₀‖,
/// ```
///
/// attained by θ*_j ∝ h_j·(P a₀_j/‖P a₀_j‖, sign v₀_j)/√2 when that point is
/// a KKT point. What caps it: the part of w_j outside the span (GD keeps its
/// initialisation's there forever) and any imbalance of the start.
pub fn kkt_cosine_bound(start: &Network, x: &DMatrix<f64>) -> f64 {
    let pa = projected_incoming_norms(start, x);
    let h_sq: f64 = (0..start.width())
        .map(|j| (pa[j] + start.v()[j].abs()).powi(2) / 2.0)
        .sum();
    let theta_sq = start.w().norm_squared() + start.b().norm_squared() + start.v().norm_squared();
    if theta_sq == 0.0 {
        return 1.0;
    }
    (h_sq / theta_sq).sqrt().min(1.0)
}

/// ‖P (w_j, b_j)‖ per neuron, P projecting R^{d+1} onto span{(x_i, 1)}:
/// through the n×n Gram of the (x_i, 1) when n ≤ d + 1 (the neuron's
/// training pre-activations are its coordinates there), else through the
/// (d+1)×(d+1) Gram — never both dimensions at once.
fn projected_incoming_norms(net: &Network, x: &DMatrix<f64>) -> DVector<f64> {
    let (n, d) = x.shape();
    let through_points = n <= d + 1;
    // The Gram of the (x_i, 1) either way round, without copying X.
    let (gram, coords) = if through_points {
        ((x * x.transpose()).add_scalar(1.0), net.preactivations(x))
    } else {
        let mut gram = DMatrix::zeros(d + 1, d + 1);
        gram.view_mut((0, 0), (d, d))
            .copy_from(&(x.transpose() * x));
        let sums = x.row_sum();
        for c in 0..d {
            gram[(c, d)] = sums[c];
            gram[(d, c)] = sums[c];
        }
        gram[(d, d)] = n as f64;
        let a = DMatrix::from_fn(d + 1, net.width(), |c, j| {
            if c < d {
                net.w()[(j, c)]
            } else {
                net.b()[j]
            }
        });
        (gram, a)
    };
    let eig = SymmetricEigen::new(gram);
    let top = eig.eigenvalues.amax();
    // n ≤ d+1: coordinates u_j = X̃ a_j, and ‖P a_j‖² = Σ_k (e_kᵀ u_j)²/λ_k;
    // else ‖P a_j‖² = Σ_k (e_kᵀ a_j)², over the non-negligible λ_k.
    let scale = |l: f64| if through_points { 1.0 / l } else { 1.0 };
    let mut sq = DVector::zeros(net.width());
    for (k, &l) in eig.eigenvalues.iter().enumerate() {
        if l > RANK_TOL * top {
            let proj = eig.eigenvectors.column(k).transpose() * &coords;
            for j in 0..net.width() {
                sq[j] += proj[j].powi(2) * scale(l);
            }
        }
    }
    sq.map(f64::sqrt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn projection_splits_w_and_preserves_training_outputs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, d, m) = (7, 30, 5);
        let x = DMatrix::from_fn(n, d, |_, _| rng.gen_range(-1.0..1.0));
        let w = DMatrix::from_fn(m, d, |_, _| rng.gen_range(-1.0..1.0));
        let span = Span::of(&x);
        assert_eq!(span.rank(), n);
        let (c, perp) = span.project(&x, &w);
        // W⊥ does not reach the training points, and U = Z Cᵀ.
        assert!((&x * perp.transpose()).amax() < 1e-12);
        assert!((span.coords() * c.transpose() - &x * w.transpose()).amax() < 1e-12);
        // ‖W‖² = ‖C‖² + ‖W⊥‖² and W = C Qᵀ + W⊥.
        let lhs = w.norm_squared();
        assert!((lhs - c.norm_squared() - perp.norm_squared()).abs() < 1e-10 * lhs);
        assert!((span.lift(&x, &c) + &perp - &w).amax() < 1e-12);
    }

    /// ‖P a‖ by an explicit orthonormal basis (QR) of span{(x_i, 1)}.
    fn qr_projected_norms(net: &Network, x: &DMatrix<f64>) -> Vec<f64> {
        let (n, d) = x.shape();
        let rank = n.min(d + 1);
        let q = augmented(x)
            .transpose()
            .qr()
            .q()
            .columns(0, rank)
            .into_owned();
        (0..net.width())
            .map(|j| {
                let a = DVector::from_fn(
                    d + 1,
                    |c, _| if c < d { net.w()[(j, c)] } else { net.b()[j] },
                );
                (q.transpose() * a).norm()
            })
            .collect()
    }

    fn random_net(rng: &mut impl Rng, m: usize, d: usize) -> Network {
        let w = DMatrix::from_fn(m, d, |_, _| rng.gen_range(-1.0..1.0));
        let b = DVector::from_fn(m, |_, _| rng.gen_range(-1.0..1.0));
        let v = DVector::from_fn(m, |_, _| rng.gen_range(-1.0..1.0));
        Network::new(w, b, v).unwrap()
    }

    #[test]
    fn projected_norms_match_an_explicit_basis_either_way_round() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // n ≤ d + 1 (the n×n Gram) and n > d + 1 (the (d+1)×(d+1) one).
        for (n, d) in [(6, 20), (30, 4)] {
            let x = DMatrix::from_fn(n, d, |_, _| rng.gen_range(-1.0..1.0));
            let net = random_net(&mut rng, 7, d);
            let ours = projected_incoming_norms(&net, &x);
            for (a, b) in ours.iter().zip(qr_projected_norms(&net, &x)) {
                assert!((a - b).abs() < 1e-10 * (1.0 + b), "{n}×{d}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn cosine_bound_is_attained_and_never_beaten_on_the_cone() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (n, d, m) = (5, 12, 4);
        let x = DMatrix::from_fn(n, d, |_, _| rng.gen_range(-1.0..1.0));
        let xt = augmented(&x);
        let start = random_net(&mut rng, m, d);
        let bound = kkt_cosine_bound(&start, &x);
        assert!(bound < 1.0 - 1e-3, "{bound}");
        // A balanced net whose (w_j, b_j) = X̃ᵀ c_j lies in the span: a
        // point of the cones K_j, so its cosine with the start is bounded.
        let theta0 = DVector::from_vec(start.flat());
        let cone_point = |c: &DMatrix<f64>, sign: &[f64]| {
            let a = c * &xt;
            let w = a.columns(0, d).into_owned();
            let b = a.column(d).into_owned();
            let v = DVector::from_fn(m, |j, _| sign[j] * a.row(j).norm());
            Network::new(w, b, v).unwrap()
        };
        for _ in 0..2000 {
            let c = DMatrix::from_fn(m, n, |_, _| rng.gen_range(-1.0..1.0));
            let sign: Vec<f64> = (0..m)
                .map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 })
                .collect();
            let t = DVector::from_vec(cone_point(&c, &sign).flat());
            assert!(t.dot(&theta0) / (t.norm() * theta0.norm()) <= bound + 1e-12);
        }
        // The maximiser: each a_j along P a₀_j, scaled by h_j, v_j's sign kept.
        let gram_inv = (&xt * xt.transpose()).try_inverse().unwrap();
        let u0 = start.preactivations(&x);
        let pa = projected_incoming_norms(&start, &x);
        let h: Vec<f64> = (0..m)
            .map(|j| (pa[j] + start.v()[j].abs()) / 2f64.sqrt())
            .collect();
        // P a₀_j = X̃ᵀ G⁻¹ u₀_j: coefficients G⁻¹ u₀_j, scaled to norm h_j.
        let coef = (&gram_inv * &u0).transpose();
        let c = DMatrix::from_fn(m, n, |j, i| coef[(j, i)] * h[j] / pa[j]);
        let sign: Vec<f64> = start.v().iter().map(|v| v.signum()).collect();
        let t = DVector::from_vec(cone_point(&c, &sign).flat());
        let attained = t.dot(&theta0) / (t.norm() * theta0.norm());
        assert!((attained - bound).abs() < 1e-10, "{attained} vs {bound}");
    }

    #[test]
    fn cosine_bound_is_one_for_a_balanced_net_in_the_span() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (n, d) in [(4, 9), (20, 3)] {
            let x = DMatrix::from_fn(n, d, |_, _| rng.gen_range(-1.0..1.0));
            let xt = augmented(&x);
            let a = DMatrix::from_fn(3, n, |_, _| rng.gen_range(-1.0..1.0)) * &xt;
            let v = DVector::from_fn(3, |j, _| a.row(j).norm() * if j == 1 { -1.0 } else { 1.0 });
            let net =
                Network::new(a.columns(0, d).into_owned(), a.column(d).into_owned(), v).unwrap();
            let bound = kkt_cosine_bound(&net, &x);
            assert!((bound - 1.0).abs() < 1e-10, "{n}×{d}: {bound}");
        }
    }
}
