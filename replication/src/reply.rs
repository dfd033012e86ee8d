//! A one-shot answer from the loop thread to whoever asked: a blocking
//! wait with a timeout ([`Pending::wait`](crate::Pending::wait)) or an async
//! task ([`Pending::wait_async`](crate::Pending::wait_async)) that awaits it
//! without a thread of its own. An async writer on an HTTP worker then costs
//! no hand-off through tokio's blocking pool (two thread wake-ups a write).

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::{ReplicationError, Result};

struct State<T> {
    value: Option<Result<T>>,
    /// The sending side is gone (answered or dropped).
    closed: bool,
    /// The receiving side is gone: nobody reads an answer any more.
    abandoned: bool,
    waker: Option<Waker>,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Slot<T> {
    /// Stores the answer (if any), closes the slot and wakes the waiter.
    fn close(&self, value: Option<Result<T>>) {
        let waker = {
            let mut state = self.state.lock();
            if value.is_some() {
                state.value = value;
            }
            state.closed = true;
            state.waker.take()
        };
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiver went away before the answer was sent.
#[derive(Debug)]
pub(crate) struct Gone;

/// The sending side, held by the loop; dropping it unanswered reads as
/// `Stopped` on the other side.
pub(crate) struct Reply<T> {
    slot: Option<Arc<Slot<T>>>,
}

impl<T> Reply<T> {
    /// Answers; `Err(Gone)` if nobody waits for it any more.
    pub fn send(mut self, value: Result<T>) -> std::result::Result<(), Gone> {
        self.answer(value)
    }

    /// [`Reply::send`] through a reference (a reply kept in a list); a
    /// second answer is refused with `Gone`.
    pub fn answer(&mut self, value: Result<T>) -> std::result::Result<(), Gone> {
        let Some(slot) = self.slot.take() else {
            return Err(Gone);
        };
        let abandoned = slot.state.lock().abandoned;
        slot.close(Some(value));
        if abandoned { Err(Gone) } else { Ok(()) }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.close(None);
        }
    }
}

/// The receiving side.
pub(crate) struct Answer<T> {
    slot: Arc<Slot<T>>,
}

pub(crate) fn channel<T>() -> (Reply<T>, Answer<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            value: None,
            closed: false,
            abandoned: false,
            waker: None,
        }),
        ready: Condvar::new(),
    });
    (
        Reply {
            slot: Some(slot.clone()),
        },
        Answer { slot },
    )
}

/// What a wait came to.
pub(crate) enum Outcome<T> {
    Answer(Result<T>),
    /// The sender was dropped unanswered.
    Closed,
    TimedOut,
}

impl<T> Answer<T> {
    /// Blocks up to `timeout` for the answer. The answer is taken: a later
    /// wait after one that returned it sees `Closed`.
    pub fn wait(&self, timeout: Duration) -> Outcome<T> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.slot.state.lock();
        loop {
            if let Some(value) = state.value.take() {
                return Outcome::Answer(value);
            }
            if state.closed {
                return Outcome::Closed;
            }
            match deadline {
                Some(d) => {
                    if self.slot.ready.wait_until(&mut state, d).timed_out()
                        && state.value.is_none()
                        && !state.closed
                    {
                        return Outcome::TimedOut;
                    }
                }
                None => self.slot.ready.wait(&mut state),
            }
        }
    }

    /// Awaits the answer, up to `timeout` (tokio's timer: call it inside a
    /// runtime with time enabled).
    pub async fn wait_async(&self, timeout: Duration) -> Outcome<T> {
        let answer = poll_fn(|cx| {
            let mut state = self.slot.state.lock();
            if let Some(value) = state.value.take() {
                return Poll::Ready(Outcome::Answer(value));
            }
            if state.closed {
                return Poll::Ready(Outcome::Closed);
            }
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        });
        match tokio::time::timeout(timeout, answer).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::TimedOut,
        }
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        let mut state = self.slot.state.lock();
        state.abandoned = true;
        state.waker = None;
    }
}

/// An answer as the crate's result: a dropped sender is `Stopped`.
pub(crate) fn closed_is_stopped<T>(outcome: Outcome<T>) -> Option<Result<T>> {
    match outcome {
        Outcome::Answer(value) => Some(value),
        Outcome::Closed => Some(Err(ReplicationError::Stopped)),
        Outcome::TimedOut => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_wait_gets_the_answer_from_another_thread() {
        let (reply, answer) = channel::<u32>();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            reply.send(Ok(7)).is_ok()
        });
        assert!(matches!(
            answer.wait(Duration::from_secs(5)),
            Outcome::Answer(Ok(7))
        ));
        assert!(sender.join().unwrap());
    }

    #[test]
    fn a_dropped_sender_closes_and_a_silent_one_times_out() {
        let (reply, answer) = channel::<u32>();
        assert!(matches!(
            answer.wait(Duration::from_millis(10)),
            Outcome::TimedOut
        ));
        drop(reply);
        assert!(matches!(
            answer.wait(Duration::from_secs(5)),
            Outcome::Closed
        ));
    }

    #[test]
    fn a_send_to_a_dropped_receiver_says_gone() {
        let (reply, answer) = channel::<u32>();
        drop(answer);
        assert!(reply.send(Ok(1)).is_err());
    }

    #[tokio::test]
    async fn async_wait_is_woken_by_a_thread() {
        let (reply, answer) = channel::<u32>();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = reply.send(Ok(9));
        });
        assert!(matches!(
            answer.wait_async(Duration::from_secs(5)).await,
            Outcome::Answer(Ok(9))
        ));
        sender.join().unwrap();
        let (_reply, silent) = channel::<u32>();
        assert!(matches!(
            silent.wait_async(Duration::from_millis(10)).await,
            Outcome::TimedOut
        ));
    }
}
