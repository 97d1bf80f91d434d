//! Named, contiguous DPDK memory (`rte_memzone_reserve`).

use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::{sys, Eal};

/// A reserved memzone, zeroed at reservation and freed on drop
/// (`rte_memzone_free`). Its bytes are this handle's: this crate offers no
/// lookup by name (another process of the same DPDK instance could still
/// map them: do not share a `--file-prefix`).
#[derive(Debug)]
pub struct Memzone {
    mz: NonNull<sys::rte_memzone>,
    _eal: Eal,
}

// SAFETY: the memzone is plain memory owned by this handle; DPDK's
// memzone free is thread-safe (it takes the memory config lock).
unsafe impl Send for Memzone {}
// SAFETY: &self only reads the bytes; writes need &mut self.
unsafe impl Sync for Memzone {}

impl Memzone {
    /// Reserves `len` (> 0) bytes named `name` (at most 31 bytes) on NUMA
    /// socket `socket` (`None`: any), cache-line aligned, zeroed.
    pub fn reserve(eal: &Eal, name: &str, len: usize, socket: Option<u32>) -> Result<Memzone> {
        if len == 0 {
            // DPDK reads 0 as "the largest free block".
            return Err(Error::InvalidArgument(
                "a memzone needs a length > 0".into(),
            ));
        }
        let c_name = CString::new(name).map_err(|_| {
            Error::InvalidArgument(format!("memzone name {name:?} contains a NUL byte"))
        })?;
        let socket_id = match socket {
            Some(s) => c_int::try_from(s)
                .map_err(|_| Error::InvalidArgument(format!("socket {s} out of range")))?,
            None => sys::SOCKET_ID_ANY,
        };
        // SAFETY: the EAL is initialised (eal exists); c_name is a valid C
        // string (DPDK copies it); DPDK returns NULL with rte_errno on failure.
        let mz = unsafe { sys::rte_memzone_reserve(c_name.as_ptr(), len, socket_id, 0) };
        let mz = NonNull::new(mz.cast_mut())
            .ok_or_else(|| Error::errno(format!("rte_memzone_reserve({name}, {len})")))?;
        let zone = Memzone {
            mz,
            _eal: eal.clone(),
        };
        // SAFETY: the zone's len bytes at its address are ours; writing them
        // needs no prior initialisation.
        unsafe { std::ptr::write_bytes(zone.as_ptr().cast_mut(), 0, zone.len()) };
        Ok(zone)
    }

    /// The zone's name.
    pub fn name(&self) -> String {
        // SAFETY: mz is a live memzone whose name is a NUL-terminated array.
        unsafe { CStr::from_ptr((*self.mz.as_ptr()).name.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Length in bytes (at least what was asked for).
    pub fn len(&self) -> usize {
        // SAFETY: mz is a live memzone; len is set at reservation.
        unsafe { (*self.mz.as_ptr()).len }
    }

    /// Whether the zone has no bytes (never: reserve refuses 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The zone's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: addr points at len bytes reserved for this handle, zeroed
        // at reservation (so initialised) and written only through &mut self.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// The zone's bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice; &mut self makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr().cast_mut(), self.len()) }
    }

    /// Start of the zone.
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: mz is a live memzone; addr is set at reservation.
        unsafe { (*self.mz.as_ptr()).__bindgen_anon_1.addr.cast::<u8>() }
    }

    /// The zone's IO address (for devices).
    pub fn iova(&self) -> u64 {
        // SAFETY: mz is a live memzone; iova is set at reservation.
        unsafe { (*self.mz.as_ptr()).iova }
    }
}

impl Drop for Memzone {
    fn drop(&mut self) {
        // SAFETY: mz was reserved by this handle and is freed once; no borrow
        // of its bytes outlives &self.
        let ret = unsafe { sys::rte_memzone_free(self.mz.as_ptr()) };
        if ret < 0 {
            tracing::warn!(error = %Error::ret("rte_memzone_free", ret), "memzone free failed");
        }
    }
}
