//! `/varz`: the snapshot as one JSON object, for scripts and dashboards.

use serde_json::{json, Map, Value};

use crate::stats::{Counter, LatencyHistogram, Snapshot};

use super::health::check_health;

/// The snapshot as JSON:
///
/// ```json
/// {"version": "0.1.0", "pid": 42, "start_unix_nanos": ..., "now_unix_nanos": ...,
///  "uptime_seconds": 12.5, "workers_count": 2, "healthy": true,
///  "workers": [{"worker": 0, "heartbeat_age_ms": 40, "counters": {"connections_open": 3, ...},
///               "latency": {...}}, ...],
///  "totals": {"connections_open": 9, ...}, "latency": {...}}
/// ```
///
/// `latency` is the in-broker latency histogram since start, of the worker
/// or of all workers; see [`latency_json`].
///
/// `version` is this build's; counter keys are [`Counter::name`]s in block
/// order; totals combine workers per [`Counter::aggregate`];
/// `heartbeat_age_ms` is null for a worker that never beat; `healthy`
/// applies `stale_after` as `/healthz` does.
pub fn render_varz(snapshot: &Snapshot, stale_after: std::time::Duration) -> Value {
    let counters = |value: &dyn Fn(Counter) -> u64| -> Value {
        Value::Object(
            Counter::ALL
                .iter()
                .map(|&c| (c.name().to_owned(), Value::from(value(c))))
                .collect::<Map<String, Value>>(),
        )
    };
    let workers: Vec<Value> = (0..snapshot.workers())
        .map(|w| {
            json!({
                "worker": w,
                "heartbeat_age_ms": snapshot
                    .heartbeat_age(Some(w))
                    .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                "counters": counters(&|c| snapshot.get(w, c)),
                "latency": latency_json(&snapshot.latency(Some(w))),
            })
        })
        .collect();
    let uptime_nanos = snapshot
        .taken_unix_nanos()
        .saturating_sub(snapshot.start_unix_nanos());
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": snapshot.pid(),
        "start_unix_nanos": snapshot.start_unix_nanos(),
        "now_unix_nanos": snapshot.taken_unix_nanos(),
        "uptime_seconds": uptime_nanos as f64 / 1e9,
        "workers_count": snapshot.workers(),
        "healthy": check_health(snapshot, stale_after).status() == 200,
        "stale_after_ms": u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX),
        "workers": workers,
        "totals": counters(&|c| snapshot.total(c)),
        "latency": latency_json(&snapshot.latency(None)),
    })
}

/// An in-broker latency histogram as JSON, in nanoseconds:
///
/// ```json
/// {"count": 6, "sum_ns": 317000, "max_ns": 101000,
///  "p50_ns": 5119, "p99_ns": 101000, "p999_ns": 101000,
///  "buckets": [[4608, 3], [98304, 3]]}
/// ```
///
/// Quantiles are bucket ends (at most 12.5 % high, never above `max_ns`),
/// null without samples; `buckets` lists the non-empty ones as
/// `[smallest value, samples]`.
pub fn latency_json(histogram: &LatencyHistogram) -> Value {
    let quantile = |q: f64| {
        histogram
            .quantile(q)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    };
    let buckets: Vec<[u64; 2]> = histogram
        .nonzero_buckets()
        .map(|(floor, n)| [floor, n])
        .collect();
    json!({
        "count": histogram.count(),
        "sum_ns": histogram.sum_nanos(),
        "max_ns": histogram.max_nanos(),
        "p50_ns": quantile(0.5),
        "p99_ns": quantile(0.99),
        "p999_ns": quantile(0.999),
        "buckets": buckets,
    })
}

/// Reads back what [`latency_json`] wrote (missing parts read as zero).
pub fn latency_from_json(value: &Value) -> LatencyHistogram {
    let number = |key: &str| value[key].as_u64().unwrap_or(0);
    let buckets = value["buckets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|pair| Some((pair[0].as_u64()?, pair[1].as_u64()?)));
    LatencyHistogram::from_parts(buckets, number("sum_ns"), number("max_ns"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::DEFAULT_STALE_AFTER;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn every_counter_per_worker_and_in_total() {
        let taken = 1_000_100 * SEC;
        let beat = taken / 1_000_000 - 40;
        let worker = |scale: u64, heartbeat: u64| -> Vec<u64> {
            Counter::ALL
                .iter()
                .map(|&c| match c {
                    Counter::HeartbeatUnixMs => heartbeat,
                    _ => scale * (c as u64 + 1),
                })
                .collect()
        };
        let snap = Snapshot::new(
            42,
            1_000_000 * SEC,
            taken,
            vec![worker(1, beat), worker(2, 0)],
        );
        let v = render_varz(&snap, DEFAULT_STALE_AFTER);
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["pid"], 42);
        assert_eq!(v["uptime_seconds"], 100.0);
        assert_eq!(v["workers_count"], 2);
        // Worker 1 never beat, 100 s after the start.
        assert_eq!(v["healthy"], false);
        assert_eq!(v["stale_after_ms"], 2000);
        let workers = v["workers"].as_array().unwrap();
        assert_eq!(workers[0]["heartbeat_age_ms"], 40);
        assert!(workers[1]["heartbeat_age_ms"].is_null());
        for (w, obj) in workers.iter().enumerate() {
            assert_eq!(obj["worker"], w);
            let counters = obj["counters"].as_object().unwrap();
            assert_eq!(counters.len(), Counter::COUNT);
            for &c in Counter::ALL {
                assert_eq!(counters[c.name()], snap.get(w, c), "{}", c.name());
            }
        }
        let totals = v["totals"].as_object().unwrap();
        for &c in Counter::ALL {
            assert_eq!(totals[c.name()], snap.total(c), "{}", c.name());
        }
        assert_eq!(
            totals["messages_published"],
            3 * (Counter::MessagesPublished as u64 + 1)
        );
    }

    #[test]
    fn latency_per_worker_and_in_total_reads_back() {
        let mut fast = LatencyHistogram::default();
        fast.record(5_000, 3);
        let mut slow = LatencyHistogram::default();
        slow.record(101_000, 2);
        slow.record(100_000, 1);
        let snap = Snapshot::new(1, 0, SEC, vec![vec![0; Counter::COUNT]; 2])
            .with_latency(vec![fast.clone(), slow.clone()]);
        let v = render_varz(&snap, DEFAULT_STALE_AFTER);
        let total = &v["latency"];
        assert_eq!(total["count"], 6);
        assert_eq!(total["sum_ns"], 15_000 + 302_000);
        assert_eq!(total["max_ns"], 101_000);
        assert_eq!(total["p999_ns"], 101_000);
        // 5 µs lies in the bucket 4,608–5,119 ns.
        assert_eq!(total["p50_ns"], 5_119);
        assert_eq!(total["buckets"], json!([[4608, 3], [98304, 3]]));
        assert_eq!(latency_from_json(&v["workers"][0]["latency"]), fast);
        assert_eq!(latency_from_json(&v["workers"][1]["latency"]), slow);
        let empty = latency_json(&LatencyHistogram::default());
        assert!(empty["p99_ns"].is_null());
        assert_eq!(latency_from_json(&empty), LatencyHistogram::default());
        assert_eq!(
            latency_from_json(&json!("garbage")),
            LatencyHistogram::default()
        );
    }
}
