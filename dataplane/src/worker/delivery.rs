//! One message's delivery to this worker's subscribers: its MESSAGE frame
//! appended to each one's queue, counted against their `max_msgs`, and a
//! subscriber whose queue would outgrow the limit cut off as a slow
//! consumer.
//!
//! It borrows the connections and the subscription table, not the core, so
//! that routing can walk the message's matches (which borrow the index) and
//! pick queue-group members while it delivers.

use std::time::Instant;

use blipmq_protocol::{encode, ErrorCode};

use super::connections::{CloseReason, Connections};
use super::payloads::{PayloadId, SHARE_MIN_PAYLOAD};
use super::subscriptions::SubTable;
use crate::router::SubKey;
use crate::stats::{Counter, WorkerStats};

pub(super) struct Delivery<'a> {
    conns: &'a mut Connections,
    subs: &'a mut SubTable,
    stats: &'a WorkerStats,
    now: Instant,
    /// This message's payload, when shared rather than copied per queue.
    shared: Option<PayloadId>,
}

impl<'a> Delivery<'a> {
    /// Starts delivering one message.
    pub(super) fn start(
        conns: &'a mut Connections,
        subs: &'a mut SubTable,
        stats: &'a WorkerStats,
        now: Instant,
    ) -> Delivery<'a> {
        Delivery {
            conns,
            subs,
            stats,
            now,
            shared: None,
        }
    }

    /// Copies a large payload once for all of this message's local
    /// recipients (at most `recipients`), instead of once per recipient.
    pub(super) fn share_if_worth_it(&mut self, payload: &[u8], recipients: usize) {
        if recipients >= 2 && payload.len() >= SHARE_MIN_PAYLOAD {
            self.shared = Some(self.conns.payloads_mut().store(payload));
        }
    }

    /// Ends the message: a shared payload no queue took is recycled.
    pub(super) fn finish(self) {
        if let Some(id) = self.shared {
            self.conns.payloads_mut().release_if_unused(id);
        }
    }

    pub(super) fn deliver(
        &mut self,
        key: SubKey,
        subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
    ) {
        let Some((cid, sid)) = self.subs.count_delivery(key) else {
            return;
        };
        let max_pending = self.conns.max_pending();
        let (conn, payloads, dirty) = self.conns.queue(cid);
        if conn.slow {
            self.stats.inc(Counter::DroppedSlowConsumer);
            return;
        }
        let len = encode::message_len(subject, reply, payload.len());
        if conn.output.pending_len() + len > max_pending {
            // Slow consumer: drop its backlog, tell it where its socket still
            // takes bytes, and close it at once.
            let dropped = conn.output.discard_unsent(payloads);
            self.stats.add(Counter::DroppedSlowConsumer, dropped + 1);
            encode::put_error(
                conn.output.frames(),
                ErrorCode::Unavailable,
                "slow consumer",
            );
            self.stats.inc(Counter::FramesOutError);
            conn.slow = true;
            conn.closing = Some(self.now);
            conn.close_reason = CloseReason::SlowConsumer;
            tracing::warn!(conn = cid, dropped = dropped + 1, "slow consumer cut off");
        } else {
            match self.shared {
                Some(id) => {
                    let out = conn.output.frames();
                    encode::put_message_head(out, subject, sid, reply, payload.len());
                    conn.output.splice(payloads, id);
                }
                None => encode::put_message(conn.output.frames(), subject, sid, reply, payload),
            }
            self.stats.inc(Counter::MessagesDelivered);
            self.stats.inc(Counter::FramesOutMessage);
            conn.info.msgs_out += 1;
        }
        dirty.mark(cid, conn);
    }
}
