//! The session's NATS front end: NATS ops, decoded by the protocol crate's
//! NATS codec, give the same steps as the binary protocol's requests.

use super::*;
use blipmq_protocol::nats::{decode_client_op, NatsLimits};

fn config(token: Option<&str>) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        server_id: "test".into(),
        max_payload: 64,
        max_topic_length: 16,
        max_subscriptions: 2,
        token: token.map(String::from),
        users: Default::default(),
        ping_interval: Duration::from_secs(10),
        max_pings_out: 2,
    })
}

/// Decodes one whole op from `text` and feeds it to the session.
fn feed<'a>(session: &mut Session, text: &'a [u8]) -> Step<'a> {
    let (op, used) = decode_client_op(text, &NatsLimits::default())
        .expect("valid op")
        .expect("whole op");
    assert_eq!(used, text.len(), "one op per call");
    session.on_nats_op(op)
}

fn open(connect: &[u8]) -> Session {
    let mut session = Session::new(config(None), Instant::now());
    let step = feed(&mut session, connect);
    assert!(matches!(step, Step::Ok | Step::Nothing), "{step:?}");
    assert!(session.is_open());
    session
}

#[test]
fn connect_answers_ok_only_when_verbose_which_nats_assumes_when_unsaid() {
    let mut quiet = Session::new(config(None), Instant::now());
    assert_eq!(
        feed(
            &mut quiet,
            b"CONNECT {\"verbose\":false,\"name\":\"py\"}\r\n"
        ),
        Step::Nothing
    );
    assert_eq!(quiet.name(), Some("py"));
    let mut chatty = Session::new(config(None), Instant::now());
    assert_eq!(feed(&mut chatty, b"CONNECT {}\r\n"), Step::Ok);
    assert_eq!(chatty.name(), None);
    // Verbose: every PUB, SUB and UNSUB is acknowledged.
    assert!(matches!(
        feed(&mut chatty, b"PUB a.b 2\r\nhi\r\n"),
        Step::Publish { ack: true, .. }
    ));
}

#[test]
fn an_op_before_connect_closes_the_connection() {
    let mut session = Session::new(config(None), Instant::now());
    assert!(matches!(
        feed(&mut session, b"PING\r\n"),
        Step::Fatal(ErrorCode::Unauthorized, _)
    ));
}

#[test]
fn the_token_is_checked_as_auth_token_or_password() {
    for (json, accepted) in [
        (r#"{"auth_token":"s3cret"}"#, true),
        (r#"{"user":"u","pass":"s3cret"}"#, true),
        (r#"{"auth_token":"wrong"}"#, false),
        (r#"{}"#, false),
    ] {
        let mut session = Session::new(config(Some("s3cret")), Instant::now());
        let text = format!("CONNECT {json}\r\n");
        let step = feed(&mut session, text.as_bytes());
        assert_eq!(session.is_open(), accepted, "{json}: {step:?}");
        if !accepted {
            assert!(
                matches!(step, Step::Fatal(ErrorCode::Unauthorized, _)),
                "{json}"
            );
        }
    }
}

#[test]
fn a_bad_connect_closes_the_connection() {
    let mut session = Session::new(config(None), Instant::now());
    assert!(matches!(
        feed(&mut session, b"CONNECT {\"protocol\":7}\r\n"),
        Step::Fatal(ErrorCode::BadRequest, _)
    ));
    assert!(!session.is_open());
}

#[test]
fn pub_sub_unsub_become_the_binary_protocols_steps() {
    let mut session = open(b"CONNECT {\"verbose\":false}\r\n");
    assert_eq!(
        feed(&mut session, b"PUB orders.new _INBOX.1 5\r\nhello\r\n"),
        Step::Publish {
            message: Message {
                subject: b"orders.new",
                reply: Some(b"_INBOX.1"),
                headers: b"",
                payload: b"hello",
            },
            ack: false,
        }
    );
    assert_eq!(
        feed(&mut session, b"SUB orders.* workers 7\r\n"),
        Step::Subscribe {
            sid: 7,
            filter: b"orders.*",
            queue: Some(b"workers"),
            ack: false,
        }
    );
    session.bind_sid(7, SubKey::default());
    assert_eq!(
        feed(&mut session, b"UNSUB 7 10\r\n"),
        Step::Unsubscribe {
            sid: 7,
            key: SubKey::default(),
            max_msgs: 10,
            ack: false,
        }
    );
    assert_eq!(feed(&mut session, b"PING\r\n"), Step::Pong);
}

#[test]
fn unsub_of_an_unknown_sid_is_ignored_as_nats_server_does() {
    let mut quiet = open(b"CONNECT {\"verbose\":false}\r\n");
    assert_eq!(feed(&mut quiet, b"UNSUB 99\r\n"), Step::Nothing);
    let mut chatty = open(b"CONNECT {\"verbose\":true}\r\n");
    assert_eq!(feed(&mut chatty, b"UNSUB 99\r\n"), Step::Ok);
}

#[test]
fn sids_must_be_numbers_and_subjects_follow_the_broker_rules() {
    let mut session = open(b"CONNECT {\"verbose\":false}\r\n");
    assert!(matches!(
        feed(&mut session, b"SUB a.b sid-x\r\n"),
        Step::Error(ErrorCode::BadRequest, _)
    ));
    assert!(matches!(
        feed(&mut session, b"PUB a.*.c 1\r\nx\r\n"),
        Step::Error(ErrorCode::BadRequest, _)
    ));
    assert!(matches!(
        feed(&mut session, b"SUB a..b 1\r\n"),
        Step::Error(ErrorCode::BadRequest, _)
    ));
    // The broker's own max_payload (64 here), not the codec's default.
    let big = format!("PUB a.b 65\r\n{}\r\n", "x".repeat(65));
    assert!(matches!(
        feed(&mut session, big.as_bytes()),
        Step::Fatal(ErrorCode::TooLarge, _)
    ));
}

#[test]
fn hpub_carries_its_headers_when_the_client_asked_for_them() {
    let hpub = b"HPUB a.b r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
    let mut session = open(
        b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true,\"echo\":false}\r\n",
    );
    assert_eq!(
        feed(&mut session, hpub),
        Step::Publish {
            message: Message {
                subject: b"a.b",
                reply: Some(b"r"),
                headers: b"NATS/1.0\r\n\r\n",
                payload: b"hi",
            },
            ack: false,
        }
    );
    let options = session.nats_options();
    assert!(options.headers && options.no_responders && !options.echo);
    // Headers count against max_payload with the payload.
    let big = format!("HPUB a.b 12 65\r\nNATS/1.0\r\n\r\n{}\r\n", "x".repeat(53));
    assert!(matches!(
        feed(&mut session, big.as_bytes()),
        Step::Fatal(ErrorCode::TooLarge, _)
    ));

    // A client that did not ask for headers is closed without a word, as
    // nats-server does.
    let mut session = open(b"CONNECT {\"verbose\":false}\r\n");
    assert_eq!(feed(&mut session, hpub), Step::Drop);
    assert_eq!(session.nats_options(), NatsOptions::default());
}

#[test]
fn pong_answers_the_servers_pings() {
    let mut session = open(b"CONNECT {\"verbose\":false}\r\n");
    let start = Instant::now();
    assert_eq!(
        session.on_tick(start + Duration::from_secs(10)),
        Tick::SendPing
    );
    assert_eq!(
        session.on_tick(start + Duration::from_secs(20)),
        Tick::SendPing
    );
    assert_eq!(feed(&mut session, b"PONG\r\n"), Step::Nothing);
    assert_eq!(
        session.on_tick(start + Duration::from_secs(30)),
        Tick::SendPing
    );
}
