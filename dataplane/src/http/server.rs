//! The HTTP/1.1 server of the endpoints: hyper on a current-thread tokio
//! runtime, on a thread of its own (never a worker core: the workers stay
//! sync and are never slowed by a scrape).
//!
//! Bounds: a request head of at most [`MAX_REQUEST_BYTES`] (longer gets
//! 431), [`REQUEST_TIMEOUT`] to send the head and again for the whole
//! exchange, at most [`MAX_CONNECTIONS`] served at once (more are closed
//! without an answer), one request per connection (`Connection: close`).
//! Answers are computed on tokio's blocking pool, since `/connz` waits for
//! the workers.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::router::{respond, HttpConfig, Response, StatsSource, ALLOWED_METHODS};

/// The longest request head (request line and headers) accepted; longer
/// gets 431. (Also the floor of hyper's read buffer.)
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request head, and the whole
/// exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 16;

/// What every connection answers from.
struct Endpoints {
    source: StatsSource,
    config: HttpConfig,
}

/// A running HTTP server: one thread with the runtime that accepts and
/// serves, and its blocking pool; none of them pinned (threads spawned
/// from a non-worker thread inherit its affinity, never a worker core's).
/// Dropping it stops it.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` and starts serving `source`.
    pub fn start(
        listen: SocketAddr,
        source: StatsSource,
        config: HttpConfig,
    ) -> io::Result<HttpServer> {
        let listener = std::net::TcpListener::bind(listen).map_err(|error| {
            io::Error::new(error.kind(), format!("metrics listener {listen}: {error}"))
        })?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(MAX_CONNECTIONS)
            .thread_name("blipmq-http-answer")
            .build()?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let endpoints = Arc::new(Endpoints { source, config });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("blipmq-http".to_owned())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, endpoints, stopped));
                // Connections being answered are dropped with the runtime;
                // an answer still being computed is not waited for.
                runtime.shutdown_background();
            })?;
        Ok(HttpServer {
            local_addr,
            stop: Some(stop),
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

    /// Stops accepting, closes the connections being served and waits for
    /// the server's thread.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn accept_loop(
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            // Sent, or the sender dropped: either way, stop.
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                tracing::debug!(%error, "metrics accept failed");
                // Out of descriptors, say: do not spin on the error.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap: dropping the stream closes it without an answer.
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            tokio::spawn(serve_connection(stream, slot, endpoints.clone()));
        }
    }
}

/// Serves one connection, one request, within [`REQUEST_TIMEOUT`]; the
/// slot is freed when it ends.
async fn serve_connection(
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    endpoints: Arc<Endpoints>,
) {
    let service = service_fn(move |request| answer(request, endpoints.clone()));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(REQUEST_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "metrics connection failed"),
        Err(_) => tracing::debug!("metrics connection timed out"),
    }
}

/// Routes one request on the blocking pool and turns the answer into
/// hyper's.
async fn answer(
    request: Request<Incoming>,
    endpoints: Arc<Endpoints>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = tokio::task::spawn_blocking(move || {
        let query = uri.query().unwrap_or_default();
        respond(
            method.as_str(),
            uri.path(),
            query,
            &endpoints.source,
            &endpoints.config,
        )
    })
    .await
    .unwrap_or_else(|error| {
        tracing::warn!(%error, "metrics answer failed");
        Response::text(500, "internal error\n")
    });
    Ok(to_hyper(response))
}

fn to_hyper(response: Response) -> hyper::Response<Full<Bytes>> {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(response.content_type),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    }
    answer
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;
    use crate::stats::{Counter, StatsSegment};

    /// Longer than any answer here takes; shorter than a test's patience.
    const READ_LIMIT: Duration = Duration::from_secs(3);

    fn segment() -> StatsSegment {
        let segment = StatsSegment::anonymous(1).unwrap();
        let writer = segment.worker(0).unwrap();
        writer.add(Counter::MessagesPublished, 7);
        writer.heartbeat();
        segment
    }

    fn start(segment: &StatsSegment) -> HttpServer {
        HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            StatsSource::Reader(segment.reader()),
            HttpConfig::default(),
        )
        .unwrap()
    }

    fn connect(server: &HttpServer, read_limit: Duration) -> TcpStream {
        let stream = TcpStream::connect(server.local_addr()).unwrap();
        stream.set_read_timeout(Some(read_limit)).unwrap();
        stream
    }

    /// What the server sends until it closes: `Ok` with the bytes (empty
    /// when it closed without an answer), `Err` when it kept the
    /// connection open past the read limit.
    fn read_until_closed(stream: &mut TcpStream) -> Result<String, io::Error> {
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => Ok(String::from_utf8_lossy(&answer).into_owned()),
            // A close with our request unread is a reset: still a close.
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                Ok(String::from_utf8_lossy(&answer).into_owned())
            }
            Err(error) => Err(error),
        }
    }

    fn exchange(server: &HttpServer, request: &[u8]) -> String {
        let mut stream = connect(server, READ_LIMIT);
        stream.write_all(request).unwrap();
        read_until_closed(&mut stream).expect("the server closes after its answer")
    }

    /// Over a real socket: the bytes on the wire, and a clean stop.
    #[test]
    fn serves_over_tcp_and_stops() {
        let segment = segment();
        let server = start(&segment);
        let answer = exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        for header in [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Length: 3",
            "Cache-Control: no-store",
            "Connection: close",
        ] {
            assert!(answer.contains(&format!("\r\n{header}\r\n")), "{answer}");
        }
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");

        let metrics = exchange(&server, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(metrics.starts_with("HTTP/1.0 200 OK\r\n"), "{metrics}");
        assert!(
            metrics.contains("\nblipmq_messages_published_total{worker=\"0\"} 7\n"),
            "{metrics}"
        );

        // A connection being served does not hold the stop up.
        let _held = connect(&server, READ_LIMIT);
        let addr = server.local_addr();
        let stopping = Instant::now();
        server.stop();
        assert!(stopping.elapsed() < Duration::from_secs(1));
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn methods_other_than_get_and_head_are_405() {
        let segment = segment();
        let server = start(&segment);
        let post = exchange(&server, b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");

        let head = exchange(&server, b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Length: 3\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    }

    #[test]
    fn malformed_requests_are_400() {
        let segment = segment();
        let server = start(&segment);
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            let answer = exchange(&server, bad);
            assert!(
                answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{:?}: {answer}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_oversized_head_is_431() {
        let segment = segment();
        let server = start(&segment);
        let long = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES)
        );
        let answer = exchange(&server, long.as_bytes());
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        // Just under the bound is served.
        let fits = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES - 64)
        );
        let answer = exchange(&server, fits.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }

    /// A client that sends nothing, and one that sends its head a byte at
    /// a time, are both closed without an answer once REQUEST_TIMEOUT is
    /// up.
    #[test]
    fn slow_clients_are_closed_at_the_timeout() {
        let segment = segment();
        let server = start(&segment);
        let limit = REQUEST_TIMEOUT + READ_LIMIT;
        let started = Instant::now();
        let mut silent = connect(&server, limit);
        let mut trickle = connect(&server, Duration::from_millis(200));
        let head = b"GET /healthz HTTP/1.1\r\nX: ";
        let mut sent = 0;
        let trickle_closed = loop {
            // The server may close (reset) while we write: that is the end.
            let written = trickle.write_all(&head[sent % head.len()..][..1]);
            sent += 1;
            let mut byte = [0u8; 1];
            match trickle.read(&mut byte) {
                Ok(0) => break started.elapsed(),
                Ok(_) => panic!("the trickling client got an answer"),
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {
                    break started.elapsed()
                }
                Err(_) if written.is_err() => break started.elapsed(),
                Err(_) => assert!(started.elapsed() < limit, "never closed"),
            }
        };
        let silent_answer = read_until_closed(&mut silent).expect("closed in time");
        let silent_closed = started.elapsed();
        assert_eq!(silent_answer, "");
        for closed in [trickle_closed, silent_closed] {
            assert!(
                closed >= REQUEST_TIMEOUT - Duration::from_millis(500) && closed < limit,
                "closed after {closed:?}"
            );
        }
    }

    /// MAX_CONNECTIONS held connections are served; one more is closed
    /// without an answer while they are held; a slot freed serves again.
    #[test]
    fn connections_over_the_cap_are_closed_without_an_answer() {
        let segment = segment();
        let server = start(&segment);
        let mut held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| connect(&server, READ_LIMIT))
            .collect();
        // Accepted in order: by then the held ones have every slot.
        let mut over = connect(&server, READ_LIMIT);
        over.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let answer = read_until_closed(&mut over).expect("closed at once");
        assert_eq!(answer, "");

        let mut first = held.remove(0);
        first.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let answer = read_until_closed(&mut first).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

        // Its slot is freed just after it closes: a new client is served
        // within a few tries (no event to wait on from outside).
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let answer = exchange(&server, b"GET /healthz HTTP/1.1\r\n\r\n");
            if answer.starts_with("HTTP/1.1 200 OK\r\n") {
                break;
            }
            assert_eq!(answer, "", "closed without an answer, or served");
            assert!(Instant::now() < deadline, "the freed slot never served");
        }
        drop(held);
    }
}
