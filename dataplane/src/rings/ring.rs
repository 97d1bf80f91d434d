//! One ring: the shared control block, the record format and the two ends.

use std::fmt;
use std::ptr::NonNull;
use std::slice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::region::Mapping;

/// Bytes of the header in front of every record.
const HEADER: usize = 8;
/// Header tag of a real record.
const TAG_RECORD: u32 = 0x5245_4331; // "REC1"
/// Header tag of a padding record that runs to the end of the ring.
const TAG_PAD: u32 = 0x5041_4421; // "PAD!"

/// The shared positions of one ring, living in the mapping.
///
/// Each position sits on its own cache line(s) so the producer's and the
/// consumer's stores never false-share. The cached copies of the other side's
/// position live in the (worker-local) handles, not here.
#[repr(C)]
pub(crate) struct Control {
    /// Producer position: bytes published. Stored only by the producer.
    tail: CachePadded<AtomicU64>,
    /// Consumer position: bytes released. Stored only by the consumer.
    head: CachePadded<AtomicU64>,
}

/// Bytes a record of `len` payload bytes occupies in the ring.
#[inline]
fn footprint(len: usize) -> usize {
    HEADER + ((len + 7) & !7)
}

#[inline]
fn header(len: usize, tag: u32) -> u64 {
    len as u64 | (u64::from(tag) << 32)
}

/// Where one ring lives; shared by the code of both ends.
struct Ring {
    /// Keeps the memory mapped while this handle exists.
    _map: Arc<Mapping>,
    ctrl: NonNull<Control>,
    data: NonNull<u8>,
    /// Data bytes, a power of two.
    cap: usize,
}

impl Ring {
    #[inline]
    fn ctrl(&self) -> &Control {
        // SAFETY: `ctrl` points to a `Control` inside the mapping that `_map`
        // keeps alive; the region is zero-initialised (a valid `Control`:
        // two zero `AtomicU64`s), properly aligned (checked by the layout),
        // and only ever accessed through shared references to its atomics.
        unsafe { self.ctrl.as_ref() }
    }

    #[inline]
    fn index(&self, pos: u64) -> usize {
        (pos & (self.cap as u64 - 1)) as usize
    }

    #[inline]
    fn max_record(&self) -> usize {
        self.cap / 2 - 16
    }
}

/// The sending end of one ring. See the [module docs](super).
pub struct Producer {
    ring: Ring,
    /// Committed position (published or not).
    write: u64,
    /// Position after the last publish: what the consumer may see.
    published: u64,
    /// Last consumer position loaded; the consumer is at least this far.
    cached_head: u64,
    /// Padding in front of the reserved record, if the reservation wraps.
    reserved_pad: usize,
    /// Footprint of the reserved record; 0 when nothing is reserved.
    reserved_foot: usize,
}

// SAFETY: the producer is the only writer of its ring's free space and of
// `tail`; all access to shared state goes through atomics or through memory
// that the Release/Acquire protocol hands over exclusively. Moving the handle
// to another thread moves that exclusive role with it. It is not `Sync`: two
// threads must not drive one producer.
unsafe impl Send for Producer {}

impl Producer {
    /// # Safety
    ///
    /// `ctrl` and `data` (of `cap` bytes, a power of two >= 4096) must lie in
    /// `map`, be suitably aligned, zeroed, and belong to one ring for which
    /// no other `Producer` exists.
    pub(crate) unsafe fn new(
        map: Arc<Mapping>,
        ctrl: NonNull<Control>,
        data: NonNull<u8>,
        cap: usize,
    ) -> Producer {
        Producer {
            ring: Ring {
                _map: map,
                ctrl,
                data,
                cap,
            },
            write: 0,
            published: 0,
            cached_head: 0,
            reserved_pad: 0,
            reserved_foot: 0,
        }
    }

    /// Data bytes of the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.ring.cap
    }

    /// The largest record length this ring accepts: `capacity() / 2 - 16`.
    /// A record of this size always fits into an empty ring.
    #[inline]
    pub fn max_record(&self) -> usize {
        self.ring.max_record()
    }

    /// Padding and footprint of a record of `len` bytes if it fits now.
    #[inline]
    fn room(&mut self, len: usize) -> Option<(usize, usize)> {
        if len > self.ring.max_record() {
            return None;
        }
        let cap = self.ring.cap;
        let foot = footprint(len);
        let to_end = cap - self.ring.index(self.write);
        let pad = if foot <= to_end { 0 } else { to_end };
        let end = self.write + (pad + foot) as u64;
        if end - self.cached_head > cap as u64 {
            // Looks full: see how far the consumer has got. Acquire pairs
            // with the consumer's Release in `release`, so its reads of the
            // space we are about to overwrite happened before our writes.
            self.cached_head = self.ring.ctrl().head.load(Ordering::Acquire);
            if end - self.cached_head > cap as u64 {
                return None;
            }
        }
        Some((pad, foot))
    }

    /// Whether [`try_reserve(len)`](Self::try_reserve) would succeed now. If
    /// it returns true, the next `try_reserve(len)` does succeed (the
    /// consumer only ever frees space). False for `len > max_record()`
    /// (after a `debug_assert!`).
    pub fn has_room(&mut self, len: usize) -> bool {
        debug_assert!(
            len <= self.max_record(),
            "ring record of {len} bytes exceeds max_record {}",
            self.max_record()
        );
        self.room(len).is_some()
    }

    /// Reserves space for one record of exactly `len` bytes and returns it
    /// for the caller to fill; [`commit`](Self::commit) then adds it to the
    /// pending batch. Returns `None` when the ring lacks room right now
    /// (backpressure: retry later, after the consumer released).
    ///
    /// The slice starts 8-byte aligned and holds stale bytes: write all of
    /// it. A reservation that is not committed is simply dropped by the next
    /// `try_reserve`; nothing of it becomes visible.
    ///
    /// `len > max_record()` is a caller bug: it panics in debug builds
    /// (`debug_assert!`) and returns `None` in release builds, which a caller
    /// that just retries would do forever, so callers must bound their
    /// record sizes by [`max_record`](Self::max_record).
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Option<&mut [u8]> {
        debug_assert!(
            len <= self.max_record(),
            "ring record of {len} bytes exceeds max_record {}",
            self.max_record()
        );
        let (pad, foot) = self.room(len)?;
        self.reserved_pad = pad;
        self.reserved_foot = foot;
        let start = self.ring.index(self.write + pad as u64);
        // SAFETY: `room` checked that `[write, write + pad + foot)` lies
        // within `cap` bytes of the consumer's released position, so the
        // consumer does not read any of it until we publish past it, and we
        // (the only producer, `&mut self`) write nothing else there. The
        // record does not straddle the end: `start + foot <= cap` (either it
        // fits before the end, or the pad moves it to offset 0 and
        // `foot <= cap / 2`). `start` is 8-aligned (positions advance by
        // multiples of 8 and the data area is page-aligned), so the `u64`
        // header write is aligned. The mapping's bytes are always
        // initialised, so the returned slice is valid `[u8]`, and it borrows
        // `self` mutably, so the caller cannot commit or publish while it is
        // still writing.
        unsafe {
            let record = self.ring.data.as_ptr().add(start);
            record.cast::<u64>().write(header(len, TAG_RECORD));
            Some(slice::from_raw_parts_mut(record.add(HEADER), len))
        }
    }

    /// Adds the record reserved by the last successful
    /// [`try_reserve`](Self::try_reserve) to the pending batch. It becomes
    /// visible to the consumer at the next [`publish`](Self::publish).
    /// Without a reservation, does nothing (and `debug_assert!`s).
    #[inline]
    pub fn commit(&mut self) {
        debug_assert!(self.reserved_foot != 0, "commit without a reservation");
        if self.reserved_foot == 0 {
            return;
        }
        let pad = self.reserved_pad;
        if pad != 0 {
            let at = self.ring.index(self.write);
            // SAFETY: the padding `[write, write + pad)` was checked free by
            // `room` together with the record (see `try_reserve`); `at` is
            // 8-aligned and `pad = cap - at >= 8`, so the header fits.
            unsafe {
                let padding = self.ring.data.as_ptr().add(at);
                padding.cast::<u64>().write(header(pad - HEADER, TAG_PAD));
            }
        }
        self.write += (pad + self.reserved_foot) as u64;
        self.reserved_pad = 0;
        self.reserved_foot = 0;
    }

    /// Makes every committed record visible to the consumer with one Release
    /// store of the producer position. Returns true if anything new was
    /// published. An outstanding (uncommitted) reservation stays pending.
    #[inline]
    pub fn publish(&mut self) -> bool {
        if self.write == self.published {
            return false;
        }
        // Release: the records' bytes (written before) are visible to a
        // consumer that Acquire-loads this position.
        self.ring.ctrl().tail.store(self.write, Ordering::Release);
        self.published = self.write;
        true
    }

    /// Producer position (bytes, monotonic) after the last
    /// [`publish`](Self::publish). Compare with
    /// [`consumer_position`](Self::consumer_position) for barriers.
    #[inline]
    pub fn published_position(&self) -> u64 {
        self.published
    }

    /// How far the consumer has processed and released (Acquire load).
    /// `consumer_position() >= p` for `p` an earlier
    /// [`published_position`](Self::published_position) means the consumer
    /// has finished with every record published up to `p`.
    #[inline]
    pub fn consumer_position(&self) -> u64 {
        self.ring.ctrl().head.load(Ordering::Acquire)
    }

    /// Bytes free for new records right now (approximate; for stats).
    /// Committed but unpublished records count as used; the padding a
    /// wrapping record needs does not.
    pub fn free_bytes(&self) -> usize {
        let head = self.ring.ctrl().head.load(Ordering::Relaxed);
        self.ring.cap - self.write.saturating_sub(head).min(self.ring.cap as u64) as usize
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.ring.cap)
            .field("write", &self.write)
            .field("published", &self.published)
            .field("cached_head", &self.cached_head)
            .finish()
    }
}

/// The receiving end of one ring. See the [module docs](super).
pub struct Consumer {
    ring: Ring,
    /// Position of the next record to look at (advanced, maybe unreleased).
    read: u64,
    /// Position after the last release: what the producer may reuse.
    released: u64,
    /// Last producer position loaded; the producer is at least this far.
    cached_tail: u64,
    /// Footprint of the record the last `peek` returned; 0 if none.
    current_foot: usize,
}

// SAFETY: the consumer is the only reader of its ring's published records and
// the only writer of `head`; all access to shared state goes through atomics
// or through memory that the Release/Acquire protocol hands over. Moving the
// handle to another thread moves that role with it. It is not `Sync`: two
// threads must not drive one consumer.
unsafe impl Send for Consumer {}

impl Consumer {
    /// # Safety
    ///
    /// As [`Producer::new`], for the consumer end: no other `Consumer` of
    /// this ring may exist.
    pub(crate) unsafe fn new(
        map: Arc<Mapping>,
        ctrl: NonNull<Control>,
        data: NonNull<u8>,
        cap: usize,
    ) -> Consumer {
        Consumer {
            ring: Ring {
                _map: map,
                ctrl,
                data,
                cap,
            },
            read: 0,
            released: 0,
            cached_tail: 0,
            current_foot: 0,
        }
    }

    /// Data bytes of the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.ring.cap
    }

    /// Index and length of the next record, skipping padding. `order` is
    /// the ordering of the producer-position reload (Acquire or SeqCst).
    #[inline]
    fn next(&mut self, order: Ordering) -> Option<(usize, usize)> {
        loop {
            if self.read == self.cached_tail {
                // Looks empty: see whether the producer published more.
                // Acquire (at least) pairs with the Release in `publish`, so
                // the records' bytes are visible below.
                self.cached_tail = self.ring.ctrl().tail.load(order);
                if self.read == self.cached_tail {
                    return None;
                }
            }
            let at = self.ring.index(self.read);
            // SAFETY: `read < cached_tail`, a position the producer published
            // after writing every header before it (Release/Acquire above or
            // on an earlier reload); `read` is always at a header (it moves
            // by whole records and paddings), 8-aligned and < cap, so the
            // aligned `u64` read is within the ring, and the producer does
            // not touch it until we release past it.
            let word = unsafe { self.ring.data.as_ptr().add(at).cast::<u64>().read() };
            let len = (word & u64::from(u32::MAX)) as usize;
            let tag = (word >> 32) as u32;
            if tag == TAG_PAD {
                debug_assert_eq!(
                    len,
                    self.ring.cap - at - HEADER,
                    "ring padding of wrong length"
                );
                self.read += (self.ring.cap - at) as u64;
                continue;
            }
            // Keeps `peek` sound even if the ring were corrupted.
            assert!(
                tag == TAG_RECORD && len <= self.ring.cap - at - HEADER,
                "corrupted ring record header {word:#018x} at {at}"
            );
            return Some((at, len));
        }
    }

    /// The next record, or `None` when the ring is empty. The slice borrows
    /// the ring memory in place (zero copy, 8-byte aligned). Calling `peek`
    /// again without [`advance`](Self::advance) returns the same record.
    #[inline]
    pub fn peek(&mut self) -> Option<&[u8]> {
        let Some((at, len)) = self.next(Ordering::Acquire) else {
            self.current_foot = 0;
            return None;
        };
        self.current_foot = footprint(len);
        // SAFETY: `next` checked `at + HEADER + len <= cap`; the bytes were
        // published by the producer (see `next`) and it will not overwrite
        // them until we release past this record, which needs `advance`
        // (`&mut self`), so not while the returned borrow lives.
        Some(unsafe { slice::from_raw_parts(self.ring.data.as_ptr().add(at + HEADER), len) })
    }

    /// Moves past the record the last [`peek`](Self::peek) returned, locally:
    /// the producer cannot reuse its space before [`release`](Self::release).
    /// Without a peeked record, does nothing (and `debug_assert!`s).
    #[inline]
    pub fn advance(&mut self) {
        debug_assert!(self.current_foot != 0, "advance without a peeked record");
        self.read += self.current_foot as u64;
        self.current_foot = 0;
    }

    /// Hands all advanced space back to the producer with one Release store
    /// of the consumer position (call once per drained batch). This is the
    /// position [`Producer::consumer_position`] reports.
    #[inline]
    pub fn release(&mut self) {
        if self.read != self.released {
            // Release: our reads of these records (and whatever we did while
            // processing them) happen before the producer reuses the space
            // or passes a barrier on this position.
            self.ring.ctrl().head.store(self.read, Ordering::Release);
            self.released = self.read;
        }
    }

    /// Whether no record is available. Reloads the producer position with a
    /// SeqCst load, so this is the re-check of the sleep protocol (see the
    /// [module docs](super)). Skips (locally) any padding it finds.
    #[inline]
    pub fn is_empty(&mut self) -> bool {
        self.next(Ordering::SeqCst).is_none()
    }

    /// Bytes between the released consumer position and the published
    /// producer position (for stats and high-water marks).
    pub fn occupancy(&self) -> usize {
        let tail = self.ring.ctrl().tail.load(Ordering::Relaxed);
        tail.saturating_sub(self.released) as usize
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.ring.cap)
            .field("read", &self.read)
            .field("released", &self.released)
            .field("cached_tail", &self.cached_tail)
            .finish()
    }
}
