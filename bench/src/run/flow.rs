//! One run of publishers → subscribers on one subject, or of several such
//! flows at once, each on its own subject (latency under load).
//!
//! Every subscriber connection has its own reader thread that parses in
//! place, checks each message's (publisher, sequence number) and counts.
//! Publishers either go as fast as the flow control lets them (throughput)
//! or are paced at a fixed rate (latency). The main thread measures: it
//! snapshots the counters and the broker's CPU time after the warm-up, stops
//! the publishers after the measured time, waits until every subscriber has
//! every message (or nothing arrives any more) and snapshots again.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use super::messages::{seen_bits, seq_limit, SubscriberCheck, Template};
use super::{fine_timer_slack, new_histogram, Clock};
use crate::brokers::{procfs, Broker};
use crate::proto::{self, payload, Conn, Event, ReadHalf, Reader, Wire, WriteHalf};
use crate::tls::BenchTls;

/// The subject a run's flow publishes on.
pub const SUBJECT: &str = "bench.flow";
/// The subject of the throughput flow beside a latency flow (latency under load).
pub const LOAD_SUBJECT: &str = "bench.load";
/// The queue group of the queue-group scenario.
pub const QUEUE_GROUP: &str = "workers";
/// Target bytes of one publisher write.
pub const WRITE_TARGET: usize = 64 * 1024;
/// Most messages in one write.
pub const MAX_BATCH: usize = 1024;
/// Batches a publisher may run ahead of the slowest subscriber, and PINGs
/// it may have unanswered.
pub const WINDOW_BATCHES: u64 = 64;
/// How long a run waits, once the publishers stopped, for a subscriber that
/// receives nothing any more, before it calls the missing messages lost.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the last messages, even while they trickle in.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How publishers send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as flow control allows.
    Max,
    /// Each publisher sends this many messages per second, evenly spaced.
    Rate(u64),
}

#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// The subject its publishers publish on and its subscribers subscribe to.
    pub subject: &'static str,
    pub pubs: usize,
    pub subs: usize,
    pub payload: usize,
    /// All subscribers in one queue group (each message goes to one member).
    pub queue: bool,
    pub pace: Pace,
    pub warmup: Duration,
    pub measure: Duration,
}

impl FlowSpec {
    /// Messages per publisher write; the same for every broker, since it
    /// depends on the payload only.
    pub fn batch(&self) -> usize {
        (WRITE_TARGET / (self.payload + 32)).clamp(1, MAX_BATCH)
    }

    /// Messages a publisher may have sent that some subscriber (for a queue
    /// group: the group) has not received yet.
    pub fn window(&self) -> u64 {
        self.batch() as u64 * WINDOW_BATCHES
    }
}

/// What a run's clients connect to and the run watches: one broker, or
/// several that serve the flow together (leaf nodes of a NATS hub).
pub trait Target {
    /// Where subscriber `s` of a flow connects.
    fn sub_addr(&self, s: usize) -> SocketAddr;
    /// Where publisher `p` of a flow connects.
    fn pub_addr(&self, p: usize) -> SocketAddr;
    /// Every process still running?
    fn check_alive(&mut self) -> Result<()>;
    /// user + system CPU seconds of the broker(s) under test.
    fn cpu_seconds(&self) -> Result<f64>;
    /// The measured window begins (after the warm-up).
    fn begin_window(&mut self);
    /// The measured window ends (after the drain).
    fn end_window(&mut self);
    /// CPU seconds of the processes that serve the flow beside the
    /// broker(s) under test (a hub), so that they do not count as other
    /// load on the machine.
    fn helper_cpu_seconds(&self) -> f64 {
        0.0
    }
    /// Every subscriber is in place (confirmed by PONG) and the publishers
    /// are about to start.
    fn subscribed(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Target for Broker {
    fn sub_addr(&self, _: usize) -> SocketAddr {
        self.addr
    }

    fn pub_addr(&self, _: usize) -> SocketAddr {
        self.addr
    }

    fn check_alive(&mut self) -> Result<()> {
        Broker::check_alive(self)
    }

    fn cpu_seconds(&self) -> Result<f64> {
        Broker::cpu_seconds(self)
    }

    fn begin_window(&mut self) {
        Broker::begin_window(self);
    }

    fn end_window(&mut self) {
        Broker::end_window(self);
    }
}

/// Everything a run observed.
#[derive(Debug)]
pub struct FlowOutcome {
    /// Messages each publisher sent.
    pub sent: Vec<u64>,
    /// Messages each subscriber received from each publisher.
    pub received: Vec<Vec<u64>>,
    /// Sequence numbers skipped (fan-out: every subscriber must see all).
    pub gaps: u64,
    /// Messages that arrived after a later one of the same publisher.
    pub reordered: u64,
    /// Queue groups: messages delivered to more than one member.
    pub duplicates: u64,
    /// Payloads of the wrong size or with an unknown publisher.
    pub malformed: u64,
    /// What went wrong on connections: errors sent by the broker, closes.
    pub errors: Vec<String>,
    /// Did every subscriber get every message before the drain gave up?
    pub complete: bool,
    /// From the snapshot after the warm-up to the last message received.
    pub window: Duration,
    /// Messages received by all subscribers in `window`.
    pub delivered: u64,
    pub broker_cpu: f64,
    pub harness_cpu: f64,
    /// CPU seconds the rest of the machine used in the window (other
    /// processes, the kernel's own threads): noise when large.
    pub other_cpu: f64,
    /// CPU seconds the hypervisor gave to others while this machine's CPUs
    /// wanted to run (steal, from /proc/stat): noise when large.
    pub steal: f64,
    /// Latency runs: one-way latency of the messages after the warm-up.
    pub latency: Option<Histogram<u64>>,
    /// Latency runs: how late the pacer wrote messages (client-side delay).
    pub pacer_lag: Option<Histogram<u64>>,
    /// Redis: PUBLISH replies whose receiver count was not the expected one.
    pub receiver_mismatches: u64,
    /// The broker process exited during the run.
    pub broker_failed: bool,
    /// Seconds each publisher spent waiting for flow-control credit (whole
    /// run, warm-up included).
    pub publisher_waited: Vec<f64>,
    /// DPDK load generator only: the share of its poll-loop turns in the
    /// measured window that moved bytes (near 1: the generator, not the
    /// broker, may be the limit).
    pub loadgen_busy: Option<f64>,
}

impl FlowOutcome {
    /// Messages the subscribers should have received in total.
    pub fn expected_total(&self, queue: bool) -> u64 {
        expected_deliveries(queue, self.received.len(), &self.sent)
    }

    pub fn received_total(&self) -> u64 {
        self.received.iter().flatten().sum()
    }
}

/// Counters a subscriber publishes for the publishers' flow control and the
/// main thread's snapshots.
struct SubShared {
    per_pub: Box<[CachePadded<AtomicU64>]>,
    last_recv_ns: CachePadded<AtomicU64>,
}

struct Shared {
    clock: Clock,
    spec: FlowSpec,
    stop: AtomicBool,
    closing: AtomicBool,
    subs: Box<[SubShared]>,
    sent: Box<[CachePadded<AtomicU64>]>,
    pongs: Box<[CachePadded<AtomicU64>]>,
    /// A PING from the server to a publisher, to be answered by its writer.
    ping_requests: Box<[CachePadded<AtomicU64>]>,
    /// Queue groups: one bit per sequence number, to find duplicates.
    seen: Option<Box<[AtomicU64]>>,
    /// Latency runs: messages stamped before this are warm-up.
    warm_ns: AtomicU64,
}

impl Shared {
    fn delivered_total(&self) -> u64 {
        self.subs
            .iter()
            .flat_map(|sub| sub.per_pub.iter())
            .map(|count| count.load(Ordering::Acquire))
            .sum()
    }

    /// Progress of publisher `p` for its flow control.
    fn progress(&self, p: usize) -> u64 {
        let counts = self
            .subs
            .iter()
            .map(|sub| sub.per_pub[p].load(Ordering::Acquire));
        if self.spec.queue {
            counts.sum()
        } else {
            counts.min().unwrap_or(u64::MAX)
        }
    }
}

#[derive(Debug)]
struct SubReport {
    check: SubscriberCheck,
    errors: Vec<String>,
}

#[derive(Debug, Default)]
struct PubReport {
    sent: u64,
    /// Time spent waiting for flow-control credit.
    waited: Duration,
    errors: Vec<String>,
    pacer_lag: Option<Histogram<u64>>,
}

#[derive(Debug, Default)]
struct PubReaderReport {
    errors: Vec<String>,
    receiver_mismatches: u64,
}

/// One flow's clients, connected, before their threads start.
struct Connected {
    shared: Arc<Shared>,
    subs: Vec<Conn>,
    pubs: Vec<Conn>,
}

/// One flow's threads.
struct Running {
    shared: Arc<Shared>,
    subs: Vec<JoinHandle<SubReport>>,
    pubs: Vec<JoinHandle<PubReport>>,
    pub_readers: Vec<JoinHandle<PubReaderReport>>,
}

fn new_shared(spec: &FlowSpec, clock: Clock) -> Arc<Shared> {
    let counters = |n: usize| {
        (0..n)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect()
    };
    Arc::new(Shared {
        clock,
        spec: spec.clone(),
        stop: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        subs: (0..spec.subs)
            .map(|_| SubShared {
                per_pub: counters(spec.pubs),
                last_recv_ns: CachePadded::new(AtomicU64::new(0)),
            })
            .collect(),
        sent: counters(spec.pubs),
        pongs: counters(spec.pubs),
        ping_requests: counters(spec.pubs),
        seen: seen_bits(spec),
        warm_ns: AtomicU64::new(u64::MAX),
    })
}

/// Connects a flow's subscribers (confirmed by PONG, so their
/// subscriptions are in place), then its publishers; every socket also goes
/// to `sockets`, for the guard.
fn connect<W: Wire>(
    target: &dyn Target,
    shared: Arc<Shared>,
    tls: Option<&BenchTls>,
    sockets: &mut Vec<TcpStream>,
) -> Result<Connected> {
    let spec = &shared.spec;
    let mut subs = Vec::new();
    for s in 0..spec.subs {
        let mut extra = Vec::new();
        W::put_subscribe(
            &mut extra,
            spec.subject,
            1,
            spec.queue.then_some(QUEUE_GROUP),
        );
        let conn = proto::open::<W>(
            target.sub_addr(s),
            &format!("bench-sub-{s}"),
            &extra,
            SETUP_TIMEOUT,
            tls,
        )
        .with_context(|| {
            format!(
                "subscriber {s} of {} cannot connect and subscribe",
                spec.subject
            )
        })?;
        sockets.push(conn.socket.try_clone()?);
        subs.push(conn);
    }
    let mut pubs = Vec::new();
    for p in 0..spec.pubs {
        let conn = proto::open::<W>(
            target.pub_addr(p),
            &format!("bench-pub-{p}"),
            &[],
            SETUP_TIMEOUT,
            tls,
        )
        .with_context(|| format!("publisher {p} of {} cannot connect", spec.subject))?;
        sockets.push(conn.socket.try_clone()?);
        pubs.push(conn);
    }
    Ok(Connected { shared, subs, pubs })
}

/// Starts a flow's threads; its publishers wait for `start`.
fn spawn<W: Wire>(connected: Connected, start: &Arc<Barrier>) -> Result<Running> {
    let Connected { shared, subs, pubs } = connected;
    let mut running = Running {
        shared: shared.clone(),
        subs: Vec::new(),
        pubs: Vec::new(),
        pub_readers: Vec::new(),
    };
    for (s, stream) in subs.into_iter().enumerate() {
        let shared = shared.clone();
        running.subs.push(
            std::thread::Builder::new()
                .name(format!("sub-{s}"))
                .spawn(move || subscriber::<W>(stream, &shared, s))?,
        );
    }
    for (p, conn) in pubs.into_iter().enumerate() {
        let (reader_stream, stream) = (conn.reader, conn.writer);
        let reader_shared = shared.clone();
        running.pub_readers.push(
            std::thread::Builder::new()
                .name(format!("pub-{p}-reader"))
                .spawn(move || publisher_reader::<W>(reader_stream, &reader_shared, p))?,
        );
        let shared = shared.clone();
        let start = start.clone();
        running
            .pubs
            .push(
                std::thread::Builder::new()
                    .name(format!("pub-{p}"))
                    .spawn(move || {
                        start.wait();
                        match shared.spec.pace {
                            Pace::Max => publish_max::<W>(stream, &shared, p),
                            Pace::Rate(rate) => publish_paced::<W>(stream, &shared, p, rate),
                        }
                    })?,
            );
    }
    Ok(running)
}

/// Messages `subs` subscribers (a queue group: together) should receive,
/// given what each publisher sent.
fn expected_deliveries(queue: bool, subs: usize, sent: &[u64]) -> u64 {
    let sent: u64 = sent.iter().sum();
    if queue {
        sent
    } else {
        sent * subs as u64
    }
}

/// Runs `specs` at once against `broker`, over TLS with `tls`, each flow on
/// its own subject (latency under load: a paced flow beside a throughput
/// flow); `on_progress` gets a status line now and then. The flows share
/// the first flow's warm-up and measured window, and the broker's and the
/// machine's CPU figures of that window; every message of every flow is
/// checked. One outcome per flow, in order.
pub fn run<W: Wire>(
    broker: &mut dyn Target,
    specs: &[FlowSpec],
    tls: Option<&BenchTls>,
    on_progress: &dyn Fn(String),
) -> Result<Vec<FlowOutcome>> {
    let first = specs.first().ok_or_else(|| anyhow!("no flow to run"))?;
    let (warmup, measure) = (first.warmup, first.measure);
    let clock = Clock::new();
    let shareds: Vec<Arc<Shared>> = specs
        .iter()
        .map(|spec| {
            assert!(spec.payload >= payload::HEADER);
            new_shared(spec, clock)
        })
        .collect();

    // Every connection of every flow first, so that no thread is started
    // for a run that cannot begin. From here on every thread ends when its
    // socket is shut down, also when this function returns early.
    let mut guard = SocketGuard {
        sockets: Vec::new(),
        shared: shareds.clone(),
    };
    let mut connected = Vec::new();
    for shared in &shareds {
        connected.push(connect::<W>(
            broker,
            shared.clone(),
            tls,
            &mut guard.sockets,
        )?);
    }
    broker.subscribed()?;
    let total_pubs: usize = specs.iter().map(|spec| spec.pubs).sum();
    let start = Arc::new(Barrier::new(total_pubs + 1));
    let mut flows = Vec::new();
    for flow in connected {
        flows.push(spawn::<W>(flow, &start)?);
    }
    let delivered = |flows: &[Running]| -> Vec<u64> {
        flows.iter().map(|f| f.shared.delivered_total()).collect()
    };

    // Go.
    let go_ns = clock.now_ns();
    for shared in &shareds {
        shared
            .warm_ns
            .store(go_ns + warmup.as_nanos() as u64, Ordering::Release);
    }
    start.wait();
    let tick = Duration::from_millis(100);
    let warm_end = Instant::now() + warmup;
    let mut errors = Vec::new();
    while Instant::now() < warm_end {
        std::thread::sleep(tick.min(warm_end.saturating_duration_since(Instant::now())));
        if let Err(error) = broker.check_alive() {
            errors.push(format!("{error:#}"));
            break;
        }
        on_progress("warming up".into());
    }

    // The syscall probe (if any) counts from here to the last snapshot.
    broker.begin_window();
    let t0_ns = clock.now_ns();
    let delivered0 = delivered(&flows);
    let cpu0 = broker.cpu_seconds().unwrap_or(0.0);
    let helpers0 = broker.helper_cpu_seconds();
    let self0 = procfs::self_cpu_seconds()?;
    let machine0 = procfs::machine_cpu().unwrap_or_default();
    let measure_end = Instant::now() + measure;
    let (mut last_count, mut last_at) = (delivered0.iter().sum::<u64>(), Instant::now());
    while Instant::now() < measure_end && errors.is_empty() {
        std::thread::sleep(tick.min(measure_end.saturating_duration_since(Instant::now())));
        if let Err(error) = broker.check_alive() {
            errors.push(format!("{error:#}"));
            break;
        }
        let count = delivered(&flows).iter().sum::<u64>();
        let rate = (count - last_count) as f64 / last_at.elapsed().as_secs_f64();
        (last_count, last_at) = (count, Instant::now());
        on_progress(format!(
            "{} msg/s delivered",
            crate::report::human_rate(rate)
        ));
    }
    for shared in &shareds {
        shared.stop.store(true, Ordering::Release);
    }

    // Publishers stop after their current write; one stuck in a write to a
    // broker that stopped reading is released by shutting its socket.
    let stop_deadline = Instant::now() + Duration::from_secs(10);
    let pubs_running =
        |flows: &[Running]| flows.iter().flat_map(|f| &f.pubs).any(|t| !t.is_finished());
    while pubs_running(&flows) && Instant::now() < stop_deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if pubs_running(&flows) {
        errors.push(
            "a publisher was still blocked in a write 10 s after the end; its socket was shut"
                .to_string(),
        );
        guard.shutdown_all();
    }
    // Per flow: what each publisher sent, waited and how late it was.
    let mut sent_by_flow = Vec::new();
    for flow in &mut flows {
        let mut sent = Vec::new();
        let mut waited = Vec::new();
        let mut pacer_lag: Option<Histogram<u64>> = None;
        let mut flow_errors = Vec::new();
        for thread in flow.pubs.drain(..) {
            let report = thread
                .join()
                .map_err(|_| anyhow!("a publisher thread panicked"))?;
            sent.push(report.sent);
            waited.push(report.waited.as_secs_f64());
            flow_errors.extend(report.errors);
            if let Some(lag) = report.pacer_lag {
                match pacer_lag.as_mut() {
                    Some(total) => total.add(&lag).expect("same bounds"),
                    None => pacer_lag = Some(lag),
                }
            }
        }
        sent_by_flow.push((sent, waited, pacer_lag, flow_errors));
    }

    // Drain: wait until every subscriber of every flow has what was sent to it.
    let expected: Vec<u64> = specs
        .iter()
        .zip(&sent_by_flow)
        .map(|(spec, (sent, ..))| expected_deliveries(spec.queue, spec.subs, sent))
        .collect();
    let all_there = |counts: &[u64]| {
        counts
            .iter()
            .zip(&expected)
            .all(|(count, want)| count >= want)
    };
    let broker_died = !errors.is_empty();
    let drain_start = Instant::now();
    let (mut seen_count, mut seen_at) = (delivered(&flows).iter().sum::<u64>(), Instant::now());
    loop {
        let counts = delivered(&flows);
        if all_there(&counts) {
            break;
        }
        let count = counts.iter().sum::<u64>();
        if count != seen_count {
            (seen_count, seen_at) = (count, Instant::now());
        }
        if seen_at.elapsed() > STALL_TIMEOUT || drain_start.elapsed() > DRAIN_LIMIT {
            break;
        }
        if let Err(error) = broker.check_alive() {
            if !broker_died {
                errors.push(format!("{error:#}"));
            }
            break;
        }
        on_progress(format!(
            "draining: {count}/{}",
            expected.iter().sum::<u64>()
        ));
        std::thread::sleep(Duration::from_millis(2));
    }
    let delivered1 = delivered(&flows);
    let cpu1 = broker.cpu_seconds().unwrap_or(cpu0);
    let helpers1 = broker.helper_cpu_seconds();
    broker.end_window();
    let self1 = procfs::self_cpu_seconds()?;
    let machine1 = procfs::machine_cpu().unwrap_or(machine0);
    let noise = machine1.noise_since(
        &machine0,
        (cpu1 - cpu0) + (helpers1 - helpers0) + (self1 - self0),
    );

    for shared in &shareds {
        shared.closing.store(true, Ordering::Release);
    }
    guard.shutdown_all();
    let broker_failed = broker.check_alive().is_err();
    let mut outcomes = Vec::new();
    for (f, (flow, (sent, waited, pacer_lag, flow_errors))) in
        flows.into_iter().zip(sent_by_flow).enumerate()
    {
        let last_ns = flow
            .shared
            .subs
            .iter()
            .map(|sub| sub.last_recv_ns.load(Ordering::Acquire))
            .max()
            .unwrap_or(0);
        let mut outcome = FlowOutcome {
            sent,
            received: Vec::new(),
            gaps: 0,
            reordered: 0,
            duplicates: 0,
            malformed: 0,
            errors: errors.iter().cloned().chain(flow_errors).collect(),
            complete: delivered1[f] >= expected[f],
            window: Duration::from_nanos(last_ns.saturating_sub(t0_ns)),
            delivered: delivered1[f] - delivered0[f],
            broker_cpu: cpu1 - cpu0,
            harness_cpu: self1 - self0,
            other_cpu: noise.other_cpu,
            steal: noise.steal,
            latency: None,
            pacer_lag,
            receiver_mismatches: 0,
            broker_failed,
            publisher_waited: waited,
            loadgen_busy: None,
        };
        for (s, thread) in flow.subs.into_iter().enumerate() {
            let report = thread
                .join()
                .map_err(|_| anyhow!("subscriber thread {s} panicked"))?;
            let check = report.check;
            outcome.gaps += check.gaps;
            outcome.reordered += check.reordered;
            outcome.duplicates += check.duplicates;
            outcome.malformed += check.malformed;
            outcome
                .errors
                .extend(attributed(report.errors, &format!("subscriber {s}")));
            outcome.received.push(check.counts);
            if let Some(hist) = check.latency {
                match outcome.latency.as_mut() {
                    Some(total) => total.add(&hist).expect("same bounds"),
                    None => outcome.latency = Some(hist),
                }
            }
        }
        for (p, thread) in flow.pub_readers.into_iter().enumerate() {
            let report = thread
                .join()
                .map_err(|_| anyhow!("publisher reader {p} panicked"))?;
            outcome.receiver_mismatches += report.receiver_mismatches;
            outcome
                .errors
                .extend(attributed(report.errors, &format!("publisher {p}")));
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// `errors`, each prefixed with the client that met it.
fn attributed<'a>(errors: Vec<String>, client: &'a str) -> impl Iterator<Item = String> + 'a {
    errors.into_iter().map(move |e| format!("{client}: {e}"))
}

/// Shuts every socket of a run, also when the run ends early with an error,
/// so that no thread stays blocked in a read, a write or a credit wait.
struct SocketGuard {
    sockets: Vec<TcpStream>,
    shared: Vec<Arc<Shared>>,
}

impl SocketGuard {
    fn shutdown_all(&self) {
        for shared in &self.shared {
            shared.stop.store(true, Ordering::Release);
            shared.closing.store(true, Ordering::Release);
        }
        for socket in &self.sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.shutdown_all();
    }
}

/// A subscriber connection's reader: counts and checks every message.
fn subscriber<W: Wire>(conn: Conn, shared: &Shared, index: usize) -> SubReport {
    let Conn {
        reader: mut stream,
        writer: mut answers,
        ..
    } = conn;
    let mine = &shared.subs[index];
    let mut report = SubReport {
        check: SubscriberCheck::new(&shared.spec),
        errors: Vec::new(),
    };
    let mut reader = Reader::new(1 << 20);
    let mut pong = Vec::new();
    W::put_pong(&mut pong);
    loop {
        match reader.read_from(&mut stream) {
            Ok(0) => {
                if !shared.closing.load(Ordering::Acquire) {
                    report
                        .errors
                        .push("the broker closed the connection".into());
                }
                break;
            }
            Ok(_) => {}
            Err(error) => {
                if !shared.closing.load(Ordering::Acquire) {
                    report.errors.push(format!("read failed: {error}"));
                }
                break;
            }
        }
        let now = shared.clock.now_ns();
        // Set by the main thread just before the publishers start.
        let warm_ns = shared.warm_ns.load(Ordering::Acquire);
        let mut got_any = false;
        loop {
            let event = match reader.next::<W>() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(error) => {
                    report.errors.push(format!("protocol error: {error}"));
                    return report;
                }
            };
            match event {
                Event::Msg(body) => {
                    got_any = true;
                    report
                        .check
                        .message(body, now, warm_ns, shared.seen.as_deref());
                }
                Event::Ping => {
                    if let Err(error) = answers.write_all(&pong) {
                        report.errors.push(format!("cannot answer PING: {error}"));
                    }
                }
                Event::Error { code, text } => {
                    report.errors.push(format!(
                        "server error {code}: {}",
                        String::from_utf8_lossy(text)
                    ));
                }
                Event::Disconnect(reason) => {
                    report.errors.push(format!(
                        "server DISCONNECT: {}",
                        String::from_utf8_lossy(reason)
                    ));
                }
                Event::Pong | Event::Ack | Event::Receivers(_) => {}
            }
        }
        if got_any {
            for (p, count) in report.check.counts.iter().enumerate() {
                mine.per_pub[p].store(*count, Ordering::Release);
            }
            mine.last_recv_ns.store(now, Ordering::Release);
        }
    }
    report
}

/// A publisher connection's reader: PONGs for flow control, errors.
fn publisher_reader<W: Wire>(
    mut stream: ReadHalf,
    shared: &Shared,
    index: usize,
) -> PubReaderReport {
    let mut report = PubReaderReport::default();
    let mut reader = Reader::new(64 * 1024);
    let expected_receivers = if shared.spec.queue {
        1
    } else {
        shared.spec.subs as i64
    };
    let mut pongs = 0u64;
    loop {
        match reader.read_from(&mut stream) {
            Ok(0) | Err(_) => {
                if !shared.closing.load(Ordering::Acquire) {
                    report
                        .errors
                        .push("the broker closed the publisher's connection".into());
                }
                return report;
            }
            Ok(_) => {}
        }
        loop {
            match reader.next::<W>() {
                Ok(Some(Event::Pong)) => pongs += 1,
                Ok(Some(Event::Receivers(n))) => {
                    if n != expected_receivers {
                        report.receiver_mismatches += 1;
                    }
                }
                Ok(Some(Event::Ping)) => {
                    shared.ping_requests[index].fetch_add(1, Ordering::AcqRel);
                }
                Ok(Some(Event::Error { code, text })) => {
                    report.errors.push(format!(
                        "server error {code}: {}",
                        String::from_utf8_lossy(text)
                    ));
                }
                Ok(Some(Event::Disconnect(reason))) => {
                    report.errors.push(format!(
                        "server DISCONNECT: {}",
                        String::from_utf8_lossy(reason)
                    ));
                }
                Ok(Some(Event::Msg(_) | Event::Ack)) => {}
                Ok(None) => break,
                Err(error) => {
                    report.errors.push(format!("protocol error: {error}"));
                    return report;
                }
            }
        }
        shared.pongs[index].store(pongs, Ordering::Release);
    }
}

/// Throughput publisher: batches of messages, each batch one write followed
/// by a PING; it stays at most [`FlowSpec::window`] messages ahead of the
/// slowest subscriber and [`WINDOW_BATCHES`] PINGs ahead of the PONGs.
fn publish_max<W: Wire>(mut stream: WriteHalf, shared: &Shared, index: usize) -> PubReport {
    fine_timer_slack();
    let spec = &shared.spec;
    let template = Template::new::<W>(spec.subject, spec.payload);
    let batch = spec.batch() as u64;
    let window = spec.window();
    let limit = seq_limit(spec);
    let mut out = Vec::with_capacity(batch as usize * template.frame_len() + 64);
    let mut report = PubReport::default();
    let mut seq = 0u64;
    let mut pings = 0u64;
    let mut pongs_answered = 0u64;
    'run: while !shared.stop.load(Ordering::Acquire) && seq + batch <= limit {
        // Flow control: end to end, and broker acceptance.
        let mut wait_started: Option<Instant> = None;
        loop {
            let ahead = seq + batch - shared.progress(index).min(seq);
            let unanswered = pings - shared.pongs[index].load(Ordering::Acquire);
            if ahead <= window && unanswered < WINDOW_BATCHES {
                break;
            }
            let since = *wait_started.get_or_insert_with(Instant::now);
            if shared.stop.load(Ordering::Acquire) {
                report.waited += since.elapsed();
                break 'run;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        if let Some(since) = wait_started {
            report.waited += since.elapsed();
        }
        out.clear();
        for _ in 0..batch {
            template.put(&mut out, index as u32, seq, 0);
            seq += 1;
        }
        W::put_ping(&mut out);
        pings += 1;
        let requested = shared.ping_requests[index].load(Ordering::Acquire);
        while pongs_answered < requested {
            W::put_pong(&mut out);
            pongs_answered += 1;
        }
        if let Err(error) = stream.write_all(&out) {
            report.errors.push(format!("write failed: {error}"));
            // Nothing of this batch counts as sent: it may be partly written.
            seq -= batch;
            break;
        }
        shared.sent[index].store(seq, Ordering::Release);
    }
    report.sent = seq;
    report
}

/// Latency publisher: message `n` is due at `start + n / rate` and carries
/// that due time, so that a late send (the client's or the broker's
/// backpressure) counts in the latency. Every wake-up writes all messages
/// due by then in one write.
fn publish_paced<W: Wire>(
    mut stream: WriteHalf,
    shared: &Shared,
    index: usize,
    rate: u64,
) -> PubReport {
    fine_timer_slack();
    let spec = &shared.spec;
    let template = Template::new::<W>(spec.subject, spec.payload);
    let interval = 1e9 / rate as f64;
    let mut out = Vec::with_capacity(MAX_BATCH * template.frame_len());
    let mut report = PubReport {
        pacer_lag: Some(new_histogram()),
        ..PubReport::default()
    };
    let start_ns = shared.clock.now_ns();
    let due_at = |n: u64| start_ns + (n as f64 * interval) as u64;
    let limit = seq_limit(spec);
    let mut seq = 0u64;
    let mut pongs_answered = 0u64;
    while !shared.stop.load(Ordering::Acquire) && seq < limit {
        let now = shared.clock.now_ns();
        let next_due = due_at(seq);
        if now < next_due {
            std::thread::sleep(Duration::from_nanos(next_due - now));
            continue;
        }
        if let Some(lag) = report.pacer_lag.as_mut() {
            lag.saturating_record((now - next_due).max(1));
        }
        out.clear();
        let first = seq;
        while seq - first < MAX_BATCH as u64 && due_at(seq) <= now && seq < limit {
            template.put(&mut out, index as u32, seq, due_at(seq));
            seq += 1;
        }
        let requested = shared.ping_requests[index].load(Ordering::Acquire);
        while pongs_answered < requested {
            W::put_pong(&mut out);
            pongs_answered += 1;
        }
        if let Err(error) = stream.write_all(&out) {
            report.errors.push(format!("write failed: {error}"));
            seq = first;
            break;
        }
        shared.sent[index].store(seq, Ordering::Release);
    }
    report.sent = seq;
    report
}
