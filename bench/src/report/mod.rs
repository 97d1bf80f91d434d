//! Results: what one run found, and the Markdown, JSON and SVG reports.

pub mod bars;
pub mod dpdk;
pub mod json;
pub mod leaf;
pub mod machine;
pub mod markdown;
pub mod stats_watch;
pub mod svg;
pub mod trials;
pub mod veth;

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::brokers::syscalls::SyscallCounts;
use crate::brokers::BrokerKind;
use crate::lab::Backend;
use crate::run::flood::FloodOutcome;
use crate::run::flow::{FlowOutcome, FlowSpec, Pace};
use crate::scenarios::{Group, Scenario};

/// Other processes' CPU use plus the hypervisor's steal (CPUs, averaged
/// over the window) above which a run is flagged as skewed (noisy).
pub const NOISY_LOAD: f64 = 0.15;

/// A run's verdict. Only `ok` runs are reported as a speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Some subscriber did not receive every message sent to it.
    Lost,
    /// A publisher's messages arrived out of order.
    Reordered,
    /// A queue-group message reached more than one member.
    Duplicated,
    /// The run could not be carried out (the broker failed to start,
    /// refused a client, sent an error, crashed, ...).
    Error,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Lost => "LOST",
            Status::Reordered => "REORDERED",
            Status::Duplicated => "DUPLICATED",
            Status::Error => "ERROR",
        }
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Option<Percentiles> {
        if hist.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Percentiles {
            samples: hist.len(),
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        })
    }

    /// From blipmqd's in-broker latency histogram (bucket ends: up to
    /// 12.5 % above the true values, never above the maximum).
    pub fn of_in_broker(hist: &blipmq_dataplane::stats::LatencyHistogram) -> Option<Percentiles> {
        let us = |q: f64| Some(hist.quantile(q)?.as_nanos() as f64 / 1000.0);
        Some(Percentiles {
            samples: hist.count(),
            p50: us(0.50)?,
            p90: us(0.90)?,
            p99: us(0.99)?,
            p999: us(0.999)?,
            max: hist.max_nanos() as f64 / 1000.0,
            mean: hist.sum_nanos() as f64 / hist.count() as f64 / 1000.0,
        })
    }

    /// (label, value) in report order.
    pub fn points(&self) -> [(&'static str, f64); 5] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p999),
            ("max", self.max),
        ]
    }
}

/// The connections scenario's extra figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConnFigures {
    pub idle: usize,
    pub open_secs: f64,
    pub open_cpu_secs: f64,
    pub rss_before_bytes: u64,
    pub rss_idle_bytes: u64,
    pub bytes_per_idle_conn: f64,
}

/// The flood scenario's extra figures: what the silent connections met
/// and what they cost the flow.
#[derive(Debug, Clone, Serialize)]
pub struct FloodFigures {
    pub silent: usize,
    pub open_secs: f64,
    /// The time from opening within which the broker had to close them.
    pub deadline_secs: f64,
    pub closed_in_time: usize,
    pub slowest_close_secs: f64,
    /// The same flow's messages per second before the flood.
    pub quiet_msgs_per_sec: f64,
    /// Messages per second during the flood over before it.
    pub flooded_over_quiet: f64,
}

impl FloodFigures {
    pub fn new(
        quiet: &FlowOutcome,
        flooded: &FlowOutcome,
        flood: &FloodOutcome,
        deadline: Duration,
    ) -> FloodFigures {
        let rate = |o: &FlowOutcome| o.delivered as f64 / o.window.as_secs_f64().max(1e-9);
        let quiet_msgs_per_sec = rate(quiet);
        FloodFigures {
            silent: flood.opened,
            open_secs: flood.open_time.as_secs_f64(),
            deadline_secs: deadline.as_secs_f64(),
            closed_in_time: flood.closed_in_time,
            slowest_close_secs: flood.slowest_close.as_secs_f64(),
            quiet_msgs_per_sec,
            flooded_over_quiet: rate(flooded) / quiet_msgs_per_sec.max(1e-9),
        }
    }
}

/// Everything about one scenario on one broker.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: String,
    pub group: Group,
    pub broker: BrokerKind,
    /// Latency scenarios: which of the interleaved trials this run was (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<u32>,
    pub status: Status,
    /// Why the status is not ok, and anything else odd.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    pub pubs: usize,
    pub subs: usize,
    pub payload_bytes: usize,
    pub queue_group: bool,
    pub target_rate: Option<u64>,
    /// Messages per publisher write, and the most a publisher may run
    /// ahead of its slowest subscriber (flow control).
    pub batch: usize,
    pub window_msgs: u64,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub gaps: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub malformed: u64,
    /// Measured window: from the snapshot after the warm-up to the last
    /// message received.
    pub window_secs: f64,
    /// Messages received, all subscribers together, in the window.
    pub delivered: u64,
    pub msgs_per_sec: Option<f64>,
    /// Payload megabytes (10^6 B) delivered per second.
    pub mb_per_sec: Option<f64>,
    pub broker_cpu_secs: f64,
    /// Per million delivered messages (latency under load: of both flows).
    pub cpu_secs_per_million: Option<f64>,
    pub harness_cpu_secs: f64,
    /// CPU seconds used in the window by everything else on the machine:
    /// other processes' load skews the figures.
    pub other_cpu_secs: f64,
    /// CPU seconds the hypervisor stole from this machine in the window.
    pub steal_secs: f64,
    /// Other processes and steal used more than [`NOISY_LOAD`] CPUs in the
    /// window.
    pub skewed: bool,
    /// One-way latency over every delivery of the (paced) latency flow.
    pub latency_us: Option<Percentiles>,
    /// The broker's own share of the latency (from reading a PUBLISH to
    /// writing it to a subscriber), from blipmqd's stats once it keeps that
    /// histogram (issue 14); None until then, and for the other brokers.
    pub broker_latency_us: Option<Percentiles>,
    /// Times the broker's threads were preempted in the window (another
    /// thread, e.g. a client, took their CPU while they wanted to run).
    pub broker_preemptions: Option<u64>,
    /// blipmqd: the share of the window's deliveries that crossed between
    /// workers (one publisher only; see `Broker::across_workers`).
    pub broker_across_workers: Option<f64>,
    pub pacer_lag_us: Option<Percentiles>,
    pub receiver_mismatches: u64,
    /// Seconds each publisher waited for flow-control credit (whole run,
    /// warm-up included): near the run's length means the subscribers or
    /// the broker set the pace, as they should.
    pub publisher_wait_secs: Vec<f64>,
    pub connections: Option<ConnFigures>,
    pub flood: Option<FloodFigures>,
    /// Latency under load: the throughput flow beside the latency flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadFigures>,
    /// Leaf-node fan-out: where the subscribers were and the hub's links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<leaf::LeafFigures>,
    pub rss_start_bytes: Option<u64>,
    pub rss_end_bytes: Option<u64>,
    /// Stats-watch overhead mode only: which arm and round this run was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_watch: Option<StatsWatchArm>,
    /// DPDK load generator runs only: the share of its loop turns that
    /// moved bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loadgen_busy: Option<f64>,
    /// Veth lab modes only: blipmqd's backend in this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Veth lab modes only: this run counted the broker's syscalls (its
    /// speed is not reported: the probe slows the broker).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub syscall_pass: bool,
    /// The broker's syscalls in the measured window (syscall pass only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<SyscallFigures>,
}

/// The throughput flow that ran beside a latency flow (latency under load),
/// over the same window; its messages are checked like any flow's.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigures {
    pub pubs: usize,
    pub subs: usize,
    pub payload_bytes: usize,
    pub status: Status,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub delivered: u64,
    /// Messages delivered per second, all its subscribers together (ok
    /// flows only).
    pub msgs_per_sec: Option<f64>,
}

/// The broker's syscalls in a run's measured window.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallFigures {
    pub method: String,
    pub total: u64,
    /// Messages delivered in the same window.
    pub delivered: u64,
    /// total / delivered × 1000.
    pub per_1000_delivered: Option<f64>,
    /// Per syscall name: (name, count, per 1,000 delivered), largest first.
    pub by_name: Vec<(String, u64, f64)>,
}

/// A run of the stats-watch overhead mode (`--stats-watch-overhead`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsWatchArm {
    /// 1-based repetition.
    pub round: usize,
    /// `blipmqctl stats --watch` ran beside the broker.
    pub watcher: bool,
    /// The watcher's own CPU seconds over the run (it runs on the same
    /// cores as the broker).
    pub watcher_cpu_secs: Option<f64>,
    /// Bytes of live view it printed.
    pub watcher_output_bytes: Option<u64>,
}

impl RunResult {
    pub fn new(scenario: &Scenario, broker: BrokerKind) -> RunResult {
        RunResult::blank(scenario.name.clone(), scenario.group, broker)
    }

    fn blank(scenario: String, group: Group, broker: BrokerKind) -> RunResult {
        RunResult {
            scenario,
            group,
            broker,
            trial: None,
            status: Status::Error,
            problems: Vec::new(),
            notes: Vec::new(),
            pubs: 0,
            subs: 0,
            payload_bytes: 0,
            queue_group: false,
            target_rate: None,
            batch: 0,
            window_msgs: 0,
            sent: 0,
            expected: 0,
            received: 0,
            missing: 0,
            gaps: 0,
            reordered: 0,
            duplicates: 0,
            malformed: 0,
            window_secs: 0.0,
            delivered: 0,
            msgs_per_sec: None,
            mb_per_sec: None,
            broker_cpu_secs: 0.0,
            cpu_secs_per_million: None,
            harness_cpu_secs: 0.0,
            other_cpu_secs: 0.0,
            steal_secs: 0.0,
            skewed: false,
            latency_us: None,
            broker_latency_us: None,
            broker_preemptions: None,
            broker_across_workers: None,
            pacer_lag_us: None,
            receiver_mismatches: 0,
            publisher_wait_secs: Vec::new(),
            connections: None,
            flood: None,
            load: None,
            leaf: None,
            rss_start_bytes: None,
            rss_end_bytes: None,
            stats_watch: None,
            loadgen_busy: None,
            backend: None,
            syscall_pass: false,
            syscalls: None,
        }
    }

    /// Keeps the probe's counts, per 1,000 messages delivered in the window.
    pub fn set_syscalls(&mut self, counts: SyscallCounts) {
        let per_1000 = |count: u64| count as f64 * 1000.0 / self.delivered.max(1) as f64;
        self.syscalls = Some(SyscallFigures {
            method: counts.method,
            total: counts.total,
            delivered: self.delivered,
            per_1000_delivered: (self.delivered > 0).then(|| per_1000(counts.total)),
            by_name: counts
                .by_name
                .into_iter()
                .map(|(name, count)| {
                    let per = per_1000(count);
                    (name, count, per)
                })
                .collect(),
        });
    }

    pub fn set_error(&mut self, problem: String) {
        self.status = Status::Error;
        self.problems.push(problem);
        self.msgs_per_sec = None;
        self.mb_per_sec = None;
        self.cpu_secs_per_million = None;
    }

    /// Fills in a flow's figures and decides the verdict: a run that lost,
    /// reordered or duplicated anything gets no speed.
    pub fn set_flow(&mut self, spec: &FlowSpec, outcome: &FlowOutcome) {
        self.pubs = spec.pubs;
        self.subs = spec.subs;
        self.payload_bytes = spec.payload;
        self.queue_group = spec.queue;
        self.target_rate = match spec.pace {
            Pace::Rate(rate) => Some(rate),
            Pace::Max => None,
        };
        self.batch = spec.batch();
        self.window_msgs = spec.window();
        self.sent = outcome.sent.iter().sum();
        self.expected = outcome.expected_total(spec.queue);
        self.received = outcome.received_total();
        self.missing = self.expected.saturating_sub(self.received);
        self.gaps = outcome.gaps;
        self.reordered = outcome.reordered;
        self.duplicates = outcome.duplicates;
        self.malformed = outcome.malformed;
        self.window_secs = outcome.window.as_secs_f64();
        self.delivered = outcome.delivered;
        self.broker_cpu_secs = outcome.broker_cpu;
        self.harness_cpu_secs = outcome.harness_cpu;
        self.other_cpu_secs = outcome.other_cpu;
        self.steal_secs = outcome.steal;
        self.skewed = self.window_secs > 0.0
            && (self.other_cpu_secs + self.steal_secs) / self.window_secs > NOISY_LOAD;
        self.latency_us = outcome.latency.as_ref().and_then(Percentiles::of);
        self.pacer_lag_us = outcome.pacer_lag.as_ref().and_then(Percentiles::of);
        self.receiver_mismatches = outcome.receiver_mismatches;
        self.publisher_wait_secs = outcome.publisher_waited.clone();
        self.loadgen_busy = outcome.loadgen_busy;

        // Per subscriber and publisher, for the problem list.
        if !spec.queue {
            for (s, counts) in outcome.received.iter().enumerate() {
                for (p, &got) in counts.iter().enumerate() {
                    let sent = outcome.sent[p];
                    if got != sent {
                        self.problems.push(format!(
                            "subscriber {s} received {got} of publisher {p}'s {sent} messages"
                        ));
                    }
                }
            }
        } else if self.received != self.expected {
            self.problems.push(format!(
                "the group received {} of {} messages",
                self.received, self.expected
            ));
        }
        self.problems.extend(outcome.errors.iter().cloned());
        if outcome.gaps > 0 {
            self.problems
                .push(format!("{} sequence numbers skipped", outcome.gaps));
        }
        if outcome.reordered > 0 {
            self.problems.push(format!(
                "{} messages arrived after a later one",
                outcome.reordered
            ));
        }
        if outcome.duplicates > 0 {
            self.problems.push(format!(
                "{} messages reached two queue members",
                outcome.duplicates
            ));
        }
        if outcome.malformed > 0 {
            self.problems
                .push(format!("{} malformed payloads", outcome.malformed));
        }
        if !outcome.complete {
            self.problems.push(format!(
                "messages were still missing when the run gave up waiting (nothing new for {:?}, or the broker exited)",
                crate::run::flow::STALL_TIMEOUT
            ));
        }
        if self.problems.len() > 12 {
            let more = self.problems.len() - 10;
            self.problems.truncate(10);
            self.problems.push(format!("... and {more} more"));
        }

        self.status = if outcome.broker_failed {
            Status::Error
        } else if outcome.duplicates > 0 {
            Status::Duplicated
        } else if outcome.reordered > 0 {
            Status::Reordered
        } else if outcome.gaps > 0 || self.received < self.expected || !outcome.complete {
            Status::Lost
        } else if outcome.malformed > 0
            || self.received > self.expected
            || !outcome.errors.is_empty()
        {
            Status::Error
        } else {
            Status::Ok
        };
        if self.status == Status::Ok && self.window_secs > 0.0 {
            let rate = self.delivered as f64 / self.window_secs;
            self.msgs_per_sec = Some(rate);
            self.mb_per_sec = Some(rate * spec.payload as f64 / 1e6);
            if self.delivered > 0 {
                self.cpu_secs_per_million =
                    Some(self.broker_cpu_secs / (self.delivered as f64 / 1e6));
            }
        }
    }

    /// Leaf-node fan-out: `subs_a` subscribers on leaf A, `subs_b` on B,
    /// and the hub's view of its leaf links over the window (after
    /// [`RunResult::set_flow`]).
    pub fn set_leaf(
        &mut self,
        subs_a: usize,
        subs_b: usize,
        window: Option<crate::brokers::leaf::LinkWindow>,
    ) {
        self.leaf = Some(leaf::LeafFigures::new(
            subs_a,
            subs_b,
            window,
            self.delivered,
            self.status == Status::Ok,
        ));
    }

    /// Latency under load: keeps the load flow's figures; its verdict
    /// becomes the run's when the latency flow's was ok (a message lost by
    /// either flow fails the run).
    pub fn set_load(&mut self, spec: &FlowSpec, outcome: &FlowOutcome) {
        let mut load = RunResult::blank(self.scenario.clone(), self.group, self.broker);
        load.set_flow(spec, outcome);
        if self.status == Status::Ok && load.status != Status::Ok {
            self.status = load.status;
        }
        // The shared errors (a broker that died) are already in the list.
        for problem in load.problems {
            let problem = format!("load flow: {problem}");
            if !self.problems.iter().any(|p| problem.ends_with(p.as_str())) {
                self.problems.push(problem);
            }
        }
        // The broker's CPU in the window served both flows.
        if let Some(cpu) = self.cpu_secs_per_million.as_mut() {
            *cpu = self.broker_cpu_secs / ((self.delivered + load.delivered) as f64 / 1e6);
        }
        self.load = Some(LoadFigures {
            pubs: spec.pubs,
            subs: spec.subs,
            payload_bytes: spec.payload,
            status: load.status,
            sent: load.sent,
            expected: load.expected,
            received: load.received,
            delivered: load.delivered,
            msgs_per_sec: load.msgs_per_sec,
        });
    }

    /// One line for the console.
    pub fn summary(&self) -> String {
        let mut head = format!("{:<16} {:<7}", self.scenario, self.broker.label());
        if let Some(trial) = self.trial {
            head += &format!(" trial {trial}");
        }
        if let Some(backend) = self.backend {
            head += &format!(
                " {:<8}{}",
                backend.name(),
                if self.syscall_pass { " (syscalls)" } else { "" }
            );
        }
        if let Some(per_1000) = self.syscalls.as_ref().and_then(|s| s.per_1000_delivered) {
            head += &format!(" {per_1000:.1} syscalls/1000 msgs");
        }
        if self.status != Status::Ok {
            let why = self.problems.first().cloned().unwrap_or_default();
            return format!("{head} {} — {why}", self.status.label());
        }
        let mut line = format!(
            "{head} {:>10} msg/s {:>9.1} MB/s  cpu {:.3} s/M",
            human_rate(self.msgs_per_sec.unwrap_or(0.0)),
            self.mb_per_sec.unwrap_or(0.0),
            self.cpu_secs_per_million.unwrap_or(0.0)
        );
        if let Some(lat) = &self.latency_us {
            line += &format!(
                "  p50 {:.0} µs p99 {:.0} µs p99.9 {:.0} µs max {:.0} µs",
                lat.p50, lat.p99, lat.p999, lat.max
            );
        }
        if let Some(leaf) = &self.leaf {
            if let Some(bytes) = leaf.link_bytes_per_delivered {
                line += &format!("  hub link {bytes:.1} B/delivered msg");
            }
            if let Some(bytes) = leaf.wire_bytes_per_delivered {
                line += &format!(" ({bytes:.1} B on the wire)");
            }
        }
        if let Some(load) = self.load.as_ref().and_then(|l| l.msgs_per_sec) {
            line += &format!("  load flow {} msg/s", human_rate(load));
        }
        if self.skewed {
            line += &format!(
                "  (skewed: other processes used {:.2} CPUs, steal {:.2})",
                self.other_cpu_secs / self.window_secs,
                self.steal_secs / self.window_secs
            );
        }
        if let Some(flood) = &self.flood {
            line += &format!(
                "  {:.2}× the rate without the flood; {} of {} silent closed within {:.0} s",
                flood.flooded_over_quiet, flood.closed_in_time, flood.silent, flood.deadline_secs
            );
        }
        if let Some(conn) = &self.connections {
            line += &format!(
                "  RSS {} → {} with {} idle",
                human_bytes(conn.rss_before_bytes as f64),
                human_bytes(conn.rss_idle_bytes as f64),
                conn.idle
            );
        }
        line
    }
}

/// "1.23M", "456k", "789".
pub fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// "12.3 MiB".
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Everything the report writers need.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub mode: String,
    pub started_unix: u64,
    pub duration_secs: f64,
    pub machine: machine::Machine,
    pub brokers: Vec<BrokerInfo>,
    pub settings: serde_json::Value,
    pub scenarios: Vec<Scenario>,
    pub results: Vec<RunResult>,
    /// The latency scenarios over their trials: medians, spreads and
    /// per-trial ratios (every trial's own figures are in `results`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_trials: Vec<trials::ScenarioTrials>,
    /// The leaf-node fan-out scenarios over their trials, the same way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leaf_trials: Vec<leaf::LeafTrials>,
    /// `--stats-watch-overhead` only: the watcher's effect on throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_watch_overhead: Option<stats_watch::Summary>,
    /// `--backend afpacket|dpdk` / `--veth-compare` only: the lab.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub veth_lab: Option<String>,
    /// `--transport dpdk` only: how the two transports were set up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpdk_transport: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub broker: BrokerKind,
    pub label: String,
    pub path: String,
    pub version: String,
    /// When the executable was last modified (which build of blipmqd).
    pub modified: String,
    pub config: String,
}

impl Report {
    pub fn result(&self, scenario: &str, broker: BrokerKind) -> Option<&RunResult> {
        self.results
            .iter()
            .find(|r| r.scenario == scenario && r.broker == broker)
    }

    pub fn broker_kinds(&self) -> Vec<BrokerKind> {
        self.brokers.iter().map(|b| b.broker).collect()
    }
}
