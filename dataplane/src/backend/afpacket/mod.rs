//! The AF_PACKET backend: a smoltcp [`Device`] over a TPACKET_V3 rx ring and
//! tx ring ([`ring`]), driven by the user-space TCP worker
//! ([`crate::backend::userspace`]).
//!
//! * Receive is zero-copy: smoltcp parses each frame in place in the mapped
//!   rx block; a block goes back to the kernel once all its frames were read.
//! * Transmit fills tx slots in place; [`PacketDevice::flush_tx`] kicks all
//!   slots of a burst with one `sendto`.
//! * Checksums: smoltcp computes them on transmit but does not verify them
//!   on receive; the device does, per frame ([`checksum`](crate::backend::userspace::checksum)), trusting frames
//!   the kernel marks `TP_STATUS_CSUM_VALID` (checked by the NIC) or
//!   `TP_STATUS_CSUMNOTREADY` (a local sender's partial checksum, as a veth
//!   peer with tx checksum offload sends them). Corrupt frames are dropped
//!   and counted.
//! * Large frames: a veth peer with TSO/GSO sends TCP segments larger than
//!   the MTU; a TPACKET_V3 block holds any frame up to the block size, and
//!   smoltcp takes such a segment whole.
//!
//! No allocation per packet: the rings are mapped once, tokens borrow them.

pub mod factory;
// The packet rings in shared memory: the only `unsafe` of this backend.
#[allow(unsafe_code)]
pub mod ring;

use std::io;
use std::os::fd::RawFd;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use self::ring::{ArpSocket, PacketSocket, RingConfig, RxRing, TxRing};
use crate::backend::userspace::checksum::{self, Verdict};
use crate::backend::userspace::{is_arp_reply, DeviceStats, PacketDevice};

pub use self::factory::AfPacketBackend;

/// How often (in receive calls) the ARP socket of a fanout member is read.
const ARP_CHECK_EVERY: u32 = 64;

/// A packet socket with its rings, as a smoltcp device.
///
/// Split in a receiving and a sending part so that a received frame (which
/// borrows the rx part) and the tx token of the reply (which borrows the tx
/// part) live together.
pub struct AfPacketDevice {
    socket: PacketSocket,
    rx: RxPart,
    tx: TxPart,
    mtu: usize,
}

struct RxPart {
    ring: RxRing,
    /// With fanout: every ARP frame, for this worker's neighbour cache.
    arp: Option<ArpSocket>,
    arp_buf: Vec<u8>,
    /// Receive calls left before the ARP socket is read again.
    arp_countdown: u32,
    /// The `rx_*` counters.
    stats: DeviceStats,
}

struct TxPart {
    ring: TxRing,
    /// Whether this device answers ARP requests (with fanout, only the
    /// first worker does; the others learn from them).
    arp_responder: bool,
    /// Where a reply made while receiving goes when the tx ring is full:
    /// dropped (TCP retransmits), never blocking the receive path.
    scratch: Vec<u8>,
    /// The `tx_*` counters.
    stats: DeviceStats,
}

impl AfPacketDevice {
    /// Opens `interface` with rings of the given geometry. `fanout`:
    /// `(group, worker)` when several workers share the interface through
    /// PACKET_FANOUT_HASH.
    pub fn open(
        interface: &str,
        config: RingConfig,
        fanout: Option<(u16, usize)>,
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
        Ok(AfPacketDevice {
            socket,
            rx: RxPart {
                ring: rx,
                arp,
                arp_buf: vec![0; 2048],
                arp_countdown: 0,
                stats: DeviceStats::default(),
            },
            tx: TxPart {
                ring: tx,
                arp_responder: fanout.is_none_or(|(_, worker)| worker == 0),
                scratch: vec![0; 1 << 16],
                stats: DeviceStats::default(),
            },
            mtu,
        })
    }

    /// The interface's own MAC address.
    pub fn link_mac(&self) -> [u8; 6] {
        self.socket.link.mac
    }

    /// The interface's MTU (IP bytes per frame).
    pub fn link_mtu(&self) -> usize {
        self.socket.link.mtu
    }
}

impl RxPart {
    /// The next frame for the stack: an ARP frame now and then (with
    /// fanout), else the next valid frame of the ring, read in place.
    fn next_frame(&mut self) -> Option<&[u8]> {
        // The ARP socket costs a syscall per look and ARP is rare: look on
        // every ARP_CHECK_EVERY-th call only (a sleeping worker is woken by
        // its fd anyway).
        self.arp_countdown = self.arp_countdown.saturating_sub(1);
        if let Some(arp) = self.arp.as_ref().filter(|_| self.arp_countdown == 0) {
            self.arp_countdown = ARP_CHECK_EVERY;
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
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.data.len() as u64;
        Some(frame.data)
    }
}

impl TxPart {
    /// Hands the slots marked for sending to the kernel.
    fn kick(&mut self, socket: &PacketSocket) {
        if self.ring.pending() == 0 {
            return;
        }
        match socket.kick() {
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

    fn receive(&mut self, _timestamp: Instant) -> Option<(AfRxToken<'_>, AfTxToken<'_>)> {
        let frame = self.rx.next_frame()?;
        if self.tx.ring.pending() >= 64 {
            self.tx.kick(&self.socket);
        }
        Some((AfRxToken { frame }, AfTxToken { tx: &mut self.tx }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<AfTxToken<'_>> {
        if !self.tx.ring.has_room() {
            self.tx.kick(&self.socket);
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
        self.tx.kick(&self.socket);
    }

    fn rx_ready(&self) -> bool {
        self.rx.ring.has_frames()
    }

    fn tx_pending(&self) -> bool {
        self.tx.ring.pending() > 0
    }

    fn wait_fds(&self, into: &mut Vec<RawFd>) {
        into.push(self.socket.raw_fd());
        if let Some(arp) = &self.rx.arp {
            into.push(arp.raw_fd());
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.link_mac()
    }

    fn stats(&mut self) -> DeviceStats {
        if let Ok(drops) = self.socket.take_drops() {
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
