//! Certificates along a training path: the Lyu–Li picture, where gradient
//! descent's normalised margin rises and its direction approaches a KKT
//! point of Problem (2), made checkable one checkpoint at a time.
//!
//! A series is a list of checkpoints (files, or directories of
//! `*.safetensors` / `*.onnx` files ordered by their GD step). Each row holds
//! the step, the normalised margin min_i q_i/‖θ‖² (scale-invariant, so
//! comparable along the path) and the ℓ2 certificate of the rescaled net;
//! [`write_path_figure`] draws ε_rel and the margin against the step, log–log.

use crate::error::{Error, Result};
use crate::experiment::figures::{nice_points, plot_err, svg};
use crate::io::checkpoint::{Checkpoint, LoadOptions};
use crate::io::tensors::read_metadata;
use crate::kkt::{certify, Certificate, CertifyOptions, Norm};
use crate::model::data::Dataset;
use crate::model::net::Evaluation;
use plotters::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One checkpoint of a series.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesRow {
    /// Position in the series (the order of the checkpoints given).
    pub index: usize,
    /// The checkpoint's file.
    pub net: String,
    /// GD step, from the checkpoint's `step` metadata.
    pub step: Option<u64>,
    /// Accuracy on the training data.
    pub train_accuracy: f64,
    /// min_i q_i / ‖θ‖², the quantity GD increases.
    pub normalized_margin: f64,
    /// The certificates, one per norm asked for (none when `skipped`).
    pub certificates: Vec<Certificate>,
    /// Why the checkpoint has no certificate: early on a GD path the net
    /// still misclassifies, and Problem (2) has no rescaling of it.
    pub skipped: Option<String>,
}

/// Expands directories into their checkpoint files; the result is ordered
/// by GD step where the files record one (then by name).
pub fn list_checkpoints(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut files: Vec<(Option<u64>, PathBuf)> = std::fs::read_dir(p)
            .map_err(|e| Error::io(p, "list directory", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|q| {
                q.extension()
                    .is_some_and(|e| e == "safetensors" || e == "onnx")
            })
            .map(|q| (step_of(&q), q))
            .collect();
        if files.is_empty() {
            return Err(Error::file(
                p,
                "directory holds no *.safetensors or *.onnx checkpoint",
            ));
        }
        files.sort();
        out.extend(files.into_iter().map(|(_, q)| q));
    }
    Ok(out)
}

/// The GD step a checkpoint records in its metadata, if any (the header
/// only: every checkpoint is loaded once, later, to be certified).
fn step_of(path: &Path) -> Option<u64> {
    read_metadata(path).ok()?.get("step")?.parse().ok()
}

/// Certifies one checkpoint of a series.
pub fn certify_row(
    index: usize,
    path: &Path,
    load: &LoadOptions,
    data: &Dataset,
    norms: &[Norm],
    opts: &CertifyOptions,
) -> Result<SeriesRow> {
    let ck = Checkpoint::load_with(path, load)?;
    let net = ck.homogeneous(path, "certify")?;
    let eval = Evaluation::of(net, data)?;
    let skipped = (eval.errors > 0).then(|| {
        format!(
            "misclassifies {} of {} training points: not yet on the constraint set of Problem (2)",
            eval.errors, eval.n
        )
    });
    let certificates = match skipped {
        Some(_) => Vec::new(),
        None => norms
            .iter()
            .map(|&n| certify(net, data, n, opts))
            .collect::<Result<Vec<_>>>()?,
    };
    Ok(SeriesRow {
        skipped,
        index,
        net: path.display().to_string(),
        step: ck.metadata.get("step").and_then(|s| s.parse().ok()),
        train_accuracy: eval.accuracy,
        normalized_margin: eval.normalized_margin,
        certificates,
    })
}

/// The series as CSV: step, accuracy, normalised margin, ε_rel bracket, δ_rel, verdict.
pub fn csv(rows: &[SeriesRow]) -> String {
    let mut s = String::from(
        "index,step,net,train_accuracy,normalized_margin,relative_lower,relative_upper,relative_complementarity,verdict\n",
    );
    for r in rows {
        let cert = r.certificates.first().map_or(",,,skipped".into(), |c| {
            format!(
                "{:.10e},{:.10e},{:.10e},{:?}",
                c.relative_lower, c.relative_upper, c.relative_complementarity, c.verdict
            )
        });
        s.push_str(&format!(
            "{},{},{},{},{:.10e},{cert}\n",
            r.index,
            r.step.map_or(String::new(), |t| t.to_string()),
            r.net,
            r.train_accuracy,
            r.normalized_margin,
        ));
    }
    s
}

/// Tick values for a log axis: the round ones when there are enough,
/// otherwise five geometrically spaced values (narrow ranges).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let round = nice_points(lo, hi);
    if round.len() >= 3 {
        return round;
    }
    (0..5)
        .map(|i| lo * (hi / lo).powf((i as f64 + 0.5) / 5.0))
        .collect()
}

/// ε_rel (upper end, with the lower end as a band) and the normalised margin
/// against the GD step, log–log, in two panels. Rows without a positive step
/// (the initialisation) or with a misclassifying net are left out.
pub fn write_path_figure(rows: &[SeriesRow], path: &Path) -> Result<()> {
    let pts: Vec<(f64, f64, f64, f64)> = rows
        .iter()
        .filter_map(|r| {
            let t = r.step? as f64;
            let c = r.certificates.first()?;
            (t > 0.0 && r.normalized_margin > 0.0 && c.relative_upper > 0.0).then_some((
                t,
                c.relative_upper,
                c.relative_lower.max(c.relative_upper * 1e-6),
                r.normalized_margin,
            ))
        })
        .collect();
    if pts.len() < 2 {
        return Err(Error::Numerical(format!(
            "{} checkpoints with a positive step and a positive margin; the path figure needs 2",
            pts.len()
        )));
    }
    let span = |vals: Vec<f64>| {
        vals.into_iter()
            .fold((f64::INFINITY, 0.0f64), |a, v| (a.0.min(v), a.1.max(v)))
    };
    let (x0, x1) = span(pts.iter().map(|p| p.0).collect());
    let (e0, e1) = span(pts.iter().flat_map(|p| [p.1, p.2]).collect());
    let (m0, m1) = span(pts.iter().map(|p| p.3).collect());
    let (elo, ehi) = (e0 * 0.7, e1 * 1.4);
    svg(path, |root| {
        let panels = root.split_evenly((2, 1));
        let xs = || {
            (x0 * 0.8..x1 * 1.25)
                .log_scale()
                .with_key_points(nice_points(x0 * 0.8, x1 * 1.25))
        };
        let mut top = ChartBuilder::on(&panels[0])
            .caption(
                "KKT residual along the GD path (log–log)",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(
                xs(),
                (elo..ehi)
                    .log_scale()
                    .with_key_points(nice_points(elo, ehi)),
            )
            .map_err(plot_err)?;
        top.configure_mesh()
            .y_desc("ε_rel (certified)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw()
            .map_err(plot_err)?;
        let blue = RGBColor(31, 119, 180);
        top.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            blue.stroke_width(2),
        ))
        .map_err(plot_err)?;
        top.draw_series(
            pts.iter()
                .map(|p| Circle::new((p.0, p.1), 3, blue.filled())),
        )
        .map_err(plot_err)?;
        top.draw_series(
            pts.iter()
                .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.1)], blue.mix(0.4))),
        )
        .map_err(plot_err)?;
        let mut bottom = ChartBuilder::on(&panels[1])
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                xs(),
                (m0 * 0.8..m1 * 1.25)
                    .log_scale()
                    .with_key_points(log_ticks(m0 * 0.8, m1 * 1.25)),
            )
            .map_err(plot_err)?;
        bottom
            .configure_mesh()
            .x_desc("GD step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("min q / ‖θ‖²")
            .y_label_formatter(&|v| format!("{v:.3}"))
            .draw()
            .map_err(plot_err)?;
        let red = RGBColor(214, 39, 40);
        bottom
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.3)),
                red.stroke_width(2),
            ))
            .map_err(plot_err)?;
        bottom
            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.3), 3, red.filled())))
            .map_err(plot_err)?;
        Ok(())
    })
}
