//! The JSON bodies of CONNECT (client → server) and INFO (server → client).

use serde::{Deserialize, Serialize};

use super::error::NatsError;

/// The protocol level of a client that understands async INFO; the highest
/// nats-server accepts (`ClientProtoInfo`).
pub const CLIENT_PROTOCOL_INFO: i32 = 1;

fn yes() -> bool {
    true
}

/// A field that may be `null`, which Go's decoder leaves at its default
/// (async-nats sends `"name":null` and friends).
fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Like [`or_default`] for the fields whose default is `true`.
fn or_yes<'de, D>(deserializer: D) -> Result<bool, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(true))
}

/// The options a client sends in CONNECT.
///
/// nats-server unmarshals CONNECT over `defaultOpts`, so a client that
/// leaves out `verbose`, `pedantic` or `echo` gets `true` for them; the
/// serde defaults here do the same. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectOptions {
    /// Answer every PUB/SUB/UNSUB/CONNECT with `+OK`.
    #[serde(default = "yes", deserialize_with = "or_yes")]
    pub verbose: bool,
    /// Check subjects strictly (see [`check_subject`](super::check_subject)).
    #[serde(default = "yes", deserialize_with = "or_yes")]
    pub pedantic: bool,
    /// Deliver the client's own messages to its own subscriptions.
    #[serde(default = "yes", deserialize_with = "or_yes")]
    pub echo: bool,
    /// The client understands HMSG and may send HPUB.
    #[serde(default, deserialize_with = "or_default")]
    pub headers: bool,
    /// The client wants a 503 status message when a request has no
    /// responders (needs `headers`).
    #[serde(default, deserialize_with = "or_default")]
    pub no_responders: bool,
    #[serde(default, deserialize_with = "or_default")]
    pub tls_required: bool,
    #[serde(default, deserialize_with = "or_default")]
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub lang: String,
    #[serde(default, deserialize_with = "or_default")]
    pub version: String,
    #[serde(default, deserialize_with = "or_default")]
    pub protocol: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
}

impl Default for ConnectOptions {
    /// What nats-server assumes before CONNECT arrives (`defaultOpts`).
    fn default() -> Self {
        ConnectOptions {
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            tls_required: false,
            name: String::new(),
            lang: String::new(),
            version: String::new(),
            protocol: 0,
            auth_token: None,
            user: None,
            pass: None,
        }
    }
}

impl ConnectOptions {
    /// Parses the argument of CONNECT. Allocates; CONNECT comes once.
    pub fn parse(json: &[u8]) -> Result<ConnectOptions, NatsError> {
        serde_json::from_slice(json).map_err(|_| NatsError::BadConnectJson)
    }

    /// The checks processConnect makes for a client, in its order: the
    /// protocol level, then no_responders without headers. `server_headers`
    /// is whether this server supports headers at all.
    pub fn check(&self, server_headers: bool) -> Result<(), NatsError> {
        if !(0..=CLIENT_PROTOCOL_INFO).contains(&self.protocol) {
            return Err(NatsError::BadClientProtocol);
        }
        if self.no_responders && !self.headers_enabled(server_headers) {
            return Err(NatsError::NoRespondersRequiresHeaders);
        }
        Ok(())
    }

    /// Whether this connection may use HPUB/HMSG: both sides must want it.
    pub fn headers_enabled(&self, server_headers: bool) -> bool {
        server_headers && self.headers
    }
}

/// The INFO a server sends on accept: the fields nats-server 2.9 sends that
/// clients read. `false`/empty optional fields are left out, as nats-server's
/// `omitempty` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    /// 1: the server may send INFO again after connect.
    pub proto: i32,
    /// nats-server sends its Go version; BlipMQ has none to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<String>,
    pub host: String,
    pub port: u16,
    /// Whether HPUB/HMSG are supported.
    pub headers: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub auth_required: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_required: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_available: bool,
    /// Clients must present a certificate.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    pub max_payload: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub jetstream: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub client_id: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    /// Set when auth_required asks for a signed nonce (nkeys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    /// Lame duck mode: clients reconnect elsewhere.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ldm: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Default for ServerInfo {
    fn default() -> Self {
        ServerInfo {
            server_id: String::new(),
            server_name: String::new(),
            version: String::new(),
            proto: CLIENT_PROTOCOL_INFO,
            go: None,
            host: "0.0.0.0".to_owned(),
            port: 4222,
            headers: true,
            auth_required: false,
            tls_required: false,
            tls_available: false,
            tls_verify: false,
            max_payload: 1024 * 1024,
            jetstream: false,
            client_id: 0,
            client_ip: String::new(),
            nonce: None,
            connect_urls: Vec::new(),
            ldm: false,
        }
    }
}
