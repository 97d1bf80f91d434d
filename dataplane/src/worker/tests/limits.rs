//! The connection guards on the cores, in simulated time: the handshake
//! deadline, publish rates (pace and reject) and connections per IP.

use std::net::SocketAddr;

use super::nats::{nats_client, take_text};
use super::*;
use crate::worker::core::TICK;
use crate::worker::dialect::{CONNECTION_LIMIT_PER_IP, HANDSHAKE_TIMEOUT, RATE_LIMIT};
use crate::worker::limits::RatePolicy;

const TIMEOUT: Duration = Duration::from_secs(2);

fn handshake_limits() -> ConnectionLimits {
    ConnectionLimits {
        handshake_timeout: TIMEOUT,
        ..ConnectionLimits::default()
    }
}

fn rate_limits(max_msgs_per_sec: u64, rate_policy: RatePolicy) -> ConnectionLimits {
    ConnectionLimits {
        max_msgs_per_sec,
        rate_policy,
        ..ConnectionLimits::default()
    }
}

/// Runs every worker's timers at `now`, then their loops until nothing
/// moves, as the driver does.
fn tick(cluster: &mut Cluster, now: Instant) {
    cluster.now = now;
    for core in &mut cluster.cores {
        core.on_tick(now);
        core.finish_iteration(now);
    }
    cluster.settle();
}

fn numbered(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn publishes(count: u32, ack: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    for n in 0..count {
        encode::put_publish(&mut bytes, b"x", None, &numbered(n), ack);
    }
    bytes
}

#[test]
fn a_connection_without_connect_gets_401_at_its_deadline_and_closes() {
    let mut cluster = Cluster::with_limits(1, handshake_limits());
    let start = cluster.now;
    let connected = cluster.connect(0);
    let idle = cluster.cores[0].accept(start, Dialect::Binary);
    assert_eq!(cluster.output(0, idle), vec![Out::Info]);
    tick(&mut cluster, start + TIMEOUT - Duration::from_millis(1));
    assert!(
        !cluster.cores[0].is_closing(idle),
        "closed before its deadline"
    );
    tick(&mut cluster, start + TIMEOUT);
    assert_eq!(
        cluster.output(0, idle),
        vec![Out::Error(401, HANDSHAKE_TIMEOUT.into())]
    );
    assert!(cluster.cores[0].should_close(idle, cluster.now));
    assert!(
        !cluster.cores[0].is_closing(connected),
        "CONNECT came in time"
    );
    cluster.cores[0].on_closed(idle);
    assert_eq!(cluster.cores[0].stats.get(Counter::HandshakeTimeouts), 1);
    cluster.send_with(0, connected, encode::put_ping);
    assert_eq!(cluster.output(0, connected), vec![Out::Pong]);
}

#[test]
fn a_nats_connection_without_connect_gets_authentication_timeout() {
    let mut cluster = Cluster::with_limits(1, handshake_limits());
    let start = cluster.now;
    let idle = cluster.cores[0].accept(start, Dialect::Nats);
    // A partial CONNECT does not count.
    cluster.send(0, idle, b"CONNECT {");
    assert!(take_text(&mut cluster, 0, idle).starts_with("INFO {"));
    tick(&mut cluster, start + TIMEOUT);
    assert_eq!(
        take_text(&mut cluster, 0, idle),
        "-ERR 'Authentication Timeout'\r\n"
    );
    assert!(cluster.cores[0].is_closing(idle));
}

#[test]
fn a_zero_timeout_waits_for_connect_forever() {
    let mut cluster = Cluster::with_limits(1, ConnectionLimits::default());
    let start = cluster.now;
    let idle = cluster.cores[0].accept(start, Dialect::Binary);
    tick(&mut cluster, start + Duration::from_secs(30));
    assert!(!cluster.cores[0].is_closing(idle));
}

#[test]
fn ten_thousand_idle_connections_close_at_the_first_tick_past_the_deadline() {
    const IDLE: usize = 10_000;
    let mut cluster = Cluster::with_limits(1, handshake_limits());
    let start = cluster.now;
    let idle: Vec<ConnId> = (0..IDLE)
        .map(|_| cluster.cores[0].accept(start, Dialect::Binary))
        .collect();
    let mut dirty = Vec::new();
    cluster.cores[0].take_dirty(&mut dirty);
    let quiet = std::time::Instant::now();
    cluster.cores[0].on_tick(start + TIMEOUT / 2);
    let quiet = quiet.elapsed();
    let overdue = std::time::Instant::now();
    cluster.cores[0].on_tick(start + TIMEOUT + TICK);
    let overdue = overdue.elapsed();
    eprintln!("on_tick over {IDLE} connections: {quiet:?} before the deadline, {overdue:?} closing them all");
    assert!(idle.iter().all(|&cid| cluster.cores[0].is_closing(cid)));
    cluster.cores[0].take_dirty(&mut dirty);
    assert_eq!(dirty.len(), IDLE, "every one is handed to the backend");
}

#[test]
fn pace_holds_a_fast_publisher_to_its_rate_and_loses_nothing() {
    let mut cluster = Cluster::with_limits(2, rate_limits(10, RatePolicy::Pace));
    // The subscriber on worker 0, the publisher on worker 1: what a tick
    // lets through must reach the ring and be delivered.
    let (sub, publisher) = cluster.subscriber_and_publisher();
    let start = cluster.now;
    cluster.send(1, publisher, &publishes(35, false));
    cluster.settle();
    assert!(
        !cluster.cores[1].wants_input(publisher),
        "read on past its rate"
    );
    assert_eq!(cluster.cores[1].stats.get(Counter::RatePaced), 1);
    let mut next = 0u32;
    let mut take = |cluster: &mut Cluster| {
        for out in cluster.output(0, sub) {
            assert_eq!(out, msg("x", 1, &numbered(next)), "lost or out of order");
            next += 1;
        }
        next
    };
    assert_eq!(take(&mut cluster), 10, "the burst: one second's budget");
    let mut ticks = 0;
    while take(&mut cluster) < 35 {
        ticks += 1;
        assert!(ticks <= 30, "still paced after {ticks} ticks");
        tick(&mut cluster, start + TICK * ticks);
    }
    // 25 past the burst at 10 a second: 2.5 s of ticks.
    assert_eq!(ticks, 25);
    assert!(cluster.cores[1].wants_input(publisher));
    let mut resumed = Vec::new();
    cluster.cores[1].take_resumed(&mut resumed);
    assert!(
        resumed.contains(&publisher),
        "not handed back to the backend"
    );
    assert_eq!(cluster.cores[1].stats.get(Counter::RateRejected), 0);
}

#[test]
fn reject_answers_429_past_the_rate_and_keeps_the_connection() {
    let mut cluster = Cluster::with_limits(1, rate_limits(3, RatePolicy::Reject));
    let sub = cluster.connect(0);
    cluster.send_with(0, sub, |o| encode::put_subscribe(o, b"x", 1, None, true));
    assert_eq!(cluster.output(0, sub), vec![Out::Ok]);
    let publisher = cluster.connect(0);
    cluster.send(0, publisher, &publishes(5, true));
    let refused = Out::Error(429, RATE_LIMIT.into());
    assert_eq!(
        cluster.output(0, publisher),
        vec![Out::Ok, Out::Ok, Out::Ok, refused.clone(), refused]
    );
    let delivered: Vec<Out> = (0..3).map(|n| msg("x", 1, &numbered(n))).collect();
    assert_eq!(cluster.output(0, sub), delivered);
    assert_eq!(cluster.cores[0].stats.get(Counter::RateRejected), 2);
    assert!(cluster.cores[0].wants_input(publisher));
    // A second later the budget is back.
    cluster.now += Duration::from_secs(1);
    cluster.send(0, publisher, &publishes(1, true));
    assert_eq!(cluster.output(0, publisher), vec![Out::Ok]);
}

#[test]
fn reject_tells_a_nats_client_rate_limit_exceeded() {
    let mut cluster = Cluster::with_limits(1, rate_limits(1, RatePolicy::Reject));
    let client = nats_client(&mut cluster, 0, r#"{"verbose":false}"#);
    cluster.send(0, client, b"PUB x 1\r\na\r\nPUB x 1\r\nb\r\nPING\r\n");
    assert_eq!(
        take_text(&mut cluster, 0, client),
        "-ERR 'Rate Limit Exceeded'\r\nPONG\r\n"
    );
}

#[test]
fn a_byte_rate_counts_payload_bytes() {
    let limits = ConnectionLimits {
        max_bytes_per_sec: 10,
        rate_policy: RatePolicy::Reject,
        ..ConnectionLimits::default()
    };
    let mut cluster = Cluster::with_limits(1, limits);
    let publisher = cluster.connect(0);
    cluster.send_with(0, publisher, |o| {
        encode::put_publish(o, b"x", None, b"12345678", true);
        encode::put_publish(o, b"x", None, b"123", true);
        encode::put_publish(o, b"x", None, b"12", true);
    });
    assert_eq!(
        cluster.output(0, publisher),
        vec![Out::Ok, Out::Error(429, RATE_LIMIT.into()), Out::Ok]
    );
}

#[test]
fn a_reload_sets_new_rates_on_live_connections() {
    let mut cluster = Cluster::with_limits(1, ConnectionLimits::default());
    let publisher = cluster.connect(0);
    cluster.send(0, publisher, &publishes(50, true));
    assert_eq!(cluster.output(0, publisher).len(), 50);
    let reloaded = cluster.reload(0, 1 << 20, rate_limits(2, RatePolicy::Reject));
    assert_eq!(reloaded.connections, 1);
    cluster.send(0, publisher, &publishes(3, true));
    assert_eq!(
        cluster.output(0, publisher),
        vec![Out::Ok, Out::Ok, Out::Error(429, RATE_LIMIT.into())]
    );
}

#[test]
fn a_reload_moves_the_handshake_deadline_of_waiting_connections() {
    let mut cluster = Cluster::with_limits(1, ConnectionLimits::default());
    let start = cluster.now;
    let idle = cluster.cores[0].accept(start, Dialect::Binary);
    cluster.reload(0, 1 << 20, handshake_limits());
    tick(&mut cluster, start + TIMEOUT);
    assert!(cluster.cores[0].is_closing(idle));
}

fn peer(ip: &str, port: u16) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip.parse().unwrap(), port))
}

#[test]
fn connections_per_ip_count_across_workers_and_free_on_close() {
    let limits = ConnectionLimits {
        max_connections_per_ip: 2,
        ..ConnectionLimits::default()
    };
    let mut cluster = Cluster::with_limits(2, limits);
    let now = cluster.now;
    let first = cluster.cores[0].accept_from(now, Dialect::Binary, peer("10.0.0.1", 1));
    let second = cluster.cores[1].accept_from(now, Dialect::Binary, peer("10.0.0.1", 2));
    assert_eq!(cluster.output(0, first), vec![Out::Info]);
    assert_eq!(cluster.output(1, second), vec![Out::Info]);
    let third = cluster.cores[0].accept_from(now, Dialect::Binary, peer("10.0.0.1", 3));
    assert_eq!(
        cluster.output(0, third),
        vec![Out::Error(503, CONNECTION_LIMIT_PER_IP.into())]
    );
    assert!(cluster.cores[0].is_closing(third));
    assert_eq!(
        cluster.cores[0].stats.get(Counter::ConnectionsRefusedPerIp),
        1
    );
    assert_eq!(cluster.cores[0].stats.get(Counter::ConnectionsRefused), 1);
    // Other addresses, and peers not known, are not held back.
    let other = cluster.cores[0].accept_from(now, Dialect::Binary, peer("10.0.0.2", 1));
    assert_eq!(cluster.output(0, other), vec![Out::Info]);
    let unknown = cluster.cores[0].accept(now, Dialect::Binary);
    assert_eq!(cluster.output(0, unknown), vec![Out::Info]);
    // The refused one did not count; closing it frees nothing.
    cluster.cores[0].on_closed(third);
    let again = cluster.cores[1].accept_from(now, Dialect::Binary, peer("10.0.0.1", 4));
    assert!(cluster.cores[1].is_closing(again));
    cluster.cores[1].on_closed(again);
    // One of the two leaves: room for one more, from either worker.
    cluster.cores[1].on_closed(second);
    let back = cluster.cores[0].accept_from(now, Dialect::Binary, peer("10.0.0.1", 5));
    assert_eq!(cluster.output(0, back), vec![Out::Info]);
}
