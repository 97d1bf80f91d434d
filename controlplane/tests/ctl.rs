//! `blipmqctl` over a real broker's control socket: status, conns, subs,
//! kick, reload, drain, config show, stats, how the socket is found, and
//! what an operator reads when no broker answers.
//!
//! The broker runs in this process (`Server::start`, as blipmqd does; the
//! blipmqd binary is not built for this crate's tests); `blipmqctl` runs as
//! its own process.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blipmq_client::{Client, Options};
use blipmq_dataplane::config::Config;
use blipmq_dataplane::server::Server;
use serde_json::{json, Value};

/// Bound on anything awaited here (blipmqctl itself gives up after 10 s).
const DEADLINE: Duration = Duration::from_secs(15);

fn temp_path(test: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "blipmqctl-ctl-{}-{test}-{name}",
        std::process::id()
    ))
}

/// A two-worker broker with its control socket at `<tmp>/…sock`, started
/// from a config file that `reload` re-reads; drained on drop.
struct Broker {
    server: Option<Server>,
    socket: PathBuf,
    config_path: PathBuf,
}

impl Broker {
    fn start(test: &str, extra: &str) -> Broker {
        let socket = temp_path(test, "x.sock");
        let config_path = temp_path(test, "blipmq.toml");
        std::fs::write(&config_path, config_text(&socket, extra)).expect("write the config");
        let config = Config::load(&config_path).expect("a valid config");
        let server = Server::start(&config).expect("start a broker");
        let loader_path = config_path.clone();
        server.control().set_config_loader(Box::new(move || {
            Config::load(&loader_path).map_err(|error| error.to_string())
        }));
        Broker {
            server: Some(server),
            socket,
            config_path,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    fn connect(&self, name: &str) -> Client {
        let options = Options {
            name: Some(name.to_owned()),
            ..Options::default()
        };
        Client::connect_with(self.server().local_addr(), options).expect("connect a client")
    }

    /// `blipmqctl --socket SOCKET ARGS`.
    fn ctl(&self, args: &[&str]) -> Output {
        blipmqctl(Some(&self.socket), args, None)
    }

    /// Waits (bounded) for the broker to finish draining.
    fn wait_drained(&mut self) {
        let server = self.server.take().expect("running");
        let (done, drained) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(server.join().map(|_| ()));
        });
        drained
            .recv_timeout(DEADLINE)
            .expect("the broker drains in time")
            .expect("the broker drains cleanly");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            let _ = server.join();
        }
        let _ = std::fs::remove_file(&self.config_path);
    }
}

fn config_text(socket: &Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\npin_workers = false\n\
         [control]\nsocket = {:?}\n{extra}",
        socket.display().to_string()
    )
}

/// Runs blipmqctl with `--socket` (if given) and `BLIPMQ_SOCKET` set to
/// `env_socket` or removed.
fn blipmqctl(socket: Option<&Path>, args: &[&str], env_socket: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blipmqctl"));
    if let Some(socket) = socket {
        command.arg("--socket").arg(socket);
    }
    match env_socket {
        Some(path) => command.env("BLIPMQ_SOCKET", path),
        None => command.env_remove("BLIPMQ_SOCKET"),
    };
    command.args(args).output().expect("run blipmqctl")
}

/// Stdout of a command that must succeed.
fn success(output: Output) -> String {
    assert!(
        output.status.success(),
        "blipmqctl failed: {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn json_of(output: Output) -> Value {
    let stdout = success(output);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Cell `index` (split on whitespace) of every table line after the header.
fn column(table: &str, index: usize) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(index).map(str::to_owned))
        .collect()
}

#[test]
fn status_conns_subs_and_kick() {
    let broker = Broker::start("conns", "");
    // Ids are per-worker serials, so their order need not follow the
    // connection order; the checks below take it from the reply.
    let zulu = broker.connect("zulu");
    let zulu_sub = zulu.subscribe("orders.>").expect("subscribe");
    let alpha = broker.connect("alpha");
    let _alpha_sub = alpha
        .queue_subscribe("orders.new", "billing")
        .expect("subscribe");

    let status = json_of(broker.ctl(&["status", "--json"]));
    assert!(status.get("ok").is_none(), "{status}");
    assert_eq!(status["workers"].as_array().expect("workers").len(), 2);
    assert_eq!(status["connections"], json!(2));
    let table = success(broker.ctl(&["status"]));
    assert!(table.contains("healthy:     yes"), "{table}");
    assert!(table.contains("RESPONDING"), "{table}");

    let conns = json_of(broker.ctl(&["conns", "--json"]));
    let conns = conns["connections"].as_array().expect("a list").clone();
    let ids: Vec<u64> = conns.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "sorted by id: {conns:?}"
    );
    let names: Vec<&str> = conns.iter().map(|c| c["name"].as_str().unwrap()).collect();
    let mut sorted_names = names.clone();
    sorted_names.sort_unstable();
    assert_eq!(sorted_names, ["alpha", "zulu"], "{conns:?}");
    let zulu_id = conns
        .iter()
        .find(|c| c["name"] == json!("zulu"))
        .and_then(|c| c["id"].as_u64())
        .expect("zulu's id");

    let by_name = success(broker.ctl(&["conns", "--sort", "name"]));
    assert!(by_name.starts_with("ID"), "{by_name}");
    assert_eq!(column(&by_name, 3), ["alpha", "zulu"], "{by_name}");
    let by_id = success(broker.ctl(&["conns"]));
    assert_eq!(column(&by_id, 3), names, "{by_id}");
    let limited = success(broker.ctl(&["conns", "--sort", "name", "--limit", "1"]));
    assert_eq!(column(&limited, 3), ["alpha"], "{limited}");

    let subs = success(broker.ctl(&["subs"]));
    let rows: Vec<Vec<&str>> = subs
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["FILTER", "QUEUE", "COUNT", "DELIVERED"]);
    assert!(rows.contains(&vec!["orders.>", "-", "1", "0"]), "{subs}");
    assert!(
        rows.contains(&vec!["orders.new", "billing", "1", "0"]),
        "{subs}"
    );

    let kicked = success(broker.ctl(&["kick", &zulu_id.to_string()]));
    assert_eq!(kicked, format!("kicked connection {zulu_id}\n"));
    // The kicked client's subscription ends: no sleep, the end is awaited.
    let end = zulu_sub
        .recv_timeout(DEADLINE)
        .expect_err("no message, the connection ends");
    assert!(
        !matches!(end, blipmq_client::Error::Timeout),
        "the kicked client was not closed: {end:?}"
    );
    assert!(zulu.is_closed());
    let conns = json_of(broker.ctl(&["conns", "--json"]));
    assert_eq!(conns["connections"].as_array().unwrap().len(), 1, "{conns}");

    // Kicking it again is the broker's error, exit 1.
    let again = broker.ctl(&["kick", &zulu_id.to_string()]);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains(&format!("no open connection with id {zulu_id}")),
        "{stderr}"
    );
}

#[test]
fn reload_reports_changed_and_restart_keys() {
    let broker = Broker::start("reload", "[limits]\nmax_subscriptions = 10\n");
    let _client = broker.connect("live");
    std::fs::write(
        &broker.config_path,
        config_text(&broker.socket, "[limits]\nmax_subscriptions = 20\n"),
    )
    .unwrap();
    let out = success(broker.ctl(&["reload"]));
    assert_eq!(
        out,
        "applied: limits.max_subscriptions\nlive connections updated: 1\n"
    );
    let shown = success(broker.ctl(&["config", "show"]));
    assert!(shown.contains("max_subscriptions = 20\n"), "{shown}");

    let restart_too = config_text(&broker.socket, "[limits]\nmax_subscriptions = 30\n")
        .replace("workers = 2", "workers = 3");
    std::fs::write(&broker.config_path, restart_too).unwrap();
    let reply = json_of(broker.ctl(&["reload", "--json"]));
    assert_eq!(reply["changed"], json!(["limits.max_subscriptions"]));
    assert_eq!(reply["needs_restart"], json!(["server.workers"]));

    let shown = json_of(broker.ctl(&["config", "show", "--json"]));
    let toml = shown["toml"].as_str().expect("toml");
    assert!(toml.contains("max_subscriptions = 30\n"), "{toml}");
    assert!(
        toml.contains("workers = 2\n"),
        "restart keys keep running values: {toml}"
    );

    std::fs::write(
        &broker.config_path,
        "[limits]\nmax_subscriptions = \"many\"\n",
    )
    .unwrap();
    let bad = broker.ctl(&["reload"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("max_subscriptions"),
        "{bad:?}"
    );
}

#[test]
fn the_socket_comes_from_the_flag_then_the_environment() {
    let broker = Broker::start("env", "");
    let from_env = blipmqctl(None, &["status", "--json"], Some(&broker.socket));
    assert_eq!(json_of(from_env)["pid"], json!(std::process::id()));

    // The flag wins over the environment.
    let missing = temp_path("env", "missing.sock");
    let flag_wins = blipmqctl(Some(&broker.socket), &["status", "--json"], Some(&missing));
    json_of(flag_wins);
    let env_used = blipmqctl(None, &["status"], Some(&missing));
    assert_eq!(env_used.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&env_used.stderr).contains(&missing.display().to_string()),
        "{env_used:?}"
    );
}

#[test]
fn no_broker_is_explained_and_exits_1() {
    let missing = temp_path("none", "missing.sock");
    for args in [&["status"][..], &["conns"], &["drain"], &["stats"]] {
        let output = blipmqctl(Some(&missing), args, None);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr,
            format!(
                "blipmqctl: blipmqd is not running (no control socket at {}); \
                 start it or pass --socket\n",
                missing.display()
            ),
            "{args:?}"
        );
    }

    // A socket file nobody listens on: a broker that died without cleaning up.
    let stale = temp_path("none", "stale.sock");
    let _ = std::fs::remove_file(&stale);
    drop(UnixListener::bind(&stale).expect("bind"));
    let output = blipmqctl(Some(&stale), &["status"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "no blipmqd is listening on {} (stale socket?)",
            stale.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&stale);
}

#[test]
fn stats_come_from_the_socket_or_the_brokers_stats_file() {
    let broker = Broker::start("stats", "");
    let client = broker.connect("publisher");
    let sub = client.subscribe("metrics.x").expect("subscribe");
    for i in 0..3u8 {
        client.publish("metrics.x", &[i]).unwrap();
    }
    for _ in 0..3 {
        sub.recv_timeout(DEADLINE).expect("a message");
    }
    // No stats file: the counters come over the socket.
    let stats = json_of(broker.ctl(&["stats", "--json"]));
    assert_eq!(stats["totals"]["messages_published"], json!(3), "{stats}");
    assert_eq!(stats["workers"].as_array().unwrap().len(), 2);
    let table = success(broker.ctl(&["stats"]));
    assert!(table.contains("totals since start"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("total ")), "{table}");
    let prometheus = success(broker.ctl(&["stats", "--prometheus"]));
    assert!(prometheus.contains("# TYPE blipmq_"), "{prometheus}");

    // The live view polls the socket; its first frame comes after a second.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_blipmqctl"))
        .arg("--socket")
        .arg(&broker.socket)
        .args(["stats", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn blipmqctl stats --watch");
    let stdout = watch.stdout.take().unwrap();
    let (tx, frames) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let header = loop {
        let line = frames.recv_timeout(DEADLINE).expect("a live frame");
        if line.contains("rates over") {
            break line;
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(header.contains("2 workers"), "{header}");

    // With a stats file, `stats` finds it through `status` and reads it.
    drop(broker);
    let file = temp_path("stats", "broker.stats");
    let broker = Broker::start(
        "stats-file",
        &format!("stats_file = {:?}\n", file.display().to_string()),
    );
    let status = json_of(broker.ctl(&["status", "--json"]));
    assert_eq!(status["stats_file"], json!(file.display().to_string()));
    let stats = json_of(broker.ctl(&["stats", "--json"]));
    // The file's JSON shape (render_json), not the socket's /varz shape.
    assert!(stats.get("taken_unix_nanos").is_some(), "{stats}");
    assert_eq!(stats["pid"], json!(std::process::id()));
    drop(broker);
    let _ = std::fs::remove_file(&file);
}

/// `stats --watch` over the socket outlives a broker restart: it says it
/// lost the broker, waits, and draws the new one's counters.
#[test]
fn stats_watch_follows_a_restarted_broker() {
    let broker = Broker::start("watch-restart", "");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_blipmqctl"))
        .arg("--socket")
        .arg(&broker.socket)
        .args(["stats", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blipmqctl stats --watch");
    // Both streams into one channel, in arrival order.
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = watch.stdout.take().unwrap();
    let stderr = watch.stderr.take().unwrap();
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    // Bounded as a whole: the live view prints lines every second.
    let wait_for = |what: &str| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return,
                Ok(_) => {}
                Err(_) => panic!("blipmqctl stats --watch printed no {what:?} in time"),
            }
        }
    };
    wait_for("rates over");
    drop(broker);
    wait_for("lost the broker");
    let _broker = Broker::start("watch-restart", "");
    wait_for("reconnected to");
    wait_for("rates over");
    let still_running = matches!(watch.try_wait(), Ok(None));
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(still_running, "blipmqctl stats --watch exited");
}

#[test]
fn drain_makes_the_broker_exit() {
    let mut broker = Broker::start("drain", "");
    let client = broker.connect("leaving");
    let sub = client.subscribe("bye").expect("subscribe");
    let out = success(broker.ctl(&["drain"]));
    assert!(out.contains("draining"), "{out}");
    let end = sub
        .recv_timeout(DEADLINE)
        .expect_err("the client is let go");
    assert!(!matches!(end, blipmq_client::Error::Timeout), "{end:?}");
    broker.wait_drained();
    assert!(!broker.socket.exists(), "the socket is removed at exit");
    let after = broker.ctl(&["status"]);
    assert_eq!(after.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("blipmqd is not running"),
        "{after:?}"
    );
}

#[test]
fn leafz_shows_the_remote_and_its_state() {
    // A hub nobody runs: the remote stays down, retrying.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let remote = format!(
        "[[leafnode.remotes]]\nurls = [\"nats-leaf://127.0.0.1:{port}\"]\nname = \"edge-7\"\n"
    );
    let broker = Broker::start("leafz", &remote);
    let reply = json_of(broker.ctl(&["leafz", "--json"]));
    assert_eq!(reply["leafnodes"], 0, "{reply}");
    let leaf = &reply["leafs"][0];
    assert_eq!(leaf["name"], "edge-7", "{reply}");
    assert_eq!(leaf["url"], format!("127.0.0.1:{port}"), "{reply}");
    assert_eq!(leaf["state"], "down", "{reply}");
    let table = success(broker.ctl(&["leafz"]));
    assert!(
        table.starts_with(&format!("edge-7 down (url 127.0.0.1:{port}")),
        "{table}"
    );
    // Without a remote, it says so.
    let plain = Broker::start("leafz-none", "");
    let table = success(plain.ctl(&["leafz"]));
    assert!(table.contains("no leaf-node remote configured"), "{table}");
}
