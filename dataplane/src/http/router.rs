//! What each path answers: the routing and rendering of one request,
//! sans-IO (the server in `server.rs` parses requests and writes answers).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::backend::PortMonitor;
use crate::stats::{Snapshot, StatsReader};

use super::health::{check_health, Health, DEFAULT_STALE_AFTER};
use super::metrics::{render_prometheus_with_xstats, PROMETHEUS_CONTENT_TYPE};
use super::natsz::{
    nats_varz, render_connz, render_leafz, render_subsz, BrokerView, ConnzQuery, Process,
};
use super::varz::render_varz;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// The methods served, as a 405's `Allow` header lists them.
pub const ALLOWED_METHODS: &str = "GET, HEAD";

/// Where the server reads the counters from.
pub enum StatsSource {
    /// A reader of a segment of this process (`blipmqd` serving its own).
    Reader(StatsReader),
    /// A broker's `stats_file`, opened on demand and reopened when a broker
    /// restart replaces it (`blipmqctl serve`).
    File {
        path: PathBuf,
        reader: Mutex<Option<StatsReader>>,
    },
}

impl StatsSource {
    /// The segment file at `path`; it need not exist yet.
    pub fn file(path: &Path) -> StatsSource {
        StatsSource::File {
            path: path.to_path_buf(),
            reader: Mutex::new(None),
        }
    }

    /// Reads every counter now, or says why it cannot.
    pub fn snapshot(&self) -> Result<Snapshot, String> {
        match self {
            StatsSource::Reader(reader) => Ok(reader.snapshot()),
            StatsSource::File { path, reader } => {
                let mut reader = reader.lock().unwrap_or_else(|poison| poison.into_inner());
                if reader.as_ref().is_none_or(StatsReader::replaced) {
                    *reader = None;
                    *reader = Some(StatsReader::open(path).map_err(|error| error.to_string())?);
                }
                Ok(reader
                    .as_ref()
                    .map(StatsReader::snapshot)
                    .expect("opened above"))
            }
        }
    }
}

/// Settings of the endpoints.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `/healthz` reports a worker whose heartbeat is older than this.
    pub stale_after: Duration,
    /// The broker's device, whose extended statistics `/metrics` adds
    /// (`blipmq_port_xstat`); only in the broker's own process.
    pub port: Option<Arc<dyn PortMonitor>>,
    /// The running broker, for nats-server's endpoints; only in the
    /// broker's own process.
    pub broker: Option<Arc<dyn BrokerView>>,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            stale_after: DEFAULT_STALE_AFTER,
            port: None,
            broker: None,
        }
    }
}

/// An answer, before the server writes it (adding `Content-Length`,
/// `Cache-Control: no-store`, and `Allow` to a 405).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub(super) fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, TEXT, body)
    }
}

const INDEX: &str = "BlipMQ: /metrics (Prometheus), /healthz, /varz (JSON); \
in the broker: /connz, /subsz, /leafz (nats-server's)\n";

/// Answers one request: its method, its path and its query (without the
/// `?`, empty when none). Sans-IO: the server parses the request and
/// writes the answer.
pub fn respond(
    method: &str,
    path: &str,
    query: &str,
    source: &StatsSource,
    config: &HttpConfig,
) -> Response {
    let nats_only = matches!(path, "/connz" | "/subsz");
    let in_broker = nats_only || path == "/leafz";
    let served = matches!(path, "/" | "/metrics" | "/healthz" | "/varz")
        || (in_broker && config.broker.is_some());
    if !served {
        return Response::text(404, format!("not found: {path}\n{INDEX}"));
    }
    if !matches!(method, "GET" | "HEAD") {
        return Response::text(
            405,
            format!("method {method} not allowed: use {ALLOWED_METHODS}\n"),
        );
    }
    if path == "/" {
        return Response::text(200, INDEX);
    }
    if let (true, Some(broker)) = (nats_only, &config.broker) {
        return nats_endpoint(path, query, broker.as_ref());
    }
    let snapshot = match source.snapshot() {
        Ok(snapshot) => snapshot,
        Err(reason) => {
            let health = Health::Unavailable(reason);
            return Response::text(503, health.body());
        }
    };
    match path {
        "/metrics" => {
            let xstats = config
                .port
                .as_ref()
                .map(|port| port.xstats())
                .unwrap_or_default();
            let body = render_prometheus_with_xstats(&snapshot, xstats);
            Response::new(200, PROMETHEUS_CONTENT_TYPE, body)
        }
        "/healthz" => {
            let health = check_health(&snapshot, config.stale_after);
            Response::text(health.status(), health.body())
        }
        "/leafz" => {
            let broker = config.broker.as_ref().expect("served only with a broker");
            let identity = broker.identity();
            let remote = identity.leaf_remote.as_ref();
            let now = std::time::SystemTime::now();
            let leafz = render_leafz(&identity.server_id, remote, &snapshot, now);
            Response::new(200, JSON, format!("{leafz}\n"))
        }
        _ => {
            let mut varz = render_varz(&snapshot, config.stale_after);
            if let (Some(broker), Value::Object(fields)) = (&config.broker, &mut varz) {
                let uptime = Duration::from_nanos(
                    snapshot
                        .taken_unix_nanos()
                        .saturating_sub(snapshot.start_unix_nanos()),
                );
                let nats = nats_varz(&broker.identity(), &snapshot, &Process::read(uptime));
                fields.extend(nats);
            }
            Response::new(200, JSON, format!("{varz}\n"))
        }
    }
}

/// `/connz` and `/subsz`, from the workers' answers.
fn nats_endpoint(path: &str, query: &str, broker: &dyn BrokerView) -> Response {
    let identity = broker.identity();
    let body = if path == "/connz" {
        let query = match ConnzQuery::parse(query) {
            Ok(query) => query,
            Err(why) => return Response::text(400, format!("bad request: {why}\n")),
        };
        broker
            .connections()
            .map(|conns| render_connz(&identity, conns, &query, std::time::SystemTime::now()))
    } else {
        let list = query
            .split('&')
            .any(|pair| matches!(pair, "subs=1" | "subs=true" | "subs=detail"));
        broker
            .subscriptions()
            .map(|subs| render_subsz(&identity, &subs, list))
    };
    match body {
        Ok(body) => Response::new(200, JSON, format!("{body}\n")),
        Err(why) => Response::text(503, format!("the workers did not answer: {why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counter, StatsSegment};

    pub(crate) fn segment() -> StatsSegment {
        let segment = StatsSegment::anonymous(2).unwrap();
        for writer in [segment.worker(0).unwrap(), segment.worker(1).unwrap()] {
            writer.add(Counter::MessagesPublished, 7 + writer.id() as u64);
            writer.heartbeat();
        }
        segment
    }

    fn get(target: &str, source: &StatsSource) -> Response {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        respond("GET", path, query, source, &HttpConfig::default())
    }

    #[test]
    fn endpoints() {
        let segment = segment();
        let source = StatsSource::Reader(segment.reader());

        let metrics = get("/metrics", &source);
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, PROMETHEUS_CONTENT_TYPE);
        assert!(metrics
            .body
            .contains("blipmq_messages_published_total{worker=\"1\"} 8\n"));

        let health = get("/healthz", &source);
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

        let varz = get("/varz?pretty=0", &source);
        assert_eq!(varz.status, 200);
        assert_eq!(varz.content_type, JSON);
        let json: serde_json::Value = serde_json::from_str(&varz.body).unwrap();
        assert_eq!(json["totals"]["messages_published"], 15);

        assert_eq!(get("/", &source).status, 200);
    }

    #[test]
    fn unknown_paths_and_methods() {
        let segment = segment();
        let source = StatsSource::Reader(segment.reader());
        let answer =
            |method: &str, path: &str| respond(method, path, "", &source, &HttpConfig::default());

        assert_eq!(get("/nope", &source).status, 404);
        assert_eq!(get("/metrics/x", &source).status, 404);
        // Without a broker, nats-server's endpoints are not there.
        assert_eq!(get("/connz", &source).status, 404);
        let post = answer("POST", "/metrics");
        assert_eq!(post.status, 405);
        assert_eq!(post.body, "method POST not allowed: use GET, HEAD\n");
        assert_eq!(answer("DELETE", "/nope").status, 404);
        assert_eq!(answer("HEAD", "/healthz"), get("/healthz", &source));
    }

    #[test]
    fn a_missing_file_is_unavailable_then_read_once_it_exists() {
        let path =
            std::env::temp_dir().join(format!("blipmq-http-unit-{}.stats", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let source = StatsSource::file(&path);
        for endpoint in ["/healthz", "/metrics", "/varz"] {
            let response = get(endpoint, &source);
            assert_eq!(response.status, 503, "{endpoint}");
            assert!(
                response.body.starts_with("unhealthy: stats segment "),
                "{}",
                response.body
            );
        }

        let segment = StatsSegment::create(&path, 1).unwrap();
        let writer = segment.worker(0).unwrap();
        writer.heartbeat();
        writer.add(Counter::MessagesPublished, 3);
        assert_eq!(get("/healthz", &source).status, 200);

        // A restart renames a new segment over the file: the source follows.
        let restarted = StatsSegment::create(&path, 1).unwrap();
        let writer = restarted.worker(0).unwrap();
        writer.heartbeat();
        writer.add(Counter::MessagesPublished, 5);
        assert!(get("/metrics", &source)
            .body
            .contains("blipmq_messages_published_total{worker=\"0\"} 5\n"));
        drop(segment);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_stale_worker_is_503() {
        let segment = StatsSegment::anonymous(2).unwrap();
        let fresh = segment.worker(0).unwrap();
        let stale = segment.worker(1).unwrap();
        fresh.heartbeat();
        stale.set(
            Counter::HeartbeatUnixMs,
            fresh.get(Counter::HeartbeatUnixMs) - 5000,
        );
        let source = StatsSource::Reader(segment.reader());
        let response = get("/healthz", &source);
        assert_eq!(response.status, 503);
        assert!(
            response.body.contains("worker 1 heartbeat is 5.0s old"),
            "{}",
            response.body
        );
        assert!(!response.body.contains("worker 0"), "{}", response.body);
    }
}
