//! The counters of the segment layout ([`LAYOUT_VERSION`](super::LAYOUT_VERSION)):
//! their order in a worker block, names,
//! help texts, kinds and how they add up across workers.

use blipmq_protocol::Op;

/// Whether a value only grows (a Prometheus counter) or goes up and down
/// (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Monotonic since the broker started; has a rate.
    Counter,
    /// A current value (a level, a maximum or a timestamp); has no rate.
    Gauge,
}

impl Kind {
    /// `"counter"` or `"gauge"`, as in a Prometheus `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How a counter's per-worker values combine into the broker total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    /// The sum over workers (every [`Kind::Counter`], and gauges such as
    /// open connections).
    Sum,
    /// The largest value (high-water marks).
    Max,
    /// The smallest value (the heartbeat: the total is the oldest one, so a
    /// stuck worker shows).
    Min,
}

macro_rules! counters {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal, $kind:ident, $agg:ident, $help:literal;
    )*) => {
        /// Every counter of a worker block, in block order (the discriminant
        /// is the index of the counter's `u64` in the block).
        ///
        /// The order is part of the layout
        /// ([`LAYOUT_VERSION`](super::LAYOUT_VERSION)): adding, removing or
        /// reordering a variant changes the layout and must bump the version.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(usize)]
        pub enum Counter {
            $( $(#[$doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in block order: `Counter::ALL[i] as usize == i`.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];
            /// Number of counters in a worker block.
            pub const COUNT: usize = Counter::ALL.len();

            /// The stable snake_case name (`"frames_in_publish"`); the
            /// Prometheus name is built from it, see
            /// [`prometheus_name`](Counter::prometheus_name).
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }

            /// One line of help text for the Prometheus `# HELP` line.
            pub const fn help(self) -> &'static str {
                match self { $(Counter::$variant => $help,)* }
            }

            /// Counter or gauge.
            pub const fn kind(self) -> Kind {
                match self { $(Counter::$variant => Kind::$kind,)* }
            }

            /// How per-worker values combine into the total.
            pub const fn aggregate(self) -> Aggregate {
                match self { $(Counter::$variant => Aggregate::$agg,)* }
            }
        }
    };
}

counters! {
    /// Connections currently open on the worker.
    ConnectionsOpen = "connections_open", Gauge, Sum,
        "Client connections currently open.";
    ConnectionsAccepted = "connections_accepted", Counter, Sum,
        "Client connections accepted.";
    /// The client disconnected (DISCONNECT frame or orderly EOF).
    ConnectionsClosedClient = "connections_closed_client", Counter, Sum,
        "Connections closed by the client.";
    /// A protocol or I/O error closed the connection.
    ConnectionsClosedError = "connections_closed_error", Counter, Sum,
        "Connections closed after a protocol or I/O error.";
    ConnectionsClosedSlowConsumer = "connections_closed_slow_consumer", Counter, Sum,
        "Connections cut off as slow consumers.";
    /// No traffic and no PONG within the keepalive deadline.
    ConnectionsClosedStale = "connections_closed_stale", Counter, Sum,
        "Connections closed after missing the keepalive deadline.";
    ConnectionsClosedDrain = "connections_closed_drain", Counter, Sum,
        "Connections closed by a drain or shutdown.";
    /// An operator closed it (`blipmqctl kick`).
    ConnectionsClosedKicked = "connections_closed_kicked", Counter, Sum,
        "Connections closed by an operator's kick.";
    /// No CONNECT accepted within `auth.timeout` after accept.
    HandshakeTimeouts = "handshake_timeouts", Counter, Sum,
        "Connections closed for not completing CONNECT within auth.timeout.";
    /// Refused at accept time (connection limit) or at CONNECT (auth).
    ConnectionsRefused = "connections_refused", Counter, Sum,
        "Connections refused (limits or authentication).";
    TlsHandshakes = "tls_handshakes", Counter, Sum,
        "TLS handshakes completed.";
    /// A failed handshake, a bad record, or plaintext where TLS is required.
    TlsFailures = "tls_failures", Counter, Sum,
        "Connections closed for a TLS error or for plaintext where TLS is required.";
    /// Also counted in `connections_refused`.
    ConnectionsRefusedPerIp = "connections_refused_per_ip", Counter, Sum,
        "Connections refused because their IP address held limits.max_connections_per_ip.";
    FramesInConnect = "frames_in_connect", Counter, Sum,
        "CONNECT frames received.";
    FramesInPublish = "frames_in_publish", Counter, Sum,
        "PUBLISH frames received.";
    FramesInSubscribe = "frames_in_subscribe", Counter, Sum,
        "SUBSCRIBE frames received.";
    FramesInUnsubscribe = "frames_in_unsubscribe", Counter, Sum,
        "UNSUBSCRIBE frames received.";
    FramesInPing = "frames_in_ping", Counter, Sum,
        "PING frames received.";
    FramesInPong = "frames_in_pong", Counter, Sum,
        "PONG frames received.";
    FramesInDisconnect = "frames_in_disconnect", Counter, Sum,
        "DISCONNECT frames received.";
    FramesOutMessage = "frames_out_message", Counter, Sum,
        "MESSAGE frames sent.";
    FramesOutOk = "frames_out_ok", Counter, Sum,
        "OK frames sent.";
    FramesOutError = "frames_out_error", Counter, Sum,
        "ERROR frames sent.";
    FramesOutInfo = "frames_out_info", Counter, Sum,
        "INFO frames sent.";
    FramesOutPing = "frames_out_ping", Counter, Sum,
        "PING frames sent.";
    FramesOutPong = "frames_out_pong", Counter, Sum,
        "PONG frames sent.";
    FramesOutDisconnect = "frames_out_disconnect", Counter, Sum,
        "DISCONNECT frames sent.";
    BytesIn = "bytes_in", Counter, Sum,
        "Bytes read from client connections.";
    BytesOut = "bytes_out", Counter, Sum,
        "Bytes written to client connections.";
    MessagesPublished = "messages_published", Counter, Sum,
        "Messages published by clients of this worker.";
    MessagesDelivered = "messages_delivered", Counter, Sum,
        "Messages delivered to subscribers of this worker.";
    DroppedSlowConsumer = "dropped_slow_consumer", Counter, Sum,
        "Messages dropped because the subscriber was a slow consumer.";
    DroppedLimits = "dropped_limits", Counter, Sum,
        "Messages dropped by a configured limit.";
    DroppedAuth = "dropped_auth", Counter, Sum,
        "Messages dropped because the client was not authorised.";
    DroppedNoGroupMember = "dropped_no_group_member", Counter, Sum,
        "Queue-group messages dropped because no member was left.";
    DroppedOversized = "dropped_oversized", Counter, Sum,
        "Messages dropped because their ring record was too large.";
    GroupForwards = "group_forwards", Counter, Sum,
        "Queue-group deliveries forwarded to another worker.";
    RingFullStalls = "ring_full_stalls", Counter, Sum,
        "Times an outgoing ring was full.";
    PacedPublishes = "paced_publishes", Counter, Sum,
        "Times a publisher waited for a backlogged subscriber to catch up.";
    PacedRecords = "paced_records", Counter, Sum,
        "Times a ring from another worker was left unread for a backlogged subscriber.";
    PacingGraceExpired = "pacing_grace_expired", Counter, Sum,
        "Times a subscriber stayed backlogged past its grace and publishers went on without it.";
    RatePaced = "rate_paced", Counter, Sum,
        "Times a publisher's connection went unread until its publish budget (limits.max_*_per_sec) refilled.";
    RateRejected = "rate_rejected", Counter, Sum,
        "Messages refused with ERROR 429 for exceeding the publisher's limits.max_*_per_sec.";
    PermissionViolations = "permission_violations", Counter, Sum,
        "Publishes and subscriptions refused by the user's permissions (ERROR 403).";
    /// Highest occupancy in bytes seen on any of the worker's outgoing
    /// rings; written with [`WorkerStats::max`](super::WorkerStats::max).
    RingOccupancyHighWater = "ring_occupancy_high_water", Gauge, Max,
        "Highest occupancy in bytes seen on an outgoing ring.";
    LoopIterations = "loop_iterations", Counter, Sum,
        "Poll-loop iterations.";
    /// Iterations that found work; `loop_busy_iterations / loop_iterations`
    /// is the busy ratio.
    LoopBusyIterations = "loop_busy_iterations", Counter, Sum,
        "Poll-loop iterations that found work.";
    /// Unix time in milliseconds of the worker's last heartbeat.
    HeartbeatUnixMs = "heartbeat_unix_ms", Gauge, Min,
        "Unix time in milliseconds of the worker's last heartbeat.";
    Subscriptions = "subscriptions", Gauge, Sum,
        "Subscriptions currently registered.";
    /// The worker's queue of the packet device (afpacket, dpdk): each
    /// worker owns one rx/tx queue pair, so per worker is per queue.
    PortRxPackets = "port_rx_packets", Counter, Sum,
        "Frames the worker's device queue received and handed to the stack.";
    PortRxBytes = "port_rx_bytes", Counter, Sum,
        "Bytes of the frames the worker's device queue received.";
    PortTxPackets = "port_tx_packets", Counter, Sum,
        "Frames the worker's device queue sent.";
    PortTxBytes = "port_tx_bytes", Counter, Sum,
        "Bytes of the frames the worker's device queue sent.";
    PortTxBursts = "port_tx_bursts", Counter, Sum,
        "Bursts the worker's device queue handed to the NIC or kernel.";
    /// afpacket: the kernel's drops for a full rx ring.
    PortRxMissed = "port_rx_missed", Counter, Sum,
        "Frames lost before the worker's queue took them (its receive ring was full).";
    PortRxCorrupt = "port_rx_corrupt", Counter, Sum,
        "Received frames dropped: bad checksum or malformed headers.";
    PortRxForeign = "port_rx_foreign", Counter, Sum,
        "Received frames dropped: neither IPv4 nor ARP.";
    PortRxTruncated = "port_rx_truncated", Counter, Sum,
        "Received frames dropped: longer than the receive ring holds.";
    PortRxSegmented = "port_rx_segmented", Counter, Sum,
        "Received frames dropped: spread over several buffers (DPDK multi-segment mbufs).";
    PortRxNotOwned = "port_rx_not_owned", Counter, Sum,
        "Received TCP segments dropped: of a connection another worker owns.";
    PortSynsDropped = "port_syns_dropped", Counter, Sum,
        "SYNs left unanswered: every listening socket was taken (the client's SYN retransmission retries).";
    PortTxDropped = "port_tx_dropped", Counter, Sum,
        "Frames dropped on transmit (queue full while receiving; TCP resends them).";
    PortTxFull = "port_tx_full", Counter, Sum,
        "Times the worker's transmit queue was full.";
    PortTxErrors = "port_tx_errors", Counter, Sum,
        "Transmit errors (no buffer, or refused by the device).";
    /// DPDK: the whole port's counters (`rte_eth_stats_get`), written by
    /// worker 0 only.
    PortNicRxPackets = "port_nic_rx_packets", Counter, Sum,
        "Frames the NIC received (DPDK port counter).";
    PortNicTxPackets = "port_nic_tx_packets", Counter, Sum,
        "Frames the NIC sent (DPDK port counter).";
    PortNicRxBytes = "port_nic_rx_bytes", Counter, Sum,
        "Bytes the NIC received (DPDK port counter).";
    PortNicTxBytes = "port_nic_tx_bytes", Counter, Sum,
        "Bytes the NIC sent (DPDK port counter).";
    PortNicRxMissed = "port_nic_rx_missed", Counter, Sum,
        "Frames the NIC dropped for lack of room in a receive queue (DPDK imissed).";
    PortNicRxErrors = "port_nic_rx_errors", Counter, Sum,
        "Erroneous frames the NIC received (DPDK ierrors).";
    PortNicTxErrors = "port_nic_tx_errors", Counter, Sum,
        "Frames the NIC failed to send (DPDK oerrors).";
    PortNicRxNoMbuf = "port_nic_rx_nombuf", Counter, Sum,
        "Receive buffer allocation failures (DPDK rx_nombuf).";
    /// The leaf-node link to a NATS hub, written by the worker that owns
    /// it (worker 0) at each tick.
    LeafConnected = "leaf_connected", Gauge, Max,
        "1 while the leaf-node link to the hub is up.";
    LeafUrlIndex = "leaf_url_index", Gauge, Max,
        "Which of the remote's urls the leaf-node link uses or dials next (from 0).";
    LeafRttMicros = "leaf_rtt_us", Gauge, Max,
        "Round trip of the last PING the hub answered, in microseconds.";
    LeafMsgsIn = "leaf_msgs_in", Counter, Sum,
        "Messages received from the hub and delivered here.";
    LeafBytesIn = "leaf_bytes_in", Counter, Sum,
        "Payload and header bytes of the messages received from the hub.";
    LeafMsgsOut = "leaf_msgs_out", Counter, Sum,
        "Messages sent to the hub.";
    LeafBytesOut = "leaf_bytes_out", Counter, Sum,
        "Payload and header bytes of the messages sent to the hub.";
    DroppedLeaf = "dropped_leaf", Counter, Sum,
        "Messages for the hub dropped: the link was down or behind, or they were over the hub's max_payload.";
    LeafFiltered = "leaf_filtered", Counter, Sum,
        "Messages the remote's export or import rules kept from crossing the link.";
    LeafConnects = "leaf_connects", Counter, Sum,
        "Leaf-node handshakes completed with the hub.";
    LeafDisconnects = "leaf_disconnects", Counter, Sum,
        "Leaf-node links lost or closed.";
    LeafLocalInterest = "leaf_local_interest", Gauge, Sum,
        "Local interests (subject, queue group) announced to the hub.";
    LeafHubInterest = "leaf_hub_interest", Gauge, Sum,
        "Interests (subject, queue group) the hub announced.";
}

impl Counter {
    /// The Prometheus metric name: `blipmq_<name>_total` for counters,
    /// `blipmq_<name>` for gauges.
    pub fn prometheus_name(self) -> String {
        match self.kind() {
            Kind::Counter => format!("blipmq_{}_total", self.name()),
            Kind::Gauge => format!("blipmq_{}", self.name()),
        }
    }

    /// The counter with this [`name`](Counter::name).
    pub fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The `frames_in_*` counter of a frame received with `op`; `None` for
    /// ops that only servers send.
    pub fn frames_in(op: Op) -> Option<Counter> {
        Some(match op {
            Op::Connect => Counter::FramesInConnect,
            Op::Publish => Counter::FramesInPublish,
            Op::Subscribe => Counter::FramesInSubscribe,
            Op::Unsubscribe => Counter::FramesInUnsubscribe,
            Op::Ping => Counter::FramesInPing,
            Op::Pong => Counter::FramesInPong,
            Op::Disconnect => Counter::FramesInDisconnect,
            Op::Message | Op::Ok | Op::Error | Op::Info => return None,
        })
    }

    /// The `frames_out_*` counter of a frame sent with `op`; `None` for ops
    /// that only clients send.
    pub fn frames_out(op: Op) -> Option<Counter> {
        Some(match op {
            Op::Message => Counter::FramesOutMessage,
            Op::Ok => Counter::FramesOutOk,
            Op::Error => Counter::FramesOutError,
            Op::Info => Counter::FramesOutInfo,
            Op::Ping => Counter::FramesOutPing,
            Op::Pong => Counter::FramesOutPong,
            Op::Disconnect => Counter::FramesOutDisconnect,
            Op::Connect | Op::Publish | Op::Subscribe | Op::Unsubscribe => return None,
        })
    }

    /// Whether this is one of the `dropped_*` counters.
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::DroppedSlowConsumer
                | Counter::DroppedLimits
                | Counter::DroppedAuth
                | Counter::DroppedNoGroupMember
                | Counter::DroppedOversized
                | Counter::DroppedLeaf
        )
    }
}
