//! The control plane inside `blipmqd`: operators' commands (`status`,
//! `stats`, `connections`, `subscriptions`, `kick`, `reload`, `drain`,
//! `config`) arrive as JSON lines on a Unix socket ([`socket`]) and reach
//! the workers as control records on their own rings ([`link`]).
//!
//! Request: one JSON object per line, `{"cmd": "status"}`,
//! `{"cmd": "kick", "id": 3}`. Reply: one JSON object per line, with
//! `"ok": true` and the command's fields, or `"ok": false` and `"error"`.

pub mod link;
pub mod protocol;
pub mod socket;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use self::link::WorkerLink;
use self::protocol::{ConnectionInfo, ReloadSettings, SubscriptionInfo, WorkerRequest};
use crate::backend::PortMonitor;
use crate::config::Config;
use crate::http::{BrokerView, Identity};
use crate::stats::Counter;
use crate::tls::TlsServer;
use crate::worker::limits::ConnectionLimits;
use crate::worker::Shared;

/// How long a command waits for the workers.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);
/// A heartbeat older than this makes `status` report the worker stale: the
/// same threshold as `/healthz`.
const STALE_AFTER: Duration = crate::http::DEFAULT_STALE_AFTER;

/// Reads the configuration again, as at start (file plus flags).
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, String> + Send>;
/// Sets the log filter (`log.level`) of the running process.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// What a command asks the process to do beyond answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Start the drain (as SIGTERM does), after the reply is sent.
    Drain,
}

pub struct Control {
    links: Mutex<Vec<WorkerLink>>,
    next_request: AtomicU32,
    shared: Arc<Shared>,
    started: Instant,
    backend: String,
    listen: String,
    config: Mutex<Config>,
    loader: Mutex<Option<ConfigLoader>>,
    log_level: Mutex<Option<LogLevelSetter>>,
    socket_path: Mutex<Option<PathBuf>>,
    drain: Mutex<DrainHook>,
    port: Mutex<Option<Arc<dyn PortMonitor>>>,
    /// The workers' certificates, which a reload reads again.
    tls: Mutex<Option<Arc<TlsServer>>>,
}

/// Starts the drain when an operator asks for it.
pub type DrainHook = Box<dyn Fn() + Send>;

impl Control {
    pub fn new(
        links: Vec<WorkerLink>,
        shared: Arc<Shared>,
        config: &Config,
        listen: String,
        drain: DrainHook,
    ) -> Control {
        Control {
            links: Mutex::new(links),
            next_request: AtomicU32::new(1),
            shared,
            started: Instant::now(),
            backend: format!("{:?}", config.dataplane.backend).to_lowercase(),
            listen,
            config: Mutex::new(config.clone()),
            loader: Mutex::new(None),
            log_level: Mutex::new(None),
            socket_path: Mutex::new(None),
            drain: Mutex::new(drain),
            port: Mutex::new(None),
            tls: Mutex::new(None),
        }
    }

    /// Makes `reload` (and SIGHUP) re-read the configuration with `loader`.
    pub fn set_config_loader(&self, loader: ConfigLoader) {
        *self.loader.lock().expect("loader lock") = Some(loader);
    }

    /// Makes `reload` apply `log.level` with `setter`.
    pub fn set_log_level_setter(&self, setter: LogLevelSetter) {
        *self.log_level.lock().expect("log lock") = Some(setter);
    }

    /// The backend's device, for the `port` command.
    pub fn set_port_monitor(&self, monitor: Option<Arc<dyn PortMonitor>>) {
        *self.port.lock().expect("port lock") = monitor;
    }

    /// The workers' TLS, whose certificates `reload` reads again.
    pub fn set_tls(&self, tls: Option<Arc<TlsServer>>) {
        *self.tls.lock().expect("tls lock") = tls;
    }

    pub(crate) fn set_socket_path(&self, path: PathBuf) {
        *self.socket_path.lock().expect("socket lock") = Some(path);
    }

    /// Answers one request line; the reply is one JSON line (no newline).
    pub fn handle_line(&self, line: &str) -> (String, Effect) {
        let (reply, effect) = match serde_json::from_str::<Value>(line) {
            Ok(request) => self.handle(&request),
            Err(error) => (Err(format!("not a JSON object: {error}")), Effect::None),
        };
        let value = match reply {
            Ok(Value::Object(mut fields)) => {
                fields.insert("ok".into(), Value::Bool(true));
                Value::Object(fields)
            }
            Ok(other) => json!({ "ok": true, "result": other }),
            Err(error) => json!({ "ok": false, "error": error }),
        };
        (value.to_string(), effect)
    }

    fn handle(&self, request: &Value) -> (Result<Value, String>, Effect) {
        let Some(cmd) = request.get("cmd").and_then(Value::as_str) else {
            return (Err("missing \"cmd\"".into()), Effect::None);
        };
        let reply = match cmd {
            "status" => self.status(),
            "stats" => Ok(self.stats()),
            "connections" => self.connections(),
            "subscriptions" => self.subscriptions(),
            "kick" => match request.get("id").and_then(Value::as_u64) {
                Some(id) => self.kick(id),
                None => Err("kick needs a numeric \"id\"".into()),
            },
            "reload" => self.reload(),
            "config" => Ok(self.config_show()),
            "port" => Ok(self.port()),
            "leafz" => Ok(self.leafz()),
            "drain" => return (Ok(json!({ "draining": true })), Effect::Drain),
            other => Err(format!(
                "unknown command {other:?}; one of status, stats, connections, \
                 subscriptions, kick, reload, config, port, leafz, drain"
            )),
        };
        (reply, Effect::None)
    }

    /// Replaces what `drain` does (by default it drains the workers; a
    /// process that must also exit hooks in here, as `blipmqd` does).
    pub fn set_drain_hook(&self, hook: DrainHook) {
        *self.drain.lock().expect("drain lock") = hook;
    }

    /// Starts the drain; what the `drain` command's [`Effect`] calls for.
    pub fn start_drain(&self) {
        (self.drain.lock().expect("drain lock"))();
    }

    fn ask(&self, request: &WorkerRequest) -> Vec<Result<Value, String>> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut links = self.links.lock().expect("links lock");
        link::ask_all(&mut links, id, request, WORKER_TIMEOUT)
    }

    /// Every worker's answer, or the first failure.
    fn ask_every_worker(&self, request: &WorkerRequest) -> Result<Vec<Value>, String> {
        self.ask(request).into_iter().collect()
    }

    fn status(&self) -> Result<Value, String> {
        let snapshot = self.shared.stats.snapshot();
        // Stale by /healthz's rule: a worker that has not beaten yet is given
        // the limit from the broker's start to do so.
        let stale_workers = match crate::http::check_health(&snapshot, STALE_AFTER) {
            crate::http::Health::Stale { workers, .. } => workers,
            _ => Vec::new(),
        };
        let mut workers = Vec::new();
        for (w, answer) in self.ask(&WorkerRequest::Status).into_iter().enumerate() {
            let heartbeat_ms = snapshot
                .heartbeat_age(Some(w))
                .map(|age| age.as_millis() as u64);
            let stale = stale_workers.iter().any(|s| s.worker == w);
            workers.push(match answer {
                Ok(mut status) => {
                    status["heartbeat_age_ms"] = json!(heartbeat_ms);
                    status["responding"] = json!(true);
                    status["stale"] = json!(stale);
                    status
                }
                Err(error) => json!({
                    "worker": w,
                    "responding": false,
                    "error": error,
                    "heartbeat_age_ms": heartbeat_ms,
                    "stale": stale,
                }),
            });
        }
        let healthy = workers
            .iter()
            .all(|w| w["responding"] == json!(true) && w["stale"] == json!(false));
        let config = self.config.lock().expect("config lock");
        Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_secs": self.started.elapsed().as_secs_f64(),
            "backend": self.backend,
            "listen": self.listen,
            "workers": workers,
            "healthy": healthy,
            "connections": self.shared.connections.load(Ordering::Relaxed),
            "stats_file": config.control.stats_file,
            "socket": self.socket_path.lock().expect("socket lock").as_ref().map(|p| p.display().to_string()),
        }))
    }

    fn stats(&self) -> Value {
        crate::http::render_varz(&self.shared.stats.snapshot(), STALE_AFTER)
    }

    /// The device: what the backend says of it live, and each worker's
    /// queue counters (the `port_*` ones) from the stats segment.
    /// The leaf-node remote, as the in-process `/leafz` shows it.
    fn leafz(&self) -> Value {
        let config = self
            .config
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let remote = crate::http::LeafRemote::of(&config);
        let snapshot = self.shared.stats.snapshot();
        let name = &config.server.server_name;
        crate::http::render_leafz(
            name,
            remote.as_ref(),
            &snapshot,
            std::time::SystemTime::now(),
        )
    }

    fn port(&self) -> Value {
        let snapshot = self.shared.stats.snapshot();
        let port_counters = || {
            Counter::ALL
                .iter()
                .copied()
                .filter(|c| c.name().starts_with("port_") && !c.name().starts_with("port_nic_"))
        };
        let queues: Vec<Value> = (0..snapshot.workers())
            .map(|worker| {
                let mut fields = Map::new();
                fields.insert("worker".into(), worker.into());
                for counter in port_counters() {
                    let name = counter.name().trim_start_matches("port_");
                    fields.insert(name.into(), snapshot.get(worker, counter).into());
                }
                Value::Object(fields)
            })
            .collect();
        let monitor = self.port.lock().expect("port lock").clone();
        let (device, xstats) = match &monitor {
            Some(monitor) => {
                let xstats: Map<String, Value> = monitor
                    .xstats()
                    .into_iter()
                    .map(|(name, value)| (name, value.into()))
                    .collect();
                (monitor.describe(), Value::Object(xstats))
            }
            None => (Value::Null, Value::Null),
        };
        json!({
            "backend": self.backend,
            "device": device,
            "queues": queues,
            "xstats": xstats,
        })
    }

    fn connections(&self) -> Result<Value, String> {
        Ok(json!({ "connections": self.connection_infos()? }))
    }

    /// Every worker's connections, by id.
    pub fn connection_infos(&self) -> Result<Vec<ConnectionInfo>, String> {
        let mut all = Vec::new();
        for list in self.ask_every_worker(&WorkerRequest::Connections)? {
            let conns: Vec<ConnectionInfo> = serde_json::from_value(list)
                .map_err(|error| format!("a worker's connections: {error}"))?;
            all.extend(conns);
        }
        all.sort_by_key(|c| c.id);
        Ok(all)
    }

    fn subscriptions(&self) -> Result<Value, String> {
        Ok(json!({ "subscriptions": self.subscription_infos()? }))
    }

    /// Subscriptions merged over workers by filter and queue group.
    pub fn subscription_infos(&self) -> Result<Vec<SubscriptionInfo>, String> {
        let mut merged: std::collections::BTreeMap<(String, Option<String>), (u64, u64)> =
            Default::default();
        for list in self.ask_every_worker(&WorkerRequest::Subscriptions)? {
            let subs: Vec<SubscriptionInfo> = serde_json::from_value(list)
                .map_err(|error| format!("a worker's subscriptions: {error}"))?;
            for sub in subs {
                let entry = merged.entry((sub.filter, sub.queue)).or_default();
                entry.0 += sub.count;
                entry.1 += sub.delivered;
            }
        }
        Ok(merged
            .into_iter()
            .map(|((filter, queue), (count, delivered))| SubscriptionInfo {
                filter,
                queue,
                count,
                delivered,
            })
            .collect())
    }

    fn kick(&self, id: u64) -> Result<Value, String> {
        let answers = self.ask_every_worker(&WorkerRequest::Kick { id })?;
        if answers.iter().any(|a| a["kicked"] == json!(true)) {
            Ok(json!({ "kicked": id }))
        } else {
            Err(format!("no open connection with id {id}"))
        }
    }

    /// Re-reads the configuration and applies what can change live: limits,
    /// the token, keepalive and the log level. Other changed keys are
    /// reported as needing a restart, not applied.
    pub fn reload(&self) -> Result<Value, String> {
        let new = {
            let loader = self.loader.lock().expect("loader lock");
            let loader = loader
                .as_ref()
                .ok_or("this broker has no configuration to reload")?;
            loader()?
        };
        let mut current = self.config.lock().expect("config lock");
        // Certificates first: files that do not load fail the whole reload.
        let tls_reloaded = match (
            self.tls.lock().expect("tls lock").as_ref(),
            new.tls.settings(),
        ) {
            (Some(server), Some(settings)) => {
                server.reload(settings)?;
                true
            }
            _ => false,
        };
        let (changed, mut restart) = diff(&current, &new);
        if !tls_reloaded {
            // TLS turned on or off takes a restart.
            restart.extend(
                changed
                    .iter()
                    .filter(|key| key.starts_with("tls."))
                    .cloned(),
            );
        }
        let changed: Vec<String> = changed
            .into_iter()
            .filter(|key| tls_reloaded || !key.starts_with("tls."))
            .collect();
        if new.log.level != current.log.level {
            if let Some(setter) = self.log_level.lock().expect("log lock").as_ref() {
                setter(&new.log.level)?;
            }
        }
        let settings = ReloadSettings {
            max_payload: new.limits.max_payload,
            max_topic_length: new.limits.max_topic_length,
            max_subscriptions: new.limits.max_subscriptions,
            max_pending_bytes: new.limits.max_pending_bytes,
            slow_consumer_grace_ms: new.limits.slow_consumer_grace.as_millis() as u64,
            max_connections: new.server.max_connections,
            token: new.auth.token.clone(),
            users: new.auth.users.clone(),
            // Turned on or off with TLS itself only by a restart.
            map_certificates: if tls_reloaded {
                new.tls.verify_and_map
            } else {
                current.tls.verify_and_map
            },
            ping_interval_ms: new.server.ping_interval.as_millis() as u64,
            max_pings_out: new.server.max_pings_out,
            connection_limits: ConnectionLimits::from_config(&new),
        };
        let answers = self.ask_every_worker(&WorkerRequest::Reload(settings))?;
        let connections: u64 = answers
            .iter()
            .filter_map(|a| a["connections"].as_u64())
            .sum();
        // Keys needing a restart keep their running values in `config show`.
        let mut applied = new;
        applied.server.listen = current.server.listen;
        applied.server.workers = current.server.workers;
        applied.server.pin_workers = current.server.pin_workers;
        applied.server.worker_priority = current.server.worker_priority;
        applied.server.server_name = current.server.server_name.clone();
        applied.server.drain_timeout = current.server.drain_timeout;
        applied.log.format = current.log.format;
        applied.control = current.control.clone();
        applied.dataplane = current.dataplane.clone();
        applied.afpacket = current.afpacket.clone();
        if !tls_reloaded {
            applied.tls = current.tls.clone();
        }
        *current = applied;
        tracing::info!(
            ?changed,
            ?restart,
            connections,
            tls_reloaded,
            "configuration reloaded"
        );
        Ok(json!({
            "changed": changed,
            "tls_reloaded": tls_reloaded,
            "needs_restart": restart,
            "live_connections": connections,
        }))
    }

    fn config_show(&self) -> Value {
        let config = self.config.lock().expect("config lock").redacted();
        json!({ "toml": config.to_toml_string() })
    }
}

/// Keys that differ between two configurations, split into those a reload
/// applies and those that need a restart.
fn diff(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let flat = |config: &Config| -> Map<String, Value> {
        let mut out = Map::new();
        if let Ok(Value::Object(sections)) = serde_json::to_value(config) {
            for (section, keys) in sections {
                if let Value::Object(keys) = keys {
                    for (key, value) in keys {
                        out.insert(format!("{section}.{key}"), value);
                    }
                }
            }
        }
        out
    };
    let (old, new) = (flat(old), flat(new));
    let mut changed = Vec::new();
    let mut restart = Vec::new();
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        if old.get(key) == new.get(key) {
            continue;
        }
        let live = key.starts_with("limits.")
            || key.starts_with("auth.")
            || key.starts_with("tls.")
            || matches!(
                key.as_str(),
                "server.max_connections"
                    | "server.ping_interval"
                    | "server.max_pings_out"
                    | "log.level"
            );
        if live {
            changed.push(key.clone());
        } else {
            restart.push(key.clone());
        }
    }
    (changed, restart)
}

/// The running broker as the HTTP server's nats-server endpoints see it.
pub struct BrokerMonitor {
    pub control: Arc<Control>,
    pub identity: Identity,
}

impl BrokerView for BrokerMonitor {
    fn identity(&self) -> Identity {
        self.identity.clone()
    }

    fn connections(&self) -> Result<Vec<ConnectionInfo>, String> {
        self.control.connection_infos()
    }

    fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>, String> {
        self.control.subscription_infos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_splits_live_keys_from_restart_keys() {
        let old = Config::default();
        let mut new = old.clone();
        new.limits.max_payload = 100;
        new.auth.token = Some("s3cret".into());
        new.server.workers = 7;
        new.log.level = "debug".into();
        let (changed, restart) = diff(&old, &new);
        assert_eq!(
            changed,
            vec!["auth.token", "limits.max_payload", "log.level"]
        );
        assert_eq!(restart, vec!["server.workers"]);
    }
}
