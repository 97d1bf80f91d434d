//! The link against a scripted hub on a fake clock: no sockets.

use std::time::{Duration, Instant};

use super::*;
use crate::config::{AllowDeny, SubjectRulesConfig};

const HUB_INFO: &[u8] = b"INFO {\"server_id\":\"NHUB\",\"server_name\":\"hub\",\"version\":\"2.9.10\",\"headers\":true,\"max_payload\":1048576,\"client_id\":7,\"leafnode_urls\":[\"127.0.0.1:7422\"],\"info_on_connect\":true} \r\n";
const CONNECT_INFO: &[u8] =
    b"INFO {\"server_id\":\"NHUB\",\"client_id\":7,\"leafnode_urls\":[\"127.0.0.1:7422\"],\"connect_info\":true,\"remote_account\":\"$G\"} \r\n";

fn rules(allow: Option<&[&str]>, deny: &[&str]) -> SubjectRules {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    SubjectRules::new(Some(&SubjectRulesConfig::AllowDeny(AllowDeny {
        allow: allow.map(owned),
        deny: owned(deny),
    })))
}

fn config() -> LeafLinkConfig {
    let mut config = LeafLinkConfig::new("edge-1", vec!["h1:7422".into(), "h2:7422".into()]);
    config.credentials = Credentials::UserPassword {
        user: "leaf".into(),
        password: "s3cret".into(),
    };
    config.ping_interval = Duration::from_secs(10);
    config.seed = 42;
    config
}

struct Harness {
    link: LeafLink,
    now: Instant,
}

impl Harness {
    fn new(config: LeafLinkConfig) -> Harness {
        let now = Instant::now();
        Harness {
            link: LeafLink::new(config, now),
            now,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn poll_all(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.link.poll(self.now)).collect()
    }

    /// Feeds `bytes` whole; returns the events as debug text and whether
    /// the link closed.
    fn feed(&mut self, bytes: &[u8]) -> (Vec<String>, bool) {
        let mut events = Vec::new();
        let mut rest = bytes;
        loop {
            match self.link.read(rest, self.now) {
                Read::Partial => {
                    assert!(
                        rest.is_empty(),
                        "left over: {:?}",
                        String::from_utf8_lossy(rest)
                    );
                    return (events, false);
                }
                Read::Op { consumed, event } => {
                    events.extend(event.map(|event| format!("{event:?}")));
                    rest = &rest[consumed..];
                }
                Read::Closed => return (events, true),
            }
        }
    }

    fn take_output(&mut self) -> String {
        String::from_utf8(std::mem::take(self.link.output())).unwrap()
    }

    /// Dials, handshakes and returns what the link wrote after the
    /// handshake (its interest).
    fn bring_up(&mut self) -> String {
        let actions = self.poll_all();
        assert!(
            matches!(actions.as_slice(), [Action::Connect { .. }]),
            "{actions:?}"
        );
        self.link.connected(self.now);
        assert_eq!(self.feed(HUB_INFO), (vec![], false));
        let hello = self.take_output();
        assert!(hello.starts_with("CONNECT {"), "{hello}");
        assert!(hello.ends_with("}\r\nPING\r\n"), "{hello}");
        self.feed(CONNECT_INFO);
        assert_eq!(self.link.state(), LinkState::Handshaking);
        self.feed(b"PONG\r\n");
        assert_eq!(self.poll_all(), vec![Action::Up]);
        self.take_output()
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.split_terminator("\r\n").collect()
}

#[test]
fn handshake_sends_connect_with_name_credentials_headers_then_interest() {
    let mut h = Harness::new(config());
    h.link.add_interest(b"orders.>", None);
    assert_eq!(
        h.poll_all(),
        vec![Action::Connect {
            url_index: 0,
            url: "h1:7422".into()
        }]
    );
    h.link.connected(h.now);
    h.feed(HUB_INFO);
    let hello = h.take_output();
    let json = hello
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split_once("\r\n"))
        .unwrap()
        .0;
    let connect: LeafConnect = serde_json::from_str(json).unwrap();
    assert_eq!(connect.name, "edge-1");
    assert_eq!(connect.user.as_deref(), Some("leaf"));
    assert_eq!(connect.pass.as_deref(), Some("s3cret"));
    assert!(connect.headers);
    assert!(
        !json.contains("\"lang\""),
        "a lang field makes the hub refuse a leaf"
    );
    // The hub announced an INFO answer: a PONG alone does not finish.
    h.feed(b"PONG\r\n");
    assert_eq!(h.link.state(), LinkState::Handshaking);
    h.feed(CONNECT_INFO);
    assert_eq!(h.poll_all(), vec![Action::Up]);
    let sent = h.take_output();
    let loop_line = format!("LS+ {}", String::from_utf8_lossy(h.link.loop_subject()));
    assert_eq!(lines(&sent), vec![loop_line.as_str(), "LS+ orders.>"]);
    assert!(h.link.loop_subject().starts_with(b"$LDS.") && h.link.loop_subject().len() == 27);
    assert_eq!(h.link.stats().connects, 1);
    assert_eq!(h.link.hub_info().unwrap().name, "hub");
}

#[test]
fn token_goes_as_auth_token() {
    let mut config = config();
    config.credentials = Credentials::Token("tok".into());
    let mut h = Harness::new(config);
    h.poll_all();
    h.link.connected(h.now);
    h.feed(HUB_INFO);
    let hello = h.take_output();
    assert!(
        hello.contains("\"auth_token\":\"tok\"") && !hello.contains("\"user\""),
        "{hello}"
    );
}

#[test]
fn handshake_timeout_closes_and_the_next_attempt_uses_the_next_url() {
    let mut h = Harness::new(config());
    h.poll_all();
    h.link.connected(h.now);
    h.advance(Duration::from_millis(4999));
    assert_eq!(h.poll_all(), vec![]);
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.poll_all(),
        vec![Action::Close(CloseReason::HandshakeTimeout)]
    );
    assert_eq!(h.link.state(), LinkState::Waiting);
    // Bytes after the close are not read.
    assert_eq!(h.link.read(b"PING\r\n", h.now), Read::Closed);
    h.now = h.link.next_timer();
    assert_eq!(
        h.poll_all(),
        vec![Action::Connect {
            url_index: 1,
            url: "h2:7422".into()
        }]
    );
}

#[test]
fn wrong_port_and_refused_credentials_close_cleanly() {
    let mut h = Harness::new(config());
    h.poll_all();
    h.link.connected(h.now);
    let (_, closed) =
        h.feed(b"INFO {\"server_id\":\"N\",\"client_id\":3,\"connect_urls\":[]} \r\n");
    assert!(closed);
    assert_eq!(h.poll_all(), vec![Action::Close(CloseReason::WrongPort)]);

    h.now = h.link.next_timer();
    h.poll_all();
    h.link.connected(h.now);
    h.feed(HUB_INFO);
    let (_, closed) = h.feed(b"-ERR 'Authorization Violation'\r\n");
    assert!(closed);
    assert_eq!(
        h.poll_all(),
        vec![Action::Close(CloseReason::HubError(
            "Authorization Violation".into()
        ))]
    );
    assert_eq!(h.link.stats().connects, 0);
    assert_eq!(h.link.stats().disconnects, 2);
}

#[test]
fn garbage_from_the_hub_closes_with_a_protocol_error() {
    let mut h = Harness::new(config());
    h.bring_up();
    let (_, closed) = h.feed(b"MSG foo 1 1\r\nx\r\n");
    assert!(closed);
    assert!(matches!(
        h.poll_all().as_slice(),
        [Action::Close(CloseReason::Protocol(_))]
    ));
}

#[test]
fn plain_interest_is_sent_on_first_and_last() {
    let mut h = Harness::new(config());
    h.bring_up();
    h.link.add_interest(b"a.*", None);
    h.link.add_interest(b"a.*", None);
    assert_eq!(h.take_output(), "LS+ a.*\r\n");
    assert!(h.link.remove_interest(b"a.*", None));
    assert_eq!(h.take_output(), "");
    assert!(h.link.remove_interest(b"a.*", None));
    assert_eq!(h.take_output(), "LS- a.*\r\n");
    assert!(!h.link.remove_interest(b"a.*", None));
    assert_eq!(h.link.local_interest_len(), 0);
}

#[test]
fn queue_interest_carries_its_weight_on_every_change() {
    let mut h = Harness::new(config());
    h.bring_up();
    for _ in 0..3 {
        h.link.add_interest(b"jobs", Some(b"workers"));
    }
    assert_eq!(
        lines(&h.take_output()),
        vec![
            "LS+ jobs workers 1",
            "LS+ jobs workers 2",
            "LS+ jobs workers 3"
        ]
    );
    h.link.remove_interest(b"jobs", Some(b"workers"));
    assert_eq!(h.take_output(), "LS+ jobs workers 2\r\n");
    h.link.remove_interest(b"jobs", Some(b"workers"));
    h.link.remove_interest(b"jobs", Some(b"workers"));
    assert_eq!(
        lines(&h.take_output()),
        vec!["LS+ jobs workers 1", "LS- jobs workers"]
    );
}

#[test]
fn interest_is_held_while_down_and_resent_after_reconnect() {
    let mut h = Harness::new(config());
    h.link.add_interest(b"x", Some(b"q"));
    h.link.add_interest(b"x", Some(b"q"));
    h.link.add_interest(b"y", None);
    let first = h.bring_up();
    assert_eq!(h.take_output(), "");
    h.link.disconnected(h.now);
    h.link.add_interest(b"z", None);
    h.link.remove_interest(b"y", None);
    assert_eq!(h.take_output(), "", "nothing is written while down");
    h.now = h.link.next_timer();
    let second = h.bring_up();
    let mut first = lines(&first)[1..].to_vec();
    first.sort_unstable();
    assert_eq!(first, vec!["LS+ x q 2", "LS+ y"]);
    let mut second = lines(&second)[1..].to_vec();
    second.sort_unstable();
    assert_eq!(second, vec!["LS+ x q 2", "LS+ z"]);
    assert_eq!(h.link.stats().connects, 2);
}

#[test]
fn hub_interest_is_recorded_matched_and_cleared_when_the_link_drops() {
    let mut h = Harness::new(config());
    h.bring_up();
    let (events, _) = h
        .feed(b"LS+ $LDS.hubloop\r\nLS+ foo.*\r\nLS+ jobs.> workers 2\r\nLS+ jobs.> workers 5\r\n");
    assert_eq!(events.len(), 4);
    assert!(events[1].contains("change: Added"), "{events:?}");
    assert!(events[3].contains("weight: 5") && events[3].contains("change: Updated"));
    assert!(h.link.hub_wants(b"foo.bar"));
    assert!(!h.link.hub_wants(b"foo.bar.baz"));
    let matches = h.link.hub_interest(b"jobs.1");
    assert!(matches.local.is_empty());
    assert_eq!(&*matches.groups[0].name, b"workers");
    assert_eq!(h.link.hub_group_weight(b"jobs.>", b"workers"), Some(5));
    let (events, _) = h.feed(b"LS- foo.*\r\nLS- nothing\r\n");
    assert_eq!(events.len(), 1);
    assert!(events[0].contains("Removed"));
    assert!(!h.link.hub_wants(b"foo.bar"));
    assert_eq!(h.link.hub_interest_len(), 2);
    // Kept while the link is down (messages for it count as dropped)...
    h.link.disconnected(h.now);
    assert_eq!(h.poll_all(), vec![]);
    assert!(h.link.hub_wants(b"jobs.1"));
    let job = Outgoing {
        subject: b"jobs.1",
        reply: None,
        headers: None,
        payload: b"j",
    };
    let groups: [&[u8]; 1] = [b"workers"];
    assert_eq!(
        h.link.forward(&job, groups, Origin::Local, 0),
        Forwarded::Dropped
    );
    // ...and gone once a new connection begins.
    h.now += Duration::from_secs(60);
    assert!(matches!(h.poll_all().as_slice(), [Action::Connect { .. }]));
    h.link.connected(h.now);
    assert_eq!(h.poll_all(), vec![Action::HubInterestCleared]);
    assert!(!h.link.hub_wants(b"jobs.1"));
}

#[test]
fn hub_messages_are_delivered_and_never_sent_back() {
    let mut h = Harness::new(config());
    h.bring_up();
    h.feed(b"LS+ >\r\n");
    let input = b"LMSG orders.1 + _INBOX.a q1 5\r\nhello\r\n";
    let Read::Op {
        event: Some(Event::Deliver(msg)),
        ..
    } = h.link.read(input, h.now)
    else {
        panic!("no delivery");
    };
    assert_eq!(msg.subject, b"orders.1");
    assert_eq!(msg.reply, Some(&b"_INBOX.a"[..]));
    assert!(msg.queues.contains(b"q1"));
    assert_eq!(msg.payload, b"hello");
    let echo = Outgoing {
        subject: msg.subject,
        reply: msg.reply,
        headers: None,
        payload: msg.payload,
    };
    assert_eq!(h.link.forward(&echo, [], Origin::Hub, 0), Forwarded::Loop);
    assert_eq!(h.take_output(), "");
    assert_eq!(h.link.stats().loops_suppressed, 1);
    assert_eq!((h.link.stats().msgs_in, h.link.stats().bytes_in), (1, 5));
}

#[test]
fn forwarding_follows_the_hub_interest_and_names_hub_queue_groups() {
    let mut h = Harness::new(config());
    h.bring_up();
    let msg = |subject: &'static [u8]| Outgoing {
        subject,
        reply: Some(b"r.1"),
        headers: None,
        payload: b"hi",
    };
    assert_eq!(
        h.link.forward(&msg(b"a"), [], Origin::Local, 0),
        Forwarded::NoInterest
    );
    h.feed(b"LS+ a\r\nLS+ b.* q 1\r\n");
    assert_eq!(
        h.link.forward(&msg(b"a"), [], Origin::Local, 0),
        Forwarded::Sent
    );
    // A group the hub does not have is not named; one it has is.
    let groups: [&[u8]; 2] = [b"other", b"q"];
    assert_eq!(
        h.link
            .forward(&msg(b"b.1"), [&b"other"[..]], Origin::Local, 0),
        Forwarded::NoInterest
    );
    assert_eq!(
        h.link.forward(&msg(b"b.1"), groups, Origin::Local, 0),
        Forwarded::Sent
    );
    let headers = Outgoing {
        subject: b"a",
        reply: None,
        headers: Some(b"NATS/1.0\r\n\r\n"),
        payload: b"x",
    };
    assert_eq!(
        h.link.forward(&headers, [], Origin::Local, 0),
        Forwarded::Sent
    );
    assert_eq!(
        lines(&h.take_output()),
        vec![
            "LMSG a r.1 2",
            "hi",
            "LMSG b.1 + r.1 q 2",
            "hi",
            "HMSG a 12 13",
            "NATS/1.0",
            "",
            "x"
        ]
    );
    assert_eq!(h.link.stats().msgs_out, 3);
}

#[test]
fn export_and_import_filters() {
    let mut config = config();
    config.export = rules(None, &["secret.>"]);
    config.import = rules(Some(&["in.>", "shared.*"]), &["in.private"]);
    let mut h = Harness::new(config);
    h.link.add_interest(b"in.>", None);
    h.link.add_interest(b"elsewhere", None);
    let sent = h.bring_up();
    assert_eq!(
        lines(&sent)[1..],
        ["LS+ in.>"],
        "import decides which interest is announced"
    );
    h.link.add_interest(b"shared.x", None);
    h.link.add_interest(b"nope", Some(b"q"));
    assert_eq!(h.take_output(), "LS+ shared.x\r\n");

    let (events, _) = h.feed(b"LS+ secret.keys\r\nLS+ public\r\n");
    assert_eq!(
        events.len(),
        1,
        "export decides which hub interest counts: {events:?}"
    );
    assert!(!h.link.hub_wants(b"secret.keys"));
    let out = |subject: &'static [u8]| Outgoing {
        subject,
        reply: None,
        headers: None,
        payload: b"",
    };
    assert_eq!(
        h.link.forward(&out(b"secret.keys"), [], Origin::Local, 0),
        Forwarded::Denied
    );
    assert_eq!(
        h.link.forward(&out(b"public"), [], Origin::Local, 0),
        Forwarded::Sent
    );

    let (events, _) = h.feed(b"LMSG in.private 0\r\n\r\nLMSG in.ok 0\r\n\r\nLMSG other 0\r\n\r\n");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("in.ok") || events[0].contains("[105, 110, 46, 111, 107]"));
    assert_eq!(h.link.stats().import_denied, 2);
    assert_eq!(h.link.stats().export_denied, 1);
}

#[test]
fn our_loop_subject_from_the_hub_closes_and_delays_the_reconnect() {
    let mut h = Harness::new(config());
    h.bring_up();
    let mut echo = b"LS+ ".to_vec();
    echo.extend_from_slice(h.link.loop_subject());
    echo.extend_from_slice(b"\r\n");
    let (_, closed) = h.feed(&echo);
    assert!(closed);
    assert_eq!(h.poll_all(), vec![Action::Close(CloseReason::LoopDetected)]);
    assert_eq!(h.link.next_timer(), h.now + Duration::from_secs(30));
    // The hub's own verdict waits as long.
    h.now = h.link.next_timer();
    h.bring_up();
    h.feed(b"-ERR 'Loop detected for leafnode account=\"$G\". Delaying attempt to reconnect for 30s'\r\n");
    assert_eq!(h.link.next_timer(), h.now + Duration::from_secs(30));
}

#[test]
fn pings_measure_rtt_and_unanswered_pings_close_as_stale() {
    let mut h = Harness::new(config());
    h.bring_up();
    h.feed(b"PING\r\n");
    assert_eq!(h.take_output(), "PONG\r\n");
    h.advance(Duration::from_secs(10));
    h.poll_all();
    assert_eq!(h.take_output(), "PING\r\n");
    h.advance(Duration::from_millis(3));
    h.feed(b"PONG\r\n");
    assert_eq!(h.link.stats().rtt, Some(Duration::from_millis(3)));
    // Two unanswered pings, then stale at the third interval.
    for _ in 0..2 {
        h.now = h.link.next_timer();
        assert_eq!(h.poll_all(), vec![]);
        assert_eq!(h.take_output(), "PING\r\n");
    }
    h.now = h.link.next_timer();
    assert_eq!(h.poll_all(), vec![Action::Close(CloseReason::Stale)]);
}

#[test]
fn backoff_grows_to_its_cap_rotates_urls_and_is_deterministic() {
    let delays = |seed| {
        let mut config = config();
        config.seed = seed;
        let mut h = Harness::new(config);
        let mut delays = Vec::new();
        let mut urls = Vec::new();
        for _ in 0..8 {
            let Some(Action::Connect { url_index, .. }) = h.poll_all().pop() else {
                panic!("no dial");
            };
            urls.push(url_index);
            h.link.disconnected(h.now);
            let delay = h.link.next_timer() - h.now;
            delays.push(delay);
            h.now += delay;
        }
        (delays, urls)
    };
    let (first, urls) = delays(7);
    assert_eq!(urls, vec![0, 1, 0, 1, 0, 1, 0, 1]);
    assert_eq!(first, delays(7).0, "same seed, same delays");
    for (attempt, delay) in first.iter().enumerate() {
        let ceiling = Duration::from_secs(1 << attempt.min(5)).min(Duration::from_secs(30));
        assert!(
            *delay <= ceiling && *delay >= ceiling * 3 / 4,
            "{attempt}: {delay:?}"
        );
    }
    // A completed handshake starts the back-off over.
    let mut h = Harness::new(config());
    for _ in 0..4 {
        h.poll_all();
        h.link.disconnected(h.now);
        h.now = h.link.next_timer();
    }
    h.bring_up();
    h.link.disconnected(h.now);
    assert!(h.link.next_timer() - h.now <= Duration::from_secs(1));
}

#[test]
fn messages_while_down_or_over_the_output_bound_are_dropped_and_counted() {
    let mut config = config();
    config.max_pending_bytes = 40;
    let mut h = Harness::new(config);
    let msg = Outgoing {
        subject: b"a",
        reply: None,
        headers: None,
        payload: &[0; 40],
    };
    assert_eq!(
        h.link.forward(&msg, [], Origin::Local, 0),
        Forwarded::Dropped
    );
    h.bring_up();
    h.feed(b"LS+ a\r\n");
    assert_eq!(h.link.forward(&msg, [], Origin::Local, 0), Forwarded::Sent);
    assert_eq!(
        h.link.forward(&msg, [], Origin::Local, 0),
        Forwarded::Dropped
    );
    assert_eq!(h.link.output().len(), b"LMSG a 40\r\n".len() + 40 + 2);
    h.take_output();
    // Output taken but not written yet counts too.
    assert_eq!(
        h.link.forward(&msg, [], Origin::Local, 40),
        Forwarded::Dropped
    );
    assert_eq!(h.link.forward(&msg, [], Origin::Local, 0), Forwarded::Sent);
    h.link.disconnected(h.now);
    assert_eq!(
        h.link.forward(&msg, [], Origin::Local, 0),
        Forwarded::Dropped
    );
    assert_eq!(h.link.stats().dropped, 4);
}

#[test]
fn headers_go_only_to_a_hub_that_takes_them_and_nothing_over_its_max_payload() {
    let mut h = Harness::new(config());
    h.poll_all();
    h.link.connected(h.now);
    h.feed(b"INFO {\"client_id\":1,\"leafnode_urls\":[\"a:1\"],\"headers\":false,\"max_payload\":8} \r\n");
    h.take_output();
    h.feed(b"PONG\r\nLS+ a\r\n");
    assert!(h.link.is_up());
    h.take_output();
    let msg = Outgoing {
        subject: b"a",
        reply: None,
        headers: Some(b"NATS/1.0\r\n\r\n"),
        payload: b"x",
    };
    assert_eq!(h.link.forward(&msg, [], Origin::Local, 0), Forwarded::Sent);
    assert_eq!(h.take_output(), "LMSG a 1\r\nx\r\n");
    let big = Outgoing {
        subject: b"a",
        reply: None,
        headers: None,
        payload: b"123456789",
    };
    assert_eq!(
        h.link.forward(&big, [], Origin::Local, 0),
        Forwarded::Dropped
    );
    assert_eq!(h.link.stats().dropped, 1);
}

#[test]
fn tls_starts_after_the_hubs_info_before_connect() {
    // The hub asks for it...
    let mut h = Harness::new(config());
    assert!(matches!(h.poll_all().as_slice(), [Action::Connect { .. }]));
    h.link.connected(h.now);
    let info = String::from_utf8_lossy(HUB_INFO)
        .replace("\"headers\"", "\"tls_required\":true,\"headers\"");
    h.feed(info.as_bytes());
    assert_eq!(h.poll_all(), vec![Action::StartTls]);
    assert!(h.take_output().starts_with("CONNECT {"));
    // ...or the remote does (a tls:// URL), whatever the hub says.
    let mut tls = config();
    tls.tls_required = true;
    let mut h = Harness::new(tls);
    h.poll_all();
    h.link.connected(h.now);
    h.feed(HUB_INFO);
    assert_eq!(h.poll_all(), vec![Action::StartTls]);
    // Neither: no TLS.
    let mut h = Harness::new(config());
    h.poll_all();
    h.link.connected(h.now);
    h.feed(HUB_INFO);
    assert_eq!(h.poll_all(), vec![]);
}

#[test]
fn the_hub_clusters_advertised_urls_join_the_rotation() {
    let mut h = Harness::new(LeafLinkConfig::new("edge", vec!["h1:7422".into()]));
    h.bring_up();
    // An async INFO: the cluster grew.
    let grown = "INFO {\"server_id\":\"NHUB\",\"client_id\":7,\"leafnode_urls\":[\"127.0.0.1:7422\",\"h1:7422\",\"h3:7422\"]} \r\n";
    h.feed(grown.as_bytes());
    assert_eq!(h.link.discovered_urls(), ["127.0.0.1:7422", "h3:7422"]);
    let mut dialled = Vec::new();
    for _ in 0..4 {
        h.link.disconnected(h.now);
        h.now += Duration::from_secs(60);
        match h.poll_all().as_slice() {
            [Action::Connect { url, url_index }] => dialled.push((url.clone(), *url_index)),
            other => panic!("{other:?}"),
        }
        h.link.connected(h.now);
    }
    let urls: Vec<&str> = dialled.iter().map(|(url, _)| url.as_str()).collect();
    assert_eq!(
        urls,
        ["127.0.0.1:7422", "h3:7422", "h1:7422", "127.0.0.1:7422"]
    );
    assert_eq!(h.link.current_url(), "127.0.0.1:7422");
}
