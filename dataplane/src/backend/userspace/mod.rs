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
//! * [`memory::MemoryDevice`]: an in-memory Ethernet link with seeded
//!   faults, on which the tests run the stack and whole workers on
//!   simulated time.
//!
//! [`WorkerCore`]: crate::worker::WorkerCore
//! [`Transport`]: crate::backend::Transport

pub mod memory;
pub mod stack;
pub mod transport;

#[cfg(test)]
mod tests;

use std::os::fd::RawFd;

pub use self::stack::{Stack, StackConfig};
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
    /// device cannot sleep (the worker then spins).
    fn wait_fds(&self, into: &mut Vec<RawFd>);
    /// The device's own MAC address.
    fn mac(&self) -> [u8; 6];
    fn stats(&self) -> DeviceStats;
}

/// Counters of a packet device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Dropped: a checksum did not match or the headers were malformed.
    pub rx_corrupt: u64,
    /// Dropped: longer than the ring could hold.
    pub rx_truncated: u64,
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
