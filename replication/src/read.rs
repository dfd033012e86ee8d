//! Linearizable reads by ReadIndex, batched: all reads waiting when a request
//! goes out share one read index. raft-rs drops a read index request silently
//! (a leader that has not committed in its term, a follower with no leader),
//! so each request has a unique context and is re-sent after some ticks; each
//! read has its own deadline.

use std::time::Instant;

use crate::{GroupId, ReplicationError};

pub(crate) use crate::reply::Reply;

pub(crate) struct ReadWaiter {
    pub reply: Reply<u64>,
    pub deadline: Instant,
}

struct Inflight {
    ctx: Vec<u8>,
    waiters: Vec<ReadWaiter>,
    ticks: u32,
}

#[derive(Default)]
pub(crate) struct ReadQueue {
    /// Reads not yet part of a request.
    waiting: Vec<ReadWaiter>,
    inflight: Option<Inflight>,
    /// Reads whose read index is known, waiting for the apply to reach it.
    confirmed: Vec<(u64, Vec<ReadWaiter>)>,
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
        });
        Some(ctx)
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
        let inflight = self.inflight.as_mut()?;
        expire(&mut inflight.waiters);
        if inflight.waiters.is_empty() {
            self.inflight = None;
            return None;
        }
        inflight.ticks += 1;
        if inflight.ticks < retry_ticks {
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
