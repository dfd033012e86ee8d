//! The fetcher: background threads that pull a snapshot's chunks from the
//! node that has them, so the raft loop never waits on the network. The
//! loop hands over a descriptor-only `MsgSnapshot`; a worker fetches the
//! chunks into `snapshots/in`, several in flight at once (`window`, none
//! more than `window` chunks ahead of the first missing one), each verified
//! and written at its place; the file is synced once all are in, the
//! snapshot is imported beside the group's shard (rebuilt and its root
//! checked, still on the worker), and the message goes back to the loop,
//! which then steps it and only switches the shard to the import.
//!
//! A broken transfer retries (backing off) until no chunk arrived for
//! `stall_timeout`; it then gives up and keeps what it has: the next
//! `MsgSnapshot` for the same snapshot resumes at the first chunk not yet
//! verified. If the sender no longer has the snapshot, the fetch ends at once
//! and the files go; the leader's raft sends a newer one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{SnapshotDescriptor, SnapshotFiles, SnapshotKey, TransferDirection};
use crate::codec::GroupMessage;
use crate::counters::Counters;
use crate::transport::Transport;
use crate::{GroupId, NodeId, ReplicationError, Result};
use stratosdb_engine::Shard;

/// What the workers share.
pub(crate) struct FetchContext {
    pub node: NodeId,
    pub files: Arc<SnapshotFiles>,
    pub transport: Arc<dyn Transport>,
    pub counters: Arc<Counters>,
    /// Gives up after this long without a chunk.
    pub stall_timeout: Duration,
    /// Chunk fetches of one transfer in flight at once.
    pub window: usize,
    /// The node's shard of a group, if it still has it: a fetched snapshot
    /// is imported beside it before its message goes back to the loop.
    pub shard_of: Box<dyn Fn(GroupId) -> Option<Shard> + Send + Sync>,
    /// Queues a raft message for the node's loop.
    pub requeue: Box<dyn Fn(GroupMessage) -> Result<()> + Send + Sync>,
}

struct Job {
    descriptor: SnapshotDescriptor,
    msg: GroupMessage,
    cancel: Arc<AtomicBool>,
}

/// Each group's current job: its snapshot and its cancel flag.
type Jobs = Arc<Mutex<HashMap<GroupId, (SnapshotKey, Arc<AtomicBool>)>>>;

/// The node's fetch workers and the job of each group.
pub(crate) struct Fetcher {
    tx: Option<mpsc::Sender<Job>>,
    jobs: Jobs,
    workers: Vec<JoinHandle<()>>,
}

impl Fetcher {
    /// Starts `workers` threads: at most that many transfers run at once.
    pub fn start(workers: usize, context: FetchContext) -> Result<Fetcher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let context = Arc::new(context);
        let jobs: Jobs = Arc::default();
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let (rx, context, jobs) = (rx.clone(), context.clone(), jobs.clone());
            let handle = std::thread::Builder::new()
                .name(format!("snapshot-fetch-{}-{i}", context.node))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = rx.lock().recv();
                        let Ok(job) = job else { return };
                        let key = job.descriptor.key;
                        run(&context, job, &jobs);
                        end_job(&jobs, &key);
                    }
                })
                .map_err(|e| ReplicationError::Corruption(format!("cannot start a thread: {e}")))?;
            handles.push(handle);
        }
        Ok(Fetcher {
            tx: Some(tx),
            jobs,
            workers: handles,
        })
    }

    /// Fetches the snapshot `descriptor` describes, then queues `msg` back
    /// to the loop. A snapshot already being fetched is not fetched twice;
    /// a different one for the same group replaces it.
    pub fn submit(&self, descriptor: SnapshotDescriptor, msg: GroupMessage) {
        let key = descriptor.key;
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut jobs = self.jobs.lock();
            if let Some((current, flag)) = jobs.get(&key.group) {
                if *current == key {
                    return;
                }
                flag.store(true, Relaxed);
            }
            jobs.insert(key.group, (key, cancel.clone()));
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Job {
                descriptor,
                msg,
                cancel,
            });
        }
    }
}

impl Fetcher {
    /// Whether a job for snapshot `key` runs (fetching or preparing it).
    pub fn is_working_on(&self, key: &SnapshotKey) -> bool {
        self.jobs
            .lock()
            .get(&key.group)
            .is_some_and(|(k, _)| k == key)
    }

    /// Stops the group's fetch, if one runs (its replica here is being
    /// deleted); it ends at its next chunk.
    pub fn cancel(&self, group: GroupId) {
        if let Some((_, flag)) = self.jobs.lock().get(&group) {
            flag.store(true, Relaxed);
        }
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        for (_, flag) in self.jobs.lock().values() {
            flag.store(true, Relaxed);
        }
        self.tx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Forgets the job for `key`, if it is still the group's.
fn end_job(jobs: &Jobs, key: &SnapshotKey) {
    let mut jobs = jobs.lock();
    if jobs.get(&key.group).is_some_and(|(k, _)| k == key) {
        jobs.remove(&key.group);
    }
}

fn run(context: &FetchContext, job: Job, jobs: &Jobs) {
    let key = job.descriptor.key;
    let from = job.descriptor.sender;
    match fetch(context, &job) {
        Ok(()) => {
            context
                .counters
                .transfers
                .end(key.group, from, TransferDirection::In, "fetched");
            // The slow part of the install (rebuilding the shard beside the
            // old one) runs here, not on the node's loop, which then only
            // switches it in. If it cannot, the install imports it itself.
            if !job.cancel.load(Relaxed)
                && !context.files.is_prepared(&key)
                && let Some(shard) = (context.shard_of)(key.group)
            {
                let started = Instant::now();
                match context.files.prepare_incoming(&job.descriptor, &shard) {
                    Ok(()) => tracing::info!(
                        group = key.group,
                        index = key.index,
                        secs = started.elapsed().as_secs_f64(),
                        "snapshot imported beside the shard"
                    ),
                    Err(e) => {
                        tracing::warn!(group = key.group, error = %e, "fetched snapshot not prepared")
                    }
                }
            }
            // Done before the message goes back: the loop installs a complete
            // snapshot only when no job works on it.
            end_job(jobs, &key);
            if (context.requeue)(job.msg).is_err() {
                tracing::debug!(group = key.group, "fetched snapshot for a stopped node");
            }
        }
        Err(e) => {
            context
                .counters
                .transfers
                .end(key.group, from, TransferDirection::In, "failed");
            tracing::warn!(group = key.group, from, index = key.index, error = %e, "snapshot fetch failed");
            if matches!(
                e,
                ReplicationError::SnapshotNotFound { .. } | ReplicationError::SnapshotCorrupt(_)
            ) {
                context.files.remove_incoming(&key);
            }
        }
    }
}

/// What a chunk fetch gave: its number and its bytes, or why not.
type Fetched = (u32, Result<Vec<u8>>);

/// Up to `window` chunk fetches of one transfer in flight at once, each on
/// its own short-lived thread (the transport's fetch blocks). The helpers
/// hold only shared handles, so a transfer that ends does not wait for the
/// fetches still out: their answers are dropped.
struct Pipeline {
    requests: Option<mpsc::Sender<u32>>,
    answers: mpsc::Receiver<Fetched>,
}

impl Pipeline {
    fn start(context: &FetchContext, d: &SnapshotDescriptor, window: usize) -> Result<Pipeline> {
        let (req_tx, req_rx) = mpsc::channel::<u32>();
        let req_rx = Arc::new(Mutex::new(req_rx));
        let (ans_tx, answers) = mpsc::channel::<Fetched>();
        for i in 0..window {
            let (rx, tx) = (req_rx.clone(), ans_tx.clone());
            let transport = context.transport.clone();
            let (from, key) = (d.sender, d.key);
            std::thread::Builder::new()
                .name(format!("snapshot-chunk-{}-{i}", key.group))
                .spawn(move || {
                    loop {
                        let next = rx.lock().recv();
                        let Ok(n) = next else { return };
                        if tx.send((n, transport.fetch_chunk(from, &key, n))).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| ReplicationError::Corruption(format!("cannot start a thread: {e}")))?;
        }
        Ok(Pipeline {
            requests: Some(req_tx),
            answers,
        })
    }

    fn ask(&self, n: u32) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(n);
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // The helpers end once their current fetch is answered.
        self.requests.take();
    }
}

fn fetch(context: &FetchContext, job: &Job) -> Result<()> {
    let d = &job.descriptor;
    let key = d.key;
    if context.files.is_complete(&key) {
        return Ok(());
    }
    let mut incoming = context.files.begin_incoming(d)?;
    let transfers = &context.counters.transfers;
    transfers.begin(
        key,
        d.sender,
        context.node,
        TransferDirection::In,
        d.chunks.len() as u32,
        d.total_bytes(),
        incoming.chunks_done(),
        incoming.bytes_done(),
    );
    let window = context.window.max(1);
    let pipeline = Pipeline::start(context, d, window.min(d.chunks.len().max(1)))?;
    // The chunks still to ask for, in order; a failed one goes back in front.
    let mut queue: std::collections::VecDeque<u32> = incoming.missing().collect();
    let mut in_flight = 0usize;
    let mut last_progress = Instant::now();
    let mut pause = Duration::from_millis(20);
    // A failed chunk is asked again once its pause is over.
    let mut retry_at: Option<Instant> = None;
    while !incoming.is_full() {
        if job.cancel.load(Relaxed) {
            return Err(ReplicationError::Stopped);
        }
        // Keep `window` fetches out, none more than `window` chunks past the
        // first missing one (bounds what arrives ahead of a slow chunk).
        let first_missing = incoming.next_chunk();
        if retry_at.is_none_or(|t| Instant::now() >= t) {
            retry_at = None;
            while in_flight < window {
                match queue.front() {
                    Some(&n) if (n as usize) < first_missing as usize + window => {
                        queue.pop_front();
                        if !incoming.has(n) {
                            pipeline.ask(n);
                            in_flight += 1;
                        }
                    }
                    _ => break,
                }
            }
        }
        let wait = retry_at.map_or(Duration::from_millis(100), |t| {
            t.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        });
        let (n, fetched) = match pipeline.answers.recv_timeout(wait) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(ReplicationError::Stopped),
        };
        in_flight -= 1;
        let stored = fetched.and_then(|bytes| incoming.put(n, &bytes).map(|()| bytes.len()));
        match stored {
            Ok(len) => {
                context
                    .counters
                    .snapshot_bytes_received
                    .fetch_add(len as u64, Relaxed);
                transfers.chunk_done(
                    &key,
                    d.sender,
                    TransferDirection::In,
                    incoming.chunks_done(),
                    incoming.bytes_done(),
                );
                last_progress = Instant::now();
                pause = Duration::from_millis(20);
            }
            Err(e @ ReplicationError::SnapshotNotFound { .. }) => return Err(e),
            Err(e) if last_progress.elapsed() >= context.stall_timeout => {
                return Err(ReplicationError::SnapshotStalled {
                    group: key.group,
                    chunk: n,
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                tracing::debug!(group = key.group, chunk = n, error = %e, "snapshot chunk fetch failed; retrying");
                queue.push_front(n);
                if retry_at.is_none() {
                    retry_at = Some(Instant::now() + pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    incoming.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemHub;
    use raft::eraftpb::Message;
    use stratosdb_engine::{Engine, Value};

    const SENDER: NodeId = 1;
    const RECEIVER: NodeId = 2;

    /// A sender with an export of 100 documents served on `hub`, and a
    /// receiver's fetcher whose requeued messages arrive on the channel.
    struct Setup {
        fetcher: Fetcher,
        requeued: mpsc::Receiver<GroupMessage>,
        descriptor: SnapshotDescriptor,
        receiver_files: Arc<SnapshotFiles>,
        _engine: Engine,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    fn setup() -> Setup {
        setup_with(Box::new(|_| None))
    }

    fn setup_with(shard_of: Box<dyn Fn(GroupId) -> Option<Shard> + Send + Sync>) -> Setup {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let engine = Engine::open_temporary().unwrap();
        let shard = engine.shard(4).unwrap();
        shard.create_collection("c").unwrap();
        for i in 0..100 {
            let doc = format!(r#"{{"_id":"d{i:03}","pad":"{}"}}"#, "x".repeat(200));
            shard
                .insert("c", Value::from_json_str(&doc).unwrap())
                .unwrap();
        }
        let expiry = Duration::from_secs(600);
        let sender_files = SnapshotFiles::open(dirs.0.path(), expiry, 1 << 30).unwrap();
        let descriptor = sender_files
            .export(&shard, 1024, SENDER, |_| Ok(3))
            .unwrap();
        let hub = MemHub::new();
        hub.transport(SENDER)
            .serve_snapshots(Arc::new(move |_, key, n| {
                Ok(sender_files.read_outgoing_chunk(key, n)?.0)
            }));
        let receiver_files = SnapshotFiles::open(dirs.1.path(), expiry, 1 << 30).unwrap();
        let (tx, requeued) = mpsc::channel();
        let tx = Mutex::new(tx);
        let fetcher = Fetcher::start(
            1,
            FetchContext {
                node: RECEIVER,
                files: receiver_files.clone(),
                transport: hub.transport(RECEIVER),
                counters: Arc::default(),
                stall_timeout: Duration::from_secs(5),
                window: 4,
                shard_of,
                requeue: Box::new(move |m| {
                    tx.lock().send(m).map_err(|_| ReplicationError::Stopped)
                }),
            },
        )
        .unwrap();
        Setup {
            fetcher,
            requeued,
            descriptor,
            receiver_files,
            _engine: engine,
            _dirs: dirs,
        }
    }

    fn message(index: u64) -> GroupMessage {
        GroupMessage {
            group: 4,
            msg: Message {
                index,
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_fetched_snapshot_is_complete_on_disk_before_its_message_is_requeued() {
        let s = setup();
        s.fetcher.submit(s.descriptor.clone(), message(7));
        let back = s.requeued.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(back.msg.index, 7);
        assert!(s.receiver_files.is_complete(&s.descriptor.key));
    }

    #[test]
    fn a_fetched_snapshot_is_imported_beside_the_shard_and_the_install_switches_it_in() {
        let target_engine = Engine::open_temporary().unwrap();
        let target = target_engine.shard(4).unwrap();
        let found = target.clone();
        let s = setup_with(Box::new(move |g| (g == 4).then(|| found.clone())));
        s.fetcher.submit(s.descriptor.clone(), message(9));
        s.requeued.recv_timeout(Duration::from_secs(20)).unwrap();
        // Prepared before the message came back; the shard itself untouched.
        assert!(s.receiver_files.is_prepared(&s.descriptor.key));
        assert_ne!(target.root().unwrap(), s.descriptor.root);
        s.receiver_files
            .install_incoming(&s.descriptor, &target)
            .unwrap();
        assert_eq!(target.root().unwrap(), s.descriptor.root);
        assert_eq!(target.applied_index().unwrap(), s.descriptor.key.index);
        assert!(!s.receiver_files.is_prepared(&s.descriptor.key));
        assert!(!s.receiver_files.is_complete(&s.descriptor.key));
    }

    #[test]
    fn a_snapshot_the_sender_no_longer_has_fails_at_once_and_leaves_nothing() {
        let s = setup();
        let gone = SnapshotDescriptor {
            key: SnapshotKey {
                index: s.descriptor.key.index + 10,
                ..s.descriptor.key
            },
            ..s.descriptor.clone()
        };
        let started = Instant::now();
        s.fetcher.submit(gone.clone(), message(8));
        // Not requeued; and it gave up well before the stall timeout.
        assert!(s.requeued.recv_timeout(Duration::from_secs(2)).is_err());
        drop(s.fetcher);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!s.receiver_files.is_complete(&gone.key));
        assert_eq!(s.receiver_files.incoming_bytes(), 0);
    }
}
