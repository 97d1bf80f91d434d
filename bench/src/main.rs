//! `blipmq-bench`: BlipMQ vs nats-server vs redis-server, side by side.
//!
//! Starts each broker itself on 127.0.0.1 (a fresh instance per scenario),
//! runs the same scenarios against each with the same client strategy, and
//! writes a Markdown table, a JSON file with every figure and SVG plots.
//! See bench/README.md.

mod brokers;
mod proto;
mod report;
mod run;
mod scenarios;

use std::path::PathBuf;
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
        Scenario names: see --list. Groups: throughput, latency, connections, queue; \
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

    /// Short phases: the whole set in under 2 minutes (figures are noisier)
    #[arg(long)]
    quick: bool,

    /// List the scenarios and exit
    #[arg(long)]
    list: bool,

    /// Measured seconds of each throughput run (overrides the preset)
    #[arg(long, value_name = "SECS")]
    measure_secs: Option<f64>,

    /// blipmqd executable [default: next to this binary]
    #[arg(long, value_name = "PATH")]
    blipmqd: Option<PathBuf>,

    /// nats-server executable [default: from PATH]
    #[arg(long, value_name = "PATH")]
    nats_server: Option<PathBuf>,

    /// redis-server executable [default: from PATH]
    #[arg(long, value_name = "PATH")]
    redis_server: Option<PathBuf>,
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
    timing
}

fn list(cli: &Cli) {
    let timing = timing(cli);
    let mut total = Duration::ZERO;
    for group in Group::ALL {
        println!("{}:", group.name());
        for scenario in scenarios::all().into_iter().filter(|s| s.group == group) {
            let brokers = BrokerKind::ALL
                .iter()
                .filter(|b| scenario.applies_to(**b))
                .count() as u32;
            total += scenario.estimate(&timing) * brokers;
            println!("  {:<16} {}", scenario.name, scenario.description);
        }
    }
    println!(
        "\nAbout {:.0} s for all of them against all three brokers{}.",
        total.as_secs_f64(),
        if cli.quick {
            " with --quick"
        } else {
            " (--quick: under 2 minutes)"
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

fn run(cli: Cli) -> Result<i32> {
    if cli.list {
        list(&cli);
        return Ok(0);
    }
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let timing = timing(&cli);
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
    let selected = scenarios::select(&cli.scenarios)?;
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
    brokers::install_signal_handler()?;

    let log_dir = cli.out.join("logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let workers = cli
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let settings = Settings {
        workers,
        log_dir: log_dir.clone(),
        max_clients: idle_max + 100,
    };

    let machine = report::machine::Machine::describe();
    let broker_infos: Vec<BrokerInfo> = kinds
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
                    "--workers {workers}; max_pending_bytes = {} (1 GiB), drain_timeout = 1s, else defaults",
                    brokers::MAX_PENDING_BYTES
                ),
                BrokerKind::Nats => "max_pending: 1 GiB, write_deadline: 30s, else defaults (GOMAXPROCS = cores)".into(),
                BrokerKind::Redis => format!(
                    "no persistence, client-output-buffer-limit pubsub 0 0 0, maxclients {}, else defaults",
                    settings.max_clients
                ),
            },
        })
        .collect();

    // The plan.
    let runs: Vec<(scenarios::Scenario, BrokerKind)> = selected
        .iter()
        .flat_map(|s| {
            kinds
                .iter()
                .filter(|k| s.applies_to(**k))
                .map(|k| (s.clone(), *k))
        })
        .collect();
    let estimate: Duration = runs.iter().map(|(s, _)| s.estimate(&timing)).sum();
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
    for (scenario, kind) in &runs {
        current.set_prefix(format!("{} on {}", scenario.name, kind.label()));
        current.set_message("");
        let result = scenarios::run(scenario, *kind, &bins, &settings, &timing, &|msg| {
            current.set_message(msg)
        });
        say(result.summary());
        results.push(result);
        overall.inc(1);
    }
    current.finish_and_clear();
    overall.finish_and_clear();

    let report = Report {
        tool: format!("blipmq-bench {}", env!("CARGO_PKG_VERSION")),
        mode: if cli.quick {
            "quick".into()
        } else {
            "full".into()
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
        }),
        scenarios: selected,
        results,
    };
    let markdown = report::markdown::render(&report);
    let md_path = cli.out.join("results.md");
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    let json_path = cli.out.join("results.json");
    report::json::write(&report, &json_path)?;
    let mut written = vec![md_path, json_path];
    for (name, svg) in [
        ("throughput.svg", report::svg::throughput(&report, false)),
        (
            "throughput-mbps.svg",
            report::svg::throughput(&report, true),
        ),
        ("latency.svg", report::svg::latency(&report)),
    ] {
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
