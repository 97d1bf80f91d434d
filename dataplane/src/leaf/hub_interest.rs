//! The hub's interest (its `LS+`/`LS-`), in the router's subscription index
//! so that "does the hub want subject S" is the same trie walk (and cache)
//! a worker's own lookups are. Each hub interest (filter, optional queue
//! group) is one local entry of the index, under a key of its own; the
//! group's weight is kept beside it.

use std::collections::HashMap;

use crate::router::{Matches, SubKey, SubscriptionIndex};

/// Subjects whose matches the index caches.
const CACHED_SUBJECTS: usize = 1024;

/// What an `LS+`/`LS-` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterestChange {
    Added,
    /// A queue group's weight changed.
    Updated,
    Removed,
}

pub(super) struct HubInterest {
    index: SubscriptionIndex,
    /// `subject` or `subject queue` (as the protocol keys them) → entry.
    entries: HashMap<Box<[u8]>, HubEntry>,
    free_keys: Vec<SubKey>,
    next_key: SubKey,
}

#[derive(Debug, Clone, Copy)]
struct HubEntry {
    key: SubKey,
    weight: u32,
}

/// The protocol's key of an interest: `subject` or `subject queue`.
pub fn interest_key(subject: &[u8], queue: Option<&[u8]>) -> Vec<u8> {
    let mut key = Vec::with_capacity(subject.len() + queue.map_or(0, |q| q.len() + 1));
    key.extend_from_slice(subject);
    if let Some(queue) = queue {
        key.push(b' ');
        key.extend_from_slice(queue);
    }
    key
}

/// Splits a key made by [`interest_key`] (subjects hold no blanks).
pub(super) fn split_key(key: &[u8]) -> (&[u8], Option<&[u8]>) {
    match key.iter().position(|&b| b == b' ') {
        Some(at) => (&key[..at], Some(&key[at + 1..])),
        None => (key, None),
    }
}

impl Default for HubInterest {
    fn default() -> Self {
        HubInterest {
            index: SubscriptionIndex::new(CACHED_SUBJECTS),
            entries: HashMap::new(),
            free_keys: Vec::new(),
            next_key: 0,
        }
    }
}

impl HubInterest {
    /// Records an `LS+`; `weight` is the member count of a queue group.
    pub(super) fn add(&mut self, subject: &[u8], queue: Option<(&[u8], u32)>) -> InterestChange {
        let name = queue.map(|(name, _)| name);
        let weight = queue.map_or(1, |(_, weight)| weight);
        let key = interest_key(subject, name);
        if let Some(entry) = self.entries.get_mut(key.as_slice()) {
            entry.weight = weight;
            return InterestChange::Updated;
        }
        let sub_key = self.free_keys.pop().unwrap_or_else(|| {
            self.next_key = self.next_key.wrapping_add(1);
            self.next_key
        });
        self.index.insert_local(subject, name, sub_key);
        self.entries.insert(
            key.into_boxed_slice(),
            HubEntry {
                key: sub_key,
                weight,
            },
        );
        InterestChange::Added
    }

    /// Records an `LS-`; false when there was no such interest.
    pub(super) fn remove(&mut self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        let Some(entry) = self.entries.remove(interest_key(subject, queue).as_slice()) else {
            return false;
        };
        self.index.remove_local(subject, queue, entry.key);
        self.free_keys.push(entry.key);
        true
    }

    /// Forgets everything (the link went down); true if there was anything.
    pub(super) fn clear(&mut self) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        *self = HubInterest::default();
        true
    }

    /// Who on the hub wants `subject`: `local` holds one key per plain
    /// interest, `groups` the queue groups.
    pub(super) fn lookup(&mut self, subject: &[u8]) -> &Matches {
        self.index.lookup(subject)
    }

    /// The weight the hub gave a queue group on a filter.
    pub(super) fn weight(&self, subject: &[u8], queue: &[u8]) -> Option<u32> {
        self.entries
            .get(interest_key(subject, Some(queue)).as_slice())
            .map(|entry| entry.weight)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}
