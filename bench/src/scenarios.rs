//! The named presets, and running one of them against one broker.

use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::brokers::blipmq::StatsWatcher;
use crate::brokers::leaf::LeafCluster;
use crate::brokers::{Binaries, Broker, BrokerKind, Settings};
use crate::proto::blipmq::Blipmq;
use crate::proto::nats::Nats;
use crate::proto::resp::Resp;
use crate::report::{ConnFigures, FloodFigures, Percentiles, RunResult};
use crate::run::flood;
use crate::run::flow::{self, FlowOutcome, FlowSpec, Pace, LOAD_SUBJECT, SUBJECT};
use crate::run::idle::{self, IdleConnections};

/// Payload sizes of the throughput scenarios.
pub const PAYLOADS: [usize; 4] = [16, 128, 1024, 16 * 1024];
/// (publishers, subscribers) of the throughput scenarios.
pub const TOPOLOGIES: [(usize, usize); 4] = [(1, 1), (1, 4), (1, 32), (4, 4)];
/// Paced rates of the 1 → 1 latency scenarios, messages per second.
pub const RATES: [u64; 4] = [10_000, 50_000, 100_000, 200_000];
/// Rate of the fan-out and under-load latency scenarios.
pub const LATENCY_RATE: u64 = 50_000;
/// Subscribers of the fan-out latency scenario: more than blipmqd's
/// workers, so that deliveries cross between them.
pub const LATENCY_FANOUT: usize = 4;
/// The throughput flow beside the latency flow of the under-load scenario:
/// 800k deliveries/s, about half of what nats-server delivers at most in
/// 4x4 with 128 B here, so that both brokers carry the same load (a flow
/// as fast as each goes loaded BlipMQ with 2.8× more).
pub const LOAD: Load = Load {
    pubs: 4,
    subs: 4,
    payload: SMALL_PAYLOAD,
    rate_per_pub: 50_000,
};
/// Payload of the latency scenarios: exactly the header with its timestamp.
pub const LATENCY_PAYLOAD: usize = 16;
/// Idle subscriber connections of the connections scenario.
pub const IDLE_CONNECTIONS: usize = 10_000;
/// Connections of the flood scenario that never send CONNECT.
pub const SILENT_CONNECTIONS: usize = 10_000;
/// BlipMQ's `auth.timeout` (its default), in which it must close them.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The measured window of the flood scenario: the burst of connections
/// and their closing fill it.
const FLOOD_WINDOW: Duration = Duration::from_secs(3);
/// Payload of the connections and queue-group scenarios' throughput.
pub const SMALL_PAYLOAD: usize = 128;
/// Members of the queue group.
pub const QUEUE_MEMBERS: usize = 8;
/// Subscribers on leaf B of the leaf-node fan-out, and (second variant)
/// on leaf A beside the publisher.
pub const LEAF_SUBS_B: usize = 4;
pub const LEAF_SUBS_A: [usize; 2] = [0, 1];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Throughput,
    Latency,
    Connections,
    Queue,
    /// Fan-out across two leaf nodes of a NATS hub.
    #[serde(rename = "leaf-fanout")]
    LeafFanout,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Throughput,
        Group::Latency,
        Group::Connections,
        Group::Queue,
        Group::LeafFanout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Throughput => "throughput",
            Group::Latency => "latency",
            Group::Connections => "connections",
            Group::Queue => "queue",
            Group::LeafFanout => "leaf-fanout",
        }
    }

    /// Its scenarios run as interleaved trials per broker, reported as
    /// medians (see `report::trials` and `report::leaf`).
    pub fn has_trials(self) -> bool {
        matches!(self, Group::Latency | Group::LeafFanout)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    Throughput {
        pubs: usize,
        subs: usize,
        payload: usize,
        queue: bool,
    },
    /// One publisher paced at `rate` → `subs` subscribers; with `load`, a
    /// throughput flow runs beside it on its own subject.
    Latency {
        rate: u64,
        payload: usize,
        subs: usize,
        load: Option<Load>,
        /// Idle subscriber connections held open through the trial (the
        /// broker's per-connection timer work beside the flow).
        idle: usize,
    },
    Connections {
        idle: usize,
        payload: usize,
    },
    /// 1 → 1 throughput without, then with, a burst of `silent`
    /// connections that never send CONNECT.
    Flood {
        silent: usize,
        payload: usize,
    },
    /// One publisher on leaf A of a NATS hub → `subs_a` subscribers on
    /// leaf A and `subs_b` on leaf B, unpaced; leaves of the broker under
    /// test, the hub nats-server.
    #[serde(rename = "leaf-fanout")]
    LeafFanout {
        payload: usize,
        subs_a: usize,
        subs_b: usize,
    },
}

/// A throughput flow, each publisher paced at `rate_per_pub`, on its own
/// subject beside a latency flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Load {
    pub pubs: usize,
    pub subs: usize,
    pub payload: usize,
    pub rate_per_pub: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub group: Group,
    pub description: String,
    #[serde(flatten)]
    pub kind: Kind,
}

impl Scenario {
    pub fn applies_to(&self, broker: BrokerKind) -> bool {
        match self.kind {
            // Redis has no handshake to time out.
            Kind::Flood { .. } => broker != BrokerKind::Redis,
            // A leaf node of a NATS hub.
            Kind::LeafFanout { .. } => broker != BrokerKind::Redis,
            _ => self.group != Group::Queue || broker.has_queue_groups(),
        }
    }

    /// Runs of this scenario per broker: latency and leaf-node scenarios
    /// run as trials.
    pub fn runs(&self, timing: &Timing) -> u32 {
        if self.group.has_trials() {
            timing.latency_trials
        } else {
            1
        }
    }

    /// About how long one run takes, for `--list` and the plan.
    pub fn estimate(&self, timing: &Timing) -> Duration {
        let setup = Duration::from_millis(400);
        match self.kind {
            Kind::Throughput { .. } => setup + timing.warmup + timing.measure,
            Kind::Latency { load, idle, .. } => {
                // The load flow's eight connections, and its drain.
                let load_extra = Duration::from_millis(if load.is_some() { 300 } else { 0 });
                let idle_extra = Duration::from_millis(if idle > 0 { 3000 } else { 0 });
                setup + load_extra + idle_extra + timing.latency_warmup + timing.latency_measure
            }
            Kind::Connections { .. } => {
                setup + Duration::from_secs(3) + timing.warmup + timing.measure
            }
            Kind::Flood { .. } => {
                setup + 2 * timing.warmup + timing.measure.min(FLOOD_WINDOW) * 2 + AUTH_TIMEOUT
            }
            // Three processes, the leaves joining and the interest crossing.
            Kind::LeafFanout { .. } => 4 * setup + timing.warmup + timing.measure,
        }
    }
}

/// "16B", "1KiB", "16KiB".
pub fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes & 1023 == 0 {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

fn rate_label(rate: u64) -> String {
    format!("{}k", rate / 1000)
}

/// Every preset, in report order.
pub fn all() -> Vec<Scenario> {
    let mut list = Vec::new();
    for (pubs, subs) in TOPOLOGIES {
        for payload in PAYLOADS {
            let fanout = if pubs > 1 {
                format!("{pubs} publishers → {subs} subscribers, each subscriber gets every publisher's messages")
            } else {
                format!("{pubs} publisher → {subs} subscriber(s)")
            };
            list.push(Scenario {
                name: format!("tp-{pubs}x{subs}-{}", size_label(payload)),
                group: Group::Throughput,
                description: format!("throughput, {fanout}, {} payloads", size_label(payload)),
                kind: Kind::Throughput {
                    pubs,
                    subs,
                    payload,
                    queue: false,
                },
            });
        }
    }
    for rate in RATES {
        list.push(Scenario {
            name: format!("lat-{}", rate_label(rate)),
            group: Group::Latency,
            description: format!(
                "latency, 1 publisher → 1 subscriber paced at {rate} msg/s, {LATENCY_PAYLOAD} B payloads with a timestamp"
            ),
            kind: Kind::Latency {
                rate,
                payload: LATENCY_PAYLOAD,
                subs: 1,
                load: None,
                idle: 0,
            },
        });
    }
    list.push(Scenario {
        name: format!("lat-1x{LATENCY_FANOUT}-{}", rate_label(LATENCY_RATE)),
        group: Group::Latency,
        description: format!(
            "latency, 1 publisher paced at {LATENCY_RATE} msg/s → {LATENCY_FANOUT} subscribers of the same subject \
             (spread over blipmqd's workers by SO_REUSEPORT), over all deliveries"
        ),
        kind: Kind::Latency {
            rate: LATENCY_RATE,
            payload: LATENCY_PAYLOAD,
            subs: LATENCY_FANOUT,
            load: None,
            idle: 0,
        },
    });
    list.push(Scenario {
        name: format!("lat-load-{}", rate_label(LATENCY_RATE)),
        group: Group::Latency,
        description: format!(
            "latency under load, 1 → 1 paced at {LATENCY_RATE} msg/s while a {}x{} flow \
             ({} payloads, each publisher at {} msg/s) runs on its own subject",
            LOAD.pubs,
            LOAD.subs,
            size_label(LOAD.payload),
            LOAD.rate_per_pub
        ),
        kind: Kind::Latency {
            rate: LATENCY_RATE,
            payload: LATENCY_PAYLOAD,
            subs: 1,
            load: Some(LOAD),
            idle: 0,
        },
    });
    list.push(Scenario {
        name: format!("lat-idle-{}", rate_label(LATENCY_RATE)),
        group: Group::Latency,
        description: format!(
            "latency beside {IDLE_CONNECTIONS} idle subscriber connections, 1 → 1 paced at {LATENCY_RATE} msg/s: \
             the broker's per-connection timer work (pings, buffer trimming) in the tail"
        ),
        kind: Kind::Latency {
            rate: LATENCY_RATE,
            payload: LATENCY_PAYLOAD,
            subs: 1,
            load: None,
            idle: IDLE_CONNECTIONS,
        },
    });
    list.push(Scenario {
        name: "conn-10k".into(),
        group: Group::Connections,
        description: format!(
            "{IDLE_CONNECTIONS} idle subscriber connections held open, then 1 → 1 throughput with {} payloads; broker RSS",
            size_label(SMALL_PAYLOAD)
        ),
        kind: Kind::Connections {
            idle: IDLE_CONNECTIONS,
            payload: SMALL_PAYLOAD,
        },
    });
    list.push(Scenario {
        name: "flood-10k".into(),
        group: Group::Connections,
        description: format!(
            "1 → 1 throughput with {} payloads, then again while {SILENT_CONNECTIONS} connections open \
             and never send CONNECT; how many the broker closes within auth.timeout + 1 s",
            size_label(SMALL_PAYLOAD)
        ),
        kind: Kind::Flood {
            silent: SILENT_CONNECTIONS,
            payload: SMALL_PAYLOAD,
        },
    });
    list.push(Scenario {
        name: format!("queue-1x{QUEUE_MEMBERS}"),
        group: Group::Queue,
        description: format!(
            "queue group: 1 publisher → {QUEUE_MEMBERS} members of one group, {} payloads (BlipMQ and NATS)",
            size_label(SMALL_PAYLOAD)
        ),
        kind: Kind::Throughput {
            pubs: 1,
            subs: QUEUE_MEMBERS,
            payload: SMALL_PAYLOAD,
            queue: true,
        },
    });
    for subs_a in LEAF_SUBS_A {
        let (name, placement) = if subs_a == 0 {
            (
                format!("leaf-1x{LEAF_SUBS_B}-{}", size_label(SMALL_PAYLOAD)),
                format!("{LEAF_SUBS_B} subscribers on leaf B"),
            )
        } else {
            (
                format!(
                    "leaf-1x{subs_a}+{LEAF_SUBS_B}-{}",
                    size_label(SMALL_PAYLOAD)
                ),
                format!("{subs_a} subscriber on leaf A and {LEAF_SUBS_B} on leaf B"),
            )
        };
        list.push(Scenario {
            name,
            group: Group::LeafFanout,
            description: format!(
                "leaf nodes: a nats-server hub and two leaves of the broker under test; 1 publisher on \
                 leaf A → {placement}, {} payloads, unpaced; delivered msg/s and the hub link's bytes \
                 per delivered message",
                size_label(SMALL_PAYLOAD)
            ),
            kind: Kind::LeafFanout {
                payload: SMALL_PAYLOAD,
                subs_a,
                subs_b: LEAF_SUBS_B,
            },
        });
    }
    list
}

/// Scenarios named by `wanted`: exact names (case-insensitive), group names,
/// a prefix ending in `*` (e.g. `tp-1x32-*`), or `all`. Empty means all.
pub fn select(wanted: &[String]) -> Result<Vec<Scenario>> {
    let every = all();
    if wanted.is_empty() {
        return Ok(every);
    }
    let mut chosen = vec![false; every.len()];
    for want in wanted
        .iter()
        .map(|w| w.trim().to_ascii_lowercase())
        .filter(|w| !w.is_empty())
    {
        let mut hit = false;
        for (i, scenario) in every.iter().enumerate() {
            let name = scenario.name.to_ascii_lowercase();
            let matched = want == "all"
                || want == name
                || want == scenario.group.name()
                || want
                    .strip_suffix('*')
                    .is_some_and(|prefix| name.starts_with(prefix));
            if matched {
                chosen[i] = true;
                hit = true;
            }
        }
        if !hit {
            bail!("unknown scenario {want:?}; see --list");
        }
    }
    Ok(every
        .into_iter()
        .zip(chosen)
        .filter(|(_, c)| *c)
        .map(|(s, _)| s)
        .collect())
}

/// How long each phase lasts, and how many trials a latency scenario runs.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    #[serde(with = "secs")]
    pub warmup: Duration,
    #[serde(with = "secs")]
    pub measure: Duration,
    #[serde(with = "secs")]
    pub latency_warmup: Duration,
    #[serde(with = "secs")]
    pub latency_measure: Duration,
    /// Runs of each latency scenario per broker, interleaved.
    pub latency_trials: u32,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Timing {
    pub fn full() -> Timing {
        Timing {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(6),
            // 6 latency scenarios × 3 brokers × 5 trials × (0.4 + 1 + 5) s:
            // about 10 minutes.
            latency_warmup: Duration::from_secs(1),
            latency_measure: Duration::from_secs(5),
            latency_trials: 5,
        }
    }

    pub fn quick() -> Timing {
        Timing {
            warmup: Duration::from_millis(250),
            measure: Duration::from_millis(750),
            latency_warmup: Duration::from_millis(250),
            latency_measure: Duration::from_millis(1000),
            latency_trials: 3,
        }
    }
}

fn run_flow(
    broker: &mut Broker,
    spec: &FlowSpec,
    settings: &Settings,
    on_progress: &dyn Fn(String),
) -> Result<FlowOutcome> {
    let mut outcomes = run_flows(broker, std::slice::from_ref(spec), settings, on_progress)?;
    Ok(outcomes.remove(0))
}

/// `specs` at once, each on its own subject; an outcome per flow.
fn run_flows(
    broker: &mut Broker,
    specs: &[FlowSpec],
    settings: &Settings,
    on_progress: &dyn Fn(String),
) -> Result<Vec<FlowOutcome>> {
    if let Some(target) = &settings.memif {
        let [spec] = specs else {
            bail!("the DPDK load generator runs one flow at a time");
        };
        return Ok(vec![crate::run::dpdk::run(
            broker,
            spec,
            target,
            on_progress,
        )?]);
    }
    let tls = settings.tls.as_deref();
    match broker.kind {
        BrokerKind::Blipmq if settings.nats_clients => {
            flow::run::<Nats>(broker, specs, tls, on_progress)
        }
        BrokerKind::Blipmq => flow::run::<Blipmq>(broker, specs, tls, on_progress),
        BrokerKind::Nats => flow::run::<Nats>(broker, specs, tls, on_progress),
        BrokerKind::Redis => flow::run::<Resp>(broker, specs, tls, on_progress),
    }
}

/// One run of the comparison: a scenario (an index into the selection) on
/// a broker, and which trial it is (latency scenarios).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub scenario: usize,
    pub broker: BrokerKind,
    pub trial: Option<u32>,
}

/// The comparison's order: scenarios in selection order, each on every
/// broker it applies to; a latency scenario as `trials` rounds of every
/// broker (BlipMQ, NATS, Redis, BlipMQ, NATS, ...), so that a spell of
/// noise on the machine falls on one trial of each broker rather than on
/// all trials of one.
pub fn interleave(selected: &[Scenario], kinds: &[BrokerKind], trials: u32) -> Vec<Slot> {
    let mut slots = Vec::new();
    for (index, scenario) in selected.iter().enumerate() {
        let rounds: Vec<Option<u32>> = if scenario.group.has_trials() {
            (1..=trials.max(1)).map(Some).collect()
        } else {
            vec![None]
        };
        for trial in rounds {
            for &broker in kinds.iter().filter(|&&k| scenario.applies_to(k)) {
                slots.push(Slot {
                    scenario: index,
                    broker,
                    trial,
                });
            }
        }
    }
    slots
}

fn open_idle(
    broker: &Broker,
    count: usize,
    settings: &Settings,
    on_progress: &dyn Fn(usize),
) -> Result<IdleConnections> {
    match broker.kind {
        BrokerKind::Blipmq if settings.nats_clients => {
            idle::open::<Nats>(broker.addr, count, on_progress)
        }
        BrokerKind::Blipmq => idle::open::<Blipmq>(broker.addr, count, on_progress),
        BrokerKind::Nats => idle::open::<Nats>(broker.addr, count, on_progress),
        BrokerKind::Redis => idle::open::<Resp>(broker.addr, count, on_progress),
    }
}

/// Starts a fresh broker, runs `scenario` on it (as trial `trial`, if
/// any), stops it. Never fails: a failure is a result with status `error`.
pub fn run(
    scenario: &Scenario,
    kind: BrokerKind,
    trial: Option<u32>,
    bins: &Binaries,
    settings: &Settings,
    timing: &Timing,
    on_progress: &dyn Fn(String),
) -> RunResult {
    let mut result = RunResult::new(scenario, kind);
    result.trial = trial;
    if let Err(error) = run_inner(
        scenario,
        kind,
        bins,
        settings,
        timing,
        on_progress,
        &mut result,
    ) {
        result.set_error(format!("{error:#}"));
    }
    result
}

/// What a run's broker logs and configs are named after: the scenario,
/// and its trial (each trial keeps its own).
fn log_tag(result: &RunResult) -> String {
    match result.trial {
        Some(trial) => format!("{}-trial{trial}", result.scenario),
        None => result.scenario.clone(),
    }
}

/// An unpaced flow on [`SUBJECT`] with the throughput phases.
fn throughput_spec(
    timing: &Timing,
    pubs: usize,
    subs: usize,
    payload: usize,
    queue: bool,
) -> FlowSpec {
    FlowSpec {
        subject: SUBJECT,
        pubs,
        subs,
        payload,
        queue,
        pace: Pace::Max,
        warmup: timing.warmup,
        measure: timing.measure,
    }
}

/// The leaf-node fan-out: a hub and two leaves of `kind`, the route from
/// leaf A to leaf B open, then one unpaced flow with the publisher on A;
/// the hub's link counters over the measured window.
fn run_leaf(
    kind: BrokerKind,
    bins: &Binaries,
    settings: &Settings,
    timing: &Timing,
    (payload, subs_a, subs_b): (usize, usize, usize),
    on_progress: &dyn Fn(String),
    result: &mut RunResult,
) -> Result<()> {
    on_progress("starting the hub and two leaves".into());
    let mut cluster = LeafCluster::start(kind, bins, settings, &log_tag(result), subs_a)?;
    on_progress("waiting for the interest to cross the hub".into());
    cluster.open_route(SUBJECT)?;
    let spec = throughput_spec(timing, 1, subs_a + subs_b, payload, false);
    // The same NATS client code for blipmqd's and nats-server's leaves.
    let outcome =
        flow::run::<Nats>(&mut cluster, std::slice::from_ref(&spec), None, on_progress)?.remove(0);
    result.set_flow(&spec, &outcome);
    let link = match cluster.window.take() {
        Some(Ok(window)) => Some(window),
        Some(Err(why)) => {
            result
                .notes
                .push(format!("the hub's link counters could not be read: {why}"));
            None
        }
        None => None,
    };
    result.set_leaf(subs_a, subs_b, link);
    on_progress("stopping the leaves and the hub".into());
    result.notes.extend(cluster.stop());
    Ok(())
}

fn run_inner(
    scenario: &Scenario,
    kind: BrokerKind,
    bins: &Binaries,
    settings: &Settings,
    timing: &Timing,
    on_progress: &dyn Fn(String),
    result: &mut RunResult,
) -> Result<()> {
    if let Kind::LeafFanout {
        payload,
        subs_a,
        subs_b,
    } = scenario.kind
    {
        return run_leaf(
            kind,
            bins,
            settings,
            timing,
            (payload, subs_a, subs_b),
            on_progress,
            result,
        );
    }
    on_progress("starting broker".into());
    let tag = log_tag(result);
    let mut broker = Broker::start(kind, bins, settings, &tag)?;
    if let Some(perf) = &settings.count_syscalls {
        broker.count_syscalls_with(perf);
    }
    result.rss_start_bytes = broker.rss_bytes().ok();
    // The operator's live view beside the broker, from before the warm-up
    // until after the last message (stats-watch overhead mode only).
    let watcher = match (&settings.stats_watcher, &settings.stats_file) {
        (Some(exe), Some(stats_file)) if kind == BrokerKind::Blipmq => {
            on_progress("starting blipmqctl stats --watch".into());
            let output = settings.log_dir.join(format!("{tag}-blipmqctl-watch.out"));
            Some(StatsWatcher::start(exe, stats_file, &output)?)
        }
        _ => None,
    };
    let throughput =
        |pubs, subs, payload, queue| throughput_spec(timing, pubs, subs, payload, queue);
    match scenario.kind {
        Kind::Throughput {
            pubs,
            subs,
            payload,
            queue,
        } => {
            let spec = throughput(pubs, subs, payload, queue);
            let outcome = run_flow(&mut broker, &spec, settings, on_progress)?;
            result.set_flow(&spec, &outcome);
        }
        Kind::Latency {
            rate,
            payload,
            subs,
            load,
            idle,
        } => {
            let idle_conns = if idle > 0 {
                let conns = open_idle(&broker, idle, settings, &|n| {
                    on_progress(format!("{n}/{idle} idle connections open"))
                })?;
                broker.check_alive()?;
                Some(conns)
            } else {
                None
            };
            let spec = FlowSpec {
                subject: SUBJECT,
                pubs: 1,
                subs,
                payload,
                queue: false,
                pace: Pace::Rate(rate),
                warmup: timing.latency_warmup,
                measure: timing.latency_measure,
            };
            match load {
                None => {
                    let outcome = run_flow(&mut broker, &spec, settings, on_progress)?;
                    result.set_flow(&spec, &outcome);
                }
                Some(load) => {
                    // Over the same window as the latency flow.
                    let load_spec = FlowSpec {
                        subject: LOAD_SUBJECT,
                        pubs: load.pubs,
                        subs: load.subs,
                        payload: load.payload,
                        pace: Pace::Rate(load.rate_per_pub),
                        ..spec.clone()
                    };
                    let outcomes = run_flows(
                        &mut broker,
                        &[spec.clone(), load_spec.clone()],
                        settings,
                        on_progress,
                    )?;
                    result.set_flow(&spec, &outcomes[0]);
                    result.set_load(&load_spec, &outcomes[1]);
                }
            }
            drop(idle_conns);
        }
        Kind::Connections { idle, payload } => {
            let rss_before = broker.rss_bytes()?;
            let cpu_before = broker.cpu_seconds()?;
            let conns = open_idle(&broker, idle, settings, &|n| {
                on_progress(format!("{n}/{idle} idle connections open"))
            })?;
            broker.check_alive()?;
            // Let the broker settle before reading its RSS.
            std::thread::sleep(Duration::from_millis(200));
            let rss_idle = broker.rss_bytes()?;
            let open_cpu = broker.cpu_seconds()? - cpu_before;
            let spec = throughput(1, 1, payload, false);
            let outcome = run_flow(&mut broker, &spec, settings, on_progress)?;
            result.set_flow(&spec, &outcome);
            result.connections = Some(ConnFigures {
                idle: conns.streams.len(),
                open_secs: conns.open_time.as_secs_f64(),
                open_cpu_secs: open_cpu,
                rss_before_bytes: rss_before,
                rss_idle_bytes: rss_idle,
                bytes_per_idle_conn: rss_idle.saturating_sub(rss_before) as f64
                    / conns.streams.len() as f64,
            });
            result.rss_end_bytes = broker.rss_bytes().ok();
            drop(conns);
        }
        Kind::Flood { silent, payload } => {
            let spec = FlowSpec {
                measure: timing.measure.min(FLOOD_WINDOW),
                ..throughput(1, 1, payload, false)
            };
            on_progress("without the flood".into());
            let quiet = run_flow(&mut broker, &spec, settings, on_progress)?;
            let deadline = AUTH_TIMEOUT + Duration::from_secs(1);
            let flood = flood::start(broker.addr, silent, spec.warmup, deadline);
            let outcome = run_flow(&mut broker, &spec, settings, on_progress)?;
            on_progress(format!("waiting for the {silent} silent connections"));
            let flooded = flood
                .join()
                .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??;
            broker.check_alive()?;
            result.set_flow(&spec, &outcome);
            result.flood = Some(FloodFigures::new(&quiet, &outcome, &flooded, deadline));
        }
        Kind::LeafFanout { .. } => unreachable!("the leaf-node scenarios run in run_leaf"),
    }
    if result.rss_end_bytes.is_none() {
        result.rss_end_bytes = broker.rss_bytes().ok();
    }
    match broker.syscalls.take() {
        Some(Ok(counts)) => result.set_syscalls(counts),
        Some(Err(why)) => result.problems.push(format!("syscalls not counted: {why}")),
        None => {}
    }
    // blipmqd's own share of the window's latency, every flow's messages.
    result.broker_latency_us = broker
        .in_broker_latency
        .take()
        .as_ref()
        .and_then(Percentiles::of_in_broker);
    result.broker_preemptions = broker.window_preemptions.take();
    result.broker_across_workers = broker.across_workers.take();
    if let Some(watcher) = watcher {
        let figures = watcher.finish()?;
        let arm = result.stats_watch.get_or_insert_with(Default::default);
        arm.watcher_cpu_secs = Some(figures.cpu_secs);
        arm.watcher_output_bytes = Some(figures.output_bytes);
    }
    on_progress("stopping broker".into());
    let stop = broker.stop();
    if let Some(oddity) = stop.oddity(kind) {
        result.notes.push(oddity);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_selectable() {
        let every = all();
        let mut names: Vec<_> = every.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), every.len());
        // 1 → 1 at every rate, the fan-out, the under-load and the
        // beside-idle-connections scenarios.
        assert_eq!(select(&["latency".into()]).unwrap().len(), RATES.len() + 3);
        assert_eq!(select(&["tp-1x32-*".into()]).unwrap().len(), PAYLOADS.len());
        assert_eq!(
            select(&["TP-1x1-16B".into(), "queue".into()])
                .unwrap()
                .len(),
            2
        );
        assert!(select(&["nope".into()]).is_err());
    }

    #[test]
    fn latency_scenarios_by_name() {
        let names = |wanted: &[&str]| -> Vec<String> {
            select(&wanted.iter().map(|w| w.to_string()).collect::<Vec<_>>())
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(
            names(&["lat-*"]),
            [
                "lat-10k",
                "lat-50k",
                "lat-100k",
                "lat-200k",
                "lat-1x4-50k",
                "lat-load-50k",
                "lat-idle-50k"
            ]
        );
        let [fanout, loaded] = [
            select(&["lat-1x4-50k".into()]),
            select(&["LAT-LOAD-50K".into()]),
        ]
        .map(|s| s.unwrap().remove(0));
        assert_eq!(
            fanout.kind,
            Kind::Latency {
                rate: 50_000,
                payload: LATENCY_PAYLOAD,
                subs: 4,
                load: None,
                idle: 0
            }
        );
        assert_eq!(
            loaded.kind,
            Kind::Latency {
                rate: 50_000,
                payload: LATENCY_PAYLOAD,
                subs: 1,
                load: Some(Load {
                    pubs: 4,
                    subs: 4,
                    payload: 128,
                    rate_per_pub: 50_000,
                }),
                idle: 0
            }
        );
        assert!(loaded.estimate(&Timing::full()) > fanout.estimate(&Timing::full()));
    }

    #[test]
    fn latency_trials_interleave_brokers() {
        use BrokerKind::{Blipmq, Nats, Redis};
        let selected = select(&["tp-1x1-16B".into(), "lat-50k".into(), "queue".into()]).unwrap();
        let order: Vec<(usize, BrokerKind, Option<u32>)> =
            interleave(&selected, &[Blipmq, Nats, Redis], 2)
                .into_iter()
                .map(|slot| (slot.scenario, slot.broker, slot.trial))
                .collect();
        assert_eq!(
            order,
            [
                (0, Blipmq, None),
                (0, Nats, None),
                (0, Redis, None),
                (1, Blipmq, Some(1)),
                (1, Nats, Some(1)),
                (1, Redis, Some(1)),
                (1, Blipmq, Some(2)),
                (1, Nats, Some(2)),
                (1, Redis, Some(2)),
                // Redis has no queue groups.
                (2, Blipmq, None),
                (2, Nats, None),
            ]
        );
        let latency = &selected[1];
        assert_eq!(latency.runs(&Timing::full()), 5);
        assert_eq!(latency.runs(&Timing::quick()), 3);
        assert_eq!(selected[0].runs(&Timing::full()), 1);
    }

    #[test]
    fn leaf_fanout_group_runs_as_trials_without_redis() {
        use BrokerKind::{Blipmq, Nats, Redis};
        let selected = select(&["leaf-fanout".into()]).unwrap();
        let names: Vec<&str> = selected.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["leaf-1x4-128B", "leaf-1x1+4-128B"]);
        assert_eq!(
            selected[1].kind,
            Kind::LeafFanout {
                payload: SMALL_PAYLOAD,
                subs_a: 1,
                subs_b: LEAF_SUBS_B
            }
        );
        assert!(!selected[0].applies_to(Redis));
        assert_eq!(selected[0].runs(&Timing::quick()), 3);
        let order: Vec<(usize, BrokerKind, Option<u32>)> =
            interleave(&selected[..1], &[Blipmq, Nats, Redis], 2)
                .into_iter()
                .map(|slot| (slot.scenario, slot.broker, slot.trial))
                .collect();
        assert_eq!(
            order,
            [
                (0, Blipmq, Some(1)),
                (0, Nats, Some(1)),
                (0, Blipmq, Some(2)),
                (0, Nats, Some(2)),
            ]
        );
        // Three processes to start beside the throughput phases.
        let timing = Timing::full();
        let one = selected[0].estimate(&timing);
        assert!(one > timing.warmup + timing.measure + Duration::from_secs(1));
        // The group, both brokers, 5 trials: under 3 minutes.
        let total: Duration = selected
            .iter()
            .map(|s| s.estimate(&timing) * s.runs(&timing) * 2)
            .sum();
        assert!(total < Duration::from_secs(180), "{total:?}");
    }

    #[test]
    fn full_latency_group_takes_about_twelve_minutes() {
        let timing = Timing::full();
        let total: Duration = select(&["latency".into()])
            .unwrap()
            .iter()
            .map(|s| s.estimate(&timing) * s.runs(&timing) * BrokerKind::ALL.len() as u32)
            .sum();
        assert!(
            (Duration::from_secs(600)..=Duration::from_secs(780)).contains(&total),
            "{total:?}"
        );
    }
}
