//! A bounded cache of recent lookups, kept exact under subscription churn.
//!
//! Entries live in a vector and the map holds their slot, so a hit is one
//! hash probe and no allocation, and eviction can pick a random slot in O(1).

use std::sync::Arc;

use super::filter::{filter_matches, is_literal};
use super::hash::FastMap;
use super::matches::Matches;
use super::{SubKey, WorkerId};

/// Removing a member from a cached list longer than this evicts the entry
/// instead: the scan would cost more than recomputing on the next publish.
const UPDATE_REMOVALS_UP_TO: usize = 32;

pub(super) struct LookupCache {
    capacity: usize,
    slots: FastMap<Arc<[u8]>, u32>,
    entries: Vec<CachedLookup>,
    /// xorshift state for picking eviction victims.
    victim_seed: u64,
}

struct CachedLookup {
    subject: Arc<[u8]>,
    matches: Matches,
}

/// One subscription change, as the cache must replay it on matching entries.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change<'a> {
    LocalAdded {
        queue: Option<&'a [u8]>,
        key: SubKey,
    },
    LocalRemoved {
        queue: Option<&'a [u8]>,
        key: SubKey,
    },
    RemoteAdded {
        queue: Option<&'a [u8]>,
        worker: WorkerId,
    },
    /// `last_on_filter`: the filter no longer holds any of `worker`'s
    /// subscriptions (in that group, if any).
    RemoteRemoved {
        queue: Option<&'a [u8]>,
        worker: WorkerId,
        last_on_filter: bool,
    },
}

impl LookupCache {
    pub(super) fn new(capacity: usize) -> Self {
        // Never more than u32 slots, and no huge up-front reservation.
        let capacity = capacity.min(u32::MAX as usize);
        LookupCache {
            capacity,
            slots: FastMap::default(),
            entries: Vec::new(),
            victim_seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub(super) fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The slot of a cached subject; always a valid index into `entries`.
    pub(super) fn find(&self, subject: &[u8]) -> Option<usize> {
        let slot = *self.slots.get(subject)? as usize;
        (slot < self.entries.len()).then_some(slot)
    }

    /// The matches in a slot returned by [`find`](Self::find) or
    /// [`insert_with`](Self::insert_with).
    pub(super) fn matches(&self, slot: usize) -> &Matches {
        &self.entries[slot].matches
    }

    /// Caches `subject` (evicting a random entry when full) with the
    /// matches `fill` writes into a cleared `Matches`; returns its slot.
    /// The caller checks [`is_enabled`](Self::is_enabled) first.
    pub(super) fn insert_with(&mut self, subject: &[u8], fill: impl FnOnce(&mut Matches)) -> usize {
        let subject: Arc<[u8]> = subject.into();
        let slot = if self.entries.len() < self.capacity {
            self.entries.push(CachedLookup {
                subject: Arc::clone(&subject),
                matches: Matches::default(),
            });
            self.entries.len() - 1
        } else {
            // Reuse the victim's entry, and so its lists' memory.
            let victim = self.pick_victim();
            let entry = &mut self.entries[victim];
            self.slots.remove(&*entry.subject);
            entry.subject = Arc::clone(&subject);
            entry.matches.clear();
            victim
        };
        fill(&mut self.entries[slot].matches);
        self.slots.insert(subject, slot as u32);
        slot
    }

    fn pick_victim(&mut self) -> usize {
        let mut x = self.victim_seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.victim_seed = x;
        (x % self.entries.len() as u64) as usize
    }

    /// Brings every entry that `filter` matches up to date with `change`,
    /// evicting those it cannot update cheaply. Entries `filter` does not
    /// match are untouched, so unrelated churn costs no hit rate.
    pub(super) fn apply(&mut self, filter: &[u8], change: Change<'_>) {
        if self.entries.is_empty() {
            return;
        }
        if is_literal(filter) {
            if let Some(slot) = self.find(filter) {
                if !replay(&mut self.entries[slot].matches, change) {
                    self.evict(slot);
                }
            }
            return;
        }
        let mut slot = 0;
        while slot < self.entries.len() {
            let entry = &mut self.entries[slot];
            if filter_matches(filter, &entry.subject) && !replay(&mut entry.matches, change) {
                // The last entry moves into `slot`: look at it next.
                self.evict(slot);
            } else {
                slot += 1;
            }
        }
    }

    fn evict(&mut self, slot: usize) {
        let evicted = self.entries.swap_remove(slot);
        self.slots.remove(&*evicted.subject);
        if let Some(moved) = self.entries.get(slot) {
            if let Some(moved_slot) = self.slots.get_mut(&*moved.subject) {
                *moved_slot = slot as u32;
            }
        }
    }
}

/// Applies `change` to one cached result; false when the entry must be
/// evicted instead (the change cannot be replayed exactly or cheaply).
fn replay(matches: &mut Matches, change: Change<'_>) -> bool {
    match change {
        Change::LocalAdded { queue: None, key } => matches.local.push(key),
        Change::LocalAdded {
            queue: Some(name),
            key,
        } => matches.group_mut(name).local.push(key),
        Change::LocalRemoved { queue: None, key } => return remove_key(&mut matches.local, key),
        Change::LocalRemoved {
            queue: Some(name),
            key,
        } => {
            return edit_group(matches, name, |group| remove_key(&mut group.local, key));
        }
        Change::RemoteAdded {
            queue: None,
            worker,
        } => matches.remote.insert(worker),
        Change::RemoteAdded {
            queue: Some(name),
            worker,
        } => matches.group_mut(name).add_remote(worker, 1),
        // Another matching filter may still give the worker interest: only
        // a fresh lookup knows.
        Change::RemoteRemoved {
            queue: None,
            last_on_filter,
            ..
        } => return !last_on_filter,
        Change::RemoteRemoved {
            queue: Some(name),
            worker,
            ..
        } => {
            return edit_group(matches, name, |group| {
                let Some(at) = group
                    .remote
                    .iter()
                    .position(|&(held_by, _)| held_by == worker)
                else {
                    return false;
                };
                let count = &mut group.remote[at].1;
                *count = count.saturating_sub(1);
                if *count == 0 {
                    group.remote.swap_remove(at);
                }
                true
            });
        }
    }
    true
}

fn remove_key(keys: &mut Vec<SubKey>, key: SubKey) -> bool {
    if keys.len() > UPDATE_REMOVALS_UP_TO {
        return false;
    }
    match keys.iter().position(|&held| held == key) {
        Some(at) => {
            keys.swap_remove(at);
            true
        }
        None => false,
    }
}

/// Edits group `name` of a cached result and drops it once empty, as a
/// fresh lookup would not list it.
fn edit_group(
    matches: &mut Matches,
    name: &[u8],
    edit: impl FnOnce(&mut super::GroupMatch) -> bool,
) -> bool {
    let Some(at) = matches.group_position(name) else {
        return false;
    };
    let updated = edit(&mut matches.groups[at]);
    if matches.groups[at].is_empty() {
        matches.groups.swap_remove(at);
    }
    updated
}
