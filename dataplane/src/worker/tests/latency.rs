//! The in-broker latency histogram, on the simulated clock: each delivered
//! message is timed from the read that brought its PUBLISH to the write
//! that carried it to its subscriber, across the rings too.

use std::time::Duration;

use blipmq_protocol::encode;

use super::*;
use crate::stats::latency::bucket_of;
use crate::stats::LatencyHistogram;

fn latency(cluster: &Cluster, w: usize) -> LatencyHistogram {
    cluster.cores[w].stats.latency()
}

fn publish(cluster: &mut Cluster, w: usize, cid: ConnId, messages: u32) {
    cluster.send_with(w, cid, |o| {
        for i in 0..messages {
            encode::put_publish(o, b"x", None, &i.to_be_bytes(), false);
        }
    });
}

fn subscriber(cluster: &mut Cluster, w: usize) -> ConnId {
    let sub = cluster.connect(w);
    cluster.send_with(w, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    cluster.settle();
    assert_eq!(cluster.output(w, sub), vec![Out::Ok]);
    sub
}

#[test]
fn local_and_ring_deliveries_are_timed_from_the_read_to_the_write() {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let local = subscriber(&mut cluster, 0);
    let remote = subscriber(&mut cluster, 1);
    let publisher = cluster.connect(0);
    assert_eq!(latency(&cluster, 0).count(), 0, "answers are not timed");

    // One read of 3 PUBLISHes; the local subscriber is written 5 µs later.
    publish(&mut cluster, 0, publisher, 3);
    cluster.now += Duration::from_micros(5);
    assert_eq!(cluster.output(0, local).len(), 3);
    // Worker 1 takes the records 20 µs after the read and writes them 10 µs
    // later: the ring's time counts.
    cluster.now += Duration::from_micros(15);
    cluster.settle();
    cluster.now += Duration::from_micros(10);
    assert_eq!(cluster.output(1, remote).len(), 3);

    // Two reads 1 µs apart, written together 100 µs after the second.
    publish(&mut cluster, 0, publisher, 2);
    cluster.now += Duration::from_micros(1);
    publish(&mut cluster, 0, publisher, 1);
    cluster.now += Duration::from_micros(100);
    assert_eq!(cluster.output(0, local).len(), 3);

    let worker0 = latency(&cluster, 0);
    assert_eq!(worker0.count(), 6);
    assert_eq!(worker0.sum_nanos(), 3 * 5_000 + 2 * 101_000 + 100_000);
    assert_eq!(worker0.max_nanos(), 101_000);
    assert_eq!(worker0.buckets()[bucket_of(5_000)], 3);
    // 100 and 101 µs share a bucket (98.3–106.5 µs).
    assert_eq!(bucket_of(100_000), bucket_of(101_000));
    assert_eq!(worker0.buckets()[bucket_of(100_000)], 3);
    let p50 = worker0.quantile(0.5).unwrap();
    assert!(p50 >= Duration::from_micros(5) && p50 < Duration::from_nanos(5_625));
    assert_eq!(worker0.quantile(0.999), Some(Duration::from_micros(101)));

    let worker1 = latency(&cluster, 1);
    assert_eq!(worker1.count(), 3);
    assert_eq!(worker1.sum_nanos(), 3 * 30_000);
    assert_eq!(worker1.max_nanos(), 30_000);
}

#[test]
fn a_message_is_timed_when_its_last_byte_is_written() {
    let mut cluster = Cluster::new(1, 1 << 16, 1 << 20);
    let sub = subscriber(&mut cluster, 0);
    let publisher = cluster.connect(0);
    publish(&mut cluster, 0, publisher, 2);
    let first = cluster.cores[0].output(sub).len();
    cluster.now += Duration::from_micros(7);
    // Half of the first message reaches the socket: nothing is timed yet.
    cluster.cores[0].on_output_written(sub, first / 4, cluster.now);
    assert_eq!(latency(&cluster, 0).count(), 0);
    cluster.now += Duration::from_micros(3);
    loop {
        let rest = cluster.cores[0].output(sub).len();
        if rest == 0 {
            break;
        }
        cluster.cores[0].on_output_written(sub, rest, cluster.now);
    }
    let h = latency(&cluster, 0);
    assert_eq!((h.count(), h.sum_nanos()), (2, 2 * 10_000));
}

#[test]
fn a_publisher_held_by_a_full_ring_is_timed_from_its_read() {
    let mut cluster = Cluster::new(2, 4096, 1 << 24);
    let sub = subscriber(&mut cluster, 0);
    let publisher = cluster.connect(1);
    // Worker 0 does not run: worker 1 fills the ring and stops reading.
    publish(&mut cluster, 1, publisher, 2000);
    assert!(!cluster.cores[1].wants_input(publisher));
    cluster.now += Duration::from_micros(250);
    cluster.settle();
    cluster.now += Duration::from_micros(50);
    let delivered = cluster.output(0, sub).len() as u64;
    assert_eq!(delivered, 2000);
    let h = latency(&cluster, 0);
    assert_eq!(h.count(), 2000);
    // Every message waited from the one read, through the stall.
    assert_eq!(h.sum_nanos(), 2000 * 300_000);
}

#[test]
fn messages_dropped_for_a_slow_consumer_are_not_timed() {
    let mut cluster = Cluster::new(1, 1 << 16, 4096);
    let sub = subscriber(&mut cluster, 0);
    let publisher = cluster.connect(0);
    publish(&mut cluster, 0, publisher, 1000);
    assert!(cluster.cores[0].stats.get(Counter::DroppedSlowConsumer) > 0);
    cluster.now += Duration::from_micros(1);
    let written = cluster.output(0, sub);
    let messages = written
        .iter()
        .filter(|o| matches!(o, Out::Message { .. }))
        .count() as u64;
    assert_eq!(latency(&cluster, 0).count(), messages);
}
