//! `blipmqctl`: the BlipMQ operator CLI.
//!
//! Subcommands are grouped by topic (`blipmqctl config check FILE`); new
//! topics (`status`, `stats`, ...) are new variants of [`Command`].

mod stats_view;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use blipmq_dataplane::config::Config;
use blipmq_dataplane::http::{self, HttpConfig, HttpServer, StatsSource};
use blipmq_dataplane::stats::StatsReader;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

#[derive(Parser, Debug)]
#[command(
    name = "blipmqctl",
    version,
    about = "Operator tool for the BlipMQ broker",
    long_about = "Operator tool for the BlipMQ broker.\n\n\
        Exit status: 0 on success, 1 when the command fails (e.g. an invalid \
        configuration), 2 on a usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Work with blipmqd configuration files
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the workers' counters from the broker's stats file
    ///
    /// Reads the shared-memory file named by the broker's
    /// control.stats_file; the broker is not slowed down by readers.
    Stats {
        /// The broker's stats file (control.stats_file)
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
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
        /// Print auth.token as is instead of "<redacted>"
        #[arg(long)]
        show_secrets: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(ConfigCommand::Check { file, show_secrets }) => {
            config_check(&file, show_secrets)
        }
        Command::Stats {
            file,
            json,
            prometheus,
            watch,
        } => stats(&file, json, prometheus, watch),
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

fn stats(file: &Path, json: bool, prometheus: bool, watch: bool) -> Result<(), String> {
    let mut reader = StatsReader::open(file).map_err(|error| error.to_string())?;
    if !watch {
        let snapshot = reader.snapshot();
        if json {
            println!("{}", stats_view::render_json(&snapshot));
        } else if prometheus {
            print!("{}", http::render_prometheus(&snapshot));
        } else {
            print!("{}", stats_view::render_table(&snapshot, None));
        }
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
        let rates = snapshot.rate_since(&previous, now - at);
        print!(
            "\x1b[2J\x1b[H{}",
            stats_view::render_table(&snapshot, Some(&rates))
        );
        previous = snapshot;
        at = now;
    }
}

fn serve(file: &Path, listen: SocketAddr, stale_after: Duration) -> Result<(), String> {
    if stale_after.is_zero() {
        return Err("--stale-after must be greater than 0".to_owned());
    }
    let server = HttpServer::start(listen, StatsSource::file(file), HttpConfig { stale_after })
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
