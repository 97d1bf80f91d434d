use super::*;

fn conn(id: u64, msgs_out: u64, subs: usize) -> ConnectionInfo {
    ConnectionInfo {
        id,
        worker: 0,
        peer: Some(format!("127.0.0.1:{}", 40000 + id)),
        name: Some(format!("c{id}")),
        subscriptions: subs,
        pending_bytes: 0,
        msgs_in: 10 * id,
        msgs_out,
        age_secs: 62.4,
        bytes_in: 100 * id,
        bytes_out: 1000 * id,
        protocol: "nats".into(),
        lang: Some("python3".into()),
        client_version: Some("2.16.0".into()),
        subjects: (0..subs).map(|n| format!("s.{n}")).collect(),
        tls_version: (id == 1).then(|| "1.3".into()),
        tls_cipher_suite: (id == 1).then(|| "TLS13_AES_256_GCM_SHA384".into()),
        user: (id == 2).then(|| "alice".into()),
    }
}

fn identity() -> Identity {
    Identity {
        server_id: "blipmq-1".into(),
        host: "127.0.0.1".into(),
        port: 4222,
        max_connections: 65536,
        ping_interval: Duration::from_secs(120),
        ping_max: 2,
        max_payload: 1 << 20,
        max_pending: 64 << 20,
        leaf_remote: None,
    }
}

#[test]
fn connz_sorts_pages_and_lists_subscriptions_as_nats_server_does() {
    let conns = vec![conn(1, 5, 0), conn(2, 50, 2), conn(3, 20, 1)];
    let query = ConnzQuery::parse("sort=msgs_to&limit=2&offset=0&subs=1").unwrap();
    let connz = render_connz(&identity(), conns.clone(), &query, SystemTime::now());
    assert_eq!(connz["server_id"], "blipmq-1");
    assert_eq!(connz["total"], 3);
    assert_eq!(connz["num_connections"], 2);
    assert_eq!(connz["limit"], 2);
    let page = connz["connections"].as_array().unwrap();
    assert_eq!(page[0]["cid"], 2);
    assert_eq!(page[1]["cid"], 3);
    assert_eq!(page[0]["ip"], "127.0.0.1");
    assert_eq!(page[0]["port"], 40002);
    assert_eq!(page[0]["out_msgs"], 50);
    assert_eq!(page[0]["in_bytes"], 200);
    assert_eq!(page[0]["uptime"], "1m2s");
    assert_eq!(page[0]["lang"], "python3");
    assert_eq!(page[0]["authorized_user"], "alice");
    assert!(
        page[1].get("authorized_user").is_none(),
        "only where there is a user"
    );
    assert_eq!(page[0]["subscriptions_list"], json!(["s.0", "s.1"]));
    assert!(
        page[0].get("tls_version").is_none(),
        "plaintext has no TLS fields"
    );

    let query = ConnzQuery::parse("").unwrap();
    let connz = render_connz(&identity(), conns.clone(), &query, SystemTime::now());
    assert_eq!(connz["connections"][0]["tls_version"], "1.3");
    assert_eq!(
        connz["connections"][0]["tls_cipher_suite"],
        "TLS13_AES_256_GCM_SHA384"
    );

    let query = ConnzQuery::parse("offset=2").unwrap();
    let connz = render_connz(&identity(), conns, &query, SystemTime::now());
    let page = connz["connections"].as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["cid"], 3, "by cid by default");
    assert!(page[0].get("subscriptions_list").is_none());
    assert!(ConnzQuery::parse("sort=nonsense").is_err());
    assert!(ConnzQuery::parse("limit=x").is_err());
    assert_eq!(ConnzQuery::parse("limit=99999").unwrap().limit, CONNZ_LIMIT);
}

#[test]
fn subsz_counts_and_lists() {
    let subs = vec![
        SubscriptionInfo {
            filter: "a.*".into(),
            queue: None,
            count: 2,
            delivered: 7,
        },
        SubscriptionInfo {
            filter: "jobs".into(),
            queue: Some("workers".into()),
            count: 3,
            delivered: 9,
        },
    ];
    let subsz = render_subsz(&identity(), &subs, true);
    assert_eq!(subsz["num_subscriptions"], 5);
    assert_eq!(subsz["subscriptions_list"][1]["qgroup"], "workers");
    assert_eq!(subsz["subscriptions_list"][1]["msgs"], 9);
    assert!(render_subsz(&identity(), &subs, false)
        .get("subscriptions_list")
        .is_none());
}

#[test]
fn go_durations() {
    assert_eq!(go_duration(Duration::from_millis(400)), "0s");
    assert_eq!(go_duration(Duration::from_secs(45)), "45s");
    assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
}

#[test]
fn leafz_shows_the_remote_from_worker_zeros_counters() {
    let segment = crate::stats::StatsSegment::anonymous(2).unwrap();
    let worker = segment.worker(0).unwrap();
    let with_remote = Identity {
        leaf_remote: Some(LeafRemote {
            name: "edge-1".into(),
            urls: vec!["10.0.0.1:7422".into(), "10.0.0.2:7422".into()],
        }),
        ..identity()
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let down = render_leafz(
        "b",
        with_remote.leaf_remote.as_ref(),
        &segment.snapshot(),
        now,
    );
    assert_eq!(down["leafnodes"], 0);
    assert_eq!(down["leafs"][0]["state"], "down");
    for (counter, value) in [
        (Counter::LeafConnected, 1),
        (Counter::LeafUrlIndex, 1),
        (Counter::LeafRttMicros, 250),
        (Counter::LeafMsgsIn, 7),
        (Counter::LeafMsgsOut, 9),
        (Counter::LeafLocalInterest, 3),
        (Counter::LeafConnects, 2),
        (Counter::DroppedLeaf, 4),
    ] {
        worker.set(counter, value);
    }
    let up = render_leafz(
        "b",
        with_remote.leaf_remote.as_ref(),
        &segment.snapshot(),
        now,
    );
    assert_eq!(up["leafnodes"], 1);
    let leaf = &up["leafs"][0];
    assert_eq!(leaf["name"], "edge-1");
    assert_eq!(
        (&leaf["ip"], &leaf["port"]),
        (&json!("10.0.0.2"), &json!(7422))
    );
    assert_eq!(leaf["state"], "up");
    assert_eq!(leaf["rtt"], "250µs");
    assert_eq!(
        (&leaf["in_msgs"], &leaf["out_msgs"]),
        (&json!(7), &json!(9))
    );
    assert_eq!(leaf["subscriptions"], 3);
    assert_eq!(
        (&leaf["reconnects"], &leaf["dropped"]),
        (&json!(1), &json!(4))
    );
    // No remote: an empty list, as nats-server's without leaves.
    assert_eq!(
        render_leafz("b", None, &segment.snapshot(), now)["leafs"],
        json!([])
    );
}
