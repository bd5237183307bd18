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

use crate::net::Network;
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
    pub fn full_net(&self, x: &DMatrix<f64>, reduced: &Network, perp: &DMatrix<f64>) -> Network {
        let w = self.lift(x, reduced.w()) + perp;
        Network::new(w, reduced.b().clone(), reduced.v().clone())
            .expect("lifting a finite network gives a finite network")
    }
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
}
