use super::*;

/// A lookup result in a canonical order, for comparing as sets.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Normalized {
    pub(super) local: Vec<SubKey>,
    pub(super) remote: Vec<WorkerId>,
    pub(super) groups: Vec<NormalizedGroup>,
}

/// (name, sorted local members, sorted (worker, count)).
pub(super) type NormalizedGroup = (Vec<u8>, Vec<SubKey>, Vec<(WorkerId, u32)>);

pub(super) fn normalize(matches: &Matches) -> Normalized {
    let mut local = matches.local.clone();
    local.sort_unstable();
    let mut groups: Vec<_> = matches
        .groups
        .iter()
        .map(|group| {
            assert!(!group.is_empty(), "empty group listed: {group:?}");
            assert!(
                group.remote.iter().all(|&(_, count)| count > 0),
                "zero count: {group:?}"
            );
            let mut local = group.local.clone();
            local.sort_unstable();
            let mut remote = group.remote.clone();
            remote.sort_unstable();
            assert!(
                remote.windows(2).all(|pair| pair[0].0 != pair[1].0),
                "worker twice: {group:?}"
            );
            (group.name.to_vec(), local, remote)
        })
        .collect();
    groups.sort();
    assert!(
        groups.windows(2).all(|pair| pair[0].0 != pair[1].0),
        "group twice: {matches:?}"
    );
    Normalized {
        local,
        remote: matches.remote.iter().collect(),
        groups,
    }
}

fn lookup(index: &mut SubscriptionIndex, subject: &str) -> Normalized {
    normalize(index.lookup(subject.as_bytes()))
}

fn local_keys(index: &mut SubscriptionIndex, subject: &str) -> Vec<SubKey> {
    lookup(index, subject).local
}

fn with_plain(filters: &[&str]) -> SubscriptionIndex {
    let mut index = SubscriptionIndex::new(16);
    for (key, filter) in filters.iter().enumerate() {
        index.insert_local(filter.as_bytes(), None, key as SubKey);
    }
    index
}

#[test]
fn filter_matches_follows_nats_rules() {
    let cases: &[(&str, &str, bool)] = &[
        ("a.b", "a.b", true),
        ("a.b", "a.c", false),
        ("a.b", "a.b.c", false),
        ("a.b.c", "a.b", false),
        ("a.*", "a.b", true),
        ("a.*", "a", false),
        ("a.*", "a.b.c", false),
        ("*.b", "a.b", true),
        ("a.>", "a.b", true),
        ("a.>", "a.b.c", true),
        ("a.>", "a", false),
        (">", "a", true),
        (">", "a.b", true),
        ("*", "a", true),
        ("*", "a.b", false),
        ("a*", "ab", false),
        ("a*", "a*", true),
        ("a>", "a>", true),
        ("a.>b", "a.c", false),
        ("*.*.>", "a.b", false),
        ("*.*.>", "a.b.c", true),
    ];
    for &(filter, subject, expected) in cases {
        assert_eq!(
            filter_matches(filter.as_bytes(), subject.as_bytes()),
            expected,
            "{filter} vs {subject}"
        );
    }
}

#[test]
fn literal_filter_matches_only_its_subject() {
    let mut index = with_plain(&["a.b"]);
    assert_eq!(local_keys(&mut index, "a.b"), [0]);
    assert!(index.lookup(b"a.c").is_empty());
    assert!(index.lookup(b"a").is_empty());
    assert!(index.lookup(b"a.b.c").is_empty());
}

#[test]
fn star_matches_exactly_one_token() {
    let mut index = with_plain(&["a.*", "*.b", "*"]);
    assert_eq!(local_keys(&mut index, "a.b"), [0, 1]);
    assert_eq!(local_keys(&mut index, "a.c"), [0]);
    assert_eq!(local_keys(&mut index, "a"), [2]);
    assert!(index.lookup(b"a.b.c").is_empty());
}

#[test]
fn tail_matches_one_or_more_tokens_but_not_zero() {
    let mut index = with_plain(&["a.>", ">"]);
    assert_eq!(local_keys(&mut index, "a"), [1]);
    assert_eq!(local_keys(&mut index, "a.b"), [0, 1]);
    assert_eq!(local_keys(&mut index, "a.b.c.d"), [0, 1]);
    assert_eq!(local_keys(&mut index, "b.c"), [1]);
}

#[test]
fn wildcard_inside_a_token_is_literal() {
    let mut index = with_plain(&["a*.b", "a.b>"]);
    assert!(index.lookup(b"ax.b").is_empty());
    assert!(index.lookup(b"a.bc").is_empty());
    assert_eq!(local_keys(&mut index, "a*.b"), [0]);
    assert_eq!(local_keys(&mut index, "a.b>"), [1]);
}

#[test]
fn overlapping_wildcards_list_each_subscription_once() {
    let mut index = with_plain(&["a.b", "a.*", "*.b", "*.*", "a.>", ">"]);
    assert_eq!(local_keys(&mut index, "a.b"), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn inserting_the_same_key_twice_is_a_no_op() {
    let mut index = SubscriptionIndex::new(4);
    index.insert_local(b"a", None, 7);
    index.insert_local(b"a", None, 7);
    assert_eq!(index.local_len(), 1);
    assert_eq!(local_keys(&mut index, "a"), [7]);
    assert!(index.remove_local(b"a", None, 7));
    assert!(index.lookup(b"a").is_empty());
}

#[test]
fn remove_returns_false_when_absent() {
    let mut index = SubscriptionIndex::new(4);
    assert!(!index.remove_local(b"a.b", None, 1));
    index.insert_local(b"a.b", None, 1);
    assert!(!index.remove_local(b"a.b", None, 2));
    assert!(!index.remove_local(b"a.*", None, 1));
    assert!(!index.remove_local(b"a.b", Some(b"q"), 1));
    assert!(!index.remove_remote(b"a.b", None, 3));
    index.add_remote(b"a.b", Some(b"q"), 3);
    assert!(!index.remove_remote(b"a.b", None, 3));
    assert!(!index.remove_remote(b"a.b", Some(b"r"), 3));
    assert!(index.remove_remote(b"a.b", Some(b"q"), 3));
    assert!(!index.remove_remote(b"a.b", Some(b"q"), 3));
    assert!(index.remove_local(b"a.b", None, 1));
    assert!(!index.remove_local(b"a.b", None, 1));
    assert_eq!(index.local_len(), 0);
}

#[test]
fn removal_cleans_up_trie_nodes() {
    let mut index = SubscriptionIndex::new(0);
    let filters = [
        "a.b.c", "a.b", "a.*.c", "a.>", ">", "*", "x.y.z.>", "a.b.c.d",
    ];
    for (key, filter) in filters.iter().enumerate() {
        index.insert_local(filter.as_bytes(), None, key as SubKey);
        index.add_remote(filter.as_bytes(), Some(b"q"), 1);
    }
    assert!(index.trie.node_count() > 1);
    for (key, filter) in filters.iter().enumerate().rev() {
        assert!(index.remove_local(filter.as_bytes(), None, key as SubKey));
        assert!(index.remove_remote(filter.as_bytes(), Some(b"q"), 1));
    }
    assert_eq!(index.trie.node_count(), 1, "only the root is left");
    assert_eq!(index.local_len(), 0);
}

#[test]
fn removal_keeps_nodes_still_in_use() {
    let mut index = with_plain(&["a.b.c", "a.b", "a.b.d"]);
    assert!(index.remove_local(b"a.b.c", None, 0));
    assert_eq!(local_keys(&mut index, "a.b"), [1]);
    assert_eq!(local_keys(&mut index, "a.b.d"), [2]);
    assert!(index.remove_local(b"a.b", None, 1));
    assert_eq!(local_keys(&mut index, "a.b.d"), [2]);
    assert_eq!(index.trie.node_count(), 4);
}

#[test]
fn remote_interest_is_reference_counted() {
    let mut index = SubscriptionIndex::new(8);
    index.add_remote(b"a.*", None, 2);
    index.add_remote(b"a.*", None, 2);
    index.add_remote(b"a.b", None, 5);
    assert_eq!(lookup(&mut index, "a.b").remote, [2, 5]);
    assert!(index.remove_remote(b"a.*", None, 2));
    assert_eq!(lookup(&mut index, "a.b").remote, [2, 5]);
    assert!(index.remove_remote(b"a.*", None, 2));
    assert_eq!(lookup(&mut index, "a.b").remote, [5]);
    assert!(!index.remove_remote(b"a.*", None, 2));
}

#[test]
fn remote_interest_on_two_filters_survives_removal_from_one() {
    let mut index = SubscriptionIndex::new(8);
    index.add_remote(b"a.*", None, 3);
    index.add_remote(b"a.b", None, 3);
    assert_eq!(lookup(&mut index, "a.b").remote, [3]);
    assert!(index.remove_remote(b"a.b", None, 3));
    assert_eq!(lookup(&mut index, "a.b").remote, [3]);
    assert!(index.remove_remote(b"a.*", None, 3));
    assert!(index.lookup(b"a.b").is_empty());
}

#[test]
fn worker_ids_without_a_bit_are_ignored() {
    let mut index = SubscriptionIndex::new(8);
    index.add_remote(b"a", None, 64);
    index.add_remote(b"a", Some(b"q"), u16::MAX);
    assert!(index.lookup(b"a").is_empty());
    assert!(!index.remove_remote(b"a", None, 64));
    assert_eq!(index.trie.node_count(), 1);
}

#[test]
fn queue_groups_are_grouped_by_name_across_filters() {
    let mut index = SubscriptionIndex::new(8);
    index.insert_local(b"a.*", Some(b"q"), 1);
    index.insert_local(b"a.b", Some(b"q"), 2);
    index.insert_local(b"a.>", Some(b"r"), 3);
    index.insert_local(b"a.b", None, 4);
    index.add_remote(b"a.b", Some(b"q"), 6);
    index.add_remote(b"a.*", Some(b"q"), 6);
    index.add_remote(b"a.>", Some(b"q"), 7);
    let found = lookup(&mut index, "a.b");
    assert_eq!(found.local, [4]);
    assert!(found.remote.is_empty());
    assert_eq!(
        found.groups,
        [
            (b"q".to_vec(), vec![1, 2], vec![(6, 2), (7, 1)]),
            (b"r".to_vec(), vec![3], vec![]),
        ]
    );
    let matches = index.lookup(b"a.b");
    let q = matches
        .groups
        .iter()
        .find(|group| &*group.name == b"q")
        .unwrap();
    assert_eq!(q.total_members(), 5);
    assert_eq!(
        lookup(&mut index, "a.c").groups,
        [
            (b"q".to_vec(), vec![1], vec![(6, 1), (7, 1)]),
            (b"r".to_vec(), vec![3], vec![]),
        ]
    );
}

#[test]
fn a_group_disappears_with_its_last_member() {
    let mut index = SubscriptionIndex::new(8);
    index.insert_local(b"a", Some(b"q"), 1);
    index.add_remote(b"a", Some(b"q"), 2);
    assert_eq!(lookup(&mut index, "a").groups.len(), 1);
    assert!(index.remove_local(b"a", Some(b"q"), 1));
    assert_eq!(
        lookup(&mut index, "a").groups,
        [(b"q".to_vec(), vec![], vec![(2, 1)])]
    );
    assert!(index.remove_remote(b"a", Some(b"q"), 2));
    assert!(index.lookup(b"a").is_empty());
    assert_eq!(index.trie.node_count(), 1);
}

#[test]
fn a_cache_hit_matches_a_fresh_index() {
    let subs: &[(&str, Option<&str>, SubKey)] = &[
        ("a.b", None, 1),
        ("a.*", None, 2),
        ("a.>", Some("q"), 3),
        ("*.b", Some("q"), 4),
        ("c", None, 5),
    ];
    let remotes: &[(&str, Option<&str>, WorkerId)] =
        &[("a.b", None, 1), ("a.*", Some("q"), 2), (">", Some("r"), 3)];
    let build = |capacity| {
        let mut index = SubscriptionIndex::new(capacity);
        for &(filter, queue, key) in subs {
            index.insert_local(filter.as_bytes(), queue.map(str::as_bytes), key);
        }
        for &(filter, queue, worker) in remotes {
            index.add_remote(filter.as_bytes(), queue.map(str::as_bytes), worker);
        }
        index
    };
    let mut cached = build(4);
    for subject in ["a.b", "a.c", "c", "x.b", "a"] {
        // A subject enters the cache on its second miss.
        let once = normalize(cached.lookup(subject.as_bytes()));
        let first: *const Matches = cached.lookup(subject.as_bytes());
        let hit = cached.lookup(subject.as_bytes());
        assert!(
            std::ptr::eq(first, hit),
            "second lookup of {subject} is served from the cache"
        );
        let hit = normalize(hit);
        assert_eq!(hit, once, "{subject}");
        assert_eq!(hit, lookup(&mut build(0), subject), "{subject}");
        assert_eq!(hit, lookup(&mut build(4), subject), "{subject}");
    }
}

#[test]
fn the_cache_follows_changes_on_matching_filters() {
    let mut index = SubscriptionIndex::new(8);
    index.insert_local(b"a.b", None, 1);
    assert_eq!(local_keys(&mut index, "a.b"), [1]);
    assert!(local_keys(&mut index, "a.c").is_empty());
    index.insert_local(b"a.*", None, 2);
    assert_eq!(local_keys(&mut index, "a.b"), [1, 2]);
    assert_eq!(local_keys(&mut index, "a.c"), [2]);
    index.insert_local(b"a.c", Some(b"q"), 3);
    assert_eq!(
        lookup(&mut index, "a.c").groups,
        [(b"q".to_vec(), vec![3], vec![])]
    );
    assert!(lookup(&mut index, "a.b").groups.is_empty());
    assert!(index.remove_local(b"a.*", None, 2));
    assert_eq!(local_keys(&mut index, "a.b"), [1]);
    assert!(local_keys(&mut index, "a.c").is_empty());
}

#[test]
fn the_cache_stays_bounded() {
    let mut index = SubscriptionIndex::new(3);
    index.insert_local(b">", None, 1);
    for n in 0..100 {
        for _ in 0..2 {
            assert_eq!(local_keys(&mut index, &format!("s.{n}")), [1]);
        }
        assert!(index.cache.len() <= 3);
    }
    assert_eq!(index.cache.len(), 3);
}

#[test]
fn one_off_subjects_do_not_enter_the_cache() {
    let mut index = SubscriptionIndex::new(16);
    index.insert_local(b"dev.>", None, 1);
    for n in 0..1000 {
        assert_eq!(local_keys(&mut index, &format!("dev.{n}")), [1]);
    }
    assert_eq!(index.cache.len(), 0, "a stream of one-off subjects");
    for _ in 0..3 {
        assert_eq!(local_keys(&mut index, "dev.hot"), [1]);
    }
    assert_eq!(index.cache.len(), 1, "a repeated subject is cached");
}

#[test]
fn a_large_fan_out_removes_cheaply_and_correctly() {
    let mut index = SubscriptionIndex::new(4);
    for key in 0..1000 {
        index.insert_local(b"a.b", None, key);
    }
    assert_eq!(index.lookup(b"a.b").local.len(), 1000);
    for key in (0..1000).step_by(2) {
        assert!(index.remove_local(b"a.b", None, key));
        assert!(!index.remove_local(b"a.b", None, key));
    }
    let expected: Vec<SubKey> = (0..1000).filter(|key| key % 2 == 1).collect();
    assert_eq!(local_keys(&mut index, "a.b"), expected);
    assert_eq!(index.local_len(), 500);
}

#[test]
fn odd_bytes_never_panic() {
    let mut index = SubscriptionIndex::new(2);
    let inputs: &[&[u8]] = &[
        b"",
        b".",
        b"..",
        b".>",
        b">.>",
        b"*.",
        b".*",
        b"\xff\x00",
        b"a..b",
        b">.a",
    ];
    for (key, &filter) in inputs.iter().enumerate() {
        index.insert_local(filter, Some(filter), key as SubKey);
        index.add_remote(filter, None, 1);
    }
    for &subject in inputs {
        let found = normalize(index.lookup(subject));
        let expected: Vec<SubKey> = inputs
            .iter()
            .enumerate()
            .filter(|(_, &filter)| filter_matches(filter, subject))
            .map(|(key, _)| key as SubKey)
            .collect();
        let listed: Vec<SubKey> = found
            .groups
            .iter()
            .flat_map(|group| group.1.clone())
            .collect::<Vec<_>>();
        let mut listed = listed;
        listed.sort_unstable();
        assert_eq!(listed, expected, "{subject:?}");
    }
    for (key, &filter) in inputs.iter().enumerate() {
        assert!(index.remove_local(filter, Some(filter), key as SubKey));
        assert!(index.remove_remote(filter, None, 1));
    }
    assert_eq!(index.trie.node_count(), 1);
}

#[test]
fn a_very_long_subject_does_not_overflow_the_stack() {
    let subject = b"a.".repeat(200_000);
    let subject = &subject[..subject.len() - 1];
    let mut index = SubscriptionIndex::new(2);
    index.insert_local(subject, None, 1);
    index.insert_local(b"a.>", None, 2);
    index.insert_local(b"*.*.>", None, 3);
    assert_eq!(
        local_keys(&mut index, std::str::from_utf8(subject).unwrap()),
        [1, 2, 3]
    );
    assert!(index.remove_local(subject, None, 1));
    assert_eq!(index.trie.node_count(), 4);
    index.insert_local(subject, None, 1);
    drop(index);
}

#[test]
fn worker_set_basics() {
    let mut set = WorkerSet::empty();
    assert!(set.is_empty());
    set.insert(0);
    set.insert(63);
    set.insert(5);
    set.insert(64);
    assert!(set.contains(63) && set.contains(5) && !set.contains(64) && !set.contains(1));
    assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, 63]);
    assert_eq!(set.len(), 3);
    set.remove(5);
    assert_eq!(
        set.into_iter().collect::<WorkerSet>(),
        WorkerSet((1 << 63) | 1)
    );
}

#[test]
fn an_index_can_move_to_its_worker_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<SubscriptionIndex>();
}
