//! Starts the broker: rings, listeners and one pinned worker thread per
//! core; stops it with a drain.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::afpacket::AfPacketBackend;
use crate::backend::driver::Driver;
use crate::backend::kernel::KernelBackend;
use crate::backend::{Backend, PortMonitor, WorkerPoll, WorkerTransport};
use crate::config::{BackendKind, Config, AUTO_SOCKET};
use crate::control::link::control_links;
use crate::control::socket::{default_socket_path, BindError, ControlSocket};
use crate::control::{BrokerMonitor, Control};
use crate::http::{HttpConfig, HttpServer, Identity, LeafRemote, StatsSource};
use crate::leaf::LeafLink;
use crate::rings::RingRegion;
use crate::session::SessionConfig;
use crate::stats::StatsSegment;
use crate::tls::TlsServer;
use crate::worker::limits::ConnectionLimits;
use crate::worker::{ControlPort, CoreConfig, Shared, WorkerCore};

/// A running broker.
pub struct Server {
    local_addr: SocketAddr,
    /// Where NATS clients connect, when `nats.listen` is set.
    nats_addr: Option<SocketAddr>,
    shutdown: Arc<AtomicBool>,
    wakers: Arc<[Arc<mio::Waker>]>,
    threads: Vec<WorkerThread>,
    /// `/metrics`, `/healthz`, `/varz` when `control.metrics_listen` is set.
    http: Option<HttpServer>,
    control: Arc<Control>,
    control_socket: Option<ControlSocket>,
    /// What the backend keeps for the workers' lifetime (a driver
    /// library, devices); released after they stopped.
    backend: Option<Box<dyn std::any::Any + Send>>,
}

impl Server {
    /// Starts the broker on the backend of `dataplane.backend`.
    pub fn start(config: &Config) -> io::Result<Server> {
        // Read before any backend starts: a driver library may change this
        // thread's affinity, which later threads would inherit.
        let cores = pinning_cores(config);
        if config.dataplane.backend != BackendKind::Kernel {
            // A user-space stack listens on nats.listen's port of its own
            // address: it needs a port, and another than server.listen's.
            let nats = config.nats.listen_addr().map_err(io::Error::other)?;
            if let Some(port) = nats.map(|addr| addr.port()) {
                if port == 0 || port == config.server.listen.port() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "nats.listen on a user-space backend needs a port of its own \
                             (not 0, not server.listen's {}); got {port}",
                            config.server.listen.port()
                        ),
                    ));
                }
            }
        }
        match config.dataplane.backend {
            BackendKind::Kernel => {
                let nats = config.nats.listen_addr().map_err(io::Error::other)?;
                let backend =
                    KernelBackend::bind(config.server.listen, nats, config.effective_workers())?;
                Server::start_with(config, backend, &cores)
            }
            BackendKind::AfPacket => {
                Server::start_with(config, AfPacketBackend::new(config)?, &cores)
            }
            #[cfg(feature = "dpdk")]
            BackendKind::Dpdk => {
                let backend = crate::backend::dpdk::DpdkBackend::new(config, &cores)?;
                Server::start_with(config, backend, &cores)
            }
            #[cfg(not(feature = "dpdk"))]
            BackendKind::Dpdk => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this blipmqd was built without the dpdk feature",
            )),
        }
    }

    /// Starts the broker over `backend`: rings, control, and one worker
    /// thread per core, each running the driver loop over its transport.
    pub fn start_with<B: Backend>(
        config: &Config,
        mut backend: B,
        cores: &[core_affinity::CoreId],
    ) -> io::Result<Server> {
        check_leaf_remotes(config, &backend)?;
        let leaf_tls = leaf_tls_config(config)?;
        let workers = config.effective_workers();
        let tls = match config.tls.settings() {
            Some(settings) => Some(Arc::new(
                TlsServer::load(settings).map_err(io::Error::other)?,
            )),
            None => None,
        };
        let core_config = CoreConfig {
            nats_addr: backend.nats_addr(),
            tls: tls.clone(),
            ..core_config(config)
        };
        let local_addr = backend.local_addr();
        let rings = RingRegion::with_pages(
            workers,
            config.dataplane.ring_bytes,
            backend.hugepage_rings(),
        )?
        .into_workers();
        let polls = (0..workers)
            .map(|_| WorkerPoll::new())
            .collect::<io::Result<Vec<_>>>()?;
        let wakers: Arc<[Arc<mio::Waker>]> = polls.iter().map(|p| p.waker.clone()).collect();
        let shutdown = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(shared_state(config, workers)?);
        let (control, control_socket, ports) =
            start_control(config, &wakers, &shared, &shutdown, local_addr)?;
        control.set_port_monitor(backend.port_monitor());
        control.set_tls(tls);
        let monitor = BrokerMonitor {
            control: control.clone(),
            identity: identity(
                config,
                &core_config,
                backend.nats_addr().unwrap_or(local_addr),
            ),
        };
        let http = start_http(config, &shared, backend.port_monitor(), monitor)?;
        let stall = test_stall_from_env();
        let policy = backend.wait_policy();
        let drain_timeout = config.server.drain_timeout;
        let mut threads: Vec<WorkerThread> = Vec::with_capacity(workers);
        for ((rings, poll), control_port) in rings.into_iter().zip(polls).zip(ports) {
            let id = rings.id;
            let part = backend.worker(id)?;
            let core_config = core_config.clone();
            let shared = shared.clone();
            let worker_wakers = wakers.clone();
            let worker_shutdown = shutdown.clone();
            // The worker reports whether its transport started before the
            // next one is made: a failed start is the start's error.
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let stall = stall.filter(|stall| stall.worker == id);
            let priority = config.server.worker_priority;
            // Worker 0 owns the one hub connection.
            let leaf_link = config
                .leafnode
                .remotes
                .first()
                .filter(|_| id == 0)
                .map(|remote| {
                    let seed = leaf_seed();
                    let link = remote.link_config(&config.server.server_name, seed);
                    (LeafLink::new(link, Instant::now()), leaf_tls.clone())
                });
            let thread = spawn_worker(id, cores, priority, move || {
                let now = Instant::now();
                let transport = match part.start(poll, now) {
                    Ok(transport) => {
                        let _ = ready_tx.send(Ok(()));
                        transport
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(io::Error::new(error.kind(), error.to_string())));
                        return Err(error);
                    }
                };
                let mut core = WorkerCore::new(core_config, rings, shared, now);
                core.attach_control(control_port);
                if let Some((link, tls)) = leaf_link {
                    core.attach_leaf_link(link, tls);
                }
                if let Some(stall) = stall {
                    tracing::warn!(worker = id, ?stall.duration, "test hook: stalling before the loop");
                    std::thread::sleep(stall.duration);
                }
                let driver = Driver::new(
                    core,
                    transport,
                    policy,
                    worker_wakers,
                    worker_shutdown,
                    drain_timeout,
                );
                driver.run()
            })?;
            let started = ready_rx
                .recv()
                .map_err(|_| io::Error::other(format!("worker {id} failed to start")))
                .and_then(|started| started);
            if let Err(error) = started {
                begin_shutdown(&shutdown, &wakers);
                for thread in threads {
                    let _ = thread.join();
                }
                let _ = thread.join();
                return Err(error);
            }
            threads.push(thread);
        }
        tracing::info!(%local_addr, backend = backend.name(), workers, "listening");
        let nats_addr = backend.nats_addr();
        if let Some(nats_addr) = nats_addr {
            tracing::info!(%nats_addr, "NATS clients listening");
        }
        Ok(Server {
            local_addr,
            nats_addr,
            shutdown,
            wakers,
            threads,
            http,
            control,
            control_socket,
            backend: Some(Box::new(backend)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where NATS clients connect, when `nats.listen` is set.
    pub fn nats_addr(&self) -> Option<SocketAddr> {
        self.nats_addr
    }

    /// The address of the HTTP metrics server, when one runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// The control plane: commands, reload and the drain hook.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The Unix control socket's path, when one is served.
    pub fn control_socket_path(&self) -> Option<&std::path::Path> {
        self.control_socket.as_ref().map(ControlSocket::path)
    }

    /// Starts the drain: stop accepting, DISCONNECT every client, flush.
    pub fn shutdown(&self) {
        begin_shutdown(&self.shutdown, &self.wakers);
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
        drop(self.backend);
        // Served during the drain too; stopped once the workers are done.
        if let Some(http) = self.http {
            http.stop();
        }
        drop(self.control_socket);
        Ok(cores)
    }
}

fn begin_shutdown(shutdown: &AtomicBool, wakers: &[Arc<mio::Waker>]) {
    shutdown.store(true, Ordering::Relaxed);
    for waker in wakers {
        let _ = waker.wake();
    }
}

type ControlParts = (Arc<Control>, Option<ControlSocket>, Vec<ControlPort>);

/// The control plane: rings to every worker, and the Unix socket of
/// `control.socket`. By default a `drain` command drains as SIGTERM does.
fn start_control(
    config: &Config,
    wakers: &Arc<[Arc<mio::Waker>]>,
    shared: &Arc<Shared>,
    shutdown: &Arc<AtomicBool>,
    local_addr: SocketAddr,
) -> io::Result<ControlParts> {
    let (links, ports) = control_links(wakers)?;
    let drain = {
        let (shutdown, wakers) = (shutdown.clone(), wakers.clone());
        Box::new(move || begin_shutdown(&shutdown, &wakers))
    };
    let control = Arc::new(Control::new(
        links,
        shared.clone(),
        config,
        local_addr.to_string(),
        drain,
    ));
    let setting = config.control.socket.trim();
    let socket = match setting {
        "" => None,
        AUTO_SOCKET => match ControlSocket::bind(&default_socket_path(), control.clone()) {
            Ok(socket) => Some(socket),
            Err(error @ BindError::InUse(_)) => {
                tracing::warn!("{error}; running without one");
                None
            }
            Err(error) => return Err(io::Error::other(error.to_string())),
        },
        path => Some(
            ControlSocket::bind(std::path::Path::new(path), control.clone())
                .map_err(|error| io::Error::other(error.to_string()))?,
        ),
    };
    if let Some(socket) = &socket {
        tracing::info!(path = %socket.path().display(), "control socket");
    }
    Ok((control, socket, ports))
}

/// Refuses leaf-node remotes this broker cannot honour, rather than run
/// without joining the hub.
fn check_leaf_remotes<B: Backend>(config: &Config, backend: &B) -> io::Result<()> {
    let remotes = &config.leafnode.remotes;
    let refusal = if remotes.is_empty() {
        return Ok(());
    } else if remotes.len() > 1 {
        "leafnode.remotes: one hub per broker (list the hub cluster's nodes in one remote's urls)"
    } else if remotes[0].uses_tls() && remotes[0].ca_file.is_empty() {
        "leafnode.remotes: TLS to the hub needs ca_file (the CAs its certificate must chain to)"
    } else if !backend.opens_connections() {
        "leafnode.remotes: this backend cannot open connections yet; use the kernel backend"
    } else {
        return Ok(());
    };
    Err(io::Error::new(io::ErrorKind::Unsupported, refusal))
}

/// The TLS client settings for the remote's hub, when it has TLS.
fn leaf_tls_config(config: &Config) -> io::Result<Option<Arc<rustls::ClientConfig>>> {
    let Some(remote) = config.leafnode.remotes.first().filter(|r| r.uses_tls()) else {
        return Ok(None);
    };
    use std::path::Path;
    let identity = (!remote.cert_file.is_empty())
        .then(|| (Path::new(&remote.cert_file), Path::new(&remote.key_file)));
    crate::tls::client_config(Path::new(&remote.ca_file), identity, "leafnode.remotes")
        .map(Some)
        .map_err(io::Error::other)
}

/// A seed for the link's jitter and loop-detection id: different on every
/// start, so that two brokers never share a `$LDS.` subject.
fn leaf_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// The core settings `config` gives, before the backend's listener and
/// TLS are known.
pub fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        session: Arc::new(session_config(config)),
        max_pending_bytes: config.limits.max_pending_bytes.min(usize::MAX as u64) as usize,
        slow_consumer_grace: config.limits.slow_consumer_grace,
        nats_addr: None,
        drain_timeout: config.server.drain_timeout,
        cache_subjects: config.dataplane.cache_subjects,
        max_connections: config.server.max_connections,
        tls: None,
        limits: ConnectionLimits::from_config(config),
    }
}

/// The cores workers are pinned to, round robin; none when pinning is off.
pub fn pinning_cores(config: &Config) -> Vec<core_affinity::CoreId> {
    if config.server.pin_workers {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    }
}

type WorkerThread = JoinHandle<io::Result<WorkerCore>>;

/// Starts worker `id`'s thread, pinned to its core where allowed, and
/// real-time at `priority` when that is not 0 (`server.worker_priority`).
fn spawn_worker(
    id: usize,
    cores: &[core_affinity::CoreId],
    priority: u8,
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
            if priority > 0 {
                if let Err(error) = set_realtime(priority) {
                    tracing::warn!(
                        worker = id,
                        priority,
                        %error,
                        "server.worker_priority: could not run real-time (needs CAP_SYS_NICE); \
                         the worker runs under the normal scheduler"
                    );
                }
            }
            run()
        })
}

/// Makes the calling thread SCHED_FIFO at `priority` (1..=99).
fn set_realtime(priority: u8) -> Result<(), String> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    // For a real-time policy the value is the POSIX priority itself.
    let value = ThreadPriorityValue::try_from(priority).map_err(|error| error.to_string())?;
    let priority = ThreadPriority::Crossplatform(value);
    let policy = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo);
    set_thread_priority_and_policy(thread_native_id(), priority, policy)
        .map_err(|error| format!("{error:?}"))
}

/// Test hook: `BLIPMQ_TEST_STALL_WORKER=<index>:<millis>` makes worker
/// `index` sleep `millis` before its poll loop starts, so that it does not
/// beat and `/healthz` can be seen turning 503 and back. Read once per
/// broker start; unset (always, outside tests) it costs nothing.
pub const TEST_STALL_VAR: &str = "BLIPMQ_TEST_STALL_WORKER";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TestStall {
    worker: usize,
    duration: Duration,
}

fn test_stall_from_env() -> Option<TestStall> {
    let value = std::env::var(TEST_STALL_VAR).ok()?;
    let stall = parse_test_stall(&value);
    if stall.is_none() {
        tracing::warn!(%value, "{TEST_STALL_VAR} is not <worker>:<millis>; ignored");
    }
    stall
}

fn parse_test_stall(value: &str) -> Option<TestStall> {
    let (worker, millis) = value.trim().split_once(':')?;
    Some(TestStall {
        worker: worker.parse().ok()?,
        duration: Duration::from_millis(millis.parse().ok()?),
    })
}

/// Starts the HTTP server of `control.metrics_listen`, if set, on the
/// segment the workers write (a file or anonymous memory: it reads it in
/// process either way).
/// What `/varz` says the broker is, nats-server's way: the address is the
/// NATS listener's when there is one.
fn identity(config: &Config, core: &CoreConfig, addr: SocketAddr) -> Identity {
    Identity {
        server_id: core.session.server_id.clone(),
        host: addr.ip().to_string(),
        port: addr.port(),
        max_connections: config.server.max_connections,
        ping_interval: config.server.ping_interval,
        ping_max: config.server.max_pings_out,
        max_payload: config.limits.max_payload,
        max_pending: config.limits.max_pending_bytes,
        leaf_remote: LeafRemote::of(config),
    }
}

fn start_http(
    config: &Config,
    shared: &Shared,
    port: Option<Arc<dyn PortMonitor>>,
    monitor: BrokerMonitor,
) -> io::Result<Option<HttpServer>> {
    let listen = config
        .control
        .metrics_listen_addr()
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
    let Some(listen) = listen else {
        return Ok(None);
    };
    let http = HttpServer::start(
        listen,
        StatsSource::Reader(shared.stats.reader()),
        HttpConfig {
            port,
            broker: Some(Arc::new(monitor)),
            ..HttpConfig::default()
        },
    )?;
    let addr = http.local_addr();
    tracing::info!(%addr, "metrics listening on http://{addr}");
    Ok(Some(http))
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
        users: Arc::new(
            crate::auth::UserTable::new(&config.auth.users)
                .mapping_certificates(config.tls.verify_and_map),
        ),
        ping_interval: config.server.ping_interval,
        max_pings_out: config.server.max_pings_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_stall_values() {
        assert_eq!(
            parse_test_stall("1:2500"),
            Some(TestStall {
                worker: 1,
                duration: Duration::from_millis(2500)
            })
        );
        for bad in ["", "1", "x:10", "1:", "1:2s", ":5"] {
            assert_eq!(parse_test_stall(bad), None, "{bad:?}");
        }
    }
}
