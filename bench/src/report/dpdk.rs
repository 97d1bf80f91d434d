//! The report of `--transport dpdk`: blipmqd's dpdk backend driven by the
//! DPDK load generator over a memif pair, beside its kernel backend over
//! 127.0.0.1 with kernel clients, with ratios against the latter.

use std::fmt::Write;

use super::bars;
use super::veth::{dagger, find, opt, rate_series, ratio, verdict, Column, KERNEL};
use super::{human_rate, Report, RunResult, Status};
use crate::brokers::BrokerKind;
use crate::lab::Backend;

const MEMIF: Column = (BrokerKind::Blipmq, Backend::Dpdk);

/// How the two transports were set up (`Report::dpdk_transport`).
pub fn describe(kernel_workers: usize) -> String {
    format!(
        "dpdk-memif: blipmqd --backend dpdk --ip 198.18.0.1/24 --workers 1 -- --no-pci --no-huge -m 512 \
         --vdev=net_memif0,role=server, `[dpdk] poll = \"busy\"` (taskset: every CPU but 0), the DPDK load generator on the client \
         end of the pair (smoltcp, one poll loop pinned to CPU 0, 198.18.0.2); kernel-loopback: blipmqd \
         --listen 127.0.0.1:0 --workers {kernel_workers}, the bench's kernel-socket clients"
    )
}

fn label(column: Column) -> &'static str {
    match column.1 {
        Backend::Dpdk => "dpdk, memif, DPDK load generator",
        _ => "kernel, 127.0.0.1, kernel clients",
    }
}

/// Delivered messages per second of broker CPU.
fn per_cpu_second(result: &RunResult) -> Option<f64> {
    (result.broker_cpu_secs > 0.0).then(|| result.delivered as f64 / result.broker_cpu_secs)
}

pub fn render(report: &Report, md: &mut String) {
    let setup = report.dpdk_transport.clone().unwrap_or_default();
    let _ = writeln!(
        md,
        "\nNo kernel on the path of the dpdk runs: the load generator speaks BlipMQ's protocol over \
         smoltcp on a DPDK port, as a client on a real NIC would. Setup: {setup}. Every message is \
         checked as in the main bench. A poll-mode worker spins on its core whether or not frames \
         come, so its CPU per message is its core's time over the messages it moved. The ratios are \
         against the kernel backend in the same run; CPU ratios below 1 are better.\n\n\
         | Scenario | blipmqd transport | msgs/s | × kernel backend | broker CPU s per M msgs | CPU × kernel backend | msgs per broker CPU-second | generator busy turns |\n\
         |---|---|---:|---:|---:|---:|---:|---:|"
    );
    for scenario in &report.scenarios {
        for column in [KERNEL, MEMIF] {
            let run = find(&report.results, &scenario.name, column, false);
            let (rate, cpu, per_cpu, busy) = match run {
                None => ("n/a".into(), "n/a".into(), "n/a".into(), "n/a".into()),
                Some(r) if r.status != Status::Ok => {
                    (verdict(r), "–".into(), "–".into(), "–".into())
                }
                Some(r) => (
                    format!("{}{}", human_rate(r.msgs_per_sec.unwrap_or(0.0)), dagger(r)),
                    opt(r.cpu_secs_per_million, 3),
                    per_cpu_second(r).map_or("–".into(), human_rate),
                    r.loadgen_busy
                        .map_or("–".into(), |busy| format!("{:.0} %", busy * 100.0)),
                ),
            };
            let vs_rate = ratio(&report.results, &scenario.name, column, KERNEL, |r| {
                r.msgs_per_sec
            });
            let vs_cpu = ratio(&report.results, &scenario.name, column, KERNEL, |r| {
                r.cpu_secs_per_million
            });
            let _ = writeln!(
                md,
                "| `{}` | {} | {rate} | {vs_rate} | {cpu} | {vs_cpu} | {per_cpu} | {busy} |",
                scenario.name,
                label(column)
            );
        }
    }
    *md += "\n";
}

/// Delivered msgs/s per scenario, the two transports side by side.
pub fn svg(report: &Report) -> Option<String> {
    let categories: Vec<String> = report.scenarios.iter().map(|s| s.name.clone()).collect();
    bars::grouped(
        "Delivered msgs/s: DPDK generator (memif) vs kernel clients (loopback)",
        "/s",
        &categories,
        &rate_series(
            report,
            &categories,
            &[(KERNEL, label(KERNEL)), (MEMIF, label(MEMIF))],
        ),
    )
}
