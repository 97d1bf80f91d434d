//! The afpacket backend end to end: `blipmqd --backend afpacket` in one
//! network namespace owning 198.18.X.2 in user space, clients with kernel
//! TCP in another, joined by a veth pair (see `netns/mod.rs`).
//!
//! Each test needs root and `ip netns`; without them it prints why and
//! passes (skips), except under CI=true, where it fails.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blipmq_client::{Client, Options};
use common::netns::Lab;
use common::{Broker, Next, Raw, AFPACKET_PORT as PORT};

/// Every test finishes well within this, or fails.
const TEST_LIMIT: Duration = Duration::from_secs(30);

/// The afpacket broker every test here starts: a fresh lab, 1 or more
/// workers, the test's `extra` config; None (skipped) without a lab.
fn start(workers: usize, extra: &str) -> Option<Broker> {
    let lab = Lab::new()?;
    let config = format!("[server]\ndrain_timeout = \"2s\"\npin_workers = false\n{extra}");
    Some(Broker::start_in_lab(lab, workers, &config))
}

/// SIGTERM; the broker must exit cleanly within 10 s.
fn stop(broker: Broker) {
    let status = broker.terminate_within(Duration::from_secs(10));
    assert!(status.success(), "blipmqd exited with {status}");
}

/// Runs `body` with a fresh lab and broker, within [`TEST_LIMIT`]; skips
/// when the lab is unavailable.
fn with_broker(extra_config: &str, body: impl FnOnce(SocketAddr) + Send + 'static) {
    with_workers(1, extra_config, body)
}

fn with_workers(
    workers: usize,
    extra_config: &str,
    body: impl FnOnce(SocketAddr) + Send + 'static,
) {
    let Some(broker) = start(workers, extra_config) else {
        return;
    };
    let addr = broker.addr();
    let started = Instant::now();
    let handle = lab(&broker).spawn_in_client(move || body(addr));
    while !handle.is_finished() {
        assert!(
            started.elapsed() < TEST_LIMIT,
            "the test did not finish within {TEST_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
    stop(broker);
}

fn lab(broker: &Broker) -> &Lab {
    broker.lab().expect("an afpacket broker runs in a lab")
}

fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

#[test]
fn handshake_subscribe_publish_receive() {
    with_broker("", |addr| {
        let mut sub = Raw::handshake(addr);
        assert!(!sub.info.server_id.is_empty());
        sub.subscribe("lab.greeting", 7);
        let mut publisher = Raw::handshake(addr);
        publisher.publish_ack("lab.greeting", b"hello over veth");
        let msg = sub.read_frame();
        let text = format!("{msg:?}");
        assert!(
            text.contains("sid=7") && text.contains("hello over veth"),
            "{text}"
        );
        sub.ping_pong();
        publisher.ping_pong();
    });
}

#[test]
fn request_reply() {
    with_broker("", |addr| {
        let responder = Client::connect_with(addr, options()).expect("responder connects");
        let service = responder.subscribe("svc.echo").expect("subscribe");
        let server = std::thread::spawn(move || {
            for _ in 0..20 {
                let request = service
                    .recv_timeout(Duration::from_secs(5))
                    .expect("a request");
                let reply = request.reply.expect("a reply subject");
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(&request.payload);
                responder.publish(&reply, &answer).expect("reply");
            }
            responder
        });
        let requester = Client::connect_with(addr, options()).expect("requester connects");
        let started = Instant::now();
        for i in 0..20 {
            let body = format!("req-{i}");
            let reply = requester
                .request("svc.echo", body.as_bytes(), Duration::from_secs(5))
                .expect("a reply");
            assert_eq!(&reply.payload[..], format!("echo:{body}").as_bytes());
        }
        eprintln!(
            "afpacket request/reply through the broker: {:.2?} per round trip",
            started.elapsed() / 20
        );
        let responder = server.join().expect("responder thread");
        requester.close().expect("close requester");
        responder.close().expect("close responder");
    });
}

#[test]
fn thousand_messages_in_order() {
    with_broker("", |addr| {
        let subscriber = Client::connect_with(addr, options()).expect("connect");
        let sub = subscriber.subscribe("seq.>").expect("subscribe");
        let publisher = Client::connect_with(addr, options()).expect("connect");
        for i in 0..1000u32 {
            publisher
                .publish("seq.n", &i.to_be_bytes())
                .expect("publish");
        }
        publisher.flush().expect("flush");
        for i in 0..1000u32 {
            let msg = sub
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
            assert_eq!(
                &msg.payload[..],
                &i.to_be_bytes(),
                "message {i} out of order"
            );
        }
        publisher.close().expect("close");
        subscriber.close().expect("close");
    });
}

#[test]
fn one_mib_payload() {
    with_broker("[limits]\nmax_payload = 1048576\n", |addr| {
        let subscriber = Client::connect_with(addr, options()).expect("connect");
        let sub = subscriber.subscribe("big").expect("subscribe");
        let publisher = Client::connect_with(addr, options()).expect("connect");
        let payload: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for round in 0..3 {
            publisher
                .publish_acked("big", &payload)
                .expect("publish 1 MiB");
            let msg = sub
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(msg.payload.len(), payload.len());
            assert!(
                msg.payload[..] == payload[..],
                "round {round}: payload differs"
            );
        }
        publisher.close().expect("close");
        subscriber.close().expect("close");
    });
}

#[test]
fn close_and_reconnect() {
    with_broker("", |addr| {
        for round in 0..5 {
            let mut raw = Raw::handshake(addr);
            raw.subscribe("again", 1);
            raw.publish("again", format!("round {round}").as_bytes());
            let msg = format!("{:?}", raw.read_frame());
            assert!(msg.contains(&format!("round {round}")), "{msg}");
            raw.ping_pong();
            // An abrupt close: the broker must notice and free the slot.
            drop(raw);
        }
        // A graceful DISCONNECT, then a fresh connection works.
        let client = Client::connect_with(addr, options()).expect("connect");
        client.flush().expect("flush");
        client.close().expect("close");
        let mut raw = Raw::handshake(addr);
        raw.ping_pong();
        // Half-close: the broker flushes and closes its side.
        raw.shutdown_write();
        match raw.next_frame(Duration::from_secs(5)) {
            Next::Closed => {}
            other => panic!("expected the broker to close after our FIN, got {other:?}"),
        }
    });
}

#[test]
fn burst_of_connections() {
    with_broker("", |addr| {
        // More simultaneous connects than listening sockets (64): the pool
        // is topped up while the burst of SYNs is received, none is refused.
        let handles: Vec<_> = (0..150)
            .map(|_| std::thread::spawn(move || Raw::handshake(addr)))
            .collect();
        let mut conns: Vec<Raw> = handles
            .into_iter()
            .map(|h| h.join().expect("connect"))
            .collect();
        for conn in &mut conns {
            conn.ping_pong();
        }
    });
}

/// 1 publisher → 1 subscriber across the veth with one worker: prints
/// messages per second (bounded: 1,000,000 messages or 10 s).
#[test]
fn throughput_one_to_one() {
    with_broker("", |addr| {
        const COUNT: u32 = 1_000_000;
        let subscriber = Client::connect_with(addr, options()).expect("connect");
        let sub = subscriber.subscribe("bench").expect("subscribe");
        let publisher = Client::connect_with(addr, options()).expect("connect");
        let payload = [0x5au8; 64];
        let started = Instant::now();
        let limit = Duration::from_secs(10);
        let producer = std::thread::spawn(move || {
            let mut sent = 0u32;
            while sent < COUNT && started.elapsed() < limit {
                publisher.publish("bench", &payload).expect("publish");
                sent += 1;
            }
            publisher.flush().expect("flush");
            (publisher, sent)
        });
        let mut received = 0u32;
        while received < COUNT {
            match sub.recv_timeout(Duration::from_secs(5)) {
                Ok(_) => received += 1,
                Err(_) => break,
            }
            if started.elapsed() > limit + Duration::from_secs(5) {
                break;
            }
        }
        let elapsed = started.elapsed();
        let (publisher, sent) = producer.join().expect("producer");
        eprintln!(
            "afpacket 1 pub -> 1 sub, 64 B payloads, 1 worker: sent {sent}, received {received} in {:.2?} = {:.0} msgs/s",
            elapsed,
            f64::from(received) / elapsed.as_secs_f64()
        );
        assert_eq!(received, sent, "messages lost");
        publisher.close().expect("close");
        subscriber.close().expect("close");
    });
}

/// SIGTERM drains: a connected client gets DISCONNECT, then the close, and
/// the broker exits cleanly.
#[test]
fn shutdown_drains_clients() {
    let Some(mut broker) = start(1, "") else {
        return;
    };
    let addr = broker.addr();
    let (ready_tx, ready_rx) = mpsc::channel();
    let client = lab(&broker).spawn_in_client(move || {
        let mut raw = Raw::handshake(addr);
        raw.subscribe("drain", 1);
        ready_tx.send(()).unwrap();
        let frame = raw.read_frame_within(Duration::from_secs(10));
        assert!(
            matches!(
                frame.parse(),
                blipmq_protocol::ServerFrame::Disconnect { .. }
            ),
            "expected DISCONNECT, got {frame:?}"
        );
        match raw.next_frame(Duration::from_secs(10)) {
            Next::Closed => {}
            other => panic!("expected the close after DISCONNECT, got {other:?}"),
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the client connected");
    // The lab (owned by the broker) outlives the client thread.
    broker.send_sigterm();
    let status = broker.wait_exit(Duration::from_secs(10));
    if let Err(panic) = client.join() {
        std::panic::resume_unwind(panic);
    }
    let status = status.expect("blipmqd did not exit within 10 s of SIGTERM");
    assert!(status.success(), "blipmqd exited with {status}");
}

/// `poll = "busy"`: the worker spins instead of sleeping; same results.
#[test]
fn busy_poll_strategy() {
    with_broker("[afpacket]\npoll = \"busy\"\n", |addr| {
        let mut sub = Raw::handshake(addr);
        sub.subscribe("busy.>", 9);
        let mut publisher = Raw::handshake(addr);
        for i in 0..100u32 {
            publisher.publish("busy.n", &i.to_be_bytes());
        }
        publisher.ping_pong();
        for i in 0..100u32 {
            let frame = sub.read_frame();
            match frame.parse() {
                blipmq_protocol::ServerFrame::Message { payload, .. } => {
                    assert_eq!(payload, &i.to_be_bytes(), "message {i}")
                }
                _ => panic!("expected message {i}, got {frame:?}"),
            }
        }
    });
}

/// Two workers on one interface through PACKET_FANOUT_HASH: connections
/// land on both, and messages cross between them (the rings).
#[test]
fn two_workers_fanout() {
    with_workers(2, "", |addr| {
        let mut on0 = Raw::handshake_on_worker(addr, 0);
        let mut on1 = Raw::handshake_on_worker(addr, 1);
        on0.subscribe("cross.a", 1);
        on1.subscribe("cross.b", 2);
        on1.publish_ack("cross.a", b"from worker 1");
        let got0 = format!("{:?}", on0.read_frame());
        assert!(got0.contains("from worker 1"), "{got0}");
        on0.publish_ack("cross.b", b"from worker 0");
        let got1 = format!("{:?}", on1.read_frame());
        assert!(got1.contains("from worker 0"), "{got1}");
        // Many connections at once: each is served by the worker its flow
        // hashes to, and ARP learned by all workers.
        let mut conns: Vec<Raw> = (0..16).map(|_| Raw::handshake(addr)).collect();
        let mut workers = [0usize; 2];
        for conn in &mut conns {
            workers[conn.worker() as usize] += 1;
            conn.ping_pong();
        }
        eprintln!("16 connections over 2 afpacket workers: {workers:?}");
        // 1,000 messages in order from a worker-1 publisher to a worker-0
        // subscriber.
        on0.subscribe("order", 3);
        for i in 0..1000u32 {
            on1.publish("order", &i.to_be_bytes());
        }
        on1.ping_pong();
        for i in 0..1000u32 {
            let frame = on0.read_frame();
            match frame.parse() {
                blipmq_protocol::ServerFrame::Message { payload, .. } => {
                    assert_eq!(payload, &i.to_be_bytes(), "message {i}")
                }
                _ => panic!("expected message {i}, got {frame:?}"),
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Checksums: corrupt frames are never accepted
// ---------------------------------------------------------------------------

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    sum
}

/// A broadcast Ethernet frame carrying a TCP SYN from `src:sport` to
/// `dst:dport`, with correct checksums.
fn syn_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = 14;
    f[ip] = 0x45;
    f[ip + 2..ip + 4].copy_from_slice(&40u16.to_be_bytes());
    f[ip + 8] = 64;
    f[ip + 9] = 6;
    f[ip + 12..ip + 16].copy_from_slice(&src);
    f[ip + 16..ip + 20].copy_from_slice(&dst);
    let ip_sum = !fold(sum16(0, &f[ip..ip + 20]));
    f[ip + 10..ip + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp = ip + 20;
    f[tcp..tcp + 2].copy_from_slice(&sport.to_be_bytes());
    f[tcp + 2..tcp + 4].copy_from_slice(&dport.to_be_bytes());
    f[tcp + 4..tcp + 8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    f[tcp + 12] = 0x50;
    f[tcp + 13] = 0x02; // SYN
    f[tcp + 14..tcp + 16].copy_from_slice(&65535u16.to_be_bytes());
    let pseudo = sum16(0, &f[ip + 12..ip + 20]) + 6 + 20;
    let tcp_sum = !fold(sum16(pseudo, &f[tcp..]));
    f[tcp + 16..tcp + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    f
}

/// A raw packet socket on `interface` (in the calling thread's namespace).
struct RawLink {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl RawLink {
    fn open(interface: &str) -> RawLink {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(interface).unwrap();
        // SAFETY: `name` is a NUL-terminated string, live for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {interface}");
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_IP as u16).to_be() as i32,
            )
        };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor (checked valid) that nothing
        // else owns or closes.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let link = RawLink { fd, ifindex };
        let addr = link.addr();
        // SAFETY: bind reads a `sockaddr_ll` of the size passed: `addr`,
        // live for the call.
        let rc = unsafe {
            libc::bind(
                raw,
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: SO_RCVTIMEO reads a `timeval` of the size passed:
        // `timeout`, live for the call.
        unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        link
    }

    fn addr(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is integers and byte arrays: all zeroes is a
        // valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        addr
    }

    fn send(&self, frame: &[u8]) {
        use std::os::fd::AsRawFd;
        // SAFETY: send reads `frame.len()` bytes from `frame`, live for the
        // call.
        let rc = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            rc,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Whether a SYN-ACK from port `from` to port `to` arrives within `wait`.
    fn saw_syn_ack(&self, from: u16, to: u16, wait: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`,
            // live and writable for the call.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 54 {
                continue;
            }
            let f = &buf[..n as usize];
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let tcp = 14 + ihl;
            if f[23] == 6
                && f.len() >= tcp + 14
                && u16::from_be_bytes([f[tcp], f[tcp + 1]]) == from
                && u16::from_be_bytes([f[tcp + 2], f[tcp + 3]]) == to
                && f[tcp + 13] & 0x12 == 0x12
            {
                return true;
            }
        }
        false
    }
}

#[test]
fn corrupt_checksums_are_dropped() {
    let Some(broker) = start(1, "") else { return };
    let lab = lab(&broker);
    let client_if = lab.client_if.clone();
    let src = lab.client_ip.octets();
    let dst = lab.broker_ip.octets();
    lab.in_client(move || {
        let link = RawLink::open(&client_if);
        let wait = Duration::from_millis(500);
        // A TCP checksum off by one bit: no answer.
        let mut bad_tcp = syn_frame(src, dst, 40001, PORT);
        bad_tcp[14 + 20 + 16] ^= 0x01;
        link.send(&bad_tcp);
        assert!(
            !link.saw_syn_ack(PORT, 40001, wait),
            "SYN with a bad TCP checksum was answered"
        );
        // A corrupt IPv4 header checksum: no answer.
        let mut bad_ip = syn_frame(src, dst, 40002, PORT);
        bad_ip[14 + 10] ^= 0x80;
        link.send(&bad_ip);
        assert!(
            !link.saw_syn_ack(PORT, 40002, wait),
            "SYN with a bad IP checksum was answered"
        );
        // A payload bit flipped after the checksum was computed.
        let mut flipped = syn_frame(src, dst, 40003, PORT);
        flipped[14 + 20 + 4] ^= 0x10;
        link.send(&flipped);
        assert!(
            !link.saw_syn_ack(PORT, 40003, wait),
            "a corrupted SYN was answered"
        );
        // The same SYN intact (software-checked: a packet socket sends full
        // checksums, not partial ones) is answered.
        link.send(&syn_frame(src, dst, 40004, PORT));
        assert!(
            link.saw_syn_ack(PORT, 40004, Duration::from_secs(3)),
            "an intact SYN was not answered"
        );
    });
    stop(broker);
}
