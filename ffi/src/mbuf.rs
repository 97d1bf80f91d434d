//! Owned mbufs and fixed-capacity bursts of them.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use crate::{sys, Mempool};

/// Reads one header field of an `Mbuf` through its raw pointer, never through
/// a reference to the whole header (another mbuf attached to this one may
/// update its refcnt concurrently).
macro_rules! field {
    ($m:ident . $f:ident) => {
        // SAFETY: the Mbuf's pointer is a valid mbuf it owns (from_raw's
        // contract); every field but refcnt is written only through
        // &mut Mbuf, and refcnt is never read this way.
        unsafe { (*$m.ptr.as_ptr()).$f }
    };
}

/// An owned packet mbuf (or chain of segments), freed on drop
/// (`rte_pktmbuf_free`). `'m` is a borrow of the pool it comes from (for a
/// received mbuf, of the pools of the port), so it cannot outlive the pool.
///
/// Byte access is single-segment only: [`data`](Mbuf::data) and
/// [`data_mut`](Mbuf::data_mut) return `None` for a chain (see
/// [`is_contiguous`](Mbuf::is_contiguous)); walk a chain with
/// [`segments`](Mbuf::segments).
///
/// ```compile_fail
/// # use blipmq_dpdk_sys::{Eal, Mempool, Result};
/// # fn f(eal: &Eal) -> Result<()> {
/// let m;
/// {
///     let pool = Mempool::pktmbuf(eal, "p", 1023, 0, Mempool::DEFAULT_DATA_ROOM, None)?;
///     m = pool.alloc();
/// } // error: `pool` does not live long enough
/// # Ok(())
/// # }
/// ```
#[repr(transparent)]
pub struct Mbuf<'m> {
    ptr: NonNull<sys::rte_mbuf>,
    _pool: PhantomData<&'m Mempool>,
}

// SAFETY: an Mbuf owns its mbuf exclusively (see from_raw), and pktmbuf
// pools are multi-producer/multi-consumer, so it may be used and freed on any
// thread.
unsafe impl Send for Mbuf<'_> {}
// SAFETY: the &self methods only read the mbuf; every write needs &mut self.
unsafe impl Sync for Mbuf<'_> {}

impl<'m> Mbuf<'m> {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid pktmbuf (or chain) from a multi-consumer pool
    /// that outlives `'m`, and the caller hands over its reference: nothing
    /// else may use this mbuf's header (or free it) while the `Mbuf` lives.
    /// Its data buffer may be shared (refcount > 1, indirect or external
    /// buffers): [`data_mut`](Mbuf::data_mut) checks for that.
    pub unsafe fn from_raw(ptr: NonNull<sys::rte_mbuf>) -> Mbuf<'m> {
        Mbuf {
            ptr,
            _pool: PhantomData,
        }
    }

    /// Gives up ownership without freeing; see [`from_raw`](Mbuf::from_raw).
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        ManuallyDrop::new(self).ptr
    }

    /// The raw mbuf, still owned by `self`.
    pub fn as_ptr(&self) -> *const sys::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// The raw mbuf, still owned by `self`, for writes.
    pub fn as_mut_ptr(&mut self) -> *mut sys::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// Packet length: the sum of every segment's data length.
    pub fn len(&self) -> usize {
        field!(self.pkt_len) as usize
    }

    /// Whether the packet has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of segments in the chain.
    pub fn nb_segs(&self) -> u16 {
        field!(self.nb_segs)
    }

    /// Whether the whole packet is in this one segment.
    pub fn is_contiguous(&self) -> bool {
        field!(self.nb_segs) == 1
            && field!(self.next).is_null()
            && field!(self.pkt_len) == u32::from(field!(self.data_len))
    }

    /// The input port the mbuf was received on.
    pub fn port(&self) -> u16 {
        field!(self.port)
    }

    /// Offload flags (`RTE_MBUF_F_*`).
    pub fn ol_flags(&self) -> u64 {
        field!(self.ol_flags)
    }

    /// The mbuf's reference count.
    pub fn refcnt(&self) -> u16 {
        // SAFETY: ptr is a valid mbuf; the read is atomic in C.
        unsafe { sys::blipmq_mbuf_refcnt_read(self.ptr.as_ptr()) }
    }

    /// Free bytes before the data in the first segment.
    pub fn headroom(&self) -> usize {
        // SAFETY: ptr is a valid mbuf; the call only reads its header.
        usize::from(unsafe { sys::blipmq_pktmbuf_headroom(self.ptr.as_ptr()) })
    }

    /// Free bytes after the data in the last segment.
    pub fn tailroom(&self) -> usize {
        // SAFETY: ptr is a valid mbuf chain; the calls only read headers.
        usize::from(unsafe {
            sys::blipmq_pktmbuf_tailroom(sys::blipmq_pktmbuf_lastseg(self.ptr.as_ptr()))
        })
    }

    /// Whether this mbuf's data buffer is ours alone to write: a direct mbuf
    /// (not attached to another one or to an external buffer) with a
    /// reference count of 1.
    pub fn is_writable(&self) -> bool {
        // SAFETY: ptr is a valid mbuf; the calls only read its header.
        unsafe {
            sys::blipmq_mbuf_is_direct(self.ptr.as_ptr()) != 0
                && sys::blipmq_mbuf_refcnt_read(self.ptr.as_ptr()) == 1
        }
    }

    /// The packet's bytes, if it is a single segment.
    pub fn data(&self) -> Option<&[u8]> {
        if !self.is_contiguous() {
            return None;
        }
        // SAFETY: one segment holds the whole packet: data_len bytes at
        // buf_addr + data_off, inside the buffer. They are initialised
        // (DPDK's memory comes zero-filled from the OS and is only written
        // since), and only written through data_mut, which needs &mut self
        // and an unshared buffer, so they do not change under this borrow.
        Some(unsafe { segment_bytes(self.ptr.as_ptr()) })
    }

    /// The packet's bytes for writing, if it is a single segment whose buffer
    /// is ours alone ([`is_writable`](Mbuf::is_writable)).
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_contiguous() || !self.is_writable() {
            return None;
        }
        // SAFETY: as in data(); besides, the buffer is referenced by this
        // mbuf only and &mut self excludes any other borrow of it.
        Some(unsafe { segment_bytes_mut(self.ptr.as_ptr()) })
    }

    /// The segments' bytes, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            next: self.ptr.as_ptr(),
            left: self.nb_segs(),
            _mbuf: PhantomData,
        }
    }

    /// Grows a single-segment, writable packet by `len` bytes at the end and
    /// returns them (their contents are whatever the buffer held: overwrite
    /// them); `None`, with nothing changed, when the tailroom is too small or
    /// the mbuf is a chain or shared.
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        if !self.is_contiguous() || !self.is_writable() {
            return None;
        }
        // SAFETY: ptr is a valid, exclusively owned single-segment mbuf;
        // append checks the tailroom and returns NULL without change if short.
        let p = unsafe { sys::blipmq_pktmbuf_append(self.ptr.as_ptr(), len16) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p points at len bytes inside this mbuf's own buffer, just
        // added to its data, initialised (see data()) and borrowed through
        // &mut self.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
    }

    /// Appends `bytes`; false (nothing changed) when [`append`](Mbuf::append)
    /// would return `None`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        match self.append(bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Grows a single-segment, writable packet by `len` bytes at the front
    /// (into the headroom) and returns them, to be overwritten; `None`, with
    /// nothing changed, when the headroom is too small or the mbuf is a chain
    /// or shared.
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        if !self.is_contiguous() || !self.is_writable() {
            return None;
        }
        // SAFETY: ptr is a valid, exclusively owned mbuf; prepend checks the
        // headroom and returns NULL without change if short.
        let p = unsafe { sys::blipmq_pktmbuf_prepend(self.ptr.as_ptr(), len16) };
        if p.is_null() {
            return None;
        }
        // SAFETY: as in append().
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
    }

    /// Removes `len` bytes from the front of the packet (the first segment);
    /// false, with nothing changed, when the first segment is shorter.
    pub fn adj(&mut self, len: usize) -> bool {
        let Ok(len16) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: ptr is a valid mbuf whose header we own; adj only moves
        // data_off/lengths and returns NULL without change if len is too big.
        !unsafe { sys::blipmq_pktmbuf_adj(self.ptr.as_ptr(), len16) }.is_null()
    }

    /// Removes `len` bytes from the end of the packet (the last segment);
    /// false, with nothing changed, when the last segment is shorter.
    pub fn trim(&mut self, len: usize) -> bool {
        let Ok(len16) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: ptr is a valid mbuf chain whose headers we own; trim only
        // changes lengths and fails without change if len is too big.
        unsafe { sys::blipmq_pktmbuf_trim(self.ptr.as_ptr(), len16) == 0 }
    }

    /// Prepares transmit offloads: sets the `l2_len` and `l3_len` fields
    /// and replaces the `RTE_MBUF_F_TX_*` bits of the offload flags with
    /// `tx_flags` (e.g. `RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM |
    /// RTE_MBUF_F_TX_TCP_CKSUM`; the port needs the matching
    /// `RTE_ETH_TX_OFFLOAD_*` enabled).
    ///
    /// # Panics
    ///
    /// If `l2_len` >= 128 or `l3_len` >= 512 (the widths of the fields), or
    /// `tx_flags` has bits outside `RTE_MBUF_F_TX_OFFLOAD_MASK`.
    pub fn set_tx_offload(&mut self, l2_len: u8, l3_len: u16, tx_flags: u64) {
        assert!(
            u64::from(l2_len) < 1 << sys::RTE_MBUF_L2_LEN_BITS
                && u64::from(l3_len) < 1 << sys::RTE_MBUF_L3_LEN_BITS,
            "l2_len {l2_len} / l3_len {l3_len} too large for the mbuf's fields"
        );
        assert_eq!(
            tx_flags & !sys::RTE_MBUF_F_TX_OFFLOAD_MASK,
            0,
            "not transmit offload flags"
        );
        let m = self.ptr.as_ptr();
        // SAFETY: m is a valid mbuf whose header we own (&mut self); the
        // values fit their bitfields (checked above).
        unsafe {
            sys::blipmq_mbuf_set_l2_len(m, l2_len.into());
            sys::blipmq_mbuf_set_l3_len(m, l3_len.into());
            let flags = sys::blipmq_mbuf_ol_flags(m);
            sys::blipmq_mbuf_set_ol_flags(m, (flags & !sys::RTE_MBUF_F_TX_OFFLOAD_MASK) | tx_flags);
        }
    }

    /// The `(l2_len, l3_len)` transmit offload fields.
    pub fn tx_offload_lens(&self) -> (u8, u16) {
        // SAFETY: ptr is a valid mbuf; the calls only read its header.
        unsafe {
            (
                sys::blipmq_mbuf_l2_len(self.ptr.as_ptr()) as u8,
                sys::blipmq_mbuf_l3_len(self.ptr.as_ptr()) as u16,
            )
        }
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: we own one reference to a valid mbuf (chain) whose pool is
        // alive ('m); rte_pktmbuf_free drops it and every segment.
        unsafe { sys::blipmq_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Mbuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len())
            .field("nb_segs", &self.nb_segs())
            .field("ol_flags", &format_args!("{:#x}", self.ol_flags()))
            .finish()
    }
}

/// # Safety
///
/// `m` must be a valid mbuf whose data bytes are initialised and not written
/// during `'a`.
unsafe fn segment_bytes<'a>(m: *const sys::rte_mbuf) -> &'a [u8] {
    // SAFETY: m is valid (caller); buf_addr + data_off (rte_pktmbuf_mtod)
    // points at data_len bytes of its buffer.
    unsafe {
        let data = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off));
        let len = usize::from((*m).data_len);
        if len == 0 {
            return &[];
        }
        std::slice::from_raw_parts(data, len)
    }
}

/// # Safety
///
/// As [`segment_bytes`], and nothing else may read or write the bytes during
/// `'a`.
unsafe fn segment_bytes_mut<'a>(m: *mut sys::rte_mbuf) -> &'a mut [u8] {
    // SAFETY: m is valid and its bytes are exclusively ours (caller);
    // buf_addr + data_off (rte_pktmbuf_mtod) points at data_len bytes of its
    // buffer.
    unsafe {
        let data = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off));
        let len = usize::from((*m).data_len);
        if len == 0 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut(data, len)
    }
}

/// Iterator over the segments of an [`Mbuf`], from [`Mbuf::segments`].
pub struct Segments<'a> {
    next: *const sys::rte_mbuf,
    left: u16,
    _mbuf: PhantomData<&'a Mbuf<'a>>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // Bounded by nb_segs even if a chain were malformed.
        if self.left == 0 || self.next.is_null() {
            return None;
        }
        self.left -= 1;
        let m = self.next;
        // SAFETY: m is a segment of the borrowed mbuf's chain (valid while
        // the Mbuf is borrowed); its bytes are initialised and only written
        // through &mut Mbuf (see Mbuf::data).
        unsafe {
            self.next = (*m).next;
            Some(segment_bytes(m))
        }
    }
}

/// Up to `N` owned mbufs in a fixed array (no allocation): what
/// [`RxQueue::rx_burst`](crate::RxQueue::rx_burst) fills,
/// [`TxQueue::tx_burst`](crate::TxQueue::tx_burst) sends and
/// [`Mempool::alloc_bulk`] allocates into. Mbufs still in it are freed when
/// it is cleared or dropped.
pub struct MbufBurst<'m, const N: usize> {
    /// `ptrs[..len]` are owned mbufs; the rest is scratch.
    ptrs: [*mut sys::rte_mbuf; N],
    len: usize,
    _pool: PhantomData<Mbuf<'m>>,
}

// SAFETY: a burst is a collection of owned Mbufs, which are Send.
unsafe impl<const N: usize> Send for MbufBurst<'_, N> {}
// SAFETY: &self only gives out &[Mbuf], and Mbuf is Sync.
unsafe impl<const N: usize> Sync for MbufBurst<'_, N> {}

impl<'m, const N: usize> Default for MbufBurst<'m, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'m, const N: usize> MbufBurst<'m, N> {
    /// An empty burst. `N` must fit a `u16` (DPDK's burst sizes).
    pub const fn new() -> Self {
        assert!(N <= u16::MAX as usize, "a burst holds at most 65535 mbufs");
        MbufBurst {
            ptrs: [std::ptr::null_mut(); N],
            len: 0,
            _pool: PhantomData,
        }
    }

    /// Number of mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it holds `N`.
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The mbufs held.
    pub fn as_slice(&self) -> &[Mbuf<'m>] {
        // SAFETY: ptrs[..len] are non-null owned mbufs, and Mbuf is a
        // repr(transparent) NonNull<rte_mbuf>, the same layout as a non-null
        // *mut rte_mbuf.
        unsafe { std::slice::from_raw_parts(self.ptrs.as_ptr().cast::<Mbuf<'m>>(), self.len) }
    }

    /// The mbufs held, mutably (to write them or swap them with others).
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf<'m>] {
        // SAFETY: as in as_slice; a swapped-in Mbuf is as owned and non-null.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptrs.as_mut_ptr().cast::<Mbuf<'m>>(), self.len)
        }
    }

    /// Adds `m` at the end; gives it back when the burst is full.
    pub fn push(&mut self, m: Mbuf<'m>) -> Result<(), Mbuf<'m>> {
        if self.len == N {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw().as_ptr();
        self.len += 1;
        Ok(())
    }

    /// Takes the last mbuf out.
    pub fn pop(&mut self) -> Option<Mbuf<'m>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let p = self.ptrs[self.len];
        // SAFETY: p was an owned, non-null mbuf in ptrs[..len]; it leaves the
        // burst, so ownership passes to the returned Mbuf.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }

    /// Takes every mbuf out, first to last; those the iterator has not yielded
    /// when it is dropped are freed.
    pub fn drain(&mut self) -> Drain<'_, 'm, N> {
        let end = self.len;
        // The burst owns nothing while the Drain exists: a leaked Drain
        // leaks mbufs, never frees them twice.
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end,
        }
    }

    /// Frees every mbuf held (`rte_pktmbuf_free_bulk`).
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        let n = self.len;
        self.len = 0;
        // SAFETY: ptrs[..n] are owned mbufs, no longer in the burst; the bulk
        // free drops each one's reference (segments included).
        unsafe { sys::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), n as u32) };
    }

    /// The free slots after the held mbufs, to be filled by DPDK.
    pub(crate) fn spare_capacity_ptr(&mut self) -> &mut [*mut sys::rte_mbuf] {
        &mut self.ptrs[self.len..]
    }

    /// Raw pointer to the held mbufs.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        self.ptrs.as_mut_ptr()
    }

    /// # Safety
    ///
    /// `ptrs[..len]` must be owned, non-null mbufs of pools that outlive 'm.
    pub(crate) unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= N);
        self.len = len;
    }

    /// Drops the first `n` entries without freeing them (DPDK took them) and
    /// moves the rest to the front.
    pub(crate) fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.ptrs.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl<const N: usize> Drop for MbufBurst<'_, N> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<const N: usize> fmt::Debug for MbufBurst<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Iterator from [`MbufBurst::drain`].
pub struct Drain<'a, 'm, const N: usize> {
    burst: &'a mut MbufBurst<'m, N>,
    next: usize,
    end: usize,
}

impl<'m, const N: usize> Iterator for Drain<'_, 'm, N> {
    type Item = Mbuf<'m>;

    fn next(&mut self) -> Option<Mbuf<'m>> {
        if self.next == self.end {
            return None;
        }
        let p = self.burst.ptrs[self.next];
        self.next += 1;
        // SAFETY: ptrs[next..end] are the owned mbufs the drain took over;
        // each is handed out once.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl<const N: usize> ExactSizeIterator for Drain<'_, '_, N> {}

impl<const N: usize> Drop for Drain<'_, '_, N> {
    fn drop(&mut self) {
        let n = self.end - self.next;
        if n > 0 {
            // SAFETY: ptrs[next..end] are owned mbufs not handed out; freed
            // once here (the burst's len is 0, so it will not free them).
            unsafe {
                sys::rte_pktmbuf_free_bulk(self.burst.ptrs.as_mut_ptr().add(self.next), n as u32)
            };
        }
    }
}
