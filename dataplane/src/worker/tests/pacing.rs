//! Pacing instead of cuts: a subscriber behind on its queue holds back the
//! publishers that feed it, on its worker and on others, and is cut off only
//! once it stays behind past the grace period.

use super::*;

const MAX_PENDING: usize = 4096;
const GRACE: Duration = Duration::from_secs(2);
const PAYLOAD: usize = 100;

fn numbered(n: u32) -> Vec<u8> {
    let mut payload = vec![0; PAYLOAD];
    payload[..4].copy_from_slice(&n.to_be_bytes());
    payload
}

fn burst(count: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for n in 0..count {
        encode::put_publish(&mut bytes, b"x", None, &numbered(n), false);
    }
    bytes
}

/// A subscriber to `x` (sid 1) on worker 0, seen by every worker.
fn subscriber(cluster: &mut Cluster) -> ConnId {
    let sub = cluster.connect(0);
    cluster.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    cluster.settle();
    assert_eq!(cluster.output(0, sub), vec![Out::Ok]);
    sub
}

/// Takes what is queued for the subscriber, checks it is the next messages
/// in order and within the pacing mark (half of `MAX_PENDING`, plus the one
/// message that crossed it), and returns how many.
fn take_in_order(cluster: &mut Cluster, sub: ConnId, next: &mut u32) -> u32 {
    let got = cluster.output(0, sub);
    let frame = encode::message_len(b"x", None, PAYLOAD);
    assert!(
        got.len() * frame <= MAX_PENDING / 2 + frame,
        "{} messages queued at once: not paced",
        got.len()
    );
    for out in &got {
        assert_eq!(
            out,
            &msg("x", 1, &numbered(*next)),
            "out of order or not a message"
        );
        *next += 1;
    }
    got.len() as u32
}

#[test]
fn a_backlogged_subscriber_paces_its_publisher_on_the_same_worker_and_nothing_is_cut() {
    let mut cluster = Cluster::with_grace(1, 1 << 16, MAX_PENDING, GRACE);
    let sub = subscriber(&mut cluster);
    let publisher = cluster.connect(0);
    // Far more than max_pending in one read: without pacing, a cut.
    cluster.send(0, publisher, &burst(200));
    assert!(
        !cluster.cores[0].wants_input(publisher),
        "the publisher is read on"
    );
    assert!(cluster.cores[0].stats.get(Counter::PacedPublishes) > 0);
    // Paced, it waits for the subscriber's socket, not for peers, and is
    // not handed back to the backend before the subscriber catches up.
    assert!(!cluster.cores[0].awaits_peers());
    assert!(!cluster.cores[0].has_pending_work());
    let mut resumed = Vec::new();
    cluster.cores[0].finish_iteration(cluster.now);
    cluster.cores[0].take_resumed(&mut resumed);
    assert!(resumed.is_empty(), "a paced publisher was handed back");

    let mut next = 0;
    for _ in 0..200 {
        if next == 200 {
            break;
        }
        take_in_order(&mut cluster, sub, &mut next);
        // The subscriber caught up while the backend flushed: the loop
        // must come round again rather than sleep.
        assert!(next == 200 || cluster.cores[0].has_pending_work());
        cluster.cores[0].finish_iteration(cluster.now);
    }
    assert_eq!(next, 200, "not every message arrived");
    let stats = &cluster.cores[0].stats;
    assert_eq!(stats.get(Counter::DroppedSlowConsumer), 0);
    assert_eq!(stats.get(Counter::MessagesDelivered), 200);
    assert!(cluster.cores[0].wants_input(publisher));
    cluster.cores[0].take_resumed(&mut resumed);
    assert!(
        resumed.contains(&publisher),
        "the backend is not told to read the publisher again"
    );
    cluster.send_with(0, publisher, encode::put_ping);
    assert_eq!(cluster.output(0, publisher), vec![Out::Pong]);
}

#[test]
fn a_backlogged_subscriber_leaves_another_workers_records_in_the_ring_so_its_publisher_waits() {
    let mut cluster = Cluster::with_grace(2, 4096, MAX_PENDING, GRACE);
    let sub = subscriber(&mut cluster);
    let publisher = cluster.connect(1);
    cluster.send(1, publisher, &burst(300));
    let mut next = 0;
    for _ in 0..1000 {
        if next == 300 {
            break;
        }
        for core in &mut cluster.cores {
            core.poll_peers(cluster.now);
            core.finish_iteration(cluster.now);
        }
        take_in_order(&mut cluster, sub, &mut next);
    }
    assert_eq!(next, 300, "not every message arrived");
    let (receiver, sender) = (&cluster.cores[0].stats, &cluster.cores[1].stats);
    assert!(
        receiver.get(Counter::PacedRecords) > 0,
        "the ring was never paused"
    );
    assert!(
        sender.get(Counter::RingFullStalls) > 0,
        "the publisher never waited for the paused ring"
    );
    assert_eq!(receiver.get(Counter::DroppedSlowConsumer), 0);
    // A paused ring does not keep its worker awake: it waits for its
    // subscriber's socket, which the backend reports.
    cluster.settle();
    assert!(cluster.cores[0].prepare_sleep());
    cluster.cores[0].woke_up();
}

/// Past its grace, a backlogged subscriber is let go: its publisher goes on,
/// and the subscriber is cut off once its queue passes max_pending, as it
/// would be without pacing.
#[test]
fn past_the_grace_period_the_publisher_goes_on_and_a_subscriber_that_reads_nothing_is_cut() {
    let mut cluster = Cluster::with_grace(1, 1 << 16, MAX_PENDING, GRACE);
    let sub = subscriber(&mut cluster);
    let publisher = cluster.connect(0);
    cluster.send(0, publisher, &burst(200));
    assert!(!cluster.cores[0].wants_input(publisher));
    let queued = cluster.cores[0].stats.get(Counter::MessagesDelivered);

    // The subscriber reads nothing. Within the grace, nothing changes.
    let start = cluster.now;
    cluster.cores[0].on_tick(start + GRACE / 2);
    cluster.cores[0].finish_iteration(start + GRACE / 2);
    assert!(!cluster.cores[0].is_closing(sub));
    assert!(!cluster.cores[0].wants_input(publisher));

    // Past it: the publisher goes on, the subscriber's queue passes
    // max_pending, and it is cut off: its queue dropped, ERROR 503 queued.
    cluster.now = start + GRACE;
    cluster.cores[0].on_tick(cluster.now);
    assert_eq!(cluster.cores[0].stats.get(Counter::PacingGraceExpired), 1);
    assert!(!cluster.cores[0].is_closing(sub), "cut within max_pending");
    assert!(cluster.cores[0].has_pending_work());
    cluster.cores[0].finish_iteration(cluster.now);
    assert!(
        cluster.cores[0].wants_input(publisher),
        "the publisher still waits"
    );
    assert!(cluster.cores[0].is_closing(sub));
    assert_eq!(
        cluster.output(0, sub),
        vec![Out::Error(
            ErrorCode::Unavailable.as_u16(),
            "slow consumer".into()
        )]
    );
    // Every message is counted: queued ones (more than before the grace
    // ran out) were dropped at the cut, the rest on the way to a cut-off
    // subscriber.
    let stats = &cluster.cores[0].stats;
    assert_eq!(stats.get(Counter::MessagesPublished), 200);
    assert!(stats.get(Counter::MessagesDelivered) > queued);
    assert_eq!(stats.get(Counter::DroppedSlowConsumer), 200);
    cluster.send_with(0, publisher, encode::put_ping);
    assert_eq!(cluster.output(0, publisher), vec![Out::Pong]);
}
