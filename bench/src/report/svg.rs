//! Hand-written SVG line charts: throughput by payload size, latency
//! percentiles by rate. Logarithmic y axes (the figures span decades).

use std::fmt::Write as _;

use super::trials::PERCENTILES;
use super::{human_rate, Report, RunResult, Status};
use crate::brokers::BrokerKind;
use crate::scenarios::{size_label, PAYLOADS, TOPOLOGIES};

fn color(kind: BrokerKind) -> &'static str {
    match kind {
        BrokerKind::Blipmq => "#1f77b4",
        BrokerKind::Nats => "#2ca02c",
        BrokerKind::Redis => "#d62728",
    }
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Series {
    kind: BrokerKind,
    points: Vec<Option<f64>>,
}

const PANEL_W: f64 = 470.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_B: f64 = 40.0;
const MARGIN_T: f64 = 30.0;
const MARGIN_R: f64 = 20.0;

fn axis_label(value: f64, unit: &str) -> String {
    if unit == "µs" {
        if value >= 1000.0 {
            format!("{} ms", human_rate(value / 1000.0))
        } else {
            format!("{value} µs")
        }
    } else {
        format!("{}{unit}", human_rate(value))
    }
}

/// One panel at (x, y): categories along x, a line per series.
fn panel(
    svg: &mut String,
    x: f64,
    y: f64,
    title: &str,
    categories: &[String],
    series: &[Series],
    unit: &str,
) {
    let plot_x = x + MARGIN_L;
    let plot_y = y + MARGIN_T;
    let plot_w = PANEL_W - MARGIN_L - MARGIN_R;
    let plot_h = PANEL_H - MARGIN_T - MARGIN_B;
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        x + PANEL_W / 2.0,
        y + 18.0,
        escape(title)
    );
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().flatten().copied())
        .filter(|v| *v > 0.0)
        .collect();
    let _ = writeln!(
        svg,
        r##"<rect x="{plot_x:.1}" y="{plot_y:.1}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#888"/>"##
    );
    if values.is_empty() {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#888">no successful runs</text>"##,
            plot_x + plot_w / 2.0,
            plot_y + plot_h / 2.0
        );
        return;
    }
    let lo = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let mut hi = values.iter().copied().fold(0.0, f64::max).log10().ceil();
    if hi <= lo {
        hi = lo + 1.0;
    }
    let y_of = |v: f64| plot_y + plot_h - (v.log10() - lo) / (hi - lo) * plot_h;
    let step = plot_w / categories.len() as f64;
    let x_of = |i: usize| plot_x + step * (i as f64 + 0.5);

    // Grid: every power of ten, and 2 and 5 times it when the range is short.
    let mut decade = lo as i32;
    while decade as f64 <= hi {
        let base = 10f64.powi(decade);
        for (mult, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let v = base * mult;
            if v.log10() > hi + 1e-9 || (!major && hi - lo > 3.0) {
                continue;
            }
            let gy = y_of(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{plot_x:.1}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="{}" stroke-width="1"/>"##,
                plot_x + plot_w,
                if major { "#ccc" } else { "#eee" }
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
                plot_x - 5.0,
                gy + 4.0,
                escape(&axis_label(v, unit))
            );
        }
        decade += 1;
    }
    for (i, category) in categories.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            x_of(i),
            plot_y + plot_h + 16.0,
            escape(category)
        );
    }
    for s in series {
        let mut path = String::new();
        for (i, point) in s.points.iter().enumerate() {
            match point {
                Some(v) if *v > 0.0 => {
                    let cmd = if path.is_empty() || s.points[i - 1].is_none() {
                        'M'
                    } else {
                        'L'
                    };
                    let _ = write!(path, "{cmd}{:.1},{:.1} ", x_of(i), y_of(*v));
                }
                _ => {}
            }
        }
        if !path.is_empty() {
            let _ = writeln!(
                svg,
                r#"<path d="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                path.trim_end(),
                color(s.kind)
            );
        }
        for (i, point) in s.points.iter().enumerate() {
            if let Some(v) = point.filter(|v| *v > 0.0) {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}: {}</title></circle>"#,
                    x_of(i),
                    y_of(v),
                    color(s.kind),
                    s.kind.label(),
                    escape(&axis_label(v, unit))
                );
            }
        }
    }
}

/// An SVG document's opening: its size, a white page and the title.
pub(super) fn open_document(width: f64, height: f64, title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{:.1}" y="22" font-size="16" font-weight="bold" text-anchor="middle">{}</text>
"#,
        width / 2.0,
        escape(title)
    )
}

fn document(title: &str, kinds: &[BrokerKind], cols: usize, rows: usize, body: &str) -> String {
    let width = PANEL_W * cols as f64;
    let height = PANEL_H * rows as f64 + 60.0;
    let mut svg = open_document(width, height, title);
    let mut lx = width / 2.0 - kinds.len() as f64 * 55.0;
    for &kind in kinds {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="32" width="14" height="4" fill="{}"/><text x="{:.1}" y="38" font-size="12">{}</text>"#,
            color(kind),
            lx + 18.0,
            kind.label()
        );
        lx += 110.0;
    }
    let _ = writeln!(svg, r#"<g transform="translate(0,50)">"#);
    svg += body;
    svg += "</g>\n</svg>\n";
    svg
}

fn ok_figure(
    result: Option<&RunResult>,
    figure: impl Fn(&RunResult) -> Option<f64>,
) -> Option<f64> {
    result.filter(|r| r.status == Status::Ok).and_then(figure)
}

/// Throughput by payload size, one panel per publisher/subscriber layout.
/// `mb` chooses MB/s instead of messages/s.
pub fn throughput(report: &Report, mb: bool) -> Option<String> {
    let kinds = report.broker_kinds();
    let mut body = String::new();
    let mut drawn = 0usize;
    for (pubs, subs) in TOPOLOGIES {
        let names: Vec<String> = PAYLOADS
            .iter()
            .map(|&payload| format!("tp-{pubs}x{subs}-{}", size_label(payload)))
            .collect();
        if !names
            .iter()
            .any(|n| report.scenarios.iter().any(|s| &s.name == n))
        {
            continue;
        }
        let series = kinds
            .iter()
            .map(|&kind| Series {
                kind,
                points: names
                    .iter()
                    .map(|name| {
                        ok_figure(report.result(name, kind), |r| {
                            if mb {
                                r.mb_per_sec
                            } else {
                                r.msgs_per_sec
                            }
                        })
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        let categories: Vec<String> = PAYLOADS.iter().map(|&p| size_label(p)).collect();
        let x = PANEL_W * (drawn % 2) as f64;
        let y = PANEL_H * (drawn / 2) as f64;
        let title = format!("{pubs} pub → {subs} sub{}", if subs > 1 { "s" } else { "" });
        panel(
            &mut body,
            x,
            y,
            &title,
            &categories,
            &series,
            if mb { " MB/s" } else { "/s" },
        );
        drawn += 1;
    }
    if drawn == 0 {
        return None;
    }
    let title = if mb {
        "Delivered payload MB/s by payload size (log scale)"
    } else {
        "Delivered messages/s by payload size (log scale)"
    };
    Some(document(title, &kinds, 2, drawn.div_ceil(2), &body))
}

/// Latency percentiles, one panel per latency scenario: the medians over
/// its trials.
pub fn latency(report: &Report) -> Option<String> {
    let kinds = report.broker_kinds();
    let mut body = String::new();
    for (drawn, summary) in report.latency_trials.iter().enumerate() {
        let series = kinds
            .iter()
            .map(|&kind| Series {
                kind,
                points: (0..PERCENTILES.len())
                    .map(|i| {
                        summary
                            .broker(kind)
                            .and_then(|t| t.latency_us[i].spread)
                            .map(|s| s.median)
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        let categories: Vec<String> = PERCENTILES.iter().map(|l| l.to_string()).collect();
        let x = PANEL_W * (drawn % 2) as f64;
        let y = PANEL_H * (drawn / 2) as f64;
        panel(
            &mut body,
            x,
            y,
            &summary.scenario,
            &categories,
            &series,
            "µs",
        );
    }
    let drawn = report.latency_trials.len();
    if drawn == 0 {
        return None;
    }
    Some(document(
        "One-way latency percentiles, medians over the trials (log scale)",
        &kinds,
        2,
        drawn.div_ceil(2),
        &body,
    ))
}
