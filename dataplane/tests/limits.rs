//! The connection guards over real sockets, on every backend: the
//! handshake timeout (`auth.timeout`), also against a flood of idle
//! connections while traffic flows; the publish rates
//! (`limits.max_msgs_per_sec` with `rate_policy` pace and reject); and
//! `limits.max_connections_per_ip`.

#[macro_use]
mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use blipmq_protocol::encode;
use common::*;

for_backends! {
    workers: [
        handshake_timeout_closes_connections_without_connect,
        idle_flood_is_closed_in_time_while_traffic_flows,
        pace_holds_a_publisher_to_its_rate_and_loses_nothing,
        reject_refuses_the_excess_with_429,
        per_ip_limit_refuses_one_more_until_one_leaves,
    ],
    two_workers: [],
}

/// No CONNECT within `auth.timeout`: ERROR 401 and close, for BlipMQ and
/// NATS clients alike; a client that connected stays.
fn handshake_timeout_closes_connections_without_connect(backend: Backend, workers: usize) {
    let timeout = Duration::from_millis(400);
    let config = format!("{}[auth]\ntimeout = \"400ms\"\n", nats_config(backend));
    let broker = Broker::start_on(backend, workers, &config);
    let mut connected = Raw::handshake(broker.addr());
    let started = Instant::now();
    let mut silent = Raw::connect(broker.addr());
    // Part of a CONNECT is not a CONNECT.
    silent.send(&connect_bytes(r#"{"protocol":1}"#)[..6]);
    let frames = silent.expect_closed();
    let waited = started.elapsed();
    assert!(
        matches!(frames.as_slice(), [f] if f.error() == Some((401, HANDSHAKE_TIMEOUT.into()))),
        "expected ERROR 401 {HANDSHAKE_TIMEOUT:?} and close, got {frames:?}"
    );
    assert!(
        waited >= timeout - Duration::from_millis(50) && waited < timeout + Duration::from_secs(1),
        "closed after {waited:?} for a timeout of {timeout:?}"
    );
    let mut nats = tcp_connect(broker.nats_addr(), TIMEOUT).expect("NATS connect");
    nats.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut text = String::new();
    nats.read_to_string(&mut text)
        .expect("the broker closes within 5 s");
    assert!(
        text.starts_with("INFO {") && text.ends_with("\r\n-ERR 'Authentication Timeout'\r\n"),
        "{text:?}"
    );
    connected.ping_pong();
}

/// Opened, never a word: how long a connection waits for the broker to
/// close it, and what it was told meanwhile.
struct Idle {
    stream: TcpStream,
    opened: Instant,
}

/// Reads `idle` until the broker closes it or `deadline` passes; returns
/// the ERROR it got (after INFO), or why not.
fn closed_with_error(idle: &mut Idle, deadline: Instant) -> Result<(u16, String), String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "still open {:?} after it opened",
                idle.opened.elapsed()
            ));
        }
        idle.stream.set_read_timeout(Some(left)).unwrap();
        match idle.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{e} {:?} after it opened", idle.opened.elapsed())),
        }
    }
    last_error(&bytes).ok_or_else(|| format!("closed without an ERROR: {bytes:02x?}"))
}

/// 2,000 connections that never send CONNECT are all closed with ERROR
/// 401 within `auth.timeout` + 1 s of opening, while a publisher and a
/// subscriber go on exchanging messages.
fn idle_flood_is_closed_in_time_while_traffic_flows(backend: Backend, workers: usize) {
    const IDLE: usize = 2_000;
    const AUTH_TIMEOUT: Duration = Duration::from_secs(1);
    let limit = raise_nofile();
    assert!(
        limit >= 2 * IDLE as u64 + 100,
        "RLIMIT_NOFILE {limit} is too low for {IDLE} connections"
    );
    let config = "[server]\nmax_connections = 10000\n[auth]\ntimeout = \"1s\"\n";
    let broker = Broker::start_on(backend, workers, config);
    let addr = broker.addr();
    let traffic = Exchange::start(addr);
    let flood_started = Instant::now();
    let mut idle: Vec<Idle> = as_client_of(addr, move || {
        (0..IDLE)
            .map(|i| {
                let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
                    .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
                Idle {
                    stream,
                    opened: Instant::now(),
                }
            })
            .collect()
    });
    let before = traffic.round_trips();
    let mut late = Vec::new();
    for (i, conn) in idle.iter_mut().enumerate() {
        let deadline = conn.opened + AUTH_TIMEOUT + Duration::from_secs(1);
        match closed_with_error(conn, deadline) {
            Ok((401, _)) => {}
            other => late.push((i, other)),
        }
    }
    let flood = flood_started.elapsed();
    let during = traffic.round_trips() - before;
    traffic.finish();
    eprintln!(
        "{IDLE} idle connections opened and closed in {flood:?}; {during} round trips meanwhile"
    );
    assert!(
        late.is_empty(),
        "{} of {IDLE} not closed with ERROR 401 within auth.timeout + 1 s, e.g. {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    assert!(during > 0, "no message went through during the flood");
    let mut fresh = Raw::handshake(addr);
    fresh.ping_pong();
}

fn numbered(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

/// `rate_policy = "pace"`: a publisher writing far faster than its rate
/// gets through at about its rate (after a burst of one second's worth),
/// every message delivered, in order.
fn pace_holds_a_publisher_to_its_rate_and_loses_nothing(backend: Backend, workers: usize) {
    const RATE: u32 = 100;
    const COUNT: u32 = 250;
    let config = format!("[limits]\nmax_msgs_per_sec = {RATE}\nrate_policy = \"pace\"\n");
    let broker = Broker::start_on(backend, workers, &config);
    let mut sub = Raw::handshake(broker.addr());
    sub.subscribe("paced", 1);
    let mut publisher = Raw::handshake(broker.addr());
    publisher.ping_pong();
    let mut burst = Vec::new();
    for n in 0..COUNT {
        encode::put_publish(&mut burst, b"paced", None, &numbered(n), false);
    }
    let started = Instant::now();
    publisher.send(&burst);
    let mut burst_done = None;
    for n in 0..COUNT {
        let got = sub.expect_msg();
        assert_eq!(got.payload, numbered(n), "lost or out of order");
        if n + 1 == RATE {
            burst_done = Some(started.elapsed());
        }
    }
    let took = started.elapsed();
    // 150 past the burst at 100 a second: 1.5 s, give or take a tick.
    let expected = Duration::from_millis(u64::from(COUNT - RATE) * 1000 / u64::from(RATE));
    assert!(
        took >= expected - Duration::from_millis(200) && took < expected + Duration::from_secs(2),
        "{COUNT} messages at {RATE}/s took {took:?} (burst of {RATE} in {burst_done:?}); expected about {expected:?}"
    );
    publisher.ping_pong();
}

/// `rate_policy = "reject"`: the messages over the rate get ERROR 429 and
/// are not delivered; the connection stays open.
fn reject_refuses_the_excess_with_429(backend: Backend, workers: usize) {
    let config = "[limits]\nmax_msgs_per_sec = 5\nrate_policy = \"reject\"\n";
    let broker = Broker::start_on(backend, workers, config);
    let mut sub = Raw::handshake(broker.addr());
    sub.subscribe("capped", 1);
    let mut publisher = Raw::handshake(broker.addr());
    let mut frames = Vec::new();
    for n in 0..8 {
        encode::put_publish(&mut frames, b"capped", None, &numbered(n), true);
    }
    publisher.send(&frames);
    for _ in 0..5 {
        publisher.expect_ok();
    }
    for _ in 0..3 {
        let reason = publisher.expect_error(429);
        assert_eq!(reason, "rate limit exceeded");
    }
    for n in 0..5 {
        assert_eq!(sub.expect_msg().payload, numbered(n));
    }
    sub.ping_pong();
    publisher.ping_pong();
}

/// `limits.max_connections_per_ip = 3`: one more connection from the
/// address gets ERROR 503 and is closed (whatever worker it lands on); once
/// one leaves, a new one is accepted.
fn per_ip_limit_refuses_one_more_until_one_leaves(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, "[limits]\nmax_connections_per_ip = 3\n");
    check_limit_of_three(broker.addr(), "maximum connections per IP address exceeded");
}
