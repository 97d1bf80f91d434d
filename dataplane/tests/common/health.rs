//! Probes of a broker's health while tests abuse it: a pair of clients
//! that keep exchanging numbered messages ([`Exchange`]), and the broker's
//! resident memory ([`broker_rss_kib`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blipmq_protocol::{decode_frame, Op, ServerFrame};

use super::{as_client_of, as_msg, Raw, TIMEOUT};

/// A publisher and a subscriber exchanging numbered messages on a thread of
/// their own until [`Exchange::finish`]. Each round publishes the next
/// number, PINGs the publisher and waits for its PONG and for the message;
/// the thread panics (failing `finish`) if a message is lost, comes out of
/// order, or takes longer than [`TIMEOUT`]. Both connections answer the
/// broker's PINGs, so they also live through a short `ping_interval`.
pub struct Exchange {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<Duration>>,
}

/// What an [`Exchange`] did.
#[derive(Debug, Clone, Copy)]
pub struct Exchanged {
    pub round_trips: u64,
    /// The slowest round trip.
    pub slowest: Duration,
}

impl Exchange {
    /// Starts the pair on any worker.
    pub fn start(addr: SocketAddr) -> Exchange {
        Exchange::start_on(addr, None)
    }

    /// Starts the pair with both connections on worker `worker` (any when
    /// `None`), e.g. the worker an abuser shares with them.
    pub fn start_on(addr: SocketAddr, worker: Option<u32>) -> Exchange {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (stop_flag, counter) = (stop.clone(), rounds.clone());
        let connect = move || match worker {
            Some(w) => Raw::handshake_on_worker(addr, w),
            None => Raw::handshake(addr),
        };
        let (mut publisher, mut subscriber) = as_client_of(addr, move || (connect(), connect()));
        subscriber.subscribe("health.exchange", 1);
        let thread = std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            while !stop_flag.load(Ordering::Relaxed) {
                let n = counter.load(Ordering::Relaxed);
                let started = Instant::now();
                publisher.publish("health.exchange", &n.to_be_bytes());
                publisher.ping();
                next_answering_pings(&mut publisher, |f| f.is_op(Op::Pong).then_some(()));
                let payload =
                    next_answering_pings(&mut subscriber, |f| as_msg(f).map(|m| m.payload));
                assert_eq!(payload, n.to_be_bytes(), "lost or out of order");
                slowest = slowest.max(started.elapsed());
                counter.fetch_add(1, Ordering::Relaxed);
            }
            slowest
        });
        Exchange {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Round trips completed so far.
    pub fn round_trips(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Stops the pair; panics with the pair's own panic if it failed.
    pub fn finish(mut self) -> Exchanged {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        let slowest = thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Exchanged {
            round_trips: self.round_trips(),
            slowest,
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The first frame `wanted` accepts, answering the broker's PINGs on the
/// way; panics on any other frame, a close, or [`TIMEOUT`].
fn next_answering_pings<T>(raw: &mut Raw, wanted: impl Fn(&super::OwnedFrame) -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = raw.read_frame_within(left);
        if let Some(value) = wanted(&frame) {
            return value;
        }
        assert!(frame.is_op(Op::Ping), "unexpected {frame:?}");
        raw.pong();
    }
}

/// Resident memory of a process, from /proc.
pub fn broker_rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The last ERROR (code, reason) among the binary frames in `bytes`.
pub fn last_error(bytes: &[u8]) -> Option<(u16, String)> {
    let mut at = 0;
    let mut error = None;
    while let Ok(Some((raw, len))) = decode_frame(&bytes[at..], u32::MAX) {
        if let Ok(ServerFrame::Error { code, reason }) = ServerFrame::parse(raw) {
            error = Some((code, String::from_utf8_lossy(reason).into_owned()));
        }
        at += len;
    }
    error
}
