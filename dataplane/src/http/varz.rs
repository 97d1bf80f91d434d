//! `/varz`: the snapshot as one JSON object, for scripts and dashboards.

use serde_json::{json, Map, Value};

use crate::stats::{Counter, Snapshot};

use super::health::check_health;

/// The snapshot as JSON:
///
/// ```json
/// {"version": "0.1.0", "pid": 42, "start_unix_nanos": ..., "now_unix_nanos": ...,
///  "uptime_seconds": 12.5, "workers_count": 2, "healthy": true,
///  "workers": [{"worker": 0, "heartbeat_age_ms": 40, "counters": {"connections_open": 3, ...}}, ...],
///  "totals": {"connections_open": 9, ...}}
/// ```
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
    })
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
}
