//! `blipmqctl`: the BlipMQ operator CLI.
//!
//! Subcommands are grouped by topic (`blipmqctl config check FILE`); new
//! topics (`status`, `stats`, ...) are new variants of [`Command`].

use std::path::PathBuf;
use std::process::ExitCode;

use blipmq_dataplane::config::Config;
use clap::{Parser, Subcommand};

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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

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
        }
        assert!(Cli::try_parse_from(["blipmqctl", "config", "check"]).is_err());
        assert!(Cli::try_parse_from(["blipmqctl", "config"]).is_err());
        assert!(Cli::try_parse_from(["blipmqctl"]).is_err());
    }
}
