//! The leaf-node protocol, leaf side, sans-IO: what a BlipMQ broker speaks
//! when it joins a NATS cluster as a leaf node of a stock nats-server (the
//! hub, which listens with a `leafnodes { listen }` block).
//!
//! [`decode_hub_op`] reads what a hub sends, in place and without
//! allocating; [`encode`] appends what a leaf sends. Control lines, sizes
//! and payload terminators are read by the same helpers as the client
//! protocol ([`super::decode_client_op`]), so both agree with nats-server's
//! `server/parser.go` in the same way.
//!
//! # The protocol, as nats-server v2.9.10 speaks it
//!
//! Read from its source (server/leafnode.go, parser.go, client.go at tag
//! v2.9.10), and checked against Debian's v2.9.10 by the dataplane's
//! `tests/leaf_protocol.rs`: the handshake, `LS+`/`LS-` both ways with
//! queue weights, `LMSG`/`HMSG` with replies and queue names, refused and
//! accepted credentials, and loop detection.
//!
//! Handshake, the leaf soliciting (leafnode.go):
//! 1. The hub sends `INFO {...}` at once. A leafnode port's INFO carries a
//!    `client_id` and a non-empty `leafnode_urls` (at least the hub's own
//!    leafnode address; the field is `omitempty`, so absent means a client
//!    or route port, and nats-server leaves then close with "wrong port").
//!    v2.9.10 also sends `info_on_connect: true`, a `nonce` (used only for
//!    nkeys/JWT), `headers: true`, `max_payload`, `auth_required: true`
//!    **even when the leafnode port has no credentials**, `tls_required`
//!    and, in a cluster, `cluster`. Sample (the test `leaf_protocol` prints
//!    it): `server_name`, `version: "2.9.10"`, `client_id: 4`,
//!    `leafnode_urls: ["127.0.0.1:43989"]`, no `connect_urls`.
//! 2. The leaf sends `CONNECT {...}` ([`LeafConnect`]): no `lang` (a `lang`
//!    tells the hub a client dialled the wrong port; it answers -ERR and
//!    closes), `name` (in the hub's log; `/leafz` shows it after 2.9),
//!    `headers`, `tls_required`, and
//!    credentials: `user`/`pass` for the hub's `leafnodes { authorization }`;
//!    a hub without leafnode credentials falls back to its client
//!    authorization, which reads `auth_token` too (the field nats-server's own
//!    leaf never sends). A `cluster` equal to the hub's is refused.
//! 3. Bad credentials: `-ERR 'Authorization Violation'`, then the hub closes.
//!    Good ones: the hub answers `INFO {... "connect_info": true,
//!    "remote_account": "$G"}`, then one `LS+` per interest it has: every
//!    subscription of its account (routes and other leaves included), its
//!    loop-detection subject `$LDS.<nuid>` and, on v2.9.10 with the system
//!    account on (the default), `$SYS.REQ.ACCOUNT.PING.CONNZ`,
//!    `$SYS.REQ.ACCOUNT.PING.STATZ` and `$SYS.REQ.SERVER.PING.CONNZ`, in map
//!    order. It then PINGs (the first after about a second, then every
//!    `ping_interval`). It answers a PING sent right after CONNECT after
//!    all of that, so a PONG means CONNECT was accepted.
//! 4. The leaf sends its own `LS+` lines, its own `$LDS.<id>` among them.
//!    Seeing its own `$LDS.` subject come back in an `LS+` from the hub means
//!    the leaf is connected to the cluster twice (a loop): nats-server closes
//!    and waits 30 s before it reconnects; the hub does the same when a leaf
//!    sends the hub's own `$LDS.` subject, with
//!    `-ERR 'Loop detected for leafnode account=...'`.
//! 5. A second leaf connection with the same CONNECT `name` on the same
//!    account makes the hub close the **older** one ("Duplicate Remote
//!    LeafNode Connection"): one name per broker and hub cluster.
//! 6. v2.9.10's `/leafz` shows account, address, RTT, message and byte
//!    counts and (with `?subs=1`) the leaf's subscriptions, but not its
//!    `name` (later versions add it).
//!
//! Interest (both directions): `LS+ <subject>` or `LS+ <subject> <queue>
//! <weight>`; `LS- <subject>` or `LS- <subject> <queue>`. For a plain
//! subject only the first and last subscription are sent; for a queue group
//! every change of the member count is sent again as `LS+` with the new
//! weight (leafnode.go `updateSmap`), and the receiver replaces the weight.
//! `LS-` must repeat the `LS+` key exactly (subject, one space, queue): the
//! hub looks it up as a string.
//!
//! Messages (both directions): `LMSG <subject> [reply] <size>` or, when
//! queue groups are named, `LMSG <subject> + <reply> <queue>... <size>` or
//! `LMSG <subject> | <queue>... <size>`. Messages with headers are **not**
//! `HLMSG`: the hub writes `HMSG` (it swaps the `L` of `LMSG` for an `H`),
//! with the same arguments and `<header size> <total size>` at the end.
//! Queue names on a message mean "deliver to one member of each of these
//! groups"; plain subscribers get every message anyway. A message the leaf
//! sends **without** queue names reaches no queue subscriber on the hub
//! (client.go `processMsgResults` skips queue groups for a leaf's message
//! with no queue filter), so a leaf names each group it wants the hub to
//! serve. The hub never echoes a leaf's own message back to it.
//!
//! Where this decoder differs from nats-server:
//! - `LS+` weights and message sizes must be decimals of at most 9 digits;
//!   nats-server takes a bad weight as -1 without a word.
//! - `-ERR` text is returned without its single quotes.
//! - It is stateless, so, as in [`super::decode_client_op`], long runs of
//!   blanks are bounded by `max_control_line`.

mod decode;
pub mod encode;
mod json;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use decode::{decode_hub_op, HubOp, LeafDecodeError, LeafMsg, QueueWeight, Queues};
pub use json::{HubInfo, LeafConnect};

/// The prefix of the loop-detection subjects leaves and hubs subscribe to.
pub const LOOP_DETECTION_PREFIX: &[u8] = b"$LDS.";

/// nats-server's default leafnode port.
pub const DEFAULT_LEAFNODE_PORT: u16 = 7422;
