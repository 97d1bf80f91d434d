use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use blipmq_protocol::Op;

use super::layout::{counter_offset, segment_bytes};
use super::*;

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "blipmq-stats-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn is_prometheus_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn counters_are_in_block_order() {
    assert_eq!(Counter::ALL.len(), Counter::COUNT);
    for (i, &c) in Counter::ALL.iter().enumerate() {
        assert_eq!(c as usize, i, "{c:?}");
    }
}

#[test]
fn counter_names_unique_and_prometheus_valid() {
    let mut names = HashSet::new();
    let mut prom = HashSet::new();
    for &c in Counter::ALL {
        let name = c.name();
        assert!(names.insert(name), "duplicate name {name}");
        assert!(
            name.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
            "{name} is not snake_case"
        );
        assert_eq!(Counter::from_name(name), Some(c));
        let p = c.prometheus_name();
        assert!(is_prometheus_name(&p), "{p} is not a valid metric name");
        assert!(p.starts_with("blipmq_"), "{p}");
        match c.kind() {
            Kind::Counter => assert!(p.ends_with("_total"), "{p}"),
            Kind::Gauge => assert!(!p.ends_with("_total"), "{p}"),
        }
        assert!(prom.insert(p.clone()), "duplicate metric {p}");
        let help = c.help();
        assert!(!help.is_empty() && !help.contains('\n') && !help.contains('\\'));
    }
    assert_eq!(Counter::from_name("nope"), None);
}

#[test]
fn required_counters_exist() {
    for name in [
        "connections_open",
        "connections_accepted",
        "connections_closed_client",
        "connections_closed_error",
        "connections_closed_slow_consumer",
        "connections_closed_stale",
        "connections_closed_drain",
        "connections_refused",
        "frames_in_connect",
        "frames_in_publish",
        "frames_in_subscribe",
        "frames_in_unsubscribe",
        "frames_in_ping",
        "frames_in_pong",
        "frames_in_disconnect",
        "frames_out_message",
        "frames_out_ok",
        "frames_out_error",
        "frames_out_info",
        "frames_out_ping",
        "frames_out_pong",
        "frames_out_disconnect",
        "bytes_in",
        "bytes_out",
        "messages_published",
        "messages_delivered",
        "dropped_slow_consumer",
        "dropped_limits",
        "dropped_auth",
        "dropped_no_group_member",
        "dropped_oversized",
        "group_forwards",
        "ring_full_stalls",
        "ring_occupancy_high_water",
        "loop_iterations",
        "loop_busy_iterations",
        "heartbeat_unix_ms",
        "subscriptions",
    ] {
        assert!(Counter::from_name(name).is_some(), "missing {name}");
    }
    for gauge in [
        Counter::ConnectionsOpen,
        Counter::RingOccupancyHighWater,
        Counter::HeartbeatUnixMs,
        Counter::Subscriptions,
    ] {
        assert_eq!(gauge.kind(), Kind::Gauge, "{gauge:?}");
    }
}

#[test]
fn frame_counters_by_op() {
    assert_eq!(
        Counter::frames_in(Op::Publish),
        Some(Counter::FramesInPublish)
    );
    assert_eq!(Counter::frames_in(Op::Message), None);
    assert_eq!(
        Counter::frames_out(Op::Message),
        Some(Counter::FramesOutMessage)
    );
    assert_eq!(Counter::frames_out(Op::Publish), None);
    assert_eq!(Counter::frames_in(Op::Ping), Some(Counter::FramesInPing));
    assert_eq!(Counter::frames_out(Op::Ping), Some(Counter::FramesOutPing));
}

#[test]
fn worker_blocks_do_not_share_cache_lines() {
    assert_eq!(BLOCK_BYTES % BLOCK_ALIGN, 0);
    let first = Counter::ALL[0];
    let last = *Counter::ALL.last().unwrap();
    for w in 0..4 {
        assert_eq!(counter_offset(w, first) % BLOCK_ALIGN, 0);
        // The last counter of block w ends before block w + 1 starts.
        assert!(counter_offset(w, last) + 8 <= counter_offset(w + 1, first));
    }
}

#[test]
fn writer_operations() {
    let seg = StatsSegment::anonymous(2).unwrap();
    let w = seg.worker(1).unwrap();
    assert_eq!(w.id(), 1);
    w.add(Counter::BytesIn, 100);
    w.add(Counter::BytesIn, 23);
    w.inc(Counter::FramesInPublish);
    w.inc(Counter::ConnectionsOpen);
    w.inc(Counter::ConnectionsOpen);
    w.sub(Counter::ConnectionsOpen, 1);
    w.set(Counter::Subscriptions, 7);
    w.max(Counter::RingOccupancyHighWater, 500);
    w.max(Counter::RingOccupancyHighWater, 200);
    assert_eq!(w.get(Counter::BytesIn), 123);
    assert_eq!(w.get(Counter::FramesInPublish), 1);
    assert_eq!(w.get(Counter::ConnectionsOpen), 1);
    assert_eq!(w.get(Counter::Subscriptions), 7);
    assert_eq!(w.get(Counter::RingOccupancyHighWater), 500);
    w.heartbeat();
    assert!(w.get(Counter::HeartbeatUnixMs) > 1_600_000_000_000);

    let snap = seg.snapshot();
    assert_eq!(snap.workers(), 2);
    assert_eq!(snap.pid(), std::process::id());
    assert!(snap.start_unix_nanos() > 0 && snap.start_unix_nanos() <= snap.taken_unix_nanos());
    assert_eq!(snap.get(1, Counter::BytesIn), 123);
    assert_eq!(snap.get(0, Counter::BytesIn), 0);
    assert_eq!(snap.total(Counter::BytesIn), 123);
    assert_eq!(snap.worker(1)[Counter::Subscriptions as usize], 7);
    assert_eq!(seg.reader().snapshot().worker(1), snap.worker(1));
    assert_eq!(seg.reader().get(1, Counter::BytesIn), 123);
    assert!(!seg.reader().replaced());
    assert!(seg.reader().path().is_none());
}

#[test]
fn writers_are_handed_out_once() {
    let seg = StatsSegment::anonymous(3).unwrap();
    assert!(seg.worker(3).is_none());
    let w0 = seg.worker(0).unwrap();
    assert!(seg.worker(0).is_none());
    drop(w0);
    assert!(
        seg.worker(0).is_none(),
        "a dropped writer is not handed out again"
    );
    let writers = StatsSegment::anonymous(3).unwrap().into_writers();
    assert_eq!(
        writers.iter().map(|w| w.id()).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // The mapping outlives the segment.
    writers[2].add(Counter::BytesOut, 5);
    assert_eq!(writers[2].get(Counter::BytesOut), 5);
}

#[test]
#[should_panic(expected = "already handed out")]
fn into_writers_after_worker_panics() {
    let seg = StatsSegment::anonymous(2).unwrap();
    let _w = seg.worker(1);
    seg.into_writers();
}

#[test]
fn worker_count_is_checked() {
    for n in [0, MAX_WORKERS + 1] {
        let err = StatsSegment::anonymous(n).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let dir = TempDir::new();
        let err = StatsSegment::create(&dir.path("s"), n).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn writer_is_send() {
    fn send<T: Send>() {}
    send::<WorkerStats>();
    send::<StatsSegment>();
    send::<StatsReader>();
    send::<Snapshot>();
}

#[test]
fn totals_aggregate_per_counter() {
    let seg = StatsSegment::anonymous(3).unwrap();
    let reader = seg.reader();
    let ws = seg.into_writers();
    for (i, w) in ws.iter().enumerate() {
        let i = i as u64;
        w.add(Counter::MessagesPublished, 10 + i);
        w.set(Counter::RingOccupancyHighWater, [300, 900, 100][i as usize]);
        w.set(Counter::HeartbeatUnixMs, 1_000 + i);
        w.set(Counter::ConnectionsOpen, 2);
    }
    let snap = reader.snapshot();
    assert_eq!(snap.total(Counter::MessagesPublished), 33);
    assert_eq!(snap.total(Counter::RingOccupancyHighWater), 900);
    assert_eq!(snap.total(Counter::HeartbeatUnixMs), 1_000);
    assert_eq!(snap.total(Counter::ConnectionsOpen), 6);
}

#[test]
fn file_segment_round_trip() {
    let dir = TempDir::new();
    let path = dir.path("stats");
    let seg = StatsSegment::create(&path, 2).unwrap();
    assert_eq!(seg.path(), Some(path.as_path()));
    assert_eq!(seg.workers(), 2);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), segment_bytes(2));
    assert_eq!(&bytes[..8], b"BLIPSTAT");
    assert_eq!(
        u32::from_ne_bytes(bytes[8..12].try_into().unwrap()),
        LAYOUT_VERSION
    );
    assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), 2);
    assert_eq!(
        u32::from_ne_bytes(bytes[16..20].try_into().unwrap()) as usize,
        Counter::COUNT
    );
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);

    let w1 = seg.worker(1).unwrap();
    w1.add(Counter::MessagesDelivered, 42);
    let reader = StatsReader::open(&path).unwrap();
    assert_eq!(reader.workers(), 2);
    assert_eq!(reader.version(), LAYOUT_VERSION);
    assert_eq!(reader.pid(), std::process::id());
    assert_eq!(reader.path(), Some(path.as_path()));
    assert_eq!(reader.start_unix_nanos(), seg.snapshot().start_unix_nanos());
    assert_eq!(reader.get(1, Counter::MessagesDelivered), 42);
    // Writes after opening are seen through the separate mapping.
    w1.add(Counter::MessagesDelivered, 1);
    assert_eq!(reader.snapshot().get(1, Counter::MessagesDelivered), 43);
    assert!(!reader.replaced());

    // Values survive the broker's handles.
    drop(w1);
    drop(seg);
    assert_eq!(reader.get(1, Counter::MessagesDelivered), 43);
    assert_eq!(
        StatsReader::open(&path)
            .unwrap()
            .get(1, Counter::MessagesDelivered),
        43
    );
}

#[test]
fn restart_replaces_the_file_without_faulting_readers() {
    let dir = TempDir::new();
    let path = dir.path("stats");
    let old = StatsSegment::create(&path, 1).unwrap();
    old.worker(0).unwrap().add(Counter::BytesIn, 9);
    let reader = StatsReader::open(&path).unwrap();
    let new = StatsSegment::create(&path, 4).unwrap();
    assert!(reader.replaced());
    // The old mapping is still readable.
    assert_eq!(reader.get(0, Counter::BytesIn), 9);
    let fresh = StatsReader::open(&path).unwrap();
    assert!(!fresh.replaced());
    assert_eq!(fresh.workers(), 4);
    assert_eq!(fresh.get(0, Counter::BytesIn), 0);
    drop(new);
    fs::remove_file(&path).unwrap();
    assert!(fresh.replaced());
}

#[test]
fn create_error_names_the_path() {
    let dir = TempDir::new();
    let path = dir.path("missing-dir/stats");
    let err = StatsSegment::create(&path, 1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains("missing-dir/stats"), "{err}");
}

/// Overwrites bytes of a file at `offset`.
fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn unknown_version_is_refused() {
    let dir = TempDir::new();
    let path = dir.path("stats");
    drop(StatsSegment::create(&path, 1).unwrap());
    for version in [0u32, LAYOUT_VERSION - 1, LAYOUT_VERSION + 1, 99] {
        patch(&path, 8, &version.to_ne_bytes());
        let err = StatsReader::open(&path).unwrap_err();
        match &err {
            StatsError::UnsupportedVersion {
                found, supported, ..
            } => {
                assert_eq!(*found, version);
                assert_eq!(*supported, LAYOUT_VERSION);
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("layout version {version}"))
                && msg.contains(&format!("reads version {LAYOUT_VERSION}")),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}

#[test]
fn version_is_checked_before_the_rest_of_the_header() {
    // A future version may have a longer header and different blocks: the
    // error is about the version, not the geometry.
    let dir = TempDir::new();
    let path = dir.path("stats");
    let mut bytes = vec![0u8; 64];
    bytes[..8].copy_from_slice(b"BLIPSTAT");
    let future = LAYOUT_VERSION + 1;
    bytes[8..12].copy_from_slice(&future.to_ne_bytes());
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        StatsReader::open(&path),
        Err(StatsError::UnsupportedVersion { found, .. }) if found == future
    ));
}

#[test]
fn truncated_file_is_refused() {
    let dir = TempDir::new();
    let path = dir.path("stats");
    let full = segment_bytes(3) as u64;
    for len in [0, 4, 11, 12, 100, HEADER_BYTES as u64, full - 8, full - 1] {
        drop(StatsSegment::create(&path, 3).unwrap());
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
        match StatsReader::open(&path) {
            Err(StatsError::Truncated {
                actual, expected, ..
            }) => {
                assert_eq!(actual, len);
                assert!(expected > len);
            }
            other => panic!("len {len}: expected Truncated, got {other:?}"),
        }
    }
    drop(StatsSegment::create(&path, 3).unwrap());
    assert!(StatsReader::open(&path).is_ok());
    let err = StatsReader::open(&dir.path("absent")).unwrap_err();
    assert!(
        matches!(&err, StatsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    );
}

#[test]
fn bad_magic_and_corrupt_header_are_refused() {
    let dir = TempDir::new();
    let path = dir.path("stats");
    fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = StatsReader::open(&path).unwrap_err();
    assert!(
        matches!(&err, StatsError::BadMagic { found, .. } if found == "xxxxxxxx"),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a BlipMQ stats segment"));

    // (offset, value) of a header field made inconsistent with version 1.
    let cases: [(u64, u32, &str); 4] = [
        (12, 0, "workers"),
        (16, Counter::COUNT as u32 + 1, "counters"),
        (20, 64, "blocks"),
        (24, 256, "header"),
    ];
    for (offset, value, what) in cases {
        drop(StatsSegment::create(&path, 1).unwrap());
        patch(&path, offset, &value.to_ne_bytes());
        match StatsReader::open(&path) {
            Err(StatsError::Corrupt { reason, .. }) => {
                assert!(reason.contains(what), "{reason}")
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    // More workers than the file holds.
    drop(StatsSegment::create(&path, 1).unwrap());
    patch(&path, 12, &2u32.to_ne_bytes());
    assert!(matches!(
        StatsReader::open(&path),
        Err(StatsError::Truncated { .. })
    ));
}

/// One thread per worker block writes while readers snapshot the file
/// through their own mapping: every value read is one that was written
/// (monotonic, within range, and the per-worker invariants of a single
/// writer hold), and the final values are exact.
#[test]
fn concurrent_writers_and_reader() {
    const WORKERS: usize = 4;
    const ROUNDS: u64 = 200_000;
    let dir = TempDir::new();
    let path = dir.path("stats");
    let seg = StatsSegment::create(&path, WORKERS).unwrap();
    let reader = StatsReader::open(&path).unwrap();
    let writers = seg.into_writers();
    let start = Arc::new(Barrier::new(WORKERS + 1));
    let done = Arc::new(AtomicBool::new(false));

    let handles: Vec<_> = writers
        .into_iter()
        .map(|w| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let id = w.id() as u64;
                for i in 1..=ROUNDS {
                    w.inc(Counter::LoopIterations);
                    w.add(Counter::BytesIn, id + 1);
                    w.max(Counter::RingOccupancyHighWater, i);
                    w.set(Counter::ConnectionsOpen, i % 10);
                }
                w
            })
        })
        .collect();

    let reading = {
        let done = done.clone();
        let start = start.clone();
        thread::spawn(move || {
            start.wait();
            let mut prev = reader.snapshot();
            let mut snapshots = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let snap = reader.snapshot();
                for w in 0..WORKERS {
                    let iters = snap.get(w, Counter::LoopIterations);
                    let bytes = snap.get(w, Counter::BytesIn);
                    assert!(iters <= ROUNDS);
                    assert!(iters >= prev.get(w, Counter::LoopIterations), "went back");
                    assert_eq!(bytes % (w as u64 + 1), 0, "torn or foreign write");
                    assert!(bytes >= prev.get(w, Counter::BytesIn));
                    assert!(snap.get(w, Counter::RingOccupancyHighWater) <= ROUNDS);
                    assert!(snap.get(w, Counter::ConnectionsOpen) < 10);
                }
                prev = snap;
                snapshots += 1;
                // At least one snapshot after the writers finished, and two
                // in all, however the threads were scheduled.
                if finished && snapshots >= 2 {
                    return (prev, snapshots);
                }
            }
        })
    };

    let writers: Vec<WorkerStats> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    let (last, snapshots) = reading.join().unwrap();
    assert!(snapshots >= 2);
    for (w, writer) in writers.iter().enumerate() {
        assert_eq!(last.get(w, Counter::LoopIterations), ROUNDS);
        assert_eq!(last.get(w, Counter::BytesIn), ROUNDS * (w as u64 + 1));
        assert_eq!(last.get(w, Counter::RingOccupancyHighWater), ROUNDS);
        assert_eq!(last.get(w, Counter::ConnectionsOpen), ROUNDS % 10);
        assert_eq!(writer.get(Counter::LoopIterations), ROUNDS);
    }
    assert_eq!(last.total(Counter::LoopIterations), ROUNDS * WORKERS as u64);
}

fn values(f: impl Fn(Counter) -> u64) -> Vec<u64> {
    Counter::ALL.iter().map(|&c| f(c)).collect()
}

#[test]
fn rates_between_snapshots() {
    let before = Snapshot::new(
        1,
        0,
        0,
        vec![
            values(|c| match c {
                Counter::MessagesPublished => 100,
                Counter::LoopIterations => 1000,
                Counter::LoopBusyIterations => 100,
                Counter::ConnectionsOpen => 5,
                _ => 0,
            }),
            values(|c| match c {
                Counter::MessagesPublished => 500,
                _ => 0,
            }),
        ],
    );
    let after = Snapshot::new(
        1,
        0,
        2_000_000_000,
        vec![
            values(|c| match c {
                Counter::MessagesPublished => 300,
                Counter::DroppedAuth => 4,
                Counter::DroppedLimits => 6,
                Counter::LoopIterations => 2000,
                Counter::LoopBusyIterations => 600,
                Counter::ConnectionsOpen => 9,
                _ => 0,
            }),
            // Lower than before: counted from zero.
            values(|c| match c {
                Counter::MessagesPublished => 50,
                _ => 0,
            }),
            // New worker.
            values(|c| match c {
                Counter::MessagesPublished => 10,
                _ => 0,
            }),
        ],
    );
    let rates = after.rate_since(&before, Duration::from_secs(2));
    assert_eq!(rates.elapsed(), Duration::from_secs(2));
    assert_eq!(rates.workers(), 3);
    assert_eq!(rates.get(0, Counter::MessagesPublished), Some(100.0));
    assert_eq!(rates.get(1, Counter::MessagesPublished), Some(25.0));
    assert_eq!(rates.get(2, Counter::MessagesPublished), Some(5.0));
    assert_eq!(rates.total(Counter::MessagesPublished), Some(130.0));
    assert_eq!(
        rates.get(0, Counter::ConnectionsOpen),
        None,
        "gauges have no rate"
    );
    assert_eq!(rates.total(Counter::ConnectionsOpen), None);
    assert_eq!(rates.get(3, Counter::MessagesPublished), None);
    assert_eq!(rates.drops(Some(0)), Some(5.0));
    assert_eq!(rates.drops(None), Some(5.0));
    assert_eq!(rates.busy_ratio(Some(0)), Some(0.5));
    assert_eq!(rates.busy_ratio(Some(1)), None);
    assert_eq!(after.busy_ratio(Some(0)), Some(0.3));
    assert_eq!(after.drops(None), 10);

    let zero = after.rate_since(&before, Duration::ZERO);
    assert_eq!(zero.total(Counter::MessagesPublished), Some(0.0));
}

#[test]
fn heartbeat_age() {
    let snap = Snapshot::new(
        1,
        0,
        10_000 * 1_000_000,
        vec![
            values(|c| {
                if c == Counter::HeartbeatUnixMs {
                    9_500
                } else {
                    0
                }
            }),
            values(|c| {
                if c == Counter::HeartbeatUnixMs {
                    9_900
                } else {
                    0
                }
            }),
            values(|_| 0),
        ],
    );
    assert_eq!(
        snap.heartbeat_age(Some(0)),
        Some(Duration::from_millis(500))
    );
    assert_eq!(
        snap.heartbeat_age(Some(1)),
        Some(Duration::from_millis(100))
    );
    assert_eq!(snap.heartbeat_age(Some(2)), None);
    // The total is the oldest heartbeat; a worker that never beat makes it
    // "never".
    assert_eq!(snap.heartbeat_age(None), None);
    let two = Snapshot::new(1, 0, 10_000 * 1_000_000, snap_workers(&snap, 2));
    assert_eq!(two.heartbeat_age(None), Some(Duration::from_millis(500)));
}

fn snap_workers(s: &Snapshot, n: usize) -> Vec<Vec<u64>> {
    (0..n).map(|w| s.worker(w).to_vec()).collect()
}

#[test]
#[should_panic(expected = "values for")]
fn snapshot_new_checks_lengths() {
    Snapshot::new(1, 0, 0, vec![vec![0; 3]]);
}
