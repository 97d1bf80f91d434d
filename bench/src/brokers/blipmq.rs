//! blipmqd from this workspace.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use blipmq_protocol::{decode_frame, Op};

use crate::lab::{Backend, LAB_PORT};

use super::{
    log_file, log_tail, procfs, spawn_registered, terminate, Broker, BrokerKind, Settings,
    MAX_PENDING_BYTES, START_TIMEOUT,
};

/// The config every bench instance runs with; everything else is default.
/// `stats_file`: share the workers' counters there (`[control] stats_file`);
/// `realtime`: `server.worker_priority`.
pub fn config_text(stats_file: Option<&Path>, realtime: Option<u8>) -> String {
    let mut text = format!(
        "# Written by blipmq-bench.\n\
         [server]\n\
         # Shorter than the default 5s: the bench's clients are gone when it stops.\n\
         drain_timeout = \"1s\"\n\
         max_connections = 65536\n\
         {}\
         \n\
         [limits]\n\
         # Same per-connection output limit as NATS and Redis get.\n\
         max_pending_bytes = {MAX_PENDING_BYTES}\n",
        // Only when asked for: an older blipmqd refuses the key.
        realtime.map_or(String::new(), |p| format!("worker_priority = {p}\n"))
    );
    if let Some(path) = stats_file {
        // Debug quoting escapes `"` and `\\` as a TOML basic string wants.
        text += &format!(
            "\n[control]\n# For `blipmqctl stats --file`.\nstats_file = {:?}\n",
            path.display().to_string()
        );
    }
    text
}

/// Starts blipmqd with the bench's config plus `extra` (TOML tables).
pub fn start(
    exe: &Path,
    settings: &Settings,
    tag: &str,
    log_path: &Path,
    extra: &str,
) -> Result<Broker> {
    let config_path = settings.log_dir.join(format!("{tag}-blipmq.toml"));
    let mut text = config_text(settings.stats_file.as_deref(), settings.realtime);
    text += extra;
    if settings.memif.is_some() {
        // A poll-mode core of its own, as on an appliance: the generator
        // has the other core, so an idle turn has nothing to yield to.
        text += "\n[dpdk]\npoll = \"busy\"\n";
    }
    std::fs::write(&config_path, text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let log = log_file(log_path)?;
    // On 127.0.0.1; or in a veth lab's broker namespace (`ip netns exec`
    // execs blipmqd in place, so the child's pid is blipmqd's), on the
    // lab's address with the kernel backend or owning it in user space
    // with the afpacket backend.
    let mut command = match (&settings.lab, &settings.memif) {
        // The dpdk backend on the server end of a memif pair, on the CPUs
        // the load generator leaves (`taskset` execs blipmqd in place).
        (None, Some(memif)) => {
            let mut command = Command::new("taskset");
            command
                .args(["-c", &memif.broker_cpus()])
                .arg(exe)
                .args(["--backend", "dpdk", "--ip", &memif.broker_cidr()])
                .arg("--listen")
                .arg(format!("0.0.0.0:{}", memif.port));
            command
        }
        (None, None) => {
            let mut command = Command::new(exe);
            command.arg("--listen").arg("127.0.0.1:0");
            if settings.nats_clients {
                command.arg("--nats-listen").arg("127.0.0.1:0");
            }
            if let Some(tls) = &settings.tls {
                command
                    .arg("--tls-cert")
                    .arg(&tls.cert_file)
                    .arg("--tls-key")
                    .arg(&tls.key_file);
            }
            command
        }
        (Some(lab), _) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &lab.broker_ns]).arg(exe);
            match lab.backend {
                Backend::Kernel => {
                    command.arg("--listen").arg(format!("{}:0", lab.broker_ip));
                }
                Backend::Afpacket => {
                    command
                        .args(["--backend", "afpacket", "--interface", &lab.broker_if])
                        .args(["--ip", &lab.broker_cidr()])
                        .arg("--listen")
                        .arg(format!("0.0.0.0:{LAB_PORT}"));
                }
                Backend::Dpdk => {
                    command
                        .args(["--backend", "dpdk"])
                        .args(["--ip", &lab.broker_cidr()])
                        .arg("--listen")
                        .arg(format!("0.0.0.0:{LAB_PORT}"));
                }
            }
            command
        }
    };
    command
        .arg("--workers")
        .arg(settings.workers.to_string())
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?);
    if let Some(lab) = settings
        .lab
        .as_ref()
        .filter(|lab| lab.backend == Backend::Dpdk)
    {
        // DPDK's EAL arguments, last: the lab's veth end through
        // net_af_packet, a queue pair per worker, no hugepages.
        command.arg("--").args([
            "--no-pci".to_string(),
            "--no-huge".to_string(),
            "-m".to_string(),
            "512".to_string(),
            "--file-prefix".to_string(),
            format!("bqbench-{}", std::process::id()),
            format!(
                "--vdev=net_af_packet0,iface={},qpairs={}",
                lab.broker_if, settings.workers
            ),
        ]);
    }
    if let Some(memif) = &settings.memif {
        command.arg("--").args(memif.broker_eal_args());
    }
    let mut child = spawn_registered(&mut command)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    // The first stdout line names the address, the second the NATS
    // listener's when there is one; the rest goes to the log.
    let (tx, rx) = mpsc::channel();
    let lines = if settings.nats_clients { 2 } else { 1 };
    std::thread::Builder::new()
        .name("blipmqd-stdout".into())
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            for _ in 0..lines {
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
            }
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            let mut log = log;
            let _ = log.write_all(&rest);
        })?;
    let mut broker = Broker::new(
        BrokerKind::Blipmq,
        child,
        "127.0.0.1:0".parse()?,
        log_path.to_path_buf(),
    );
    if let Some(stats_file) = &settings.stats_file {
        broker.watch_stats(stats_file);
    }
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) => line,
        Err(_) => bail!("blipmqd printed no address within {START_TIMEOUT:?}"),
    };
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("blipmqd listening on ")
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        // The afpacket backend prints 0.0.0.0: clients go to the lab's address.
        .map(|addr| match (&settings.lab, &settings.memif) {
            (Some(lab), _) => SocketAddr::from((lab.broker_ip, addr.port())),
            (None, Some(memif)) => SocketAddr::from((memif.broker_ip, addr.port())),
            (None, None) => addr,
        })
        .ok_or_else(|| {
            anyhow!(
                "blipmqd did not start: stdout {:?}; log:\n{}",
                line.trim(),
                log_tail(log_path, 10)
            )
        })?;
    broker.addr = addr;
    if settings.nats_clients {
        // The clients go to the NATS listener, which greets as nats-server.
        let line = rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow!("blipmqd printed no NATS address within {START_TIMEOUT:?}"))?;
        broker.addr = line
            .trim()
            .strip_prefix("blipmqd NATS listening on ")
            .and_then(|addr| addr.parse::<SocketAddr>().ok())
            .ok_or_else(|| anyhow!("blipmqd printed {:?}, not its NATS address", line.trim()))?;
        broker.wait_ready(&super::nats::probe)?;
        return Ok(broker);
    }
    match (&settings.memif, &settings.tls) {
        // On a memif pair only the DPDK load generator reaches the broker
        // (it retries its connects until the link is up).
        (Some(_), _) => {}
        // INFO comes inside TLS.
        (None, Some(tls)) => broker.wait_ready(&|stream: &mut TcpStream| {
            let deadline = Instant::now() + Duration::from_secs(2);
            let (mut reader, _writer) = tls
                .handshake(stream.try_clone()?, deadline)
                .map_err(|error| std::io::Error::other(format!("{error:#}")))?;
            probe(&mut reader)
        })?,
        (None, None) => broker.wait_ready(&probe)?,
    }
    Ok(broker)
}

/// The broker greets with INFO.
fn probe(stream: &mut impl Read) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        let n = stream.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        match decode_frame(&buf[..have], u32::MAX) {
            Ok(Some((frame, _))) if frame.op == Op::Info as u8 => return Ok(()),
            Ok(None) if have < buf.len() => continue,
            _ => return Err(std::io::Error::other("no INFO")),
        }
    }
}

/// `blipmqctl stats --file FILE --watch` running beside a broker: the
/// operator's live view, whose cost to the broker the stats-watch overhead
/// mode measures. Registered like a broker, so Ctrl-C and the harness's
/// death stop it too; dropping it stops it.
pub struct StatsWatcher {
    child: Option<Child>,
    output_path: std::path::PathBuf,
}

/// What the watcher did during a run.
#[derive(Debug, Clone)]
pub struct WatcherFigures {
    /// Its user + system CPU seconds over its whole life.
    pub cpu_secs: f64,
    /// Bytes of live view it printed (about one screen a second).
    pub output_bytes: u64,
}

/// How long blipmqd gets to create its stats file after it serves.
const STATS_FILE_TIMEOUT: Duration = Duration::from_secs(5);

impl StatsWatcher {
    /// Waits for `stats_file` (blipmqd creates it at start), then starts
    /// `exe stats --file stats_file --watch` with its output in `output_path`.
    pub fn start(exe: &Path, stats_file: &Path, output_path: &Path) -> Result<StatsWatcher> {
        let deadline = Instant::now() + STATS_FILE_TIMEOUT;
        while !stats_file.is_file() {
            if Instant::now() > deadline {
                bail!(
                    "blipmqd did not create its stats file {} within {STATS_FILE_TIMEOUT:?}",
                    stats_file.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = File::create(output_path)
            .with_context(|| format!("cannot create {}", output_path.display()))?;
        let mut command = Command::new(exe);
        command
            .arg("stats")
            .arg("--file")
            .arg(stats_file)
            .arg("--watch")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let child = spawn_registered(&mut command)?;
        Ok(StatsWatcher {
            child: Some(child),
            output_path: output_path.to_path_buf(),
        })
    }

    /// Checks that it is still watching (it never exits on its own), and
    /// stops it.
    pub fn finish(mut self) -> Result<WatcherFigures> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("watcher already stopped"))?;
        let early_exit = child.try_wait().ok().flatten();
        let cpu_secs = procfs::cpu_seconds(child.id()).unwrap_or(0.0);
        terminate(&mut child, libc::SIGTERM, WATCHER_GRACE);
        if let Some(status) = early_exit {
            bail!(
                "blipmqctl stats --watch exited during the run ({status}); output {}:\n{}",
                self.output_path.display(),
                log_tail(&self.output_path, 5)
            );
        }
        let output_bytes = std::fs::metadata(&self.output_path).map_or(0, |m| m.len());
        if output_bytes == 0 {
            bail!(
                "blipmqctl stats --watch printed nothing during the run (output {})",
                self.output_path.display()
            );
        }
        Ok(WatcherFigures {
            cpu_secs,
            output_bytes,
        })
    }
}

/// blipmqctl dies on SIGTERM at once; anything slower is killed.
const WATCHER_GRACE: Duration = Duration::from_secs(2);

impl Drop for StatsWatcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _: Option<ExitStatus> = terminate(&mut child, libc::SIGTERM, WATCHER_GRACE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blipmq_dataplane::config::Config;

    #[test]
    fn config_is_blipmqds_own_and_names_the_priority_only_when_asked() {
        let plain = Config::from_toml_str(&config_text(None, None)).expect("blipmqd takes it");
        assert_eq!(plain.server.worker_priority, 0);
        assert!(!config_text(None, None).contains("worker_priority"));
        let stats = Path::new("/dev/shm/x.stats");
        let realtime =
            Config::from_toml_str(&config_text(Some(stats), Some(10))).expect("blipmqd takes it");
        assert_eq!(realtime.server.worker_priority, 10);
        assert_eq!(realtime.control.stats_file, "/dev/shm/x.stats");
    }
}
