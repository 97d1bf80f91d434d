//! The NATS listener against the Python `nats-py` client: runs
//! `tests/nats_py/client_suite.py` (pub/sub, wildcards, queue groups,
//! request/reply, no-responders, headers, auto-unsubscribe, max_payload,
//! no_echo, drain) against a broker with a NATS listener, on every backend
//! the conformance suite runs on (from a user-space broker's client
//! namespace), in plaintext and over TLS.
//!
//! The Python comes from `BLIPMQ_NATS_PY` (`.ci/run` makes a virtual
//! environment with nats-py and sets it), else `python3` if it imports
//! `nats`. Without one the test skips with a line that says so; under
//! CI=true it fails instead.

#[macro_use]
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::{as_client_of, Backend, Broker};

const MAX_PAYLOAD: usize = 256 * 1024;

/// A Python that imports nats-py, or why there is none.
fn python() -> Result<String, String> {
    let python = std::env::var("BLIPMQ_NATS_PY").unwrap_or_else(|_| "python3".to_string());
    let imports = Command::new(&python)
        .args(["-c", "import nats"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if imports {
        Ok(python)
    } else {
        Err(format!(
            "{python} cannot import nats (pip install nats-py, or set BLIPMQ_NATS_PY to a \
             Python that can; .ci/run does)"
        ))
    }
}

fn nats_py_client_suite(backend: Backend, workers: usize) {
    run_suite(backend, workers, false);
}

fn nats_py_client_suite_over_tls(backend: Backend, workers: usize) {
    run_suite(backend, workers, true);
}

/// The suite against a broker with a NATS listener, over TLS (certificates
/// of a CA made for the test) when `tls`.
fn run_suite(backend: Backend, workers: usize, tls: bool) {
    let python = match python() {
        Ok(python) => python,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("nats-py unavailable under CI=true: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    // Any free port of 127.0.0.1 on the kernel backend; a fixed port of its
    // own address on a user-space one (each has a lab).
    let listen = match backend {
        Backend::Kernel => "127.0.0.1:0",
        _ => "0.0.0.0:4222",
    };
    let mut pki = None;
    let mut broker = Broker::start_for(backend, workers, |ip| {
        let mut config =
            format!("[nats]\nlisten = \"{listen}\"\n[limits]\nmax_payload = {MAX_PAYLOAD}\n");
        if tls {
            let made = Pki::new(&format!("nats-py-{backend:?}-{workers}"), ip);
            config.push_str(&made.tls_config(""));
            pki = Some(made);
        }
        config
    });
    let ca = pki.as_ref().map(Pki::ca);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nats_py/client_suite.py");
    let addr = broker.nats_addr();
    // Started from the client namespace, the process stays in it.
    let mut child = as_client_of(addr, move || {
        Command::new(&python)
            .arg(script)
            .arg(addr.to_string())
            .arg(MAX_PAYLOAD.to_string())
            .args(ca)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the nats-py suite")
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the suite") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the nats-py suite ran past 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    eprintln!("{out}");
    assert!(
        status.success(),
        "nats-py suite failed ({status}):\n{out}\n{err}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok: ")).count(),
        9,
        "{out}"
    );
    broker.assert_alive();
}

for_backends! {
    workers: [nats_py_client_suite, nats_py_client_suite_over_tls],
    two_workers: [],
}
