//! Packet mbuf pools.

use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::mbuf::{Mbuf, MbufBurst};
use crate::{sys, Eal};

/// A pktmbuf pool (`rte_pktmbuf_pool_create`), multi-producer and
/// multi-consumer, so `Send + Sync`: any thread may allocate from it and free
/// into it. Mbufs borrow the pool ([`Mbuf<'m>`](Mbuf)), and so do ports whose
/// queues may hold them, so it cannot be dropped under them.
///
/// Dropped, it is freed with `rte_mempool_free` when every mbuf is back in
/// it. If some are still out (an mbuf leaked with [`Mbuf::into_raw`] or
/// `mem::forget`, or posted in the ring of a port that was forgotten), it is
/// leaked instead, with the EAL, since a device may still write into them.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
    eal: Option<Eal>,
}

// SAFETY: the pool is created with DPDK's default (multi-producer,
// multi-consumer) ops, so alloc and free are safe from any thread, and its
// per-lcore caches are only touched by the thread that owns that lcore id.
unsafe impl Send for Mempool {}
// SAFETY: as for Send; every &self method is a thread-safe DPDK call.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// `RTE_MBUF_DEFAULT_BUF_SIZE`: 2048 bytes of data after the default
    /// 128-byte headroom.
    pub const DEFAULT_DATA_ROOM: u16 = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

    /// Creates a pool of `n` pktmbufs named `name` (at most 25 bytes), with
    /// a per-lcore cache of `cache_size` mbufs (0 for none) and `data_room`
    /// bytes of buffer each, headroom (`RTE_PKTMBUF_HEADROOM`) included, on
    /// NUMA socket `socket` (`None`: any).
    pub fn pktmbuf(
        eal: &Eal,
        name: &str,
        n: u32,
        cache_size: u32,
        data_room: u16,
        socket: Option<u32>,
    ) -> Result<Mempool> {
        let c_name = CString::new(name).map_err(|_| {
            Error::InvalidArgument(format!("pool name {name:?} contains a NUL byte"))
        })?;
        let socket_id = match socket {
            Some(s) => c_int::try_from(s)
                .map_err(|_| Error::InvalidArgument(format!("socket {s} out of range")))?,
            None => sys::SOCKET_ID_ANY,
        };
        // SAFETY: the EAL is initialised (eal exists); c_name is a valid C
        // string for the call (DPDK copies it); the numbers are checked by
        // DPDK, which returns NULL with rte_errno on any it rejects.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(c_name.as_ptr(), n, cache_size, 0, data_room, socket_id)
        };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| Error::errno(format!("rte_pktmbuf_pool_create({name})")))?;
        Ok(Mempool {
            ptr,
            name: name.to_string(),
            eal: Some(eal.clone()),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of mbufs in the pool.
    pub fn capacity(&self) -> u32 {
        // SAFETY: ptr is a live pool (freed only in drop); `size` is set at
        // creation and never written after.
        unsafe { (*self.ptr.as_ptr()).size }
    }

    /// Mbufs free in the pool (its ring and every lcore's cache).
    pub fn available(&self) -> u32 {
        // SAFETY: ptr is a live pool; the count only reads it.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs allocated from the pool and not returned (including those posted
    /// in device rings).
    pub fn in_use(&self) -> u32 {
        // SAFETY: ptr is a live pool; the count only reads it.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// The number of mbufs in the calling thread's cache of this pool; `None`
    /// when the thread has none (it is neither an EAL thread nor registered,
    /// see [`Eal::register_thread`], or the pool has no caches).
    pub fn local_cache_len(&self) -> Option<u32> {
        // SAFETY: ptr is a live pool; the calling thread's own cache (if any)
        // is only ever used by this thread.
        let len = unsafe { sys::blipmq_mempool_cache_len(self.ptr.as_ptr()) };
        u32::try_from(len).ok()
    }

    /// One mbuf, reset (empty, default headroom); `None` when the pool is
    /// empty.
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        // SAFETY: ptr is a live pktmbuf pool; the returned mbuf (if any) is
        // exclusively ours and stays valid while the pool lives, which the
        // lifetime of Mbuf<'_> ensures.
        let m = unsafe { sys::blipmq_pktmbuf_alloc(self.ptr.as_ptr()) };
        // SAFETY: m is null or a fresh mbuf of this pool, owned by no one else.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Appends `n` fresh mbufs to `burst`, all or none: false (burst
    /// unchanged) when the pool has fewer than `n` or `burst` has less than
    /// `n` free slots.
    pub fn alloc_bulk<'m, const N: usize>(
        &'m self,
        burst: &mut MbufBurst<'m, N>,
        n: usize,
    ) -> bool {
        let free = burst.spare_capacity_ptr();
        if n > free.len() {
            return false;
        }
        // SAFETY: ptr is a live pktmbuf pool; `free` has room for n pointers;
        // on success the n mbufs are exclusively ours and, borrowing the pool
        // for 'm, cannot outlive it.
        let ret = unsafe {
            sys::blipmq_pktmbuf_alloc_bulk(self.ptr.as_ptr(), free.as_mut_ptr(), n as u32)
        };
        if ret != 0 {
            return false;
        }
        // SAFETY: the n slots after the burst's length now hold valid mbufs.
        unsafe { burst.set_len(burst.len() + n) };
        true
    }

    /// The raw pool, for calls this crate does not wrap.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }

    /// The pool's name as DPDK stores it.
    pub fn dpdk_name(&self) -> String {
        // SAFETY: ptr is a live pool whose `name` is a NUL-terminated array.
        unsafe { CStr::from_ptr((*self.ptr.as_ptr()).name.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let in_use = self.in_use();
        if in_use == 0 {
            // SAFETY: every mbuf is back in the pool and no safe handle can
            // take one out any more (Mbufs and ports borrow the pool, and it
            // is being dropped), so nothing references the pool's memory.
            unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
        } else {
            tracing::warn!(pool = %self.name, in_use,
                "mempool dropped with mbufs still out: leaking it and the EAL");
            std::mem::forget(self.eal.take());
        }
    }
}
