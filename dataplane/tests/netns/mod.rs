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
    created: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
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

/// Skips (prints why, returns None) or, under CI=true, fails.
fn unavailable(why: String) -> Option<Lab> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("network namespace lab unavailable under CI=true: {why}");
    }
    eprintln!("skipped: network namespace lab unavailable: {why}");
    None
}

impl Lab {
    /// Builds the lab, or `None` (test skipped) without root or netns.
    pub fn new() -> Option<Lab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return unavailable("not root".to_string());
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = ((pid as usize * 7 + n) % 254 + 1) as u8;
        let mut lab = Lab {
            broker_ns: format!("bq-b-{pid}-{n}"),
            client_ns: format!("bq-c-{pid}-{n}"),
            broker_if: format!("bqb{}_{n}", pid % 100_000),
            client_if: format!("bqc{}_{n}", pid % 100_000),
            client_ip: Ipv4Addr::new(198, 18, subnet, 1),
            broker_ip: Ipv4Addr::new(198, 18, subnet, 2),
            prefix: 24,
            created: Vec::new(),
        };
        match lab.build() {
            Ok(()) => Some(lab),
            // `lab` drops here and removes what was made.
            Err(why) => unavailable(why),
        }
    }

    fn build(&mut self) -> Result<(), String> {
        for ns in [self.broker_ns.clone(), self.client_ns.clone()] {
            ip(&["netns", "add", &ns])?;
            self.created.push(ns);
        }
        let (b, c) = (self.broker_ns.clone(), self.client_ns.clone());
        ip(&[
            "link",
            "add",
            &self.broker_if,
            "netns",
            &b,
            "type",
            "veth",
            "peer",
            "name",
            &self.client_if,
            "netns",
            &c,
        ])?;
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

    /// Runs `f` on a thread inside the client namespace and returns its
    /// result (a panic in `f` is propagated).
    pub fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.client_ns);
        let handle = std::thread::spawn(move || {
            enter(&path);
            f()
        });
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Starts `f` on a thread inside the client namespace.
    pub fn spawn_in_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.client_ns);
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
