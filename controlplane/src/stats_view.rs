//! Human (table) and machine (JSON) views of a stats [`Snapshot`], for
//! `blipmqctl stats` and its live mode (from the stats file or the socket).

use std::fmt::Write;
use std::time::Duration;

use blipmq_dataplane::http::{latency_from_json, latency_json};
use blipmq_dataplane::stats::{Counter, LatencyHistogram, Rates, Snapshot};
use serde_json::{json, Map, Value};

/// A table with one row per worker and a `total` row: open connections,
/// subscriptions, messages in (published) and out (delivered), bytes in and
/// out, drops (all causes), busy ratio and heartbeat age.
///
/// With `rates` (from [`Snapshot::rate_since`]) the traffic columns are per
/// second over the interval, and the busy ratio is the interval's;
/// without, they are totals and the ratio since the broker started.
pub fn render_table(snapshot: &Snapshot, rates: Option<&Rates>) -> String {
    let uptime = Duration::from_nanos(
        snapshot
            .taken_unix_nanos()
            .saturating_sub(snapshot.start_unix_nanos()),
    );
    let mut out = format!(
        "blipmqd pid {}, {} worker{}, up {}, {}\n",
        snapshot.pid(),
        snapshot.workers(),
        if snapshot.workers() == 1 { "" } else { "s" },
        fmt_duration(uptime),
        match rates {
            Some(r) => format!("rates over {:.1}s", r.elapsed().as_secs_f64()),
            None => "totals since start".to_owned(),
        }
    );

    let traffic = [
        ("MSGS IN", Counter::MessagesPublished, false),
        ("MSGS OUT", Counter::MessagesDelivered, false),
        ("BYTES IN", Counter::BytesIn, true),
        ("BYTES OUT", Counter::BytesOut, true),
    ];
    let suffix = if rates.is_some() { "/S" } else { "" };
    let mut header: Vec<String> = vec!["WORKER".into(), "CONNS".into(), "SUBS".into()];
    header.extend(traffic.iter().map(|(h, _, _)| format!("{h}{suffix}")));
    header.extend([format!("DROPS{suffix}"), "BUSY".into(), "HEARTBEAT".into()]);

    let row = |worker: Option<usize>| -> Vec<String> {
        let value = |c: Counter| match worker {
            Some(w) => snapshot.get(w, c),
            None => snapshot.total(c),
        };
        let mut cells = vec![
            worker.map_or_else(|| "total".to_owned(), |w| w.to_string()),
            value(Counter::ConnectionsOpen).to_string(),
            value(Counter::Subscriptions).to_string(),
        ];
        for &(_, c, bytes) in &traffic {
            let v = match rates {
                Some(r) => r.rate(worker, c).unwrap_or(0.0),
                None => value(c) as f64,
            };
            cells.push(if bytes { fmt_bytes(v) } else { fmt_count(v) });
        }
        cells.push(match rates {
            Some(r) => fmt_count(r.drops(worker).unwrap_or(0.0)),
            None => fmt_count(snapshot.drops(worker) as f64),
        });
        let busy = match rates {
            Some(r) => r.busy_ratio(worker),
            None => snapshot.busy_ratio(worker),
        };
        cells.push(busy.map_or_else(|| "-".to_owned(), |b| format!("{:.0}%", b * 100.0)));
        cells.push(
            snapshot
                .heartbeat_age(worker)
                .map_or_else(|| "never".to_owned(), |a| format!("{} ago", fmt_age(a))),
        );
        cells
    };

    let mut rows = vec![header];
    rows.extend((0..snapshot.workers()).map(|w| row(Some(w))));
    rows.push(row(None));
    push_aligned(&mut out, &rows);

    out.push_str(match rates {
        Some(_) => "\nin-broker latency of the messages delivered in the interval\n",
        None => "\nin-broker latency (PUBLISH read to subscriber write) since start\n",
    });
    let latency = |worker: Option<usize>| match rates {
        Some(r) => r.latency(worker),
        None => snapshot.latency(worker),
    };
    let mut rows = vec![["WORKER", "MSGS", "P50", "P99", "P99.9", "MAX"]
        .map(String::from)
        .to_vec()];
    for worker in (0..snapshot.workers()).map(Some).chain([None]) {
        let histogram = latency(worker);
        let mut cells = vec![worker.map_or_else(|| "total".to_owned(), |w| w.to_string())];
        cells.extend(latency_cells(&histogram));
        rows.push(cells);
    }
    push_aligned(&mut out, &rows);
    out
}

/// Samples, p50, p99, p99.9 and max of a latency histogram, for a table.
fn latency_cells(histogram: &LatencyHistogram) -> Vec<String> {
    let quantile = |q: f64| {
        histogram
            .quantile(q)
            .map_or_else(|| "-".to_owned(), fmt_latency)
    };
    vec![
        fmt_count(histogram.count() as f64),
        quantile(0.5),
        quantile(0.99),
        quantile(0.999),
        if histogram.count() == 0 {
            "-".to_owned()
        } else {
            fmt_latency(Duration::from_nanos(histogram.max_nanos()))
        },
    ]
}

/// Appends `rows` as columns: the first left-aligned, the rest right.
fn push_aligned(out: &mut String, rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, (cell, width)) in r.iter().zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(line, "{cell:<width$}");
            } else {
                let _ = write!(line, "  {cell:>width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The snapshot as JSON:
///
/// ```json
/// {"pid": 42, "start_unix_nanos": ..., "taken_unix_nanos": ...,
///  "workers": [{"worker": 0, "counters": {"connections_open": 3, ...}, "latency": {...}}, ...],
///  "totals": {"connections_open": 9, ...}, "latency": {...}}
/// ```
///
/// `latency` is the in-broker latency histogram, as in `/varz`.
///
/// Counter keys are [`Counter::name`]s, in block order; totals combine
/// workers per [`Counter::aggregate`].
pub fn render_json(snapshot: &Snapshot) -> Value {
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
                "counters": counters(&|c| snapshot.get(w, c)),
                "latency": latency_json(&snapshot.latency(Some(w))),
            })
        })
        .collect();
    json!({
        "pid": snapshot.pid(),
        "start_unix_nanos": snapshot.start_unix_nanos(),
        "taken_unix_nanos": snapshot.taken_unix_nanos(),
        "workers": workers,
        "totals": counters(&|c| snapshot.total(c)),
        "latency": latency_json(&snapshot.latency(None)),
    })
}

/// Rebuilds a [`Snapshot`] from the broker's `/varz`-shaped JSON (the
/// control socket's `stats` reply), so both sources share one view.
/// Counters the broker did not send read as 0.
pub fn snapshot_from_varz(varz: &Value) -> Result<Snapshot, String> {
    let number = |key: &str| {
        varz[key]
            .as_u64()
            .ok_or_else(|| format!("the stats reply has no numeric {key:?}"))
    };
    let pid = u32::try_from(number("pid")?).map_err(|_| "the stats reply's pid is too large")?;
    let listed = varz["workers"]
        .as_array()
        .ok_or("the stats reply has no \"workers\" list")?;
    let workers = listed
        .iter()
        .map(|worker| {
            Counter::ALL
                .iter()
                .map(|c| worker["counters"][c.name()].as_u64().unwrap_or(0))
                .collect()
        })
        .collect();
    let latency = listed
        .iter()
        .map(|worker| latency_from_json(&worker["latency"]))
        .collect();
    Ok(Snapshot::new(
        pid,
        number("start_unix_nanos")?,
        number("now_unix_nanos")?,
        workers,
    )
    .with_latency(latency))
}

/// `999`, `12.5`, `1.2k`, `3.4M`, `5.6G`, `7.8T`.
pub(crate) fn fmt_count(v: f64) -> String {
    scaled(v, 1000.0, &["", "k", "M", "G", "T"])
}

/// `512B`, `1.5KiB`, `3.2MiB`, `1.1GiB`, `2.0TiB`.
pub(crate) fn fmt_bytes(v: f64) -> String {
    scaled(v, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

fn scaled(mut v: f64, step: f64, units: &[&str]) -> String {
    let mut unit = 0;
    while v >= step && unit + 1 < units.len() {
        v /= step;
        unit += 1;
    }
    if unit == 0 && v.fract() == 0.0 {
        format!("{v:.0}{}", units[0])
    } else if unit == 0 && v < 10.0 {
        format!("{v:.2}{}", units[0])
    } else {
        format!("{v:.1}{}", units[unit])
    }
}

/// `850ms`, `2.5s`, `3m10s`, then as [`fmt_duration`].
/// A latency: `850ns`, `12.3µs`, `4.56ms`, `1.20s`.
pub(crate) fn fmt_latency(d: Duration) -> String {
    let nanos = d.as_nanos() as f64;
    if nanos < 1e3 {
        format!("{nanos:.0}ns")
    } else if nanos < 1e6 {
        format!("{:.1}µs", nanos / 1e3)
    } else if nanos < 1e9 {
        format!("{:.2}ms", nanos / 1e6)
    } else {
        format!("{:.2}s", nanos / 1e9)
    }
}

pub(crate) fn fmt_age(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        fmt_duration(d)
    }
}

/// `12s`, `4m05s`, `3h12m`, `2d03h`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn values(f: impl Fn(Counter) -> u64) -> Vec<u64> {
        Counter::ALL.iter().map(|&c| f(c)).collect()
    }

    fn worker(scale: u64, heartbeat_ms: u64) -> Vec<u64> {
        values(|c| match c {
            Counter::ConnectionsOpen => 3 * scale,
            Counter::Subscriptions => 10 * scale,
            Counter::MessagesPublished => 1000 * scale,
            Counter::MessagesDelivered => 2500 * scale,
            Counter::BytesIn => 2048 * scale,
            Counter::BytesOut => 3 * 1024 * 1024 * scale,
            Counter::DroppedSlowConsumer => scale,
            Counter::DroppedAuth => 2 * scale,
            Counter::LoopIterations => 100 * scale,
            Counter::LoopBusyIterations => 25 * scale,
            Counter::HeartbeatUnixMs => heartbeat_ms,
            _ => 0,
        })
    }

    /// Taken 100 s after start; heartbeats 50 ms and 2 s old; worker 0
    /// delivered `scale` × 98 messages in 12 µs and `scale` × 2 in 3 ms,
    /// worker 1 none.
    fn snapshot(scale: u64) -> Snapshot {
        let taken = 1_000_100 * SEC;
        let ms = taken / 1_000_000;
        let mut latency = LatencyHistogram::default();
        latency.record(12_000, 98 * scale);
        latency.record(3_000_000, 2 * scale);
        Snapshot::new(
            42,
            1_000_000 * SEC,
            taken,
            vec![worker(scale, ms - 50), worker(2 * scale, ms - 2000)],
        )
        .with_latency(vec![latency, LatencyHistogram::default()])
    }

    /// The latency table's row for `first`.
    fn latency_row(table: &str, first: &str) -> Vec<String> {
        let (_, latency) = table
            .split_once("in-broker latency")
            .expect("latency table");
        cells(latency, first)
    }

    #[test]
    fn latency_table_since_start_and_over_an_interval() {
        let table = render_table(&snapshot(1), None);
        assert!(
            table.contains("\nin-broker latency (PUBLISH read to subscriber write) since start\n")
        );
        assert_eq!(
            latency_row(&table, "WORKER"),
            ["WORKER", "MSGS", "P50", "P99", "P99.9", "MAX"]
        );
        // 12 µs lies in 11.264–12.288 µs: the quantile is the bucket's end.
        assert_eq!(
            latency_row(&table, "0"),
            ["0", "100", "12.3µs", "3.00ms", "3.00ms", "3.00ms"]
        );
        assert_eq!(latency_row(&table, "1"), ["1", "0", "-", "-", "-", "-"]);
        assert_eq!(latency_row(&table, "total")[1..3], ["100", "12.3µs"]);
        // Over an interval: only what the interval added.
        let rates = snapshot(3).rate_since(&snapshot(1), Duration::from_secs(2));
        let table = render_table(&snapshot(3), Some(&rates));
        assert!(table.contains("\nin-broker latency of the messages delivered in the interval\n"));
        assert_eq!(latency_row(&table, "0")[1], "200");
    }

    fn cells(table: &str, first: &str) -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(first))
            .unwrap_or_else(|| panic!("no row {first} in\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn table_of_totals() {
        let table = render_table(&snapshot(1), None);
        assert!(
            table.starts_with("blipmqd pid 42, 2 workers, up 1m40s, totals since start\n"),
            "{table}"
        );
        assert_eq!(
            cells(&table, "WORKER"),
            [
                "WORKER",
                "CONNS",
                "SUBS",
                "MSGS",
                "IN",
                "MSGS",
                "OUT",
                "BYTES",
                "IN",
                "BYTES",
                "OUT",
                "DROPS",
                "BUSY",
                "HEARTBEAT"
            ]
        );
        assert_eq!(
            cells(&table, "0"),
            ["0", "3", "10", "1.0k", "2.5k", "2.0KiB", "3.0MiB", "3", "25%", "50ms", "ago"]
        );
        assert_eq!(
            cells(&table, "1"),
            ["1", "6", "20", "2.0k", "5.0k", "4.0KiB", "6.0MiB", "6", "25%", "2.0s", "ago"]
        );
        assert_eq!(
            cells(&table, "total"),
            ["total", "9", "30", "3.0k", "7.5k", "6.0KiB", "9.0MiB", "9", "25%", "2.0s", "ago"]
        );
        // Columns line up: every line has the header's length or less, and
        // rows end at the same column.
        let lines: Vec<&str> = table
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
        let ends: Vec<usize> = lines
            .iter()
            .map(|l| l.rfind("ago").map_or(l.len(), |i| i + 3))
            .collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{table}");
    }

    #[test]
    fn table_of_rates() {
        let now = snapshot(3);
        let before = snapshot(1);
        let rates = now.rate_since(&before, Duration::from_secs(2));
        let table = render_table(&now, Some(&rates));
        assert!(table.contains(", rates over 2.0s\n"), "{table}");
        assert!(table.contains("MSGS IN/S"), "{table}");
        // Worker 0: published 3000 - 1000 over 2 s.
        assert_eq!(
            cells(&table, "0"),
            ["0", "9", "30", "1.0k", "2.5k", "2.0KiB", "3.0MiB", "3", "25%", "50ms", "ago"]
        );
        assert_eq!(cells(&table, "total")[3], "3.0k");
        assert_eq!(cells(&table, "total")[7], "9");
    }

    #[test]
    fn never_beaten_and_idle() {
        let snap = Snapshot::new(7, 0, 5 * SEC, vec![values(|_| 0)]);
        let table = render_table(&snap, None);
        assert!(
            table.starts_with("blipmqd pid 7, 1 worker, up 5s,"),
            "{table}"
        );
        assert_eq!(
            cells(&table, "0"),
            ["0", "0", "0", "0", "0", "0B", "0B", "0", "-", "never"]
        );
        let rates = snap.rate_since(&snap, Duration::from_secs(1));
        let table = render_table(&snap, Some(&rates));
        assert_eq!(
            cells(&table, "total"),
            ["total", "0", "0", "0", "0", "0B", "0B", "0", "-", "never"]
        );
    }

    #[test]
    fn json_has_every_counter() {
        let snap = snapshot(1);
        let v = render_json(&snap);
        assert_eq!(v["pid"], 42);
        assert_eq!(v["start_unix_nanos"], 1_000_000 * SEC);
        assert_eq!(v["taken_unix_nanos"], snap.taken_unix_nanos());
        let workers = v["workers"].as_array().unwrap();
        assert_eq!(workers.len(), 2);
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
        assert_eq!(totals["messages_published"], 3000);
        assert_eq!(v["latency"]["count"], 100);
        assert_eq!(workers[0]["latency"]["max_ns"], 3_000_000);
        // Survives a round trip through text.
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
    }

    #[test]
    fn varz_round_trips_to_the_same_snapshot() {
        let snap = snapshot(1);
        let varz = blipmq_dataplane::http::render_varz(&snap, Duration::from_secs(3));
        assert_eq!(snapshot_from_varz(&varz).unwrap(), snap);
        assert!(snapshot_from_varz(&json!({"pid": 1})).is_err());
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_count(0.0), "0");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_count(2.5), "2.50");
        assert_eq!(fmt_count(12.25), "12.2");
        assert_eq!(fmt_count(1234.0), "1.2k");
        assert_eq!(fmt_count(5.6e9), "5.6G");
        assert_eq!(fmt_count(3e15), "3000.0T");
        assert_eq!(fmt_bytes(512.0), "512B");
        assert_eq!(fmt_bytes(1536.0), "1.5KiB");
        assert_eq!(fmt_bytes(3.0 * 1024.0 * 1024.0), "3.0MiB");
        assert_eq!(fmt_latency(Duration::from_nanos(850)), "850ns");
        assert_eq!(fmt_latency(Duration::from_nanos(12_345)), "12.3µs");
        assert_eq!(fmt_latency(Duration::from_micros(4_560)), "4.56ms");
        assert_eq!(fmt_latency(Duration::from_millis(1_200)), "1.20s");
        assert_eq!(fmt_age(Duration::from_millis(850)), "850ms");
        assert_eq!(fmt_age(Duration::from_millis(2500)), "2.5s");
        assert_eq!(fmt_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(
            fmt_duration(Duration::from_secs(3 * 3600 + 12 * 60)),
            "3h12m"
        );
        assert_eq!(
            fmt_duration(Duration::from_secs(2 * 86400 + 3 * 3600)),
            "2d03h"
        );
    }
}
