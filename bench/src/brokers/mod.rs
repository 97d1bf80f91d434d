//! Broker processes: finding the binaries, starting an instance on a free
//! port of 127.0.0.1, waiting until it serves, sampling its CPU time and
//! RSS, and stopping it — always: in `Drop`, from the SIGINT/SIGTERM
//! handler, and (PR_SET_PDEATHSIG) when the harness itself dies.

pub mod blipmq;
pub mod leaf;
pub mod nats;
pub mod procfs;
pub mod redis;
pub mod syscalls;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use blipmq_dataplane::stats::{Counter, LatencyHistogram, Snapshot, StatsReader};
use serde::Serialize;

/// The brokers the bench knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    Blipmq,
    Nats,
    Redis,
}

impl BrokerKind {
    pub const ALL: [BrokerKind; 3] = [BrokerKind::Blipmq, BrokerKind::Nats, BrokerKind::Redis];

    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Blipmq => "blipmq",
            BrokerKind::Nats => "nats",
            BrokerKind::Redis => "redis",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            BrokerKind::Blipmq => "BlipMQ",
            BrokerKind::Nats => "NATS",
            BrokerKind::Redis => "Redis",
        }
    }

    pub fn parse(name: &str) -> Result<BrokerKind> {
        BrokerKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| anyhow!("unknown broker {name:?} (known: blipmq, nats, redis)"))
    }

    /// The signal that stops it cleanly (nats-server exits 1 on SIGTERM, 0
    /// on SIGINT; both shut it down the same way).
    pub fn stop_signal(self) -> libc::c_int {
        match self {
            BrokerKind::Nats => libc::SIGINT,
            BrokerKind::Blipmq | BrokerKind::Redis => libc::SIGTERM,
        }
    }

    /// Redis pub/sub has no queue groups.
    pub fn has_queue_groups(self) -> bool {
        self != BrokerKind::Redis
    }
}

/// Where each broker's executable is.
#[derive(Debug, Clone, Serialize)]
pub struct Binaries {
    pub blipmqd: Option<PathBuf>,
    pub nats_server: Option<PathBuf>,
    pub redis_server: Option<PathBuf>,
}

impl Binaries {
    pub fn path(&self, kind: BrokerKind) -> Result<&Path> {
        let (path, hint) = match kind {
            BrokerKind::Blipmq => (
                &self.blipmqd,
                "build it: cargo build --release -p blipmq-dataplane, or pass --blipmqd PATH",
            ),
            BrokerKind::Nats => (
                &self.nats_server,
                "install it: apt-get install -y nats-server, or pass --nats-server PATH",
            ),
            BrokerKind::Redis => (
                &self.redis_server,
                "install it: apt-get install -y redis-server, or pass --redis-server PATH",
            ),
        };
        path.as_deref()
            .ok_or_else(|| anyhow!("no executable for {}: {hint}", kind.label()))
    }

    /// The first line of `--version`.
    pub fn version(&self, kind: BrokerKind) -> String {
        let Ok(path) = self.path(kind) else {
            return "not found".into();
        };
        match Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => {
                let text = if out.stdout.is_empty() {
                    out.stderr
                } else {
                    out.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            }
            Err(error) => format!("unknown ({error})"),
        }
    }
}

/// `name` in PATH, then in the usual system directories (nats-server lives
/// in /usr/sbin, which a user's PATH may lack).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// How every broker instance is configured.
#[derive(Debug, Clone)]
pub struct Settings {
    /// blipmqd `--workers`.
    pub workers: usize,
    /// Logs and generated config files go here.
    pub log_dir: PathBuf,
    /// Redis `maxclients` (it refuses clients above it).
    pub max_clients: usize,
    /// blipmqd `[control] stats_file` (None: the default, no shared file).
    pub stats_file: Option<PathBuf>,
    /// `blipmqctl` to run as `stats --file STATS_FILE --watch` beside
    /// blipmqd for the whole run (needs `stats_file`); None: no watcher.
    pub stats_watcher: Option<PathBuf>,
    /// blipmqd only: run it in a veth lab's broker namespace, with this
    /// backend (None: on 127.0.0.1 with the kernel backend, as by default).
    pub lab: Option<crate::lab::LabTarget>,
    /// blipmqd only: run it with the dpdk backend on the server end of a
    /// memif pair, for the DPDK load generator (None: as `lab` says).
    pub memif: Option<crate::run::dpdk::MemifTarget>,
    /// `perf` to count the broker's syscalls in the measured window with
    /// (None: not counted).
    pub count_syscalls: Option<PathBuf>,
    /// blipmqd only: its clients speak NATS to its NATS listener
    /// (`--nats-listen`) instead of BlipMQ's protocol (`--protocol nats`).
    pub nats_clients: bool,
    /// `--tls`: brokers serve TLS with this certificate, clients speak TLS.
    pub tls: Option<std::sync::Arc<crate::tls::BenchTls>>,
    /// `--realtime P`: every broker runs SCHED_FIFO at priority P.
    pub realtime: Option<u8>,
}

/// `exe`, or `chrt -f P exe` with `--realtime P` (chrt execs it in place:
/// the child's pid is the broker's).
fn broker_command(exe: &Path, settings: &Settings) -> Command {
    match settings.realtime {
        None => Command::new(exe),
        Some(priority) => {
            let mut command = Command::new("chrt");
            command.args(["-f", &priority.to_string()]).arg(exe);
            command
        }
    }
}

/// Per-connection output limit given to every broker, so that none cuts a
/// subscriber that keeps up on average (NATS and BlipMQ default to 64 MiB,
/// Redis to 32 MiB for pub/sub clients).
pub const MAX_PENDING_BYTES: u64 = 1 << 30;

// ---------------------------------------------------------------------------
// The registry of live children, for the signal handler.

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kills every broker still registered (SIGKILL to its process group),
/// reaps them, and keeps the registry locked so that nothing starts another:
/// for the signal handler, which exits right after. Returns how many.
pub fn kill_all_children() -> usize {
    let pids = children();
    for &pid in pids.iter() {
        // SAFETY: kill(2) takes no pointers. The registry holds children we
        // spawned and have not reaped (they are deregistered only after they
        // are reaped), so neither the pid nor the group (each child leads
        // its own, see `spawn_registered`) names another process.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    for &pid in pids.iter() {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`, a live `c_int`.
        // It reaps our own child, whose `Child` handle is never waited on
        // again: the process exits right after this.
        unsafe {
            libc::waitpid(pid as libc::pid_t, &mut status, 0);
        }
    }
    let count = pids.len();
    std::mem::forget(pids);
    count
}

/// SIGINT, SIGTERM and SIGHUP stop every broker, then the harness (exit 130).
pub fn install_signal_handler() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let count = kill_all_children();
            let namespaces = crate::lab::delete_registered();
            if namespaces > 0 {
                let _ = std::io::stderr().write_all(
                    format!("\nblipmq-bench: deleted {namespaces} network namespace(s)\n").as_bytes(),
                );
            }
            let _ = std::io::stderr().write_all(
                format!("\nblipmq-bench: signal {signal}: stopped {count} broker or blipmqctl process(es), exiting\n").as_bytes(),
            );
            std::process::exit(130);
        }
    })?;
    Ok(())
}

/// Spawns `command` in its own process group, killed when the harness dies,
/// and registers it for the signal handler.
pub(crate) fn spawn_registered(command: &mut Command) -> Result<Child> {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: setpgid, prctl, getppid and
    // _exit are, and it neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            // The parent may have died before prctl: then go now.
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    // Hold the registry across spawn + register, so the signal handler sees
    // every child that exists.
    let mut registry = children();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    registry.push(child.id());
    Ok(child)
}

fn deregister(pid: u32) {
    children().retain(|&p| p != pid);
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a probe socket")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running broker instance. Dropping it stops it.
pub struct Broker {
    pub kind: BrokerKind,
    pub addr: SocketAddr,
    pub pid: u32,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// `perf` for [`Broker::begin_window`] (None: syscalls not counted).
    perf: Option<PathBuf>,
    syscall_probe: Option<syscalls::SyscallProbe>,
    /// What the probe counted in the measured window, or why it could not.
    pub syscalls: Option<std::result::Result<syscalls::SyscallCounts, String>>,
    /// blipmqd's stats segment, for its in-broker latency.
    stats_file: Option<PathBuf>,
    /// The stats segment when the window began.
    stats_before: Option<Snapshot>,
    /// blipmqd's in-broker latency of the messages of the measured window
    /// (from its stats segment); None for the others, or unreadable.
    pub in_broker_latency: Option<LatencyHistogram>,
    /// blipmqd's share of the window's deliveries made by workers that read
    /// no PUBLISH in it: with one publisher, the deliveries that crossed
    /// between workers. None with publishes on several workers.
    pub across_workers: Option<f64>,
    /// The broker's threads' preemptions when the window began, and over it.
    preemptions_before: Option<u64>,
    pub window_preemptions: Option<u64>,
}

/// How a stop went.
#[derive(Debug, Clone)]
pub struct StopReport {
    /// Exit status, or None when it had to be killed.
    pub status: Option<ExitStatus>,
    pub took: Duration,
}

impl StopReport {
    /// A line for the report when anything was unusual.
    pub fn oddity(&self, kind: BrokerKind) -> Option<String> {
        match self.status {
            None => Some(format!(
                "{} did not exit within {:?} of its stop signal and was killed",
                kind.label(),
                STOP_GRACE
            )),
            Some(status) if !status.success() => Some(format!(
                "{} exited with {status} after its stop signal",
                kind.label()
            )),
            Some(_) if self.took > Duration::from_secs(2) => Some(format!(
                "{} took {:.1} s to exit after its stop signal",
                kind.label(),
                self.took.as_secs_f64()
            )),
            _ => None,
        }
    }
}

/// How long a broker gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a broker gets to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(15);

impl Broker {
    /// Starts a fresh instance; `tag` names its log file.
    pub fn start(
        kind: BrokerKind,
        bins: &Binaries,
        settings: &Settings,
        tag: &str,
    ) -> Result<Broker> {
        Broker::start_with(kind, bins, settings, tag, "")
    }

    /// [`Broker::start`] with `extra` appended to the config file the bench
    /// writes for it (blipmqd and nats-server; Redis takes none).
    pub fn start_with(
        kind: BrokerKind,
        bins: &Binaries,
        settings: &Settings,
        tag: &str,
        extra: &str,
    ) -> Result<Broker> {
        if kind == BrokerKind::Redis && !extra.is_empty() {
            bail!("redis-server is started without a config file");
        }
        let exe = bins.path(kind)?;
        let mut last_error = None;
        // A free port can be taken by someone else before the broker binds
        // it; try a few times.
        for _attempt in 0..3 {
            let log_path = settings.log_dir.join(format!("{tag}-{}.log", kind.name()));
            let result = match kind {
                BrokerKind::Blipmq => blipmq::start(exe, settings, tag, &log_path, extra),
                BrokerKind::Nats => nats::start(exe, settings, tag, &log_path, extra),
                BrokerKind::Redis => redis::start(exe, settings, &log_path),
            };
            match result {
                Ok(broker) => return Ok(broker),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("cannot start {}", kind.label())))
    }

    fn new(kind: BrokerKind, child: Child, addr: SocketAddr, log_path: PathBuf) -> Broker {
        Broker {
            kind,
            addr,
            pid: child.id(),
            log_path,
            child: Some(child),
            perf: None,
            syscall_probe: None,
            stats_file: None,
            stats_before: None,
            in_broker_latency: None,
            across_workers: None,
            preemptions_before: None,
            window_preemptions: None,
            syscalls: None,
        }
    }

    /// Counts this broker's syscalls from [`Broker::begin_window`] to
    /// [`Broker::end_window`] with `perf`.
    pub fn count_syscalls_with(&mut self, perf: &Path) {
        self.perf = Some(perf.to_path_buf());
    }

    /// The measured window starts: attach the syscall probe, if any
    /// (returns once it counts).
    pub fn begin_window(&mut self) {
        self.stats_before = self.read_stats();
        self.preemptions_before = procfs::preemptions(self.pid).ok();
        let Some(perf) = self.perf.clone() else {
            return;
        };
        let output = self.log_path.with_extension("perf-stat.txt");
        match syscalls::SyscallProbe::start(&perf, self.pid, &output) {
            Ok(probe) => self.syscall_probe = Some(probe),
            Err(error) => self.syscalls = Some(Err(format!("{error:#}"))),
        }
    }

    /// The measured window ends: stop the probe and keep its counts.
    pub fn end_window(&mut self) {
        if let Some(probe) = self.syscall_probe.take() {
            self.syscalls = Some(probe.finish().map_err(|error| format!("{error:#}")));
        }
        if let (Some(before), Some(after)) = (self.stats_before.take(), self.read_stats()) {
            self.in_broker_latency = Some(after.latency(None).since(&before.latency(None)));
            self.across_workers = across_workers(&before, &after);
        }
        if let (Some(before), Ok(after)) = (
            self.preemptions_before.take(),
            procfs::preemptions(self.pid),
        ) {
            self.window_preemptions = Some(after.saturating_sub(before));
        }
    }

    /// blipmqd's stats segment now; None without a readable one.
    fn read_stats(&self) -> Option<Snapshot> {
        let reader = StatsReader::open(self.stats_file.as_deref()?).ok()?;
        Some(reader.snapshot())
    }

    /// Reads blipmqd's in-broker latency from the stats segment at `path`.
    pub fn watch_stats(&mut self, path: &Path) {
        self.stats_file = Some(path.to_path_buf());
    }

    /// Waits until `addr` accepts and `probe` succeeds on a connection.
    fn wait_ready(&mut self, probe: &dyn Fn(&mut TcpStream) -> std::io::Result<()>) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited during start ({status}); log {}:\n{}",
                    self.kind.label(),
                    self.log_path.display(),
                    log_tail(&self.log_path, 10)
                );
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                if probe(&mut stream).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not serve on {} within {START_TIMEOUT:?}",
                    self.kind.label(),
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// user + system CPU seconds of the whole process (all threads).
    pub fn cpu_seconds(&self) -> Result<f64> {
        procfs::cpu_seconds(self.pid)
    }

    /// Resident set size in bytes (VmRSS).
    pub fn rss_bytes(&self) -> Result<u64> {
        procfs::rss_bytes(self.pid)
    }

    /// Still running?
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!(
                "{} exited during the run ({status}); log {}:\n{}",
                self.kind.label(),
                self.log_path.display(),
                log_tail(&self.log_path, 10)
            );
        }
        Ok(())
    }

    /// SIGTERM (NATS: SIGINT), wait up to [`STOP_GRACE`], then SIGKILL.
    pub fn stop(mut self) -> StopReport {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> StopReport {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return StopReport {
                status: None,
                took: Duration::ZERO,
            };
        };
        let status = terminate(&mut child, self.kind.stop_signal(), STOP_GRACE);
        StopReport {
            status,
            took: started.elapsed(),
        }
    }
}

/// Sends `signal` to a registered child, waits up to `grace` for it to
/// exit, then SIGKILLs its process group; reaps and deregisters it.
/// Returns its exit status, or None when it had to be killed.
fn terminate(child: &mut Child, signal: libc::c_int, grace: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    let pid = child.id() as libc::pid_t;
    let mut status = child.try_wait().ok().flatten();
    if status.is_none() {
        // SAFETY: kill(2) takes no pointers. `pid` is our child, which
        // `try_wait` just found running and only we (`&mut Child`) can reap,
        // so it names no other process.
        unsafe {
            libc::kill(pid, signal);
        }
        while started.elapsed() < grace {
            if let Ok(Some(exit)) = child.try_wait() {
                status = Some(exit);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if status.is_none() {
        // SAFETY: kill(2) takes no pointers. `pid` is our child, not reaped
        // yet (`try_wait` found it running), and leads the process group
        // `spawn_registered` created for it.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    deregister(child.id());
    status
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop_inner();
        }
    }
}

/// Opens the log file a broker writes to.
fn log_file(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", path.display()))
}

/// Of the deliveries between two snapshots, the share made by workers that
/// read no PUBLISH in between; None when no worker or several read them, or
/// nothing was delivered.
fn across_workers(before: &Snapshot, after: &Snapshot) -> Option<f64> {
    let delta = |w, counter| after.get(w, counter).saturating_sub(before.get(w, counter));
    let workers = 0..after.workers().min(before.workers());
    let publishing: Vec<usize> = workers
        .clone()
        .filter(|&w| delta(w, Counter::MessagesPublished) > 0)
        .collect();
    if publishing.len() != 1 {
        return None;
    }
    let delivered: u64 = workers
        .clone()
        .map(|w| delta(w, Counter::MessagesDelivered))
        .sum();
    let across: u64 = workers
        .filter(|&w| w != publishing[0])
        .map(|w| delta(w, Counter::MessagesDelivered))
        .sum();
    (delivered > 0).then(|| across as f64 / delivered as f64)
}

#[cfg(test)]
mod across_workers_tests {
    use super::*;

    /// Workers' (published, delivered) counters as a snapshot.
    fn snapshot(workers: &[(u64, u64)]) -> Snapshot {
        let values = workers
            .iter()
            .map(|&(published, delivered)| {
                let mut v = vec![0; Counter::COUNT];
                v[Counter::MessagesPublished as usize] = published;
                v[Counter::MessagesDelivered as usize] = delivered;
                v
            })
            .collect();
        Snapshot::new(1, 0, 0, values)
    }

    #[test]
    fn deliveries_by_workers_that_did_not_publish_cross_between_workers() {
        let before = snapshot(&[(100, 100), (0, 0)]);
        // One publisher on worker 0; 1 → 4 with three subscribers on worker 1.
        let after = snapshot(&[(200, 125), (0, 75)]);
        assert_eq!(across_workers(&before, &after), Some(0.75));
        let same = snapshot(&[(200, 200), (0, 0)]);
        assert_eq!(across_workers(&before, &same), Some(0.0));
    }

    #[test]
    fn unknown_with_several_publishing_workers_or_no_deliveries() {
        let before = snapshot(&[(0, 0), (0, 0)]);
        assert_eq!(across_workers(&before, &snapshot(&[(5, 5), (5, 5)])), None);
        assert_eq!(across_workers(&before, &snapshot(&[(5, 0), (0, 0)])), None);
        assert_eq!(across_workers(&before, &before), None);
    }
}
