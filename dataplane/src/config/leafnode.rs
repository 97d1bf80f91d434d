//! `[leafnode]`: hubs this broker joins as a NATS leaf node
//! (`[[leafnode.remotes]]`). Worker 0 runs the link ([`crate::leaf`],
//! `worker::hub`); the server refuses what it cannot do yet (more than one
//! remote, a backend that cannot open connections) and TLS without
//! `ca_file`.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::users::{AllowDeny, Secret, SubjectRulesConfig};
use crate::auth::SubjectRules;
use crate::leaf::{Credentials, LeafLinkConfig};
use blipmq_protocol::nats::leaf::DEFAULT_LEAFNODE_PORT;

/// `[leafnode]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeafNodeConfig {
    /// One entry per hub (a NATS cluster); none by default.
    pub remotes: Vec<LeafRemoteConfig>,
}

impl LeafNodeConfig {
    /// Whether a remote holds a password or a token (the file must then be
    /// private: see `check_file_mode`).
    pub fn has_secrets(&self) -> bool {
        self.remotes
            .iter()
            .any(|remote| remote.password.is_some() || remote.token.is_some())
    }
}

/// One `[[leafnode.remotes]]` entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafRemoteConfig {
    /// `nats-leaf://host[:port]` (also `nats://`, or `tls://` which turns on
    /// `tls`), tried in turn; the port defaults to 7422.
    pub urls: Vec<String>,
    /// The leaf's name on the hub; "" = the broker's `server.server_name`,
    /// or else the host name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// With `password`: the hub's `leafnodes { authorization }` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Instead of user/password: a token the hub's `authorization` takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Connect with TLS: after the hub's INFO (which comes in the clear, as
    /// nats-server sends it), the hub's certificate checked against
    /// `ca_file` and the URL's host.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tls: bool,
    /// CAs (PEM) the hub's certificate must chain to; needs `tls`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// With `key_file`: the certificate chain (PEM) this broker presents
    /// to a hub that verifies its leaves (`leafnodes { tls { verify } }`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    /// The private key (PEM) of `cert_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_file: String,
    /// Which local messages may go to the hub (and which hub interest is
    /// kept); default all.
    #[serde(default, skip_serializing_if = "is_unrestricted")]
    pub export: AllowDeny,
    /// Which hub messages are delivered here (and which local interest is
    /// announced to the hub); default all.
    #[serde(default, skip_serializing_if = "is_unrestricted")]
    pub import: AllowDeny,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_unrestricted(rules: &AllowDeny) -> bool {
    *rules == AllowDeny::default()
}

/// A hub address from a remote's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafUrl {
    /// `host:port`, ready to dial (IPv6 hosts in brackets).
    pub address: String,
    /// The scheme asked for TLS (`tls://`).
    pub tls: bool,
}

/// Parses `nats-leaf://host[:port]`; the error says what is wrong.
pub fn parse_leaf_url(url: &str) -> Result<LeafUrl, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL: write nats-leaf://host:port"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "nats-leaf" | "nats" => false,
        "tls" => true,
        other => {
            return Err(format!(
                "{url:?}: scheme {other:?} is not nats-leaf, nats or tls (websocket hubs are not supported)"
            ))
        }
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(format!(
            "{url:?}: put credentials in user/password or token, not in the URL"
        ));
    }
    if rest.contains(['/', '?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?}: only host[:port] may follow the scheme"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        // A bracketed IPv6 host without a port ends in `]`.
        Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if host.is_empty() || (bare.is_none() && host.contains([':', '[', ']'])) {
        return Err(format!("{url:?}: missing or malformed host"));
    }
    let port = match port {
        None => DEFAULT_LEAFNODE_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("{url:?}: port {port:?} is not 1..=65535")),
        },
    };
    Ok(LeafUrl {
        address: format!("{host}:{port}"),
        tls,
    })
}

impl LeafNodeConfig {
    /// Replaces passwords and tokens, for printing.
    pub(super) fn redact(&mut self) {
        for remote in &mut self.remotes {
            for secret in [&mut remote.password, &mut remote.token]
                .into_iter()
                .flatten()
            {
                *secret = Secret::new(super::REDACTED);
            }
        }
    }

    pub(super) fn validate(&self, max_topic_length: u16) -> Result<(), ConfigError> {
        for (index, remote) in self.remotes.iter().enumerate() {
            remote.validate(&format!("leafnode.remotes[{index}]"), max_topic_length)?;
        }
        Ok(())
    }
}

impl LeafRemoteConfig {
    fn validate(&self, key: &str, max_topic_length: u16) -> Result<(), ConfigError> {
        let invalid = |field: &str, why: String| {
            ConfigError::invalid(&format!("{key}.{field}"), format!("{key}.{field}: {why}"))
        };
        if self.urls.is_empty() {
            return Err(invalid(
                "urls",
                "give at least one hub URL, e.g. [\"nats-leaf://hub.example:7422\"]".into(),
            ));
        }
        for url in &self.urls {
            parse_leaf_url(url).map_err(|why| invalid("urls", why))?;
        }
        if self.name.len() > 255
            || self
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "name",
                "must be at most 255 bytes without blanks or control characters".into(),
            ));
        }
        match (&self.user, &self.password, &self.token) {
            (Some(_), Some(_), None) | (None, None, None) => {}
            (None, None, Some(token)) if !token.expose().is_empty() => {}
            (None, None, Some(_)) => return Err(invalid("token", "must not be empty".into())),
            (_, _, Some(_)) => {
                return Err(invalid(
                    "token",
                    "give either user and password or a token, not both".into(),
                ))
            }
            (Some(_), None, None) => {
                return Err(invalid("password", "user needs a password".into()))
            }
            (None, Some(_), None) => return Err(invalid("user", "password needs a user".into())),
        }
        for (field, value) in [("ca_file", &self.ca_file), ("cert_file", &self.cert_file)] {
            if !value.is_empty() && !self.uses_tls() {
                return Err(invalid(field, "needs tls = true (or tls:// URLs)".into()));
            }
        }
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(invalid(
                "key_file",
                "give cert_file and key_file together".into(),
            ));
        }
        for (field, rules) in [("export", &self.export), ("import", &self.import)] {
            let filters = rules.allow.iter().flatten().chain(&rules.deny);
            for filter in filters {
                blipmq_protocol::validate_filter(filter.as_bytes(), usize::from(max_topic_length))
                    .map_err(|why| {
                        invalid(field, format!("{filter:?} is not a valid filter: {why}"))
                    })?;
            }
        }
        Ok(())
    }

    /// TLS asked for by `tls` or by a `tls://` URL.
    pub fn uses_tls(&self) -> bool {
        self.tls
            || self
                .urls
                .iter()
                .any(|url| parse_leaf_url(url).is_ok_and(|url| url.tls))
    }

    /// The leaf's name: `name`, else `server_name`, else the host name.
    pub fn leaf_name(&self, server_name: &str) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        if !server_name.is_empty() {
            return server_name.to_owned();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "blipmq".to_owned())
    }

    /// The link settings of a validated remote (nats-server's timers; see
    /// [`LeafLinkConfig::new`]).
    pub fn link_config(&self, server_name: &str, seed: u64) -> LeafLinkConfig {
        let urls = self
            .urls
            .iter()
            .filter_map(|url| parse_leaf_url(url).ok())
            .map(|url| url.address)
            .collect();
        let mut config = LeafLinkConfig::new(self.leaf_name(server_name), urls);
        config.credentials = match (&self.user, &self.password, &self.token) {
            (Some(user), Some(password), _) => Credentials::UserPassword {
                user: user.clone(),
                password: password.expose().to_owned(),
            },
            (_, _, Some(token)) => Credentials::Token(token.expose().to_owned()),
            _ => Credentials::None,
        };
        config.tls_required = self.uses_tls();
        let rules = |rules: &AllowDeny| {
            SubjectRules::new(Some(&SubjectRulesConfig::AllowDeny(rules.clone())))
        };
        config.export = rules(&self.export);
        config.import = rules(&self.import);
        config.seed = seed;
        config
    }
}

#[cfg(test)]
#[path = "leafnode_tests.rs"]
mod tests;
