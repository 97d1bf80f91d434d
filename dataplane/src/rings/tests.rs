use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

const CAP: usize = 4096;

/// The producer of ring 0 -> 1 and the consumer of the same ring.
fn pair(cap: usize) -> (Producer, Consumer) {
    let mut workers = RingRegion::new(2, cap).unwrap().into_workers();
    let consumer = workers[1].incoming[0].take().unwrap();
    let producer = workers[0].outgoing[1].take().unwrap();
    (producer, consumer)
}

fn push(p: &mut Producer, bytes: &[u8]) -> bool {
    match p.try_reserve(bytes.len()) {
        Some(slot) => {
            slot.copy_from_slice(bytes);
            p.commit();
            true
        }
        None => false,
    }
}

fn pop(c: &mut Consumer) -> Option<Vec<u8>> {
    let record = c.peek()?.to_vec();
    c.advance();
    Some(record)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Length (1..=300) of record `seq` in the stress test.
fn stress_len(seq: u64) -> usize {
    1 + (splitmix(seq) % 300) as usize
}

/// Contents of record `seq`: its sequence number, then bytes derived from it.
fn stress_fill(seq: u64, buf: &mut [u8]) {
    let x = splitmix(seq ^ 0x5555);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (x >> ((i % 8) * 8)) as u8 ^ i as u8;
    }
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

fn assert_send<T: Send>() {}

#[test]
fn handles_are_send() {
    assert_send::<Producer>();
    assert_send::<Consumer>();
    assert_send::<WorkerRings>();
    assert_send::<RingSet>();
}

#[test]
fn invalid_sizes_rejected() {
    for bytes in [0, 1, 1000, 2048, 4095, 4097, 6000, 3 << 12, usize::MAX] {
        let err = RingRegion::new(2, bytes).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "ring_bytes {bytes}"
        );
    }
    let err = RingRegion::new(0, CAP).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let err = RingRegion::new(usize::MAX / 2, CAP).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

    let set = RingRegion::new(1, CAP).unwrap();
    assert_eq!(set.workers(), 1);
    let workers = set.into_workers();
    assert_eq!(workers.len(), 1);
    assert!(workers[0].outgoing[0].is_none() && workers[0].incoming[0].is_none());

    let set = RingRegion::new(2, 1 << 16).unwrap();
    assert_eq!(set.ring_bytes(), 1 << 16);
    let (p, c) = pair(1 << 16);
    assert_eq!((p.capacity(), c.capacity()), (1 << 16, 1 << 16));
    assert_eq!(p.max_record(), (1 << 15) - 16);
}

#[test]
fn push_peek_advance_release_in_order() {
    let (mut p, mut c) = pair(CAP);
    assert!(c.is_empty());
    assert!(c.peek().is_none());
    for i in 0..10u8 {
        assert!(push(&mut p, &vec![i; i as usize * 3]));
    }
    // Committed but not published: invisible.
    assert!(c.peek().is_none());
    assert!(c.is_empty());
    assert!(p.publish());
    assert!(!p.publish(), "nothing new to publish");
    assert!(!c.is_empty());
    for i in 0..10u8 {
        let first = c.peek().unwrap().to_vec();
        // Peek again without advance: the same record.
        assert_eq!(c.peek().unwrap(), &first[..]);
        assert_eq!(first, vec![i; i as usize * 3]);
        c.advance();
    }
    assert!(c.peek().is_none());
    assert!(c.is_empty());
    assert_eq!(p.consumer_position(), 0, "advanced but not released");
    c.release();
    assert_eq!(p.consumer_position(), p.published_position());
}

#[test]
fn payload_is_aligned_and_zero_length_records_work() {
    let (mut p, mut c) = pair(CAP);
    for len in [0, 1, 7, 8, 9, 0, 15] {
        assert!(push(&mut p, &vec![0xab; len]));
    }
    p.publish();
    for len in [0, 1, 7, 8, 9, 0, 15] {
        let r = c.peek().unwrap();
        assert_eq!(r.len(), len);
        assert_eq!(r.as_ptr() as usize % 8, 0);
        c.advance();
    }
    assert!(c.peek().is_none());
    // Footprints: 8 + round_up(len, 8).
    assert_eq!(p.published_position(), 8 + 16 + 16 + 16 + 24 + 8 + 24);
}

#[test]
fn uncommitted_reservation_is_dropped() {
    let (mut p, mut c) = pair(CAP);
    p.try_reserve(100).unwrap().fill(1);
    // A new reservation replaces the uncommitted one.
    p.try_reserve(3).unwrap().copy_from_slice(b"abc");
    p.commit();
    // An outstanding reservation is not published.
    p.try_reserve(50).unwrap().fill(2);
    assert!(p.publish());
    assert_eq!(pop(&mut c).unwrap(), b"abc");
    assert!(c.peek().is_none());
    p.commit();
    p.publish();
    assert_eq!(pop(&mut c).unwrap(), vec![2; 50]);
    assert!(c.peek().is_none());
}

#[test]
fn wrap_around_with_padding() {
    let (mut p, mut c) = pair(CAP);
    // 63 records of footprint 64 leave 64 bytes before the end.
    for i in 0..63u32 {
        assert!(push(&mut p, &[i as u8; 56]));
    }
    p.publish();
    for _ in 0..63 {
        pop(&mut c).unwrap();
    }
    c.release();
    assert_eq!(p.published_position(), 63 * 64);
    // Footprint 112 does not fit into the last 64 bytes: 64 bytes of padding,
    // then the record at offset 0.
    assert!(push(&mut p, &[7; 100]));
    p.publish();
    assert_eq!(p.published_position(), 64 * 64 + 112);
    assert_eq!(c.occupancy(), 64 + 112);
    let r = c.peek().unwrap();
    assert_eq!(r, &[7; 100][..]);
    c.advance();
    c.release();
    assert_eq!(p.consumer_position(), 64 * 64 + 112);
    assert_eq!(c.occupancy(), 0);
    // A record that ends exactly at the end of the ring needs no padding.
    let (mut p, mut c) = pair(CAP);
    for _ in 0..63 {
        assert!(push(&mut p, &[1; 56]));
    }
    p.publish();
    while pop(&mut c).is_some() {}
    c.release();
    assert!(push(&mut p, &[2; 56]));
    assert!(push(&mut p, &[3; 56]));
    p.publish();
    assert_eq!(p.published_position(), 65 * 64);
    assert_eq!(pop(&mut c).unwrap(), vec![2; 56]);
    assert_eq!(pop(&mut c).unwrap(), vec![3; 56]);
}

#[test]
fn wrapping_record_needs_room_for_its_padding() {
    // The padding in front of a wrapped record counts as used space.
    let (mut p, mut c) = pair(CAP);
    for _ in 0..62 {
        assert!(push(&mut p, &[0; 56]));
    }
    p.publish();
    // 128 bytes left before the end, 62 * 64 used.
    for _ in 0..2 {
        pop(&mut c).unwrap();
    }
    c.release();
    // Free: 4096 - 60 * 64 = 256 bytes, 128 of them before the end. A
    // 200-byte record (footprint 208) needs 128 padding + 208 = 336: no room.
    assert!(p.try_reserve(200).is_none());
    assert!(!p.has_room(200));
    // 120 bytes (footprint 128) fit before the end without padding.
    assert!(p.has_room(120));
    pop(&mut c).unwrap();
    pop(&mut c).unwrap();
    c.release();
    // Now 384 free: 128 padding + 208 fits.
    assert!(p.has_room(200));
    assert!(push(&mut p, &[9; 200]));
    p.publish();
    for _ in 0..58 {
        assert_eq!(pop(&mut c).unwrap(), vec![0; 56]);
    }
    assert_eq!(pop(&mut c).unwrap(), vec![9; 200]);
    assert!(c.is_empty());
}

#[test]
fn exactly_full_ring_returns_none() {
    let (mut p, mut c) = pair(CAP);
    assert_eq!(p.free_bytes(), CAP);
    for i in 0..64u32 {
        assert!(push(&mut p, &[i as u8; 56]), "record {i}");
    }
    assert_eq!(p.free_bytes(), 0);
    assert!(p.try_reserve(0).is_none());
    assert!(!p.has_room(0));
    p.publish();
    assert!(p.try_reserve(0).is_none());
    assert_eq!(c.occupancy(), CAP);
    // Advancing alone does not free anything.
    pop(&mut c).unwrap();
    assert!(p.try_reserve(0).is_none());
    c.release();
    assert_eq!(p.free_bytes(), 64);
    assert!(p.try_reserve(57).is_none(), "footprint 72 > 64 free");
    assert!(push(&mut p, &[0xee; 56]));
    assert!(p.try_reserve(0).is_none());
    p.publish();
    for i in 1..64u32 {
        assert_eq!(pop(&mut c).unwrap(), vec![i as u8; 56]);
    }
    assert_eq!(pop(&mut c).unwrap(), vec![0xee; 56]);
    assert!(c.peek().is_none());
}

#[test]
fn records_of_many_sizes_at_every_offset() {
    for cap in [CAP, 2 * CAP] {
        let (mut p, mut c) = pair(cap);
        let max = p.max_record();
        let mut buf = vec![0u8; max];
        let mut seq = 0u64;
        // One at a time, so every size meets many ring offsets.
        for round in 0..3 {
            for len in 0..=max {
                let len = (len * 7 + round * 13) % (max + 1);
                stress_fill(seq, &mut buf[..len]);
                assert!(push(&mut p, &buf[..len]), "len {len}");
                p.publish();
                let r = c.peek().unwrap();
                assert_eq!(r, &buf[..len]);
                c.advance();
                c.release();
                seq += 1;
            }
        }
        // And in batches that fill the ring.
        let mut sent = seq;
        let mut received = seq;
        while received < seq + 20_000 {
            while sent < seq + 20_000 {
                let len = (splitmix(sent) % 700) as usize;
                let Some(slot) = p.try_reserve(len) else {
                    break;
                };
                stress_fill(sent, slot);
                p.commit();
                sent += 1;
            }
            p.publish();
            while let Some(r) = c.peek() {
                let len = (splitmix(received) % 700) as usize;
                stress_fill(received, &mut buf[..len]);
                assert_eq!(r, &buf[..len]);
                c.advance();
                received += 1;
            }
            c.release();
        }
    }
}

#[test]
fn max_record_boundary() {
    let (mut p, mut c) = pair(CAP);
    let max = p.max_record();
    assert_eq!(max, CAP / 2 - 16);
    // A max record fits into an empty ring at any position.
    for shift in (0..CAP).step_by(8 * 17) {
        let filler = shift % 1000;
        assert!(push(&mut p, &vec![1; filler]));
        p.publish();
        pop(&mut c).unwrap();
        c.release();
        let record = vec![(shift / 8) as u8; max];
        assert!(push(&mut p, &record), "max record after {filler}");
        p.publish();
        assert_eq!(pop(&mut c).unwrap(), record);
        c.release();
    }
    let too_big = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.try_reserve(max + 1).is_none()
    }));
    if cfg!(debug_assertions) {
        assert!(too_big.is_err(), "debug builds panic on len > max_record");
    } else {
        assert!(
            too_big.unwrap(),
            "release builds return None on len > max_record"
        );
    }
}

#[test]
fn barrier_positions() {
    let (mut p, mut c) = pair(CAP);
    assert_eq!(p.published_position(), 0);
    assert_eq!(p.consumer_position(), 0);
    push(&mut p, b"one");
    assert_eq!(p.published_position(), 0, "commit does not publish");
    p.publish();
    let first = p.published_position();
    assert_eq!(first, 16);
    push(&mut p, b"two");
    p.publish();
    let second = p.published_position();
    assert_eq!(second, 32);
    // The consumer handles the first record only.
    assert_eq!(pop(&mut c).unwrap(), b"one");
    assert!(
        p.consumer_position() < first,
        "advance alone is not visible"
    );
    c.release();
    assert!(p.consumer_position() >= first);
    assert!(p.consumer_position() < second);
    assert_eq!(c.occupancy(), 16);
    assert_eq!(pop(&mut c).unwrap(), b"two");
    c.release();
    assert!(p.consumer_position() >= second);
    // Releasing again without progress changes nothing.
    c.release();
    assert_eq!(p.consumer_position(), second);
}

#[test]
fn three_workers_rings_are_independent() {
    let mut workers = RingRegion::new(3, CAP).unwrap().into_workers();
    assert_eq!(workers.len(), 3);
    for (id, w) in workers.iter().enumerate() {
        assert_eq!(w.id, id);
        assert_eq!(w.workers(), 3);
        assert_eq!(w.outgoing.len(), 3);
        assert_eq!(w.incoming.len(), 3);
        for peer in 0..3 {
            assert_eq!(w.outgoing[peer].is_none(), peer == id);
            assert_eq!(w.incoming[peer].is_none(), peer == id);
        }
    }
    // Each ring (from, to) gets its own number of records.
    let count = |from: usize, to: usize| 1 + from * 3 + to;
    for w in workers.iter_mut() {
        let from = w.id;
        for (to, p) in w.outgoing.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            for k in 0..count(from, to) {
                assert!(push(p, &[from as u8, to as u8, k as u8]));
            }
            assert!(p.publish());
        }
    }
    for w in workers.iter_mut() {
        let to = w.id;
        for (from, c) in w.incoming.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            assert_eq!(c.occupancy(), count(from, to) * 16);
            for k in 0..count(from, to) {
                assert_eq!(pop(c).unwrap(), [from as u8, to as u8, k as u8]);
            }
            assert!(c.is_empty());
        }
    }
    // Releasing one ring moves only that ring's consumer position.
    workers[1].incoming[0].as_mut().unwrap().release();
    for w in &workers {
        for (to, p) in w.outgoing.iter().enumerate() {
            let Some(p) = p else { continue };
            let expected = if (w.id, to) == (0, 1) {
                p.published_position()
            } else {
                0
            };
            assert_eq!(p.consumer_position(), expected, "ring ({}, {to})", w.id);
        }
    }
    // Filling ring 2 -> 0 leaves 2 -> 1 and 0 -> 2 untouched.
    {
        let p = workers[2].outgoing[0].as_mut().unwrap();
        while push(p, &[0; 200]) {}
        while push(p, &[]) {}
        p.publish();
        assert!(!p.has_room(0));
    }
    assert!(workers[2].outgoing[1].as_mut().unwrap().has_room(1000));
    assert!(workers[0].outgoing[2].as_mut().unwrap().has_room(1000));
    assert!(workers[1].incoming[2].as_mut().unwrap().is_empty());
    assert!(workers[2].incoming[0].as_mut().unwrap().is_empty());

    // Doorbells are shared: what one worker sets, every worker sees.
    workers[1].doorbell(1).set(Sleep::OnRecords);
    for w in &workers {
        assert!(!w.doorbell(0).is_sleeping());
        assert!(w.doorbell(1).is_sleeping());
        assert!(!w.doorbell(2).is_sleeping());
    }
    workers[1].doorbell(1).set(Sleep::Awake);
    assert!(!workers[0].doorbell(1).is_sleeping());
}

#[test]
fn handles_outlive_the_other_handles() {
    let (mut p, mut c) = {
        let mut workers = RingRegion::new(2, CAP).unwrap().into_workers();
        let p = workers[0].outgoing[1].take().unwrap();
        let c = workers[1].incoming[0].take().unwrap();
        (p, c)
    };
    push(&mut p, b"still mapped");
    p.publish();
    drop(p);
    assert_eq!(pop(&mut c).unwrap(), b"still mapped");
}

/// Records the producer thread sends in the stress test.
fn stress_count() -> u64 {
    if cfg!(debug_assertions) {
        300_000
    } else {
        1_000_000
    }
}

#[test]
fn two_threads_records_arrive_intact_and_in_order() {
    let (mut p, mut c) = pair(1 << 16);
    let total = stress_count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let producer = thread::spawn(move || {
        let mut seq = 0u64;
        while seq < total {
            let mut batch = 0;
            while seq < total && batch < 64 {
                let Some(slot) = p.try_reserve(stress_len(seq)) else {
                    break;
                };
                stress_fill(seq, slot);
                p.commit();
                seq += 1;
                batch += 1;
            }
            if !p.publish() {
                assert!(Instant::now() < deadline, "producer stuck");
                thread::yield_now();
            }
        }
        // Wait until the consumer has processed everything (barrier).
        let end = p.published_position();
        while p.consumer_position() < end {
            assert!(Instant::now() < deadline, "consumer never caught up");
            thread::yield_now();
        }
        end
    });
    let mut expected = [0u8; 300];
    let mut seq = 0u64;
    let mut bytes = 0u64;
    while seq < total {
        let mut batch = 0;
        while let Some(record) = c.peek() {
            let len = stress_len(seq);
            stress_fill(seq, &mut expected[..len]);
            assert_eq!(record, &expected[..len], "record {seq}");
            bytes += 8 + len.next_multiple_of(8) as u64;
            c.advance();
            seq += 1;
            batch += 1;
            if batch == 256 {
                break;
            }
        }
        if batch > 0 {
            c.release();
        } else {
            assert!(Instant::now() < deadline, "consumer stuck at {seq}");
            thread::yield_now();
        }
    }
    assert!(c.is_empty());
    let end = producer.join().unwrap();
    // Every byte the producer published is a record or padding we consumed.
    assert!(end >= bytes);
    assert_eq!(c.occupancy(), 0);
}

/// Ring 0 -> 1's two ends, and the two workers' handles (for the
/// doorbells), as the wake-up tests use them.
fn pair_with_doorbells() -> (Producer, Consumer, WorkerRings, WorkerRings) {
    let mut workers = RingRegion::new(2, CAP).unwrap().into_workers();
    let consumer = workers[1].incoming[0].take().unwrap();
    let producer = workers[0].outgoing[1].take().unwrap();
    let consumer_rings = workers.pop().unwrap();
    let producer_rings = workers.pop().unwrap();
    (producer, consumer, producer_rings, consumer_rings)
}

/// The doorbell protocol: a consumer that sleeps (parks) only after
/// `set(Sleep::OnRecords)` and a final `is_empty` check is always woken.
#[test]
fn sleeping_consumer_is_always_woken() {
    let (mut p, mut c, producer_rings, consumer_rings) = pair_with_doorbells();
    let rounds: u64 = if cfg!(debug_assertions) {
        5_000
    } else {
        50_000
    };
    let lost = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let lost = lost.clone();
        let done = done.clone();
        thread::spawn(move || {
            let mut seq = 0u64;
            while seq < rounds {
                while let Some(r) = c.peek() {
                    assert_eq!(r, seq.to_le_bytes());
                    c.advance();
                    seq += 1;
                }
                c.release();
                if seq == rounds {
                    break;
                }
                let bell = consumer_rings.doorbell(1);
                bell.set(Sleep::OnRecords);
                if c.is_empty() {
                    let start = Instant::now();
                    thread::park_timeout(Duration::from_secs(2));
                    if c.is_empty() && start.elapsed() >= Duration::from_secs(2) {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                bell.set(Sleep::Awake);
            }
            done.store(true, Ordering::Release);
        })
    };
    let waker = consumer.thread().clone();
    for seq in 0..rounds {
        while !push(&mut p, &seq.to_le_bytes()) {
            thread::yield_now();
        }
        p.publish();
        if producer_rings.doorbell(1).is_sleeping() {
            waker.unpark();
        }
        if seq % 7 == 0 {
            thread::yield_now();
        }
    }
    consumer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    assert_eq!(lost.load(Ordering::Relaxed), 0, "lost wake-ups");
}

/// The release direction: a producer that sleeps on a full ring (after
/// `set(Sleep::OnRecordsOrRelease)` and a final look at the consumer's
/// position) is always woken by the consumer's release.
#[test]
fn producer_sleeping_on_a_full_ring_is_always_woken() {
    let (mut p, mut c, producer_rings, consumer_rings) = pair_with_doorbells();
    let rounds: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let lost = Arc::new(AtomicU64::new(0));
    let producer = {
        let lost = lost.clone();
        thread::spawn(move || {
            let bell = producer_rings.doorbell(0);
            let record = [0u8; 248];
            for seq in 0..rounds {
                loop {
                    let mut bytes = record;
                    bytes[..8].copy_from_slice(&seq.to_le_bytes());
                    if push(&mut p, &bytes) {
                        break;
                    }
                    p.publish();
                    let seen = p.consumer_position();
                    bell.set(Sleep::OnRecordsOrRelease);
                    std::sync::atomic::fence(Ordering::SeqCst);
                    if p.consumer_position() == seen {
                        let start = Instant::now();
                        thread::park_timeout(Duration::from_secs(2));
                        if p.consumer_position() == seen
                            && start.elapsed() >= Duration::from_secs(2)
                        {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    bell.set(Sleep::Awake);
                }
            }
            p.publish();
        })
    };
    let waker = producer.thread().clone();
    let mut seq = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seq < rounds && Instant::now() < deadline {
        let mut got = 0;
        while let Some(r) = c.peek() {
            assert_eq!(r[..8], seq.to_le_bytes());
            c.advance();
            seq += 1;
            got += 1;
            if got == 5 {
                break;
            }
        }
        c.release();
        if consumer_rings.doorbell(0).awaits_release() {
            waker.unpark();
        }
        if seq.is_multiple_of(3) {
            thread::yield_now();
        }
    }
    producer.join().unwrap();
    assert_eq!(seq, rounds);
    assert_eq!(lost.load(Ordering::Relaxed), 0, "lost wake-ups");
}
