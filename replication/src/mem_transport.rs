//! An in-memory transport for tests, with TiKV-style filters: drop, delay,
//! duplicate and reorder messages, and partition chosen nodes. Every message
//! goes through the wire codec, as it will over the network. Snapshot chunk
//! fetches honour the same partitions and drop rate, can be cut after a
//! number of chunks ([`Filters::fetch_budget`]), and are counted per chunk
//! ([`MemHub::chunks_served`]) so tests can see a transfer resume.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

use crate::codec::{GroupMessage, encode_batch};
use crate::snapshot::SnapshotKey;
use crate::transport::{ChunkServer, Inbox, Transport};
use crate::{NodeId, ReplicationError, Result};

/// What the hub does to messages in flight.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Directed links that carry nothing: `(from, to)`.
    pub blocked: HashSet<(NodeId, NodeId)>,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message arrives twice.
    pub duplicate_rate: f64,
    /// Each message is held for a random time up to this, which reorders them.
    pub max_delay: Option<Duration>,
    /// Snapshot chunk fetches still served; once 0, every fetch fails as if
    /// the sender were unreachable (None: no limit).
    pub fetch_budget: Option<u64>,
}

/// Chunk fetches served, by (serving node, snapshot, chunk).
pub type ChunksServed = HashMap<(NodeId, SnapshotKey, u32), u32>;

type Inboxes = Arc<Mutex<HashMap<NodeId, Inbox>>>;

struct Delayed {
    at: Instant,
    seq: u64,
    to: NodeId,
    bytes: Vec<u8>,
}

/// Connects in-process nodes. Cheap to clone.
#[derive(Clone)]
pub struct MemHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    inboxes: Inboxes,
    filters: Mutex<Filters>,
    delayed: Mutex<Option<mpsc::Sender<Delayed>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    servers: Mutex<HashMap<NodeId, ChunkServer>>,
    served: Mutex<ChunksServed>,
    refused_fetches: std::sync::atomic::AtomicU64,
}

impl Drop for HubInner {
    fn drop(&mut self) {
        // Closing the channel stops the delay thread.
        self.delayed.lock().take();
        if let Some(worker) = self.worker.lock().take() {
            let _ = worker.join();
        }
    }
}

impl Default for MemHub {
    fn default() -> Self {
        Self::new()
    }
}

impl MemHub {
    pub fn new() -> Self {
        let inboxes: Inboxes = Arc::default();
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("mem-transport-delay".into())
            .spawn({
                let inboxes = inboxes.clone();
                move || deliver_delayed(rx, inboxes)
            })
            .ok();
        MemHub {
            inner: Arc::new(HubInner {
                inboxes,
                filters: Mutex::default(),
                delayed: Mutex::new(Some(tx)),
                worker: Mutex::new(worker),
                servers: Mutex::default(),
                served: Mutex::default(),
                refused_fetches: Default::default(),
            }),
        }
    }

    /// Where messages to `node` are delivered.
    pub fn register(&self, node: NodeId, inbox: Inbox) {
        self.inner.inboxes.lock().insert(node, inbox);
    }

    /// Messages to `node` are lost from now on, and it serves no snapshot
    /// chunks (it is down).
    pub fn unregister(&self, node: NodeId) {
        self.inner.inboxes.lock().remove(&node);
        self.inner.servers.lock().remove(&node);
    }

    /// The transport node `from` sends with.
    pub fn transport(&self, from: NodeId) -> Arc<dyn Transport> {
        Arc::new(MemTransport {
            from,
            hub: self.clone(),
        })
    }

    /// Replaces all filters.
    pub fn set_filters(&self, filters: Filters) {
        *self.inner.filters.lock() = filters;
    }

    /// Changes the filters in place.
    pub fn update_filters(&self, f: impl FnOnce(&mut Filters)) {
        f(&mut self.inner.filters.lock());
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        self.update_filters(|f| {
            for &x in a {
                for &y in b {
                    f.blocked.insert((x, y));
                    f.blocked.insert((y, x));
                }
            }
        });
    }

    /// Snapshot chunk fetches served so far, per chunk.
    pub fn chunks_served(&self) -> ChunksServed {
        self.inner.served.lock().clone()
    }

    /// Snapshot chunk fetches refused so far by the filters.
    pub fn fetches_refused(&self) -> u64 {
        self.inner
            .refused_fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fetch(&self, by: NodeId, from: NodeId, key: &SnapshotKey, chunk: u32) -> Result<Vec<u8>> {
        let refuse = |reason: &str| {
            self.inner
                .refused_fetches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(ReplicationError::Unreachable {
                node: from,
                reason: reason.into(),
            })
        };
        {
            let mut filters = self.inner.filters.lock();
            if filters.blocked.contains(&(by, from)) || filters.blocked.contains(&(from, by)) {
                return refuse("partitioned");
            }
            if filters.drop_rate > 0.0 && rand::rng().random_bool(filters.drop_rate.min(1.0)) {
                return refuse("dropped");
            }
            match &mut filters.fetch_budget {
                Some(0) => return refuse("fetch budget spent"),
                Some(n) => *n -= 1,
                None => {}
            }
        }
        let server = self.inner.servers.lock().get(&from).cloned();
        let Some(server) = server else {
            return refuse("not registered");
        };
        let chunk_bytes = server(by, key, chunk)?;
        *self
            .inner
            .served
            .lock()
            .entry((from, *key, chunk))
            .or_default() += 1;
        Ok(chunk_bytes)
    }

    /// Reconnects every link, keeping the other filters.
    pub fn heal_links(&self) {
        self.update_filters(|f| f.blocked.clear());
    }

    /// Removes every filter.
    pub fn heal(&self) {
        self.set_filters(Filters::default());
    }

    fn route(&self, from: NodeId, to: NodeId, batch: Vec<GroupMessage>) {
        let filters = self.inner.filters.lock().clone();
        if filters.blocked.contains(&(from, to)) {
            return;
        }
        let mut rng = rand::rng();
        let mut now = Vec::new();
        for m in batch {
            if filters.drop_rate > 0.0 && rng.random_bool(filters.drop_rate.min(1.0)) {
                continue;
            }
            let copies = if filters.duplicate_rate > 0.0
                && rng.random_bool(filters.duplicate_rate.min(1.0))
            {
                2
            } else {
                1
            };
            for _ in 0..copies {
                match filters.max_delay {
                    Some(max) if !max.is_zero() => {
                        let wait = rng.random_range(Duration::ZERO..max);
                        self.hold(to, wait, encode_batch(std::slice::from_ref(&m)));
                    }
                    _ => now.push(m.clone()),
                }
            }
        }
        if !now.is_empty() {
            deliver(&self.inner.inboxes, to, &encode_batch(&now));
        }
    }

    fn hold(&self, to: NodeId, wait: Duration, bytes: Vec<u8>) {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(tx) = self.inner.delayed.lock().as_ref() {
            let _ = tx.send(Delayed {
                at: Instant::now() + wait,
                seq,
                to,
                bytes,
            });
        }
    }
}

fn deliver(inboxes: &Inboxes, to: NodeId, bytes: &[u8]) {
    let inbox = inboxes.lock().get(&to).cloned();
    if let Some(inbox) = inbox
        && let Err(e) = inbox.deliver(bytes)
    {
        tracing::debug!(to, error = %e, "in-memory delivery failed");
    }
}

/// Holds delayed messages until they are due; ends when the hub is dropped.
fn deliver_delayed(rx: mpsc::Receiver<Delayed>, inboxes: Inboxes) {
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut held: HashMap<u64, Delayed> = HashMap::new();
    loop {
        let wait = heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(d) => {
                heap.push(Reverse((d.at, d.seq)));
                held.insert(d.seq, d);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while let Some(Reverse((at, seq))) = heap.peek().copied() {
            if at > Instant::now() {
                break;
            }
            heap.pop();
            if let Some(d) = held.remove(&seq) {
                deliver(&inboxes, d.to, &d.bytes);
            }
        }
    }
}

struct MemTransport {
    from: NodeId,
    hub: MemHub,
}

impl Transport for MemTransport {
    fn send(&self, to: NodeId, batch: Vec<GroupMessage>) {
        self.hub.route(self.from, to, batch);
    }

    fn fetch_chunk(&self, from: NodeId, key: &SnapshotKey, chunk: u32) -> Result<Vec<u8>> {
        self.hub.fetch(self.from, from, key, chunk)
    }

    fn serve_snapshots(&self, server: ChunkServer) {
        self.hub.inner.servers.lock().insert(self.from, server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Message;

    fn batch(n: usize) -> Vec<GroupMessage> {
        (0..n)
            .map(|i| GroupMessage {
                group: i as u32,
                msg: Message {
                    to: 2,
                    ..Default::default()
                },
            })
            .collect()
    }

    fn receiver(hub: &MemHub, id: NodeId, limit: usize) -> mpsc::Receiver<Vec<GroupMessage>> {
        let (tx, rx) = mpsc::channel();
        hub.register(
            id,
            Inbox::new(limit, move |b| {
                tx.send(b).map_err(|_| crate::ReplicationError::Stopped)
            }),
        );
        rx
    }

    #[test]
    fn partitions_block_both_ways_until_healed() {
        let hub = MemHub::new();
        let rx = receiver(&hub, 2, 1 << 20);
        let t = hub.transport(1);
        t.send(2, batch(3));
        assert_eq!(rx.try_recv().unwrap().len(), 3);
        hub.partition(&[1], &[2, 3]);
        t.send(2, batch(1));
        assert!(rx.try_recv().is_err());
        hub.heal();
        t.send(2, batch(1));
        assert_eq!(rx.try_recv().unwrap().len(), 1);
    }

    #[test]
    fn duplicates_and_delays_deliver_everything_eventually() {
        let hub = MemHub::new();
        let rx = receiver(&hub, 2, 1 << 20);
        hub.set_filters(Filters {
            duplicate_rate: 1.0,
            max_delay: Some(Duration::from_millis(5)),
            ..Default::default()
        });
        hub.transport(1).send(2, batch(10));
        let mut got = 0;
        while got < 20 {
            got += rx.recv_timeout(Duration::from_secs(5)).unwrap().len();
        }
        assert_eq!(got, 20);
    }

    #[test]
    fn a_batch_over_the_receivers_limit_is_refused() {
        let hub = MemHub::new();
        let rx = receiver(&hub, 2, 16);
        hub.transport(1).send(2, batch(10));
        assert!(rx.try_recv().is_err());
    }
}
