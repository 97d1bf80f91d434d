use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

const SHIPPED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../blipmq.toml"));

fn err(text: &str) -> ConfigError {
    Config::from_toml_str(text).expect_err("the config should be rejected")
}

#[test]
fn shipped_file_is_the_defaults() {
    let config = Config::from_toml_str(SHIPPED).expect("blipmq.toml parses");
    assert_eq!(config, Config::default());
}

#[test]
fn defaults_are_valid_and_as_documented() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(config.server.workers, 0);
    assert!(config.server.pin_workers);
    assert_eq!(config.server.server_name, "");
    assert_eq!(config.server.ping_interval, Duration::from_secs(120));
    assert_eq!(config.server.max_pings_out, 2);
    assert_eq!(config.server.drain_timeout, Duration::from_secs(5));
    assert_eq!(config.server.max_connections, 65536);
    assert_eq!(config.limits.max_payload, 1 << 20);
    assert_eq!(config.limits.max_topic_length, 255);
    assert_eq!(config.limits.max_subscriptions, 65536);
    assert_eq!(config.limits.max_pending_bytes, 64 << 20);
    assert_eq!(config.auth.token, None);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.dataplane.backend, BackendKind::Kernel);
    assert_eq!(config.dataplane.ring_bytes, 8 << 20);
    assert_eq!(config.dataplane.cache_subjects, 4096);
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    assert_eq!(
        Config::from_toml_str("[server]\n[limits]\n").unwrap(),
        Config::default()
    );
}

/// Every `table.key` of a TOML document.
fn keys_of(text: &str) -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(text).unwrap();
    let mut keys = BTreeSet::new();
    for (name, value) in &table {
        let inner = value.as_table().expect("only tables at the top level");
        for key in inner.keys() {
            keys.insert(format!("{name}.{key}"));
        }
    }
    keys
}

/// The keys documented in blipmq.toml, set or commented out (`# key = ...`),
/// each of which must have a comment line right above it.
fn documented_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    let mut previous = "";
    for line in SHIPPED.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            table = name.trim().to_string();
        } else {
            let body = trimmed.trim_start_matches('#').trim();
            if let Some((key, _)) = body.split_once(" = ") {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    assert!(!table.is_empty(), "blipmq.toml: `{key}` outside a table");
                    assert!(
                        previous.trim_start().starts_with('#') && previous != line,
                        "blipmq.toml: `{table}.{key}` has no comment line above it"
                    );
                    keys.insert(format!("{table}.{key}"));
                }
            }
        }
        previous = line;
    }
    keys
}

#[test]
fn shipped_file_documents_every_key() {
    let mut full = Config::default();
    // Optional keys are left out of the default TOML; set them to see them.
    full.auth.token = Some("secret".to_string());
    let mut with_users = Config::default();
    with_users.auth.users = vec![UserConfig {
        user: "u".into(),
        password: Some(Secret::new("p")),
        token: None,
        permissions: PermissionsConfig::default(),
    }];
    full.afpacket.gateway = Some("198.18.0.1".parse().unwrap());
    full.afpacket.mac = Some("02:00:00:00:00:01".to_string());
    full.dpdk.gateway = Some("198.18.0.1".parse().unwrap());
    full.dpdk.mac = Some("02:00:00:00:00:01".to_string());
    let mut expected = keys_of(&Config::default().to_toml_string());
    expected.extend(keys_of(&full.to_toml_string()));
    expected.extend(keys_of(&with_users.to_toml_string()));
    assert!(expected.contains("auth.users"));
    assert!(expected.contains("auth.token"));
    assert!(expected.contains("limits.max_pending_bytes"));

    let documented = documented_keys();
    let missing: Vec<_> = expected.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "blipmq.toml does not document {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&expected).collect();
    assert!(
        stale.is_empty(),
        "blipmq.toml documents unknown keys {stale:?}"
    );
}

#[test]
fn shipped_file_with_optional_keys_uncommented_parses() {
    let uncommented: String = SHIPPED
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(body)
                if body.starts_with("token = ")
                    || body.starts_with("gateway = ")
                    || body.starts_with("mac = ") =>
            {
                body
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml_str(&uncommented).unwrap();
    assert_eq!(config.auth.token.as_deref(), Some("change-me"));
    assert_eq!(config.afpacket.gateway, Some("198.18.0.1".parse().unwrap()));
    assert_eq!(
        config.afpacket.parse_mac().unwrap(),
        Some([2, 0, 0, 0, 0, 1])
    );
}

#[test]
fn to_toml_string_round_trips() {
    let mut config = Config::default();
    config.server.workers = 3;
    config.server.ping_interval = Duration::from_millis(250);
    config.server.server_name = "edge-1".into();
    config.auth.token = Some("s3cret \"quoted\"".into());
    config.log.format = LogFormat::Json;
    config.log.level = "info,blipmq_dataplane=debug".into();
    let text = config.to_toml_string();
    assert_eq!(Config::from_toml_str(&text).unwrap(), config);
    assert_eq!(
        Config::from_toml_str(&Config::default().to_toml_string()).unwrap(),
        Config::default()
    );
    assert!(text.contains("max_pending_bytes = 67108864"), "{text}");
    assert!(!text.contains("without authentication"), "{text}");
    let text = Config::default().to_toml_string();
    assert!(text.contains("[auth]\n# token is not set"), "{text}");
}

#[test]
fn redacted_hides_the_token() {
    let mut config = Config::default();
    assert_eq!(config.redacted(), config);
    config.auth.token = Some("s3cret".into());
    let text = config.redacted().to_toml_string();
    assert!(!text.contains("s3cret"));
    assert!(text.contains("token = \"<redacted>\""));
}

#[test]
fn humantime_durations() {
    let config =
        Config::from_toml_str("[server]\nping_interval = \"250ms\"\ndrain_timeout = \"5s\"\n")
            .unwrap();
    assert_eq!(config.server.ping_interval, Duration::from_millis(250));
    assert_eq!(config.server.drain_timeout, Duration::from_secs(5));
    let config =
        Config::from_toml_str("[server]\nping_interval = \"1m 30s\"\ndrain_timeout = \"0s\"\n")
            .unwrap();
    assert_eq!(config.server.ping_interval, Duration::from_secs(90));
    assert_eq!(config.server.drain_timeout, Duration::ZERO);

    let error = err("[server]\n\nping_interval = \"5 parsecs\"\n");
    let text = error.to_string();
    assert_eq!(error.line(), Some(3), "{text}");
    assert!(text.contains("server.ping_interval"), "{text}");
    // A bare number is not a duration.
    let text = err("[server]\ndrain_timeout = 5\n").to_string();
    assert!(
        text.contains("line 2") && text.contains("server.drain_timeout"),
        "{text}"
    );
}

#[test]
fn unknown_key_names_the_key_and_the_line() {
    let error = err("[server]\nworkers = 2\nfoo = 1\n");
    let text = error.to_string();
    assert!(text.starts_with("line 3, column 1: server.foo: "), "{text}");
    assert!(text.contains("unknown field `foo`"), "{text}");
    assert!(text.contains("expected one of"), "{text}");
    assert!(text.contains("`listen`"), "{text}");
    assert_eq!(error.key(), Some("server.foo"));
    assert_eq!(error.line(), Some(3));
    // One line only, no source excerpt.
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn unknown_table_names_the_table_and_the_line() {
    let error = err("[server]\nworkers = 2\n\n[servr]\nlisten = \"0.0.0.0:1\"\n");
    let text = error.to_string();
    assert!(text.contains("unknown field `servr`"), "{text}");
    assert!(text.contains("line 4"), "{text}");
    assert_eq!(error.key(), Some("servr"));
}

#[test]
fn unknown_top_level_key_and_dotted_keys() {
    let error = err("workers = 2\n");
    assert!(
        error.to_string().contains("unknown field `workers`"),
        "{error}"
    );
    assert_eq!(error.line(), Some(1));

    let config = Config::from_toml_str("server.workers = 2\nlimits.max_payload = 10\n").unwrap();
    assert_eq!(config.server.workers, 2);
    assert_eq!(config.limits.max_payload, 10);
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("blipmq-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, "# comment\n[limits]\nmax_payloads = 1\n").unwrap();
    let error = Config::load(&path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    let text = error.to_string();
    let expected = format!(
        "{}: line 3, column 1: limits.max_payloads: unknown field `max_payloads`",
        path.display()
    );
    assert!(text.starts_with(&expected), "{text}");

    let missing = dir.join(format!(
        "blipmq-config-test-missing-{}.toml",
        std::process::id()
    ));
    let text = Config::load(&missing).unwrap_err().to_string();
    assert!(text.starts_with(&missing.display().to_string()), "{text}");

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../blipmq.toml");
    assert_eq!(Config::load(&shipped).unwrap(), Config::default());
}

#[test]
fn bad_types_name_the_key_and_the_line() {
    let cases: &[(&str, &str, usize)] = &[
        ("[server]\nworkers = \"four\"\n", "server.workers", 2),
        ("[server]\nlisten = \"localhost\"\n", "server.listen", 2),
        ("[server]\npin_workers = 1\n", "server.pin_workers", 2),
        ("[limits]\nmax_payload = -1\n", "limits.max_payload", 2),
        (
            "[limits]\nmax_topic_length = 70000\n",
            "limits.max_topic_length",
            2,
        ),
        ("[auth]\ntoken = 5\n", "auth.token", 2),
        ("[log]\nformat = \"xml\"\n", "log.format", 2),
        (
            "\n[dataplane]\nbackend = \"netmap\"\n",
            "dataplane.backend",
            3,
        ),
        ("server = 5\n", "server", 1),
    ];
    for (text, key, line) in cases {
        let error = err(text);
        let message = error.to_string();
        assert_eq!(error.key(), Some(*key), "{text:?} -> {message}");
        assert_eq!(error.line(), Some(*line), "{text:?} -> {message}");
        assert!(
            message.starts_with(&format!("line {line}, column ")),
            "{message}"
        );
        assert!(message.contains(key), "{message}");
    }
}

#[test]
fn toml_syntax_errors_have_a_line() {
    let error = err("[server]\nworkers = \n");
    assert_eq!(error.line(), Some(2), "{error}");
    let error = err("[server\n");
    assert_eq!(error.line(), Some(1), "{error}");
    assert!(!error.to_string().contains('\n'), "{error}");
    let error = err("[server]\nworkers = 1\nworkers = 2\n");
    assert_eq!(error.line(), Some(3), "{error}");
}

#[test]
fn validation_failures_name_the_key_and_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[limits]\nmax_payload = 0\n",
            "limits.max_payload",
            "limits.max_payload must be between 1 and 67108864",
        ),
        (
            "[limits]\nmax_payload = 67108865\n",
            "limits.max_payload",
            "limits.max_payload must be between 1 and 67108864",
        ),
        (
            "[limits]\nmax_topic_length = 0\n",
            "limits.max_topic_length",
            "at least 1",
        ),
        (
            "[limits]\nmax_pending_bytes = 1000\n",
            "limits.max_pending_bytes",
            "at least limits.max_payload",
        ),
        (
            "[auth]\ntoken = \"\"\n",
            "auth.token",
            "auth.token must not be empty",
        ),
        (
            "[nats]\nlisten = \"localhost\"\n",
            "nats.listen",
            "nats.listen must be an IP:PORT socket address such as \"127.0.0.1:4222\"",
        ),
        (
            "[log]\nlevel = \"warning\"\n",
            "log.level",
            "`warning` is not a level",
        ),
        ("[log]\nlevel = \"\"\n", "log.level", "empty"),
        ("[log]\nlevel = \"blipmq=loud\"\n", "log.level", "log.level"),
        if cfg!(feature = "dpdk") {
            (
                "[dpdk]\nip = \"198.18.0.2\"\n[dataplane]\nbackend = \"dpdk\"\n",
                "dpdk.ip",
                "A.B.C.D/N",
            )
        } else {
            (
                "[dataplane]\nbackend = \"dpdk\"\n",
                "dataplane.backend",
                "needs a blipmqd built with DPDK",
            )
        },
        (
            "[dataplane]\nring_bytes = 5000000\n",
            "dataplane.ring_bytes",
            "power of two",
        ),
        (
            "[dataplane]\nring_bytes = 2097152\n",
            "dataplane.ring_bytes",
            "try 4194304",
        ),
        (
            "[server]\nworkers = 65\n",
            "server.workers",
            "between 0 (one per core) and 64",
        ),
        (
            "[server]\nping_interval = \"0s\"\n",
            "server.ping_interval",
            "greater than 0",
        ),
        (
            "[server]\nmax_pings_out = 0\n",
            "server.max_pings_out",
            "at least 1",
        ),
        (
            "[server]\nmax_connections = 0\n",
            "server.max_connections",
            "at least 1",
        ),
        (
            "[server]\nworker_priority = 100\n",
            "server.worker_priority",
            "SCHED_FIFO priority 1..=99",
        ),
        (
            "[server]\nserver_name = \"a\\nb\"\n",
            "server.server_name",
            "control characters",
        ),
        (
            "[control]\nmetrics_listen = \"localhost:8222\"\n",
            "control.metrics_listen",
            "IP:PORT socket address",
        ),
        (
            "[control]\nmetrics_listen = \"8222\"\n",
            "control.metrics_listen",
            "IP:PORT socket address",
        ),
    ];
    for (text, key, fragment) in cases {
        let error = err(text);
        let message = error.to_string();
        assert!(
            matches!(error, ConfigError::Invalid { .. }),
            "{text:?} -> {message}"
        );
        assert_eq!(error.key(), Some(*key), "{text:?} -> {message}");
        assert_eq!(error.line(), Some(2), "{text:?} -> {message}");
        assert!(message.starts_with("line 2: "), "{message}");
        assert!(message.contains(key), "{message}");
        assert!(message.contains(fragment), "{message}");
    }
    // A value that depends on another key: the ring follows max_payload.
    let error = err("[limits]\nmax_payload = 67108864\n");
    assert_eq!(error.key(), Some("dataplane.ring_bytes"));
    assert_eq!(error.line(), None);
    assert_eq!(
        error.to_string(),
        error.to_string().trim_start_matches("line")
    );
    Config::from_toml_str(
        "[limits]\nmax_payload = 67108864\n[dataplane]\nring_bytes = 268435456\n",
    )
    .unwrap();
}

#[test]
fn metrics_listen_is_off_or_a_socket_address() {
    let config = Config::default();
    assert_eq!(config.control.metrics_listen, "");
    assert_eq!(config.control.metrics_listen_addr(), Ok(None));
    let config = Config::from_toml_str("[control]\nmetrics_listen = \"127.0.0.1:8222\"\n").unwrap();
    assert_eq!(
        config.control.metrics_listen_addr(),
        Ok(Some("127.0.0.1:8222".parse().unwrap()))
    );
    let config = Config::from_toml_str("[control]\nmetrics_listen = \"[::1]:0\"\n").unwrap();
    assert_eq!(
        config.control.metrics_listen_addr(),
        Ok(Some("[::1]:0".parse().unwrap()))
    );
}

#[test]
fn validate_without_text_has_no_line() {
    let mut config = Config::default();
    config.limits.max_payload = 0;
    let error = config.validate().unwrap_err();
    assert_eq!(error.line(), None);
    assert_eq!(
        error.to_string(),
        "limits.max_payload must be between 1 and 67108864 (got 0)"
    );
}

#[test]
fn log_levels() {
    for level in [
        "trace",
        "debug",
        "info",
        "warn",
        "error",
        "off",
        "INFO",
        "info,blipmq_dataplane=debug",
        "blipmq_dataplane::worker=trace",
    ] {
        validate_log_level(level).unwrap_or_else(|e| panic!("{level}: {e}"));
    }
    for level in ["", " ", "verbose", "info,chatty"] {
        assert!(
            validate_log_level(level).is_err(),
            "{level:?} should be rejected"
        );
    }
}

#[test]
fn effective_workers_is_between_1_and_64() {
    let mut config = Config::default();
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(64);
    assert_eq!(config.effective_workers(), cores);
    config.server.workers = 3;
    assert_eq!(config.effective_workers(), 3);
    config.server.workers = 1000;
    assert_eq!(config.effective_workers(), 64);
}

#[test]
fn enums_parse_and_print() {
    for backend in [
        BackendKind::Kernel,
        BackendKind::AfPacket,
        BackendKind::Dpdk,
    ] {
        assert_eq!(backend.as_str().parse::<BackendKind>().unwrap(), backend);
        let text = format!("[dataplane]\nbackend = \"{backend}\"\n");
        assert_eq!(
            Config::parse_toml_str(&text).unwrap().dataplane.backend,
            backend
        );
    }
    for format in [LogFormat::Text, LogFormat::Json] {
        assert_eq!(format.as_str().parse::<LogFormat>().unwrap(), format);
    }
    assert!("xml".parse::<LogFormat>().is_err());
    assert!("netmap".parse::<BackendKind>().is_err());
}

/// A valid afpacket configuration plus `extra` lines in `[afpacket]`.
fn afpacket(extra: &str) -> String {
    format!(
        "[server]\nlisten = \"0.0.0.0:9999\"\n[dataplane]\nbackend = \"afpacket\"\n\
         [afpacket]\ninterface = \"veth-b\"\nip = \"198.18.0.2/24\"\n{extra}"
    )
}

#[test]
fn afpacket_defaults_and_a_valid_section() {
    let af = AfPacketConfig::default();
    assert_eq!(af.interface, "");
    assert_eq!(af.ip, "");
    assert_eq!(af.gateway, None);
    assert_eq!(af.mac, None);
    assert_eq!(af.block_size, 256 << 10);
    assert_eq!(af.block_count, 64);
    assert_eq!(af.frame_size, 2048);
    assert_eq!(af.block_timeout_ms, None);
    assert_eq!(af.poll, PollStrategy::Adaptive);
    assert_eq!(af.spin, Duration::from_micros(200));
    assert_eq!(af.tcp_rx_buffer, 256 << 10);
    assert_eq!(af.tcp_tx_buffer, 256 << 10);
    assert_eq!(af.tcp_rto_min, Duration::from_millis(20));
    assert_eq!(af.listeners, 64);
    assert!(af.segmentation_offload);

    let config = Config::from_toml_str(&afpacket(
        "gateway = \"198.18.0.1\"\nmac = \"02:aa:bb:cc:dd:ee\"\npoll = \"busy\"\nspin = \"50us\"\n",
    ))
    .unwrap();
    assert_eq!(config.dataplane.backend, BackendKind::AfPacket);
    assert_eq!(
        config.afpacket.parse_ip().unwrap(),
        ("198.18.0.2".parse().unwrap(), 24)
    );
    assert_eq!(
        config.afpacket.parse_mac().unwrap(),
        Some([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])
    );
    assert_eq!(config.afpacket.poll, PollStrategy::Busy);
    assert_eq!(config.afpacket.spin, Duration::from_micros(50));
    let text = config.to_toml_string();
    assert_eq!(Config::from_toml_str(&text).unwrap(), config);
    // Without the afpacket backend the section is not checked.
    Config::from_toml_str("[afpacket]\nip = \"nonsense\"\n").unwrap();
    // A file from before the TPACKET_V2 rings still loads (the key is
    // ignored, with a warning at start) and keeps it when written back.
    let old = Config::from_toml_str(&afpacket("block_timeout_ms = 1\n")).unwrap();
    assert_eq!(old.afpacket.block_timeout_ms, Some(1));
    assert!(old.to_toml_string().contains("block_timeout_ms = 1"));
}

#[test]
fn afpacket_validation_names_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "interface = \"\"\n",
            "afpacket.interface",
            "network interface",
        ),
        (
            "interface = \"a-very-long-ifname\"\n",
            "afpacket.interface",
            "1 to 15 bytes",
        ),
        ("ip = \"198.18.0.2\"\n", "afpacket.ip", "A.B.C.D/N"),
        ("ip = \"198.18.0.2/33\"\n", "afpacket.ip", "prefix length"),
        (
            "ip = \"198.18.0.300/24\"\n",
            "afpacket.ip",
            "not an IPv4 address",
        ),
        ("ip = \"0.0.0.0/24\"\n", "afpacket.ip", "host address"),
        (
            "gateway = \"10.9.9.9\"\n",
            "afpacket.gateway",
            "another host on",
        ),
        (
            "gateway = \"198.18.0.2\"\n",
            "afpacket.gateway",
            "another host on",
        ),
        ("mac = \"01:00:5e:00:00:01\"\n", "afpacket.mac", "unicast"),
        ("mac = \"02:00:00:00:01\"\n", "afpacket.mac", "not a MAC"),
        (
            "block_size = 100000\n",
            "afpacket.block_size",
            "power of two",
        ),
        (
            "block_size = 4096\n",
            "afpacket.block_size",
            "between 65536",
        ),
        (
            "block_count = 0\n",
            "afpacket.block_count",
            "between 1 and 65536",
        ),
        ("frame_size = 1500\n", "afpacket.frame_size", "power of two"),
        ("frame_size = 1024\n", "afpacket.frame_size", "between 2048"),
        ("poll = \"lazy\"\n", "afpacket.poll", "unknown variant"),
        ("spin = \"2s\"\n", "afpacket.spin", "at most 1s"),
        (
            "tcp_rx_buffer = 100\n",
            "afpacket.tcp_rx_buffer",
            "between 4096",
        ),
        (
            "tcp_tx_buffer = 100\n",
            "afpacket.tcp_tx_buffer",
            "between 4096",
        ),
        (
            "listeners = 0\n",
            "afpacket.listeners",
            "between 1 and 4096",
        ),
        (
            "tcp_rto_min = \"500us\"\n",
            "afpacket.tcp_rto_min",
            "between 1ms and 60s",
        ),
        (
            "tcp_rto_min = \"2m\"\n",
            "afpacket.tcp_rto_min",
            "between 1ms and 60s",
        ),
    ];
    for (extra, key, needle) in cases {
        // TOML rejects duplicate keys: a case replaces the base's value.
        let base = afpacket("");
        let name = extra.split(" = ").next().unwrap();
        let text = if base.contains(&format!("\n{name} = ")) {
            base.lines()
                .map(|line| {
                    if line.starts_with(&format!("{name} = ")) {
                        extra.trim_end()
                    } else {
                        line
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            afpacket(extra)
        };
        let error = Config::from_toml_str(&text).expect_err(extra).to_string();
        assert!(error.contains(key), "{extra:?}: {error}");
        assert!(error.contains(needle), "{extra:?}: {error}");
    }
    // A missing key is named without a line.
    let error = err("[dataplane]\nbackend = \"afpacket\"\n");
    assert_eq!(error.key(), Some("afpacket.interface"), "{error}");
    let error = err(&afpacket("").replace("0.0.0.0:9999", "0.0.0.0:0")).to_string();
    assert!(
        error.contains("server.listen") && error.contains("port"),
        "{error}"
    );
    // Several workers share the interface through PACKET_FANOUT.
    let text = afpacket("").replace("[dataplane]", "workers = 2\n[dataplane]");
    assert_eq!(Config::from_toml_str(&text).unwrap().effective_workers(), 2);
}

#[test]
fn connection_limits_parse_and_bad_values_name_the_key() {
    let config = Config::from_toml_str(
        "[auth]\ntimeout = \"500ms\"\n[limits]\nmax_msgs_per_sec = 100\nmax_bytes_per_sec = 1048576\nrate_policy = \"reject\"\nmax_connections_per_ip = 8\n",
    )
    .unwrap();
    assert_eq!(config.auth.timeout, Duration::from_millis(500));
    assert_eq!(config.limits.max_msgs_per_sec, 100);
    assert_eq!(config.limits.max_bytes_per_sec, 1 << 20);
    assert_eq!(config.limits.rate_policy, RatePolicy::Reject);
    assert_eq!(config.limits.max_connections_per_ip, 8);
    let off = Config::from_toml_str("[auth]\ntimeout = \"0s\"\n").unwrap();
    assert_eq!(off.auth.timeout, Duration::ZERO);
    for (text, key) in [
        ("[limits]\nrate_policy = \"drop\"\n", "limits.rate_policy"),
        (
            "[limits]\nmax_msgs_per_sec = -1\n",
            "limits.max_msgs_per_sec",
        ),
        ("[auth]\ntimeout = 2\n", "auth.timeout"),
    ] {
        let error = err(text);
        assert_eq!(error.key(), Some(key), "{text:?} -> {error}");
        assert_eq!(error.line(), Some(2), "{text:?} -> {error}");
    }
}
