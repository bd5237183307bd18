//! Rays through a network: along x − y·r·e every pre-activation is affine
//! in r, so g(r) = y·N(x − y r e) is piecewise linear with breakpoints where
//! a neuron switches. Its first root is found exactly — evaluate g at the
//! sorted breakpoints and solve the linear piece that first reaches 0, no
//! bisection. The universal attack measures its critical radii this way,
//! and the distance search checks its candidate flips along rays.

use crate::model::net::Network;
use nalgebra::DVector;

/// Exact first radius r ≥ 0 where y·N(x − y r dir) ≤ 0 (`None`: never).
pub fn critical_radius(net: &Network, x: &DVector<f64>, y: f64, dir: &DVector<f64>) -> Option<f64> {
    let u0 = net.w() * x + net.b();
    let slope = -(net.w() * dir) * y;
    let g = |r: f64| -> f64 {
        let out: f64 = (0..net.width())
            .map(|j| net.v()[j] * (u0[j] + r * slope[j]).max(0.0))
            .sum();
        y * out
    };
    let mut knots: Vec<f64> = (0..net.width())
        .filter(|&j| slope[j] != 0.0)
        .map(|j| -u0[j] / slope[j])
        .filter(|&r| r > 0.0 && r.is_finite())
        .collect();
    knots.sort_by(f64::total_cmp);
    knots.dedup();
    let mut r0 = 0.0;
    let mut g0 = g(0.0);
    if g0 <= 0.0 {
        return Some(0.0);
    }
    for &r1 in &knots {
        let g1 = g(r1);
        if g1 <= 0.0 {
            return Some(r0 + (r1 - r0) * g0 / (g0 - g1));
        }
        r0 = r1;
        g0 = g1;
    }
    // Beyond the last knot g is linear with slope g(r0 + 1) − g(r0).
    let s = g(r0 + 1.0) - g0;
    (s < 0.0).then(|| r0 + g0 / -s)
}
