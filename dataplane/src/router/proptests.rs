//! Random operation sequences against a naive model: a list of every
//! subscription, matched one by one with [`filter_matches`].

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;

use super::tests::{normalize, Normalized};
use super::*;

type Queue = Option<&'static str>;

#[derive(Debug, Clone)]
enum Op {
    InsertLocal(String, Queue, SubKey),
    RemoveLocal(String, Queue, SubKey),
    /// Removes the model's n-th local subscription, so removals often hit.
    RemoveExistingLocal(Index),
    AddRemote(String, Queue, WorkerId),
    RemoveRemote(String, Queue, WorkerId),
    RemoveExistingRemote(Index),
    Lookup(String),
}

/// 1 to 4 tokens of a, b, c, `*`, the last possibly `>`.
fn filter() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec!["a", "b", "c", "*"]);
    (prop::collection::vec(token, 1..=4), any::<bool>()).prop_map(|(mut tokens, tail)| {
        if tail {
            if let Some(last) = tokens.last_mut() {
                *last = ">";
            }
        }
        tokens.join(".")
    })
}

/// Few enough subjects that lookups repeat and hit the cache.
fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b"]), 1..=4)
        .prop_map(|tokens| tokens.join("."))
}

fn queue() -> impl Strategy<Value = Queue> {
    prop_oneof![2 => Just(None), 1 => Just(Some("q")), 1 => Just(Some("r"))]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..6u32;
    let worker = 0..4u16;
    prop_oneof![
        3 => (filter(), queue(), key.clone()).prop_map(|(f, q, k)| Op::InsertLocal(f, q, k)),
        1 => (filter(), queue(), key).prop_map(|(f, q, k)| Op::RemoveLocal(f, q, k)),
        2 => any::<Index>().prop_map(Op::RemoveExistingLocal),
        3 => (filter(), queue(), worker.clone()).prop_map(|(f, q, w)| Op::AddRemote(f, q, w)),
        1 => (filter(), queue(), worker).prop_map(|(f, q, w)| Op::RemoveRemote(f, q, w)),
        2 => any::<Index>().prop_map(Op::RemoveExistingRemote),
        8 => subject().prop_map(Op::Lookup),
    ]
}

#[derive(Default)]
struct Model {
    locals: Vec<(String, Queue, SubKey)>,
    /// One entry per remote subscription: the refcount is the multiplicity.
    remotes: Vec<(String, Queue, WorkerId)>,
}

impl Model {
    fn insert_local(&mut self, sub: (String, Queue, SubKey)) {
        if !self.locals.contains(&sub) {
            self.locals.push(sub);
        }
    }

    fn remove_local(&mut self, sub: &(String, Queue, SubKey)) -> bool {
        remove_one(&mut self.locals, sub)
    }

    fn remove_remote(&mut self, sub: &(String, Queue, WorkerId)) -> bool {
        remove_one(&mut self.remotes, sub)
    }

    fn expected(&self, subject: &str) -> Normalized {
        let matching = |filter: &str| filter_matches(filter.as_bytes(), subject.as_bytes());
        let mut local = Vec::new();
        let mut remote = Vec::new();
        let mut groups: BTreeMap<&str, (Vec<SubKey>, BTreeMap<WorkerId, u32>)> = BTreeMap::new();
        for (_, queue, key) in self.locals.iter().filter(|sub| matching(&sub.0)) {
            match queue {
                None => local.push(*key),
                Some(name) => groups.entry(name).or_default().0.push(*key),
            }
        }
        for (_, queue, worker) in self.remotes.iter().filter(|sub| matching(&sub.0)) {
            match queue {
                None => remote.push(*worker),
                Some(name) => {
                    *groups
                        .entry(name)
                        .or_default()
                        .1
                        .entry(*worker)
                        .or_default() += 1
                }
            }
        }
        local.sort_unstable();
        remote.sort_unstable();
        remote.dedup();
        let groups = groups
            .into_iter()
            .map(|(name, (mut local, remote))| {
                local.sort_unstable();
                (
                    name.as_bytes().to_vec(),
                    local,
                    remote.into_iter().collect(),
                )
            })
            .collect();
        Normalized {
            local,
            remote,
            groups,
        }
    }
}

fn remove_one<T: PartialEq>(list: &mut Vec<T>, item: &T) -> bool {
    match list.iter().position(|held| held == item) {
        Some(at) => {
            list.swap_remove(at);
            true
        }
        None => false,
    }
}

fn all_subjects() -> Vec<String> {
    let mut subjects = vec![String::new()];
    let mut all = Vec::new();
    for _ in 0..4 {
        subjects = subjects
            .iter()
            .flat_map(|prefix| {
                ["a", "b"].map(|token| {
                    if prefix.is_empty() {
                        token.to_string()
                    } else {
                        format!("{prefix}.{token}")
                    }
                })
            })
            .collect();
        all.extend(subjects.iter().cloned());
    }
    all
}

fn check_lookup(
    index: &mut SubscriptionIndex,
    model: &Model,
    subject: &str,
) -> Result<(), TestCaseError> {
    let found = normalize(index.lookup(subject.as_bytes()));
    prop_assert_eq!(found, model.expected(subject), "subject {}", subject);
    Ok(())
}

fn run(capacity: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut index = SubscriptionIndex::new(capacity);
    let mut model = Model::default();
    let bytes = |queue: Queue| queue.map(str::as_bytes);
    for op in ops {
        match op {
            Op::InsertLocal(filter, queue, key) => {
                index.insert_local(filter.as_bytes(), bytes(queue), key);
                model.insert_local((filter, queue, key));
            }
            Op::RemoveLocal(filter, queue, key) => {
                let removed = index.remove_local(filter.as_bytes(), bytes(queue), key);
                prop_assert_eq!(removed, model.remove_local(&(filter, queue, key)));
            }
            Op::RemoveExistingLocal(at) => {
                if !model.locals.is_empty() {
                    let sub = model.locals[at.index(model.locals.len())].clone();
                    prop_assert!(index.remove_local(sub.0.as_bytes(), bytes(sub.1), sub.2));
                    prop_assert!(model.remove_local(&sub));
                }
            }
            Op::AddRemote(filter, queue, worker) => {
                index.add_remote(filter.as_bytes(), bytes(queue), worker);
                model.remotes.push((filter, queue, worker));
            }
            Op::RemoveRemote(filter, queue, worker) => {
                let removed = index.remove_remote(filter.as_bytes(), bytes(queue), worker);
                prop_assert_eq!(removed, model.remove_remote(&(filter, queue, worker)));
            }
            Op::RemoveExistingRemote(at) => {
                if !model.remotes.is_empty() {
                    let sub = model.remotes[at.index(model.remotes.len())].clone();
                    prop_assert!(index.remove_remote(sub.0.as_bytes(), bytes(sub.1), sub.2));
                    prop_assert!(model.remove_remote(&sub));
                }
            }
            Op::Lookup(subject) => check_lookup(&mut index, &model, &subject)?,
        }
        prop_assert_eq!(index.local_len(), model.locals.len());
    }
    for subject in all_subjects() {
        check_lookup(&mut index, &model, &subject)?;
    }
    // Tear everything down: the answers stay right and the trie shrinks
    // back to its root.
    while let Some(sub) = model.locals.pop() {
        prop_assert!(index.remove_local(sub.0.as_bytes(), bytes(sub.1), sub.2));
    }
    while let Some(sub) = model.remotes.pop() {
        prop_assert!(index.remove_remote(sub.0.as_bytes(), bytes(sub.1), sub.2));
    }
    for subject in all_subjects() {
        prop_assert!(
            index.lookup(subject.as_bytes()).is_empty(),
            "subject {}",
            subject
        );
    }
    prop_assert_eq!(index.trie.node_count(), 1);
    prop_assert_eq!(index.local_len(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_agrees_with_naive_model(
        capacity in prop_oneof![Just(0usize), Just(1), Just(3), Just(64)],
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run(capacity, ops)?;
    }

    #[test]
    fn trie_agrees_with_filter_matches(filters in prop::collection::vec(filter(), 1..20), subject in subject()) {
        let mut index = SubscriptionIndex::new(0);
        for (key, filter) in filters.iter().enumerate() {
            index.insert_local(filter.as_bytes(), None, key as SubKey);
        }
        let mut expected: Vec<SubKey> = filters
            .iter()
            .enumerate()
            .filter(|(_, filter)| filter_matches(filter.as_bytes(), subject.as_bytes()))
            .map(|(key, _)| key as SubKey)
            .collect();
        expected.sort_unstable();
        let mut found = index.lookup(subject.as_bytes()).local.clone();
        found.sort_unstable();
        prop_assert_eq!(found, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        filters in prop::collection::vec(prop::collection::vec(prop::sample::select(b"ab.*>".to_vec()), 0..8), 1..10),
        subjects in prop::collection::vec(prop::collection::vec(prop::sample::select(b"ab.*>".to_vec()), 0..8), 1..10),
    ) {
        let mut index = SubscriptionIndex::new(2);
        for (key, filter) in filters.iter().enumerate() {
            index.insert_local(filter, Some(b"q"), key as SubKey);
            index.add_remote(filter, None, 1);
        }
        for subject in &subjects {
            let matching: Vec<_> = filters.iter().filter(|filter| filter_matches(filter, subject)).collect();
            let found = index.lookup(subject);
            prop_assert_eq!(found.remote.is_empty(), matching.is_empty());
            let members = found.groups.iter().map(|group| group.local.len()).sum::<usize>();
            prop_assert_eq!(members, matching.len());
        }
        for (key, filter) in filters.iter().enumerate() {
            prop_assert!(index.remove_local(filter, Some(b"q"), key as SubKey));
        }
    }
}
