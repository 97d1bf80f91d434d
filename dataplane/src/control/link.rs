//! The control thread's ends of the per-worker control rings.
//!
//! Each worker gets a pair of small SPSC rings of its own (requests in,
//! replies out), so control traffic never shares a ring with messages and
//! never makes a worker wait.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::protocol::{self, WorkerRequest, RECORD_HEADER};
use crate::rings::{Consumer, Producer, RingRegion};
use crate::worker::ControlPort;

/// Data bytes of each control ring: room for a few thousand connections
/// per reply chunk; pages are touched only when used.
const CONTROL_RING_BYTES: usize = 1 << 20;
/// How long the control thread waits between looks at the reply rings.
const REPLY_POLL: Duration = Duration::from_micros(200);

pub struct WorkerLink {
    requests: Producer,
    replies: Consumer,
    waker: Arc<mio::Waker>,
}

/// One link per worker and the worker's ports, in worker order.
pub fn control_links(
    wakers: &[Arc<mio::Waker>],
) -> io::Result<(Vec<WorkerLink>, Vec<ControlPort>)> {
    let mut links = Vec::with_capacity(wakers.len());
    let mut ports = Vec::with_capacity(wakers.len());
    for waker in wakers {
        // A two-party region: party 0 is the control thread, 1 the worker.
        let mut ends = RingRegion::new(2, CONTROL_RING_BYTES)?.into_workers();
        let mut worker = ends.pop().expect("two parties");
        let mut control = ends.pop().expect("two parties");
        links.push(WorkerLink {
            requests: control.outgoing[1].take().expect("ring 0 -> 1"),
            replies: control.incoming[1].take().expect("ring 1 -> 0"),
            waker: waker.clone(),
        });
        ports.push(ControlPort::new(
            worker.incoming[0].take().expect("ring 0 -> 1"),
            worker.outgoing[0].take().expect("ring 1 -> 0"),
        ));
    }
    Ok((links, ports))
}

impl WorkerLink {
    /// Sends `request` as request `id` and wakes the worker.
    fn send(&mut self, id: u32, request: &WorkerRequest) -> Result<(), String> {
        let json = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let len = RECORD_HEADER + json.len();
        if len > self.requests.max_record() {
            return Err("control request too large".into());
        }
        let slot = self
            .requests
            .try_reserve(len)
            .ok_or("the worker's control ring is full (is it stalled?)")?;
        protocol::put_record(slot, id, true, &json);
        self.requests.commit();
        self.requests.publish();
        self.waker
            .wake()
            .map_err(|e| format!("cannot wake the worker: {e}"))
    }

    /// Takes reply chunks for request `id` into `buf`; true once the last
    /// one arrived. Chunks of older (timed-out) requests are skipped.
    fn receive(&mut self, id: u32, buf: &mut Vec<u8>) -> bool {
        let mut done = false;
        let mut any = false;
        while let Some(record) = self.replies.peek() {
            if let Some((reply_id, last, json)) = protocol::read_record(record) {
                if reply_id == id {
                    buf.extend_from_slice(json);
                    done = last;
                }
            }
            self.replies.advance();
            any = true;
            if done {
                break;
            }
        }
        if any {
            self.replies.release();
        }
        done
    }
}

/// Sends `request` to every worker in `links` and waits for their replies
/// until `timeout`; one result per worker, in order.
pub fn ask_all(
    links: &mut [WorkerLink],
    id: u32,
    request: &WorkerRequest,
    timeout: Duration,
) -> Vec<Result<Value, String>> {
    let deadline = Instant::now() + timeout;
    let mut results: Vec<Option<Result<Value, String>>> = links
        .iter_mut()
        .map(|link| link.send(id, request).err().map(Err))
        .collect();
    let mut bufs = vec![Vec::new(); links.len()];
    loop {
        for (w, link) in links.iter_mut().enumerate() {
            if results[w].is_none() && link.receive(id, &mut bufs[w]) {
                results[w] = Some(parse_reply(&bufs[w]));
            }
        }
        if results.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(REPLY_POLL);
    }
    results
        .into_iter()
        .enumerate()
        .map(|(w, result)| {
            result.unwrap_or_else(|| {
                Err(format!(
                    "worker {w} did not answer within {} ms",
                    timeout.as_millis()
                ))
            })
        })
        .collect()
}

fn parse_reply(json: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| format!("bad reply from a worker: {e}"))?;
    match value.get("error").and_then(Value::as_str) {
        Some(error) => Err(error.to_string()),
        None => Ok(value),
    }
}
