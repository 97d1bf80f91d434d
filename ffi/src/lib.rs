#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(blipmq_dpdk_missing)]
pub const AVAILABLE: bool = false;

#[cfg(not(blipmq_dpdk_missing))]
pub const AVAILABLE: bool = true;

#[cfg(not(blipmq_dpdk_missing))]
pub mod sys;
