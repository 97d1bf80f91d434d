//! The worker's end of the control channel: requests from the control
//! thread arrive as records on an SPSC ring and are answered on another, so
//! the control plane never takes a lock the publish path could wait on.
//! Polled once per loop iteration; a cost only when a request is there.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use blipmq_protocol::ErrorCode;
use serde::Serialize;

use super::{ConnId, WorkerCore};
use crate::auth::UserTable;
use crate::control::protocol::{
    self, ConnectionInfo, KickResult, ReloadResult, ReloadSettings, SubscriptionInfo,
    WorkerRequest, WorkerStatus, RECORD_HEADER,
};
use crate::rings::{Consumer, Producer};
use crate::session::{Dialect, SessionConfig};
use crate::stats::Counter;
use crate::worker::connections::CloseReason;

/// What an operator's kick tells the client.
const KICK_REASON: &str = "kicked by operator";

pub struct ControlPort {
    requests: Consumer,
    replies: Producer,
    /// Replies not yet wholly on the ring: (request id, JSON, bytes sent).
    unsent: VecDeque<(u32, Vec<u8>, usize)>,
}

impl ControlPort {
    pub fn new(requests: Consumer, replies: Producer) -> ControlPort {
        ControlPort {
            requests,
            replies,
            unsent: VecDeque::new(),
        }
    }

    pub(super) fn has_replies(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Puts as much of the waiting replies on the ring as fits, in chunks.
    fn flush(&mut self) {
        let max_chunk = self.replies.max_record() - RECORD_HEADER;
        while let Some((id, json, sent)) = self.unsent.front_mut() {
            let chunk = (json.len() - *sent).min(max_chunk);
            let last = *sent + chunk == json.len();
            let Some(slot) = self.replies.try_reserve(RECORD_HEADER + chunk) else {
                break;
            };
            protocol::put_record(slot, *id, last, &json[*sent..*sent + chunk]);
            self.replies.commit();
            *sent += chunk;
            if last {
                self.unsent.pop_front();
            }
        }
        self.replies.publish();
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|error| error_json(&error.to_string()))
}

fn error_json(why: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": why })).expect("a string serialises")
}

impl WorkerCore {
    /// Connects the control thread's rings to this worker.
    pub fn attach_control(&mut self, port: ControlPort) {
        self.control = Some(port);
    }

    /// Answers every waiting control request and sends what fits.
    pub(super) fn poll_control(&mut self) {
        let Some(mut port) = self.control.take() else {
            return;
        };
        let mut answered = false;
        while let Some(record) = port.requests.peek() {
            if let Some((id, _, json)) = protocol::read_record(record) {
                let reply = match serde_json::from_slice::<WorkerRequest>(json) {
                    Ok(request) => self.answer_control(request),
                    Err(error) => error_json(&format!("bad control request: {error}")),
                };
                port.unsent.push_back((id, reply, 0));
            }
            port.requests.advance();
            answered = true;
        }
        if answered {
            port.requests.release();
        }
        if port.has_replies() {
            port.flush();
        }
        self.control = Some(port);
    }

    fn answer_control(&mut self, request: WorkerRequest) -> Vec<u8> {
        match request {
            WorkerRequest::Status => to_json(&WorkerStatus {
                worker: self.id(),
                connections: self.conns.len(),
                subscriptions: self.subscriptions.len(),
                draining: self.draining,
            }),
            WorkerRequest::Connections => to_json(&self.connection_list()),
            WorkerRequest::Subscriptions => to_json(&self.subscription_list()),
            WorkerRequest::Kick { id } => to_json(&KickResult {
                kicked: self.kick(id),
            }),
            WorkerRequest::Reload(settings) => to_json(&self.reload(&settings)),
        }
    }

    fn connection_list(&self) -> Vec<ConnectionInfo> {
        let mut subjects: BTreeMap<ConnId, Vec<String>> = BTreeMap::new();
        for sub in self.subscriptions.iter() {
            let filter = String::from_utf8_lossy(&sub.filter).into_owned();
            subjects.entry(sub.conn).or_default().push(filter);
        }
        self.conns
            .iter()
            .map(|(cid, conn)| ConnectionInfo {
                id: conn.info.serial,
                worker: self.id(),
                peer: conn.info.peer.map(|peer| peer.to_string()),
                name: conn.session.name().map(str::to_owned),
                subscriptions: conn.session.subscription_count(),
                pending_bytes: conn.output.pending_len(),
                msgs_in: conn.info.msgs_in,
                msgs_out: conn.info.msgs_out,
                age_secs: self
                    .now
                    .saturating_duration_since(conn.info.accepted)
                    .as_secs_f64(),
                bytes_in: conn.info.bytes_in,
                bytes_out: conn.info.bytes_out,
                protocol: match conn.output.dialect() {
                    Dialect::Binary => "blipmq",
                    Dialect::Nats => "nats",
                }
                .to_string(),
                lang: conn.session.client().map(|(lang, _)| lang.to_owned()),
                client_version: conn.session.client().map(|(_, version)| version.to_owned()),
                subjects: subjects.remove(&cid).unwrap_or_default(),
                tls_version: conn.tls.as_ref().and_then(|tls| tls.version()),
                tls_cipher_suite: conn.tls.as_ref().and_then(|tls| tls.cipher_suite()),
                user: conn.session.user().map(str::to_owned),
            })
            .collect()
    }

    /// Local subscriptions grouped by filter and queue group.
    fn subscription_list(&self) -> Vec<SubscriptionInfo> {
        // (filter, queue) -> (subscriptions, messages delivered)
        type Key<'a> = (&'a [u8], Option<&'a [u8]>);
        let mut grouped: BTreeMap<Key<'_>, (u64, u64)> = BTreeMap::new();
        for sub in self.subscriptions.iter() {
            let entry = grouped
                .entry((&sub.filter, sub.queue.as_deref()))
                .or_default();
            entry.0 += 1;
            entry.1 += sub.delivered;
        }
        grouped
            .into_iter()
            .map(|((filter, queue), (count, delivered))| SubscriptionInfo {
                filter: String::from_utf8_lossy(filter).into_owned(),
                queue: queue.map(|q| String::from_utf8_lossy(q).into_owned()),
                count,
                delivered,
            })
            .collect()
    }

    /// DISCONNECT and close connection `serial`, if it is here and open.
    fn kick(&mut self, serial: u64) -> bool {
        let Some(cid) = self
            .conns
            .iter()
            .find(|(_, conn)| conn.info.serial == serial && conn.closing.is_none())
            .map(|(cid, _)| cid)
        else {
            return false;
        };
        tracing::info!(conn = serial, "kicked by operator");
        let dialect = self.conns[cid].output.dialect();
        if dialect.put_disconnect(self.conns.answer_buffer(cid), KICK_REASON) {
            self.stats.inc(Counter::FramesOutDisconnect);
        }
        self.start_close(cid, CloseReason::Kicked);
        true
    }

    /// Applies new limits to new connections and to every live one.
    fn reload(&mut self, settings: &ReloadSettings) -> ReloadResult {
        let old = &self.config.session;
        let session = Arc::new(SessionConfig {
            server_id: old.server_id.clone(),
            max_payload: settings.max_payload,
            max_topic_length: settings.max_topic_length,
            max_subscriptions: settings.max_subscriptions,
            token: settings.token.clone(),
            users: Arc::new(
                UserTable::new(&settings.users).mapping_certificates(settings.map_certificates),
            ),
            ping_interval: Duration::from_millis(settings.ping_interval_ms),
            max_pings_out: settings.max_pings_out,
        });
        self.config.max_pending_bytes = settings.max_pending_bytes.min(usize::MAX as u64) as usize;
        self.config.slow_consumer_grace = Duration::from_millis(settings.slow_consumer_grace_ms);
        self.conns.set_max_pending(
            self.config.max_pending_bytes,
            self.config.slow_consumer_grace,
        );
        self.config.max_connections = settings.max_connections;
        let limits = settings.connection_limits;
        self.config.limits = limits;
        self.info = session.info_json(self.id(), self.config.tls.is_some());
        let mut refused = Vec::new();
        for (cid, conn) in self.conns.iter_mut() {
            if !conn.session.reauthorize(session.clone()) && conn.closing.is_none() {
                refused.push(cid);
            }
            conn.rate.set_limits(&limits);
            if !conn.session.is_open() {
                conn.handshake_deadline = limits.handshake_deadline(conn.info.accepted);
            }
        }
        for cid in refused {
            tracing::info!(conn = cid, "credentials no longer valid after reload");
            self.send_error(cid, ErrorCode::Unauthorized, "authorization failed");
            self.start_close(cid, CloseReason::Error);
        }
        self.config.session = session;
        ReloadResult {
            connections: self.conns.len(),
        }
    }
}
