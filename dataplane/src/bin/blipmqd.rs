//! `blipmqd`: the BlipMQ broker.
//!
//! SIGINT and SIGTERM drain (a second one exits at once), SIGHUP reloads the
//! configuration; the control socket's `drain` and `reload` do the same.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::mpsc;

use blipmq_dataplane::cli::Args;
use blipmq_dataplane::logging;
use blipmq_dataplane::server::Server;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What the main thread waits for.
enum Event {
    Signal(i32),
    DrainRequested,
}

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
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
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
            // Bad settings (EAL arguments, a missing port) exit like a bad
            // configuration; the rest (an address in use, ...) with 1.
            return if error.kind() == std::io::ErrorKind::InvalidInput {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let (events, next_event) = mpsc::channel();
    {
        let events = events.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if events.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        });
    }
    let control = server.control();
    control.set_config_loader(Box::new(move || {
        args.load_config().map_err(|error| error.to_string())
    }));
    control.set_log_level_setter(Box::new(logging::set_level));
    control.set_drain_hook(Box::new(move || {
        let _ = events.send(Event::DrainRequested);
    }));
    println!("blipmqd listening on {}", server.local_addr());
    if let Some(nats_addr) = server.nats_addr() {
        println!("blipmqd NATS listening on {nats_addr}");
    }
    let _ = std::io::stdout().flush();

    loop {
        match next_event.recv() {
            Ok(Event::Signal(SIGHUP)) => match server.control().reload() {
                Ok(result) => tracing::info!(%result, "SIGHUP: configuration reloaded"),
                Err(error) => tracing::error!(%error, "SIGHUP: reload failed; nothing changed"),
            },
            Ok(Event::Signal(signal)) => {
                tracing::info!(signal, "draining");
                break;
            }
            Ok(Event::DrainRequested) => {
                tracing::info!("drain requested on the control socket");
                break;
            }
            Err(_) => break,
        }
    }
    // A second SIGINT/SIGTERM during the drain exits at once.
    std::thread::spawn(move || {
        while let Ok(event) = next_event.recv() {
            if let Event::Signal(SIGINT | SIGTERM) = event {
                eprintln!("blipmqd: second signal, exiting without draining");
                std::process::exit(1);
            }
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
