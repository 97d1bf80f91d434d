//! A worker's subscriptions and the interest it routes by: its own
//! subscriptions by key, with their delivery counts and limits, and the
//! subscription index over them and over the other workers' interest.
//!
//! The table and the index are one part because they change together: a
//! key is in the index exactly while its subscription is in the table. A
//! lookup hands the table out apart from the matches, so that a delivery
//! counts on the subscriptions while the matches it walks borrow the index.

use slab::Slab;

use super::core::ConnId;
use crate::router::{Matches, SubKey, SubscriptionIndex, WorkerId};

pub(super) struct Sub {
    pub(super) conn: ConnId,
    pub(super) sid: u32,
    pub(super) filter: Box<[u8]>,
    pub(super) queue: Option<Box<[u8]>>,
    pub(super) delivered: u64,
    /// 0 = no limit.
    max_msgs: u64,
}

pub(super) struct Subscriptions {
    index: SubscriptionIndex,
    table: SubTable,
}

/// The local subscriptions by key.
pub(super) struct SubTable {
    subs: Slab<Sub>,
    /// Reached their `max_msgs` during a delivery; removed once it is over.
    expired: Vec<SubKey>,
}

impl Subscriptions {
    pub(super) fn new(cache_subjects: usize) -> Subscriptions {
        Subscriptions {
            index: SubscriptionIndex::new(cache_subjects),
            table: SubTable {
                subs: Slab::new(),
                expired: Vec::new(),
            },
        }
    }

    /// Who must receive a message on `subject`, and the table to count the
    /// local deliveries in.
    pub(super) fn lookup(&mut self, subject: &[u8]) -> (&Matches, &mut SubTable) {
        (self.index.lookup(subject), &mut self.table)
    }

    pub(super) fn insert(
        &mut self,
        conn: ConnId,
        sid: u32,
        filter: &[u8],
        queue: Option<&[u8]>,
    ) -> SubKey {
        let key = self.table.subs.insert(Sub {
            conn,
            sid,
            filter: filter.into(),
            queue: queue.map(Into::into),
            delivered: 0,
            max_msgs: 0,
        }) as SubKey;
        self.index.insert_local(filter, queue, key);
        key
    }

    pub(super) fn remove(&mut self, key: SubKey) -> Sub {
        let sub = self.table.subs.remove(key as usize);
        self.index
            .remove_local(&sub.filter, sub.queue.as_deref(), key);
        sub
    }

    /// UNSUBSCRIBE after `max_msgs` messages in all (0: at once). Returns
    /// whether the subscription must go now; otherwise it expires during
    /// the delivery that reaches the limit.
    pub(super) fn limit(&mut self, key: SubKey, max_msgs: u32) -> bool {
        let sub = &mut self.table.subs[key as usize];
        if max_msgs == 0 || sub.delivered >= u64::from(max_msgs) {
            return true;
        }
        sub.max_msgs = u64::from(max_msgs);
        false
    }

    /// The next subscription that reached its `max_msgs` and is still here.
    pub(super) fn pop_expired(&mut self) -> Option<SubKey> {
        while let Some(key) = self.table.expired.pop() {
            if self.table.subs.contains(key as usize) {
                return Some(key);
            }
        }
        None
    }

    /// An INTEREST record from `worker`: its subscriptions to `filter` in
    /// `queue` gained (`add`) or lost a member.
    pub(super) fn on_interest(
        &mut self,
        add: bool,
        filter: &[u8],
        queue: Option<&[u8]>,
        worker: WorkerId,
    ) {
        if add {
            self.index.add_remote(filter, queue, worker);
        } else {
            self.index.remove_remote(filter, queue, worker);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.subs.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Sub> {
        self.table.subs.iter().map(|(_, sub)| sub)
    }
}

impl SubTable {
    /// The connection a live subscription delivers to.
    pub(super) fn conn_of(&self, key: SubKey) -> ConnId {
        self.subs[key as usize].conn
    }

    /// The queue group of a live subscription, if it is in one.
    pub(super) fn queue_of(&self, key: SubKey) -> Option<&[u8]> {
        self.subs[key as usize].queue.as_deref()
    }

    /// The connection and sid of a live subscription.
    pub(super) fn owner(&self, key: SubKey) -> (ConnId, u32) {
        let sub = &self.subs[key as usize];
        (sub.conn, sub.sid)
    }

    /// Counts a delivery to subscription `key`: returns its connection and
    /// sid, or None when it is gone or has had its `max_msgs`. One that
    /// reaches its limit now is listed to expire.
    pub(super) fn count_delivery(&mut self, key: SubKey) -> Option<(ConnId, u32)> {
        let sub = self.subs.get_mut(key as usize)?;
        if sub.max_msgs != 0 && sub.delivered >= sub.max_msgs {
            return None;
        }
        sub.delivered += 1;
        if sub.max_msgs != 0 && sub.delivered == sub.max_msgs {
            self.expired.push(key);
        }
        Some((sub.conn, sub.sid))
    }
}
