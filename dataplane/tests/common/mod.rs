//! Test harness for the blipmqd conformance, robustness and load suites.
//!
//! [`Broker`] runs the real `blipmqd` binary as a child process with a config
//! file, on the kernel backend (127.0.0.1) or on the afpacket backend (in a
//! network-namespace lab of its own, see `netns/mod.rs`); [`Raw`] is a raw
//! protocol connection over a blocking `TcpStream`, with every read bounded
//! by a timeout, that builds frames with `blipmq_protocol::encode` and reads
//! them with `decode_frame` and `ServerFrame::parse`.
//!
//! Every connection the harness makes ([`tcp_connect`], [`Raw::connect`],
//! [`connect_small_rcvbuf`]) to an afpacket broker's address is created in
//! that broker's client namespace, so a test body is the same for both
//! backends.
//!
//! Tests that make sense with one and with two workers are written as a
//! function of `workers` and instantiated by [`for_workers!`]; tests that
//! also make sense on every backend take `(backend, workers)` and are
//! instantiated by [`for_backends!`].

#![allow(dead_code)]

pub mod health;
pub mod nats_hub;
#[path = "../netns/mod.rs"]
pub mod netns;
pub mod pki;
#[path = "../system_lock/mod.rs"]
pub mod system_lock;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use blipmq_protocol::{decode_frame, encode, flags, Info, Op, RawFrame, ServerFrame};
// Not every test file uses every probe.
#[allow(unused_imports)]
pub use health::{broker_rss_kib, last_error, Exchange};

/// How long any single expected event may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long to watch a connection to conclude that nothing more arrives.
pub const QUIET: Duration = Duration::from_millis(300);

/// Instantiates `fn name(workers: usize)` test bodies as `w1::name` and
/// `w2::name`, run with one and with two broker workers. Invoke it once
/// per test file (it defines the modules `w1` and `w2`).
#[allow(unused_macros)]
macro_rules! for_workers {
    ($($name:ident),* $(,)?) => {
        mod w1 {
            $( #[test] fn $name() { super::$name(1) } )*
        }
        mod w2 {
            $( #[test] fn $name() { super::$name(2) } )*
        }
    };
}

/// Instantiates test bodies on every backend: `fn name(backend: Backend,
/// workers: usize)` listed under `workers` as `kernel::w1::name`,
/// `kernel::w2::name`, `afpacket::w1::name`, `afpacket::w2::name`,
/// `dpdk::w1::name`, `dpdk::w2::name` and `dpdk_tap::w1::name`;
/// `fn name(backend: Backend)` listed under `two_workers` (bodies that need
/// two workers) as `kernel::name`, `afpacket::name` and `dpdk::name`. The
/// user-space instances skip (or fail under CI=true) where their lab cannot
/// be built; see [`Backend::available`]. Invoke it once per test file.
#[allow(unused_macros)]
macro_rules! for_backends {
    (
        workers: [$($name:ident),* $(,)?],
        two_workers: [$($two:ident),* $(,)?] $(,)?
    ) => {
        for_backends!(@backend kernel, Kernel, [$($name),*], [$($two),*]);
        for_backends!(@backend afpacket, AfPacket, [$($name),*], [$($two),*]);
        for_backends!(@backend dpdk, Dpdk, [$($name),*], [$($two),*]);
        mod dpdk_tap {
            mod w1 {
                use $crate::common::Backend;
                $( #[test] fn $name() {
                    if Backend::DpdkTap.available() { super::super::$name(Backend::DpdkTap, 1) }
                } )*
            }
        }
    };
    (@backend $module:ident, $backend:ident, [$($name:ident),*], [$($two:ident),*]) => {
        mod $module {
            // Unused when no test needs two workers.
            #[allow(unused_imports)]
            use $crate::common::Backend;
            mod w1 {
                use $crate::common::Backend;
                $( #[test] fn $name() {
                    if Backend::$backend.available() { super::super::$name(Backend::$backend, 1) }
                } )*
            }
            mod w2 {
                use $crate::common::Backend;
                $( #[test] fn $name() {
                    if Backend::$backend.available() { super::super::$name(Backend::$backend, 2) }
                } )*
            }
            $( #[test] fn $two() {
                if Backend::$backend.available() { super::$two(Backend::$backend) }
            } )*
        }
    };
}

/// A config with the limits most tests use.
pub const BASE_CONFIG: &str = r#"
[server]
drain_timeout = "2s"

[limits]
max_payload = 1024
max_topic_length = 32
max_subscriptions = 64
max_pending_bytes = 1048576
"#;

/// ERROR 401's reason for no CONNECT within `auth.timeout`, as
/// `dialect::HANDSHAKE_TIMEOUT` has it.
pub const HANDSHAKE_TIMEOUT: &str = "authentication timeout: no CONNECT in time";

/// `[[auth.users]]` for the users tests of both protocols: `alice` (password;
/// publishes `orders.>` but not `orders.secret`, subscribes `updates.*` and
/// `_INBOX.>`), `hashed` (a bcrypt hash of `h-pass`; no restrictions) and
/// `svc` (a token; subscribes anything but `admin.>`, publishes only replies).
pub fn users_toml() -> String {
    // Cost 4, the lowest: each CONNECT checks it on a worker.
    let hashed = bcrypt::hash("h-pass", 4).expect("bcrypt");
    format!(
        r#"
[[auth.users]]
user = "alice"
password = "a-pass"
permissions.publish = {{ allow = ["orders.>"], deny = ["orders.secret"] }}
permissions.subscribe = ["updates.*", "_INBOX.>"]

[[auth.users]]
user = "hashed"
password = "{hashed}"

[[auth.users]]
user = "svc"
token = "svc-token"
permissions.subscribe = {{ allow = [">"], deny = ["admin.>"] }}
permissions.allow_responses = true
"#
    )
}

// ---------------------------------------------------------------------------
// The broker process
// ---------------------------------------------------------------------------

static CONFIG_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Checks a connection limit of 3 that this client's connections to `addr`
/// reach: three clients get in; each attempt past them gets [INFO,] ERROR
/// 503 `reason` and is closed, and the three still work; once one leaves
/// (and the broker has closed it), a new client is accepted.
pub fn check_limit_of_three(addr: SocketAddr, reason: &str) {
    let mut open: Vec<Raw> = (0..3).map(|_| Raw::handshake(addr)).collect();
    for attempt in 0..3 {
        let mut c = Raw::connect_no_info(addr);
        let frames = c.expect_closed();
        let refused = |err: &OwnedFrame| err.error() == Some((503, reason.to_string()));
        let ok = match frames.as_slice() {
            [err] => refused(err),
            [info, err] => info.is_op(Op::Info) && refused(err),
            _ => false,
        };
        assert!(
            ok,
            "connection {} past the limit of 3: expected [INFO,] ERROR 503 {reason:?}, close; got {frames:?}",
            4 + attempt
        );
    }
    for c in open.iter_mut() {
        c.ping_pong();
    }
    let mut leaving = open.pop().unwrap();
    leaving.send_frame(|b| encode::put_disconnect(b, ""));
    leaving.expect_closed();
    let deadline = Instant::now() + TIMEOUT;
    let mut accepted = loop {
        let mut c = Raw::connect_no_info(addr);
        if c.read_frame().is_op(Op::Info) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no connection accepted within {TIMEOUT:?} after one of the 3 left"
        );
        // The close may not be accounted for yet: poll, bounded.
        std::thread::sleep(Duration::from_millis(20));
    };
    accepted.do_connect(r#"{"protocol":1}"#);
    accepted.ping_pong();
}

/// A `[nats]` listener: any free port of 127.0.0.1 on the kernel backend;
/// a fixed port of its own address on a user-space one (each has a lab).
pub fn nats_config(backend: Backend) -> String {
    let listen = match backend {
        Backend::Kernel => "127.0.0.1:0",
        _ => "0.0.0.0:4222",
    };
    format!("[nats]\nlisten = \"{listen}\"\n")
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (a broker started
/// after it inherits it); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
    }
    limit.rlim_cur
}

/// Which packet I/O backend a [`Broker`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Kernel TCP, listening on 127.0.0.1 (any free port).
    Kernel,
    /// User-space TCP on AF_PACKET, owning an address in a fresh netns lab;
    /// the harness connects to it from the lab's client namespace.
    AfPacket,
    /// User-space TCP on DPDK's `net_af_packet` driver over the lab's veth
    /// (a queue pair per worker), no hugepages.
    Dpdk,
    /// User-space TCP on DPDK's `net_tap` driver: the broker's tap is the
    /// client namespace's link (one worker).
    DpdkTap,
}

impl Backend {
    /// Whether this backend's instances can run here: always for the
    /// kernel; root and network namespaces for the others, and a blipmqd
    /// built with the `dpdk` feature for DPDK. Prints why not (the test
    /// skips), or under CI=true panics.
    pub fn available(self) -> bool {
        match self {
            Backend::Kernel => true,
            Backend::AfPacket => netns::available(),
            Backend::Dpdk | Backend::DpdkTap => {
                if !cfg!(feature = "dpdk") {
                    let why = "blipmqd built without the dpdk feature \
                               (cargo test --features blipmq-dataplane/dpdk)";
                    if std::env::var("CI").is_ok_and(|v| v == "true") {
                        panic!("dpdk backend unavailable under CI=true: {why}");
                    }
                    eprintln!("skipped: {why}");
                    return false;
                }
                netns::available()
            }
        }
    }

    fn is_userspace(self) -> bool {
        self != Backend::Kernel
    }
}

/// The port a user-space broker listens on (each has a lab of its own).
pub const AFPACKET_PORT: u16 = 9999;

/// EAL arguments for a test broker on a virtual device: no PCI, no
/// hugepages, a file prefix of its own (brokers run in parallel).
fn dpdk_eal_args(lab: &netns::Lab, vdev: &str) -> Vec<String> {
    [
        "--no-pci",
        "--no-huge",
        "-m",
        "256",
        "--file-prefix",
        lab.name(),
        vdev,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Where DPDK keeps the runtime files of `--file-prefix prefix` (as root:
/// the tests that run DPDK brokers need root for their labs).
pub fn dpdk_runtime_dir(prefix: &str) -> PathBuf {
    PathBuf::from("/var/run/dpdk").join(prefix)
}

/// A running `blipmqd`; killed (SIGKILL) and reaped on drop, then its lab
/// (afpacket) removed.
pub struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    workers: usize,
    backend: Backend,
    /// Where NATS clients connect, when the config has a `[nats]` listener.
    nats_addr: Option<SocketAddr>,
    config_path: PathBuf,
    /// Dropped after the child is reaped (field order).
    lab: Option<netns::Lab>,
}

impl Broker {
    /// Starts `blipmqd --listen 127.0.0.1:0 --workers N --config FILE` and
    /// waits (at most 10 s) for its `blipmqd listening on ADDR` line.
    pub fn start(workers: usize, config_toml: &str) -> Broker {
        Broker::start_on(Backend::Kernel, workers, config_toml)
    }

    /// Like [`Broker::start`] on `backend`. For a user-space backend it
    /// builds a fresh lab and runs `blipmqd` in its broker namespace,
    /// listening on [`AFPACKET_PORT`]; panics if the lab cannot be built
    /// (callers check [`Backend::available`] first to skip instead).
    pub fn start_on(backend: Backend, workers: usize, config_toml: &str) -> Broker {
        Broker::start_for(backend, workers, |_| config_toml.to_string())
    }

    /// Like [`Broker::start_on`], with a configuration made once the
    /// broker's address is known (certificates name it).
    pub fn start_for(
        backend: Backend,
        workers: usize,
        config: impl FnOnce(IpAddr) -> String,
    ) -> Broker {
        let lab = match backend {
            Backend::Kernel => None,
            Backend::AfPacket | Backend::Dpdk => Some(netns::Lab::new()),
            Backend::DpdkTap => Some(netns::Lab::for_tap()),
        };
        let lab =
            lab.map(|lab| lab.expect("the netns lab for a user-space backend is unavailable"));
        let ip = lab
            .as_ref()
            .map_or(IpAddr::from([127, 0, 0, 1]), |lab| lab.broker_addr(0).ip());
        Broker::launch(backend, lab, workers, &config(ip))
    }

    /// An afpacket broker in a lab the caller built (e.g. with a relay).
    pub fn start_in_lab(lab: netns::Lab, workers: usize, config_toml: &str) -> Broker {
        Broker::launch(Backend::AfPacket, Some(lab), workers, config_toml)
    }

    /// A broker on `backend` (afpacket or dpdk) in a lab the caller built.
    pub fn start_in_lab_on(
        backend: Backend,
        lab: netns::Lab,
        workers: usize,
        config_toml: &str,
    ) -> Broker {
        Broker::launch(backend, Some(lab), workers, config_toml)
    }

    /// The kernel backend without a lab; a user-space one in the lab's
    /// broker namespace.
    fn launch(
        backend: Backend,
        lab: Option<netns::Lab>,
        workers: usize,
        config_toml: &str,
    ) -> Broker {
        assert_eq!(backend.is_userspace(), lab.is_some(), "{backend:?}");
        let seq = CONFIG_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let config_path = std::env::temp_dir().join(format!(
            "blipmqd-test-{}-{}-{}.toml",
            std::process::id(),
            seq,
            nanos
        ));
        std::fs::write(&config_path, config_toml).expect("write the broker config file");
        // Private to its owner, as blipmqd wants a file with secrets.
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&config_path, private).expect("chmod the broker config file");
        let log = std::env::var("BLIPMQ_TEST_LOG").unwrap_or_else(|_| "error".to_string());
        let program = env!("CARGO_BIN_EXE_blipmqd");
        let mut command = match &lab {
            None => {
                let mut command = Command::new(program);
                command.arg("--listen").arg("127.0.0.1:0");
                command
            }
            Some(lab) => {
                let mut command = lab.broker_command(program);
                let backend_name = match backend {
                    Backend::AfPacket => "afpacket",
                    _ => "dpdk",
                };
                command
                    .args(["--backend", backend_name])
                    .args(["--ip", &lab.broker_cidr()])
                    .arg("--listen")
                    .arg(format!("0.0.0.0:{AFPACKET_PORT}"));
                if backend == Backend::AfPacket {
                    command.args(["--interface", &lab.broker_if]);
                }
                command
            }
        };
        command
            .arg("--workers")
            .arg(workers.to_string())
            .arg("--config")
            .arg(&config_path)
            .env_remove("BLIPMQ_TOKEN")
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(lab) = &lab {
            match backend {
                Backend::Dpdk => {
                    lab.client_offloads_off()
                        .expect("client offloads off for net_af_packet");
                    command.arg("--").args(dpdk_eal_args(
                        lab,
                        &format!(
                            "--vdev=net_af_packet0,iface={},qpairs={workers}",
                            lab.broker_if
                        ),
                    ));
                }
                Backend::DpdkTap => {
                    command.arg("--").args(dpdk_eal_args(
                        lab,
                        &format!("--vdev=net_tap0,iface={}", lab.broker_if),
                    ));
                }
                _ => {}
            }
        }
        let mut child = command.spawn().expect("spawn blipmqd");
        let stdout = child.stdout.take().expect("blipmqd stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Every line goes to the launcher, which reads the listening
            // ones; draining on keeps the broker from blocking on stdout.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                let _ = std::fs::remove_file(&config_path);
                panic!(
                    "blipmqd ({backend:?}) did not print its listening line within 10 s (exit: {status:?}); config:\n{config_toml}"
                );
            }
        };
        let addr = line
            .strip_prefix("blipmqd listening on ")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("unexpected first stdout line from blipmqd: {line:?}")
            });
        // With a NATS listener, its line comes next.
        let nats_addr = config_toml.contains("[nats]").then(|| {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("blipmqd's NATS listening line");
            line.strip_prefix("blipmqd NATS listening on ")
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                .unwrap_or_else(|| panic!("unexpected second stdout line from blipmqd: {line:?}"))
        });
        if let Some(lab) = &lab {
            assert_eq!(
                addr,
                lab.broker_addr(AFPACKET_PORT),
                "listening line {line:?}"
            );
            if backend == Backend::DpdkTap {
                lab.configure_tap().expect("the broker's tap interface");
            }
            register_client_namespace(addr.ip(), lab.client_ns_path());
        }
        Broker {
            child: Some(child),
            addr,
            nats_addr,
            workers,
            backend,
            config_path,
            lab,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The lab of an afpacket broker.
    pub fn lab(&self) -> Option<&netns::Lab> {
        self.lab.as_ref()
    }

    /// The NATS listener's address (the config must set `[nats] listen`).
    pub fn nats_addr(&self) -> SocketAddr {
        self.nats_addr
            .expect("a broker started with a [nats] listener")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration file the broker was started with (a test may
    /// rewrite it and reload).
    #[allow(dead_code)]
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().expect("child").try_wait(), Ok(None))
    }

    pub fn assert_alive(&mut self) {
        let status = self.child.as_mut().expect("child").try_wait();
        assert!(
            matches!(status, Ok(None)),
            "blipmqd is no longer running: {status:?}"
        );
    }

    /// Sends a signal to the broker.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) takes no pointers: no memory of ours is at stake.
        // `pid` is our child's; the tests signal a running broker, which no
        // `wait` has reaped, so the pid names no other process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits at most `timeout` for the process to exit; None if it did not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("child");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(err) => panic!("waiting for blipmqd: {err}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            // std has no timed wait on a child: poll its state.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then wait (at most 15 s) for the exit; panics if it hangs.
    pub fn terminate(self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(15))
    }

    /// SIGTERM, then wait at most `timeout` for the exit; panics (and kills
    /// the broker) if it is still running then.
    pub fn terminate_within(mut self, timeout: Duration) -> ExitStatus {
        self.send_sigterm();
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => panic!("blipmqd did not exit within {timeout:?} of SIGTERM"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let (Backend::Dpdk | Backend::DpdkTap, Some(lab)) = (self.backend, &self.lab) {
            // SIGKILL skipped the broker's own cleanup of DPDK's runtime
            // directory (a drained broker removes it itself).
            let _ = std::fs::remove_dir_all(dpdk_runtime_dir(lab.name()));
        }
        let _ = std::fs::remove_file(&self.config_path);
        if self.lab.is_some() {
            unregister_client_namespace(self.addr.ip());
        }
    }
}

// ---------------------------------------------------------------------------
// Connecting, from the right network namespace
// ---------------------------------------------------------------------------

/// The client namespace (its /var/run/netns path) of each running afpacket
/// broker, by the broker's address; labs give each broker its own subnet.
static CLIENT_NAMESPACES: Mutex<Vec<(IpAddr, String)>> = Mutex::new(Vec::new());

fn register_client_namespace(ip: IpAddr, path: String) {
    let mut namespaces = CLIENT_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
    namespaces.retain(|(known, _)| *known != ip);
    namespaces.push((ip, path));
}

fn unregister_client_namespace(ip: IpAddr) {
    let mut namespaces = CLIENT_NAMESPACES.lock().unwrap_or_else(|e| e.into_inner());
    namespaces.retain(|(known, _)| *known != ip);
}

/// Runs `f` where a client of `addr` lives: on this thread for a kernel
/// broker, on a thread inside the client namespace for an afpacket broker
/// (a socket keeps the namespace it was created in, so what `f` returns is
/// usable from any thread).
pub fn as_client_of<T: Send + 'static>(
    addr: SocketAddr,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let namespace = CLIENT_NAMESPACES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(ip, _)| *ip == addr.ip())
        .map(|(_, path)| path.clone());
    match namespace {
        None => f(),
        Some(path) => netns::run_in(path, f),
    }
}

/// A TCP connection to `addr`, from the broker's client namespace where it
/// has one.
pub fn tcp_connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    as_client_of(addr, move || TcpStream::connect_timeout(&addr, timeout))
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// A frame read from the broker, owned.
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    pub op: u8,
    pub flags: u8,
    pub topic: Vec<u8>,
    pub body: Vec<u8>,
}

impl OwnedFrame {
    pub fn raw(&self) -> RawFrame<'_> {
        RawFrame {
            op: self.op,
            flags: self.flags,
            topic: &self.topic,
            body: &self.body,
        }
    }

    /// Parses the frame as a broker → client frame; panics if the broker sent
    /// something that is not a legal broker frame.
    pub fn parse(&self) -> ServerFrame<'_> {
        ServerFrame::parse(self.raw())
            .unwrap_or_else(|err| panic!("broker sent an illegal frame {self:?}: {err}"))
    }

    pub fn is_op(&self, op: Op) -> bool {
        self.op == op as u8
    }

    /// `Some((code, reason))` when this is an ERROR frame.
    pub fn error(&self) -> Option<(u16, String)> {
        match self.parse() {
            ServerFrame::Error { code, reason } => {
                Some((code, String::from_utf8_lossy(reason).into_owned()))
            }
            _ => None,
        }
    }

    /// The re-encoded bytes of the frame, as they were on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        raw_frame(self.op, self.flags, &self.topic, &self.body)
    }
}

impl std::fmt::Debug for OwnedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = Op::from_u8(self.op).map(Op::name).unwrap_or("?");
        write!(f, "{name}(op=0x{:02x}, flags=0x{:02x}", self.op, self.flags)?;
        if !self.topic.is_empty() {
            write!(f, ", topic={:?}", String::from_utf8_lossy(&self.topic))?;
        }
        match ServerFrame::parse(self.raw()) {
            Ok(ServerFrame::Error { code, reason }) => write!(
                f,
                ", code={code}, reason={:?}",
                String::from_utf8_lossy(reason)
            )?,
            Ok(ServerFrame::Message {
                sid,
                reply,
                payload,
                ..
            }) => {
                write!(f, ", sid={sid}")?;
                if let Some(reply) = reply {
                    write!(f, ", reply={:?}", String::from_utf8_lossy(reply))?;
                }
                if payload.len() <= 32 {
                    write!(f, ", payload={:?}", String::from_utf8_lossy(payload))?;
                } else {
                    write!(f, ", payload=<{} bytes>", payload.len())?;
                }
            }
            Ok(ServerFrame::Info { json }) | Ok(ServerFrame::Disconnect { reason: json }) => {
                if !json.is_empty() {
                    write!(f, ", body={:?}", String::from_utf8_lossy(json))?
                }
            }
            Ok(_) => {
                if !self.body.is_empty() {
                    write!(f, ", body={:02x?}", self.body)?
                }
            }
            Err(err) => write!(f, ", body={:02x?}, ILLEGAL: {err}", self.body)?,
        }
        write!(f, ")")
    }
}

/// Builds any frame, legal or not, from its parts (len is computed).
pub fn raw_frame(op: u8, flag_bits: u8, topic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + topic.len() + body.len());
    out.extend_from_slice(&((4 + topic.len() + body.len()) as u32).to_be_bytes());
    out.push(op);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.push(flag_bits);
    out.extend_from_slice(topic);
    out.extend_from_slice(body);
    out
}

/// Encodes frames with a `blipmq_protocol::encode` closure.
pub fn build(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out);
    out
}

pub fn ping_bytes() -> Vec<u8> {
    build(encode::put_ping)
}

pub fn connect_bytes(json: &str) -> Vec<u8> {
    build(|b| encode::put_connect(b, json.as_bytes()))
}

// ---------------------------------------------------------------------------
// A raw connection
// ---------------------------------------------------------------------------

/// What [`Raw::next_frame`] saw.
#[derive(Debug)]
pub enum Next {
    Frame(OwnedFrame),
    /// EOF or a connection reset.
    Closed,
    Timeout,
}

/// A delivered MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub sid: u32,
    pub reply: Option<String>,
    pub payload: Vec<u8>,
}

/// A raw protocol connection with bounded reads.
pub struct Raw {
    pub stream: TcpStream,
    pub info: Info,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    closed: bool,
    /// Accept a close in the middle of a frame (see
    /// [`Raw::expect_closed_allow_partial_within`]).
    allow_partial: bool,
    /// Bytes of a frame cut short by the close, when allowed.
    pub partial_at_close: usize,
    /// The connection's TLS, when it has it: frames go through it.
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Raw {
    /// Connects and reads INFO (available as `.info`).
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = tcp_connect(addr, TIMEOUT)
            .unwrap_or_else(|err| panic!("connect to blipmqd at {addr}: {err}"));
        Raw::from_stream(stream)
    }

    /// Connects without reading anything (`.info` is a placeholder).
    pub fn connect_no_info(addr: SocketAddr) -> Raw {
        let stream = tcp_connect(addr, TIMEOUT)
            .unwrap_or_else(|err| panic!("connect to blipmqd at {addr}: {err}"));
        Raw::wrap(stream)
    }

    /// Wraps a connected stream without reading anything.
    pub fn wrap_stream(stream: TcpStream) -> Raw {
        Raw::wrap(stream)
    }

    fn wrap(stream: TcpStream) -> Raw {
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("write timeout");
        Raw {
            stream,
            info: placeholder_info(),
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            closed: false,
            allow_partial: false,
            partial_at_close: 0,
            tls: None,
        }
    }

    /// Connects over TLS (trusting `ca`, presenting `client` = (cert, key)
    /// when given), completes the handshake and reads INFO; the error says
    /// why the handshake failed.
    pub fn connect_tls(
        addr: SocketAddr,
        ca: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Raw, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
        };
        let name = ServerName::from(addr.ip());
        let mut tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut stream = tcp_connect(addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut stream)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        let mut raw = Raw::wrap(stream);
        raw.tls = Some(Box::new(tls));
        // Under TLS 1.3 a refused client certificate shows only now.
        match raw.next_frame(TIMEOUT) {
            Next::Frame(frame) => raw.set_info(&frame),
            other => return Err(format!("no INFO after the TLS handshake: {other:?}")),
        }
        Ok(raw)
    }

    /// One read's worth of plaintext into `buf[end..]`: from the socket,
    /// through TLS when the connection has it. Ok(0) is the end.
    fn read_some(&mut self) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.stream.read(&mut self.buf[self.end..]);
        };
        loop {
            match tls.reader().read(&mut self.buf[self.end..]) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            let mut cipher = [0u8; 16 * 1024];
            let n = self.stream.read(&mut cipher)?;
            if n == 0 {
                return Ok(0);
            }
            let mut rest = &cipher[..n];
            while !rest.is_empty() {
                tls.read_tls(&mut rest)?;
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
            }
        }
    }

    /// Wraps a connected stream and reads INFO.
    pub fn from_stream(stream: TcpStream) -> Raw {
        let mut raw = Raw::wrap(stream);
        raw.read_info();
        raw
    }

    fn read_info(&mut self) {
        let frame = self.read_frame();
        self.set_info(&frame);
    }

    fn set_info(&mut self, frame: &OwnedFrame) {
        let json = match frame.parse() {
            ServerFrame::Info { json } => json.to_vec(),
            _ => panic!("first frame from the broker is not INFO: {frame:?}"),
        };
        assert_eq!(frame.flags, 0, "INFO with flags: {frame:?}");
        self.info = serde_json::from_slice(&json).unwrap_or_else(|err| {
            panic!(
                "INFO body is not the protocol's JSON ({err}): {}",
                String::from_utf8_lossy(&json)
            )
        });
    }

    /// INFO, then CONNECT `{"protocol":1}`, then expects OK.
    pub fn handshake(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr);
        raw.do_connect(r#"{"protocol":1}"#);
        raw
    }

    /// Sends a CONNECT with this JSON and expects OK.
    pub fn do_connect(&mut self, json: &str) {
        self.send(&connect_bytes(json));
        self.expect_ok();
    }

    /// Connects until INFO names worker `w` (at most 200 attempts).
    pub fn on_worker(addr: SocketAddr, w: u32) -> Raw {
        for _ in 0..200 {
            let raw = Raw::connect(addr);
            match raw.info.worker {
                Some(got) if got == w => return raw,
                Some(_) => drop(raw),
                None => panic!("INFO has no \"worker\" field: {:?}", raw.info),
            }
        }
        panic!("200 connections and none landed on worker {w}")
    }

    /// [`Raw::on_worker`] then CONNECT/OK.
    pub fn handshake_on_worker(addr: SocketAddr, w: u32) -> Raw {
        let mut raw = Raw::on_worker(addr, w);
        raw.do_connect(r#"{"protocol":1}"#);
        raw
    }

    pub fn worker(&self) -> u32 {
        self.info.worker.expect("INFO.worker")
    }

    // -- writing ------------------------------------------------------------

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            None => self.stream.write_all(bytes),
            Some(tls) => {
                let mut stream = rustls::Stream::new(tls, &mut self.stream);
                stream.write_all(bytes)?;
                stream.flush()
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|err| panic!("sending {} bytes to the broker: {err}", bytes.len()));
    }

    pub fn send_frame(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let bytes = build(f);
        self.send(&bytes);
    }

    pub fn ping(&mut self) {
        self.send_frame(encode::put_ping);
    }

    pub fn pong(&mut self) {
        self.send_frame(encode::put_pong);
    }

    /// PING, then expects PONG as the very next frame.
    pub fn ping_pong(&mut self) {
        self.ping();
        self.expect_pong();
    }

    /// SUBSCRIBE with ACK; expects OK.
    pub fn subscribe(&mut self, filter: &str, sid: u32) {
        self.send_frame(|b| encode::put_subscribe(b, filter.as_bytes(), sid, None, true));
        self.expect_ok();
    }

    /// SUBSCRIBE in a queue group with ACK; expects OK.
    pub fn subscribe_queue(&mut self, filter: &str, sid: u32, queue: &str) {
        self.send_frame(|b| {
            encode::put_subscribe(b, filter.as_bytes(), sid, Some(queue.as_bytes()), true)
        });
        self.expect_ok();
    }

    /// UNSUBSCRIBE with ACK; expects OK.
    pub fn unsubscribe(&mut self, sid: u32, max_msgs: u32) {
        self.send_frame(|b| encode::put_unsubscribe(b, sid, max_msgs, true));
        self.expect_ok();
    }

    /// PUBLISH without ACK.
    pub fn publish(&mut self, subject: &str, payload: &[u8]) {
        self.send_frame(|b| encode::put_publish(b, subject.as_bytes(), None, payload, false));
    }

    /// PUBLISH with ACK; expects OK.
    pub fn publish_ack(&mut self, subject: &str, payload: &[u8]) {
        self.send_frame(|b| encode::put_publish(b, subject.as_bytes(), None, payload, true));
        self.expect_ok();
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    // -- reading ------------------------------------------------------------

    /// Reads bytes until `deadline`; false on timeout, sets `closed` on EOF.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            }
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            match self.read_some() {
                Ok(0) => {
                    self.closed = true;
                    return true;
                }
                Ok(n) => {
                    self.end += n;
                    return true;
                }
                Err(err) => match err.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return false,
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe => {
                        self.closed = true;
                        return true;
                    }
                    _ => panic!("reading from the broker: {err}"),
                },
            }
        }
    }

    /// The next frame, or Closed, or Timeout after `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            match decode_frame(&self.buf[self.start..self.end], u32::MAX) {
                Ok(Some((frame, used))) => {
                    let owned = OwnedFrame {
                        op: frame.op,
                        flags: frame.flags,
                        topic: frame.topic.to_vec(),
                        body: frame.body.to_vec(),
                    };
                    self.start += used;
                    return Next::Frame(owned);
                }
                Ok(None) => {}
                Err(err) => panic!(
                    "the broker sent bytes that are not a frame ({err}): {:02x?}",
                    &self.buf[self.start..self.end.min(self.start + 64)]
                ),
            }
            if self.closed {
                if self.start != self.end && self.allow_partial {
                    self.partial_at_close = self.end - self.start;
                    self.start = self.end;
                } else if self.start != self.end {
                    panic!(
                        "the broker closed the connection in the middle of a frame: {:02x?}",
                        &self.buf[self.start..self.end.min(self.start + 64)]
                    );
                }
                return Next::Closed;
            }
            if !self.fill(deadline) {
                return Next::Timeout;
            }
        }
    }

    /// The next frame; panics on timeout (5 s) or close.
    pub fn read_frame(&mut self) -> OwnedFrame {
        self.read_frame_within(TIMEOUT)
    }

    pub fn read_frame_within(&mut self, timeout: Duration) -> OwnedFrame {
        match self.next_frame(timeout) {
            Next::Frame(frame) => frame,
            Next::Closed => panic!("the broker closed the connection while a frame was expected"),
            Next::Timeout => panic!("no frame from the broker within {timeout:?}"),
        }
    }

    /// Reads exactly `n` raw bytes (for byte-for-byte checks).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        while self.end - self.start < n {
            if self.closed {
                panic!(
                    "connection closed after {} of {n} bytes: {:02x?}",
                    self.end - self.start,
                    &self.buf[self.start..self.end]
                );
            }
            if !self.fill(deadline) {
                panic!(
                    "only {} of {n} bytes within {TIMEOUT:?}: {:02x?}",
                    self.end - self.start,
                    &self.buf[self.start..self.end]
                );
            }
        }
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        out
    }

    pub fn expect_ok(&mut self) {
        let frame = self.read_frame();
        assert!(
            matches!(frame.parse(), ServerFrame::Ok),
            "expected OK, got {frame:?}"
        );
    }

    pub fn expect_pong(&mut self) {
        let frame = self.read_frame();
        assert!(
            matches!(frame.parse(), ServerFrame::Pong),
            "expected PONG, got {frame:?}"
        );
    }

    pub fn expect_ping(&mut self) {
        let frame = self.read_frame();
        assert!(
            matches!(frame.parse(), ServerFrame::Ping),
            "expected PING, got {frame:?}"
        );
    }

    /// Expects ERROR `code`; returns its reason.
    pub fn expect_error(&mut self, code: u16) -> String {
        let frame = self.read_frame();
        match frame.error() {
            Some((got, reason)) if got == code => reason,
            _ => panic!("expected ERROR {code}, got {frame:?}"),
        }
    }

    /// Expects a MESSAGE; returns (subject, sid, reply, payload).
    pub fn expect_message(&mut self) -> (String, u32, Option<String>, Vec<u8>) {
        let m = self.expect_msg();
        (m.subject, m.sid, m.reply, m.payload)
    }

    pub fn expect_msg(&mut self) -> Msg {
        self.expect_msg_within(TIMEOUT)
    }

    pub fn expect_msg_within(&mut self, timeout: Duration) -> Msg {
        let frame = self.read_frame_within(timeout);
        as_msg(&frame).unwrap_or_else(|| panic!("expected MESSAGE, got {frame:?}"))
    }

    /// Reads until the broker closes (EOF or reset) within 5 s; returns the
    /// frames that came before.
    pub fn expect_closed(&mut self) -> Vec<OwnedFrame> {
        self.expect_closed_within(TIMEOUT)
    }

    pub fn expect_closed_within(&mut self, timeout: Duration) -> Vec<OwnedFrame> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left) {
                Next::Frame(frame) => {
                    frames.push(frame);
                }
                Next::Closed => return frames,
                Next::Timeout => {
                    let shown: Vec<_> = frames.iter().take(20).collect();
                    panic!(
                        "the broker did not close the connection within {timeout:?}; {} frames before: {shown:?}",
                        frames.len()
                    )
                }
            }
        }
    }

    /// Like [`Raw::expect_closed_within`], but a close in the middle of a
    /// frame is accepted (a broker that gives up on a client that does not
    /// read, after a timeout or as a slow consumer, may have written part of
    /// a frame). Returns the whole frames and the bytes of the cut one.
    pub fn expect_closed_allow_partial_within(
        &mut self,
        timeout: Duration,
    ) -> (Vec<OwnedFrame>, usize) {
        self.allow_partial = true;
        let frames = self.expect_closed_within(timeout);
        self.allow_partial = false;
        (frames, self.partial_at_close)
    }

    /// Expects ERROR `code` and then the close, with nothing in between;
    /// returns the reason.
    pub fn expect_error_and_close(&mut self, code: u16) -> String {
        let frames = self.expect_closed();
        match frames.as_slice() {
            [only] => match only.error() {
                Some((got, reason)) if got == code => reason,
                _ => panic!("expected ERROR {code} then close, got {frames:?} then close"),
            },
            _ => panic!("expected ERROR {code} then close, got {frames:?} then close"),
        }
    }

    /// Nothing arrives within `d` (no frame, no close).
    pub fn expect_silence(&mut self, d: Duration) {
        match self.next_frame(d) {
            Next::Timeout => {}
            Next::Frame(frame) => panic!("expected nothing from the broker, got {frame:?}"),
            Next::Closed => {
                panic!("expected nothing from the broker, but it closed the connection")
            }
        }
    }

    /// Sends PING and returns every frame before the PONG.
    pub fn frames_until_pong(&mut self) -> Vec<OwnedFrame> {
        self.ping();
        let mut frames = Vec::new();
        loop {
            let frame = self.read_frame();
            if frame.is_op(Op::Pong) {
                assert_eq!(frame.flags, 0);
                return frames;
            }
            frames.push(frame);
        }
    }

    /// The stream, for a test's own fast reader; nothing may be buffered.
    pub fn into_stream(self) -> TcpStream {
        assert_eq!(
            self.start,
            self.end,
            "unread bytes in the harness buffer: {:02x?}",
            &self.buf[self.start..self.end]
        );
        self.stream
    }

    /// Reads `n` MESSAGEs (each within 5 s); panics on any other frame.
    pub fn read_msgs(&mut self, n: usize) -> Vec<Msg> {
        (0..n).map(|_| self.expect_msg()).collect()
    }
}

/// The MESSAGE carried by a frame, if it is one.
pub fn as_msg(frame: &OwnedFrame) -> Option<Msg> {
    match frame.parse() {
        ServerFrame::Message {
            subject,
            sid,
            reply,
            payload,
        } => Some(Msg {
            subject: String::from_utf8(subject.to_vec()).expect("UTF-8 subject"),
            sid,
            reply: reply.map(|r| String::from_utf8(r.to_vec()).expect("UTF-8 reply")),
            payload: payload.to_vec(),
        }),
        _ => None,
    }
}

fn placeholder_info() -> Info {
    Info {
        server_id: String::new(),
        version: String::new(),
        protocol: 0,
        max_payload: 0,
        max_topic_length: 0,
        auth_required: false,
        tls_required: false,
        worker: None,
    }
}

/// A TCP connection whose receive buffer is tiny (set before connect), so
/// that a subscriber that does not read backs up into the broker at once.
pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    as_client_of(addr, move || connect_small_rcvbuf_here(addr, bytes))
}

fn connect_small_rcvbuf_here(addr: SocketAddr, bytes: usize) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), TIMEOUT)
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    socket.into()
}

/// [`connect_small_rcvbuf`] until INFO names worker `w`, then CONNECT/OK.
pub fn small_rcvbuf_handshake_on_worker(addr: SocketAddr, bytes: usize, w: Option<u32>) -> Raw {
    for _ in 0..200 {
        let mut raw = Raw::from_stream(connect_small_rcvbuf(addr, bytes));
        if w.is_none() || raw.info.worker == w {
            raw.do_connect(r#"{"protocol":1}"#);
            return raw;
        }
    }
    panic!("200 connections and none landed on worker {w:?}")
}

/// Seeded xorshift64* for reproducible garbage.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A full round trip on a fresh client: handshake, subscribe, publish from a
/// second client, receive. Proves the broker still serves.
pub fn assert_serves_fresh_client(addr: SocketAddr) {
    let mut sub = Raw::handshake(addr);
    sub.subscribe("fresh.check", 1);
    let mut publisher = Raw::handshake(addr);
    publisher.publish("fresh.check", b"alive");
    publisher.ping_pong();
    let m = sub.expect_msg();
    assert_eq!(
        (m.subject.as_str(), m.sid, m.payload.as_slice()),
        ("fresh.check", 1, &b"alive"[..])
    );
    sub.ping_pong();
}

/// Flags re-exported for tests.
pub const ACK: u8 = flags::ACK;
pub const REPLY: u8 = flags::REPLY;
