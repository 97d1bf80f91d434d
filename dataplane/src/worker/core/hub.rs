//! The worker's paths through the leaf-node link (see `worker::hub`): the
//! dial, the hub's bytes in, its interest as subscriptions, its messages
//! published locally, and the end of a connection.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::time::Instant;

use super::{ConnId, Groups, Publisher, WorkerCore};
use crate::leaf::{Action, Event, InterestChange, LeafLink, Read};
use crate::session::Session;
use crate::tls::TlsLink;
use crate::worker::connections::{CloseReason, Wait};
use crate::worker::dialect::Dialect;
use crate::worker::hub::{HubPort, HUB_SUBSCRIBER};
use crate::worker::records::Message;

impl WorkerCore {
    /// Makes this worker the owner of the link to a leaf-node hub, with
    /// the TLS client settings for it when the remote has TLS; before the
    /// loop runs, while no subscription exists yet.
    pub fn attach_leaf_link(&mut self, link: LeafLink, tls: Option<Arc<ClientConfig>>) {
        self.hub = Some(Box::new(HubPort::new(link, tls)));
    }

    /// The link, when this worker owns it.
    pub fn leaf_link(&self) -> Option<&LeafLink> {
        self.hub.as_deref().map(|hub| &hub.link)
    }

    /// A connection to open for the link: the driver opens it
    /// (`Transport::connect`) and reports with [`dialled`](Self::dialled).
    pub fn take_dial(&mut self) -> Option<(ConnId, SocketAddr)> {
        self.hub.as_deref_mut()?.take_dial()
    }

    /// How the dial of [`take_dial`](Self::take_dial) went.
    pub fn dialled(&mut self, cid: ConnId, result: io::Result<()>, now: Instant) {
        self.now = now;
        let Some(hub) = self.hub.as_deref_mut() else {
            return;
        };
        match result {
            Ok(()) => {
                hub.link.connected(now);
                // The last hub's interest goes before the new one's comes.
                self.poll_hub(now);
            }
            Err(error) => {
                let url = hub.link.current_url();
                tracing::warn!(url, %error, "cannot dial the leaf-node hub");
                hub.lost(now);
                self.conns.remove(cid);
            }
        }
    }

    /// Runs the link's timers and what it asks for.
    pub(super) fn poll_hub(&mut self, now: Instant) {
        while let Some(action) = self
            .hub
            .as_deref_mut()
            .filter(|_| !self.draining)
            .and_then(|hub| hub.link.poll(now))
        {
            let hub = self.hub.as_deref_mut().expect("polled above");
            let url = hub.link.current_url();
            match action {
                Action::Connect { url, .. } => self.dial_hub(&url, now),
                Action::Close(reason) => {
                    tracing::warn!(url, ?reason, "leaf-node link closed");
                    if let Some(cid) = hub.cid() {
                        // Flushed and closed like any connection, no longer
                        // the link's.
                        hub.lost(now);
                        self.start_close(cid, CloseReason::Error);
                    }
                }
                Action::StartTls => self.start_hub_tls(now),
                Action::Up => tracing::info!(url, "joined the leaf-node hub"),
                Action::HubInterestCleared => self.clear_hub_interest(),
            }
        }
        self.flush_hub();
    }

    /// TLS on the hub connection, as its client, for the host of the URL
    /// dialled; without TLS settings the link cannot go on.
    fn start_hub_tls(&mut self, now: Instant) {
        let Some(hub) = self.hub.as_deref_mut() else {
            return;
        };
        let Some(cid) = hub.cid() else {
            return;
        };
        let url = hub.link.current_url();
        let host = url.rsplit_once(':').map_or(url, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let link = match (&hub.tls, ServerName::try_from(host.to_owned())) {
            (Some(config), Ok(name)) => {
                TlsLink::client(config.clone(), name).map_err(|failure| format!("{failure:?}"))
            }
            (None, _) => Err("the hub requires TLS: set tls = true and ca_file".to_owned()),
            (Some(_), Err(error)) => Err(format!("{host:?} is no TLS server name: {error}")),
        };
        match link {
            Ok(link) => {
                self.conns[cid].tls = Some(Box::new(link));
                self.conns.mark_dirty(cid);
            }
            Err(why) => {
                tracing::warn!(url, why, "no TLS to the leaf-node hub");
                hub.lost(now);
                self.start_close(cid, CloseReason::Error);
            }
        }
    }

    /// A connection for the link's dial, made now; the driver opens it.
    fn dial_hub(&mut self, url: &str, now: Instant) {
        let addr = match url.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(addr)) => addr,
            Ok(None) | Err(_) => {
                tracing::warn!(url, "cannot resolve the leaf-node hub's address");
                if let Some(hub) = self.hub.as_deref_mut() {
                    hub.lost(now);
                }
                return;
            }
        };
        let session = Session::new(self.config.session.clone(), now);
        let cid = self
            .conns
            .insert(session, Dialect::Nats, &self.config.limits, now);
        let conn = &mut self.conns[cid];
        conn.is_hub_link = true;
        conn.handshake_deadline = None;
        conn.info.peer = Some(addr);
        if let Some(hub) = self.hub.as_deref_mut() {
            hub.dialling(cid, addr);
        }
    }

    /// The hub connection's bytes: the link decodes them, one op at a
    /// time; returns how many bytes it consumed (a message waits, with the
    /// rest, when a ring or a subscriber is full).
    pub(super) fn process_hub_input(&mut self, cid: ConnId, bytes: &[u8]) -> usize {
        let mut consumed = 0;
        while let Some(hub) = self.hub.as_deref_mut().filter(|hub| hub.is_link(cid)) {
            let (len, event) = match hub.link.read(&bytes[consumed..], self.now) {
                Read::Partial => break,
                Read::Closed => {
                    consumed = bytes.len();
                    break;
                }
                Read::Op { consumed, event } => (consumed, event),
            };
            match event {
                None => {}
                Some(Event::Deliver(msg)) => {
                    let message = Message {
                        subject: msg.subject,
                        reply: msg.reply,
                        headers: msg.headers.unwrap_or_default(),
                        payload: msg.payload,
                    };
                    let publisher = Publisher {
                        cid,
                        own: HUB_SUBSCRIBER,
                        echo: false,
                        no_responders: false,
                        groups: Groups::Named(msg.queues),
                    };
                    if let Err(wait) = self.route(publisher, &message) {
                        self.conns.wait(cid, wait);
                        break;
                    }
                }
                Some(Event::HubInterest {
                    subject,
                    queue,
                    change,
                }) => self.on_hub_interest(subject, queue.map(|q| q.name), change),
            }
            consumed += len;
        }
        if !self.conns.contains(cid) || self.conns[cid].wait == Wait::None {
            self.poll_hub(self.now);
        }
        consumed
    }

    /// The hub's `LS+`/`LS-` as [`HUB_SUBSCRIBER`]'s subscriptions.
    fn on_hub_interest(&mut self, filter: &[u8], queue: Option<&[u8]>, change: InterestChange) {
        let Some(hub) = self.hub.as_deref_mut() else {
            return;
        };
        match change {
            InterestChange::Added => {
                let sid = hub.next_sid();
                let key = self.subscribe(HUB_SUBSCRIBER, sid, filter, queue);
                self.hub
                    .as_deref_mut()
                    .expect("checked above")
                    .remember(filter, queue, key);
            }
            // A queue group's weight: one member here stands for them all.
            InterestChange::Updated => {}
            InterestChange::Removed => {
                if let Some(key) = hub.forget(filter, queue) {
                    self.remove_sub(key);
                }
            }
        }
    }

    fn clear_hub_interest(&mut self) {
        let Some(hub) = self.hub.as_deref_mut() else {
            return;
        };
        for key in hub.forget_all() {
            self.remove_sub(key);
        }
    }

    /// A local subscription of `subscriber` changed: the hub hears of it,
    /// unless it is the hub's own.
    pub(super) fn tell_hub(
        &mut self,
        subscriber: ConnId,
        add: bool,
        filter: &[u8],
        queue: Option<&[u8]>,
    ) {
        if let (Some(hub), false) = (self.hub.as_deref_mut(), subscriber == HUB_SUBSCRIBER) {
            hub.local_interest(add, filter, queue);
        }
    }

    /// What the link wrote, into the hub connection's queue.
    pub(super) fn flush_hub(&mut self) {
        if let Some(hub) = self.hub.as_deref_mut() {
            hub.drain_output(&mut self.conns);
        }
    }

    /// A hub connection's socket is gone: the current one's loss is the
    /// link's (its interest stays until the next connection begins).
    pub(super) fn on_hub_closed(&mut self, cid: ConnId) {
        self.conns.remove(cid);
        if let Some(hub) = self.hub.as_deref_mut().filter(|hub| hub.is_link(cid)) {
            tracing::warn!(
                url = hub.link.current_url(),
                "leaf-node hub connection lost"
            );
            hub.lost(self.now);
        }
    }
}
