//! A worker's ends of the rings to the other workers, and what waits on
//! them: control records queued outside a full ring, the barriers that held
//! answers wait for, the peers to wake, and what the worker saw of its
//! consumers when it last retried its stalled publishers (whether it may
//! sleep).
//!
//! Nothing here knows connections or subscriptions; the core moves records
//! between them and this part.

use std::collections::VecDeque;
use std::sync::atomic::{fence, Ordering};

use super::records;
use super::sync::Barriers;
use crate::rings::{Consumer, Producer, Sleep, WorkerRings};
use crate::router::{WorkerId, WorkerSet};
use crate::stats::{Counter, WorkerStats};

pub(super) struct Peers {
    rings: WorkerRings,
    /// How many other workers there are.
    count: usize,
    /// Control records waiting for room in a full ring, per destination.
    overflow: Vec<VecDeque<Box<[u8]>>>,
    barriers: Barriers,
    /// The consumers' positions of the outgoing rings when the waiting
    /// connections were last retried, and the barrier then done: if
    /// neither moved, they cannot progress, and the worker may sleep.
    retried_at_heads: Vec<u64>,
    retried_at_barrier: u64,
    /// Peers that got records (or ring space) and may need waking.
    wake: WorkerSet,
    /// Incoming rings left unread until a backlogged subscriber catches up.
    paused: WorkerSet,
}

impl Peers {
    pub(super) fn new(rings: WorkerRings) -> Peers {
        let workers = rings.outgoing.len();
        Peers {
            count: rings.outgoing.iter().filter(|p| p.is_some()).count(),
            overflow: (0..workers).map(|_| VecDeque::new()).collect(),
            barriers: Barriers::default(),
            retried_at_heads: vec![0; workers],
            retried_at_barrier: 0,
            wake: WorkerSet::empty(),
            paused: WorkerSet::empty(),
            rings,
        }
    }

    /// This worker's id.
    pub(super) fn id(&self) -> usize {
        self.rings.id
    }

    /// All workers, this one included.
    pub(super) fn workers(&self) -> usize {
        self.rings.outgoing.len()
    }

    pub(super) fn any(&self) -> bool {
        self.count > 0
    }

    /// The ring to worker `to`, for the records of a published message.
    pub(super) fn producer(&mut self, to: WorkerId) -> &mut Producer {
        self.rings.outgoing[to as usize]
            .as_mut()
            .expect("records go to peers only")
    }

    /// Sends a record that must not wait on the caller (interest changes,
    /// forwarded group deliveries): into the ring when it has room and
    /// nothing is queued before it, else into the overflow queue, in order.
    pub(super) fn push_control(&mut self, to: usize, len: usize, write: impl FnOnce(&mut [u8])) {
        let producer = self.rings.outgoing[to]
            .as_mut()
            .expect("records go to peers only");
        let overflow = &mut self.overflow[to];
        if overflow.is_empty() {
            if let Some(slot) = producer.try_reserve(len) {
                write(slot);
                producer.commit();
                return;
            }
        }
        let mut record = vec![0; len].into_boxed_slice();
        write(&mut record);
        overflow.push_back(record);
    }

    /// Tells every peer that a local subscription to `filter` in `queue`
    /// came (`add`) or went.
    pub(super) fn broadcast_interest(&mut self, add: bool, filter: &[u8], queue: Option<&[u8]>) {
        let len = records::interest_len(filter, queue);
        for to in 0..self.rings.outgoing.len() {
            if self.rings.outgoing[to].is_some() {
                self.push_control(to, len, |slot| {
                    records::write_interest(slot, add, filter, queue)
                });
            }
        }
    }

    pub(super) fn flush_overflow(&mut self) {
        for (to, queue) in self.overflow.iter_mut().enumerate() {
            let Some(producer) = self.rings.outgoing[to].as_mut() else {
                continue;
            };
            while let Some(record) = queue.front() {
                let Some(slot) = producer.try_reserve(record.len()) else {
                    break;
                };
                slot.copy_from_slice(record);
                producer.commit();
                queue.pop_front();
            }
        }
    }

    /// The number of rings in (one per worker; none from this one).
    pub(super) fn incoming(&self) -> usize {
        self.rings.incoming.len()
    }

    /// Takes the ring from worker `from` out, so that the records read from
    /// it can be handled with the whole core; see [`put_back`](Self::put_back).
    pub(super) fn take_incoming(&mut self, from: usize) -> Option<Consumer> {
        self.rings.incoming[from].take()
    }

    /// Leaves the ring from worker `from` unread (its next record is for a
    /// backlogged subscriber) until [`resume_paused_rings`](Self::resume_paused_rings).
    pub(super) fn pause(&mut self, from: usize) {
        self.paused.insert(from as WorkerId);
    }

    pub(super) fn is_paused(&self, from: usize) -> bool {
        self.paused.contains(from as WorkerId)
    }

    pub(super) fn resume_paused_rings(&mut self) {
        self.paused = WorkerSet::empty();
    }

    /// Returns a ring taken out. When records were read from it (`advanced`),
    /// their space is released.
    pub(super) fn put_back(&mut self, from: usize, mut consumer: Consumer, advanced: bool) {
        if advanced {
            consumer.release();
            // A producer stalled on this ring sleeps until space is freed.
            if self.rings.doorbell(from).awaits_release() {
                self.wake.insert(from as WorkerId);
            }
        }
        self.rings.incoming[from] = Some(consumer);
    }

    /// Asks for a barrier covering everything pushed so far; returns the
    /// ticket to wait for.
    pub(super) fn request_barrier(&mut self) -> u64 {
        self.barriers.request()
    }

    /// The last barrier ticket done.
    pub(super) fn barrier_done(&self) -> u64 {
        self.barriers.done()
    }

    /// Completes the barriers that all consumers have passed.
    pub(super) fn advance_barriers(&mut self) {
        self.barriers.advance(&self.rings.outgoing);
    }

    /// Whether records or barriers wait for the peers to consume.
    pub(super) fn awaits_consumers(&self) -> bool {
        !self.barriers.is_idle() || self.overflow.iter().any(|q| !q.is_empty())
    }

    /// Notes where the consumers are before the waiting connections are
    /// retried (see [`peers_moved`](Self::peers_moved)).
    pub(super) fn note_heads_before_retry(&mut self) {
        for (seen, producer) in self.retried_at_heads.iter_mut().zip(&self.rings.outgoing) {
            *seen = producer.as_ref().map_or(0, Producer::consumer_position);
        }
    }

    /// Notes the barrier done when the waiting connections are retried.
    pub(super) fn note_barrier_before_retry(&mut self) {
        self.retried_at_barrier = self.barriers.done();
    }

    /// Publishes this iteration's records to the peers (to be woken: see
    /// [`take_wake`](Self::take_wake)) and takes the barrier snapshot that
    /// answers held this iteration wait for.
    pub(super) fn publish(&mut self, stats: &WorkerStats) {
        let mut published = false;
        for (to, producer) in self.rings.outgoing.iter_mut().enumerate() {
            if let Some(producer) = producer {
                if producer.publish() {
                    published = true;
                    self.wake.insert(to as WorkerId);
                }
            }
        }
        let ready = self.overflow.iter().all(|q| q.is_empty());
        self.barriers.snapshot(&self.rings.outgoing, ready);
        self.barriers.advance(&self.rings.outgoing);
        if published {
            self.record_ring_occupancy(stats);
            // Pairs with the SeqCst of a consumer going to sleep: either it
            // sees our records, or we see that it sleeps and wake it.
            fence(Ordering::SeqCst);
        }
    }

    /// Ring occupancy high-water mark, sampled when a batch is published.
    fn record_ring_occupancy(&self, stats: &WorkerStats) {
        for producer in self.rings.outgoing.iter().flatten() {
            let used = producer.published_position() - producer.consumer_position();
            stats.max(Counter::RingOccupancyHighWater, used);
        }
    }

    /// Peers that got records (or space) since the last call and are asleep.
    pub(super) fn take_wake(&mut self) -> WorkerSet {
        let candidates = std::mem::replace(&mut self.wake, WorkerSet::empty());
        let mut wake = WorkerSet::empty();
        for w in candidates.iter() {
            if self.rings.doorbell(w as usize).is_sleeping() {
                wake.insert(w);
            }
        }
        wake
    }

    /// Says that this worker goes to sleep, woken by records only or, when
    /// `on_release` (it waits for peers), by released space too; then checks
    /// once more that nothing arrived and, when waiting for peers, that none
    /// moved since the waiters were last retried. Returns whether it may
    /// sleep.
    pub(super) fn prepare_sleep(&mut self, on_release: bool) -> bool {
        let id = self.rings.id;
        self.rings.doorbell(id).set(if on_release {
            Sleep::OnRecordsOrRelease
        } else {
            Sleep::OnRecords
        });
        // A paused ring's records wait for a connection to catch up, which
        // the backend's own events tell.
        let paused = self.paused;
        let empty = self.rings.incoming.iter_mut().enumerate().all(|(from, c)| {
            paused.contains(from as WorkerId) || c.as_mut().is_none_or(|c| c.is_empty())
        });
        let idle = empty && !(on_release && self.peers_moved());
        if !idle {
            self.rings.doorbell(id).set(Sleep::Awake);
        }
        idle
    }

    /// Whether a consumer released space, or a barrier completed, since the
    /// waiting connections were last retried.
    fn peers_moved(&self) -> bool {
        // Pairs with the consumer's fence between its release and its
        // doorbell check (`Doorbell::awaits_release`).
        fence(Ordering::SeqCst);
        self.barriers.done() != self.retried_at_barrier
            || self
                .rings
                .outgoing
                .iter()
                .zip(&self.retried_at_heads)
                .any(|(p, &seen)| p.as_ref().is_some_and(|p| p.consumer_position() != seen))
    }

    pub(super) fn woke_up(&mut self) {
        let id = self.rings.id;
        self.rings.doorbell(id).set(Sleep::Awake);
    }
}
