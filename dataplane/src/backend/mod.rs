//! Backends move bytes between the network and a [`WorkerCore`]: the only
//! I/O of the dataplane. `kernel` is the default (epoll on kernel sockets);
//! the user-space TCP backends (AF_PACKET, DPDK) come with their issues.
//!
//! [`WorkerCore`]: crate::worker::WorkerCore

pub mod afpacket;
pub mod kernel;
pub mod userspace;
