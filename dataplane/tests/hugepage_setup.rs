//! The operator scripts in `hugepage-setup/`, run as an operator would.
//!
//! - `--help` and usage errors (exit 2) of both scripts;
//! - `hugepages.sh --check [--need]`, and `--dry-run` of reserving and
//!   releasing: the exact sysfs writes and mounts it prints, and that
//!   neither /sys nor /proc/mounts changed;
//! - `bind-nic.sh` refusing the default route's NIC, `lo` and (as root) a
//!   veth, without calling modprobe or dpdk-devbind.py;
//! - `bind-nic.sh` binding and restoring a NIC in a fake sysfs tree, with a
//!   stand-in dpdk-devbind.py (there is no VFIO on the test machines, and a
//!   real NIC must never be bound by a test);
//! - the boot unit and its env file agree with the scripts;
//! - as root, a real reservation of 4 pages of 2 MiB into a temporary
//!   hugetlbfs mount, the refusal to release it while a file in it is
//!   mapped, and the release; a guard restores the original pool size and
//!   unmounts on failure. Without root it prints `skipped: not root`, and
//!   fails under CI=true.
//!
//! Tests that read or change the machine's hugepage pools, mounts or NIC
//! drivers hold [`SystemLock`] (a `flock` on one file, so they serialise
//! across threads and across test processes of other checkouts too).
//! Every script run is bounded by [`SCRIPT_TIMEOUT`].

#[path = "system_lock/mod.rs"]
mod system_lock;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use system_lock::SystemLock;

/// Longest any one script run may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
const HUGEPAGES_2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn script(name: &str) -> PathBuf {
    repo().join("hugepage-setup").join(name)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints why the test skips, or under CI=true fails with it.
fn skip(why: &str) {
    assert!(!ci(), "cannot run under CI=true: {why}");
    eprintln!("skipped: {why}");
}

// ---------------------------------------------------------------------------
// Running the scripts

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Run {
    /// Asserts `ok`, or fails saying `why`, with the script's output.
    fn check(&self, ok: bool, why: impl std::fmt::Display) -> &Run {
        assert!(
            ok,
            "{}: {why}\n--- stdout\n{}--- stderr\n{}",
            self.what, self.stdout, self.stderr
        );
        self
    }

    fn expect(&self, code: i32) -> &Run {
        let why = format!("exit {:?}, expected {code}", self.code);
        self.check(self.code == Some(code), why)
    }

    /// Asserts that stdout has `line` as one of its lines.
    fn has_line(&self, line: &str) -> &Run {
        let found = self.stdout.lines().any(|l| l == line);
        self.check(found, format!("no line {line:?} in stdout"))
    }

    fn out_has(&self, text: &str) -> &Run {
        self.check(
            self.stdout.contains(text),
            format!("{text:?} not in stdout"),
        )
    }

    fn err_has(&self, text: &str) -> &Run {
        self.check(
            self.stderr.contains(text),
            format!("{text:?} not in stderr"),
        )
    }

    /// The lines a --dry-run printed as actions.
    fn actions(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("dry-run: ") || l.starts_with("run: "))
            .collect()
    }
}

/// Runs `program args` with `env` set (and the scripts' test variables
/// cleared unless given), bounded by [`SCRIPT_TIMEOUT`].
fn run_cmd(program: &Path, args: &[&str], env: &[(&str, OsString)]) -> Run {
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "BLIPMQ_SYSFS",
        "BLIPMQ_HUGEPAGES_STATE_DIR",
        "BLIPMQ_NIC_STATE_DIR",
        "DPDK_DEVBIND",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let err_reader = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            err
        });
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let err = err_reader.join().unwrap_or_default();
        let status = child.wait();
        let _ = done_tx.send((status, out, err));
    });
    match done_rx.recv_timeout(SCRIPT_TIMEOUT) {
        Ok((status, stdout, stderr)) => Run {
            code: status.expect("wait").code(),
            stdout,
            stderr,
            what,
        },
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; pid is our child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} did not finish within {SCRIPT_TIMEOUT:?}");
        }
    }
}

fn hugepages(args: &[&str], state: &TempDir) -> Run {
    run_cmd(
        &script("hugepages.sh"),
        args,
        &[("BLIPMQ_HUGEPAGES_STATE_DIR", state.path.clone().into())],
    )
}

fn bind_nic(args: &[&str], env: &[(&str, OsString)]) -> Run {
    run_cmd(&script("bind-nic.sh"), args, env)
}

// ---------------------------------------------------------------------------
// Temporary directories, the system lock, snapshots

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A directory removed (with what is in it) on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "blipmq-hp-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("temp dir");
        TempDir { path }
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|error| format!("<{error}>"))
}

fn read_count(path: &str) -> u64 {
    let text = read_trim(Path::new(path));
    text.parse()
        .unwrap_or_else(|_| panic!("{path}: not a number: {text}"))
}

fn glob_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn hugetlbfs_mounts() -> Vec<String> {
    read_trim(Path::new("/proc/mounts"))
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        .map(str::to_string)
        .collect()
}

/// What the scripts may change: every pool's size, hugetlbfs mounts, the
/// driver of every PCI device, the vfio modules and no-IOMMU mode.
fn snapshot() -> String {
    let mut out = String::new();
    let mut pools: Vec<PathBuf> = glob_dirs(Path::new("/sys/kernel/mm/hugepages"));
    for node in glob_dirs(Path::new("/sys/devices/system/node")) {
        if node
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("node"))
        {
            pools.extend(glob_dirs(&node.join("hugepages")));
        }
    }
    for pool in pools {
        for file in ["nr_hugepages", "nr_overcommit_hugepages"] {
            let path = pool.join(file);
            if path.exists() {
                out += &format!("{} {}\n", path.display(), read_trim(&path));
            }
        }
    }
    for line in hugetlbfs_mounts() {
        out += &format!("mount {line}\n");
    }
    for device in glob_dirs(Path::new("/sys/bus/pci/devices")) {
        let driver = fs::read_link(device.join("driver"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        out += &format!("{} driver {driver}\n", device.display());
    }
    for module in ["vfio", "vfio_pci", "vfio_iommu_type1"] {
        out += &format!(
            "module {module} {}\n",
            Path::new("/sys/module").join(module).exists()
        );
    }
    out += &format!(
        "noiommu {}\n",
        read_trim(Path::new(
            "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode"
        ))
    );
    out
}

fn assert_unchanged(before: &str, what: &str) {
    let after = snapshot();
    assert_eq!(before, after, "{what} changed the system");
}

/// Files in `dir` (the scripts' state directories must stay empty in a dry run).
fn entries(dir: &Path) -> Vec<String> {
    glob_dirs(dir)
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// --help and usage errors

#[test]
fn help_and_usage_errors() {
    let state = TempDir::new("usage");
    let help = hugepages(&["--help"], &state);
    help.expect(0);
    for text in [
        "--size 2M|1G",
        "--pages N",
        "--memory SIZE",
        "--node K",
        "--mount DIR",
        "--release",
        "--force",
        "--check",
        "--need SIZE",
        "--dry-run",
    ] {
        help.out_has(text);
    }
    let help = bind_nic(&["--help"], &[]);
    help.expect(0);
    for text in [
        "--noiommu",
        "--unbind",
        "--driver DRIVER",
        "--check",
        "--dry-run",
        "default route",
        "-a 0000:03:00.0",
    ] {
        help.out_has(text);
    }

    for args in [
        &[][..],
        &["--pages"],
        &["--pages", "x"],
        &["--pages", "0"],
        &["--pages", "-1"],
        &["--size", "2", "--pages", "1"],
        &["--memory", "512"],
        &["--pages", "1", "--memory", "2M"],
        &["--bogus"],
        &["--check", "--dry-run"],
        &["--check", "--pages", "2"],
        &["--check", "--release"],
        &["--release", "--memory", "2M"],
        &["--pages", "1", "--need", "2M"],
        &["--pages", "1", "--force"],
        &["--node", "x", "--pages", "1"],
        &["--pages", "1", "--no-mount", "--mount", "/x"],
        &["stray"],
    ] {
        hugepages(args, &state)
            .expect(2)
            .err_has("Try 'hugepages.sh --help'");
    }
    for args in [
        &[][..],
        &["--bogus"],
        &["eth0", "eth1"],
        &["--check", "--dry-run"],
        &["--unbind"],
        &["--unbind", "--noiommu", "eth9"],
        &["--driver", "e1000e", "eth9"],
        &["--unbind", "--driver"],
        &["--check", "--unbind", "eth9"],
    ] {
        bind_nic(args, &[])
            .expect(2)
            .err_has("Try 'bind-nic.sh --help'");
    }
    // Two actions at once: the message names both.
    hugepages(&["--check", "--release"], &state)
        .expect(2)
        .err_has("--check and --release exclude each other");
    bind_nic(&["--check", "--unbind", "eth9"], &[])
        .expect(2)
        .err_has("--check and --unbind exclude each other");
    // Well formed but impossible: exit 1, with the reason.
    hugepages(&["--size", "3M", "--pages", "1", "--dry-run"], &state)
        .expect(1)
        .err_has("offers no 3M pages");
    hugepages(&["--node", "4095", "--pages", "1", "--dry-run"], &state)
        .expect(1)
        .err_has("no NUMA node 4095");
    bind_nic(&["--dry-run", "no-such-nic0"], &[])
        .expect(1)
        .err_has("no interface or PCI device named no-such-nic0");
    assert!(entries(&state.path).is_empty());
}

// ---------------------------------------------------------------------------
// hugepages.sh --check and --dry-run

#[test]
fn check_reports_pools_mounts_and_need() {
    if !Path::new(HUGEPAGES_2M).exists() {
        return skip("this kernel has no 2 MiB hugepages");
    }
    let _lock = SystemLock::take();
    let state = TempDir::new("check");
    let before = snapshot();
    let nr = read_count(&format!("{HUGEPAGES_2M}/nr_hugepages"));
    let free = read_count(&format!("{HUGEPAGES_2M}/free_hugepages"));
    let check = hugepages(&["--check"], &state);
    check
        .expect(0)
        .out_has(&format!("2M   reserved {nr}, free {free},"))
        .out_has("hugetlbfs mounts (/proc/mounts):");
    if Path::new("/sys/devices/system/node/node0").exists() {
        check.out_has("node0: reserved ");
    }
    if hugetlbfs_mounts().is_empty() {
        check.out_has("none (DPDK needs one");
    }
    // Nobody has a terabyte of free hugepages.
    hugepages(&["--check", "--need", "1T"], &state)
        .expect(1)
        .out_has("need 1024G: NO");
    hugepages(&["--check", "--size", "2M", "--need", "0M"], &state)
        .expect(0)
        .out_has("need 0K: yes");
    assert_unchanged(&before, "hugepages.sh --check");
    assert!(entries(&state.path).is_empty());
}

#[test]
fn dry_run_reserve_prints_the_writes_and_changes_nothing() {
    if !Path::new(HUGEPAGES_2M).exists() {
        return skip("this kernel has no 2 MiB hugepages");
    }
    let _lock = SystemLock::take();
    let state = TempDir::new("dry-reserve");
    let tmp = TempDir::new("dry-mnt");
    let before = snapshot();
    let nr = read_count(&format!("{HUGEPAGES_2M}/nr_hugepages"));
    let mount = tmp.str("huge");

    let pages = (nr + 4).to_string();
    let run = hugepages(
        &[
            "--size",
            "2M",
            "--pages",
            &pages,
            "--mount",
            &mount,
            "--dry-run",
        ],
        &state,
    );
    run.expect(0);
    let record = format!("dry-run: record \"{HUGEPAGES_2M}/nr_hugepages {nr}\" in ");
    assert_eq!(
        run.actions(),
        [
            format!("{record}{}", state.str("counts")).as_str(),
            &format!("dry-run: echo {pages} > {HUGEPAGES_2M}/nr_hugepages"),
            &format!("dry-run: mkdir -p {mount}"),
            &format!(
                "dry-run: record \"{mount} made\" in {}",
                state.str("mounts")
            ),
            &format!("dry-run: mount -t hugetlbfs -o pagesize=2M nodev {mount}"),
        ],
        "{}",
        run.stdout
    );
    assert!(!Path::new(&mount).exists(), "a dry run made {mount}");

    // --memory, per node: 6 MiB more than node 0 has = 3 pages more.
    let node0 = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";
    if Path::new(node0).exists() {
        let on_node = read_count(node0);
        let memory = format!("{}M", (on_node + 3) * 2);
        hugepages(
            &[
                "--memory",
                &memory,
                "--node",
                "0",
                "--no-mount",
                "--dry-run",
            ],
            &state,
        )
        .expect(0)
        .has_line(&format!("dry-run: echo {} > {node0}", on_node + 3));
    }
    // Rounded up to whole pages.
    hugepages(&["--memory", "3M", "--no-mount", "--dry-run"], &state)
        .expect(0)
        .out_has("rounded up to 2 pages");

    // 1 GiB pages mount with pagesize=1G.
    let one_g = "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages";
    if Path::new(one_g).exists() {
        let pages = (read_count(one_g) + 1).to_string();
        let mount = tmp.str("huge-1G");
        hugepages(
            &[
                "--size",
                "1G",
                "--pages",
                &pages,
                "--mount",
                &mount,
                "--dry-run",
            ],
            &state,
        )
        .expect(0)
        .has_line(&format!("dry-run: echo {pages} > {one_g}"))
        .has_line(&format!(
            "dry-run: mount -t hugetlbfs -o pagesize=1G nodev {mount}"
        ));
    }
    assert_unchanged(&before, "hugepages.sh --dry-run");
    assert!(entries(&state.path).is_empty(), "a dry run wrote records");
}

#[test]
fn dry_run_release_prints_the_writes_and_changes_nothing() {
    if !Path::new(HUGEPAGES_2M).exists() {
        return skip("this kernel has no 2 MiB hugepages");
    }
    let _lock = SystemLock::take();
    let state = TempDir::new("dry-release");
    let tmp = TempDir::new("dry-rel-mnt");
    let before = snapshot();
    let nr = read_count(&format!("{HUGEPAGES_2M}/nr_hugepages"));
    // As if hugepages.sh had grown the pool from nr + 3 and mounted a
    // directory that is gone since.
    let gone = tmp.str("gone");
    let counts = format!("{HUGEPAGES_2M}/nr_hugepages {}\n", nr + 3);
    fs::write(state.join("counts"), &counts).unwrap();
    fs::write(state.join("mounts"), format!("{gone} made\n")).unwrap();

    let run = hugepages(&["--release", "--dry-run"], &state);
    run.expect(0)
        .has_line(&format!("no hugetlbfs mounted on {gone}"))
        .has_line(&format!(
            "dry-run: echo {} > {HUGEPAGES_2M}/nr_hugepages",
            nr + 3
        ));
    assert_eq!(run.actions().len(), 1, "{}", run.stdout);
    // Records stay until a real release.
    assert_eq!(fs::read_to_string(state.join("counts")).unwrap(), counts);

    // Without records: every pool goes to 0 (only pools not at 0 are written).
    let empty = TempDir::new("dry-release-none");
    let none = tmp.str("none");
    let run = hugepages(
        &["--release", "--size", "2M", "--mount", &none, "--dry-run"],
        &empty,
    );
    run.expect(0)
        .has_line(&format!("no hugetlbfs mounted on {none}"))
        .out_has("giving back every page of the 2M pool");
    if nr > 0 {
        run.has_line(&format!("dry-run: echo 0 > {HUGEPAGES_2M}/nr_hugepages"));
    } else {
        run.has_line(&format!("{HUGEPAGES_2M}/nr_hugepages: already 0"));
    }
    assert_unchanged(&before, "hugepages.sh --release --dry-run");
    assert!(entries(&empty.path).is_empty(), "a dry run wrote records");
}

// ---------------------------------------------------------------------------
// bind-nic.sh on this machine: refusals only

/// A PATH whose `modprobe` and `dpdk-devbind.py` only log their calls and
/// fail, for runs that must refuse before calling either.
fn tripwire(dir: &TempDir) -> Vec<(&'static str, OsString)> {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = dir.str("calls.log");
    for name in ["modprobe", "dpdk-devbind.py"] {
        let path = bin.join(name);
        fs::write(
            &path,
            format!("#!/bin/sh\necho \"{name} $*\" >> '{log}'\nexit 99\n"),
        )
        .unwrap();
        make_executable(&path);
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    vec![
        ("PATH", path.into()),
        ("DPDK_DEVBIND", bin.join("dpdk-devbind.py").into_os_string()),
        ("BLIPMQ_NIC_STATE_DIR", dir.join("state").into_os_string()),
    ]
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn assert_no_calls(dir: &TempDir) {
    let log = dir.join("calls.log");
    assert!(
        !log.exists(),
        "modprobe or dpdk-devbind.py was called: {}",
        read_trim(&log)
    );
    assert!(
        entries(&dir.join("state")).is_empty(),
        "a record was written"
    );
}

/// The interfaces that carry a default route (IPv4 or IPv6).
fn default_route_interfaces() -> Vec<String> {
    let mut found = Vec::new();
    for family in ["-4", "-6"] {
        let Ok(out) = Command::new("ip")
            .args([family, "route", "show", "default"])
            .stdin(Stdio::null())
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                if pair[0] == "dev" && !found.iter().any(|f| f == pair[1]) {
                    found.push(pair[1].to_string());
                }
            }
        }
    }
    found
}

/// The PCI address of an interface's device (virtio-net: the parent of
/// virtioN), or None for a virtual interface.
fn pci_address(interface: &str) -> Option<String> {
    let mut device = fs::canonicalize(format!("/sys/class/net/{interface}/device")).ok()?;
    let is_pci = |name: &str| {
        let b = name.as_bytes();
        b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
    };
    for _ in 0..2 {
        let name = device.file_name()?.to_string_lossy().to_string();
        if is_pci(&name) {
            return Some(name);
        }
        device = device.parent()?.to_path_buf();
    }
    None
}

#[test]
fn bind_refuses_the_default_route_nic() {
    let interfaces = default_route_interfaces();
    if interfaces.is_empty() {
        eprintln!("skipped: no default route on this machine");
        return;
    }
    let _lock = SystemLock::take();
    let before = snapshot();
    for interface in &interfaces {
        let dir = TempDir::new("defroute");
        let env = tripwire(&dir);
        let mut names = vec![interface.clone()];
        let pci = pci_address(interface);
        names.extend(pci.clone());
        for name in &names {
            // Real mode (the tripwires catch any modprobe or devbind call)
            // and dry run.
            for dry in [false, true] {
                let mut args = vec![name.as_str()];
                if dry {
                    args.insert(0, "--dry-run");
                }
                let run = bind_nic(&args, &env);
                run.expect(1);
                assert!(run.actions().is_empty(), "{}", run.stdout);
                if pci.is_some() {
                    run.err_has("refusing to bind")
                        .err_has(&format!("{interface} ("))
                        .err_has("carries the default route");
                } else {
                    // A container's veth, say.
                    run.err_has(&format!("refusing {interface}: it has no PCI device"));
                }
            }
        }
        if let Some(pci) = &pci {
            let check = bind_nic(&["--check"], &env);
            check
                .expect(0)
                .out_has(&format!("interface {interface}:"))
                .out_has(&format!(
                    "not bindable: {interface} ({pci}) carries the default route"
                ));
            bind_nic(&["--check", pci], &env)
                .expect(1)
                .out_has(&format!("{pci}: NOT bound to vfio-pci"));
        }
        assert_no_calls(&dir);
    }
    assert_unchanged(&before, "bind-nic.sh on the default route's NIC");
}

#[test]
fn bind_refuses_lo_and_a_veth() {
    let dir = TempDir::new("virtual");
    let env = tripwire(&dir);
    for args in [&["lo"][..], &["--dry-run", "lo"]] {
        bind_nic(args, &env)
            .expect(1)
            .err_has("refusing lo: it has no PCI device (loopback interface)");
    }
    assert_no_calls(&dir);

    if !is_root() {
        return skip("not root (the veth case needs a network namespace)");
    }
    // A veth in a namespace of its own (`ip netns exec` shows the script
    // that namespace's /sys/class/net).
    let ns = Netns::new();
    ip(&[
        "-n", &ns.name, "link", "add", "bqv0", "type", "veth", "peer", "name", "bqv1",
    ]);
    let mut args = vec!["netns", "exec", &ns.name, "bash"];
    let bind = script("bind-nic.sh").display().to_string();
    args.push(&bind);
    for extra in [&["bqv0"][..], &["--dry-run", "bqv1"]] {
        let mut args = args.clone();
        args.extend_from_slice(extra);
        let run = run_cmd(Path::new("ip"), &args, &env);
        run.expect(1)
            .err_has("it has no PCI device (veth interface)");
    }
    assert_no_calls(&dir);
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .status()
        .expect("ip");
    assert!(status.success(), "ip {} failed", args.join(" "));
}

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "bq-hp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// bind-nic.sh on a fake sysfs tree

const FAKE_PCI: &str = "0000:03:00.0";
const FAKE_IF: &str = "bqfake0";

/// A sysfs tree with one PCI NIC (e1000e, interface bqfake0, IOMMU group
/// 7), and a PATH where `ip` reports what the test says, `modprobe` logs,
/// and `dpdk-devbind.py` logs and moves the fake NIC between drivers as the
/// real one would.
struct FakeHost {
    dir: TempDir,
    sys: PathBuf,
}

impl FakeHost {
    fn new() -> FakeHost {
        let dir = TempDir::new("fake");
        let sys = dir.join("sys");
        let device = sys.join("devices/pci0000:00").join(FAKE_PCI);
        for sub in [
            "bus/pci/devices",
            "bus/pci/drivers/e1000e",
            "bus/pci/drivers/vfio-pci",
            "class/net",
            "module/e1000e",
            "module/vfio_pci",
            "module/vfio/parameters",
            "kernel/iommu_groups/7",
        ] {
            fs::create_dir_all(sys.join(sub)).unwrap();
        }
        fs::create_dir_all(&device).unwrap();
        for (file, value) in [
            ("class", "0x020000"),
            ("vendor", "0x8086"),
            ("device", "0x10d3"),
            ("numa_node", "0"),
        ] {
            fs::write(device.join(file), format!("{value}\n")).unwrap();
        }
        fs::write(
            sys.join("module/vfio/parameters/enable_unsafe_noiommu_mode"),
            "N\n",
        )
        .unwrap();
        let link = |target: &Path, at: &Path| std::os::unix::fs::symlink(target, at).unwrap();
        link(&sys.join("bus/pci"), &device.join("subsystem"));
        link(
            &sys.join("kernel/iommu_groups/7"),
            &device.join("iommu_group"),
        );
        link(&device, &sys.join("bus/pci/devices").join(FAKE_PCI));

        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let log = dir.str("calls.log");
        let fake_ip = format!(
            r#"#!/bin/bash
case "$*" in
    *"addr show dev {FAKE_IF}"*) cat '{addrs}' 2>/dev/null || true ;;
    *"addr show dev"*) echo "Device \"${{@: -1}}\" does not exist." >&2; exit 1 ;;
    *"route show default"*) cat '{routes}' 2>/dev/null || true ;;
    *) echo '[]' ;;
esac
"#,
            addrs = dir.str("addrs"),
            routes = dir.str("routes"),
        );
        let fake_modprobe = format!("#!/bin/bash\necho \"modprobe $*\" >> '{log}'\n");
        let fake_devbind = format!(
            r#"#!/bin/bash
# dpdk-devbind.py --bind=DRIVER PCI | --unbind PCI, on the fake tree.
echo "dpdk-devbind.py $*" >> '{log}'
sys='{sys}'
case $1 in --bind=*) driver=${{1#--bind=}} ;; --unbind) driver= ;; *) exit 2 ;; esac
dev=$(readlink -f "$sys/bus/pci/devices/$2")
[ -d "$dev" ] || exit 1
rm -f "$dev/driver" "$sys/class/net/{FAKE_IF}"
rm -rf "$dev/net"
[ -z "$driver" ] || ln -s "$sys/bus/pci/drivers/$driver" "$dev/driver"
if [ "$driver" = e1000e ]; then
    mkdir -p "$dev/net/{FAKE_IF}"
    ln -s "$dev" "$dev/net/{FAKE_IF}/device"
    ln -s "$dev/net/{FAKE_IF}" "$sys/class/net/{FAKE_IF}"
fi
"#,
            sys = sys.display()
        );
        for (name, text) in [
            ("ip", fake_ip),
            ("modprobe", fake_modprobe),
            ("dpdk-devbind.py", fake_devbind),
        ] {
            fs::write(bin.join(name), text).unwrap();
            make_executable(&bin.join(name));
        }
        let host = FakeHost { dir, sys };
        // Start as the kernel leaves it: on e1000e, with its interface.
        host.devbind(&["--bind=e1000e", FAKE_PCI]);
        let _ = fs::remove_file(host.dir.join("calls.log"));
        host
    }

    fn devbind(&self, args: &[&str]) {
        let run = run_cmd(&self.dir.join("bin/dpdk-devbind.py"), args, &[]);
        run.expect(0);
    }

    fn env(&self) -> Vec<(&'static str, OsString)> {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        vec![
            ("BLIPMQ_SYSFS", self.sys.clone().into_os_string()),
            (
                "BLIPMQ_NIC_STATE_DIR",
                self.dir.join("state").into_os_string(),
            ),
            ("PATH", path.into()),
        ]
    }

    fn bind_nic(&self, args: &[&str]) -> Run {
        bind_nic(args, &self.env())
    }

    fn driver(&self) -> String {
        fs::read_link(
            self.sys
                .join("bus/pci/devices")
                .join(FAKE_PCI)
                .join("driver"),
        )
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .unwrap_or_default()
    }

    /// The calls made to the fake modprobe and dpdk-devbind.py, taken.
    fn calls(&self) -> Vec<String> {
        let path = self.dir.join("calls.log");
        let text = fs::read_to_string(&path).unwrap_or_default();
        let _ = fs::remove_file(&path);
        text.lines().map(str::to_string).collect()
    }

    fn record(&self) -> Option<String> {
        fs::read_to_string(self.dir.join("state").join(FAKE_PCI)).ok()
    }

    fn noiommu(&self) -> String {
        read_trim(
            &self
                .sys
                .join("module/vfio/parameters/enable_unsafe_noiommu_mode"),
        )
    }
}

#[test]
fn bind_and_unbind_a_fake_nic_restores_its_driver() {
    let host = FakeHost::new();
    let devbind = host.dir.join("bin/dpdk-devbind.py").display().to_string();
    let param = host
        .sys
        .join("module/vfio/parameters/enable_unsafe_noiommu_mode")
        .display()
        .to_string();

    host.bind_nic(&["--check"])
        .expect(0)
        .out_has(&format!(
            "{FAKE_PCI}  8086:10d3  driver e1000e  numa node 0"
        ))
        .out_has(&format!("interface {FAKE_IF}: no addresses"))
        .out_has(&format!("bindable: bind-nic.sh {FAKE_PCI}"));

    // Dry run: the devbind call, and nothing done.
    let run = host.bind_nic(&["--dry-run", FAKE_IF]);
    run.expect(0);
    assert_eq!(
        run.actions(),
        [
            format!(
                "dry-run: record \"driver e1000e\" and \"interfaces {FAKE_IF}\" in {}/{FAKE_PCI}",
                host.dir.str("state")
            )
            .as_str(),
            &format!("dry-run: {devbind} --bind=vfio-pci {FAKE_PCI}"),
        ],
        "{}",
        run.stdout
    );
    assert_eq!(host.driver(), "e1000e");
    assert!(host.calls().is_empty());
    assert!(host.record().is_none());

    // Bind by interface name; the record keeps the driver and the name.
    host.bind_nic(&[FAKE_IF])
        .expect(0)
        .has_line(&format!("run: {devbind} --bind=vfio-pci {FAKE_PCI}"))
        .out_has(&format!("-a {FAKE_PCI}"));
    assert_eq!(host.driver(), "vfio-pci");
    assert_eq!(
        host.calls(),
        [format!("dpdk-devbind.py --bind=vfio-pci {FAKE_PCI}")]
    );
    assert_eq!(
        host.record().as_deref(),
        Some(format!("driver e1000e\ninterfaces {FAKE_IF}\n").as_str())
    );
    host.bind_nic(&["--check", FAKE_PCI])
        .expect(0)
        .out_has("bound to vfio-pci: ready for DPDK")
        .out_has("(recorded driver: e1000e)");
    // Again: nothing to do.
    host.bind_nic(&[FAKE_IF])
        .expect(0)
        .out_has("already bound to vfio-pci");
    assert!(host.calls().is_empty());

    // Unbind by the interface name it had: back to e1000e.
    let run = host.bind_nic(&["--unbind", "--dry-run", FAKE_IF]);
    run.expect(0);
    assert_eq!(
        run.actions(),
        [format!("dry-run: {devbind} --bind=e1000e {FAKE_PCI}").as_str()]
    );
    assert_eq!(host.driver(), "vfio-pci");
    host.bind_nic(&["--unbind", FAKE_IF])
        .expect(0)
        .out_has(&format!(
            "restored: {FAKE_PCI} on e1000e (interface {FAKE_IF})"
        ));
    assert_eq!(host.driver(), "e1000e");
    assert_eq!(
        host.calls(),
        [format!("dpdk-devbind.py --bind=e1000e {FAKE_PCI}")]
    );
    assert!(host.record().is_none());
    host.bind_nic(&["--check", FAKE_PCI])
        .expect(1)
        .out_has("NOT bound to vfio-pci (driver: e1000e)");
    // On its kernel driver there is nothing to unbind.
    host.bind_nic(&["--unbind", FAKE_IF])
        .expect(0)
        .out_has("nothing to unbind");
    assert!(host.calls().is_empty());

    // vfio-pci not loaded: modprobe first.
    fs::remove_dir(host.sys.join("module/vfio_pci")).unwrap();
    let run = host.bind_nic(&["--dry-run", FAKE_PCI]);
    run.expect(0);
    assert_eq!(
        run.actions()[0],
        "dry-run: modprobe vfio-pci",
        "{}",
        run.stdout
    );
    fs::create_dir(host.sys.join("module/vfio_pci")).unwrap();

    // No IOMMU: refused, unless --noiommu, which writes Y first.
    fs::remove_dir(host.sys.join("kernel/iommu_groups/7")).unwrap();
    host.bind_nic(&["--dry-run", FAKE_PCI])
        .expect(1)
        .err_has("no IOMMU groups")
        .err_has("--noiommu");
    let run = host.bind_nic(&["--dry-run", "--noiommu", FAKE_PCI]);
    run.expect(0)
        .has_line(&format!("dry-run: echo Y > {param}"))
        .has_line(&format!("dry-run: {devbind} --bind=vfio-pci {FAKE_PCI}"));
    assert_eq!(host.noiommu(), "N");
    host.bind_nic(&["--noiommu", FAKE_PCI])
        .expect(0)
        .has_line(&format!("run: echo Y > {param}"))
        .err_has("unsafe no-IOMMU mode");
    assert_eq!(host.noiommu(), "Y");
    assert_eq!(host.driver(), "vfio-pci");
    host.bind_nic(&["--unbind", FAKE_PCI]).expect(0);
    assert_eq!(host.driver(), "e1000e");
    host.calls();

    // An address (even link-local), or the default route: refused.
    fs::write(
        host.dir.join("addrs"),
        format!("5: {FAKE_IF}    inet6 fe80::1/64 scope link \\       valid_lft forever\n"),
    )
    .unwrap();
    host.bind_nic(&["--noiommu", FAKE_IF])
        .expect(1)
        .err_has("has IP addresses: fe80::1/64")
        .err_has(&format!("ip addr flush dev {FAKE_IF}"));
    fs::remove_file(host.dir.join("addrs")).unwrap();
    fs::write(
        host.dir.join("routes"),
        format!("default via 10.0.0.1 dev {FAKE_IF} proto static\n"),
    )
    .unwrap();
    host.bind_nic(&["--noiommu", FAKE_PCI])
        .expect(1)
        .err_has("carries the default route");
    fs::remove_file(host.dir.join("routes")).unwrap();
    assert!(host.calls().is_empty());
    assert_eq!(host.driver(), "e1000e");

    // No record: --unbind needs --driver; --driver none leaves it unbound.
    host.devbind(&["--bind=vfio-pci", FAKE_PCI]);
    host.calls();
    host.bind_nic(&["--unbind", FAKE_PCI])
        .expect(1)
        .err_has("give --driver DRIVER");
    host.bind_nic(&["--unbind", "--driver", "none", FAKE_PCI])
        .expect(0)
        .has_line(&format!("run: {devbind} --unbind {FAKE_PCI}"));
    assert_eq!(host.driver(), "");
    // Bound to no driver: bindable (nothing to check), recorded as none.
    host.bind_nic(&["--noiommu", FAKE_PCI]).expect(0);
    assert_eq!(host.record().as_deref(), Some("driver none\ninterfaces \n"));
    host.bind_nic(&["--unbind", FAKE_PCI])
        .expect(0)
        .has_line(&format!("run: {devbind} --unbind {FAKE_PCI}"));
    assert_eq!(host.driver(), "");

    // A kernel driver but no interface here (another netns): refused.
    fs::create_dir_all(host.sys.join("bus/pci/drivers/ixgbe")).unwrap();
    std::os::unix::fs::symlink(
        host.sys.join("bus/pci/drivers/ixgbe"),
        host.sys
            .join("devices/pci0000:00")
            .join(FAKE_PCI)
            .join("driver"),
    )
    .unwrap();
    host.bind_nic(&["--noiommu", FAKE_PCI])
        .expect(1)
        .err_has("has no interface in this network namespace");
}

// ---------------------------------------------------------------------------
// The boot unit

#[test]
fn boot_unit_and_env_file_agree_with_the_scripts() {
    let unit = fs::read_to_string(script("blipmq-hugepages.service")).unwrap();
    let env = fs::read_to_string(script("blipmq-hugepages.env")).unwrap();
    let readme = fs::read_to_string(script("README.md")).unwrap();
    let installed = "/usr/local/lib/blipmq/hugepage-setup/hugepages.sh";
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "Before=blipmqd.service",
        "EnvironmentFile=/etc/default/blipmq-hugepages",
        &format!("ExecStart={installed} $HUGEPAGES_ARGS"),
        &format!("ExecStop={installed} --release $HUGEPAGES_RELEASE_ARGS"),
    ] {
        assert!(unit.lines().any(|l| l == line), "unit: no line {line:?}");
    }
    // The README's install note puts the files where the unit looks.
    for text in [
        "/usr/local/lib/blipmq/hugepage-setup/",
        "/etc/systemd/system/blipmq-hugepages.service",
        "/etc/default/blipmq-hugepages",
        "systemctl enable --now blipmq-hugepages.service",
    ] {
        assert!(readme.contains(text), "README.md does not mention {text}");
    }

    // The env file's arguments are ones hugepages.sh takes.
    let value = |key: &str| -> String {
        let line = env
            .lines()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap_or_else(|| panic!("env file: no {key}="));
        line[key.len() + 1..].trim_matches('"').to_string()
    };
    let start = value("HUGEPAGES_ARGS");
    let stop = value("HUGEPAGES_RELEASE_ARGS");
    if Path::new(HUGEPAGES_2M).exists() {
        let _lock = SystemLock::take();
        let before = snapshot();
        let state = TempDir::new("unit");
        let mut args: Vec<&str> = start.split_whitespace().collect();
        args.push("--dry-run");
        hugepages(&args, &state)
            .expect(0)
            .out_has("2M pages: ")
            .out_has("want 512 (1024 MiB)");
        let mut args: Vec<&str> = vec!["--release"];
        args.extend(stop.split_whitespace());
        args.push("--dry-run");
        let run = hugepages(&args, &state);
        // It releases /dev/hugepages: a DPDK process of someone else's may
        // be using it here.
        if run.code != Some(0) {
            run.expect(1).err_has("refusing to release");
        }
        assert_unchanged(&before, "the unit's commands in a dry run");
    }

    // systemd's own check, where systemd-analyze is installed, on a copy
    // of the unit that runs the script from this checkout.
    let Ok(output) = Command::new("systemd-analyze")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    else {
        eprintln!("systemd-analyze not installed: unit not verified by systemd");
        return;
    };
    if !output.status.success() {
        return;
    }
    let tmp = TempDir::new("unit-verify");
    let copy = tmp.join("blipmq-hugepages.service");
    fs::write(
        &copy,
        unit.replace(installed, &script("hugepages.sh").display().to_string()),
    )
    .unwrap();
    let run = run_cmd(
        Path::new("systemd-analyze"),
        &["verify", &copy.display().to_string()],
        &[],
    );
    run.expect(0);
    assert!(
        !run.stderr.contains("blipmq-hugepages.service:"),
        "systemd-analyze verify: {}",
        run.stderr
    );
}

#[test]
fn scripts_are_shellcheck_clean() {
    let Ok(output) = Command::new("shellcheck")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    else {
        // Not in provision.sh's package list: a lint where it is installed.
        eprintln!("shellcheck not installed: scripts not linted");
        return;
    };
    assert!(output.status.success());
    let paths = [
        script("hugepages.sh"),
        script("bind-nic.sh"),
        script("common.sh"),
    ];
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    // -x: follow the scripts' `. common.sh`.
    let args: Vec<&str> = std::iter::once("-x")
        .chain(paths.iter().map(String::as_str))
        .collect();
    let run = run_cmd(Path::new("shellcheck"), &args, &[]);
    assert_eq!(
        run.code,
        Some(0),
        "shellcheck:\n{}{}",
        run.stdout,
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// A real reservation (root)

/// Restores the 2 MiB pool's size and removes the test's mount, whatever
/// happened.
struct PoolGuard {
    original: u64,
    mount: PathBuf,
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let mount = self.mount.display().to_string();
        if hugetlbfs_mounts()
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some(mount.as_str()))
        {
            let _ = Command::new("umount")
                .args(["-l", &mount])
                .stdin(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir(&self.mount);
        let path = format!("{HUGEPAGES_2M}/nr_hugepages");
        if fs::read_to_string(&path).ok().map(|s| s.trim().to_string())
            != Some(self.original.to_string())
        {
            let _ = fs::write(&path, format!("{}\n", self.original));
        }
    }
}

#[test]
fn real_reservation_mount_refusal_and_release() {
    if !is_root() {
        return skip("not root");
    }
    if !Path::new(HUGEPAGES_2M).exists() {
        return skip("this kernel has no 2 MiB hugepages");
    }
    let _lock = SystemLock::take();
    let state = TempDir::new("real");
    let tmp = TempDir::new("real-mnt");
    let mount = tmp.join("huge");
    let mount_str = mount.display().to_string();
    let nr_path = format!("{HUGEPAGES_2M}/nr_hugepages");
    let original = read_count(&nr_path);
    let mounts_before = hugetlbfs_mounts();
    let _guard = PoolGuard {
        original,
        mount: mount.clone(),
    };
    let want = original + 4;
    let is_ours = |l: &String| l.split_whitespace().nth(1) == Some(mount_str.as_str());

    let run = hugepages(
        &[
            "--size",
            "2M",
            "--pages",
            &want.to_string(),
            "--mount",
            &mount_str,
        ],
        &state,
    );
    if run.code == Some(1) && run.stderr.contains("cannot write") {
        return skip(&format!("the kernel refused the pool size: {}", run.stderr));
    }
    if run.code == Some(3) {
        return skip(&format!(
            "the kernel gave fewer pages than asked: {}",
            run.stderr
        ));
    }
    run.expect(0)
        .has_line(&format!("run: echo {want} > {nr_path}"))
        .has_line(&format!("reserved: {want} 2M pages ({} MiB)", want * 2))
        .has_line(&format!(
            "run: mount -t hugetlbfs -o pagesize=2M nodev {mount_str}"
        ));
    assert_eq!(read_count(&nr_path), want);
    let ours: Vec<String> = hugetlbfs_mounts().into_iter().filter(is_ours).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].contains("pagesize=2M") || !ours[0].contains("pagesize="));

    hugepages(&["--check", "--mount", &mount_str], &state)
        .expect(0)
        .has_line(&format!("  {mount_str}  pagesize 2M, 0 files"))
        .out_has(&format!("{nr_path} back to {original}"));
    hugepages(&["--check", "--size", "2M", "--need", "8M"], &state)
        .expect(0)
        .out_has("need 8M: yes");

    // A file of the mount mapped by this process, as DPDK maps its pages.
    let file_path = mount.join("rtemap_0");
    {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&file_path)
            .expect("a file in the hugetlbfs");
        file.set_len(2 << 20).expect("ftruncate to one page");
        // SAFETY: the file is this test's own and nobody else resizes it.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap a hugepage");
        map[0] = 1;
        let me = std::process::id();
        hugepages(&["--release"], &state)
            .expect(1)
            .err_has("refusing to release")
            .err_has(&format!("{mount_str}: pid {me} "));
        assert_eq!(
            read_count(&nr_path),
            want,
            "a refused release changed the pool"
        );
        assert_eq!(hugetlbfs_mounts().into_iter().filter(is_ours).count(), 1);
        // What --force would do.
        let before = snapshot();
        hugepages(&["--release", "--force", "--dry-run"], &state)
            .expect(0)
            .has_line(&format!("dry-run: umount -l {mount_str}"))
            .has_line(&format!("dry-run: rmdir {mount_str}"))
            .has_line(&format!("dry-run: echo {original} > {nr_path}"));
        assert_unchanged(&before, "hugepages.sh --release --force --dry-run");
        drop(map);
        drop(file);
    }
    hugepages(&["--check", "--mount", &mount_str], &state)
        .expect(0)
        .out_has(&format!(
            "  {mount_str}  pagesize 2M, 1 files, in use by no process"
        ));

    // Released: unmounted (which frees the file's page), the pool back.
    hugepages(&["--release"], &state)
        .expect(0)
        .has_line(&format!("run: umount {mount_str}"))
        .has_line(&format!("run: rmdir {mount_str}"))
        .has_line(&format!("run: echo {original} > {nr_path}"))
        .has_line(&format!("released: {nr_path} is {original} (was {want})"));
    assert_eq!(read_count(&nr_path), original);
    assert_eq!(hugetlbfs_mounts(), mounts_before);
    assert!(!mount.exists(), "{mount_str} left behind");
    for record in ["counts", "mounts"] {
        assert_eq!(
            fs::read_to_string(state.join(record)).unwrap_or_default(),
            "",
            "record {record} left behind"
        );
    }
}
