//! NATS connections on the cores: the same routing, written as NATS ops.

use super::*;

/// A NATS connection on worker `w`, past its CONNECT (and INFO taken).
pub(super) fn nats_client(cluster: &mut Cluster, w: usize, connect: &str) -> ConnId {
    let cid = cluster.cores[w].accept(cluster.now, Dialect::Nats);
    cluster.send(w, cid, format!("CONNECT {connect}\r\n").as_bytes());
    let info = take_text(cluster, w, cid);
    assert!(info.starts_with("INFO {"), "{info}");
    cid
}

/// Everything queued for a connection, as text.
pub(super) fn take_text(cluster: &mut Cluster, w: usize, cid: ConnId) -> String {
    let mut text = String::new();
    loop {
        let run = cluster.cores[w].output(cid).to_vec();
        if run.is_empty() {
            return text;
        }
        cluster.cores[w].on_output_written(cid, run.len(), cluster.now);
        text.push_str(&String::from_utf8_lossy(&run));
    }
}

#[test]
fn no_echo_passes_a_queue_groups_turn_to_another_member() {
    let mut cluster = Cluster::new(1, 1 << 16, 1 << 20);
    let quiet = nats_client(&mut cluster, 0, r#"{"verbose":false,"echo":false}"#);
    let other = nats_client(&mut cluster, 0, r#"{"verbose":false}"#);
    cluster.send(0, quiet, b"SUB jobs g 1\r\nSUB jobs 2\r\n");
    cluster.send(0, other, b"SUB jobs g 7\r\n");
    let mut burst = Vec::new();
    for n in 0..50 {
        burst.extend_from_slice(format!("PUB jobs {}\r\n{n:02}\r\n", 2).as_bytes());
    }
    cluster.send(0, quiet, &burst);
    // The publisher's own member and plain subscription get nothing; the
    // other member gets every message of the group.
    assert_eq!(take_text(&mut cluster, 0, quiet), "");
    let got = take_text(&mut cluster, 0, other);
    assert_eq!(got.matches("MSG jobs 7 2\r\n").count(), 50, "{got}");
    assert_eq!(cluster.cores[0].stats.get(Counter::DroppedNoGroupMember), 0);
}

/// The NATS side of `a_client_that_does_not_read_its_answers_is_cut_off_at_max_pending`:
/// verbose +OKs and PONGs stop at `max_pending_bytes` with -ERR 'Slow Consumer'.
#[test]
fn a_nats_client_that_does_not_read_its_answers_is_cut_off() {
    let mut cluster = Cluster::new(1, 1 << 16, 4096);
    let greedy = nats_client(&mut cluster, 0, r#"{"verbose":true}"#);
    let _ = take_text(&mut cluster, 0, greedy);
    cluster.send(0, greedy, "PING\r\nSUB a 1\r\n".repeat(1000).as_bytes());
    assert!(cluster.cores[0].pending_output(greedy) <= 4096 + 64);
    let text = take_text(&mut cluster, 0, greedy);
    assert!(text.ends_with("-ERR 'Slow Consumer'\r\n"), "{text}");
    assert!(cluster.cores[0].should_close(greedy, cluster.now));
}
