//! A hand-written SVG grouped bar chart: one group per scenario, one bar per
//! column (a backend, a transport, a broker), on a linear axis from zero so
//! that bar heights compare as ratios do.

use std::fmt::Write as _;

use super::human_rate;
use super::svg::{escape, open_document};

/// One bar per category; `None`: no figure (a failed or missing run).
pub struct BarSeries {
    pub label: String,
    pub color: &'static str,
    pub values: Vec<Option<f64>>,
}

/// Colours for series in order.
pub const PALETTE: [&str; 5] = ["#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b"];

const GROUP_W: f64 = 200.0;
const PLOT_H: f64 = 300.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 50.0;

/// The chart, or None when no series has a figure.
pub fn grouped(
    title: &str,
    unit: &str,
    categories: &[String],
    series: &[BarSeries],
) -> Option<String> {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    if max <= 0.0 || categories.is_empty() {
        return None;
    }
    let top = max * 1.1;
    let width = LEFT + GROUP_W * categories.len() as f64 + 20.0;
    let height = TOP + PLOT_H + BOTTOM;
    let y_of = |v: f64| TOP + PLOT_H * (1.0 - v / top);
    let mut svg = open_document(width, height, title);
    let mut legend_x = LEFT;
    for s in series {
        let _ = writeln!(
            svg,
            r#"<rect x="{legend_x:.1}" y="36" width="12" height="12" fill="{}"/><text x="{:.1}" y="46" font-size="12">{}</text>"#,
            s.color,
            legend_x + 16.0,
            escape(&s.label)
        );
        legend_x += 24.0 + 7.0 * s.label.chars().count() as f64;
    }
    for tick in 0..=4 {
        let value = top * f64::from(tick) / 4.0;
        let y = y_of(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}{unit}</text>"##,
            width - 20.0,
            LEFT - 6.0,
            y + 4.0,
            human_rate(value)
        );
    }
    let bar_w = (GROUP_W - 40.0) / series.len().max(1) as f64;
    for (c, category) in categories.iter().enumerate() {
        let group_x = LEFT + GROUP_W * c as f64 + 20.0;
        for (i, s) in series.iter().enumerate() {
            let x = group_x + bar_w * i as f64;
            match s.values.get(c).copied().flatten() {
                Some(value) => {
                    let y = y_of(value);
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}{unit}</title></rect>"#,
                        bar_w - 4.0,
                        TOP + PLOT_H - y,
                        s.color,
                        escape(&s.label),
                        human_rate(value)
                    );
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                        x + (bar_w - 4.0) / 2.0,
                        y - 3.0,
                        human_rate(value)
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">n/a</text>"#,
                        x + bar_w / 2.0,
                        TOP + PLOT_H - 4.0
                    );
                }
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            group_x + (GROUP_W - 40.0) / 2.0,
            TOP + PLOT_H + 20.0,
            escape(category)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        TOP + PLOT_H,
        width - 20.0,
        TOP + PLOT_H
    );
    svg += "</svg>\n";
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, values: Vec<Option<f64>>) -> BarSeries {
        BarSeries {
            label: label.into(),
            color: PALETTE[0],
            values,
        }
    }

    #[test]
    fn bars_are_as_tall_as_their_values_and_missing_ones_say_so() {
        let categories = vec!["a".to_string(), "b".to_string()];
        let svg = grouped(
            "t",
            "/s",
            &categories,
            &[
                series("x", vec![Some(100.0), None]),
                series("y", vec![Some(50.0), Some(25.0)]),
            ],
        )
        .unwrap();
        let heights: Vec<f64> = svg
            .lines()
            .filter(|l| l.starts_with("<rect x=") && l.contains("<title>"))
            .map(|l| {
                let at = l.find("height=\"").unwrap() + 8;
                l[at..].split('"').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 3);
        assert!((heights[0] / heights[1] - 2.0).abs() < 0.01, "{heights:?}");
        assert!((heights[1] / heights[2] - 2.0).abs() < 0.01, "{heights:?}");
        assert_eq!(svg.matches(">n/a<").count(), 1);
        assert!(grouped("t", "/s", &categories, &[series("x", vec![None, None])]).is_none());
    }
}
