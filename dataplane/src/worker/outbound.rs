//! A connection's outbound queue: frames waiting for the socket.
//!
//! Frames are appended back to back in `buf`. A large payload shared with
//! other subscribers is not copied in: its MESSAGE header goes into `buf`
//! and a [`Splice`] says "the shared payload goes here", so the wire stream
//! is `buf` with each splice's payload inserted at its offset. The backend
//! writes from the front, gathering both with writev.
//!
//! To cut a slow consumer cleanly, the queue can find frame boundaries: it
//! keeps `boundary`, a frame start at or before the write position, and
//! walks length prefixes from there. Splices stay listed (already released)
//! until the boundary passes them, so the walk knows their lengths.

use std::collections::VecDeque;
use std::io::IoSlice;

use super::dialect::Dialect;
use super::payloads::{PayloadId, SharedPayloads};

/// Compact once this many sent bytes sit at the front of the buffer, and
/// at least as many as remain unsent: then each byte is moved a bounded
/// number of times however long the queue grows (compacting after a fixed
/// amount moved the whole backlog each time: a subscriber 40 MB behind cost
/// 160 bytes moved per byte sent).
const COMPACT_AFTER: usize = 256 * 1024;
/// Written splices are dropped from the list once this many wait.
const SETTLE_SPLICES_AFTER: usize = 1024;
/// An idle empty buffer larger than this gives its memory back (see
/// [`Outbound::trim`]), so that idle connections stay small.
const KEEP_IDLE_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Outbound {
    /// How frames are delimited in `buf`.
    dialect: Dialect,
    buf: Vec<u8>,
    /// Bytes of `buf` written.
    sent: usize,
    /// A frame start in `buf` at or before `sent`.
    boundary: usize,
    /// Shared payloads in stream order; those before `cursor` are written
    /// and released.
    splices: VecDeque<Splice>,
    cursor: usize,
    /// Bytes of `splices[cursor]` written.
    splice_sent: usize,
    /// Bytes of the splices from `cursor` on not yet written.
    splice_unsent: usize,
    /// Bytes ever taken from the front: the stream position of the first
    /// pending byte (for the latency stamps).
    taken: u64,
    /// Bytes moved by compaction, for the tests.
    #[cfg(test)]
    moved: usize,
}

#[derive(Debug, Clone, Copy)]
struct Splice {
    /// Offset in `buf` where the payload goes.
    at: usize,
    id: PayloadId,
    len: usize,
}

impl Outbound {
    /// Bytes not yet written to the socket.
    /// An empty queue of frames in `dialect`.
    pub fn new(dialect: Dialect) -> Outbound {
        Outbound {
            dialect,
            ..Outbound::default()
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.sent + self.splice_unsent
    }

    pub fn is_empty(&self) -> bool {
        self.pending_len() == 0
    }

    /// Stream position of the first pending byte: bytes ever written (or,
    /// with TLS, sealed).
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Stream position just past the last pending byte.
    pub fn end(&self) -> u64 {
        self.taken + self.pending_len() as u64
    }

    /// Where new frames are appended. Only whole frames may be appended,
    /// except that a MESSAGE header may be completed by [`splice`](Self::splice).
    pub fn frames(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends shared payload `id` (the end of the MESSAGE whose header was
    /// just appended), taking a reference on it.
    pub fn splice(&mut self, payloads: &mut SharedPayloads, id: PayloadId) {
        payloads.acquire(id);
        let len = payloads.get(id).len();
        self.splices.push_back(Splice {
            at: self.buf.len(),
            id,
            len,
        });
        self.splice_unsent += len;
    }

    /// The first contiguous run of pending bytes (empty when none).
    pub fn front<'a>(&'a self, payloads: &'a SharedPayloads) -> &'a [u8] {
        match self.splices.get(self.cursor) {
            Some(s) if s.at == self.sent => &payloads.get(s.id)[self.splice_sent..],
            Some(s) => &self.buf[self.sent..s.at],
            None => &self.buf[self.sent..],
        }
    }

    /// Fills `out` with the pending bytes in order, as many runs as fit;
    /// returns how many were filled.
    pub fn gather<'a>(&'a self, payloads: &'a SharedPayloads, out: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        let mut at = self.sent;
        let mut skip = self.splice_sent;
        for s in self.splices.range(self.cursor..) {
            if filled == out.len() {
                return filled;
            }
            if s.at > at {
                out[filled] = IoSlice::new(&self.buf[at..s.at]);
                filled += 1;
                if filled == out.len() {
                    return filled;
                }
            }
            out[filled] = IoSlice::new(&payloads.get(s.id)[skip..]);
            filled += 1;
            skip = 0;
            at = s.at;
        }
        if filled < out.len() && at < self.buf.len() {
            out[filled] = IoSlice::new(&self.buf[at..]);
            filled += 1;
        }
        filled
    }

    /// `written` pending bytes reached the socket.
    pub fn advance(&mut self, mut written: usize, payloads: &mut SharedPayloads) {
        debug_assert!(written <= self.pending_len());
        self.taken += written as u64;
        while written > 0 {
            let Some(&s) = self.splices.get(self.cursor) else {
                self.sent += written;
                break;
            };
            if self.sent < s.at {
                let n = written.min(s.at - self.sent);
                self.sent += n;
                written -= n;
                continue;
            }
            let n = written.min(s.len - self.splice_sent);
            self.splice_sent += n;
            self.splice_unsent -= n;
            written -= n;
            if self.splice_sent == s.len {
                payloads.release(s.id);
                self.cursor += 1;
                self.splice_sent = 0;
            }
        }
        if self.is_empty() {
            self.reset();
            return;
        }
        if self.cursor >= SETTLE_SPLICES_AFTER {
            self.settle_boundary();
        }
        if self.sent >= COMPACT_AFTER && self.sent >= self.buf.len() - self.sent {
            self.compact();
        }
    }

    /// Empties the queue; every spliced payload is already released.
    fn reset(&mut self) {
        self.buf.clear();
        self.sent = 0;
        self.boundary = 0;
        self.splices.clear();
        self.cursor = 0;
        self.splice_sent = 0;
    }

    /// Gives a large buffer's memory back if the queue is empty. Called
    /// from the periodic tick, not on every drain: a busy subscriber's queue
    /// empties many times a second, and freeing it each time made every
    /// refill allocate and fault its pages in again.
    pub fn trim(&mut self) {
        if self.is_empty() && self.buf.capacity() > KEEP_IDLE_CAPACITY {
            self.buf = Vec::new();
            self.splices = VecDeque::new();
        }
    }

    /// Releases every payload still referenced; for a closed connection.
    pub fn release_all(&mut self, payloads: &mut SharedPayloads) {
        for s in self.splices.range(self.cursor..) {
            payloads.release(s.id);
        }
        self.splice_unsent = 0;
        self.cursor = self.splices.len();
        self.sent = self.buf.len();
        self.reset();
    }

    fn frame_len_at(&self, at: usize) -> usize {
        self.dialect.frame_len(&self.buf[at..])
    }

    /// The frame at `start` (with the first listed splice at or after it at
    /// index `next`): its length in `buf`, and whether that splice ends it.
    fn frame_at(&self, start: usize, next: usize) -> (usize, bool) {
        let len = self.frame_len_at(start);
        match self.splices.get(next) {
            // A splice inside this frame's span can only be its payload:
            // a later frame's splice lies past start + len.
            Some(s) if s.at + s.len == start + len => (len - s.len, true),
            _ => (len, false),
        }
    }

    /// Moves `boundary` to the last frame start at or before the write
    /// position, dropping the splices it passes.
    fn settle_boundary(&mut self) {
        while self.boundary < self.buf.len() {
            let (inline, spliced) = self.frame_at(self.boundary, 0);
            let end = self.boundary + inline;
            let done = if spliced {
                self.cursor > 0
            } else {
                end <= self.sent
            };
            if !done {
                break;
            }
            if spliced {
                self.splices.pop_front();
                self.cursor -= 1;
            }
            self.boundary = end;
        }
    }

    /// Drops whole sent frames from the front.
    fn compact(&mut self) {
        self.settle_boundary();
        let cut = self.boundary;
        #[cfg(test)]
        {
            self.moved += self.buf.len() - cut;
        }
        self.buf.drain(..cut);
        self.sent -= cut;
        self.boundary = 0;
        for s in self.splices.iter_mut() {
            s.at -= cut;
        }
    }

    /// Drops every frame not yet started on the wire (a frame already partly
    /// sent is kept whole so the stream stays well-formed). Returns how many
    /// MESSAGE frames were dropped.
    pub fn discard_unsent(&mut self, payloads: &mut SharedPayloads) -> u64 {
        self.settle_boundary();
        let mut keep = self.boundary;
        let mut keep_splices = 0;
        let started = self.sent > self.boundary;
        if started {
            let (inline, spliced) = self.frame_at(keep, 0);
            keep += inline;
            keep_splices += usize::from(spliced);
        }
        let mut dropped = 0;
        let mut at = keep;
        let mut next = keep_splices;
        while at < self.buf.len() {
            if self.dialect.is_message(&self.buf[at..]) {
                dropped += 1;
            }
            let (inline, spliced) = self.frame_at(at, next);
            next += usize::from(spliced);
            at += inline;
        }
        for s in self.splices.range(keep_splices..) {
            payloads.release(s.id);
            self.splice_unsent -= s.len;
        }
        self.splices.truncate(keep_splices);
        self.buf.truncate(keep);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blipmq_protocol::encode;

    /// Reads up to `max` pending bytes the way a backend does (gather, then
    /// advance by what was "written").
    fn write_some(out: &mut Outbound, payloads: &mut SharedPayloads, max: usize) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 8];
        let filled = out.gather(payloads, &mut slices);
        let mut bytes = Vec::new();
        for slice in &slices[..filled] {
            let room = max - bytes.len();
            bytes.extend_from_slice(&slice[..slice.len().min(room)]);
        }
        out.advance(bytes.len(), payloads);
        bytes
    }

    fn with_messages(n: usize) -> Outbound {
        let mut out = Outbound::default();
        for i in 0..n {
            encode::put_message(out.frames(), b"a.b", i as u32, None, b"0123456789");
        }
        out
    }

    /// Appends a MESSAGE whose payload is shared.
    fn put_spliced(out: &mut Outbound, payloads: &mut SharedPayloads, sid: u32, payload: &[u8]) {
        let id = payloads.store(payload);
        encode::put_message_head(out.frames(), b"big", sid, None, payload.len());
        out.splice(payloads, id);
        payloads.release_if_unused(id);
    }

    #[test]
    fn advance_to_the_end_empties_the_queue() {
        let mut payloads = SharedPayloads::default();
        let mut out = with_messages(3);
        let len = out.pending_len();
        out.advance(len, &mut payloads);
        assert!(out.is_empty());
        assert_eq!(out.pending_len(), 0);
    }

    #[test]
    fn discard_keeps_the_partly_sent_frame() {
        let mut payloads = SharedPayloads::default();
        let mut out = with_messages(5);
        let frame = out.pending_len() / 5;
        out.advance(frame + 3, &mut payloads);
        let dropped = out.discard_unsent(&mut payloads);
        assert_eq!(dropped, 3);
        assert_eq!(out.pending_len(), frame - 3);
    }

    #[test]
    fn discard_on_a_frame_boundary_keeps_nothing_unsent() {
        let mut payloads = SharedPayloads::default();
        let mut out = with_messages(4);
        let frame = out.pending_len() / 4;
        out.advance(2 * frame, &mut payloads);
        assert_eq!(out.discard_unsent(&mut payloads), 2);
        assert!(out.is_empty());
    }

    #[test]
    fn discard_counts_only_messages() {
        let mut payloads = SharedPayloads::default();
        let mut out = with_messages(1);
        encode::put_ping(out.frames());
        encode::put_message(out.frames(), b"x", 1, None, b"");
        assert_eq!(out.discard_unsent(&mut payloads), 2);
    }

    #[test]
    fn compaction_keeps_unsent_bytes() {
        let mut payloads = SharedPayloads::default();
        let mut out = Outbound::default();
        let mut expected = Vec::new();
        for i in 0..40_000u32 {
            encode::put_message(out.frames(), b"s", i, None, b"payload");
            encode::put_message(&mut expected, b"s", i, None, b"payload");
        }
        let mut written = Vec::new();
        while !out.is_empty() {
            written.extend(write_some(&mut out, &mut payloads, 7777));
        }
        assert_eq!(written, expected);
    }

    #[test]
    fn a_long_queue_written_in_small_pieces_moves_each_byte_a_bounded_number_of_times() {
        let mut payloads = SharedPayloads::default();
        let mut out = Outbound::default();
        for i in 0..400_000u32 {
            encode::put_message(out.frames(), b"s", i, None, b"payload");
        }
        let queued = out.pending_len();
        let mut sent = 0;
        // Sent in socket-buffer-sized pieces while the publisher adds as
        // much as is sent: the backlog stays ~12 MB.
        while sent < 3 * queued {
            let n = write_some(&mut out, &mut payloads, 65_536).len();
            sent += n;
            let before = out.pending_len();
            while out.pending_len() < before + n {
                encode::put_message(out.frames(), b"s", 0, None, b"payload");
            }
        }
        assert!(
            out.moved <= 2 * sent,
            "{} bytes moved for {sent} sent",
            out.moved
        );
    }

    #[test]
    fn spliced_payloads_are_written_in_place_and_released() {
        let mut payloads = SharedPayloads::default();
        let mut out = Outbound::default();
        let mut expected = Vec::new();
        let big = vec![7u8; 5000];
        encode::put_message(out.frames(), b"s", 1, None, b"small");
        encode::put_message(&mut expected, b"s", 1, None, b"small");
        put_spliced(&mut out, &mut payloads, 2, &big);
        encode::put_message(&mut expected, b"big", 2, None, &big);
        put_spliced(&mut out, &mut payloads, 3, &big);
        encode::put_message(&mut expected, b"big", 3, None, &big);
        encode::put_ping(out.frames());
        encode::put_ping(&mut expected);
        assert_eq!(out.pending_len(), expected.len());
        assert_eq!(payloads.live(), 2);
        let mut written = Vec::new();
        while !out.is_empty() {
            written.extend(write_some(&mut out, &mut payloads, 1234));
        }
        assert_eq!(written, expected);
        assert_eq!(payloads.live(), 0, "every shared payload released");
    }

    #[test]
    fn discard_releases_unsent_splices_and_keeps_a_partly_sent_one() {
        let mut payloads = SharedPayloads::default();
        let mut out = Outbound::default();
        let big = vec![1u8; 6000];
        for sid in 0..4 {
            put_spliced(&mut out, &mut payloads, sid, &big);
        }
        let frame = out.pending_len() / 4;
        // Into the second frame's payload.
        let first = write_some(&mut out, &mut payloads, frame + 100);
        assert_eq!(first.len(), frame + 100);
        assert_eq!(payloads.live(), 3);
        assert_eq!(out.discard_unsent(&mut payloads), 2);
        assert_eq!(
            payloads.live(),
            1,
            "the partly sent frame keeps its payload"
        );
        assert_eq!(out.pending_len(), frame - 100);
        let rest = write_some(&mut out, &mut payloads, usize::MAX);
        let mut expected = Vec::new();
        encode::put_message(&mut expected, b"big", 1, None, &big);
        assert_eq!(rest, expected[100..]);
        assert!(out.is_empty());
        assert_eq!(payloads.live(), 0);
    }

    #[test]
    fn release_all_drops_every_reference() {
        let mut payloads = SharedPayloads::default();
        let mut out = Outbound::default();
        put_spliced(&mut out, &mut payloads, 1, &[2u8; 4096]);
        put_spliced(&mut out, &mut payloads, 2, &[3u8; 4096]);
        write_some(&mut out, &mut payloads, 50);
        out.release_all(&mut payloads);
        assert!(out.is_empty());
        assert_eq!(payloads.live(), 0);
    }

    /// Random mixes of inline and spliced frames, written in random pieces
    /// with random slow-consumer cuts, against a model of the byte stream.
    #[test]
    fn random_streams_match_the_model() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for _ in 0..200 {
            let mut payloads = SharedPayloads::default();
            let mut out = Outbound::default();
            // Frames queued and not yet fully written, as bytes.
            let mut model: VecDeque<Vec<u8>> = VecDeque::new();
            let mut front_written = 0;
            for step in 0..300 {
                match next(10) {
                    0..=3 => {
                        let payload = vec![step as u8; next(100)];
                        encode::put_message(out.frames(), b"i", step, None, &payload);
                        let mut frame = Vec::new();
                        encode::put_message(&mut frame, b"i", step, None, &payload);
                        model.push_back(frame);
                    }
                    4..=6 => {
                        let payload = vec![step as u8; 4096 + next(3000)];
                        put_spliced(&mut out, &mut payloads, step, &payload);
                        let mut frame = Vec::new();
                        encode::put_message(&mut frame, b"big", step, None, &payload);
                        model.push_back(frame);
                    }
                    7 | 8 => {
                        let want = next(20_000);
                        let got = write_some(&mut out, &mut payloads, want);
                        let mut expected = Vec::new();
                        while expected.len() < got.len() {
                            let frame = &model[0];
                            let take =
                                (got.len() - expected.len()).min(frame.len() - front_written);
                            expected.extend_from_slice(&frame[front_written..front_written + take]);
                            front_written += take;
                            if front_written == frame.len() {
                                model.pop_front();
                                front_written = 0;
                            }
                        }
                        assert_eq!(got, expected);
                    }
                    _ => {
                        let keep = usize::from(front_written > 0);
                        let dropped = model.len() - keep;
                        assert_eq!(out.discard_unsent(&mut payloads), dropped as u64);
                        model.truncate(keep);
                    }
                }
                let pending: usize = model.iter().map(Vec::len).sum::<usize>() - front_written;
                assert_eq!(out.pending_len(), pending);
            }
            out.release_all(&mut payloads);
            assert_eq!(payloads.live(), 0);
        }
    }
}
