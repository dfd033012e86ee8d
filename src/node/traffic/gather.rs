//! Work that concurrent requests hand in, done in batches by one of them,
//! with no timed wait: a request queues its job, lets the tasks that are
//! ready to run go first (`yield_now`: other requests reach the same point
//! and queue theirs), and then, if no other request is working through the
//! queue, does everything queued (its own job included) until the queue is
//! empty. A lone request thus does its job at once, by itself; concurrent
//! ones share one batch. Signature checks of signed requests
//! (`batch.rs`) and the signing of receipts (`receipts.rs`) gather so.

use parking_lot::Mutex;

pub struct Gather<J> {
    queue: Mutex<Queue<J>>,
}

struct Queue<J> {
    jobs: Vec<J>,
    /// A request is working through what is queued (and will until it is
    /// empty).
    busy: bool,
}

impl<J> Default for Gather<J> {
    fn default() -> Self {
        Gather {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                busy: false,
            }),
        }
    }
}

/// Hands the queue back if the work panics, so later requests still work.
struct Release<'a, J>(&'a Mutex<Queue<J>>);

impl<J> Drop for Release<'_, J> {
    fn drop(&mut self) {
        self.0.lock().busy = false;
    }
}

impl<J> Gather<J> {
    /// Queues `job` and returns once it was handed to `work`, by this
    /// request or by the one working through the queue. Each job carries
    /// its own way to answer (a oneshot sender); `work` answers every job
    /// it is given.
    pub async fn submit(&self, job: J, mut work: impl FnMut(Vec<J>)) {
        self.queue.lock().jobs.push(job);
        // Requests that are ready to run go first, up to their own jobs:
        // under load that is what makes a batch; alone it is no wait.
        tokio::task::yield_now().await;
        let lead = {
            let mut queue = self.queue.lock();
            !queue.jobs.is_empty() && !std::mem::replace(&mut queue.busy, true)
        };
        if !lead {
            return;
        }
        let release = Release(&self.queue);
        loop {
            let jobs = {
                let mut queue = self.queue.lock();
                if queue.jobs.is_empty() {
                    queue.busy = false;
                    break;
                }
                std::mem::take(&mut queue.jobs)
            };
            work(jobs);
        }
        std::mem::forget(release);
    }
}
