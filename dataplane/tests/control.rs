//! The control socket end to end: `blipmqd` with `[control] socket`, JSON
//! lines from a test client, checked against what scripted clients did.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blipmq_protocol::{encode, Op, ServerFrame};
use common::*;
use serde_json::{json, Value};

/// A fresh socket path per test (tests run in parallel).
fn socket_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("blipmq-ctl-{}-{test}.sock", std::process::id()))
}

fn control_config(socket: &Path, extra: &str) -> String {
    format!(
        "[control]\nsocket = {:?}\n{extra}",
        socket.display().to_string()
    )
}

/// One request, one reply, on a new connection.
fn ask(socket: &Path, request: Value) -> Value {
    let stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    writeln!(writer, "{request}").expect("send the request");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read the reply");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
}

fn ok(reply: Value) -> Value {
    assert_eq!(reply["ok"], json!(true), "command failed: {reply}");
    reply
}

fn named(addr: std::net::SocketAddr, worker: u32, name: &str) -> Raw {
    let mut raw = Raw::on_worker(addr, worker);
    raw.do_connect(&format!(r#"{{"protocol":1,"name":"{name}"}}"#));
    raw
}

#[test]
fn the_socket_is_private_and_status_answers_for_every_worker() {
    let socket = socket_path("status");
    let broker = Broker::start(2, &control_config(&socket, ""));
    let mode = std::fs::metadata(&socket)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode");
    let status = ok(ask(&socket, json!({"cmd": "status"})));
    assert_eq!(status["healthy"], json!(true), "{status}");
    assert_eq!(status["pid"], json!(broker.pid()));
    let workers = status["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    for (w, worker) in workers.iter().enumerate() {
        assert_eq!(worker["worker"], json!(w));
        assert_eq!(worker["responding"], json!(true));
    }
    let bad = ask(&socket, json!({"cmd": "frobnicate"}));
    assert_eq!(bad["ok"], json!(false));
    assert!(bad["error"].as_str().unwrap().contains("unknown command"));
    let stats = ok(ask(&socket, json!({"cmd": "stats"})));
    assert!(
        stats.get("total").is_some() || stats.get("totals").is_some(),
        "{stats}"
    );
    let config = ok(ask(&socket, json!({"cmd": "config"})));
    assert!(config["toml"].as_str().unwrap().contains("[limits]"));
}

#[test]
fn connections_and_subscriptions_match_what_clients_did_and_kick_closes_one() {
    let socket = socket_path("conns");
    let broker = Broker::start(2, &control_config(&socket, ""));
    let mut alpha = named(broker.addr(), 0, "alpha");
    alpha.subscribe("a.b", 1);
    alpha.subscribe("a.*", 2);
    let mut beta = named(broker.addr(), 1, "beta");
    beta.subscribe_queue("a.b", 1, "q");
    let mut publisher = named(broker.addr(), 1, "pub");
    for _ in 0..5 {
        publisher.publish("a.b", b"hello");
    }
    publisher.ping_pong();
    for _ in 0..10 {
        alpha.expect_msg();
    }
    for _ in 0..5 {
        beta.expect_msg();
    }

    let conns = ok(ask(&socket, json!({"cmd": "connections"})));
    let conns = conns["connections"].as_array().expect("list").clone();
    assert_eq!(conns.len(), 3, "{conns:?}");
    let by_name = |name: &str| {
        conns
            .iter()
            .find(|c| c["name"] == json!(name))
            .unwrap_or_else(|| panic!("no connection named {name}: {conns:?}"))
            .clone()
    };
    let (a, b, p) = (by_name("alpha"), by_name("beta"), by_name("pub"));
    assert_eq!(
        (a["worker"].clone(), a["subscriptions"].clone()),
        (json!(0), json!(2))
    );
    assert_eq!(
        (b["worker"].clone(), b["subscriptions"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        a["msgs_out"],
        json!(10),
        "two subscriptions match each message"
    );
    assert_eq!(b["msgs_out"], json!(5));
    assert_eq!(p["msgs_in"], json!(5));
    assert_eq!(p["msgs_out"], json!(0));
    let peer = a["peer"].as_str().expect("peer address");
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");

    let subs = ok(ask(&socket, json!({"cmd": "subscriptions"})));
    let mut subs: Vec<(String, Value, u64)> = subs["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["filter"].as_str().unwrap().to_string(),
                s["queue"].clone(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    subs.sort_by(|x, y| (&x.0, x.1.to_string()).cmp(&(&y.0, y.1.to_string())));
    assert_eq!(
        subs,
        vec![
            ("a.*".to_string(), Value::Null, 1),
            ("a.b".to_string(), json!("q"), 1),
            ("a.b".to_string(), Value::Null, 1),
        ]
    );

    let kicked = ok(ask(&socket, json!({"cmd": "kick", "id": b["id"]})));
    assert_eq!(kicked["kicked"], b["id"]);
    let frames = beta.expect_closed();
    let last = frames.last().expect("a DISCONNECT before the close");
    assert!(last.is_op(Op::Disconnect), "{frames:?}");
    match last.parse() {
        ServerFrame::Disconnect { reason } => assert_eq!(reason, b"kicked by operator"),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let again = ask(&socket, json!({"cmd": "kick", "id": b["id"]}));
    assert_eq!(again["ok"], json!(false), "{again}");
    // The others are untouched.
    alpha.ping_pong();
    publisher.ping_pong();
}

#[test]
fn reload_changes_a_limit_on_live_connections_without_disconnecting_them() {
    let socket = socket_path("reload");
    let config = |max_subscriptions: u32| {
        control_config(
            &socket,
            &format!("[limits]\nmax_subscriptions = {max_subscriptions}\n"),
        )
    };
    let broker = Broker::start(2, &config(1));
    let mut client = Raw::handshake_on_worker(broker.addr(), 1);
    client.subscribe("x.1", 1);
    client.send_frame(|b| encode::put_subscribe(b, b"x.2", 2, None, true));
    client.expect_error(429);

    std::fs::write(broker.config_path(), config(3)).expect("rewrite the config");
    let reloaded = ok(ask(&socket, json!({"cmd": "reload"})));
    assert_eq!(reloaded["changed"], json!(["limits.max_subscriptions"]));
    assert_eq!(reloaded["needs_restart"], json!([]));
    assert_eq!(reloaded["live_connections"], json!(1));

    // Same connection, new limit.
    client.subscribe("x.2", 2);
    client.subscribe("x.3", 3);
    client.send_frame(|b| encode::put_subscribe(b, b"x.4", 4, None, true));
    client.expect_error(429);
    client.ping_pong();
}

#[test]
fn sighup_reloads_the_file_and_a_bad_file_changes_nothing() {
    let socket = socket_path("sighup");
    let config = |max_subscriptions: &str| {
        control_config(
            &socket,
            &format!("[limits]\nmax_subscriptions = {max_subscriptions}\n"),
        )
    };
    let mut broker = Broker::start(1, &config("1"));
    let mut client = Raw::handshake(broker.addr());
    client.subscribe("y.1", 1);

    std::fs::write(broker.config_path(), config("\"many\"")).expect("rewrite");
    let bad = ask(&socket, json!({"cmd": "reload"}));
    assert_eq!(bad["ok"], json!(false), "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("max_subscriptions"),
        "{bad}"
    );

    std::fs::write(broker.config_path(), config("2")).expect("rewrite");
    broker.signal(libc::SIGHUP);
    // Applied when the config command shows it (no sleep: poll the state).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shown = ok(ask(&socket, json!({"cmd": "config"})));
        if shown["toml"]
            .as_str()
            .unwrap()
            .contains("max_subscriptions = 2\n")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {shown}"
        );
        std::thread::yield_now();
    }
    client.subscribe("y.2", 2);
    broker.assert_alive();
}

#[test]
fn sighup_reloads_users_and_permissions_on_live_connections() {
    let socket = socket_path("users");
    let before = control_config(&socket, &users_toml());
    let broker = Broker::start(2, &before);
    let connect = |w: u32, json: &str| {
        let mut c = Raw::on_worker(broker.addr(), w);
        c.do_connect(json);
        c
    };
    let mut alice = connect(0, r#"{"protocol":1,"user":"alice","pass":"a-pass"}"#);
    let mut hashed = connect(1, r#"{"protocol":1,"user":"hashed","pass":"h-pass"}"#);
    let mut svc = connect(1, r#"{"protocol":1,"token":"svc-token"}"#);
    let conns = ok(ask(&socket, json!({"cmd": "connections"})));
    let mut users: Vec<&str> = conns["connections"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["user"].as_str().expect("each has a user"))
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "hashed", "svc"]);
    let shown = ok(ask(&socket, json!({"cmd": "config"})));
    let shown = shown["toml"].as_str().unwrap();
    for secret in ["a-pass", "svc-token", "$2b$"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    alice.send_frame(|b| encode::put_publish(b, b"billing", None, b"x", true));
    alice.expect_error(403);

    // alice may publish billing and orders.secret now; svc is gone; hashed
    // keeps its password.
    let after = before
        .replace(
            r#"permissions.publish = { allow = ["orders.>"], deny = ["orders.secret"] }"#,
            r#"permissions.publish = ["orders.>", "billing"]"#,
        )
        .split("[[auth.users]]\nuser = \"svc\"")
        .next()
        .unwrap()
        .to_string();
    assert!(after.contains("\"billing\"") && !after.contains("svc-token"));
    std::fs::write(broker.config_path(), &after).expect("rewrite");
    broker.signal(libc::SIGHUP);
    // Applied when the config command shows it (no sleep: poll the state).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ok(ask(&socket, json!({"cmd": "config"})))["toml"]
        .as_str()
        .unwrap()
        .contains("\"billing\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::yield_now();
    }
    alice.send_frame(|b| encode::put_publish(b, b"billing", None, b"x", true));
    alice.expect_ok();
    alice.send_frame(|b| encode::put_publish(b, b"orders.secret", None, b"x", true));
    alice.expect_ok();
    let reason = svc.expect_error_and_close(401);
    assert_eq!(reason, "authorization failed");
    hashed.ping_pong();
}

#[test]
fn drain_on_the_socket_tells_every_client_and_exits_0() {
    let socket = socket_path("drain");
    let mut broker = Broker::start(2, &control_config(&socket, ""));
    let mut clients: Vec<Raw> = (0..2)
        .map(|w| Raw::handshake_on_worker(broker.addr(), w))
        .collect();
    let reply = ok(ask(&socket, json!({"cmd": "drain"})));
    assert_eq!(reply["draining"], json!(true));
    for client in &mut clients {
        let frames = client.expect_closed();
        assert!(
            frames.iter().any(|f| f.is_op(Op::Disconnect)),
            "every client is told: {frames:?}"
        );
    }
    let status = broker.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn a_second_broker_cannot_take_a_live_socket() {
    let socket = socket_path("twice");
    let _first = Broker::start(1, &control_config(&socket, ""));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_blipmqd"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg({
            let path = socket.with_extension("second.toml");
            std::fs::write(&path, control_config(&socket, "")).unwrap();
            path
        })
        .output()
        .expect("run a second blipmqd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another blipmqd"), "{stderr}");
    let _ = std::fs::remove_file(socket.with_extension("second.toml"));
    // The first still answers.
    ok(ask(&socket, json!({"cmd": "status"})));
}

#[test]
fn the_port_view_of_the_kernel_backend_has_no_device() {
    let socket = socket_path("port-kernel");
    let _broker = Broker::start(1, &control_config(&socket, ""));
    let port = ok(ask(&socket, json!({"cmd": "port"})));
    assert_eq!(port["backend"], "kernel");
    assert!(port["device"].is_null(), "{port}");
    let queues = port["queues"].as_array().expect("queues");
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0]["rx_packets"], 0, "{port}");
}

#[test]
fn the_port_view_counts_each_afpacket_queue() {
    if Backend::AfPacket.available() {
        port_view(Backend::AfPacket, 1);
    }
}

#[test]
fn the_port_view_counts_each_dpdk_queue_and_the_nic() {
    if Backend::Dpdk.available() {
        port_view(Backend::Dpdk, 2);
    }
}

/// The clients' kernel sends GSO super-frames across the veth (TSO on
/// by default): the afpacket ring's 2 KiB slots take them whole through the
/// copy the kernel queues (PACKET_COPY_THRESH), so frames larger than a
/// slot arrive, none is cut, and the bytes are intact.
#[test]
fn afpacket_receives_frames_larger_than_a_ring_slot_whole() {
    if !Backend::AfPacket.available() {
        return;
    }
    let socket = socket_path("port-gso");
    let config = format!(
        "[limits]\nmax_payload = 262144\n\n{}",
        control_config(&socket, "")
    );
    let broker = Broker::start_on(Backend::AfPacket, 1, &config);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    // First into the void: what the broker receives is the publisher's
    // data (and a few handshake frames and ACKs), not a subscriber's ACKs.
    let mut publisher = Raw::handshake(broker.addr());
    for _ in 0..20 {
        publisher.publish("gso.void", &payload);
    }
    publisher.ping_pong();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let queue = loop {
        let port = ok(ask(&socket, json!({"cmd": "port"})));
        let queue = port["queues"][0].clone();
        if queue["rx_bytes"].as_u64() >= Some(20 * 200_000) {
            break queue;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic counted: {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let field = |name: &str| {
        queue[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {queue}"))
    };
    assert_eq!(field("rx_truncated"), 0, "{queue}");
    assert!(
        field("rx_bytes") / field("rx_packets") > 4096,
        "no super-frames came through whole: {queue}"
    );
    // And to a subscriber, every byte in place.
    let mut subscriber = Raw::handshake(broker.addr());
    subscriber.subscribe("gso", 1);
    subscriber.ping_pong();
    for _ in 0..5 {
        publisher.publish("gso", &payload);
    }
    publisher.ping_pong();
    for round in 0..5 {
        let msg = subscriber.expect_msg();
        assert!(msg.payload == payload, "message {round} differs");
    }
}

/// Traffic through a user-space broker shows in the control socket's
/// `port` view (each worker's queue; for DPDK the NIC's own counters and
/// xstats) and in its /metrics as `blipmq_port_*`.
fn port_view(backend: Backend, workers: usize) {
    let socket = socket_path(&format!("port-{backend:?}"));
    let broker = Broker::start_on(
        backend,
        workers,
        &control_config(&socket, "metrics_listen = \"127.0.0.1:18222\"\n"),
    );
    let mut subscriber = Raw::handshake(broker.addr());
    subscriber.subscribe("port.view", 1);
    let mut publisher = Raw::handshake(broker.addr());
    for _ in 0..10 {
        publisher.publish("port.view", b"hello");
    }
    publisher.ping_pong();
    for _ in 0..10 {
        subscriber.expect_msg();
    }
    // The counters reach the segment at the workers' next tick (100 ms).
    let deadline = std::time::Instant::now() + TIMEOUT;
    let port = loop {
        let port = ok(ask(&socket, json!({"cmd": "port"})));
        let sum = |field: &str| -> u64 {
            port["queues"]
                .as_array()
                .expect("queues")
                .iter()
                .map(|q| q[field].as_u64().unwrap_or(0))
                .sum()
        };
        // Two handshakes (SYN, ACK each way) and the frames after them.
        if sum("rx_packets") >= 6 && sum("tx_packets") >= 4 && sum("rx_bytes") >= 10 * 5 {
            break port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic in the port view: {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(port["queues"].as_array().map(Vec::len), Some(workers));
    let device = &port["device"];
    match backend {
        Backend::AfPacket => {
            assert_eq!(device["kind"], "afpacket", "{port}");
            assert_eq!(
                device["interface"],
                broker.lab().unwrap().broker_if.as_str()
            );
        }
        _ => {
            assert_eq!(device["kind"], "dpdk", "{port}");
            assert_eq!(device["driver"], "net_af_packet", "{port}");
            assert_eq!(device["queues"], workers, "{port}");
            assert!(device["stats"]["rx_packets"].as_u64() >= Some(6), "{port}");
            assert!(
                port["xstats"]["rx_good_packets"].as_u64() >= Some(6),
                "{port}"
            );
        }
    }
    // /metrics, in the broker's namespace.
    let path = format!("/var/run/netns/{}", broker.lab().unwrap().broker_ns);
    let metrics = common::netns::run_in(path, || {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect("127.0.0.1:18222").expect("/metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("response");
        body
    });
    assert!(
        metrics.contains("# TYPE blipmq_port_rx_packets_total counter"),
        "{metrics}"
    );
    if backend == Backend::Dpdk {
        assert!(
            metrics.contains("blipmq_port_xstat{name=\"rx_good_packets\"}"),
            "{metrics}"
        );
        assert!(metrics.contains("blipmq_port_nic_rx_packets_total{worker=\"0\"}"));
    }
}
