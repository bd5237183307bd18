//! The double edge on the same test points: per-point records, the ratio
//! of the robust net's exact distance to a KKT net's, and its interval.
//!
//! Theorem 4.2 bounds a KKT net's critical radius along the universal
//! direction z = Σ_q y_q μ_q by O(√(d/k)); Theorem 4.1 bounds the robust
//! net's *exact minimal* distance (Definition 4.1: robustness to every
//! perturbation) from below by Ω(√d). The double edge is therefore the
//! ratio ρ_i = dist_robust(x_i) / dist_KKT(x_i) on the same points. For the
//! constructions here the robust net's exact distance is √d/2 and a KKT
//! net's is ≈ √(d/k), so the theorems' constants aside ρ ≈ √k/2: it grows
//! like k^{1/2}, and is no advantage at all at k = 4.
//!
//! A point enters the ratio only when both distances are `exact` and both
//! nets classify it correctly (a misclassified point is at distance 0 from
//! a flip and says nothing of robustness). Its interval is a percentile
//! bootstrap over those points, from a fixed seed, so a report is the same
//! on every machine.
//!
//! Every point's exact distance is at most its critical radius along any
//! direction, the universal one included; [`check_point`] asserts it, so a
//! report never holds a pair that contradicts itself.

use crate::distance::{PointDistance, Status};
use crate::error::{Error, Result};
use crate::model::net::median_sorted;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A distance as the search proved it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bracket {
    /// Proven lower bound.
    pub lower: Option<f64>,
    /// Norm of the nearest verified flip.
    pub upper: Option<f64>,
    /// `exact`, `bounded`, `no_flip` or `on_boundary`.
    pub status: Status,
}

/// One test point of one net: both of the theorems' quantities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    /// Index of the test point.
    pub index: usize,
    /// Whether the net classifies it correctly.
    pub correct: bool,
    /// Exact critical ‖z‖ along the universal direction (null: never flips).
    pub universal: Option<f64>,
    /// The exact minimal ℓ2 flip distance, or its bracket.
    pub distance: Bracket,
}

impl PointRecord {
    /// The exact distance of a correctly classified point, if proven.
    pub fn exact(&self) -> Option<f64> {
        (self.correct && self.distance.status == Status::Exact)
            .then_some(self.distance.upper)
            .flatten()
    }
}

/// A median with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The median.
    pub median: f64,
    /// Lower end of the 95% interval.
    pub lo: f64,
    /// Upper end of the 95% interval.
    pub hi: f64,
}

/// Bootstrap resamples of an interval.
const RESAMPLES: usize = 2000;

/// The seed of every bootstrap: a report is the same on every machine.
const BOOTSTRAP_SEED: u64 = 0x6b6b_7463;

/// The median of `v` with a 95% percentile-bootstrap interval (None when
/// `v` is empty).
pub fn bootstrap_median(v: &[f64]) -> Option<Interval> {
    if v.is_empty() {
        return None;
    }
    let med = |s: &mut Vec<f64>| {
        s.sort_by(f64::total_cmp);
        median_sorted(s)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut sample = Vec::with_capacity(v.len());
    let mut medians: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            sample.clear();
            sample.extend((0..v.len()).map(|_| v[rng.gen_range(0..v.len())]));
            med(&mut sample)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    Some(Interval {
        median: med(&mut v.to_vec()),
        lo: at(0.025),
        hi: at(0.975),
    })
}

/// The record of point `p` of a net, with its universal critical radius
/// `universal`; fails, naming the point and the net, if the exact distance
/// exceeds the radius along the universal direction (it cannot: that ray
/// holds a flip at that radius).
pub fn check_point(
    net: &str,
    p: &PointDistance,
    universal: Option<f64>,
    correct: bool,
) -> Result<PointRecord> {
    if let (Some(lower), Some(u)) = (p.lower, universal) {
        if lower > u * (1.0 + 1e-9) + 1e-9 {
            return Err(Error::Numerical(format!(
                "test point {} of the {net} net: its certified distance is at least {lower} but the universal direction flips it at {u}",
                p.index
            )));
        }
    }
    Ok(PointRecord {
        index: p.index,
        correct,
        universal,
        distance: Bracket {
            lower: p.lower,
            upper: p.upper,
            status: p.status,
        },
    })
}

/// The ratio robust / KKT of exact distances on the points both prove,
/// with its interval (None when no point qualifies).
pub fn double_edge(kkt: &[PointRecord], robust: &[PointRecord]) -> Option<Interval> {
    let ratios: Vec<f64> = kkt
        .iter()
        .filter_map(|a| {
            let b = robust.iter().find(|b| b.index == a.index)?;
            Some(b.exact()? / a.exact()?)
        })
        .filter(|r| r.is_finite())
        .collect();
    bootstrap_median(&ratios)
}

/// The median of the exact distances of correctly classified points (the
/// others are counted, not mixed in).
pub fn exact_median(points: &[PointRecord]) -> Option<f64> {
    let v: Vec<f64> = points.iter().filter_map(PointRecord::exact).collect();
    bootstrap_median(&v).map(|i| i.median)
}

/// Least-squares slope of y on x (None with fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 1e-12 * (1.0 + mx * mx)).then(|| sxy / sxx)
}

/// The exponent a of ratio ∝ k^a: the slope of log ratio on log k over
/// independent replicates `(k, ratio)` (one per dataset), with a 95%
/// percentile-bootstrap interval that resamples the datasets.
pub fn exponent_in_k(replicates: &[(usize, f64)]) -> Option<Interval> {
    let pts: Vec<(f64, f64)> = replicates
        .iter()
        .filter(|(_, r)| *r > 0.0 && r.is_finite())
        .map(|&(k, r)| ((k as f64).ln(), r.ln()))
        .collect();
    let median = slope(&pts)?;
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut fits: Vec<f64> = (0..RESAMPLES)
        .filter_map(|_| {
            let sample: Vec<(f64, f64)> = (0..pts.len())
                .map(|_| pts[rng.gen_range(0..pts.len())])
                .collect();
            slope(&sample)
        })
        .collect();
    if fits.len() < RESAMPLES / 2 {
        return None;
    }
    fits.sort_by(f64::total_cmp);
    let at = |q: f64| fits[((q * fits.len() as f64) as usize).min(fits.len() - 1)];
    Some(Interval {
        median,
        lo: at(0.025),
        hi: at(0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize, d: f64, status: Status) -> PointRecord {
        PointRecord {
            index,
            correct: true,
            universal: Some(d * 2.0),
            distance: Bracket {
                lower: Some(d),
                upper: Some(d),
                status,
            },
        }
    }

    #[test]
    fn the_interval_holds_the_median_and_narrows_with_more_points() {
        let v: Vec<f64> = (0..101).map(|i| i as f64).collect();
        let i = bootstrap_median(&v).unwrap();
        assert_eq!(i.median, 50.0);
        assert!(i.lo < 50.0 && i.hi > 50.0, "{i:?}");
        // The median of 101 uniform points has standard error ≈ 5: the
        // 95% interval is about ±10.
        assert!(i.hi - i.lo > 8.0 && i.hi - i.lo < 30.0, "{i:?}");
        let constant = bootstrap_median(&[3.0; 7]).unwrap();
        assert_eq!((constant.lo, constant.median, constant.hi), (3.0, 3.0, 3.0));
        assert!(bootstrap_median(&[]).is_none());
    }

    #[test]
    fn the_exponent_of_a_power_law_is_recovered() {
        // ratio = ½·k^{1/2} with ±2% noise, three datasets per k.
        let reps: Vec<(usize, f64)> = [4, 8, 16, 32]
            .iter()
            .flat_map(|&k| [0.98, 1.0, 1.02].map(|e| (k, 0.5 * (k as f64).sqrt() * e)))
            .collect();
        let a = exponent_in_k(&reps).unwrap();
        assert!((a.median - 0.5).abs() < 1e-12, "{a:?}");
        assert!(a.lo < 0.5 && a.hi > 0.5 && a.hi - a.lo < 0.05, "{a:?}");
        assert!(exponent_in_k(&[(4, 1.0), (4, 1.1)]).is_none());
    }

    #[test]
    fn the_ratio_uses_only_points_both_prove() {
        let kkt = vec![
            record(0, 2.0, Status::Exact),
            record(1, 2.0, Status::Bounded),
            record(2, 4.0, Status::Exact),
        ];
        let robust = vec![
            record(0, 4.0, Status::Exact),
            record(1, 100.0, Status::Exact),
            record(2, 8.0, Status::Exact),
        ];
        let r = double_edge(&kkt, &robust).unwrap();
        assert_eq!((r.lo, r.median, r.hi), (2.0, 2.0, 2.0));
        let mut wrong = kkt.clone();
        wrong[0].correct = false;
        wrong[2].correct = false;
        assert!(double_edge(&wrong, &robust).is_none());
    }

    #[test]
    fn a_distance_beyond_the_universal_radius_fails_naming_the_point() {
        let p = PointDistance {
            index: 7,
            label: 1.0,
            output: 0.5,
            lower: Some(5.0),
            upper: Some(5.0),
            status: Status::Exact,
            reason: None,
            witness: None,
            witness_output: None,
            nodes: 1,
            unstable_hurting: 0,
            seconds: 0.0,
        };
        assert!(check_point("GD", &p, Some(5.0), true).is_ok());
        let e = check_point("GD", &p, Some(4.0), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("test point 7") && e.contains("GD net"), "{e}");
    }
}
