//! The DPDK load generator: the bench's publishers and subscribers over
//! smoltcp on a DPDK port (`net_memif`), against blipmqd's dpdk backend on
//! the other end of the memif pair. No kernel is on the path, as with a
//! real NIC: what it measures is the broker's user-space dataplane.
//!
//! The generator runs in a child process (`blipmq-bench --dpdk-loadgen
//! JOB`): the EAL initialises once per process and pins it, and the
//! harness that starts and stops brokers stays an ordinary process. The
//! child runs every connection from one thread pinned to its own core, in
//! one poll loop (its stack is smoltcp, as the broker's), measures the run
//! as [`super::flow`] does (the same messages, checks, flow control and
//! phases) and prints a [`LoadgenReport`] as JSON.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::flow::{FlowOutcome, FlowSpec, Pace};
use crate::brokers::Broker;

/// Where the broker and the generator meet: one memif pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemifTarget {
    /// The memif control socket (blipmqd is the server, the generator the
    /// client).
    pub socket: String,
    pub broker_ip: Ipv4Addr,
    pub loadgen_ip: Ipv4Addr,
    pub prefix: u8,
    pub port: u16,
    /// The generator's core; the broker gets the others.
    pub loadgen_cpu: usize,
}

impl MemifTarget {
    /// A pair for this process's runs: blipmqd on 198.18.0.1, the
    /// generator on 198.18.0.2 pinned to CPU 0.
    pub fn new() -> MemifTarget {
        MemifTarget {
            socket: format!("/run/blipmq-bench-{}.memif", std::process::id()),
            broker_ip: Ipv4Addr::new(198, 18, 0, 1),
            loadgen_ip: Ipv4Addr::new(198, 18, 0, 2),
            prefix: 24,
            port: crate::lab::LAB_PORT,
            loadgen_cpu: 0,
        }
    }

    pub fn broker_cidr(&self) -> String {
        format!("{}/{}", self.broker_ip, self.prefix)
    }

    /// Every CPU this process may use but the generator's (`taskset -c`).
    pub fn broker_cpus(&self) -> String {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let others: Vec<String> = (0..cpus)
            .filter(|&cpu| cpu != self.loadgen_cpu)
            .map(|cpu| cpu.to_string())
            .collect();
        if others.is_empty() {
            self.loadgen_cpu.to_string()
        } else {
            others.join(",")
        }
    }

    /// The broker's EAL arguments for its end of the pair.
    pub fn broker_eal_args(&self) -> Vec<String> {
        memif_eal_args("server", &self.socket, "broker")
    }
}

impl Default for MemifTarget {
    fn default() -> Self {
        MemifTarget::new()
    }
}

/// A run for the child: the flow (throughput only) and the pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadgenJob {
    pub pubs: usize,
    pub subs: usize,
    pub payload: usize,
    pub queue: bool,
    pub warmup_ms: u64,
    pub measure_ms: u64,
    pub target: MemifTarget,
    pub broker_pid: u32,
}

/// What the child observed: [`FlowOutcome`] without latency (throughput runs
/// only), plus the generator's own counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadgenReport {
    pub sent: Vec<u64>,
    pub received: Vec<Vec<u64>>,
    pub gaps: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub errors: Vec<String>,
    pub complete: bool,
    pub window_secs: f64,
    pub delivered: u64,
    pub broker_cpu: f64,
    pub harness_cpu: f64,
    pub other_cpu: f64,
    pub steal: f64,
    pub publisher_waited: Vec<f64>,
    /// Turns of the generator's poll loop in the measured window, and those
    /// that moved no byte: whether the generator, not the broker, was the
    /// limit.
    pub loop_turns: u64,
    pub idle_turns: u64,
}

impl LoadgenReport {
    fn into_outcome(self, broker_failed: bool) -> FlowOutcome {
        FlowOutcome {
            sent: self.sent,
            received: self.received,
            gaps: self.gaps,
            reordered: self.reordered,
            duplicates: self.duplicates,
            malformed: self.malformed,
            errors: self.errors,
            complete: self.complete,
            window: Duration::from_secs_f64(self.window_secs.max(0.0)),
            delivered: self.delivered,
            broker_cpu: self.broker_cpu,
            harness_cpu: self.harness_cpu,
            other_cpu: self.other_cpu,
            steal: self.steal,
            latency: None,
            pacer_lag: None,
            receiver_mismatches: 0,
            broker_failed,
            publisher_waited: self.publisher_waited,
            loadgen_busy: (self.loop_turns > 0)
                .then(|| 1.0 - self.idle_turns as f64 / self.loop_turns as f64),
        }
    }
}

/// EAL arguments of one end of the memif pair: no PCI, no hugepages (memif
/// shares its own memory), a file prefix of its own.
fn memif_eal_args(role: &str, socket: &str, who: &str) -> Vec<String> {
    vec![
        "--no-pci".into(),
        "--no-huge".into(),
        "-m".into(),
        "512".into(),
        "--file-prefix".into(),
        format!("bqbench-{who}-{}", std::process::id()),
        format!("--vdev=net_memif0,role={role},socket={socket}"),
    ]
}

/// Longest a child may take beyond its run's phases (EAL start, connects,
/// the drain).
const CHILD_SLACK: Duration = Duration::from_secs(60);

/// Runs `spec` against `broker` (blipmqd on the server end of `target`)
/// with the generator in a child process.
pub fn run(
    broker: &mut Broker,
    spec: &FlowSpec,
    target: &MemifTarget,
    on_progress: &dyn Fn(String),
) -> Result<FlowOutcome> {
    if spec.pace != Pace::Max {
        bail!("the DPDK load generator runs throughput scenarios only");
    }
    let job = LoadgenJob {
        pubs: spec.pubs,
        subs: spec.subs,
        payload: spec.payload,
        queue: spec.queue,
        warmup_ms: spec.warmup.as_millis() as u64,
        measure_ms: spec.measure.as_millis() as u64,
        target: target.clone(),
        broker_pid: broker.pid,
    };
    let exe = std::env::current_exe().context("cannot find this executable")?;
    on_progress("DPDK load generator running".into());
    let mut child = crate::brokers::spawn_registered(
        Command::new(exe)
            .arg("--dpdk-loadgen")
            .arg(serde_json::to_string(&job)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let deadline = std::time::Instant::now() + spec.warmup + spec.measure + CHILD_SLACK;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the DPDK load generator did not finish within {CHILD_SLACK:?} of its run");
        }
        if let Err(error) = broker.check_alive() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error.context("the broker died under the DPDK load generator"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: LoadgenReport = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| {
            anyhow!(
                "the DPDK load generator failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        })?;
    let broker_failed = broker.check_alive().is_err();
    Ok(report.into_outcome(broker_failed))
}

/// The child's entry point: runs `job_json`, prints the report, returns the
/// exit code.
pub fn child_main(job_json: &str) -> i32 {
    let job: LoadgenJob = match serde_json::from_str(job_json) {
        Ok(job) => job,
        Err(error) => {
            eprintln!("blipmq-bench --dpdk-loadgen: bad job: {error}");
            return 2;
        }
    };
    match generator::run(&job) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).expect("serialisable"));
            0
        }
        Err(error) => {
            eprintln!("blipmq-bench --dpdk-loadgen: {error:#}");
            1
        }
    }
}

#[cfg(feature = "dpdk")]
mod generator;

#[cfg(not(feature = "dpdk"))]
mod generator {
    pub fn run(_: &super::LoadgenJob) -> anyhow::Result<super::LoadgenReport> {
        anyhow::bail!(
            "this blipmq-bench was built without DPDK: cargo build --release \
             --features blipmq-dataplane/dpdk,blipmq-bench/dpdk"
        )
    }
}
