//! The afpacket backend's factory: per worker, a packet socket with
//! TPACKET_V2 rings on `afpacket.interface` and a user-space TCP stack
//! owning `afpacket.ip`; several workers split the flows with
//! PACKET_FANOUT_HASH.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::ring::RingConfig;
use super::AfPacketDevice;
use crate::backend::userspace::{StackConfig, UserspaceWorker};
use crate::backend::{Backend, PortMonitor, WaitPolicy};
use crate::config::Config;

pub struct AfPacketBackend {
    interface: String,
    ring: RingConfig,
    mac: Option<[u8; 6]>,
    segmentation_offload: bool,
    /// The stack settings every worker shares (the MAC filled per device).
    stack: StackConfig,
    workers: usize,
    wait: WaitPolicy,
}

impl AfPacketBackend {
    pub fn new(config: &Config) -> io::Result<AfPacketBackend> {
        let af = &config.afpacket;
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let (addr, prefix) = af.parse_ip().map_err(invalid)?;
        if af.block_timeout_ms.is_some() {
            tracing::warn!(
                "afpacket.block_timeout_ms is no longer used: received frames are handed over one by one; remove it"
            );
        }
        Ok(AfPacketBackend {
            interface: af.interface.clone(),
            ring: RingConfig {
                block_size: af.block_size,
                block_count: af.block_count,
                frame_size: af.frame_size,
            },
            mac: af.parse_mac().map_err(invalid)?,
            segmentation_offload: af.segmentation_offload,
            stack: StackConfig {
                addr,
                prefix,
                gateway: af.gateway,
                rx_buffer: af.tcp_rx_buffer,
                tx_buffer: af.tcp_tx_buffer,
                rto_min: af.tcp_rto_min,
                listeners: af.listeners,
                ..StackConfig::for_broker(config)
            },
            workers: config.effective_workers(),
            wait: WaitPolicy {
                strategy: af.poll,
                spin: af.spin,
            },
        })
    }
}

impl Backend for AfPacketBackend {
    type Worker = UserspaceWorker<AfPacketDevice>;

    fn name(&self) -> &'static str {
        "afpacket"
    }

    fn local_addr(&self) -> SocketAddr {
        SocketAddr::from((self.stack.addr, self.stack.port))
    }

    fn nats_addr(&self) -> Option<SocketAddr> {
        let port = self.stack.nats_port?;
        Some(SocketAddr::from((self.stack.addr, port)))
    }

    fn wait_policy(&self) -> WaitPolicy {
        self.wait
    }

    fn port_monitor(&self) -> Option<Arc<dyn PortMonitor>> {
        Some(Arc::new(AfPacketMonitor {
            interface: self.interface.clone(),
            workers: self.workers,
        }))
    }

    fn worker(&mut self, id: usize) -> io::Result<UserspaceWorker<AfPacketDevice>> {
        // Several workers share the interface through one fanout group (its
        // id only has to be unique on the host: the pid's low bits).
        let fanout = (self.workers > 1).then(|| (std::process::id() as u16, id));
        let device = AfPacketDevice::open(
            &self.interface,
            self.ring,
            fanout,
            self.segmentation_offload,
        )
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("afpacket on {}: {error}", self.interface),
            )
        })?;
        let mut stack = self.stack.clone();
        stack.mac = self.mac.unwrap_or_else(|| device.link_mac());
        stack.segment_offload = device.segment_mss();
        Ok(UserspaceWorker { device, stack })
    }
}

/// The interface as the control plane sees it (its counters are the
/// workers' `port_*` ones: each worker's packet socket is its queue).
struct AfPacketMonitor {
    interface: String,
    workers: usize,
}

impl PortMonitor for AfPacketMonitor {
    fn describe(&self) -> serde_json::Value {
        let sysfs = std::path::Path::new("/sys/class/net").join(&self.interface);
        let read = |name: &str| {
            std::fs::read_to_string(sysfs.join(name))
                .map(|text| text.trim().to_string())
                .ok()
        };
        serde_json::json!({
            "kind": "afpacket",
            "interface": self.interface,
            "queues": self.workers,
            "mac": read("address"),
            "mtu": read("mtu").and_then(|mtu| mtu.parse::<u32>().ok()),
            "link": { "up": read("operstate").map(|state| state == "up") },
        })
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}
