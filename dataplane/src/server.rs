//! Starts the broker: rings, listeners and one pinned worker thread per
//! core; stops it with a drain.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::backend::kernel::{self, KernelWorker, WorkerPoll};
use crate::config::{BackendKind, Config};
use crate::rings::RingRegion;
use crate::session::SessionConfig;
use crate::worker::{CoreConfig, Shared, WorkerCore};

/// A running broker.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    wakers: Arc<[Arc<mio::Waker>]>,
    threads: Vec<JoinHandle<io::Result<WorkerCore>>>,
}

impl Server {
    pub fn start(config: &Config) -> io::Result<Server> {
        if config.dataplane.backend != BackendKind::Kernel {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only the kernel backend is implemented",
            ));
        }
        let workers = config.effective_workers();
        let session = Arc::new(session_config(config));
        let core_config = CoreConfig {
            session,
            max_pending_bytes: config.limits.max_pending_bytes.min(usize::MAX as u64) as usize,
            drain_timeout: config.server.drain_timeout,
            cache_subjects: config.dataplane.cache_subjects,
            max_connections: config.server.max_connections,
        };
        let listeners = kernel::bind_listeners(config.server.listen, workers)?;
        let local_addr = listeners[0].local_addr()?;
        let rings = RingRegion::new(workers, config.dataplane.ring_bytes)?.into_workers();
        let polls = (0..workers).map(|_| WorkerPoll::new()).collect::<io::Result<Vec<_>>>()?;
        let wakers: Arc<[Arc<mio::Waker>]> = polls.iter().map(|p| p.waker.clone()).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let cores = if config.server.pin_workers {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
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
            let pin = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("blipmq-worker-{id}"))
                .spawn(move || {
                    if let Some(core_id) = pin {
                        if !core_affinity::set_for_current(core_id) {
                            tracing::debug!(worker = id, "could not pin to a core");
                        }
                    }
                    worker.run()
                })?;
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

fn session_config(config: &Config) -> SessionConfig {
    let server_id = if config.server.server_name.is_empty() {
        format!("blipmq-{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() % 1_000_000))
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
