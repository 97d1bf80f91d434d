//! User-space TCP (smoltcp) between a packet device and a [`WorkerCore`],
//! written once for every packet backend (AF_PACKET now, DPDK later).
//!
//! * [`PacketDevice`]: what a backend provides: a smoltcp `phy::Device`
//!   plus a tx kick, a readiness fd for sleeping, and counters. This is the
//!   only part a new backend writes.
//! * [`stack::Stack`]: the smoltcp interface, its sockets and the pool of
//!   listening sockets; it maps smoltcp socket handles to the core's
//!   connection ids.
//! * [`transport::UserspaceTransport`]: the backend [`Transport`] over the
//!   stack, which the one worker loop ([`crate::backend::driver`]) drives.
//! * [`heap`]: keeps the sockets' buffers out of the heap, so that an
//!   idle connection costs no resident memory for them.
//! * [`memory::MemoryDevice`]: an in-memory Ethernet link with seeded
//!   faults, on which the tests run the stack and whole workers on
//!   simulated time.
//!
//! [`WorkerCore`]: crate::worker::WorkerCore
//! [`Transport`]: crate::backend::Transport

pub mod checksum;
// Sets a malloc parameter: the only `unsafe` of the user-space stack.
pub mod heap;
pub mod memory;
pub mod segment;
pub mod stack;
pub mod transport;

#[cfg(test)]
mod tests;

use std::os::fd::RawFd;

use crate::stats::{Counter, WorkerStats};

pub use self::stack::{Stack, StackConfig, StackStats};
pub use self::transport::{UserspaceTransport, UserspaceWorker};

/// A packet I/O device the user-space stack runs on.
pub trait PacketDevice: smoltcp::phy::Device {
    /// Hands every frame queued since the last call to the hardware (one
    /// kick per burst).
    fn flush_tx(&mut self);
    /// Whether received frames are waiting (checked before sleeping).
    fn rx_ready(&self) -> bool;
    /// Whether queued frames could not be handed over yet (retry soon).
    fn tx_pending(&self) -> bool;
    /// Descriptors that poll readable when frames arrive; none if the
    /// device cannot wake the worker (it then naps between polls).
    fn wait_fds(&self, into: &mut Vec<RawFd>);
    /// Before sleeping on [`wait_fds`](Self::wait_fds): arms the device's
    /// wake-up (a NIC's receive interrupt) and takes in what arrived
    /// meanwhile (so that [`rx_ready`](Self::rx_ready) is current). Returns
    /// whether the descriptors will wake the worker when frames arrive.
    fn arm_wait(&mut self) -> bool {
        true
    }
    /// After the sleep: disarms what [`arm_wait`](Self::arm_wait) armed.
    fn disarm_wait(&mut self) {}
    /// The device's own MAC address.
    fn mac(&self) -> [u8; 6];
    /// The counters of this worker's queue; may ask the kernel (called at
    /// the core's tick, not per packet).
    fn stats(&mut self) -> DeviceStats;
    /// The whole port's counters, from the one worker that reports them.
    fn nic_stats(&mut self) -> Option<NicStats> {
        None
    }
}

/// A NIC's own counters for the whole port (DPDK's `rte_eth_stats`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NicStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

impl NicStats {
    /// Writes the counters into a worker's stats block.
    pub fn report(&self, stats: &WorkerStats) {
        stats.set(Counter::PortNicRxPackets, self.rx_packets);
        stats.set(Counter::PortNicTxPackets, self.tx_packets);
        stats.set(Counter::PortNicRxBytes, self.rx_bytes);
        stats.set(Counter::PortNicTxBytes, self.tx_bytes);
        stats.set(Counter::PortNicRxMissed, self.rx_missed);
        stats.set(Counter::PortNicRxErrors, self.rx_errors);
        stats.set(Counter::PortNicTxErrors, self.tx_errors);
        stats.set(Counter::PortNicRxNoMbuf, self.rx_nombuf);
    }
}

/// Counters of a packet device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Lost before the device took them: its receive ring was full.
    pub rx_missed: u64,
    /// Dropped: a checksum did not match or the headers were malformed.
    pub rx_corrupt: u64,
    /// Dropped: longer than the ring could hold.
    pub rx_truncated: u64,
    /// Dropped: a frame in several buffers (DPDK multi-segment mbufs).
    pub rx_segmented: u64,
    /// Dropped: not IPv4 or ARP.
    pub rx_ignored: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Replies dropped because the tx ring was full.
    pub tx_dropped: u64,
    /// Times the stack found the tx ring full.
    pub tx_full: u64,
    /// `sendto` kicks of the tx ring.
    pub tx_kicks: u64,
    pub tx_errors: u64,
    /// Frames the kernel refused.
    pub tx_rejected: u64,
}

/// Is `frame` an Ethernet ARP frame?
pub fn is_arp(frame: &[u8]) -> bool {
    frame.len() >= 14 && frame[12..14] == [0x08, 0x06]
}

/// Is `frame` an ARP reply?
pub fn is_arp_reply(frame: &[u8]) -> bool {
    is_arp(frame) && frame.len() >= 22 && frame[20..22] == [0, 2]
}

impl DeviceStats {
    /// Writes the counters, with the stack's, into a worker's stats block
    /// (the `port_*` counters).
    pub fn report(&self, stack: &StackStats, stats: &WorkerStats) {
        stats.set(Counter::PortRxPackets, self.rx_frames);
        stats.set(Counter::PortRxBytes, self.rx_bytes);
        stats.set(Counter::PortTxPackets, self.tx_frames);
        stats.set(Counter::PortTxBytes, self.tx_bytes);
        stats.set(Counter::PortTxBursts, self.tx_kicks);
        stats.set(Counter::PortRxMissed, self.rx_missed);
        stats.set(Counter::PortRxCorrupt, self.rx_corrupt);
        stats.set(Counter::PortRxForeign, self.rx_ignored);
        stats.set(Counter::PortRxTruncated, self.rx_truncated);
        stats.set(Counter::PortRxSegmented, self.rx_segmented);
        stats.set(Counter::PortRxNotOwned, stack.rx_not_owned);
        stats.set(Counter::PortSynsDropped, stack.syns_dropped);
        stats.set(Counter::PortTxDropped, self.tx_dropped);
        stats.set(Counter::PortTxFull, self.tx_full);
        stats.set(Counter::PortTxErrors, self.tx_errors + self.tx_rejected);
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::stats::StatsSegment;

    #[test]
    fn the_stack_drops_are_reported_with_the_device_counters() {
        let stats = StatsSegment::anonymous(1).unwrap().worker(0).unwrap();
        let device = DeviceStats {
            rx_frames: 7,
            ..DeviceStats::default()
        };
        let stack = StackStats {
            rx_not_owned: 3,
            syns_dropped: 2,
        };
        device.report(&stack, &stats);
        assert_eq!(stats.get(Counter::PortRxPackets), 7);
        assert_eq!(stats.get(Counter::PortRxNotOwned), 3);
        assert_eq!(stats.get(Counter::PortSynsDropped), 2);
    }
}
