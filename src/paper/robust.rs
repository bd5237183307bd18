//! The robust network of Theorem 4.1 (SPEC §5): one neuron per cluster,
//! w_j = μ_j/√d, b_j = −√d/2, v_j = y_j, padded with zero neurons.
//!
//! For x = μ_j + ξ neuron j sits near √d/2 and the others near −√d/2 (for
//! near-orthogonal means), so N(x) ≈ y_j √d/2 and flipping the sign needs a
//! perturbation of order √d/2.

use crate::error::{Error, Result};
use crate::model::data::Means;
use crate::model::net::Network;
use nalgebra::{DMatrix, DVector};

/// Builds the Theorem 4.1 network of width `width` (≥ k; default k).
pub fn robust_network(means: &Means, width: Option<usize>) -> Result<Network> {
    let (k, d) = (means.k(), means.d());
    let m = width.unwrap_or(k);
    if m < k {
        return Err(Error::param(
            "width",
            format!("{m}, expected at least k = {k}"),
        ));
    }
    let sd = (d as f64).sqrt();
    let mut w = DMatrix::zeros(m, d);
    let mut b = DVector::zeros(m);
    let mut v = DVector::zeros(m);
    for j in 0..k {
        w.row_mut(j).copy_from(&(means.mu().row(j) / sd));
        b[j] = -sd / 2.0;
        v[j] = means.labels()[j];
    }
    Network::new(w, b, v)
}
