//! The shared-memory stats segment (see `architecture.md`, "Control and
//! stats").
//!
//! Each worker publishes its counters in a block of a memory-mapped file
//! (or anonymous memory when no path is configured): a [`StatsSegment`] is
//! created by the broker, each worker gets the [`WorkerStats`] writer of its
//! own block, and `blipmqctl` (or anything else) opens the file with
//! [`StatsReader::open`] and takes [`Snapshot`]s, without ever slowing a
//! worker down.
//!
//! - **One writer per counter.** A worker block is written only by its
//!   worker, through a `Send + !Sync`, non-`Clone` [`WorkerStats`], so an
//!   increment is a relaxed load and a relaxed store, no atomic
//!   read-modify-write.
//! - **No false sharing.** Blocks are [`BLOCK_ALIGN`] (128) bytes aligned
//!   and sized, so two workers never write the same cache line (or pair of
//!   adjacent lines). Counters within a block are not padded: they have one
//!   writer.
//! - **Versioned.** The header (see the `layout` module source for the byte
//!   map) starts with `BLIPSTAT` and a [`LAYOUT_VERSION`]; a reader refuses
//!   any other version ([`StatsError::UnsupportedVersion`]). The counters and
//!   their order ([`Counter`]) are part of the version: changing them means
//!   bumping it.
//! - **Replaced, never truncated.** [`StatsSegment::create`] builds the file
//!   under a temporary name and renames it into place, so readers never see
//!   a partial header and a reader of an old segment is not faulted by a
//!   broker restart; [`StatsReader::replaced`] tells it to reopen.

mod counter;
pub mod latency;
mod layout;
// The mapped stats segment: its atomics are read from raw pointers.
#[allow(unsafe_code)]
mod reader;
#[allow(unsafe_code)]
mod segment;
mod snapshot;
#[cfg(test)]
mod tests;

pub use counter::{Aggregate, Counter, Kind};
pub use latency::LatencyHistogram;
pub use layout::{BLOCK_ALIGN, BLOCK_BYTES, HEADER_BYTES, LAYOUT_VERSION, MAGIC, MAX_WORKERS};
pub use reader::{StatsError, StatsReader};
pub use segment::{StatsSegment, WorkerStats};
pub use snapshot::{Rates, Snapshot};
