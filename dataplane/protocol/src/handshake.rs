//! The JSON bodies of INFO (broker → client) and CONNECT (client → broker).

use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;

/// Sent by the broker on accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub server_id: String,
    pub version: String,
    pub protocol: u32,
    pub max_payload: u64,
    pub max_topic_length: u64,
    pub auth_required: bool,
    pub tls_required: bool,
    /// The worker that owns this connection; informative (tests use it to
    /// place connections on different workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
}

/// The client's first frame. Unknown fields are ignored, as NATS does, so
/// that newer clients still connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    pub protocol: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// With `pass`: a user of the broker's `[[auth.users]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(default)]
    pub verbose: bool,
}

impl Connect {
    /// Parses a CONNECT body: a JSON object whose `protocol` is 1.
    pub fn parse(json: &[u8]) -> Result<Connect, &'static str> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|_| "CONNECT body is not JSON")?;
        if !value.is_object() {
            return Err("CONNECT body is not a JSON object");
        }
        let connect: Connect = serde_json::from_value(value)
            .map_err(|_| "CONNECT fields have the wrong types or protocol is missing")?;
        if connect.protocol != PROTOCOL_VERSION {
            return Err("unsupported protocol version");
        }
        Ok(connect)
    }
}
