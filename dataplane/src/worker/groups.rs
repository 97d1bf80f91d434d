//! Queue groups: a message goes to one member of each group it matches,
//! picked at random over all the group's members, on this worker or on
//! others. Owns the random source and the picks for the message being
//! routed, which outlive one message only for their memory.

use crate::router::{GroupMatch, Matches, SubKey, WorkerId, WorkerSet};

/// A small, fast PRNG for queue-group picks (xorshift64*); the seed must
/// not be 0. Tests use it too.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn below(&mut self, bound: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % bound as u64) as u32
    }
}

/// Where a queue group's one delivery goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    Local(SubKey),
    Remote(WorkerId),
}

pub(super) struct GroupPicks {
    rng: Rng,
    /// The member picked for each group of the message being routed: the
    /// group's index in the matches, and where the member is.
    assigned: Vec<(usize, Target)>,
}

impl GroupPicks {
    /// Each worker draws its own sequence.
    pub(super) fn new(worker: usize) -> GroupPicks {
        GroupPicks {
            rng: Rng(
                0x9e37_79b9_7f4a_7c15 ^ (worker as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd)
            ),
            assigned: Vec::new(),
        }
    }

    /// For a message published here: picks the member of each group in
    /// `matches` that it `serves`, uniformly over all its members but the
    /// `excluded` local ones (the publisher's own, when it asked not to get
    /// its messages: the next member takes its turn). Returns the workers
    /// that get a record of the message: those with plain subscriptions to
    /// it, and those where a member was picked.
    pub(super) fn assign(
        &mut self,
        matches: &Matches,
        excluded: impl Fn(SubKey) -> bool,
        serves: impl Fn(&[u8]) -> bool,
    ) -> WorkerSet {
        let mut remote = matches.remote;
        self.assigned.clear();
        for (group_at, group) in matches.groups.iter().enumerate() {
            let total = group.total_members();
            if total == 0 || !serves(&group.name) {
                continue;
            }
            let first = self.rng.below(total);
            let target = (0..total).find_map(|i| {
                let pick = (first + i) % total;
                match group.local.get(pick as usize) {
                    Some(&key) if excluded(key) => None,
                    Some(&key) => Some(Target::Local(key)),
                    None => {
                        remote_member(group, pick - group.local.len() as u32).map(Target::Remote)
                    }
                }
            });
            match target {
                Some(Target::Remote(worker)) => remote.insert(worker),
                Some(Target::Local(_)) => {}
                None => continue,
            }
            self.assigned
                .push((group_at, target.expect("matched above")));
        }
        remote
    }

    /// The members on this worker that [`assign`](Self::assign) picked.
    pub(super) fn local_members(&self) -> impl Iterator<Item = SubKey> + '_ {
        self.assigned
            .iter()
            .filter_map(|&(_, target)| match target {
                Target::Local(key) => Some(key),
                Target::Remote(_) => None,
            })
    }

    /// The names of the groups that [`assign`](Self::assign) gave to a
    /// member on `worker`; `matches` are the ones it assigned from.
    pub(super) fn names_for<'a>(
        &'a self,
        matches: &'a Matches,
        worker: WorkerId,
    ) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        self.assigned
            .iter()
            .filter_map(move |&(group_at, target)| match target {
                Target::Remote(w) if w == worker => Some(&*matches.groups[group_at].name),
                _ => None,
            })
    }

    /// For a message another worker assigned `group` here: a member on this
    /// worker if there is one. If they all left meanwhile, and when
    /// `may_forward`, a member on another worker, so that the message is not
    /// lost to a stale view. None when there is no member to give it to.
    pub(super) fn pick_for_record(
        &mut self,
        group: &GroupMatch,
        may_forward: bool,
    ) -> Option<Target> {
        if !group.local.is_empty() {
            let pick = self.rng.below(group.local.len() as u32);
            return Some(Target::Local(group.local[pick as usize]));
        }
        let members: u32 = group.remote.iter().map(|&(_, count)| count).sum();
        if members == 0 || !may_forward {
            return None;
        }
        remote_member(group, self.rng.below(members)).map(Target::Remote)
    }
}

/// The worker that holds member number `pick` of `group`'s members on other
/// workers.
fn remote_member(group: &GroupMatch, mut pick: u32) -> Option<WorkerId> {
    for &(worker, members) in &group.remote {
        if pick < members {
            return Some(worker);
        }
        pick -= members;
    }
    None
}
