//! The dpdk backend's start and stop: bad EAL arguments, a missing port or
//! missing hugepages are a clear error and exit code 2 with nothing left in
//! /var/run/dpdk; twenty starts and drains in a row with hugepages leak
//! neither hugepages nor runtime files.
//!
//! The brokers run on DPDK's `net_null` device (no interface needed). Needs
//! root (DPDK's runtime directory, the hugepage pool) and a blipmqd built
//! with the dpdk feature: without them each test prints why and passes,
//! except under CI=true, where it fails.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::dpdk_runtime_dir;

/// Longest a broker may take to start, fail, or drain.
const LIMIT: Duration = Duration::from_secs(30);
/// Starts and stops in a row.
const ROUNDS: usize = 20;
/// Hugepages of 2 MiB each broker's EAL takes (`-m`).
const EAL_MEMORY_MB: usize = 64;

/// Skips (prints why) or, under CI=true, fails.
fn unavailable(why: &str) -> bool {
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "cannot run under CI=true: {why}"
    );
    eprintln!("skipped: {why}");
    false
}

fn available() -> bool {
    if !cfg!(feature = "dpdk") {
        return unavailable(
            "blipmqd built without the dpdk feature (cargo test --features blipmq-dataplane/dpdk)",
        );
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return unavailable("not root");
    }
    true
}

/// A file prefix of this test's own; its runtime directory is removed when
/// the value goes, so that a failed test (whose broker was killed) leaves
/// nothing behind either. The assertions check it is gone before that.
struct Prefix(String);

impl std::ops::Deref for Prefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(dpdk_runtime_dir(&self.0));
    }
}

fn prefix(what: &str) -> Prefix {
    Prefix(format!("bq-life-{what}-{}", std::process::id()))
}

/// `blipmqd --backend dpdk` on net_null with `extra` EAL arguments.
fn broker(prefix: &str, flags: &[&str], eal: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blipmqd"));
    command
        .args(["--backend", "dpdk", "--ip", "198.18.250.2/24"])
        .args(["--listen", "0.0.0.0:9999", "--workers", "1"])
        .args(flags)
        .args([
            "--",
            "--no-pci",
            "--file-prefix",
            prefix,
            "--vdev=net_null0",
        ])
        .args(eal)
        .env("RUST_LOG", "info")
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a broker that must fail to start: its exit status and stderr.
fn failed_start(mut command: Command) -> (ExitStatus, String) {
    let mut child = command.spawn().expect("spawn blipmqd");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let status = wait_within(&mut child, LIMIT).expect("blipmqd exits");
    let stderr = rx.recv_timeout(LIMIT).unwrap_or_default();
    (status, stderr)
}

fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        // std has no timed wait on a child: poll its state.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_no_runtime_dir(prefix: &str) {
    let dir = dpdk_runtime_dir(prefix);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[test]
fn bad_eal_arguments_exit_2_and_leave_nothing() {
    if !available() {
        return;
    }
    let prefix = prefix("badarg");
    let (status, stderr) = failed_start(broker(&prefix, &[], &["--no-huge", "--bogus-option"]));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("blipmqd: cannot start") && stderr.contains("rte_eal_init"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_no_runtime_dir(&prefix);
}

#[test]
fn a_missing_port_exits_2_and_names_the_ports() {
    if !available() {
        return;
    }
    let prefix = prefix("noport");
    let (status, stderr) = failed_start(broker(
        &prefix,
        &["--dpdk-port", "net_nothing9"],
        &["--no-huge", "-m", "64"],
    ));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no port \"net_nothing9\"") && stderr.contains("0 (net_null)"),
        "{stderr}"
    );
    assert_no_runtime_dir(&prefix);
}

#[test]
fn too_few_hugepages_exit_2_with_a_hint() {
    if !available() {
        return;
    }
    let prefix = prefix("nohuge");
    // More hugepage memory than any machine here has (1 TiB).
    let (status, stderr) = failed_start(broker(&prefix, &[], &["-m", "1048576"]));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("hugepages") && stderr.contains("--no-huge"),
        "{stderr}"
    );
    assert_no_runtime_dir(&prefix);
}

/// The 2 MiB hugepage pool, put back as it was when dropped.
struct HugepagePool {
    original: usize,
}

const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

fn read_count(name: &str) -> usize {
    std::fs::read_to_string(Path::new(POOL).join(name))
        .unwrap_or_else(|error| panic!("{POOL}/{name}: {error}"))
        .trim()
        .parse()
        .expect("a number")
}

impl HugepagePool {
    /// At least `pages` free 2 MiB pages, reserved with the operator's
    /// script (hugepage-setup/hugepages.sh).
    fn reserve_free(pages: usize) -> Result<HugepagePool, String> {
        let original = read_count("nr_hugepages");
        let free = read_count("free_hugepages");
        let pool = HugepagePool { original };
        if free < pages {
            let want = original + pages - free;
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace")
                .join("hugepage-setup/hugepages.sh");
            let output = Command::new(script)
                .args(["--size", "2M", "--pages", &want.to_string(), "--no-mount"])
                .stdin(Stdio::null())
                .output()
                .map_err(|error| format!("hugepages.sh: {error}"))?;
            if !output.status.success() {
                return Err(format!(
                    "hugepages.sh --pages {want}: {}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        Ok(pool)
    }
}

impl Drop for HugepagePool {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Path::new(POOL).join("nr_hugepages"),
            self.original.to_string(),
        );
    }
}

/// Files in every hugetlbfs mount.
fn hugetlbfs_files() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut files = Vec::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) == Some(&"hugetlbfs") {
            if let Ok(entries) = std::fs::read_dir(fields[1]) {
                files.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    files.sort();
    files
}

/// Starts a broker and waits for its listening line; returns it and its
/// log so far.
fn start(prefix: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = broker(prefix, &[], &["-m", &EAL_MEMORY_MB.to_string()])
        .spawn()
        .expect("spawn blipmqd");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
        }
        let _ = tx.send(log);
    });
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("blipmqd listening on") {
                let _ = line_tx.send(line);
            }
        }
    });
    if line_rx.recv_timeout(LIMIT).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "no listening line within {LIMIT:?}:\n{}",
            rx.recv_timeout(LIMIT).unwrap_or_default()
        );
    }
    (child, rx)
}

#[test]
fn twenty_starts_and_drains_with_hugepages_leak_nothing() {
    if !available() {
        return;
    }
    let _lock = common::system_lock::SystemLock::take();
    let pool = match HugepagePool::reserve_free(EAL_MEMORY_MB / 2 + 16) {
        Ok(pool) => pool,
        Err(why) => {
            unavailable(&format!("cannot reserve 2 MiB hugepages: {why}"));
            return;
        }
    };
    let free_before = read_count("free_hugepages");
    let files_before = hugetlbfs_files();
    let prefix = prefix("rounds");
    for round in 0..ROUNDS {
        let (mut child, log) = start(&prefix);
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = wait_within(&mut child, LIMIT);
        let log = log.recv_timeout(LIMIT).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: {status:?}\n{log}"
        );
        assert!(
            log.contains("the mbuf pool is in hugepages"),
            "round {round}: the pool is not in hugepages:\n{log}"
        );
        assert_eq!(
            read_count("free_hugepages"),
            free_before,
            "round {round}: hugepages not given back\n{log}"
        );
        assert_eq!(hugetlbfs_files(), files_before, "round {round}");
        assert_no_runtime_dir(&prefix);
    }
    drop(pool);
}
