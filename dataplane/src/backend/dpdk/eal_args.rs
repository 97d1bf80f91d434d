//! The EAL's arguments and its start-up, made to suit a broker process.

use blipmq_dpdk_sys::Eal;

/// The user's EAL arguments, completed:
///
/// * without `-l`/`-c`/`--lcores`, `-l <first allowed CPU>`: the EAL makes
///   an lcore (and a thread) per listed CPU, but the broker runs its own
///   workers and registers them; one main lcore is all it needs.
/// * with hugepages (no `--no-huge`) and no memory-mode option,
///   `--in-memory`: no hugepage files and no runtime files are left behind,
///   whatever way the process ends.
pub fn complete(user: &[String], cpus: &[core_affinity::CoreId]) -> Vec<String> {
    let has = |names: &[&str]| {
        user.iter().any(|arg| {
            names
                .iter()
                .any(|name| arg == name || arg.starts_with(&format!("{name}=")))
        })
    };
    let mut args = Vec::with_capacity(user.len() + 2);
    let lcores_given = user
        .iter()
        .any(|arg| arg == "-l" || arg == "-c" || arg.starts_with("-l") || arg.starts_with("-c"))
        || has(&["--lcores"]);
    if !lcores_given {
        let cpu = cpus.first().map_or(0, |core| core.id);
        args.push("-l".to_string());
        args.push(cpu.to_string());
    }
    let memory_mode_given = has(&[
        "--no-huge",
        "--in-memory",
        "--huge-unlink",
        "--single-file-segments",
        "--proc-type",
    ]);
    if !memory_mode_given {
        args.push("--in-memory".to_string());
    }
    args.extend(user.iter().cloned());
    args
}

/// `rte_eal_init` with `args`, keeping this thread's CPU affinity: the EAL
/// pins the calling thread to its main lcore, and every thread started
/// afterwards (the workers, when pinning is off; the control threads)
/// would inherit that single CPU.
pub fn init_keeping_affinity(args: &[String]) -> Result<Eal, String> {
    let affinity = current_affinity();
    let eal = Eal::init(args).map_err(|error| error.to_string());
    if let Some(set) = affinity {
        restore_affinity(&set);
    }
    eal
}

fn current_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; all zeroes is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 = this thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (rc == 0).then_some(set)
}

fn restore_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not restore the CPU affinity after the EAL started"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adds_one_lcore_and_in_memory() {
        let cpus = [core_affinity::CoreId { id: 3 }];
        assert_eq!(
            complete(&strings(&["--vdev=net_tap0"]), &cpus),
            strings(&["-l", "3", "--in-memory", "--vdev=net_tap0"])
        );
        assert_eq!(complete(&[], &[]), strings(&["-l", "0", "--in-memory"]));
    }

    #[test]
    fn leaves_what_the_user_chose() {
        let user = strings(&["-l", "1", "--no-huge", "-m", "512"]);
        assert_eq!(complete(&user, &[]), user);
        let user = strings(&["--lcores=1@2", "--huge-unlink=always"]);
        assert_eq!(complete(&user, &[]), user);
        let user = strings(&["-c0x2", "--single-file-segments"]);
        assert_eq!(complete(&user, &[]), user);
        let user = strings(&["--proc-type", "primary"]);
        assert_eq!(
            complete(&user, &[]),
            strings(&["-l", "0", "--proc-type", "primary"])
        );
    }
}
