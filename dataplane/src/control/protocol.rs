//! What the control thread and the workers say to each other on their
//! control rings, and how a reply travels in chunks.
//!
//! Requests and replies are JSON: this is the control path, never the
//! publish path, and JSON keeps both ends readable. A record is
//! `[request id: u32 BE][last: u8][JSON bytes]`; a reply larger than a ring
//! record is split over several records, the last one flagged.

use serde::{Deserialize, Serialize};

use crate::config::UserConfig;
use crate::worker::limits::ConnectionLimits;

/// Bytes before the JSON in a control record.
pub const RECORD_HEADER: usize = 5;

/// A request to one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum WorkerRequest {
    /// Answered with [`WorkerStatus`]: proves the worker's loop runs.
    Status,
    /// Answered with a list of [`ConnectionInfo`].
    Connections,
    /// Answered with a list of [`SubscriptionInfo`].
    Subscriptions,
    /// Close connection `id`, telling it why. Answered with [`KickResult`].
    Kick { id: u64 },
    /// New limits and token for new and live connections. Answered with
    /// [`ReloadResult`].
    Reload(ReloadSettings),
}

/// The settings a reload changes on running workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadSettings {
    pub max_payload: u32,
    pub max_topic_length: u16,
    pub max_subscriptions: u32,
    pub max_pending_bytes: u64,
    pub slow_consumer_grace_ms: u64,
    pub max_connections: usize,
    pub token: Option<String>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `tls.verify_and_map`: users come from client certificates.
    #[serde(default)]
    pub map_certificates: bool,
    pub ping_interval_ms: u64,
    pub max_pings_out: u32,
    pub connection_limits: ConnectionLimits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker: usize,
    pub connections: usize,
    pub subscriptions: usize,
    pub draining: bool,
}

/// One client connection, as `blipmqctl conns` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Unique while the broker runs; `id % workers` is the owning worker.
    pub id: u64,
    pub worker: usize,
    pub peer: Option<String>,
    pub name: Option<String>,
    pub subscriptions: usize,
    pub pending_bytes: usize,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub age_secs: f64,
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// `blipmq` or `nats`.
    #[serde(default)]
    pub protocol: String,
    /// A NATS client's library and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// The filters it subscribes to.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The TLS version and cipher suite, once its handshake completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cipher_suite: Option<String>,
    /// The `[[auth.users]]` user it authenticated as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Local subscriptions of one worker with the same filter and queue group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub filter: String,
    pub queue: Option<String>,
    pub count: u64,
    pub delivered: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KickResult {
    pub kicked: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// Live connections the new settings now apply to.
    pub connections: usize,
}

/// Writes one record of a reply (or request) into `slot`.
pub fn put_record(slot: &mut [u8], id: u32, last: bool, json: &[u8]) {
    slot[..4].copy_from_slice(&id.to_be_bytes());
    slot[4] = u8::from(last);
    slot[RECORD_HEADER..RECORD_HEADER + json.len()].copy_from_slice(json);
}

/// Splits a record into (id, last, JSON bytes); `None` if it is too short.
pub fn read_record(record: &[u8]) -> Option<(u32, bool, &[u8])> {
    if record.len() < RECORD_HEADER {
        return None;
    }
    let id = u32::from_be_bytes([record[0], record[1], record[2], record[3]]);
    Some((id, record[4] != 0, &record[RECORD_HEADER..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut slot = vec![0; RECORD_HEADER + 4];
        put_record(&mut slot, 7, true, b"{}[]");
        assert_eq!(read_record(&slot), Some((7, true, &b"{}[]"[..])));
        assert_eq!(read_record(&slot[..3]), None);
    }

    #[test]
    fn requests_are_json_tagged_by_op() {
        let json = serde_json::to_string(&WorkerRequest::Kick { id: 9 }).unwrap();
        assert_eq!(json, r#"{"op":"kick","id":9}"#);
        let back: WorkerRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, WorkerRequest::Kick { id: 9 });
    }
}
