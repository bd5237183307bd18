//! The hypotheses regime: sweep cells chosen by *searching the audit*, so
//! that the paper's prediction is tested where Assumption 2.2 and P1–P6
//! actually hold, next to cells across the boundary and outside it.
//!
//! For each k the search walks σ down a grid (1, 0.5, 0.25, 0.1) and, for
//! each σ, generates the fixture of every d on a geometric grid (seed
//! `seed`, the sweep's sample sizes) and audits it with the documented
//! constants (C_A = C_P = 1, σ_max = 1, c_bal = 1/3). The first σ — the
//! noisiest — for which some d passes gives the family; chosen in it:
//! * `hypotheses`: the smallest d whose audit passes (A1–A3 and P1–P6);
//! * `boundary`: the largest d below it whose A3 ratio is in (1, 2];
//! * `outside`: the smallest d on the grid, when its ratio exceeds 2
//!   (full sweep only).
//!
//! A3's ratio falls like k·σ·log²d/√d for orthogonal means, so the
//! hypotheses need large d or small σ; the grid's top, d = 102,400, is
//! within reach of one machine because the polish runs in the span form,
//! whose cost does not grow with d.

use crate::error::Result;
use crate::experiment::sweep::{audit_fixture, spec, SearchRow, Size, SweepConfig};
use crate::model::data::{Fixture, FixtureSpec};

/// The d grid of the search: 100·4^j.
const D_GRID: [usize; 5] = [400, 1600, 6400, 25_600, 102_400];

/// Audits one size at `seed` with the sweep's sample sizes.
fn audit_size(size: Size, cfg: &SweepConfig, seed: u64) -> Result<SearchRow> {
    // One test point: the search needs the means and the training set only.
    let fx = Fixture::generate(FixtureSpec {
        n_test: 1,
        ..spec(size, cfg, seed)
    })?;
    let a = audit_fixture(&fx, cfg.log_base)?;
    Ok(SearchRow {
        size,
        a3_ratio: a.a3_ratio(),
        assumption_holds: a.assumption_holds,
        data_nice: a.data_nice,
        chosen: "unused".into(),
    })
}

/// The σ grid, noisiest first.
const SIGMA_GRID: [f64; 4] = [1.0, 0.5, 0.25, 0.1];

/// Searches one (k, σ) family along the d grid and marks the chosen rows.
fn search_family(
    k: usize,
    sigma: f64,
    cfg: &SweepConfig,
    seed: u64,
    outside: bool,
) -> Result<Vec<SearchRow>> {
    let mut rows = D_GRID
        .iter()
        .map(|&d| audit_size(Size { k, d, sigma }, cfg, seed))
        .collect::<Result<Vec<_>>>()?;
    let passes = |r: &SearchRow| r.assumption_holds && r.data_nice == Some(true);
    if let Some(inside) = rows.iter().position(passes) {
        rows[inside].chosen = "hypotheses".into();
        if let Some(b) = (0..inside)
            .rev()
            .find(|&i| rows[i].a3_ratio > 1.0 && rows[i].a3_ratio <= 2.0)
        {
            rows[b].chosen = "boundary".into();
        }
    }
    let found = rows.iter().any(|r| r.chosen == "hypotheses");
    if found && outside && rows[0].a3_ratio > 2.0 && rows[0].chosen == "unused" {
        rows[0].chosen = "outside".into();
    }
    Ok(rows)
}

/// The hypotheses regime's sweep: k ∈ {4, 8}, three seeds (the quick
/// version: k = 4, one seed, its `hypotheses` and `boundary` cells).
pub fn hypotheses(seed: u64, quick: bool) -> Result<SweepConfig> {
    let mut cfg = SweepConfig {
        regime: "hypotheses".into(),
        n_test: 100,
        distance_points: if quick { 4 } else { 6 },
        // Nodes cost O(m²) here (the search runs in the span of W), so a
        // larger deterministic budget is affordable at d = 10⁵.
        distance_max_nodes: 20_000,
        seeds: if quick {
            vec![seed]
        } else {
            vec![seed, seed + 1, seed + 2]
        },
        ..SweepConfig::quick(seed)
    };
    let ks: &[usize] = if quick { &[4] } else { &[4, 8] };
    let mut search = Vec::new();
    for &k in ks {
        for sigma in SIGMA_GRID {
            let rows = search_family(k, sigma, &cfg, seed, !quick)?;
            let found = rows.iter().any(|r| r.chosen == "hypotheses");
            search.extend(rows);
            if found {
                break;
            }
        }
    }
    cfg.sizes = search
        .iter()
        .filter(|r| r.chosen != "unused")
        .map(|r| r.size)
        .collect();
    cfg.search = search;
    Ok(cfg)
}
