//! One message's delivery to this worker's subscribers: its MESSAGE frame
//! appended to each one's queue, counted against their `max_msgs`, a
//! subscriber whose queue would outgrow the limit cut off as a slow
//! consumer, and one whose queue passes the pacing mark noted as backlogged.
//!
//! It borrows the connections and the subscription table, not the core, so
//! that routing can walk the message's matches (which borrow the index) and
//! pick queue-group members while it delivers.

use std::time::Instant;

use blipmq_protocol::encode;

use super::connections::Connections;
use super::core::ConnId;
use super::dialect::Format;
use super::hub::{HubPort, HUB_SUBSCRIBER};
use super::payloads::{PayloadId, SHARE_MIN_PAYLOAD};
use super::records::Message;
use super::subscriptions::SubTable;
use crate::router::SubKey;
use crate::stats::{Counter, WorkerStats};

pub(super) struct Delivery<'a> {
    conns: &'a mut Connections,
    subs: &'a mut SubTable,
    stats: &'a WorkerStats,
    now: Instant,
    /// When the message was read, on the latency clock.
    read_at: u64,
    /// This message's payload, when shared rather than copied per queue.
    shared: Option<PayloadId>,
    /// The publisher, when it asked not to get its own messages (NATS
    /// `echo: false`).
    no_echo: Option<ConnId>,
    /// The leaf-node hub's link: its subscriptions that this message
    /// matches are collected, and the hub gets one LMSG for all of them at
    /// the end, not a MESSAGE per subscription.
    hub: Option<&'a mut HubPort>,
}

impl<'a> Delivery<'a> {
    /// Starts delivering one message.
    pub(super) fn start(
        conns: &'a mut Connections,
        subs: &'a mut SubTable,
        stats: &'a WorkerStats,
        now: Instant,
        read_at: u64,
    ) -> Delivery<'a> {
        Delivery {
            conns,
            subs,
            stats,
            now,
            read_at,
            shared: None,
            no_echo: None,
            hub: None,
        }
    }

    /// Offers the message to the hub at the end (see
    /// [`finish`](Self::finish)) when any of the hub's subscriptions
    /// matched, instead of queueing a MESSAGE for each.
    pub(super) fn divert_hub(&mut self, hub: &'a mut HubPort) {
        hub.start_message();
        self.hub = Some(hub);
    }

    /// Skips the subscriptions of connection `publisher` (NATS `echo: false`).
    pub(super) fn skip_own(&mut self, publisher: ConnId) {
        self.no_echo = Some(publisher);
    }

    /// Copies a large payload once for all of this message's local
    /// recipients (at most `recipients`), instead of once per recipient.
    pub(super) fn share_if_worth_it(&mut self, payload: &[u8], recipients: usize) {
        if recipients >= 2 && payload.len() >= SHARE_MIN_PAYLOAD {
            self.shared = Some(self.conns.payloads_mut().store(payload));
        }
    }

    /// Ends the message: offered to the hub if it wants it (unless it came
    /// from there); a shared payload no queue took is recycled.
    pub(super) fn finish(self, message: &Message<'_>, from_hub: bool) {
        if let Some(hub) = self.hub {
            hub.offer(message, from_hub, self.subs, self.conns);
        }
        if let Some(id) = self.shared {
            self.conns.payloads_mut().release_if_unused(id);
        }
    }

    pub(super) fn deliver(&mut self, key: SubKey, message: &Message<'_>) {
        if self
            .no_echo
            .is_some_and(|publisher| self.subs.conn_of(key) == publisher)
        {
            return;
        }
        let subscriber = self.subs.conn_of(key);
        if subscriber == HUB_SUBSCRIBER {
            if let Some(hub) = self.hub.as_deref_mut() {
                hub.matched(key);
            }
            return;
        }
        let permitted = self.conns.get_mut(subscriber).is_none_or(|conn| {
            conn.session
                .on_delivery(message.subject, message.reply, self.now)
        });
        if !permitted {
            return;
        }
        let Some((cid, sid)) = self.subs.count_delivery(key) else {
            return;
        };
        let max_pending = self.conns.max_pending();
        let queue = self.conns.queue(cid);
        if queue.conn.slow {
            self.stats.inc(Counter::DroppedSlowConsumer);
            return;
        }
        let format = Format::of(queue.conn);
        let out = &mut queue.conn.output;
        if out.pending_len() + format.message_len(message, sid) > max_pending {
            let dropped = self.conns.cut_slow_consumer(cid, self.stats, self.now);
            self.stats.add(Counter::DroppedSlowConsumer, dropped + 1);
            tracing::warn!(conn = cid, dropped = dropped + 1, "slow consumer cut off");
            return;
        }
        match self.shared {
            Some(id) if format.splices_payloads() => {
                let Message {
                    subject,
                    reply,
                    payload,
                    ..
                } = *message;
                encode::put_message_head(out.frames(), subject, sid, reply, payload.len());
                out.splice(queue.payloads, id);
            }
            _ => format.put_message(out.frames(), message, sid),
        }
        let pending = out.pending_len();
        queue.conn.stamps.queued(out.end(), self.read_at);
        queue
            .backlog
            .on_queued(cid, &mut queue.conn.pacing, pending, self.now);
        self.stats.inc(Counter::MessagesDelivered);
        self.stats.inc(Counter::FramesOutMessage);
        queue.conn.info.msgs_out += 1;
        queue.dirty.mark(cid, queue.conn);
    }
}
