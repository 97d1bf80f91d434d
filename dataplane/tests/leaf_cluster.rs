//! blipmqd leaves of a nats-server cluster: three nats-server nodes routed
//! to each other on loopback (Debian's nats-server, started by the test),
//! blipmqd leaves attached to different nodes, and NATS clients on the
//! leaves and on a node no leaf is on.
//!
//! - The topology: messages go leaf → hub → leaf, leaf → hub clients and
//!   hub clients → leaves, with wildcards, a queue group whose members are
//!   on both leaves and a hub node (each message to one member), request/
//!   reply between the leaves, and a subject with subscribers everywhere
//!   (each message to each once, in order per publisher).
//! - BlipMQ's own protocol on the leaves: its clients reach each other and
//!   the hub's NATS clients through the cluster, both ways.
//! - Failover: the hub node a leaf is on dies; the leaf moves to the next
//!   URL, the cluster's interest comes back, messages published while the
//!   link was down are lost (core NATS: at most once) and no others, and
//!   local delivery on the leaf goes on meanwhile; a leaf told of one node
//!   finds the others the hub advertises.
//!
//! Skipped with a reason when nats-server is not in PATH, unless CI=true.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats_hub::{
    await_hub_knows, await_leafz, leaf_config, numbers, payloads_until, publish_numbered,
    publish_until_received, Client, HubCluster, WITHIN,
};
use common::Broker;

/// Reads `subscriber`'s messages on `subject` until it has had one on
/// `end` from each of `ends` publishers: the payloads, in arrival order.
fn payloads_until_ends(
    subscriber: &mut Client,
    subject: &str,
    end: &str,
    ends: usize,
) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut seen = 0;
    while seen < ends {
        let msg = subscriber.next_msg();
        if msg.subject == end {
            seen += 1;
        } else if msg.subject == subject {
            payloads.push(String::from_utf8(msg.payload).unwrap());
        }
    }
    payloads
}

/// Those of `payloads` that start with `prefix`, without it.
fn from_publisher(payloads: &[String], prefix: &str) -> Vec<String> {
    payloads
        .iter()
        .filter_map(|p| p.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

/// The number of `remote`'s next message on `fo.data`, and when it came.
fn next_data(remote: &mut Client) -> (usize, Instant) {
    let msg = remote.next_msg_on("fo.data");
    let n = String::from_utf8(msg.payload).unwrap().parse().unwrap();
    (n, Instant::now())
}

#[test]
fn leaves_on_different_nodes_of_a_hub_cluster() {
    let Some(cluster) = HubCluster::start("topology", 3) else {
        return;
    };
    let [node0, node1, node2] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let leaf_a = Broker::start(2, &leaf_config("leaf-a", &[node0.leaf_port]));
    let leaf_b = Broker::start(2, &leaf_config("leaf-b", &[node1.leaf_port]));
    await_leafz(node0, "leaf A on node 0", |leafz| leafz["leafnodes"] == 1);
    await_leafz(node1, "leaf B on node 1", |leafz| leafz["leafnodes"] == 1);
    assert_eq!(node2.monitor("/leafz")["leafnodes"], 0);

    // Leaf → hub → leaf: a publisher on A, a wildcard subscriber on B.
    let mut on_b = Client::connect(leaf_b.nats_addr());
    on_b.send("SUB a2b.> 1\r\n");
    on_b.flush();
    await_hub_knows(node1, "a2b.>");
    let mut pub_a = Client::connect(leaf_a.nats_addr());
    publish_until_received(&pub_a, &mut on_b, "a2b.sync");
    publish_numbered(&mut pub_a, "a2b.data", 300);
    pub_a.send("PUB a2b.end 0\r\n\r\n");
    pub_a.flush();
    assert_eq!(
        payloads_until(&mut on_b, "a2b.data", "a2b.end"),
        numbers(300),
        "leaf A → node 0 → node 1 → leaf B"
    );

    // Leaves → a client of node 2 (on which no leaf is), from each leaf.
    let mut on_node2 = Client::connect(node2.client_addr());
    on_node2.send("SUB l2h.* 1\r\n");
    on_node2.flush();
    for (leaf, broker) in [("A", &leaf_a), ("B", &leaf_b)] {
        let mut publisher = Client::connect(broker.nats_addr());
        publish_until_received(&publisher, &mut on_node2, "l2h.sync");
        publish_numbered(&mut publisher, "l2h.data", 300);
        publisher.send("PUB l2h.end 0\r\n\r\n");
        publisher.flush();
        assert_eq!(
            payloads_until(&mut on_node2, "l2h.data", "l2h.end"),
            numbers(300),
            "leaf {leaf} → node 2's client"
        );
    }

    // A client of node 2 → wildcard subscribers on both leaves.
    let mut leaf_subs: Vec<Client> = [&leaf_a, &leaf_b]
        .iter()
        .map(|broker| {
            let mut sub = Client::connect(broker.nats_addr());
            sub.send("SUB h2l.> 1\r\n");
            sub.flush();
            sub
        })
        .collect();
    await_hub_knows(node0, "h2l.>");
    await_hub_knows(node1, "h2l.>");
    let mut pub_node2 = Client::connect(node2.client_addr());
    for sub in &mut leaf_subs {
        publish_until_received(&pub_node2, sub, "h2l.sync");
    }
    publish_numbered(&mut pub_node2, "h2l.data", 300);
    pub_node2.send("PUB h2l.end 0\r\n\r\n");
    pub_node2.flush();
    for (leaf, sub) in ["A", "B"].iter().zip(&mut leaf_subs) {
        assert_eq!(
            payloads_until(sub, "h2l.data", "h2l.end"),
            numbers(300),
            "node 2's client → leaf {leaf}"
        );
    }

    // A queue group with a member on A, on B and on node 2; each also
    // hears the plain end marker and sync subject. The group is announced
    // before the sync subject, so a publisher's side knows the remote
    // members once a sync message reaches them.
    let mut members: Vec<Client> = [leaf_a.nats_addr(), leaf_b.nats_addr(), node2.client_addr()]
        .into_iter()
        .map(|addr| {
            let mut member = Client::connect(addr);
            member.send("SUB work q 1\r\nSUB work.end 2\r\nSUB work.sync 3\r\n");
            member.flush();
            member
        })
        .collect();
    await_hub_knows(node0, "work");
    await_hub_knows(node1, "work");
    let publishers = [
        ("leaf A", leaf_a.nats_addr(), 0),
        ("leaf B", leaf_b.nats_addr(), 1),
        ("node 2", node2.client_addr(), 2),
    ];
    let member_names = ["leaf A", "leaf B", "node 2"];
    for (side, addr, local) in publishers {
        let mut publisher = Client::connect(addr);
        for (i, member) in members.iter_mut().enumerate() {
            if i != local {
                publish_until_received(&publisher, member, "work.sync");
            }
        }
        publish_numbered(&mut publisher, "work", 600);
        publisher.send("PUB work.end 0\r\n\r\n");
        publisher.flush();
        let got: Vec<Vec<String>> = members
            .iter_mut()
            .map(|member| payloads_until(member, "work", "work.end"))
            .collect();
        let mut all: Vec<usize> = got.iter().flatten().map(|p| p.parse().unwrap()).collect();
        all.sort_unstable();
        let counts: Vec<String> = member_names
            .iter()
            .zip(&got)
            .map(|(name, got)| format!("{name}: {}", got.len()))
            .collect();
        eprintln!("queue group, published on {side}: {}", counts.join(", "));
        assert_eq!(
            all,
            (0..600).collect::<Vec<_>>(),
            "published on {side}: each message to exactly one member ({})",
            counts.join(", ")
        );
        // BlipMQ picks uniformly over its own members and the hub's (the
        // hub serves its own, nats-server's, choice of member).
        if local != 2 {
            let elsewhere: usize = (0..3).filter(|&i| i != local).map(|i| got[i].len()).sum();
            assert!(
                elsewhere > 0,
                "published on {side}: no member elsewhere served ({})",
                counts.join(", ")
            );
        }
    }

    // Request/reply: a requester on A, a responder on B.
    let mut responder = Client::connect(leaf_b.nats_addr());
    responder.send("SUB svc.b 1\r\n");
    responder.flush();
    let mut requester = Client::connect(leaf_a.nats_addr());
    requester.send("SUB _INBOX.a.> 9\r\n");
    requester.flush();
    await_hub_knows(node1, "svc.b");
    await_hub_knows(node0, "_INBOX.a.>");
    // A knows of the responder, B of the requester's inbox.
    publish_until_received(&requester, &mut responder, "svc.b");
    publish_until_received(&responder, &mut requester, "_INBOX.a.sync");
    for n in 0..20 {
        let inbox = format!("_INBOX.a.{n}");
        let question = format!("ping {n}");
        requester.send(&format!(
            "PUB svc.b {inbox} {}\r\n{question}\r\n",
            question.len()
        ));
        requester.flush();
        let request = loop {
            let msg = responder.next_msg_on("svc.b");
            // (Skips the empty sync messages.)
            if !msg.payload.is_empty() {
                break msg;
            }
        };
        assert_eq!(request.reply.as_deref(), Some(inbox.as_str()));
        assert_eq!(request.payload, question.as_bytes());
        let answer = format!("pong {n}");
        responder.send(&format!("PUB {inbox} {}\r\n{answer}\r\n", answer.len()));
        responder.flush();
        assert_eq!(
            requester.next_msg_on(&inbox).payload,
            answer.as_bytes(),
            "reply {n} from leaf B to leaf A"
        );
    }

    // One subject, a subscriber on A, on B and on node 2; publishers on A
    // and on node 2 at once: each subscriber gets every message once, in
    // order per publisher.
    let mut subscribers: Vec<Client> =
        [leaf_a.nats_addr(), leaf_b.nats_addr(), node2.client_addr()]
            .into_iter()
            .map(|addr| {
                let mut sub = Client::connect(addr);
                sub.send("SUB fan 1\r\nSUB fan.end 2\r\nSUB fan.sync 3\r\n");
                sub.flush();
                sub
            })
            .collect();
    await_hub_knows(node0, "fan.sync");
    await_hub_knows(node1, "fan.sync");
    let mut fan_a = Client::connect(leaf_a.nats_addr());
    let mut fan_node2 = Client::connect(node2.client_addr());
    for (i, sub) in subscribers.iter_mut().enumerate() {
        if i != 0 {
            publish_until_received(&fan_a, sub, "fan.sync");
        }
        if i != 2 {
            publish_until_received(&fan_node2, sub, "fan.sync");
        }
    }
    let mut frames_a = String::new();
    let mut frames_node2 = String::new();
    for i in 0..500 {
        let (a, h) = (format!("a{i}"), format!("h{i}"));
        frames_a.push_str(&format!("PUB fan {}\r\n{a}\r\n", a.len()));
        frames_node2.push_str(&format!("PUB fan {}\r\n{h}\r\n", h.len()));
    }
    // Interleaved in time: both publishers write from their own thread.
    let mut writer_a = fan_a.writer();
    let mut writer_node2 = fan_node2.writer();
    let both = [
        std::thread::spawn(move || writer_a.write_all(frames_a.as_bytes()).unwrap()),
        std::thread::spawn(move || writer_node2.write_all(frames_node2.as_bytes()).unwrap()),
    ];
    for publishing in both {
        publishing.join().unwrap();
    }
    fan_a.send("PUB fan.end 0\r\n\r\n");
    fan_node2.send("PUB fan.end 0\r\n\r\n");
    fan_a.flush();
    fan_node2.flush();
    let expect =
        |prefix: &str| -> Vec<String> { (0..500).map(|i| format!("{prefix}{i}")).collect() };
    for (name, sub) in member_names.iter().zip(&mut subscribers) {
        let got = payloads_until_ends(sub, "fan", "fan.end", 2);
        let (from_a, from_node2) = (from_publisher(&got, "a"), from_publisher(&got, "h"));
        assert_eq!(
            from_a.len() + from_node2.len(),
            got.len(),
            "{name}: strangers"
        );
        let with = |prefix: &str, list: Vec<String>| -> Vec<String> {
            list.into_iter().map(|p| format!("{prefix}{p}")).collect()
        };
        assert_eq!(
            with("a", from_a),
            expect("a"),
            "subscriber on {name}: leaf A's messages, once each, in order"
        );
        assert_eq!(
            with("h", from_node2),
            expect("h"),
            "subscriber on {name}: node 2's messages, once each, in order"
        );
    }
    // Nothing came twice later (an echo over a link would be behind these
    // markers, on the same paths).
    fan_a.send("PUB fan.end 0\r\n\r\n");
    fan_node2.send("PUB fan.end 0\r\n\r\n");
    fan_a.flush();
    fan_node2.flush();
    for (name, sub) in member_names.iter().zip(&mut subscribers) {
        assert_eq!(
            payloads_until_ends(sub, "fan", "fan.end", 2),
            Vec::<String>::new(),
            "subscriber on {name}: duplicates after the end markers"
        );
    }
}

#[test]
fn a_leaf_fails_over_to_the_next_hub_node() {
    let Some(mut cluster) = HubCluster::start("failover", 3) else {
        return;
    };
    let (leaf0, leaf1) = (cluster.nodes[0].leaf_port, cluster.nodes[1].leaf_port);
    let leaf = Broker::start(2, &leaf_config("leaf-failover", &[leaf0, leaf1]));
    // The leaf dials its first URL first.
    await_leafz(&cluster.nodes[0], "the leaf on node 0", |leafz| {
        leafz["leafnodes"] == 1
    });
    assert_eq!(cluster.nodes[1].monitor("/leafz")["leafnodes"], 0);

    let mut remote = Client::connect(cluster.nodes[2].client_addr());
    remote.send("SUB fo.> 1\r\n");
    remote.flush();
    let mut publisher = Client::connect(leaf.nats_addr());
    publish_until_received(&publisher, &mut remote, "fo.sync");

    // A local subscriber, read meanwhile in its own thread: each message's
    // number and arrival time.
    let mut local = Client::connect(leaf.nats_addr());
    local.send("SUB fo.data 1\r\nSUB fo.end 2\r\n");
    local.flush();
    let local_reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            let msg = local.next_msg();
            if msg.subject == "fo.end" {
                return got;
            }
            let n: usize = String::from_utf8(msg.payload).unwrap().parse().unwrap();
            got.push((n, Instant::now()));
        }
    });
    // Numbered messages, one every 2 ms, until told to stop (or 20 s).
    let published = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (published, stop) = (published.clone(), stop.clone());
        let mut writer = publisher.writer();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                writer
                    .write_all(format!("PUB fo.data {}\r\n{n}\r\n", n.to_string().len()).as_bytes())
                    .unwrap();
                n += 1;
                published.store(n, Ordering::Release);
                // The publisher's pace, not a synchronisation.
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    let mut received: Vec<(usize, Instant)> = Vec::new();
    while received.len() < 100 {
        received.push(next_data(&mut remote));
    }

    // Kill the node the leaf is on; messages from #kill_seq on are
    // published after it died.
    let killed_at = Instant::now();
    cluster.kill(0);
    let kill_seq = published.load(Ordering::Acquire);

    // Wait for a message published after the kill to reach node 2.
    let deadline = killed_at + WITHIN;
    let (resumed_seq, resumed_at) = loop {
        let (n, at) = next_data(&mut remote);
        received.push((n, at));
        if n >= kill_seq {
            break (n, at);
        }
        assert!(Instant::now() < deadline, "no message after the kill");
    };
    let outage = resumed_at - killed_at;
    await_leafz(&cluster.nodes[1], "the leaf on node 1", |leafz| {
        leafz["leafnodes"] == 1
    });
    // Half a second more of steady traffic, then the end.
    let more = received.len() + 250;
    while received.len() < more {
        received.push(next_data(&mut remote));
    }
    stop.store(true, Ordering::Relaxed);
    let total = publishing.join().unwrap();
    publisher.send("PUB fo.end 0\r\n\r\n");
    publisher.flush();
    for payload in payloads_until(&mut remote, "fo.data", "fo.end") {
        received.push((payload.parse().unwrap(), Instant::now()));
    }
    let local_got = local_reader.join().unwrap();

    // Node 2: in order, no duplicates, and the lost ones one run of
    // messages around the outage.
    let seqs: Vec<usize> = received.iter().map(|&(n, _)| n).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "node 2 got messages out of order or twice"
    );
    let lost: Vec<usize> = (0..total)
        .filter(|n| seqs.binary_search(n).is_err())
        .collect();
    let in_window = resumed_seq - kill_seq;
    eprintln!(
        "failover: outage {:.3} s (kill → first message published after it on node 2); \
         {} lost of {total} (#{}..#{}); {in_window} published from the kill (#{kill_seq}) to \
         the first delivered after it (#{resumed_seq})",
        outage.as_secs_f64(),
        lost.len(),
        lost.first().copied().unwrap_or(0),
        lost.last().copied().unwrap_or(0),
    );
    assert!(outage < WITHIN, "outage {outage:?}");
    // In flight when the node died: at most 100 ms of messages.
    const MARGIN: usize = 50;
    if let (Some(&first), Some(&last)) = (lost.first(), lost.last()) {
        assert_eq!(last - first + 1, lost.len(), "lost: not one run: {lost:?}");
        assert!(
            first + MARGIN >= kill_seq && last < resumed_seq,
            "lost #{first}..#{last}, killed at #{kill_seq}, resumed at #{resumed_seq}"
        );
    }
    assert!(lost.len() <= in_window + MARGIN);
    assert!(
        seqs.last().is_some_and(|&n| n + 1 == total),
        "the last messages were delivered"
    );

    // The leaf's own subscriber: every message, in order, and those
    // published during the outage during the outage.
    let local_seqs: Vec<usize> = local_got.iter().map(|&(n, _)| n).collect();
    assert_eq!(local_seqs, (0..total).collect::<Vec<_>>(), "local delivery");
    let late: Vec<usize> = local_got
        .iter()
        .filter(|&&(n, at)| (kill_seq..resumed_seq).contains(&n) && at > resumed_at)
        .map(|&(n, _)| n)
        .collect();
    assert!(
        late.is_empty(),
        "local delivery stalled with the link: {} messages of the outage came after it",
        late.len()
    );
    let max_gap = local_got
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default();
    eprintln!(
        "failover: local subscriber got all {total}; longest gap between two {:.1} ms",
        max_gap.as_secs_f64() * 1000.0
    );
}

/// A leaf given one node's URL learns the others from the hub's INFO
/// (`leafnode_urls`) and fails over to one of them.
#[test]
fn a_leaf_told_of_one_node_finds_the_others() {
    let Some(mut cluster) = HubCluster::start("advertised", 3) else {
        return;
    };
    let leaf0 = cluster.nodes[0].leaf_port;
    let leaf = Broker::start(1, &leaf_config("leaf-advertised", &[leaf0]));
    await_leafz(&cluster.nodes[0], "the leaf on node 0", |leafz| {
        leafz["leafnodes"] == 1
    });
    let mut remote = Client::connect(cluster.nodes[2].client_addr());
    remote.send("SUB adv.> 1\r\n");
    remote.flush();
    let publisher = Client::connect(leaf.nats_addr());
    publish_until_received(&publisher, &mut remote, "adv.before");
    cluster.kill(0);
    publish_until_received(&publisher, &mut remote, "adv.after");
    let joined: u64 = [1, 2]
        .iter()
        .map(|&i| {
            cluster.nodes[i].monitor("/leafz")["leafnodes"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(joined, 1, "the leaf is on node 1 or node 2");
}

/// BlipMQ's own protocol on the leaves: its clients reach each other
/// through the hub cluster, and NATS clients of the hub, both ways.
#[test]
fn blipmq_protocol_clients_on_two_leaves() {
    let Some(cluster) = HubCluster::start("binary", 3) else {
        return;
    };
    let [node0, node1, node2] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let leaf_a = Broker::start(1, &leaf_config("leaf-bin-a", &[node0.leaf_port]));
    let leaf_b = Broker::start(1, &leaf_config("leaf-bin-b", &[node1.leaf_port]));
    await_leafz(node0, "leaf A on node 0", |leafz| leafz["leafnodes"] == 1);
    await_leafz(node1, "leaf B on node 1", |leafz| leafz["leafnodes"] == 1);

    let on_b = blipmq_client::Client::connect(leaf_b.addr()).unwrap();
    let sub_b = on_b.subscribe("bin.>").unwrap();
    let mut on_node2 = Client::connect(node2.client_addr());
    on_node2.send("SUB bin.> 1\r\n");
    on_node2.flush();
    await_hub_knows(node1, "bin.>");
    let on_a = blipmq_client::Client::connect(leaf_a.addr()).unwrap();
    // Until B's interest has reached leaf A through the cluster.
    let deadline = Instant::now() + WITHIN;
    loop {
        on_a.publish("bin.sync", b"").unwrap();
        if let Ok(msg) = sub_b.recv_timeout(Duration::from_millis(20)) {
            assert_eq!(msg.subject, "bin.sync");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaf A never learnt leaf B's interest"
        );
    }
    for i in 0..200 {
        on_a.publish("bin.data", i.to_string().as_bytes()).unwrap();
    }
    on_a.publish("bin.end", b"").unwrap();
    on_a.flush().unwrap();
    let mut got = Vec::new();
    loop {
        let msg = sub_b.recv_timeout(WITHIN).expect("a message on leaf B");
        match msg.subject.as_str() {
            "bin.end" => break,
            "bin.data" => got.push(String::from_utf8(msg.payload.to_vec()).unwrap()),
            _ => {}
        }
    }
    assert_eq!(
        got,
        numbers(200),
        "BlipMQ client on A → hub → BlipMQ client on B"
    );
    assert_eq!(
        payloads_until(&mut on_node2, "bin.data", "bin.end"),
        numbers(200),
        "BlipMQ client on A → a NATS client of node 2"
    );

    // A NATS client of node 2 → the BlipMQ client on B.
    publish_numbered(&mut on_node2, "bin.back", 50);
    on_node2.send("PUB bin.end 0\r\n\r\n");
    on_node2.flush();
    let mut back = Vec::new();
    loop {
        let msg = sub_b.recv_timeout(WITHIN).expect("a message on leaf B");
        match msg.subject.as_str() {
            "bin.end" => break,
            "bin.back" => back.push(String::from_utf8(msg.payload.to_vec()).unwrap()),
            _ => {}
        }
    }
    assert_eq!(back, numbers(50));
}
