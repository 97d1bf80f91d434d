//! The shared memory region: layout, doorbells and the split into
//! per-worker handles.

use std::fmt;
use std::io;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use memmap2::{MmapMut, MmapOptions};

use super::ring::{Consumer, Control, Producer};

/// Smallest accepted `ring_bytes`.
const MIN_RING_BYTES: usize = 4096;
/// Largest accepted `ring_bytes` (2 GiB; record lengths are `u32`s).
const MAX_RING_BYTES: usize = 1 << 31;
/// Alignment of the data area (and so, of every ring's data).
const PAGE: usize = 4096;

/// The mapping every handle keeps alive through an `Arc`.
///
/// Its bytes are only ever accessed through raw pointers taken once at
/// creation (never through `MmapMut`'s `Deref`), so no Rust reference covers
/// memory that another thread writes.
pub(crate) struct Mapping {
    _mmap: MmapMut,
}

/// A per-worker word in the region saying whether the worker is (about to
/// be) blocked waiting for events, and for which, so that its peers know
/// whether to wake it. See the wake-up protocol in the [module docs](super).
#[repr(C)]
pub struct Doorbell {
    state: AtomicU8,
}

/// What a worker is waiting for; see [`Doorbell::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Sleep {
    /// Running: nobody needs to wake it.
    Awake = 0,
    /// Blocked until records arrive (or its own events).
    OnRecords = 1,
    /// Blocked until records arrive or a consumer releases space of one of
    /// its rings: it has publishers stalled on a full ring, or answers
    /// waiting for a barrier.
    OnRecordsOrRelease = 2,
}

impl Doorbell {
    /// Called by the worker itself: a sleeping state just before its last
    /// checks before blocking (its incoming rings with
    /// [`Consumer::is_empty`], and for [`Sleep::OnRecordsOrRelease`] its
    /// consumers' positions), [`Sleep::Awake`] when it stays awake or wakes
    /// up. SeqCst store.
    #[inline]
    pub fn set(&self, state: Sleep) {
        self.state.store(state as u8, Ordering::SeqCst);
    }

    /// Called by a producer after [`Producer::publish`]: whether the worker
    /// must be woken. Issues a SeqCst fence before its SeqCst load so the
    /// preceding (Release) publish cannot be reordered after this check.
    #[inline]
    pub fn is_sleeping(&self) -> bool {
        fence(Ordering::SeqCst);
        self.state.load(Ordering::SeqCst) != Sleep::Awake as u8
    }

    /// Called by a consumer after [`Consumer::release`]: whether the worker
    /// (the ring's producer) sleeps until space is released. Fenced like
    /// [`is_sleeping`](Self::is_sleeping).
    #[inline]
    pub fn awaits_release(&self) -> bool {
        fence(Ordering::SeqCst);
        self.state.load(Ordering::SeqCst) == Sleep::OnRecordsOrRelease as u8
    }
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

/// Offsets inside the mapping.
#[derive(Debug, Clone, Copy)]
struct Layout {
    workers: usize,
    ring_bytes: usize,
    /// Offset of `workers` `CachePadded<Doorbell>`s (0).
    doorbells: usize,
    /// Offset of `rings()` `Control`s.
    controls: usize,
    /// Offset of `rings()` data areas of `ring_bytes` each, page-aligned.
    data: usize,
    total: usize,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Layout {
    fn new(workers: usize, ring_bytes: usize) -> io::Result<Layout> {
        if workers == 0 {
            return Err(invalid("rings: need at least one worker".into()));
        }
        if !ring_bytes.is_power_of_two() || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&ring_bytes)
        {
            return Err(invalid(format!(
                "rings: ring_bytes must be a power of two in {MIN_RING_BYTES}..={MAX_RING_BYTES}, got {ring_bytes}"
            )));
        }
        let too_big = || {
            invalid(format!(
                "rings: {workers} workers x {ring_bytes} ring bytes is too large"
            ))
        };
        let rings = workers.checked_mul(workers - 1).ok_or_else(too_big)?;
        let doorbells = 0;
        let controls =
            (workers * size_of::<CachePadded<Doorbell>>()).next_multiple_of(align_of::<Control>());
        let data = (controls + rings * size_of::<Control>()).next_multiple_of(PAGE);
        let total = rings
            .checked_mul(ring_bytes)
            .and_then(|d| d.checked_add(data))
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(too_big)?;
        Ok(Layout {
            workers,
            ring_bytes,
            doorbells,
            controls,
            data,
            total,
        })
    }

    fn rings(&self) -> usize {
        self.workers * (self.workers - 1)
    }

    /// Index of ring `(from, to)`, `from != to`, among `rings()`.
    fn ring(&self, from: usize, to: usize) -> usize {
        debug_assert!(from != to && from < self.workers && to < self.workers);
        let ring = from * (self.workers - 1) + if to < from { to } else { to - 1 };
        debug_assert!(ring < self.rings());
        ring
    }
}

/// Namespace of the region constructor: `RingRegion::new(workers,
/// ring_bytes)` creates the shared mapping and returns its [`RingSet`].
#[derive(Debug)]
pub enum RingRegion {}

impl RingRegion {
    /// Creates one anonymous mapping with a ring of `ring_bytes` data bytes
    /// for every ordered pair of distinct workers, plus one [`Doorbell`] per
    /// worker. `ring_bytes` must be a power of two, at least 4096 (and at
    /// most 2^31); `workers` at least 1. Invalid arguments give
    /// [`io::ErrorKind::InvalidInput`]; a failed mmap gives its OS error.
    ///
    /// The mapping is `workers * (workers - 1) * ring_bytes` bytes plus a
    /// few pages of control blocks; pages are faulted in on first touch.
    // `RingRegion` is only a namespace; the region it creates is a `RingSet`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(workers: usize, ring_bytes: usize) -> io::Result<RingSet> {
        RingRegion::with_pages(workers, ring_bytes, false)
    }

    /// Like [`new`](Self::new); with `hugepages`, in 2 MiB hugepages when
    /// the kernel has enough free (fewer TLB misses on the fan-out path),
    /// else in ordinary pages, saying so in the log. Hugepages are reserved
    /// at mmap time, so a later page fault cannot fail.
    pub fn with_pages(workers: usize, ring_bytes: usize, hugepages: bool) -> io::Result<RingSet> {
        const HUGEPAGE_BITS: u8 = 21;
        let layout = Layout::new(workers, ring_bytes)?;
        let huge = if hugepages {
            let len = layout.total.next_multiple_of(1 << HUGEPAGE_BITS);
            match MmapOptions::new()
                .len(len)
                .huge(Some(HUGEPAGE_BITS))
                .map_anon()
            {
                Ok(mmap) => {
                    tracing::info!(
                        bytes = len,
                        "the rings between workers are in 2 MiB hugepages"
                    );
                    Some(mmap)
                }
                Err(error) => {
                    tracing::info!(%error, bytes = len,
                        "no hugepages for the rings between workers: ordinary pages");
                    None
                }
            }
        } else {
            None
        };
        let mut mmap = match huge {
            Some(mmap) => mmap,
            None => MmapOptions::new().len(layout.total).map_anon()?,
        };
        let base = NonNull::new(mmap.as_mut_ptr())
            .ok_or_else(|| io::Error::other("rings: null mapping"))?;
        debug_assert_eq!(base.as_ptr() as usize % PAGE, 0);
        Ok(RingSet {
            map: Arc::new(Mapping { _mmap: mmap }),
            base,
            layout,
        })
    }
}

/// The whole region before it is split into per-worker handles.
pub struct RingSet {
    map: Arc<Mapping>,
    base: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a `RingSet` owns the region exclusively (no handle exists yet) and
// only hands out handles in `into_workers`; the pointer is to memory kept
// alive by `map`, which is itself `Send + Sync`.
unsafe impl Send for RingSet {}

impl RingSet {
    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.layout.workers
    }

    /// Data bytes of each ring.
    pub fn ring_bytes(&self) -> usize {
        self.layout.ring_bytes
    }

    /// Splits the region into one [`WorkerRings`] per worker, in worker id
    /// order. Worker `w` gets the producer of ring `(w, to)` at
    /// `outgoing[to]` and the consumer of ring `(from, w)` at
    /// `incoming[from]`; both are `None` at index `w`.
    pub fn into_workers(self) -> Vec<WorkerRings> {
        let RingSet { map, base, layout } = self;
        let doorbells = Doorbells {
            _map: map.clone(),
            // SAFETY: `layout.doorbells` (0) is inside the mapping, so the
            // pointer is in bounds and non-null; the mapping is page-aligned,
            // which satisfies `CachePadded`'s alignment, and `Layout::new`
            // reserved `workers` doorbells there.
            base: unsafe { NonNull::new_unchecked(base.as_ptr().add(layout.doorbells)) }.cast(),
            len: layout.workers,
        };
        let ring_parts = |from: usize, to: usize| {
            let ring = layout.ring(from, to);
            // SAFETY: `ring < rings()`, so both offsets lie inside the
            // mapping (`Layout::new` sized it for all rings); `controls` is a
            // multiple of `align_of::<Control>()` and `data` of the page
            // size, and `size_of::<Control>()` is a multiple of its alignment.
            unsafe {
                let ctrl = base
                    .as_ptr()
                    .add(layout.controls + ring * size_of::<Control>());
                let data = base.as_ptr().add(layout.data + ring * layout.ring_bytes);
                (
                    NonNull::new_unchecked(ctrl).cast::<Control>(),
                    NonNull::new_unchecked(data),
                )
            }
        };
        (0..layout.workers)
            .map(|id| {
                let outgoing = (0..layout.workers)
                    .map(|to| {
                        (to != id).then(|| {
                            let (ctrl, data) = ring_parts(id, to);
                            // SAFETY: ring `(id, to)` is inside the zeroed,
                            // aligned mapping (see `ring_parts`) and this is
                            // its only producer: each ordered pair is visited
                            // once as outgoing.
                            unsafe { Producer::new(map.clone(), ctrl, data, layout.ring_bytes) }
                        })
                    })
                    .collect();
                let incoming = (0..layout.workers)
                    .map(|from| {
                        (from != id).then(|| {
                            let (ctrl, data) = ring_parts(from, id);
                            // SAFETY: as above; each ordered pair is visited
                            // once as incoming, so this is its only consumer.
                            unsafe { Consumer::new(map.clone(), ctrl, data, layout.ring_bytes) }
                        })
                    })
                    .collect();
                WorkerRings {
                    id,
                    outgoing,
                    incoming,
                    doorbells: doorbells.clone(),
                }
            })
            .collect()
    }
}

impl fmt::Debug for RingSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSet")
            .field("layout", &self.layout)
            .finish()
    }
}

/// Every worker's doorbell, shared by all workers.
#[derive(Clone)]
struct Doorbells {
    /// Keeps the memory mapped.
    _map: Arc<Mapping>,
    base: NonNull<CachePadded<Doorbell>>,
    len: usize,
}

// SAFETY: the doorbells are atomics in memory kept alive by `map`; any number
// of threads may access them through shared references.
unsafe impl Send for Doorbells {}
// SAFETY: as above.
unsafe impl Sync for Doorbells {}

/// One worker's ends of the rings, indexed by peer worker id.
#[derive(Debug)]
pub struct WorkerRings {
    /// This worker's id.
    pub id: usize,
    /// `outgoing[to]` sends to worker `to`; `None` at `id`.
    pub outgoing: Vec<Option<Producer>>,
    /// `incoming[from]` receives from worker `from`; `None` at `id`.
    pub incoming: Vec<Option<Consumer>>,
    doorbells: Doorbells,
}

impl WorkerRings {
    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.doorbells.len
    }

    /// The doorbell of `worker` (any worker, this one included). Panics if
    /// `worker >= workers()`.
    pub fn doorbell(&self, worker: usize) -> &Doorbell {
        assert!(worker < self.doorbells.len, "no worker {worker}");
        // SAFETY: `worker < len`, so the element lies in the doorbell array
        // at the start of the mapping, which `doorbells._map` keeps alive at
        // least as long as `self`; it is zero-initialised (a valid
        // `AtomicU8`, `Sleep::Awake`), aligned, and only accessed through shared refs.
        unsafe { &*self.doorbells.base.as_ptr().add(worker) }
    }
}

impl fmt::Debug for Doorbells {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbells").field("len", &self.len).finish()
    }
}
