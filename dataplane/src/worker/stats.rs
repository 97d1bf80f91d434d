//! A worker's counters. Plain integers owned by the worker thread; the control
//! plane issue moves them into the shared-memory stats segment.

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub connections_refused: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_published: u64,
    pub messages_delivered: u64,
    /// Messages a slow consumer lost: queued but never sent, or arriving after
    /// it was cut off.
    pub dropped_slow_consumer: u64,
    /// Messages for a queue group whose members on this worker left while
    /// the message was on its way from another worker.
    pub dropped_no_group_member: u64,
    /// Queue-group deliveries passed on to another worker because the
    /// member picked had left.
    pub group_forwards: u64,
    /// Messages whose ring record would exceed a ring's largest record.
    pub dropped_oversized: u64,
    pub errors_sent: u64,
    pub ring_full_stalls: u64,
}
