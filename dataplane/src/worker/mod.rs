//! A worker: one thread, pinned to one core, that owns its connections from
//! accept to close and runs to completion (architecture.md). [`core`] is its
//! sans-IO state; the backends drive it.

pub mod answers;
pub mod core;
mod groups;
pub mod outbound;
pub mod payloads;
mod peers;
pub mod records;
mod subscriptions;
pub mod sync;

#[cfg(test)]
mod tests;

pub use self::core::control::ControlPort;
pub use self::core::{ConnId, CoreConfig, Shared, WorkerCore};
