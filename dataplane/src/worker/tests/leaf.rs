//! The leaf-node link run by worker 0 of two, against a scripted hub: the
//! hub's interest routes every worker's publishes to it once, local
//! interest reaches it, its messages are delivered here and never sent
//! back, queue groups span both sides, and while the hub is away the
//! messages it wanted are counted as dropped until the next connection
//! begins.

use super::nats::{nats_client, take_text};
use super::*;
use crate::leaf::{LeafLink, LeafLinkConfig};

const HUB_INFO: &[u8] = b"INFO {\"server_id\":\"NHUB\",\"client_id\":7,\"headers\":true,\"max_payload\":1048576,\"leafnode_urls\":[\"127.0.0.1:7422\"]} \r\n";

/// Two workers, the link on worker 0, dialled and up; returns the hub
/// connection's id.
fn cluster_with_hub() -> (Cluster, ConnId) {
    let mut cluster = Cluster::new(2, 1 << 16, 1 << 20);
    let config = LeafLinkConfig::new("edge", vec!["127.0.0.1:7422".into()]);
    let now = cluster.now;
    cluster.cores[0].attach_leaf_link(LeafLink::new(config, now), None);
    cluster.cores[0].handle_timeout(now);
    let (hub, addr) = cluster.cores[0].take_dial().expect("a dial");
    assert_eq!(addr.port(), 7422);
    cluster.cores[0].dialled(hub, Ok(()), now);
    cluster.send(0, hub, HUB_INFO);
    let hello = take_text(&mut cluster, 0, hub);
    assert!(
        hello.starts_with("CONNECT {") && hello.ends_with("PING\r\n"),
        "{hello}"
    );
    cluster.send(0, hub, b"PONG\r\n");
    assert!(cluster.cores[0].leaf_link().unwrap().is_up());
    let hello = take_text(&mut cluster, 0, hub);
    assert!(hello.starts_with("LS+ $LDS."), "{hello}");
    (cluster, hub)
}

#[test]
fn the_hub_gets_what_it_wants_from_every_worker_once() {
    let (mut cluster, hub) = cluster_with_hub();
    // Two hub subscriptions that both match: one LMSG per message.
    cluster.send(0, hub, b"LS+ orders.*\r\nLS+ orders.>\r\n");
    cluster.settle();
    for w in 0..2 {
        let publisher = nats_client(&mut cluster, w, r#"{"verbose":false}"#);
        cluster.send(
            w,
            publisher,
            b"PUB orders.1 2\r\nhi\r\nPUB other 2\r\nno\r\n",
        );
        cluster.settle();
    }
    assert_eq!(
        take_text(&mut cluster, 0, hub),
        "LMSG orders.1 2\r\nhi\r\nLMSG orders.1 2\r\nhi\r\n"
    );
    // Withdrawn: nothing more.
    cluster.send(0, hub, b"LS- orders.*\r\nLS- orders.>\r\n");
    cluster.settle();
    let publisher = nats_client(&mut cluster, 1, r#"{"verbose":false}"#);
    cluster.send(1, publisher, b"PUB orders.2 2\r\nhi\r\n");
    cluster.settle();
    assert_eq!(take_text(&mut cluster, 0, hub), "");
}

#[test]
fn local_interest_reaches_the_hub_and_its_messages_are_not_sent_back() {
    let (mut cluster, hub) = cluster_with_hub();
    let mut subscribers = Vec::new();
    for w in 0..2 {
        let sub = nats_client(&mut cluster, w, r#"{"verbose":false}"#);
        cluster.send(w, sub, b"SUB prices.> 1\r\n");
        subscribers.push(sub);
    }
    cluster.settle();
    // Announced once, for both subscriptions.
    assert_eq!(take_text(&mut cluster, 0, hub), "LS+ prices.>\r\n");
    // The hub wants prices.> too (its own clients): still not echoed.
    cluster.send(0, hub, b"LS+ prices.>\r\nLMSG prices.eu 1\r\n7\r\n");
    cluster.settle();
    for (w, &sub) in subscribers.iter().enumerate() {
        assert_eq!(
            take_text(&mut cluster, w, sub),
            "MSG prices.eu 1 1\r\n7\r\n"
        );
    }
    assert_eq!(take_text(&mut cluster, 0, hub), "");
    // The last local subscription gone: LS-.
    for (w, &sub) in subscribers.iter().enumerate() {
        cluster.send(w, sub, b"UNSUB 1\r\n");
    }
    cluster.settle();
    assert_eq!(take_text(&mut cluster, 0, hub), "LS- prices.>\r\n");
}

#[test]
fn a_hub_message_reaches_only_the_queue_groups_it_names() {
    let (mut cluster, hub) = cluster_with_hub();
    let member = nats_client(&mut cluster, 1, r#"{"verbose":false}"#);
    cluster.send(1, member, b"SUB jobs q 1\r\n");
    cluster.settle();
    take_text(&mut cluster, 0, hub);
    // Served elsewhere (no queue named), then left to this broker.
    cluster.send(0, hub, b"LMSG jobs 1\r\na\r\nLMSG jobs | q 1\r\nb\r\n");
    cluster.settle();
    assert_eq!(take_text(&mut cluster, 1, member), "MSG jobs 1 1\r\nb\r\n");
}

#[test]
fn a_queue_group_with_members_on_both_sides_delivers_each_message_once() {
    let (mut cluster, hub) = cluster_with_hub();
    cluster.send(0, hub, b"LS+ jobs q 3\r\n");
    let member = nats_client(&mut cluster, 1, r#"{"verbose":false}"#);
    cluster.send(1, member, b"SUB jobs q 1\r\n");
    cluster.settle();
    take_text(&mut cluster, 0, hub);
    let publisher = nats_client(&mut cluster, 1, r#"{"verbose":false}"#);
    let mut burst = String::new();
    for n in 0..200 {
        burst.push_str(&format!("PUB jobs 3\r\n{n:03}\r\n"));
    }
    cluster.send(1, publisher, burst.as_bytes());
    cluster.settle();
    let here = take_text(&mut cluster, 1, member)
        .matches("MSG jobs 1 3\r\n")
        .count();
    let sent = take_text(&mut cluster, 0, hub);
    let there = sent.matches("LMSG jobs | q 3\r\n").count();
    assert_eq!(here + there, 200, "{sent}");
    assert!(here > 0 && there > 0, "{here} here, {there} to the hub");
}

#[test]
fn while_the_hub_is_away_its_messages_are_dropped_and_counted_then_the_link_dials_again() {
    let (mut cluster, hub) = cluster_with_hub();
    cluster.send(0, hub, b"LS+ orders.>\r\n");
    let local = nats_client(&mut cluster, 1, r#"{"verbose":false}"#);
    cluster.send(1, local, b"SUB orders.> 1\r\n");
    cluster.settle();
    assert_eq!(take_text(&mut cluster, 0, hub), "LS+ orders.>\r\n");
    cluster.cores[0].on_closed(hub);
    cluster.settle();
    // Local delivery goes on; what the hub wanted is counted as dropped.
    let publisher = nats_client(&mut cluster, 1, r#"{"verbose":false}"#);
    cluster.send(
        1,
        publisher,
        b"PUB orders.1 1\r\nx\r\nPUB orders.2 1\r\ny\r\n",
    );
    cluster.settle();
    assert_eq!(
        take_text(&mut cluster, 1, local),
        "MSG orders.1 1 1\r\nx\r\nMSG orders.2 1 1\r\ny\r\n"
    );
    assert!(!cluster.cores[0].contains(hub));
    let link = cluster.cores[0].leaf_link().unwrap();
    assert_eq!((link.stats().dropped, link.is_up()), (2, false));
    assert_eq!(cluster.cores[0].take_dial(), None);
    // After the back-off (1 s at first, with jitter), a new dial: the old
    // hub's interest is gone, and once up the local interest is announced
    // again.
    let later = cluster.now + Duration::from_secs(3);
    cluster.now = later;
    cluster.cores[0].handle_timeout(later);
    let (again, _) = cluster.cores[0].take_dial().expect("a new dial");
    cluster.cores[0].dialled(again, Ok(()), later);
    cluster.settle();
    cluster.send(1, publisher, b"PUB orders.3 1\r\nz\r\n");
    cluster.settle();
    assert_eq!(cluster.cores[0].leaf_link().unwrap().stats().dropped, 2);
    cluster.send(0, again, HUB_INFO);
    cluster.send(0, again, b"PONG\r\n");
    let hello = take_text(&mut cluster, 0, again);
    assert!(hello.contains("LS+ orders.>\r\n"), "{hello}");
    assert!(!hello.contains("LMSG"), "{hello}");
}
