//! Counting a broker's system calls over the measured window:
//! `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_X,... -p PID`
//! attached from just before the window's first snapshot to just after its
//! last. Tracepoint counting only (no sampling, no per-call stop as under
//! strace), but it still puts every syscall of the broker on the traced
//! path, so the bench counts in a run of its own, not in the run whose
//! speed it reports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::{spawn_registered, terminate};

/// Syscalls counted one by one besides the total (those a broker's data
/// path makes); the ones this kernel has no tracepoint for are left out.
const BREAKDOWN: [&str; 20] = [
    "read",
    "write",
    "readv",
    "writev",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "poll",
    "ppoll",
    "futex",
    "sched_yield",
    "nanosleep",
    "clock_nanosleep",
    "io_uring_enter",
];

/// How long perf gets to attach to every thread of the broker.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(3);

/// What a probe counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyscallCounts {
    /// Every syscall the broker's threads entered in the window.
    pub total: u64,
    /// Per syscall name, the nonzero ones of [`BREAKDOWN`], largest first.
    pub by_name: Vec<(String, u64)>,
    /// How it was counted.
    pub method: String,
}

/// A `perf stat` attached to a broker; [`SyscallProbe::finish`] stops it
/// and reads its counts.
pub struct SyscallProbe {
    child: Option<Child>,
    output: PathBuf,
}

fn tracepoint_exists(name: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|root| Path::new(&format!("{root}/events/syscalls/sys_enter_{name}")).is_dir())
}

/// File descriptors of `pid` that are perf events.
fn perf_event_fds(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.to_string_lossy().contains("perf_event"))
        .count()
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(1, |tasks| tasks.count())
}

impl SyscallProbe {
    /// Attaches `perf stat` to `pid`, writing to `output`, and returns once
    /// it has an event open for every thread (so counting runs).
    pub fn start(perf: &Path, pid: u32, output: &Path) -> Result<SyscallProbe> {
        let events: Vec<String> = std::iter::once("raw_syscalls:sys_enter".to_string())
            .chain(
                BREAKDOWN
                    .iter()
                    .filter(|name| tracepoint_exists(name))
                    .map(|name| format!("syscalls:sys_enter_{name}")),
            )
            .collect();
        let mut command = Command::new(perf);
        command
            .args(["stat", "-x", ",", "--no-big-num", "-e"])
            .arg(events.join(","))
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_registered(&mut command)?;
        let mut probe = SyscallProbe {
            child: Some(child),
            output: output.to_path_buf(),
        };
        let perf_pid = probe.child.as_ref().map_or(0, |c| c.id());
        let wanted = events.len() * thread_count(pid);
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while perf_event_fds(perf_pid) < wanted {
            if let Some(status) = probe
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "perf stat exited at once ({status}): {}",
                    std::fs::read_to_string(output).unwrap_or_default().trim()
                );
            }
            if Instant::now() > deadline {
                bail!("perf stat did not attach to the broker's {wanted} thread-events within {ATTACH_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(probe)
    }

    /// Stops perf (SIGINT: it prints its counts and exits) and reads them.
    pub fn finish(mut self) -> Result<SyscallCounts> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("probe already stopped"))?;
        terminate(&mut child, libc::SIGINT, Duration::from_secs(5));
        let text = std::fs::read_to_string(&self.output)
            .with_context(|| format!("cannot read {}", self.output.display()))?;
        parse(&text)
    }
}

impl Drop for SyscallProbe {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, libc::SIGINT, Duration::from_secs(2));
        }
    }
}

/// `perf stat -x ,` lines: `count,unit,event,...`.
fn parse(text: &str) -> Result<SyscallCounts> {
    let mut counts = SyscallCounts {
        method: "perf stat -e raw_syscalls:sys_enter -p PID (tracepoint counts, all threads)"
            .into(),
        ..Default::default()
    };
    let mut found_total = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 {
            continue;
        }
        let Ok(count) = fields[0].trim().parse::<u64>() else {
            continue;
        };
        let event = fields[2].trim();
        if event == "raw_syscalls:sys_enter" {
            counts.total = count;
            found_total = true;
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            if count > 0 {
                counts.by_name.push((name.to_string(), count));
            }
        }
    }
    if !found_total {
        bail!("perf stat printed no raw_syscalls:sys_enter count: {text:?}");
    }
    counts
        .by_name
        .sort_by_key(|entry| std::cmp::Reverse(entry.1));
    Ok(counts)
}
