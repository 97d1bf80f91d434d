//! The report of the veth lab (`--backend afpacket|dpdk`, `--veth-compare`):
//! blipmqd's backends and nats-server side by side through one veth pair,
//! with ratios against nats-server and the kernel backend, and the broker's
//! syscalls per 1,000 delivered messages.

use std::fmt::Write;

use super::bars::{self, BarSeries, PALETTE};
use super::{human_rate, Report, RunResult, Status};
use crate::brokers::BrokerKind;
use crate::lab::Backend;
use crate::scenarios::Kind;

/// A column of the lab's tables: blipmqd on one backend, or nats-server
/// (kernel TCP on the lab's address).
pub(super) type Column = (BrokerKind, Backend);

/// The name a column goes by in the tables and log directories.
pub fn column_label(kind: BrokerKind, backend: Backend) -> &'static str {
    match kind {
        BrokerKind::Blipmq => backend.name(),
        BrokerKind::Nats => "nats-server",
        BrokerKind::Redis => "redis-server",
    }
}

fn columns(results: &[RunResult]) -> Vec<Column> {
    let mut found: Vec<Column> = Vec::new();
    for column in results
        .iter()
        .filter_map(|r| r.backend.map(|backend| (r.broker, backend)))
    {
        if !found.contains(&column) {
            found.push(column);
        }
    }
    found
}

pub(super) fn find<'a>(
    results: &'a [RunResult],
    scenario: &str,
    (kind, backend): Column,
    syscall_pass: bool,
) -> Option<&'a RunResult> {
    results.iter().find(|r| {
        r.scenario == scenario
            && r.broker == kind
            && r.backend == Some(backend)
            && r.syscall_pass == syscall_pass
    })
}

const NATS: Column = (BrokerKind::Nats, Backend::Kernel);
pub(super) const KERNEL: Column = (BrokerKind::Blipmq, Backend::Kernel);

/// `metric` of `column` over that of `reference` in the same scenario
/// (first pass, both ok), as "2.10×"; "–" when either is missing.
pub(super) fn ratio(
    results: &[RunResult],
    scenario: &str,
    column: Column,
    reference: Column,
    metric: impl Fn(&RunResult) -> Option<f64>,
) -> String {
    let value = |column| {
        find(results, scenario, column, false)
            .filter(|r| r.status == Status::Ok)
            .and_then(&metric)
    };
    match (value(column), value(reference)) {
        (Some(v), Some(r)) if r > 0.0 => format!("{:.2}×", v / r),
        _ => "–".into(),
    }
}

pub(super) fn verdict(result: &RunResult) -> String {
    format!("**{}**", result.status.label())
}

/// † after the figures of a run that shared the machine with other load.
pub(super) fn dagger(result: &RunResult) -> &'static str {
    if result.skewed {
        " †"
    } else {
        ""
    }
}

pub(super) fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// The syscalls cell: per 1,000 delivered, and the largest few by name.
fn syscalls_cells(result: Option<&RunResult>) -> (String, String, String) {
    let Some(result) = result else {
        return ("n/a".into(), "n/a".into(), String::new());
    };
    let Some(figures) = &result.syscalls else {
        return (verdict(result), "–".into(), String::new());
    };
    let top = figures
        .by_name
        .iter()
        .take(4)
        .map(|(name, _, per)| format!("{name} {per:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    let speed = if result.status == Status::Ok {
        format!(
            "{}{}",
            human_rate(result.msgs_per_sec.unwrap_or(0.0)),
            dagger(result)
        )
    } else {
        verdict(result)
    };
    (opt(figures.per_1000_delivered, 1), speed, top)
}

/// One bar series per column: its delivered msgs/s in each scenario of
/// `categories` (none for a failed or missing run).
pub(super) fn rate_series(
    report: &Report,
    categories: &[String],
    columns: &[(Column, &str)],
) -> Vec<BarSeries> {
    columns
        .iter()
        .zip(PALETTE.into_iter().cycle())
        .map(|(&(column, label), color)| BarSeries {
            label: label.into(),
            color,
            values: categories
                .iter()
                .map(|name| {
                    find(&report.results, name, column, false)
                        .filter(|r| r.status == Status::Ok)
                        .and_then(|r| r.msgs_per_sec)
                })
                .collect(),
        })
        .collect()
}

/// Delivered msgs/s per throughput scenario, every column side by side.
pub fn svg(report: &Report) -> Option<String> {
    let categories: Vec<String> = report
        .scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Throughput { .. }))
        .map(|s| s.name.clone())
        .collect();
    let columns: Vec<(Column, &str)> = columns(&report.results)
        .into_iter()
        .map(|column| (column, column_label(column.0, column.1)))
        .collect();
    bars::grouped(
        "Through one veth pair: delivered msgs/s by backend",
        "/s",
        &categories,
        &rate_series(report, &categories, &columns),
    )
}

pub fn render(report: &Report, md: &mut String) {
    let columns = columns(&report.results);
    let lab = report.veth_lab.clone().unwrap_or_default();
    let _ = writeln!(
        md,
        "\nThe broker runs in one network namespace, the bench's clients (kernel TCP) in \
         another, joined by one veth pair: {lab}. `afpacket`: blipmqd's user-space TCP over an \
         AF_PACKET socket on its veth end, which has no kernel address; `dpdk`: the same TCP stack on \
         a DPDK port, DPDK's net_af_packet driver on that veth end (one queue pair per worker; the \
         clients' checksum and segmentation offloads off for these runs, as that driver needs); \
         `kernel`: the same veth end \
         with 198.18.X.2/24 as a kernel address and blipmqd's default backend listening on it; \
         `nats-server`: the same kernel address, nats-server listening on it. Every \
         run starts a fresh broker; every message is checked as in the main bench. The ratios are \
         against nats-server and against blipmqd's kernel backend in the same run.\n\n\
         Each scenario runs twice per column. The first run gives msgs/s and CPU; the second counts \
         the broker's syscalls over the measured window with `perf stat -e raw_syscalls:sys_enter -p PID` \
         (all threads; per-syscall tracepoints for the breakdown), which puts every syscall on the \
         traced path and so may slow the broker: its speed is shown only to tell how much. \
         The broker's CPU is its own utime + stime: softirq time the kernel accounts apart \
         (veth delivery, TCP receive in softirq) is in no column's figure.\n"
    );

    let throughput: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Throughput { .. }))
        .collect();
    if !throughput.is_empty() {
        *md += "## Throughput\n\n| Scenario | Broker | msgs/s | × nats-server | × kernel backend | MB/s | broker CPU s per M msgs | syscalls per 1,000 msgs | msgs/s while counted | largest (per 1,000 msgs) |\n\
                |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
        for scenario in &throughput {
            for &column in &columns {
                let speed = find(&report.results, &scenario.name, column, false);
                let (rate, mbps, cpu) = match speed {
                    None => ("n/a".into(), "n/a".into(), "n/a".into()),
                    Some(r) if r.status != Status::Ok => (verdict(r), "–".into(), "–".into()),
                    Some(r) => (
                        format!("{}{}", human_rate(r.msgs_per_sec.unwrap_or(0.0)), dagger(r)),
                        opt(r.mb_per_sec, 1),
                        opt(r.cpu_secs_per_million, 3),
                    ),
                };
                let rate_of = |r: &RunResult| r.msgs_per_sec;
                let vs_nats = ratio(&report.results, &scenario.name, column, NATS, rate_of);
                let vs_kernel = ratio(&report.results, &scenario.name, column, KERNEL, rate_of);
                let (per_1000, counted_speed, top) =
                    syscalls_cells(find(&report.results, &scenario.name, column, true));
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {rate} | {vs_nats} | {vs_kernel} | {mbps} | {cpu} | {per_1000} | {counted_speed} | {top} |",
                    scenario.name,
                    column_label(column.0, column.1)
                );
            }
        }
        *md += "\n";
    }

    let latency: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Latency { .. }))
        .collect();
    if !latency.is_empty() {
        *md += "## Latency\n\nOne-way, publisher → broker → subscriber, µs; 1 → 1 paced, 16 B payloads.\n\n\
                | Scenario | Broker | p50 | p90 | p99 | p99.9 | max | p50 × nats-server | broker CPU s per M msgs | syscalls per 1,000 msgs | largest (per 1,000 msgs) |\n\
                |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
        for scenario in &latency {
            for &column in &columns {
                let run = find(&report.results, &scenario.name, column, false);
                let p50_vs_nats = ratio(&report.results, &scenario.name, column, NATS, |r| {
                    r.latency_us.as_ref().map(|lat| lat.p50)
                });
                let cells = match run {
                    None => vec!["n/a".to_string(); 7],
                    Some(r) => match (&r.latency_us, r.status) {
                        (Some(lat), Status::Ok) => lat
                            .points()
                            .iter()
                            .map(|(label, v)| {
                                let mark = if *label == "p50" { dagger(r) } else { "" };
                                format!("{v:.0}{mark}")
                            })
                            .chain([p50_vs_nats, opt(r.cpu_secs_per_million, 3)])
                            .collect(),
                        _ => std::iter::once(verdict(r))
                            .chain(std::iter::repeat_n("–".to_string(), 6))
                            .collect(),
                    },
                };
                let (per_1000, _, top) =
                    syscalls_cells(find(&report.results, &scenario.name, column, true));
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {per_1000} | {top} |",
                    scenario.name,
                    column_label(column.0, column.1),
                    cells.join(" | ")
                );
            }
        }
        *md += "\n";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios;

    fn run(kind: BrokerKind, backend: Backend, rate: Option<f64>, status: Status) -> RunResult {
        let scenario =
            scenarios::select(&["tp-1x1-128B".to_string()]).expect("a scenario")[0].clone();
        let mut result = RunResult::new(&scenario, kind);
        result.backend = Some(backend);
        result.msgs_per_sec = rate;
        result.status = status;
        result
    }

    #[test]
    fn ratios_are_against_nats_server_and_the_kernel_backend_of_the_same_scenario() {
        let results = vec![
            run(BrokerKind::Blipmq, Backend::Kernel, Some(4.0e6), Status::Ok),
            run(
                BrokerKind::Blipmq,
                Backend::Afpacket,
                Some(3.0e6),
                Status::Ok,
            ),
            run(BrokerKind::Blipmq, Backend::Dpdk, Some(1.0e6), Status::Lost),
            run(BrokerKind::Nats, Backend::Kernel, Some(1.5e6), Status::Ok),
        ];
        let rate = |r: &RunResult| r.msgs_per_sec;
        let afpacket = (BrokerKind::Blipmq, Backend::Afpacket);
        let dpdk = (BrokerKind::Blipmq, Backend::Dpdk);
        assert_eq!(
            ratio(&results, "tp-1x1-128B", afpacket, NATS, rate),
            "2.00×"
        );
        assert_eq!(
            ratio(&results, "tp-1x1-128B", afpacket, KERNEL, rate),
            "0.75×"
        );
        // nats-server's own column: 1.00× itself, against the kernel backend.
        assert_eq!(ratio(&results, "tp-1x1-128B", NATS, NATS, rate), "1.00×");
        assert_eq!(ratio(&results, "tp-1x1-128B", NATS, KERNEL, rate), "0.38×");
        // A run that lost messages has no ratio; nor has another scenario.
        assert_eq!(ratio(&results, "tp-1x1-128B", dpdk, NATS, rate), "–");
        assert_eq!(ratio(&results, "tp-1x4-1KiB", afpacket, NATS, rate), "–");
        // nats-server and blipmqd's kernel backend are distinct columns.
        assert_eq!(
            columns(&results),
            vec![KERNEL, afpacket, dpdk, NATS],
            "columns in run order"
        );
        assert_eq!(column_label(NATS.0, NATS.1), "nats-server");
        assert_eq!(column_label(KERNEL.0, KERNEL.1), "kernel");
    }
}
