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
pub struct AfPacketDevice {
    socket: PacketSocket,
    /// With fanout: every ARP frame, for this worker's neighbour cache.
    arp: Option<ArpSocket>,
    arp_buf: Vec<u8>,
    /// Receive calls left before the ARP socket is read again.
    arp_countdown: u32,
    /// Whether this device answers ARP requests (with fanout, only the
    /// first worker does; the others learn from them).
    arp_responder: bool,
    rx: RxRing,
    tx: TxRing,
    /// Where a reply made while receiving goes when the tx ring is full:
    /// dropped (TCP retransmits), never blocking the receive path.
    scratch: Vec<u8>,
    mtu: usize,
    stats: DeviceStats,
}

// SAFETY: the raw pointers point into the device's own mapping, which no
// other thread touches; moving the device moves the sole owner of the rings.
unsafe impl Send for AfPacketDevice {}

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
            arp,
            arp_buf: vec![0; 2048],
            arp_countdown: 0,
            arp_responder: fanout.is_none_or(|(_, worker)| worker == 0),
            rx,
            tx,
            scratch: vec![0; 1 << 16],
            mtu,
            stats: DeviceStats::default(),
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

    fn kick(&mut self) {
        if self.tx.pending == 0 {
            return;
        }
        match self.socket.kick() {
            Ok(true) => {
                self.stats.tx_kicks += 1;
                self.tx.pending = 0;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "afpacket: sending the tx ring failed");
                self.stats.tx_errors += 1;
                self.tx.pending = 0;
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
    tx: &'a mut TxRing,
    arp_responder: bool,
    scratch: &'a mut [u8],
    stats: &'a mut DeviceStats,
}

impl phy::TxToken for AfTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        if len <= self.tx.max_frame() && self.tx.has_room() {
            let responder = self.arp_responder;
            let stats = self.stats;
            self.tx.fill(len, f, |frame| {
                if !responder && is_arp_reply(frame) {
                    // Another worker answers; this one only learns.
                    return false;
                }
                stats.tx_frames += 1;
                stats.tx_bytes += frame.len() as u64;
                true
            })
        } else {
            // Only a reply made while receiving can get here (transmit()
            // checks for room first): drop it, TCP recovers.
            self.stats.tx_dropped += 1;
            let len = len.min(self.scratch.len());
            f(&mut self.scratch[..len])
        }
    }
}

impl phy::Device for AfPacketDevice {
    type RxToken<'a> = AfRxToken<'a>;
    type TxToken<'a> = AfTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(AfRxToken<'_>, AfTxToken<'_>)> {
        // The ARP socket costs a syscall per look and ARP is rare: look on
        // every ARP_CHECK_EVERY-th call only (a sleeping worker is woken by
        // its fd anyway).
        self.arp_countdown = self.arp_countdown.saturating_sub(1);
        if let Some(arp) = self.arp.as_ref().filter(|_| self.arp_countdown == 0) {
            self.arp_countdown = ARP_CHECK_EVERY;
            if let Some(len) = arp.recv(&mut self.arp_buf) {
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += len as u64;
                return Some((
                    AfRxToken {
                        frame: &self.arp_buf[..len],
                    },
                    AfTxToken {
                        tx: &mut self.tx,
                        arp_responder: self.arp_responder,
                        scratch: &mut self.scratch,
                        stats: &mut self.stats,
                    },
                ));
            }
        }
        loop {
            let frame = self.rx.next_frame()?;
            // SAFETY: the frame lies inside a block we own (RxRing::next
            // checked the bounds); the block is given back only by a later
            // `next_frame()` call, which needs `&mut self` and so cannot happen
            // while this token (borrowing `self`) lives.
            let data = unsafe { std::slice::from_raw_parts(frame.data, frame.snaplen) };
            if frame.snaplen < frame.len {
                self.stats.rx_truncated += 1;
                continue;
            }
            let trusted =
                frame.status & (libc::TP_STATUS_CSUMNOTREADY | libc::TP_STATUS_CSUM_VALID) != 0;
            match checksum::verify(data, trusted) {
                Verdict::Accept => {}
                Verdict::Corrupt => {
                    self.stats.rx_corrupt += 1;
                    continue;
                }
                Verdict::Ignore => {
                    self.stats.rx_ignored += 1;
                    continue;
                }
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += data.len() as u64;
            if self.tx.pending >= 64 {
                self.kick();
            }
            return Some((
                AfRxToken { frame: data },
                AfTxToken {
                    tx: &mut self.tx,
                    arp_responder: self.arp_responder,
                    scratch: &mut self.scratch,
                    stats: &mut self.stats,
                },
            ));
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<AfTxToken<'_>> {
        if !self.tx.has_room() {
            self.kick();
            if !self.tx.has_room() {
                self.stats.tx_full += 1;
                return None;
            }
        }
        Some(AfTxToken {
            tx: &mut self.tx,
            arp_responder: self.arp_responder,
            scratch: &mut self.scratch,
            stats: &mut self.stats,
        })
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
        self.kick();
    }

    fn rx_ready(&self) -> bool {
        self.rx.has_frames()
    }

    fn tx_pending(&self) -> bool {
        self.tx.pending > 0
    }

    fn wait_fds(&self, into: &mut Vec<RawFd>) {
        into.push(self.socket.raw_fd());
        if let Some(arp) = &self.arp {
            into.push(arp.raw_fd());
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.link_mac()
    }

    fn stats(&mut self) -> DeviceStats {
        if let Ok(drops) = self.socket.take_drops() {
            self.stats.rx_missed += drops;
        }
        let mut stats = self.stats;
        stats.tx_rejected = self.tx.rejected;
        stats
    }
}
