//! Fault and abuse tests (issue 13), on every backend, each bounded in
//! time: clients that send one byte at a time (slowloris), connections
//! reset in the middle of a frame, TLS handshakes that stop midway, peers
//! that vanish without a FIN (half-open), a publisher flooding next to a
//! healthy pair, and the broker's memory through all of it at once.
//!
//! Each test keeps a healthy pair exchanging numbered messages
//! ([`Exchange`]) while it abuses the broker: a lost, reordered or late
//! message fails it. The counters come from the broker's stats file.
//! limits.rs, robustness.rs and tls.rs cover the rest of the issue (idle
//! floods, rates, per-IP limits, garbage, non-readers, bad TLS records).

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_dataplane::stats::{Counter, Snapshot, StatsReader};
use blipmq_protocol::encode;
use common::pki::Pki;
use common::*;

for_backends! {
    workers: [
        slowloris_is_cut_at_auth_timeout_and_a_slow_publisher_is_kept,
        resets_in_the_middle_of_a_frame_leave_nothing_behind,
        a_tls_handshake_stalled_midway_is_cut_at_auth_timeout,
        half_open_connections_are_closed_by_the_ping_timer,
        a_flooding_publisher_does_not_starve_a_pair_on_its_worker,
        memory_stays_bounded_through_combined_abuse,
    ],
    two_workers: [],
}

// ---------------------------------------------------------------------------
// A broker whose counters the test reads
// ---------------------------------------------------------------------------

static STATS_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A broker with a stats file, read the way `blipmqctl stats --file` does.
struct Watched {
    broker: Broker,
    stats: StatsReader,
    path: PathBuf,
}

impl Watched {
    /// [`Broker::start_for`] with `[control] stats_file` added to the
    /// configuration (which must not have a `[control]` table).
    fn start(backend: Backend, workers: usize, config: impl FnOnce(IpAddr) -> String) -> Watched {
        let path = std::env::temp_dir().join(format!(
            "blipmq-abuse-{}-{}.stats",
            std::process::id(),
            STATS_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let control = format!(
            "\n[control]\nstats_file = {:?}\n",
            path.display().to_string()
        );
        let broker = Broker::start_for(backend, workers, |ip| config(ip) + &control);
        let stats = StatsReader::open(&path).expect("the broker maps its stats file");
        Watched {
            broker,
            stats,
            path,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.broker.addr()
    }

    fn total(&self, counter: Counter) -> u64 {
        self.stats.snapshot().total(counter)
    }

    /// The counters once `done` holds of them; panics after `within`.
    /// Workers store their counters as they go, with relaxed atomics:
    /// there is no event to wait on, so this polls.
    fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + within;
        loop {
            let snapshot = self.stats.snapshot();
            if done(&snapshot) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; connections_open {}, counters {:?}",
                snapshot.total(Counter::ConnectionsOpen),
                Counter::ALL
                    .iter()
                    .map(|&c| (c.name(), snapshot.total(c)))
                    .filter(|&(_, v)| v > 0)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until exactly `n` connections are open.
    fn wait_open(&self, n: u64, within: Duration) {
        self.wait_for(&format!("{n} connections open"), within, |s| {
            s.total(Counter::ConnectionsOpen) == n
        });
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Raw byte streams
// ---------------------------------------------------------------------------

/// How a connection fed one byte at a time ended.
struct Dripped {
    /// Everything the broker sent meanwhile.
    received: Vec<u8>,
    /// When the broker closed it, since the `started` given to [`drip`];
    /// `None` if it was still open after the last byte.
    closed_after: Option<Duration>,
}

/// Writes `bytes` one at a time, `every` apart, reading what the broker
/// sends in between; stops early when the broker closes the connection.
fn drip(stream: &mut TcpStream, bytes: &[u8], every: Duration, started: Instant) -> Dripped {
    stream.set_nodelay(true).unwrap();
    let mut received = Vec::new();
    let closed = |received| Dripped {
        received,
        closed_after: Some(started.elapsed()),
    };
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            return closed(received);
        }
        // The pause between two bytes is spent reading.
        let next = Instant::now() + every;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return closed(received),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return closed(received),
            }
        }
    }
    Dripped {
        received,
        closed_after: None,
    }
}

/// Reads until `stream` ends (EOF or reset) or `deadline`; returns what it
/// read, or what was read by the deadline as the error.
fn read_to_close(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, Vec<u8>> {
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(received);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(received),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(received),
        }
    }
}

/// Reads until what was read ends with `end`, within [`TIMEOUT`].
fn read_until(stream: &mut TcpStream, end: &[u8]) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut text = Vec::new();
    while !text.ends_with(end) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {:?} within {TIMEOUT:?}: {:?}",
            String::from_utf8_lossy(end),
            String::from_utf8_lossy(&text)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => text.push(byte[0]),
            Ok(_) => panic!(
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(end),
                String::from_utf8_lossy(&text)
            ),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ),
                "reading: {e}"
            ),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// A NATS connection past CONNECT and a PING/PONG.
fn nats_connected(addr: SocketAddr) -> TcpStream {
    let mut stream = tcp_connect(addr, TIMEOUT).expect("NATS connect");
    read_until(&mut stream, b"\r\n");
    stream
        .write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .unwrap();
    read_until(&mut stream, b"PONG\r\n");
    stream
}

/// Closes with an RST: SO_LINGER 0, then close.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

// ---------------------------------------------------------------------------
// 1. Slowloris
// ---------------------------------------------------------------------------

/// Clients that send their CONNECT one byte every 150 ms are closed at
/// `auth.timeout` (1 s) with ERROR 401 / -ERR 'Authentication Timeout';
/// clients that connected and then send a message one byte every 80 ms are
/// kept, and the message is delivered once complete; a healthy pair goes on
/// throughout.
fn slowloris_is_cut_at_auth_timeout_and_a_slow_publisher_is_kept(backend: Backend, workers: usize) {
    const AUTH_TIMEOUT: Duration = Duration::from_secs(1);
    const CUT_EVERY: Duration = Duration::from_millis(150);
    const KEPT_EVERY: Duration = Duration::from_millis(80);
    let config = format!("{}[auth]\ntimeout = \"1s\"\n", nats_config(backend));
    let broker = Broker::start_on(backend, workers, &config);
    let (addr, nats_addr) = (broker.addr(), broker.nats_addr());
    let exchange = Exchange::start(addr);
    let mut subscriber = Raw::handshake(addr);
    subscriber.subscribe("slow.>", 1);

    let started = Instant::now();
    let mut binary_connect = Raw::connect(addr).into_stream();
    let mut nats_connect = tcp_connect(nats_addr, TIMEOUT).expect("NATS connect");
    let mut binary_publish = Raw::handshake(addr).into_stream();
    let mut nats_publish = nats_connected(nats_addr);
    let connect_frame = connect_bytes(r#"{"protocol":1}"#);
    let publish_frame = build(|b| encode::put_publish(b, b"slow.binary", None, b"dripped", false));
    let (binary_cut, nats_cut, binary_kept, nats_kept) = std::thread::scope(|s| {
        let binary_cut = s.spawn(|| drip(&mut binary_connect, &connect_frame, CUT_EVERY, started));
        let nats_cut = s.spawn(|| {
            drip(
                &mut nats_connect,
                b"CONNECT {\"verbose\":false}\r\n",
                CUT_EVERY,
                started,
            )
        });
        let binary_kept =
            s.spawn(|| drip(&mut binary_publish, &publish_frame, KEPT_EVERY, started));
        let nats_kept = s.spawn(|| {
            drip(
                &mut nats_publish,
                b"PUB slow.nats 7\r\ndripped\r\n",
                KEPT_EVERY,
                started,
            )
        });
        (
            binary_cut.join().unwrap(),
            nats_cut.join().unwrap(),
            binary_kept.join().unwrap(),
            nats_kept.join().unwrap(),
        )
    });

    for (name, cut) in [("binary", &binary_cut), ("NATS", &nats_cut)] {
        let closed = cut
            .closed_after
            .unwrap_or_else(|| panic!("{name}: a CONNECT dripped over 3 s was never cut"));
        assert!(
            closed >= AUTH_TIMEOUT - Duration::from_millis(50)
                && closed < AUTH_TIMEOUT + Duration::from_secs(1),
            "{name}: closed after {closed:?} for auth.timeout {AUTH_TIMEOUT:?}"
        );
    }
    assert_eq!(
        last_error(&binary_cut.received),
        Some((401, HANDSHAKE_TIMEOUT.to_string())),
        "binary: {:02x?}",
        binary_cut.received
    );
    let nats_text = String::from_utf8_lossy(&nats_cut.received);
    assert!(
        nats_text.starts_with("INFO {")
            && nats_text.ends_with("\r\n-ERR 'Authentication Timeout'\r\n"),
        "NATS: {nats_text:?}"
    );
    for (name, kept) in [("binary", &binary_kept), ("NATS", &nats_kept)] {
        assert!(
            kept.closed_after.is_none(),
            "{name}: a connected client sending one byte every 80 ms was closed after {:?}: {:?}",
            kept.closed_after,
            String::from_utf8_lossy(&kept.received)
        );
    }
    let mut subjects: Vec<(String, Vec<u8>)> = subscriber
        .read_msgs(2)
        .into_iter()
        .map(|m| (m.subject, m.payload))
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            ("slow.binary".to_string(), b"dripped".to_vec()),
            ("slow.nats".to_string(), b"dripped".to_vec())
        ]
    );
    // Both slow publishers are still served.
    Raw::wrap_stream(binary_publish).ping_pong();
    nats_publish.write_all(b"PING\r\n").unwrap();
    read_until(&mut nats_publish, b"PONG\r\n");
    let exchanged = exchange.finish();
    assert!(exchanged.round_trips > 0, "{exchanged:?}");
}

// ---------------------------------------------------------------------------
// 2. Resets in the middle of a frame
// ---------------------------------------------------------------------------

/// Connections that send half a frame and reset (SO_LINGER 0): half a
/// PUBLISH after CONNECT, half a NATS `PUB` payload, half a CONNECT. The
/// broker's connection count returns to what it was, the subscriber of the
/// cut messages gets none of them, a healthy pair goes on, and new clients
/// are served.
fn resets_in_the_middle_of_a_frame_leave_nothing_behind(backend: Backend, workers: usize) {
    const EACH: usize = 30;
    let watched = Watched::start(backend, workers, |_| {
        format!("{}[server]\ndrain_timeout = \"1s\"\n", nats_config(backend))
    });
    let (addr, nats_addr) = (watched.addr(), watched.broker.nats_addr());
    let mut subscriber = Raw::handshake(addr);
    subscriber.subscribe("reset.>", 1);
    let exchange = Exchange::start(addr);
    watched.wait_open(3, TIMEOUT);
    let accepted = watched.total(Counter::ConnectionsAccepted);

    let mut half_publish = ping_bytes();
    let publish = build(|b| encode::put_publish(b, b"reset.binary", None, &[b'p'; 100], false));
    half_publish.extend_from_slice(&publish[..publish.len() / 2]);
    let connect = connect_bytes(r#"{"protocol":1}"#);
    let half_connect = connect[..connect.len() / 2].to_vec();
    for i in 0..3 * EACH {
        let stream = match i % 3 {
            // A PING first: its PONG shows the broker has read this far.
            0 => {
                let mut raw = Raw::handshake(addr);
                raw.send(&half_publish);
                raw.expect_pong();
                raw.into_stream()
            }
            1 => {
                let mut stream = nats_connected(nats_addr);
                let mut half = b"PING\r\nPUB reset.nats 100\r\n".to_vec();
                half.extend_from_slice(&[b'p'; 50]);
                stream.write_all(&half).unwrap();
                read_until(&mut stream, b"PONG\r\n");
                stream
            }
            _ => {
                let mut raw = Raw::connect(addr);
                raw.send(&half_connect);
                raw.into_stream()
            }
        };
        reset(stream);
    }
    watched.wait_for("every reset connection accepted", TIMEOUT, |s| {
        s.total(Counter::ConnectionsAccepted) >= accepted + 3 * EACH as u64
    });
    watched.wait_open(3, TIMEOUT);

    // Nothing of the cut messages went out: the next message is this one.
    let mut publisher = Raw::handshake(addr);
    publisher.publish("reset.binary", b"whole");
    publisher.ping_pong();
    let m = subscriber.expect_msg();
    assert_eq!(
        (m.subject.as_str(), m.payload.as_slice()),
        ("reset.binary", &b"whole"[..])
    );
    subscriber.ping_pong();
    let exchanged = exchange.finish();
    assert!(exchanged.round_trips > 0, "{exchanged:?}");
    assert_serves_fresh_client(addr);
}

// ---------------------------------------------------------------------------
// 3. A TLS handshake that stops midway
// ---------------------------------------------------------------------------

/// The first flight of a TLS client: its ClientHello record.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).unwrap();
    }
    hello
}

/// On a TLS broker (auth.timeout 1 s), clients that send a whole
/// ClientHello, half of one, or a record header, and then nothing (on
/// either listener), are closed at auth.timeout and counted as handshake
/// timeouts; a TLS client that completes gets in.
fn a_tls_handshake_stalled_midway_is_cut_at_auth_timeout(backend: Backend, workers: usize) {
    const AUTH_TIMEOUT: Duration = Duration::from_secs(1);
    let mut pki = None;
    let watched = Watched::start(backend, workers, |ip| {
        let made = Pki::new(&format!("abuse-stall-{backend:?}-{workers}"), ip);
        let config = format!(
            "{}{}[auth]\ntimeout = \"1s\"\n",
            nats_config(backend),
            made.tls_config("")
        );
        pki = Some(made);
        config
    });
    let pki = pki.expect("the certificates were made");
    let (addr, nats_addr) = (watched.addr(), watched.broker.nats_addr());
    let hello = client_hello();
    let stalls: [(&str, SocketAddr, &[u8]); 4] = [
        ("binary, whole ClientHello", addr, &hello),
        (
            "binary, half a ClientHello",
            addr,
            &hello[..hello.len() / 2],
        ),
        ("binary, a record header", addr, &hello[..5]),
        (
            "NATS, half a ClientHello",
            nats_addr,
            &hello[..hello.len() / 2],
        ),
    ];
    let mut stalled: Vec<(&str, Instant, TcpStream)> = stalls
        .iter()
        .map(|&(name, to, bytes)| {
            let opened = Instant::now();
            let mut stream = tcp_connect(to, TIMEOUT).expect("connect");
            if to == nats_addr {
                read_until(&mut stream, b"\r\n"); // INFO, in the clear
            }
            stream.write_all(bytes).unwrap();
            (name, opened, stream)
        })
        .collect();
    for (name, opened, stream) in stalled.iter_mut() {
        let deadline = *opened + AUTH_TIMEOUT + Duration::from_secs(1);
        if let Err(read) = read_to_close(stream, deadline) {
            panic!(
                "{name}: still open {:?} after it opened ({} bytes from the broker)",
                opened.elapsed(),
                read.len()
            );
        }
        let closed = opened.elapsed();
        assert!(
            closed >= AUTH_TIMEOUT - Duration::from_millis(50),
            "{name}: closed after {closed:?}, before auth.timeout {AUTH_TIMEOUT:?}"
        );
    }
    watched.wait_for("4 handshake timeouts", TIMEOUT, |s| {
        s.total(Counter::HandshakeTimeouts) == 4
    });
    assert_eq!(watched.total(Counter::TlsHandshakes), 0);

    let mut good = Raw::connect_tls(addr, &pki.ca(), None).expect("a TLS client gets in");
    good.do_connect(r#"{"protocol":1}"#);
    good.ping_pong();
    watched.wait_for("the good client's TLS handshake", TIMEOUT, |s| {
        s.total(Counter::TlsHandshakes) == 1
    });
}

// ---------------------------------------------------------------------------
// 4. Half-open connections
// ---------------------------------------------------------------------------

/// Connections whose peer vanishes without a FIN are closed by the ping
/// timer. The clients connect from an address of their own in the client
/// namespace; taking that address away silences them both ways (their
/// kernel can send nothing from it, and drops what the broker sends to
/// it). The kernel broker runs in a lab's client namespace for this, so
/// that the host's loopback is not touched.
fn half_open_connections_are_closed_by_the_ping_timer(backend: Backend, workers: usize) {
    match backend {
        Backend::Kernel => {
            // Skips (or fails under CI=true) without root and namespaces.
            let Some(lab) = common::netns::Lab::new() else {
                return;
            };
            let link = ClientLink::of(&lab);
            lab.in_client(move || half_open(backend, workers, Some(link)));
        }
        _ => half_open(backend, workers, None),
    }
}

/// Where the vanishing clients live: the client namespace, its link, and
/// an address for them on that link.
#[derive(Clone)]
struct ClientLink {
    namespace: String,
    interface: String,
    address: Ipv4Addr,
}

impl ClientLink {
    fn of(lab: &common::netns::Lab) -> ClientLink {
        let [a, b, c, _] = lab.client_ip.octets();
        ClientLink {
            namespace: lab.client_ns.clone(),
            interface: lab.client_if.clone(),
            address: Ipv4Addr::new(a, b, c, 200),
        }
    }

    fn address(&self, action: &str) {
        let cidr = format!("{}/32", self.address);
        common::netns::ip(&[
            "-n",
            &self.namespace,
            "addr",
            action,
            &cidr,
            "dev",
            &self.interface,
        ])
        .unwrap_or_else(|why| panic!("{why}"));
    }
}

fn half_open(backend: Backend, workers: usize, link: Option<ClientLink>) {
    const VANISHING: u64 = 20;
    const PING_INTERVAL: Duration = Duration::from_millis(300);
    let watched = Watched::start(backend, workers, |_| {
        "[server]\nping_interval = \"300ms\"\nmax_pings_out = 2\ndrain_timeout = \"1s\"\n".into()
    });
    let addr = watched.addr();
    let link = link.unwrap_or_else(|| ClientLink::of(watched.broker.lab().expect("a lab")));
    let exchange = Exchange::start(addr);
    watched.wait_open(2, TIMEOUT);
    link.address("add");
    let source = SocketAddr::from((link.address, 0));
    let vanishing: Vec<Raw> = as_client_of(addr, move || {
        (0..VANISHING)
            .map(|_| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .expect("socket");
                socket
                    .bind(&source.into())
                    .expect("bind the vanishing address");
                socket
                    .connect_timeout(&addr.into(), TIMEOUT)
                    .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
                let mut raw = Raw::from_stream(socket.into());
                raw.do_connect(r#"{"protocol":1}"#);
                raw
            })
            .collect()
    });
    watched.wait_open(2 + VANISHING, TIMEOUT);
    let stale_before = watched.total(Counter::ConnectionsClosedStale);

    let vanished = Instant::now();
    link.address("del");
    // Their FINs have nowhere to go now.
    drop(vanishing);
    watched.wait_open(2, Duration::from_secs(5));
    let closed_in = vanished.elapsed();
    let stale = watched.total(Counter::ConnectionsClosedStale) - stale_before;
    eprintln!("{VANISHING} half-open connections closed {closed_in:?} after their peers vanished");
    assert_eq!(stale, VANISHING, "closed as stale");
    assert!(
        closed_in >= PING_INTERVAL,
        "closed after {closed_in:?}, before a ping interval: not by the ping timer"
    );
    let exchanged = exchange.finish();
    assert!(exchanged.round_trips > 0, "{exchanged:?}");
}

// ---------------------------------------------------------------------------
// 5. A flooding publisher next to a healthy pair
// ---------------------------------------------------------------------------

/// Writes PUBLISH frames to `stream` as fast as it takes them until `stop`;
/// counts the bytes in `sent`. Frames are never cut: a write that times out
/// is resumed where it stopped.
fn flood(
    mut stream: TcpStream,
    subject: &[u8],
    payload: &[u8],
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> TcpStream {
    let mut batch = Vec::new();
    while batch.len() < 64 * 1024 {
        encode::put_publish(&mut batch, subject, None, payload, false);
    }
    stream
        .set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut at = 0;
    loop {
        match stream.write(&batch[at..]) {
            Ok(n) => {
                at = (at + n) % batch.len();
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("the flooding publisher was cut: {e}"),
        }
        // Only between whole batches, so that no frame is left cut.
        if at == 0 && stop.load(Ordering::Relaxed) {
            return stream;
        }
    }
}

/// Reads and drops whatever comes until `stop`.
fn drain(mut stream: TcpStream, stop: &AtomicBool) -> u64 {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut read = 0;
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => read += n as u64,
            Err(_) => {}
        }
    }
    read
}

/// One connection publishes as fast as it can (with no rate limit, then
/// with `max_msgs_per_sec` pacing it) to a subject a subscriber on another
/// worker drains, while a pair on the flooder's own worker exchanges
/// numbered messages: every round trip of the pair takes under 1 s and
/// none of its messages is lost.
fn a_flooding_publisher_does_not_starve_a_pair_on_its_worker(backend: Backend, workers: usize) {
    const FLOOD: Duration = Duration::from_millis(1500);
    for limits in ["", "max_msgs_per_sec = 20000\nrate_policy = \"pace\"\n"] {
        let broker = Broker::start_on(backend, workers, &format!("[limits]\n{limits}"));
        let addr = broker.addr();
        let mut drained = Raw::handshake_on_worker(addr, workers as u32 - 1);
        drained.subscribe("flood.>", 1);
        let flooder = Raw::handshake_on_worker(addr, 0);
        let exchange = Exchange::start_on(addr, Some(0));
        let stop = AtomicBool::new(false);
        let sent = AtomicU64::new(0);
        let (flooder, read, during) = std::thread::scope(|s| {
            let flooding = s.spawn(|| {
                flood(
                    flooder.into_stream(),
                    b"flood.x",
                    &[b'f'; 200],
                    &stop,
                    &sent,
                )
            });
            let draining = s.spawn(|| drain(drained.into_stream(), &stop));
            let before = exchange.round_trips();
            // The flood's length, not a wait for an event.
            std::thread::sleep(FLOOD);
            let during = exchange.round_trips() - before;
            stop.store(true, Ordering::Relaxed);
            (flooding.join().unwrap(), draining.join().unwrap(), during)
        });
        let exchanged = exchange.finish();
        let sent = sent.load(Ordering::Relaxed);
        eprintln!(
            "flood ({limits:?}): {sent} bytes sent, {read} drained; the pair: {during} round trips meanwhile, slowest {:?}",
            exchanged.slowest
        );
        assert!(
            exchanged.slowest < Duration::from_secs(1),
            "a round trip of the pair took {:?} next to the flood ({limits:?})",
            exchanged.slowest
        );
        assert!(during > 0, "no round trip during the flood ({limits:?})");
        assert!(
            sent > 0 && read > 0,
            "the flood did not flow: {sent} sent, {read} drained"
        );
        if limits.is_empty() {
            // Not cut: what it sent is taken, and it still answers.
            Raw::wrap_stream(flooder).ping_pong();
        }
    }
}

// ---------------------------------------------------------------------------
// 6. Memory through combined abuse
// ---------------------------------------------------------------------------

/// Samples a process's resident memory until stopped; returns the peak.
fn peak_rss_kib(pid: u32, stop: &AtomicBool) -> u64 {
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        peak = peak.max(broker_rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    peak.max(broker_rss_kib(pid))
}

/// The abusers of one round of [`memory_stays_bounded_through_combined_abuse`].
const IDLE: usize = 500;
const SLOW: usize = 20;
const NON_READERS: usize = 4;
const FLOOD: Duration = Duration::from_millis(1500);

/// One round of combined abuse, from start until every abuser is gone
/// (only the healthy pair is left); returns the bytes flooded.
fn abuse_round(watched: &Watched, workers: usize) -> u64 {
    let addr = watched.addr();
    let idle: Vec<TcpStream> = as_client_of(addr, move || {
        (0..IDLE)
            .map(|i| {
                TcpStream::connect_timeout(&addr, TIMEOUT)
                    .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
            })
            .collect()
    });
    let non_readers: Vec<Raw> = (0..NON_READERS)
        .map(|i| {
            let w = (i % workers) as u32;
            let mut raw = small_rcvbuf_handshake_on_worker(addr, 4096, Some(w));
            raw.subscribe("abuse.>", 1);
            raw
        })
        .collect();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| Raw::connect(addr).into_stream())
        .collect();
    let flooder = Raw::handshake(addr).into_stream();
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        let flooding = s.spawn(|| flood(flooder, b"abuse.flood", &[b'm'; 4000], &stop, &sent));
        let connect = connect_bytes(r#"{"protocol":1}"#);
        let flood_started = Instant::now();
        // The slowloris clients drip their CONNECT through the flood.
        for byte in connect.iter().cycle() {
            if flood_started.elapsed() >= FLOOD {
                break;
            }
            for stream in slow.iter_mut() {
                let _ = stream.write_all(std::slice::from_ref(byte));
            }
            std::thread::sleep(Duration::from_millis(100)); // the drip's pace
        }
        stop.store(true, Ordering::Relaxed);
        drop(flooding.join().unwrap());
    });
    drop((idle, non_readers, slow));
    watched.wait_open(2, Duration::from_secs(10));
    sent.into_inner()
}

/// Two rounds of everything at once: 500 idle connections, 20 slowloris
/// CONNECTs, 4 subscribers that never read (`max_pending_bytes` 4 MiB
/// each), and a publisher flooding them with 4 KiB messages, next to a
/// healthy pair. The broker's resident memory never grows by 64 MiB over
/// its baseline; after each round it is within 32 MiB of it, and the second
/// round adds less than 16 MiB to the first (nothing accumulates).
fn memory_stays_bounded_through_combined_abuse(backend: Backend, workers: usize) {
    const PEAK_BOUND_KIB: u64 = 64 * 1024;
    const AFTER_BOUND_KIB: u64 = 32 * 1024;
    const ROUND_GROWTH_KIB: u64 = 16 * 1024;
    raise_nofile();
    let watched = Watched::start(backend, workers, |_| {
        "[server]\ndrain_timeout = \"1s\"\n[auth]\ntimeout = \"1500ms\"\n\
         [limits]\nmax_payload = 4096\nmax_pending_bytes = 4194304\nslow_consumer_grace = \"200ms\"\n"
            .into()
    });
    let addr = watched.addr();
    let pid = watched.broker.pid();
    assert_serves_fresh_client(addr);
    let exchange = Exchange::start(addr);
    watched.wait_open(2, TIMEOUT);
    let baseline = broker_rss_kib(pid);

    let stop_sampling = AtomicBool::new(false);
    let (peak, flooded, after) = std::thread::scope(|s| {
        let sampler = s.spawn(|| peak_rss_kib(pid, &stop_sampling));
        let mut flooded = 0;
        let mut after = Vec::new();
        for _round in 0..2 {
            flooded += abuse_round(&watched, workers);
            after.push(broker_rss_kib(pid));
        }
        stop_sampling.store(true, Ordering::Relaxed);
        (sampler.join().unwrap(), flooded, after)
    });
    let exchanged = exchange.finish();
    eprintln!(
        "RSS: baseline {baseline} KiB, peak {peak} KiB, after each round {after:?} KiB; {flooded} bytes flooded; the pair: {exchanged:?}"
    );
    assert!(
        peak < baseline + PEAK_BOUND_KIB,
        "RSS peaked at {peak} KiB from a baseline of {baseline} KiB"
    );
    for (round, &rss) in after.iter().enumerate() {
        assert!(
            rss < baseline + AFTER_BOUND_KIB,
            "RSS {rss} KiB after round {round}, from a baseline of {baseline} KiB"
        );
    }
    assert!(
        after[1] < after[0] + ROUND_GROWTH_KIB,
        "RSS grew from {} to {} KiB with a second round of the same abuse",
        after[0],
        after[1]
    );
    assert!(
        watched.total(Counter::ConnectionsClosedSlowConsumer) >= 2 * NON_READERS as u64,
        "the non-readers were not cut as slow consumers"
    );
}
