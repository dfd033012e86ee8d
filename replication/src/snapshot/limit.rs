//! The cap on snapshot chunk reads served at once by a node: each is a
//! read of up to a chunk from disk, and many fetchers (several receivers,
//! several chunks in flight each) must not turn into unbounded disk reads
//! and memory. A read over the cap waits for a turn, for a bounded time;
//! then it is refused as busy, which the fetcher retries like any failed
//! chunk.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A counting semaphore over chunk reads.
pub struct ChunkReadLimit {
    permits: usize,
    wait: Duration,
    in_use: Mutex<usize>,
    freed: Condvar,
}

/// A turn to read; the turn ends when it is dropped.
pub struct ChunkReadTurn<'a> {
    limit: &'a ChunkReadLimit,
}

impl ChunkReadLimit {
    /// At most `permits` (at least 1) reads at once; a read waits up to
    /// `wait` for its turn.
    pub fn new(permits: usize, wait: Duration) -> Self {
        ChunkReadLimit {
            permits: permits.max(1),
            wait,
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// A turn, or `None` if none came free within the wait.
    pub fn turn(&self) -> Option<ChunkReadTurn<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut in_use = self.in_use.lock();
        while *in_use >= self.permits {
            if self.freed.wait_until(&mut in_use, deadline).timed_out() && *in_use >= self.permits {
                return None;
            }
        }
        *in_use += 1;
        Some(ChunkReadTurn { limit: self })
    }

    /// Reads under way now.
    pub fn in_use(&self) -> usize {
        *self.in_use.lock()
    }
}

impl Drop for ChunkReadTurn<'_> {
    fn drop(&mut self) {
        *self.limit.in_use.lock() -= 1;
        self.limit.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn no_more_reads_than_the_cap_run_at_once_and_all_get_their_turn() {
        let limit = Arc::new(ChunkReadLimit::new(4, Duration::from_secs(60)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (limit, running, most) = (limit.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let turn = limit.turn().expect("a turn within the wait");
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                        running.fetch_sub(1, Ordering::SeqCst);
                        drop(turn);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("reader thread");
        }
        assert!(most.load(Ordering::SeqCst) <= 4, "{most:?} reads at once");
        assert_eq!(limit.in_use(), 0);
    }

    #[test]
    fn a_read_that_gets_no_turn_within_the_wait_is_refused() {
        let limit = ChunkReadLimit::new(1, Duration::from_millis(50));
        let held = limit.turn().expect("the first turn");
        assert!(limit.turn().is_none());
        drop(held);
        assert!(limit.turn().is_some());
    }
}
