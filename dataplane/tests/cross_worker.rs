//! Publishers on one worker, subscribers on both, through rings kept small
//! so that they fill: the publishers' worker stalls and sleeps until the
//! consumer frees space (that it is woken then, and not at its next tick, is
//! checked deterministically in `worker::tests`), and their PONGs, each held
//! until the other worker processed the batch before it, come back one per
//! PING while the publishers keep streaming. Every subscriber gets every
//! message, in each publisher's order, and the stats show that the ring did
//! fill. Bounded: fails after 60 s.

#[macro_use]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use blipmq_dataplane::stats::{Counter, StatsReader};
use blipmq_protocol::{encode, Op};
use common::*;

const PUBLISHERS: u32 = 2;
const MESSAGES: u64 = 20_000;
/// Messages per write; each write ends with a PING.
const BATCH: u64 = 50;
const PAYLOAD: usize = 1024;
const SUBJECT: &str = "cross.workers";
const LIMIT: Duration = Duration::from_secs(60);

/// The smallest ring the config takes for 4 KiB payloads (2 × (4096 +
/// 64 KiB), rounded up to a power of two), so that it fills.
const CONFIG: &str = "[limits]\nmax_payload = 4096\nmax_pending_bytes = 268435456\n\
                      [dataplane]\nring_bytes = 262144\n";

fn payload(publisher: u32, seq: u64) -> Vec<u8> {
    let mut bytes = vec![(seq as u8) ^ (publisher as u8); PAYLOAD];
    bytes[..4].copy_from_slice(&publisher.to_be_bytes());
    bytes[4..12].copy_from_slice(&seq.to_be_bytes());
    bytes
}

#[test]
fn stalled_publishers_sleep_and_their_pongs_follow_their_batches() {
    let deadline = Instant::now() + LIMIT;
    let stats_path =
        std::env::temp_dir().join(format!("blipmq-cross-{}.stats", std::process::id()));
    let config = format!(
        "{CONFIG}[control]\nstats_file = \"{}\"\n",
        stats_path.display()
    );
    let broker = Broker::start(2, &config);
    let stats = StatsReader::open(&stats_path).expect("the broker maps its stats file");
    let addr = broker.addr();
    // Two subscribers on the publishers' peer, one beside them.
    let mut subscribers = Vec::new();
    for w in [1u32, 1, 0] {
        let mut sub = Raw::handshake_on_worker(addr, w);
        sub.subscribe(SUBJECT, 9);
        subscribers.push(sub);
    }
    // Every thread's reads and writes time out at `deadline`, so joining
    // them is bounded too.
    let mut threads = Vec::new();
    for (i, mut sub) in subscribers.into_iter().enumerate() {
        let thread = std::thread::spawn(move || receive_all(&mut sub, deadline));
        threads.push((format!("subscriber {i}"), thread));
    }
    for p in 0..PUBLISHERS {
        let publisher = Raw::handshake_on_worker(addr, 0);
        let thread = std::thread::spawn(move || publish_all(publisher, p, deadline));
        threads.push((format!("publisher {p}"), thread));
    }
    for (who, thread) in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("{who}: {error}"),
            Err(panic) => {
                eprintln!("{who} failed (a worker not woken makes reads time out)");
                std::panic::resume_unwind(panic)
            }
        }
    }
    // A read turn takes up to 256 KiB per publisher, and records become
    // visible to the peer only when the turn ends: the 256 KiB ring fills.
    let stalls = stats.snapshot().get(0, Counter::RingFullStalls);
    eprintln!("ring-full stalls on the publishers' worker: {stalls}");
    assert!(
        stalls > 0,
        "the ring never filled: the test did not test stalls"
    );
    assert_serves_fresh_client(addr);
    drop(broker);
    let _ = std::fs::remove_file(&stats_path);
}

/// Writes the messages in batches, each followed by a PING, while a second
/// thread reads the answers: one PONG per PING and nothing else.
fn publish_all(publisher: Raw, id: u32, deadline: Instant) -> Result<(), String> {
    let batches = MESSAGES / BATCH;
    let mut writer = publisher.stream.try_clone().map_err(|e| e.to_string())?;
    writer
        .set_write_timeout(Some(deadline.saturating_duration_since(Instant::now())))
        .map_err(|e| e.to_string())?;
    let answers = std::thread::spawn(move || {
        let mut publisher = publisher;
        for pong in 0..batches {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = publisher.read_frame_within(left);
            if !frame.is_op(Op::Pong) {
                return Err(format!("answer {pong}: expected PONG, got {frame:?}"));
            }
        }
        Ok(())
    });
    let mut batch = Vec::new();
    for b in 0..batches {
        batch.clear();
        for seq in b * BATCH..(b + 1) * BATCH {
            encode::put_publish(
                &mut batch,
                SUBJECT.as_bytes(),
                None,
                &payload(id, seq),
                false,
            );
        }
        encode::put_ping(&mut batch);
        writer
            .write_all(&batch)
            .map_err(|e| format!("write of batch {b}: {e}"))?;
    }
    answers
        .join()
        .map_err(|_| "answer reader panicked".to_string())?
}

/// Reads every publisher's messages, checking each one's order and bytes.
fn receive_all(sub: &mut Raw, deadline: Instant) -> Result<(), String> {
    let mut next = vec![0u64; PUBLISHERS as usize];
    let total = MESSAGES * PUBLISHERS as u64;
    for n in 0..total {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = sub.expect_msg_within(left);
        let publisher = u32::from_be_bytes(msg.payload[..4].try_into().unwrap());
        let seq = u64::from_be_bytes(msg.payload[4..12].try_into().unwrap());
        let expected = next
            .get_mut(publisher as usize)
            .ok_or_else(|| format!("message {n}: unknown publisher {publisher}"))?;
        if seq != *expected {
            return Err(format!(
                "publisher {publisher}: expected {expected}, got {seq}"
            ));
        }
        if msg.payload != payload(publisher, seq) {
            return Err(format!("publisher {publisher} message {seq}: bytes differ"));
        }
        *expected += 1;
    }
    Ok(())
}
