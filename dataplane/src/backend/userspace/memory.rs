//! An Ethernet link in memory: two [`MemoryDevice`]s that pass frames to
//! each other, with faults drawn from a seeded PRNG. The test device of the
//! user-space stack (no root, no sockets, no threads, no clock), and the
//! smallest complete [`PacketDevice`]: the template a new device follows.
//!
//! # What it models
//!
//! A point-to-point cable between two NICs, MTU 1514 (an Ethernet frame
//! with a 1500-byte IP packet; no FCS). Each end has a tx queue that
//! [`PacketDevice::flush_tx`] hands to the link, as a real device's kick
//! does: a frame the stack sent is on the wire only after the flush (a
//! transport that forgets to flush hangs in tests as it would on hardware).
//! The link delivers frames in order, immediately, and never loses one,
//! unless told to ([`Faults`]). Nothing happens by time: frames move when
//! an end flushes and when the other end receives, so a test decides when
//! time passes (smoltcp takes it from the `Instant`s the test passes).
//!
//! Checksums: smoltcp computes them on transmit and verifies them on
//! receive (`ChecksumCapabilities::default()`), so a corrupted frame is
//! dropped by the receiving stack, as a NIC without offload would have it.
//!
//! Segmentation offload ([`MemoryConfig::with_segmentation_on_a`]): end `a`
//! takes TCP segments of up to [`SEGMENT_MAX_FRAME`] bytes and cuts each
//! into MTU-sized pieces with their own headers and checksums, as a NIC
//! with TSO (or the kernel's GSO) does; the pieces meet the faults one by
//! one.
//!
//! # Faults
//!
//! Each direction has its own [`Faults`] and its own PRNG stream
//! (splitmix64, seeded from [`MemoryConfig::seed`] and the direction).
//! When a flush hands a frame to the link, in this order:
//!
//! 1. queue limit: a link already holding `queue_limit` frames drops it
//!    (a full queue, or a bandwidth limit: the receiver takes frames only
//!    when it polls);
//! 2. loss: dropped with probability `loss`;
//! 3. corruption: with probability `corrupt`, one byte of an IPv4 frame's
//!    IP packet (past the Ethernet header, which the absent FCS would
//!    guard) is XORed with a random non-zero value. One changed byte always
//!    breaks the IP or TCP checksum. Frames without a checksum of their own
//!    (ARP) are left intact;
//! 4. duplication: with probability `duplicate`, a copy follows the frame;
//! 5. reordering: with probability `reorder`, the frame is held back until
//!    `reorder_depth` later frames have passed it (or until the receiver
//!    finds nothing else to take: reordering never loses a frame).
//!
//! Random numbers are drawn only for the faults that are enabled, so the
//! same seed and faults give the same run, frame for frame, as long as the
//! test drives both ends the same way (which a test on simulated time
//! does). [`MemoryDevice::fault_stats`] counts what was done.
//!
//! # Reproducing a failure
//!
//! A test that fails with faults should print its seed (the tests of this
//! crate do, and take `BLIPMQ_SEED` from the environment to replace their
//! default): the same seed replays the same faults on the same frames.
//!
//! # Buffers
//!
//! Frames live in `Vec<u8>`s of [`MTU`] capacity, recycled through a free
//! list shared by both ends: after warm-up no frame allocates
//! ([`MemoryDevice::buffers_allocated`] stops growing). The link state is
//! behind an `Arc<Mutex<_>>`, so either end may move to another thread;
//! the lock is uncontended when one thread drives both ends.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::{segment, DeviceStats, PacketDevice};

/// The largest frame the link carries: a 14-byte Ethernet header and a
/// 1500-byte IP packet.
pub const MTU: usize = 1514;
/// The largest frame an end with segmentation offload takes.
pub const SEGMENT_MAX_FRAME: usize = 14 + 63 * 1024;

const ETHERNET_HEADER: usize = 14;

/// What the link does to the frames of one direction. Probabilities are
/// from 0 (never) to 1 (always).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    /// How many later frames pass a frame held back (at least 1).
    pub reorder_depth: usize,
    pub corrupt: f64,
    /// Frames the direction holds at most (queued and held back); more are
    /// dropped. 0: no limit.
    pub queue_limit: usize,
}

impl Faults {
    /// A perfect link.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        reorder_depth: 3,
        corrupt: 0.0,
        queue_limit: 0,
    };
}

impl Default for Faults {
    fn default() -> Faults {
        Faults::NONE
    }
}

/// The settings of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    /// Seeds the fault PRNG of both directions.
    pub seed: u64,
    /// Faults of frames sent by end `a` (the first of [`MemoryDevice::pair`]).
    pub a_to_b: Faults,
    /// Faults of frames sent by end `b`.
    pub b_to_a: Faults,
    pub mac_a: [u8; 6],
    pub mac_b: [u8; 6],
    /// End `a` cuts TCP segments larger than the link (TSO).
    pub segmentation_a: bool,
}

impl MemoryConfig {
    /// A perfect link with the default MACs (locally administered
    /// 02:00:00:00:00:0a and :0b).
    pub fn new(seed: u64) -> MemoryConfig {
        MemoryConfig {
            seed,
            a_to_b: Faults::NONE,
            b_to_a: Faults::NONE,
            mac_a: [0x02, 0, 0, 0, 0, 0x0a],
            mac_b: [0x02, 0, 0, 0, 0, 0x0b],
            segmentation_a: false,
        }
    }

    /// End `a` takes TCP segments larger than the link and cuts them.
    pub fn with_segmentation_on_a(mut self) -> MemoryConfig {
        self.segmentation_a = true;
        self
    }

    /// The same faults in both directions.
    pub fn with_faults(mut self, faults: Faults) -> MemoryConfig {
        self.a_to_b = faults;
        self.b_to_a = faults;
        self
    }
}

/// What the link did to the frames of one direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames handed to the link (by flushes).
    pub sent: u64,
    /// Frames the receiving end took (copies included).
    pub delivered: u64,
    pub lost: u64,
    /// Dropped because the direction held `queue_limit` frames.
    pub queue_full: u64,
    pub corrupted: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames held back behind later ones.
    pub reordered: u64,
}

/// splitmix64: a tiny seedable PRNG whose streams are good enough to draw
/// faults from.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xa076_1d64_78bd_642f));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p` (no draw when `p` is 0).
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A frame held back, and how many more frames must pass it.
struct Held {
    frame: Vec<u8>,
    passes: usize,
}

/// One direction of the link.
struct Wire {
    faults: Faults,
    rng: Rng,
    queue: VecDeque<Vec<u8>>,
    held: VecDeque<Held>,
    stats: FaultStats,
}

impl Wire {
    fn new(faults: Faults, rng: Rng) -> Wire {
        Wire {
            faults,
            rng,
            queue: VecDeque::new(),
            held: VecDeque::new(),
            stats: FaultStats::default(),
        }
    }

    fn in_flight(&self) -> usize {
        self.queue.len() + self.held.len()
    }

    fn is_full(&self) -> bool {
        self.faults.queue_limit > 0 && self.in_flight() >= self.faults.queue_limit
    }

    /// A frame from a flush: apply the faults and queue what is left.
    fn enter(&mut self, mut frame: Vec<u8>, pool: &mut Pool) {
        self.stats.sent += 1;
        if self.is_full() {
            self.stats.queue_full += 1;
            pool.put(frame);
            return;
        }
        if self.rng.chance(self.faults.loss) {
            self.stats.lost += 1;
            pool.put(frame);
            return;
        }
        if self.rng.chance(self.faults.corrupt) && is_ipv4(&frame) {
            let at = ETHERNET_HEADER + self.rng.below(frame.len() - ETHERNET_HEADER);
            frame[at] ^= 1 + self.rng.below(255) as u8;
            self.stats.corrupted += 1;
        }
        let copy = self.rng.chance(self.faults.duplicate).then(|| {
            let mut copy = pool.take();
            copy.extend_from_slice(&frame);
            copy
        });
        if self.rng.chance(self.faults.reorder) {
            self.stats.reordered += 1;
            self.held.push_back(Held {
                frame,
                passes: self.faults.reorder_depth.max(1),
            });
        } else {
            self.pass(frame);
        }
        if let Some(copy) = copy {
            if self.is_full() {
                pool.put(copy);
            } else {
                self.stats.duplicated += 1;
                self.pass(copy);
            }
        }
    }

    /// Queues a frame; held frames it was the last to pass follow it.
    fn pass(&mut self, frame: Vec<u8>) {
        self.queue.push_back(frame);
        let mut i = 0;
        while i < self.held.len() {
            self.held[i].passes -= 1;
            if self.held[i].passes == 0 {
                let held = self.held.remove(i).expect("in range");
                self.queue.push_back(held.frame);
            } else {
                i += 1;
            }
        }
    }

    /// The next frame for the receiver; held frames go when nothing else is
    /// left to pass them.
    fn take(&mut self) -> Option<Vec<u8>> {
        let frame = self
            .queue
            .pop_front()
            .or_else(|| self.held.pop_front().map(|h| h.frame))?;
        self.stats.delivered += 1;
        Some(frame)
    }
}

fn is_ipv4(frame: &[u8]) -> bool {
    frame.len() > ETHERNET_HEADER && frame[12..14] == [0x08, 0x00]
}

/// Frame buffers not in use.
#[derive(Default)]
struct Pool {
    free: Vec<Vec<u8>>,
    allocated: u64,
}

impl Pool {
    fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| {
            self.allocated += 1;
            Vec::with_capacity(MTU)
        })
    }

    fn put(&mut self, mut frame: Vec<u8>) {
        frame.clear();
        self.free.push(frame);
    }
}

/// Both directions; `wires[e]` carries what end `e` sends.
struct Link {
    wires: [Wire; 2],
    pool: Pool,
}

type SharedLink = Arc<Mutex<Link>>;

fn lock(link: &SharedLink) -> MutexGuard<'_, Link> {
    // A test that panicked while holding the lock leaves a link that is
    // still consistent (every update is a single push or pop).
    link.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One end of an in-memory Ethernet link (see the module documentation).
pub struct MemoryDevice {
    link: SharedLink,
    /// 0 for `a`, 1 for `b`.
    end: usize,
    mac: [u8; 6],
    /// Frames sent since the last flush.
    staged: Vec<Vec<u8>>,
    stats: DeviceStats,
    /// Cuts TCP segments larger than the link.
    segmentation: bool,
    /// Segments it cut.
    segments_cut: u64,
}

impl MemoryDevice {
    /// The two ends of a new link: `a` and `b`.
    pub fn pair(config: MemoryConfig) -> (MemoryDevice, MemoryDevice) {
        let link = Arc::new(Mutex::new(Link {
            wires: [
                Wire::new(config.a_to_b, Rng::new(config.seed, 1)),
                Wire::new(config.b_to_a, Rng::new(config.seed, 2)),
            ],
            pool: Pool::default(),
        }));
        let end = |end, mac, segmentation| MemoryDevice {
            link: link.clone(),
            end,
            mac,
            staged: Vec::new(),
            stats: DeviceStats::default(),
            segmentation,
            segments_cut: 0,
        };
        (
            end(0, config.mac_a, config.segmentation_a),
            end(1, config.mac_b, false),
        )
    }

    /// What the link did to the frames this end sent, and to those it
    /// received.
    pub fn fault_stats(&self) -> (FaultStats, FaultStats) {
        let link = lock(&self.link);
        (link.wires[self.end].stats, link.wires[1 - self.end].stats)
    }

    /// Changes the faults of the frames this end sends and of those it
    /// receives (from the next flush on).
    pub fn set_faults(&self, outgoing: Faults, incoming: Faults) {
        let mut link = lock(&self.link);
        link.wires[self.end].faults = outgoing;
        link.wires[1 - self.end].faults = incoming;
    }

    /// Frames on the link in either direction, held back ones included
    /// (not the ends' unflushed tx queues).
    pub fn in_flight(&self) -> usize {
        let link = lock(&self.link);
        link.wires[0].in_flight() + link.wires[1].in_flight()
    }

    /// TCP segments this end cut into MTU-sized pieces.
    pub fn segments_cut(&self) -> u64 {
        self.segments_cut
    }

    /// Frame buffers the link ever allocated (both ends).
    pub fn buffers_allocated(&self) -> u64 {
        lock(&self.link).pool.allocated
    }
}

pub struct MemoryRxToken<'a> {
    frame: Vec<u8>,
    link: &'a SharedLink,
}

impl phy::RxToken for MemoryRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let result = f(&self.frame);
        lock(self.link).pool.put(self.frame);
        result
    }
}

pub struct MemoryTxToken<'a> {
    link: &'a SharedLink,
    staged: &'a mut Vec<Vec<u8>>,
    stats: &'a mut DeviceStats,
    /// Some: this end cuts large TCP segments (counted here).
    segments_cut: Option<&'a mut u64>,
}

impl phy::TxToken for MemoryTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = lock(self.link).pool.take();
        frame.resize(len, 0);
        let result = f(&mut frame);
        if let (true, Some(cut)) = (len > MTU, self.segments_cut) {
            let mut link = lock(self.link);
            let Link { pool, .. } = &mut *link;
            let staged = &mut *self.staged;
            let pieces =
                segment::cut_tcp_segment(&frame, MTU, || pool.take(), |piece| staged.push(piece));
            if pieces > 0 {
                *cut += 1;
                self.stats.tx_frames += pieces as u64;
                self.stats.tx_bytes += len as u64;
            } else {
                self.stats.tx_dropped += 1;
            }
            pool.put(frame);
        } else if len > MTU {
            // Larger than the link carries: a NIC would refuse it.
            self.stats.tx_dropped += 1;
            lock(self.link).pool.put(frame);
        } else {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += len as u64;
            self.staged.push(frame);
        }
        result
    }
}

impl phy::Device for MemoryDevice {
    type RxToken<'a> = MemoryRxToken<'a>;
    type TxToken<'a> = MemoryTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(MemoryRxToken<'_>, MemoryTxToken<'_>)> {
        let frame = lock(&self.link).wires[1 - self.end].take()?;
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.len() as u64;
        Some((
            MemoryRxToken {
                frame,
                link: &self.link,
            },
            MemoryTxToken {
                link: &self.link,
                staged: &mut self.staged,
                stats: &mut self.stats,
                segments_cut: self.segmentation.then_some(&mut self.segments_cut),
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<MemoryTxToken<'_>> {
        Some(MemoryTxToken {
            link: &self.link,
            staged: &mut self.staged,
            stats: &mut self.stats,
            segments_cut: self.segmentation.then_some(&mut self.segments_cut),
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = if self.segmentation {
            SEGMENT_MAX_FRAME
        } else {
            MTU
        };
        // Computed on transmit and verified on receive by smoltcp: this
        // device checks nothing itself, and corrupts frames.
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

impl PacketDevice for MemoryDevice {
    fn flush_tx(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        self.stats.tx_kicks += 1;
        let mut guard = lock(&self.link);
        let Link { wires, pool } = &mut *guard;
        for frame in self.staged.drain(..) {
            wires[self.end].enter(frame, pool);
        }
    }

    fn rx_ready(&self) -> bool {
        lock(&self.link).wires[1 - self.end].in_flight() > 0
    }

    fn tx_pending(&self) -> bool {
        !self.staged.is_empty()
    }

    fn wait_fds(&self, _into: &mut Vec<RawFd>) {
        // Nothing to sleep on: a worker over this device spins (tests drive
        // it with `Driver::turn`).
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// `tx_dropped` counts frames larger than [`MTU`] and those the link
    /// dropped because its queue was full.
    fn stats(&mut self) -> DeviceStats {
        let mut stats = self.stats;
        stats.tx_dropped += lock(&self.link).wires[self.end].stats.queue_full;
        stats
    }
}

#[cfg(test)]
mod tests;
