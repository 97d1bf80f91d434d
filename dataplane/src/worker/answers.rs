//! Answers held back behind cross-worker barriers.
//!
//! An OK or PONG after frames that sent records to other workers may only go
//! out once those workers processed the records (protocol.md, Session 3).
//! The connection does not stop for it: later frames are handled at once,
//! and their answers queue behind the held one, so answers keep the order
//! of the frames they answer while the publisher keeps streaming.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct HeldAnswers {
    /// Encoded answer frames, in frame order.
    bytes: Vec<u8>,
    /// `(ticket, offset)`: the bytes from `offset` on wait for barrier
    /// `ticket`. Tickets and offsets increase front to back.
    marks: VecDeque<(u64, usize)>,
}

impl HeldAnswers {
    /// Whether answers are held: every new answer must then be appended
    /// here, behind them.
    pub fn is_holding(&self) -> bool {
        !self.marks.is_empty()
    }

    /// Holds the next answer, and every one after it, until barrier
    /// `ticket` is done.
    pub fn hold_until(&mut self, ticket: u64) {
        debug_assert!(self.marks.back().is_none_or(|&(t, _)| t <= ticket));
        self.marks.push_back((ticket, self.bytes.len()));
    }

    /// Bytes held.
    pub fn bytes_held(&self) -> usize {
        self.bytes.len()
    }

    /// Where answers are encoded while holding.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Moves to `out` the answers no unfinished barrier holds, given that
    /// every ticket up to `done` is done; returns whether any moved.
    pub fn release(&mut self, done: u64, out: &mut Vec<u8>) -> bool {
        while self
            .marks
            .front()
            .is_some_and(|&(ticket, _)| ticket <= done)
        {
            self.marks.pop_front();
        }
        let free = self.marks.front().map_or(self.bytes.len(), |&(_, at)| at);
        if free == 0 {
            return false;
        }
        out.extend_from_slice(&self.bytes[..free]);
        self.bytes.drain(..free);
        for mark in &mut self.marks {
            mark.1 -= free;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_moves_before_its_barrier() {
        let mut held = HeldAnswers::default();
        let mut out = Vec::new();
        held.hold_until(1);
        held.buffer().extend_from_slice(b"PONG1 ");
        held.buffer().extend_from_slice(b"ERR ");
        held.hold_until(2);
        held.buffer().extend_from_slice(b"PONG2 ");
        assert!(!held.release(0, &mut out));
        assert!(out.is_empty());
        assert!(held.release(1, &mut out));
        assert_eq!(out, b"PONG1 ERR ");
        assert!(held.is_holding());
        held.buffer().extend_from_slice(b"OK ");
        assert!(!held.release(1, &mut out));
        assert!(held.release(5, &mut out));
        assert_eq!(out, b"PONG1 ERR PONG2 OK ");
        assert!(!held.is_holding());
        assert!(!held.release(5, &mut out), "nothing left to release");
    }

    /// Against a model: answers come out in order, none before its barrier.
    #[test]
    fn random_holds_and_releases_keep_order() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut held = HeldAnswers::default();
        let mut out = Vec::new();
        // (answer number, ticket it needs) in the order answered.
        let mut answers: Vec<(u8, u64)> = Vec::new();
        let mut issued = 0u64;
        let mut done = 0u64;
        for n in 0..=255u8 {
            let needs = if next(3) == 0 {
                issued += 1;
                held.hold_until(issued);
                issued
            } else {
                0
            };
            answers.push((n, needs.max(answers.last().map_or(0, |a| a.1))));
            if held.is_holding() {
                held.buffer().push(n);
            } else {
                out.push(n);
            }
            if next(4) == 0 && done < issued {
                done += 1 + next(issued - done);
            }
            held.release(done, &mut out);
            let expected: Vec<u8> = answers
                .iter()
                .take_while(|a| a.1 <= done)
                .map(|a| a.0)
                .collect();
            assert_eq!(out, expected);
        }
    }
}
