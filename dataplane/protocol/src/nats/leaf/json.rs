//! The JSON bodies of a hub's INFO and a leaf's CONNECT.

use serde::{Deserialize, Serialize};

use crate::nats::NatsError;

/// What a leaf reads from a hub's INFO (nats-server's `Info`, leafnode
/// fields). Unknown fields are ignored; absent ones take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HubInfo {
    pub server_id: String,
    /// The hub's server name (`server_name`), shown by the leaf.
    #[serde(rename = "server_name")]
    pub name: String,
    pub version: String,
    /// The hub's cluster, if it is in one.
    pub cluster: String,
    pub max_payload: i64,
    pub headers: bool,
    pub tls_required: bool,
    pub auth_required: bool,
    /// For nkeys/JWT signatures; user/password and tokens ignore it.
    pub nonce: String,
    /// The id of this connection on the hub; 0 on a client port of an old
    /// server.
    pub client_id: u64,
    /// Client URLs: a client port's INFO has them.
    pub connect_urls: Vec<String>,
    /// Other hub nodes a leaf may connect to. Present (maybe empty) only
    /// on a leafnode port, so `None` means a wrong port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leafnode_urls: Option<Vec<String>>,
    /// The hub answers CONNECT with an INFO of its own (`connect_info`).
    pub info_on_connect: bool,
    /// This INFO is that answer: credentials were accepted.
    pub connect_info: bool,
    /// The account the leaf is bound to on the hub.
    pub remote_account: String,
}

impl HubInfo {
    /// Parses the argument of INFO. Allocates; INFO is rare.
    pub fn parse(json: &[u8]) -> Result<HubInfo, NatsError> {
        serde_json::from_slice(json).map_err(|_| NatsError::BadConnectJson)
    }

    /// Whether this INFO came from a leafnode port: nats-server's own leaf
    /// refuses any other (`ErrConnectedToWrongPort`).
    pub fn is_leafnode_port(&self) -> bool {
        self.client_id != 0 && self.leafnode_urls.is_some()
    }
}

/// A leaf's CONNECT (nats-server's `leafConnectInfo`, plus `auth_token`
/// which the hub's client authorization reads). No `lang`: that marks a
/// client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LeafConnect {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    pub tls_required: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_id: String,
    /// The leaf's name, shown in the hub's `/leafz`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The leaf's cluster; must differ from the hub's.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// The leaf understands HMSG.
    pub headers: bool,
}
