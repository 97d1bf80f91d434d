//! `blipmq-bench`: BlipMQ vs nats-server vs redis-server, side by side.
//!
//! Starts each broker itself on 127.0.0.1 (a fresh instance per scenario),
//! runs the same scenarios against each with the same client strategy, and
//! writes a Markdown table, a JSON file with every figure and SVG plots.
//! See bench/README.md.

mod brokers;
mod lab;
mod proto;
mod report;
mod run;
mod scenarios;
mod tls;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use brokers::{Binaries, BrokerKind, Settings};
use report::{BrokerInfo, Report};
use scenarios::{Group, Timing};

#[derive(Parser, Debug)]
#[command(
    name = "blipmq-bench",
    version,
    about = "Benchmark BlipMQ against nats-server and redis-server on this machine",
    after_help = "Examples:\n  \
        cargo run --release -p blipmq-bench -- --quick\n  \
        blipmq-bench --brokers blipmq,nats --scenario latency\n  \
        blipmq-bench --scenario tp-1x1-16B,tp-1x1-16KiB --out /tmp/bench\n\n\
        Scenario names: see --list. Groups: throughput, latency, connections, queue, leaf-fanout; \
        a trailing * matches a prefix (tp-1x32-*)."
)]
struct Cli {
    /// Brokers to run, comma-separated: blipmq, nats, redis
    #[arg(long, value_delimiter = ',', default_value = "blipmq,nats,redis")]
    brokers: Vec<String>,

    /// Scenarios: names, groups or prefix*; repeatable or comma-separated [default: all]
    #[arg(
        long = "scenario",
        short = 's',
        value_delimiter = ',',
        value_name = "NAME"
    )]
    scenarios: Vec<String>,

    /// Directory for results.md, results.json, the SVG plots and broker logs
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,

    /// blipmqd worker threads [default: the number of usable cores]
    #[arg(long, value_name = "N")]
    workers: Option<usize>,

    /// Short phases and 3 latency trials: the whole set in about 3 minutes
    /// (figures are noisier)
    #[arg(long)]
    quick: bool,

    /// List the scenarios and exit
    #[arg(long)]
    list: bool,

    /// Measured seconds of each throughput run (overrides the preset)
    #[arg(long, value_name = "SECS")]
    measure_secs: Option<f64>,

    /// Trials of each latency scenario per broker, interleaved (BlipMQ,
    /// NATS, Redis, BlipMQ, ...); the report gives medians and spreads
    /// [default: 5, with --quick 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    trials: Option<u32>,

    /// blipmqd executable [default: next to this binary]
    #[arg(long, value_name = "PATH")]
    blipmqd: Option<PathBuf>,

    /// nats-server executable [default: from PATH]
    #[arg(long, value_name = "PATH")]
    nats_server: Option<PathBuf>,

    /// redis-server executable [default: from PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,

    /// Instead of the comparison: BlipMQ only, each scenario (default
    /// tp-1x1-128B, tp-1x4-1KiB) --repeat times without and with
    /// `blipmqctl stats --watch` beside the broker; reports whether the
    /// watcher changes throughput by more than the noise between runs
    #[arg(long)]
    stats_watch_overhead: bool,

    /// --stats-watch-overhead: runs per scenario and arm (at least 2, for the noise)
    #[arg(long, value_name = "R", default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=50))]
    repeat: u32,

    /// blipmqctl executable for --stats-watch-overhead [default: next to blipmqd]
    #[arg(long, value_name = "PATH")]
    blipmqctl: Option<PathBuf>,

    /// blipmqd's backend. kernel: on 127.0.0.1, as always. afpacket, dpdk:
    /// through a veth pair (root): blipmqd in one network namespace owning
    /// 198.18.X.2 in user space (dpdk: through DPDK's net_af_packet driver;
    /// needs a blipmqd built with the dpdk feature), the clients in
    /// another, and nats-server on the same pair with a kernel address
    /// (unless --brokers leaves it out); each run twice, the second with
    /// the broker's syscalls counted
    #[arg(long, value_enum, default_value = "kernel")]
    backend: lab::Backend,

    /// blipmqd's kernel, afpacket and dpdk backends and nats-server through
    /// the same veth pair, side by side (default scenarios tp-1x1-128B,
    /// tp-1x4-1KiB, tp-4x4-128B, tp-1x1-16KiB, lat-10k), with the broker's
    /// syscalls per 1,000 delivered messages from a second run of each
    #[arg(long)]
    veth_compare: bool,

    /// How the bench's clients reach blipmqd. kernel: kernel TCP sockets,
    /// as always. dpdk: the DPDK load generator (root; a blipmq-bench and
    /// blipmqd built with the dpdk features): the clients on smoltcp over a
    /// DPDK net_memif port, blipmqd's dpdk backend on the other end (one
    /// worker; the generator on CPU 0, blipmqd on the others), beside
    /// blipmqd's kernel backend over 127.0.0.1 with kernel clients (default
    /// scenarios tp-1x1-128B, tp-1x4-1KiB, tp-4x4-128B)
    #[arg(long, value_enum, default_value = "kernel")]
    transport: Transport,

    /// The protocol the clients speak to blipmqd. native: BlipMQ's binary
    /// protocol. nats: the NATS client protocol, to blipmqd's NATS listener
    /// (--nats-listen), with the same client code as against nats-server
    /// (brokers blipmq and nats, on 127.0.0.1)
    #[arg(long, value_enum, default_value = "native")]
    protocol: ClientProtocol,

    /// Over TLS: blipmqd with --tls-cert/--tls-key and nats-server with a
    /// tls block serve one self-signed certificate for 127.0.0.1 (made at
    /// start), and the same client code speaks TLS 1.3 (AES-128-GCM) to
    /// each; with --protocol nats, NATS over TLS to both. Throughput,
    /// latency and queue scenarios; brokers blipmq and nats, on 127.0.0.1
    #[arg(long)]
    tls: bool,

    /// Run every broker real-time at SCHED_FIFO priority P (1-99, root):
    /// blipmqd's workers with `server.worker_priority = P`, nats-server and
    /// redis-server entirely under `chrt -f P`, so that the clients on the
    /// same cores do not preempt them
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(1..=99))]
    realtime: Option<u8>,

    /// Internal: run one DPDK load generator job (JSON) and print its report
    #[arg(long, value_name = "JOB", hide = true)]
    dpdk_loadgen: Option<String>,

    /// perf executable for the syscall counts of the veth lab [default: from PATH]
    #[arg(long, value_name = "PATH")]
    perf: Option<PathBuf>,
}

/// How the bench's clients reach blipmqd (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Kernel,
    Dpdk,
}

/// The protocol the bench's clients speak to blipmqd (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientProtocol {
    Native,
    Nats,
}

/// Scenarios of `--transport dpdk` when none are named: the targets'.
const DPDK_TRANSPORT_SCENARIOS: [&str; 3] = ["tp-1x1-128B", "tp-1x4-1KiB", "tp-4x4-128B"];

/// Scenarios of --stats-watch-overhead when none are named: one small-message
/// 1 → 1 and one fan-out with larger messages.
const STATS_WATCH_SCENARIOS: [&str; 2] = ["tp-1x1-128B", "tp-1x4-1KiB"];

/// Scenarios of the veth lab (--backend afpacket|dpdk, --veth-compare) when
/// none are named.
const VETH_SCENARIOS: [&str; 5] = [
    "tp-1x1-128B",
    "tp-1x4-1KiB",
    "tp-4x4-128B",
    "tp-1x1-16KiB",
    "lat-10k",
];

/// One run of the plan: a scenario on a broker with its own settings, and
/// (stats-watch overhead mode) which arm and round it is.
struct PlannedRun {
    scenario: scenarios::Scenario,
    kind: BrokerKind,
    /// Latency scenarios of the comparison: which trial.
    trial: Option<u32>,
    settings: Settings,
    arm: Option<report::StatsWatchArm>,
}

/// blipmqctl: --blipmqctl, else next to blipmqd, else next to this binary.
fn blipmqctl_path(cli: &Cli, bins: &Binaries) -> Result<PathBuf> {
    if let Some(path) = &cli.blipmqctl {
        if !path.is_file() {
            bail!("blipmqctl executable {} does not exist", path.display());
        }
        return Ok(path.clone());
    }
    let beside_blipmqd = bins
        .blipmqd
        .as_ref()
        .and_then(|p| p.parent())
        .map(|dir| dir.join("blipmqctl"));
    let beside_bench = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("blipmqctl")));
    beside_blipmqd
        .into_iter()
        .chain(beside_bench)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no blipmqctl next to blipmqd: build it (cargo build --release -p blipmq-controlplane) \
                 or pass --blipmqctl PATH"
            )
        })
}

/// A fresh directory for the stats files, on tmpfs when there is one (as
/// blipmqd's docs ask: no write-back of the counter pages to a disk).
fn stats_dir() -> Result<PathBuf> {
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("blipmq-bench-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("blipmq-bench: {error:#}");
            std::process::exit(2);
        }
    }
}

fn timing(cli: &Cli) -> Timing {
    let mut timing = if cli.quick {
        Timing::quick()
    } else {
        Timing::full()
    };
    if let Some(secs) = cli.measure_secs {
        timing.measure = Duration::from_secs_f64(secs.max(0.1));
    }
    if let Some(trials) = cli.trials {
        timing.latency_trials = trials;
    }
    timing
}

/// About how long `group`'s scenarios take against all three brokers.
fn group_estimate(group: Group, timing: &Timing) -> Duration {
    scenarios::all()
        .iter()
        .filter(|s| s.group == group)
        .map(|scenario| {
            let brokers = BrokerKind::ALL
                .iter()
                .filter(|b| scenario.applies_to(**b))
                .count() as u32;
            scenario.estimate(timing) * brokers * scenario.runs(timing)
        })
        .sum()
}

fn list(cli: &Cli) {
    let timing = timing(cli);
    let mut total = Duration::ZERO;
    for group in Group::ALL {
        let estimate = group_estimate(group, &timing);
        total += estimate;
        let trials = if group.has_trials() {
            format!("{} interleaved trials per broker, ", timing.latency_trials)
        } else {
            String::new()
        };
        println!(
            "{} ({trials}about {:.0} s):",
            group.name(),
            estimate.as_secs_f64()
        );
        for scenario in scenarios::all().into_iter().filter(|s| s.group == group) {
            println!("  {:<16} {}", scenario.name, scenario.description);
        }
    }
    let quick: Duration = Group::ALL
        .iter()
        .map(|&group| group_estimate(group, &Timing::quick()))
        .sum();
    println!(
        "\nAbout {:.0} s for all of them against all three brokers{}.",
        total.as_secs_f64(),
        if cli.quick {
            " with --quick".to_string()
        } else {
            format!(" (--quick: about {:.0} s)", quick.as_secs_f64())
        }
    );
}

fn binaries(cli: &Cli) -> Result<Binaries> {
    let blipmqd = match &cli.blipmqd {
        Some(path) => Some(path.clone()),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("blipmqd")))
            .filter(|path| path.is_file()),
    };
    Ok(Binaries {
        blipmqd,
        nats_server: cli
            .nats_server
            .clone()
            .or_else(|| brokers::find_in_path("nats-server")),
        redis_server: cli
            .redis_server
            .clone()
            .or_else(|| brokers::find_in_path("redis-server")),
    })
}

/// --stats-watch-overhead: every scenario `repeats` times without and with
/// the watcher, alternating, the order swapped every round so that a drift
/// of the machine's speed does not fall on one arm. Both arms share the
/// stats-file config; only `stats_watcher` differs.
fn stats_watch_plan(
    selected: &[scenarios::Scenario],
    repeats: usize,
    settings: &Settings,
    blipmqctl: &std::path::Path,
    stats_dir: &std::path::Path,
) -> Result<Vec<PlannedRun>> {
    let mut plan = Vec::new();
    for round in 1..=repeats {
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for scenario in selected {
            for watcher in order {
                let arm_name = if watcher { "with" } else { "without" };
                // Its own log directory, so that no run overwrites another's logs.
                let log_dir = created_dir(
                    settings
                        .log_dir
                        .join(format!("round{round}-{arm_name}-watcher")),
                )?;
                plan.push(PlannedRun {
                    scenario: scenario.clone(),
                    kind: BrokerKind::Blipmq,
                    settings: Settings {
                        log_dir,
                        stats_file: Some(
                            stats_dir
                                .join(format!("{}-round{round}-{arm_name}.stats", scenario.name)),
                        ),
                        stats_watcher: watcher.then(|| blipmqctl.to_path_buf()),
                        ..settings.clone()
                    },
                    arm: Some(report::StatsWatchArm {
                        round,
                        watcher,
                        ..Default::default()
                    }),
                    trial: None,
                });
            }
        }
    }
    Ok(plan)
}

/// Where blipmqd shares its counters during a run: on tmpfs (`/dev/shm`)
/// where there is one, so that the kernel never writes the pages back.
fn stats_segment_path() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("blipmq-bench-{}.stats", std::process::id()))
}

/// `dir`, made if missing.
fn created_dir(dir: PathBuf) -> Result<PathBuf> {
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The veth lab's plan: per scenario, every column's run (blipmqd on each
/// backend, then nats-server on the kernel address if selected), then every
/// column's syscall-counting run (the probe slows the broker, so the speed
/// comes from the first, the syscalls from the second).
fn veth_plan(
    selected: &[scenarios::Scenario],
    backends: &[lab::Backend],
    kinds: &[BrokerKind],
    settings: &Settings,
    lab: &lab::VethLab,
    perf: &std::path::Path,
) -> Result<Vec<PlannedRun>> {
    let mut columns: Vec<(BrokerKind, lab::Backend)> = backends
        .iter()
        .map(|&backend| (BrokerKind::Blipmq, backend))
        .collect();
    if kinds.contains(&BrokerKind::Nats) {
        columns.push((BrokerKind::Nats, lab::Backend::Kernel));
    }
    let mut plan = Vec::new();
    for scenario in selected {
        for count_syscalls in [false, true] {
            for &(kind, backend) in &columns {
                let pass = if count_syscalls { "-syscalls" } else { "" };
                let log_dir = created_dir(settings.log_dir.join(format!(
                    "{}{pass}",
                    report::veth::column_label(kind, backend)
                )))?;
                plan.push(PlannedRun {
                    scenario: scenario.clone(),
                    kind,
                    settings: Settings {
                        log_dir,
                        lab: Some(lab.target(backend)),
                        count_syscalls: count_syscalls.then(|| perf.to_path_buf()),
                        ..settings.clone()
                    },
                    arm: None,
                    trial: None,
                });
            }
        }
    }
    Ok(plan)
}

/// The DPDK load generator's plan: per scenario, blipmqd's kernel backend
/// on 127.0.0.1 with kernel clients, then its dpdk backend (one worker) on
/// a memif pair with the generator.
fn dpdk_transport_plan(
    selected: &[scenarios::Scenario],
    settings: &Settings,
) -> Result<Vec<PlannedRun>> {
    let mut plan = Vec::new();
    for scenario in selected {
        for memif in [None, Some(run::dpdk::MemifTarget::new())] {
            let log_dir = created_dir(settings.log_dir.join(match memif {
                None => "kernel-loopback",
                Some(_) => "dpdk-memif",
            }))?;
            let workers = if memif.is_some() { 1 } else { settings.workers };
            plan.push(PlannedRun {
                scenario: scenario.clone(),
                kind: BrokerKind::Blipmq,
                settings: Settings {
                    log_dir,
                    workers,
                    memif,
                    ..settings.clone()
                },
                arm: None,
                trial: None,
            });
        }
    }
    Ok(plan)
}

/// perf, and whether it can count tracepoints here.
fn perf_path(cli: &Cli) -> Result<PathBuf> {
    let perf = cli
        .perf
        .clone()
        .or_else(|| brokers::find_in_path("perf"))
        .ok_or_else(|| {
            anyhow::anyhow!("no perf for the syscall counts: apt-get install -y linux-perf, or pass --perf PATH")
        })?;
    let check = std::process::Command::new(&perf)
        .args(["stat", "-e", "raw_syscalls:sys_enter", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", perf.display()))?;
    if !check.status.success() {
        bail!(
            "`perf stat -e raw_syscalls:sys_enter true` fails here (tracefs, perf_event_paranoid?): {}",
            String::from_utf8_lossy(&check.stderr).trim()
        );
    }
    Ok(perf)
}

fn run(cli: Cli) -> Result<i32> {
    if let Some(job) = &cli.dpdk_loadgen {
        return Ok(run::dpdk::child_main(job));
    }
    if cli.list {
        list(&cli);
        return Ok(0);
    }
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut timing = timing(&cli);
    let mut kinds = Vec::new();
    for name in cli.brokers.iter().filter(|n| !n.trim().is_empty()) {
        let kind = BrokerKind::parse(name)?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    if kinds.is_empty() {
        bail!("no broker selected");
    }
    if cli.stats_watch_overhead {
        // The watcher reads blipmqd's stats file; the others have none.
        kinds = vec![BrokerKind::Blipmq];
    }
    let lab_backends: Vec<lab::Backend> = if cli.veth_compare {
        vec![
            lab::Backend::Kernel,
            lab::Backend::Afpacket,
            lab::Backend::Dpdk,
        ]
    } else if cli.backend.is_userspace() {
        vec![cli.backend]
    } else {
        Vec::new()
    };
    let in_lab = !lab_backends.is_empty();
    let dpdk_transport = cli.transport == Transport::Dpdk;
    // The side-by-side comparison, where latency scenarios run as trials;
    // the other modes run each scenario once per column.
    let comparison = !(in_lab || dpdk_transport || cli.stats_watch_overhead);
    if !comparison {
        if cli.trials.is_some() {
            bail!("--trials is for the comparison: leave it out with --backend, --veth-compare, --transport, --stats-watch-overhead");
        }
        timing.latency_trials = 1;
    }
    let nats_clients = cli.protocol == ClientProtocol::Nats;
    if nats_clients {
        if in_lab || dpdk_transport || cli.stats_watch_overhead {
            bail!("--protocol nats runs on 127.0.0.1 with kernel clients: leave out --backend, --veth-compare, --transport, --stats-watch-overhead");
        }
        // One client code for both: Redis does not speak NATS.
        kinds.retain(|&kind| kind != BrokerKind::Redis);
        if kinds.is_empty() {
            bail!("--protocol nats compares blipmq and nats: select either");
        }
    }
    if cli.tls {
        if in_lab || dpdk_transport || cli.stats_watch_overhead {
            bail!("--tls runs on 127.0.0.1 with kernel clients: leave out --backend, --veth-compare, --transport, --stats-watch-overhead");
        }
        // Redis serves no TLS here (its TLS needs a build with it).
        kinds.retain(|&kind| kind != BrokerKind::Redis);
        if kinds.is_empty() {
            bail!("--tls compares blipmq and nats: select either");
        }
    }
    if dpdk_transport {
        if in_lab || cli.stats_watch_overhead {
            bail!("--transport dpdk is a mode of its own: leave out --backend, --veth-compare, --stats-watch-overhead");
        }
        if !cfg!(feature = "dpdk") {
            bail!(
                "--transport dpdk needs a blipmq-bench built with DPDK: cargo build --release \
                 -p blipmq-bench -p blipmq-dataplane --features blipmq-dataplane/dpdk,blipmq-bench/dpdk"
            );
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("--transport dpdk needs root (DPDK's EAL and memif)");
        }
        kinds = vec![BrokerKind::Blipmq];
    }
    if in_lab {
        if cli.stats_watch_overhead {
            bail!("--stats-watch-overhead runs on 127.0.0.1: leave out --backend afpacket|dpdk / --veth-compare");
        }
        // blipmqd on the lab's backends, nats-server beside it if
        // selected; Redis has no part in the lab.
        kinds.retain(|&kind| kind == BrokerKind::Nats);
        kinds.insert(0, BrokerKind::Blipmq);
    }
    let selected = if cli.stats_watch_overhead && cli.scenarios.is_empty() {
        scenarios::select(&STATS_WATCH_SCENARIOS.map(String::from))?
    } else if in_lab && cli.scenarios.is_empty() {
        scenarios::select(&VETH_SCENARIOS.map(String::from))?
    } else if dpdk_transport && cli.scenarios.is_empty() {
        scenarios::select(&DPDK_TRANSPORT_SCENARIOS.map(String::from))?
    } else {
        scenarios::select(&cli.scenarios)?
    };
    if cli.stats_watch_overhead {
        if let Some(other) = selected
            .iter()
            .find(|s| !matches!(s.kind, scenarios::Kind::Throughput { .. }))
        {
            bail!(
                "--stats-watch-overhead measures throughput: {} is not a throughput scenario",
                other.name
            );
        }
    }
    if dpdk_transport {
        if let Some(other) = selected
            .iter()
            .find(|s| !matches!(s.kind, scenarios::Kind::Throughput { .. }))
        {
            bail!(
                "the DPDK load generator runs throughput scenarios: leave out {}",
                other.name
            );
        }
    }
    if cli.tls {
        if let Some(other) = selected.iter().find(|s| s.group == Group::Connections) {
            bail!(
                "--tls runs throughput, latency and queue scenarios: leave out {}",
                other.name
            );
        }
    }
    if in_lab {
        if let Some(other) = selected.iter().find(|s| s.group == Group::Connections) {
            bail!(
                "the veth lab runs throughput, latency and queue scenarios: leave out {}",
                other.name
            );
        }
    }
    let perf = if in_lab { Some(perf_path(&cli)?) } else { None };
    let bins = binaries(&cli)?;
    for &kind in &kinds {
        let path = bins.path(kind)?;
        if !path.is_file() {
            bail!(
                "{} executable {} does not exist",
                kind.label(),
                path.display()
            );
        }
    }

    let nofile = report::machine::raise_nofile_limit();
    let idle_max = selected
        .iter()
        .filter_map(|s| match s.kind {
            scenarios::Kind::Connections { idle, .. } => Some(idle),
            scenarios::Kind::Latency { idle, .. } if idle > 0 => Some(idle),
            scenarios::Kind::Flood { silent, .. } => Some(silent),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    if idle_max > 0 && (nofile as usize) < idle_max + 256 {
        bail!(
            "the connections scenario needs {} open files and the hard limit is {nofile}: raise it (ulimit -Hn) \
             or leave the scenario out",
            idle_max + 256
        );
    }
    let blipmqctl = if cli.stats_watch_overhead {
        Some(blipmqctl_path(&cli, &bins)?)
    } else {
        None
    };
    brokers::install_signal_handler()?;

    let log_dir = created_dir(cli.out.join("logs"))?;
    let workers = cli
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let settings = Settings {
        workers,
        log_dir: log_dir.clone(),
        max_clients: idle_max + 100,
        // On tmpfs, for blipmqd's in-broker latency of each run.
        stats_file: Some(stats_segment_path()),
        stats_watcher: None,
        lab: None,
        memif: None,
        count_syscalls: None,
        nats_clients,
        realtime: cli.realtime,
        tls: if cli.tls {
            Some(std::sync::Arc::new(tls::BenchTls::create(&log_dir)?))
        } else {
            None
        },
    };
    let tls_note = if cli.tls {
        format!(
            "; TLS: --tls-cert/--tls-key, the bench's certificate ({})",
            tls::SUITE
        )
    } else {
        String::new()
    };
    // The veth lab, after the signal handler (which deletes it too); this
    // thread then opens every client socket from the client namespace.
    let mut veth_lab = if in_lab {
        let veth_lab = lab::VethLab::create()?;
        veth_lab.enter_client()?;
        Some(veth_lab)
    } else {
        None
    };
    let stats_dir = match blipmqctl {
        Some(_) => Some(stats_dir()?),
        None => None,
    };

    let machine = report::machine::Machine::describe();
    let mut broker_infos: Vec<BrokerInfo> = kinds
        .iter()
        .map(|&kind| BrokerInfo {
            broker: kind,
            label: kind.label().into(),
            path: bins.path(kind).map(|p| p.display().to_string()).unwrap_or_default(),
            version: bins.version(kind),
            modified: bins
                .path(kind)
                .ok()
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| report::markdown::utc(d.as_secs()))
                .unwrap_or_default(),
            config: match kind {
                BrokerKind::Blipmq => format!(
                    "--workers {workers}; max_pending_bytes = {} (1 GiB), drain_timeout = 1s, {}else defaults{}{}{}",
                    brokers::MAX_PENDING_BYTES,
                    "stats_file on tmpfs (its in-broker latency), ",
                    if nats_clients {
                        "; the clients speak NATS to --nats-listen 127.0.0.1:0"
                    } else {
                        ""
                    },
                    tls_note,
                    if in_lab {
                        format!(
                            "; backends: {} (afpacket: --backend afpacket --interface IF --ip 198.18.X.2/24 \
                             --listen 0.0.0.0:{port}; dpdk: --backend dpdk --ip 198.18.X.2/24 --listen 0.0.0.0:{port} \
                             -- --no-pci --no-huge -m 512 --vdev=net_af_packet0,iface=IF,qpairs=WORKERS; \
                             kernel: --listen 198.18.X.2:0)",
                            lab_backends.iter().map(|b| b.name()).collect::<Vec<_>>().join(", "),
                            port = lab::LAB_PORT
                        )
                    } else {
                        String::new()
                    }
                ),
                BrokerKind::Nats => format!(
                    "max_pending: 1 GiB, write_deadline: 30s, else defaults (GOMAXPROCS = cores){}{}",
                    if cli.tls {
                        format!("; tls {{ cert_file, key_file, timeout: 5 }}, the bench's certificate ({})", tls::SUITE)
                    } else {
                        String::new()
                    },
                    if in_lab {
                        format!("; listen: 198.18.X.2:{} (a kernel address on the lab's broker end)", lab::LAB_PORT)
                    } else {
                        String::new()
                    }
                ),
                BrokerKind::Redis => format!(
                    "no persistence, client-output-buffer-limit pubsub 0 0 0, maxclients {}, else defaults",
                    settings.max_clients
                ),
            },
        })
        .collect();
    if let Some(priority) = cli.realtime {
        for info in &mut broker_infos {
            info.config += &match info.broker {
                BrokerKind::Blipmq => {
                    format!("; server.worker_priority = {priority} (SCHED_FIFO workers)")
                }
                _ => format!("; run under chrt -f {priority} (SCHED_FIFO, every thread)"),
            };
        }
    }

    // The plan.
    let runs: Vec<PlannedRun> = match (&blipmqctl, &stats_dir) {
        _ if dpdk_transport => dpdk_transport_plan(&selected, &settings)?,
        _ if in_lab => match (&veth_lab, &perf) {
            (Some(veth_lab), Some(perf)) => {
                veth_plan(&selected, &lab_backends, &kinds, &settings, veth_lab, perf)?
            }
            _ => unreachable!("the lab and perf exist in the lab modes"),
        },
        (Some(blipmqctl), Some(stats_dir)) => stats_watch_plan(
            &selected,
            cli.repeat as usize,
            &settings,
            blipmqctl,
            stats_dir,
        )?,
        _ => scenarios::interleave(&selected, &kinds, timing.latency_trials)
            .into_iter()
            .map(|slot| PlannedRun {
                scenario: selected[slot.scenario].clone(),
                kind: slot.broker,
                trial: slot.trial,
                settings: settings.clone(),
                arm: None,
            })
            .collect(),
    };
    let estimate: Duration = runs.iter().map(|r| r.scenario.estimate(&timing)).sum();
    eprintln!(
        "blipmq-bench: {} runs ({} scenarios × {}), about {:.0} s; results in {}",
        runs.len(),
        selected.len(),
        kinds
            .iter()
            .map(|k| k.label())
            .collect::<Vec<_>>()
            .join(", "),
        estimate.as_secs_f64(),
        cli.out.display()
    );

    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    let overall = multi.add(ProgressBar::new(runs.len() as u64));
    overall.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:32.cyan/blue} {pos}/{len} runs, ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let current = multi.add(ProgressBar::new_spinner());
    current.set_style(
        ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
            .expect("valid template"),
    );
    current.enable_steady_tick(Duration::from_millis(120));
    let say = |line: String| {
        if multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = multi.println(line);
        }
    };

    let mut results = Vec::new();
    for planned in &runs {
        let arm_label = planned.arm.as_ref().map_or(String::new(), |arm| {
            format!(
                " (round {}, {} watcher)",
                arm.round,
                if arm.watcher { "with" } else { "without" }
            )
        });
        let trial_label = planned.trial.map_or(String::new(), |trial| {
            format!(" (trial {trial}/{})", timing.latency_trials)
        });
        current.set_prefix(format!(
            "{} on {}{arm_label}{trial_label}",
            planned.scenario.name,
            planned.kind.label()
        ));
        current.set_message("");
        if let (Some(veth_lab), Some(target)) = (veth_lab.as_mut(), &planned.settings.lab) {
            veth_lab.set_kernel_address(!target.backend.is_userspace())?;
            veth_lab.set_client_offloads(target.backend != lab::Backend::Dpdk)?;
        }
        let mut result = scenarios::run(
            &planned.scenario,
            planned.kind,
            planned.trial,
            &bins,
            &planned.settings,
            &timing,
            &|msg| current.set_message(msg),
        );
        if let Some(target) = &planned.settings.lab {
            result.backend = Some(target.backend);
            result.syscall_pass = planned.settings.count_syscalls.is_some();
        }
        if dpdk_transport {
            result.backend = Some(match planned.settings.memif {
                Some(_) => lab::Backend::Dpdk,
                None => lab::Backend::Kernel,
            });
        }
        if let Some(arm) = &planned.arm {
            // Keep the watcher figures the run filled in.
            let figures = result.stats_watch.get_or_insert_with(Default::default);
            figures.round = arm.round;
            figures.watcher = arm.watcher;
        }
        if let Some(stats_file) = &planned.settings.stats_file {
            let _ = std::fs::remove_file(stats_file);
        }
        say(format!("{}{arm_label}", result.summary()));
        results.push(result);
        overall.inc(1);
    }
    if let Some(dir) = &stats_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    current.finish_and_clear();
    overall.finish_and_clear();

    let report = Report {
        tool: format!("blipmq-bench {}", env!("CARGO_PKG_VERSION")),
        mode: match (cli.quick, cli.stats_watch_overhead) {
            (quick, _) if dpdk_transport => format!(
                "DPDK load generator over net_memif vs kernel clients over 127.0.0.1 ({} phases)",
                if quick { "quick" } else { "full" }
            ),
            (quick, _) if in_lab => format!(
                "{} through one veth pair ({} phases)",
                match (cli.veth_compare, kinds.contains(&BrokerKind::Nats)) {
                    (true, true) =>
                        "kernel vs AF_PACKET vs DPDK backend vs nats-server".to_string(),
                    (true, false) => "kernel vs AF_PACKET vs DPDK backend".to_string(),
                    (false, true) => format!("{} backend vs nats-server", cli.backend.name()),
                    (false, false) => format!("{} backend", cli.backend.name()),
                },
                if quick { "quick" } else { "full" }
            ),
            (quick, false) if nats_clients => format!(
                "NATS clients{}: BlipMQ's NATS listener vs nats-server, the same client code ({} phases)",
                if cli.tls { " over TLS" } else { "" },
                if quick { "quick" } else { "full" }
            ),
            (quick, false) if cli.tls => format!(
                "over TLS: BlipMQ's protocol vs NATS's, the same TLS client code ({} phases)",
                if quick { "quick" } else { "full" }
            ),
            (false, false) => "full".into(),
            (true, false) => "quick".into(),
            (false, true) => "stats-watch overhead (full phases)".into(),
            (true, true) => "stats-watch overhead (quick phases)".into(),
        },
        started_unix,
        duration_secs: started.elapsed().as_secs_f64(),
        machine,
        brokers: broker_infos,
        settings: serde_json::json!({
            "timing": timing,
            "blipmqd_workers": workers,
            "flow_control": {
                "write_target_bytes": run::flow::WRITE_TARGET,
                "max_batch_msgs": run::flow::MAX_BATCH,
                "window_batches": run::flow::WINDOW_BATCHES,
                "stall_timeout_secs": run::flow::STALL_TIMEOUT.as_secs_f64(),
            },
            "per_connection_output_limit_bytes": brokers::MAX_PENDING_BYTES,
            "nofile_limit": nofile,
            "backends": lab_backends,
            "syscall_counter": perf.as_ref().map(|p| p.display().to_string()),
        }),
        stats_watch_overhead: blipmqctl.as_ref().map(|path| {
            report::stats_watch::summarize(
                &selected,
                &results,
                cli.repeat as usize,
                path.display().to_string(),
            )
        }),
        latency_trials: if comparison {
            report::trials::summarize(&selected, &kinds, &results)
        } else {
            Vec::new()
        },
        leaf_trials: if comparison {
            report::leaf::summarize(&selected, &kinds, &results)
        } else {
            Vec::new()
        },
        scenarios: selected,
        results,
        veth_lab: veth_lab.as_ref().map(|l| l.describe()),
        dpdk_transport: dpdk_transport.then(|| report::dpdk::describe(workers)),
    };
    let markdown = report::markdown::render(&report);
    let md_path = cli.out.join("results.md");
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    let json_path = cli.out.join("results.json");
    report::json::write(&report, &json_path)?;
    let mut written = vec![md_path, json_path];
    // The plots compare brokers (or backends, or transports), one run each;
    // the overhead mode has neither.
    let plots = if report.stats_watch_overhead.is_some() {
        Vec::new()
    } else if report.dpdk_transport.is_some() {
        vec![("throughput.svg", report::dpdk::svg(&report))]
    } else if report.veth_lab.is_some() {
        vec![("throughput.svg", report::veth::svg(&report))]
    } else {
        vec![
            ("throughput.svg", report::svg::throughput(&report, false)),
            (
                "throughput-mbps.svg",
                report::svg::throughput(&report, true),
            ),
            ("latency.svg", report::svg::latency(&report)),
        ]
    };
    for (name, svg) in plots {
        if let Some(svg) = svg {
            let path = cli.out.join(name);
            std::fs::write(&path, svg)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
    }
    println!("{markdown}");
    eprintln!(
        "blipmq-bench: done in {:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let failed = report
        .results
        .iter()
        .filter(|r| r.status != report::Status::Ok)
        .count();
    if failed > 0 {
        eprintln!(
            "blipmq-bench: {failed} run(s) failed or lost, reordered or duplicated messages; see Problems in results.md"
        );
    }
    Ok(0)
}
