//! Payloads shared by several subscribers' outbound queues.
//!
//! A large payload going to several local subscribers is copied once into a
//! pooled buffer; each queue holds the MESSAGE header inline and a reference
//! to the buffer, and the backend gathers both with one writev. Buffers are
//! reference counted by hand and recycled, so the steady state allocates
//! nothing.

/// Payloads at least this large are shared when a message has two or more
/// local recipients. Measured with `blipmq-bench` (bench/README.md): at
/// 1 KiB sharing nearly doubles 1x32 and triples 4x4 throughput; at 128 B
/// the extra writev segment per message costs more than the copy it saves.
pub const SHARE_MIN_PAYLOAD: usize = 1024;
/// Free buffers kept for reuse; more are given back to the allocator.
const KEEP_FREE: usize = 64;

/// Index of a shared payload in its [`SharedPayloads`].
pub type PayloadId = u32;

#[derive(Debug, Default)]
pub struct SharedPayloads {
    bufs: Vec<SharedBuf>,
    free: Vec<PayloadId>,
    live: usize,
}

#[derive(Debug, Default)]
struct SharedBuf {
    data: Vec<u8>,
    refs: u32,
}

impl SharedPayloads {
    /// Copies `payload` into a buffer with no references yet; each queue
    /// that splices it takes one with [`acquire`](Self::acquire). A buffer
    /// nobody acquired is reclaimed with [`release_if_unused`](Self::release_if_unused).
    pub fn store(&mut self, payload: &[u8]) -> PayloadId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.bufs.push(SharedBuf::default());
                (self.bufs.len() - 1) as PayloadId
            }
        };
        let buf = &mut self.bufs[id as usize];
        buf.data.clear();
        buf.data.extend_from_slice(payload);
        buf.refs = 0;
        self.live += 1;
        id
    }

    pub fn get(&self, id: PayloadId) -> &[u8] {
        &self.bufs[id as usize].data
    }

    pub fn acquire(&mut self, id: PayloadId) {
        self.bufs[id as usize].refs += 1;
    }

    /// Drops one reference; the last one recycles the buffer.
    pub fn release(&mut self, id: PayloadId) {
        let buf = &mut self.bufs[id as usize];
        debug_assert!(buf.refs > 0, "release of an unreferenced payload");
        buf.refs -= 1;
        if buf.refs == 0 {
            self.recycle(id);
        }
    }

    /// Recycles a stored buffer that no queue took (every recipient was
    /// filtered out, e.g. a cut-off slow consumer).
    pub fn release_if_unused(&mut self, id: PayloadId) {
        if self.bufs[id as usize].refs == 0 {
            self.recycle(id);
        }
    }

    fn recycle(&mut self, id: PayloadId) {
        self.live -= 1;
        if self.free.len() < KEEP_FREE {
            self.free.push(id);
        } else {
            // Keep the slot (ids are indexes) but not its memory.
            self.bufs[id as usize].data = Vec::new();
            self.free.push(id);
        }
    }

    /// Buffers referenced by at least one queue (or stored and not yet
    /// settled).
    pub fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_release_recycles_the_buffer() {
        let mut pool = SharedPayloads::default();
        let id = pool.store(b"payload");
        pool.acquire(id);
        pool.acquire(id);
        pool.release(id);
        assert_eq!(pool.live(), 1);
        assert_eq!(pool.get(id), b"payload");
        pool.release(id);
        assert_eq!(pool.live(), 0);
        let again = pool.store(b"other");
        assert_eq!(again, id, "a recycled buffer is reused");
        assert_eq!(pool.get(again), b"other");
    }

    #[test]
    fn an_unused_buffer_is_reclaimed() {
        let mut pool = SharedPayloads::default();
        let id = pool.store(b"x");
        pool.release_if_unused(id);
        assert_eq!(pool.live(), 0);
        let kept = pool.store(b"y");
        pool.acquire(kept);
        pool.release_if_unused(kept);
        assert_eq!(pool.live(), 1);
    }
}
