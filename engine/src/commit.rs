//! Group commit: writes are applied at once and made durable many at a time.
//! The first writer that needs durability flushes for everyone who applied a
//! write before the flush began; the others wait for that flush.

use parking_lot::{Condvar, Mutex};

use crate::Result;

/// When a write returns, it is applied and visible to reads. `Sync` also waits
/// until it is on disk (one flush shared by all writers waiting at that moment:
/// group commit); `Buffered` leaves that to the next flush (sled's background
/// flush runs every 500 ms, or call [`crate::Engine::flush`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Buffered,
    Sync,
}

#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    flushed: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// Writes applied so far.
    written: u64,
    /// Writes known to be on disk.
    durable: u64,
    flushing: bool,
}

impl GroupCommit {
    /// Records that a write was applied (it is now covered by the next flush).
    pub fn note_write(&self) {
        self.state.lock().written += 1;
    }

    /// Waits, if asked, until everything written so far is durable, calling
    /// `flush` at most once per group of waiters. Returns whether it is durable.
    pub fn wait_durable(
        &self,
        durability: Durability,
        flush: impl Fn() -> Result<()>,
    ) -> Result<bool> {
        if durability == Durability::Buffered {
            return Ok(false);
        }
        let mut state = self.state.lock();
        let target = state.written;
        loop {
            if state.durable >= target {
                return Ok(true);
            }
            if state.flushing {
                self.flushed.wait(&mut state);
                continue;
            }
            // Become the flusher for everyone waiting now.
            state.flushing = true;
            let covered = state.written;
            drop(state);
            let result = flush();
            state = self.state.lock();
            state.flushing = false;
            if result.is_ok() {
                state.durable = state.durable.max(covered);
            }
            self.flushed.notify_all();
            result?;
        }
    }
}
