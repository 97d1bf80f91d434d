//! TLS between the transport and the session (rustls, sans-IO): the
//! server's certificates, which every worker shares and a reload swaps
//! ([`TlsServer`]), and each connection's state ([`TlsLink`]), which the
//! worker core feeds the transport's bytes through. Every backend gets TLS
//! from this one place.

mod link;
mod server;

pub use link::{TlsFailure, TlsLink};
pub use server::{TlsServer, TlsSettings};
