//! The HTTP face of the stats segment: Prometheus `/metrics`, `/healthz`
//! and `/varz` (JSON).
//!
//! Used twice: `blipmqd` runs an [`HttpServer`] in process when
//! `[control] metrics_listen` is set (reading the segment it created), and
//! `blipmqctl serve` runs one in its own process on the broker's
//! `stats_file`. Either way the server has its own threads and reads the
//! segment with relaxed loads. In the broker's own process it also serves
//! nats-server's `/connz`, `/subsz` and `/leafz` (and nats-server's fields of
//! `/varz`), which ask the workers through the control plane, as
//! `blipmqctl connections` does: a request a worker answers between turns.
//!
//! hyper serves HTTP (`server.rs`, which sets the bounds) and
//! prometheus-client encodes `/metrics` (`metrics.rs`). The renderers
//! ([`render_prometheus`], [`render_varz`], [`check_health`]) and the
//! router ([`respond`]) are sans-IO, so they are tested without sockets.

mod health;
mod metrics;
mod natsz;
mod router;
mod server;
mod varz;

pub use health::{check_health, Health, StaleWorker, DEFAULT_STALE_AFTER};
pub use metrics::{render_prometheus, render_prometheus_with_xstats, PROMETHEUS_CONTENT_TYPE};
pub use natsz::{render_leafz, BrokerView, ConnzQuery, Identity, LeafRemote, Process};
pub use router::{respond, HttpConfig, Response, StatsSource, ALLOWED_METHODS};
pub use server::{HttpServer, MAX_CONNECTIONS, MAX_REQUEST_BYTES, REQUEST_TIMEOUT};
pub use varz::{latency_from_json, latency_json, render_varz};
