//! Users, their credentials and their subject permissions: `[[auth.users]]`
//! compiled once (at start and on reload) into a table that sessions
//! authenticate against and check every publish and subscribe with.
//!
//! Sans-IO and lock-free: a worker's sessions share one table through an
//! `Arc`; a check reads only the connection's own user. Filters keep the
//! broker's subject rules (`*` one token, `>` the tail).

mod permissions;
mod responses;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::{is_bcrypt, Secret, UserConfig};

pub use permissions::{Permissions, ResponseLimits, SubjectRules};
pub use responses::ReplyGrants;

/// The users a broker knows, by name and by token.
#[derive(Default)]
pub struct UserTable {
    users: Vec<Arc<User>>,
    /// `tls.verify_and_map`: a connection's user is its client
    /// certificate's, and CONNECT's credentials are not asked for.
    map_certificates: bool,
}

/// One user: a name, how it proves itself, and what it may do.
pub struct User {
    name: String,
    credential: Credential,
    permissions: Permissions,
}

#[derive(PartialEq, Eq)]
enum Credential {
    /// Compared in constant time.
    Password(Secret),
    /// Checked with bcrypt (slow on purpose: cost 10 is ~50 ms of the
    /// worker's time per CONNECT).
    Bcrypt(Secret),
    Token(Secret),
    /// None: the user is only ever a client certificate's
    /// (`tls.verify_and_map`).
    Certificate,
}

/// Secrets are compared without an early exit, so that timing does not
/// tell how much of a guess was right.
fn same_secret(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

impl UserTable {
    /// Compiles validated `[[auth.users]]` entries.
    pub fn new(users: &[UserConfig]) -> UserTable {
        let users = users
            .iter()
            .map(|config| {
                let credential = match (&config.password, &config.token) {
                    (Some(password), _) if is_bcrypt(password.expose()) => {
                        Credential::Bcrypt(password.clone())
                    }
                    (Some(password), _) => Credential::Password(password.clone()),
                    (None, Some(token)) => Credential::Token(token.clone()),
                    (None, None) => Credential::Certificate,
                };
                Arc::new(User {
                    name: config.user.clone(),
                    credential,
                    permissions: Permissions::new(&config.permissions),
                })
            })
            .collect();
        UserTable {
            users,
            map_certificates: false,
        }
    }

    /// The table with users taken from client certificates (`on`), or from
    /// CONNECT's credentials.
    pub fn mapping_certificates(mut self, on: bool) -> UserTable {
        self.map_certificates = on;
        self
    }

    pub fn maps_certificates(&self) -> bool {
        self.map_certificates
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn find(&self, name: &str) -> Option<&Arc<User>> {
        self.users.iter().find(|user| user.name == name)
    }

    /// The user `name` when `password` is its password.
    pub fn by_password(&self, name: &str, password: &str) -> Option<&Arc<User>> {
        let user = self.find(name)?;
        let valid = match &user.credential {
            Credential::Password(expected) => same_secret(expected.expose(), password),
            Credential::Bcrypt(hash) => bcrypt::verify(password, hash.expose()).unwrap_or(false),
            Credential::Token(_) | Credential::Certificate => false,
        };
        valid.then_some(user)
    }

    /// The first of a client certificate's names that is a user's
    /// (`tls.verify_and_map`: the certificate is the credential).
    pub fn by_certificate<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Option<&Arc<User>> {
        names.into_iter().find_map(|name| self.find(name))
    }

    /// The user whose token `token` is. Every token is compared, so that
    /// timing does not tell which one came close.
    pub fn by_token(&self, token: &str) -> Option<&Arc<User>> {
        let mut found = None;
        for user in &self.users {
            if let Credential::Token(expected) = &user.credential {
                if same_secret(expected.expose(), token) {
                    found = Some(user);
                }
            }
        }
        found
    }
}

impl fmt::Debug for UserTable {
    /// Names only: never a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.users.iter().map(|user| &user.name))
            .finish()
    }
}

impl User {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn permissions(&self) -> &Permissions {
        &self.permissions
    }

    /// Whether `other` (the same user in a reloaded table) still accepts
    /// the credentials this one was given.
    pub fn same_credential(&self, other: &User) -> bool {
        self.credential == other.credential
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User").field("name", &self.name).finish()
    }
}
