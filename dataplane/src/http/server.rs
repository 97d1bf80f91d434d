//! A deliberately small HTTP/1.1 server: `GET` only, one request per
//! connection (`Connection: close`), a bounded request head, timeouts, and
//! a bounded number of connections served at once.
//!
//! Prometheus scrapes and health probes are a handful of requests a
//! second; a thread per connection (at most [`MAX_CONNECTIONS`]) is plenty
//! and keeps the code free of an async runtime.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::backend::PortMonitor;
use crate::stats::{Snapshot, StatsReader};

use super::health::{check_health, Health, DEFAULT_STALE_AFTER};
use super::metrics::{render_prometheus, PROMETHEUS_CONTENT_TYPE};
use super::natsz::{nats_varz, render_connz, render_subsz, BrokerView, ConnzQuery, Process};
use super::varz::render_varz;

/// The longest request head (request line and headers) accepted; longer
/// gets 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request, and to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

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

/// The device's extended statistics in the Prometheus text format.
fn render_xstats(port: &dyn PortMonitor) -> String {
    let xstats = port.xstats();
    if xstats.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "# HELP blipmq_port_xstat The device's extended statistics (DPDK xstats), by name.\n\
         # TYPE blipmq_port_xstat untyped\n",
    );
    for (name, value) in xstats {
        let name = name.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("blipmq_port_xstat{{name=\"{name}\"}} {value}\n"));
    }
    out
}

/// An answer, before it is written.
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

    fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, TEXT, body)
    }

    /// The status line, headers and body, as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let allow = if self.status == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

const INDEX: &str = "BlipMQ: /metrics (Prometheus), /healthz, /varz (JSON); \
in the broker: /connz, /subsz (nats-server's)\n";

/// Answers one request, given its head (the request line and headers,
/// with or without the blank line that ends them). Sans-IO: the caller
/// reads and writes the socket.
pub fn respond(request_head: &[u8], source: &StatsSource, config: &HttpConfig) -> Response {
    let line_end = request_head
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(request_head.len());
    let Some(line) = std::str::from_utf8(&request_head[..line_end])
        .ok()
        .map(|l| l.trim_end_matches('\r'))
    else {
        return Response::text(400, "bad request: the request line is not UTF-8\n");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "bad request: expected METHOD TARGET HTTP/1.x\n");
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() {
        return Response::text(400, "bad request: expected METHOD TARGET HTTP/1.x\n");
    }
    let target = target.split('#').next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let nats_only = matches!(path, "/connz" | "/subsz");
    let served = matches!(path, "/" | "/metrics" | "/healthz" | "/varz")
        || (nats_only && config.broker.is_some());
    if !served {
        return Response::text(404, format!("not found: {path}\n{INDEX}"));
    }
    if method != "GET" {
        return Response::text(405, format!("method {method} not allowed: use GET\n"));
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
            let mut body = render_prometheus(&snapshot);
            if let Some(port) = &config.port {
                body.push_str(&render_xstats(port.as_ref()));
            }
            Response::new(200, PROMETHEUS_CONTENT_TYPE, body)
        }
        "/healthz" => {
            let health = check_health(&snapshot, config.stale_after);
            Response::text(health.status(), health.body())
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

/// Reads a request head: up to the blank line, at most
/// [`MAX_REQUEST_BYTES`]. `Ok(None)` when the head is too long.
fn read_head(stream: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // Look for the end from a little before the new bytes, in case the
        // blank line straddles two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        let tail = &head[from..];
        if let Some(end) = find(tail, b"\r\n\r\n")
            .map(|i| from + i + 4)
            .or_else(|| find(tail, b"\n\n").map(|i| from + i + 2))
        {
            if end > MAX_REQUEST_BYTES {
                return Ok(None);
            }
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves one connection: one request, one answer, close.
fn serve_connection(mut stream: TcpStream, source: &StatsSource, config: &HttpConfig) {
    if stream.set_read_timeout(Some(REQUEST_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(REQUEST_TIMEOUT)).is_err()
    {
        return;
    }
    let response = match read_head(&mut stream) {
        Ok(Some(head)) => respond(&head, source, config),
        Ok(None) => Response::text(431, "request head too large\n"),
        // Timed out or closed before a whole request: nobody to answer.
        Err(_) => return,
    };
    let _ = stream.write_all(&response.to_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// A running HTTP server: an accept thread and a thread per connection,
/// none of them pinned (threads spawned from a non-worker thread inherit
/// its affinity, never a worker core's).
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` and starts serving `source`.
    pub fn start(
        listen: SocketAddr,
        source: StatsSource,
        config: HttpConfig,
    ) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(listen).map_err(|error| {
            io::Error::new(error.kind(), format!("metrics listener {listen}: {error}"))
        })?;
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let source = Arc::new(source);
        let thread = std::thread::Builder::new()
            .name("blipmq-http".to_owned())
            .spawn({
                let stop = stop.clone();
                move || accept_loop(listener, source, config, stop)
            })?;
        Ok(HttpServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port chosen when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until [`stop`](Self::stop) is called from elsewhere, which
    /// for `blipmqctl serve` is never: it blocks forever.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops accepting and waits for the accept thread (connections being
    /// answered finish on their own, within [`REQUEST_TIMEOUT`]).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let wake = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, self.local_addr.port()))
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv6Addr::LOCALHOST, self.local_addr.port()))
            }
            _ => self.local_addr,
        };
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            let _ = thread.join();
        }
        // Otherwise leave the thread: it exits at its next connection.
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Counts a connection being served; uncounts it when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(
    listener: TcpListener,
    source: Arc<StatsSource>,
    config: HttpConfig,
    stop: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "metrics accept failed");
                // Out of descriptors, say: do not spin on the error.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let slot = Slot(active.clone());
        let source = source.clone();
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name("blipmq-http-conn".to_owned())
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &source, &config);
            });
        if let Err(error) = spawned {
            tracing::debug!(%error, "metrics connection thread failed to start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counter, StatsSegment};

    fn segment() -> StatsSegment {
        let segment = StatsSegment::anonymous(2).unwrap();
        for writer in [segment.worker(0).unwrap(), segment.worker(1).unwrap()] {
            writer.add(Counter::MessagesPublished, 7 + writer.id() as u64);
            writer.heartbeat();
        }
        segment
    }

    fn get(path: &str, source: &StatsSource) -> Response {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        respond(head.as_bytes(), source, &HttpConfig::default())
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
    fn unknown_paths_methods_and_garbage() {
        let segment = segment();
        let source = StatsSource::Reader(segment.reader());
        let answer = |head: &str| respond(head.as_bytes(), &source, &HttpConfig::default());

        assert_eq!(get("/nope", &source).status, 404);
        assert_eq!(get("/metrics/x", &source).status, 404);
        let post = answer("POST /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(post.status, 405);
        assert!(String::from_utf8(post.to_bytes())
            .unwrap()
            .contains("\r\nAllow: GET\r\n"));
        assert_eq!(answer("HEAD /healthz HTTP/1.1\r\n\r\n").status, 405);
        assert_eq!(answer("DELETE /nope HTTP/1.1\r\n\r\n").status, 404);
        assert_eq!(answer("GET /metrics HTTP/1.0\n\n").status, 200);
        for bad in [
            "",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 x\r\n\r\n",
        ] {
            assert_eq!(answer(bad).status, 400, "{bad:?}");
        }
        assert_eq!(
            respond(
                b"GET /\xff HTTP/1.1\r\n\r\n",
                &source,
                &HttpConfig::default()
            )
            .status,
            400
        );
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

    #[test]
    fn reading_the_head() {
        let mut ok: &[u8] = b"GET / HTTP/1.1\r\nA: b\r\n\r\nleftover";
        assert_eq!(
            read_head(&mut ok).unwrap().unwrap(),
            b"GET / HTTP/1.1\r\nA: b\r\n\r\n"
        );
        let long = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert!(read_head(&mut long.as_bytes()).unwrap().is_none());
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(
            read_head(&mut cut).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    /// Over a real socket: the bytes on the wire, and a clean stop.
    #[test]
    fn serves_over_tcp_and_stops() {
        let segment = segment();
        let server = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            StatsSource::Reader(segment.reader()),
            HttpConfig::default(),
        )
        .unwrap();
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("\r\nContent-Length: 3\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        let addr = server.local_addr();
        server.stop();
        assert!(TcpStream::connect(addr).is_err());
    }
}
