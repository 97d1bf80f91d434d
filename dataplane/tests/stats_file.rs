//! The stats segment, read from its file the way `blipmqctl stats` does,
//! counts exactly what a scripted workload did.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use blipmq_dataplane::stats::{Counter, Snapshot, StatsReader};
use common::{Broker, Raw};

/// Reads snapshots until `done` holds (workers store their counters with
/// relaxed atomics, so a reader sees them shortly after the answers).
fn snapshot_until(reader: &StatsReader, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snapshot = reader.snapshot();
        if done(&snapshot) || Instant::now() >= deadline {
            return snapshot;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn counters_match_a_scripted_workload(workers: usize) {
    let path = std::env::temp_dir().join(format!(
        "blipmq-stats-test-{}-{workers}.stats",
        std::process::id()
    ));
    let config = format!("[control]\nstats_file = \"{}\"\n", path.display());
    let broker = Broker::start(workers, &config);
    let reader = StatsReader::open(&path).expect("the broker maps its stats file");
    assert_eq!(reader.workers(), workers);

    let mut sub = Raw::handshake(broker.addr());
    sub.subscribe("stats.>", 1);
    let mut publisher = Raw::handshake(broker.addr());
    for i in 0..10u32 {
        publisher.publish("stats.x", &i.to_be_bytes());
    }
    publisher.ping_pong();
    for _ in 0..10 {
        sub.expect_message();
    }
    // One more connection that is refused nothing but closes at once.
    drop(Raw::handshake(broker.addr()));

    let expected = [
        (Counter::FramesInConnect, 3),
        (Counter::FramesInSubscribe, 1),
        (Counter::FramesInPublish, 10),
        (Counter::FramesInPing, 1),
        (Counter::FramesOutInfo, 3),
        (Counter::FramesOutOk, 4),
        (Counter::FramesOutPong, 1),
        (Counter::FramesOutMessage, 10),
        (Counter::MessagesPublished, 10),
        (Counter::MessagesDelivered, 10),
        (Counter::ConnectionsAccepted, 3),
        (Counter::ConnectionsClosedClient, 1),
        (Counter::ConnectionsOpen, 2),
        (Counter::Subscriptions, 1),
        (Counter::DroppedSlowConsumer, 0),
    ];
    let snapshot = snapshot_until(&reader, |s| {
        expected
            .iter()
            .all(|&(counter, value)| s.total(counter) == value)
    });
    for (counter, value) in expected {
        assert_eq!(snapshot.total(counter), value, "{}", counter.name());
    }
    assert!(snapshot.total(Counter::BytesIn) > 0);
    // Each delivered message was timed once, in the broker, well under
    // the time the whole exchange took.
    let latency = snapshot.latency(None);
    assert_eq!(latency.count(), 10);
    assert!(latency.max_nanos() > 0);
    assert!(latency.max_nanos() < Duration::from_secs(5).as_nanos() as u64);

    // Closing the subscriber withdraws its subscription from the gauges.
    drop(sub);
    let snapshot = snapshot_until(&reader, |s| s.total(Counter::Subscriptions) == 0);
    assert_eq!(snapshot.total(Counter::Subscriptions), 0);
    assert_eq!(snapshot.total(Counter::ConnectionsOpen), 1);
    assert!(snapshot.total(Counter::BytesOut) > 0);
    drop(broker);
    let _ = std::fs::remove_file(&path);
}

for_workers!(counters_match_a_scripted_workload);
