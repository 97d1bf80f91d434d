//! Prometheus text exposition of a stats [`Snapshot`], for the `/metrics`
//! endpoint and `blipmqctl stats --prometheus`.

use std::fmt::Write;

use crate::stats::{Counter, Snapshot};

/// The content type of [`render_prometheus`] output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `snapshot` in the Prometheus text exposition format (version
/// 0.0.4, content type `text/plain; version=0.0.4`).
///
/// Every [`Counter`] becomes one metric family, `# HELP` and `# TYPE` lines
/// then one sample per worker labelled `worker="N"`; counters are named
/// `blipmq_<name>_total`, gauges `blipmq_<name>`. Two broker-wide gauges
/// follow: `blipmq_workers` and `blipmq_start_time_seconds` (Unix time).
/// Totals are left to PromQL (`sum without (worker) (...)`).
pub fn render_prometheus(snapshot: &Snapshot) -> String {
    let workers = snapshot.workers();
    let mut out = String::with_capacity(Counter::COUNT * (160 + workers * 64));
    for &c in Counter::ALL {
        let name = c.prometheus_name();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {}", escape_help(c.help()));
        let _ = writeln!(out, "# TYPE {name} {}", c.kind().as_str());
        for w in 0..workers {
            let _ = writeln!(out, "{name}{{worker=\"{w}\"}} {}", snapshot.get(w, c));
        }
    }
    let _ = writeln!(
        out,
        "# HELP blipmq_workers Worker threads of the broker.\n\
         # TYPE blipmq_workers gauge\n\
         blipmq_workers {workers}"
    );
    let start = snapshot.start_unix_nanos();
    let _ = writeln!(
        out,
        "# HELP blipmq_start_time_seconds Start time of the broker since the Unix epoch in seconds.\n\
         # TYPE blipmq_start_time_seconds gauge\n\
         blipmq_start_time_seconds {}.{:09}",
        start / 1_000_000_000,
        start % 1_000_000_000
    );
    out
}

/// Escapes a `# HELP` text: backslash and line feed.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::stats::{Kind, Snapshot};
    use prometheus_parse::{Scrape, Value};

    use super::*;

    fn snapshot() -> Snapshot {
        let workers = (0..3u64)
            .map(|w| {
                Counter::ALL
                    .iter()
                    .map(|&c| (w + 1) * 1000 + c as u64)
                    .collect()
            })
            .collect();
        Snapshot::new(
            42,
            1_700_000_000_123_456_789,
            1_700_000_100_000_000_000,
            workers,
        )
    }

    fn parse(text: &str) -> Scrape {
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
    }

    #[test]
    fn every_sample_parses_with_its_value() {
        let snap = snapshot();
        let text = render_prometheus(&snap);
        let scrape = parse(&text);

        let mut seen: HashMap<(String, String), f64> = HashMap::new();
        for s in &scrape.samples {
            let value = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                ref other => panic!("{}: unexpected value {other:?}", s.metric),
            };
            let worker = s.labels.get("worker").unwrap_or("").to_owned();
            assert!(
                seen.insert((s.metric.clone(), worker), value).is_none(),
                "duplicate sample {}",
                s.metric
            );
        }
        assert_eq!(seen.len(), Counter::COUNT * 3 + 2);

        for &c in Counter::ALL {
            let name = c.prometheus_name();
            assert!(
                scrape.docs.get(&name).is_some_and(|h| h == c.help()),
                "HELP of {name}"
            );
            for w in 0..3 {
                let v = seen[&(name.clone(), w.to_string())];
                assert_eq!(v, snap.get(w, c) as f64, "{name} worker {w}");
            }
            let sample = scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .expect("sample");
            match (c.kind(), &sample.value) {
                (Kind::Counter, Value::Counter(_)) | (Kind::Gauge, Value::Gauge(_)) => {}
                (kind, value) => panic!("{name}: {kind:?} rendered as {value:?}"),
            }
        }
        assert_eq!(seen[&("blipmq_workers".to_owned(), String::new())], 3.0);
        let start = seen[&("blipmq_start_time_seconds".to_owned(), String::new())];
        assert!(
            (start - 1_700_000_000.0 - 0.123_457).abs() < 1e-5,
            "{start}"
        );
    }

    #[test]
    fn layout_of_a_family() {
        let text = render_prometheus(&snapshot());
        let publish = Counter::FramesInPublish;
        let expected = format!(
            "# HELP blipmq_frames_in_publish_total {}\n\
             # TYPE blipmq_frames_in_publish_total counter\n\
             blipmq_frames_in_publish_total{{worker=\"0\"}} {}\n\
             blipmq_frames_in_publish_total{{worker=\"1\"}} {}\n\
             blipmq_frames_in_publish_total{{worker=\"2\"}} {}\n",
            publish.help(),
            1000 + publish as u64,
            2000 + publish as u64,
            3000 + publish as u64,
        );
        assert!(text.contains(&expected), "{text}");
        assert!(text.contains("# TYPE blipmq_connections_open gauge\n"));
        assert!(text.ends_with('\n'));
        // Every name is announced once.
        for &c in Counter::ALL {
            let type_line = format!("# TYPE {} ", c.prometheus_name());
            assert_eq!(text.matches(&type_line).count(), 1, "{type_line}");
        }
    }

    #[test]
    fn large_values_are_exact_integers() {
        let workers = vec![Counter::ALL.iter().map(|_| u64::MAX).collect()];
        let text = render_prometheus(&Snapshot::new(1, 0, 0, workers));
        assert!(text.contains(&format!(
            "blipmq_bytes_in_total{{worker=\"0\"}} {}\n",
            u64::MAX
        )));
        assert!(text.contains("blipmq_start_time_seconds 0.000000000\n"));
        parse(&text);
    }

    #[test]
    fn no_workers_still_valid() {
        let text = render_prometheus(&Snapshot::new(1, 0, 0, Vec::new()));
        let scrape = parse(&text);
        assert_eq!(scrape.samples.len(), 2);
    }

    #[test]
    fn help_escaping() {
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
