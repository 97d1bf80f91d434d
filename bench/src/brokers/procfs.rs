//! CPU time and RSS of a process from /proc.

use anyhow::{anyhow, Context, Result};

/// Clock ticks per second of /proc/PID/stat's times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of `/proc/PID/stat` (all threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    cpu_seconds_of(&text)
}

/// The same for the harness itself.
pub fn self_cpu_seconds() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    cpu_seconds_of(&text)
}

fn cpu_seconds_of(stat: &str) -> Result<f64> {
    // The command name is in parentheses and may hold spaces: the fields
    // after the last ')' start at field 3 (state); utime and stime are
    // fields 14 and 15.
    let after = stat.rfind(')').ok_or_else(|| anyhow!("malformed stat"))?;
    let fields: Vec<&str> = stat[after + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("stat lacks field {n}"))?
            .parse::<u64>()
            .map_err(|e| anyhow!("stat field {n}: {e}"))
    };
    Ok((field(14)? + field(15)?) as f64 / clock_ticks())
}

/// Times the threads of process `pid` were preempted so far (the sum of
/// `nonvoluntary_ctxt_switches` in each `/proc/PID/task/TID/status`):
/// another thread took the CPU while it still wanted to run.
pub fn preemptions(pid: u32) -> Result<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("cannot list /proc/{pid}/task"))?;
    let mut total = 0;
    for task in tasks.map_while(std::result::Result::ok) {
        // A thread that ended meanwhile has no status any more.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += preemptions_of(&status);
    }
    Ok(total)
}

fn preemptions_of(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// What all CPUs of the machine did so far, from the first line of
/// `/proc/stat`, in CPU seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// Busy: not idle, not waiting for I/O (steal included).
    pub busy: f64,
    /// Stolen by the hypervisor: wanted to run, but another guest ran.
    pub steal: f64,
}

/// The machine's noise over a window: what neither the broker nor the
/// harness did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Noise {
    /// CPU seconds of other processes and the kernel's own threads.
    pub other_cpu: f64,
    /// CPU seconds stolen by the hypervisor.
    pub steal: f64,
}

impl MachineCpu {
    /// The noise from `earlier` to `self`, given the CPU seconds the broker
    /// and the harness used in between.
    pub fn noise_since(&self, earlier: &MachineCpu, own_cpu: f64) -> Noise {
        let steal = (self.steal - earlier.steal).max(0.0);
        Noise {
            other_cpu: ((self.busy - earlier.busy) - steal - own_cpu).max(0.0),
            steal,
        }
    }
}

pub fn machine_cpu() -> Result<MachineCpu> {
    let text = std::fs::read_to_string("/proc/stat")?;
    machine_cpu_of(&text)
}

fn machine_cpu_of(stat: &str) -> Result<MachineCpu> {
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let tick = |n: usize| ticks.get(n).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal [guest guest_nice,
    // already counted in user and nice]
    let total: u64 = ticks.iter().take(8).sum();
    let idle = tick(3) + tick(4);
    Ok(MachineCpu {
        busy: total.saturating_sub(idle) as f64 / clock_ticks(),
        steal: tick(7) as f64 / clock_ticks(),
    })
}

/// VmRSS of `/proc/PID/status`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("malformed VmRSS line"))?
        .parse()?;
    Ok(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preemptions_from_status() {
        let status = "Name:\tblipmq-worker-0\nvoluntary_ctxt_switches:\t812\nnonvoluntary_ctxt_switches:\t37\n";
        assert_eq!(preemptions_of(status), 37);
        assert_eq!(preemptions_of("Name:\tx\n"), 0);
        assert!(preemptions(std::process::id()).is_ok());
    }

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 10";
        let secs = cpu_seconds_of(stat).unwrap();
        assert!((secs - 300.0 / clock_ticks()).abs() < 1e-9);
    }

    #[test]
    fn separates_steal_from_other_load() {
        let ticks = clock_ticks();
        let at = |busy: u64, steal: u64| {
            // user nice system idle iowait irq softirq steal guest guest_nice
            machine_cpu_of(&format!(
                "cpu  {} 0 0 500 7 0 0 {steal} 3 0\ncpu0 1 2 3",
                busy - steal
            ))
            .unwrap()
        };
        let noise = at(400, 60).noise_since(&at(100, 10), 100.0 / ticks);
        assert!((noise.steal - 50.0 / ticks).abs() < 1e-9);
        // 300 busy ticks: 50 stolen, 100 the broker's and harness's own.
        assert!((noise.other_cpu - 150.0 / ticks).abs() < 1e-9);
        // Never negative, when the own processes' figures run ahead.
        assert_eq!(at(110, 10).noise_since(&at(100, 10), 1e6).other_cpu, 0.0);
    }

    #[test]
    fn reads_own_process() {
        assert!(self_cpu_seconds().unwrap() >= 0.0);
        assert!(machine_cpu().unwrap().busy > 0.0);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
