//! `blipmqctl serve` as its own process on a stats file: `/metrics` parses
//! with a Prometheus text-format parser and counts a real broker's
//! workload; `/healthz` names a worker that stops beating and recovers;
//! and `blipmqctl completions`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use blipmq_client::Client;
use blipmq_dataplane::config::Config;
use blipmq_dataplane::server::Server;
use blipmq_dataplane::stats::{Counter, StatsSegment};
use prometheus_parse::{Scrape, Value};

/// How long a polled condition may take.
const DEADLINE: Duration = Duration::from_secs(10);

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("blipmqctl-serve-{}-{name}", std::process::id()))
}

/// A `blipmqctl serve` child; killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    /// Starts `blipmqctl serve --file FILE --listen 127.0.0.1:0 ARGS` and
    /// reads its address from its "serving" line.
    fn start(file: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_blipmqctl"))
            .arg("serve")
            .arg("--file")
            .arg(file)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn blipmqctl serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(DEADLINE) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blipmqctl serve printed no address");
        };
        let addr = line
            .strip_prefix("blipmqctl serving http://")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Serve { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path`: the status and the body (the server closes after each).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// GETs `path` until `done` holds, at most [`DEADLINE`]; the last answer.
fn get_until(addr: SocketAddr, path: &str, done: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = get(addr, path);
        if done(status, &body) || Instant::now() >= deadline {
            return (status, body);
        }
        // Another process: nothing to wait on but the next answer.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("/metrics parses")
}

fn total(scrape: &Scrape, counter: Counter) -> f64 {
    let name = counter.prometheus_name();
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
fn serve_exports_a_brokers_stats_file() {
    let stats = temp_path("broker.stats");
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.workers = 2;
    config.server.pin_workers = false;
    config.control.stats_file = stats.display().to_string();
    let broker = Server::start(&config).expect("start a broker");

    let client = Client::connect(broker.local_addr()).expect("connect");
    let sub = client.subscribe("serve.>").expect("subscribe");
    for i in 0..5u32 {
        client.publish("serve.x", &i.to_be_bytes()).unwrap();
    }
    for _ in 0..5 {
        sub.recv_timeout(Duration::from_secs(5)).expect("a message");
    }

    let serve = Serve::start(&stats, &["--stale-after", "1s"]);
    let (status, body) = get_until(serve.addr, "/metrics", |_, body| {
        let scrape = parse(body);
        total(&scrape, Counter::MessagesPublished) == 5.0
            && total(&scrape, Counter::MessagesDelivered) == 5.0
    });
    assert_eq!(status, 200);
    let scrape = parse(&body);
    assert_eq!(total(&scrape, Counter::MessagesPublished), 5.0);
    assert_eq!(total(&scrape, Counter::MessagesDelivered), 5.0);
    assert_eq!(total(&scrape, Counter::FramesInPublish), 5.0);
    assert_eq!(total(&scrape, Counter::Subscriptions), 1.0);
    assert_eq!(total(&scrape, Counter::ConnectionsOpen), 1.0);
    for &counter in Counter::ALL {
        let name = counter.prometheus_name();
        assert!(body.contains(&format!("# HELP {name} ")), "HELP of {name}");
        assert!(
            body.contains(&format!("# TYPE {name} {}\n", counter.kind().as_str())),
            "TYPE of {name}"
        );
    }
    // Workers beat on their first tick, 100 ms in.
    let (status, varz) = get_until(serve.addr, "/varz", |_, body| {
        let varz: serde_json::Value = serde_json::from_str(body).expect("JSON");
        (0..2).all(|w| varz["workers"][w]["heartbeat_age_ms"].is_u64())
    });
    assert_eq!(status, 200);
    let varz: serde_json::Value = serde_json::from_str(&varz).expect("JSON");
    let (status, body) = get(serve.addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(varz["totals"]["messages_published"], 5);
    assert_eq!(varz["pid"], std::process::id());

    // A stopped broker beats no more: every worker goes stale (each at its
    // own time: the workers' last beats were up to a tick apart).
    client.close().unwrap();
    broker.shutdown();
    broker.join().expect("the broker drains");
    let (status, body) = get_until(serve.addr, "/healthz", |status, body| {
        status == 503 && (0..2).all(|w| body.contains(&format!("worker {w} heartbeat is")))
    });
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("worker 0 heartbeat is"), "{body}");
    assert!(body.contains("worker 1 heartbeat is"), "{body}");
    let _ = std::fs::remove_file(&stats);
}

#[test]
fn serve_names_a_stalled_worker_and_recovers() {
    let stats = temp_path("stall.stats");
    let segment = StatsSegment::create(&stats, 2).expect("create a segment");
    let writers = segment.into_writers();
    writers[0].add(Counter::MessagesPublished, 3);
    for writer in &writers {
        writer.heartbeat();
    }
    // Each "worker" beats every 20 ms while it is not stalled.
    let stall = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(true));
    let beater = std::thread::spawn({
        let stall = stall.clone();
        let running = running.clone();
        move || {
            while running.load(Ordering::Relaxed) {
                writers[0].heartbeat();
                if !stall.load(Ordering::Relaxed) {
                    writers[1].heartbeat();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });

    let serve = Serve::start(&stats, &["--stale-after", "300ms"]);
    let (status, body) = get_until(serve.addr, "/healthz", |status, _| status == 200);
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    stall.store(true, Ordering::Relaxed);
    let (status, body) = get_until(serve.addr, "/healthz", |status, _| status == 503);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("worker 1 heartbeat is"), "{body}");
    assert!(body.contains("(limit 0.3s)"), "{body}");
    assert!(!body.contains("worker 0"), "{body}");

    stall.store(false, Ordering::Relaxed);
    let (status, body) = get_until(serve.addr, "/healthz", |status, _| status == 200);
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    running.store(false, Ordering::Relaxed);
    beater.join().unwrap();
    let _ = std::fs::remove_file(&stats);
}

#[test]
fn serve_without_the_file_is_503_until_it_appears() {
    let stats = temp_path("late.stats");
    let _ = std::fs::remove_file(&stats);
    let serve = Serve::start(&stats, &[]);
    let (status, body) = get(serve.addr, "/healthz");
    assert_eq!(status, 503);
    assert!(body.contains("No such file"), "{body}");
    assert_eq!(get(serve.addr, "/metrics").0, 503);

    let segment = StatsSegment::create(&stats, 1).unwrap();
    segment.worker(0).unwrap().heartbeat();
    assert_eq!(get(serve.addr, "/healthz"), (200, "ok\n".to_owned()));
    drop(segment);
    let _ = std::fs::remove_file(&stats);
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = Command::new(env!("CARGO_BIN_EXE_blipmqctl"))
            .args(["completions", shell])
            .output()
            .expect("run blipmqctl completions");
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(script.contains("blipmqctl"), "{shell}");
        assert!(script.contains("serve"), "{shell}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_blipmqctl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = String::from_utf8(output.stdout).unwrap();
    assert!(script.contains("complete -F _blipmqctl"), "{script}");
    assert!(script.contains("--stale-after"), "{script}");
}
