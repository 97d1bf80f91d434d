//! BlipMQ dataplane: worker cores that own their connections from accept to
//! close, the sans-IO protocol sessions, the subscription router and the
//! shared-memory rings that fan messages out between workers.
//!
//! The layout follows `architecture.md`: `session` and `router` are sans-IO
//! (bytes and time in, actions out); `backend` holds the only I/O; `worker`
//! runs the poll loop that ties them together; `rings` carries records
//! between workers.
//!
//! `unsafe` code is denied here but for the modules that share memory with
//! the kernel or with other processes and threads through raw pointers:
//! the AF_PACKET rings (`backend::afpacket::ring`), the worker rings
//! (`rings`) and the stats segment (`stats`); and one call that sets a
//! malloc parameter (`backend::userspace::heap`). Each of them allows it
//! explicitly, and every `unsafe` block says why it is sound (`// SAFETY:`,
//! enforced by clippy's `undocumented_unsafe_blocks`).

#![deny(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod leaf;
pub mod logging;
pub mod rings;
pub mod router;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;
pub mod worker;
