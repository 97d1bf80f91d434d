//! The veth lab of `--backend afpacket` and `--veth-compare`: two network
//! namespaces joined by one veth pair, addresses from 198.18.0.0/15
//! (RFC 2544 benchmarking space).
//!
//! ```text
//!   netns "bqbench-b-PID"                       netns "bqbench-c-PID"
//!   bqbbPID (broker end)        <--veth-->      bqbcPID  198.18.X.1/24
//!   afpacket: no kernel address, blipmqd owns 198.18.X.2 in user space
//!   dpdk:     the same, through DPDK's net_af_packet driver
//!   kernel:   198.18.X.2/24 as a kernel address, blipmqd listens on it
//!   nats-server: the same kernel address, nats-server listens on it
//! ```
//!
//! The broker runs in the broker namespace (`ip netns exec`); the bench's
//! clients open their sockets from the client namespace: the main thread
//! enters it ([`VethLab::enter_client`]) before any client thread is
//! spawned, and threads inherit the namespace of the thread that spawns
//! them. Every backend goes through the same pair. The client end keeps
//! veth's default offloads (checksum offload, TSO/GSO), except for dpdk
//! runs: DPDK's af_packet driver neither completes partial checksums nor
//! takes GSO frames, so they are off while a dpdk broker runs
//! ([`VethLab::set_client_offloads`]).
//!
//! The namespaces are deleted on drop and, through a registry, by the
//! bench's signal handler ([`delete_registered`]); deleting the broker
//! namespace deletes the veth pair.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// Namespaces created and not yet deleted, for the signal handler.
static NAMESPACES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<String>> {
    NAMESPACES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Deletes every namespace a lab created and has not deleted yet: for the
/// signal handler, after it killed the brokers. Returns how many.
pub fn delete_registered() -> usize {
    let mut names = registry();
    let count = names.len();
    for name in names.drain(..) {
        let _ = ip(&["netns", "del", &name]);
    }
    count
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (apt-get install -y iproute2)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Which blipmqd backend a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The kernel's TCP stack (blipmqd's default backend).
    Kernel,
    /// blipmqd's user-space TCP over an AF_PACKET socket on the interface.
    Afpacket,
    /// blipmqd's user-space TCP on a DPDK port: DPDK's net_af_packet
    /// driver on the interface, a queue pair per worker (a blipmqd built
    /// with the dpdk feature).
    Dpdk,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Afpacket => "afpacket",
            Backend::Dpdk => "dpdk",
        }
    }

    /// Whether blipmqd owns the address in user space (no kernel address
    /// on its veth end).
    pub fn is_userspace(self) -> bool {
        self != Backend::Kernel
    }
}

/// The TCP port a broker listens on in the lab (the namespace is its own,
/// so the port is free; blipmqd's kernel backend takes any port).
pub const LAB_PORT: u16 = 4222;

/// Where and how blipmqd runs in a lab: what [`crate::brokers::blipmq`]
/// needs to start it.
#[derive(Debug, Clone)]
pub struct LabTarget {
    pub backend: Backend,
    pub broker_ns: String,
    pub broker_if: String,
    pub broker_ip: Ipv4Addr,
    pub prefix: u8,
}

impl LabTarget {
    /// `198.18.X.2/24`.
    pub fn broker_cidr(&self) -> String {
        format!("{}/{}", self.broker_ip, self.prefix)
    }
}

/// Two namespaces and a veth pair; removed on drop.
pub struct VethLab {
    pub broker_ns: String,
    pub client_ns: String,
    pub broker_if: String,
    pub client_if: String,
    pub broker_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
    pub prefix: u8,
    /// Does the broker end carry `broker_ip` as a kernel address now?
    kernel_address: bool,
    /// Are the client end's checksum and segmentation offloads on now?
    client_offloads: bool,
}

impl VethLab {
    /// Builds the lab (root and `ip netns` needed).
    pub fn create() -> Result<VethLab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("--backend afpacket and --veth-compare build network namespaces: run as root");
        }
        let pid = std::process::id();
        let subnet = (pid % 254 + 1) as u8;
        let lab = VethLab {
            broker_ns: format!("bqbench-b-{pid}"),
            client_ns: format!("bqbench-c-{pid}"),
            broker_if: format!("bqbb{}", pid % 10_000_000),
            client_if: format!("bqbc{}", pid % 10_000_000),
            broker_ip: Ipv4Addr::new(198, 18, subnet, 2),
            client_ip: Ipv4Addr::new(198, 18, subnet, 1),
            prefix: 24,
            kernel_address: false,
            client_offloads: true,
        };
        // From here on, `lab`'s Drop removes whatever was made.
        lab.build()?;
        Ok(lab)
    }

    fn build(&self) -> Result<()> {
        for ns in [&self.broker_ns, &self.client_ns] {
            // Registered before it exists: the signal handler may strike
            // between the two, and deleting a missing namespace is harmless.
            registry().push(ns.clone());
            ip(&["netns", "add", ns])?;
        }
        let (b, c) = (self.broker_ns.as_str(), self.client_ns.as_str());
        ip(&[
            "link",
            "add",
            &self.broker_if,
            "netns",
            b,
            "type",
            "veth",
            "peer",
            "name",
            &self.client_if,
            "netns",
            c,
        ])?;
        ip(&["-n", b, "link", "set", "lo", "up"])?;
        ip(&["-n", b, "link", "set", &self.broker_if, "up"])?;
        ip(&["-n", c, "link", "set", "lo", "up"])?;
        let client_cidr = format!("{}/{}", self.client_ip, self.prefix);
        ip(&["-n", c, "addr", "add", &client_cidr, "dev", &self.client_if])?;
        ip(&["-n", c, "link", "set", &self.client_if, "up"])?;
        Ok(())
    }

    /// Gives the broker end `broker_ip` as a kernel address (kernel
    /// backend), or takes it away (afpacket: the broker owns the address in
    /// user space and the kernel must neither answer nor reset).
    pub fn set_kernel_address(&mut self, on: bool) -> Result<()> {
        if on == self.kernel_address {
            return Ok(());
        }
        let cidr = format!("{}/{}", self.broker_ip, self.prefix);
        let verb = if on { "add" } else { "del" };
        ip(&[
            "-n",
            &self.broker_ns,
            "addr",
            verb,
            &cidr,
            "dev",
            &self.broker_if,
        ])?;
        self.kernel_address = on;
        // The client's neighbour entry may name the old owner's state;
        // both own the veth end's MAC, but flush it to start clean.
        let _ = ip(&["-n", &self.client_ns, "neigh", "flush", "all"]);
        Ok(())
    }

    /// Turns the client end's checksum and segmentation offloads on
    /// (veth's defaults) or off (for DPDK's af_packet driver).
    pub fn set_client_offloads(&mut self, on: bool) -> Result<()> {
        if on == self.client_offloads {
            return Ok(());
        }
        let state = if on { "on" } else { "off" };
        let output = Command::new("ip")
            .args(["netns", "exec", &self.client_ns, "ethtool", "-K"])
            .args([&self.client_if, "tx", state, "tso", state, "gso", state])
            .stdin(Stdio::null())
            .output()
            .context("cannot run ethtool")?;
        if !output.status.success() {
            bail!(
                "ethtool -K {} tx/tso/gso {state}: {}",
                self.client_if,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        self.client_offloads = on;
        Ok(())
    }

    pub fn target(&self, backend: Backend) -> LabTarget {
        LabTarget {
            backend,
            broker_ns: self.broker_ns.clone(),
            broker_if: self.broker_if.clone(),
            broker_ip: self.broker_ip,
            prefix: self.prefix,
        }
    }

    /// Moves the calling thread into the client namespace: every socket it
    /// opens from now on, and every thread it spawns, is in there.
    pub fn enter_client(&self) -> Result<()> {
        let path = format!("/run/netns/{}", self.client_ns);
        let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        // SAFETY: setns with a valid namespace fd, kept open for the call;
        // it changes the network namespace of this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "veth pair {} (netns {}, broker {}) <-> {} (netns {}, clients {}/{}), veth default offloads (client offloads off for dpdk)",
            self.broker_if,
            self.broker_ns,
            self.broker_ip,
            self.client_if,
            self.client_ns,
            self.client_ip,
            self.prefix
        )
    }
}

impl Drop for VethLab {
    fn drop(&mut self) {
        let mut names = registry();
        for ns in [&self.client_ns, &self.broker_ns] {
            if let Some(at) = names.iter().position(|n| n == ns) {
                names.remove(at);
                if let Err(why) = ip(&["netns", "del", ns]) {
                    eprintln!("blipmq-bench: cleanup: {why:#}");
                }
            }
        }
    }
}
