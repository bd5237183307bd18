//! SVG figures of the `reproduce` report (plotters, SVG backend, rendered to
//! a string and written atomically).

use crate::error::{Error, Result};
use crate::experiment::sweep::{Report, Row};
use crate::io::tensors::write_atomic;
use plotters::prelude::*;
use std::path::Path;

const KINDS: [(&str, RGBColor); 3] = [
    ("GD", RGBColor(31, 119, 180)),
    ("polished", RGBColor(214, 39, 40)),
    ("robust", RGBColor(44, 160, 44)),
];

pub(crate) fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Numerical(format!("plotting failed: {e:?}"))
}

/// Renders with `draw` into an SVG string and writes it to `path`.
pub(crate) fn svg(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (860, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    write_atomic(path, buf.as_bytes())
}

fn kind<'a>(row: &'a Row, name: &str) -> Option<&'a crate::experiment::sweep::KindResult> {
    row.kinds.iter().find(|(n, _)| n == name).map(|(_, k)| k)
}

/// Mean flip rate against ‖z‖/√(d/k) for each kind, averaged over rows.
fn flip_rate(rep: &Report, path: &Path) -> Result<()> {
    let xmax = rep
        .rows
        .iter()
        .flat_map(|r| {
            r.kinds
                .iter()
                .flat_map(|(_, k)| k.flip_curve.last().map(|p| p.0))
        })
        .fold(1.0, f64::max);
    svg(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Universal attack: flip rate vs ‖z‖ / √(d/k)",
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..xmax, 0.0..1.02)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("‖z‖ / √(d/k)")
            .y_desc("fraction of test points flipped")
            .draw()
            .map_err(plot_err)?;
        for (name, color) in KINDS {
            for (i, row) in rep.rows.iter().enumerate() {
                let Some(k) = kind(row, name) else { continue };
                let series = chart
                    .draw_series(LineSeries::new(
                        k.flip_curve.iter().copied(),
                        color.mix(0.6).stroke_width(2),
                    ))
                    .map_err(plot_err)?;
                if i == 0 {
                    series.label(name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                    });
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)
    })
}

/// Round tick values (1, 2, 3, 5, 7 per decade) inside [lo, hi].
pub(crate) fn nice_points(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 3.0, 5.0, 7.0] {
            let v = m * decade;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// Median critical universal ‖z‖ against √(d/k), log–log, with the fitted slopes.
fn critical(rep: &Report, path: &Path) -> Result<()> {
    let pts: Vec<KindPoint> = KINDS
        .iter()
        .flat_map(|&(name, color)| {
            rep.rows.iter().filter_map(move |r| {
                kind(r, name)?
                    .universal_median
                    .map(|m| (name, color, r.sqrt_d_over_k, m))
            })
        })
        .collect();
    let (xlo, xhi) = pts
        .iter()
        .fold((f64::INFINITY, 0.0f64), |a, p| (a.0.min(p.2), a.1.max(p.2)));
    let (ylo, yhi) = pts
        .iter()
        .fold((f64::INFINITY, 0.0f64), |a, p| (a.0.min(p.3), a.1.max(p.3)));
    if pts.is_empty() {
        return Ok(());
    }
    svg(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Critical universal ‖z‖ vs √(d/k) (log–log)",
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (xlo * 0.8..xhi * 1.25)
                    .log_scale()
                    .with_key_points(nice_points(xlo * 0.8, xhi * 1.25)),
                (ylo * 0.7..yhi * 1.4)
                    .log_scale()
                    .with_key_points(nice_points(ylo * 0.7, yhi * 1.4)),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("√(d/k)")
            .y_desc("median critical ‖z‖")
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                [(xlo * 0.8, xlo * 0.8), (xhi * 1.25, xhi * 1.25)],
                BLACK.mix(0.4),
            ))
            .map_err(plot_err)?
            .label("‖z‖ = √(d/k)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (name, color) in KINDS {
            let slope = rep
                .slopes
                .iter()
                .find(|s| s.kind == name)
                .and_then(|s| s.fit);
            let label = match slope {
                Some((a, e)) => format!("{name} (slope {a:.2} ± {e:.2})"),
                None => name.to_string(),
            };
            scatter(&mut chart, &pts, name, color, label)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// A point of a scatter: kind, colour, x, y.
type KindPoint<'a> = (&'a str, RGBColor, f64, f64);

/// The points of one kind as filled circles, with `label` in the legend.
fn scatter<'a, DB: DrawingBackend + 'a, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    pts: &[KindPoint],
    name: &str,
    color: RGBColor,
    label: String,
) -> Result<()> {
    chart
        .draw_series(
            pts.iter()
                .filter(|p| p.0 == name)
                .map(|p| Circle::new((p.2, p.3), 5, color.filled())),
        )
        .map_err(plot_err)?
        .label(label)
        .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    Ok(())
}

/// The legend box at `pos`.
fn legend<'a, DB: DrawingBackend + 'a, X: Ranged<ValueType = f64>, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    pos: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

/// Histograms of the certified exact distances over √d/2 (the robust net's
/// scale, so that sizes can share one axis), one colour per kind.
fn histogram(rep: &Report, path: &Path) -> Result<()> {
    let all: Vec<(usize, f64)> = KINDS
        .iter()
        .enumerate()
        .flat_map(|(t, (name, _))| {
            rep.rows
                .iter()
                .filter_map(move |r| Some((kind(r, name)?, r.sqrt_d / 2.0)))
                .flat_map(move |(k, half)| k.distances.iter().map(move |&d| (t, d / half)))
        })
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let hi = all.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05;
    let bins = 30usize;
    let width = hi / bins as f64;
    let mut counts = vec![vec![0usize; bins]; KINDS.len()];
    for &(t, d) in &all {
        counts[t][((d / width) as usize).min(bins - 1)] += 1;
    }
    let top = counts.iter().flatten().copied().max().unwrap_or(1) as f64;
    svg(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Certified minimal ℓ2 flip distances, in units of √d/2",
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..hi, 0.0..top * 1.1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("exact distance to a sign flip / (√d/2)")
            .y_desc("test points")
            .draw()
            .map_err(plot_err)?;
        for (t, (name, color)) in KINDS.iter().enumerate() {
            let third = width / 3.0;
            chart
                .draw_series(
                    counts[t]
                        .iter()
                        .enumerate()
                        .filter(|(_, &c)| c > 0)
                        .map(|(b, &c)| {
                            let x0 = b as f64 * width + t as f64 * third;
                            Rectangle::new([(x0, 0.0), (x0 + third, c as f64)], color.filled())
                        }),
                )
                .map_err(plot_err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)
    })
}

/// Universal radius / √(d/k) against the A3 ratio, log–log: cells inside
/// the hypotheses (ratio ≤ 1) and outside on one set of axes. The polished
/// kind shows certified KKT nets only.
fn regimes(rep: &Report, path: &Path) -> Result<()> {
    let pts: Vec<KindPoint> = KINDS
        .iter()
        .flat_map(|&(name, color)| {
            rep.rows.iter().filter_map(move |r| {
                if name == "polished" && !r.kkt_certified {
                    return None;
                }
                let m = kind(r, name)?.universal_median?;
                (r.assumption_ratio > 0.0).then_some((
                    name,
                    color,
                    r.assumption_ratio,
                    m / r.sqrt_d_over_k,
                ))
            })
        })
        .collect();
    if pts.is_empty() {
        return Ok(());
    }
    let span = |f: fn(&KindPoint) -> f64| {
        pts.iter()
            .map(f)
            .fold((f64::INFINITY, 0.0f64), |a, v| (a.0.min(v), a.1.max(v)))
    };
    let (x0, x1) = span(|p| p.2);
    let (y0, y1) = span(|p| p.3);
    let (x0, x1) = (x0.min(0.9) * 0.8, x1.max(1.1) * 1.25);
    let (y0, y1) = (y0 * 0.7, y1 * 1.4);
    svg(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Universal radius / √(d/k) against Assumption 2.2(3)'s ratio",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (x0..x1).log_scale().with_key_points(nice_points(x0, x1)),
                (y0..y1).log_scale().with_key_points(nice_points(y0, y1)),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("A3 ratio lhs/rhs at C_A = 1 (≤ 1: inside the hypotheses)")
            .y_desc("critical ‖z‖ / √(d/k)")
            .x_label_formatter(&|v| format!("{v:.2}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new([(1.0, y0), (1.0, y1)], BLACK.mix(0.5)))
            .map_err(plot_err)?
            .label("ratio = 1")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        for (name, color) in KINDS {
            let label = if name == "polished" {
                "certified KKT"
            } else {
                name
            };
            scatter(&mut chart, &pts, name, color, label.to_string())?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Writes all figures into `dir`.
pub fn write_all(rep: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::File {
        path: dir.display().to_string(),
        msg: e.to_string(),
    })?;
    flip_rate(rep, &dir.join("flip_rate.svg"))?;
    critical(rep, &dir.join("critical_vs_scale.svg"))?;
    histogram(rep, &dir.join("distance_hist.svg"))?;
    regimes(rep, &dir.join("regimes.svg"))
}
