//! The dpdk backend: one DPDK port, one rx/tx queue pair per worker, the
//! user-space TCP stack on top (the same as afpacket's).
//!
//! The factory ([`DpdkBackend`]) runs on the starting thread: it
//! initialises the EAL with `dpdk.eal_args`, finds the port, makes the
//! mbuf pool, configures one queue pair per worker (RSS over IPv4/TCP where
//! the port has it; checksum offloads where it offers them; receive
//! interrupts for the adaptive poll where it has them) and starts it. Each
//! worker registers its thread with DPDK (for the pool's per-thread cache)
//! and runs its queues as a [`DpdkDevice`].
//!
//! A flow whose frames reach a worker that does not own it (no RSS, or a
//! driver that spills a full queue to another) is never reset by that
//! worker: the stack drops such frames and counts them.

pub mod arp;
pub mod device;
mod eal_args;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use blipmq_dpdk_sys::sys::consts as c;
use blipmq_dpdk_sys::{Eal, Mempool, Port, PortConf, PortInfo};

use self::arp::ArpFanout;
pub use self::device::{DpdkDevice, DpdkQueues, Offloads};
use crate::backend::userspace::{StackConfig, UserspaceTransport};
use crate::backend::{Backend, PortMonitor, WaitPolicy, WorkerPoll, WorkerTransport};
use crate::config::{Config, PollStrategy};

/// A start-up error: bad settings, EAL arguments, or a missing port or
/// hugepages (blipmqd exits 2).
fn setup_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("dpdk: {what}"))
}

pub struct DpdkBackend {
    /// Queue pairs not yet handed to a worker.
    queues: Vec<Option<DpdkQueues>>,
    /// Shared only weakly (worker 0 and the control plane read its
    /// counters), so that it is closed here.
    port: Option<Arc<Port<'static>>>,
    /// Leaked at start so that ports, queues and mbufs may borrow it for
    /// `'static`; freed in `Drop` once nothing can use it any more.
    pool: Option<&'static Mempool>,
    /// Held by every worker's device: while another holder lives, the pool
    /// may still be in use.
    lifeline: Arc<()>,
    eal: Eal,
    info: PortInfo,
    stack: StackConfig,
    wait: WaitPolicy,
}

impl DpdkBackend {
    /// Initialises DPDK and the port. `cpus`: the CPUs the broker may run
    /// on, read before the EAL pins this thread.
    pub fn new(config: &Config, cpus: &[core_affinity::CoreId]) -> io::Result<DpdkBackend> {
        let dpdk = &config.dpdk;
        let workers = config.effective_workers();
        let (addr, prefix) = dpdk.parse_ip().map_err(setup_error)?;
        let args = eal_args::complete(&dpdk.eal_args, cpus);
        tracing::info!(args = ?args, "initialising DPDK");
        let eal = eal_args::init_keeping_affinity(&args).map_err(|error| {
            if args.iter().any(|arg| arg == "--no-huge") {
                setup_error(error)
            } else {
                setup_error(format!(
                    "{error} (are enough hugepages reserved? see hugepage-setup/hugepages.sh --check; \
                     or run without them: --no-huge)"
                ))
            }
        })?;
        let port_id = find_port(&eal, &dpdk.port)?;
        let info = eal.port_info(port_id).map_err(setup_error)?;
        check_queues(&info, workers)?;
        if eal.has_hugepages() {
            tracing::info!("the mbuf pool is in hugepages");
        } else {
            tracing::info!("no hugepages (--no-huge): the mbuf pool is in ordinary memory");
        }
        let pool = Mempool::pktmbuf(
            &eal,
            "blipmq_mbufs",
            dpdk.mempool_size_for(workers),
            dpdk.mempool_cache,
            Mempool::DEFAULT_DATA_ROOM,
            info.socket_id,
        )
        .map_err(setup_error)?;
        let pool: &'static Mempool = Box::leak(Box::new(pool));
        let lifeline = Arc::new(());
        let mut backend = DpdkBackend {
            queues: Vec::new(),
            port: None,
            pool: Some(pool),
            lifeline,
            eal,
            info: info.clone(),
            stack: StackConfig::for_broker(config),
            wait: WaitPolicy {
                strategy: dpdk.poll,
                spin: dpdk.spin,
            },
        };
        let mut port = Port::open(&backend.eal, port_id).map_err(setup_error)?;
        let offloads = Offloads {
            rx_checksum: has_all(info.rx_offload_capa, RX_CHECKSUM),
            tx_checksum: has_all(info.tx_offload_capa, TX_CHECKSUM),
            rx_trusted: info.driver_name == "net_memif",
        };
        let wanted = PortConf {
            rss_hf: if workers > 1 {
                c::RTE_ETH_RSS_IP | c::RTE_ETH_RSS_TCP
            } else {
                0
            },
            rx_offloads: if offloads.rx_checksum { RX_CHECKSUM } else { 0 },
            tx_offloads: if offloads.tx_checksum { TX_CHECKSUM } else { 0 },
            mtu: None,
            rx_interrupts: dpdk.poll == PollStrategy::Adaptive,
        };
        let queues = workers as u16;
        let applied = match port.configure(queues, queues, &wanted) {
            Ok(applied) => applied,
            Err(error) if wanted.rx_interrupts => {
                tracing::info!(%error, "no receive interrupts: idle workers nap instead");
                let without = PortConf {
                    rx_interrupts: false,
                    ..wanted.clone()
                };
                port.configure(queues, queues, &without)
                    .map_err(setup_error)?
            }
            Err(error) => return Err(setup_error(error)),
        };
        if workers > 1 && applied.rss_hf == 0 {
            tracing::warn!(
                driver = %info.driver_name,
                "the port has no RSS: flows reach queues as the driver spreads them; \
                 frames of a flow another worker owns are dropped and counted"
            );
        }
        for queue in 0..queues {
            port.setup_rx_queue(queue, dpdk.rx_descriptors, pool)
                .map_err(setup_error)?;
            port.setup_tx_queue(queue, dpdk.tx_descriptors)
                .map_err(setup_error)?;
        }
        port.start().map_err(setup_error)?;
        let mac = dpdk.parse_mac().map_err(setup_error)?.unwrap_or(info.mac);
        if mac != info.mac {
            port.promiscuous(true).map_err(setup_error)?;
        }
        let link = port.link().map_err(setup_error)?;
        tracing::info!(
            port = port_id,
            driver = %info.driver_name,
            link_up = link.up,
            speed_mbps = link.speed_mbps,
            rss = format_args!("{:#x}", applied.rss_hf),
            rx_interrupts = applied.rx_interrupts,
            rx_checksum_offload = offloads.rx_checksum,
            tx_checksum_offload = offloads.tx_checksum,
            rx_checksum_trusted = offloads.rx_trusted,
            "DPDK port started"
        );
        let arp = Arc::new(ArpFanout::new(workers));
        let port = Arc::new(port);
        for queue in 0..queues {
            backend.queues.push(Some(DpdkQueues {
                worker: usize::from(queue),
                rx: port.rx_queue(queue).map_err(setup_error)?,
                tx: port.tx_queue(queue).map_err(setup_error)?,
                pool,
                burst: dpdk.burst,
                offloads,
                arp: arp.clone(),
                // The Ethernet frame of a 1500-byte IP packet.
                mtu: 1514,
                mac,
                port: (queue == 0).then(|| Arc::downgrade(&port)),
            }));
        }
        backend.port = Some(port);
        backend.stack = StackConfig {
            addr,
            prefix,
            gateway: dpdk.gateway,
            mac,
            rx_buffer: dpdk.tcp_rx_buffer,
            tx_buffer: dpdk.tcp_tx_buffer,
            rto_min: dpdk.tcp_rto_min,
            listeners: dpdk.listeners,
            shared_address: workers > 1,
            ..StackConfig::for_broker(config)
        };
        Ok(backend)
    }
}

const RX_CHECKSUM: u64 = c::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | c::RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
const TX_CHECKSUM: u64 = c::RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | c::RTE_ETH_TX_OFFLOAD_TCP_CKSUM;

fn has_all(capabilities: u64, wanted: u64) -> bool {
    capabilities & wanted == wanted
}

/// `dpdk.port`: an id, or a device name.
fn find_port(eal: &Eal, port: &str) -> io::Result<u16> {
    let port = port.trim();
    let found = match port.parse::<u16>() {
        Ok(id) if eal.ports().contains(&id) => Some(id),
        Ok(_) => None,
        Err(_) => eal.port_by_name(port).ok(),
    };
    found.ok_or_else(|| {
        let known: Vec<String> = eal
            .ports()
            .into_iter()
            .map(|id| match eal.port_info(id) {
                Ok(info) => format!("{id} ({})", info.driver_name),
                Err(_) => id.to_string(),
            })
            .collect();
        setup_error(format!(
            "no port {port:?}; the EAL found {}",
            if known.is_empty() {
                "none (bind a NIC to vfio-pci, or add --vdev=...)".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

fn check_queues(info: &PortInfo, workers: usize) -> io::Result<()> {
    let max = usize::from(info.max_rx_queues.min(info.max_tx_queues));
    if workers > max {
        return Err(setup_error(format!(
            "port {} ({}) has {max} queue pair(s); {workers} workers need one each \
             (for net_af_packet add qpairs={workers} to its --vdev)",
            info.port_id, info.driver_name
        )));
    }
    Ok(())
}

impl Backend for DpdkBackend {
    type Worker = DpdkWorker;

    fn name(&self) -> &'static str {
        "dpdk"
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
        let port = self.port.as_ref()?;
        Some(Arc::new(DpdkPortMonitor {
            port: Arc::downgrade(port),
            info: self.info.clone(),
            queues: self.queues.len(),
        }))
    }

    fn hugepage_rings(&self) -> bool {
        self.eal.has_hugepages()
    }

    fn worker(&mut self, id: usize) -> io::Result<DpdkWorker> {
        let queues = self
            .queues
            .get_mut(id)
            .and_then(Option::take)
            .ok_or_else(|| io::Error::other(format!("no DPDK queues for worker {id}")))?;
        Ok(DpdkWorker {
            queues,
            stack: self.stack.clone(),
            eal: self.eal.clone(),
            lifeline: self.lifeline.clone(),
        })
    }
}

impl Drop for DpdkBackend {
    fn drop(&mut self) {
        self.queues.clear();
        let Some(pool) = self.pool.take() else {
            return;
        };
        // Stops and closes the port once no worker holds a queue; a reader
        // of its counters that holds it now keeps it (and so the pool).
        let port_closed = match self.port.take() {
            Some(port) => Arc::into_inner(port).is_some(),
            None => true,
        };
        if !port_closed || Arc::strong_count(&self.lifeline) > 1 {
            tracing::warn!("DPDK workers still running: leaving the mbuf pool and the EAL");
            std::mem::forget(self.eal.clone());
            return;
        }
        // SAFETY: `pool` came from `Box::leak` in `new`, once. Every copy of
        // the reference went to a queue pair or the port: the queue pairs
        // not handed out were dropped above, the port was closed (its last
        // handle dropped), and every worker's
        // device held a clone of `lifeline`, which is now the only one, so
        // no device (or mbuf, which a device frees before it goes) is
        // left. Nothing can reach the pool after this.
        drop(unsafe { Box::from_raw(std::ptr::from_ref(pool).cast_mut()) });
    }
}

/// The port as the control plane sees it: its description and live
/// counters, through a weak handle (the backend closes the port).
struct DpdkPortMonitor {
    port: std::sync::Weak<Port<'static>>,
    info: PortInfo,
    /// Queue pairs in use (one per worker).
    queues: usize,
}

impl PortMonitor for DpdkPortMonitor {
    fn describe(&self) -> serde_json::Value {
        let info = &self.info;
        let mac = info
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let mut port = serde_json::json!({
            "kind": "dpdk",
            "port": info.port_id,
            "driver": info.driver_name,
            "mac": mac,
            "queues": self.queues,
        });
        let Some(live) = self.port.upgrade() else {
            port["state"] = "closed".into();
            return port;
        };
        if let Ok(link) = live.link() {
            port["link"] = serde_json::json!({
                "up": link.up,
                "speed_mbps": link.speed_mbps,
                "full_duplex": link.full_duplex,
            });
        }
        if let Ok(stats) = live.stats() {
            let per_queue: Vec<serde_json::Value> = (0..self.queues)
                .take(blipmq_dpdk_sys::QUEUE_STAT_COUNTERS)
                .map(|q| {
                    serde_json::json!({
                        "queue": q,
                        "rx_packets": stats.q_ipackets[q],
                        "tx_packets": stats.q_opackets[q],
                        "rx_bytes": stats.q_ibytes[q],
                        "tx_bytes": stats.q_obytes[q],
                        "errors": stats.q_errors[q],
                    })
                })
                .collect();
            port["stats"] = serde_json::json!({
                "rx_packets": stats.ipackets,
                "tx_packets": stats.opackets,
                "rx_bytes": stats.ibytes,
                "tx_bytes": stats.obytes,
                "imissed": stats.imissed,
                "ierrors": stats.ierrors,
                "oerrors": stats.oerrors,
                "rx_nombuf": stats.rx_nombuf,
                "queues": per_queue,
            });
        }
        port
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        self.port
            .upgrade()
            .and_then(|port| port.xstats().ok())
            .unwrap_or_default()
    }
}

/// A worker's queue pair on its way to the worker's thread.
pub struct DpdkWorker {
    queues: DpdkQueues,
    stack: StackConfig,
    eal: Eal,
    lifeline: Arc<()>,
}

impl DpdkWorker {
    /// The queue pair as a packet device for the calling thread (which it
    /// registers with DPDK): what a worker runs its stack on, and what a
    /// DPDK-side load generator runs its client sockets on.
    pub fn into_device(self) -> io::Result<(DpdkDevice, StackConfig)> {
        let registration = self
            .eal
            .register_thread()
            .map_err(|error| io::Error::other(format!("dpdk: {error}")))?;
        let device = DpdkDevice::new(self.queues, registration, self.lifeline);
        Ok((device, self.stack))
    }
}

impl WorkerTransport for DpdkWorker {
    type Transport = UserspaceTransport<DpdkDevice>;

    fn start(self, poll: WorkerPoll, now: Instant) -> io::Result<UserspaceTransport<DpdkDevice>> {
        let (device, stack) = self.into_device()?;
        UserspaceTransport::new(device, stack, poll.poll, now)
    }
}
