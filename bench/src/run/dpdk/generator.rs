//! The generator's poll loop: every connection on one smoltcp interface
//! over the client end of the memif pair, driven from one pinned thread.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use blipmq_dataplane::backend::dpdk::{DpdkBackend, DpdkDevice};
use blipmq_dataplane::backend::userspace::{PacketDevice, StackConfig};
use blipmq_dataplane::backend::Backend;
use blipmq_dataplane::config::Config;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use super::{memif_eal_args, LoadgenJob, LoadgenReport};
use crate::brokers::procfs;
use crate::proto::blipmq::Blipmq;
use crate::proto::{Event, Reader, Wire};
use crate::run::flow::{
    FlowSpec, Pace, DRAIN_LIMIT, QUEUE_GROUP, STALL_TIMEOUT, SUBJECT, WINDOW_BATCHES,
};
use crate::run::messages::{seen_bits, seq_limit, SubscriberCheck, Template};
use crate::run::Clock;

/// Each socket's buffers, both ways: as large as a kernel client's
/// autotuned window on a LAN, so that the generator's window is not the limit.
const SOCKET_BUFFER: usize = 1 << 20;
/// Connecting (the memif link comes up first) and subscribing.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// First local port of the generator's connections.
const FIRST_PORT: u16 = 40_000;

/// A smoltcp socket read like a non-blocking socket: `WouldBlock` while
/// nothing is buffered, 0 at the peer's FIN.
struct SocketRead<'a>(&'a mut tcp::Socket<'static>);

impl Read for SocketRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.state() {
            tcp::State::SynSent | tcp::State::SynReceived => {
                return Err(io::ErrorKind::WouldBlock.into())
            }
            tcp::State::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "the connection was reset or timed out",
                ))
            }
            _ => {}
        }
        match self.0.recv_slice(buf) {
            Ok(0) if self.0.may_recv() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(0) | Err(tcp::RecvError::Finished) => Ok(0),
            Ok(n) => Ok(n),
            Err(tcp::RecvError::InvalidState) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the connection was reset",
            )),
        }
    }
}

enum Role {
    Subscriber(SubscriberCheck),
    Publisher(PublisherState),
}

#[derive(Default)]
struct PublisherState {
    seq: u64,
    pings: u64,
    /// Since when the flow control holds it back.
    waiting_since: Option<Instant>,
    waited: Duration,
}

struct Conn {
    handle: SocketHandle,
    role: Role,
    reader: Reader,
    /// Encoded requests not yet taken by the socket, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// PONGs received; the first answers the setup PING (subscribed).
    pongs: u64,
}

impl Conn {
    fn ready(&self) -> bool {
        self.pongs > 0
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<()> {
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        bail!("CPU {cpu} is out of range");
    }
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is within the set's capacity (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        bail!("cannot pin to CPU {cpu}: {}", io::Error::last_os_error());
    }
    Ok(())
}

pub fn run(job: &LoadgenJob) -> Result<LoadgenReport> {
    let target = &job.target;
    let mut config = Config::default();
    config.server.workers = 1;
    config.dpdk.ip = format!("{}/{}", target.loadgen_ip, target.prefix);
    config.dpdk.eal_args = ["-l".to_string(), target.loadgen_cpu.to_string()]
        .into_iter()
        .chain(memif_eal_args("client", &target.socket, "loadgen"))
        .collect();
    // The backend outlives the loop's thread and its device: it frees the
    // mbuf pool the device's frames come from.
    let mut backend = DpdkBackend::new(&config, &[]).context("cannot start DPDK")?;
    let worker = backend.worker(0)?;
    // The EAL's main thread holds lcore 0: the loop runs on a thread of its
    // own, registered with DPDK as a broker's worker is.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("loadgen".into())
            .spawn_scoped(scope, || {
                pin_to(target.loadgen_cpu)?;
                let (device, stack) = worker.into_device()?;
                poll_loop(job, device, &stack)
            })?
            .join()
            .map_err(|_| anyhow!("the load generator's thread panicked"))?
    })
}

/// The flow a job runs (throughput: publishers as fast as flow control lets them).
fn flow_spec(job: &LoadgenJob) -> FlowSpec {
    FlowSpec {
        subject: SUBJECT,
        pubs: job.pubs,
        subs: job.subs,
        payload: job.payload,
        queue: job.queue,
        pace: Pace::Max,
        warmup: Duration::from_millis(job.warmup_ms),
        measure: Duration::from_millis(job.measure_ms),
    }
}

/// Connects every client, runs the flow's phases, and measures.
fn poll_loop(
    job: &LoadgenJob,
    mut device: DpdkDevice,
    stack: &StackConfig,
) -> Result<LoadgenReport> {
    let spec = flow_spec(job);
    let target = &job.target;
    let epoch = Instant::now();
    let ts = |now: Instant| {
        smoltcp::time::Instant::from_micros(now.duration_since(epoch).as_micros() as i64)
    };
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(stack.mac))),
        &mut device,
        ts(epoch),
    );
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(
            IpAddress::Ipv4(target.loadgen_ip),
            target.prefix,
        ));
    });
    let mut run = Run::new(&spec);
    let mut sockets = SocketSet::new(Vec::new());
    for index in 0..spec.subs + spec.pubs {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        // As the bench's kernel clients: TCP_NODELAY; and as the broker's
        // sockets: no delayed ACK, so what a turn receives is acknowledged
        // in the same turn.
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        socket
            .connect(
                iface.context(),
                (IpAddress::Ipv4(target.broker_ip), target.port),
                FIRST_PORT + index as u16,
            )
            .map_err(|error| anyhow!("connect: {error}"))?;
        let handle = sockets.add(socket);
        let mut out = Vec::new();
        let role = if index < spec.subs {
            Blipmq::put_hello(&mut out, &format!("bench-sub-{index}"));
            Blipmq::put_subscribe(&mut out, spec.subject, 1, spec.queue.then_some(QUEUE_GROUP));
            Role::Subscriber(SubscriberCheck::new(&spec))
        } else {
            Blipmq::put_hello(&mut out, &format!("bench-pub-{}", index - spec.subs));
            Role::Publisher(PublisherState::default())
        };
        Blipmq::put_ping(&mut out);
        run.conns.push(Conn {
            handle,
            role,
            reader: Reader::new(1 << 20),
            out,
            out_at: 0,
            pongs: 0,
        });
    }

    let mut turn = |run: &mut Run| {
        let now = Instant::now();
        iface.poll(ts(now), &mut device, &mut sockets);
        device.flush_tx();
        let moved = run.service(&mut sockets);
        iface.poll(ts(Instant::now()), &mut device, &mut sockets);
        device.flush_tx();
        run.loop_turns += 1;
        if !moved {
            run.idle_turns += 1;
        }
    };

    let setup_end = Instant::now() + SETUP_TIMEOUT;
    while !run.conns.iter().all(Conn::ready) && run.errors.is_empty() {
        if Instant::now() > setup_end {
            bail!(
                "{} of {} connections subscribed/greeted within {SETUP_TIMEOUT:?} \
                 (is blipmqd serving on the memif pair?)",
                run.conns.iter().filter(|c| c.ready()).count(),
                run.conns.len()
            );
        }
        turn(&mut run);
    }

    // Go: the same phases as the kernel clients' runs.
    run.publishing = true;
    let warm_end = Instant::now() + spec.warmup;
    while Instant::now() < warm_end && run.errors.is_empty() {
        turn(&mut run);
    }
    let t0_ns = run.clock.now_ns();
    let delivered0 = run.delivered();
    let cpu0 = procfs::cpu_seconds(job.broker_pid).unwrap_or(0.0);
    let self0 = procfs::self_cpu_seconds()?;
    let machine0 = procfs::machine_cpu().unwrap_or_default();
    let turns0 = (run.loop_turns, run.idle_turns);
    let measure_end = Instant::now() + spec.measure;
    while Instant::now() < measure_end && run.errors.is_empty() {
        turn(&mut run);
    }
    run.publishing = false;

    let expected = run.expected();
    let drain_start = Instant::now();
    let (mut seen, mut seen_at) = (run.delivered(), Instant::now());
    let complete = loop {
        turn(&mut run);
        let count = run.delivered();
        if count >= expected {
            break true;
        }
        if count != seen {
            (seen, seen_at) = (count, Instant::now());
        }
        if !run.errors.is_empty()
            || seen_at.elapsed() > STALL_TIMEOUT
            || drain_start.elapsed() > DRAIN_LIMIT
        {
            break false;
        }
    };
    let delivered1 = run.delivered();
    let cpu1 = procfs::cpu_seconds(job.broker_pid).unwrap_or(cpu0);
    let self1 = procfs::self_cpu_seconds()?;
    let machine1 = procfs::machine_cpu().unwrap_or(machine0);
    let noise = machine1.noise_since(&machine0, (cpu1 - cpu0) + (self1 - self0));
    let (turns, idle) = (run.loop_turns - turns0.0, run.idle_turns - turns0.1);

    // Goodbye: resets go out before the port stops.
    for conn in &run.conns {
        sockets.get_mut::<tcp::Socket>(conn.handle).abort();
    }
    iface.poll(ts(Instant::now()), &mut device, &mut sockets);
    device.flush_tx();

    let mut report = LoadgenReport {
        complete,
        window_secs: Duration::from_nanos(run.last_recv_ns.saturating_sub(t0_ns)).as_secs_f64(),
        delivered: delivered1 - delivered0,
        broker_cpu: cpu1 - cpu0,
        harness_cpu: self1 - self0,
        other_cpu: noise.other_cpu,
        steal: noise.steal,
        loop_turns: turns,
        idle_turns: idle,
        errors: std::mem::take(&mut run.errors),
        ..LoadgenReport::default()
    };
    for conn in run.conns {
        match conn.role {
            Role::Subscriber(check) => {
                report.gaps += check.gaps;
                report.reordered += check.reordered;
                report.duplicates += check.duplicates;
                report.malformed += check.malformed;
                report.received.push(check.counts);
            }
            Role::Publisher(state) => {
                report.sent.push(state.seq);
                report.publisher_waited.push(state.waited.as_secs_f64());
            }
        }
    }
    Ok(report)
}

/// The run's connections and what the loop counts.
struct Run {
    spec: FlowSpec,
    clock: Clock,
    template: Template,
    conns: Vec<Conn>,
    seen: Option<Box<[std::sync::atomic::AtomicU64]>>,
    /// Publishers may write new batches.
    publishing: bool,
    last_recv_ns: u64,
    errors: Vec<String>,
    loop_turns: u64,
    idle_turns: u64,
}

impl Run {
    fn new(spec: &FlowSpec) -> Run {
        Run {
            spec: spec.clone(),
            clock: Clock::new(),
            template: Template::new::<Blipmq>(spec.subject, spec.payload),
            conns: Vec::new(),
            seen: seen_bits(spec),
            publishing: false,
            last_recv_ns: 0,
            errors: Vec::new(),
            loop_turns: 0,
            idle_turns: 0,
        }
    }

    fn subscribers(&self) -> impl Iterator<Item = &SubscriberCheck> {
        self.conns.iter().filter_map(|conn| match &conn.role {
            Role::Subscriber(check) => Some(check),
            Role::Publisher(_) => None,
        })
    }

    fn delivered(&self) -> u64 {
        self.subscribers().flat_map(|c| c.counts.iter()).sum()
    }

    fn expected(&self) -> u64 {
        let sent: u64 = self
            .conns
            .iter()
            .filter_map(|conn| match &conn.role {
                Role::Publisher(state) => Some(state.seq),
                Role::Subscriber(_) => None,
            })
            .sum();
        if self.spec.queue {
            sent
        } else {
            sent * self.spec.subs as u64
        }
    }

    /// Messages of publisher `p` received, for its flow control: by the
    /// slowest subscriber (fan-out) or by the group (queue).
    fn progress(&self, p: usize) -> u64 {
        let counts = self.subscribers().map(|check| check.counts[p]);
        if self.spec.queue {
            counts.sum()
        } else {
            counts.min().unwrap_or(u64::MAX)
        }
    }

    /// Reads, answers and writes every connection once; whether any byte
    /// moved.
    fn service(&mut self, sockets: &mut SocketSet<'static>) -> bool {
        let mut moved = false;
        for index in 0..self.conns.len() {
            moved |= self.read(index, sockets);
            if matches!(self.conns[index].role, Role::Publisher(_)) {
                self.refill(index);
            }
            let conn = &mut self.conns[index];
            if conn.out_at < conn.out.len() {
                let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
                if socket.may_send() {
                    let n = socket.send_slice(&conn.out[conn.out_at..]).unwrap_or(0);
                    conn.out_at += n;
                    moved |= n > 0;
                    if conn.out_at == conn.out.len() {
                        conn.out.clear();
                        conn.out_at = 0;
                    }
                }
            }
        }
        moved
    }

    /// Takes in what connection `index` received; whether anything came.
    fn read(&mut self, index: usize, sockets: &mut SocketSet<'static>) -> bool {
        let Run {
            conns,
            clock,
            seen,
            errors,
            last_recv_ns,
            ..
        } = self;
        let conn = &mut conns[index];
        let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
        let mut got = false;
        loop {
            match conn.reader.read_from(&mut SocketRead(socket)) {
                Ok(0) => {
                    errors.push(format!("connection {index}: the broker closed it"));
                    return got;
                }
                Ok(_) => got = true,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return got,
                Err(error) => {
                    errors.push(format!("connection {index}: {error}"));
                    return got;
                }
            }
            let now = clock.now_ns();
            loop {
                let event = match conn.reader.next::<Blipmq>() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(error) => {
                        errors.push(format!("connection {index}: protocol error: {error}"));
                        return got;
                    }
                };
                match (event, &mut conn.role) {
                    (Event::Msg(body), Role::Subscriber(check)) => {
                        // Throughput only: no latency, so no warm-up mark.
                        check.message(body, now, 0, seen.as_deref());
                        *last_recv_ns = now;
                    }
                    (Event::Pong, _) => conn.pongs += 1,
                    (Event::Ping, _) => Blipmq::put_pong(&mut conn.out),
                    (Event::Error { code, text }, _) => errors.push(format!(
                        "connection {index}: server error {code}: {}",
                        String::from_utf8_lossy(text)
                    )),
                    (Event::Disconnect(reason), _) => errors.push(format!(
                        "connection {index}: server DISCONNECT: {}",
                        String::from_utf8_lossy(reason)
                    )),
                    _ => {}
                }
            }
        }
    }

    /// A publisher whose last batch is out writes the next one, when its
    /// flow control lets it (the kernel clients' rules: at most a window
    /// ahead of the slowest subscriber, at most [`WINDOW_BATCHES`] PINGs
    /// unanswered).
    fn refill(&mut self, index: usize) {
        let p = index - self.spec.subs;
        let batch = self.spec.batch() as u64;
        let window = self.spec.window();
        let limit = seq_limit(&self.spec);
        let progress = self.progress(p);
        let publishing = self.publishing;
        let conn = &mut self.conns[index];
        let Role::Publisher(state) = &mut conn.role else {
            return;
        };
        if !publishing || !conn.out.is_empty() || state.seq + batch > limit {
            if let Some(since) = state.waiting_since.take() {
                state.waited += since.elapsed();
            }
            return;
        }
        let ahead = state.seq + batch - progress.min(state.seq);
        let unanswered = state.pings - conn.pongs.saturating_sub(1);
        if ahead > window || unanswered >= WINDOW_BATCHES {
            state.waiting_since.get_or_insert_with(Instant::now);
            return;
        }
        if let Some(since) = state.waiting_since.take() {
            state.waited += since.elapsed();
        }
        for _ in 0..batch {
            self.template.put(&mut conn.out, p as u32, state.seq, 0);
            state.seq += 1;
        }
        Blipmq::put_ping(&mut conn.out);
        state.pings += 1;
    }
}
