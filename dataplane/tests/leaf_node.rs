//! blipmqd as a NATS leaf node: a broker started with `[[leafnode.remotes]]`
//! joins Debian's nats-server as its hub (both started by the test, on
//! loopback), and NATS clients on either side exchange messages through
//! the link: both ways, exactly once and in order, request/reply, queue
//! groups that span the leaf and the hub, and nothing sent that nobody on
//! the other side wants.
//!
//! Skipped with a reason when nats-server is not in PATH, unless CI=true.

mod common;

use std::time::{Duration, Instant};

use common::nats_hub::{
    await_hub_knows, await_leafz, leaf_config, numbers, payloads_until, publish_numbered,
    publish_until_received, Client, Hub, WITHIN,
};
use common::Broker;

/// A broker with a NATS listener that joins `hub` as leaf `name`.
fn leaf_of(hub: &Hub, workers: usize, name: &str) -> Broker {
    Broker::start(workers, &leaf_config(name, &[hub.leaf_port]))
}

/// A hub and a 2-worker broker that joined it as leaf `leaf-<name>`;
/// `None` (skip) without nats-server.
fn hub_and_leaf(name: &str) -> Option<(Hub, Broker)> {
    let hub = Hub::start(name, None)?;
    let broker = leaf_of(&hub, 2, &format!("leaf-{name}"));
    await_leafz(&hub, "the leaf", |leafz| leafz["leafnodes"] == 1);
    Some((hub, broker))
}

/// The hub's count of messages it received from its one leaf.
fn hub_in_msgs(hub: &Hub) -> u64 {
    hub.monitor("/leafz")["leafs"][0]["in_msgs"]
        .as_u64()
        .expect("in_msgs")
}

#[test]
fn messages_cross_the_link_both_ways_exactly_once() {
    let Some((hub, broker)) = hub_and_leaf("both-ways") else {
        return;
    };

    // Hub → leaf, with a wildcard, in order.
    let mut on_leaf = Client::connect(broker.nats_addr());
    on_leaf.send("SUB to.leaf.> 1\r\n");
    on_leaf.flush();
    await_hub_knows(&hub, "to.leaf.>");
    let mut on_hub = Client::connect(hub.client_addr());
    publish_numbered(&mut on_hub, "to.leaf.data", 200);
    on_hub.send("PUB to.leaf.end 0\r\n\r\n");
    on_hub.flush();
    assert_eq!(
        payloads_until(&mut on_leaf, "to.leaf.data", "to.leaf.end"),
        numbers(200)
    );

    // Leaf → hub, from a client on either worker, in order.
    let mut hub_sub = Client::connect(hub.client_addr());
    hub_sub.send("SUB to.hub.* 1\r\n");
    hub_sub.flush();
    for publisher in 0..2 {
        let mut on_leaf = Client::connect(broker.nats_addr());
        publish_until_received(&on_leaf, &mut hub_sub, "to.hub.sync");
        publish_numbered(&mut on_leaf, "to.hub.data", 200);
        on_leaf.send("PUB to.hub.end 0\r\n\r\n");
        on_leaf.flush();
        assert_eq!(
            payloads_until(&mut hub_sub, "to.hub.data", "to.hub.end"),
            numbers(200),
            "publisher {publisher}"
        );
    }

    // Subscribers on both sides of one subject: each message once to each,
    // never echoed back over the link.
    let mut both_on_leaf = Client::connect(broker.nats_addr());
    both_on_leaf.send("SUB both.x 1\r\nSUB both.end 2\r\n");
    both_on_leaf.flush();
    await_hub_knows(&hub, "both.end");
    let mut both_on_hub = Client::connect(hub.client_addr());
    both_on_hub.send("SUB both.x 1\r\nSUB both.end 2\r\n");
    both_on_hub.flush();
    publish_numbered(&mut on_hub, "both.x", 50);
    on_hub.send("PUB both.end 0\r\n\r\n");
    on_hub.flush();
    assert_eq!(
        payloads_until(&mut both_on_leaf, "both.x", "both.end"),
        numbers(50)
    );
    // Anything the leaf sent back would be on the link before this.
    let mut barrier = Client::connect(broker.nats_addr());
    publish_until_received(&barrier, &mut hub_sub, "to.hub.barrier");
    let seen = payloads_until(&mut both_on_hub, "both.x", "both.end");
    assert_eq!(seen, numbers(50));
    barrier.send("PUB both.end 0\r\n\r\n");
    barrier.flush();
    assert_eq!(
        payloads_until(&mut both_on_hub, "both.x", "both.end"),
        Vec::<String>::new(),
        "the leaf echoed hub messages back"
    );
}

#[test]
fn only_what_the_hub_wants_crosses_the_link() {
    let Some((hub, broker)) = hub_and_leaf("wants") else {
        return;
    };
    let mut hub_sub = Client::connect(hub.client_addr());
    hub_sub.send("SUB wanted 1\r\n");
    hub_sub.flush();
    let mut local_sub = Client::connect(broker.nats_addr());
    local_sub.send("SUB private.> 1\r\n");
    local_sub.flush();
    let mut publisher = Client::connect(broker.nats_addr());
    publish_until_received(&publisher, &mut hub_sub, "wanted");
    let before = hub_in_msgs(&hub);
    publish_numbered(&mut publisher, "private.data", 500);
    publisher.send("PUB wanted 0\r\n\r\n");
    publisher.flush();
    // Local delivery is whole; the hub got the one message it wanted.
    let mut local = Vec::new();
    while local.len() < 500 {
        local.push(String::from_utf8(local_sub.next_msg().payload).unwrap());
    }
    assert_eq!(local, numbers(500));
    hub_sub.next_msg_on("wanted");
    let deadline = Instant::now() + WITHIN;
    while hub_in_msgs(&hub) < before + 1 {
        assert!(Instant::now() < deadline, "the hub's in_msgs did not move");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        hub_in_msgs(&hub),
        before + 1,
        "messages nobody wanted crossed"
    );
}

#[test]
fn request_reply_across_the_link() {
    let Some((hub, broker)) = hub_and_leaf("request") else {
        return;
    };

    // A responder on the leaf, a requester on the hub.
    let mut responder = Client::connect(broker.nats_addr());
    responder.send("SUB svc.echo 1\r\n");
    responder.flush();
    await_hub_knows(&hub, "svc.echo");
    let mut requester = Client::connect(hub.client_addr());
    requester.send("SUB _INBOX.hub.1 9\r\nPUB svc.echo _INBOX.hub.1 4\r\nping\r\n");
    requester.flush();
    let request = responder.next_msg_on("svc.echo");
    assert_eq!(request.reply.as_deref(), Some("_INBOX.hub.1"));
    assert_eq!(request.payload, b"ping");
    responder.send("PUB _INBOX.hub.1 4\r\npong\r\n");
    responder.flush();
    assert_eq!(requester.next_msg_on("_INBOX.hub.1").payload, b"pong");

    // The other way: a responder on the hub, a requester on the leaf.
    let mut hub_responder = Client::connect(hub.client_addr());
    hub_responder.send("SUB svc.hub 1\r\n");
    hub_responder.flush();
    let mut leaf_requester = Client::connect(broker.nats_addr());
    leaf_requester.send("SUB _INBOX.leaf.> 9\r\n");
    leaf_requester.flush();
    await_hub_knows(&hub, "_INBOX.leaf.>");
    publish_until_received(&leaf_requester, &mut hub_responder, "svc.hub");
    leaf_requester.send("PUB svc.hub _INBOX.leaf.2 5\r\nhello\r\n");
    leaf_requester.flush();
    let request = loop {
        let msg = hub_responder.next_msg_on("svc.hub");
        if !msg.payload.is_empty() {
            break msg;
        }
    };
    assert_eq!(request.reply.as_deref(), Some("_INBOX.leaf.2"));
    hub_responder.send("PUB _INBOX.leaf.2 5\r\nworld\r\n");
    hub_responder.flush();
    assert_eq!(
        leaf_requester.next_msg_on("_INBOX.leaf.2").payload,
        b"world"
    );
}

#[test]
fn a_queue_group_spans_the_leaf_and_the_hub() {
    let Some((hub, broker)) = hub_and_leaf("queues") else {
        return;
    };
    // One member on each side; both also hear the plain end marker.
    let mut on_leaf = Client::connect(broker.nats_addr());
    on_leaf.send("SUB work q 1\r\nSUB work.end 2\r\n");
    on_leaf.flush();
    // (v2.9.10's list shows a queue subscription by its subject.)
    await_hub_knows(&hub, "work");
    await_hub_knows(&hub, "work.end");
    let mut on_hub = Client::connect(hub.client_addr());
    on_hub.send("SUB work q 1\r\nSUB work.end 2\r\nSUB work.sync 3\r\n");
    on_hub.flush();

    let hub_publisher = Client::connect(hub.client_addr());
    let leaf_publisher = Client::connect(broker.nats_addr());
    // The hub announced the group before work.sync: the leaf knows both
    // once a message on work.sync arrives.
    publish_until_received(&leaf_publisher, &mut on_hub, "work.sync");
    for (side, mut publisher) in [("hub", hub_publisher), ("leaf", leaf_publisher)] {
        publish_numbered(&mut publisher, "work", 400);
        publisher.send("PUB work.end 0\r\n\r\n");
        publisher.flush();
        let from_leaf = payloads_until(&mut on_leaf, "work", "work.end");
        let from_hub = payloads_until(&mut on_hub, "work", "work.end");
        let mut all: Vec<usize> = from_leaf
            .iter()
            .chain(&from_hub)
            .map(|p| p.parse().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..400).collect::<Vec<_>>(),
            "published on the {side}: each message to one member"
        );
        // nats-server serves a group from its own members first; BlipMQ
        // picks uniformly over its members and the hub's.
        if side == "leaf" {
            assert!(
                !from_leaf.is_empty() && !from_hub.is_empty(),
                "published on the leaf: both members served ({} on the leaf, {} on the hub)",
                from_leaf.len(),
                from_hub.len()
            );
        }
    }
}

/// `GET path` on the broker's metrics listener: the body.
fn broker_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WITHIN)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .expect("an HTTP response")
        .1
        .to_owned()
}

/// Polls the broker's `/leafz` until `done` holds (bounded); returns it.
fn await_broker_leafz(
    port: u16,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let leafz: serde_json::Value = serde_json::from_str(&broker_get(port, "/leafz")).unwrap();
        if done(&leafz) {
            return leafz;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {leafz}"
        );
        // Counters are written at the worker's tick: poll.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_link_shows_in_leafz_and_metrics_and_counts_drops_while_the_hub_is_away() {
    let Some(hub) = Hub::start("visible", None) else {
        return;
    };
    let metrics = common::nats_hub::free_port();
    let config = format!(
        "[nats]\nlisten = \"127.0.0.1:0\"\n\n[control]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\n\
         [[leafnode.remotes]]\nurls = [\"nats-leaf://127.0.0.1:{}\"]\nname = \"leaf-visible\"\n",
        hub.leaf_port
    );
    let broker = Broker::start(2, &config);
    let leafz = await_broker_leafz(metrics, "the link up", |l| l["leafnodes"] == 1);
    let leaf = &leafz["leafs"][0];
    assert_eq!(leaf["name"], "leaf-visible", "{leafz}");
    assert_eq!(
        leaf["url"],
        format!("127.0.0.1:{}", hub.leaf_port),
        "{leafz}"
    );
    assert_eq!(leaf["port"], hub.leaf_port, "{leafz}");

    let mut hub_sub = Client::connect(hub.client_addr());
    hub_sub.send("SUB seen 1\r\n");
    hub_sub.flush();
    let mut local_sub = Client::connect(broker.nats_addr());
    local_sub.send("SUB seen 1\r\n");
    local_sub.flush();
    let mut publisher = Client::connect(broker.nats_addr());
    publish_until_received(&publisher, &mut hub_sub, "seen");
    await_broker_leafz(metrics, "messages out and interest", |l| {
        l["leafs"][0]["out_msgs"].as_u64() >= Some(1)
            && l["leafs"][0]["hub_subscriptions"].as_u64() >= Some(1)
            && l["leafs"][0]["subscriptions"].as_u64() >= Some(1)
    });

    // The hub goes away: local delivery goes on, what the hub wanted is
    // counted as dropped.
    drop(hub);
    await_broker_leafz(metrics, "the link down", |l| {
        l["leafs"][0]["state"] == "down"
    });
    for i in 0..20 {
        publisher.send(&format!("PUB seen 2\r\n{i:02}\r\n"));
    }
    publisher.flush();
    let mut local = Vec::new();
    while local.len() < 20 {
        // (The empty copies are the sync's.)
        let msg = local_sub.next_msg();
        if !msg.payload.is_empty() {
            local.push(String::from_utf8(msg.payload).unwrap());
        }
    }
    assert_eq!(
        local,
        (0..20).map(|i| format!("{i:02}")).collect::<Vec<_>>()
    );
    let leafz = await_broker_leafz(metrics, "20 dropped", |l| {
        l["leafs"][0]["dropped"].as_u64() >= Some(20)
    });
    assert_eq!(leafz["leafs"][0]["dropped"], 20, "{leafz}");
    let text = broker_get(metrics, "/metrics");
    for metric in [
        "blipmq_leaf_connected",
        "blipmq_leaf_msgs_out_total",
        "blipmq_dropped_leaf_total",
        "blipmq_leaf_rtt_us",
    ] {
        assert!(text.contains(metric), "no {metric} in /metrics");
    }
}

#[test]
fn the_link_runs_over_tls_with_the_hubs_certificate_checked() {
    let pki = common::pki::Pki::new("leaf-hub", std::net::IpAddr::from([127, 0, 0, 1]));
    let tls = format!(
        "  tls {{\n    cert_file: {:?}\n    key_file: {:?}\n  }}\n",
        pki.path("server.pem"),
        pki.path("server-key.pem")
    );
    let Some(hub) = Hub::start_with("tls", &tls) else {
        return;
    };
    let remote = |ca: &std::path::Path| {
        format!(
            "[nats]\nlisten = \"127.0.0.1:0\"\n\n[[leafnode.remotes]]\n\
             urls = [\"tls://127.0.0.1:{}\"]\nname = \"leaf-tls\"\nca_file = {:?}\n",
            hub.leaf_port, ca
        )
    };
    let broker = Broker::start(2, &remote(&pki.ca()));
    await_leafz(&hub, "the leaf over TLS", |leafz| leafz["leafnodes"] == 1);
    // Both ways through it.
    let mut on_leaf = Client::connect(broker.nats_addr());
    on_leaf.send("SUB secure.> 1\r\n");
    on_leaf.flush();
    await_hub_knows(&hub, "secure.>");
    let mut on_hub = Client::connect(hub.client_addr());
    on_hub.send("SUB back 1\r\n");
    on_hub.flush();
    publish_numbered(&mut on_hub, "secure.in", 100);
    on_hub.send("PUB secure.end 0\r\n\r\n");
    on_hub.flush();
    assert_eq!(
        payloads_until(&mut on_leaf, "secure.in", "secure.end"),
        numbers(100)
    );
    let publisher = Client::connect(broker.nats_addr());
    publish_until_received(&publisher, &mut on_hub, "back");

    // A leaf that trusts another CA refuses the hub's certificate: it never
    // joins, and the broker runs on.
    let other = common::pki::Pki::other("leaf-hub", std::net::IpAddr::from([127, 0, 0, 1]));
    let metrics = common::nats_hub::free_port();
    let mut refused = Broker::start(1, &with_metrics(&remote(&other.ca()), metrics));
    await_failed_dial(metrics, "blipmq_tls_failures_total");
    assert_eq!(
        hub.monitor("/leafz")["leafnodes"],
        1,
        "a leaf with the wrong CA joined"
    );
    refused.assert_alive();
}

#[test]
fn headers_cross_the_link_both_ways() {
    let Some((hub, broker)) = hub_and_leaf("headers") else {
        return;
    };
    let headers = "NATS/1.0\r\nX-Trace: 7\r\n\r\n";
    let hpub = |subject: &str| {
        format!(
            "HPUB {subject} {} {}\r\n{headers}hello\r\n",
            headers.len(),
            headers.len() + 5
        )
    };
    let mut on_leaf = Client::connect(broker.nats_addr());
    on_leaf.send("SUB hdr.in 1\r\n");
    on_leaf.flush();
    await_hub_knows(&hub, "hdr.in");
    let mut on_hub = Client::connect(hub.client_addr());
    on_hub.send("SUB hdr.out 1\r\n");
    on_hub.send(&hpub("hdr.in"));
    on_hub.flush();
    let got = on_leaf.next_msg_on("hdr.in");
    assert_eq!(got.headers.as_deref(), Some(headers.as_bytes()));
    assert_eq!(got.payload, b"hello");

    let publisher = Client::connect(broker.nats_addr());
    publish_until_received(&publisher, &mut on_hub, "hdr.out");
    let mut publisher = publisher;
    publisher.send(&hpub("hdr.out"));
    publisher.flush();
    let got = loop {
        let msg = on_hub.next_msg_on("hdr.out");
        if !msg.payload.is_empty() {
            break msg;
        }
    };
    assert_eq!(got.headers.as_deref(), Some(headers.as_bytes()));
    assert_eq!(got.payload, b"hello");
}

#[test]
fn a_hub_that_verifies_leaves_takes_the_brokers_client_certificate() {
    let pki = common::pki::Pki::new("leaf-mtls", std::net::IpAddr::from([127, 0, 0, 1]));
    let tls = format!(
        "  tls {{\n    cert_file: {:?}\n    key_file: {:?}\n    ca_file: {:?}\n    verify: true\n  }}\n",
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.ca()
    );
    let Some(hub) = Hub::start_with("mtls", &tls) else {
        return;
    };
    let remote = |identity: &str| {
        format!(
            "[nats]\nlisten = \"127.0.0.1:0\"\n\n[[leafnode.remotes]]\n\
             urls = [\"tls://127.0.0.1:{}\"]\nname = \"leaf-mtls\"\nca_file = {:?}\n{identity}",
            hub.leaf_port,
            pki.ca()
        )
    };
    // Without a certificate the hub refuses the leaf; the broker runs on.
    let metrics = common::nats_hub::free_port();
    let mut anonymous = Broker::start(1, &with_metrics(&remote(""), metrics));
    await_failed_dial(metrics, "blipmq_leaf_disconnects_total");
    assert_eq!(
        hub.monitor("/leafz")["leafnodes"],
        0,
        "a leaf without a certificate joined"
    );
    anonymous.assert_alive();
    drop(anonymous);
    // With the client certificate it joins, and messages flow.
    let identity = format!(
        "cert_file = {:?}\nkey_file = {:?}\n",
        pki.path("client.pem"),
        pki.path("client-key.pem")
    );
    let broker = Broker::start(1, &remote(&identity));
    await_leafz(&hub, "the leaf with its certificate", |leafz| {
        leafz["leafnodes"] == 1
    });
    let mut on_hub = Client::connect(hub.client_addr());
    on_hub.send("SUB mtls 1\r\n");
    on_hub.flush();
    let publisher = Client::connect(broker.nats_addr());
    publish_until_received(&publisher, &mut on_hub, "mtls");
}

/// `config` with the broker's metrics on `port`.
fn with_metrics(config: &str, port: u16) -> String {
    format!("{config}\n[control]\nmetrics_listen = \"127.0.0.1:{port}\"\n")
}

/// The sum of a Prometheus metric's samples (over workers).
fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until the broker whose metrics are on `port` counts a
/// failure in `metric` and has never completed a handshake with the hub:
/// it dialled, and the hub or its certificate was refused.
fn await_failed_dial(port: u16, metric: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let text = broker_get(port, "/metrics");
        let connects = metric_total(&text, "blipmq_leaf_connects_total");
        assert_eq!(connects, 0.0, "the link came up");
        if metric_total(&text, metric) >= 1.0 {
            return;
        }
        assert!(Instant::now() < deadline, "no {metric} counted");
        // Counters are written at the worker's tick: poll.
        std::thread::sleep(Duration::from_millis(20));
    }
}
