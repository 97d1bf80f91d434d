//! nats-server's monitoring endpoints, with the fields BlipMQ has:
//! `/connz` (with `subs`, `sort`, `limit`, `offset`), `/subsz`, `/leafz`,
//! and the nats-server fields of `/varz`, so that tools that read a nats-server
//! (nats-top, the Prometheus NATS exporter) can read a BlipMQ broker. Only
//! the broker's own process serves them: they ask the workers (through
//! [`BrokerView`]), which a stats file alone cannot answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::control::protocol::{ConnectionInfo, SubscriptionInfo};
use crate::stats::{Counter, Snapshot};

/// What the broker is and its limits, as `/varz` reports them.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub server_id: String,
    /// The NATS listener's address where there is one, else the broker's.
    pub host: String,
    pub port: u16,
    pub max_connections: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub max_payload: u32,
    pub max_pending: u64,
    /// The hub this broker joins as a leaf node, if any.
    pub leaf_remote: Option<LeafRemote>,
}

/// A `[[leafnode.remotes]]` entry as `/leafz` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRemote {
    pub name: String,
    /// `host:port` of each hub node, in the order they are tried.
    pub urls: Vec<String>,
}

impl LeafRemote {
    /// The remote of `config` (a broker has one at most).
    pub fn of(config: &Config) -> Option<LeafRemote> {
        let remote = config.leafnode.remotes.first()?;
        let link = remote.link_config(&config.server.server_name, 0);
        Some(LeafRemote {
            name: link.name,
            urls: link.urls,
        })
    }
}

/// The running broker, for the endpoints that ask its workers.
pub trait BrokerView: Send + Sync {
    fn identity(&self) -> Identity;
    fn connections(&self) -> Result<Vec<ConnectionInfo>, String>;
    fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>, String>;
}

impl std::fmt::Debug for dyn BrokerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerView")
    }
}

/// nats-server's default and largest `limit` of `/connz`.
const CONNZ_LIMIT: usize = 1024;

/// How `/connz` orders connections (nats-server's `sort` values that
/// BlipMQ can honour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnzSort {
    Cid,
    Start,
    Subs,
    Pending,
    MsgsTo,
    MsgsFrom,
    BytesTo,
    BytesFrom,
    Uptime,
}

/// A `/connz` query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnzQuery {
    subs: bool,
    sort: ConnzSort,
    limit: usize,
    offset: usize,
}

impl ConnzQuery {
    pub fn parse(query: &str) -> Result<ConnzQuery, String> {
        let mut parsed = ConnzQuery {
            subs: false,
            sort: ConnzSort::Cid,
            limit: CONNZ_LIMIT,
            offset: 0,
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "subs" => parsed.subs = matches!(value, "1" | "true" | "detail"),
                "sort" => {
                    parsed.sort = match value {
                        "cid" | "" => ConnzSort::Cid,
                        "start" => ConnzSort::Start,
                        "subs" => ConnzSort::Subs,
                        "pending" => ConnzSort::Pending,
                        "msgs_to" => ConnzSort::MsgsTo,
                        "msgs_from" => ConnzSort::MsgsFrom,
                        "bytes_to" => ConnzSort::BytesTo,
                        "bytes_from" => ConnzSort::BytesFrom,
                        "uptime" => ConnzSort::Uptime,
                        other => return Err(format!("invalid sorting option {other:?}")),
                    }
                }
                "limit" => parsed.limit = number(key, value)?.min(CONNZ_LIMIT),
                "offset" => parsed.offset = number(key, value)?,
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn number(key: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{key} must be a number (got {value:?})"))
}

/// `/connz` as nats-server shapes it.
pub fn render_connz(
    identity: &Identity,
    mut conns: Vec<ConnectionInfo>,
    query: &ConnzQuery,
    now: SystemTime,
) -> Value {
    let total = conns.len();
    // Descending, as nats-server sorts all but cid and start.
    match query.sort {
        ConnzSort::Cid | ConnzSort::Start => conns.sort_by_key(|c| c.id),
        ConnzSort::Subs => conns.sort_by_key(|c| std::cmp::Reverse(c.subscriptions)),
        ConnzSort::Pending => conns.sort_by_key(|c| std::cmp::Reverse(c.pending_bytes)),
        ConnzSort::MsgsTo => conns.sort_by_key(|c| std::cmp::Reverse(c.msgs_out)),
        ConnzSort::MsgsFrom => conns.sort_by_key(|c| std::cmp::Reverse(c.msgs_in)),
        ConnzSort::BytesTo => conns.sort_by_key(|c| std::cmp::Reverse(c.bytes_out)),
        ConnzSort::BytesFrom => conns.sort_by_key(|c| std::cmp::Reverse(c.bytes_in)),
        ConnzSort::Uptime => conns.sort_by(|a, b| b.age_secs.total_cmp(&a.age_secs)),
    }
    let page: Vec<Value> = conns
        .iter()
        .skip(query.offset)
        .take(query.limit)
        .map(|c| {
            let (ip, port) = split_peer(c.peer.as_deref());
            let uptime = Duration::from_secs_f64(c.age_secs.max(0.0));
            let mut conn = json!({
                "cid": c.id,
                "kind": "Client",
                "type": c.protocol,
                "ip": ip,
                "port": port,
                "start": rfc3339(now.checked_sub(uptime).unwrap_or(now)),
                "last_activity": rfc3339(now),
                "uptime": go_duration(uptime),
                "idle": "0s",
                "pending_bytes": c.pending_bytes,
                "in_msgs": c.msgs_in,
                "out_msgs": c.msgs_out,
                "in_bytes": c.bytes_in,
                "out_bytes": c.bytes_out,
                "subscriptions": c.subscriptions,
                "name": c.name.clone().unwrap_or_default(),
                "lang": c.lang.clone().unwrap_or_default(),
                "version": c.client_version.clone().unwrap_or_default(),
            });
            if query.subs {
                conn["subscriptions_list"] = json!(c.subjects);
            }
            if let (Some(version), Some(suite)) = (&c.tls_version, &c.tls_cipher_suite) {
                conn["tls_version"] = json!(version);
                conn["tls_cipher_suite"] = json!(suite);
            }
            if let Some(user) = &c.user {
                conn["authorized_user"] = json!(user);
            }
            conn
        })
        .collect();
    json!({
        "server_id": identity.server_id,
        "now": rfc3339(now),
        "num_connections": page.len(),
        "total": total,
        "offset": query.offset,
        "limit": query.limit,
        "connections": page,
    })
}

/// `/subsz` as nats-server shapes it; with `subs`, the subscriptions by
/// filter and queue group. BlipMQ keeps no match cache statistics: those
/// fields are 0.
pub fn render_subsz(identity: &Identity, subs: &[SubscriptionInfo], list: bool) -> Value {
    let total: u64 = subs.iter().map(|s| s.count).sum();
    let mut subsz = json!({
        "server_id": identity.server_id,
        "now": rfc3339(SystemTime::now()),
        "num_subscriptions": total,
        "num_cache": 0,
        "num_inserts": 0,
        "num_removes": 0,
        "num_matches": 0,
        "cache_hit_rate": 0.0,
        "max_fanout": 0,
        "avg_fanout": 0.0,
        "total": subs.len(),
    });
    if list {
        subsz["subscriptions_list"] = subs
            .iter()
            .map(|s| {
                json!({
                    "subject": s.filter,
                    "qgroup": s.queue.clone().unwrap_or_default(),
                    "count": s.count,
                    "msgs": s.delivered,
                })
            })
            .collect();
    }
    subsz
}

/// The fields nats-server's `/varz` has that BlipMQ can fill, from the
/// counters of every worker.
pub fn nats_varz(
    identity: &Identity,
    snapshot: &Snapshot,
    process: &Process,
) -> Map<String, Value> {
    let start = UNIX_EPOCH + Duration::from_nanos(snapshot.start_unix_nanos());
    let now = UNIX_EPOCH + Duration::from_nanos(snapshot.taken_unix_nanos());
    let uptime = now.duration_since(start).unwrap_or_default();
    let fields = json!({
        "server_id": identity.server_id,
        "server_name": identity.server_id,
        "proto": 1,
        "host": identity.host,
        "port": identity.port,
        "max_connections": identity.max_connections,
        "ping_interval": identity.ping_interval.as_nanos() as u64,
        "ping_max": identity.ping_max,
        "max_payload": identity.max_payload,
        "max_pending": identity.max_pending,
        "connections": snapshot.total(Counter::ConnectionsOpen),
        "total_connections": snapshot.total(Counter::ConnectionsAccepted),
        "routes": 0,
        "remotes": 0,
        "leafnodes": 0,
        "in_msgs": snapshot.total(Counter::MessagesPublished),
        "out_msgs": snapshot.total(Counter::MessagesDelivered),
        "in_bytes": snapshot.total(Counter::BytesIn),
        "out_bytes": snapshot.total(Counter::BytesOut),
        "slow_consumers": snapshot.total(Counter::ConnectionsClosedSlowConsumer),
        "subscriptions": snapshot.total(Counter::Subscriptions),
        "start": rfc3339(start),
        "now": rfc3339(now),
        "uptime": go_duration(uptime),
        "mem": process.rss_bytes,
        "cores": process.cores,
        "cpu": process.cpu_percent,
    });
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// This process's resources, for `/varz`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Process {
    pub rss_bytes: u64,
    pub cores: usize,
    /// CPU used since the start, as a percentage of one core.
    pub cpu_percent: f64,
}

impl Process {
    /// Reads /proc/self (zeros where it cannot).
    pub fn read(uptime: Duration) -> Process {
        let page = 4096;
        let rss_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        // utime and stime, the 14th and 15th fields, after the command's
        // closing parenthesis; in clock ticks (100 per second on Linux).
        let cpu_ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 2..];
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        let cpu_secs = cpu_ticks as f64 / 100.0;
        Process {
            rss_bytes: rss_pages * page,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_percent: if uptime.is_zero() {
                0.0
            } else {
                (cpu_secs / uptime.as_secs_f64() * 1000.0).round() / 10.0
            },
        }
    }
}

/// `/leafz` as nats-server shapes it, from the hub's side of the link
/// turned round: this broker's one remote (listed whether or not it is
/// up, unlike nats-server, which lists connected leaves), from the counters
/// the worker that owns the link writes at each tick. `subscriptions` is
/// the interest announced to the hub; BlipMQ adds `url`, `state`,
/// `hub_subscriptions`, `reconnects` and `dropped`.
pub fn render_leafz(
    server_id: &str,
    remote: Option<&LeafRemote>,
    snapshot: &Snapshot,
    now: SystemTime,
) -> Value {
    let count = |counter| snapshot.total(counter);
    let up = count(Counter::LeafConnected) > 0;
    let leafs: Vec<Value> = remote
        .iter()
        .map(|remote| {
            // Past the configured URLs: one the hub advertised, which the
            // counters cannot name.
            let url = remote
                .urls
                .get(count(Counter::LeafUrlIndex) as usize)
                .map_or("(advertised by the hub)", String::as_str);
            let (host, port) = url.rsplit_once(':').unwrap_or((url, ""));
            let rtt = Duration::from_micros(count(Counter::LeafRttMicros));
            json!({
                "name": remote.name,
                "is_spoke": true,
                "account": "$G",
                "ip": host.trim_start_matches('[').trim_end_matches(']'),
                "port": port.parse::<u16>().unwrap_or(0),
                "url": url,
                "state": if up { "up" } else { "down" },
                "rtt": format!("{rtt:?}"),
                "in_msgs": count(Counter::LeafMsgsIn),
                "out_msgs": count(Counter::LeafMsgsOut),
                "in_bytes": count(Counter::LeafBytesIn),
                "out_bytes": count(Counter::LeafBytesOut),
                "subscriptions": count(Counter::LeafLocalInterest),
                "hub_subscriptions": count(Counter::LeafHubInterest),
                "reconnects": count(Counter::LeafConnects).saturating_sub(1),
                "dropped": count(Counter::DroppedLeaf),
            })
        })
        .collect();
    json!({
        "server_id": server_id,
        "now": rfc3339(now),
        "leafnodes": if up { leafs.len() } else { 0 },
        "leafs": leafs,
    })
}

/// `ip:port` as its parts.
fn split_peer(peer: Option<&str>) -> (String, u16) {
    peer.and_then(|peer| peer.parse::<std::net::SocketAddr>().ok())
        .map_or((String::new(), 0), |addr| {
            (addr.ip().to_string(), addr.port())
        })
}

/// A time as nats-server writes one (RFC 3339, UTC).
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// A duration as Go prints one rounded to the second (`1h2m3s`, `45s`).
fn go_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64().round() as u64;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests;
