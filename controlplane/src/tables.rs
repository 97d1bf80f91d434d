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
                text(&c["user"]),
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
            ("USER", Align::Left),
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

/// `port`: the device, each worker's queue, the port's own counters and
/// (with `all`, also the zero ones) its extended statistics.
pub fn render_port(reply: &Map<String, Value>, all: bool) -> String {
    let backend = text(reply.get("backend").unwrap_or(&Value::Null));
    let device = reply.get("device").unwrap_or(&Value::Null);
    if device.is_null() {
        return format!("the {backend} backend has no packet device (kernel sockets)\n");
    }
    let mut out = String::new();
    let name = match device["kind"].as_str() {
        Some("dpdk") => format!(
            "DPDK port {} ({})",
            text(&device["port"]),
            text(&device["driver"])
        ),
        _ => format!("interface {}", text(&device["interface"])),
    };
    let link = match device["link"]["up"].as_bool() {
        Some(true) => match device["link"]["speed_mbps"].as_u64() {
            Some(speed) if speed > 0 => format!("link up, {speed} Mbit/s"),
            _ => "link up".to_owned(),
        },
        Some(false) => "link down".to_owned(),
        None => "link unknown".to_owned(),
    };
    out.push_str(&format!(
        "{name}, MAC {}, {link}, {} queue pair(s)\n\n",
        text(&device["mac"]),
        text(&device["queues"])
    ));
    let columns = [
        ("rx_packets", "RX PKTS"),
        ("rx_bytes", "RX BYTES"),
        ("tx_packets", "TX PKTS"),
        ("tx_bytes", "TX BYTES"),
        ("tx_bursts", "TX BURSTS"),
        ("rx_missed", "MISSED"),
        ("rx_corrupt", "CORRUPT"),
        ("rx_not_owned", "NOT OWNED"),
        ("rx_foreign", "FOREIGN"),
        ("tx_dropped", "TX DROPPED"),
        ("tx_errors", "TX ERRORS"),
    ];
    let queues = reply
        .get("queues")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            std::iter::once(text(&q["worker"]))
                .chain(columns.iter().map(|(field, _)| text(&q[*field])))
                .collect()
        })
        .collect();
    let header: Vec<(&str, Align)> = std::iter::once(("WORKER", Align::Right))
        .chain(columns.iter().map(|(_, title)| (*title, Align::Right)))
        .collect();
    out.push_str(&table(&header, &rows));
    if let Some(stats) = device.get("stats").filter(|s| s.is_object()) {
        out.push_str("\nport counters (the NIC's own):\n");
        let fields = [
            "rx_packets",
            "tx_packets",
            "rx_bytes",
            "tx_bytes",
            "imissed",
            "ierrors",
            "oerrors",
            "rx_nombuf",
        ];
        let rows = vec![fields.iter().map(|f| text(&stats[*f])).collect()];
        let header: Vec<(&str, Align)> = fields.iter().map(|f| (*f, Align::Right)).collect();
        out.push_str(&table(&header, &rows));
    }
    if let Some(xstats) = reply.get("xstats").and_then(Value::as_object) {
        let rows: Vec<Vec<String>> = xstats
            .iter()
            .filter(|(_, value)| all || value.as_u64() != Some(0))
            .map(|(name, value)| vec![name.clone(), text(value)])
            .collect();
        if !rows.is_empty() {
            out.push_str("\nextended statistics");
            out.push_str(if all {
                ":\n"
            } else {
                " (non-zero; --all for every one):\n"
            });
            out.push_str(&table(
                &[("NAME", Align::Left), ("VALUE", Align::Right)],
                &rows,
            ));
        }
    }
    out
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

/// `leafz`: the hub this broker joins, one paragraph per remote.
pub fn render_leafz(reply: &Map<String, Value>) -> String {
    let leafs = reply.get("leafs").and_then(Value::as_array);
    let Some(leafs) = leafs.filter(|leafs| !leafs.is_empty()) else {
        return "no leaf-node remote configured ([[leafnode.remotes]])\n".to_owned();
    };
    let mut out = String::new();
    for leaf in leafs {
        out.push_str(&format!(
            "{} {} (url {}, rtt {})\n  \
             in {} msgs / {} bytes, out {} msgs / {} bytes, dropped {}\n  \
             interest: {} announced to the hub, {} from the hub; reconnects {}\n",
            text(&leaf["name"]),
            text(&leaf["state"]),
            text(&leaf["url"]),
            text(&leaf["rtt"]),
            text(&leaf["in_msgs"]),
            text(&leaf["in_bytes"]),
            text(&leaf["out_msgs"]),
            text(&leaf["out_bytes"]),
            text(&leaf["dropped"]),
            text(&leaf["subscriptions"]),
            text(&leaf["hub_subscriptions"]),
            text(&leaf["reconnects"]),
        ));
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
               "user": (id == 2).then_some("alice"), "subscriptions": id, "pending_bytes": pending, "msgs_in": 10 * id,
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
            ["ID", "WORKER", "PEER", "NAME", "USER", "SUBS", "PENDING", "IN", "OUT", "AGE"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "1",
                "1",
                "127.0.0.1:5000",
                "-",
                "-",
                "1",
                "2.0KiB",
                "10",
                "99",
                "1.0s"
            ]
        );
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
        assert_eq!(lines[2].split_whitespace().nth(4), Some("alice"));
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
    fn port_shows_the_device_the_queues_and_nonzero_xstats() {
        let kernel = object(json!({"backend": "kernel", "device": null, "queues": []}));
        assert_eq!(
            render_port(&kernel, false),
            "the kernel backend has no packet device (kernel sockets)\n"
        );
        let dpdk = object(json!({
            "backend": "dpdk",
            "device": {
                "kind": "dpdk", "port": 0, "driver": "net_af_packet",
                "mac": "02:00:00:00:00:01", "queues": 2,
                "link": {"up": true, "speed_mbps": 10000},
                "stats": {"rx_packets": 7, "tx_packets": 5, "rx_bytes": 700, "tx_bytes": 500,
                          "imissed": 1, "ierrors": 0, "oerrors": 0, "rx_nombuf": 0},
            },
            "queues": [
                {"worker": 0, "rx_packets": 3, "rx_bytes": 300, "tx_packets": 2},
                {"worker": 1, "rx_packets": 4, "rx_not_owned": 1},
            ],
            "xstats": {"rx_good_packets": 7, "rx_errors": 0},
        }));
        let text = render_port(&dpdk, false);
        assert!(
            text.starts_with(
                "DPDK port 0 (net_af_packet), MAC 02:00:00:00:00:01, link up, 10000 Mbit/s, 2 queue pair(s)\n"
            ),
            "{text}"
        );
        let row = |worker: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(worker))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(row("0")[..4], ["0", "3", "300", "2"], "{text}");
        // Fields the reply lacks show as "-".
        assert_eq!(row("1")[1..3], ["4", "-"], "{text}");
        assert!(text.contains("imissed"), "{text}");
        assert!(text.contains("rx_good_packets"), "{text}");
        assert!(!text.contains("rx_errors"), "zero xstats hidden: {text}");
        assert!(render_port(&dpdk, true).contains("rx_errors"));
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
