//! The broker configuration: one TOML file (`blipmq.toml`), every key with a
//! default, unknown keys rejected with the key and the line.
//!
//! `blipmq.toml` at the repository root documents every key with its default;
//! a test keeps it equal to [`Config::default`].

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod dpdk;
mod error;
mod leafnode;
#[cfg(test)]
mod tests;
mod users;

pub use self::dpdk::DpdkConfig;
pub use self::error::ConfigError;
pub use self::leafnode::{parse_leaf_url, LeafNodeConfig, LeafRemoteConfig, LeafUrl};
pub use self::users::{
    check_file_mode, is_bcrypt, AllowDeny, AllowResponsesConfig, PermissionsConfig,
    ResponseLimitsConfig, Secret, SubjectRulesConfig, UserConfig, REDACTED,
};

/// 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;
/// The largest `limits.max_payload` accepted: 64 MiB.
pub const MAX_PAYLOAD_LIMIT: u32 = 64 << 20;
/// The most worker threads the broker runs.
pub const MAX_WORKERS: usize = 64;
/// Floor of the user-space backends' TCP retransmission timeout: above a
/// LAN's round trip and a busy worker's scheduling delay, far below the
/// Internet's 1 s.
pub const DEFAULT_TCP_RTO_MIN: Duration = Duration::from_millis(20);
/// Room per ring record beyond the payload (header, subject, reply).
pub const RING_RECORD_ALLOWANCE: usize = 64 << 10;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub nats: NatsConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub control: ControlConfig,
    pub dataplane: DataplaneConfig,
    pub afpacket: AfPacketConfig,
    pub dpdk: DpdkConfig,
    pub leafnode: LeafNodeConfig,
}

/// `[server]`: the listener, the workers and the connection timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the broker listens on.
    pub listen: SocketAddr,
    /// Worker threads; 0 = one per available core (at most 64).
    pub workers: usize,
    /// Pin each worker thread to a core where allowed.
    pub pin_workers: bool,
    /// 0: workers run under the normal scheduler. 1..=99: each worker
    /// runs real-time (SCHED_FIFO) at this priority, so that no ordinary
    /// thread (a client, a batch job) preempts it between the read of a
    /// message and its write. Needs CAP_SYS_NICE (root); without it the
    /// broker warns and runs them normally.
    pub worker_priority: u8,
    /// The `server_id` in INFO; empty = generated at start.
    pub server_name: String,
    /// How often the broker PINGs an idle client.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Unanswered PINGs before the connection is closed as stale.
    pub max_pings_out: u32,
    /// How long a shutdown waits for queued data to flush.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Client connections across the broker.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9999)),
            workers: 0,
            pin_workers: true,
            worker_priority: 0,
            server_name: String::new(),
            ping_interval: Duration::from_secs(120),
            max_pings_out: 2,
            drain_timeout: Duration::from_secs(5),
            max_connections: 65536,
        }
    }
}

/// `[limits]`: per-message and per-connection bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message payload in bytes, 1..=64 MiB.
    pub max_payload: u32,
    /// Longest subject or filter in bytes, >= 1.
    pub max_topic_length: u16,
    /// Subscriptions per connection; 0 = unlimited.
    pub max_subscriptions: u32,
    /// Bytes queued for one client before it is dropped as a slow consumer.
    pub max_pending_bytes: u64,
    /// How long a subscriber may hold over half of `max_pending_bytes`
    /// queued, with the publishers that feed it paced, before it is cut off
    /// as a slow consumer; 0 = no pacing, cut only past `max_pending_bytes`.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_grace: Duration,
    /// Messages a connection may publish per second (a burst of one
    /// second's worth); 0 = unlimited.
    pub max_msgs_per_sec: u64,
    /// Payload bytes a connection may publish per second (a burst of one
    /// second's worth); 0 = unlimited.
    pub max_bytes_per_sec: u64,
    /// What happens to messages over those rates.
    pub rate_policy: RatePolicy,
    /// Connections one client IP address may hold across the broker;
    /// 0 = unlimited.
    pub max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_topic_length: 255,
            max_subscriptions: 65536,
            max_pending_bytes: 64 << 20,
            slow_consumer_grace: Duration::from_secs(2),
            max_msgs_per_sec: 0,
            max_bytes_per_sec: 0,
            rate_policy: RatePolicy::Pace,
            max_connections_per_ip: 0,
        }
    }
}

/// `limits.rate_policy`: what a connection over its publish rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RatePolicy {
    /// Its socket is not read until its budget refills: TCP slows the
    /// publisher down, and nothing is lost.
    #[default]
    Pace,
    /// Each message over the rate gets ERROR 429 (NATS: `-ERR`) and is not
    /// delivered; the connection stays open.
    Reject,
}

/// `[nats]`: the listener for NATS clients.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Address (`IP:PORT`) where NATS clients connect, served by the same
    /// workers as `server.listen`; "" = off.
    pub listen: String,
}

impl NatsConfig {
    /// `listen` as an address; `Ok(None)` when it is "" (off).
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        optional_addr("nats.listen", &self.listen, "127.0.0.1:4222")
    }
}

/// `[tls]`: TLS on both listeners, off while `cert_file` is "".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM); "" = no TLS.
    pub cert_file: String,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CAs (PEM) that client certificates must chain to; set, every client
    /// must present one (mutual TLS). "" = no client certificates.
    pub ca_file: String,
    /// Refuse NATS clients that do not upgrade to TLS. The binary protocol
    /// always starts with the TLS handshake when TLS is configured.
    pub required: bool,
    /// NATS clients start with the TLS handshake, before INFO, as
    /// nats-server 2.10's `handshake_first`.
    pub handshake_first: bool,
    /// A connection's user is the `[[auth.users]]` entry its client
    /// certificate names (email, DNS or URI SAN, or RFC 2253 subject), as
    /// nats-server's `verify_and_map`; needs `ca_file`.
    pub verify_and_map: bool,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            required: true,
            handshake_first: false,
            verify_and_map: false,
        }
    }
}

impl TlsConfig {
    /// The files and policy, when TLS is on.
    pub fn settings(&self) -> Option<crate::tls::TlsSettings> {
        (!self.cert_file.is_empty()).then(|| crate::tls::TlsSettings {
            cert_file: self.cert_file.clone().into(),
            key_file: self.key_file.clone().into(),
            ca_file: (!self.ca_file.is_empty()).then(|| self.ca_file.clone().into()),
            required: self.required,
            handshake_first: self.handshake_first,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, false) => Err(ConfigError::invalid(
                "tls.cert_file",
                "tls.key_file is set but tls.cert_file is not: set both to turn TLS on",
            )),
            (false, true) => Err(ConfigError::invalid(
                "tls.key_file",
                "tls.cert_file is set but tls.key_file is not: set both to turn TLS on",
            )),
            (true, true) if !self.ca_file.is_empty() => Err(ConfigError::invalid(
                "tls.ca_file",
                "tls.ca_file needs tls.cert_file and tls.key_file",
            )),
            _ if self.verify_and_map && self.ca_file.is_empty() => Err(ConfigError::invalid(
                "tls.verify_and_map",
                "tls.verify_and_map needs tls.ca_file: users are taken from client \
                 certificates, which only mutual TLS asks for",
            )),
            _ => Ok(()),
        }
    }
}

/// `[auth]`: `None` = no authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The token every client must present in CONNECT; `Some("")` is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `[[auth.users]]`: users with a password or a token and their
    /// permissions; not together with `token`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    /// How long a connection may take from accept until its CONNECT is
    /// accepted before it gets ERROR 401 and is closed; 0 = no limit.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            token: None,
            users: Vec::new(),
            // As nats-server's default.
            timeout: Duration::from_secs(2),
        }
    }
}

/// `[control]`: how operators see the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket for `blipmqctl` (mode 0600): a path; "auto" =
    /// `$XDG_RUNTIME_DIR/blipmqd.sock`, else `/tmp/blipmqd-UID.sock`, and
    /// skipped with a warning if another broker holds it; "" = none.
    pub socket: String,
    /// File the workers' counters are mapped from (shared memory; put it on
    /// tmpfs such as /dev/shm); "" keeps them in this process only.
    pub stats_file: String,
    /// Address (`IP:PORT`) of the HTTP server for `/metrics`, `/healthz` and
    /// `/varz`, run by the broker on its own thread; "" = off. It reads the
    /// workers' counters in process, so it needs no `stats_file`.
    pub metrics_listen: String,
}

impl Default for ControlConfig {
    fn default() -> ControlConfig {
        ControlConfig {
            socket: AUTO_SOCKET.to_string(),
            stats_file: String::new(),
            metrics_listen: String::new(),
        }
    }
}

/// `control.socket` value for the default location.
pub const AUTO_SOCKET: &str = "auto";

impl ControlConfig {
    /// `metrics_listen` as an address; `Ok(None)` when it is "" (off).
    pub fn metrics_listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        optional_addr(
            "control.metrics_listen",
            &self.metrics_listen,
            "127.0.0.1:8222",
        )
    }
}

/// The value of `key`, an `IP:PORT` address or "" for off.
fn optional_addr(key: &str, value: &str, example: &str) -> Result<Option<SocketAddr>, String> {
    let text = value.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!(
            "{key} must be an IP:PORT socket address such as \"{example}\", or \"\" for off (got {value:?})"
        )
    })
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error`, `off`, or an `EnvFilter`
    /// directive list such as `info,blipmq_dataplane::worker=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `text` or `json`"
            )),
        }
    }
}

/// `[dataplane]`: the packet I/O backend and the inter-worker rings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    pub backend: BackendKind,
    /// Bytes per SPSC ring between each ordered pair of workers; a power of
    /// two, at least `2 * (limits.max_payload + 64 KiB)`.
    pub ring_bytes: usize,
    /// Subject-match cache entries per worker.
    pub cache_subjects: usize,
}

impl Default for DataplaneConfig {
    fn default() -> DataplaneConfig {
        DataplaneConfig {
            backend: BackendKind::Kernel,
            ring_bytes: 8 << 20,
            cache_subjects: 4096,
        }
    }
}

/// `[afpacket]`: the AF_PACKET (TPACKET_V2) backend with user-space TCP.
/// The broker owns `ip` in user space; the kernel has no address on the
/// interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AfPacketConfig {
    /// The network interface to take frames from (e.g. a veth or a second NIC).
    pub interface: String,
    /// The broker's IPv4 address and prefix, `A.B.C.D/N`.
    pub ip: String,
    /// Default route for peers outside the prefix; none = on-link peers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The MAC address to use; none = the interface's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Bytes per ring block: a power of two, a multiple of the page size.
    pub block_size: usize,
    /// Blocks per ring (the rx ring and the tx ring each).
    pub block_count: usize,
    /// Bytes per frame slot of both rings: a power of two that holds a
    /// frame of the interface's MTU. Received frames larger than a slot
    /// (GSO/GRO super-frames) are read from a copy the kernel queues.
    pub frame_size: usize,
    /// No longer used: the rx ring hands over every frame at once
    /// (TPACKET_V2). Accepted, with a warning, so that older files load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_timeout_ms: Option<u32>,
    /// How an idle worker waits for packets.
    pub poll: PollStrategy,
    /// With `poll = "adaptive"`, how long an idle worker spins before it
    /// blocks in poll().
    #[serde(with = "humantime_serde")]
    pub spin: Duration,
    /// Bytes of the receive buffer of each TCP connection (> 64 KiB turns
    /// window scaling on).
    pub tcp_rx_buffer: usize,
    /// Bytes of the send buffer of each TCP connection.
    pub tcp_tx_buffer: usize,
    /// Floor of the TCP retransmission timeout: what a loss that fast
    /// retransmit cannot repair (a lost tail, a lost retransmission) costs
    /// at least. RFC 6298 says 1 s, made for the Internet; a LAN's round
    /// trips are microseconds.
    #[serde(with = "humantime_serde")]
    pub tcp_rto_min: Duration,
    /// Listening sockets kept ready per worker: the burst of simultaneous
    /// SYNs that is absorbed (user-space TCP has no accept backlog).
    pub listeners: usize,
    /// TCP segmentation offload: send segments of up to 63 KiB and let the
    /// kernel cut them to the link's MTU (GSO, or the NIC's TSO), instead
    /// of one frame per MTU through the socket, the driver and the peer.
    pub segmentation_offload: bool,
}

impl Default for AfPacketConfig {
    fn default() -> AfPacketConfig {
        AfPacketConfig {
            interface: String::new(),
            ip: String::new(),
            gateway: None,
            mac: None,
            block_size: 1 << 18,
            block_count: 64,
            frame_size: 2048,
            block_timeout_ms: None,
            poll: PollStrategy::Adaptive,
            spin: Duration::from_micros(200),
            tcp_rx_buffer: 256 << 10,
            tcp_tx_buffer: 256 << 10,
            tcp_rto_min: DEFAULT_TCP_RTO_MIN,
            listeners: 64,
            segmentation_offload: true,
        }
    }
}

impl AfPacketConfig {
    /// `ip` as an address and a prefix length.
    pub fn parse_ip(&self) -> Result<(Ipv4Addr, u8), String> {
        parse_ipv4_cidr(&self.ip)
    }

    /// `mac` as six bytes, when set.
    pub fn parse_mac(&self) -> Result<Option<[u8; 6]>, String> {
        self.mac.as_deref().map(parse_mac).transpose()
    }
}

/// Parses `A.B.C.D/N` with `N` in 1..=32.
pub fn parse_ipv4_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not A.B.C.D/N"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("`/{prefix}` is not a prefix length between 1 and 32"))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() || addr.is_loopback() {
        return Err(format!("{addr} cannot be a host address"));
    }
    Ok((addr, prefix))
}

/// Parses `aa:bb:cc:dd:ee:ff` (a unicast address).
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        *byte = parts
            .next()
            .filter(|p| p.len() == 2)
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| format!("`{text}` is not a MAC address aa:bb:cc:dd:ee:ff"))?;
    }
    if parts.next().is_some() {
        return Err(format!("`{text}` is not a MAC address aa:bb:cc:dd:ee:ff"));
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(format!("`{text}` is not a unicast MAC address"));
    }
    Ok(mac)
}

/// How an idle user-space (afpacket, dpdk) worker waits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum PollStrategy {
    /// Spin on the ring forever: lowest latency, one core per worker.
    Busy,
    /// Spin for `spin`, then block in poll() on the ring and the waker.
    #[default]
    Adaptive,
}

/// The packet I/O backend.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Kernel TCP sockets with epoll.
    #[default]
    Kernel,
    /// AF_PACKET TPACKET_V2 rings with user-space TCP (smoltcp).
    #[value(name = "afpacket")]
    AfPacket,
    /// DPDK poll-mode drivers with user-space TCP (smoltcp); needs the
    /// `dpdk` cargo feature.
    Dpdk,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Kernel => "kernel",
            BackendKind::AfPacket => "afpacket",
            BackendKind::Dpdk => "dpdk",
        }
    }

    /// Whether this build of the broker can run on this backend (dpdk needs
    /// the `dpdk` cargo feature).
    pub fn is_implemented(self) -> bool {
        match self {
            BackendKind::Kernel | BackendKind::AfPacket => true,
            BackendKind::Dpdk => cfg!(feature = "dpdk"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendKind, String> {
        match s {
            "kernel" => Ok(BackendKind::Kernel),
            "afpacket" => Ok(BackendKind::AfPacket),
            "dpdk" => Ok(BackendKind::Dpdk),
            other => Err(format!(
                "unknown backend `{other}`, expected `kernel`, `afpacket` or `dpdk`"
            )),
        }
    }
}

impl Config {
    /// Parses and validates a TOML document. Errors name the line and key.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_toml_str(text)?;
        config.validate().map_err(|error| error.locate_in(text))?;
        Ok(config)
    }

    /// Parses a TOML document without validating the values (missing keys
    /// take their defaults; unknown keys and bad types are still errors).
    pub fn parse_toml_str(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::from_toml(error, text))
    }

    /// Reads, parses and validates the file at `path`. Errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        let config = Config::from_toml_str(&text).map_err(|error| error.with_file(path))?;
        check_file_mode(path, &config)?;
        Ok(config)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        if server.workers > MAX_WORKERS {
            return Err(ConfigError::invalid(
                "server.workers",
                format!(
                    "server.workers must be between 0 (one per core) and {MAX_WORKERS} (got {})",
                    server.workers
                ),
            ));
        }
        if server.server_name.len() > 255 || server.server_name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "server.server_name",
                "server.server_name must be at most 255 bytes without control characters",
            ));
        }
        if server.ping_interval.is_zero() {
            return Err(ConfigError::invalid(
                "server.ping_interval",
                "server.ping_interval must be greater than 0",
            ));
        }
        if server.max_pings_out == 0 {
            return Err(ConfigError::invalid(
                "server.max_pings_out",
                "server.max_pings_out must be at least 1",
            ));
        }
        if server.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "server.max_connections must be at least 1",
            ));
        }
        if server.worker_priority > 99 {
            return Err(ConfigError::invalid(
                "server.worker_priority",
                format!(
                    "server.worker_priority must be 0 (normal scheduling) or a SCHED_FIFO priority \
                     1..=99 (got {})",
                    server.worker_priority
                ),
            ));
        }

        let limits = &self.limits;
        if limits.max_payload == 0 || limits.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(ConfigError::invalid(
                "limits.max_payload",
                format!(
                    "limits.max_payload must be between 1 and {MAX_PAYLOAD_LIMIT} (got {})",
                    limits.max_payload
                ),
            ));
        }
        if limits.max_topic_length == 0 {
            return Err(ConfigError::invalid(
                "limits.max_topic_length",
                "limits.max_topic_length must be at least 1",
            ));
        }
        if limits.max_pending_bytes < u64::from(limits.max_payload) {
            return Err(ConfigError::invalid(
                "limits.max_pending_bytes",
                format!(
                    "limits.max_pending_bytes must be at least limits.max_payload ({}) (got {})",
                    limits.max_payload, limits.max_pending_bytes
                ),
            ));
        }
        if limits.max_pending_bytes > i64::MAX as u64 {
            return Err(ConfigError::invalid(
                "limits.max_pending_bytes",
                format!("limits.max_pending_bytes must be at most {}", i64::MAX),
            ));
        }

        if self.auth.token.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "auth.token",
                "auth.token must not be empty; remove the key to disable authentication",
            ));
        }

        self.tls.validate()?;
        if self.tls.verify_and_map && self.auth.users.is_empty() {
            return Err(ConfigError::invalid(
                "tls.verify_and_map",
                "tls.verify_and_map needs [[auth.users]]: the users client certificates \
                 are mapped to (by email, DNS or URI name, or RFC 2253 subject)",
            ));
        }
        self.auth
            .validate_users(limits.max_topic_length, self.tls.verify_and_map)?;

        self.leafnode.validate(limits.max_topic_length)?;
        validate_log_level(&self.log.level)?;

        self.control
            .metrics_listen_addr()
            .map_err(|message| ConfigError::invalid("control.metrics_listen", message))?;
        self.nats
            .listen_addr()
            .map_err(|message| ConfigError::invalid("nats.listen", message))?;

        let dataplane = &self.dataplane;
        if !dataplane.backend.is_implemented() {
            return Err(ConfigError::invalid(
                "dataplane.backend",
                format!(
                    "dataplane.backend = \"{}\" needs a blipmqd built with DPDK \
                     (cargo build --release --features blipmq-dataplane/dpdk, with DPDK 22.11 installed)",
                    dataplane.backend
                ),
            ));
        }
        let min_ring = 2 * (limits.max_payload as usize + RING_RECORD_ALLOWANCE);
        if !dataplane.ring_bytes.is_power_of_two()
            || dataplane.ring_bytes < min_ring
            || dataplane.ring_bytes > 1 << 40
        {
            return Err(ConfigError::invalid(
                "dataplane.ring_bytes",
                format!(
                    "dataplane.ring_bytes must be a power of two, at least 2 * (limits.max_payload + 65536) = {min_ring} \
                     and at most 2^40 (got {}; try {})",
                    dataplane.ring_bytes,
                    min_ring.next_power_of_two()
                ),
            ));
        }
        match dataplane.backend {
            BackendKind::Kernel => {}
            BackendKind::AfPacket => self.validate_afpacket()?,
            BackendKind::Dpdk => self.dpdk.validate()?,
        }
        if dataplane.backend != BackendKind::Kernel && self.server.listen.port() == 0 {
            return Err(ConfigError::invalid(
                "server.listen",
                format!(
                    "server.listen must have a port other than 0 with the {} backend",
                    dataplane.backend
                ),
            ));
        }
        Ok(())
    }

    fn validate_afpacket(&self) -> Result<(), ConfigError> {
        let af = &self.afpacket;
        let invalid = |key: &str, message: String| ConfigError::invalid(key, message);
        if af.interface.is_empty()
            || af.interface.len() > 15
            || af.interface.contains(['/', ' ', '\0'])
        {
            return Err(invalid(
                "afpacket.interface",
                format!(
                    "afpacket.interface must name a network interface (1 to 15 bytes) with dataplane.backend = \"afpacket\" (got {:?})",
                    af.interface
                ),
            ));
        }
        validate_host("afpacket", &af.ip, af.gateway, af.mac.as_deref())?;
        if !af.block_size.is_power_of_two() || af.block_size < 1 << 16 || af.block_size > 1 << 30 {
            return Err(invalid(
                "afpacket.block_size",
                format!(
                    "afpacket.block_size must be a power of two between 65536 and 2^30 (got {})",
                    af.block_size
                ),
            ));
        }
        if af.block_count == 0 || af.block_count > 1 << 16 {
            return Err(invalid(
                "afpacket.block_count",
                format!(
                    "afpacket.block_count must be between 1 and 65536 (got {})",
                    af.block_count
                ),
            ));
        }
        if !af.frame_size.is_power_of_two() || af.frame_size < 2048 || af.frame_size > af.block_size
        {
            return Err(invalid(
                "afpacket.frame_size",
                format!(
                    "afpacket.frame_size must be a power of two between 2048 and afpacket.block_size (got {})",
                    af.frame_size
                ),
            ));
        }
        validate_tcp(
            "afpacket",
            af.spin,
            af.tcp_rx_buffer,
            af.tcp_tx_buffer,
            af.tcp_rto_min,
            af.listeners,
        )?;
        Ok(())
    }

    /// The number of worker threads to run: `server.workers`, or one per
    /// available core when 0; always between 1 and 64.
    pub fn effective_workers(&self) -> usize {
        let workers = match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        workers.clamp(1, MAX_WORKERS)
    }

    /// The configuration as TOML, every key written out (an unset
    /// `auth.token` is left out, which means no authentication).
    /// `Config::from_toml_str(&c.to_toml_string())` gives back `c`.
    pub fn to_toml_string(&self) -> String {
        match toml::to_string(self) {
            Ok(text) if !self.auth.has_secrets() => text.replacen(
                "[auth]\n",
                "[auth]\n# token is not set: clients connect without authentication\n",
                1,
            ),
            Ok(text) => text,
            Err(error) => format!("# cannot render the configuration as TOML: {error}\n"),
        }
    }

    /// A copy with secrets (`auth.token`, users' passwords and tokens)
    /// replaced, for printing.
    pub fn redacted(&self) -> Config {
        let mut config = self.clone();
        config.auth.redact();
        config.leafnode.redact();
        config
    }
}

/// Checks the broker's address (`ip`, `A.B.C.D/N`), `gateway` and `mac` of
/// a user-space backend's `[section]`.
fn validate_host(
    section: &str,
    ip: &str,
    gateway: Option<Ipv4Addr>,
    mac: Option<&str>,
) -> Result<(), ConfigError> {
    let (addr, prefix) = parse_ipv4_cidr(ip).map_err(|why| {
        ConfigError::invalid(
            &format!("{section}.ip"),
            format!("{section}.ip must be the broker's IPv4 address as A.B.C.D/N: {why}"),
        )
    })?;
    if let Some(gateway) = gateway {
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(gateway) & mask != u32::from(addr) & mask || gateway == addr {
            return Err(ConfigError::invalid(
                &format!("{section}.gateway"),
                format!("{section}.gateway {gateway} must be another host on {addr}/{prefix}"),
            ));
        }
    }
    if let Some(mac) = mac {
        parse_mac(mac).map_err(|why| {
            ConfigError::invalid(&format!("{section}.mac"), format!("{section}.mac: {why}"))
        })?;
    }
    Ok(())
}

/// Checks the polling and TCP settings of a user-space backend's
/// `[section]`.
fn validate_tcp(
    section: &str,
    spin: Duration,
    rx_buffer: usize,
    tx_buffer: usize,
    rto_min: Duration,
    listeners: usize,
) -> Result<(), ConfigError> {
    if spin > Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            &format!("{section}.spin"),
            format!("{section}.spin must be at most 1s"),
        ));
    }
    for (name, value) in [("tcp_rx_buffer", rx_buffer), ("tcp_tx_buffer", tx_buffer)] {
        if !(4096..=1 << 30).contains(&value) {
            return Err(ConfigError::invalid(
                &format!("{section}.{name}"),
                format!("{section}.{name} must be between 4096 and 2^30 (got {value})"),
            ));
        }
    }
    if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&rto_min) {
        return Err(ConfigError::invalid(
            &format!("{section}.tcp_rto_min"),
            format!("{section}.tcp_rto_min must be between 1ms and 60s (got {rto_min:?})"),
        ));
    }
    if listeners == 0 || listeners > 4096 {
        return Err(ConfigError::invalid(
            &format!("{section}.listeners"),
            format!("{section}.listeners must be between 1 and 4096 (got {listeners})"),
        ));
    }
    Ok(())
}

pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Accepts a level name or an `EnvFilter` directive list. A bare word that
/// is not a level (e.g. `warning`) is rejected: `EnvFilter` would read it as
/// a target name and silently enable everything for it.
pub fn validate_log_level(level: &str) -> Result<(), ConfigError> {
    let bad = |why: String| {
        ConfigError::invalid(
            "log.level",
            format!(
                "log.level = {level:?} is not valid: {why}; use one of trace, debug, info, warn, error, off \
                 or a filter such as \"info,blipmq_dataplane=debug\""
            ),
        )
    };
    if level.trim().is_empty() {
        return Err(bad("it is empty".to_string()));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let is_level = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive));
        if !is_level && !directive.contains('=') && !directive.contains('[') {
            return Err(bad(format!("`{directive}` is not a level")));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|error| bad(error.to_string()))
}
