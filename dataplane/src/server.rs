//! Starts the broker: rings, listeners and one pinned worker thread per
//! core; stops it with a drain.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::afpacket::ring::RingConfig;
use crate::backend::afpacket::AfPacketDevice;
use crate::backend::kernel::{self, KernelWorker};
use crate::backend::userspace::{Stack, StackConfig, UserspaceWorker, WaitConfig};
use crate::backend::WorkerPoll;
use crate::config::{BackendKind, Config};
use crate::rings::RingRegion;
use crate::session::SessionConfig;
use crate::stats::StatsSegment;
use crate::worker::{CoreConfig, Shared, WorkerCore};

/// A running broker.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    wakers: Arc<[Arc<mio::Waker>]>,
    threads: Vec<WorkerThread>,
}

impl Server {
    pub fn start(config: &Config) -> io::Result<Server> {
        match config.dataplane.backend {
            BackendKind::Kernel => {}
            BackendKind::AfPacket => return Server::start_afpacket(config),
            BackendKind::Dpdk => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the dpdk backend is not implemented",
                ))
            }
        }
        let workers = config.effective_workers();
        let core_config = core_config(config);
        let listeners = kernel::bind_listeners(config.server.listen, workers)?;
        let local_addr = listeners[0].local_addr()?;
        let rings = RingRegion::new(workers, config.dataplane.ring_bytes)?.into_workers();
        let polls = (0..workers)
            .map(|_| WorkerPoll::new())
            .collect::<io::Result<Vec<_>>>()?;
        let wakers: Arc<[Arc<mio::Waker>]> = polls.iter().map(|p| p.waker.clone()).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(shared_state(config, workers)?);
        let cores = pinning_cores(config);
        let mut threads = Vec::with_capacity(workers);
        for ((rings, poll), listener) in rings.into_iter().zip(polls).zip(listeners) {
            let id = rings.id;
            let core = WorkerCore::new(core_config.clone(), rings, shared.clone(), Instant::now());
            let worker = KernelWorker::new(
                core,
                poll,
                listener,
                wakers.clone(),
                shutdown.clone(),
                config.server.drain_timeout,
            )?;
            let thread = spawn_worker(id, &cores, move || worker.run())?;
            threads.push(thread);
        }
        tracing::info!(%local_addr, workers, "listening");
        Ok(Server {
            local_addr,
            shutdown,
            wakers,
            threads,
        })
    }

    /// The afpacket backend: per worker, a packet socket with TPACKET_V3
    /// rings on `afpacket.interface` and a user-space TCP stack owning
    /// `afpacket.ip`; several workers split the flows with
    /// PACKET_FANOUT_HASH.
    fn start_afpacket(config: &Config) -> io::Result<Server> {
        let af = &config.afpacket;
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let (addr, prefix) = af.parse_ip().map_err(invalid)?;
        let port = config.server.listen.port();
        let workers = config.effective_workers();
        let core_config = core_config(config);
        let ring_config = RingConfig {
            block_size: af.block_size,
            block_count: af.block_count,
            frame_size: af.frame_size,
            block_timeout_ms: af.block_timeout_ms,
        };
        let rings = RingRegion::new(workers, config.dataplane.ring_bytes)?.into_workers();
        let polls = (0..workers)
            .map(|_| WorkerPoll::new())
            .collect::<io::Result<Vec<_>>>()?;
        let wakers: Arc<[Arc<mio::Waker>]> = polls.iter().map(|p| p.waker.clone()).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(shared_state(config, workers)?);
        let cores = pinning_cores(config);
        let wait = WaitConfig {
            strategy: af.poll,
            spin: af.spin,
        };
        let mut threads = Vec::with_capacity(workers);
        for (rings, poll) in rings.into_iter().zip(polls) {
            let id = rings.id;
            // Several workers share the interface through one fanout group
            // (its id only has to be unique on the host: the pid's low bits).
            let fanout = (workers > 1).then(|| (std::process::id() as u16, id));
            let device =
                AfPacketDevice::open(&af.interface, ring_config, fanout).map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("afpacket on {}: {error}", af.interface),
                    )
                })?;
            let mac = af
                .parse_mac()
                .map_err(invalid)?
                .unwrap_or_else(|| device.link_mac());
            let stack_config = StackConfig {
                addr,
                prefix,
                gateway: af.gateway,
                mac,
                port,
                rx_buffer: af.tcp_rx_buffer,
                tx_buffer: af.tcp_tx_buffer,
                listeners: af.listeners,
                timeout: Duration::from_secs(30),
            };
            let core_config = core_config.clone();
            let shared = shared.clone();
            let wakers = wakers.clone();
            let shutdown = shutdown.clone();
            let drain_timeout = config.server.drain_timeout;
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let thread = spawn_worker(id, &cores, move || {
                let mut device = device;
                let now = Instant::now();
                let stack = Stack::new(stack_config, &mut device, now);
                let core = WorkerCore::new(core_config, rings, shared, now);
                let worker = UserspaceWorker::new(
                    core,
                    device,
                    stack,
                    poll,
                    wakers,
                    shutdown,
                    drain_timeout,
                    wait,
                );
                let worker = match worker {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(io::Error::new(error.kind(), error.to_string())));
                        return Err(error);
                    }
                };
                worker.run()
            })?;
            ready_rx
                .recv()
                .map_err(|_| io::Error::other("an afpacket worker failed to start"))??;
            threads.push(thread);
        }
        let local_addr = SocketAddr::from((addr, port));
        tracing::info!(%local_addr, interface = %af.interface, workers, "listening (afpacket)");
        Ok(Server {
            local_addr,
            shutdown,
            wakers,
            threads,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts the drain: stop accepting, DISCONNECT every client, flush.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        for waker in self.wakers.iter() {
            let _ = waker.wake();
        }
    }

    /// Waits for every worker to finish draining.
    pub fn join(self) -> io::Result<Vec<WorkerCore>> {
        let mut cores = Vec::with_capacity(self.threads.len());
        for thread in self.threads {
            let core = thread
                .join()
                .map_err(|_| io::Error::other("a worker thread panicked"))??;
            cores.push(core);
        }
        Ok(cores)
    }
}

fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        session: Arc::new(session_config(config)),
        max_pending_bytes: config.limits.max_pending_bytes.min(usize::MAX as u64) as usize,
        drain_timeout: config.server.drain_timeout,
        cache_subjects: config.dataplane.cache_subjects,
        max_connections: config.server.max_connections,
    }
}

/// The cores workers are pinned to, round robin; none when pinning is off.
fn pinning_cores(config: &Config) -> Vec<core_affinity::CoreId> {
    if config.server.pin_workers {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    }
}

type WorkerThread = JoinHandle<io::Result<WorkerCore>>;

/// Starts worker `id`'s thread, pinned to its core where allowed.
fn spawn_worker(
    id: usize,
    cores: &[core_affinity::CoreId],
    run: impl FnOnce() -> io::Result<WorkerCore> + Send + 'static,
) -> io::Result<WorkerThread> {
    let pin = (!cores.is_empty()).then(|| cores[id % cores.len()]);
    std::thread::Builder::new()
        .name(format!("blipmq-worker-{id}"))
        .spawn(move || {
            if let Some(core_id) = pin {
                if !core_affinity::set_for_current(core_id) {
                    tracing::debug!(worker = id, "could not pin to a core");
                }
            }
            run()
        })
}

/// The state workers share, with the stats segment in the configured file
/// (or in this process only).
fn shared_state(config: &Config, workers: usize) -> io::Result<Shared> {
    let path = &config.control.stats_file;
    let segment = if path.is_empty() {
        StatsSegment::anonymous(workers)?
    } else {
        StatsSegment::create(std::path::Path::new(path), workers)
            .map_err(|error| io::Error::new(error.kind(), format!("stats file {path}: {error}")))?
    };
    Ok(Shared::new(segment))
}

fn session_config(config: &Config) -> SessionConfig {
    let server_id = if config.server.server_name.is_empty() {
        format!(
            "blipmq-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() % 1_000_000)
        )
    } else {
        config.server.server_name.clone()
    };
    SessionConfig {
        server_id,
        max_payload: config.limits.max_payload,
        max_topic_length: config.limits.max_topic_length,
        max_subscriptions: config.limits.max_subscriptions,
        token: config.auth.token.clone(),
        ping_interval: config.server.ping_interval,
        max_pings_out: config.server.max_pings_out,
    }
}
