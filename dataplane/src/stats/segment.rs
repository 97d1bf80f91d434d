//! The writer side: creating a segment and the per-worker handles.

use std::cell::Cell;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::{Mmap, MmapMut, MmapOptions};

use super::latency::{
    bucket_of, LatencyHistogram, FIRST_BUCKET_CELL, LATENCY_CELLS, MAX_CELL, SUM_CELL,
};
use super::layout::{counter_offset, latency_offset, segment_bytes, Header, MAX_WORKERS};
use super::{Counter, Snapshot, StatsReader};

/// The mapping every handle keeps alive through an `Arc`.
///
/// Its bytes are only accessed through raw pointers taken once when it is
/// created (never through `Mmap`'s `Deref`), so no Rust reference to plain
/// bytes covers memory another thread or process writes.
pub(crate) enum Mapping {
    // The fields are only held to keep the memory mapped.
    #[allow(dead_code)]
    ReadWrite(MmapMut),
    #[allow(dead_code)]
    ReadOnly(Mmap),
}

/// Read access to the counters of a mapped, validated segment.
pub(crate) struct View {
    map: Arc<Mapping>,
    pub(crate) base: NonNull<u8>,
    pub(crate) header: Header,
}

// SAFETY: `base` points into memory kept alive by `map` (itself `Send +
// Sync`); through a `View` that memory is only read: the header with plain
// reads (it is never written after the segment is published) and the
// counters with relaxed atomic loads, which any number of threads may do.
unsafe impl Send for View {}
// SAFETY: as above.
unsafe impl Sync for View {}

impl View {
    /// # Safety
    ///
    /// `base` must point to the start of `map`'s memory, which must be at
    /// least `segment_bytes(header.workers)` long, 8-byte aligned, and hold
    /// `header` at offset 0.
    pub(crate) unsafe fn new(map: Arc<Mapping>, base: NonNull<u8>, header: Header) -> View {
        View { map, base, header }
    }

    pub(crate) fn workers(&self) -> usize {
        self.header.workers as usize
    }

    /// The counter cell; panics if `worker` is out of range.
    #[inline]
    fn cell(&self, worker: usize, counter: Counter) -> &AtomicU64 {
        assert!(worker < self.workers(), "no worker {worker}");
        // SAFETY: `worker < workers` and `counter < Counter::COUNT`, so the
        // offset lies inside the mapping (`View::new`'s contract); it is a
        // multiple of 8 from an 8-aligned base, so the `AtomicU64` is
        // aligned, and the bytes are zero-initialised or written only as
        // `AtomicU64`s. A read-only mapping is only read with relaxed
        // loads of register width, which the `core::sync::atomic` docs
        // ("Atomic accesses to read-only memory") allow.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(counter_offset(worker, counter))
                .cast()
        }
    }

    /// Relaxed load of one counter.
    #[inline]
    pub(crate) fn load(&self, worker: usize, counter: Counter) -> u64 {
        self.cell(worker, counter).load(Ordering::Relaxed)
    }

    /// Worker `worker`'s latency histogram, cell by cell.
    fn latency(&self, worker: usize) -> LatencyHistogram {
        assert!(worker < self.workers(), "no worker {worker}");
        let cells: Vec<u64> = (0..LATENCY_CELLS)
            .map(|cell| {
                // SAFETY: as in `cell`: `worker < workers` and `cell <
                // LATENCY_CELLS`, so the aligned `AtomicU64` lies inside
                // the block, which the layout sizes for the counters and
                // the latency cells.
                let atomic: &AtomicU64 =
                    unsafe { &*self.base.as_ptr().add(latency_offset(worker, cell)).cast() };
                atomic.load(Ordering::Relaxed)
            })
            .collect();
        LatencyHistogram::from_cells(&cells)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let workers = (0..self.workers())
            .map(|w| Counter::ALL.iter().map(|&c| self.load(w, c)).collect())
            .collect();
        let latency = (0..self.workers()).map(|w| self.latency(w)).collect();
        Snapshot::new(
            self.header.pid,
            self.header.start_unix_nanos,
            unix_nanos(SystemTime::now()),
            workers,
        )
        .with_latency(latency)
    }

    fn clone_view(&self) -> View {
        View {
            map: self.map.clone(),
            base: self.base,
            header: self.header,
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it, saturating in 2554).
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A stats segment, as created by the broker: a header and one block of
/// counters per worker, in a shared file ([`create`](Self::create)) or in
/// anonymous memory ([`anonymous`](Self::anonymous)).
///
/// Each worker gets its block's writer, a [`WorkerStats`], once, from
/// [`worker`](Self::worker) or [`into_writers`](Self::into_writers). Any
/// number of readers ([`StatsReader`], in this process or another) may read
/// at any time; nothing a reader does delays a writer.
///
/// The file is left in place when the segment is dropped (its last values
/// and heartbeat stay readable for post-mortems); the next
/// [`create`](Self::create) on the same path replaces it.
pub struct StatsSegment {
    view: View,
    path: Option<PathBuf>,
    taken: Box<[AtomicBool]>,
}

impl StatsSegment {
    /// Creates the segment file at `path` for `workers` workers, with this
    /// process's id and the current time in the header and every counter
    /// zero.
    ///
    /// The file is built under a temporary name next to `path`
    /// (`<path>.tmp.<pid>`) and renamed over `path` once complete, so a
    /// reader never sees a half-written header, and a reader still mapping
    /// an earlier broker's file keeps its (now stale) copy instead of
    /// having it truncated under it (which would be a SIGBUS).
    ///
    /// Put it on a tmpfs (`/dev/shm`, `/run`): on a disk file system the
    /// kernel would write the dirty counter pages back periodically.
    ///
    /// Errors: [`io::ErrorKind::InvalidInput`] unless `1 <= workers <=
    /// MAX_WORKERS`; otherwise the OS error of creating, sizing, mapping or
    /// renaming the file, with `path` in the message.
    pub fn create(path: &Path, workers: usize) -> io::Result<StatsSegment> {
        check_workers(workers)?;
        let with_path = |e: io::Error| {
            io::Error::new(e.kind(), format!("stats segment {}: {e}", path.display()))
        };
        let mut tmp = OsString::from(path.as_os_str());
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let build = || -> io::Result<MmapMut> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.set_len(segment_bytes(workers) as u64)?;
            // SAFETY: the file was just created (truncated) by this process
            // under a private name and sized above; its memory is only
            // accessed through raw pointers (see `Mapping`). Another process
            // truncating the file later could fault our accesses; the
            // segment's documented owner is the broker alone.
            let map = unsafe { MmapMut::map_mut(&file)? };
            if map.len() != segment_bytes(workers) {
                return Err(io::Error::other("mapping has an unexpected size"));
            }
            Ok(map)
        };
        let map = match build() {
            Ok(map) => map,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(with_path(e));
            }
        };
        let segment = StatsSegment::from_map(map, workers, Some(path.to_path_buf()));
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(with_path(e));
        }
        Ok(segment)
    }

    /// Creates a segment in anonymous memory, readable only in this process
    /// (through [`reader`](Self::reader) or [`snapshot`](Self::snapshot)):
    /// for tests, and for brokers configured without a stats path.
    ///
    /// Errors as [`create`](Self::create), without the file ones.
    pub fn anonymous(workers: usize) -> io::Result<StatsSegment> {
        check_workers(workers)?;
        let map = MmapOptions::new().len(segment_bytes(workers)).map_anon()?;
        Ok(StatsSegment::from_map(map, workers, None))
    }

    /// Writes the header into a fresh, zeroed, correctly sized mapping.
    fn from_map(mut map: MmapMut, workers: usize, path: Option<PathBuf>) -> StatsSegment {
        let header = Header::new(workers, std::process::id(), unix_nanos(SystemTime::now()));
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap returned null");
        // SAFETY: the mapping is page-aligned (so aligned for `Header`) and
        // at least `segment_bytes(workers) >= HEADER_BYTES` long; nothing
        // else references it yet.
        unsafe { base.as_ptr().cast::<Header>().write(header) };
        let map = Arc::new(Mapping::ReadWrite(map));
        // SAFETY: `base` is the start of `map`, sized for `workers` blocks,
        // page-aligned, with `header` just written at offset 0.
        let view = unsafe { View::new(map, base, header) };
        StatsSegment {
            view,
            path,
            taken: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Number of worker blocks.
    pub fn workers(&self) -> usize {
        self.view.workers()
    }

    /// The file, or `None` for an anonymous segment.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The writer of worker `id`'s block, the first time it is asked for;
    /// `None` if `id >= workers()` or it was handed out before.
    pub fn worker(&self, id: usize) -> Option<WorkerStats> {
        if self.taken.get(id)?.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: `id < workers` (checked by `taken.get`), so the block's
        // first counter lies inside the mapping; it is 8-byte aligned.
        let block = unsafe {
            NonNull::new_unchecked(
                self.view
                    .base
                    .as_ptr()
                    .add(counter_offset(id, Counter::ALL[0]))
                    .cast::<AtomicU64>(),
            )
        };
        // SAFETY: as above; the latency cells follow the counters in the
        // same block.
        let latency = unsafe {
            NonNull::new_unchecked(
                self.view
                    .base
                    .as_ptr()
                    .add(latency_offset(id, 0))
                    .cast::<AtomicU64>(),
            )
        };
        Some(WorkerStats {
            _view: self.view.clone_view(),
            block,
            latency,
            id,
            _not_sync: PhantomData,
        })
    }

    /// Every worker's writer, in id order. The memory stays mapped while any
    /// writer (or reader) lives.
    ///
    /// Panics if [`worker`](Self::worker) already handed one out.
    pub fn into_writers(self) -> Vec<WorkerStats> {
        (0..self.workers())
            .map(|id| {
                self.worker(id)
                    .unwrap_or_else(|| panic!("stats writer of worker {id} already handed out"))
            })
            .collect()
    }

    /// A reader of this segment sharing its mapping (works for anonymous
    /// segments too; [`StatsReader::replaced`] is then always `false`).
    pub fn reader(&self) -> StatsReader {
        StatsReader::from_view(self.view.clone_view(), None)
    }

    /// Reads every counter now; see [`StatsReader::snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        self.view.snapshot()
    }
}

fn check_workers(workers: usize) -> io::Result<()> {
    if (1..=MAX_WORKERS).contains(&workers) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("stats segment: workers must be in 1..={MAX_WORKERS}, got {workers}"),
        ))
    }
}

impl fmt::Debug for StatsSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsSegment")
            .field("path", &self.path)
            .field("header", &self.view.header)
            .finish()
    }
}

/// The writer of one worker's block: the only thing that writes it.
///
/// `Send` (it moves to its worker thread) but neither `Sync` nor `Clone`,
/// and [`StatsSegment`] hands out each worker's writer once, so each
/// counter has exactly one writing thread. That is why
/// [`add`](Self::add) can be a relaxed load plus a relaxed store instead of
/// an atomic read-modify-write (`lock xadd` on x86): no other thread can
/// store to the counter between the load and the store, so no increment is
/// lost, and readers, using relaxed loads, see either the old or the new
/// value, never a torn one. The stores are relaxed because readers need no
/// ordering between counters; a snapshot is a set of independent values,
/// not a consistent cut.
pub struct WorkerStats {
    /// Keeps the mapping alive.
    _view: View,
    /// Counter 0 of this worker's block.
    block: NonNull<AtomicU64>,
    /// Latency cell 0 of this worker's block.
    latency: NonNull<AtomicU64>,
    id: usize,
    /// Keeps `WorkerStats` `!Sync` (two threads sharing a writer could lose
    /// `add`s) whatever its other fields are.
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: the writer may move to another thread: `block` points into memory
// kept alive by `_view` (`Send`), and after the move the new thread is the
// block's only writer. It is not `Sync`, so it never has two.
unsafe impl Send for WorkerStats {}

impl WorkerStats {
    /// This writer's worker id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The cell of counter `c` in this worker's block (no bounds check on
    /// the hot path: the worker id was checked when the writer was made).
    #[inline]
    fn cell(&self, c: Counter) -> &AtomicU64 {
        // SAFETY: `block` is counter 0 of this worker's block, which holds
        // `Counter::COUNT` aligned `AtomicU64`s inside the mapping that
        // `self._view` keeps alive; `c as usize < Counter::COUNT`.
        unsafe { &*self.block.as_ptr().add(c as usize) }
    }

    /// Adds `n` (wrapping) to counter `c`.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        bump(self.cell(c), n);
    }

    /// Adds one to counter `c`.
    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Subtracts `n` (wrapping) from counter `c`: for gauges such as
    /// [`Counter::ConnectionsOpen`], or to take back an `add`.
    #[inline]
    pub fn sub(&self, c: Counter, n: u64) {
        let cell = self.cell(c);
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_sub(n),
            Ordering::Relaxed,
        );
    }

    /// Sets counter `c` to `v`.
    #[inline]
    pub fn set(&self, c: Counter, v: u64) {
        self.cell(c).store(v, Ordering::Relaxed);
    }

    /// Raises counter `c` to `v` if `v` is larger (for high-water marks).
    #[inline]
    pub fn max(&self, c: Counter, v: u64) {
        let cell = self.cell(c);
        if v > cell.load(Ordering::Relaxed) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// The current value of counter `c`.
    #[inline]
    pub fn get(&self, c: Counter) -> u64 {
        self.cell(c).load(Ordering::Relaxed)
    }

    /// Latency cell `cell` of this worker's block.
    #[inline]
    fn latency_cell(&self, cell: usize) -> &AtomicU64 {
        debug_assert!(cell < LATENCY_CELLS);
        // SAFETY: `latency` is latency cell 0 of this worker's block, which
        // holds `LATENCY_CELLS` aligned `AtomicU64`s inside the mapping
        // that `self._view` keeps alive; callers pass `cell <
        // LATENCY_CELLS` (a bucket index from `bucket_of`, or a fixed cell).
        unsafe { &*self.latency.as_ptr().add(cell) }
    }

    /// Records `count` messages that spent `nanos` in the broker (see
    /// [`crate::stats::latency`]): one bucket, the sum and the maximum,
    /// each a relaxed load and store, as [`add`](Self::add).
    #[inline]
    pub fn record_latency(&self, nanos: u64, count: u64) {
        bump(
            self.latency_cell(FIRST_BUCKET_CELL + bucket_of(nanos)),
            count,
        );
        bump(self.latency_cell(SUM_CELL), nanos.wrapping_mul(count));
        let max = self.latency_cell(MAX_CELL);
        if nanos > max.load(Ordering::Relaxed) {
            max.store(nanos, Ordering::Relaxed);
        }
    }

    /// This worker's latency histogram as recorded so far.
    pub fn latency(&self) -> LatencyHistogram {
        let cells: Vec<u64> = (0..LATENCY_CELLS)
            .map(|cell| self.latency_cell(cell).load(Ordering::Relaxed))
            .collect();
        LatencyHistogram::from_cells(&cells)
    }

    /// Sets [`Counter::HeartbeatUnixMs`] to the current time.
    pub fn heartbeat(&self) {
        self.set(
            Counter::HeartbeatUnixMs,
            unix_nanos(SystemTime::now()) / 1_000_000,
        );
    }
}

/// Adds `n` (wrapping) to a cell only this thread writes: a relaxed load
/// and a relaxed store (see [`WorkerStats`]).
#[inline]
fn bump(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl fmt::Debug for WorkerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerStats").field("id", &self.id).finish()
    }
}
