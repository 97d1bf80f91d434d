//! The subscription index of one worker: which local subscriptions and
//! which other workers want a message on a given subject.
//!
//! Sans-IO and single-threaded: each worker owns one [`SubscriptionIndex`]
//! and keeps it in step with its peers through interest records. Subjects
//! follow NATS rules: `.`-separated tokens; in filters a token `*` matches
//! one token and a last token `>` one or more. Inputs are validated by the
//! caller; the index never panics on any bytes regardless.
//!
//! A token trie makes a lookup cost follow the subject's length, and a
//! bounded cache of recent results, updated on every change, makes a
//! repeated subject one hash probe with no allocation.

mod cache;
mod filter;
mod hash;
mod interest;
mod matches;
mod trie;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use cache::{Change, LookupCache};
use interest::RemoteRemoval;
use trie::Trie;

pub use filter::filter_matches;
pub use matches::{GroupMatch, Matches, WorkerSet, WorkerSetIter, MAX_WORKERS};

/// A local subscription, numbered by the caller; unique per worker.
pub type SubKey = u32;

/// A broker worker, below [`MAX_WORKERS`].
pub type WorkerId = u16;

/// Local subscriptions and remote interest of one worker, with a lookup
/// cache.
pub struct SubscriptionIndex {
    trie: Trie,
    cache: LookupCache,
    /// Filled on a lookup that the cache does not keep.
    uncached: Matches,
    /// Hashes of subjects recently looked up once: a subject enters the
    /// cache on its second miss, so a stream of one-off subjects (one per
    /// device, say) neither allocates entries nor evicts the hot ones.
    doorkeeper: Box<[u64]>,
    hasher: ahash::RandomState,
    local_len: usize,
}

/// Slots of the doorkeeper (a power of two).
const DOORKEEPER_SLOTS: usize = 4096;

impl SubscriptionIndex {
    /// `cache_capacity` is the number of subjects whose matches are kept;
    /// 0 disables the cache.
    pub fn new(cache_capacity: usize) -> Self {
        SubscriptionIndex {
            trie: Trie::default(),
            cache: LookupCache::new(cache_capacity),
            uncached: Matches::default(),
            doorkeeper: vec![0; DOORKEEPER_SLOTS].into_boxed_slice(),
            hasher: ahash::RandomState::new(),
            local_len: 0,
        }
    }

    /// Adds local subscription `key` on `filter`, in group `queue` if any.
    /// Adding a key already present on the same filter and queue does
    /// nothing.
    pub fn insert_local(&mut self, filter: &[u8], queue: Option<&[u8]>, key: SubKey) {
        let interest = self.trie.interest_or_create(filter);
        let added = match queue {
            None => interest.local.insert(key),
            Some(name) => interest.group_entry(name).local.insert(key),
        };
        if added {
            self.local_len += 1;
            self.cache.apply(filter, Change::LocalAdded { queue, key });
        }
    }

    /// Removes what [`insert_local`](Self::insert_local) added; false if
    /// `key` is not on that filter and queue.
    pub fn remove_local(&mut self, filter: &[u8], queue: Option<&[u8]>, key: SubKey) -> bool {
        let removed = self
            .trie
            .edit(filter, |interest| match queue {
                None => interest.local.remove(key),
                Some(name) => interest
                    .edit_group(name, |group| group.local.remove(key))
                    .unwrap_or(false),
            })
            .unwrap_or(false);
        if removed {
            self.local_len -= 1;
            self.cache
                .apply(filter, Change::LocalRemoved { queue, key });
        }
        removed
    }

    /// Counts one more subscription of `worker` on `filter` (in group
    /// `queue` if any). Ignored for a worker id of [`MAX_WORKERS`] or more.
    pub fn add_remote(&mut self, filter: &[u8], queue: Option<&[u8]>, worker: WorkerId) {
        if usize::from(worker) >= MAX_WORKERS {
            return;
        }
        let interest = self.trie.interest_or_create(filter);
        let added = match queue {
            None => interest.remote.add(worker),
            Some(name) => interest.group_entry(name).remote.add(worker),
        };
        if added {
            self.cache
                .apply(filter, Change::RemoteAdded { queue, worker });
        }
    }

    /// Counts one subscription of `worker` fewer; false if it had none on
    /// that filter and queue.
    pub fn remove_remote(&mut self, filter: &[u8], queue: Option<&[u8]>, worker: WorkerId) -> bool {
        let removal = self
            .trie
            .edit(filter, |interest| match queue {
                None => interest.remote.remove(worker),
                Some(name) => interest
                    .edit_group(name, |group| group.remote.remove(worker))
                    .flatten(),
            })
            .flatten();
        let Some(removal) = removal else {
            return false;
        };
        let last_on_filter = removal == RemoteRemoval::LastGone;
        self.cache.apply(
            filter,
            Change::RemoteRemoved {
                queue,
                worker,
                last_on_filter,
            },
        );
        true
    }

    /// Everything that matches `subject` (a literal subject, no wildcards).
    /// A cached subject costs one hash probe and allocates nothing.
    pub fn lookup(&mut self, subject: &[u8]) -> &Matches {
        if let Some(slot) = self.cache.find(subject) {
            return self.cache.matches(slot);
        }
        let uncached = !self.cache.is_enabled() || self.first_miss(subject);
        let trie = &self.trie;
        if uncached {
            self.uncached.clear();
            trie.collect(subject, &mut self.uncached);
            return &self.uncached;
        }
        let slot = self
            .cache
            .insert_with(subject, |matches| trie.collect(subject, matches));
        self.cache.matches(slot)
    }

    /// Records a cache miss on `subject`; true unless it missed recently.
    fn first_miss(&mut self, subject: &[u8]) -> bool {
        // 0 marks an empty slot; a subject hashing to 0 is simply never
        // remembered (and so never cached), which is harmless.
        let hash = self.hasher.hash_one(subject);
        let slot = &mut self.doorkeeper[hash as usize & (DOORKEEPER_SLOTS - 1)];
        if *slot == hash {
            *slot = 0;
            return false;
        }
        *slot = hash;
        true
    }

    /// The number of local subscriptions, plain and queue.
    pub fn local_len(&self) -> usize {
        self.local_len
    }
}

impl std::fmt::Debug for SubscriptionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("local_len", &self.local_len)
            .field("cached_subjects", &self.cache.len())
            .finish_non_exhaustive()
    }
}
