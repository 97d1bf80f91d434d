//! `/healthz`: is every worker's poll loop still turning?

use std::fmt::Write;
use std::time::Duration;

use crate::stats::Snapshot;

/// How old a worker's heartbeat may be before `/healthz` reports it.
/// Workers beat on every tick of their loop, every 100 ms, so this is 20
/// missed ticks: far beyond scheduling noise, soon enough for a probe.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(2);

/// A worker whose loop has not beaten within the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleWorker {
    pub worker: usize,
    /// Time since its last heartbeat, or since the broker started when it
    /// never beat.
    pub age: Duration,
    /// It has not beaten once since the broker started.
    pub never_beat: bool,
}

/// The verdict of [`check_health`], or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every worker beat within the limit.
    Healthy { workers: usize },
    /// These workers did not.
    Stale {
        workers: Vec<StaleWorker>,
        stale_after: Duration,
    },
    /// The segment lists no worker.
    NoWorkers,
    /// The stats segment could not be read (the reason).
    Unavailable(String),
}

impl Health {
    /// 200 when healthy, 503 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Health::Healthy { .. } => 200,
            _ => 503,
        }
    }

    /// One line per finding, for the `/healthz` body: `ok` when healthy.
    pub fn body(&self) -> String {
        match self {
            Health::Healthy { .. } => "ok\n".to_owned(),
            Health::NoWorkers => "unhealthy: the stats segment has no workers\n".to_owned(),
            Health::Unavailable(reason) => format!("unhealthy: {reason}\n"),
            Health::Stale {
                workers,
                stale_after,
            } => {
                let mut out = String::new();
                for stale in workers {
                    let _ = if stale.never_beat {
                        writeln!(
                            out,
                            "unhealthy: worker {} has no heartbeat since the broker started {:.1}s ago (limit {:.1}s)",
                            stale.worker,
                            stale.age.as_secs_f64(),
                            stale_after.as_secs_f64()
                        )
                    } else {
                        writeln!(
                            out,
                            "unhealthy: worker {} heartbeat is {:.1}s old (limit {:.1}s)",
                            stale.worker,
                            stale.age.as_secs_f64(),
                            stale_after.as_secs_f64()
                        )
                    };
                }
                out
            }
        }
    }
}

/// Checks that every worker of `snapshot` beat at most `stale_after` before
/// it was taken. A worker that has not beaten yet is given `stale_after`
/// from the broker's start to do so (its first beat is one tick in).
pub fn check_health(snapshot: &Snapshot, stale_after: Duration) -> Health {
    if snapshot.workers() == 0 {
        return Health::NoWorkers;
    }
    let uptime = Duration::from_nanos(
        snapshot
            .taken_unix_nanos()
            .saturating_sub(snapshot.start_unix_nanos()),
    );
    let stale: Vec<StaleWorker> = (0..snapshot.workers())
        .filter_map(|worker| {
            let (age, never_beat) = match snapshot.heartbeat_age(Some(worker)) {
                Some(age) => (age, false),
                None => (uptime, true),
            };
            (age > stale_after).then_some(StaleWorker {
                worker,
                age,
                never_beat,
            })
        })
        .collect();
    if stale.is_empty() {
        Health::Healthy {
            workers: snapshot.workers(),
        }
    } else {
        Health::Stale {
            workers: stale,
            stale_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counter;

    const SEC: u64 = 1_000_000_000;
    const START: u64 = 1_700_000_000 * SEC;

    /// A snapshot taken `uptime_ms` after start whose workers last beat
    /// `ages_ms` before it (`None`: never).
    fn snapshot(uptime_ms: u64, ages_ms: &[Option<u64>]) -> Snapshot {
        let taken = START + uptime_ms * 1_000_000;
        let workers = ages_ms
            .iter()
            .map(|age| {
                Counter::ALL
                    .iter()
                    .map(|&c| match (c, age) {
                        (Counter::HeartbeatUnixMs, Some(age)) => taken / 1_000_000 - age,
                        _ => 0,
                    })
                    .collect()
            })
            .collect();
        Snapshot::new(1, START, taken, workers)
    }

    #[test]
    fn fresh_heartbeats_are_healthy() {
        let health = check_health(
            &snapshot(60_000, &[Some(100), Some(2000)]),
            DEFAULT_STALE_AFTER,
        );
        assert_eq!(health, Health::Healthy { workers: 2 });
        assert_eq!(health.status(), 200);
        assert_eq!(health.body(), "ok\n");
    }

    #[test]
    fn a_stale_worker_is_named_with_its_age() {
        let health = check_health(
            &snapshot(60_000, &[Some(50), Some(2500), Some(10)]),
            DEFAULT_STALE_AFTER,
        );
        assert_eq!(
            health,
            Health::Stale {
                workers: vec![StaleWorker {
                    worker: 1,
                    age: Duration::from_millis(2500),
                    never_beat: false
                }],
                stale_after: DEFAULT_STALE_AFTER,
            }
        );
        assert_eq!(health.status(), 503);
        assert_eq!(
            health.body(),
            "unhealthy: worker 1 heartbeat is 2.5s old (limit 2.0s)\n"
        );
    }

    #[test]
    fn never_beating_is_stale_only_after_the_grace() {
        let limit = Duration::from_millis(500);
        assert_eq!(
            check_health(&snapshot(400, &[Some(10), None]), limit).status(),
            200
        );
        let health = check_health(&snapshot(3000, &[None, Some(10)]), limit);
        assert_eq!(health.status(), 503);
        assert_eq!(
            health.body(),
            "unhealthy: worker 0 has no heartbeat since the broker started 3.0s ago (limit 0.5s)\n"
        );
    }

    #[test]
    fn no_workers_and_unreadable_are_unhealthy() {
        let health = check_health(&snapshot(1000, &[]), DEFAULT_STALE_AFTER);
        assert_eq!(health, Health::NoWorkers);
        assert_eq!(health.status(), 503);
        assert!(health.body().contains("no workers"));
        let health = Health::Unavailable("stats segment /x: No such file".to_owned());
        assert_eq!(health.status(), 503);
        assert_eq!(health.body(), "unhealthy: stats segment /x: No such file\n");
    }
}
