//! Outbound traffic to one member: a bounded queue per protocol and a task
//! that drains it. The raft loop only ever pushes to a queue (never blocks
//! on the network); the task opens streams, reconnecting with backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::futures::AsyncWriteExt as _;
use libp2p::{PeerId, Stream, StreamProtocol};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::faults::FaultSwitch;
use super::wire::{self, LargeKind};
use super::{LARGE_PROTOCOL, P2pConfig, RAFT_PROTOCOL, node_id_of};

/// A bounded queue of encoded messages with a wake-up for its task.
pub(crate) struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    notify: Notify,
    capacity: usize,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
}

impl<T> Queue<T> {
    fn new(capacity: usize) -> Self {
        Queue {
            items: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `item`; when full, the OLDEST item is dropped to make room.
    pub fn push_drop_oldest(&self, item: T) {
        {
            let mut items = self.items.lock();
            if items.len() >= self.capacity {
                items.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            items.push_back(item);
        }
        self.notify.notify_one();
    }

    /// Queues `item` unless full; a full queue refuses the NEW item.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        {
            let mut items = self.items.lock();
            if items.len() >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(item);
            }
            items.push_back(item);
        }
        self.notify.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<T> {
        self.items.lock().pop_front()
    }

    /// Empties the queue (what fault injection cut off).
    fn clear(&self) {
        self.items.lock().clear();
    }

    /// Waits until something is queued. `Notify` keeps one permit, so a
    /// push between the check and the wait is not lost.
    async fn ready(&self) {
        while self.items.lock().is_empty() {
            self.notify.notified().await;
        }
    }
}

/// One member we send to.
pub(crate) struct PeerLink {
    pub peer: PeerId,
    /// Encoded raft batches for the long-lived raft stream.
    pub raft: Queue<Vec<u8>>,
    /// Large payloads, each on its own stream.
    pub large: Queue<(LargeKind, Vec<u8>)>,
    faults: FaultSwitch,
}

impl PeerLink {
    pub fn new(peer: PeerId, config: &P2pConfig, faults: FaultSwitch) -> Self {
        PeerLink {
            peer,
            raft: Queue::new(config.raft_queue_batches),
            large: Queue::new(config.large_queue_payloads),
            faults,
        }
    }

    /// Whether fault injection cuts this peer off now: what was queued
    /// before the cut is dropped too, as a cut network would drop it.
    fn cut_off(&self) -> bool {
        self.faults.drops(node_id_of(&self.peer))
    }
}

/// Exponential backoff between connection attempts.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &P2pConfig) -> Self {
        Backoff {
            next: config.backoff_min,
            min: config.backoff_min,
            max: config.backoff_max,
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    config: &P2pConfig,
) -> Option<Stream> {
    match tokio::time::timeout(config.open_timeout, control.open_stream(peer, protocol)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "cannot open a stream");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "opening a stream timed out");
            None
        }
    }
}

/// Drains the raft queue onto one long-lived stream: frames to a peer stay
/// in order. A failed stream is reopened (dialing again if needed) after a
/// backoff; what was queued meanwhile waits, bounded by the queue.
pub(crate) async fn raft_writer(
    link: Arc<PeerLink>,
    mut control: libp2p_stream::Control,
    config: Arc<P2pConfig>,
) {
    let mut stream: Option<Stream> = None;
    let mut backoff = Backoff::new(&config);
    loop {
        link.raft.ready().await;
        if link.cut_off() {
            link.raft.clear();
            continue;
        }
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match open(&mut control, link.peer, RAFT_PROTOCOL, &config).await {
                Some(s) => {
                    backoff.reset();
                    stream.insert(s)
                }
                None => {
                    backoff.wait().await;
                    continue;
                }
            },
        };
        // Everything queued goes out before one flush.
        let mut result = Ok(());
        while let Some(frame) = link.raft.pop() {
            result = wire::write_frame(s, &frame).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = s.flush().await;
        }
        if let Err(e) = result {
            tracing::debug!(peer = %link.peer, error = %e, "raft stream failed; reconnecting");
            stream = None;
            backoff.wait().await;
        }
    }
}

/// Sends large payloads, each on a stream of its own, so they never hold up
/// the raft stream's heartbeats. A payload whose stream fails is dropped
/// (raft asks for a snapshot again).
pub(crate) async fn large_writer(
    link: Arc<PeerLink>,
    mut control: libp2p_stream::Control,
    config: Arc<P2pConfig>,
) {
    let mut backoff = Backoff::new(&config);
    loop {
        link.large.ready().await;
        if link.cut_off() {
            link.large.clear();
            continue;
        }
        let Some(mut stream) = open(&mut control, link.peer, LARGE_PROTOCOL, &config).await else {
            backoff.wait().await;
            continue;
        };
        backoff.reset();
        let Some((kind, payload)) = link.large.pop() else {
            continue;
        };
        if let Err(e) = wire::write_large(&mut stream, kind, &payload).await {
            tracing::warn!(peer = %link.peer, bytes = payload.len(), error = %e, "large payload lost");
        }
    }
}
