//! Users, passwords, tokens and subject permissions, in both dialects.

use super::*;
use crate::config::Config;
use blipmq_protocol::encode;
use blipmq_protocol::nats::{decode_client_op, NatsLimits};

const USERS: &str = r#"
[[auth.users]]
user = "alice"
password = "pw"
permissions.publish = { allow = ["orders.>"], deny = ["orders.secret"] }
permissions.subscribe = ["updates.*", "_INBOX.>"]

[[auth.users]]
user = "svc"
token = "svc-token"
permissions.subscribe = { allow = [">"], deny = ["admin.>"] }
permissions.allow_responses = true

[[auth.users]]
user = "limited"
password = "pw2"
permissions.subscribe = ["svc.>"]
permissions.allow_responses = { max = 2, expires = "1s" }

[[auth.users]]
user = "open"
password = "pw3"
"#;

fn config_from(toml: &str) -> Arc<SessionConfig> {
    let config = Config::from_toml_str(toml).expect("valid users");
    Arc::new(SessionConfig {
        server_id: "test".into(),
        max_payload: 64,
        max_topic_length: 32,
        max_subscriptions: 8,
        token: config.auth.token.clone(),
        users: Arc::new(UserTable::new(&config.auth.users)),
        ping_interval: Duration::from_secs(10),
        max_pings_out: 2,
    })
}

fn binary<'a>(session: &mut Session, bytes: &'a [u8], now: Instant) -> Step<'a> {
    match session.on_bytes(Dialect::Binary, bytes, now) {
        Input::Frame { step, len, .. } => {
            assert_eq!(len, bytes.len());
            step
        }
        other => panic!("not one frame: {other:?}"),
    }
}

fn nats<'a>(session: &mut Session, text: &'a [u8]) -> Step<'a> {
    let (op, used) = decode_client_op(text, &NatsLimits::default())
        .expect("valid op")
        .expect("whole op");
    assert_eq!(used, text.len());
    session.on_nats_op(op)
}

fn connect(json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode::put_connect(&mut out, json.as_bytes());
    out
}

fn publish(subject: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode::put_publish(&mut out, subject.as_bytes(), None, b"x", false);
    out
}

fn subscribe(filter: &str, sid: u32, queue: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    encode::put_subscribe(
        &mut out,
        filter.as_bytes(),
        sid,
        queue.map(str::as_bytes),
        false,
    );
    out
}

/// A binary session that connected with `json`, which must be accepted.
fn open_binary(config: &Arc<SessionConfig>, json: &str, now: Instant) -> Session {
    let mut session = Session::new(config.clone(), now);
    assert_eq!(
        binary(&mut session, &connect(json), now),
        Step::Ok,
        "{json}"
    );
    session
}

fn is_refused(step: &Step<'_>) -> bool {
    matches!(step, Step::Fatal(ErrorCode::Unauthorized, reason) if reason == AUTHORIZATION_FAILED)
}

fn forbidden(reason: &str) -> Step<'static> {
    Step::Error(ErrorCode::Forbidden, reason.to_string())
}

#[test]
fn binary_connect_checks_user_and_password_or_token() {
    let config = config_from(USERS);
    let now = Instant::now();
    assert!(config.auth_required());
    for (json, user) in [
        (
            r#"{"protocol":1,"user":"alice","pass":"pw"}"#,
            Some("alice"),
        ),
        (r#"{"protocol":1,"token":"svc-token"}"#, Some("svc")),
        (r#"{"protocol":1,"user":"alice","pass":"wrong"}"#, None),
        (r#"{"protocol":1,"user":"alice"}"#, None),
        (r#"{"protocol":1,"user":"bob","pass":"pw"}"#, None),
        (r#"{"protocol":1,"user":"svc","pass":"svc-token"}"#, None),
        (r#"{"protocol":1,"token":"pw"}"#, None),
        (r#"{"protocol":1}"#, None),
    ] {
        let mut session = Session::new(config.clone(), now);
        let bytes = connect(json);
        let step = binary(&mut session, &bytes, now);
        match user {
            Some(user) => {
                assert_eq!(step, Step::Ok, "{json}");
                assert_eq!(session.user(), Some(user));
            }
            None => {
                assert!(is_refused(&step), "{json}: {step:?}");
                assert!(!session.is_open());
            }
        }
    }
}

#[test]
fn nats_connect_checks_user_and_password_or_auth_token() {
    let config = config_from(USERS);
    for (text, user) in [
        (
            &b"CONNECT {\"user\":\"alice\",\"pass\":\"pw\"}\r\n"[..],
            Some("alice"),
        ),
        (b"CONNECT {\"auth_token\":\"svc-token\"}\r\n", Some("svc")),
        (b"CONNECT {\"user\":\"alice\",\"pass\":\"bad\"}\r\n", None),
        (b"CONNECT {\"pass\":\"pw\"}\r\n", None),
        (b"CONNECT {}\r\n", None),
    ] {
        let mut session = Session::new(config.clone(), Instant::now());
        let step = nats(&mut session, text);
        match user {
            Some(user) => {
                assert_eq!(step, Step::Ok, "{}", String::from_utf8_lossy(text));
                assert_eq!(session.user(), Some(user));
            }
            None => assert!(is_refused(&step), "{step:?}"),
        }
    }
}

#[test]
fn a_bcrypt_hash_is_checked_as_nats_server_does() {
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        let hash = bcrypt::hash("hunter2", 4).unwrap();
        let hash = format!("{prefix}{}", &hash[4..]);
        let config = config_from(&format!(
            "[[auth.users]]\nuser = \"h\"\npassword = \"{hash}\"\n"
        ));
        let now = Instant::now();
        let session = open_binary(
            &config,
            r#"{"protocol":1,"user":"h","pass":"hunter2"}"#,
            now,
        );
        assert_eq!(session.user(), Some("h"));
        for wrong in ["hunter3", hash.as_str(), ""] {
            let mut session = Session::new(config.clone(), now);
            let json = format!(r#"{{"protocol":1,"user":"h","pass":{wrong:?}}}"#);
            assert!(is_refused(&binary(&mut session, &connect(&json), now)));
        }
        let mut session = Session::new(config.clone(), now);
        let step = nats(
            &mut session,
            b"CONNECT {\"verbose\":false,\"user\":\"h\",\"pass\":\"hunter2\"}\r\n",
        );
        assert_eq!(step, Step::Nothing);
    }
}

#[test]
fn publish_permissions_allow_and_deny_wins_and_the_connection_stays_open() {
    let config = config_from(USERS);
    let now = Instant::now();
    let mut alice = open_binary(&config, r#"{"protocol":1,"user":"alice","pass":"pw"}"#, now);
    let allowed = publish("orders.new");
    assert!(matches!(
        binary(&mut alice, &allowed, now),
        Step::Publish { .. }
    ));
    let denied = publish("orders.secret");
    assert_eq!(
        binary(&mut alice, &denied, now),
        forbidden(r#"Permissions Violation for Publish to "orders.secret""#)
    );
    let elsewhere = publish("billing.x");
    assert_eq!(
        binary(&mut alice, &elsewhere, now),
        forbidden(r#"Permissions Violation for Publish to "billing.x""#)
    );
    assert!(alice.is_open());
    assert!(matches!(
        binary(&mut alice, &allowed, now),
        Step::Publish { .. }
    ));

    // The same over NATS, with nats-server's text.
    let mut session = Session::new(config.clone(), now);
    nats(
        &mut session,
        b"CONNECT {\"verbose\":false,\"user\":\"alice\",\"pass\":\"pw\"}\r\n",
    );
    assert!(matches!(
        nats(&mut session, b"PUB orders.a 1\r\nx\r\n"),
        Step::Publish { .. }
    ));
    assert_eq!(
        nats(&mut session, b"PUB orders.secret 1\r\nx\r\n"),
        forbidden(r#"Permissions Violation for Publish to "orders.secret""#)
    );
    assert_eq!(
        nats(&mut session, b"HPUB other 12 13\r\nNATS/1.0\r\n\r\nx\r\n"),
        Step::Drop,
        "HPUB without headers is still closed first"
    );
}

#[test]
fn subscribe_permissions_cover_wildcards_and_deny_wins() {
    let config = config_from(USERS);
    let now = Instant::now();
    let mut alice = open_binary(&config, r#"{"protocol":1,"user":"alice","pass":"pw"}"#, now);
    for (filter, allowed) in [
        ("updates.x", true),
        ("updates.*", true),
        ("_INBOX.abc.>", true),
        // Wider than the allowed `updates.*`.
        ("updates.>", false),
        (">", false),
        ("orders.x", false),
    ] {
        let bytes = subscribe(filter, 1, None);
        let step = binary(&mut alice, &bytes, now);
        if allowed {
            assert!(matches!(step, Step::Subscribe { .. }), "{filter}: {step:?}");
        } else {
            let reason = format!("Permissions Violation for Subscription to {filter:?}");
            assert_eq!(step, forbidden(&reason));
        }
    }
    let bytes = subscribe("orders.x", 2, Some("q"));
    let queued = binary(&mut alice, &bytes, now);
    assert_eq!(
        queued,
        forbidden(r#"Permissions Violation for Subscription to "orders.x" using queue "q""#)
    );
    assert_eq!(alice.subscription_count(), 0, "nothing was bound");

    // svc: everything but admin.>.
    let mut svc = Session::new(config.clone(), now);
    nats(
        &mut svc,
        b"CONNECT {\"auth_token\":\"svc-token\",\"verbose\":false}\r\n",
    );
    assert_eq!(
        nats(&mut svc, b"SUB admin.users 1\r\n"),
        forbidden(r#"Permissions Violation for Subscription to "admin.users""#)
    );
    assert_eq!(
        nats(&mut svc, b"SUB admin.* q 1\r\n"),
        forbidden(r#"Permissions Violation for Subscription to "admin.*" using queue "q""#)
    );
    // A wider subscription is made; what the deny covers is withheld.
    assert!(matches!(
        nats(&mut svc, b"SUB > 1\r\n"),
        Step::Subscribe { .. }
    ));
    assert!(svc.on_delivery(b"orders.a", None, now));
    assert!(!svc.on_delivery(b"admin.users", None, now));
}

#[test]
fn allow_responses_lets_one_reply_through_per_request() {
    let config = config_from(USERS);
    let now = Instant::now();
    let mut svc = open_binary(&config, r#"{"protocol":1,"token":"svc-token"}"#, now);
    let reply = publish("_INBOX.r1");
    // allow_responses alone denies other publishes (as nats-server).
    let refused = forbidden(r#"Permissions Violation for Publish to "_INBOX.r1""#);
    assert_eq!(binary(&mut svc, &reply, now), refused);
    assert!(svc.on_delivery(b"svc.time", Some(b"_INBOX.r1"), now));
    assert!(matches!(
        binary(&mut svc, &reply, now),
        Step::Publish { .. }
    ));
    assert_eq!(binary(&mut svc, &reply, now), refused, "only once");
    let other = publish("_INBOX.r2");
    assert!(matches!(
        binary(&mut svc, &other, now),
        Step::Error(ErrorCode::Forbidden, _)
    ));
}

#[test]
fn allow_responses_limits_count_and_expire() {
    let config = config_from(USERS);
    let now = Instant::now();
    let mut limited = Session::new(config.clone(), now);
    nats(
        &mut limited,
        b"CONNECT {\"verbose\":false,\"user\":\"limited\",\"pass\":\"pw2\"}\r\n",
    );
    assert!(limited.on_delivery(b"svc.a", Some(b"r.1"), now));
    assert!(limited.on_delivery(b"svc.a", Some(b"r.2"), now));
    let pub_r1 = b"PUB r.1 1\r\nx\r\n";
    let pub_r2 = b"PUB r.2 1\r\nx\r\n";
    let nats_at = |session: &mut Session, text: &'static [u8], at: Instant| {
        matches!(
            session.on_bytes(Dialect::Nats, text, at),
            Input::Frame {
                step: Step::Publish { .. },
                ..
            }
        )
    };
    assert!(nats_at(&mut limited, pub_r1, now));
    assert!(nats_at(&mut limited, pub_r1, now), "max = 2");
    assert!(!nats_at(&mut limited, pub_r1, now));
    assert!(
        !nats_at(&mut limited, pub_r2, now + Duration::from_millis(1500)),
        "expired after 1s"
    );
}

#[test]
fn without_users_or_token_nothing_is_checked() {
    let config = config_from("");
    let now = Instant::now();
    assert!(!config.auth_required());
    let mut session = open_binary(&config, r#"{"protocol":1,"user":"x","pass":"y"}"#, now);
    assert_eq!(session.user(), None);
    assert!(matches!(
        binary(&mut session, &publish("any.thing"), now),
        Step::Publish { .. }
    ));
    assert!(session.on_delivery(b"any.thing", Some(b"r"), now));
}

#[test]
fn a_reload_keeps_users_whose_credentials_hold_and_applies_their_new_permissions() {
    let now = Instant::now();
    let mut alice = open_binary(
        &config_from(USERS),
        r#"{"protocol":1,"user":"alice","pass":"pw"}"#,
        now,
    );
    let mut open = open_binary(
        &config_from(USERS),
        r#"{"protocol":1,"user":"open","pass":"pw3"}"#,
        now,
    );
    let mut svc = open_binary(
        &config_from(USERS),
        r#"{"protocol":1,"token":"svc-token"}"#,
        now,
    );
    // alice may now publish billing.x; open's password changed; svc is gone.
    let reloaded = config_from(
        r#"
[[auth.users]]
user = "alice"
password = "pw"
permissions.publish = ["billing.>"]

[[auth.users]]
user = "open"
password = "new"
"#,
    );
    assert!(alice.reauthorize(reloaded.clone()));
    assert!(matches!(
        binary(&mut alice, &publish("billing.x"), now),
        Step::Publish { .. }
    ));
    assert!(matches!(
        binary(&mut alice, &publish("orders.new"), now),
        Step::Error(ErrorCode::Forbidden, _)
    ));
    assert!(!open.reauthorize(reloaded.clone()));
    assert!(!svc.reauthorize(reloaded.clone()));
    // Authentication off: every connection stays, unrestricted.
    assert!(svc.reauthorize(config_from("")));
    assert_eq!(svc.user(), None);
}

#[test]
fn a_reload_closes_anonymous_and_token_connections_whose_credentials_no_longer_hold() {
    let now = Instant::now();
    let token = config_from("[auth]\ntoken = \"t1\"\n");
    let mut anonymous = open_binary(&config_from(""), r#"{"protocol":1}"#, now);
    assert!(!anonymous.reauthorize(token.clone()));
    let mut with_token = open_binary(&token, r#"{"protocol":1,"token":"t1"}"#, now);
    assert!(with_token.reauthorize(config_from("[auth]\ntoken = \"t1\"\n")));
    assert!(!with_token.reauthorize(config_from("[auth]\ntoken = \"t2\"\n")));
    // Not yet connected: the new configuration applies to its CONNECT.
    let mut waiting = Session::new(config_from(""), now);
    assert!(waiting.reauthorize(token.clone()));
    assert!(is_refused(&binary(
        &mut waiting,
        &connect(r#"{"protocol":1}"#),
        now
    )));
}
