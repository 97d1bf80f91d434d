//! ARP for several workers on one port: a frame arrives on one queue, but
//! every worker's stack must learn its neighbours (smoltcp learns them
//! only from ARP). The worker that receives an ARP frame handles it (and
//! answers it); it also hands a copy to every other worker, which learns
//! from it without answering.
//!
//! ARP is rare: the receive path pays one relaxed load per burst to see
//! that nothing waits; only a worker with copies waiting takes a lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[cfg(test)]
use crate::backend::userspace::{is_arp, is_arp_reply};

/// The longest ARP frame copied (Ethernet header + ARP for IPv4 + padding).
pub const ARP_FRAME_MAX: usize = 64;
/// Copies kept per worker; older ones are dropped (ARP repeats itself).
const QUEUE_MAX: usize = 64;

/// A copy of a received ARP frame.
#[derive(Clone, Copy)]
pub struct ArpCopy {
    len: u8,
    bytes: [u8; ARP_FRAME_MAX],
}

impl ArpCopy {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

struct Inbox {
    waiting: AtomicBool,
    copies: Mutex<VecDeque<ArpCopy>>,
}

/// The ARP copies waiting for each worker.
pub struct ArpFanout {
    inboxes: Vec<Inbox>,
}

impl ArpFanout {
    pub fn new(workers: usize) -> ArpFanout {
        ArpFanout {
            inboxes: (0..workers)
                .map(|_| Inbox {
                    waiting: AtomicBool::new(false),
                    copies: Mutex::new(VecDeque::new()),
                })
                .collect(),
        }
    }

    /// Gives a copy of `frame`, received by worker `from`, to every other
    /// worker.
    pub fn share(&self, from: usize, frame: &[u8]) {
        if self.inboxes.len() < 2 || frame.len() > ARP_FRAME_MAX {
            return;
        }
        let mut copy = ArpCopy {
            len: frame.len() as u8,
            bytes: [0; ARP_FRAME_MAX],
        };
        copy.bytes[..frame.len()].copy_from_slice(frame);
        for (worker, inbox) in self.inboxes.iter().enumerate() {
            if worker == from {
                continue;
            }
            let mut copies = inbox.copies.lock().unwrap_or_else(|e| e.into_inner());
            if copies.len() == QUEUE_MAX {
                copies.pop_front();
            }
            copies.push_back(copy);
            inbox.waiting.store(true, Ordering::Release);
        }
    }

    /// The next copy waiting for `worker`, if any.
    pub fn take(&self, worker: usize) -> Option<ArpCopy> {
        let inbox = &self.inboxes[worker];
        if !inbox.waiting.load(Ordering::Relaxed) {
            return None;
        }
        let mut copies = inbox.copies.lock().unwrap_or_else(|e| e.into_inner());
        let copy = copies.pop_front();
        if copies.is_empty() {
            inbox.waiting.store(false, Ordering::Relaxed);
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(op: u8) -> Vec<u8> {
        let mut frame = vec![0u8; 42];
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        frame[21] = op;
        frame
    }

    #[test]
    fn every_other_worker_gets_a_copy_once() {
        let fanout = ArpFanout::new(3);
        fanout.share(1, &arp(1));
        assert_eq!(fanout.take(0).map(|c| c.bytes().to_vec()), Some(arp(1)));
        assert!(fanout.take(0).is_none());
        assert!(fanout.take(1).is_none(), "not to the receiver");
        assert_eq!(fanout.take(2).map(|c| c.bytes().to_vec()), Some(arp(1)));
        assert!(fanout.take(2).is_none());
    }

    #[test]
    fn a_full_inbox_keeps_the_newest() {
        let fanout = ArpFanout::new(2);
        for i in 0..QUEUE_MAX + 5 {
            let mut frame = arp(2);
            frame[41] = i as u8;
            fanout.share(0, &frame);
        }
        let first = fanout.take(1).unwrap();
        assert_eq!(first.bytes()[41], 5);
        let mut left = 1;
        while fanout.take(1).is_some() {
            left += 1;
        }
        assert_eq!(left, QUEUE_MAX);
    }

    #[test]
    fn classifies_frames() {
        assert!(is_arp(&arp(1)) && !is_arp_reply(&arp(1)));
        assert!(is_arp_reply(&arp(2)));
        let mut ip = arp(2);
        ip[13] = 0x00;
        assert!(!is_arp(&ip) && !is_arp_reply(&ip));
        // One worker: nothing to share with.
        let alone = ArpFanout::new(1);
        alone.share(0, &arp(1));
        assert!(alone.take(0).is_none());
    }
}
