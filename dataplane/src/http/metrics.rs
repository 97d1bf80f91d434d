//! Prometheus text exposition of a stats [`Snapshot`], for the `/metrics`
//! endpoint and `blipmqctl stats --prometheus`.
//!
//! prometheus-client's encoder writes the text (format 0.0.4: names, `# HELP`
//! escaping, label escaping, number formatting); [`SnapshotCollector`] hands
//! it the values of one snapshot at scrape time, so the workers' counters
//! stay in the stats segment and nothing is registered twice.

use std::collections::HashMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::stats::{Counter, Kind, Snapshot};

/// The content type of [`render_prometheus`] output.
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Renders `snapshot` in the Prometheus text exposition format (version
/// 0.0.4, content type `text/plain; version=0.0.4`).
///
/// Every [`Counter`] becomes one metric family, `# HELP` and `# TYPE` lines
/// then one sample per worker labelled `worker="N"`; counters are named
/// `blipmq_<name>_total`, gauges `blipmq_<name>`. The in-broker latency is
/// a histogram per worker, `blipmq_message_latency_seconds`, with buckets
/// at powers of two from 1.024 µs to 1.07 s. Two broker-wide gauges
/// follow: `blipmq_workers` and `blipmq_start_time_seconds` (Unix time).
/// Totals are left to PromQL (`sum without (worker) (...)`).
pub fn render_prometheus(snapshot: &Snapshot) -> String {
    render_prometheus_with_xstats(snapshot, Vec::new())
}

/// [`render_prometheus`], then the device's extended statistics (DPDK
/// xstats) as `blipmq_port_xstat{name="..."}`, untyped; nothing for them
/// when `xstats` is empty.
pub fn render_prometheus_with_xstats(snapshot: &Snapshot, xstats: Vec<(String, u64)>) -> String {
    let workers = snapshot.workers();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snapshot: snapshot.clone(),
        xstats,
    }));
    let mut out = String::with_capacity(Counter::COUNT * (160 + workers * 64));
    // Writing to a String cannot fail, and the collector fails only when
    // its writer does.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

/// One scrape's values, encoded when the registry is.
#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Snapshot,
    xstats: Vec<(String, u64)>,
}

/// No exemplars: the types prometheus-client asks for to say so.
const NO_EXEMPLAR: Option<&Exemplar<NoLabelSet, f64>> = None;
const NO_EXEMPLARS: Option<&HashMap<usize, Exemplar<NoLabelSet, f64>>> = None;

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = &self.snapshot;
        let workers = snapshot.workers();
        for &c in Counter::ALL {
            // The encoder adds `_total` to counters, as prometheus_name() has it.
            let name = format!("blipmq_{}", c.name());
            let kind = match c.kind() {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut family = encoder.encode_descriptor(&name, c.help(), None, kind)?;
            for worker in 0..workers {
                let labels = [("worker", worker)];
                let mut sample = family.encode_family(&labels)?;
                let value = snapshot.get(worker, c);
                match c.kind() {
                    Kind::Counter => sample.encode_counter(&value, NO_EXEMPLAR)?,
                    Kind::Gauge => sample.encode_gauge(&value)?,
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "blipmq_message_latency_seconds",
            "In-broker latency of delivered messages: from the read that brought the PUBLISH \
             to the write that handed the message to its subscriber's TCP stack.",
            None,
            MetricType::Histogram,
        )?;
        for worker in 0..workers {
            let latency = snapshot.latency(Some(worker));
            family
                .encode_family(&[("worker", worker)])?
                .encode_histogram(
                    latency.sum_nanos() as f64 / 1e9,
                    latency.count(),
                    &latency.prometheus_buckets(),
                    NO_EXEMPLARS,
                )?;
        }
        encoder
            .encode_descriptor(
                "blipmq_workers",
                "Worker threads of the broker.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(workers as u64))?;
        let start = snapshot.start_unix_nanos() as f64 / 1e9;
        encoder
            .encode_descriptor(
                "blipmq_start_time_seconds",
                "Start time of the broker since the Unix epoch in seconds.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&start)?;
        if self.xstats.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "blipmq_port_xstat",
            "The device's extended statistics (DPDK xstats), by name.",
            None,
            MetricType::Unknown,
        )?;
        for (name, value) in &self.xstats {
            let labels = [("name", name.as_str())];
            family.encode_family(&labels)?.encode_gauge(value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::stats::{Kind, LatencyHistogram, Snapshot};
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
            if s.metric.starts_with(LATENCY) {
                continue;
            }
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

    const LATENCY: &str = "blipmq_message_latency_seconds";

    #[test]
    fn latency_is_a_histogram_per_worker() {
        let mut slow = LatencyHistogram::default();
        slow.record(5_000, 3);
        slow.record(100_000, 2);
        slow.record(2_000_000_000, 1);
        let snap = snapshot().with_latency(vec![
            LatencyHistogram::default(),
            slow,
            LatencyHistogram::default(),
        ]);
        let text = render_prometheus(&snap);
        assert_eq!(
            text.matches(&format!("# TYPE {LATENCY} histogram\n"))
                .count(),
            1
        );
        assert!(
            text.contains(&format!("{LATENCY}_count{{worker=\"1\"}} 6\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{LATENCY}_sum{{worker=\"1\"}} 2.000215\n")),
            "{text}"
        );
        let scrape = parse(&text);
        let buckets = |worker: &str| -> Vec<(f64, f64)> {
            let sample = scrape
                .samples
                .iter()
                .find(|s| s.metric == LATENCY && s.labels.get("worker") == Some(worker))
                .expect("histogram sample");
            match &sample.value {
                Value::Histogram(counts) => counts.iter().map(|c| (c.less_than, c.count)).collect(),
                other => panic!("{other:?}"),
            }
        };
        let worker1 = buckets("1");
        assert_eq!(worker1.len(), 22);
        // Cumulative: 3 by 8.192 µs, 5 by 131.072 µs, the 2 s sample only in +Inf.
        let at = |bound: f64| worker1.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!(at(4096.0 / 1e9), 0.0);
        assert_eq!(at(8192.0 / 1e9), 3.0);
        assert_eq!(at(131072.0 / 1e9), 5.0);
        assert_eq!(at((1u64 << 30) as f64 / 1e9), 5.0);
        assert_eq!(at(f64::INFINITY), 6.0);
        assert!(buckets("0").iter().all(|b| b.1 == 0.0));
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
        let start = parse(&text)
            .samples
            .into_iter()
            .find(|s| s.metric == "blipmq_start_time_seconds")
            .map(|s| s.value);
        assert!(
            matches!(start, Some(Value::Gauge(v)) if v == 0.0),
            "{start:?}"
        );
    }

    #[test]
    fn no_workers_still_valid() {
        let text = render_prometheus(&Snapshot::new(1, 0, 0, Vec::new()));
        let scrape = parse(&text);
        assert_eq!(scrape.samples.len(), 2);
    }

    #[test]
    fn xstats_follow_untyped_with_escaped_names() {
        let xstats = vec![
            ("rx_good_packets".to_owned(), 6),
            ("odd \"name\\".to_owned(), u64::MAX),
        ];
        let text = render_prometheus_with_xstats(&snapshot(), xstats);
        let expected = format!(
            "# HELP blipmq_port_xstat The device's extended statistics (DPDK xstats), by name.\n\
             # TYPE blipmq_port_xstat untyped\n\
             blipmq_port_xstat{{name=\"rx_good_packets\"}} 6\n\
             blipmq_port_xstat{{name=\"odd \\\"name\\\\\"}} {}\n",
            u64::MAX
        );
        assert!(text.ends_with(&expected), "{text}");
        let scrape = parse(&text);
        assert!(scrape
            .samples
            .iter()
            .any(|s| s.metric == "blipmq_port_xstat"
                && s.labels.get("name") == Some("rx_good_packets")));
        assert!(!render_prometheus(&snapshot()).contains("blipmq_port_xstat"));
    }
}
