//! Micro-benchmarks of the per-message paths: subject matching in the
//! subscription index (cache hits and misses) and the SPSC ring between
//! workers. `cargo bench -p blipmq-dataplane --bench hot_paths`.

use blipmq_dataplane::rings::RingRegion;
use blipmq_dataplane::router::SubscriptionIndex;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// 10,000 exact subscriptions plus wildcards over them, as a busy broker
/// might hold.
fn busy_index(cache: usize) -> (SubscriptionIndex, Vec<Vec<u8>>) {
    let mut index = SubscriptionIndex::new(cache);
    let mut subjects = Vec::new();
    let mut key = 0;
    for region in 0..10 {
        for id in 0..1000 {
            let subject = format!("orders.r{region}.c{id}.created").into_bytes();
            index.insert_local(&subject, None, key);
            key += 1;
            subjects.push(subject);
        }
        index.insert_local(format!("orders.r{region}.*.created").as_bytes(), None, key);
        key += 1;
        index.insert_local(
            format!("orders.r{region}.>").as_bytes(),
            Some(b"workers"),
            key,
        );
        key += 1;
    }
    (index, subjects)
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(1));
    let (mut index, subjects) = busy_index(4096);
    let hot = subjects[1234].clone();
    group.bench_function("hot_subject_cached", |b| {
        b.iter(|| black_box(index.lookup(black_box(&hot)).local.len()))
    });
    // More distinct subjects than cache entries: every lookup walks the trie.
    let (mut cold_index, _) = busy_index(16);
    let mut next = 0;
    group.bench_function("cold_subjects_trie_walk", |b| {
        b.iter(|| {
            next = (next + 7919) % subjects.len();
            black_box(cold_index.lookup(&subjects[next]).local.len())
        })
    });
    // The trie walk alone, without the cache's insert and eviction.
    let (mut uncached_index, _) = busy_index(0);
    group.bench_function("trie_walk_without_cache", |b| {
        b.iter(|| {
            next = (next + 7919) % subjects.len();
            black_box(uncached_index.lookup(&subjects[next]).local.len())
        })
    });
    group.finish();
}

fn rings(c: &mut Criterion) {
    const BATCH: usize = 64;
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(BATCH as u64));
    for record in [128usize, 1024] {
        let mut parties = RingRegion::new(2, 1 << 20).unwrap().into_workers();
        let mut consumer_side = parties.pop().unwrap();
        let mut producer_side = parties.pop().unwrap();
        let mut producer = producer_side.outgoing[1].take().unwrap();
        let mut consumer = consumer_side.incoming[0].take().unwrap();
        let payload = vec![3u8; record];
        group.bench_function(format!("batch_of_64_{record}B"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    for _ in 0..BATCH {
                        let slot = producer.try_reserve(record).expect("room");
                        slot.copy_from_slice(&payload);
                        producer.commit();
                    }
                    producer.publish();
                    let mut read = 0;
                    while let Some(bytes) = consumer.peek() {
                        read += bytes.len();
                        consumer.advance();
                    }
                    consumer.release();
                    black_box(read)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, matching, rings);
criterion_main!(benches);
