//! `[dpdk]`: the DPDK backend (poll-mode drivers, user-space TCP).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{parse_ipv4_cidr, parse_mac, validate_host, validate_tcp, ConfigError, PollStrategy};

/// `[dpdk]`: one DPDK port, one rx/tx queue pair per worker, smoltcp on
/// top. The broker owns `ip` in user space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpdkConfig {
    /// Arguments for `rte_eal_init` (argv[0] excluded); the command line's
    /// arguments after `--` are appended.
    pub eal_args: Vec<String>,
    /// The port: its id (`"0"`), or its device name as DPDK knows it
    /// (`"net_af_packet0"`, `"0000:03:00.0"`).
    pub port: String,
    /// The broker's IPv4 address and prefix, `A.B.C.D/N`.
    pub ip: String,
    /// Default route for peers outside the prefix; none = on-link only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The MAC address to use; none = the port's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Receive descriptors per queue.
    pub rx_descriptors: u16,
    /// Transmit descriptors per queue.
    pub tx_descriptors: u16,
    /// Mbufs in the pool; 0 = enough for every queue's descriptors, bursts
    /// and caches.
    pub mempool_size: u32,
    /// Mbufs cached per worker in front of the pool.
    pub mempool_cache: u32,
    /// Frames per rx burst and per tx burst.
    pub burst: usize,
    /// How an idle worker waits for packets.
    pub poll: PollStrategy,
    /// With `poll = "adaptive"`, how long an idle worker spins before it
    /// sleeps (on rx interrupts where the port has them, else in short,
    /// growing naps).
    #[serde(with = "humantime_serde")]
    pub spin: Duration,
    /// Bytes of the receive buffer of each TCP connection.
    pub tcp_rx_buffer: usize,
    /// Bytes of the send buffer of each TCP connection.
    pub tcp_tx_buffer: usize,
    /// Floor of the TCP retransmission timeout (see `[afpacket]`).
    #[serde(with = "humantime_serde")]
    pub tcp_rto_min: Duration,
    /// Listening sockets kept ready per worker.
    pub listeners: usize,
}

impl Default for DpdkConfig {
    fn default() -> DpdkConfig {
        DpdkConfig {
            eal_args: Vec::new(),
            port: "0".to_string(),
            ip: String::new(),
            gateway: None,
            mac: None,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mempool_size: 0,
            mempool_cache: 256,
            burst: 32,
            poll: PollStrategy::Adaptive,
            spin: Duration::from_micros(200),
            tcp_rx_buffer: 256 << 10,
            tcp_tx_buffer: 256 << 10,
            tcp_rto_min: super::DEFAULT_TCP_RTO_MIN,
            listeners: 64,
        }
    }
}

/// The most frames per burst.
pub const MAX_BURST: usize = 256;

impl DpdkConfig {
    /// `ip` as an address and a prefix length.
    pub fn parse_ip(&self) -> Result<(Ipv4Addr, u8), String> {
        parse_ipv4_cidr(&self.ip)
    }

    /// `mac` as six bytes, when set.
    pub fn parse_mac(&self) -> Result<Option<[u8; 6]>, String> {
        self.mac.as_deref().map(parse_mac).transpose()
    }

    /// Mbufs the pool needs for `workers` queue pairs: every descriptor
    /// filled, a burst in flight each way, and each worker's cache.
    pub fn mempool_size_for(&self, workers: usize) -> u32 {
        if self.mempool_size != 0 {
            return self.mempool_size;
        }
        let per_worker = u32::from(self.rx_descriptors)
            + u32::from(self.tx_descriptors)
            + 2 * self.burst as u32
            + 2 * self.mempool_cache;
        // DPDK's pools are most compact at 2^n - 1.
        ((per_worker * workers as u32 + 1024).next_power_of_two()).max(4096) - 1
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.port.trim().is_empty() {
            return Err(ConfigError::invalid(
                "dpdk.port",
                "dpdk.port must be a port id or a device name (e.g. \"0\", \"net_af_packet0\", \"0000:03:00.0\")",
            ));
        }
        validate_host("dpdk", &self.ip, self.gateway, self.mac.as_deref())?;
        for (key, value) in [
            ("dpdk.rx_descriptors", self.rx_descriptors),
            ("dpdk.tx_descriptors", self.tx_descriptors),
        ] {
            if !(64..=16384).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{key} must be between 64 and 16384 (got {value})"),
                ));
            }
        }
        if self.burst == 0 || self.burst > MAX_BURST {
            return Err(ConfigError::invalid(
                "dpdk.burst",
                format!(
                    "dpdk.burst must be between 1 and {MAX_BURST} (got {})",
                    self.burst
                ),
            ));
        }
        if self.mempool_cache > 512 {
            return Err(ConfigError::invalid(
                "dpdk.mempool_cache",
                format!(
                    "dpdk.mempool_cache must be at most 512 (got {})",
                    self.mempool_cache
                ),
            ));
        }
        if self.mempool_size != 0 && self.mempool_size < 1024 {
            return Err(ConfigError::invalid(
                "dpdk.mempool_size",
                format!(
                    "dpdk.mempool_size must be 0 (sized automatically) or at least 1024 (got {})",
                    self.mempool_size
                ),
            ));
        }
        validate_tcp(
            "dpdk",
            self.spin,
            self.tcp_rx_buffer,
            self.tcp_tx_buffer,
            self.tcp_rto_min,
            self.listeners,
        )
    }
}
