use super::super::Config;
use super::*;
use crate::leaf::Credentials;

const REMOTES: &str = r#"
[[leafnode.remotes]]
urls = ["nats-leaf://hub-a:7422", "nats://10.0.0.2", "nats-leaf://[::1]:7000"]
name = "edge-7"
user = "edge"
password = "leaf-pw"
import = { deny = ["admin.>"] }

[[leafnode.remotes]]
urls = ["tls://hub-b:7443"]
token = "leaf-token"
ca_file = "/etc/blipmq/hub-ca.pem"
export = { allow = ["telemetry.>"], deny = ["telemetry.debug"] }
"#;

fn refused(toml: &str) -> (String, String) {
    let error = Config::from_toml_str(toml).expect_err("refused");
    (
        error.key().unwrap_or_default().to_owned(),
        error.to_string(),
    )
}

fn remote(body: &str) -> String {
    format!("[[leafnode.remotes]]\n{body}\n")
}

#[test]
fn remotes_parse_into_link_settings() {
    let config = Config::from_toml_str(REMOTES).unwrap();
    let [first, second] = config.leafnode.remotes.as_slice() else {
        panic!("two remotes");
    };
    let link = first.link_config("srv", 1);
    assert_eq!(link.urls, ["hub-a:7422", "10.0.0.2:7422", "[::1]:7000"]);
    assert_eq!(link.name, "edge-7");
    assert_eq!(
        link.credentials,
        Credentials::UserPassword {
            user: "edge".into(),
            password: "leaf-pw".into()
        }
    );
    assert!(!link.tls_required);
    assert!(!link.import.permits_subject(b"admin.x") && link.import.permits_subject(b"a"));
    assert!(link.export.permits_subject(b"anything"));

    let link = second.link_config("srv", 1);
    assert_eq!(link.credentials, Credentials::Token("leaf-token".into()));
    assert!(second.uses_tls() && link.tls_required);
    assert_eq!(link.name, "srv", "no name: the server's");
    assert!(link.export.permits_subject(b"telemetry.cpu"));
    assert!(!link.export.permits_subject(b"telemetry.debug"));
    assert!(!link.export.permits_subject(b"orders.1"));
    // The file round-trips.
    assert_eq!(
        Config::from_toml_str(&config.to_toml_string()).unwrap(),
        config
    );
}

#[test]
fn the_name_falls_back_to_the_host_name() {
    let remote = LeafRemoteConfig {
        urls: vec!["nats-leaf://h".into()],
        ..LeafRemoteConfig::default()
    };
    let name = remote.leaf_name("");
    assert!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "{name:?}"
    );
}

#[test]
fn bad_urls_are_refused_with_the_key() {
    for (url, why) in [
        ("hub:7422", "not a URL"),
        ("ws://hub:7422", "scheme"),
        ("nats-leaf://", "host"),
        ("nats-leaf://hub:0", "port"),
        ("nats-leaf://hub:70000", "port"),
        ("nats-leaf://hub:x", "port"),
        ("nats-leaf://u:p@hub:7422", "credentials"),
        ("nats-leaf://hub:7422/path", "host[:port]"),
        ("nats-leaf://a:b:7422", "host"),
    ] {
        let (key, message) = refused(&remote(&format!("urls = [{url:?}]")));
        assert_eq!(key, "leafnode.remotes[0].urls", "{url}");
        assert!(message.contains(why), "{url}: {message}");
    }
    let (key, _) = refused(&remote("urls = []"));
    assert_eq!(key, "leafnode.remotes[0].urls");
    assert_eq!(
        parse_leaf_url("NATS-LEAF://hub/").unwrap().address,
        "hub:7422"
    );
}

#[test]
fn credentials_must_be_whole_and_single() {
    let url = "urls = [\"nats-leaf://h\"]\n";
    for (body, key) in [
        ("user = \"u\"", "leafnode.remotes[0].password"),
        ("password = \"p\"", "leafnode.remotes[0].user"),
        (
            "user = \"u\"\npassword = \"p\"\ntoken = \"t\"",
            "leafnode.remotes[0].token",
        ),
        ("token = \"\"", "leafnode.remotes[0].token"),
        ("ca_file = \"ca.pem\"", "leafnode.remotes[0].ca_file"),
        (
            "cert_file = \"c.pem\"\nkey_file = \"k.pem\"",
            "leafnode.remotes[0].cert_file",
        ),
        (
            "tls = true\ncert_file = \"c.pem\"",
            "leafnode.remotes[0].key_file",
        ),
        ("name = \"two words\"", "leafnode.remotes[0].name"),
        (
            "import = { deny = [\"a..b\"] }",
            "leafnode.remotes[0].import",
        ),
        (
            "export = { allow = [\"a.>.b\"] }",
            "leafnode.remotes[0].export",
        ),
    ] {
        assert_eq!(refused(&remote(&format!("{url}{body}"))).0, key, "{body}");
    }
    let error = Config::from_toml_str(&remote(&format!("{url}passwd = \"x\""))).unwrap_err();
    assert!(
        error.to_string().contains("passwd"),
        "unknown keys are refused: {error}"
    );
    assert!(
        Config::from_toml_str(&remote(&format!("{url}tls = true\nca_file = \"ca.pem\""))).is_ok()
    );
}

#[test]
fn secrets_are_redacted() {
    let config = Config::from_toml_str(REMOTES).unwrap();
    let shown = config.redacted().to_toml_string();
    let debug = format!("{config:?}");
    for secret in ["leaf-pw", "leaf-token"] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(shown.contains("edge"));
}
