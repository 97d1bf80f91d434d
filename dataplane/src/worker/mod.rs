//! A worker: one thread, pinned to one core, that owns its connections from
//! accept to close and runs to completion (architecture.md). [`core`] is its
//! sans-IO state, which the backends drive: a facade over parts that are
//! borrowed apart, so that a message can be routed with the index, the
//! queues and the rings in hand at once:
//!
//! - `connections`: the connections, their queues and the lists of those
//!   that need the backend, wait for ring room or hold answers;
//! - `backlog`: subscribers behind on their queues, which pace publishers;
//! - `subscriptions`: the local subscriptions and the interest index;
//! - `peers`: the rings to the other workers and what waits on them;
//! - `groups`: queue-group member picks;
//! - `hub`: the leaf-node link and the hub's interest, on the worker that
//!   owns the link;
//! - `limits`: the handshake deadline, publish rates, connections per IP;
//! - `delivery`: one message into its subscribers' queues;
//! - `sweep`: the tick's pass over every connection, in slices.

pub mod answers;
mod backlog;
mod connections;
pub mod core;
mod delivery;
pub mod dialect;
mod groups;
mod hub;
pub mod latency;
pub mod limits;
pub mod outbound;
pub mod payloads;
mod peers;
pub mod records;
mod subscriptions;
mod sweep;
pub mod sync;

#[cfg(test)]
mod tests;

pub use self::core::control::ControlPort;
pub use self::core::{ConnId, CoreConfig, Shared, WorkerCore};
pub use self::dialect::Dialect;
