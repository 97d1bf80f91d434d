//! Logging setup: `tracing` events to stderr, as text or JSON lines, filtered
//! by `log.level` (or `RUST_LOG` when it is set).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::{self, LogConfig, LogFormat};

/// The environment variable that, when set and non-empty, replaces
/// `log.level`.
pub const ENV_FILTER_VAR: &str = "RUST_LOG";

/// Swaps the installed filter on reload.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. Returns `Ok` without changing anything if
/// one is already installed, so calling it twice is harmless; errors only on
/// a bad `log.level` or `RUST_LOG`.
pub fn init(log: &LogConfig) -> Result<(), String> {
    let env = std::env::var(ENV_FILTER_VAR).ok();
    let filter = filter(log, env.as_deref())?;
    if tracing::dispatcher::has_been_set() {
        return Ok(());
    }
    let (filter, handle) = reload::Layer::new(filter);
    let output = fmt::layer()
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    let output = match log.format {
        LogFormat::Text => output.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => output.json().with_ansi(false).boxed(),
    };
    // `try_init` fails only when a global subscriber (or `log` logger) is
    // already set: someone else won the race, which is fine.
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
    Ok(())
}

/// Applies a new `log.level` to the running process (config reload).
/// `RUST_LOG`, when set, still wins, as at start.
pub fn set_level(level: &str) -> Result<(), String> {
    let log = LogConfig {
        level: level.to_string(),
        ..LogConfig::default()
    };
    let env = std::env::var(ENV_FILTER_VAR).ok();
    let new = filter(&log, env.as_deref())?;
    match FILTER.get() {
        Some(handle) => handle
            .reload(new)
            .map_err(|error| format!("cannot change the log level: {error}")),
        None => Ok(()),
    }
}

/// The filter for `log`, or for `env` (the value of `RUST_LOG`) when that is
/// set and non-empty.
pub fn filter(log: &LogConfig, env: Option<&str>) -> Result<EnvFilter, String> {
    match env.map(str::trim).filter(|v| !v.is_empty()) {
        Some(directives) => EnvFilter::builder().parse(directives).map_err(|error| {
            format!("{ENV_FILTER_VAR}={directives:?} is not a valid filter: {error}")
        }),
        None => {
            config::validate_log_level(&log.level).map_err(|error| error.to_string())?;
            EnvFilter::builder()
                .parse(log.level.trim())
                .map_err(|error| {
                    format!("log.level = {:?} is not a valid filter: {error}", log.level)
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(level: &str) -> LogConfig {
        LogConfig {
            level: level.to_string(),
            format: LogFormat::Text,
        }
    }

    #[test]
    fn filter_from_level_or_env() {
        assert!(filter(&level("info"), None).is_ok());
        assert!(filter(&level("info,blipmq_dataplane=debug"), None).is_ok());
        assert!(filter(&level("warning"), None)
            .unwrap_err()
            .contains("log.level"));
        // RUST_LOG wins, even over a bad log.level; an empty one is ignored.
        assert!(filter(&level("warning"), Some("debug")).is_ok());
        assert!(filter(&level("info"), Some("")).is_ok());
        assert!(filter(&level("info"), Some("x=loud"))
            .unwrap_err()
            .contains("RUST_LOG"));
    }

    #[test]
    fn init_twice_is_ok() {
        let log = level("off");
        if std::env::var_os(ENV_FILTER_VAR).is_none() {
            init(&log).unwrap();
            init(&log).unwrap();
            init(&LogConfig {
                format: LogFormat::Json,
                ..log
            })
            .unwrap();
        }
    }
}
