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
        "Regime `{}`; n = {}·k, widths = {:?}·k, seeds = {:?}, {} exact distances per net (at most {} branch-and-bound nodes each), {} polish stopping at its first certified stage (safety limit {} L-BFGS iterations). Run time {:.0} s.\n\n",
        rep.config.regime, rep.config.n_per_cluster, rep.config.width_factors, rep.config.seeds, rep.config.distance_points,
        rep.config.distance_max_nodes, rep.config.polish_mode.name(), rep.config.polish_iteration_budget, rep.seconds
    ));
    s.push_str(&format!("The audit uses log base {}. The A3 ratio is Assumption 2.2(3)'s lhs/rhs at C_A = 1 (> 1: it fails); max C_A = 1/ratio is the largest C_A for which it holds. The paper's C_A is \"sufficiently large\", so `hypotheses` (Assumption 2.2 and P1–P6 hold at C_A = C_P = 1, i.e. max C_A ≥ 1) is a convention; `boundary` = they do not but the ratio is in [0.5, 2].\n\n", rep.log_base.name()));
    s.push_str("`univ` is the median exact critical ‖z‖ along Σ y_q μ_q (Theorem 4.2's quantity); `dist` the median certified minimal ℓ2 flip distance (Theorem 4.1's), over the test points whose distance is `exact` and which the net classifies correctly — a distance marked `(e excl.)` left e points out, counted, never mixed in. `robust/KKT` is the ratio of the two nets' exact distances on the same points, median and 95% bootstrap interval over points. report.json holds every point's `universal` and `distance`.\n\n");
    s.push_str(&table(rep));
    s.push_str("\nA KKT column marked ⚠ holds a polished net the certifier did not pass (or none: a row marked FAILED says why); it is left out of the `polished` slope and of the verdict.\n");
    s.push_str(&slopes_section(rep));
    s.push_str(&verdict_section(rep));
    s.push_str("\nFigures: `figures/flip_rate.svg`, `figures/critical_vs_scale.svg`, `figures/distance_hist.svg`, `figures/regimes.svg` (radius / √(d/k) against the A3 ratio).\n");
    s
}

fn table(rep: &Report) -> String {
    let mut s = String::from("| k | d | σ | n | width | seed | regime | max C_A | GD steps (loss) | test err | KKT ε_rel (δ_rel) | cos(GD, KKT) | GD univ | GD dist | KKT univ | KKT dist | robust univ | robust dist | √(d/k) | √d/2 | robust/KKT dist [95%] |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rep.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} ({:.1e}) | {} | {} ({}){} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |\n",
            r.k, r.d, r.sigma, r.n, r.width, r.seed, r.regime, r.max_c_a, r.gd_steps, r.gd_final_loss, opt(r.test_error, 3), sci(r.kkt_relative_upper),
            sci(r.kkt_relative_complementarity), if r.kkt_certified { "" } else { " ⚠ NOT certified KKT" }, opt(r.gd_kkt_cosine, 3),
            opt(r.universal_median, 2), dist(r, "GD", r.distance_median),
            opt(r.kkt_universal_median, 2), dist(r, "polished", r.kkt_distance_median), opt(r.robust_universal_median, 2),
            dist(r, "robust", r.robust_distance_median), r.sqrt_d_over_k, r.sqrt_d / 2.0,
            r.error.as_ref().map_or(r.edge.clone(), |e| format!("FAILED: {e}"))
        ));
    }
    s
}

/// A distance median, marked with how many of its points were left out
/// (not `exact`, or misclassified), so a cell never passes for complete.
fn dist(row: &Row, kind: &str, median: Option<f64>) -> String {
    let excluded = row
        .kinds
        .iter()
        .find(|(n, _)| n == kind)
        .map_or(0, |(_, k)| k.distance_excluded);
    match excluded {
        0 => opt(median, 2),
        e => format!("{} ({e} excl.)", opt(median, 2)),
    }
}

fn slopes_section(rep: &Report) -> String {
    let mut s = String::from("\n## Fitted slopes of log(median universal ‖z‖) against log √(d/k)\n\nRows, not independent datasets: the two widths of one dataset share it, so the standard errors are optimistic.\n\n| kind | slope | std. error | cells |\n|---|---|---|---|\n");
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

fn interval(i: Option<crate::experiment::edge::Interval>) -> String {
    i.map_or("—".into(), |i| {
        format!("{:.3} [{:.3}, {:.3}]", i.median, i.lo, i.hi)
    })
}

fn verdict_section(rep: &Report) -> String {
    let mut s = String::from("\n## Verdict by regime\n\nTheorem 4.2: certified KKT nets are flipped along the universal direction at ≤ C·√(d/k) (C = the largest KKT univ/√(d/k)). Theorem 4.1: the robust net's exact distance is ≥ c·√d (c = the smallest robust dist/√d). Spread is (min, median, max) over rows.\n\n| regime | rows | certified KKT | C (min, median, max) | c (min, median, max) | exponent of robust/KKT in k [95%] |\n|---|---|---|---|---|---|\n");
    let fmt3 = |t: Option<(f64, f64, f64)>, head: fn((f64, f64, f64)) -> f64| {
        t.map_or("—".into(), |x| {
            format!("{:.3} ({:.3}, {:.3}, {:.3})", head(x), x.0, x.1, x.2)
        })
    };
    let all = verdicts(rep);
    for v in &all {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            v.regime,
            v.rows,
            v.certified,
            fmt3(v.big_c, |x| x.2),
            fmt3(v.small_c, |x| x.0),
            interval(v.exponent)
        ));
    }
    s.push_str("\nThe double edge: the robust net's exact distance over a certified KKT net's, on the same test points. One value per dataset (the mean of its widths' medians), median and 95% bootstrap interval over datasets. The constructions predict √k/2 (robust √d/2 against KKT ≈ √(d/k)): no advantage at k = 4, growing like k^{1/2}.\n\n| regime | k | datasets | robust/KKT [95%] | √k/2 |\n|---|---|---|---|---|\n");
    for v in &all {
        for e in &v.edge {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.3} |\n",
                v.regime,
                e.k,
                e.datasets,
                interval(e.ratio),
                e.predicted
            ));
        }
    }
    s
}

/// Writes `report.md`, `report.json` and the figures into `dir`.
pub fn write(rep: &Report, dir: &Path) -> Result<()> {
    write_json(&dir.join("report.json"), rep)?;
    write_atomic(&dir.join("report.md"), markdown(rep).as_bytes())?;
    crate::experiment::figures::write_all(rep, &dir.join("figures"))
}
