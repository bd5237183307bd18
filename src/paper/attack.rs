//! The universal attack of Theorem 4.2 (SPEC §6): one direction
//! ẑ = Σ_q y_q μ_q / ‖Σ_q y_q μ_q‖ for every input and every network.
//!
//! Along the ray r ↦ x − y·r·ẑ every pre-activation is affine in r, so
//! g(r) = y·N(x − y r ẑ) is piecewise linear with breakpoints where a neuron
//! switches. The critical radius r* = min{r ≥ 0 : g(r) ≤ 0} is found exactly:
//! evaluate g at the sorted breakpoints and solve the linear piece that first
//! reaches 0 — no bisection.

use crate::error::{Error, Result};
use crate::model::data::{Dataset, Means};
use crate::model::net::{median_sorted, Network};
use crate::model::ray::critical_radius;
use nalgebra::DVector;
use serde::{Deserialize, Serialize};

/// The unit universal direction of `means`.
pub fn universal_direction(means: &Means) -> Result<DVector<f64>> {
    let z = means.signed_sum();
    let norm = z.norm();
    if norm > 0.0 {
        Ok(z / norm)
    } else {
        Err(Error::Numerical(
            "Σ_q y_q μ_q = 0: the universal direction is undefined".into(),
        ))
    }
}

/// Per-point result of the universal attack.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackPoint {
    /// Index of the point.
    pub index: usize,
    /// Its label.
    pub label: f64,
    /// Exact critical ‖z‖ (null when the ray never flips the sign).
    pub critical_radius: Option<f64>,
}

/// The universal attack on one network over a test set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackReport {
    /// Input dimension.
    pub d: usize,
    /// Number of clusters.
    pub k: usize,
    /// √(d/k) and √d, the two scales of the paper.
    pub scale_sqrt_d_over_k: f64,
    /// √d.
    pub scale_sqrt_d: f64,
    /// One record per attacked point.
    pub points: Vec<AttackPoint>,
    /// Radii of the flip-rate curve, the number of points flipped at each
    /// (by a fresh forward pass) and that number as a fraction.
    pub grid: Vec<f64>,
    /// Points flipped at each grid radius.
    pub flipped: Vec<usize>,
    /// Their share.
    pub flip_rate: Vec<f64>,
    /// Median r* over points (null when at most half the points ever flip).
    pub median: Option<f64>,
    /// The median critical radius over √(d/k).
    pub median_over_sqrt_d_over_k: Option<f64>,
    /// The median critical radius over √d.
    pub median_over_sqrt_d: Option<f64>,
    /// Points no radius of the ray flips.
    pub never_flipped: usize,
}

/// Runs the attack along Σ y_q μ_q on every point of `data`; the flip-rate
/// curve is evaluated by fresh forward passes on `grid_points` radii up to
/// `max_radius`.
///
/// ```
/// use kktcert::paper::attack::attack;
/// # use kktcert::fit::gd::{train, TrainConfig};
/// # use kktcert::model::data::{Fixture, FixtureSpec, LabelRule, MeansKind, FIXTURE_FORMAT};
/// # let spec = FixtureSpec { format: FIXTURE_FORMAT.into(), k: 4, d: 20, sigma: 0.3, n: 40,
/// #     n_test: 10, seed: 0, means: MeansKind::Orthogonal, labels: LabelRule::Balanced };
/// # let fx = Fixture::generate(spec)?;
/// # let net = train(&fx.train, &TrainConfig { width: 8, ..TrainConfig::default() }, |_, _, _| Ok(()))?.net;
/// let report = attack(&net, &fx.test, &fx.means, 11, None)?;
/// assert_eq!(report.points.len(), fx.test.n());
/// println!("median critical radius / √(d/k): {:?}", report.median_over_sqrt_d_over_k);
/// # Ok::<(), kktcert::Error>(())
/// ```
pub fn attack(
    net: &Network,
    data: &Dataset,
    means: &Means,
    grid_points: usize,
    max_radius: Option<f64>,
) -> Result<AttackReport> {
    let all: Vec<usize> = (0..data.n()).collect();
    attack_points(net, data, means, grid_points, max_radius, &all)
}

/// [`attack`] on the points `indices` of `data` only (a shard); reports of
/// disjoint index sets combine with [`AttackReport::merge`].
pub fn attack_points(
    net: &Network,
    data: &Dataset,
    means: &Means,
    grid_points: usize,
    max_radius: Option<f64>,
    indices: &[usize],
) -> Result<AttackReport> {
    net.check_dim(data)?;
    let dir = universal_direction(means)?;
    let d = means.d();
    let points: Vec<AttackPoint> = indices
        .iter()
        .map(|&i| AttackPoint {
            index: i,
            label: data.y()[i],
            critical_radius: critical_radius(net, &data.point(i), data.y()[i], &dir),
        })
        .collect();
    let top = max_radius
        .unwrap_or(2.0 * (d as f64).sqrt())
        .max(f64::MIN_POSITIVE);
    let grid: Vec<f64> = (0..grid_points.max(2))
        .map(|t| top * t as f64 / (grid_points.max(2) - 1) as f64)
        .collect();
    let flipped = grid
        .iter()
        .map(|&r| {
            indices
                .iter()
                .filter(|&&i| {
                    let y = data.y()[i];
                    y * net.output(&(data.point(i) - &dir * (y * r))) <= 0.0
                })
                .count()
        })
        .collect();
    Ok(AttackReport::assemble(d, means.k(), points, grid, flipped))
}

impl AttackReport {
    /// The report of `points` with per-radius flip counts `flipped`.
    fn assemble(
        d: usize,
        k: usize,
        points: Vec<AttackPoint>,
        grid: Vec<f64>,
        flipped: Vec<usize>,
    ) -> Self {
        // Points that never flip count as +∞ in the median.
        let mut radii: Vec<f64> = points
            .iter()
            .map(|p| p.critical_radius.unwrap_or(f64::INFINITY))
            .collect();
        radii.sort_by(f64::total_cmp);
        let median = (!radii.is_empty())
            .then(|| median_sorted(&radii))
            .filter(|m| m.is_finite());
        let n = points.len().max(1) as f64;
        let (s1, s2) = (((d as f64) / k as f64).sqrt(), (d as f64).sqrt());
        Self {
            d,
            k,
            scale_sqrt_d_over_k: s1,
            scale_sqrt_d: s2,
            never_flipped: points
                .iter()
                .filter(|p| p.critical_radius.is_none())
                .count(),
            points,
            flip_rate: flipped.iter().map(|&c| c as f64 / n).collect(),
            flipped,
            grid,
            median,
            median_over_sqrt_d_over_k: median.map(|m| m / s1),
            median_over_sqrt_d: median.map(|m| m / s2),
        }
    }

    /// Combines reports on disjoint point sets (shards) of one attack into
    /// the report of their union, points in index order.
    pub fn merge(parts: Vec<AttackReport>) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| Error::param("shards", "no attack reports to merge"))?;
        let (d, k, grid) = (first.d, first.k, first.grid.clone());
        let mut flipped = vec![0; grid.len()];
        let mut points = Vec::new();
        for p in parts {
            if p.d != d || p.k != k || p.grid != grid {
                return Err(Error::Mismatch(
                    "attack reports with different d, k or radius grid".into(),
                ));
            }
            flipped
                .iter_mut()
                .zip(&p.flipped)
                .for_each(|(a, b)| *a += b);
            points.extend(p.points);
        }
        points.sort_by_key(|p| p.index);
        Ok(Self::assemble(d, k, points, grid, flipped))
    }
}
