//! `blipmqd`: the BlipMQ broker.

use std::io::Write;
use std::process::ExitCode;

use blipmq_dataplane::cli::Args;
use blipmq_dataplane::logging;
use blipmq_dataplane::server::Server;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.load_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("blipmqd: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = logging::init(&config.log) {
        eprintln!("blipmqd: {error}");
        return ExitCode::from(2);
    }
    // Signals are taken before the workers start, so none is lost.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("blipmqd: cannot handle signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(&config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("blipmqd: cannot start on {}: {error}", config.server.listen);
            return ExitCode::FAILURE;
        }
    };
    // One plain line that scripts and tests wait for (the port may be 0 in
    // the config).
    println!("blipmqd listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();

    let first = signals.forever().next();
    tracing::info!(signal = ?first, "draining");
    std::thread::spawn(move || {
        // A second signal while draining: stop at once.
        if signals.forever().next().is_some() {
            eprintln!("blipmqd: second signal, exiting without draining");
            std::process::exit(1);
        }
    });
    server.shutdown();
    match server.join() {
        Ok(_) => {
            tracing::info!("drained");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("blipmqd: {error}");
            ExitCode::FAILURE
        }
    }
}
