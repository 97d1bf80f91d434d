//! `blipmqd` with `[control] metrics_listen`: the in-process HTTP server's
//! `/metrics` parses with a Prometheus text-format parser and counts a
//! scripted workload exactly; `/healthz` turns 503 while a worker stalls
//! (the `BLIPMQ_TEST_STALL_WORKER` hook) and 200 again after.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blipmq_dataplane::server::TEST_STALL_VAR;
use blipmq_dataplane::stats::Counter;
use common::Raw;
use prometheus_parse::{Scrape, Value};

/// How long a polled condition may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// A `blipmqd` child with its broker and metrics addresses; killed on drop.
struct Blipmqd {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    config_path: PathBuf,
}

impl Blipmqd {
    /// Starts `blipmqd` with `metrics_listen = "127.0.0.1:0"` and JSON logs,
    /// and learns the metrics port from its "metrics listening" log line.
    fn start(workers: usize, env: &[(&str, &str)]) -> Blipmqd {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let config_path = std::env::temp_dir().join(format!(
            "blipmqd-http-test-{}-{}.toml",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let config = "[log]\nformat = \"json\"\n\n[control]\nmetrics_listen = \"127.0.0.1:0\"\n";
        std::fs::write(&config_path, config).expect("write the config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_blipmqd"));
        command
            .args(["--listen", "127.0.0.1:0", "--workers"])
            .arg(workers.to_string())
            .arg("--config")
            .arg(&config_path)
            .env_remove(TEST_STALL_VAR)
            .env("RUST_LOG", "blipmq_dataplane::server=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn blipmqd");

        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stdout_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("blipmqd listening on ") {
                    let _ = stdout_tx.send(("broker", addr.trim().to_owned()));
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let fields = &event["fields"];
                let message = fields["message"].as_str().unwrap_or_default();
                if message.starts_with("metrics listening on") {
                    let addr = fields["addr"].as_str().unwrap_or_default().to_owned();
                    let _ = tx.send(("metrics", addr));
                } else {
                    eprintln!("blipmqd: {line}");
                }
            }
        });

        let mut addrs = HashMap::new();
        let deadline = Instant::now() + DEADLINE;
        while addrs.len() < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((which, addr)) => {
                    let addr: SocketAddr = addr.parse().expect("an address");
                    addrs.insert(which, addr);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("blipmqd did not report both addresses: {addrs:?}");
                }
            }
        }
        Blipmqd {
            child,
            addr: addrs["broker"],
            metrics: addrs["metrics"],
            config_path,
        }
    }
}

impl Drop for Blipmqd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// A parsed HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP request (the server closes after each answer).
fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    Answer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path)
}

/// GETs `path` until `done` holds, at most [`DEADLINE`]; the last answer.
fn get_until(addr: SocketAddr, path: &str, done: impl Fn(&Answer) -> bool) -> Answer {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = get(addr, path);
        if done(&answer) || Instant::now() >= deadline {
            return answer;
        }
        // Nothing to wait on across processes: poll.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("/metrics parses")
}

/// The sum over workers of metric `name` (or its one unlabelled sample).
fn total(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
        .sum()
}

#[test]
fn metrics_count_a_scripted_workload() {
    // No stats_file: the in-process server reads the anonymous segment.
    let broker = Blipmqd::start(2, &[]);
    let mut sub = Raw::handshake(broker.addr);
    sub.subscribe("http.>", 1);
    let mut publisher = Raw::handshake(broker.addr);
    for i in 0..10u32 {
        publisher.publish("http.x", &i.to_be_bytes());
    }
    publisher.ping_pong();
    for _ in 0..10 {
        sub.expect_message();
    }

    let published = Counter::MessagesPublished.prometheus_name();
    let delivered = Counter::MessagesDelivered.prometheus_name();
    let answer = get_until(broker.metrics, "/metrics", |a| {
        let scrape = parse(&a.body);
        total(&scrape, &published) == 10.0 && total(&scrape, &delivered) == 10.0
    });
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let scrape = parse(&answer.body);
    for (counter, value) in [
        (Counter::MessagesPublished, 10.0),
        (Counter::MessagesDelivered, 10.0),
        (Counter::FramesInPublish, 10.0),
        (Counter::FramesInSubscribe, 1.0),
        (Counter::FramesInPing, 1.0),
        (Counter::ConnectionsAccepted, 2.0),
        (Counter::ConnectionsOpen, 2.0),
        (Counter::Subscriptions, 1.0),
        (Counter::DroppedSlowConsumer, 0.0),
    ] {
        let name = counter.prometheus_name();
        assert_eq!(total(&scrape, &name), value, "{name}");
        assert_eq!(
            scrape.docs.get(&name).map(String::as_str),
            Some(counter.help()),
            "HELP of {name}"
        );
        let workers = scrape.samples.iter().filter(|s| s.metric == name).count();
        assert_eq!(workers, 2, "{name}: one sample per worker");
    }
    assert!(scrape
        .samples
        .iter()
        .all(|s| s.metric.starts_with("blipmq_")));
    assert_eq!(total(&scrape, "blipmq_workers"), 2.0);
    assert!(answer
        .body
        .contains("# TYPE blipmq_messages_published_total counter\n"));
    assert!(answer
        .body
        .contains("# TYPE blipmq_connections_open gauge\n"));

    let health = get_until(broker.metrics, "/healthz", |a| a.status == 200);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let varz = get(broker.metrics, "/varz");
    assert_eq!(varz.status, 200);
    assert_eq!(varz.content_type, "application/json");
    let varz: serde_json::Value = serde_json::from_str(&varz.body).expect("/varz is JSON");
    assert_eq!(varz["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(varz["workers_count"], 2);
    assert_eq!(varz["totals"]["messages_published"], 10);
    assert_eq!(varz["workers"].as_array().map(Vec::len), Some(2));
    assert!(varz["uptime_seconds"].as_f64().is_some_and(|s| s >= 0.0));

    assert_eq!(get(broker.metrics, "/nope").status, 404);
    assert_eq!(request(broker.metrics, "POST", "/metrics").status, 405);
}

/// nats-server's monitoring endpoints, as nats-top and the Prometheus NATS
/// exporter read them: /connz (sorted, paged, with subscriptions), /subsz
/// and nats-server's fields of /varz.
#[test]
fn connz_subsz_and_varz_answer_as_nats_server() {
    let broker = Blipmqd::start(2, &[]);
    let mut sub = Raw::handshake(broker.addr);
    sub.subscribe("watch.*", 1);
    sub.subscribe("other", 2);
    let mut publisher = Raw::handshake(broker.addr);
    for i in 0..5u32 {
        publisher.publish("watch.x", &i.to_be_bytes());
    }
    publisher.ping_pong();
    for _ in 0..5 {
        sub.expect_message();
    }

    let json = |answer: &Answer| -> serde_json::Value {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.content_type, "application/json");
        serde_json::from_str(&answer.body).expect("JSON")
    };
    let connz = json(&request(
        broker.metrics,
        "GET",
        "/connz?subs=1&sort=msgs_to",
    ));
    assert_eq!(connz["total"], 2);
    let conns = connz["connections"].as_array().unwrap();
    // Sorted by messages sent to the client: the subscriber first.
    assert_eq!(conns[0]["out_msgs"], 5);
    assert_eq!(conns[0]["subscriptions"], 2);
    let mut subjects: Vec<&str> = conns[0]["subscriptions_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["other", "watch.*"]);
    assert_eq!(conns[1]["in_msgs"], 5);
    assert_eq!(conns[0]["ip"], "127.0.0.1");
    assert_eq!(conns[0]["type"], "blipmq");
    let paged = json(&request(broker.metrics, "GET", "/connz?limit=1&offset=1"));
    assert_eq!(paged["num_connections"], 1);
    // By cid by default: the second of two is the larger cid.
    let last_cid = conns.iter().filter_map(|c| c["cid"].as_u64()).max();
    assert_eq!(paged["connections"][0]["cid"].as_u64(), last_cid);
    assert_eq!(
        request(broker.metrics, "GET", "/connz?sort=bogus").status,
        400
    );

    let subsz = json(&request(broker.metrics, "GET", "/subsz?subs=1"));
    assert_eq!(subsz["num_subscriptions"], 2);
    assert_eq!(subsz["subscriptions_list"].as_array().unwrap().len(), 2);

    let varz = json(&get_until(broker.metrics, "/varz", |a| {
        a.body.contains("\"in_msgs\":5")
    }));
    assert_eq!(varz["connections"], 2);
    assert_eq!(varz["out_msgs"], 5);
    assert_eq!(varz["subscriptions"], 2);
    assert_eq!(varz["port"], broker.addr.port());
    assert!(varz["server_id"].as_str().unwrap().starts_with("blipmq-"));
    assert!(varz["mem"].as_u64().unwrap() > 0);
    // BlipMQ's own fields stay.
    assert!(varz["workers"].is_array());
}

#[test]
fn healthz_turns_503_while_a_worker_stalls() {
    // Worker 1 beats once when it is built, then sleeps 6 s before its
    // loop: /healthz names it once that beat is 2 s old, then recovers.
    let broker = Blipmqd::start(2, &[(TEST_STALL_VAR, "1:6000")]);
    let stalled = get_until(broker.metrics, "/healthz", |a| {
        a.status == 503 && a.body.contains("worker 1 ")
    });
    assert_eq!(stalled.status, 503, "{stalled:?}");
    assert!(
        stalled.body.contains("unhealthy: worker 1 heartbeat is"),
        "{}",
        stalled.body
    );
    // Meanwhile worker 0 beats: only the stalled worker is reported.
    let varz = get_until(broker.metrics, "/varz", |a| {
        let varz: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
        varz["workers"][0]["heartbeat_age_ms"]
            .as_u64()
            .is_some_and(|ms| ms <= 2000)
            && varz["workers"][1]["heartbeat_age_ms"]
                .as_u64()
                .is_some_and(|ms| ms > 2000)
    });
    let varz: serde_json::Value = serde_json::from_str(&varz.body).unwrap();
    assert!(varz["workers"][0]["heartbeat_age_ms"].is_u64(), "{varz}");
    assert_eq!(varz["healthy"], false);

    let recovered = get_until(broker.metrics, "/healthz", |a| a.status == 200);
    assert_eq!(
        (recovered.status, recovered.body.as_str()),
        (200, "ok\n"),
        "{recovered:?}"
    );
}

#[test]
fn a_taken_metrics_port_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config_path =
        std::env::temp_dir().join(format!("blipmqd-http-taken-{}.toml", std::process::id()));
    std::fs::write(
        &config_path,
        format!("[control]\nmetrics_listen = \"{addr}\"\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_blipmqd"))
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The broker exits at once; its stderr closes when it does.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let Ok(stderr) = rx.recv_timeout(DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("blipmqd kept running with its metrics port taken");
    };
    let status = child.wait().unwrap();
    let _ = std::fs::remove_file(&config_path);
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("metrics listener {addr}")),
        "{stderr}"
    );
}
