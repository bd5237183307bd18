//! A compact L-BFGS minimiser with a backtracking Armijo line search.
//!
//! Hand-written rather than taken from a general optimisation crate because
//! the polish needs exactly this and nothing else: warm starts across a
//! continuation, a gradient-norm stop in the problem's own units, and a
//! cheap restart when curvature information goes bad at a softplus kink.

use nalgebra::DVector;
use std::collections::VecDeque;
use std::ops::Range;

/// Outcome of [`minimize`].
pub struct Minimum {
    /// The minimiser found.
    pub x: DVector<f64>,
    /// The objective there.
    pub value: f64,
    /// The gradient's norm there.
    pub grad_norm: f64,
    /// Iterations taken.
    pub iterations: usize,
    /// Objective evaluations.
    pub evaluations: usize,
}

/// Minimises `f` (returning value and gradient) from `x0` until
/// ‖∇f‖∞ ≤ `gtol` or `max_iter` iterations, or at once when `f` returns
/// −∞ (the caller's way to say its goal is reached). `blocks` partitions the
/// coordinates into groups of similar curvature: the initial inverse Hessian
/// is scaled per block (a block-wise Barzilai–Borwein step), which matters
/// when, as in a network's (W, b, v), the blocks differ by orders of magnitude.
pub fn minimize(
    mut f: impl FnMut(&DVector<f64>) -> (f64, DVector<f64>),
    x0: DVector<f64>,
    gtol: f64,
    max_iter: usize,
    memory: usize,
    blocks: &[Range<usize>],
) -> Minimum {
    let mut x = x0;
    let (mut fx, mut g) = f(&x);
    let mut evals = 1;
    if fx == f64::NEG_INFINITY {
        g.fill(0.0);
    }
    let mut hist: VecDeque<(DVector<f64>, DVector<f64>, f64)> = VecDeque::new();
    let mut it = 0;
    while it < max_iter && g.amax() > gtol {
        it += 1;
        let mut d = two_loop(&g, &hist, blocks);
        if d.dot(&g) >= 0.0 {
            hist.clear();
            d = -&g;
        }
        let slope = d.dot(&g);
        let mut step = if hist.is_empty() {
            (1.0 / g.norm()).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            let xn = &x + &d * step;
            let (fn_, gn) = f(&xn);
            evals += 1;
            if fn_ == f64::NEG_INFINITY {
                return Minimum {
                    grad_norm: 0.0,
                    x: xn,
                    value: fn_,
                    iterations: it,
                    evaluations: evals,
                };
            }
            // Armijo, or — once decreases drown in the rounding of f — the
            // approximate Wolfe test of Hager & Zhang: f no worse beyond
            // noise and the slope along d reduced.
            let armijo = fn_ <= fx + 1e-4 * step * slope;
            let approx_wolfe =
                fn_ <= fx + 1e-12 * fx.abs() && gn.dot(&d).abs() <= 0.9 * slope.abs();
            if fn_.is_finite() && (armijo || approx_wolfe) {
                accepted = Some((xn, fn_, gn));
                break;
            }
            step *= 0.5;
        }
        let Some((xn, fn_, gn)) = accepted else {
            if hist.is_empty() {
                break;
            }
            hist.clear();
            continue;
        };
        let s = &xn - &x;
        let yv = &gn - &g;
        let sy = s.dot(&yv);
        if sy > 1e-12 * s.norm() * yv.norm() {
            hist.push_back((s, yv, 1.0 / sy));
            if hist.len() > memory {
                hist.pop_front();
            }
        }
        x = xn;
        fx = fn_;
        g = gn;
    }
    Minimum {
        grad_norm: g.amax(),
        x,
        value: fx,
        iterations: it,
        evaluations: evals,
    }
}

/// The L-BFGS two-loop recursion: −H∇ from the stored pairs.
fn two_loop(
    g: &DVector<f64>,
    hist: &VecDeque<(DVector<f64>, DVector<f64>, f64)>,
    blocks: &[Range<usize>],
) -> DVector<f64> {
    let mut q = -g.clone();
    let mut alphas = Vec::with_capacity(hist.len());
    for (s, y, rho) in hist.iter().rev() {
        let a = rho * s.dot(&q);
        q.axpy(-a, y, 1.0);
        alphas.push(a);
    }
    if let Some((s, y, _)) = hist.back() {
        let global = s.dot(y) / y.dot(y);
        for r in blocks {
            let (sb, yb) = (s.rows(r.start, r.len()), y.rows(r.start, r.len()));
            let (sy, yy) = (sb.dot(&yb), yb.dot(&yb));
            let scale = if sy > 0.0 && yy > 0.0 {
                sy / yy
            } else {
                global
            };
            q.rows_mut(r.start, r.len()).scale_mut(scale);
        }
        if blocks.is_empty() {
            q *= global;
        }
    }
    for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
        let b = rho * y.dot(&q);
        q.axpy(a - b, s, 1.0);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rosenbrock() {
        let f = |x: &DVector<f64>| {
            let (a, b) = (x[0], x[1]);
            let v = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = DVector::from_vec(vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ]);
            (v, g)
        };
        let m = minimize(f, DVector::from_vec(vec![-1.2, 1.0]), 1e-10, 500, 8, &[]);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-8 && (m.x[1] - 1.0).abs() < 1e-8,
            "{:?}",
            m.x
        );
    }
}
