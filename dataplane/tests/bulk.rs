//! 1 GiB through a user-space broker (afpacket, and dpdk on
//! `net_af_packet`), intact and in order, over a clean path and over one
//! that loses and reorders frames.
//!
//! The path: a publisher and a subscriber with kernel TCP in the client
//! namespace, a user-space relay in a middle namespace (`impair/`: this
//! kernel has no `sch_netem`, so loss and reordering are made there, seeded
//! and so reproducible), `blipmqd --backend afpacket|dpdk` in the broker
//! namespace. Every message carries its sequence number; both ends hash
//! every payload byte in order, and the hashes must match.
//!
//! Needs root and `ip netns` (and, for dpdk, a blipmqd built with the dpdk
//! feature): without them each test prints why and passes (skips), except
//! under CI=true, where it fails.

mod common;
mod impair;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use blipmq_protocol::encode;
use common::netns::Lab;
use common::{Backend, Broker, Raw, XorShift};
use impair::{Impairment, Relay, RelayStats};

const PAYLOAD: usize = 16 * 1024;
/// 65,536 × 16 KiB = 1 GiB; `BLIPMQ_BULK_MESSAGES` overrides it for a
/// quicker local run.
const MESSAGES: u64 = 65_536;
/// 2,048 × 16 KiB = 32 MiB, for loss in both directions.
const BOTH_WAYS_MESSAGES: u64 = 2_048;
/// Messages published but not yet received, at most: 16 MiB, well under
/// the broker's `max_pending_bytes` (64 MiB), so the subscriber is never a
/// slow consumer whichever direction the loss slows down.
const WINDOW: u64 = 1024;
/// The whole transfer finishes within this, or the test fails.
const TIME_LIMIT: Duration = Duration::from_secs(300);
/// Longest wait for any one message (a loss costs a retransmission timeout).
const STALL: Duration = Duration::from_secs(60);
const SUBJECT: &str = "bulk.data";

const CONFIG: &str = "[server]\ndrain_timeout = \"2s\"\n[limits]\nmax_payload = 65536\n";

const LOSS_AND_REORDER: Impairment = Impairment {
    drop_per_10k: 100,
    reorder_per_10k: 100,
    seed: 0x5eed_0001,
};

macro_rules! bulk_tests {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn one_gib_in_order_over_clean_relay() {
                clean($backend);
            }

            /// What `tc netem loss 1% reorder ...` on the client's interface
            /// does: 1% of the frames the clients send (the publisher's data,
            /// the subscriber's ACKs) lost, 1% reordered.
            #[test]
            fn one_gib_in_order_with_client_side_loss_and_reordering() {
                client_side_loss($backend);
            }

            /// Loss and reordering in both directions, so the broker's
            /// user-space TCP recovers the delivery stream too. Smaller:
            /// smoltcp recovers a second loss in a window only by its
            /// retransmission timeout (at least 1 s).
            #[test]
            fn bulk_in_order_with_loss_and_reordering_both_ways() {
                both_ways_loss($backend);
            }
        }
    };
}

bulk_tests!(afpacket, Backend::AfPacket);
bulk_tests!(dpdk, Backend::Dpdk);

fn clean(backend: Backend) {
    let Some(stats) = transfer(backend, Impairment::NONE, Impairment::NONE, MESSAGES) else {
        return;
    };
    for dir in [stats.client_to_broker, stats.broker_to_client] {
        assert_eq!((dir.dropped, dir.reordered), (0, 0), "{stats:?}");
    }
}

fn client_side_loss(backend: Backend) {
    let Some(stats) = transfer(backend, LOSS_AND_REORDER, Impairment::NONE, MESSAGES) else {
        return;
    };
    let dir = stats.client_to_broker;
    assert!(
        dir.dropped > 0 && dir.reordered > 0,
        "the relay did not impair: {stats:?}"
    );
}

fn both_ways_loss(backend: Backend) {
    let Some(stats) = transfer(
        backend,
        LOSS_AND_REORDER,
        LOSS_AND_REORDER,
        BOTH_WAYS_MESSAGES,
    ) else {
        return;
    };
    for dir in [stats.client_to_broker, stats.broker_to_client] {
        assert!(
            dir.dropped > 0 && dir.reordered > 0,
            "the relay did not impair: {stats:?}"
        );
    }
}

fn messages(default: u64) -> u64 {
    std::env::var("BLIPMQ_BULK_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Publishes `messages()` payloads through the relay and checks them at
/// the subscriber; returns the relay's counters, or None (skipped) without
/// a lab.
fn transfer(
    backend: Backend,
    client_to_broker: Impairment,
    broker_to_client: Impairment,
    messages_by_default: u64,
) -> Option<RelayStats> {
    if !backend.available() {
        return None;
    }
    // One transfer at a time: each keeps both cores busy (clients, relay,
    // broker), and two at once on a 2-core machine starve each other into
    // retransmission timeouts that measure the machine, not the broker.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let count = messages(messages_by_default);
    let lab = Lab::with_relay().expect("a netns lab with a relay");
    let broker = Broker::start_in_lab_on(backend, lab, 1, CONFIG);
    let relay = Relay::start(
        broker.lab().expect("lab"),
        client_to_broker,
        broker_to_client,
    );
    let addr = broker.addr();
    let started = Instant::now();

    let mut subscriber = Raw::handshake(addr);
    subscriber.subscribe(SUBJECT, 1);
    let mut publisher = Raw::handshake(addr);
    let (progress_tx, progress_rx) = mpsc::channel::<u64>();
    let receiving = std::thread::spawn(move || receive(subscriber, count, progress_tx, started));

    let mut sent_hash = HASH_SEED;
    let mut payload = vec![0u8; PAYLOAD];
    let mut batch = Vec::with_capacity(512 * 1024);
    let (mut sent, mut received) = (0u64, 0u64);
    while sent < count {
        while sent < count && sent - received < WINDOW {
            fill_payload(sent, &mut payload);
            sent_hash = hash(sent_hash, &payload);
            encode::put_publish(&mut batch, SUBJECT.as_bytes(), None, &payload, false);
            sent += 1;
            if batch.len() >= 256 * 1024 {
                publisher.send(&batch);
                batch.clear();
            }
        }
        publisher.send(&batch);
        batch.clear();
        if sent < count {
            // Window full: wait for the subscriber to catch up.
            match progress_rx.recv_timeout(STALL) {
                Ok(n) => received = n,
                Err(_) => break, // The subscriber failed or stalled: it says why.
            }
            assert!(
                started.elapsed() < TIME_LIMIT,
                "{sent} of {count} messages published after {TIME_LIMIT:?}"
            );
        }
    }
    let (got, got_hash) = match receiving.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let elapsed = started.elapsed();
    assert_eq!(got, count, "messages received");
    assert_eq!(
        got_hash, sent_hash,
        "the payload bytes received differ from those sent"
    );
    publisher.ping_pong();
    let stats = relay.finish();
    let mib = (count * PAYLOAD as u64) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{backend:?} bulk, client to broker {client_to_broker:?}, broker to client {broker_to_client:?}: {mib:.0} MiB in {elapsed:.2?} = {:.1} MiB/s; relay: {stats:?}",
        mib / elapsed.as_secs_f64()
    );
    assert_eq!(
        (
            stats.client_to_broker.oversize,
            stats.broker_to_client.oversize
        ),
        (0, 0),
        "frames larger than the MTU reached the relay: {stats:?}"
    );
    drop(broker);
    Some(stats)
}

/// Reads `count` messages in order; reports progress every 64; returns how
/// many arrived and the hash of their payloads.
fn receive(
    mut subscriber: Raw,
    count: u64,
    progress: mpsc::Sender<u64>,
    started: Instant,
) -> (u64, u64) {
    let mut hash_so_far = HASH_SEED;
    let mut expected = vec![0u8; PAYLOAD];
    for seq in 0..count {
        let msg = subscriber.expect_msg_within(STALL);
        assert_eq!(msg.subject, SUBJECT);
        assert_eq!(msg.payload.len(), PAYLOAD, "message {seq}: payload length");
        let got_seq = u64::from_be_bytes(msg.payload[..8].try_into().expect("8 bytes"));
        assert_eq!(got_seq, seq, "message out of order or missing");
        hash_so_far = hash(hash_so_far, &msg.payload);
        if seq % 4096 == 0 {
            // A spot check that names the first damaged message, if any.
            fill_payload(seq, &mut expected);
            assert!(msg.payload == expected, "message {seq}: payload differs");
        }
        if seq % 64 == 63 {
            let _ = progress.send(seq + 1);
        }
        assert!(
            started.elapsed() < TIME_LIMIT,
            "{seq} of {count} messages received after {TIME_LIMIT:?}"
        );
    }
    (count, hash_so_far)
}

/// Message `seq`: its sequence number, then seeded pseudo-random bytes.
fn fill_payload(seq: u64, out: &mut [u8]) {
    XorShift::new(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xb1b0).fill(&mut out[8..]);
    out[..8].copy_from_slice(&seq.to_be_bytes());
}

const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// An order-sensitive hash over 64-bit words (FNV-style multiply, rotate).
fn hash(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
