//! The AF_PACKET backend: a smoltcp [`Device`] over a TPACKET_V2 rx ring and
//! tx ring ([`ring`]), driven by the user-space TCP worker
//! ([`crate::backend::userspace`]).
//!
//! * Receive is zero-copy for frames that fit a ring slot: smoltcp parses
//!   each one in place, and the kernel hands it over (and wakes a sleeping
//!   worker) as soon as it is written; the slot goes back at the next
//!   receive.
//! * Transmit fills tx slots in place; [`PacketDevice::flush_tx`] kicks all
//!   slots of a burst with one `sendto`. With segmentation offload, a TCP
//!   segment larger than the link goes out on its own through a second,
//!   `PACKET_VNET_HDR` socket, after a kick of the ring (so a connection's
//!   segments keep their order), and the kernel cuts it (`segmentation.rs`).
//! * Checksums: smoltcp computes them on transmit but does not verify them
//!   on receive; the device does, per frame ([`checksum`](crate::backend::userspace::checksum)), trusting frames
//!   the kernel marks `TP_STATUS_CSUM_VALID` (checked by the NIC) or
//!   `TP_STATUS_CSUMNOTREADY` (a local sender's partial checksum, as a veth
//!   peer with tx checksum offload sends them). Corrupt frames are dropped
//!   and counted.
//! * Large frames: a veth peer with TSO/GSO, or a NIC with GRO, delivers TCP
//!   segments larger than the MTU; the kernel queues a whole copy of any
//!   frame larger than a slot on the socket, the ring reads it with one
//!   `recv`, and smoltcp takes the segment whole.
//!
//! No allocation per packet: the rings are mapped once, tokens borrow them.

pub mod factory;
mod segmentation;
// The packet rings in shared memory: the only `unsafe` of this backend.
#[allow(unsafe_code)]
pub mod ring;

use std::io;
use std::os::fd::RawFd;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::{Duration, Instant};

use self::ring::{ArpSocket, PacketSocket, RingConfig, RxRing, SegmentSocket, TxRing};
use self::segmentation::{MAX_SEGMENT_IP_LEN, VNET_HDR_LEN};
use crate::backend::userspace::checksum::{self, Verdict};
use crate::backend::userspace::{is_arp_reply, DeviceStats, PacketDevice};

pub use self::factory::AfPacketBackend;

/// How often the ARP socket of a fanout member is read: every this many
/// received frames under load, and at least this often when idle (a
/// spinning worker would otherwise make a syscall per few turns).
const ARP_CHECK_EVERY: u32 = 64;
const ARP_CHECK_IDLE: Duration = Duration::from_micros(100);

/// A packet socket with its rings, as a smoltcp device.
///
/// Split in a receiving and a sending part so that a received frame (which
/// borrows the rx part) and the tx token of the reply (which borrows the tx
/// part) live together.
pub struct AfPacketDevice {
    rx: RxPart,
    tx: TxPart,
    /// The largest Ethernet frame smoltcp may hand over.
    mtu: usize,
}

struct RxPart {
    ring: RxRing,
    /// With fanout: every ARP frame, for this worker's neighbour cache.
    arp: Option<ArpSocket>,
    arp_buf: Vec<u8>,
    /// Frames left to receive before the ARP socket is read again.
    arp_countdown: u32,
    /// When it is read again at the latest.
    arp_due: Instant,
    /// The `rx_*` counters.
    stats: DeviceStats,
}

struct TxPart {
    /// The ring's socket: kicked to send the marked slots.
    socket: PacketSocket,
    ring: TxRing,
    /// With segmentation offload: where segments larger than the link go.
    segments: Option<SegmentSocket>,
    /// Whether this device answers ARP requests (with fanout, only the
    /// first worker does; the others learn from them).
    arp_responder: bool,
    /// A frame larger than a ring slot: a `virtio_net_hdr` and the frame,
    /// for `segments`. Without it, a reply made while receiving that found
    /// the tx ring full: dropped (TCP retransmits), never blocking the
    /// receive path.
    scratch: Vec<u8>,
    /// The `tx_*` counters.
    stats: DeviceStats,
}

impl AfPacketDevice {
    /// Opens `interface` with rings of the given geometry. `fanout`:
    /// `(group, worker)` when several workers share the interface through
    /// PACKET_FANOUT_HASH. `segmentation`: let the kernel cut TCP segments
    /// larger than the link (smoltcp then sends up to 63 KiB at once to
    /// peers with the link's MSS; see [`segmentation`]).
    pub fn open(
        interface: &str,
        config: RingConfig,
        fanout: Option<(u16, usize)>,
        segmentation: bool,
    ) -> io::Result<AfPacketDevice> {
        let (socket, rx, tx) = ring::open(interface, config, fanout.map(|(group, _)| group))?;
        let link = socket.link;
        let arp = match fanout {
            Some(_) => Some(ArpSocket::open(link.ifindex)?),
            None => None,
        };
        if !link.up {
            tracing::warn!(interface, "the interface is down: no frames until it is up");
        }
        let segments = match segmentation {
            true => Some(SegmentSocket::open(link.ifindex)?),
            false => None,
        };
        // The largest Ethernet frame (header + IP MTU) a tx slot holds.
        let mtu = (link.mtu + 14).min(tx.max_frame());
        if mtu < link.mtu + 14 {
            tracing::warn!(
                interface,
                mtu = link.mtu,
                slot = tx.max_frame(),
                "afpacket.frame_size is smaller than the interface MTU needs; sending smaller segments"
            );
        }
        let mtu = match segments {
            Some(_) => 14 + MAX_SEGMENT_IP_LEN,
            None => mtu,
        };
        Ok(AfPacketDevice {
            rx: RxPart {
                ring: rx,
                arp,
                arp_buf: vec![0; 2048],
                arp_countdown: 0,
                arp_due: Instant::ZERO,
                stats: DeviceStats::default(),
            },
            tx: TxPart {
                socket,
                ring: tx,
                segments,
                arp_responder: fanout.is_none_or(|(_, worker)| worker == 0),
                scratch: vec![0; VNET_HDR_LEN + 14 + MAX_SEGMENT_IP_LEN],
                stats: DeviceStats::default(),
            },
            mtu,
        })
    }

    /// The interface's own MAC address.
    pub fn link_mac(&self) -> [u8; 6] {
        self.tx.socket.link.mac
    }

    /// The interface's MTU (IP bytes per frame).
    pub fn link_mtu(&self) -> usize {
        self.tx.socket.link.mtu
    }

    /// With segmentation offload: the payload bytes per segment the kernel
    /// cuts (the link's MSS), for [`StackConfig::segment_offload`].
    ///
    /// [`StackConfig::segment_offload`]: crate::backend::userspace::StackConfig::segment_offload
    pub fn segment_mss(&self) -> Option<usize> {
        self.tx.segments.as_ref().map(|_| self.link_mtu() - 40)
    }
}

impl RxPart {
    /// The next frame for the stack: an ARP frame now and then (with
    /// fanout), else the next valid frame of the ring, read in place.
    fn next_frame(&mut self, now: Instant) -> Option<&[u8]> {
        // The ARP socket costs a syscall per look and ARP is rare: look
        // every ARP_CHECK_EVERY frames or ARP_CHECK_IDLE, whichever comes
        // first (a sleeping worker is woken by its fd anyway).
        if let Some(arp) = self
            .arp
            .as_ref()
            .filter(|_| self.arp_countdown == 0 || now >= self.arp_due)
        {
            self.arp_countdown = ARP_CHECK_EVERY;
            self.arp_due = now + ARP_CHECK_IDLE;
            if let Some(len) = arp.recv(&mut self.arp_buf) {
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += len as u64;
                return Some(&self.arp_buf[..len]);
            }
        }
        let stats = &mut self.stats;
        let frame = self.ring.next_frame(|frame| {
            if frame.data.len() < frame.len {
                stats.rx_truncated += 1;
                return false;
            }
            let trusted =
                frame.status & (libc::TP_STATUS_CSUMNOTREADY | libc::TP_STATUS_CSUM_VALID) != 0;
            match checksum::verify(frame.data, trusted) {
                Verdict::Accept => true,
                Verdict::Corrupt => {
                    stats.rx_corrupt += 1;
                    false
                }
                Verdict::Ignore => {
                    stats.rx_ignored += 1;
                    false
                }
            }
        })?;
        self.arp_countdown = self.arp_countdown.saturating_sub(1);
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.data.len() as u64;
        Some(frame.data)
    }
}

impl TxPart {
    /// Hands the slots marked for sending to the kernel.
    fn kick(&mut self) {
        if self.ring.pending() == 0 {
            return;
        }
        match self.socket.kick() {
            Ok(true) => {
                self.stats.tx_kicks += 1;
                self.ring.sent();
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "afpacket: sending the tx ring failed");
                self.stats.tx_errors += 1;
                self.ring.sent();
            }
        }
    }
}

impl TxPart {
    /// Sends a frame larger than the link through the segmentation
    /// socket, with the `virtio_net_hdr` that has the kernel cut it. The
    /// ring's marked slots go first, so that a connection's segments leave
    /// in order; if the kernel cannot take them now, the large frame is
    /// dropped (TCP resends it) rather than overtake them.
    fn send_segment<R, F>(&mut self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let len = len.min(self.scratch.len() - VNET_HDR_LEN);
        let result = f(&mut self.scratch[VNET_HDR_LEN..VNET_HDR_LEN + len]);
        let (header, frame) = self.scratch.split_at_mut(VNET_HDR_LEN);
        header.copy_from_slice(&segmentation::vnet_header(
            &mut frame[..len],
            self.socket.link.mtu,
        ));
        self.kick();
        let Some(segments) = self.segments.as_ref().filter(|_| self.ring.pending() == 0) else {
            self.stats.tx_dropped += 1;
            return result;
        };
        match segments.send(&self.scratch[..VNET_HDR_LEN + len]) {
            Ok(true) => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += len as u64;
                self.stats.tx_kicks += 1;
            }
            Ok(false) => self.stats.tx_dropped += 1,
            Err(error) => {
                tracing::warn!(%error, "afpacket: sending a large segment failed");
                self.stats.tx_errors += 1;
            }
        }
        result
    }
}

pub struct AfRxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for AfRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

pub struct AfTxToken<'a> {
    tx: &'a mut TxPart,
}

impl phy::TxToken for AfTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let tx = self.tx;
        // Longer than the link: only the kernel's segmentation can send it
        // (a ring slot may be larger than the link's MTU).
        if tx.segments.is_some() && len > tx.socket.link.mtu + 14 {
            return tx.send_segment(len, f);
        }
        let slot = if len <= tx.ring.max_frame() {
            tx.ring.slot()
        } else {
            None
        };
        match slot {
            Some(slot) => {
                let responder = tx.arp_responder;
                let stats = &mut tx.stats;
                slot.fill(len, f, |frame| {
                    if !responder && is_arp_reply(frame) {
                        // Another worker answers; this one only learns.
                        return false;
                    }
                    stats.tx_frames += 1;
                    stats.tx_bytes += frame.len() as u64;
                    true
                })
            }
            None => {
                // Only a reply made while receiving can get here (transmit()
                // checks for room first): drop it, TCP recovers.
                tx.stats.tx_dropped += 1;
                let len = len.min(tx.scratch.len());
                f(&mut tx.scratch[..len])
            }
        }
    }
}

impl phy::Device for AfPacketDevice {
    type RxToken<'a> = AfRxToken<'a>;
    type TxToken<'a> = AfTxToken<'a>;

    fn receive(&mut self, timestamp: Instant) -> Option<(AfRxToken<'_>, AfTxToken<'_>)> {
        let frame = self.rx.next_frame(timestamp)?;
        if self.tx.ring.pending() >= 64 {
            self.tx.kick();
        }
        Some((AfRxToken { frame }, AfTxToken { tx: &mut self.tx }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<AfTxToken<'_>> {
        if !self.tx.ring.has_room() {
            self.tx.kick();
            if !self.tx.ring.has_room() {
                self.tx.stats.tx_full += 1;
                return None;
            }
        }
        Some(AfTxToken { tx: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        let mut checksum = ChecksumCapabilities::default();
        // Computed by smoltcp on transmit; verified by the device on receive.
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.udp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}

impl PacketDevice for AfPacketDevice {
    fn flush_tx(&mut self) {
        self.tx.kick();
    }

    fn rx_ready(&self) -> bool {
        self.rx.ring.has_frames()
    }

    fn tx_pending(&self) -> bool {
        self.tx.ring.pending() > 0
    }

    fn wait_fds(&self, into: &mut Vec<RawFd>) {
        into.push(self.tx.socket.raw_fd());
        if let Some(arp) = &self.rx.arp {
            into.push(arp.raw_fd());
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.link_mac()
    }

    fn stats(&mut self) -> DeviceStats {
        if let Ok(drops) = self.tx.socket.take_drops() {
            self.rx.stats.rx_missed += drops;
        }
        let rx = &self.rx.stats;
        DeviceStats {
            rx_frames: rx.rx_frames,
            rx_bytes: rx.rx_bytes,
            rx_missed: rx.rx_missed,
            rx_corrupt: rx.rx_corrupt,
            rx_truncated: rx.rx_truncated,
            rx_ignored: rx.rx_ignored,
            tx_rejected: self.tx.ring.rejected(),
            ..self.tx.stats
        }
    }
}
