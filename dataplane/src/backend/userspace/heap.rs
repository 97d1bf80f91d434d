//! The process heap, as the connections' TCP buffers need it.
//!
//! Each user-space TCP socket has a receive and a send buffer
//! (`tcp_rx_buffer`, `tcp_tx_buffer`: 256 KiB each by default), zeroed when
//! the socket is made. An allocation that glibc's malloc maps on its own
//! gets fresh zero pages: they become resident only as data passes, and go
//! back to the system when the connection closes. One that comes from the
//! heap is zeroed by writing every byte, so that even an idle connection
//! holds both buffers resident, and the heap keeps them after it closes.
//!
//! glibc maps allocations of at least its threshold on their own, but by
//! default raises the threshold each time a larger mapped block is freed
//! (a slow consumer's backlog, a large message), up to 32 MiB; after that,
//! the socket buffers come from the heap. Fixing the threshold keeps them
//! mapped: tests/abuse.rs saw 500 idle connections, after one round of
//! abuse, cost 260 MiB of resident memory without it, and none with it.

#![allow(unsafe_code)]

/// Allocations of this size or more are mapped on their own (glibc's
/// initial threshold); smaller socket buffers come from the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes glibc's mmap threshold (see the module documentation); once per
/// process, from any thread. Elsewhere than glibc, nothing.
pub fn keep_socket_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt takes no pointers and only changes malloc's
            // parameters, under malloc's own lock: sound from any thread,
            // with allocations live.
            let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
            if set != 1 {
                tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed: idle connections may hold their TCP buffers resident");
            }
        });
    }
}
