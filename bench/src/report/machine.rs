//! A description of the machine the figures come from.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs online (/proc/cpuinfo), and those this process may use.
    pub cpus_online: usize,
    pub cpus_available: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os: String,
    pub hostname: String,
    pub nofile_limit: u64,
    pub git_commit: String,
    /// The CPU idle driver, and with `haltpoll` (a KVM guest) how long an
    /// idle vCPU polls before it halts: waking a halted vCPU takes the
    /// hypervisor, which shows in latency tails.
    pub cpuidle: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpus_online = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0);
        let kernel = format!(
            "{} {}",
            read("/proc/sys/kernel/ostype").trim(),
            read("/proc/sys/kernel/osrelease").trim()
        );
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        let git_commit = std::process::Command::new("git")
            .args([
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Machine {
            cpu_model,
            cpus_online,
            cpus_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            kernel,
            os,
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            nofile_limit: nofile_limit().0,
            git_commit,
            cpuidle: cpuidle(),
        }
    }
}

/// `haltpoll (guest_halt_poll_ns 200000)`, `intel_idle`, or empty when the
/// kernel does not say.
fn cpuidle() -> String {
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
    let driver = driver.trim();
    let halt_poll = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    match halt_poll.trim() {
        "" => driver.to_string(),
        ns => format!("{driver} (guest_halt_poll_ns {ns})"),
    }
}

/// (soft, hard) RLIMIT_NOFILE.
pub fn nofile_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer: `limit`,
    // live and writable for the call.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    (limit.rlim_cur as u64, limit.rlim_max as u64)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (brokers started later
/// inherit it); returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let (soft, hard) = nofile_limit();
    if soft < hard {
        let limit = libc::rlimit {
            rlim_cur: hard as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit reads one `rlimit` through the pointer: `limit`,
        // live for the call.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    nofile_limit().0
}
