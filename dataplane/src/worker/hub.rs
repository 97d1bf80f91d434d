//! The leaf-node hub as the worker that owns the link sees it: the
//! [`LeafLink`], the connection it speaks on, and the hub's interest.
//!
//! The hub's `LS+`/`LS-` become subscriptions of [`HUB_SUBSCRIBER`] in the
//! worker's index, replicated to the other workers like any client's, so
//! that every worker's publishes reach the owning worker through the rings
//! only when the hub wants them. A delivery collects the hub subscriptions
//! a message matched ([`Delivery`](super::delivery::Delivery)) and the hub
//! gets one LMSG for all of them, naming the queue groups whose member the
//! hub was picked to be. The subscriptions outlive a lost connection (the
//! messages for them are counted as dropped) until the next one begins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::connections::Connections;
use super::core::ConnId;
use super::records::Message;
use super::subscriptions::SubTable;
use crate::leaf::{interest_key, LeafLink, Origin, Outgoing};
use crate::router::SubKey;
use crate::stats::{Counter, WorkerStats};
use rustls::ClientConfig;

/// The subscriber that the hub's subscriptions belong to: no connection
/// (the hub's connections come and go; its interest is replaced only when a
/// new one begins).
pub(super) const HUB_SUBSCRIBER: ConnId = ConnId::MAX;

pub(super) struct HubPort {
    pub(super) link: LeafLink,
    /// The TLS client settings for the hub, when the remote has TLS.
    pub(super) tls: Option<Arc<ClientConfig>>,
    /// The connection to the hub, from the dial until it is lost or closed.
    cid: Option<ConnId>,
    /// A dial the driver has not made yet.
    dial: Option<(ConnId, SocketAddr)>,
    /// The hub's interest: a [`HUB_SUBSCRIBER`] subscription per
    /// (filter, queue group), under the protocol's key.
    subs: HashMap<Box<[u8]>, SubKey>,
    next_sid: u32,
    /// The hub's subscriptions that the message being delivered matched.
    matched: Vec<SubKey>,
}

impl HubPort {
    pub(super) fn new(link: LeafLink, tls: Option<Arc<ClientConfig>>) -> HubPort {
        HubPort {
            link,
            tls,
            cid: None,
            dial: None,
            subs: HashMap::new(),
            next_sid: 0,
            matched: Vec::new(),
        }
    }

    /// Whether `cid` is the current connection to the hub.
    pub(super) fn is_link(&self, cid: ConnId) -> bool {
        self.cid == Some(cid)
    }

    pub(super) fn cid(&self) -> Option<ConnId> {
        self.cid
    }

    pub(super) fn next_timer(&self) -> Instant {
        self.link.next_timer()
    }

    /// The link dials `addr` on connection `cid` (made by the core).
    pub(super) fn dialling(&mut self, cid: ConnId, addr: SocketAddr) {
        self.cid = Some(cid);
        self.dial = Some((cid, addr));
    }

    pub(super) fn take_dial(&mut self) -> Option<(ConnId, SocketAddr)> {
        self.dial.take()
    }

    /// The connection is gone (lost, closed, or its dial failed).
    pub(super) fn lost(&mut self, now: Instant) {
        self.cid = None;
        self.dial = None;
        self.link.disconnected(now);
    }

    /// The next sid for a hub subscription: sids are the connection's own.
    pub(super) fn next_sid(&mut self) -> u32 {
        self.next_sid = self.next_sid.wrapping_add(1);
        self.next_sid
    }

    pub(super) fn remember(&mut self, filter: &[u8], queue: Option<&[u8]>, key: SubKey) {
        self.subs
            .insert(interest_key(filter, queue).into_boxed_slice(), key);
    }

    pub(super) fn forget(&mut self, filter: &[u8], queue: Option<&[u8]>) -> Option<SubKey> {
        self.subs.remove(interest_key(filter, queue).as_slice())
    }

    /// Every hub subscription, forgotten; the caller removes them.
    pub(super) fn forget_all(&mut self) -> Vec<SubKey> {
        self.subs.drain().map(|(_, key)| key).collect()
    }

    /// A local subscription (on any worker) to tell the hub about.
    pub(super) fn local_interest(&mut self, add: bool, filter: &[u8], queue: Option<&[u8]>) {
        if add {
            self.link.add_interest(filter, queue);
        } else {
            self.link.remove_interest(filter, queue);
        }
    }

    pub(super) fn start_message(&mut self) {
        self.matched.clear();
    }

    pub(super) fn matched(&mut self, key: SubKey) {
        self.matched.push(key);
    }

    /// Offers the message being delivered to the hub when any of its
    /// subscriptions matched: plainly, and for the queue groups whose
    /// member the hub was picked to be. The link counts it as dropped
    /// while it is down.
    pub(super) fn offer(
        &mut self,
        message: &Message<'_>,
        from_hub: bool,
        subs: &SubTable,
        conns: &Connections,
    ) {
        if self.matched.is_empty() {
            return;
        }
        let outgoing = Outgoing {
            subject: message.subject,
            reply: message.reply,
            headers: (!message.headers.is_empty()).then_some(message.headers),
            payload: message.payload,
        };
        let queues = self.matched.iter().filter_map(|&key| subs.queue_of(key));
        let origin = if from_hub { Origin::Hub } else { Origin::Local };
        let unsent = self.cid.map_or(0, |cid| conns[cid].queued_len());
        self.link.forward(&outgoing, queues, origin, unsent);
    }

    /// Moves what the link wrote into the hub connection's queue.
    pub(super) fn drain_output(&mut self, conns: &mut Connections) {
        let output = self.link.output();
        if let (Some(cid), false) = (self.cid, output.is_empty()) {
            conns[cid].output.frames().extend_from_slice(output);
            output.clear();
            conns.mark_dirty(cid);
        }
    }

    /// Writes the link's state and counters into the worker's stats block.
    pub(super) fn report(&self, stats: &WorkerStats) {
        let link = &self.link;
        let counts = link.stats();
        let rtt = counts.rtt.map_or(0, |rtt| rtt.as_micros() as u64);
        for (counter, value) in [
            (Counter::LeafConnected, u64::from(link.is_up())),
            (Counter::LeafUrlIndex, link.url_index() as u64),
            (Counter::LeafRttMicros, rtt),
            (Counter::LeafMsgsIn, counts.msgs_in),
            (Counter::LeafBytesIn, counts.bytes_in),
            (Counter::LeafMsgsOut, counts.msgs_out),
            (Counter::LeafBytesOut, counts.bytes_out),
            (Counter::DroppedLeaf, counts.dropped),
            (
                Counter::LeafFiltered,
                counts.export_denied + counts.import_denied,
            ),
            (Counter::LeafConnects, counts.connects),
            (Counter::LeafDisconnects, counts.disconnects),
            (Counter::LeafLocalInterest, link.local_interest_len() as u64),
            (Counter::LeafHubInterest, link.hub_interest_len() as u64),
        ] {
            stats.set(counter, value);
        }
    }
}
