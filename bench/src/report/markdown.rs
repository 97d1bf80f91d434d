//! The Markdown report: one table per kind of scenario, rows = scenarios,
//! columns = brokers, plus the BlipMQ/NATS ratio.

use std::fmt::Write as _;

use super::leaf::LeafBrokerTrials;
use super::trials::{BrokerTrials, ScenarioTrials, Spread, PERCENTILES};
use super::{human_bytes, human_rate, Report, RunResult, Status};
use crate::brokers::BrokerKind;
use crate::scenarios::{Group, Kind};

/// "2024-05-01 12:34:56 UTC".
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn failed_cell(result: &RunResult) -> String {
    match result.status {
        Status::Lost => format!(
            "**LOST** {} of {}",
            result.missing.max(result.gaps),
            result.expected
        ),
        Status::Reordered => format!("**REORDERED** ({})", result.reordered),
        Status::Duplicated => format!("**DUPLICATED** ({})", result.duplicates),
        Status::Error => "**ERROR**".into(),
        Status::Ok => String::new(),
    }
}

/// "†" after a figure taken while other processes loaded the machine.
fn mark(result: &RunResult) -> &'static str {
    if result.skewed {
        " †"
    } else {
        ""
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

struct Table {
    text: String,
    kinds: Vec<BrokerKind>,
    with_ratio: bool,
}

impl Table {
    fn new(first: &str, kinds: &[BrokerKind], ratio_label: &str) -> Table {
        Table::with_columns(first, kinds, Some(ratio_label))
    }

    /// `ratio_label`: the BlipMQ/NATS column's, None for no such column
    /// (also left out unless both brokers ran).
    fn with_columns(first: &str, kinds: &[BrokerKind], ratio_label: Option<&str>) -> Table {
        let with_ratio = ratio_label.is_some()
            && kinds.contains(&BrokerKind::Blipmq)
            && kinds.contains(&BrokerKind::Nats);
        let mut text = format!("| {first} |");
        let mut rule = String::from("|---|");
        for kind in kinds {
            let _ = write!(text, " {} |", kind.label());
            rule += "---:|";
        }
        if let Some(ratio_label) = ratio_label.filter(|_| with_ratio) {
            let _ = write!(text, " {ratio_label} |");
            rule += "---:|";
        }
        text += "\n";
        text += &rule;
        text += "\n";
        Table {
            text,
            kinds: kinds.to_vec(),
            with_ratio,
        }
    }

    /// A row: one cell per broker, and the ratio of BlipMQ's figure to NATS's.
    fn row(&mut self, label: &str, cell: impl Fn(BrokerKind) -> (String, Option<f64>)) {
        let (texts, figures): (Vec<String>, Vec<Option<f64>>) =
            self.kinds.iter().map(|&kind| cell(kind)).unzip();
        let get = |k| {
            self.kinds
                .iter()
                .position(|&kind| kind == k)
                .and_then(|i| figures[i])
        };
        let ratio = ratio(get(BrokerKind::Blipmq), get(BrokerKind::Nats));
        self.row_of(label, &texts, &ratio);
    }

    /// A row of ready cells, one per broker, and the ratio cell.
    fn row_of(&mut self, label: &str, cells: &[String], ratio: &str) {
        let _ = write!(self.text, "| {label} |");
        for text in cells {
            let _ = write!(self.text, " {text} |");
        }
        if self.with_ratio {
            let _ = write!(self.text, " {ratio} |");
        }
        self.text += "\n";
    }
}

/// Title, machine and broker versions, and the other-load warning.
pub fn header(report: &Report, title: &str, md: &mut String) {
    let m = &report.machine;
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(
        md,
        "{} run, started {}, took {:.0} s. Machine: {} ({} CPUs online, {} usable), {} RAM, {}, {}{}{}.\n",
        report.mode,
        utc(report.started_unix),
        report.duration_secs,
        m.cpu_model,
        m.cpus_online,
        m.cpus_available,
        human_bytes(m.memory_bytes as f64),
        m.kernel,
        m.os,
        if m.cpuidle.is_empty() {
            String::new()
        } else {
            format!(", CPU idle: {}", m.cpuidle)
        },
        if m.git_commit.is_empty() {
            String::new()
        } else {
            format!(", commit {}", m.git_commit)
        }
    );
    for broker in &report.brokers {
        let _ = writeln!(
            md,
            "- {}: `{}`, executable modified {} ({})",
            broker.label, broker.version, broker.modified, broker.config
        );
    }
    let noisy = report.results.iter().filter(|r| r.skewed).count();
    if noisy > 0 {
        let _ = writeln!(
            md,
            "\n**{noisy} of {} runs shared the machine with other load**: other processes used more \
             than {:.2} CPUs during their measured window (`other_cpu_secs` in the JSON). Their figures \
             are marked † and are skewed; rerun on a quiet machine.",
            report.results.len(),
            super::NOISY_LOAD
        );
    }
}

/// Every run that was not clean, with its counts and notes.
pub fn problems(report: &Report, md: &mut String) {
    let problems: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.status != Status::Ok || !r.notes.is_empty())
        .collect();
    *md += "\n## Problems\n\n";
    if problems.is_empty() {
        *md += "None: every subscriber received every message, in order, in every run.\n";
    }
    for r in problems {
        let _ = writeln!(
            md,
            "- `{}` on {}{}{}{}: **{}**; sent {}, expected {} deliveries, received {}.",
            r.scenario,
            r.broker.label(),
            r.trial
                .map_or(String::new(), |trial| format!(", trial {trial}")),
            match r.backend {
                Some(backend) => format!(
                    " ({}{})",
                    backend.name(),
                    if r.syscall_pass {
                        ", syscall-counting run"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            },
            match &r.stats_watch {
                Some(arm) => format!(
                    " (round {}, {})",
                    arm.round,
                    if arm.watcher {
                        "with the watcher"
                    } else {
                        "without"
                    }
                ),
                None => String::new(),
            },
            r.status.label(),
            r.sent,
            r.expected,
            r.received
        );
        for problem in r.problems.iter().chain(&r.notes) {
            let _ = writeln!(md, "  - {}", problem.replace('\n', " "));
        }
    }
}

pub fn render(report: &Report) -> String {
    let kinds = report.broker_kinds();
    let mut md = String::new();
    if let Some(summary) = &report.stats_watch_overhead {
        header(
            report,
            "BlipMQ bench: `blipmqctl stats --watch` overhead",
            &mut md,
        );
        super::stats_watch::render(report, summary, &mut md);
        problems(report, &mut md);
        return md;
    }
    if report.dpdk_transport.is_some() {
        header(report, &format!("BlipMQ bench: {}", report.mode), &mut md);
        super::dpdk::render(report, &mut md);
        problems(report, &mut md);
        return md;
    }
    if report.veth_lab.is_some() {
        header(report, &format!("BlipMQ bench: {}", report.mode), &mut md);
        super::veth::render(report, &mut md);
        problems(report, &mut md);
        return md;
    }
    let title = format!(
        "BlipMQ bench: {}",
        kinds
            .iter()
            .map(|k| k.label())
            .collect::<Vec<_>>()
            .join(" vs ")
    );
    header(report, &title, &mut md);
    md += "\nBrokers and the load generator share the machine. Every run starts a fresh broker. \
           A run that lost, reordered or duplicated a message shows its verdict instead of a speed; \
           see Problems below. Ratios are BlipMQ's figure divided by NATS's.\n\n";

    let throughput: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Throughput { .. }) || s.group == Group::Connections)
        .collect();
    if !throughput.is_empty() {
        md += "## Throughput\n\nMessages delivered per second, all subscribers together, and payload MB/s \
               (10^6 B). Publishers send as fast as the flow control lets them. `conn-10k` is 1 → 1 with \
               10,000 idle subscriber connections open.\n\n";
        let mut table = Table::new("Scenario", &kinds, "BlipMQ/NATS (higher: BlipMQ faster)");
        for scenario in &throughput {
            table.row(&format!("`{}`", scenario.name), |kind| {
                match report.result(&scenario.name, kind) {
                    None => ("n/a".into(), None),
                    Some(r) if r.status != Status::Ok => (failed_cell(r), None),
                    Some(r) => (
                        format!(
                            "{} msg/s, {:.1} MB/s{}",
                            human_rate(r.msgs_per_sec.unwrap_or(0.0)),
                            r.mb_per_sec.unwrap_or(0.0),
                            mark(r)
                        ),
                        r.msgs_per_sec,
                    ),
                }
            });
        }
        md += &table.text;

        md += "\n## Broker CPU\n\nCPU seconds (user + system, all threads, from /proc/PID/stat) the broker \
               used per million delivered messages, over the measured window. Lower is better.\n\n";
        let mut table = Table::new("Scenario", &kinds, "BlipMQ/NATS (lower: BlipMQ cheaper)");
        for scenario in &throughput {
            table.row(&format!("`{}`", scenario.name), |kind| {
                match report.result(&scenario.name, kind) {
                    None => ("n/a".into(), None),
                    Some(r) if r.status != Status::Ok => (failed_cell(r), None),
                    Some(r) => match r.cpu_secs_per_million {
                        Some(cpu) => (format!("{cpu:.3} s{}", mark(r)), Some(cpu)),
                        None => ("–".into(), None),
                    },
                }
            });
        }
        md += &table.text;
    }

    latency_section(report, &kinds, &mut md);
    leaf_section(report, &kinds, &mut md);

    let conns: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Connections { .. }))
        .collect();
    for scenario in conns {
        let _ = write!(
            md,
            "\n## Connections (`{}`)\n\nBroker RSS (VmRSS from /proc/PID/status), fresh and with the idle \
             subscriber connections open (each subscribed to its own subject).\n\n",
            scenario.name
        );
        let mut table = Table::new("Figure", &kinds, "BlipMQ/NATS");
        let conn = |kind| {
            report
                .result(&scenario.name, kind)
                .and_then(|r| r.connections.clone())
        };
        table.row("RSS, fresh", |kind| match conn(kind) {
            Some(c) => (
                human_bytes(c.rss_before_bytes as f64),
                Some(c.rss_before_bytes as f64),
            ),
            None => ("–".into(), None),
        });
        table.row("RSS with the idle connections", |kind| match conn(kind) {
            Some(c) => (
                format!(
                    "{} ({} conns)",
                    human_bytes(c.rss_idle_bytes as f64),
                    c.idle
                ),
                Some(c.rss_idle_bytes as f64),
            ),
            None => ("–".into(), None),
        });
        table.row("RSS per idle connection", |kind| match conn(kind) {
            Some(c) => (
                human_bytes(c.bytes_per_idle_conn),
                Some(c.bytes_per_idle_conn),
            ),
            None => ("–".into(), None),
        });
        table.row("time to open them", |kind| match conn(kind) {
            Some(c) => (format!("{:.2} s", c.open_secs), Some(c.open_secs)),
            None => ("–".into(), None),
        });
        table.row("1 → 1 throughput meanwhile", |kind| {
            rate_cell(report.result(&scenario.name, kind))
        });
        md += &table.text;
    }
    flood_section(report, &kinds, &mut md);

    problems(report, &mut md);
    md
}

/// µs: "112", "98.5".
fn micros(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A median of per-trial ratios: "0.80× (0.70–0.95)".
fn ratio_cell(spread: Option<Spread>) -> String {
    match spread {
        Some(s) if s.trials > 1 => format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max),
        Some(s) => format!("{:.2}×", s.median),
        None => "–".into(),
    }
}

/// A figure over a broker's ok trials, marked with the count of noisy
/// ones; or, when no trial was ok, why.
fn trials_cell(
    trials: Option<&BrokerTrials>,
    spread: impl Fn(&BrokerTrials) -> Option<Spread>,
    format: impl Fn(f64) -> String,
) -> String {
    trials.map_or("n/a".into(), |t| t.counts.cell(spread(t), format))
}

/// "5/5 ok; 50.0k msg/s; pacer p99 8.1 µs; other ≤ 0.05, steal ≤ 0.00 CPUs".
fn trials_summary(t: &BrokerTrials) -> String {
    let mut text = format!("{}/{} ok", t.counts.ok, t.counts.trials);
    if !t.counts.failed.is_empty() {
        let failed: Vec<String> = t
            .counts
            .failed
            .iter()
            .map(|f| format!("trial {} {}", f.trial, f.status.label()))
            .collect();
        let _ = write!(text, " ({})", failed.join(", "));
    }
    if !t.counts.noisy_trials.is_empty() {
        let noisy: Vec<String> = t
            .counts
            .noisy_trials
            .iter()
            .map(|n| n.to_string())
            .collect();
        let _ = write!(text, ", noisy: {} †", noisy.join(", "));
    }
    if let Some(rate) = t.msgs_per_sec {
        let _ = write!(text, "; {} msg/s", human_rate(rate.median));
    }
    if let Some(lag) = t.pacer_lag_p99_us {
        let _ = write!(text, "; pacer p99 {} µs", micros(lag.median));
    }
    if let (Some(other), Some(steal)) = (t.other_cpus, t.steal_cpus) {
        let _ = write!(
            text,
            "; other ≤ {:.2}, steal ≤ {:.2} CPUs",
            other.max, steal.max
        );
    }
    if let Some(preempted) = t.preemptions_per_sec {
        let _ = write!(
            text,
            "; broker preempted {}/s",
            human_rate(preempted.median)
        );
    }
    if !t.across_workers.is_empty() {
        let shares: Vec<String> = t
            .across_workers
            .iter()
            .map(|(_, share)| format!("{:.0}", share * 100.0))
            .collect();
        let _ = write!(text, "; deliveries across workers {} %", shares.join("/"));
    }
    text
}

/// The latency scenarios over their trials: percentiles as medians with
/// spreads, the per-trial ratios, and a line per scenario on the trials.
fn latency_section(report: &Report, kinds: &[BrokerKind], md: &mut String) {
    if report.latency_trials.is_empty() {
        return;
    }
    let timing = &report.settings["timing"];
    let secs = |key: &str| timing[key].as_f64().unwrap_or(0.0);
    let _ = write!(
        md,
        "\n## Latency\n\nOne-way latency in µs, paced publishers, 16 B payloads: from the moment each message \
         was due to be sent (so the publisher's own lateness and any backpressure count; no coordinated \
         omission) to its arrival at the subscriber. Lower is better.\n\n\
         Each scenario ran as **{} trials** per broker, interleaved (trial 1 on every broker, then trial 2, \
         ...), each on a fresh broker with {} s warm-up and {} s measured. A cell is the **median over the \
         trials** with the spread (min–max); BlipMQ/NATS is the **median of the per-trial ratios** (trial i of \
         BlipMQ over trial i of NATS) with their spread. Trials that lost, reordered or failed are left out \
         (see the trials table and Problems). †N: N of the trials counted were noisy (other processes and \
         the hypervisor's steal used more than {:.2} CPUs in the window).\n\n\
         The `in-broker` rows are BlipMQ's own share, from its stats segment: each delivered message from \
         the read that brought its PUBLISH to the write that handed it to the subscriber's socket, ring \
         time between workers included, over the same window and every flow's messages (under load, the \
         load flow's too). Its buckets are 12.5 % wide: values are bucket ends.\n\n",
        timing["latency_trials"].as_u64().unwrap_or(1),
        secs("latency_warmup"),
        secs("latency_measure"),
        super::NOISY_LOAD
    );
    let mut table = Table::new("Scenario", kinds, "BlipMQ/NATS (lower: BlipMQ faster)");
    for summary in &report.latency_trials {
        for (index, label) in PERCENTILES.iter().enumerate() {
            let cells: Vec<String> = kinds
                .iter()
                .map(|&kind| {
                    trials_cell(summary.broker(kind), |t| t.latency_us[index].spread, micros)
                })
                .collect();
            let ratio = ratio_cell(
                summary
                    .blipmq_over_nats_latency
                    .as_ref()
                    .and_then(|r| r[index].spread),
            );
            table.row_of(&format!("`{}` {label}", summary.scenario), &cells, &ratio);
        }
        in_broker_rows(summary, kinds, &mut table);
        if summary
            .brokers
            .iter()
            .any(|b| b.load_msgs_per_sec.is_some())
        {
            let cells: Vec<String> = kinds
                .iter()
                .map(|&kind| trials_cell(summary.broker(kind), |t| t.load_msgs_per_sec, human_rate))
                .collect();
            table.row_of(
                &format!(
                    "`{}` load flow msg/s (ratio: higher = BlipMQ faster)",
                    summary.scenario
                ),
                &cells,
                &ratio_cell(summary.blipmq_over_nats_load),
            );
        }
    }
    *md += &table.text;
    *md += "\n### Trials\n\nPer scenario and broker: trials in the medians, those left out, the noisy ones; \
            the median achieved rate (all deliveries) and the publisher's own lateness (pacer lag p99); the \
            most CPUs other processes and steal took in a trial's window; how often per second the \
            broker's threads were preempted (another thread, such as a client, took their CPU while they \
            wanted to run; median over trials). Every trial's figures are in the \
            JSON (`results`, with `trial`; the medians under `latency_trials`).\n\n";
    let mut table = Table::with_columns("Scenario", kinds, None);
    for summary in &report.latency_trials {
        let cells: Vec<String> = kinds
            .iter()
            .map(|&kind| summary.broker(kind).map_or("n/a".into(), trials_summary))
            .collect();
        table.row_of(&format!("`{}`", summary.scenario), &cells, "");
    }
    *md += &table.text;
}

/// A figure over a broker's ok leaf-node trials, marked with the count of
/// noisy ones; or, when no trial was ok, why.
fn leaf_cell(
    trials: Option<&LeafBrokerTrials>,
    spread: impl Fn(&LeafBrokerTrials) -> Option<Spread>,
    format: impl Fn(f64) -> String,
) -> String {
    trials.map_or("n/a".into(), |t| t.counts.cell(spread(t), format))
}

/// The leaf-node fan-out scenarios over their trials: delivered msg/s and
/// the hub link's bytes per delivered message, medians with spreads and
/// per-trial ratios.
fn leaf_section(report: &Report, kinds: &[BrokerKind], md: &mut String) {
    if report.leaf_trials.is_empty() {
        return;
    }
    let timing = &report.settings["timing"];
    let secs = |key: &str| timing[key].as_f64().unwrap_or(0.0);
    let _ = write!(
        md,
        "\n## Leaf nodes\n\nA nats-server hub (`leafnodes` listener, monitoring) and two leaf nodes of the broker \
         under test, all on 127.0.0.1: two blipmqd (a NATS listener and `[[leafnode.remotes]]` to the hub) or two \
         nats-server (`leafnodes {{ remotes }}` to the hub). One publisher on leaf A publishes unpaced, with the \
         throughput flow control, to subscribers of the same subject on leaf B (and on A); the same NATS client \
         code for both. Before the flow, probe messages from A must reach a probe subscriber on B (the interest \
         has crossed the hub). *Link bytes per delivered message*: from the hub's `/leafz` before and after the \
         measured window, bytes in from leaf A plus bytes out to leaf B, over the messages delivered to all \
         subscribers in the window, as the hub counts them (nats-server 2.9 counts message payloads only, so this \
         shows how often a message crosses); *on the wire*: the same from the hub's sockets to the leaves \
         (`ss -ti`: TCP payload, protocol lines included, no TCP/IP headers). *Leaves' CPU*: both leaves' CPU seconds per million \
         delivered messages; the hub's apart.\n\n\
         Each scenario ran as **{} trials** per broker, interleaved, each on fresh processes with {} s warm-up \
         and {} s measured. A cell is the **median over the ok trials** with the spread (min–max); BlipMQ/NATS is \
         the **median of the per-trial ratios** with their spread. †N: N of the trials counted were noisy.\n\n",
        timing["latency_trials"].as_u64().unwrap_or(1),
        secs("warmup"),
        secs("measure"),
    );
    let mut table = Table::new("Scenario", kinds, "BlipMQ/NATS");
    for summary in &report.leaf_trials {
        let name = &summary.scenario;
        let cells = |spread: &dyn Fn(&LeafBrokerTrials) -> Option<Spread>,
                     format: &dyn Fn(f64) -> String| {
            kinds
                .iter()
                .map(|&kind| leaf_cell(summary.broker(kind), spread, format))
                .collect::<Vec<String>>()
        };
        table.row_of(
            &format!("`{name}` delivered msg/s (ratio: higher = BlipMQ faster)"),
            &cells(&|t| t.msgs_per_sec, &|v| human_rate(v)),
            &ratio_cell(summary.blipmq_over_nats_msgs_per_sec),
        );
        table.row_of(
            &format!("`{name}` hub link bytes per delivered msg (ratio: lower = BlipMQ leaner)"),
            &cells(&|t| t.link_bytes_per_delivered, &|v| format!("{v:.1} B")),
            &ratio_cell(summary.blipmq_over_nats_link_bytes),
        );
        table.row_of(
            &format!("`{name}` the same on the wire (ratio: lower = BlipMQ leaner)"),
            &cells(&|t| t.wire_bytes_per_delivered, &|v| format!("{v:.1} B")),
            &ratio_cell(summary.blipmq_over_nats_wire_bytes),
        );
        table.row_of(
            &format!("`{name}` leaves' CPU s per million delivered"),
            &cells(&|t| t.leaves_cpu_secs_per_million, &|v| format!("{v:.3}")),
            "",
        );
        table.row_of(
            &format!("`{name}` hub's CPU s per million delivered"),
            &cells(&|t| t.hub_cpu_secs_per_million, &|v| format!("{v:.3}")),
            "",
        );
        let trials: Vec<String> = kinds
            .iter()
            .map(|&kind| match summary.broker(kind) {
                Some(t) => format!("{}/{} ok", t.counts.ok, t.counts.trials),
                None => "n/a".into(),
            })
            .collect();
        table.row_of(&format!("`{name}` trials"), &trials, "");
    }
    *md += &table.text;
}

/// BlipMQ's own share of the latency (its in-broker histogram: PUBLISH
/// read to subscriber write, every flow's messages), when it reported one.
fn in_broker_rows(summary: &ScenarioTrials, kinds: &[BrokerKind], table: &mut Table) {
    let Some(blipmq) = summary.broker(BrokerKind::Blipmq) else {
        return;
    };
    let Some(in_broker) = &blipmq.broker_latency_us else {
        return;
    };
    for (index, label) in PERCENTILES.iter().enumerate() {
        if !matches!(*label, "p50" | "p99" | "p99.9" | "max") {
            continue;
        }
        let cells: Vec<String> = kinds
            .iter()
            .map(|&kind| match kind {
                BrokerKind::Blipmq => {
                    trials_cell(Some(blipmq), |_| in_broker[index].spread, micros)
                }
                _ => "–".into(),
            })
            .collect();
        table.row_of(
            &format!("`{}` in-broker {label}", summary.scenario),
            &cells,
            "",
        );
    }
}

/// A run's messages per second, or why it has none.
fn rate_cell(result: Option<&RunResult>) -> (String, Option<f64>) {
    match result {
        Some(r) if r.status == Status::Ok => (
            format!(
                "{} msg/s{}",
                human_rate(r.msgs_per_sec.unwrap_or(0.0)),
                mark(r)
            ),
            r.msgs_per_sec,
        ),
        Some(r) => (failed_cell(r), None),
        None => ("–".into(), None),
    }
}

/// The flood scenarios: the silent connections' fate and what they cost
/// the flow.
fn flood_section(report: &Report, kinds: &[BrokerKind], md: &mut String) {
    for scenario in report
        .scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Flood { .. }))
    {
        let _ = write!(
            md,
            "\n## Silent connections (`{}`)\n\n{}. BlipMQ closes a connection without CONNECT at its \
             `auth.timeout` (2 s); nats-server only when authorization is configured, so here not.\n\n",
            scenario.name, scenario.description
        );
        let mut table = Table::new("Figure", kinds, "BlipMQ/NATS");
        let flood = |kind| {
            report
                .result(&scenario.name, kind)
                .and_then(|r| r.flood.clone())
        };
        table.row("closed within auth.timeout + 1 s", |kind| {
            match flood(kind) {
                Some(f) => (
                    format!("{} of {}", f.closed_in_time, f.silent),
                    Some(f.closed_in_time as f64),
                ),
                None => ("–".into(), None),
            }
        });
        table.row("slowest close", |kind| match flood(kind) {
            Some(f) if f.closed_in_time > 0 => (
                format!("{:.2} s", f.slowest_close_secs),
                Some(f.slowest_close_secs),
            ),
            _ => ("–".into(), None),
        });
        table.row("time to open them", |kind| match flood(kind) {
            Some(f) => (format!("{:.2} s", f.open_secs), Some(f.open_secs)),
            None => ("–".into(), None),
        });
        table.row("1 → 1 before the flood", |kind| match flood(kind) {
            Some(f) => (
                format!("{} msg/s", human_rate(f.quiet_msgs_per_sec)),
                Some(f.quiet_msgs_per_sec),
            ),
            None => ("–".into(), None),
        });
        table.row("1 → 1 during the flood", |kind| {
            rate_cell(report.result(&scenario.name, kind))
        });
        table.row("during / before", |kind| match flood(kind) {
            Some(f) => (
                format!("{:.2}×", f.flooded_over_quiet),
                Some(f.flooded_over_quiet),
            ),
            None => ("–".into(), None),
        });
        *md += &table.text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::trials::{self, tests::run};
    use crate::report::{machine::Machine, LoadFigures};
    use crate::scenarios::{self, Timing};

    #[test]
    fn latency_section_gives_medians_spreads_and_per_trial_ratios() {
        let (b, n) = (BrokerKind::Blipmq, BrokerKind::Nats);
        let selected = scenarios::select(&["lat-50k".into(), "lat-load-50k".into()]).unwrap();
        let (plain, loaded) = (&selected[0], &selected[1]);
        let mut results = vec![
            run(plain, b, 1, 100.0),
            run(plain, n, 1, 400.0),
            run(plain, b, 2, 300.0),
            run(plain, n, 2, 300.0),
            run(plain, b, 3, 200.0),
            run(plain, n, 3, 100.0),
        ];
        results[1].skewed = true;
        results[2].status = Status::Lost;
        for trial in 1..=2 {
            for (kind, rate) in [(b, 4e6), (n, 1e6)] {
                let mut r = run(loaded, kind, trial, 50.0);
                r.load = Some(LoadFigures {
                    pubs: 4,
                    subs: 4,
                    payload_bytes: 128,
                    status: Status::Ok,
                    sent: 0,
                    expected: 0,
                    received: 0,
                    delivered: 0,
                    msgs_per_sec: Some(rate * trial as f64),
                });
                results.push(r);
            }
        }
        let kinds = [b, n];
        let report = Report {
            tool: "test".into(),
            mode: "quick".into(),
            started_unix: 0,
            duration_secs: 0.0,
            machine: Machine::describe(),
            brokers: Vec::new(),
            settings: serde_json::json!({ "timing": Timing::quick() }),
            latency_trials: trials::summarize(&selected, &kinds, &results),
            leaf_trials: Vec::new(),
            scenarios: selected,
            results,
            stats_watch_overhead: None,
            veth_lab: None,
            dpdk_transport: None,
        };
        let mut md = String::new();
        latency_section(&report, &kinds, &mut md);
        assert!(md.contains("**3 trials** per broker"), "{md}");
        // BlipMQ: trials 1 and 3 (trial 2 lost); NATS: all three, one noisy.
        // Ratios of trials 1 and 3: 0.25 and 2.0.
        assert!(
            md.contains("| `lat-50k` p99 | 150 (100–200) | 300 (100–400) †1 | 1.12× (0.25–2.00) |"),
            "{md}"
        );
        assert!(
            md.contains("| `lat-load-50k` load flow msg/s (ratio: higher = BlipMQ faster) | 6.00M (4.00M–8.00M) | 1.50M (1.00M–2.00M) | 4.00× (4.00–4.00) |"),
            "{md}"
        );
        assert!(
            md.contains("| `lat-50k` | 2/3 ok (trial 2 LOST); 50.0k msg/s"),
            "{md}"
        );
        assert!(md.contains("| 3/3 ok, noisy: 1 †; 50.0k msg/s"), "{md}");
    }

    #[test]
    fn leaf_section_gives_rates_link_bytes_and_ratios() {
        use crate::report::leaf::{self, tests::run};
        let (b, n) = (BrokerKind::Blipmq, BrokerKind::Nats);
        let selected = scenarios::select(&["leaf-1x4-128B".into()]).unwrap();
        let scenario = &selected[0];
        let results = vec![
            run(scenario, b, 1, 3_000_000.0, 384_000_000),
            run(scenario, n, 1, 1_500_000.0, 192_000_000),
        ];
        let kinds = [b, n];
        let report = Report {
            tool: "test".into(),
            mode: "quick".into(),
            started_unix: 0,
            duration_secs: 0.0,
            machine: Machine::describe(),
            brokers: Vec::new(),
            settings: serde_json::json!({ "timing": Timing::quick() }),
            latency_trials: Vec::new(),
            leaf_trials: leaf::summarize(&selected, &kinds, &results),
            scenarios: selected.clone(),
            results,
            stats_watch_overhead: None,
            veth_lab: None,
            dpdk_transport: None,
        };
        let mut md = String::new();
        leaf_section(&report, &kinds, &mut md);
        assert!(md.contains("## Leaf nodes"), "{md}");
        assert!(
            md.contains("| `leaf-1x4-128B` delivered msg/s (ratio: higher = BlipMQ faster) | 3.00M | 1.50M | 2.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| `leaf-1x4-128B` hub link bytes per delivered msg (ratio: lower = BlipMQ leaner) | 64.0 B | 64.0 B | 1.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| `leaf-1x4-128B` trials | 1/1 ok | 1/1 ok |  |"),
            "{md}"
        );
        assert!(render(&report).contains("## Leaf nodes"));
    }

    #[test]
    fn formats_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
    }
}
