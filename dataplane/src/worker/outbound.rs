//! A connection's outbound queue: frames waiting for the socket.
//!
//! Frames are appended back to back; the backend writes from the front. To
//! cut a slow consumer cleanly, the queue can find frame boundaries: it keeps
//! `boundary`, a frame start at or before `sent`, and walks length prefixes
//! from there.

use blipmq_protocol::{Op, LEN_PREFIX};

/// Compact once this many sent bytes sit at the front of the buffer.
const COMPACT_AFTER: usize = 256 * 1024;
/// An empty buffer larger than this gives its memory back, so that idle
/// connections stay small.
const KEEP_IDLE_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Outbound {
    buf: Vec<u8>,
    sent: usize,
    boundary: usize,
}

impl Outbound {
    /// Bytes not yet written to the socket.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.sent == self.buf.len()
    }

    /// Where new frames are appended. Only whole frames may be appended.
    pub fn frames(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// `written` bytes of [`pending`](Self::pending) reached the socket.
    pub fn advance(&mut self, written: usize) {
        self.sent += written;
        debug_assert!(self.sent <= self.buf.len());
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
            self.boundary = 0;
            if self.buf.capacity() > KEEP_IDLE_CAPACITY {
                self.buf = Vec::new();
            }
        } else if self.sent >= COMPACT_AFTER {
            self.compact();
        }
    }

    fn frame_len_at(&self, at: usize) -> usize {
        let b = &self.buf[at..at + LEN_PREFIX];
        LEN_PREFIX + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    /// Moves `boundary` to the last frame start at or before `sent`.
    fn settle_boundary(&mut self) {
        while self.boundary < self.sent {
            let next = self.boundary + self.frame_len_at(self.boundary);
            if next > self.sent {
                break;
            }
            self.boundary = next;
        }
    }

    /// Drops whole sent frames from the front.
    fn compact(&mut self) {
        self.settle_boundary();
        self.buf.drain(..self.boundary);
        self.sent -= self.boundary;
        self.boundary = 0;
    }

    /// Drops every frame not yet started on the wire (a frame already partly
    /// sent is kept whole so the stream stays well-formed). Returns how many
    /// MESSAGE frames were dropped.
    pub fn discard_unsent(&mut self) -> u64 {
        self.settle_boundary();
        let mut keep = self.boundary;
        if keep < self.sent {
            keep += self.frame_len_at(keep);
        }
        let mut dropped = 0;
        let mut at = keep;
        while at < self.buf.len() {
            if self.buf[at + LEN_PREFIX] == Op::Message as u8 {
                dropped += 1;
            }
            at += self.frame_len_at(at);
        }
        self.buf.truncate(keep);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blipmq_protocol::encode;

    fn with_messages(n: usize) -> Outbound {
        let mut out = Outbound::default();
        for i in 0..n {
            encode::put_message(out.frames(), b"a.b", i as u32, None, b"0123456789");
        }
        out
    }

    #[test]
    fn advance_to_the_end_empties_the_queue() {
        let mut out = with_messages(3);
        let len = out.pending_len();
        out.advance(len);
        assert!(out.is_empty());
        assert_eq!(out.pending_len(), 0);
    }

    #[test]
    fn discard_keeps_the_partly_sent_frame() {
        let mut out = with_messages(5);
        let frame = out.pending_len() / 5;
        out.advance(frame + 3);
        let dropped = out.discard_unsent();
        assert_eq!(dropped, 3);
        assert_eq!(out.pending_len(), frame - 3);
    }

    #[test]
    fn discard_on_a_frame_boundary_keeps_nothing_unsent() {
        let mut out = with_messages(4);
        let frame = out.pending_len() / 4;
        out.advance(2 * frame);
        assert_eq!(out.discard_unsent(), 2);
        assert!(out.is_empty());
    }

    #[test]
    fn discard_counts_only_messages() {
        let mut out = with_messages(1);
        encode::put_ping(out.frames());
        encode::put_message(out.frames(), b"x", 1, None, b"");
        assert_eq!(out.discard_unsent(), 2);
    }

    #[test]
    fn compaction_keeps_unsent_bytes() {
        let mut out = Outbound::default();
        let mut expected = Vec::new();
        for i in 0..40_000u32 {
            encode::put_message(out.frames(), b"s", i, None, b"payload");
            encode::put_message(&mut expected, b"s", i, None, b"payload");
        }
        let mut consumed = 0;
        while !out.is_empty() {
            let step = out.pending_len().min(7777);
            assert_eq!(&out.pending()[..step], &expected[consumed..consumed + step]);
            out.advance(step);
            consumed += step;
        }
        assert_eq!(consumed, expected.len());
    }
}
