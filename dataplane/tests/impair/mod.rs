//! A user-space impairment relay: what `tc netem loss ... reorder ...`
//! would do, for kernels without `sch_netem`.
//!
//! [`Relay::start`] runs a thread in the relay namespace of a
//! [`Lab::with_relay`] lab that forwards every Ethernet frame between the
//! two veth ends there, both ways, through the dataplane's own TPACKET_V2
//! device ([`AfPacketDevice`], so no raw-socket code here). With an
//! [`Impairment`] it drops a seeded-random share of the frames and sends
//! another share after the frame that followed it (adjacent swaps), the
//! same sequence for the same seed.
//!
//! A packet socket does not carry the kernel's "checksum still to be
//! completed" mark (the client's veth end has tx checksum offload on), so
//! the relay completes the TCP checksum of the frames from the client
//! side, which it then sends as plain frames.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blipmq_dataplane::backend::afpacket::ring::RingConfig;
use blipmq_dataplane::backend::afpacket::AfPacketDevice;
use blipmq_dataplane::backend::userspace::{segment, PacketDevice};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use smoltcp::phy::{Device, RxToken, TxToken};

use crate::common::netns::{self, Lab};
use crate::common::XorShift;

/// What the relay does to the frames of each direction.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Frames dropped, per 10,000.
    pub drop_per_10k: u64,
    /// Frames held back and sent after the next frame, per 10,000.
    pub reorder_per_10k: u64,
    pub seed: u64,
}

impl Impairment {
    /// Forward everything, in order.
    pub const NONE: Impairment = Impairment {
        drop_per_10k: 0,
        reorder_per_10k: 0,
        seed: 1,
    };
}

/// Counters of one direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectionStats {
    pub forwarded: u64,
    pub dropped: u64,
    /// Frames sent after a frame that arrived later.
    pub reordered: u64,
    /// Frames larger than the MTU that are not TCP (they cannot be
    /// forwarded, nor cut).
    pub oversize: u64,
    /// Segments larger than the link, cut before impairing.
    pub cut: u64,
}

/// What the relay did, per direction.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayStats {
    pub client_to_broker: DirectionStats,
    pub broker_to_client: DirectionStats,
}

/// The relay thread; stopped and joined on drop.
pub struct Relay {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<io::Result<RelayStats>>>,
}

/// The relay stops by itself after this, whatever the test does.
const MAX_LIFETIME: Duration = Duration::from_secs(900);
/// Frames moved per direction before the other one gets a turn.
const BURST: usize = 256;

impl Relay {
    /// Starts forwarding in `lab` (built by [`Lab::with_relay`]), impairing
    /// each direction as given; returns once both interfaces are open.
    pub fn start(lab: &Lab, client_to_broker: Impairment, broker_to_client: Impairment) -> Relay {
        let relay = lab
            .relay
            .as_ref()
            .expect("a lab built with Lab::with_relay");
        let path = lab.relay_ns_path().expect("relay namespace");
        let (client_side, broker_side) =
            (relay.client_side_if.clone(), relay.broker_side_if.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let handle = std::thread::spawn(move || {
            netns::enter(&path);
            let opened = open(&client_side).and_then(|c| Ok((c, open(&broker_side)?)));
            let (client, broker) = match opened {
                Ok(devices) => {
                    let _ = ready_tx.send(Ok(()));
                    devices
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error.to_string()));
                    return Err(error);
                }
            };
            run(
                client,
                broker,
                [client_to_broker, broker_to_client],
                &thread_stop,
            )
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => panic!("the relay could not open its interfaces: {why}"),
            Err(_) => panic!("the relay did not start within 10 s"),
        }
        Relay {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the relay and returns its counters.
    pub fn finish(mut self) -> RelayStats {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("relay thread");
        match handle.join() {
            Ok(result) => result.expect("the relay failed"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn open(interface: &str) -> io::Result<AfPacketDevice> {
    let rings = RingConfig {
        block_size: 1 << 18,
        block_count: 64,
        frame_size: 2048,
    };
    AfPacketDevice::open(interface, rings, None, false)
}

/// One direction's impairment state.
struct Direction {
    rng: XorShift,
    impairment: Impairment,
    /// A frame held back, to go out after the next one.
    held: Option<Vec<u8>>,
    /// Whether frames need their TCP checksum completed.
    complete_checksums: bool,
    stats: DirectionStats,
}

fn run(
    mut client: AfPacketDevice,
    mut broker: AfPacketDevice,
    [client_to_broker, broker_to_client]: [Impairment; 2],
    stop: &AtomicBool,
) -> io::Result<RelayStats> {
    let mut poll = Poll::new()?;
    let mut fds = Vec::new();
    client.wait_fds(&mut fds);
    broker.wait_fds(&mut fds);
    for (i, fd) in fds.iter().enumerate() {
        poll.registry()
            .register(&mut SourceFd(fd), Token(i), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(8);
    let mut upstream = Direction {
        rng: XorShift::new(client_to_broker.seed),
        impairment: client_to_broker,
        held: None,
        complete_checksums: true,
        stats: DirectionStats::default(),
    };
    let mut downstream = Direction {
        rng: XorShift::new(broker_to_client.seed.rotate_left(32) ^ 0x9e37_79b9),
        impairment: broker_to_client,
        held: None,
        complete_checksums: false,
        stats: DirectionStats::default(),
    };
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
        let moved = forward(&mut client, &mut broker, &mut upstream)
            + forward(&mut broker, &mut client, &mut downstream);
        broker.flush_tx();
        client.flush_tx();
        let pending = broker.tx_pending() || client.tx_pending();
        if moved == 0 && !pending && !client.rx_ready() && !broker.rx_ready() {
            // Edge-triggered and bounded: a missed edge costs 1 ms.
            match poll.poll(&mut events, Some(Duration::from_millis(1))) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(RelayStats {
        client_to_broker: upstream.stats,
        broker_to_client: downstream.stats,
    })
}

/// Moves up to [`BURST`] frames from `from` to `to`; returns how many were
/// taken off `from`. A frame held back is sent at the latest at the end of
/// the burst, so nothing waits for traffic that may never come. A TCP
/// segment larger than the link (the broker's segmentation offload: the
/// veth passes it whole) is cut as the kernel or a NIC would before the
/// wire, and its pieces are impaired one by one.
fn forward(from: &mut AfPacketDevice, to: &mut AfPacketDevice, dir: &mut Direction) -> usize {
    let max_frame = to.link_mtu() + 14;
    let mut taken = 0;
    let mut frame = Vec::new();
    while taken < BURST && to.transmit(smoltcp::time::Instant::ZERO).is_some() {
        let Some((rx, _)) = from.receive(smoltcp::time::Instant::ZERO) else {
            break;
        };
        taken += 1;
        rx.consume(|bytes| {
            frame.clear();
            frame.extend_from_slice(bytes);
        });
        if frame.len() <= max_frame {
            pass(to, dir, &frame);
            continue;
        }
        let mut pieces = Vec::new();
        let cut = segment::cut_tcp_segment(&frame, max_frame, Vec::new, |piece| pieces.push(piece));
        if cut == 0 {
            dir.stats.oversize += 1;
        }
        dir.stats.cut += u64::from(cut > 0);
        for piece in pieces {
            pass(to, dir, &piece);
        }
    }
    if dir.held.is_some() {
        send_held(to, dir);
    }
    taken
}

/// One frame through the impairment: dropped, held back to go after the
/// next one, or sent (then a held one goes after it).
fn pass(to: &mut AfPacketDevice, dir: &mut Direction, frame: &[u8]) {
    let verdict = dir.rng.below(10_000);
    let impairment = dir.impairment;
    if verdict < impairment.drop_per_10k {
        dir.stats.dropped += 1;
        return;
    }
    if dir.held.is_none() && verdict < impairment.drop_per_10k + impairment.reorder_per_10k {
        dir.held = Some(frame.to_vec());
        return;
    }
    if !send(to, dir, frame) {
        return;
    }
    if dir.held.is_some() && send_held(to, dir) {
        dir.stats.reordered += 1;
    }
}

/// Sends a frame if the tx ring has room (else it is lost, as on a full
/// wire); true if it went.
fn send(to: &mut AfPacketDevice, dir: &mut Direction, frame: &[u8]) -> bool {
    let Some(tx) = to.transmit(smoltcp::time::Instant::ZERO) else {
        dir.stats.dropped += 1;
        return false;
    };
    tx.consume(frame.len(), |out| {
        out.copy_from_slice(frame);
        if dir.complete_checksums {
            complete_tcp_checksum(out);
        }
    });
    dir.stats.forwarded += 1;
    true
}

/// Sends the held frame if the tx ring has room; true if it went.
fn send_held(to: &mut AfPacketDevice, dir: &mut Direction) -> bool {
    if to.transmit(smoltcp::time::Instant::ZERO).is_none() {
        return false;
    }
    let frame = dir.held.take().expect("a held frame");
    send(to, dir, &frame)
}

/// Writes the full TCP checksum of an IPv4/TCP Ethernet frame (other frames
/// are left alone), with smoltcp's wire types.
fn complete_tcp_checksum(frame: &mut [u8]) {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
    let Ok(mut eth) = EthernetFrame::new_checked(frame) else {
        return;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
        return;
    };
    if ip.next_header() != IpProtocol::Tcp {
        return;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) {
        tcp.fill_checksum(&src.into(), &dst.into());
    }
}
