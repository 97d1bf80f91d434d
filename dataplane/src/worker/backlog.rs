//! Pacing instead of cuts. A subscriber whose queue passes half of
//! `max_pending_bytes` is backlogged: publishers on this worker that would
//! feed it wait, unread, so that TCP paces them, and records for it from
//! other workers stay in their rings, so that those publishers wait for
//! ring room. Once its queue is down to a quarter, they all go on.
//!
//! Pacing is bounded in time, so that one client that stops reading cannot
//! hold its publishers for ever: a subscriber backlogged for longer than
//! the grace period is let go. Its publishers go on without it, and it is
//! paced for again only once it has caught up; meanwhile it is cut off as a
//! slow consumer if its queue passes `max_pending_bytes`, as it is without
//! pacing (protocol.md: the slow-consumer rule is unchanged).

use std::time::{Duration, Instant};

use super::core::ConnId;

/// A subscriber's part in pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Pacing {
    /// Its queue is short (or was never long): it will be paced for.
    #[default]
    Idle,
    /// Its queue passed the mark: publishers that feed it wait.
    Backlogged,
    /// Its grace ran out, or it was cut: nobody waits for it until its
    /// queue is short again.
    LetGo,
}

pub(super) struct Backlog {
    /// Queued bytes past which a subscriber is backlogged; `usize::MAX`
    /// when pacing is off.
    pace_above: usize,
    /// Queued bytes at or below which it no longer is.
    resume_below: usize,
    grace: Duration,
    /// The backlogged connections, each with when it became so; a handful
    /// at most, so a list.
    since: Vec<(ConnId, Instant)>,
    /// A connection stopped being backlogged since the last
    /// [`take_eased`](Self::take_eased).
    eased: bool,
}

impl Backlog {
    /// `grace` zero turns pacing off: subscribers are only cut, past
    /// `max_pending`.
    pub(super) fn new(max_pending: usize, grace: Duration) -> Backlog {
        let mut backlog = Backlog {
            pace_above: usize::MAX,
            resume_below: 0,
            grace,
            since: Vec::new(),
            eased: false,
        };
        backlog.set_limits(max_pending, grace);
        backlog
    }

    /// New limits; connections already backlogged stay so until they ease.
    pub(super) fn set_limits(&mut self, max_pending: usize, grace: Duration) {
        self.grace = grace;
        if grace.is_zero() {
            self.pace_above = usize::MAX;
            self.resume_below = 0;
        } else {
            self.pace_above = max_pending / 2;
            self.resume_below = max_pending / 4;
        }
    }

    /// Whether any connection is backlogged: while none is, publishing
    /// checks nothing more.
    pub(super) fn any(&self) -> bool {
        !self.since.is_empty()
    }

    /// Bytes were queued for `cid`, which now has `pending` queued.
    pub(super) fn on_queued(
        &mut self,
        cid: ConnId,
        state: &mut Pacing,
        pending: usize,
        now: Instant,
    ) {
        if *state == Pacing::Idle && pending > self.pace_above {
            *state = Pacing::Backlogged;
            self.since.push((cid, now));
        }
    }

    /// Bytes queued for `cid` were written; `pending` remain.
    pub(super) fn on_written(&mut self, cid: ConnId, state: &mut Pacing, pending: usize) {
        if *state != Pacing::Idle && pending <= self.resume_below {
            self.forget(cid, state);
            *state = Pacing::Idle;
        }
    }

    /// Lets `cid` go: it caught up, was cut or closed, or its grace ran
    /// out (then it stays [`Pacing::LetGo`] until it catches up).
    pub(super) fn forget(&mut self, cid: ConnId, state: &mut Pacing) {
        if *state == Pacing::Backlogged {
            *state = Pacing::LetGo;
            self.since.retain(|&(c, _)| c != cid);
            self.eased = true;
        }
    }

    /// Whether [`take_eased`](Self::take_eased) would say so.
    pub(super) fn is_eased(&self) -> bool {
        self.eased
    }

    /// Whether a connection stopped being backlogged since the last call:
    /// the publishers and rings it held may go on.
    pub(super) fn take_eased(&mut self) -> bool {
        std::mem::take(&mut self.eased)
    }

    /// The connections backlogged for longer than the grace period.
    pub(super) fn overdue(&self, now: Instant) -> Vec<ConnId> {
        self.since
            .iter()
            .filter(|&&(_, since)| now.saturating_duration_since(since) >= self.grace)
            .map(|&(cid, _)| cid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlogged_above_half_eased_at_a_quarter_let_go_after_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(2);
        let mut backlog = Backlog::new(1000, grace);
        let mut state = Pacing::Idle;
        backlog.on_queued(7, &mut state, 500, t0);
        assert!(state == Pacing::Idle && !backlog.any(), "at half: not yet");
        backlog.on_queued(7, &mut state, 501, t0);
        assert!(state == Pacing::Backlogged && backlog.any());
        backlog.on_written(7, &mut state, 251);
        assert_eq!(
            state,
            Pacing::Backlogged,
            "above a quarter: still backlogged"
        );
        assert!(backlog.overdue(t0 + grace / 2).is_empty());
        assert_eq!(backlog.overdue(t0 + grace), vec![7]);
        assert!(!backlog.take_eased());
        backlog.on_written(7, &mut state, 250);
        assert!(state == Pacing::Idle && !backlog.any());
        assert!(backlog.take_eased());
        assert!(!backlog.take_eased(), "taken once");
        assert!(backlog.overdue(t0 + grace).is_empty());
    }

    #[test]
    fn let_go_is_not_paced_for_again_until_it_catches_up() {
        let t0 = Instant::now();
        let mut backlog = Backlog::new(1000, Duration::from_secs(2));
        let mut state = Pacing::Idle;
        backlog.on_queued(3, &mut state, 600, t0);
        backlog.forget(3, &mut state);
        assert!(state == Pacing::LetGo && !backlog.any() && backlog.take_eased());
        backlog.on_queued(3, &mut state, 900, t0);
        assert!(state == Pacing::LetGo && !backlog.any(), "paced for again");
        backlog.on_written(3, &mut state, 300);
        assert_eq!(state, Pacing::LetGo);
        backlog.on_written(3, &mut state, 250);
        assert_eq!(state, Pacing::Idle);
        assert!(!backlog.take_eased(), "nobody waited for it");
        backlog.on_queued(3, &mut state, 501, t0);
        assert_eq!(state, Pacing::Backlogged);
    }

    #[test]
    fn zero_grace_never_paces() {
        let mut backlog = Backlog::new(1000, Duration::ZERO);
        let mut state = Pacing::Idle;
        backlog.on_queued(1, &mut state, usize::MAX - 1, Instant::now());
        assert!(state == Pacing::Idle && !backlog.any());
    }
}
