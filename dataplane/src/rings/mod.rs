//! Single-producer single-consumer byte rings between workers.
//!
//! Every worker can send records to every other worker. For `n` workers,
//! [`RingRegion::new`] creates one anonymous memory mapping holding
//! `n * (n - 1)` rings, one per ordered pair `(from, to)` with `from != to`,
//! plus one [`Doorbell`] per worker. [`RingSet::into_workers`] then splits the
//! region into one [`WorkerRings`] per worker: worker `w` gets the
//! [`Producer`] of every ring `(w, to)` and the [`Consumer`] of every ring
//! `(from, w)`. Producers and consumers are `Send` but neither `Sync` nor
//! `Clone`, so ownership enforces the single-producer single-consumer rule.
//! Every handle holds an `Arc` of the mapping, so the memory outlives them all.
//!
//! # Records
//!
//! A ring carries variable-length byte records. Each record is preceded by
//! an 8-byte header (`u32` length, `u32` tag) and padded to a multiple of 8
//! bytes, so a record's payload always starts 8-byte aligned in the ring.
//! A record never straddles the end of the ring: when it does not fit before
//! the end, the producer writes a padding record covering the rest of the
//! ring (which the consumer skips) and starts the record at offset 0. The
//! largest record is [`Producer::max_record`] = `ring_bytes / 2 - 16` bytes;
//! a record that size always fits into an empty ring, wherever the
//! positions stand.
//!
//! # Batching
//!
//! Both sides batch their cross-core traffic. The producer
//! [`try_reserve`](Producer::try_reserve)s and [`commit`](Producer::commit)s
//! any number of records, then makes them all visible with one
//! [`publish`](Producer::publish) (one Release store). The consumer
//! [`peek`](Consumer::peek)s and [`advance`](Consumer::advance)s over any
//! number of records, then hands all their space back with one
//! [`release`](Consumer::release) (one Release store). Each side keeps a
//! cached copy of the other side's position and only reloads it when the
//! cache says the ring looks full (producer) or empty (consumer).
//!
//! # Barriers
//!
//! [`Producer::consumer_position`] is the consumer's *released* position.
//! The consumer releases only records it has finished with, so
//! `consumer_position() >= p` for a `p` taken from
//! [`Producer::published_position`] means the consumer has completely
//! processed every record published up to `p` (and, through the
//! Release/Acquire pair, everything it did while processing them happens
//! before the producer's observation).
//!
//! # Wake-ups
//!
//! A worker may block in epoll when idle, so a producer must know whether to
//! wake its consumer. The protocol, using the per-worker [`Doorbell`]:
//!
//! * consumer: [`set(Sleep::OnRecords)`](Doorbell::set), then re-check
//!   every incoming ring with [`Consumer::is_empty`], and block only if all
//!   are empty (otherwise `set(Sleep::Awake)` and keep working); after
//!   waking, `set(Sleep::Awake)`;
//! * producer: [`publish`](Producer::publish), then
//!   [`is_sleeping`](Doorbell::is_sleeping) on the consumer's doorbell, and
//!   wake it (eventfd / `mio::Waker`, owned by the caller) if it sleeps.
//!
//! `set` is a SeqCst store, `is_empty` reloads the producer position
//! with a SeqCst load, and `is_sleeping` issues a SeqCst fence before its
//! SeqCst load, so the producer's (Release) publish cannot be reordered after
//! its doorbell check. Hence at least one side sees the other: either the
//! consumer's re-check sees the new records, or the producer sees the
//! sleeping flag and wakes it. No wake-up is lost.
//!
//! The same protocol runs the other way for a producer that waits for its
//! consumers (a full ring, or a barrier): it sets
//! [`Sleep::OnRecordsOrRelease`], fences, and blocks only if no
//! [`Producer::consumer_position`] moved since it last looked; a consumer,
//! after [`release`](Consumer::release), wakes the producer if
//! [`awaits_release`](Doorbell::awaits_release). A producer that merely
//! idles (`OnRecords`) is not woken by releases, so at low load a record
//! costs one wake-up, not two.

// Shared memory between workers: the ring protocol's raw pointers.
#[allow(unsafe_code)]
mod region;
#[allow(unsafe_code)]
mod ring;

#[cfg(test)]
mod tests;

pub use region::{Doorbell, RingRegion, RingSet, Sleep, WorkerRings};
pub use ring::{Consumer, Producer};
