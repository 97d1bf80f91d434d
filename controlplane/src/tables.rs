//! Human views of the control socket's replies: aligned text tables.
//! Fields a reply lacks show as "-" rather than failing: an older or newer
//! broker may send a different set.

use std::cmp::Ordering;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::{Map, Value};

use crate::stats_view::{fmt_age, fmt_bytes, fmt_duration};

#[derive(Debug, Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Rows under a header, columns padded to their widest cell.
fn table(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut out = String::new();
        for (i, (cell, (&width, (_, align)))) in cells.zip(widths.iter().zip(header)).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            match align {
                Align::Left => out.push_str(&format!("{cell:<width$}")),
                Align::Right => out.push_str(&format!("{cell:>width$}")),
            }
        }
        let mut out = out.trim_end().to_owned();
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().map(|(h, _)| *h));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn yes_no(value: &Value) -> String {
    match value.as_bool() {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => "-".to_owned(),
    }
}

fn seconds(value: &Value) -> Option<Duration> {
    value
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// `status`: the broker, then one line per worker.
pub fn render_status(status: &Map<String, Value>) -> String {
    let field = |key: &str| status.get(key).unwrap_or(&Value::Null);
    let uptime = seconds(field("uptime_secs")).map_or_else(|| "-".to_owned(), fmt_duration);
    let facts = [
        ("version", text(field("version"))),
        ("pid", text(field("pid"))),
        ("uptime", uptime),
        ("backend", text(field("backend"))),
        ("listen", text(field("listen"))),
        ("connections", text(field("connections"))),
        ("healthy", yes_no(field("healthy"))),
        ("socket", text(field("socket"))),
        ("stats file", text(field("stats_file"))),
    ];
    let mut out = String::new();
    for (name, value) in facts {
        out.push_str(&format!("{:<13}{value}\n", format!("{name}:")));
    }
    out.push('\n');
    let workers = field("workers").as_array().map_or(&[][..], Vec::as_slice);
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let heartbeat = w["heartbeat_age_ms"].as_u64().map_or_else(
                || "never".to_owned(),
                |ms| fmt_age(Duration::from_millis(ms)),
            );
            vec![
                text(&w["worker"]),
                yes_no(&w["responding"]),
                text(&w["connections"]),
                text(&w["subscriptions"]),
                heartbeat,
                yes_no(&w["stale"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            ("WORKER", Align::Left),
            ("RESPONDING", Align::Left),
            ("CONNS", Align::Right),
            ("SUBS", Align::Right),
            ("HEARTBEAT", Align::Right),
            ("STALE", Align::Left),
        ],
        &rows,
    ));
    for w in workers {
        if let Some(error) = w["error"].as_str() {
            out.push_str(&format!("worker {}: {error}\n", text(&w["worker"])));
        }
    }
    out
}

/// How `conns --sort` orders connections: counts and ages largest first,
/// names alphabetically (unnamed last), ids ascending; ties by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConnSort {
    Id,
    Age,
    Pending,
    MsgsIn,
    MsgsOut,
    Subs,
    Name,
}

pub fn sort_connections(conns: &mut [Value], by: ConnSort) {
    let id = |c: &Value| c["id"].as_u64().unwrap_or(u64::MAX);
    let largest_first = |key: &str, a: &Value, b: &Value| {
        let n = |c: &Value| c[key].as_f64().unwrap_or(0.0);
        n(b).total_cmp(&n(a))
    };
    conns.sort_by(|a, b| {
        let primary = match by {
            ConnSort::Id => Ordering::Equal,
            ConnSort::Age => largest_first("age_secs", a, b),
            ConnSort::Pending => largest_first("pending_bytes", a, b),
            ConnSort::MsgsIn => largest_first("msgs_in", a, b),
            ConnSort::MsgsOut => largest_first("msgs_out", a, b),
            ConnSort::Subs => largest_first("subscriptions", a, b),
            // `None` sorts before `Some`, so compare "has no name" first.
            ConnSort::Name => {
                let name = |c: &Value| c["name"].as_str().map(str::to_owned);
                (name(a).is_none(), name(a)).cmp(&(name(b).is_none(), name(b)))
            }
        };
        primary.then_with(|| id(a).cmp(&id(b)))
    });
}

/// `conns`: one line per client connection.
pub fn render_connections(conns: &[Value]) -> String {
    let rows: Vec<Vec<String>> = conns
        .iter()
        .map(|c| {
            vec![
                text(&c["id"]),
                text(&c["worker"]),
                text(&c["peer"]),
                text(&c["name"]),
                text(&c["subscriptions"]),
                c["pending_bytes"]
                    .as_f64()
                    .map_or_else(|| "-".to_owned(), fmt_bytes),
                text(&c["msgs_in"]),
                text(&c["msgs_out"]),
                seconds(&c["age_secs"]).map_or_else(|| "-".to_owned(), fmt_age),
            ]
        })
        .collect();
    table(
        &[
            ("ID", Align::Right),
            ("WORKER", Align::Right),
            ("PEER", Align::Left),
            ("NAME", Align::Left),
            ("SUBS", Align::Right),
            ("PENDING", Align::Right),
            ("IN", Align::Right),
            ("OUT", Align::Right),
            ("AGE", Align::Right),
        ],
        &rows,
    )
}

/// `subs`: one line per filter and queue group, over every worker.
pub fn render_subscriptions(subs: &[Value]) -> String {
    let rows: Vec<Vec<String>> = subs
        .iter()
        .map(|s| {
            vec![
                text(&s["filter"]),
                text(&s["queue"]),
                text(&s["count"]),
                text(&s["delivered"]),
            ]
        })
        .collect();
    table(
        &[
            ("FILTER", Align::Left),
            ("QUEUE", Align::Left),
            ("COUNT", Align::Right),
            ("DELIVERED", Align::Right),
        ],
        &rows,
    )
}

/// `reload`: which keys changed, and which wait for a restart.
pub fn render_reload(reply: &Map<String, Value>) -> String {
    let keys = |field: &str| -> Vec<String> {
        reply
            .get(field)
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |keys| keys.iter().map(text).collect())
    };
    let (changed, restart) = (keys("changed"), keys("needs_restart"));
    let mut out = String::new();
    if changed.is_empty() && restart.is_empty() {
        out.push_str("configuration reloaded: nothing changed\n");
    }
    if !changed.is_empty() {
        out.push_str(&format!("applied: {}\n", changed.join(", ")));
    }
    if !restart.is_empty() {
        out.push_str(&format!(
            "needs a restart (not applied): {}\n",
            restart.join(", ")
        ));
    }
    if let Some(n) = reply.get("live_connections").and_then(Value::as_u64) {
        out.push_str(&format!("live connections updated: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("{other}"),
        }
    }

    fn conn(id: u64, name: Option<&str>, pending: u64, age: f64) -> Value {
        json!({"id": id, "worker": id % 2, "peer": "127.0.0.1:5000", "name": name,
               "subscriptions": id, "pending_bytes": pending, "msgs_in": 10 * id,
               "msgs_out": 100 - id, "age_secs": age})
    }

    fn ids(conns: &[Value]) -> Vec<u64> {
        conns.iter().map(|c| c["id"].as_u64().unwrap()).collect()
    }

    #[test]
    fn connections_sort_by_every_key() {
        let mut conns = vec![
            conn(3, Some("beta"), 0, 5.0),
            conn(1, None, 2048, 1.0),
            conn(2, Some("alpha"), 0, 9.0),
        ];
        let sorted = |by| {
            let mut c = conns.clone();
            sort_connections(&mut c, by);
            ids(&c)
        };
        assert_eq!(sorted(ConnSort::Id), [1, 2, 3]);
        assert_eq!(sorted(ConnSort::Name), [2, 3, 1]);
        assert_eq!(sorted(ConnSort::Age), [2, 3, 1]);
        assert_eq!(sorted(ConnSort::Pending), [1, 2, 3]);
        assert_eq!(sorted(ConnSort::MsgsIn), [3, 2, 1]);
        assert_eq!(sorted(ConnSort::MsgsOut), [1, 2, 3]);
        assert_eq!(sorted(ConnSort::Subs), [3, 2, 1]);
        sort_connections(&mut conns, ConnSort::Id);
        let table = render_connections(&conns);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "WORKER", "PEER", "NAME", "SUBS", "PENDING", "IN", "OUT", "AGE"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "1",
                "1",
                "127.0.0.1:5000",
                "-",
                "1",
                "2.0KiB",
                "10",
                "99",
                "1.0s"
            ]
        );
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn status_shows_the_broker_and_each_worker() {
        let status = object(json!({
            "version": "0.1.0", "pid": 42, "uptime_secs": 65.5, "backend": "kernel",
            "listen": "127.0.0.1:4222", "connections": 3, "healthy": false,
            "socket": "/tmp/b.sock", "stats_file": "",
            "workers": [
                {"worker": 0, "responding": true, "connections": 3, "subscriptions": 7,
                 "draining": false, "heartbeat_age_ms": 40, "stale": false},
                {"worker": 1, "responding": false, "error": "worker 1 did not answer",
                 "heartbeat_age_ms": null, "stale": true}
            ]
        }));
        let out = render_status(&status);
        assert!(out.contains("uptime:      1m05s\n"), "{out}");
        assert!(out.contains("healthy:     no\n"), "{out}");
        assert!(out.contains("stats file:  -\n"), "{out}");
        let row = |w: &str| -> Vec<&str> {
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(w))
                .unwrap_or_else(|| panic!("no worker {w} in\n{out}"))
                .split_whitespace()
                .collect()
        };
        assert_eq!(row("0"), ["0", "yes", "3", "7", "40ms", "no"]);
        assert_eq!(row("1"), ["1", "no", "-", "-", "never", "yes"]);
        assert!(
            out.ends_with("worker 1: worker 1 did not answer\n"),
            "{out}"
        );
    }

    #[test]
    fn subscriptions_and_reload() {
        let subs = [
            json!({"filter": "a.>", "queue": null, "count": 2, "delivered": 10}),
            json!({"filter": "a.b", "queue": "q", "count": 1, "delivered": 5}),
        ];
        let out = render_subscriptions(&subs);
        assert_eq!(
            out.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["a.>", "-", "2", "10"]
        );
        let reload = render_reload(&object(json!({
            "changed": ["limits.max_payload"], "needs_restart": ["server.workers"],
            "live_connections": 2
        })));
        assert_eq!(
            reload,
            "applied: limits.max_payload\n\
             needs a restart (not applied): server.workers\n\
             live connections updated: 2\n"
        );
        let nothing = render_reload(&object(json!({"changed": [], "needs_restart": []})));
        assert_eq!(nothing, "configuration reloaded: nothing changed\n");
    }
}
