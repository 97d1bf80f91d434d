//! `server.worker_priority`: the worker threads run real-time (SCHED_FIFO)
//! at the configured priority, and the broker serves as usual.

#[macro_use]
mod common;

use common::{Broker, Raw};

/// (policy, real-time priority) of each thread named `blipmq-worker-*`
/// of process `pid`, from /proc (fields 41 and 40 of `stat`).
fn worker_scheduling(pid: u32) -> Vec<(u32, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the broker's threads");
    let mut found = Vec::new();
    for task in tasks.map_while(Result::ok) {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("blipmq-worker") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).expect("stat");
        // Fields after the parenthesised name, which may hold spaces.
        let rest = &stat[stat.rfind(')').expect("comm in stat") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field n is fields[n - 3].
        found.push((
            fields[41 - 3].parse().unwrap(),
            fields[40 - 3].parse().unwrap(),
        ));
    }
    found
}

#[test]
fn workers_run_real_time_at_the_configured_priority() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("SCHED_FIFO needs root (CAP_SYS_NICE), and CI=true runs as root");
        }
        eprintln!(
            "skipping workers_run_real_time_at_the_configured_priority: not root (CAP_SYS_NICE)"
        );
        return;
    }
    let broker = Broker::start(2, "[server]\nworker_priority = 7\n");
    let threads = worker_scheduling(broker.pid());
    const SCHED_FIFO: u32 = 1;
    assert_eq!(threads, vec![(SCHED_FIFO, 7); 2]);

    let mut sub = Raw::handshake(broker.addr());
    sub.subscribe("rt.x", 1);
    let mut publisher = Raw::handshake(broker.addr());
    publisher.publish("rt.x", b"on time");
    assert_eq!(sub.expect_message().3, b"on time");
}

#[test]
fn workers_run_normally_by_default() {
    let broker = Broker::start(2, "");
    const SCHED_OTHER: u32 = 0;
    assert_eq!(worker_scheduling(broker.pid()), vec![(SCHED_OTHER, 0); 2]);
}
