use super::*;
use blipmq_protocol::{decode_frame, encode, flags};

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        server_id: "test".into(),
        max_payload: 64,
        max_topic_length: 16,
        max_subscriptions: 2,
        token: None,
        users: Default::default(),
        ping_interval: Duration::from_secs(10),
        max_pings_out: 2,
    })
}

/// Feeds one encoded frame to the session.
fn feed<'a>(session: &mut Session, bytes: &'a [u8]) -> Step<'a> {
    let (frame, len) = decode_frame(bytes, 4096).unwrap().unwrap();
    assert_eq!(len, bytes.len());
    session.on_frame(frame)
}

fn connect_frame(json: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode::put_connect(&mut out, json.as_bytes());
    out
}

fn open_session(config: Arc<SessionConfig>) -> Session {
    let mut session = Session::new(config, Instant::now());
    assert_eq!(
        feed(&mut session, &connect_frame(r#"{"protocol":1}"#)),
        Step::Ok
    );
    session
}

fn frame(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out);
    out
}

#[test]
fn connect_first_then_open() {
    let mut session = Session::new(config(), Instant::now());
    assert!(!session.is_open());
    let bytes = connect_frame(r#"{"protocol":1,"name":"c1"}"#);
    let step = feed(&mut session, &bytes);
    assert_eq!(step, Step::Ok);
    assert!(session.is_open());
    assert_eq!(session.name(), Some("c1"));
}

#[test]
fn first_frame_not_connect_is_401() {
    let mut session = Session::new(config(), Instant::now());
    let ping = frame(encode::put_ping);
    assert!(matches!(
        feed(&mut session, &ping),
        Step::Fatal(ErrorCode::Unauthorized, _)
    ));
}

#[test]
fn malformed_first_frame_is_400() {
    let mut session = Session::new(config(), Instant::now());
    let mut bad = frame(encode::put_ping);
    bad[7] = 0x80;
    assert!(matches!(
        feed(&mut session, &bad),
        Step::Fatal(ErrorCode::BadRequest, _)
    ));
}

#[test]
fn bad_connect_bodies_are_400() {
    for json in [
        "nope",
        "[1]",
        r#"{"protocol":2}"#,
        r#"{"name":"x"}"#,
        r#"{"protocol":"1"}"#,
    ] {
        let mut session = Session::new(config(), Instant::now());
        let bytes = connect_frame(json);
        let step = feed(&mut session, &bytes);
        assert!(
            matches!(step, Step::Fatal(ErrorCode::BadRequest, _)),
            "{json}: {step:?}"
        );
    }
}

#[test]
fn token_is_checked() {
    let mut with_token = (*config()).clone();
    with_token.token = Some("s3cret".into());
    let with_token = Arc::new(with_token);
    for (json, ok) in [
        (r#"{"protocol":1}"#, false),
        (r#"{"protocol":1,"token":"wrong"}"#, false),
        (r#"{"protocol":1,"token":"s3cret"}"#, true),
    ] {
        let mut session = Session::new(with_token.clone(), Instant::now());
        let bytes = connect_frame(json);
        let step = feed(&mut session, &bytes);
        if ok {
            assert_eq!(step, Step::Ok);
        } else {
            assert!(
                matches!(step, Step::Fatal(ErrorCode::Unauthorized, _)),
                "{json}"
            );
        }
    }
}

#[test]
fn second_connect_is_malformed() {
    let mut session = open_session(config());
    let bytes = connect_frame(r#"{"protocol":1}"#);
    let step = feed(&mut session, &bytes);
    assert!(matches!(step, Step::Fatal(ErrorCode::BadRequest, _)));
}

#[test]
fn publish_checks_subject_reply_and_payload() {
    let mut session = open_session(config());
    let ok = frame(|o| encode::put_publish(o, b"a.b", Some(b"r.1"), b"hi", false));
    assert_eq!(
        feed(&mut session, &ok),
        Step::Publish {
            message: Message {
                subject: b"a.b",
                reply: Some(b"r.1"),
                headers: b"",
                payload: b"hi",
            },
            ack: false
        }
    );
    let wildcard = frame(|o| encode::put_publish(o, b"a.*", None, b"hi", false));
    match feed(&mut session, &wildcard) {
        Step::Error(ErrorCode::BadRequest, reason) => assert!(reason.contains("invalid subject")),
        other => panic!("{other:?}"),
    }
    let bad_reply = frame(|o| encode::put_publish(o, b"a", Some(b"r..x"), b"", false));
    match feed(&mut session, &bad_reply) {
        Step::Error(ErrorCode::BadRequest, reason) => assert!(reason.contains("invalid subject")),
        other => panic!("{other:?}"),
    }
    let long = frame(|o| encode::put_publish(o, b"a.very.long.subject.x", None, b"", false));
    assert!(matches!(
        feed(&mut session, &long),
        Step::Error(ErrorCode::BadRequest, _)
    ));
    let big = vec![7u8; 65];
    let too_big = frame(|o| encode::put_publish(o, b"a", None, &big, false));
    assert!(matches!(
        feed(&mut session, &too_big),
        Step::Fatal(ErrorCode::TooLarge, _)
    ));
    let at_limit = vec![7u8; 64];
    let fits = frame(|o| encode::put_publish(o, b"a", None, &at_limit, false));
    assert!(matches!(feed(&mut session, &fits), Step::Publish { .. }));
}

#[test]
fn verbose_acks_everything() {
    let mut session = Session::new(config(), Instant::now());
    assert_eq!(
        feed(
            &mut session,
            &connect_frame(r#"{"protocol":1,"verbose":true}"#)
        ),
        Step::Ok
    );
    let publish = frame(|o| encode::put_publish(o, b"a", None, b"", false));
    assert!(matches!(
        feed(&mut session, &publish),
        Step::Publish { ack: true, .. }
    ));
    let subscribe = frame(|o| encode::put_subscribe(o, b"a", 1, None, false));
    assert!(matches!(
        feed(&mut session, &subscribe),
        Step::Subscribe { ack: true, .. }
    ));
}

#[test]
fn subscribe_sids_limits_and_unsubscribe() {
    let mut session = open_session(config());
    let sub1 = frame(|o| encode::put_subscribe(o, b"a.>", 1, Some(b"q"), true));
    assert_eq!(
        feed(&mut session, &sub1),
        Step::Subscribe {
            sid: 1,
            filter: b"a.>",
            queue: Some(b"q"),
            ack: true
        }
    );
    session.bind_sid(1, 100);
    assert!(matches!(
        feed(&mut session, &sub1),
        Step::Error(ErrorCode::Conflict, _)
    ));
    let bad_filter = frame(|o| encode::put_subscribe(o, b"a.>.b", 2, None, false));
    match feed(&mut session, &bad_filter) {
        Step::Error(ErrorCode::BadRequest, reason) => assert!(reason.contains("invalid subject")),
        other => panic!("{other:?}"),
    }
    let bad_queue = frame(|o| encode::put_subscribe(o, b"a", 2, Some(b"q.x"), false));
    assert!(matches!(
        feed(&mut session, &bad_queue),
        Step::Error(ErrorCode::BadRequest, _)
    ));
    let sub2 = frame(|o| encode::put_subscribe(o, b"b", 2, None, false));
    assert!(matches!(
        feed(&mut session, &sub2),
        Step::Subscribe { sid: 2, .. }
    ));
    session.bind_sid(2, 101);
    let sub3 = frame(|o| encode::put_subscribe(o, b"c", 3, None, false));
    assert!(matches!(
        feed(&mut session, &sub3),
        Step::Error(ErrorCode::TooMany, _)
    ));

    let unsub = frame(|o| encode::put_unsubscribe(o, 1, 5, false));
    assert_eq!(
        feed(&mut session, &unsub),
        Step::Unsubscribe {
            sid: 1,
            key: 100,
            max_msgs: 5,
            ack: false
        }
    );
    session.release_sid(1);
    assert!(matches!(
        feed(&mut session, &unsub),
        Step::Error(ErrorCode::NotFound, _)
    ));
    assert!(matches!(
        feed(&mut session, &sub3),
        Step::Subscribe { sid: 3, .. }
    ));
}

#[test]
fn ping_pong_and_disconnect() {
    let mut session = open_session(config());
    assert_eq!(feed(&mut session, &frame(encode::put_ping)), Step::Pong);
    assert_eq!(feed(&mut session, &frame(encode::put_pong)), Step::Nothing);
    assert_eq!(
        feed(&mut session, &frame(|o| encode::put_disconnect(o, ""))),
        Step::Disconnect
    );
}

#[test]
fn broker_only_ops_from_a_client_are_malformed() {
    let mut session = open_session(config());
    let msg = frame(|o| encode::put_message(o, b"a", 1, None, b""));
    assert!(matches!(
        feed(&mut session, &msg),
        Step::Fatal(ErrorCode::BadRequest, _)
    ));
    let mut ack_ping = frame(encode::put_ping);
    ack_ping[7] = flags::ACK;
    assert!(matches!(
        feed(&mut session, &ack_ping),
        Step::Fatal(ErrorCode::BadRequest, _)
    ));
}

#[test]
fn pings_then_stale_when_unanswered() {
    let start = Instant::now();
    let mut session = Session::new(config(), start);
    let interval = Duration::from_secs(10);
    assert_eq!(session.on_tick(start + interval / 2), Tick::Nothing);
    assert_eq!(session.on_tick(start + interval), Tick::SendPing);
    assert_eq!(session.on_tick(start + interval * 2), Tick::SendPing);
    assert_eq!(session.on_tick(start + interval * 3), Tick::Stale);
}

#[test]
fn pong_resets_the_ping_count() {
    let start = Instant::now();
    let mut session = open_session(config());
    let interval = Duration::from_secs(10);
    let mut now = start;
    for _ in 0..5 {
        now += interval + Duration::from_millis(1);
        assert_eq!(session.on_tick(now), Tick::SendPing);
        assert_eq!(feed(&mut session, &frame(encode::put_pong)), Step::Nothing);
    }
}
