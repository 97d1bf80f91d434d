//! Micro-benchmarks of the per-message paths: subject matching in the
//! subscription index (cache hits and misses), the SPSC ring between
//! workers, and worker cores handling PUBLISH batches end to end.
//! `cargo bench -p blipmq-dataplane --bench hot_paths`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_dataplane::rings::RingRegion;
use blipmq_dataplane::router::SubscriptionIndex;
use blipmq_dataplane::session::SessionConfig;
use blipmq_dataplane::worker::{ConnId, CoreConfig, Dialect, Shared, WorkerCore};
use blipmq_protocol::encode;
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

/// A subscriber's worker and queue group.
type Subscriber<'a> = (usize, Option<&'a [u8]>);

/// Two worker cores joined by rings and driven as a backend drives them,
/// minus the sockets: a batch of PUBLISH frames in, every subscriber's
/// MESSAGE frames out. This is the per-message path of the core (frame
/// decoding, routing, ring records, delivery into the queues).
struct Cores {
    cores: Vec<WorkerCore>,
    now: Instant,
    publisher: (usize, ConnId),
    subscribers: Vec<(usize, ConnId)>,
    batch: Vec<u8>,
}

impl Cores {
    /// One connection per subscriber, each subscribed to `bench`.
    fn new(subscribers: &[Subscriber<'_>], payload: usize) -> Cores {
        let now = Instant::now();
        let config = CoreConfig {
            session: Arc::new(SessionConfig {
                server_id: "bench".into(),
                max_payload: 1 << 20,
                max_topic_length: 256,
                max_subscriptions: 0,
                token: None,
                users: Default::default(),
                ping_interval: Duration::from_secs(3600),
                max_pings_out: 2,
            }),
            max_pending_bytes: 64 << 20,
            slow_consumer_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(1),
            cache_subjects: 1024,
            max_connections: 1000,
            nats_addr: None,
            tls: None,
            limits: Default::default(),
        };
        let shared = Arc::new(Shared::default());
        let cores = RingRegion::new(2, 1 << 20)
            .expect("ring region")
            .into_workers()
            .into_iter()
            .map(|rings| WorkerCore::new(config.clone(), rings, shared.clone(), now))
            .collect();
        let mut bench = Cores {
            cores,
            now,
            publisher: (0, 0),
            subscribers: Vec::new(),
            batch: Vec::new(),
        };
        bench.publisher = (0, bench.connect(0));
        for (sid, &(worker, queue)) in subscribers.iter().enumerate() {
            let cid = bench.connect(worker);
            let mut subscribe = Vec::new();
            encode::put_subscribe(&mut subscribe, b"bench", sid as u32 + 1, queue, false);
            bench.receive(worker, cid, &subscribe);
            bench.subscribers.push((worker, cid));
        }
        bench.settle();
        let payload = vec![7; payload];
        for _ in 0..BATCH {
            encode::put_publish(&mut bench.batch, b"bench", None, &payload, false);
        }
        bench
    }

    fn connect(&mut self, worker: usize) -> ConnId {
        let cid = self.cores[worker].accept(self.now, Dialect::Binary);
        let mut connect = Vec::new();
        encode::put_connect(&mut connect, br#"{"protocol":1}"#);
        self.receive(worker, cid, &connect);
        self.drain(worker, cid);
        cid
    }

    /// Bytes from a connection, and the end of its worker's loop iteration
    /// (which publishes the records they made).
    fn receive(&mut self, worker: usize, cid: ConnId, bytes: &[u8]) {
        self.cores[worker].on_received(cid, bytes, self.now);
        self.cores[worker].finish_iteration(self.now);
    }

    /// Runs both cores' loops until no record moves.
    fn settle(&mut self) {
        loop {
            let mut moved = 0;
            for core in &mut self.cores {
                moved += core.poll_peers(self.now);
                core.finish_iteration(self.now);
            }
            if moved == 0 && self.cores.iter().all(|c| !c.awaits_peers()) {
                return;
            }
        }
    }

    /// Writes away everything queued for the connection; returns the bytes.
    fn drain(&mut self, worker: usize, cid: ConnId) -> usize {
        let now = self.now;
        let core = &mut self.cores[worker];
        let mut total = 0;
        loop {
            let len = core.output(cid).len();
            if len == 0 {
                return total;
            }
            core.on_output_written(cid, len, now);
            total += len;
        }
    }

    /// One batch of PUBLISH frames from the publisher to every subscriber.
    /// Not inlined, so that a profile shows its cost per call: e.g.
    /// `valgrind --tool=callgrind <hot_paths binary> --bench core
    /// --profile-time 5`, then `callgrind_annotate --inclusive=yes`.
    #[inline(never)]
    fn publish_batch(&mut self) -> usize {
        let (worker, cid) = self.publisher;
        let batch = std::mem::take(&mut self.batch);
        self.receive(worker, cid, &batch);
        self.batch = batch;
        self.settle();
        let mut delivered = 0;
        for at in 0..self.subscribers.len() {
            let (worker, cid) = self.subscribers[at];
            delivered += self.drain(worker, cid);
        }
        delivered
    }
}

/// PUBLISH frames per batch, as one read might bring them.
const BATCH: usize = 64;

fn cores(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(BATCH as u64));
    let group_member = |worker| (worker, Some(&b"g"[..]));
    // (name, subscribers, payload bytes, copies of each message delivered)
    let scenarios: [(&str, Vec<Subscriber<'_>>, usize, usize); 4] = [
        ("local_fanout_4x128B", vec![(0, None); 4], 128, 4),
        ("local_fanout_4x4KiB_shared", vec![(0, None); 4], 4096, 4),
        ("cross_worker_fanout_4x128B", vec![(1, None); 4], 128, 4),
        (
            "queue_group_2+2_128B",
            vec![
                group_member(0),
                group_member(0),
                group_member(1),
                group_member(1),
            ],
            128,
            1,
        ),
    ];
    for (name, subscribers, payload, copies) in scenarios {
        let mut bench = Cores::new(&subscribers, payload);
        let expected = BATCH * copies * encode::message_len(b"bench", None, payload);
        assert_eq!(bench.publish_batch(), expected, "{name}: bytes delivered");
        group.bench_function(format!("batch_of_64_{name}"), |b| {
            b.iter(|| black_box(bench.publish_batch()))
        });
    }
    group.finish();
}

criterion_group!(benches, matching, rings, cores);
criterion_main!(benches);
