//! The result of a lookup: who must receive a message on one subject.

use std::sync::Arc;

use super::{SubKey, WorkerId};

/// Workers are numbered below this, so a set of them fits one `u64`.
pub const MAX_WORKERS: usize = 64;

/// A set of workers as a bitset: copied around freely on the publish path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WorkerSet(pub u64);

impl WorkerSet {
    pub const fn empty() -> Self {
        WorkerSet(0)
    }

    /// Ignores ids of [`MAX_WORKERS`] or more: there is no bit for them.
    pub fn insert(&mut self, worker: WorkerId) {
        self.0 |= bit(worker);
    }

    pub fn remove(&mut self, worker: WorkerId) {
        self.0 &= !bit(worker);
    }

    pub fn contains(self, worker: WorkerId) -> bool {
        self.0 & bit(worker) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The members in increasing order.
    pub fn iter(self) -> WorkerSetIter {
        WorkerSetIter(self.0)
    }
}

fn bit(worker: WorkerId) -> u64 {
    1u64.checked_shl(u32::from(worker)).unwrap_or(0)
}

impl IntoIterator for WorkerSet {
    type Item = WorkerId;
    type IntoIter = WorkerSetIter;

    fn into_iter(self) -> WorkerSetIter {
        self.iter()
    }
}

impl FromIterator<WorkerId> for WorkerSet {
    fn from_iter<I: IntoIterator<Item = WorkerId>>(workers: I) -> Self {
        let mut set = WorkerSet::empty();
        for worker in workers {
            set.insert(worker);
        }
        set
    }
}

#[derive(Debug, Clone)]
pub struct WorkerSetIter(u64);

impl Iterator for WorkerSetIter {
    type Item = WorkerId;

    fn next(&mut self) -> Option<WorkerId> {
        if self.0 == 0 {
            return None;
        }
        let worker = self.0.trailing_zeros() as WorkerId;
        self.0 &= self.0 - 1;
        Some(worker)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self.0.count_ones() as usize;
        (len, Some(len))
    }
}

/// Everything a subject matches. Order within the lists carries no meaning.
#[derive(Debug, Clone, Default)]
pub struct Matches {
    /// Local plain (non-queue) subscriptions; each subscription once.
    pub local: Vec<SubKey>,
    /// Workers holding at least one matching plain subscription.
    pub remote: WorkerSet,
    /// One entry per distinct queue-group name across all matching filters:
    /// NATS groups members by name, whatever filter they subscribed with.
    pub groups: Vec<GroupMatch>,
    /// Emptied group entries kept for the next fill, so that refilling
    /// allocates nothing.
    spare_groups: Vec<GroupMatch>,
}

impl PartialEq for Matches {
    fn eq(&self, other: &Matches) -> bool {
        self.local == other.local && self.remote == other.remote && self.groups == other.groups
    }
}

impl Eq for Matches {}

impl Matches {
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty() && self.groups.is_empty()
    }

    /// Empties the lists but keeps their memory for the next fill.
    pub(super) fn clear(&mut self) {
        self.local.clear();
        self.remote = WorkerSet::empty();
        for mut group in self.groups.drain(..) {
            group.local.clear();
            group.remote.clear();
            self.spare_groups.push(group);
        }
    }

    /// The entry for group `name`, created empty if the subject had none yet.
    pub(super) fn group_mut(&mut self, name: &[u8]) -> &mut GroupMatch {
        match self.group_position(name) {
            Some(at) => &mut self.groups[at],
            None => self.push_group(name.into()),
        }
    }

    /// [`group_mut`](Self::group_mut) for a name the index already shares:
    /// no allocation.
    pub(super) fn shared_group_mut(&mut self, name: &Arc<[u8]>) -> &mut GroupMatch {
        match self.group_position(name) {
            Some(at) => &mut self.groups[at],
            None => self.push_group(Arc::clone(name)),
        }
    }

    fn push_group(&mut self, name: Arc<[u8]>) -> &mut GroupMatch {
        let group = match self.spare_groups.pop() {
            Some(mut spare) => {
                spare.name = name;
                spare
            }
            None => GroupMatch {
                name,
                local: Vec::new(),
                remote: Vec::new(),
            },
        };
        self.groups.push(group);
        self.groups.last_mut().expect("just pushed")
    }

    pub(super) fn group_position(&self, name: &[u8]) -> Option<usize> {
        self.groups.iter().position(|group| &*group.name == name)
    }
}

/// The members of one queue group that a subject matches: one of them gets
/// each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMatch {
    /// Shared with the index, so that a lookup does not copy it.
    pub name: Arc<[u8]>,
    /// Members on this worker.
    pub local: Vec<SubKey>,
    /// Other workers and how many members each holds (always > 0), so a
    /// uniform pick over all members can be made without asking them.
    pub remote: Vec<(WorkerId, u32)>,
}

impl GroupMatch {
    pub fn total_members(&self) -> u32 {
        let remote: u32 = self
            .remote
            .iter()
            .fold(0u32, |sum, &(_, count)| sum.saturating_add(count));
        remote.saturating_add(u32::try_from(self.local.len()).unwrap_or(u32::MAX))
    }

    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    /// Adds `count` members held by `worker` (merging per worker).
    pub(super) fn add_remote(&mut self, worker: WorkerId, count: u32) {
        match self
            .remote
            .iter_mut()
            .find(|(held_by, _)| *held_by == worker)
        {
            Some((_, held)) => *held = held.saturating_add(count),
            None => self.remote.push((worker, count)),
        }
    }
}
