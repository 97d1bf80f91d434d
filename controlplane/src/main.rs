//! `blipmqctl`: the BlipMQ operator CLI.
//!
//! A thin dispatcher: the control socket client is in [`client`], the
//! tables in [`tables`] and [`stats_view`].

#![forbid(unsafe_code)]

mod client;
mod stats_view;
mod tables;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use blipmq_dataplane::config::Config;
use blipmq_dataplane::http::{self, HttpConfig, HttpServer, StatsSource};
use blipmq_dataplane::stats::{Snapshot, StatsReader};
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use serde_json::{json, Map, Value};

use crate::client::ControlClient;
use crate::tables::ConnSort;

#[derive(Parser, Debug)]
#[command(
    name = "blipmqctl",
    version,
    about = "Operator tool for the BlipMQ broker",
    long_about = "Operator tool for the BlipMQ broker.\n\n\
        Commands that talk to a running blipmqd use its control socket: \
        --socket PATH, else $BLIPMQ_SOCKET, else the broker's default \
        ($XDG_RUNTIME_DIR/blipmqd.sock, else /tmp/blipmqd-UID.sock).\n\n\
        Exit status: 0 on success, 1 when the command fails (e.g. an invalid \
        configuration, no broker running, or the broker refused), 2 on a \
        usage error."
)]
struct Cli {
    /// blipmqd's control socket [default: $BLIPMQ_SOCKET, else the broker's default path]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the broker's version, uptime, health and every worker's state
    Status {
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the workers' counters
    ///
    /// From --file (the broker's control.stats_file, a shared-memory file
    /// readers cannot slow down); without it, from the stats file the
    /// running broker names, else over its control socket.
    Stats {
        /// The broker's stats file (control.stats_file)
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Print JSON instead of a table
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print the Prometheus text exposition format
        #[arg(long)]
        prometheus: bool,
        /// Refresh every second with rates, until interrupted
        #[arg(long, conflicts_with_all = ["json", "prometheus"])]
        watch: bool,
    },
    /// List client connections
    Conns {
        /// Order by this column (counts and ages largest first)
        #[arg(long, value_enum, default_value = "id")]
        sort: ConnSort,
        /// Show at most N connections (after sorting)
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// List subscriptions by filter and queue group, over every worker
    Subs {
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Close a client connection (it is sent DISCONNECT "kicked by operator")
    Kick {
        /// The connection's id, as `blipmqctl conns` shows it
        #[arg(value_name = "ID")]
        id: u64,
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the packet device: each worker's queue (frames, bytes, drops),
    /// the port's own counters and extended statistics (DPDK)
    Port {
        /// Also list extended statistics that are zero
        #[arg(long)]
        all: bool,
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show the NATS hub this broker joins as a leaf node ([[leafnode.remotes]]):
    /// state, URL, round trip, messages and bytes each way, interest, reconnects, drops
    Leafz {
        /// Print the broker's reply as JSON (shaped like nats-server's /leafz)
        #[arg(long)]
        json: bool,
    },
    /// Re-read the configuration file, as SIGHUP does
    ///
    /// Limits, auth.token, users and their permissions, keepalive and
    /// log.level apply at once, to live connections too (a connection whose
    /// credentials no longer hold is closed); other changed keys are
    /// reported as needing a restart and keep their running values.
    Reload {
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Drain the broker, as SIGTERM does: stop accepting, DISCONNECT every
    /// client, flush, exit
    Drain {
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Work with blipmqd configuration files
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve /metrics, /healthz and /varz over HTTP from the stats file
    ///
    /// GET /metrics is the Prometheus text format (blipmq_* metrics, one
    /// sample per worker); GET /healthz is 200 "ok" while every worker's
    /// heartbeat is at most --stale-after old, else 503 naming the stale
    /// workers (also 503 while the file cannot be read); GET /varz is JSON.
    /// Follows the file across broker restarts. Prints "blipmqctl serving
    /// http://ADDR" once listening, then serves until killed. (blipmqd can
    /// serve the same itself: [control] metrics_listen.)
    Serve {
        /// The broker's stats file (control.stats_file); it may appear later
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Address to listen on (port 0: any free port)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8222")]
        listen: SocketAddr,
        /// Heartbeat age after which /healthz reports a worker (workers beat every 100ms)
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
        stale_after: Duration,
    },
    /// Print a shell completion script for blipmqctl
    ///
    /// For example: blipmqctl completions bash > /etc/bash_completion.d/blipmqctl,
    /// or blipmqctl completions zsh > "${fpath[1]}/_blipmqctl".
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a configuration file and print the effective configuration
    ///
    /// Loads FILE the way blipmqd does (unknown keys and bad values are
    /// errors, naming the key and the line), then prints the effective
    /// configuration as TOML with every default filled in. On an error,
    /// prints it to stderr and exits with status 1.
    Check {
        /// The TOML file to check
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print auth.token and users' passwords and tokens as they are instead of "<redacted>"
        #[arg(long)]
        show_secrets: bool,
    },
    /// Print the running broker's configuration as TOML (secrets redacted)
    Show {
        /// Print the broker's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Read a password from the first line of stdin and print its bcrypt hash
    ///
    /// For `password = "..."` in [[auth.users]]: the file then holds no
    /// password a reader could use. Each CONNECT of that user checks the
    /// hash on a worker, which takes longer the higher the cost (10: about
    /// 50 ms).
    HashPassword {
        /// bcrypt's cost, 4 to 31
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket;
    let result = match cli.command {
        Command::Status { json } => status(&socket_path(socket), json),
        Command::Stats {
            file: Some(file),
            json,
            prometheus,
            watch,
        } => stats_from_file(&file, json, prometheus, watch),
        Command::Stats {
            file: None,
            json,
            prometheus,
            watch,
        } => stats_from_broker(&socket_path(socket), json, prometheus, watch),
        Command::Conns { sort, limit, json } => conns(&socket_path(socket), sort, limit, json),
        Command::Subs { json } => subs(&socket_path(socket), json),
        Command::Port { all, json } => port(&socket_path(socket), all, json),
        Command::Leafz { json } => leafz(&socket_path(socket), json),
        Command::Kick { id, json } => kick(&socket_path(socket), id, json),
        Command::Reload { json } => reload(&socket_path(socket), json),
        Command::Drain { json } => drain(&socket_path(socket), json),
        Command::Config(ConfigCommand::Check { file, show_secrets }) => {
            config_check(&file, show_secrets)
        }
        Command::Config(ConfigCommand::Show { json }) => config_show(&socket_path(socket), json),
        Command::Config(ConfigCommand::HashPassword { cost }) => hash_password(cost),
        Command::Serve {
            file,
            listen,
            stale_after,
        } => serve(&file, listen, stale_after),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "blipmqctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("blipmqctl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    client::resolve_socket_path(flag)
}

/// One command, one reply (without "ok"); errors as operators read them.
fn ask(socket: &Path, request: Value) -> Result<Map<String, Value>, String> {
    client::ask(socket, &request).map_err(|error| error.to_string())
}

fn print_json(reply: Map<String, Value>) {
    println!("{}", Value::Object(reply));
}

fn status(socket: &Path, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "status"}))?;
    if json {
        print_json(reply);
    } else {
        print!("{}", tables::render_status(&reply));
    }
    Ok(())
}

fn conns(socket: &Path, sort: ConnSort, limit: Option<usize>, json: bool) -> Result<(), String> {
    let mut reply = ask(socket, json!({"cmd": "connections"}))?;
    let mut list = match reply.remove("connections") {
        Some(Value::Array(list)) => list,
        _ => return Err("the broker's reply has no \"connections\" list".to_owned()),
    };
    tables::sort_connections(&mut list, sort);
    if let Some(limit) = limit {
        list.truncate(limit);
    }
    if json {
        reply.insert("connections".into(), Value::Array(list));
        print_json(reply);
    } else {
        print!("{}", tables::render_connections(&list));
    }
    Ok(())
}

fn subs(socket: &Path, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "subscriptions"}))?;
    if json {
        print_json(reply);
    } else {
        let list = reply
            .get("subscriptions")
            .and_then(Value::as_array)
            .ok_or("the broker's reply has no \"subscriptions\" list")?;
        print!("{}", tables::render_subscriptions(list));
    }
    Ok(())
}

fn port(socket: &Path, all: bool, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "port"}))?;
    if json {
        print_json(reply);
    } else {
        print!("{}", tables::render_port(&reply, all));
    }
    Ok(())
}

fn leafz(socket: &Path, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "leafz"}))?;
    if json {
        print_json(reply);
    } else {
        print!("{}", tables::render_leafz(&reply));
    }
    Ok(())
}

fn kick(socket: &Path, id: u64, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "kick", "id": id}))?;
    if json {
        print_json(reply);
    } else {
        println!("kicked connection {id}");
    }
    Ok(())
}

fn reload(socket: &Path, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "reload"}))?;
    if json {
        print_json(reply);
    } else {
        print!("{}", tables::render_reload(&reply));
    }
    Ok(())
}

fn drain(socket: &Path, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "drain"}))?;
    if json {
        print_json(reply);
    } else {
        println!("blipmqd is draining: its clients are told to go, then it exits");
    }
    Ok(())
}

fn config_show(socket: &Path, json: bool) -> Result<(), String> {
    let reply = ask(socket, json!({"cmd": "config"}))?;
    if json {
        print_json(reply);
    } else {
        let toml = reply
            .get("toml")
            .and_then(Value::as_str)
            .ok_or("the broker's reply has no \"toml\"")?;
        print!("{toml}");
    }
    Ok(())
}

fn config_check(file: &std::path::Path, show_secrets: bool) -> Result<(), String> {
    let config = Config::load(file).map_err(|error| error.to_string())?;
    let shown = if show_secrets {
        config
    } else {
        config.redacted()
    };
    print!("{}", shown.to_toml_string());
    Ok(())
}

fn hash_password(cost: u32) -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the password from stdin: {error}"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err("no password on stdin".into());
    }
    let hash = bcrypt::hash(password, cost).map_err(|error| error.to_string())?;
    println!("{hash}");
    Ok(())
}

/// Prints one snapshot in the chosen format.
fn print_snapshot(snapshot: &Snapshot, json: bool, prometheus: bool) {
    if json {
        println!("{}", stats_view::render_json(snapshot));
    } else if prometheus {
        print!("{}", http::render_prometheus(snapshot));
    } else {
        print!("{}", stats_view::render_table(snapshot, None));
    }
}

/// Clears the terminal and draws the live view.
fn redraw(snapshot: &Snapshot, previous: &Snapshot, elapsed: Duration) {
    let rates = snapshot.rate_since(previous, elapsed);
    print!(
        "\x1b[2J\x1b[H{}",
        stats_view::render_table(snapshot, Some(&rates))
    );
    let _ = std::io::stdout().flush();
}

fn stats_from_file(file: &Path, json: bool, prometheus: bool, watch: bool) -> Result<(), String> {
    let mut reader = StatsReader::open(file).map_err(|error| error.to_string())?;
    if !watch {
        print_snapshot(&reader.snapshot(), json, prometheus);
        return Ok(());
    }
    let mut previous = reader.snapshot();
    let mut at = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if reader.replaced() {
            // The broker restarted: read its new file from now on.
            reader = StatsReader::open(file).map_err(|error| error.to_string())?;
            previous = reader.snapshot();
            at = Instant::now();
            continue;
        }
        let snapshot = reader.snapshot();
        let now = Instant::now();
        redraw(&snapshot, &previous, now - at);
        previous = snapshot;
        at = now;
    }
}

/// `stats` without --file: the broker's stats file when it has one (the
/// cheapest to read, and followed across restarts), else its `stats` command.
fn stats_from_broker(
    socket: &Path,
    json: bool,
    prometheus: bool,
    watch: bool,
) -> Result<(), String> {
    let mut broker = ControlClient::connect(socket).map_err(|error| error.to_string())?;
    let status = broker
        .command("status")
        .map_err(|error| error.to_string())?;
    let stats_file = status
        .get("stats_file")
        .and_then(Value::as_str)
        .filter(|file| !file.is_empty())
        .map(PathBuf::from);
    // A relative or unreachable path (another mount namespace) falls back to the socket.
    if let Some(file) = stats_file.filter(|file| StatsReader::open(file).is_ok()) {
        drop(broker);
        return stats_from_file(&file, json, prometheus, watch);
    }
    if !watch {
        print_snapshot(&socket_snapshot(&mut broker)?, json, prometheus);
        return Ok(());
    }
    let mut previous = socket_snapshot(&mut broker)?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let snapshot = match socket_snapshot(&mut broker) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // Restarted or gone: keep watching for the next broker there.
                eprintln!("blipmqctl: lost the broker ({error}); retrying every second");
                (broker, previous) = reconnect(socket);
                eprintln!("blipmqctl: reconnected to {}", socket.display());
                continue;
            }
        };
        // The broker's own clock: the rates stay right when a reply is late.
        let elapsed = Duration::from_nanos(
            snapshot
                .taken_unix_nanos()
                .saturating_sub(previous.taken_unix_nanos()),
        );
        if elapsed.is_zero() {
            continue;
        }
        redraw(&snapshot, &previous, elapsed);
        previous = snapshot;
    }
}

/// The broker's counters over its control socket.
fn socket_snapshot(broker: &mut ControlClient) -> Result<Snapshot, String> {
    let reply = broker.command("stats").map_err(|error| error.to_string())?;
    stats_view::snapshot_from_varz(&Value::Object(reply))
}

/// Waits, a try a second, until a broker answers on `socket` again.
fn reconnect(socket: &Path) -> (ControlClient, Snapshot) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Ok(mut broker) = ControlClient::connect(socket) {
            if let Ok(snapshot) = socket_snapshot(&mut broker) {
                return (broker, snapshot);
            }
        }
    }
}

fn serve(file: &Path, listen: SocketAddr, stale_after: Duration) -> Result<(), String> {
    if stale_after.is_zero() {
        return Err("--stale-after must be greater than 0".to_owned());
    }
    let server = HttpServer::start(
        listen,
        StatsSource::file(file),
        HttpConfig {
            stale_after,
            ..HttpConfig::default()
        },
    )
    .map_err(|error| error.to_string())?;
    // One plain line that scripts and tests wait for (the port may be 0).
    println!("blipmqctl serving http://{}", server.local_addr());
    let _ = std::io::stdout().flush();
    server.join();
    Err("the HTTP server stopped".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["blipmqctl", "config", "check", "x.toml"]).unwrap();
        match cli.command {
            Command::Config(ConfigCommand::Check { file, show_secrets }) => {
                assert_eq!(file, PathBuf::from("x.toml"));
                assert!(!show_secrets);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["blipmqctl", "stats", "--file", "f", "--json", "--watch"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["blipmqctl", "config", "check"]).is_err());
        assert!(Cli::try_parse_from(["blipmqctl", "config"]).is_err());
        assert!(Cli::try_parse_from(["blipmqctl"]).is_err());
    }

    #[test]
    fn socket_commands() {
        let cli =
            Cli::try_parse_from(["blipmqctl", "conns", "--sort", "msgs-in", "--socket", "/s"])
                .unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        assert!(matches!(
            cli.command,
            Command::Conns {
                sort: ConnSort::MsgsIn,
                limit: None,
                json: false
            }
        ));
        let cli =
            Cli::try_parse_from(["blipmqctl", "--socket", "/s", "kick", "7", "--json"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        assert!(matches!(cli.command, Command::Kick { id: 7, json: true }));
        let cli = Cli::try_parse_from(["blipmqctl", "stats"]).unwrap();
        assert!(matches!(cli.command, Command::Stats { file: None, .. }));
        assert!(matches!(
            Cli::try_parse_from(["blipmqctl", "config", "show"])
                .unwrap()
                .command,
            Command::Config(ConfigCommand::Show { json: false })
        ));
        assert!(Cli::try_parse_from(["blipmqctl", "kick"]).is_err());
        assert!(Cli::try_parse_from(["blipmqctl", "kick", "x"]).is_err());
        assert!(Cli::try_parse_from(["blipmqctl", "conns", "--sort", "color"]).is_err());
        for command in ["status", "subs", "reload", "drain"] {
            assert!(Cli::try_parse_from(["blipmqctl", command, "--json"]).is_ok());
        }
    }

    #[test]
    fn serve_arguments() {
        let cli = Cli::try_parse_from(["blipmqctl", "serve", "--file", "f"]).unwrap();
        match cli.command {
            Command::Serve {
                file,
                listen,
                stale_after,
            } => {
                assert_eq!(file, PathBuf::from("f"));
                assert_eq!(listen, "127.0.0.1:8222".parse().unwrap());
                assert_eq!(stale_after, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "blipmqctl",
            "serve",
            "--file",
            "f",
            "--listen",
            "[::1]:0",
            "--stale-after",
            "750ms",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Serve { stale_after, .. } if stale_after == Duration::from_millis(750)
        ));
        assert!(Cli::try_parse_from(["blipmqctl", "serve"]).is_err());
        assert!(Cli::try_parse_from([
            "blipmqctl",
            "serve",
            "--file",
            "f",
            "--listen",
            "localhost"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["blipmqctl", "serve", "--file", "f", "--stale-after", "2"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["blipmqctl", "completions", "tcsh"]).is_err());
        assert!(Cli::try_parse_from(["blipmqctl", "completions", "fish"]).is_ok());
    }
}
