//! Least squares that keep the accuracy of the matrix itself: a
//! minimum-norm solve through the SVD checked by its normal equations,
//! Lawson–Hanson NNLS on the matrix (never its Gram), and the least-distance
//! program (LDP) built on it, which gives the distance search its region
//! witnesses.

use nalgebra::{DMatrix, DVector};

/// Minimum-norm least-squares solution through the SVD (the rare singular
/// case), checked by its normal equations.
///
/// nalgebra's SVD (0.33) can return a decomposition that does not
/// recompose its matrix when its convergence threshold is too fine
/// (dimforge/nalgebra#1172, #1072): on an 8×7 matrix of 0s and ±1s from
/// the capped QP's KKT oracle (columns e_a − e_m and −e_i), `svd` put a
/// singular value at 1.0000626 instead of 1 and recomposed with error
/// 9.4e-3, and the NNLS built on it stopped 1.4e-3 short of a residual of
/// 0. So the solution x must satisfy ‖Aᵀ(Ax − r)‖∞ ≤ 1e-10·‖A‖(‖A‖‖x‖∞ +
/// ‖r‖∞) (a truncated singular value leaves at most 1e-14·‖A‖‖r‖ there);
/// if not, the SVD is recomputed with the coarser thresholds
/// [`SVD_RETRY_THRESHOLDS`] (relative to ‖A‖), and the best of the tries
/// is returned.
pub(super) fn lstsq(m: &DMatrix<f64>, r: &DVector<f64>) -> DVector<f64> {
    let norm = m.norm();
    let slack = |x: &DVector<f64>| -> f64 {
        let excess = (m.transpose() * (m * x - r)).amax();
        excess - 1e-10 * norm * (norm * x.amax() + r.amax())
    };
    let mut best: Option<(f64, DVector<f64>)> = None;
    let tries = std::iter::once(Some(m.clone().svd(true, true))).chain(
        SVD_RETRY_THRESHOLDS
            .iter()
            .map(|&t| m.clone().try_svd(true, true, t * norm, 0)),
    );
    for svd in tries.flatten() {
        let eps = 1e-14 * svd.singular_values.max();
        let x = svd
            .solve(r, eps)
            .unwrap_or_else(|_| DVector::zeros(m.ncols()));
        let s = slack(&x);
        if s <= 0.0 {
            return x;
        }
        if best.as_ref().is_none_or(|(b, _)| s < *b) {
            best = Some((s, x));
        }
    }
    best.map_or_else(|| DVector::zeros(m.ncols()), |(_, x)| x)
}

/// The SVD's convergence thresholds, relative to ‖A‖_F, that [`lstsq`]
/// retries when nalgebra's default one returns a decomposition that
/// fails the normal equations (1e-14 recomposed the 8×7 case to 2.7e-14).
const SVD_RETRY_THRESHOLDS: [f64; 2] = [1e-14, 1e-12];

/// Lawson–Hanson NNLS on the matrix itself: min ‖E u − f‖ over u ≥ 0.
///
/// Unlike the general QP (`qp_nonneg`, a test oracle) on the normal equations, this never forms EᵀE, so it keeps the accuracy of E
/// when columns are (nearly) dependent — duplicated or opposite constraints
/// in a least-distance program. The passive least-squares problems are
/// solved by SVD; a column whose entry comes out non-positive right after it
/// entered is barred until the next change (Lawson & Hanson's safeguard).
pub fn nnls(e: &DMatrix<f64>, f: &DVector<f64>) -> DVector<f64> {
    let n = e.ncols();
    let mut x: DVector<f64> = DVector::zeros(n);
    let mut passive = vec![false; n];
    let mut barred = vec![false; n];
    let tol = 10.0
        * f64::EPSILON
        * e.amax().max(f64::MIN_POSITIVE)
        * (e.nrows().max(n) as f64)
        * f.amax().max(1.0);
    for _ in 0..3 * n + 10 {
        let w = e.transpose() * (f - e * &x);
        let Some(t) = (0..n)
            .filter(|&j| !passive[j] && !barred[j] && w[j] > tol)
            .max_by(|&a, &b| w[a].total_cmp(&w[b]))
        else {
            break;
        };
        passive[t] = true;
        let mut entered = Some(t);
        loop {
            let pi: Vec<usize> = (0..n).filter(|&j| passive[j]).collect();
            let sp = lstsq(&e.select_columns(&pi), f);
            if let Some(t) = entered.take() {
                // t was made passive just above, so it is in pi.
                let pos = pi.iter().position(|&j| j == t);
                if pos.is_none_or(|p| sp[p] <= 0.0) {
                    passive[t] = false;
                    barred[t] = true;
                    break;
                }
            }
            if sp.iter().all(|&v| v > 0.0) {
                x.fill(0.0);
                for (k, &j) in pi.iter().enumerate() {
                    x[j] = sp[k];
                }
                barred.fill(false);
                break;
            }
            let alpha = pi
                .iter()
                .enumerate()
                .filter(|(k, _)| sp[*k] <= 0.0)
                .map(|(k, &j)| x[j] / (x[j] - sp[k]))
                .fold(f64::INFINITY, f64::min);
            for (k, &j) in pi.iter().enumerate() {
                x[j] += alpha * (sp[k] - x[j]);
                if x[j] <= tol {
                    x[j] = 0.0;
                    passive[j] = false;
                }
            }
        }
    }
    x
}

/// Result of a least-distance program.
#[derive(Clone, Debug)]
pub enum Ldp {
    /// The minimiser x with G x ≥ h.
    Solution(DVector<f64>),
    /// {x : G x ≥ h} is empty (certified by the NNLS residual).
    Infeasible,
}

/// Lawson–Hanson LDP: min ‖x‖ s.t. G x ≥ h (G has one constraint per row).
///
/// Solves NNLS min ‖Eu − f‖, u ≥ 0 with E = [Gᵀ; hᵀ] and f = e_{d+1};
/// with r = Eu − f, r_{d+1} = 0 means infeasible and x = −r_{1..d}/r_{d+1}
/// otherwise (Lawson & Hanson, *Solving Least Squares Problems*, ch. 23).
pub fn ldp(gm: &DMatrix<f64>, h: &DVector<f64>) -> Ldp {
    let (rows, d) = (gm.nrows(), gm.ncols());
    let mut e = DMatrix::zeros(d + 1, rows);
    e.view_mut((0, 0), (d, rows)).copy_from(&gm.transpose());
    e.row_mut(d).copy_from(&h.transpose());
    let mut f = DVector::zeros(d + 1);
    f[d] = 1.0;
    let u = nnls(&e, &f);
    let r = &e * &u - f;
    if r[d] >= 0.0 {
        return Ldp::Infeasible;
    }
    // Near-infeasible systems leave r_{d+1} at rounding level with a huge,
    // wrong x: a feasible optimum satisfies its constraints, so check them.
    let x = r.rows(0, d) / -r[d];
    let scale = 1e-9 * (1.0 + h.amax() + gm.amax() * x.amax());
    if (gm * &x - h).iter().all(|&v| v >= -scale) {
        Ldp::Solution(x)
    } else {
        Ldp::Infeasible
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capped QP oracle's KKT system on which nalgebra's default SVD
    /// recomposes with error 9.4e-3 (see [`lstsq`]): columns e_5 − e_4,
    /// e_6 − e_0, e_7 − e_3 and −e_i for i ∈ {0, 1, 3, 4, 5, 6, 7}, and a
    /// right-hand side (a QP's −∇ at its optimum) that the cone reaches
    /// exactly: u_{−e_1} = −f_1 alone fits row 1. Before the check, NNLS
    /// stopped with u_{−e_1} = 0.95539 and a residual of 1.4e-3.
    #[test]
    fn least_squares_survive_an_inaccurate_svd() {
        let mut e = DMatrix::zeros(8, 10);
        for (c, (a, m)) in [(5, 4), (6, 0), (7, 3)].into_iter().enumerate() {
            e[(a, c)] = 1.0;
            e[(m, c)] = -1.0;
        }
        for (c, i) in [0, 1, 3, 4, 5, 6, 7].into_iter().enumerate() {
            e[(i, 3 + c)] = -1.0;
        }
        let f = DVector::from_vec(vec![
            -1.1206559786861314,
            -0.956755995585496,
            -5.551115123125783e-17,
            -0.014332963178007307,
            -0.34944475514665474,
            -0.5537693971472333,
            0.5111265818055339,
            -0.956755995585496,
        ]);
        let ep = e.select_columns(&[0, 1, 2, 3, 4, 7, 9]);
        let x = lstsq(&ep, &f);
        let normal = (ep.transpose() * (&ep * &x - &f)).amax();
        assert!(normal <= 1e-14, "normal equations off by {normal:e}");
        assert!((x[4] + f[1]).abs() <= 1e-14, "u_(-e_1) = {}", x[4]);
        let u = nnls(&e, &f);
        let res = (&e * &u - &f).norm();
        assert!(res <= 1e-13, "NNLS residual {res:e}");
    }

    #[test]
    fn ldp_halfspace() {
        // min ‖x‖ s.t. x1 + x2 ≥ 2 → (1, 1).
        let gm = DMatrix::from_row_slice(1, 2, &[1.0, 1.0]);
        match ldp(&gm, &DVector::from_vec(vec![2.0])) {
            Ldp::Solution(x) => assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12),
            Ldp::Infeasible => panic!("feasible"),
        }
        // x1 ≥ 1 and −x1 ≥ 0 is empty.
        let gm = DMatrix::from_row_slice(2, 1, &[1.0, -1.0]);
        assert!(matches!(
            ldp(&gm, &DVector::from_vec(vec![1.0, 0.0])),
            Ldp::Infeasible
        ));
    }
}
