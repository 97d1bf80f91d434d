//! Bindings to the system DPDK (22.11, found by `pkg-config libdpdk`) and a
//! thin safe layer over what a poll-mode TCP dataplane needs.
//!
//! * [`sys`]: bindgen's output over `wrapper.h` (allowlisted `rte_*`
//!   functions and types, `RTE_*` constants), the `blipmq_*` C shim that
//!   exports DPDK's static-inline fast path, and the `RTE_*` flag constants
//!   evaluated by the C compiler at build time ([`sys::consts`]).
//! * The safe layer: [`Eal`], [`Mempool`], [`Mbuf`] / [`MbufBurst`],
//!   [`Port`] with its [`RxQueue`] / [`TxQueue`], [`Memzone`]. Every DPDK
//!   `unsafe` of the crate lives in it.
//!
//! Without DPDK (no `pkg-config libdpdk`) the crate builds as a stub that
//! exports only [`AVAILABLE`]` == false`; the `required` feature turns that
//! case into a build error.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

/// Whether the crate was built against DPDK (false: a stub, nothing else).
#[cfg(blipmq_dpdk_missing)]
pub const AVAILABLE: bool = false;

/// Whether the crate was built against DPDK (false: a stub, nothing else).
#[cfg(not(blipmq_dpdk_missing))]
pub const AVAILABLE: bool = true;

#[cfg(not(blipmq_dpdk_missing))]
pub mod sys;

#[cfg(not(blipmq_dpdk_missing))]
mod eal;
#[cfg(not(blipmq_dpdk_missing))]
pub mod error;
#[cfg(not(blipmq_dpdk_missing))]
mod mbuf;
#[cfg(not(blipmq_dpdk_missing))]
mod mempool;
#[cfg(not(blipmq_dpdk_missing))]
mod memzone;
#[cfg(not(blipmq_dpdk_missing))]
mod port;

#[cfg(not(blipmq_dpdk_missing))]
pub use crate::{
    eal::{Eal, ThreadRegistration, ARGV0},
    error::{Error, Result},
    mbuf::{Drain, Mbuf, MbufBurst, Segments},
    mempool::Mempool,
    memzone::Memzone,
    port::{Link, Port, PortConf, PortInfo, PortStats, RxQueue, TxQueue, QUEUE_STAT_COUNTERS},
};
