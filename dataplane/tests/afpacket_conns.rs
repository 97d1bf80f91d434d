//! Many concurrent connections on one afpacket worker (issue 4).
//!
//! `ten_thousand_connections_held_and_served`: 10,000 clients in the lab's
//! client namespace each complete the handshake (INFO, CONNECT/OK,
//! PING/PONG) with a 1-worker afpacket broker and stay open together; then
//! a publish reaches a subscriber among them, and a sample of the idle
//! ones still answers PING.
//!
//! `throughput_with_idle_connections` (ignored: a measurement) prints the
//! 1 pub → 1 sub rate with 0, 1,000 and 10,000 idle connections open:
//!
//! ```text
//! cargo test --release -p blipmq-dataplane --test afpacket_conns -- \
//!     --ignored --nocapture throughput_with_idle_connections
//! ```
//!
//! (`BLIPMQ_CONNS_IDLE=0,1000,10000` and `BLIPMQ_CONNS_MESSAGES=200000`
//! override the defaults.)
//!
//! Needs root and `ip netns`: without them each test prints why and passes
//! (skips), except under CI=true, where it fails.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blipmq_protocol::encode;
use common::netns;
use common::{connect_bytes, ping_bytes, raise_nofile, Backend, Broker, Next, Raw};

/// Small socket buffers, so 10,000 connections fit (smoltcp allocates both
/// buffers of each socket up front).
const CONFIG: &str = "[server]\ndrain_timeout = \"2s\"\nmax_connections = 20000\n\
    [afpacket]\ntcp_rx_buffer = 8192\ntcp_tx_buffer = 8192\nlisteners = 256\n";

/// The measurement's config: buffers large enough for a fast stream, the
/// same for every N.
const BENCH_CONFIG: &str = "[server]\ndrain_timeout = \"2s\"\nmax_connections = 20000\n\
    [afpacket]\ntcp_rx_buffer = 65536\ntcp_tx_buffer = 65536\nlisteners = 256\n";

const CONNECTIONS: usize = 10_000;
/// Client threads opening connections (each does batches in turn).
const OPENERS: usize = 8;
/// Connections one opener connects before it completes their handshakes.
const BATCH: usize = 64;
/// The whole test finishes within this, or it fails.
const TIME_LIMIT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(10);

/// Opens `n` connections from the client namespace at `ns`, each through
/// INFO, CONNECT/OK and PING/PONG; returns them open.
fn open_idle(ns: &str, addr: SocketAddr, n: usize, deadline: Instant) -> Vec<TcpStream> {
    let hello = {
        let mut bytes = connect_bytes(r#"{"protocol":1}"#);
        bytes.extend_from_slice(&ping_bytes());
        bytes
    };
    let threads: Vec<_> = (0..OPENERS)
        .map(|t| {
            let share = n / OPENERS + usize::from(t < n % OPENERS);
            let ns = ns.to_string();
            let hello = hello.clone();
            std::thread::spawn(move || {
                netns::enter(&ns);
                let mut open = Vec::with_capacity(share);
                while open.len() < share {
                    assert!(
                        Instant::now() < deadline,
                        "{} connections open after the time limit",
                        open.len()
                    );
                    let batch = BATCH.min(share - open.len());
                    let mut streams = Vec::with_capacity(batch);
                    for _ in 0..batch {
                        let stream = TcpStream::connect_timeout(&addr, STEP)
                            .unwrap_or_else(|e| panic!("connect #{}: {e}", open.len()));
                        streams.push(stream);
                    }
                    for stream in &mut streams {
                        stream.set_nodelay(true).expect("TCP_NODELAY");
                        stream.write_all(&hello).expect("send CONNECT and PING");
                    }
                    for stream in streams {
                        let mut raw = Raw::from_stream(stream);
                        raw.expect_ok();
                        raw.expect_pong();
                        open.push(raw.into_stream());
                    }
                }
                open
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for thread in threads {
        match thread.join() {
            Ok(open) => all.extend(open),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    all
}

#[test]
fn ten_thousand_connections_held_and_served() {
    if !netns::available() {
        return;
    }
    let limit = raise_nofile();
    assert!(
        limit >= CONNECTIONS as u64 + 256,
        "RLIMIT_NOFILE {limit} is too low for {CONNECTIONS} connections"
    );
    let started = Instant::now();
    let deadline = started + TIME_LIMIT;
    let mut broker = Broker::start_on(Backend::AfPacket, 1, CONFIG);
    let addr = broker.addr();
    let ns = broker.lab().expect("lab").client_ns_path();

    let mut idle = open_idle(&ns, addr, CONNECTIONS, deadline);
    let opened = started.elapsed();
    assert_eq!(idle.len(), CONNECTIONS);

    // A subscriber and a publisher among them (the first two).
    let mut subscriber = Raw::wrap_stream(idle.swap_remove(0));
    let mut publisher = Raw::wrap_stream(idle.swap_remove(0));
    subscriber.subscribe("conns.hello", 7);
    publisher.publish("conns.hello", b"to one of ten thousand");
    publisher.ping_pong();
    let msg = subscriber.expect_msg_within(STEP);
    assert_eq!(
        (msg.subject.as_str(), msg.sid, msg.payload.as_slice()),
        ("conns.hello", 7, &b"to one of ten thousand"[..])
    );

    // Every 97th idle connection still answers.
    let mut sampled = 0;
    for stream in idle.iter().step_by(97) {
        let mut raw = Raw::wrap_stream(stream.try_clone().expect("clone"));
        raw.ping();
        match raw.next_frame(STEP) {
            Next::Frame(frame) => assert!(
                frame.is_op(blipmq_protocol::Op::Pong),
                "idle connection answered {frame:?}"
            ),
            other => panic!("idle connection #{sampled}: {other:?}"),
        }
        sampled += 1;
    }
    broker.assert_alive();
    eprintln!(
        "{CONNECTIONS} connections opened in {opened:.2?}; {sampled} idle ones answered PING; total {:.2?}",
        started.elapsed()
    );
    assert!(started.elapsed() < TIME_LIMIT);
    drop(idle);
    drop((subscriber, publisher));
}

/// Publishes `count` 128-byte messages (pipelined, at most `WINDOW`
/// unreceived) from one connection to a subscriber on another; returns
/// messages per second.
fn pub_sub_rate(addr: SocketAddr, count: u64) -> f64 {
    const WINDOW: u64 = 8192;
    const SUBJECT: &str = "bench.rate";
    let mut subscriber = Raw::handshake(addr);
    subscriber.subscribe(SUBJECT, 1);
    let mut publisher = Raw::handshake(addr);
    let (progress_tx, progress_rx) = mpsc::channel::<u64>();
    let started = Instant::now();
    let receiving = std::thread::spawn(move || {
        let mut got = 0u64;
        while got < count {
            match subscriber.next_frame(Duration::from_secs(30)) {
                Next::Frame(frame) if frame.is_op(blipmq_protocol::Op::Message) => {
                    got += 1;
                    if got.is_multiple_of(256) || got == count {
                        let _ = progress_tx.send(got);
                    }
                }
                Next::Frame(_) => {}
                other => panic!("subscriber after {got} messages: {other:?}"),
            }
        }
    });
    let payload = [0x5au8; 128];
    let mut batch = Vec::with_capacity(64 * 1024);
    let (mut sent, mut received) = (0u64, 0u64);
    while sent < count {
        while sent < count && sent - received < WINDOW {
            encode::put_publish(&mut batch, SUBJECT.as_bytes(), None, &payload, false);
            sent += 1;
            if batch.len() >= 32 * 1024 {
                publisher.send(&batch);
                batch.clear();
            }
        }
        publisher.send(&batch);
        batch.clear();
        if sent < count {
            match progress_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(n) => received = n,
                Err(_) => break,
            }
        }
    }
    match receiving.join() {
        Ok(()) => {}
        Err(panic) => std::panic::resume_unwind(panic),
    }
    count as f64 / started.elapsed().as_secs_f64()
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn throughput_with_idle_connections() {
    if !netns::available() {
        return;
    }
    raise_nofile();
    let idle_counts: Vec<usize> = std::env::var("BLIPMQ_CONNS_IDLE")
        .unwrap_or_else(|_| "0,1000,10000".to_string())
        .split(',')
        .map(|n| n.trim().parse().expect("BLIPMQ_CONNS_IDLE: numbers"))
        .collect();
    let count: u64 = std::env::var("BLIPMQ_CONNS_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let mut base = None;
    for n in idle_counts {
        let broker = Broker::start_on(Backend::AfPacket, 1, BENCH_CONFIG);
        let addr = broker.addr();
        let ns = broker.lab().expect("lab").client_ns_path();
        let t = Instant::now();
        let idle = open_idle(&ns, addr, n, t + Duration::from_secs(600));
        let opened = t.elapsed();
        // Best of three runs.
        let rate = (0..3)
            .map(|_| pub_sub_rate(addr, count))
            .fold(0.0f64, f64::max);
        let base = *base.get_or_insert(rate);
        println!(
            "idle={n:>6} opened_in={:>8.2?} msgs/s={rate:>10.0} ratio={:.3}",
            opened,
            rate / base
        );
        drop(idle);
        drop(broker);
    }
}
