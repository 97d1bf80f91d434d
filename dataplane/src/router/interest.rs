//! The subscriptions of one filter: what a trie node stores.

use std::sync::Arc;

use super::hash::FastMap;
use super::matches::{Matches, MAX_WORKERS};
use super::{SubKey, WorkerId};

/// Lists up to this long are searched linearly; longer ones get a position
/// map, because a popular subject can hold thousands of subscriptions and
/// each unsubscribe would otherwise scan them all.
const LINEAR_UP_TO: usize = 16;

/// Local subscription keys: a set with cheap iteration and O(1) removal.
#[derive(Debug, Default)]
pub(super) struct KeyList {
    keys: Vec<SubKey>,
    /// Index of each key in `keys`; empty while the list is short.
    positions: FastMap<SubKey, u32>,
}

impl KeyList {
    pub(super) fn keys(&self) -> &[SubKey] {
        &self.keys
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// False if `key` is already present.
    pub(super) fn insert(&mut self, key: SubKey) -> bool {
        if self.position(key).is_some() {
            return false;
        }
        self.keys.push(key);
        if !self.positions.is_empty() {
            self.positions
                .insert(key, position_u32(self.keys.len() - 1));
        } else if self.keys.len() > LINEAR_UP_TO {
            self.positions = self
                .keys
                .iter()
                .enumerate()
                .map(|(at, &key)| (key, position_u32(at)))
                .collect();
        }
        true
    }

    /// False if `key` is absent.
    pub(super) fn remove(&mut self, key: SubKey) -> bool {
        let Some(at) = self.position(key) else {
            return false;
        };
        self.keys.swap_remove(at);
        if !self.positions.is_empty() {
            self.positions.remove(&key);
            if let Some(&moved) = self.keys.get(at) {
                self.positions.insert(moved, position_u32(at));
            }
            if self.keys.len() <= LINEAR_UP_TO / 2 {
                self.positions = FastMap::default();
            }
        }
        // Give back memory after a burst of unsubscribes.
        if self.keys.len() * 4 < self.keys.capacity() {
            self.keys.shrink_to(self.keys.len() * 2);
        }
        true
    }

    fn position(&self, key: SubKey) -> Option<usize> {
        if self.positions.is_empty() {
            self.keys.iter().position(|&held| held == key)
        } else {
            self.positions.get(&key).map(|&at| at as usize)
        }
    }
}

/// A `SubKey` list never outgrows `u32` (keys are `u32` and distinct).
fn position_u32(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

/// How many subscriptions each other worker holds; at most [`MAX_WORKERS`]
/// entries, so a short vector beats a map.
#[derive(Debug, Default)]
pub(super) struct RemoteCounts {
    counts: Vec<(WorkerId, u32)>,
}

impl RemoteCounts {
    pub(super) fn entries(&self) -> &[(WorkerId, u32)] {
        &self.counts
    }

    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// False (and nothing stored) for a worker id without a bit in
    /// [`WorkerSet`](super::WorkerSet).
    pub(super) fn add(&mut self, worker: WorkerId) -> bool {
        if usize::from(worker) >= MAX_WORKERS {
            return false;
        }
        match self
            .counts
            .iter_mut()
            .find(|(held_by, _)| *held_by == worker)
        {
            Some((_, count)) => *count = count.saturating_add(1),
            None => self.counts.push((worker, 1)),
        }
        true
    }

    /// What a decrement did; `None` if the worker held nothing.
    pub(super) fn remove(&mut self, worker: WorkerId) -> Option<RemoteRemoval> {
        let at = self
            .counts
            .iter()
            .position(|&(held_by, _)| held_by == worker)?;
        let count = &mut self.counts[at].1;
        *count = count.saturating_sub(1);
        if *count > 0 {
            return Some(RemoteRemoval::StillHeld);
        }
        self.counts.swap_remove(at);
        Some(RemoteRemoval::LastGone)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RemoteRemoval {
    StillHeld,
    LastGone,
}

/// The members of one queue group on one filter.
#[derive(Debug)]
pub(super) struct GroupInterest {
    name: Arc<[u8]>,
    pub(super) local: KeyList,
    pub(super) remote: RemoteCounts,
}

impl GroupInterest {
    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// All subscriptions of one filter.
#[derive(Debug, Default)]
pub(super) struct Interest {
    pub(super) local: KeyList,
    pub(super) remote: RemoteCounts,
    groups: Vec<GroupInterest>,
}

impl Interest {
    pub(super) fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty() && self.groups.is_empty()
    }

    /// The group `name`, created empty if needed.
    pub(super) fn group_entry(&mut self, name: &[u8]) -> &mut GroupInterest {
        let at = match self.groups.iter().position(|group| &*group.name == name) {
            Some(at) => at,
            None => {
                self.groups.push(GroupInterest {
                    name: name.into(),
                    local: KeyList::default(),
                    remote: RemoteCounts::default(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[at]
    }

    /// Runs `edit` on group `name` if it exists, then drops the group if it
    /// became empty, so churn leaves nothing behind.
    pub(super) fn edit_group<R>(
        &mut self,
        name: &[u8],
        edit: impl FnOnce(&mut GroupInterest) -> R,
    ) -> Option<R> {
        let at = self.groups.iter().position(|group| &*group.name == name)?;
        let result = edit(&mut self.groups[at]);
        if self.groups[at].is_empty() {
            self.groups.swap_remove(at);
        }
        Some(result)
    }

    /// Adds this filter's subscriptions to `out`.
    pub(super) fn collect_into(&self, out: &mut Matches) {
        out.local.extend_from_slice(self.local.keys());
        for &(worker, _) in self.remote.entries() {
            out.remote.insert(worker);
        }
        for group in &self.groups {
            let matched = out.shared_group_mut(&group.name);
            matched.local.extend_from_slice(group.local.keys());
            for &(worker, count) in group.remote.entries() {
                matched.add_remote(worker, count);
            }
        }
    }
}
