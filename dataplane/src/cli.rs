//! The `blipmqd` command line: a config file, then flags that override single
//! keys of it.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{self, BackendKind, Config, ConfigError, LogFormat};

/// The environment variable read for the token when `--token` is absent.
pub const TOKEN_ENV: &str = "BLIPMQ_TOKEN";

/// `BLIPMQ_TOKEN`, unless unset or empty.
fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV)
        .ok()
        .filter(|token| !token.is_empty())
}

/// `blipmqd [--config FILE] [flags]`.
#[derive(clap::Parser, Debug, Clone, PartialEq)]
#[command(
    name = "blipmqd",
    version,
    about = "BlipMQ: a NATS-like pub/sub broker with a compact binary protocol",
    long_about = "BlipMQ: a NATS-like pub/sub broker with a compact binary protocol.\n\n\
        Settings come from a TOML file (--config; see blipmq.toml for every key and its \
        default). Without --config every key takes its default. The flags below override \
        single keys of the file. The effective configuration is validated before start; \
        `blipmqctl config check FILE` validates a file and prints it with the defaults \
        filled in.\n\n\
        On SIGINT or SIGTERM the broker drains: it stops accepting, tells every client, \
        and waits up to server.drain_timeout for queued data to flush. A second signal \
        exits at once.",
    after_help = "Logs go to stderr; RUST_LOG, when set, replaces log.level. \
        The listening address is printed to stdout as `blipmqd listening on HOST:PORT`."
)]
pub struct Args {
    /// TOML configuration file [default: none, every key takes its default]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:9999; overrides server.listen]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,

    /// Address for NATS clients (the NATS client protocol), served by the same workers; port 0
    /// picks a free port [default: off; overrides nats.listen]
    #[arg(long, value_name = "HOST:PORT")]
    pub nats_listen: Option<SocketAddr>,

    /// TLS certificate chain (PEM) for both listeners [default: off; overrides tls.cert_file]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) [overrides tls.key_file]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Join the NATS hub at this URL as a leaf node (nats-leaf://HOST:PORT); repeat it for
    /// the hub cluster's other nodes, tried in turn [default: none; replaces leafnode.remotes]
    #[arg(long, value_name = "URL")]
    pub leafnode_remote: Vec<String>,

    /// Worker threads, 0 = one per core, at most 64 [default: 0; overrides server.workers]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Log level (trace, debug, info, warn, error, off) or an EnvFilter directive such as
    /// "info,blipmq_dataplane=debug" [default: info; overrides log.level; RUST_LOG wins over both]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log line format [default: text; overrides log.format]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Token clients must present in CONNECT; BLIPMQ_TOKEN if absent [default: none, no auth; overrides auth.token]
    ///
    /// When --token is not given, the BLIPMQ_TOKEN environment variable is used instead
    /// (an empty BLIPMQ_TOKEN counts as unset), which keeps the token out of `ps`.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Packet I/O backend: kernel, afpacket (user-space TCP on --interface owning --ip) or
    /// dpdk (user-space TCP on DPDK port --dpdk-port owning --ip; EAL arguments after --)
    /// [default: kernel; overrides dataplane.backend]
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendKind>,

    /// Network interface of the afpacket backend; give the kernel no address on it
    /// [default: none; overrides afpacket.interface]
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,

    /// The broker's IPv4 address and prefix on the afpacket interface or the DPDK port,
    /// A.B.C.D/N; it listens on the port of --listen [default: none; overrides afpacket.ip,
    /// or dpdk.ip with the dpdk backend]
    #[arg(long, value_name = "A/N")]
    pub ip: Option<String>,

    /// The DPDK port: an id, or a device name such as net_af_packet0 or 0000:03:00.0
    /// [default: 0; overrides dpdk.port]
    #[arg(long, value_name = "PORT")]
    pub dpdk_port: Option<String>,

    /// Arguments for DPDK's rte_eal_init, after `--`, e.g.
    /// `-- -l 1 --vdev=net_af_packet0,iface=eth1` [appended to dpdk.eal_args]
    #[arg(last = true, value_name = "EAL ARGS")]
    pub eal_args: Vec<String>,
}

/// Whether setting `set` sets `key`: itself, or a key inside it
/// (`leafnode.remotes` holds `leafnode.remotes[0].urls`).
fn sets_key(set: &str, key: &str) -> bool {
    key.strip_prefix(set)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

impl Args {
    /// The file named by `--config` (or the defaults), with the flags
    /// applied on top, validated. An error about a key set by a flag names
    /// the flag; otherwise it names the file and line.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        self.load_config_with_env(token_from_env())
    }

    fn load_config_with_env(&self, env_token: Option<String>) -> Result<Config, ConfigError> {
        let (mut config, text) = match &self.config {
            Some(path) => {
                let text = config::read_file(path)?;
                let config =
                    Config::parse_toml_str(&text).map_err(|error| error.with_file(path))?;
                config::check_file_mode(path, &config)?;
                (config, Some(text))
            }
            None => (Config::default(), None),
        };
        let overridden = self.apply_with_env(&mut config, env_token);
        config.validate().map_err(|error| {
            let flag = error
                .key()
                .and_then(|key| overridden.iter().find(|(k, _)| sets_key(k, key)))
                .map(|(_, flag)| *flag);
            match (flag, error) {
                (Some(flag), ConfigError::Invalid { key, message, .. }) => ConfigError::Invalid {
                    file: None,
                    line: None,
                    key,
                    message: format!("{message} (set by {flag})"),
                },
                (_, error) => match (&self.config, &text) {
                    (Some(path), Some(text)) => error.locate_in(text).with_file(path),
                    _ => error,
                },
            }
        })?;
        Ok(config)
    }

    /// Applies the flags that were given (and `BLIPMQ_TOKEN` when `--token`
    /// was not) to `config`; returns the `(key, flag)` pairs it set.
    pub fn apply(&self, config: &mut Config) -> Vec<(&'static str, &'static str)> {
        self.apply_with_env(config, token_from_env())
    }

    fn apply_with_env(
        &self,
        config: &mut Config,
        env_token: Option<String>,
    ) -> Vec<(&'static str, &'static str)> {
        let mut set = Vec::new();
        if let Some(listen) = self.listen {
            config.server.listen = listen;
            set.push(("server.listen", "--listen"));
        }
        if let Some(nats_listen) = self.nats_listen {
            config.nats.listen = nats_listen.to_string();
            set.push(("nats.listen", "--nats-listen"));
        }
        if let Some(cert) = &self.tls_cert {
            config.tls.cert_file = cert.display().to_string();
            set.push(("tls.cert_file", "--tls-cert"));
        }
        if let Some(key) = &self.tls_key {
            config.tls.key_file = key.display().to_string();
            set.push(("tls.key_file", "--tls-key"));
        }
        if !self.leafnode_remote.is_empty() {
            config.leafnode.remotes = vec![crate::config::LeafRemoteConfig {
                urls: self.leafnode_remote.clone(),
                ..Default::default()
            }];
            set.push(("leafnode.remotes", "--leafnode-remote"));
        }
        if let Some(workers) = self.workers {
            config.server.workers = workers;
            set.push(("server.workers", "--workers"));
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
            set.push(("log.level", "--log-level"));
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
            set.push(("log.format", "--log-format"));
        }
        if let Some(token) = &self.token {
            config.auth.token = Some(token.clone());
            set.push(("auth.token", "--token"));
        } else if let Some(token) = env_token {
            config.auth.token = Some(token);
            set.push(("auth.token", TOKEN_ENV));
        }
        if let Some(backend) = self.backend {
            config.dataplane.backend = backend;
            set.push(("dataplane.backend", "--backend"));
        }
        if let Some(interface) = &self.interface {
            config.afpacket.interface = interface.clone();
            set.push(("afpacket.interface", "--interface"));
        }
        if let Some(ip) = &self.ip {
            if config.dataplane.backend == BackendKind::Dpdk {
                config.dpdk.ip = ip.clone();
                set.push(("dpdk.ip", "--ip"));
            } else {
                config.afpacket.ip = ip.clone();
                set.push(("afpacket.ip", "--ip"));
            }
        }
        if let Some(port) = &self.dpdk_port {
            config.dpdk.port = port.clone();
            set.push(("dpdk.port", "--dpdk-port"));
        }
        if !self.eal_args.is_empty() {
            config.dpdk.eal_args.extend(self.eal_args.iter().cloned());
            set.push(("dpdk.eal_args", "-- (EAL arguments)"));
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::config::{LogConfig, ServerConfig};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A config file that lives as long as the value.
    struct TempConfig(PathBuf);

    impl TempConfig {
        fn new(text: &str) -> TempConfig {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("blipmqd-cli-test-{}-{n}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            // Private, as a file with a token must be.
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(&path, private).unwrap();
            TempConfig(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("blipmqd").chain(args.iter().copied())).unwrap()
    }

    /// `load_config` with `BLIPMQ_TOKEN` unset, whatever the test's environment.
    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        parse(args).load_config_with_env(None)
    }

    #[test]
    fn leafnode_remote_sets_one_remote_with_every_url() {
        let config = load(&[
            "--leafnode-remote",
            "nats-leaf://hub-a:7422",
            "--leafnode-remote",
            "nats-leaf://hub-b",
        ])
        .unwrap();
        let remotes = &config.leafnode.remotes;
        assert_eq!(remotes.len(), 1);
        assert_eq!(
            remotes[0].urls,
            ["nats-leaf://hub-a:7422", "nats-leaf://hub-b"]
        );
        let error = load(&["--leafnode-remote", "http://hub"]).unwrap_err();
        assert!(error.to_string().contains("--leafnode-remote"), "{error}");
    }

    #[test]
    fn help_is_complete() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        for (flag, key) in [
            ("--listen", "server.listen"),
            ("--workers", "server.workers"),
            ("--log-level", "log.level"),
            ("--log-format", "log.format"),
            ("--token", "auth.token"),
            ("--backend", "dataplane.backend"),
            ("--interface", "afpacket.interface"),
            ("--ip", "afpacket.ip"),
        ] {
            assert!(help.contains(flag), "{flag} missing from\n{help}");
            assert!(
                help.contains(&format!("overrides {key}")),
                "{key} missing from\n{help}"
            );
        }
        assert!(help.contains("--config"));
        assert!(help.contains("BLIPMQ_TOKEN"));
        assert!(help.contains("[default: 127.0.0.1:9999"));
        assert!(help.contains("afpacket"));
    }

    #[test]
    fn no_file_no_flags_is_the_defaults() {
        assert_eq!(load(&[]).unwrap(), Config::default());
    }

    #[test]
    fn file_values_are_used() {
        let file = TempConfig::new(
            "[server]\nlisten = \"0.0.0.0:4000\"\nworkers = 3\n[auth]\ntoken = \"file\"\n",
        );
        let config = load(&["--config", file.path().to_str().unwrap()]).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:4000".parse().unwrap());
        assert_eq!(config.server.workers, 3);
        assert_eq!(config.auth.token.as_deref(), Some("file"));
        assert_eq!(config.log, LogConfig::default());
    }

    #[test]
    fn flags_override_the_file() {
        let file = TempConfig::new(
            "[server]\nlisten = \"0.0.0.0:4000\"\nworkers = 3\nmax_pings_out = 7\n\
             [log]\nlevel = \"debug\"\nformat = \"json\"\n[auth]\ntoken = \"file\"\n",
        );
        let config = load(&[
            "-c",
            file.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--log-level",
            "warn",
            "--log-format",
            "text",
            "--token",
            "flag",
            "--backend",
            "kernel",
        ])
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.server.workers, 2);
        assert_eq!(config.log.level, "warn");
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.auth.token.as_deref(), Some("flag"));
        assert_eq!(config.dataplane.backend, BackendKind::Kernel);
        // Keys without a flag keep the file's value.
        assert_eq!(config.server.max_pings_out, 7);
    }

    #[test]
    fn flags_override_the_defaults() {
        let config = load(&["--workers", "5", "--log-format", "json"]).unwrap();
        assert_eq!(config.server.workers, 5);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.server.listen, ServerConfig::default().listen);
    }

    #[test]
    fn flag_can_fix_an_invalid_file_value() {
        // Validation runs after the flags: a bad file value a flag replaces is fine.
        let file = TempConfig::new("[server]\nworkers = 99\n");
        let path = file.path().to_str().unwrap();
        let error = load(&["-c", path]).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{path}: line 2: server.workers")),
            "{error}"
        );
        let config = load(&["-c", path, "--workers", "2"]).unwrap();
        assert_eq!(config.server.workers, 2);
    }

    #[test]
    fn invalid_flag_values_name_the_flag() {
        let error = load(&["--workers", "99"]).unwrap_err().to_string();
        assert!(
            error.contains("server.workers") && error.contains("(set by --workers)"),
            "{error}"
        );
        let error = load(&["--backend", "dpdk"]).unwrap_err().to_string();
        if cfg!(feature = "dpdk") {
            // dpdk needs an address.
            assert!(error.contains("dpdk.ip"), "{error}");
        } else {
            assert!(
                error.contains("needs a blipmqd built with DPDK") && error.contains("--backend"),
                "{error}"
            );
        }
        // afpacket needs an interface and an address.
        let error = load(&["--backend", "afpacket"]).unwrap_err().to_string();
        assert!(error.contains("afpacket.interface"), "{error}");
        let error = load(&["--backend", "afpacket", "--interface", "veth0"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("afpacket.ip"), "{error}");
        let error = load(&[
            "--backend",
            "afpacket",
            "--interface",
            "veth0",
            "--ip",
            "198.18.0.2",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("afpacket.ip") && error.contains("(set by --ip)"),
            "{error}"
        );
        let error = load(&["--log-level", "loud"]).unwrap_err().to_string();
        assert!(
            error.contains("log.level") && error.contains("--log-level"),
            "{error}"
        );
        let error = load(&["--token", ""]).unwrap_err().to_string();
        assert!(error.contains("auth.token"), "{error}");
    }

    #[test]
    fn afpacket_flags() {
        let config = load(&[
            "--backend",
            "afpacket",
            "--interface",
            "veth-b0",
            "--ip",
            "198.18.0.2/24",
            "--listen",
            "0.0.0.0:9999",
            "--workers",
            "1",
        ])
        .unwrap();
        assert_eq!(config.dataplane.backend, BackendKind::AfPacket);
        assert_eq!(config.afpacket.interface, "veth-b0");
        assert_eq!(config.afpacket.ip, "198.18.0.2/24");
        assert_eq!(config.server.workers, 1);
        let error = load(&[
            "--backend",
            "afpacket",
            "--interface",
            "veth-b0",
            "--ip",
            "198.18.0.2/24",
            "--listen",
            "0.0.0.0:0",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("server.listen"), "{error}");
    }

    #[test]
    fn dpdk_flags_and_eal_arguments() {
        let file = TempConfig::new("[dpdk]\neal_args = [\"--no-huge\"]\n");
        let args = parse(&[
            "-c",
            file.path().to_str().unwrap(),
            "--backend",
            "dpdk",
            "--ip",
            "198.18.0.2/24",
            "--dpdk-port",
            "net_af_packet0",
            "--workers",
            "2",
            "--",
            "--no-pci",
            "--vdev=net_af_packet0,iface=veth0,qpairs=2",
        ]);
        let mut config = Config::default();
        let set = args.apply_with_env(&mut config, None);
        assert!(set.contains(&("dpdk.ip", "--ip")), "{set:?}");
        assert_eq!(config.dpdk.ip, "198.18.0.2/24");
        assert_eq!(config.afpacket.ip, "", "--ip goes to the chosen backend");
        assert_eq!(config.dpdk.port, "net_af_packet0");
        assert_eq!(
            args.eal_args,
            ["--no-pci", "--vdev=net_af_packet0,iface=veth0,qpairs=2"]
        );
        // After the file's arguments.
        let config = args.load_config_with_env(None);
        if cfg!(feature = "dpdk") {
            assert_eq!(
                config.unwrap().dpdk.eal_args,
                [
                    "--no-huge",
                    "--no-pci",
                    "--vdev=net_af_packet0,iface=veth0,qpairs=2"
                ]
            );
        } else {
            assert!(config.is_err());
        }
        // Nothing after `--` without the flag: no EAL arguments.
        assert!(parse(&["--workers", "1"]).eal_args.is_empty());
    }

    #[test]
    fn file_errors_name_the_file_and_line() {
        let file = TempConfig::new("[server]\nworkerz = 1\n");
        let path = file.path().to_str().unwrap();
        let error = load(&["-c", path, "--workers", "2"])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("{path}: line 2, column 1: server.workerz")),
            "{error}"
        );
        let error = load(&["-c", "/nonexistent/blipmq.toml"])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/nonexistent/blipmq.toml: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn bad_flag_syntax_is_a_clap_error() {
        let argv = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("blipmqd").chain(args.iter().copied()))
        };
        assert!(argv(&["--listen", "localhost"]).is_err());
        assert!(argv(&["--workers", "-1"]).is_err());
        assert!(argv(&["--backend", "netmap"]).is_err());
        assert!(argv(&["--log-format", "xml"]).is_err());
        assert!(argv(&["--nope"]).is_err());
        assert_eq!(
            parse(&["--backend", "afpacket"]).backend,
            Some(BackendKind::AfPacket)
        );
        assert_eq!(
            parse(&["--log-format", "json"]).log_format,
            Some(LogFormat::Json)
        );
    }

    #[test]
    fn a_readable_file_with_secrets_is_refused_but_a_flag_token_needs_no_file() {
        let file = TempConfig::new("[auth]\ntoken = \"file\"\n");
        let readable = || std::os::unix::fs::PermissionsExt::from_mode(0o644);
        std::fs::set_permissions(file.path(), readable()).unwrap();
        let path = file.path().to_str().unwrap();
        let error = load(&["--config", path]).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        assert!(!error.contains("\"file\""), "{error}");
        let open = TempConfig::new("[limits]\nmax_payload = 100\n");
        std::fs::set_permissions(open.path(), readable()).unwrap();
        let path = open.path().to_str().unwrap();
        let config = load(&["--config", path, "--token", "flag"]).unwrap();
        assert_eq!(config.auth.token.as_deref(), Some("flag"));
    }

    #[test]
    fn token_from_the_environment() {
        let file = TempConfig::new("[auth]\ntoken = \"file\"\n");
        let path = file.path().to_str().unwrap();
        let env = || Some("env".to_string());
        // The environment overrides the file; the flag overrides both.
        let config = parse(&["-c", path]).load_config_with_env(env()).unwrap();
        assert_eq!(config.auth.token.as_deref(), Some("env"));
        let config = parse(&["-c", path, "--token", "flag"])
            .load_config_with_env(env())
            .unwrap();
        assert_eq!(config.auth.token.as_deref(), Some("flag"));
        let config = parse(&[]).load_config_with_env(env()).unwrap();
        assert_eq!(config.auth.token.as_deref(), Some("env"));
        let mut config = Config::default();
        assert_eq!(
            parse(&[]).apply_with_env(&mut config, env()),
            vec![("auth.token", TOKEN_ENV)]
        );
        assert!(parse(&[])
            .apply_with_env(&mut Config::default(), None)
            .is_empty());
    }
}
