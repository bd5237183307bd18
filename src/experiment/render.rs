//! The report's Markdown and the files of a `reproduce` directory:
//! `report.md`, `report.json`, `figures/*.svg`.

use crate::error::Result;
use crate::experiment::sweep::{verdicts, Report, Row};
use crate::io::tensors::{write_atomic, write_json};
use std::path::Path;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn sci(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{x:.2e}"))
}

/// The Markdown report.
pub fn markdown(rep: &Report) -> String {
    let mut s = String::from("# kktcert reproduce\n\n");
    s.push_str(&format!(
        "Regime `{}`; n = {}·k, widths = {:?}·k, seeds = {:?}, {} exact distances per net (at most {} branch-and-bound nodes each; `bounded` results count with their upper end), {} polish stopping at its first certified stage (safety limit {} L-BFGS iterations). Run time {:.0} s.\n\n",
        rep.config.regime, rep.config.n_per_cluster, rep.config.width_factors, rep.config.seeds, rep.config.distance_points,
        rep.config.distance_max_nodes, rep.config.polish_mode.name(), rep.config.polish_iteration_budget, rep.seconds
    ));
    s.push_str("Medians are raw Euclidean lengths; `univ` is the exact critical ‖z‖ along Σ y_q μ_q, `dist` the certified minimal ℓ2 flip distance (upper end of the bracket). The A3 ratio is Assumption 2.2(3)'s lhs/rhs at C_A = 1 (> 1: the assumption fails); max C_A = 1/ratio is the largest constant for which it would still hold (the ratio grows linearly in C_A, so the issue's \"smallest C_A for which A3 holds\" is this bound: every C_A below it passes). Regime: `hypotheses` = Assumption 2.2 and P1–P6 hold; `boundary` = they do not but the ratio is in [0.5, 2].\n\n");
    s.push_str(&table(rep));
    s.push_str("\nA KKT column marked ⚠ holds a polished net the certifier did not pass (or none: a row marked FAILED says why): its numbers describe a near-KKT net, and it is left out of the `polished` slope and of the verdict. A distance marked `(b bounded)` has b points whose search hit the node limit: the median uses their proven upper ends.\n");
    s.push_str(&slopes_section(rep));
    s.push_str(&verdict_section(rep));
    s.push_str("\nFigures: `figures/flip_rate.svg`, `figures/critical_vs_scale.svg`, `figures/distance_hist.svg`, `figures/regimes.svg` (radius / √(d/k) against the A3 ratio).\n");
    s
}

fn table(rep: &Report) -> String {
    let mut s = String::from("| k | d | σ | n | width | seed | regime | test err | KKT ε_rel (δ_rel) | GD univ | GD dist | KKT univ | KKT dist | robust univ | robust dist | √(d/k) | √d/2 | A3 ratio | max C_A | P1–P6 | edge observed |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rep.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ({}){} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            r.k, r.d, r.sigma, r.n, r.width, r.seed, r.regime, opt(r.test_error, 3), sci(r.kkt_relative_upper),
            sci(r.kkt_relative_complementarity), if r.kkt_certified { "" } else { " ⚠ NOT certified KKT" }, opt(r.universal_median, 2), dist(r, "GD", r.distance_median),
            opt(r.kkt_universal_median, 2), dist(r, "polished", r.kkt_distance_median), opt(r.robust_universal_median, 2),
            dist(r, "robust", r.robust_distance_median), r.sqrt_d_over_k, r.sqrt_d / 2.0, r.assumption_ratio, 1.0 / r.assumption_ratio,
            match r.data_nice { Some(true) => "hold", Some(false) => "fail", None => "—" },
            r.error.as_ref().map_or(r.edge.clone(), |e| format!("FAILED: {e}"))
        ));
    }
    s
}

/// A distance median, marked with how many of its points stayed `bounded`
/// (their upper ends enter the median), so a cell never passes for exact.
fn dist(row: &Row, kind: &str, median: Option<f64>) -> String {
    let bounded = row
        .kinds
        .iter()
        .find(|(n, _)| n == kind)
        .map_or(0, |(_, k)| k.distance_bounded);
    match bounded {
        0 => opt(median, 2),
        b => format!("{} ({b} bounded)", opt(median, 2)),
    }
}

fn slopes_section(rep: &Report) -> String {
    let mut s = String::from("\n## Fitted slopes of log(median universal ‖z‖) against log √(d/k)\n\n| kind | slope | std. error | cells |\n|---|---|---|---|\n");
    for sl in &rep.slopes {
        let cells = if sl.kind == "polished" {
            format!("{} (certified KKT only)", sl.cells)
        } else {
            sl.cells.to_string()
        };
        match sl.fit {
            Some((a, e)) => s.push_str(&format!("| {} | {a:.3} | {e:.3} | {cells} |\n", sl.kind)),
            None => s.push_str(&format!("| {} | — | — | {cells} |\n", sl.kind)),
        }
    }
    s
}

fn verdict_section(rep: &Report) -> String {
    let mut s = String::from("\n## Verdict by regime\n\nC: certified KKT nets are flipped along the universal direction at ≤ C·√(d/k) (C = the largest KKT univ/√(d/k) in the regime); c: the robust net needs ≥ c·√d (c = the smallest robust univ/√d). Spread is (min, median, max) over rows. The double edge is visible where c·√k > C, i.e. the robust radius exceeds every trained one.\n\n| regime | rows | certified KKT | C (min, median, max) | c (min, median, max) | c·√k_min / C |\n|---|---|---|---|---|---|\n");
    let kmin = rep.rows.iter().map(|r| r.k).min().unwrap_or(1) as f64;
    // The headline is the constant the claim needs: the largest C, the smallest c.
    let fmt3 = |t: Option<(f64, f64, f64)>, head: fn((f64, f64, f64)) -> f64| {
        t.map_or("—".into(), |x| {
            format!("{:.3} ({:.3}, {:.3}, {:.3})", head(x), x.0, x.1, x.2)
        })
    };
    for v in verdicts(rep) {
        let sep = match (v.big_c, v.small_c) {
            (Some(bc), Some(sc)) => format!("{:.2}", sc.0 * kmin.sqrt() / bc.2),
            _ => "—".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            v.regime,
            v.rows,
            v.certified,
            fmt3(v.big_c, |x| x.2),
            fmt3(v.small_c, |x| x.0),
            sep
        ));
    }
    s
}

/// Writes `report.md`, `report.json` and the figures into `dir`.
pub fn write(rep: &Report, dir: &Path) -> Result<()> {
    write_json(&dir.join("report.json"), rep)?;
    write_atomic(&dir.join("report.md"), markdown(rep).as_bytes())?;
    crate::experiment::figures::write_all(rep, &dir.join("figures"))
}
