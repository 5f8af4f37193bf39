//! SVG charts of the scaling curves: each figure that varies with a size
//! (users, tables) is drawn beside its baselines, on log-log axes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::Measurement;

/// Where a measurement sits on a chart: the chart's title, the x value and
/// the names of the two series its figures belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Title of the chart; rows with the same title share a chart.
    pub chart: String,
    /// What x is (e.g. "users").
    pub x_label: String,
    /// The size this row was measured at.
    pub x: f64,
    /// Series name of [`Measurement::ours`].
    pub ours: String,
    /// Series name of [`Measurement::baseline`].
    pub baseline: String,
}

type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// Draws one SVG per chart that has at least two sizes into `dir` and
/// returns the files written.
pub fn draw_charts(rows: &[Measurement], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut charts: BTreeMap<&str, (&str, &str, Series)> = BTreeMap::new();
    for row in rows {
        let Some(curve) = &row.curve else { continue };
        let (_, _, series) = charts.entry(curve.chart.as_str()).or_insert((
            curve.x_label.as_str(),
            row.unit.as_str(),
            Series::new(),
        ));
        for (name, y) in [(&curve.ours, row.ours), (&curve.baseline, row.baseline)] {
            let points = series.entry(name.clone()).or_default();
            if y > 0.0 && !points.iter().any(|(x, _)| *x == curve.x) {
                points.push((curve.x, y));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for (title, (x_label, unit, series)) in charts {
        if series.values().all(|points| points.len() < 2) {
            continue;
        }
        let path = dir.join(format!("{}.svg", slug(title)));
        draw(&path, title, x_label, unit, &series)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    unit: &str,
    series: &Series,
) -> Result<(), Box<dyn std::error::Error>> {
    let all = series.values().flatten();
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x_min, x_max) = (x_min.min(x), x_max.max(x));
        (y_min, y_max) = (y_min.min(y), y_max.max(y));
    }
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_min * 0.8..x_max * 1.25).log_scale(),
            (y_min * 0.5..y_max * 2.0).log_scale(),
        )?;
    let y_format = |v: &f64| human(*v, unit);
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("median (log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&y_format)
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let mut points = points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart.draw_series(PointSeries::of_element(
            points,
            4,
            color.filled(),
            &|point, size, style| Circle::new(point, size, style),
        ))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `v` in the unit that reads best: ns figures as ns, us or ms.
fn human(v: f64, unit: &str) -> String {
    match unit {
        "ns" if v >= 1e6 => format!("{:.3} ms", v / 1e6),
        "ns" if v >= 1e3 => format!("{:.1} us", v / 1e3),
        _ => format!("{v:.0} {unit}"),
    }
}

/// A file name from a title: lower-case letters and digits, `_` between words.
fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(x: f64, ours: f64, baseline: f64) -> Measurement {
        Measurement {
            scenario: "s".into(),
            metric: format!("q, {x} users"),
            ours,
            baseline,
            unit: "ns".into(),
            p95: None,
            curve: Some(Curve {
                chart: "q: latency vs users".into(),
                x_label: "users".into(),
                x,
                ours: "tenantfusion".into(),
                baseline: "MemTable + WHERE".into(),
            }),
        }
    }

    #[test]
    fn draws_one_svg_per_chart_with_every_series() {
        let dir = std::env::temp_dir().join(format!("tf-charts-{}", std::process::id()));
        let rows = [row(10.0, 100.0, 150.0), row(1000.0, 110.0, 900.0)];
        let written = draw_charts(&rows, &dir).unwrap();
        assert_eq!(written, [dir.join("q_latency_vs_users.svg")]);
        let svg = std::fs::read_to_string(&written[0]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("tenantfusion") && svg.contains("MemTable + WHERE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_read_in_the_best_unit() {
        assert_eq!(human(22_032.0, "ns"), "22.0 us");
        assert_eq!(human(1_089_884.0, "ns"), "1.090 ms");
        assert_eq!(human(62.0, "ns"), "62 ns");
    }

    #[test]
    fn a_single_size_draws_nothing() {
        let dir = std::env::temp_dir().join(format!("tf-charts-one-{}", std::process::id()));
        assert!(
            draw_charts(&[row(10.0, 1.0, 2.0)], &dir)
                .unwrap()
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
