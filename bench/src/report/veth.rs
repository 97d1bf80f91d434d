//! The report of the veth lab (`--backend afpacket|dpdk`, `--veth-compare`):
//! blipmqd's backends side by side through one veth pair, with the
//! broker's syscalls per 1,000 delivered messages.

use std::fmt::Write;

use super::{human_rate, Report, RunResult, Status};
use crate::lab::Backend;
use crate::scenarios::Kind;

fn backends(report: &Report) -> Vec<Backend> {
    let mut found: Vec<Backend> = Vec::new();
    for backend in report.results.iter().filter_map(|r| r.backend) {
        if !found.contains(&backend) {
            found.push(backend);
        }
    }
    found
}

fn find<'a>(
    report: &'a Report,
    scenario: &str,
    backend: Backend,
    syscall_pass: bool,
) -> Option<&'a RunResult> {
    report.results.iter().find(|r| {
        r.scenario == scenario && r.backend == Some(backend) && r.syscall_pass == syscall_pass
    })
}

fn verdict(result: &RunResult) -> String {
    format!("**{}**", result.status.label())
}

/// † after the figures of a run that shared the machine with other load.
fn dagger(result: &RunResult) -> &'static str {
    if result.skewed {
        " †"
    } else {
        ""
    }
}

fn opt(value: Option<f64>, digits: usize) -> String {
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

pub fn render(report: &Report, md: &mut String) {
    let backends = backends(report);
    let lab = report.veth_lab.clone().unwrap_or_default();
    let _ = writeln!(
        md,
        "\nBlipMQ only. The broker runs in one network namespace, the bench's clients (kernel TCP) in \
         another, joined by one veth pair: {lab}. `afpacket`: blipmqd's user-space TCP over an \
         AF_PACKET socket on its veth end, which has no kernel address; `dpdk`: the same TCP stack on \
         a DPDK port, DPDK's net_af_packet driver on that veth end (one queue pair per worker; the \
         clients' checksum and segmentation offloads off for these runs, as that driver needs); \
         `kernel`: the same veth end \
         with 198.18.X.2/24 as a kernel address and blipmqd's default backend listening on it. Every \
         run starts a fresh broker; every message is checked as in the main bench.\n\n\
         Each scenario runs twice per backend. The first run gives msgs/s and CPU; the second counts \
         the broker's syscalls over the measured window with `perf stat -e raw_syscalls:sys_enter -p PID` \
         (all threads; per-syscall tracepoints for the breakdown), which puts every syscall on the \
         traced path and so may slow the broker: its speed is shown only to tell how much. \
         The broker's CPU is its own utime + stime: softirq time the kernel accounts apart \
         (veth delivery, TCP receive in softirq) is in neither backend's figure.\n"
    );

    let throughput: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Throughput { .. }))
        .collect();
    if !throughput.is_empty() {
        *md += "## Throughput\n\n| Scenario | Backend | msgs/s | MB/s | broker CPU s per M msgs | syscalls per 1,000 msgs | msgs/s while counted | largest (per 1,000 msgs) |\n\
                |---|---|---:|---:|---:|---:|---:|---|\n";
        for scenario in &throughput {
            for &backend in &backends {
                let speed = find(report, &scenario.name, backend, false);
                let (rate, mbps, cpu) = match speed {
                    None => ("n/a".into(), "n/a".into(), "n/a".into()),
                    Some(r) if r.status != Status::Ok => (verdict(r), "–".into(), "–".into()),
                    Some(r) => (
                        format!("{}{}", human_rate(r.msgs_per_sec.unwrap_or(0.0)), dagger(r)),
                        opt(r.mb_per_sec, 1),
                        opt(r.cpu_secs_per_million, 3),
                    ),
                };
                let (per_1000, counted_speed, top) =
                    syscalls_cells(find(report, &scenario.name, backend, true));
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {rate} | {mbps} | {cpu} | {per_1000} | {counted_speed} | {top} |",
                    scenario.name,
                    backend.name()
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
                | Scenario | Backend | p50 | p90 | p99 | p99.9 | max | broker CPU s per M msgs | syscalls per 1,000 msgs | largest (per 1,000 msgs) |\n\
                |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
        for scenario in &latency {
            for &backend in &backends {
                let run = find(report, &scenario.name, backend, false);
                let cells = match run {
                    None => vec!["n/a".to_string(); 6],
                    Some(r) => match (&r.latency_us, r.status) {
                        (Some(lat), Status::Ok) => lat
                            .points()
                            .iter()
                            .map(|(label, v)| {
                                let mark = if *label == "p50" { dagger(r) } else { "" };
                                format!("{v:.0}{mark}")
                            })
                            .chain(std::iter::once(opt(r.cpu_secs_per_million, 3)))
                            .collect(),
                        _ => std::iter::once(verdict(r))
                            .chain(std::iter::repeat_n("–".to_string(), 5))
                            .collect(),
                    },
                };
                let (per_1000, _, top) =
                    syscalls_cells(find(report, &scenario.name, backend, true));
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {per_1000} | {top} |",
                    scenario.name,
                    backend.name(),
                    cells.join(" | ")
                );
            }
        }
        *md += "\n";
    }
}
