//! Cross-worker visibility barriers.
//!
//! A connection whose frames pushed records to other workers (a SUBSCRIBE's
//! interest, a PUBLISH's data) may not be answered with OK or PONG until
//! every other worker has processed those records. The worker takes a
//! snapshot of its rings' producer positions once per loop iteration for all
//! connections that asked; a snapshot is complete when every consumer has
//! released past it. Snapshots complete in order, so one counter (`done`)
//! says which held answers may go (see `answers.rs`).

use std::collections::VecDeque;

use crate::rings::Producer;

#[derive(Debug, Default)]
pub struct Barriers {
    requested: bool,
    issued: u64,
    done: u64,
    pending: VecDeque<(u64, Vec<u64>)>,
    /// Target lists of completed snapshots, reused: no allocation per
    /// snapshot in the steady state.
    spare: Vec<Vec<u64>>,
}

impl Barriers {
    /// Asks for a barrier covering everything pushed so far; returns the
    /// ticket to wait for.
    pub fn request(&mut self) -> u64 {
        self.requested = true;
        self.issued + 1
    }

    /// The last ticket done.
    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn is_idle(&self) -> bool {
        !self.requested && self.pending.is_empty()
    }

    /// Takes the snapshot for this iteration's requests, after the producers
    /// published. `ready` is false while records still wait outside the
    /// rings (control overflow): the snapshot would not cover them yet.
    pub fn snapshot(&mut self, producers: &[Option<Producer>], ready: bool) {
        if !self.requested || !ready {
            return;
        }
        self.requested = false;
        self.issued += 1;
        let mut targets = self.spare.pop().unwrap_or_default();
        targets.clear();
        targets.extend(
            producers
                .iter()
                .map(|p| p.as_ref().map_or(0, Producer::published_position)),
        );
        self.pending.push_back((self.issued, targets));
    }

    /// Completes every snapshot that all consumers have passed.
    pub fn advance(&mut self, producers: &[Option<Producer>]) {
        while let Some((ticket, targets)) = self.pending.front() {
            let passed = producers
                .iter()
                .zip(targets)
                .all(|(p, &target)| p.as_ref().is_none_or(|p| p.consumer_position() >= target));
            if !passed {
                break;
            }
            self.done = *ticket;
            if let Some((_, targets)) = self.pending.pop_front() {
                self.spare.push(targets);
            }
        }
    }
}
