//! Leaf-node fan-out: each run's hub-link figures, and each scenario over
//! its interleaved trials (medians, spreads, per-trial BlipMQ/NATS ratios,
//! as the latency scenarios in [`super::trials`]).

use serde::Serialize;

use super::trials::{per_broker, per_trial_ratios, Spread, TrialCounts};
use super::RunResult;
use crate::brokers::leaf::{LinkCounters, LinkWindow, WireCounters};
use crate::brokers::BrokerKind;
use crate::scenarios::{Group, Scenario};

/// One run's leaf-node figures.
#[derive(Debug, Clone, Serialize)]
pub struct LeafFigures {
    /// Subscribers on leaf A (beside the publisher) and on leaf B.
    pub subs_a: usize,
    pub subs_b: usize,
    /// The hub's counters of its links to the leaves over the measured
    /// window (in from A, out to B); None when unreadable.
    pub link: Option<LinkCounters>,
    /// The hub's sockets to the leaves over the window (in from A, out to
    /// B), when `ss` could tell.
    pub wire: Option<WireCounters>,
    /// The hub's CPU seconds over the window.
    pub hub_cpu_secs: Option<f64>,
    /// (bytes in from A + bytes out to B) / messages delivered to all
    /// subscribers in the window, as the hub counts them (nats-server 2.9:
    /// message payloads only); ok runs only.
    pub link_bytes_per_delivered: Option<f64>,
    /// The same on the wire (protocol lines included); ok runs only.
    pub wire_bytes_per_delivered: Option<f64>,
}

impl LeafFigures {
    pub fn new(
        subs_a: usize,
        subs_b: usize,
        window: Option<LinkWindow>,
        delivered: u64,
        ok: bool,
    ) -> LeafFigures {
        let counted = window.filter(|_| ok);
        LeafFigures {
            subs_a,
            subs_b,
            link: window.map(|w| w.link),
            wire: window.and_then(|w| w.wire),
            hub_cpu_secs: window.map(|w| w.hub_cpu_secs),
            link_bytes_per_delivered: counted.and_then(|w| w.link.bytes_per_delivered(delivered)),
            wire_bytes_per_delivered: counted.and_then(|w| w.wire?.bytes_per_delivered(delivered)),
        }
    }
}

/// One leaf-node scenario on one broker's leaves, over its trials.
#[derive(Debug, Clone, Serialize)]
pub struct LeafBrokerTrials {
    pub broker: BrokerKind,
    #[serde(flatten)]
    pub counts: TrialCounts,
    /// Messages delivered per second, all subscribers together.
    pub msgs_per_sec: Option<Spread>,
    /// The hub's link bytes per delivered message, as it counts them.
    pub link_bytes_per_delivered: Option<Spread>,
    /// The same on the wire.
    pub wire_bytes_per_delivered: Option<Spread>,
    /// Both leaves' CPU seconds per million delivered messages.
    pub leaves_cpu_secs_per_million: Option<Spread>,
    /// The hub's CPU seconds per million delivered messages.
    pub hub_cpu_secs_per_million: Option<Spread>,
    #[serde(skip)]
    rate_by_trial: Vec<(u32, f64)>,
    #[serde(skip)]
    bytes_by_trial: Vec<(u32, f64)>,
    #[serde(skip)]
    wire_by_trial: Vec<(u32, f64)>,
}

/// One leaf-node scenario over its trials, every broker.
#[derive(Debug, Clone, Serialize)]
pub struct LeafTrials {
    pub scenario: String,
    pub brokers: Vec<LeafBrokerTrials>,
    /// BlipMQ/NATS delivered msg/s: the median of per-trial ratios
    /// (higher: BlipMQ faster).
    pub blipmq_over_nats_msgs_per_sec: Option<Spread>,
    /// BlipMQ/NATS hub link bytes per delivered message, the same way
    /// (lower: BlipMQ's leaves send less across the hub).
    pub blipmq_over_nats_link_bytes: Option<Spread>,
    /// The same for the wire bytes.
    pub blipmq_over_nats_wire_bytes: Option<Spread>,
}

impl LeafTrials {
    pub fn broker(&self, kind: BrokerKind) -> Option<&LeafBrokerTrials> {
        self.brokers.iter().find(|b| b.broker == kind)
    }
}

fn broker_trials(broker: BrokerKind, runs: &[&RunResult]) -> LeafBrokerTrials {
    let (counts, ok) = TrialCounts::of(runs);
    let trial_of = |r: &RunResult| r.trial.unwrap_or(1);
    let bytes_of = |r: &RunResult| r.leaf.as_ref()?.link_bytes_per_delivered;
    let per_million =
        |r: &RunResult, secs: f64| (r.delivered > 0).then(|| secs / (r.delivered as f64 / 1e6));
    LeafBrokerTrials {
        broker,
        counts,
        msgs_per_sec: Spread::of(ok.iter().filter_map(|r| r.msgs_per_sec)),
        link_bytes_per_delivered: Spread::of(ok.iter().filter_map(|r| bytes_of(r))),
        wire_bytes_per_delivered: Spread::of(
            ok.iter()
                .filter_map(|r| r.leaf.as_ref()?.wire_bytes_per_delivered),
        ),
        leaves_cpu_secs_per_million: Spread::of(ok.iter().filter_map(|r| r.cpu_secs_per_million)),
        hub_cpu_secs_per_million: Spread::of(
            ok.iter()
                .filter_map(|r| per_million(r, r.leaf.as_ref()?.hub_cpu_secs?)),
        ),
        rate_by_trial: ok
            .iter()
            .filter_map(|r| Some((trial_of(r), r.msgs_per_sec?)))
            .collect(),
        bytes_by_trial: ok
            .iter()
            .filter_map(|r| Some((trial_of(r), bytes_of(r)?)))
            .collect(),
        wire_by_trial: ok
            .iter()
            .filter_map(|r| Some((trial_of(r), r.leaf.as_ref()?.wire_bytes_per_delivered?)))
            .collect(),
    }
}

/// Every leaf-node scenario of `scenarios` over its trials in `results`,
/// on each of `kinds` that ran it.
pub fn summarize(
    scenarios: &[Scenario],
    kinds: &[BrokerKind],
    results: &[RunResult],
) -> Vec<LeafTrials> {
    scenarios
        .iter()
        .filter(|s| s.group == Group::LeafFanout)
        .map(|scenario| {
            let brokers = per_broker(scenario, kinds, results, broker_trials);
            let find = |kind| brokers.iter().find(|b| b.broker == kind);
            let pair = find(BrokerKind::Blipmq).zip(find(BrokerKind::Nats));
            LeafTrials {
                scenario: scenario.name.clone(),
                blipmq_over_nats_msgs_per_sec: pair.and_then(|(b, n)| {
                    Spread::of(per_trial_ratios(&b.rate_by_trial, &n.rate_by_trial))
                }),
                blipmq_over_nats_link_bytes: pair.and_then(|(b, n)| {
                    Spread::of(per_trial_ratios(&b.bytes_by_trial, &n.bytes_by_trial))
                }),
                blipmq_over_nats_wire_bytes: pair.and_then(|(b, n)| {
                    Spread::of(per_trial_ratios(&b.wire_by_trial, &n.wire_by_trial))
                }),
                brokers,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::Status;
    use crate::scenarios;

    /// An ok trial delivering `rate` msg/s over 2 s, with the hub counting
    /// `link_bytes` over its two links in the window.
    pub(crate) fn run(
        scenario: &Scenario,
        broker: BrokerKind,
        trial: u32,
        rate: f64,
        link_bytes: u64,
    ) -> RunResult {
        let mut r = RunResult::new(scenario, broker);
        r.trial = Some(trial);
        r.status = Status::Ok;
        r.window_secs = 2.0;
        r.delivered = (rate * 2.0) as u64;
        r.msgs_per_sec = Some(rate);
        r.cpu_secs_per_million = Some(1.0);
        let link = LinkCounters {
            a_in_bytes: link_bytes / 2,
            b_out_bytes: link_bytes / 2,
            ..Default::default()
        };
        let window = LinkWindow {
            link,
            wire: None,
            hub_cpu_secs: 0.5,
        };
        r.set_leaf(0, 4, Some(window));
        r
    }

    #[test]
    fn figures_only_for_ok_runs_with_a_window() {
        let link = LinkCounters {
            a_in_bytes: 300,
            b_out_bytes: 500,
            ..Default::default()
        };
        let window = LinkWindow {
            link,
            wire: Some(WireCounters {
                a_in_bytes: 400,
                b_out_bytes: 600,
            }),
            hub_cpu_secs: 0.25,
        };
        let ok = LeafFigures::new(1, 4, Some(window), 10, true);
        assert_eq!(ok.link_bytes_per_delivered, Some(80.0));
        assert_eq!(ok.wire_bytes_per_delivered, Some(100.0));
        assert_eq!(ok.hub_cpu_secs, Some(0.25));
        let lost = LeafFigures::new(1, 4, Some(window), 10, false);
        assert_eq!(lost.wire_bytes_per_delivered, None);
        assert_eq!(lost.link_bytes_per_delivered, None);
        assert_eq!(lost.link, Some(link));
        let unread = LeafFigures::new(1, 4, None, 10, true);
        assert_eq!((unread.link, unread.link_bytes_per_delivered), (None, None));
    }

    #[test]
    fn medians_and_per_trial_ratios_of_rate_and_link_bytes() {
        let scenario = scenarios::select(&["leaf-1x4-128B".into()])
            .unwrap()
            .remove(0);
        let (b, n) = (BrokerKind::Blipmq, BrokerKind::Nats);
        let mut results = vec![
            run(&scenario, b, 1, 200_000.0, 25_600_000),
            run(&scenario, n, 1, 100_000.0, 12_800_000),
            run(&scenario, b, 2, 300_000.0, 38_400_000),
            run(&scenario, n, 2, 400_000.0, 51_200_000),
            run(&scenario, b, 3, 900_000.0, 0),
            run(&scenario, n, 3, 300_000.0, 0),
        ];
        results[4].status = Status::Lost;
        results[5].leaf = Some(LeafFigures::new(0, 4, None, 600_000, true));
        let summary = summarize(&[scenario], &[b, n], &results).remove(0);
        let blipmq = summary.broker(b).unwrap();
        assert_eq!((blipmq.counts.trials, blipmq.counts.ok), (3, 2));
        assert_eq!(blipmq.counts.failed[0].trial, 3);
        let rate = blipmq.msgs_per_sec.unwrap();
        assert_eq!(
            (rate.median, rate.min, rate.max),
            (250_000.0, 200_000.0, 300_000.0)
        );
        // 25.6 MB over 400k deliveries: 64 B each (both trials).
        assert_eq!(blipmq.link_bytes_per_delivered.unwrap().median, 64.0);
        // Hub: 0.5 s over 0.4 M and 0.6 M deliveries.
        let hub = blipmq.hub_cpu_secs_per_million.unwrap();
        assert_eq!((hub.min, hub.max), (0.5 / 0.6, 1.25));
        // Trials 1 and 2 pair: 2.0 and 0.75; trial 3 has no BlipMQ figure.
        let ratio = summary.blipmq_over_nats_msgs_per_sec.unwrap();
        assert_eq!(
            (ratio.median, ratio.min, ratio.max, ratio.trials),
            (1.375, 0.75, 2.0, 2)
        );
        assert_eq!(summary.blipmq_over_nats_link_bytes.unwrap().median, 1.0);
        // NATS trial 3 delivered, but the hub's counters were unreadable.
        let nats = summary.broker(n).unwrap();
        assert_eq!(nats.counts.ok, 3);
        assert_eq!(nats.link_bytes_per_delivered.unwrap().trials, 2);
    }
}
