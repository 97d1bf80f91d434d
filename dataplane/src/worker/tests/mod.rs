//! Deterministic tests of worker cores, several in one thread, joined by real
//! rings: no sockets, no threads, no timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::{decode_frame, encode, ErrorCode, ServerFrame};

use super::*;
use crate::control::protocol::{self, ReloadResult, ReloadSettings, WorkerRequest, RECORD_HEADER};
use crate::rings::RingRegion;
use crate::session::SessionConfig;
use crate::stats::Counter;
use crate::worker::core::TICK;
use crate::worker::latency::LatencyClock;
use crate::worker::limits::ConnectionLimits;

mod latency;
mod leaf;
mod limits;
mod mtls;
mod nats;
mod pacing;
mod tls;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Info,
    Ok,
    Pong,
    Ping,
    Error(u16, String),
    Message {
        subject: Vec<u8>,
        sid: u32,
        payload: Vec<u8>,
    },
    Disconnect(String),
}

struct Cluster {
    cores: Vec<WorkerCore>,
    now: Instant,
}

fn session_config() -> SessionConfig {
    SessionConfig {
        server_id: "t".into(),
        max_payload: 64 * 1024,
        max_topic_length: 64,
        max_subscriptions: 0,
        token: None,
        users: Default::default(),
        ping_interval: Duration::from_secs(60),
        max_pings_out: 2,
    }
}

/// What a reload sends, with the session limits of [`session_config`].
fn reload_settings(max_pending_bytes: u64, connection_limits: ConnectionLimits) -> ReloadSettings {
    let session = session_config();
    ReloadSettings {
        max_payload: session.max_payload,
        max_topic_length: session.max_topic_length,
        max_subscriptions: session.max_subscriptions,
        max_pending_bytes,
        slow_consumer_grace_ms: 0,
        max_connections: 1000,
        token: session.token,
        users: Default::default(),
        map_certificates: false,
        ping_interval_ms: session.ping_interval.as_millis() as u64,
        max_pings_out: session.max_pings_out,
        connection_limits,
    }
}

fn core_config() -> CoreConfig {
    CoreConfig {
        session: Arc::new(session_config()),
        max_pending_bytes: 1 << 20,
        slow_consumer_grace: Duration::ZERO,
        drain_timeout: Duration::from_secs(1),
        cache_subjects: 64,
        max_connections: 1000,
        nats_addr: None,
        tls: None,
        limits: ConnectionLimits::default(),
    }
}

impl Cluster {
    /// Pacing off: most of these tests drive cuts; pacing has its own.
    fn new(workers: usize, ring_bytes: usize, max_pending_bytes: usize) -> Cluster {
        Cluster::with_grace(workers, ring_bytes, max_pending_bytes, Duration::ZERO)
    }

    fn with_grace(
        workers: usize,
        ring_bytes: usize,
        max_pending_bytes: usize,
        slow_consumer_grace: Duration,
    ) -> Cluster {
        Cluster::with_config(
            workers,
            ring_bytes,
            CoreConfig {
                max_pending_bytes,
                slow_consumer_grace,
                ..core_config()
            },
        )
    }

    /// With the connection guards of `limits`.
    fn with_limits(workers: usize, limits: ConnectionLimits) -> Cluster {
        Cluster::with_config(
            workers,
            1 << 16,
            CoreConfig {
                limits,
                ..core_config()
            },
        )
    }

    fn with_config(workers: usize, ring_bytes: usize, config: CoreConfig) -> Cluster {
        let now = Instant::now();
        let shared = Arc::new(Shared {
            // Latencies in these tests come out exact on the simulated clock.
            latency_clock: LatencyClock::new(now),
            ..Shared::default()
        });
        let cores = RingRegion::new(workers, ring_bytes)
            .unwrap()
            .into_workers()
            .into_iter()
            .map(|rings| WorkerCore::new(config.clone(), rings, shared.clone(), now))
            .collect();
        Cluster { cores, now }
    }

    /// A connection on worker `w` past its handshake.
    fn connect(&mut self, w: usize) -> ConnId {
        let cid = self.cores[w].accept(self.now, Dialect::Binary);
        let mut connect = Vec::new();
        encode::put_connect(&mut connect, br#"{"protocol":1}"#);
        self.send(w, cid, &connect);
        assert_eq!(self.output(w, cid), vec![Out::Info, Out::Ok]);
        cid
    }

    fn send(&mut self, w: usize, cid: ConnId, bytes: &[u8]) {
        self.cores[w].on_received(cid, bytes, self.now);
        self.cores[w].finish_iteration(self.now);
    }

    fn send_with(&mut self, w: usize, cid: ConnId, build: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = Vec::new();
        build(&mut bytes);
        self.send(w, cid, &bytes);
    }

    /// A subscriber to `x` (sid 1) on worker 0, its interest seen
    /// everywhere, and a publisher on worker 1.
    fn subscriber_and_publisher(&mut self) -> (ConnId, ConnId) {
        let sub = self.connect(0);
        self.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
        self.settle();
        assert_eq!(self.output(0, sub), vec![Out::Ok]);
        (sub, self.connect(1))
    }

    /// Runs every core's loop until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut moved = 0;
            for core in &mut self.cores {
                moved += core.poll_peers(self.now);
                core.finish_iteration(self.now);
            }
            if moved == 0
                && self
                    .cores
                    .iter()
                    .all(|c| !c.has_pending_work() && !c.awaits_peers())
            {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    /// Sets worker `w`'s `max_pending_bytes` as the control plane's reload
    /// does: a request through a control port, the session limits kept.
    fn reload_max_pending(&mut self, w: usize, max_pending_bytes: u64) -> ReloadResult {
        self.reload(w, max_pending_bytes, ConnectionLimits::default())
    }

    /// Reloads worker `w` through a control port, the session limits kept.
    fn reload(
        &mut self,
        w: usize,
        max_pending_bytes: u64,
        connection_limits: ConnectionLimits,
    ) -> ReloadResult {
        self.reload_with(w, reload_settings(max_pending_bytes, connection_limits))
    }

    /// Reloads worker `w` with `settings` through a control port.
    fn reload_with(&mut self, w: usize, settings: ReloadSettings) -> ReloadResult {
        serde_json::from_slice(&self.ask(w, WorkerRequest::Reload(settings))).unwrap()
    }

    /// Asks worker `w` through a control port, as the control plane does;
    /// its answer (JSON).
    fn ask(&mut self, w: usize, request: WorkerRequest) -> Vec<u8> {
        let mut ends = RingRegion::new(2, 1 << 16).unwrap().into_workers();
        let mut worker = ends.pop().unwrap();
        let mut control = ends.pop().unwrap();
        self.cores[w].attach_control(ControlPort::new(
            worker.incoming[0].take().unwrap(),
            worker.outgoing[0].take().unwrap(),
        ));
        let json = serde_json::to_vec(&request).unwrap();
        let requests = control.outgoing[1].as_mut().unwrap();
        let slot = requests.try_reserve(RECORD_HEADER + json.len()).unwrap();
        protocol::put_record(slot, 1, true, &json);
        requests.commit();
        requests.publish();
        self.settle();
        let replies = control.incoming[1].as_mut().unwrap();
        let (id, last, reply) = protocol::read_record(replies.peek().unwrap()).unwrap();
        assert_eq!((id, last), (1, true));
        reply.to_vec()
    }

    /// Takes and decodes everything queued for a connection.
    fn output(&mut self, w: usize, cid: ConnId) -> Vec<Out> {
        let mut bytes = Vec::new();
        loop {
            let run = self.cores[w].output(cid).to_vec();
            if run.is_empty() {
                break;
            }
            self.cores[w].on_output_written(cid, run.len(), self.now);
            bytes.extend(run);
        }
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((raw, len)) = decode_frame(&bytes[at..], u32::MAX).unwrap() {
            frames.push(match ServerFrame::parse(raw).unwrap() {
                ServerFrame::Info { .. } => Out::Info,
                ServerFrame::Ok => Out::Ok,
                ServerFrame::Pong => Out::Pong,
                ServerFrame::Ping => Out::Ping,
                ServerFrame::Error { code, reason } => {
                    Out::Error(code, String::from_utf8_lossy(reason).into())
                }
                ServerFrame::Message {
                    subject,
                    sid,
                    payload,
                    ..
                } => Out::Message {
                    subject: subject.to_vec(),
                    sid,
                    payload: payload.to_vec(),
                },
                ServerFrame::Disconnect { reason } => {
                    Out::Disconnect(String::from_utf8_lossy(reason).into())
                }
            });
            at += len;
        }
        assert_eq!(at, bytes.len(), "partial frame in output");
        frames
    }
}

fn msg(subject: &str, sid: u32, payload: &[u8]) -> Out {
    Out::Message {
        subject: subject.as_bytes().to_vec(),
        sid,
        payload: payload.to_vec(),
    }
}

#[test]
fn local_delivery_comes_before_the_answer_to_a_later_ping() {
    let mut cluster = Cluster::new(1, 1 << 16, 1 << 20);
    let c = cluster.connect(0);
    cluster.send_with(0, c, |o| {
        encode::put_subscribe(o, b"a.*", 7, None, false);
        encode::put_publish(o, b"a.b", None, b"hi", false);
        encode::put_ping(o);
    });
    assert_eq!(cluster.output(0, c), vec![msg("a.b", 7, b"hi"), Out::Pong]);
}

#[test]
fn subscribe_ok_waits_until_every_worker_sees_the_subscription() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let sub = cluster.connect(0);
    let publisher = cluster.connect(1);
    cluster.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    assert_eq!(
        cluster.output(0, sub),
        vec![],
        "OK before worker 1 applied the interest"
    );
    cluster.settle();
    assert_eq!(cluster.output(0, sub), vec![Out::Ok]);
    cluster.send_with(1, publisher, |o| {
        encode::put_publish(o, b"x", None, b"m", false)
    });
    cluster.settle();
    assert_eq!(cluster.output(0, sub), vec![msg("x", 1, b"m")]);
    assert_eq!(cluster.output(1, publisher), vec![]);
}

#[test]
fn pong_after_a_cross_worker_publish_waits_for_the_peer() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let (sub, publisher) = cluster.subscriber_and_publisher();
    cluster.send_with(1, publisher, |o| {
        encode::put_publish(o, b"x", None, b"m", false);
        encode::put_ping(o);
    });
    assert_eq!(cluster.output(1, publisher), vec![]);
    cluster.settle();
    assert_eq!(cluster.output(1, publisher), vec![Out::Pong]);
    assert_eq!(cluster.output(0, sub), vec![msg("x", 1, b"m")]);
}

/// The answer waits for the barrier, the connection does not: frames after
/// the PING are handled at once, and their answers queue behind the PONG.
#[test]
fn a_publisher_streams_on_while_its_pong_waits_for_the_peer() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let (sub, publisher) = cluster.subscriber_and_publisher();
    cluster.send_with(1, publisher, |o| {
        encode::put_publish(o, b"x", None, b"m1", false);
        encode::put_ping(o);
        encode::put_publish(o, b"x", None, b"m2", false);
        encode::put_unsubscribe(o, 99, 0, false);
        encode::put_ping(o);
    });
    assert_eq!(
        cluster.output(1, publisher),
        vec![],
        "an answer overtook the PONG, or the PONG came before the peer ran"
    );
    assert!(cluster.cores[1].wants_input(publisher));
    assert_eq!(
        cluster.cores[1].stats.get(Counter::MessagesPublished),
        2,
        "the frames after the PING were not handled at once"
    );
    cluster.settle();
    let answers = cluster.output(1, publisher);
    assert!(
        matches!(&answers[..], [Out::Pong, Out::Error(404, _), Out::Pong]),
        "{answers:?}"
    );
    assert_eq!(
        cluster.output(0, sub),
        vec![msg("x", 1, b"m1"), msg("x", 1, b"m2")]
    );
}

#[test]
fn queue_group_spanning_workers_delivers_each_message_once() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let members = [
        (0, cluster.connect(0)),
        (0, cluster.connect(0)),
        (1, cluster.connect(1)),
    ];
    for &(w, cid) in &members {
        cluster.send_with(w, cid, |o| {
            encode::put_subscribe(o, b"jobs.*", 9, Some(b"g"), true)
        });
        cluster.settle();
        assert_eq!(cluster.output(w, cid), vec![Out::Ok]);
    }
    let publisher = cluster.connect(1);
    for i in 0..600u32 {
        cluster.send_with(1, publisher, |o| {
            encode::put_publish(o, b"jobs.a", None, &i.to_be_bytes(), false)
        });
        if i % 50 == 0 {
            cluster.settle();
        }
    }
    cluster.settle();
    let mut seen = Vec::new();
    for &(w, cid) in &members {
        let got = cluster.output(w, cid);
        assert!(
            got.len() > 100,
            "member on worker {w} got only {}",
            got.len()
        );
        seen.extend(got);
    }
    assert_eq!(seen.len(), 600);
    let mut payloads: Vec<_> = seen
        .into_iter()
        .map(|m| match m {
            Out::Message { payload, .. } => payload,
            other => panic!("{other:?}"),
        })
        .collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), 600);
}

#[test]
fn a_full_ring_stalls_the_publisher_and_loses_nothing() {
    let mut cluster = Cluster::new(2, 4096, 1 << 24);
    let sub = cluster.connect(0);
    cluster.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    cluster.settle();
    assert_eq!(cluster.output(0, sub), vec![Out::Ok]);
    let publisher = cluster.connect(1);
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        encode::put_publish(&mut burst, b"x", None, &i.to_be_bytes(), false);
    }
    // Worker 0 does not run: worker 1 fills the ring and must stop reading.
    cluster.send(1, publisher, &burst);
    assert!(
        !cluster.cores[1].wants_input(publisher),
        "publisher not stalled"
    );
    assert!(cluster.cores[1].stats.get(Counter::RingFullStalls) > 0);
    // While the ring stays full, the retries neither hand the publisher
    // back to the backend's reads (a spinning loop) nor let it go idle
    // unawares: it waits for its peer.
    let mut resumed = Vec::new();
    for _ in 0..3 {
        cluster.cores[1].finish_iteration(cluster.now);
        cluster.cores[1].take_resumed(&mut resumed);
    }
    assert!(resumed.is_empty(), "a stalled publisher was handed back");
    assert!(cluster.cores[1].awaits_peers());
    assert!(!cluster.cores[1].has_pending_work());
    // So worker 1 may sleep (nothing moved since its retry)...
    assert!(cluster.cores[1].prepare_sleep());
    // ...and worker 0, having consumed records and freed space, wakes it.
    cluster.cores[0].take_wake(); // (forget earlier candidates)
    cluster.cores[0].poll_peers(cluster.now);
    assert!(
        cluster.cores[0].take_wake().contains(1),
        "the stalled producer was not woken when space was freed"
    );
    cluster.cores[1].woke_up();
    cluster.settle();
    assert!(cluster.cores[1].wants_input(publisher));
    cluster.cores[1].take_resumed(&mut resumed);
    assert!(
        resumed.contains(&publisher),
        "the backend is not told to read the publisher again"
    );
    let got = cluster.output(0, sub);
    let expected: Vec<_> = (0..2000u32)
        .map(|i| msg("x", 1, &i.to_be_bytes()))
        .collect();
    assert_eq!(got, expected);

    // A producer that merely idles is not woken by releases: at low load a
    // record costs one wake-up (of its consumer), not two.
    cluster.send_with(1, publisher, |o| {
        encode::put_publish(o, b"x", None, b"one", false)
    });
    assert!(!cluster.cores[1].awaits_peers());
    assert!(cluster.cores[1].prepare_sleep());
    cluster.cores[0].take_wake();
    assert_eq!(cluster.cores[0].poll_peers(cluster.now), 1);
    assert!(!cluster.cores[0].take_wake().contains(1));
    cluster.cores[1].woke_up();
}

#[test]
fn auto_unsubscribe_counts_messages_from_every_worker() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let sub = cluster.connect(0);
    cluster.send_with(0, sub, |o| {
        encode::put_subscribe(o, b"x", 1, None, false);
        encode::put_publish(o, b"x", None, b"local", false);
        encode::put_unsubscribe(o, 1, 3, false);
        encode::put_ping(o);
    });
    cluster.settle();
    let publisher = cluster.connect(1);
    for _ in 0..5 {
        cluster.send_with(1, publisher, |o| {
            encode::put_publish(o, b"x", None, b"remote", false)
        });
    }
    cluster.settle();
    let got = cluster.output(0, sub);
    assert_eq!(
        got,
        vec![
            msg("x", 1, b"local"),
            Out::Pong,
            msg("x", 1, b"remote"),
            msg("x", 1, b"remote")
        ]
    );
    // The sid is free again.
    cluster.send_with(0, sub, |o| encode::put_unsubscribe(o, 1, 0, true));
    assert!(matches!(&cluster.output(0, sub)[..], [Out::Error(404, _)]));
}

#[test]
fn slow_consumer_is_cut_off_and_its_losses_counted() {
    let mut cluster = Cluster::new(1, 1 << 16, 4096);
    let sub = cluster.connect(0);
    cluster.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    assert_eq!(cluster.output(0, sub), vec![Out::Ok]);
    let publisher = cluster.connect(0);
    for _ in 0..100 {
        cluster.send_with(0, publisher, |o| {
            encode::put_publish(o, b"x", None, &[0; 100], false)
        });
    }
    let got = cluster.output(0, sub);
    assert_eq!(
        got,
        vec![Out::Error(
            ErrorCode::Unavailable.as_u16(),
            "slow consumer".into()
        )]
    );
    assert!(cluster.cores[0].should_close(sub, cluster.now));
    let stats = &cluster.cores[0].stats;
    assert_eq!(
        stats.get(Counter::DroppedSlowConsumer),
        100,
        "every message is either sent or counted"
    );
    assert_eq!(stats.get(Counter::MessagesPublished), 100);
    assert_eq!(
        stats.get(Counter::ConnectionsClosedSlowConsumer),
        0,
        "not closed yet"
    );
    // The publisher is unaffected.
    cluster.send_with(0, publisher, encode::put_ping);
    assert_eq!(cluster.output(0, publisher), vec![Out::Pong]);
}

/// Found by the session fuzz target: answers to a client that sends PINGs
/// and never reads grew its queue without bound.
#[test]
fn a_client_that_does_not_read_its_answers_is_cut_off_at_max_pending() {
    let mut cluster = Cluster::new(1, 1 << 16, 4096);
    let greedy = cluster.connect(0);
    let mut pings = Vec::new();
    for _ in 0..1000 {
        encode::put_ping(&mut pings);
    }
    cluster.send(0, greedy, &pings);
    cluster.send(0, greedy, &pings);
    let queued = cluster.cores[0].pending_output(greedy);
    assert!(queued <= 4096 + 64, "{queued} bytes queued");
    let got = cluster.output(0, greedy);
    assert_eq!(
        got.last(),
        Some(&Out::Error(
            ErrorCode::Unavailable.as_u16(),
            "slow consumer".into()
        ))
    );
    assert!(got[..got.len() - 1].iter().all(|out| *out == Out::Pong));
    assert!(cluster.cores[0].should_close(greedy, cluster.now));
    // Another client goes on.
    let other = cluster.connect(0);
    cluster.send_with(0, other, encode::put_ping);
    assert_eq!(cluster.output(0, other), vec![Out::Pong]);
}

#[test]
fn a_reloaded_max_pending_bytes_applies_to_live_subscribers() {
    let mut cluster = Cluster::new(1, 1 << 16, 1 << 20);
    let sub = cluster.connect(0);
    cluster.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    assert_eq!(cluster.output(0, sub), vec![Out::Ok]);
    let publisher = cluster.connect(0);
    assert_eq!(cluster.reload_max_pending(0, 4096).connections, 2);
    for _ in 0..100 {
        cluster.send_with(0, publisher, |o| {
            encode::put_publish(o, b"x", None, &[0; 100], false)
        });
    }
    assert_eq!(
        cluster.output(0, sub),
        vec![Out::Error(
            ErrorCode::Unavailable.as_u16(),
            "slow consumer".into()
        )]
    );
    assert_eq!(
        cluster.cores[0].stats.get(Counter::DroppedSlowConsumer),
        100
    );
}

#[test]
fn closing_a_connection_withdraws_its_interest_everywhere() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let sub = cluster.connect(0);
    cluster.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    cluster.settle();
    cluster.cores[0].on_closed(sub);
    cluster.settle();
    let publisher = cluster.connect(1);
    cluster.send_with(1, publisher, |o| {
        encode::put_publish(o, b"x", None, b"m", false);
        encode::put_ping(o);
    });
    // No interest left on worker 1: no record, so no barrier either.
    assert_eq!(cluster.output(1, publisher), vec![Out::Pong]);
}

#[test]
fn drain_tells_every_client() {
    let mut cluster = Cluster::new(1, 1 << 16, 1 << 20);
    let a = cluster.connect(0);
    let now = cluster.now;
    cluster.cores[0].begin_drain(now);
    assert_eq!(
        cluster.output(0, a),
        vec![Out::Disconnect("draining".into())]
    );
    assert!(cluster.cores[0].should_close(a, now));
    let late = cluster.cores[0].accept(now, Dialect::Binary);
    assert!(matches!(&cluster.output(0, late)[..], [Out::Error(503, _)]));
}

#[test]
fn server_pings_then_408() {
    let mut cluster = Cluster::new(1, 1 << 16, 1 << 20);
    let c = cluster.connect(0);
    let start = cluster.now;
    cluster.cores[0].on_tick(start + Duration::from_secs(61));
    assert_eq!(cluster.output(0, c), vec![Out::Ping]);
    cluster.cores[0].on_tick(start + Duration::from_secs(122));
    assert_eq!(cluster.output(0, c), vec![Out::Ping]);
    cluster.cores[0].on_tick(start + Duration::from_secs(183));
    assert!(matches!(&cluster.output(0, c)[..], [Out::Error(408, _)]));
}

/// With thousands of connections the tick's pass over them runs in slices
/// (one pass over 10,000 took 650 µs, stalling every message read then):
/// each `handle_timeout` does one, `poll_timeout` says when the next is
/// due, and the pass still reaches every connection within half a tick.
#[test]
fn the_tick_pings_thousands_of_connections_in_slices() {
    let config = CoreConfig {
        max_connections: 5000,
        ..core_config()
    };
    let mut cluster = Cluster::with_config(1, 1 << 16, config);
    let conns: Vec<ConnId> = (0..3000).map(|_| cluster.connect(0)).collect();
    let core = &mut cluster.cores[0];
    let tick = cluster.now + Duration::from_secs(61);
    let pings = |core: &WorkerCore| core.stats.get(Counter::FramesOutPing);
    core.handle_timeout(tick);
    let first = pings(core);
    assert!(
        first > 0 && first < 3000,
        "one slice pinged {first} of 3000"
    );
    let mut now = tick;
    let mut slices = 1;
    while core.poll_timeout() < tick + TICK {
        let due = core.poll_timeout();
        assert!(due > now, "the next slice is due later");
        assert!(due - tick <= TICK / 2, "the pass ends within half a tick");
        now = due;
        core.handle_timeout(now);
        slices += 1;
    }
    assert_eq!(pings(core), 3000, "the pass reached every connection");
    assert!(slices >= 3, "{slices} slices");
    for cid in conns {
        assert_eq!(cluster.output(0, cid), vec![Out::Ping]);
    }
}

#[test]
fn a_group_delivery_to_a_member_that_left_is_forwarded_not_lost() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let stays = cluster.connect(0);
    let leaves = cluster.connect(1);
    for (w, cid) in [(0, stays), (1, leaves)] {
        cluster.send_with(w, cid, |o| {
            encode::put_subscribe(o, b"q", 1, Some(b"g"), true)
        });
        cluster.settle();
        assert_eq!(cluster.output(w, cid), vec![Out::Ok]);
    }
    let publisher = cluster.connect(0);
    // Worker 0 still counts the member on worker 1 while these are routed.
    cluster.cores[1].on_closed(leaves);
    for i in 0..200u32 {
        cluster.send_with(0, publisher, |o| {
            encode::put_publish(o, b"q", None, &i.to_be_bytes(), false)
        });
    }
    cluster.settle();
    let got = cluster.output(0, stays);
    assert_eq!(
        got.len(),
        200,
        "every message reaches the member that stayed"
    );
    assert!(
        cluster.cores[1].stats.get(Counter::GroupForwards) > 0,
        "the stale picks were forwarded"
    );
    assert_eq!(cluster.cores[1].stats.get(Counter::DroppedNoGroupMember), 0);
}

#[test]
fn a_large_payload_for_several_subscribers_is_shared_and_released() {
    let mut cluster = Cluster::new(2, 1 << 20, 1 << 20);
    let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let subs: Vec<(usize, ConnId)> = [0, 0, 0, 1, 1]
        .into_iter()
        .map(|w| {
            let cid = cluster.connect(w);
            cluster.send_with(w, cid, |o| encode::put_subscribe(o, b"big", 9, None, false));
            (w, cid)
        })
        .collect();
    cluster.settle();
    let publisher = cluster.connect(0);
    for _ in 0..3 {
        cluster.send_with(0, publisher, |o| {
            encode::put_publish(o, b"big", None, &big, false)
        });
    }
    cluster.settle();
    for w in 0..2 {
        assert!(
            cluster.cores[w].shared_payloads_in_use() >= 1,
            "worker {w} shares the payload instead of copying it per queue"
        );
    }
    for &(w, cid) in &subs {
        assert_eq!(cluster.output(w, cid), vec![msg("big", 9, &big); 3]);
    }
    for w in 0..2 {
        assert_eq!(
            cluster.cores[w].shared_payloads_in_use(),
            0,
            "worker {w} released every payload"
        );
    }
}

#[test]
fn shared_payloads_of_a_cut_off_or_closed_subscriber_are_released() {
    let mut cluster = Cluster::new(1, 1 << 20, 64 * 1024);
    let slow = cluster.connect(0);
    let gone = cluster.connect(0);
    for cid in [slow, gone] {
        cluster.send_with(0, cid, |o| encode::put_subscribe(o, b"big", 1, None, false));
    }
    let publisher = cluster.connect(0);
    for _ in 0..10 {
        cluster.send_with(0, publisher, |o| {
            encode::put_publish(o, b"big", None, &[5; 10_000], false)
        });
    }
    // Neither subscriber read anything: past 64 KiB each is cut off with its
    // whole backlog, so all ten messages are counted dropped for both.
    assert_eq!(
        cluster.cores[0].stats.get(Counter::DroppedSlowConsumer),
        2 * 10
    );
    assert!(matches!(
        cluster.output(0, slow).last(),
        Some(Out::Error(503, _))
    ));
    cluster.cores[0].on_closed(slow);
    cluster.cores[0].on_closed(gone);
    assert_eq!(cluster.cores[0].shared_payloads_in_use(), 0);
}

/// Random scripts on 8 connections over 2 workers with tiny rings (stalls,
/// held answers, overflowing interest), interleaved at random with the
/// workers' loops: every connection gets exactly the answers its frames
/// call for, in frame order, and every subscription gets each publisher's
/// messages in the order published, none twice.
#[test]
fn random_scripts_keep_answers_in_frame_order() {
    const SUBJECTS: [&[u8]; 3] = [b"s.a", b"s.b", b"s.c"];
    const FILTERS: [&[u8]; 4] = [b"s.a", b"s.b", b"s.*", b">"];
    let mut stalls = 0;
    for seed in 1..=20u64 {
        let mut rng = super::groups::Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut cluster = Cluster::new(2, 4096, 1 << 26);
        let conns: Vec<(usize, ConnId)> = (0..8).map(|i| (i % 2, cluster.connect(i % 2))).collect();
        let mut expected: Vec<Vec<Out>> = vec![Vec::new(); conns.len()];
        let mut got: Vec<Vec<Out>> = vec![Vec::new(); conns.len()];
        let mut sids: Vec<Vec<u32>> = vec![Vec::new(); conns.len()];
        let mut next_sid = 1u32;
        let mut published = vec![0u32; conns.len()];
        for _ in 0..400 {
            let c = rng.below(conns.len() as u32) as usize;
            let (w, cid) = conns[c];
            let mut bytes = Vec::new();
            // Now and then a burst that overfills a 4 KiB ring.
            let most = if rng.below(8) == 0 { 150 } else { 6 };
            let frames = 1 + rng.below(most);
            for _ in 0..frames {
                let ack = rng.below(2) == 0;
                match rng.below(10) {
                    0 => {
                        let filter = FILTERS[rng.below(4) as usize];
                        encode::put_subscribe(&mut bytes, filter, next_sid, None, ack);
                        sids[c].push(next_sid);
                        next_sid += 1;
                        if ack {
                            expected[c].push(Out::Ok);
                        }
                    }
                    1 => {
                        encode::put_ping(&mut bytes);
                        expected[c].push(Out::Pong);
                    }
                    2 if !sids[c].is_empty() => {
                        let at = rng.below(sids[c].len() as u32) as usize;
                        let sid = sids[c].swap_remove(at);
                        encode::put_unsubscribe(&mut bytes, sid, 0, ack);
                        if ack {
                            expected[c].push(Out::Ok);
                        }
                    }
                    2 => {
                        encode::put_unsubscribe(&mut bytes, 999_999, 0, ack);
                        expected[c].push(Out::Error(404, String::new()));
                    }
                    _ => {
                        let subject = SUBJECTS[rng.below(3) as usize];
                        let mut payload = (c as u32).to_be_bytes().to_vec();
                        payload.extend_from_slice(&published[c].to_be_bytes());
                        published[c] += 1;
                        encode::put_publish(&mut bytes, subject, None, &payload, ack);
                        if ack {
                            expected[c].push(Out::Ok);
                        }
                    }
                }
            }
            cluster.send(w, cid, &bytes);
            // Let the workers run a random number of loop turns.
            for _ in 0..rng.below(3) {
                let w = rng.below(2) as usize;
                cluster.cores[w].poll_peers(cluster.now);
                cluster.cores[w].finish_iteration(cluster.now);
            }
            if rng.below(4) == 0 {
                let c = rng.below(conns.len() as u32) as usize;
                let (w, cid) = conns[c];
                got[c].extend(cluster.output(w, cid));
            }
        }
        cluster.settle();
        stalls += cluster.cores[0].stats.get(Counter::RingFullStalls)
            + cluster.cores[1].stats.get(Counter::RingFullStalls);
        for (c, &(w, cid)) in conns.iter().enumerate() {
            got[c].extend(cluster.output(w, cid));
            let answers: Vec<Out> = got[c]
                .iter()
                .filter(|out| !matches!(out, Out::Message { .. }))
                .map(|out| match out {
                    Out::Error(code, _) => Out::Error(*code, String::new()),
                    other => other.clone(),
                })
                .collect();
            assert_eq!(answers, expected[c], "seed {seed}, connection {c}");
            // Per subscription and publisher: increasing, so in order and
            // never twice.
            let mut last: std::collections::HashMap<(u32, u32), u32> = Default::default();
            for out in &got[c] {
                if let Out::Message { sid, payload, .. } = out {
                    let publisher = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    let n = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                    if let Some(&prev) = last.get(&(*sid, publisher)) {
                        assert!(n > prev, "seed {seed}: sid {sid} got {n} after {prev}");
                    }
                    last.insert((*sid, publisher), n);
                }
            }
        }
    }
    assert!(stalls > 0, "the scripts never filled a ring");
}

/// A publisher that closes while stalled leaves no entry behind that would
/// keep its worker waiting for peers, even when a new connection takes its
/// slot.
#[test]
fn a_stalled_publisher_that_closes_leaves_nothing_waiting() {
    let mut cluster = Cluster::new(2, 4096, 1 << 24);
    let (_sub, publisher) = cluster.subscriber_and_publisher();
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        encode::put_publish(&mut burst, b"x", None, &i.to_be_bytes(), false);
    }
    cluster.send(1, publisher, &burst);
    assert!(!cluster.cores[1].wants_input(publisher), "not stalled");
    cluster.cores[1].on_closed(publisher);
    let reused = cluster.connect(1);
    assert_eq!(reused, publisher, "the slot was not reused");
    cluster.settle();
    assert!(!cluster.cores[1].awaits_peers());
}
