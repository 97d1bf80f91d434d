//! TLS between the transport and the session (rustls, sans-IO): the
//! server's certificates, which every worker shares and a reload swaps
//! ([`TlsServer`]), each connection's state ([`TlsLink`]), which the
//! worker core feeds the transport's bytes through, and the user names a
//! client certificate offers ([`certificate_names`]); and the broker's
//! client side towards a leaf-node hub ([`client_config`],
//! [`TlsLink::client`]). Every backend gets TLS from this one place.

mod client;
mod identity;
mod link;
mod server;

pub use client::client_config;
pub use identity::certificate_names;
pub use link::{TlsFailure, TlsLink};
pub use server::{TlsServer, TlsSettings};
