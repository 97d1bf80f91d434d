//! A network-namespace lab for the user-space TCP backends.
//!
//! [`Lab::new`] builds two namespaces joined by a veth pair, with addresses
//! from 198.18.0.0/15 (RFC 2544 benchmarking space):
//!
//! ```text
//!   netns "bq-b-PID-N"                      netns "bq-c-PID-N"
//!   bqbPID_N  (no kernel address)  <--veth-->  bqcPID_N  198.18.X.1/24
//!   blipmqd --backend afpacket owns 198.18.X.2
//! ```
//!
//! The broker side sits in a namespace of its own, so that its kernel (with
//! no address and no routes) can neither answer nor forward the traffic the
//! broker handles in user space. Offloads are left as veth sets them
//! (tx checksum offload and TSO on): the backend must cope with partial
//! checksums and GSO frames.
//!
//! Names carry the pid and a counter, so tests run in parallel; [`Lab`]'s
//! `Drop` deletes both namespaces (and with them the veth pair), also when a
//! test fails. Without root or `ip netns`, [`Lab::new`] prints why and
//! returns `None` (the test skips), except under `CI=true`, where it panics.
//!
//! Clients run inside the client namespace: [`Lab::in_client`] runs a
//! closure on a thread that `setns`es into it first.
//!
//! [`Lab::with_relay`] puts a third namespace between the two, for a
//! user-space relay that forwards (and impairs) the frames:
//!
//! ```text
//!   broker ns: bqb..  <--veth-->  bqrb.. relay ns bqrc..  <--veth-->  bqc.. client ns
//! ```
//!
//! There the client's interface sends one TCP segment per frame
//! (`gso_max_segs 1`): the relay forwards frames of the MTU, and a lost
//! frame is one lost segment, as on a wire.

#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Two namespaces and a veth pair; removed on drop.
pub struct Lab {
    pub broker_ns: String,
    pub client_ns: String,
    /// The broker's interface (in `broker_ns`), without a kernel address.
    pub broker_if: String,
    /// The client's interface (in `client_ns`).
    pub client_if: String,
    pub client_ip: Ipv4Addr,
    /// The address the broker owns in user space.
    pub broker_ip: Ipv4Addr,
    pub prefix: u8,
    /// With [`Lab::with_relay`]: the middle namespace and its interfaces.
    pub relay: Option<RelayLinks>,
    /// A [`Lab::for_tap`] lab: one namespace, no veth.
    pub tap: bool,
    created: Vec<String>,
}

/// The relay namespace of a [`Lab::with_relay`] lab.
pub struct RelayLinks {
    pub ns: String,
    /// The veth end facing the broker's interface.
    pub broker_side_if: String,
    /// The veth end facing the client's interface.
    pub client_side_if: String,
}

/// Runs `ip ARGS`; the error says what failed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run `ip`: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A veth pair from `a` in namespace `a_ns` to `b` in `b_ns`.
fn veth(a: &str, a_ns: &str, b: &str, b_ns: &str) -> Result<(), String> {
    ip(&[
        "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns,
    ])
}

/// Skips (prints why, returns None) or, under CI=true, fails.
fn unavailable(why: String) -> Option<Lab> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("network namespace lab unavailable under CI=true: {why}");
    }
    eprintln!("skipped: network namespace lab unavailable: {why}");
    None
}

/// Whether labs can be built here (root and `ip netns`); prints why not
/// (the caller skips), or under CI=true panics.
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return unavailable("not root".to_string()).is_some();
    }
    match ip(&["netns", "list"]) {
        Ok(()) => true,
        Err(why) => unavailable(why).is_some(),
    }
}

/// Runs `f` on a thread inside the network namespace at `path` and returns
/// its result (a panic in `f` is propagated).
pub fn run_in<T: Send + 'static>(path: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || {
        enter(&path);
        f()
    });
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

impl Lab {
    /// Builds the lab, or `None` (test skipped) without root or netns.
    pub fn new() -> Option<Lab> {
        Lab::create(false, false)
    }

    /// Like [`Lab::new`], with a relay namespace between broker and client
    /// (see the module documentation).
    pub fn with_relay() -> Option<Lab> {
        Lab::create(true, false)
    }

    /// One namespace for a broker on DPDK's `net_tap`: the driver makes the
    /// tap interface `broker_if` there, and [`Lab::configure_tap`] gives its
    /// kernel side the client's address. Broker and clients share the
    /// namespace (`broker_ns == client_ns`); the tap is the link.
    pub fn for_tap() -> Option<Lab> {
        Lab::create(false, true)
    }

    fn create(with_relay: bool, tap: bool) -> Option<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return unavailable("not root".to_string());
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = ((pid as usize * 7 + n) % 254 + 1) as u8;
        let client_ns = format!("bq-c-{pid}-{n}");
        let mut lab = Lab {
            broker_ns: if tap {
                client_ns.clone()
            } else {
                format!("bq-b-{pid}-{n}")
            },
            client_ns,
            broker_if: format!("{}{}_{n}", if tap { "bqt" } else { "bqb" }, pid % 100_000),
            client_if: format!("bqc{}_{n}", pid % 100_000),
            client_ip: Ipv4Addr::new(198, 18, subnet, 1),
            broker_ip: Ipv4Addr::new(198, 18, subnet, 2),
            prefix: 24,
            relay: with_relay.then(|| RelayLinks {
                ns: format!("bq-r-{pid}-{n}"),
                broker_side_if: format!("bqrb{}_{n}", pid % 100_000),
                client_side_if: format!("bqrc{}_{n}", pid % 100_000),
            }),
            tap,
            created: Vec::new(),
        };
        match lab.build() {
            Ok(()) => Some(lab),
            // `lab` drops here and removes what was made.
            Err(why) => unavailable(why),
        }
    }

    fn build(&mut self) -> Result<(), String> {
        if self.tap {
            self.client_if = self.broker_if.clone();
            ip(&["netns", "add", &self.client_ns])?;
            self.created.push(self.client_ns.clone());
            return ip(&["-n", &self.client_ns, "link", "set", "lo", "up"]);
        }
        for ns in [self.broker_ns.clone(), self.client_ns.clone()] {
            ip(&["netns", "add", &ns])?;
            self.created.push(ns);
        }
        let (b, c) = (self.broker_ns.clone(), self.client_ns.clone());
        match &self.relay {
            None => veth(&self.broker_if, &b, &self.client_if, &c)?,
            Some(relay) => {
                ip(&["netns", "add", &relay.ns])?;
                self.created.push(relay.ns.clone());
                let r = &relay.ns;
                veth(&self.broker_if, &b, &relay.broker_side_if, r)?;
                veth(&relay.client_side_if, r, &self.client_if, &c)?;
                for interface in [&relay.broker_side_if, &relay.client_side_if] {
                    ip(&["-n", r, "link", "set", interface, "promisc", "on"])?;
                    ip(&["-n", r, "link", "set", interface, "up"])?;
                }
                ip(&[
                    "-n",
                    &c,
                    "link",
                    "set",
                    &self.client_if,
                    "gso_max_segs",
                    "1",
                ])?;
            }
        }
        ip(&["-n", &b, "link", "set", "lo", "up"])?;
        ip(&["-n", &b, "link", "set", &self.broker_if, "up"])?;
        ip(&["-n", &c, "link", "set", "lo", "up"])?;
        let client_cidr = format!("{}/{}", self.client_ip, self.prefix);
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &client_cidr,
            "dev",
            &self.client_if,
        ])?;
        ip(&["-n", &c, "link", "set", &self.client_if, "up"])?;
        Ok(())
    }

    /// Gives the tap interface of a [`Lab::for_tap`] lab, which the broker
    /// made, the client's address, and brings it up.
    pub fn configure_tap(&self) -> Result<(), String> {
        let client_cidr = format!("{}/{}", self.client_ip, self.prefix);
        let ns = &self.client_ns;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &client_cidr,
            "dev",
            &self.client_if,
        ])?;
        ip(&["-n", ns, "link", "set", &self.client_if, "up"])?;
        self.client_offloads_off()
    }

    /// Turns the client interface's checksum and segmentation offloads off:
    /// DPDK's af_packet driver neither completes partial checksums nor takes
    /// GSO frames larger than its frame size.
    pub fn client_offloads_off(&self) -> Result<(), String> {
        ip(&[
            "netns",
            "exec",
            &self.client_ns,
            "ethtool",
            "-K",
            &self.client_if,
            "tx",
            "off",
            "tso",
            "off",
            "gso",
            "off",
        ])
    }

    /// A name unique to this lab, for files (e.g. DPDK's `--file-prefix`).
    pub fn name(&self) -> &str {
        &self.client_ns
    }

    /// `198.18.X.2/24`, for `--ip`.
    pub fn broker_cidr(&self) -> String {
        format!("{}/{}", self.broker_ip, self.prefix)
    }

    pub fn broker_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.broker_ip, port))
    }

    /// A command that runs `program` inside the broker namespace.
    pub fn broker_command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.broker_ns, program]);
        command
    }

    /// The relay namespace's file (a [`Lab::with_relay`] lab).
    pub fn relay_ns_path(&self) -> Option<String> {
        self.relay
            .as_ref()
            .map(|relay| format!("/var/run/netns/{}", relay.ns))
    }

    /// The client namespace's file, for [`enter`] and [`run_in`].
    pub fn client_ns_path(&self) -> String {
        format!("/var/run/netns/{}", self.client_ns)
    }

    /// Runs `f` on a thread inside the client namespace and returns its
    /// result (a panic in `f` is propagated).
    pub fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in(self.client_ns_path(), f)
    }

    /// Starts `f` on a thread inside the client namespace.
    pub fn spawn_in_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.client_ns_path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|error| panic!("open {path}: {error}"));
    // SAFETY: setns with a valid namespace fd; it changes only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and so the pair.
        for ns in self.created.drain(..).rev() {
            if let Err(why) = ip(&["netns", "del", &ns]) {
                eprintln!("cleanup: {why}");
            }
        }
    }
}
