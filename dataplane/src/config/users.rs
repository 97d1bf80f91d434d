//! `[[auth.users]]`: users with a password or a token, and the subjects each
//! may publish and subscribe to, as nats-server's `authorization.users`.
//!
//! Only the shape and the checks live here; `crate::auth` compiles a list
//! into the table sessions authenticate against.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AuthConfig, ConfigError};

/// A password or a token: printed as `<redacted>` by `Debug`, so that a
/// logged configuration or reload never shows it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What a secret is replaced with in `config show` and `config check`.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for checking credentials.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name a client gives as `user` in CONNECT (with `password`), and
    /// the name monitoring shows (with `token` too).
    pub user: String,
    /// Plain, or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A token that identifies this user alone (CONNECT `token`, NATS
    /// `auth_token`); instead of a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(default, skip_serializing_if = "PermissionsConfig::is_unrestricted")]
    pub permissions: PermissionsConfig,
}

/// `permissions`: absent parts allow everything.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermissionsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<SubjectRulesConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubjectRulesConfig>,
    /// May publish to the reply subject of a request it received. Without
    /// `publish`, publishing anywhere else is denied (as nats-server does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_responses: Option<AllowResponsesConfig>,
}

impl PermissionsConfig {
    fn is_unrestricted(&self) -> bool {
        *self == PermissionsConfig::default()
    }
}

/// A list of allowed filters, or a table of allowed and denied ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubjectRulesConfig {
    Allow(Vec<String>),
    AllowDeny(AllowDeny),
}

/// `{ allow = [...], deny = [...] }`: deny wins; no `allow` allows all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowDeny {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl SubjectRulesConfig {
    /// The allowed filters (`None`: all) and the denied ones.
    pub fn allow_deny(&self) -> (Option<&[String]>, &[String]) {
        match self {
            SubjectRulesConfig::Allow(allow) => (Some(allow), &[]),
            SubjectRulesConfig::AllowDeny(rules) => (rules.allow.as_deref(), &rules.deny),
        }
    }
}

/// `allow_responses = true`, or `{ max = N, expires = "1s" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AllowResponsesConfig {
    Enabled(bool),
    Limits(ResponseLimitsConfig),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseLimitsConfig {
    /// Replies per request; absent or 0 = 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long after the request a reply may go; absent or 0 = 2 minutes.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<Duration>,
}

/// nats-server's DEFAULT_ALLOW_RESPONSE_MAX_MSGS.
pub const DEFAULT_RESPONSE_MAX: u32 = 1;
/// nats-server's DEFAULT_ALLOW_RESPONSE_EXPIRATION.
pub const DEFAULT_RESPONSE_EXPIRES: Duration = Duration::from_secs(120);

impl AllowResponsesConfig {
    /// How many replies per request and for how long; `None` when off.
    pub fn limits(&self) -> Option<(u32, Duration)> {
        match self {
            AllowResponsesConfig::Enabled(false) => None,
            AllowResponsesConfig::Enabled(true) => {
                Some((DEFAULT_RESPONSE_MAX, DEFAULT_RESPONSE_EXPIRES))
            }
            AllowResponsesConfig::Limits(limits) => Some((
                limits
                    .max
                    .filter(|&max| max > 0)
                    .unwrap_or(DEFAULT_RESPONSE_MAX),
                limits
                    .expires
                    .filter(|expires| !expires.is_zero())
                    .unwrap_or(DEFAULT_RESPONSE_EXPIRES),
            )),
        }
    }
}

/// The bcrypt variants nats-server accepts.
const BCRYPT_PREFIXES: [&str; 3] = ["$2a$", "$2b$", "$2y$"];

/// Whether a configured password is a bcrypt hash rather than plain text.
pub fn is_bcrypt(password: &str) -> bool {
    BCRYPT_PREFIXES
        .iter()
        .any(|prefix| password.starts_with(prefix))
}

impl AuthConfig {
    /// Whether the file holds a secret (a token or a user's credential).
    pub fn has_secrets(&self) -> bool {
        self.token.is_some()
            || self
                .users
                .iter()
                .any(|user| user.password.is_some() || user.token.is_some())
    }

    /// Checks `[[auth.users]]`; messages name users, never their secrets.
    /// With `certificate_users` (`tls.verify_and_map`), a user may have no
    /// password or token: only a client certificate then names it.
    pub(super) fn validate_users(
        &self,
        max_topic_length: u16,
        certificate_users: bool,
    ) -> Result<(), ConfigError> {
        if self.users.is_empty() {
            return Ok(());
        }
        if self.token.is_some() {
            return Err(ConfigError::invalid(
                "auth.token",
                "auth.token and [[auth.users]] cannot both be set (as in nats-server): \
                 give the token to a user instead, as `token = ...` in its [[auth.users]] entry",
            ));
        }
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        for (index, user) in self.users.iter().enumerate() {
            let key = format!("auth.users[{index}]");
            let invalid = |field: &str, why: String| {
                ConfigError::invalid(&format!("{key}.{field}"), format!("{key}.{field}: {why}"))
            };
            if user.user.is_empty() || user.user.chars().any(char::is_control) {
                return Err(invalid(
                    "user",
                    "must be a non-empty name without control characters".into(),
                ));
            }
            if !names.insert(user.user.as_str()) {
                return Err(invalid(
                    "user",
                    format!("user {:?} is listed twice", user.user),
                ));
            }
            let name = &user.user;
            match (&user.password, &user.token) {
                (None, None) if certificate_users => {}
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        "password",
                        format!(
                            "user {name:?} needs exactly one of `password` and `token` \
                             (or neither, with tls.verify_and_map)"
                        ),
                    ))
                }
                (Some(password), None) => {
                    if password.expose().is_empty() {
                        return Err(invalid(
                            "password",
                            format!("user {name:?} has an empty password"),
                        ));
                    }
                    if is_bcrypt(password.expose())
                        && password.expose().parse::<bcrypt::HashParts>().is_err()
                    {
                        return Err(invalid(
                            "password",
                            format!("user {name:?}: the password looks like a bcrypt hash ($2a$, $2b$ or $2y$) but is not a valid one"),
                        ));
                    }
                }
                (None, Some(token)) => {
                    if token.expose().is_empty() {
                        return Err(invalid(
                            "token",
                            format!("user {name:?} has an empty token"),
                        ));
                    }
                    if !tokens.insert(token.expose()) {
                        return Err(invalid(
                            "token",
                            format!("user {name:?} has the same token as another user"),
                        ));
                    }
                }
            }
            let permissions = &user.permissions;
            for (field, rules) in [
                ("publish", &permissions.publish),
                ("subscribe", &permissions.subscribe),
            ] {
                let Some(rules) = rules else { continue };
                let (allow, deny) = rules.allow_deny();
                for filter in allow.unwrap_or_default().iter().chain(deny) {
                    if let Err(error) =
                        blipmq_protocol::validate_filter(filter.as_bytes(), max_topic_length.into())
                    {
                        return Err(invalid(
                            &format!("permissions.{field}"),
                            format!("user {name:?}: {filter:?} is not a subject filter: {error}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Replaces every secret with [`REDACTED`].
    pub(super) fn redact(&mut self) {
        if self.token.is_some() {
            self.token = Some(REDACTED.to_string());
        }
        for user in &mut self.users {
            for secret in [&mut user.password, &mut user.token].into_iter().flatten() {
                *secret = Secret::new(REDACTED);
            }
        }
    }
}

/// What a parse error says instead of its own message when it is about a
/// line that may hold a secret: `toml` quotes bad values.
pub(super) const SECRET_LINE_ERROR: &str =
    "invalid value on a line that holds a password or a token (the parser's message is not shown, as it may quote the secret)";

/// Whether a parse error at `key`, on `line`, may be about a password or a
/// token, so that its message must not be shown.
pub(super) fn may_hold_secret(key: &str, line: Option<&str>) -> bool {
    (key.starts_with("auth") || key.starts_with("leafnode"))
        && (key.ends_with("token")
            || key.ends_with("password")
            || line.is_some_and(|line| line.contains("token") || line.contains("password")))
}

/// Refuses a configuration file that holds secrets and that users other
/// than its owner may read (mode & 0o077), as OpenSSH refuses an
/// unprotected private key.
pub fn check_file_mode(path: &std::path::Path, config: &super::Config) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    if !config.auth.has_secrets() && !config.leafnode.has_secrets() {
        return Ok(());
    }
    let mode = std::fs::metadata(path)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "auth",
        format!(
            "{}: holds secrets (auth.token, [[auth.users]] or [[leafnode.remotes]] credentials) but \
             its mode is {:04o}, \
             so users other than its owner may read or change it; run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    const USERS: &str = r#"
[[auth.users]]
user = "alice"
password = "plain-pw"
permissions.publish = ["orders.>", "status"]
permissions.subscribe = { allow = ["updates.*"], deny = ["updates.secret"] }

[[auth.users]]
user = "svc"
token = "svc-token"
permissions = { subscribe = { deny = ["admin.>"] }, allow_responses = { max = 2, expires = "5s" } }

[[auth.users]]
user = "replier"
password = "$2b$04$abcdefghijklmnopqrstuu6xXqSFIHbnd2MxM4xSCxVR1kkEsqHF2"
permissions.allow_responses = true
"#;

    fn err(text: &str) -> ConfigError {
        Config::from_toml_str(text).expect_err("the config should be rejected")
    }

    #[test]
    fn users_parse_in_every_form_nats_server_has() {
        let config = Config::from_toml_str(USERS).unwrap();
        let users = &config.auth.users;
        assert_eq!(users.len(), 3);
        assert_eq!(users[0].password.as_ref().unwrap().expose(), "plain-pw");
        assert_eq!(
            users[0].permissions.publish,
            Some(SubjectRulesConfig::Allow(vec![
                "orders.>".into(),
                "status".into()
            ]))
        );
        assert_eq!(
            users[0]
                .permissions
                .subscribe
                .as_ref()
                .unwrap()
                .allow_deny(),
            (
                Some(&["updates.*".to_string()][..]),
                &["updates.secret".to_string()][..]
            )
        );
        assert_eq!(users[1].token.as_ref().unwrap().expose(), "svc-token");
        assert_eq!(
            users[1]
                .permissions
                .subscribe
                .as_ref()
                .unwrap()
                .allow_deny(),
            (None, &["admin.>".to_string()][..])
        );
        let limits = |user: usize| {
            users[user]
                .permissions
                .allow_responses
                .as_ref()
                .and_then(AllowResponsesConfig::limits)
        };
        assert_eq!(limits(1), Some((2, Duration::from_secs(5))));
        assert_eq!(limits(2), Some((1, Duration::from_secs(120))));
        assert_eq!(limits(0), None);
        assert!(is_bcrypt(users[2].password.as_ref().unwrap().expose()));
        // And back: the file config show would print parses to the same.
        let text = config.to_toml_string();
        assert_eq!(Config::from_toml_str(&text).unwrap(), config, "{text}");
    }

    #[test]
    fn invalid_users_are_refused_by_name_never_by_secret() {
        let user = |body: &str| format!("[[auth.users]]\nuser = \"u\"\n{body}\n");
        for (text, key, wanted) in [
            (
                format!("[auth]\ntoken = \"t0p\"\n{}", user("password = \"p\"")),
                "auth.token",
                "cannot both be set",
            ),
            (user("password = \"p\"\ntoken = \"t0p\""), "auth.users[0].password", "exactly one"),
            (user(""), "auth.users[0].password", "exactly one"),
            (user("password = \"\""), "auth.users[0].password", "empty password"),
            (user("token = \"\""), "auth.users[0].token", "empty token"),
            (
                user("password = \"$2a$10$not-a-hash-s3cr3t\""),
                "auth.users[0].password",
                "not a valid one",
            ),
            (
                format!("{}{}", user("password = \"p\""), user("password = \"q\"")),
                "auth.users[1].user",
                "listed twice",
            ),
            (
                "[[auth.users]]\nuser = \"a\"\ntoken = \"t0p\"\n[[auth.users]]\nuser = \"b\"\ntoken = \"t0p\"\n"
                    .to_string(),
                "auth.users[1].token",
                "same token",
            ),
            (
                user("password = \"p\"\npermissions.publish = [\"a.>.b\"]"),
                "auth.users[0].permissions.publish",
                "not a subject filter",
            ),
            (
                user("password = \"p\"\npermissions.subscribe = { deny = [\"a..b\"] }"),
                "auth.users[0].permissions.subscribe",
                "not a subject filter",
            ),
            (user("password = \"p\"\n[auth.users.permissions]\nstuff = 1"), "", "stuff"),
        ] {
            let error = err(&text);
            let message = error.to_string();
            if !key.is_empty() {
                assert_eq!(error.key(), Some(key), "{message}");
            }
            assert!(message.contains(wanted), "{wanted:?} not in {message}");
            for secret in ["t0p", "s3cr3t"] {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }

    #[test]
    fn verify_and_map_needs_a_ca_file_and_users_who_then_need_no_secret() {
        let tls = "[tls]\ncert_file = \"s.pem\"\nkey_file = \"k.pem\"\n";
        let user = "[[auth.users]]\nuser = \"CN=alice,O=Example\"\n";
        for (text, key, wanted) in [
            (
                format!("{tls}verify_and_map = true\n{user}"),
                "tls.verify_and_map",
                "needs tls.ca_file",
            ),
            (
                format!("{tls}ca_file = \"ca.pem\"\nverify_and_map = true\n"),
                "tls.verify_and_map",
                "needs [[auth.users]]",
            ),
            (
                format!("{tls}ca_file = \"ca.pem\"\n{user}"),
                "auth.users[0].password",
                "or neither, with tls.verify_and_map",
            ),
        ] {
            let error = err(&text);
            let message = error.to_string();
            assert_eq!(error.key(), Some(key), "{message}");
            assert!(message.contains(wanted), "{wanted:?} not in {message}");
        }
        let text = format!("{tls}ca_file = \"ca.pem\"\nverify_and_map = true\n{user}");
        let config = Config::from_toml_str(&text).unwrap();
        assert!(config.tls.verify_and_map);
        // Nothing secret in it: the file may stay readable.
        assert!(!config.auth.has_secrets());
        let table = crate::auth::UserTable::new(&config.auth.users);
        assert!(table.find("CN=alice,O=Example").is_some());
        assert!(table.by_password("CN=alice,O=Example", "").is_none());
        assert!(table.by_token("").is_none());
    }

    #[test]
    fn a_parse_error_on_a_secret_does_not_quote_it() {
        for text in [
            "[[auth.users]]\nuser = \"u\"\npassword = 918273645\n",
            "[[auth.users]]\nuser = \"u\"\ntoken = 918273645\n",
            "[auth]\ntoken = 918273645\n",
            "[auth]\nusers = [{ user = \"u\", password = 918273645 }]\n",
        ] {
            let message = err(text).to_string();
            assert!(!message.contains("918273645"), "{message}");
            assert!(message.contains("line"), "{message}");
        }
        // Elsewhere the parser's message stays.
        let message = err("[limits]\nmax_payload = \"big\"\n").to_string();
        assert!(message.contains("big"), "{message}");
    }

    #[test]
    fn redaction_hides_every_password_and_token() {
        let config = Config::from_toml_str(USERS).unwrap();
        let shown = config.redacted().to_toml_string();
        let debug = format!("{config:?}");
        for secret in ["plain-pw", "svc-token", "$2b$04$"] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!debug.contains(secret), "{debug}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 3, "{shown}");
        assert!(shown.contains("user = \"alice\""), "{shown}");
        assert!(!shown.contains("without authentication"), "{shown}");
    }

    #[test]
    fn the_shipped_users_example_parses() {
        let shipped = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../blipmq.toml"));
        let mut in_example = false;
        let uncommented: Vec<&str> = shipped
            .lines()
            .map(|line| {
                in_example |= line == "# users = [";
                let body = line.strip_prefix("# ").filter(|_| in_example);
                in_example &= line != "# ]";
                body.unwrap_or(line)
            })
            .collect();
        let config = Config::from_toml_str(&uncommented.join("\n")).unwrap();
        let users = &config.auth.users;
        assert_eq!(users.len(), 2);
        let table = crate::auth::UserTable::new(users);
        assert!(table.by_password("alice", "change-me").is_some());
        assert!(table.by_token("change-me-too").is_some());
    }

    const LEAF_WITH_PASSWORD: &str =
        "[[leafnode.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7422\"]\n\
                                      user = \"edge\"\npassword = \"p\"\n";

    #[test]
    fn a_file_with_secrets_must_be_private_to_its_owner() {
        let dir = std::env::temp_dir().join(format!("blipmq-users-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            ("users.toml", USERS, 0o640, false),
            ("users-private.toml", USERS, 0o600, true),
            ("token.toml", "[auth]\ntoken = \"t\"\n", 0o604, false),
            ("token-private.toml", "[auth]\ntoken = \"t\"\n", 0o400, true),
            ("open.toml", "[limits]\nmax_payload = 100\n", 0o644, true),
            ("leaf.toml", LEAF_WITH_PASSWORD, 0o644, false),
            ("leaf-private.toml", LEAF_WITH_PASSWORD, 0o600, true),
            (
                "leaf-open.toml",
                "[[leafnode.remotes]]\nurls = [\"nats-leaf://127.0.0.1:7422\"]\n",
                0o644,
                true,
            ),
        ];
        for (name, text, mode, accepted) in cases {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match Config::load(&path) {
                Ok(_) => assert!(accepted, "{name} {mode:o} was accepted"),
                Err(error) => {
                    let message = error.to_string();
                    assert!(!accepted, "{name}: {message}");
                    assert!(message.contains(&format!("{mode:04o}")), "{message}");
                    assert!(message.contains("chmod 600"), "{message}");
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
