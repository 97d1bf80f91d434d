//! One worker's rx/tx queue pair of a DPDK port, as a smoltcp device.
//!
//! * Receive reads each mbuf in place: smoltcp parses the frame in the
//!   mbuf's buffer, which goes back to the pool when the token is dropped.
//!   A frame in several segments (a jumbo frame from memif or virtio) is
//!   dropped and counted, never read in part.
//! * Transmit fills an mbuf from the pool per frame and queues it in a
//!   burst; the burst goes to the port once per loop turn (`flush_tx`), or
//!   as soon as it is full. Frames the port does not take stay queued and
//!   go first next turn.
//! * Checksums: verified in software on receive unless the port marks them
//!   good (or bad); computed by the port on transmit where it offers the
//!   offload, else by smoltcp.
//! * ARP: see [`super::arp`]. A copy from another worker is handed to
//!   smoltcp with a transmit token that sends nothing: the worker learns,
//!   the receiving worker answers.
//!
//! Nothing allocates per packet: mbufs come from the pool (through the
//! worker's cache), bursts are fixed arrays.

use std::os::fd::RawFd;
use std::sync::{Arc, Weak};

use blipmq_dpdk_sys::sys::consts as c;
use blipmq_dpdk_sys::{Mbuf, MbufBurst, Mempool, Port, RxQueue, ThreadRegistration, TxQueue};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::arp::{ArpCopy, ArpFanout};
use crate::backend::userspace::checksum::{self, Offload, Verdict};
use crate::backend::userspace::{is_arp, DeviceStats, NicStats, PacketDevice};

/// The largest burst (the config's `dpdk.burst` is at most this).
pub const BURST_MAX: usize = crate::config::dpdk::MAX_BURST;

/// What the port does for us.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offloads {
    /// The port verifies IPv4 and TCP checksums on receive (and flags them).
    pub rx_checksum: bool,
    /// The port computes IPv4 and TCP checksums on transmit.
    pub tx_checksum: bool,
    /// The port is memory shared with another process on this host
    /// (net_memif): nothing on the way can corrupt a frame, so received
    /// checksums are not verified, as Linux does not verify them on
    /// loopback or veth. Frames sent still carry correct checksums.
    pub rx_trusted: bool,
}

pub struct DpdkDevice {
    worker: usize,
    rx: RxQueue<'static>,
    tx: TxQueue<'static>,
    pool: &'static Mempool,
    /// Received, not yet handed to smoltcp, last first (`pop` takes the
    /// oldest).
    received: MbufBurst<'static, BURST_MAX>,
    /// Filled, not yet taken by the port.
    sending: MbufBurst<'static, BURST_MAX>,
    burst: usize,
    offloads: Offloads,
    arp: Arc<ArpFanout>,
    mtu: usize,
    mac: [u8; 6],
    intr_fd: Option<RawFd>,
    /// The receive interrupt is enabled (the worker sleeps on it).
    intr_armed: bool,
    stats: DeviceStats,
    /// Where a frame that is dropped is written (smoltcp needs a buffer).
    scratch: Box<[u8]>,
    /// The port, for its counters (one worker reports them).
    port: Option<Weak<Port<'static>>>,
    /// DPDK knows this thread (mempool caches): dropped with the device, on
    /// the worker's thread.
    _registration: ThreadRegistration,
    /// Keeps the backend from freeing `pool` while this device lives.
    _lifeline: Arc<()>,
}

/// The parts of a device a worker takes to its thread.
pub struct DpdkQueues {
    pub worker: usize,
    pub rx: RxQueue<'static>,
    pub tx: TxQueue<'static>,
    pub pool: &'static Mempool,
    pub burst: usize,
    pub offloads: Offloads,
    pub arp: Arc<ArpFanout>,
    pub mtu: usize,
    pub mac: [u8; 6],
    /// For the worker that reports the port's own counters.
    pub port: Option<Weak<Port<'static>>>,
}

impl DpdkDevice {
    pub fn new(
        queues: DpdkQueues,
        registration: ThreadRegistration,
        lifeline: Arc<()>,
    ) -> DpdkDevice {
        let intr_fd = queues.rx.intr_fd();
        DpdkDevice {
            worker: queues.worker,
            rx: queues.rx,
            tx: queues.tx,
            pool: queues.pool,
            received: MbufBurst::new(),
            sending: MbufBurst::new(),
            burst: queues.burst.clamp(1, BURST_MAX),
            offloads: queues.offloads,
            arp: queues.arp,
            mtu: queues.mtu,
            mac: queues.mac,
            intr_fd,
            intr_armed: false,
            stats: DeviceStats::default(),
            scratch: vec![0; 1 << 16].into_boxed_slice(),
            port: queues.port,
            _registration: registration,
            _lifeline: lifeline,
        }
    }

    /// Receives a burst when every frame of the last one was handed over.
    fn poll_rx(&mut self) {
        if self.received.is_empty() {
            self.rx.rx_burst_up_to(&mut self.received, self.burst);
            // Oldest last: `pop` hands frames over in arrival order.
            self.received.as_mut_slice().reverse();
        }
    }

    /// Hands the filled frames to the port; what it does not take waits.
    fn send_burst(&mut self) {
        if self.sending.is_empty() {
            return;
        }
        let sent = self.tx.tx_burst(&mut self.sending);
        if sent > 0 {
            self.stats.tx_kicks += 1;
        } else {
            self.stats.tx_full += 1;
        }
    }

    /// A transmit token, or none while the pending burst is full and the
    /// port takes nothing.
    fn tx_token(&mut self, learn_only: bool) -> DpdkTxToken<'_> {
        DpdkTxToken {
            pool: self.pool,
            sending: &mut self.sending,
            tx: &mut self.tx,
            offloads: self.offloads,
            stats: &mut self.stats,
            scratch: &mut self.scratch,
            learn_only,
        }
    }

    /// What to do with a received frame.
    fn verdict(&self, mbuf: &Mbuf<'static>, frame: &[u8]) -> Verdict {
        let flags = mbuf.ol_flags();
        let ip = flags & c::RTE_MBUF_F_RX_IP_CKSUM_MASK;
        let l4 = flags & c::RTE_MBUF_F_RX_L4_CKSUM_MASK;
        if ip == c::RTE_MBUF_F_RX_IP_CKSUM_BAD || l4 == c::RTE_MBUF_F_RX_L4_CKSUM_BAD {
            return Verdict::Corrupt;
        }
        let trusted = self.offloads.rx_trusted
            || (ip == c::RTE_MBUF_F_RX_IP_CKSUM_GOOD && l4 == c::RTE_MBUF_F_RX_L4_CKSUM_GOOD);
        if trusted {
            // The port checked both (or nothing can corrupt a frame on
            // it); only the frame's kind is left to see.
            return match checksum::verify(frame, true) {
                Verdict::Ignore => Verdict::Ignore,
                _ => Verdict::Accept,
            };
        }
        checksum::verify(frame, false)
    }
}

/// A received frame: an mbuf read in place, or a copy of another worker's
/// ARP frame.
pub enum DpdkRxToken {
    Mbuf(Mbuf<'static>),
    Arp(ArpCopy),
}

impl phy::RxToken for DpdkRxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        match self {
            // Checked contiguous before the token was made.
            DpdkRxToken::Mbuf(mbuf) => f(mbuf.data().unwrap_or_default()),
            DpdkRxToken::Arp(copy) => f(copy.bytes()),
        }
        // The mbuf goes back to the pool here.
    }
}

pub struct DpdkTxToken<'a> {
    pool: &'static Mempool,
    sending: &'a mut MbufBurst<'static, BURST_MAX>,
    tx: &'a mut TxQueue<'static>,
    offloads: Offloads,
    stats: &'a mut DeviceStats,
    scratch: &'a mut [u8],
    /// Made for another worker's ARP frame: send nothing (that worker
    /// answers).
    learn_only: bool,
}

impl phy::TxToken for DpdkTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // smoltcp writes a frame we drop into the scratch buffer.
        let scratch_len = len.min(self.scratch.len());
        if self.learn_only {
            // The receiving worker answers; not a drop.
            return f(&mut self.scratch[..scratch_len]);
        }
        if self.sending.is_full() && self.tx.tx_burst(self.sending) == 0 {
            // Only a reply made while receiving gets here (`transmit` checks
            // for room): drop it, TCP recovers.
            self.stats.tx_full += 1;
            self.stats.tx_dropped += 1;
            return f(&mut self.scratch[..scratch_len]);
        }
        let Some(mut mbuf) = self.pool.alloc() else {
            self.stats.tx_errors += 1;
            return f(&mut self.scratch[..scratch_len]);
        };
        let Some(frame) = mbuf.append(len) else {
            self.stats.tx_errors += 1;
            return f(&mut self.scratch[..scratch_len]);
        };
        let result = f(frame);
        if self.offloads.tx_checksum {
            match checksum::prepare_offload(frame) {
                Offload::None => {}
                Offload::Ipv4 { l3_len } => mbuf.set_tx_offload(
                    14,
                    l3_len,
                    c::RTE_MBUF_F_TX_IPV4 | c::RTE_MBUF_F_TX_IP_CKSUM,
                ),
                Offload::Ipv4Tcp { l3_len } => mbuf.set_tx_offload(
                    14,
                    l3_len,
                    c::RTE_MBUF_F_TX_IPV4 | c::RTE_MBUF_F_TX_IP_CKSUM | c::RTE_MBUF_F_TX_TCP_CKSUM,
                ),
            }
        }
        self.stats.tx_frames += 1;
        self.stats.tx_bytes += len as u64;
        if self.sending.push(mbuf).is_err() {
            // Room was made above.
            self.stats.tx_dropped += 1;
        }
        result
    }
}

impl phy::Device for DpdkDevice {
    type RxToken<'a> = DpdkRxToken;
    type TxToken<'a> = DpdkTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(DpdkRxToken, DpdkTxToken<'_>)> {
        if let Some(copy) = self.arp.take(self.worker) {
            // Not counted: the receiving worker counted the frame.
            return Some((DpdkRxToken::Arp(copy), self.tx_token(true)));
        }
        // One burst at most per call: a flood of frames to drop (a stream
        // of foreign frames) must not keep the worker here.
        self.poll_rx();
        loop {
            let mbuf = self.received.pop()?;
            let Some(frame) = mbuf.data() else {
                self.stats.rx_segmented += 1;
                continue;
            };
            match self.verdict(&mbuf, frame) {
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
            if is_arp(frame) {
                self.arp.share(self.worker, frame);
            }
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += frame.len() as u64;
            if self.sending.len() >= self.burst {
                self.send_burst();
            }
            return Some((DpdkRxToken::Mbuf(mbuf), self.tx_token(false)));
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<DpdkTxToken<'_>> {
        if self.sending.len() >= self.burst {
            self.send_burst();
            if self.sending.is_full() {
                self.stats.tx_full += 1;
                return None;
            }
        }
        Some(self.tx_token(false))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = Some(self.burst);
        // Verified by the device on receive (by the port, or in software);
        // computed by the port on transmit where it can, else by smoltcp.
        let tx = if self.offloads.tx_checksum {
            Checksum::None
        } else {
            Checksum::Tx
        };
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = tx;
        checksum.tcp = tx;
        checksum.udp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}

impl PacketDevice for DpdkDevice {
    fn flush_tx(&mut self) {
        self.send_burst();
    }

    fn rx_ready(&self) -> bool {
        !self.received.is_empty()
    }

    fn tx_pending(&self) -> bool {
        !self.sending.is_empty()
    }

    fn wait_fds(&self, into: &mut Vec<RawFd>) {
        into.extend(self.intr_fd);
    }

    fn arm_wait(&mut self) -> bool {
        if self.intr_fd.is_none() {
            return false;
        }
        match self.rx.intr_enable() {
            Ok(()) => self.intr_armed = true,
            // net_tap's fd is its queue's own, readable whenever frames
            // wait: nothing to arm.
            Err(error) if error.code() == Some(libc::ENOTSUP) => {}
            Err(_) => return false,
        }
        // Frames that arrived before the interrupt was armed raise none.
        self.poll_rx();
        true
    }

    fn disarm_wait(&mut self) {
        if std::mem::take(&mut self.intr_armed) {
            let _ = self.rx.intr_disable();
        }
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn stats(&mut self) -> DeviceStats {
        self.stats
    }

    fn nic_stats(&mut self) -> Option<NicStats> {
        let port = self.port.as_ref()?.upgrade()?;
        let stats = port.stats().ok()?;
        Some(NicStats {
            rx_packets: stats.ipackets,
            tx_packets: stats.opackets,
            rx_bytes: stats.ibytes,
            tx_bytes: stats.obytes,
            rx_missed: stats.imissed,
            rx_errors: stats.ierrors,
            tx_errors: stats.oerrors,
            rx_nombuf: stats.rx_nombuf,
        })
    }
}
