//! The broker's [`Stack`] on one end of a link, a client host on the
//! other; the test plays the worker (binds what `take_established` hands
//! over, reads the connections `take_touched` reports, releases them).

use super::*;
use crate::backend::userspace::memory::MemoryConfig;
use crate::backend::userspace::transport::RX_BUDGET;
use crate::backend::userspace::Stack;
use crate::worker::ConnId;

/// The harness's own timer, as a worker's core has one: time never jumps
/// further than this.
const TICK: Duration = Duration::from_millis(100);

struct Net {
    seed: u64,
    start: Instant,
    now: Instant,
    stack: Stack,
    device: MemoryDevice,
    host: Host,
    /// The server's connections by id (in accept order); None once released.
    conns: Vec<Option<Stream>>,
    established: Vec<SocketHandle>,
    touched: Vec<ConnId>,
    /// Every id `take_touched` reported, for the tests to look at.
    reported: Vec<ConnId>,
}

impl Net {
    fn new(seed: u64, faults: Faults, tune: impl FnOnce(&mut StackConfig)) -> Net {
        Net::on_link(MemoryConfig::new(seed).with_faults(faults), tune)
    }

    /// The server's stack on end `a` of `link`.
    fn on_link(link: MemoryConfig, tune: impl FnOnce(&mut StackConfig)) -> Net {
        let seed = link.seed;
        let start = Instant::now();
        let (mut device, client) = MemoryDevice::pair(link);
        let mut config = stack_config(device.mac(), seed);
        tune(&mut config);
        let stack = Stack::new(config, &mut device, start);
        let host = Host::new(client, Ipv4Addr::new(10, 0, 0, 2), !seed, start, 64 << 10);
        Net {
            seed,
            start,
            now: start,
            stack,
            device,
            host,
            conns: Vec::new(),
            established: Vec::new(),
            touched: Vec::new(),
            reported: Vec::new(),
        }
    }

    /// Opens `count` connections at once and steps until all are
    /// established; returns their indices. A reset SYN fails: a TCP client
    /// does not retry a refused connection (its SYN retransmissions retry
    /// one that went unanswered).
    fn connect_all(&mut self, count: usize) -> Vec<usize> {
        let conns: Vec<usize> = (0..count).map(|_| self.host.connect()).collect();
        let accepted = self.conns.len() + count;
        let seed = self.seed;
        self.run_until("every connection established", 20_000, |net| {
            let mut all = true;
            for &c in &conns {
                match net.host.state(c) {
                    State::Established => {}
                    State::Closed => panic!("connection {c} was refused (seed {seed})"),
                    _ => all = false,
                }
            }
            all && net.conns.len() == accepted
        });
        conns
    }

    /// The client stops reading `conn` (server connection `cid`), the
    /// server sends more than the windows hold, and releases the
    /// connection once the client's window closed: its socket lingers with
    /// bytes it cannot send.
    fn release_stalled(&mut self, cid: ConnId, conn: usize) {
        self.host.stream(conn).paused = true;
        self.server(cid).send(&pattern(cid as u64, 200_000));
        self.run_until("a closed window", 1000, |net| {
            net.host.socket(conn).recv_queue() == 64 << 10
        });
        assert!(!self.server(cid).out.is_empty());
        self.release(cid);
        assert_eq!(self.stack.closing_count(), 1);
    }

    fn server(&mut self, cid: ConnId) -> &mut Stream {
        self.conns[cid].as_mut().expect("an open connection")
    }

    fn release(&mut self, cid: ConnId) {
        self.conns[cid] = None;
        self.stack.release(cid, self.now);
    }
}

impl Simulation for Net {
    /// One turn of the host, then one of the server (as a worker turns:
    /// ingress, accept, read what was touched, egress, flush, reap), then
    /// time moves on.
    fn step(&mut self) {
        self.host.poll(self.now);
        self.stack
            .poll_ingress(&mut self.device, self.now, RX_BUDGET);
        self.stack.take_established(&mut self.established);
        let mut touched = Vec::new();
        for &handle in &self.established {
            let cid = self.conns.len();
            self.stack.bind(cid, handle);
            self.conns.push(Some(Stream::default()));
            touched.push(cid);
        }
        self.stack.take_touched(&mut self.touched);
        touched.extend_from_slice(&self.touched);
        self.reported.extend_from_slice(&touched);
        for (cid, stream) in self.conns.iter_mut().enumerate() {
            let Some(stream) = stream else { continue };
            if touched.contains(&cid) || !stream.out.is_empty() {
                stream.pump(self.stack.socket(cid));
            }
        }
        self.stack.poll_egress(&mut self.device, self.now);
        self.device.flush_tx();
        self.stack.reap(self.now);
        let server = self.stack.poll_delay(self.now).map(|d| self.now + d);
        let host = self.host.poll_at(self.now);
        let tick = Some(self.now + TICK);
        self.now = next_time(self.now, self.host.busy(), [server, host, tick]).expect("a tick");
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn seed(&self) -> u64 {
        self.seed
    }
}

/// `len` bytes that differ from any shift of themselves: a lost, repeated
/// or misplaced byte shows.
fn pattern(salt: u64, len: usize) -> Vec<u8> {
    let mut x = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn handshake_then_the_worker_binds_the_connection() {
    let mut net = Net::new(seed(1), Faults::NONE, |_| {});
    let c = net.host.connect();
    net.run_until("the handshake", 100, |net| {
        net.conns.len() == 1 && net.host.state(c) == State::Established
    });
    assert!(net.stack.has(0));
    assert!(!net.stack.has(1));
    let local = net.host.socket(c).local_endpoint().expect("bound");
    let socket = net.stack.socket(0);
    assert_eq!(socket.state(), State::Established);
    let peer = socket.remote_endpoint().expect("a peer");
    assert_eq!(peer.addr, IpAddress::v4(10, 0, 0, 2));
    assert_eq!(peer.port, local.port);
    let mut ids = Vec::new();
    net.stack.conn_ids(&mut ids);
    assert_eq!(ids, vec![0]);
}

#[test]
fn data_and_fin_both_ways() {
    let mut net = Net::new(seed(2), Faults::NONE, |_| {});
    let conns = net.connect_all(1);
    let c = conns[0];
    net.host.send(c, b"hello broker");
    net.run_until("the client's bytes", 100, |net| {
        net.server(0).received == b"hello broker"
    });
    net.server(0).send(b"hello client");
    net.run_until("the server's bytes", 100, |net| {
        net.host.stream(c).received == b"hello client"
    });

    // The client half-closes: the server reads EOF and may still send.
    net.host.socket(c).close();
    net.run_until("the client's FIN", 100, |net| net.server(0).eof);
    assert!(net.reported.contains(&0), "the FIN was not reported");
    net.server(0).send(b"after your FIN");
    net.run_until("bytes after the client's FIN", 100, |net| {
        net.host.stream(c).received.ends_with(b"after your FIN")
    });

    // The server releases: FIN, acknowledged, and the socket is reaped.
    net.release(0);
    assert_eq!(net.stack.closing_count(), 1);
    assert!(!net.stack.has(0));
    net.run_until("the server's FIN, acknowledged", 100, |net| {
        net.host.stream(c).eof
            && matches!(net.host.state(c), State::Closed | State::TimeWait)
            && net.stack.closing_count() == 0
    });
}

/// More simultaneous SYNs than the pool holds (4 listening, at most 16
/// half-open): those it cannot take go unanswered, not reset, and the
/// clients' own SYN retransmissions get them in.
#[test]
fn a_burst_of_syns_larger_than_the_listener_pool_is_answered_or_retried() {
    let mut net = Net::new(seed(3), Faults::NONE, |config| config.listeners = 4);
    let conns = net.connect_all(40);
    assert_eq!(net.conns.len(), 40);
    assert!(
        net.stack.stats().syns_dropped > 0,
        "40 SYNs at once fit the pool: the overflow was not exercised"
    );
    assert!(
        net.elapsed() < Duration::from_secs(10),
        "{:?}",
        net.elapsed()
    );
    // Every connection works, and the pool still answers.
    for (i, &c) in conns.iter().enumerate() {
        net.host.send(c, &[i as u8]);
    }
    net.run_until("a byte on every connection", 200, |net| {
        (0..40).all(|cid| net.server(cid).received.len() == 1)
    });
    net.connect_all(1);
}

#[test]
fn many_connections_at_once_each_sending_and_receiving() {
    const CONNS: usize = 130;
    const BYTES: usize = 3000;
    let mut net = Net::new(seed(4), Faults::NONE, |_| {});
    let conns = net.connect_all(CONNS);
    for (i, &c) in conns.iter().enumerate() {
        net.host.send(c, &pattern(i as u64, BYTES));
    }
    // The server echoes every byte on the connection it came from.
    net.run_until("every echo", 5000, |net| {
        for cid in 0..CONNS {
            let stream = net.server(cid);
            let fresh = std::mem::take(&mut stream.received);
            stream.send(&fresh);
        }
        conns
            .iter()
            .all(|&c| net.host.stream(c).received.len() >= BYTES)
    });
    for (i, &c) in conns.iter().enumerate() {
        assert!(
            net.host.stream(c).received == pattern(i as u64, BYTES),
            "connection {i} got someone else's bytes"
        );
    }
}

#[test]
fn a_connection_reset_by_the_client_fails_and_is_freed_at_once() {
    let mut net = Net::new(seed(5), Faults::NONE, |_| {});
    let conns = net.connect_all(2);
    net.host.send(conns[0], b"x");
    net.run_until("a byte", 100, |net| net.server(0).received == b"x");
    net.reported.clear();
    net.host.socket(conns[0]).abort();
    net.run_until("the reset", 100, |net| {
        net.stack.socket(0).state() == State::Closed
    });
    assert!(net.reported.contains(&0), "the reset was not reported");
    net.release(0);
    assert_eq!(net.stack.closing_count(), 0, "a reset socket lingers");
    // The other connection and the listeners are unharmed.
    net.host.send(conns[1], b"y");
    net.run_until("a byte on the other connection", 100, |net| {
        net.server(1).received == b"y"
    });
    net.connect_all(1);
}

impl Net {
    /// Puts `data` into the server's socket and releases the connection in
    /// the same turn, before a byte left.
    fn send_and_release(&mut self, cid: ConnId, data: &[u8]) {
        self.server(cid).send(data);
        let socket = self.stack.socket(cid);
        self.conns[cid].as_mut().expect("open").pump(socket);
        assert!(
            self.server(cid).out.is_empty(),
            "more than the socket holds"
        );
        self.release(cid);
    }
}

#[test]
fn release_sends_the_last_bytes_then_fin() {
    let mut net = Net::new(seed(6), Faults::NONE, |_| {});
    let conns = net.connect_all(1);
    let data = pattern(6, 60_000);
    net.send_and_release(0, &data);
    net.run_until("every byte, then FIN", 1000, |net| {
        net.host.stream(conns[0]).eof && net.stack.closing_count() == 0
    });
    assert!(net.host.stream(conns[0]).received == data);
}

/// Through loss, every byte still arrives, and the stack lets the socket
/// go within the linger. The close is a FIN, or the linger's RST (which may
/// be lost too) when smoltcp 0.14 stalls on the FIN: its receiver ignores a
/// FIN riding on a retransmitted segment whose bytes it already has (the
/// segment's end, FIN excluded, is not "in the window"), and after the
/// duplicate ACKs this causes, its sender, with only the FIN outstanding,
/// turns the retransmission timer off and never resends it.
#[test]
fn release_delivers_every_byte_through_loss_within_the_linger() {
    let seed = seed(6);
    let linger = Duration::from_secs(5);
    let mut net = Net::new(seed, rough(0.05), |config| config.linger = linger);
    let conns = net.connect_all(1);
    let data = pattern(6, 60_000);
    net.send_and_release(0, &data);
    let released = net.now;
    net.run_until("every byte, and the socket let go", 10_000, |net| {
        net.host.stream(conns[0]).received.len() == data.len() && net.stack.closing_count() == 0
    });
    assert!(
        net.host.stream(conns[0]).received == data,
        "bytes lost or damaged (seed {seed})"
    );
    let held = net.now - released;
    assert!(held <= linger + 2 * TICK, "held for {held:?} (seed {seed})");
}

#[test]
fn release_aborts_a_connection_still_sending_after_the_linger() {
    let mut net = Net::new(seed(7), Faults::NONE, |_| {});
    let conns = net.connect_all(1);
    net.release_stalled(0, conns[0]);
    let released = net.now;
    net.run_until("the abort", 1000, |net| {
        net.host.state(conns[0]) == State::Closed
    });
    let waited = net.now - released;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "aborted after {waited:?}, the linger is 2 s"
    );
    assert_eq!(net.stack.closing_count(), 0);
}

#[test]
fn abort_all_resets_every_connection_and_every_lingering_socket() {
    let mut net = Net::new(seed(8), Faults::NONE, |_| {});
    let conns = net.connect_all(3);
    // One released, lingering behind a closed window.
    net.release_stalled(2, conns[2]);

    net.stack.abort_all();
    net.stack.poll_egress(&mut net.device, net.now);
    net.device.flush_tx();
    net.run_until("the resets", 100, |net| {
        conns.iter().all(|&c| net.host.state(c) == State::Closed)
    });
    for &c in &conns {
        assert!(!net.host.stream(c).eof, "a FIN instead of a reset");
    }
    assert_eq!(net.stack.closing_count(), 0);
}

/// A lost segment that no later one reveals (a lost tail: no duplicate
/// ACKs to trigger fast retransmit) is resent when the retransmission
/// timeout runs out, and after the first RTT samples of a LAN that is the
/// configured floor (`tcp_rto_min`), not RFC 6298's second.
#[test]
fn a_lost_tail_is_resent_after_the_rto_floor() {
    let lossy = Faults {
        loss: 1.0,
        ..Faults::NONE
    };
    for floor in [Duration::from_millis(300), Duration::from_millis(20)] {
        let mut net = Net::new(seed(11), Faults::NONE, |config| config.rto_min = floor);
        let conns = net.connect_all(1);
        // Round trips that give the server RTT samples.
        for round in 1..=4 {
            net.server(0).send(b"ping");
            net.run_until("a clean round trip", 1000, |net| {
                net.host.stream(conns[0]).received.len() == 4 * round
            });
        }
        net.device.set_faults(lossy, Faults::NONE);
        net.server(0).send(b"tail");
        let sent = net.now;
        net.step();
        assert_eq!(
            net.device.fault_stats().0.lost,
            1,
            "the tail went out, and was lost"
        );
        net.device.set_faults(Faults::NONE, Faults::NONE);
        // The time of the step in which the host read it (a step ends by
        // moving the clock on to the next one).
        let mut took = None;
        for _ in 0..1000 {
            let step_at = net.now;
            net.step();
            if net.host.stream(conns[0]).received.ends_with(b"tail") {
                took = Some(step_at - sent);
                break;
            }
        }
        let took = took.expect("the tail arrives");
        assert!(
            took >= floor && took < floor + Duration::from_millis(10),
            "the tail came {took:?} after it was lost; the floor is {floor:?}"
        );
    }
}

/// 1 MiB each way at once through loss, reordering, duplication and
/// corruption: every byte arrives, once, in order, in bounded time.
#[test]
fn a_mebibyte_each_way_through_a_rough_link_arrives_intact() {
    const BYTES: usize = 1 << 20;
    let seed = seed(9);
    let mut net = Net::new(seed, rough(0.02), |_| {});
    let conns = net.connect_all(1);
    let up = pattern(1, BYTES);
    let down = pattern(2, BYTES);
    net.host.send(conns[0], &up);
    net.server(0).send(&down);
    net.run_until("a mebibyte each way", 200_000, |net| {
        net.server(0).received.len() >= BYTES && net.host.stream(conns[0]).received.len() >= BYTES
    });
    assert!(
        net.server(0).received == up,
        "upstream damaged (seed {seed})"
    );
    assert!(
        net.host.stream(conns[0]).received == down,
        "downstream damaged (seed {seed})"
    );
    assert!(
        net.elapsed() < Duration::from_secs(60),
        "took {:?} of simulated time (seed {seed})",
        net.elapsed()
    );
    let (to_client, to_server) = net.device.fault_stats();
    for (way, stats) in [("to the client", to_client), ("to the server", to_server)] {
        assert!(
            stats.lost > 0 && stats.reordered > 0 && stats.duplicated > 0 && stats.corrupted > 0,
            "{way}: not every fault happened: {stats:?} (seed {seed})"
        );
    }
}

/// With segmentation offload the server's sockets send segments of up to
/// 63 KiB, which the device cuts into MTU-sized pieces; through loss,
/// reordering, duplication and corruption of the pieces every byte still
/// arrives, in order. Without it (the same device, the same large MTU) the
/// sockets keep to the client's MSS.
#[test]
fn with_segmentation_offload_large_segments_are_cut_and_arrive_intact() {
    const BYTES: usize = 1 << 20;
    let seed = seed(12);
    for offload in [Some(1460), None] {
        let link = MemoryConfig::new(seed)
            .with_faults(rough(0.02))
            .with_segmentation_on_a();
        let mut net = Net::on_link(link, |config| config.segment_offload = offload);
        let conns = net.connect_all(1);
        let down = pattern(3, BYTES);
        net.server(0).send(&down);
        net.run_until("a mebibyte down", 200_000, |net| {
            net.host.stream(conns[0]).received.len() >= BYTES
        });
        assert!(
            net.host.stream(conns[0]).received == down,
            "damaged (offload {offload:?}, seed {seed})"
        );
        let cut = net.device.segments_cut();
        match offload {
            Some(_) => assert!(cut > 0, "no segment was cut (seed {seed})"),
            None => assert_eq!(cut, 0, "segments larger than the client's MSS"),
        }
    }
}

/// A seed replays a whole run over a rough link: the same faults on the
/// same frames, the same frames sent, the same simulated time. Another
/// seed makes another run.
#[test]
fn a_seed_replays_a_whole_run() {
    let run = |seed| {
        let mut net = Net::new(seed, rough(0.05), |_| {});
        let conns = net.connect_all(2);
        for (i, &c) in conns.iter().enumerate() {
            net.host.send(c, &pattern(i as u64, 100_000));
        }
        net.run_until("every byte", 50_000, |net| {
            (0..2).all(|cid| net.server(cid).received.len() >= 100_000)
        });
        (net.elapsed(), net.device.fault_stats(), net.device.stats())
    };
    let seed = seed(10);
    let first = run(seed);
    assert_eq!(run(seed), first, "seed {seed} did not replay");
    assert_ne!(run(seed + 1), first);
}
