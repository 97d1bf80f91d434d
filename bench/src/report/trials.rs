//! Latency trials: each latency scenario runs several times per broker,
//! interleaved (BlipMQ, NATS, Redis, BlipMQ, ...). Every figure is reported
//! as the median over the trials that delivered every message, with its
//! spread (min–max), and BlipMQ/NATS as the median of per-trial ratios
//! (trial i of BlipMQ over trial i of NATS): one noisy spell then moves one
//! trial of each, not the verdict.

use serde::Serialize;

use super::{RunResult, Status};
use crate::brokers::BrokerKind;
use crate::scenarios::{Group, Scenario};

/// A figure over trials: the median and the range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many trials it is over.
    pub trials: usize,
}

impl Spread {
    /// None without values. The median of an even count is the mean of the
    /// two middle values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
            trials: n,
        })
    }

    /// "112 (98–140)" with `format` for each figure; just "112" over one
    /// trial.
    pub fn cell(&self, format: impl Fn(f64) -> String) -> String {
        if self.trials > 1 {
            format!(
                "{} ({}–{})",
                format(self.median),
                format(self.min),
                format(self.max)
            )
        } else {
            format(self.median)
        }
    }
}

/// Per-trial ratios `a / b`: trial i of `a` over trial i of `b`, for the
/// trials both have (by trial number) with a positive `b`.
pub fn per_trial_ratios(a: &[(u32, f64)], b: &[(u32, f64)]) -> Vec<f64> {
    a.iter()
        .filter_map(|&(trial, x)| {
            b.iter()
                .find(|&&(t, _)| t == trial)
                .filter(|&&(_, y)| y > 0.0)
                .map(|&(_, y)| x / y)
        })
        .collect()
}

/// Percentile labels, in [`super::Percentiles::points`] order.
pub const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// One percentile over trials.
#[derive(Debug, Clone, Serialize)]
pub struct PercentileSpread {
    pub percentile: &'static str,
    pub spread: Option<Spread>,
}

/// A trial left out of the medians: it lost, reordered or failed.
#[derive(Debug, Clone, Serialize)]
pub struct FailedTrial {
    pub trial: u32,
    pub status: Status,
}

/// How one scenario's trials on one broker went.
#[derive(Debug, Clone, Serialize)]
pub struct TrialCounts {
    /// Trials run.
    pub trials: usize,
    /// Trials in the medians (every message delivered, in order).
    pub ok: usize,
    pub failed: Vec<FailedTrial>,
    /// Ok trials during which other processes and steal used more than
    /// [`super::NOISY_LOAD`] CPUs.
    pub noisy_trials: Vec<u32>,
}

impl TrialCounts {
    /// Counts `runs` (one per trial); returns the ok ones too.
    pub fn of<'a>(runs: &[&'a RunResult]) -> (TrialCounts, Vec<&'a RunResult>) {
        let trial_of = |r: &RunResult| r.trial.unwrap_or(1);
        let ok: Vec<&RunResult> = runs
            .iter()
            .copied()
            .filter(|r| r.status == Status::Ok)
            .collect();
        let counts = TrialCounts {
            trials: runs.len(),
            ok: ok.len(),
            failed: runs
                .iter()
                .filter(|r| r.status != Status::Ok)
                .map(|r| FailedTrial {
                    trial: trial_of(r),
                    status: r.status,
                })
                .collect(),
            noisy_trials: ok
                .iter()
                .filter(|r| r.skewed)
                .map(|r| trial_of(r))
                .collect(),
        };
        (counts, ok)
    }

    /// A figure over the ok trials, marked with the count of noisy ones;
    /// or, when no trial was ok, why.
    pub fn cell(&self, spread: Option<Spread>, format: impl Fn(f64) -> String) -> String {
        match spread {
            Some(s) if self.noisy_trials.is_empty() => s.cell(format),
            Some(s) => format!("{} †{}", s.cell(format), self.noisy_trials.len()),
            None => match self.failed.first() {
                Some(first) => format!(
                    "**{}** ({} of {} trials)",
                    first.status.label(),
                    self.failed.len(),
                    self.trials
                ),
                None => "–".into(),
            },
        }
    }
}

/// One latency scenario on one broker, over its trials.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerTrials {
    pub broker: BrokerKind,
    #[serde(flatten)]
    pub counts: TrialCounts,
    /// One-way latency, µs, per percentile.
    pub latency_us: Vec<PercentileSpread>,
    /// Achieved rate of the latency flow, deliveries per second.
    pub msgs_per_sec: Option<Spread>,
    /// The publisher's own lateness, p99 µs.
    pub pacer_lag_p99_us: Option<Spread>,
    /// Latency under load: the load flow's messages per second.
    pub load_msgs_per_sec: Option<Spread>,
    /// Other processes' CPUs and steal (CPUs) over the trials' windows.
    pub other_cpus: Option<Spread>,
    pub steal_cpus: Option<Spread>,
    /// The broker's threads' preemptions per second of the window.
    pub preemptions_per_sec: Option<Spread>,
    /// blipmqd: per ok trial, the share of deliveries that crossed between
    /// workers (where the connections landed decides it, and the in-broker
    /// median with it); empty when not known.
    pub across_workers: Vec<(u32, f64)>,
    /// The broker's own share of the latency, µs per percentile, once
    /// blipmqd reports it (see [`RunResult::broker_latency_us`]).
    pub broker_latency_us: Option<Vec<PercentileSpread>>,
    /// Per ok trial: (trial, value) per percentile, for the ratios.
    #[serde(skip)]
    by_trial: Vec<Vec<(u32, f64)>>,
    #[serde(skip)]
    load_by_trial: Vec<(u32, f64)>,
}

/// One latency scenario over its trials, every broker.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioTrials {
    pub scenario: String,
    pub brokers: Vec<BrokerTrials>,
    /// BlipMQ/NATS per percentile: the median of per-trial ratios, with
    /// their spread (lower: BlipMQ faster).
    pub blipmq_over_nats_latency: Option<Vec<PercentileSpread>>,
    /// Latency under load: BlipMQ/NATS of the load flow's messages per
    /// second, the same way (higher: BlipMQ faster).
    pub blipmq_over_nats_load: Option<Spread>,
}

impl ScenarioTrials {
    pub fn broker(&self, kind: BrokerKind) -> Option<&BrokerTrials> {
        self.brokers.iter().find(|b| b.broker == kind)
    }
}

fn percentile_spreads(
    runs: &[&RunResult],
    points: impl Fn(&RunResult) -> Option<[f64; 5]>,
) -> Vec<PercentileSpread> {
    PERCENTILES
        .iter()
        .enumerate()
        .map(|(i, &percentile)| PercentileSpread {
            percentile,
            spread: Spread::of(runs.iter().filter_map(|r| points(r).map(|p| p[i]))),
        })
        .collect()
}

fn points_of(p: &super::Percentiles) -> [f64; 5] {
    p.points().map(|(_, v)| v)
}

/// `runs`: one scenario's runs on one broker, one per trial.
fn broker_trials(broker: BrokerKind, runs: &[&RunResult]) -> BrokerTrials {
    let (counts, ok) = TrialCounts::of(runs);
    let trial_of = |r: &RunResult| r.trial.unwrap_or(1);
    let rate_of = |r: &RunResult, secs: f64| secs / r.window_secs.max(1e-9);
    BrokerTrials {
        broker,
        counts,
        latency_us: percentile_spreads(&ok, |r| r.latency_us.as_ref().map(points_of)),
        msgs_per_sec: Spread::of(ok.iter().filter_map(|r| r.msgs_per_sec)),
        pacer_lag_p99_us: Spread::of(
            ok.iter()
                .filter_map(|r| r.pacer_lag_us.as_ref().map(|p| p.p99)),
        ),
        load_msgs_per_sec: Spread::of(
            ok.iter()
                .filter_map(|r| r.load.as_ref().and_then(|l| l.msgs_per_sec)),
        ),
        other_cpus: Spread::of(ok.iter().map(|r| rate_of(r, r.other_cpu_secs))),
        steal_cpus: Spread::of(ok.iter().map(|r| rate_of(r, r.steal_secs))),
        preemptions_per_sec: Spread::of(
            ok.iter()
                .filter_map(|r| Some(rate_of(r, r.broker_preemptions? as f64))),
        ),
        across_workers: ok
            .iter()
            .filter_map(|r| Some((r.trial?, r.broker_across_workers?)))
            .collect(),
        broker_latency_us: ok
            .iter()
            .any(|r| r.broker_latency_us.is_some())
            .then(|| percentile_spreads(&ok, |r| r.broker_latency_us.as_ref().map(points_of))),
        by_trial: (0..PERCENTILES.len())
            .map(|i| {
                ok.iter()
                    .filter_map(|r| {
                        r.latency_us
                            .as_ref()
                            .map(|p| (trial_of(r), points_of(p)[i]))
                    })
                    .collect()
            })
            .collect(),
        load_by_trial: ok
            .iter()
            .filter_map(|r| {
                r.load
                    .as_ref()
                    .and_then(|l| l.msgs_per_sec)
                    .map(|rate| (trial_of(r), rate))
            })
            .collect(),
    }
}

/// `summary` of the runs of `scenario` (one per trial) on each of `kinds`
/// that ran it.
pub fn per_broker<T>(
    scenario: &Scenario,
    kinds: &[BrokerKind],
    results: &[RunResult],
    summary: impl Fn(BrokerKind, &[&RunResult]) -> T,
) -> Vec<T> {
    kinds
        .iter()
        .filter_map(|&kind| {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.scenario == scenario.name && r.broker == kind)
                .collect();
            (!runs.is_empty()).then(|| summary(kind, &runs))
        })
        .collect()
}

/// Every latency scenario of `scenarios` over its trials in `results`, on
/// each of `kinds` that ran it.
pub fn summarize(
    scenarios: &[Scenario],
    kinds: &[BrokerKind],
    results: &[RunResult],
) -> Vec<ScenarioTrials> {
    scenarios
        .iter()
        .filter(|s| s.group == Group::Latency)
        .map(|scenario| {
            let brokers = per_broker(scenario, kinds, results, broker_trials);
            let find = |kind| brokers.iter().find(|b| b.broker == kind);
            let (blipmq, nats) = (find(BrokerKind::Blipmq), find(BrokerKind::Nats));
            let pair = blipmq.zip(nats);
            ScenarioTrials {
                scenario: scenario.name.clone(),
                blipmq_over_nats_latency: pair.map(|(b, n)| {
                    PERCENTILES
                        .iter()
                        .enumerate()
                        .map(|(i, &percentile)| PercentileSpread {
                            percentile,
                            spread: Spread::of(per_trial_ratios(&b.by_trial[i], &n.by_trial[i])),
                        })
                        .collect()
                }),
                blipmq_over_nats_load: pair.and_then(|(b, n)| {
                    Spread::of(per_trial_ratios(&b.load_by_trial, &n.load_by_trial))
                }),
                brokers,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::Percentiles;
    use crate::scenarios;

    #[test]
    fn median_and_spread() {
        assert_eq!(Spread::of([]), None);
        let odd = Spread::of([140.0, 98.0, 112.0]).unwrap();
        assert_eq!(
            (odd.median, odd.min, odd.max, odd.trials),
            (112.0, 98.0, 140.0, 3)
        );
        // Even count: the mean of the middle two.
        let even = Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert_eq!(odd.cell(|v| format!("{v:.0}")), "112 (98–140)");
        assert_eq!(Spread::of([7.0]).unwrap().cell(|v| format!("{v:.0}")), "7");
    }

    #[test]
    fn ratios_pair_trials_by_number() {
        // Trial 2 of b failed; trial 4 of a failed; b's trial 3 is zero.
        let a = [(1, 100.0), (2, 50.0), (3, 30.0), (5, 90.0)];
        let b = [(1, 200.0), (3, 0.0), (4, 10.0), (5, 100.0)];
        assert_eq!(per_trial_ratios(&a, &b), vec![0.5, 0.9]);
    }

    /// An ok trial whose percentiles are fractions and multiples of `p99`.
    pub(crate) fn run(scenario: &Scenario, broker: BrokerKind, trial: u32, p99: f64) -> RunResult {
        let mut r = RunResult::new(scenario, broker);
        r.trial = Some(trial);
        r.status = Status::Ok;
        r.window_secs = 5.0;
        r.msgs_per_sec = Some(50_000.0);
        r.latency_us = Some(Percentiles {
            samples: 1000,
            p50: p99 / 4.0,
            p90: p99 / 2.0,
            p99,
            p999: p99 * 2.0,
            max: p99 * 4.0,
            mean: p99 / 4.0,
        });
        r
    }

    #[test]
    fn ratio_is_the_median_of_per_trial_ratios_not_of_medians() {
        let scenario = scenarios::select(&["lat-50k".into()]).unwrap().remove(0);
        let (b, n) = (BrokerKind::Blipmq, BrokerKind::Nats);
        let mut results = vec![
            run(&scenario, b, 1, 100.0),
            run(&scenario, n, 1, 400.0),
            run(&scenario, b, 2, 300.0),
            run(&scenario, n, 2, 300.0),
            run(&scenario, b, 3, 200.0),
            run(&scenario, n, 3, 100.0),
            run(&scenario, b, 4, 900.0),
            run(&scenario, n, 4, 500.0),
        ];
        // A lost trial: out of the medians and the ratios, counted as failed.
        results[6].status = Status::Lost;
        results[3].skewed = true;
        let summary = summarize(&[scenario], &[b, n], &results).remove(0);
        let blipmq = summary.broker(b).unwrap();
        assert_eq!((blipmq.counts.trials, blipmq.counts.ok), (4, 3));
        assert_eq!(blipmq.counts.failed[0].trial, 4);
        assert_eq!(blipmq.counts.failed[0].status, Status::Lost);
        let p99 = blipmq.latency_us[2].spread.unwrap();
        assert_eq!((p99.median, p99.min, p99.max), (200.0, 100.0, 300.0));
        assert_eq!(summary.broker(n).unwrap().counts.noisy_trials, vec![2]);
        // Per-trial ratios 0.25, 1.0, 2.0 (trial 4 has no pair): median
        // 1.0, where the ratio of the medians would be 200 / 350.
        let ratio = summary.blipmq_over_nats_latency.as_ref().unwrap()[2]
            .spread
            .unwrap();
        assert_eq!(
            (ratio.median, ratio.min, ratio.max, ratio.trials),
            (1.0, 0.25, 2.0, 3)
        );
        assert_eq!(
            summary.broker(n).unwrap().latency_us[2]
                .spread
                .unwrap()
                .median,
            350.0
        );
        assert!(blipmq.broker_latency_us.is_none());
    }
}
