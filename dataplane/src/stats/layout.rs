//! Byte layout of a stats segment ([`LAYOUT_VERSION`]).
//!
//! ```text
//! offset  size  field
//! 0       8     magic             b"BLIPSTAT"
//! 8       4     version           u32, LAYOUT_VERSION
//! 12      4     workers           u32, number of worker blocks
//! 16      4     counters          u32, u64 counters per block (Counter::COUNT)
//! 20      4     block_bytes       u32, bytes per worker block (multiple of 128)
//! 24      4     header_bytes      u32, offset of block 0 (HEADER_BYTES)
//! 28      4     pid               u32, broker process id
//! 32      8     start_unix_nanos  u64, broker start time
//! 40      4     latency_buckets   u32, buckets of the latency histogram (LATENCY_BUCKETS)
//! 44      84    reserved, zero
//! 128           block of worker 0: `counters` AtomicU64s in Counter order,
//!               then the latency histogram's LATENCY_CELLS AtomicU64s (sum
//!               and max in ns, then the buckets, see `stats::latency`),
//!               zero padding up to `block_bytes`
//! 128 + w * block_bytes   block of worker w
//! ```
//!
//! Integers are in the host's byte order (the segment never leaves the
//! machine). `magic` and `version` stay at these offsets in every future
//! version, so a reader can always tell which version it is looking at.

use std::mem::size_of;

use super::latency::{LATENCY_BUCKETS, LATENCY_CELLS};
use super::Counter;

/// First bytes of every stats segment.
pub const MAGIC: [u8; 8] = *b"BLIPSTAT";
/// The layout version this build writes and reads.
pub const LAYOUT_VERSION: u32 = 8;
/// Bytes before the first worker block.
pub const HEADER_BYTES: usize = 128;
/// Alignment (and size granularity) of a worker block: two 64-byte cache
/// lines, so that blocks of different workers never share a line, nor a
/// pair of lines fetched together by the adjacent-line prefetcher.
pub const BLOCK_ALIGN: usize = 128;
/// Most workers a segment may hold.
pub const MAX_WORKERS: usize = 4096;
/// Bytes of one worker block.
pub const BLOCK_BYTES: usize =
    ((Counter::COUNT + LATENCY_CELLS) * size_of::<u64>()).next_multiple_of(BLOCK_ALIGN);

/// Offset of the `version` field; `magic` is at 0.
pub(crate) const VERSION_OFFSET: usize = 8;
/// Bytes a file needs before its magic and version can be read.
pub(crate) const MIN_PROBE_BYTES: usize = VERSION_OFFSET + size_of::<u32>();

/// The header, as laid out at offset 0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub workers: u32,
    pub counters: u32,
    pub block_bytes: u32,
    pub header_bytes: u32,
    pub pid: u32,
    pub start_unix_nanos: u64,
    pub latency_buckets: u32,
}

const _: () = assert!(size_of::<Header>() <= HEADER_BYTES);
const _: () = assert!(HEADER_BYTES.next_multiple_of(BLOCK_ALIGN) == HEADER_BYTES);
const _: () = assert!(BLOCK_BYTES >= (Counter::COUNT + LATENCY_CELLS) * size_of::<u64>());
const _: () = assert!(std::mem::offset_of!(Header, version) == VERSION_OFFSET);
const _: () = assert!(BLOCK_BYTES <= u32::MAX as usize);

impl Header {
    pub(crate) fn new(workers: usize, pid: u32, start_unix_nanos: u64) -> Header {
        Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            workers: workers as u32,
            counters: Counter::COUNT as u32,
            block_bytes: BLOCK_BYTES as u32,
            header_bytes: HEADER_BYTES as u32,
            pid,
            start_unix_nanos,
            latency_buckets: LATENCY_BUCKETS as u32,
        }
    }
}

/// Total bytes of a segment with `workers` blocks.
pub(crate) const fn segment_bytes(workers: usize) -> usize {
    HEADER_BYTES + workers * BLOCK_BYTES
}

/// Offset of counter `counter` of worker `worker`.
#[inline]
pub(crate) const fn counter_offset(worker: usize, counter: Counter) -> usize {
    HEADER_BYTES + worker * BLOCK_BYTES + counter as usize * size_of::<u64>()
}

/// Offset of latency cell `cell` (see `stats::latency`) of worker `worker`.
#[inline]
pub(crate) const fn latency_offset(worker: usize, cell: usize) -> usize {
    HEADER_BYTES + worker * BLOCK_BYTES + (Counter::COUNT + cell) * size_of::<u64>()
}
