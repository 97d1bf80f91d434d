//! The README's namespace lab, command for command:
//!
//! ```sh
//! sudo vagrant/netns-lab.sh up
//! sudo vagrant/netns-lab.sh broker --workers 1   # in the background
//! sudo vagrant/netns-lab.sh client ping -c1 198.18.0.2
//! sudo vagrant/netns-lab.sh down                  # after stopping the broker
//! ```
//!
//! with the blipmqd cargo built (`BLIPMQD`), namespace names of the test's
//! own (`BROKER_NS`, `CLIENT_NS`: tests of other checkouts may run at the
//! same time; addresses and interface names live inside the namespaces and
//! stay the README's) and a private control socket directory
//! (`XDG_RUNTIME_DIR`). A guard stops the broker and runs `down` whatever
//! happens. Needs root and `ip netns`; without them it prints why and
//! passes (skips), except under CI=true, where it fails.

#[path = "netns/mod.rs"]
mod netns;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Longest any one script command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the broker may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the broker may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("vagrant/netns-lab.sh")
}

/// The lab's environment and cleanup: `down` (and SIGKILL to a broker still
/// running) on drop.
struct LabScript {
    env: Vec<(&'static str, OsString)>,
    broker_ns: String,
    client_ns: String,
    runtime_dir: PathBuf,
    broker: Option<Child>,
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl LabScript {
    fn new() -> LabScript {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let broker_ns = format!("bq-lab-b-{id}");
        let client_ns = format!("bq-lab-c-{id}");
        let runtime_dir = std::env::temp_dir().join(format!("blipmq-netns-lab-{id}"));
        let _ = std::fs::remove_dir_all(&runtime_dir);
        std::fs::create_dir_all(&runtime_dir).expect("runtime dir");
        let env = vec![
            ("BROKER_NS", broker_ns.clone().into()),
            ("CLIENT_NS", client_ns.clone().into()),
            ("BLIPMQD", env!("CARGO_BIN_EXE_blipmqd").into()),
            ("XDG_RUNTIME_DIR", runtime_dir.clone().into_os_string()),
        ];
        LabScript {
            env,
            broker_ns,
            client_ns,
            runtime_dir,
            broker: None,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(lab_script());
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in ["LAB_SUBNET", "BROKER_IF", "CLIENT_IF", "PORT", "OFFLOADS"] {
            command.env_remove(var);
        }
        command
    }

    /// `netns-lab.sh ARGS`, bounded by [`COMMAND_TIMEOUT`].
    fn run(&self, args: &[&str]) -> Output {
        let what = format!("netns-lab.sh {}", args.join(" "));
        let mut child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let err = std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                text
            });
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            let err = err.join().unwrap_or_default();
            let _ = tx.send((child.wait(), out, err));
        });
        match rx.recv_timeout(COMMAND_TIMEOUT) {
            Ok((status, stdout, stderr)) => Output {
                status: status.expect("wait"),
                stdout,
                stderr,
            },
            Err(_) => {
                // SAFETY: kill has no memory-safety preconditions; pid is our child.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
            }
        }
    }

    fn run_ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "netns-lab.sh {}: {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            output.status,
            output.stdout,
            output.stderr
        );
        output
    }

    fn namespaces_present(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .stdin(Stdio::null())
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| *ns == self.broker_ns || *ns == self.client_ns)
            .map(str::to_string)
            .collect()
    }
}

impl Drop for LabScript {
    fn drop(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            let _ = broker.kill();
            let _ = broker.wait();
        }
        let down = self.command(&["down"]).output();
        if !down.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("cleanup: netns-lab.sh down failed: {down:?}");
            for ns in [&self.broker_ns, &self.client_ns] {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns])
                    .stdin(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// Waits for `child` to exit, bounded by `limit`; None if it did not.
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: waitpid on our own child; `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = tx.send((rc, status));
    });
    match rx.recv_timeout(limit) {
        Ok((rc, status)) => {
            let _ = waiter.join();
            assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
            use std::os::unix::process::ExitStatusExt;
            Some(ExitStatus::from_raw(status))
        }
        Err(_) => None,
    }
}

/// Whether `ping` is installed (package iputils-ping, which
/// `vagrant/provision.sh deps` installs); prints why not (the test skips),
/// or under CI=true panics.
fn ping_available() -> bool {
    let found = Command::new("ping")
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        let why = "no `ping` here (apt-get install iputils-ping)";
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "cannot run under CI=true: {why}"
        );
        eprintln!("skipped: {why}");
    }
    found
}

#[test]
fn readme_netns_lab_sequence() {
    if !netns::available() || !ping_available() {
        return;
    }
    lab_sequence(&["broker", "--workers", "1"]);
}

/// The README's DPDK lab: the same with `broker-dpdk --workers 2` (DPDK's
/// net_af_packet driver on the lab's veth, a queue pair per worker).
#[test]
fn readme_netns_lab_sequence_on_dpdk() {
    if !cfg!(feature = "dpdk") {
        let why =
            "blipmqd built without the dpdk feature (cargo test --features blipmq-dataplane/dpdk)";
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "cannot run under CI=true: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    if !netns::available() || !ping_available() {
        return;
    }
    lab_sequence(&["broker-dpdk", "--workers", "2"]);
}

/// up, `broker_args` in the background, a ping from the client, SIGTERM
/// (the broker drains and exits 0), down.
fn lab_sequence(broker_args: &[&str]) {
    let mut lab = LabScript::new();

    // sudo vagrant/netns-lab.sh up
    let up = lab.run_ok(&["up"]);
    assert!(
        up.stdout.contains(&format!("== netns {}", lab.broker_ns))
            && up.stdout.contains("198.18.0.1/24"),
        "up: {}",
        up.stdout
    );
    assert_eq!(lab.namespaces_present().len(), 2);

    // sudo vagrant/netns-lab.sh broker --workers 1   (in the background)
    let mut broker = lab
        .command(broker_args)
        .spawn()
        .expect("netns-lab.sh broker");
    let stdout = broker.stdout.take().expect("stdout");
    let stderr = broker.stderr.take().expect("stderr");
    lab.broker = Some(broker);
    let log = Arc::new(Mutex::new(String::new()));
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let log_writer = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = log_writer.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
    let log_text = || log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let listening = loop {
        match line_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.contains("blipmqd listening on") => break line,
            Ok(_) => continue,
            Err(error) => panic!(
                "no listening line from `netns-lab.sh {}` within {START_TIMEOUT:?} ({error}); its log:\n{}",
                broker_args.join(" "),
                log_text()
            ),
        }
    };
    assert!(
        listening.contains("198.18.0.2:9999"),
        "listening on: {listening}"
    );

    // sudo vagrant/netns-lab.sh client ping -c1 198.18.0.2
    let ping = lab.run(&["client", "ping", "-c1", "198.18.0.2"]);
    assert!(
        ping.status.success() && ping.stdout.contains("1 received"),
        "ping: {}\n{}{}\n--- broker log\n{}",
        ping.status,
        ping.stdout,
        ping.stderr,
        log_text()
    );

    // Stop the broker (Ctrl-C in the README's terminal; SIGTERM here):
    // it drains and exits 0.
    let mut broker = lab.broker.take().expect("the broker");
    // SAFETY: kill has no memory-safety preconditions; the pid is our
    // child's (`ip netns exec` exec'd blipmqd in its place).
    unsafe { libc::kill(broker.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_within(&mut broker, STOP_TIMEOUT);
    if status.is_none() {
        lab.broker = Some(broker);
    }
    let status =
        status.unwrap_or_else(|| panic!("blipmqd did not exit within {STOP_TIMEOUT:?} of SIGTERM"));
    assert!(
        status.success(),
        "blipmqd exited with {status}:\n{}",
        log_text()
    );

    // sudo vagrant/netns-lab.sh down
    lab.run_ok(&["down"]);
    assert!(
        lab.namespaces_present().is_empty(),
        "namespaces left: {:?}",
        lab.namespaces_present()
    );
}

#[test]
fn broker_args_replace_the_scripts_defaults() {
    if !netns::available() {
        return;
    }
    // A stand-in for blipmqd that prints its arguments, run by `broker` in
    // the lab's broker namespace (so the lab is built first).
    let lab = LabScript::new();
    let fake = lab.runtime_dir.join("blipmqd-args");
    std::fs::write(&fake, "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut lab = lab;
    lab.env.retain(|(k, _)| *k != "BLIPMQD");
    lab.env.push(("BLIPMQD", fake.clone().into_os_string()));
    lab.run_ok(&["up"]);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut all = vec!["broker"];
        all.extend_from_slice(extra);
        let out = lab.run_ok(&all);
        out.stdout.lines().map(str::to_string).collect()
    };
    let defaults = [
        "--backend",
        "afpacket",
        "--interface",
        "bq-b0",
        "--ip",
        "198.18.0.2/24",
        "--listen",
        "0.0.0.0:9999",
        "--workers",
        "1",
    ];
    assert_eq!(args(&[]), defaults);
    // The README's command: one --workers, the user's.
    let got = args(&["--workers", "1"]);
    assert_eq!(
        got.iter().filter(|a| *a == "--workers").count(),
        1,
        "{got:?}"
    );
    let got = args(&[
        "--workers=2",
        "--listen",
        "0.0.0.0:7000",
        "--log-level",
        "debug",
    ]);
    assert_eq!(
        got,
        [
            "--backend",
            "afpacket",
            "--interface",
            "bq-b0",
            "--ip",
            "198.18.0.2/24",
            "--workers=2",
            "--listen",
            "0.0.0.0:7000",
            "--log-level",
            "debug"
        ]
    );
    // After "--" (EAL arguments) nothing counts as a blipmqd flag.
    let got = args(&["--", "--workers", "3"]);
    assert_eq!(got[..defaults.len()], defaults);
    assert_eq!(got[defaults.len()..], ["--", "--workers", "3"]);

    // A missing binary is named.
    lab.env.retain(|(k, _)| *k != "BLIPMQD");
    lab.env.push(("BLIPMQD", "/nonexistent/blipmqd".into()));
    let out = lab.run(&["broker"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("no blipmqd at /nonexistent/blipmqd"),
        "{}",
        out.stderr
    );
}
