//! The messages of a run, whatever carries them: how a publisher encodes
//! them ([`Template`]) and what a subscriber checks of each one it receives
//! ([`SubscriberCheck`]). Shared by the kernel-socket clients of
//! [`super::flow`] and the DPDK load generator.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use super::flow::{FlowSpec, Pace};
use super::new_histogram;
use crate::proto::{payload, Wire};

/// Queue-group runs can check at most this many sequence numbers for
/// duplicates; a publisher stops there.
pub const SEEN_BITS: u64 = 1 << 28;

/// Most messages one publisher sends in a run (sequence numbers are u32).
pub fn seq_limit(spec: &FlowSpec) -> u64 {
    if spec.queue {
        SEEN_BITS
    } else {
        u32::MAX as u64
    }
}

/// Queue groups: one bit per (publisher, sequence number), to find
/// messages delivered to more than one member.
pub fn seen_bits(spec: &FlowSpec) -> Option<Box<[AtomicU64]>> {
    spec.queue.then(|| {
        (0..SEEN_BITS / 64 * spec.pubs as u64)
            .map(|_| AtomicU64::new(0))
            .collect()
    })
}

/// The encoded publish request around a payload, for one run.
pub struct Template {
    head: Vec<u8>,
    body: Vec<u8>,
    tail: &'static [u8],
}

impl Template {
    pub fn new<W: Wire>(subject: &str, payload_len: usize) -> Template {
        let mut head = Vec::new();
        W::put_publish_head(&mut head, subject, payload_len);
        // A filler that is not all zeros, so nothing compresses it away.
        let body = (0..payload_len).map(|i| (i * 31 + 7) as u8).collect();
        Template {
            head,
            body,
            tail: W::publish_tail(),
        }
    }

    pub fn frame_len(&self) -> usize {
        self.head.len() + self.body.len() + self.tail.len()
    }

    #[inline]
    pub fn put(&self, out: &mut Vec<u8>, publisher: u32, seq: u64, stamp: u64) {
        out.extend_from_slice(&self.head);
        let at = out.len();
        out.extend_from_slice(&self.body);
        payload::stamp(
            &mut out[at..at + payload::HEADER],
            publisher,
            seq as u32,
            stamp,
        );
        out.extend_from_slice(self.tail);
    }
}

/// One subscriber's view of a run: what it received from each publisher,
/// and what was wrong with it.
#[derive(Debug)]
pub struct SubscriberCheck {
    pub counts: Vec<u64>,
    pub gaps: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub malformed: u64,
    /// Latency runs: one-way latency of the messages stamped after the warm-up.
    pub latency: Option<Histogram<u64>>,
    next_seq: Vec<u64>,
    payload: usize,
    queue: bool,
}

impl SubscriberCheck {
    pub fn new(spec: &FlowSpec) -> SubscriberCheck {
        SubscriberCheck {
            counts: vec![0; spec.pubs],
            gaps: 0,
            reordered: 0,
            duplicates: 0,
            malformed: 0,
            latency: matches!(spec.pace, Pace::Rate(_)).then(new_histogram),
            next_seq: vec![0; spec.pubs],
            payload: spec.payload,
            queue: spec.queue,
        }
    }

    /// Counts and checks one delivered payload, received at `now_ns`;
    /// `seen`: the run's queue-group bits ([`seen_bits`]).
    #[inline]
    pub fn message(&mut self, body: &[u8], now_ns: u64, warm_ns: u64, seen: Option<&[AtomicU64]>) {
        let Some((publisher, seq, stamp)) = payload::read(body) else {
            self.malformed += 1;
            return;
        };
        let p = publisher as usize;
        if body.len() != self.payload || p >= self.counts.len() {
            self.malformed += 1;
            return;
        }
        let seq = seq as u64;
        self.counts[p] += 1;
        if self.queue {
            // Members see increasing numbers, with gaps.
            if seq < self.next_seq[p] {
                self.reordered += 1;
            } else {
                self.next_seq[p] = seq + 1;
            }
            if let Some(seen) = seen {
                let bit = p as u64 * SEEN_BITS + seq;
                let mask = 1u64 << (bit % 64);
                if seen[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed) & mask != 0 {
                    self.duplicates += 1;
                }
            }
        } else if seq == self.next_seq[p] {
            self.next_seq[p] += 1;
        } else if seq > self.next_seq[p] {
            self.gaps += seq - self.next_seq[p];
            self.next_seq[p] = seq + 1;
        } else {
            self.reordered += 1;
        }
        if let Some(hist) = self.latency.as_mut() {
            if stamp >= warm_ns {
                hist.saturating_record(now_ns.saturating_sub(stamp).max(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::blipmq::Blipmq;

    fn spec(pubs: usize, queue: bool) -> FlowSpec {
        FlowSpec {
            subject: crate::run::flow::SUBJECT,
            pubs,
            subs: 2,
            payload: 32,
            queue,
            pace: Pace::Max,
            warmup: Duration::ZERO,
            measure: Duration::ZERO,
        }
    }

    fn body(publisher: u32, seq: u32) -> Vec<u8> {
        let mut body = vec![0u8; 32];
        payload::stamp(&mut body, publisher, seq, 0);
        body
    }

    #[test]
    fn fan_out_counts_gaps_and_reorders_per_publisher() {
        let mut check = SubscriberCheck::new(&spec(2, false));
        for (p, seq) in [(0, 0), (1, 0), (0, 1), (0, 4), (0, 2), (1, 1)] {
            check.message(&body(p, seq), 0, 0, None);
        }
        check.message(&body(5, 0), 0, 0, None);
        check.message(&[0u8; 8], 0, 0, None);
        assert_eq!(check.counts, [4, 2]);
        assert_eq!((check.gaps, check.reordered, check.malformed), (2, 1, 2));
    }

    #[test]
    fn queue_members_share_the_seen_bits_and_find_duplicates() {
        let spec = spec(1, true);
        let seen = seen_bits(&spec).unwrap();
        let (mut a, mut b) = (SubscriberCheck::new(&spec), SubscriberCheck::new(&spec));
        a.message(&body(0, 0), 0, 0, Some(&seen));
        b.message(&body(0, 1), 0, 0, Some(&seen));
        a.message(&body(0, 2), 0, 0, Some(&seen));
        b.message(&body(0, 2), 0, 0, Some(&seen));
        assert_eq!((a.duplicates, b.duplicates), (0, 1));
        assert_eq!((a.gaps, b.gaps), (0, 0), "members see gaps by design");
    }

    #[test]
    fn template_stamps_each_message() {
        let template = Template::new::<Blipmq>(crate::run::flow::SUBJECT, 32);
        let mut out = Vec::new();
        template.put(&mut out, 3, 7, 99);
        template.put(&mut out, 3, 8, 100);
        assert_eq!(out.len(), 2 * template.frame_len());
        let first = &out[out.len() / 2 - template.tail.len() - 32..][..32];
        assert_eq!(payload::read(first), Some((3, 7, 99)));
    }
}
