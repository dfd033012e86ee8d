//! Linearizable reads by ReadIndex, batched: all reads waiting when a request
//! goes out share one read index. raft-rs drops a read index request silently
//! (a leader that has not committed in its term, a follower with no leader),
//! so each request has a unique context and is re-sent after some ticks; each
//! read has its own deadline.
//!
//! The node's groups send their requests together ([`ReadQueue::holds_back`]):
//! while one group's request is out (for at most [`ALIGN_BOUND`]), no group
//! sends a new one, so the requests of every group leave in one raft loop
//! iteration and their heartbeats (or forwarded requests) travel in one
//! message per node, stepped by the other nodes in one iteration and answered
//! in one message. Requests of groups sent one by one as each answer comes
//! cost the other nodes a message, a wake-up of their transport and of their
//! raft loop each. Holding a request back never weakens a read: it still
//! waits for a read index obtained after it arrived.

use std::time::{Duration, Instant};

use crate::{GroupId, ReplicationError};

pub(crate) use crate::reply::Reply;

pub(crate) struct ReadWaiter {
    pub reply: Reply<u64>,
    pub deadline: Instant,
}

/// How long a request out holds back the next requests of the node's other
/// groups: longer than a round trip of heartbeats on a busy node, short enough
/// that a group whose request raft dropped (no leader) delays the others' little.
pub(crate) const ALIGN_BOUND: Duration = Duration::from_millis(10);

struct Inflight {
    ctx: Vec<u8>,
    waiters: Vec<ReadWaiter>,
    ticks: u32,
    /// When the request first went out (a re-send keeps it).
    since: Instant,
}

#[derive(Default)]
pub(crate) struct ReadQueue {
    /// Reads not yet part of a request.
    waiting: Vec<ReadWaiter>,
    inflight: Option<Inflight>,
    /// Reads whose read index is known, waiting for the apply to reach it.
    confirmed: Vec<(u64, Vec<ReadWaiter>)>,
    /// The group's leader changed: the request out was likely lost with
    /// the old leader's term; re-send it at the next tick.
    leader_changed: bool,
}

impl ReadQueue {
    /// Answers every read still waiting, at whatever stage, with `error`.
    pub fn fail_all(&mut self, error: impl Fn() -> ReplicationError) {
        let inflight = self.inflight.take().map(|i| i.waiters).unwrap_or_default();
        let confirmed = std::mem::take(&mut self.confirmed)
            .into_iter()
            .flat_map(|(_, ws)| ws);
        for w in std::mem::take(&mut self.waiting)
            .into_iter()
            .chain(inflight)
            .chain(confirmed)
        {
            let _ = w.reply.send(Err(error()));
        }
    }

    pub fn push(&mut self, waiter: ReadWaiter) {
        self.waiting.push(waiter);
    }

    /// A request to send now, if reads wait and none is in flight: its context.
    pub fn take_request(&mut self, new_ctx: impl FnOnce() -> Vec<u8>) -> Option<Vec<u8>> {
        if self.inflight.is_some() || self.waiting.is_empty() {
            return None;
        }
        let ctx = new_ctx();
        self.inflight = Some(Inflight {
            ctx: ctx.clone(),
            waiters: std::mem::take(&mut self.waiting),
            ticks: 0,
            since: Instant::now(),
        });
        Some(ctx)
    }

    /// When a request sent before `now` stops holding back the other groups'
    /// requests, if one is out and still does.
    pub fn holds_back(&self, now: Instant) -> Option<Instant> {
        let until = self.inflight.as_ref()?.since + ALIGN_BOUND;
        (until > now).then_some(until)
    }

    /// Whether reads wait for a request to be sent.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The group's leader changed. A request out went to the old leader (or
    /// was its own) and is lost with its term: it is re-sent at the next
    /// tick, not after the retry's usual wait. Not at once: a new leader
    /// drops read index requests until it has committed in its term, which
    /// takes it a round trip.
    pub fn on_leader_change(&mut self) {
        self.leader_changed = true;
    }

    /// On each tick: fails reads past their deadline, and returns a fresh
    /// context to re-send the request under if it waited `retry_ticks`.
    pub fn on_tick(
        &mut self,
        group: GroupId,
        retry_ticks: u32,
        new_ctx: impl FnOnce() -> Vec<u8>,
    ) -> Option<Vec<u8>> {
        let now = Instant::now();
        let expire = |ws: &mut Vec<ReadWaiter>| {
            ws.retain_mut(|w| {
                let live = w.deadline > now;
                if !live {
                    let _ = w.reply.answer(Err(ReplicationError::Timeout { group }));
                }
                live
            })
        };
        expire(&mut self.waiting);
        for (_, ws) in &mut self.confirmed {
            expire(ws);
        }
        self.confirmed.retain(|(_, ws)| !ws.is_empty());
        let leader_changed = std::mem::take(&mut self.leader_changed);
        let inflight = self.inflight.as_mut()?;
        expire(&mut inflight.waiters);
        if inflight.waiters.is_empty() {
            self.inflight = None;
            return None;
        }
        inflight.ticks += 1;
        if inflight.ticks < retry_ticks && !leader_changed {
            return None;
        }
        // Re-send under a new context; a late answer to the old one is ignored.
        inflight.ticks = 0;
        inflight.ctx = new_ctx();
        inflight.waiters.append(&mut self.waiting);
        Some(inflight.ctx.clone())
    }

    /// raft answered a request: its reads may run once `index` is applied.
    pub fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        if self.inflight.as_ref().is_some_and(|i| i.ctx == ctx)
            && let Some(inflight) = self.inflight.take()
        {
            self.confirmed.push((index, inflight.waiters));
        }
    }

    /// Completes reads whose read index is applied.
    pub fn on_applied(&mut self, applied: u64) {
        self.confirmed.retain_mut(|(index, waiters)| {
            if *index > applied {
                return true;
            }
            for w in waiters {
                let _ = w.reply.answer(Ok(*index));
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (ReadWaiter, crate::reply::Answer<u64>) {
        let (reply, answer) = crate::reply::channel();
        let deadline = Instant::now() + Duration::from_secs(5);
        (ReadWaiter { reply, deadline }, answer)
    }

    #[test]
    fn a_request_out_holds_back_for_the_bound_and_not_after_its_answer() {
        let mut q = ReadQueue::default();
        let now = Instant::now();
        assert_eq!(q.holds_back(now), None, "nothing out");
        let (w, answer) = waiter();
        q.push(w);
        assert!(q.has_waiting());
        let ctx = q.take_request(|| vec![1]).expect("a request for the read");
        assert!(!q.has_waiting());
        let until = q
            .holds_back(Instant::now())
            .expect("a request out holds back");
        assert!(until <= Instant::now() + ALIGN_BOUND);
        assert_eq!(q.holds_back(until), None, "not past the bound");
        // A read that comes meanwhile waits for the next request.
        let (later, later_answer) = waiter();
        q.push(later);
        assert!(
            q.take_request(|| vec![2]).is_none(),
            "one request out at a time"
        );
        q.on_read_state(&ctx, 7);
        assert_eq!(q.holds_back(Instant::now()), None, "answered");
        q.on_applied(7);
        assert!(matches!(
            answer.wait(Duration::from_secs(1)),
            crate::reply::Outcome::Answer(Ok(7))
        ));
        assert!(matches!(
            later_answer.wait(Duration::from_millis(1)),
            crate::reply::Outcome::TimedOut
        ));
        assert_eq!(q.take_request(|| vec![3]), Some(vec![3]));
    }

    #[test]
    fn a_request_out_is_sent_again_at_the_next_tick_after_a_leader_change() {
        let mut q = ReadQueue::default();
        let (w, answer) = waiter();
        q.push(w);
        let first = q.take_request(|| vec![1]).unwrap();
        // The usual wait: nothing re-sent before `retry_ticks`.
        assert_eq!(q.on_tick(1, 10, || vec![2]), None);
        q.on_leader_change();
        let again = q.on_tick(1, 10, || vec![3]).expect("re-sent at once");
        assert_ne!(again, first);
        // Then the usual wait again.
        assert_eq!(q.on_tick(1, 10, || vec![4]), None);
        // The old context's late answer is ignored; the new one's counts.
        q.on_read_state(&first, 5);
        q.on_read_state(&again, 6);
        q.on_applied(6);
        assert!(matches!(
            answer.wait(Duration::from_secs(1)),
            crate::reply::Outcome::Answer(Ok(6))
        ));
        // With nothing out, a leader change sends nothing.
        q.on_leader_change();
        assert_eq!(q.on_tick(1, 10, || vec![5]), None);
    }
}
