//! Whole workers through the real loop: a [`Driver`] over a
//! [`UserspaceTransport`] on a [`MemoryDevice`], with a real [`WorkerCore`]
//! (several joined by real rings), each turned with [`Driver::turn`] on
//! simulated time; BlipMQ clients on the other end of each link speak the
//! binary protocol over smoltcp sockets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use blipmq_protocol::{decode_frame, encode, ServerFrame};

use super::*;
use crate::backend::driver::{Driver, Turn};
use crate::backend::userspace::memory::MemoryConfig;
use crate::backend::userspace::{UserspaceTransport, UserspaceWorker};
use crate::backend::{Transport, WaitPolicy, WorkerPoll, WorkerTransport};
use crate::rings::RingRegion;
use crate::session::SessionConfig;
use crate::stats::Counter;
use crate::worker::limits::ConnectionLimits;
use crate::worker::{ConnId, CoreConfig, Shared, WorkerCore};

type Worker = Driver<UserspaceTransport<MemoryDevice>>;

/// What a client got, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Info(String),
    Ok,
    Ping,
    Pong,
    Error(u16, String),
    Message {
        subject: String,
        sid: u32,
        payload: Vec<u8>,
    },
    Disconnect(String),
}

impl Got {
    fn from_frame(frame: ServerFrame<'_>) -> Got {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        match frame {
            ServerFrame::Info { json } => Got::Info(text(json)),
            ServerFrame::Ok => Got::Ok,
            ServerFrame::Ping => Got::Ping,
            ServerFrame::Pong => Got::Pong,
            ServerFrame::Error { code, reason } => Got::Error(code, text(reason)),
            ServerFrame::Message {
                subject,
                sid,
                payload,
                ..
            } => Got::Message {
                subject: text(subject),
                sid,
                payload: payload.to_vec(),
            },
            ServerFrame::Disconnect { reason } => Got::Disconnect(text(reason)),
        }
    }
}

fn msg(subject: &str, sid: u32, payload: &[u8]) -> Got {
    Got::Message {
        subject: subject.into(),
        sid,
        payload: payload.to_vec(),
    }
}

/// A client connection: which host, which of its connections.
#[derive(Debug, Clone, Copy)]
struct Client {
    host: usize,
    conn: usize,
}

/// Settings of a test's world.
struct Setup {
    workers: usize,
    faults: Faults,
    core: CoreConfig,
    /// Applied to each worker's stack settings.
    stack: fn(&mut StackConfig),
    /// Socket buffers of the client hosts, each way.
    client_buffer: usize,
}

impl Setup {
    fn new(workers: usize) -> Setup {
        Setup {
            workers,
            faults: Faults::NONE,
            core: CoreConfig {
                session: Arc::new(SessionConfig {
                    server_id: "memdev".into(),
                    max_payload: 64 << 10,
                    max_topic_length: 128,
                    max_subscriptions: 0,
                    token: None,
                    users: Default::default(),
                    ping_interval: Duration::from_secs(600),
                    max_pings_out: 2,
                }),
                max_pending_bytes: 8 << 20,
                slow_consumer_grace: Duration::from_secs(2),
                drain_timeout: Duration::from_secs(2),
                cache_subjects: 64,
                max_connections: 1000,
                nats_addr: None,
                tls: None,
                limits: ConnectionLimits::default(),
            },
            stack: |_| {},
            client_buffer: 64 << 10,
        }
    }
}

/// Workers, each on its own link to its own client host.
struct World {
    seed: u64,
    start: Instant,
    now: Instant,
    workers: Vec<Worker>,
    stopped: Vec<bool>,
    hosts: Vec<Host>,
    shutdown: Arc<AtomicBool>,
}

impl World {
    fn new(seed: u64, setup: Setup) -> World {
        let start = Instant::now();
        let shared = Arc::new(Shared::default());
        let rings = RingRegion::new(setup.workers, 1 << 16)
            .expect("rings")
            .into_workers();
        let polls: Vec<WorkerPoll> = (0..setup.workers)
            .map(|_| WorkerPoll::new().expect("a poll instance"))
            .collect();
        let wakers: Arc<[_]> = polls.iter().map(|p| p.waker.clone()).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        let mut hosts = Vec::new();
        for (w, (rings, poll)) in rings.into_iter().zip(polls).enumerate() {
            let link_seed = seed.wrapping_add(w as u64);
            let link = MemoryConfig::new(link_seed).with_faults(setup.faults);
            let (device, client) = MemoryDevice::pair(link);
            let mut stack = stack_config(device.mac(), link_seed);
            (setup.stack)(&mut stack);
            let transport = UserspaceWorker { device, stack }
                .start(poll, start)
                .expect("a transport");
            let core = WorkerCore::new(setup.core.clone(), rings, shared.clone(), start);
            workers.push(Driver::new(
                core,
                transport,
                WaitPolicy::SLEEP_WHEN_IDLE,
                wakers.clone(),
                shutdown.clone(),
                setup.core.drain_timeout,
            ));
            let ip = Ipv4Addr::new(10, 0, 0, 2 + w as u8);
            hosts.push(Host::new(
                client,
                ip,
                !link_seed,
                start,
                setup.client_buffer,
            ));
        }
        World {
            seed,
            start,
            now: start,
            stopped: vec![false; workers.len()],
            workers,
            hosts,
            shutdown,
        }
    }

    fn core(&self, worker: usize) -> &WorkerCore {
        self.workers[worker].core()
    }

    fn stat(&self, worker: usize, counter: Counter) -> u64 {
        self.core(worker).stats.get(counter)
    }

    /// A TCP connection to worker `host`'s link; no frame sent yet.
    fn open(&mut self, host: usize) -> Client {
        Client {
            host,
            conn: self.hosts[host].connect(),
        }
    }

    /// A client past its handshake: INFO, CONNECT, OK.
    fn connect(&mut self, host: usize) -> Client {
        let client = self.open(host);
        let mut got = Vec::new();
        self.run_until("INFO", 1000, |w| {
            got.extend(w.take(client));
            !got.is_empty()
        });
        assert!(matches!(&got[..], [Got::Info(_)]), "{got:?}");
        self.send(client, |o| encode::put_connect(o, br#"{"protocol":1}"#));
        self.expect(client, &[Got::Ok]);
        client
    }

    /// The ids of worker `worker`'s connections.
    fn conn_ids(&self, worker: usize) -> Vec<ConnId> {
        let mut ids = Vec::new();
        self.core(worker).conn_ids(&mut ids);
        ids
    }

    fn send(&mut self, client: Client, build: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = Vec::new();
        build(&mut bytes);
        self.hosts[client.host].send(client.conn, &bytes);
    }

    fn stream(&mut self, client: Client) -> &mut Stream {
        self.hosts[client.host].stream(client.conn)
    }

    /// The whole frames the client received since the last call.
    fn take(&mut self, client: Client) -> Vec<Got> {
        let received = &mut self.stream(client).received;
        let mut got = Vec::new();
        let mut at = 0;
        while let Some((raw, len)) = decode_frame(&received[at..], u32::MAX).expect("a frame") {
            got.push(Got::from_frame(
                ServerFrame::parse(raw).expect("a server frame"),
            ));
            at += len;
        }
        received.drain(..at);
        got
    }

    /// Steps until the client got exactly `expected` (and nothing else).
    fn expect(&mut self, client: Client, expected: &[Got]) {
        let mut got = Vec::new();
        self.run_until("the expected frames", 5000, |w| {
            got.extend(w.take(client));
            got.len() >= expected.len()
        });
        assert_eq!(got, expected);
    }

    /// Subscribes with an acknowledgement and waits for it (every worker
    /// then knows the subscription).
    fn subscribe(&mut self, client: Client, filter: &str, sid: u32) {
        self.send(client, |o| {
            encode::put_subscribe(o, filter.as_bytes(), sid, None, true)
        });
        self.expect(client, &[Got::Ok]);
    }

    fn publish(&mut self, client: Client, subject: &str, payload: &[u8]) {
        self.send(client, |o| {
            encode::put_publish(o, subject.as_bytes(), None, payload, false)
        });
    }
}

impl Simulation for World {
    /// Every host polls, then every worker turns once; then time moves on:
    /// by one link latency while anything moved, else to the earliest
    /// deadline (the cores' ticks bound the jump).
    fn step(&mut self) {
        for host in &mut self.hosts {
            host.poll(self.now);
        }
        let mut busy = false;
        for (worker, stopped) in self.workers.iter_mut().zip(&mut self.stopped) {
            if *stopped {
                continue;
            }
            let before = worker.core().stats.get(Counter::LoopBusyIterations);
            if worker.turn(self.now) == Turn::Stopped {
                *stopped = true;
            }
            busy |= worker.core().stats.get(Counter::LoopBusyIterations) > before
                || worker.core().awaits_peers()
                || worker.transport().has_pending();
        }
        busy |= self.hosts.iter().any(Host::busy);
        let now = self.now;
        let mut deadlines: Vec<Option<Instant>> =
            self.hosts.iter_mut().map(|h| h.poll_at(now)).collect();
        for (worker, &stopped) in self.workers.iter_mut().zip(&self.stopped) {
            if !stopped {
                deadlines.push(Some(worker.core().poll_timeout()));
                deadlines.push(worker.transport_mut().poll_timeout(now));
            }
        }
        // Once every worker stopped, only the hosts may have timers.
        self.now = next_time(now, busy, deadlines).unwrap_or(now + Duration::from_millis(100));
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn seed(&self) -> u64 {
        self.seed
    }
}

/// A numbered payload of `len` bytes (at least 4).
fn numbered(n: u32, len: usize) -> Vec<u8> {
    let mut payload = n.to_be_bytes().to_vec();
    payload.resize(len, n as u8);
    payload
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"))
}

#[test]
fn info_on_accept_then_ok_on_connect_then_pong() {
    let mut world = World::new(seed(11), Setup::new(1));
    let client = world.open(0);
    let mut got = Vec::new();
    world.run_until("INFO", 1000, |w| {
        got.extend(w.take(client));
        !got.is_empty()
    });
    let [Got::Info(json)] = &got[..] else {
        panic!("{got:?}")
    };
    let info: serde_json::Value = serde_json::from_str(json).expect("INFO is JSON");
    assert_eq!(info["server_id"], "memdev");
    assert_eq!(info["protocol"], 1);
    assert_eq!(world.core(0).connection_count(), 1);

    world.send(client, |o| {
        encode::put_connect(o, br#"{"protocol":1}"#);
        encode::put_ping(o);
    });
    world.expect(client, &[Got::Ok, Got::Pong]);
}

/// One publisher, subscribers on its worker and (with two workers) on the
/// other, through exact and wildcard filters.
fn publish_to_one_and_to_many(workers: usize) {
    let mut world = World::new(seed(12), Setup::new(workers));
    let far = workers - 1;
    let one = world.connect(far);
    world.subscribe(one, "solo", 1);
    let exact = world.connect(0);
    let star = world.connect(far);
    let tail = world.connect(far);
    world.subscribe(exact, "fan.a", 2);
    world.subscribe(star, "fan.*", 3);
    world.subscribe(tail, "fan.>", 4);
    let publisher = world.connect(0);

    world.publish(publisher, "solo", b"just you");
    world.publish(publisher, "fan.a", b"all of you");
    world.publish(publisher, "fan.b.c", b"only the tail");
    world.send(publisher, encode::put_ping);
    world.expect(publisher, &[Got::Pong]);
    world.expect(one, &[msg("solo", 1, b"just you")]);
    world.expect(exact, &[msg("fan.a", 2, b"all of you")]);
    world.expect(star, &[msg("fan.a", 3, b"all of you")]);
    world.expect(
        tail,
        &[
            msg("fan.a", 4, b"all of you"),
            msg("fan.b.c", 4, b"only the tail"),
        ],
    );
}

#[test]
fn publish_to_one_and_to_many_on_one_worker() {
    publish_to_one_and_to_many(1);
}

#[test]
fn publish_to_one_and_to_many_across_two_workers() {
    publish_to_one_and_to_many(2);
}

/// 10,000 messages through loss, reordering, duplication and corruption
/// on every link: all arrive, once, in order.
fn ten_thousand_in_order_through_a_rough_link(workers: usize) {
    const COUNT: u32 = 10_000;
    let seed = seed(13);
    let mut setup = Setup::new(workers);
    setup.faults = rough(0.02);
    let mut world = World::new(seed, setup);
    let subscriber = world.connect(workers - 1);
    world.subscribe(subscriber, "seq.>", 9);
    let publisher = world.connect(0);
    for n in 0..COUNT {
        world.publish(publisher, "seq.n", &numbered(n, 64));
    }
    let mut next = 0;
    world.run_until("every message", 100_000, |w| {
        for got in w.take(subscriber) {
            let Got::Message {
                subject,
                sid,
                payload,
            } = got
            else {
                panic!("{got:?} (seed {seed})");
            };
            assert_eq!((subject.as_str(), sid), ("seq.n", 9));
            assert_eq!(payload, numbered(next, 64), "out of order (seed {seed})");
            next += 1;
        }
        next == COUNT
    });
    assert!(
        world.elapsed() < Duration::from_secs(60),
        "took {:?} (seed {seed})",
        world.elapsed()
    );
    let faults = world.hosts[0].device.fault_stats();
    assert!(
        faults.0.lost > 0 && faults.0.reordered > 0 && faults.0.duplicated > 0,
        "the publisher's link was not rough: {:?} (seed {seed})",
        faults.0
    );
}

#[test]
fn ten_thousand_in_order_through_a_rough_link_on_one_worker() {
    ten_thousand_in_order_through_a_rough_link(1);
}

#[test]
fn ten_thousand_in_order_through_rough_links_across_two_workers() {
    ten_thousand_in_order_through_a_rough_link(2);
}

/// With pacing off, a subscriber stops reading: the messages first fill its
/// TCP windows (its receive buffer, the worker's send buffer), then its
/// queue in the core; only when that passes `max_pending_bytes` is it cut
/// off. The publisher is never held back.
#[test]
fn without_pacing_a_subscriber_that_stops_reading_is_cut_off_past_max_pending() {
    const WINDOW: usize = 16 << 10;
    const MAX_PENDING: usize = 32 << 10;
    const PAYLOAD: usize = 500;
    let mut setup = Setup::new(1);
    setup.core.max_pending_bytes = MAX_PENDING;
    setup.core.slow_consumer_grace = Duration::ZERO;
    setup.client_buffer = WINDOW;
    setup.stack = |stack| stack.tx_buffer = 16 << 10;
    let mut world = World::new(seed(14), setup);
    let subscriber = world.connect(0);
    world.subscribe(subscriber, "slow", 1);
    let [sub_cid] = world.conn_ids(0)[..] else {
        panic!("one connection")
    };
    let publisher = world.connect(0);
    world.stream(subscriber).paused = true;

    let frame = encode::message_len(b"slow", None, PAYLOAD);
    let mut published = 0u32;
    let (mut pings, mut pongs) = (0, 0);
    let mut window_full_at = None;
    world.run_until("the cut-off", 20_000, |w| {
        for got in w.take(publisher) {
            assert_eq!(got, Got::Pong, "the publisher got something else");
            pongs += 1;
        }
        if !w.core(0).contains(sub_cid) {
            return true;
        }
        let queued = w.core(0).pending_output(sub_cid);
        assert!(
            queued <= MAX_PENDING,
            "{queued} bytes queued, past the limit"
        );
        let window = w.hosts[0].socket(subscriber.conn).recv_queue();
        if window == WINDOW && window_full_at.is_none() {
            window_full_at = Some(published);
        }
        // The publisher goes on at its own pace, pinging now and then.
        if w.stream(publisher).out.is_empty() {
            for _ in 0..4 {
                w.publish(publisher, "slow", &numbered(published, PAYLOAD));
                published += 1;
            }
            w.send(publisher, encode::put_ping);
            pings += 1;
        }
        false
    });
    let window_full_at = window_full_at.expect("the subscriber's window never closed");
    assert!(
        window_full_at as usize * frame >= WINDOW,
        "the window closed after {window_full_at} messages"
    );
    // Every message queued for it sat in its receive buffer (full), the
    // worker's send buffer (full), or its queue (dropped at the cut), so
    // the cut came only once that queue was within a frame of the limit.
    let queued = world.stat(0, Counter::MessagesDelivered) as usize;
    assert!(
        queued * frame > 2 * WINDOW + MAX_PENDING - frame,
        "cut off after {queued} messages of {frame} bytes: before the windows and the queue \
         were full"
    );
    assert_eq!(world.stat(0, Counter::ConnectionsClosedSlowConsumer), 1);
    assert!(world.stat(0, Counter::DroppedSlowConsumer) > 0);
    // ERROR 503 was queued; with the socket full it is not sent (the
    // protocol sends it "where its socket still takes bytes"; see the
    // burst test for one that is).
    assert_eq!(world.stat(0, Counter::FramesOutError), 1);

    // The publisher was never held back: its PINGs were answered while the
    // subscriber stalled (all but the last one or two, still in flight),
    // the rest come, and it goes on.
    assert!(
        pings >= 8 && pongs + 2 >= pings,
        "{pongs} PONGs for {pings} PINGs"
    );
    world.run_until("the last PONGs", 1000, |w| {
        pongs += w.take(publisher).len();
        pongs == pings
    });
    world.publish(publisher, "slow", b"nobody listens");
    world.send(publisher, encode::put_ping);
    world.expect(publisher, &[Got::Pong]);

    // The subscriber reads again: what the windows held, in order, then
    // the end of the stream.
    world.stream(subscriber).paused = false;
    let mut next = 0;
    world.run_until("the end of the subscriber's stream", 1000, |w| {
        for got in w.take(subscriber) {
            match got {
                Got::Message { payload, .. } => {
                    assert_eq!(number(&payload), next, "out of order");
                    next += 1;
                }
                Got::Error(503, reason) => assert_eq!(reason, "slow consumer"),
                other => panic!("{other:?}"),
            }
        }
        w.stream(subscriber).eof
    });
    assert!(
        next as usize * frame >= 2 * WINDOW - 2 * frame,
        "only {next} messages arrived: the windows held more"
    );
    assert!(next < published);
}

/// With pacing off, a burst that overflows a subscriber's queue within one
/// turn, while its socket still takes bytes: it gets ERROR 503 "slow
/// consumer", then the connection closes.
#[test]
fn without_pacing_a_burst_past_max_pending_gets_error_503_where_the_socket_takes_it() {
    const MAX_PENDING: usize = 32 << 10;
    let mut setup = Setup::new(1);
    setup.core.max_pending_bytes = MAX_PENDING;
    setup.core.slow_consumer_grace = Duration::ZERO;
    setup.client_buffer = 128 << 10;
    setup.stack = |stack| {
        stack.rx_buffer = 256 << 10;
        stack.tx_buffer = 16 << 10;
    };
    let mut world = World::new(seed(15), setup);
    let subscriber = world.connect(0);
    world.subscribe(subscriber, "burst", 1);
    let publisher = world.connect(0);
    for n in 0..100 {
        world.publish(publisher, "burst", &numbered(n, 1000));
    }
    world.send(publisher, encode::put_ping);
    world.expect(publisher, &[Got::Pong]);
    let mut got = Vec::new();
    world.run_until("the end of the subscriber's stream", 1000, |w| {
        got.extend(w.take(subscriber));
        w.stream(subscriber).eof
    });
    assert_eq!(got.last(), Some(&Got::Error(503, "slow consumer".into())));
    assert_eq!(world.stat(0, Counter::ConnectionsClosedSlowConsumer), 1);
    assert_eq!(world.core(0).connection_count(), 1);
}

/// With pacing (the default), a subscriber that reads in short spells,
/// far slower than its publisher sends: the publisher is held back while
/// the subscriber's queue is over half of `max_pending_bytes`, so nobody is
/// cut and every message arrives, in order, though the burst is 30 times
/// `max_pending_bytes`.
#[test]
fn a_slow_reader_paces_its_publisher_and_gets_every_message() {
    const MAX_PENDING: usize = 32 << 10;
    const PAYLOAD: usize = 500;
    const COUNT: u32 = 2000;
    let mut setup = Setup::new(1);
    setup.core.max_pending_bytes = MAX_PENDING;
    setup.client_buffer = 16 << 10;
    setup.stack = |stack| stack.tx_buffer = 16 << 10;
    let mut world = World::new(seed(17), setup);
    let subscriber = world.connect(0);
    world.subscribe(subscriber, "slow", 1);
    let publisher = world.connect(0);
    for n in 0..COUNT {
        world.publish(publisher, "slow", &numbered(n, PAYLOAD));
    }
    world.send(publisher, encode::put_ping);

    let mut steps = 0u32;
    let mut next = 0;
    let mut pong = false;
    world.run_until("every message", 200_000, |w| {
        // Reads on one step in ten.
        steps += 1;
        w.stream(subscriber).paused = !steps.is_multiple_of(10);
        for got in w.take(subscriber) {
            assert_eq!(
                got,
                msg("slow", 1, &numbered(next, PAYLOAD)),
                "seed {}",
                w.seed()
            );
            next += 1;
        }
        pong |= w.take(publisher).contains(&Got::Pong);
        assert!(!w.stream(subscriber).eof, "the subscriber was cut off");
        next == COUNT && pong
    });
    assert!(world.stat(0, Counter::PacedPublishes) > 0, "never paced");
    assert_eq!(world.stat(0, Counter::ConnectionsClosedSlowConsumer), 0);
    assert_eq!(world.stat(0, Counter::DroppedSlowConsumer), 0);
}

/// With pacing, a subscriber that stops reading holds its publisher (whose
/// PONG waits behind the paced messages) for the grace period only; then it
/// is cut off and the publisher goes on.
#[test]
fn a_subscriber_that_stops_reading_holds_its_publisher_for_the_grace_period_only() {
    const MAX_PENDING: usize = 32 << 10;
    let grace = Duration::from_secs(1);
    let mut setup = Setup::new(1);
    setup.core.max_pending_bytes = MAX_PENDING;
    setup.core.slow_consumer_grace = grace;
    setup.client_buffer = 16 << 10;
    setup.stack = |stack| stack.tx_buffer = 16 << 10;
    let mut world = World::new(seed(18), setup);
    let subscriber = world.connect(0);
    world.subscribe(subscriber, "stuck", 1);
    world.stream(subscriber).paused = true;
    let publisher = world.connect(0);
    for n in 0..400 {
        world.publish(publisher, "stuck", &numbered(n, 500));
    }
    world.send(publisher, encode::put_ping);
    let start = world.now;
    world.run_until("the PONG", 100_000, |w| {
        w.take(publisher).contains(&Got::Pong)
    });
    let held = world.now - start;
    assert!(
        held >= grace && held < grace * 2,
        "the publisher was held for {held:?} (seed {})",
        world.seed()
    );
    assert_eq!(world.stat(0, Counter::ConnectionsClosedSlowConsumer), 1);
    let delivered = world.stat(0, Counter::MessagesDelivered);
    let dropped = world.stat(0, Counter::DroppedSlowConsumer);
    assert!(dropped > 0);
    assert!(delivered < 400);
    assert_eq!(world.stat(0, Counter::MessagesPublished), 400);
}

/// Server PINGs come every `ping_interval` of simulated time; a client
/// that answers stays, one that does not is closed after `max_pings_out`.
#[test]
fn server_pings_on_simulated_time_and_stale_clients_are_closed() {
    let interval = Duration::from_secs(1);
    let mut setup = Setup::new(1);
    Arc::get_mut(&mut setup.core.session).unwrap().ping_interval = interval;
    let mut world = World::new(seed(16), setup);
    let quiet = world.connect(0);
    let lively = world.connect(0);
    let connected = world.now;

    let mut quiet_got = Vec::new();
    let mut first_ping = None;
    let mut stale_after = None;
    let mut lively_pings = 0;
    let until = connected + interval * 8;
    world.run_until("eight intervals", 100_000, |w| {
        for got in w.take(lively) {
            assert_eq!(got, Got::Ping);
            lively_pings += 1;
            w.send(lively, encode::put_pong);
        }
        let got = w.take(quiet);
        if first_ping.is_none() && !got.is_empty() {
            first_ping = Some(w.now - connected);
        }
        quiet_got.extend(got);
        if stale_after.is_none() && w.stream(quiet).eof {
            stale_after = Some(w.now - connected);
        }
        w.now >= until
    });
    let first_ping = first_ping.expect("a PING");
    assert!(
        first_ping >= interval && first_ping <= interval + Duration::from_millis(250),
        "the first PING came after {first_ping:?}"
    );
    assert_eq!(
        quiet_got,
        vec![
            Got::Ping,
            Got::Ping,
            Got::Error(408, "stale connection: no PONG".into())
        ]
    );
    let stale_after = stale_after.expect("the quiet client was not closed");
    assert!(
        stale_after >= interval * 3 && stale_after < interval * 4,
        "closed after {stale_after:?}"
    );
    assert_eq!(world.stat(0, Counter::ConnectionsClosedStale), 1);
    assert!(lively_pings >= 7, "{lively_pings} PINGs in 8 s");
    assert_eq!(
        world.core(0).connection_count(),
        1,
        "the lively client was closed"
    );
}

/// Shutdown: every client gets DISCONNECT "draining" and a FIN, new
/// connections are refused, and the loop stops.
#[test]
fn the_drain_disconnects_everyone_then_the_worker_stops() {
    let mut world = World::new(seed(17), Setup::new(1));
    let subscriber = world.connect(0);
    world.subscribe(subscriber, "d", 1);
    let idle = world.connect(0);
    let began = world.now;
    world.shutdown.store(true, Ordering::Relaxed);
    world.step();
    let late = world.open(0);
    let mut got = [Vec::new(), Vec::new()];
    world.run_until("the worker's stop", 1000, |w| {
        for (client, got) in [subscriber, idle].into_iter().zip(&mut got) {
            got.extend(w.take(client));
        }
        w.stopped[0]
    });
    // Done once the clients had their last bytes and FIN, not at the
    // drain deadline (2 s).
    let drained = world.now - began;
    assert!(
        drained < Duration::from_millis(100),
        "stopped after {drained:?}"
    );
    assert_eq!(world.core(0).connection_count(), 0);
    assert!(!world.workers[0].transport().is_lingering());
    for (client, got) in [subscriber, idle].into_iter().zip(&got) {
        assert_eq!(got, &[Got::Disconnect("draining".into())]);
        assert!(
            world.stream(client).eof,
            "no FIN: {:?}",
            world.hosts[0].state(client.conn)
        );
    }
    assert_eq!(world.stat(0, Counter::ConnectionsClosedDrain), 2);
    assert_eq!(world.stat(0, Counter::ConnectionsAccepted), 2);
    world.run_until("the late client's reset", 100, |w| {
        w.hosts[0].state(late.conn) == State::Closed
    });
}
