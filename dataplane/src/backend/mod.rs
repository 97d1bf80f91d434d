//! Backends move bytes between the network and a [`WorkerCore`]: the only
//! I/O of the dataplane. `kernel` is the default (epoll on kernel sockets);
//! the user-space TCP backends (AF_PACKET, DPDK) come with their issues.
//!
//! [`WorkerCore`]: crate::worker::WorkerCore

pub mod afpacket;
pub mod kernel;
pub mod userspace;

use std::io;
use std::sync::Arc;

use mio::{Poll, Token, Waker};

/// The token of a worker's waker in its poll instance.
pub const WAKER: Token = Token(usize::MAX - 2);

/// The poll instance and waker of a worker, made before its thread starts so
/// that every worker can hold every other's waker.
pub struct WorkerPoll {
    pub(crate) poll: Poll,
    pub waker: Arc<Waker>,
}

impl WorkerPoll {
    pub fn new() -> io::Result<WorkerPoll> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(WorkerPoll { poll, waker })
    }
}
