//! How raft messages travel between nodes. A [`Transport`] sends batches to a
//! node id; what arrives is handed, still encoded, to the receiving node's
//! [`Inbox`], which decodes it with a size limit. The in-memory hub for tests
//! is in `mem_transport.rs`; libp2p is in `p2p/`.

use std::sync::Arc;

use crate::codec::{GroupMessage, decode_batch};
use crate::snapshot::SnapshotKey;
use crate::{NodeId, Result};

/// Serves chunks of the snapshots this node exported: the requesting node,
/// the snapshot and the chunk number in, the chunk's bytes out
/// (`SnapshotNotFound` when the snapshot is gone).
pub type ChunkServer = Arc<dyn Fn(NodeId, &SnapshotKey, u32) -> Result<Vec<u8>> + Send + Sync>;

/// Sends raft messages to other nodes. Best effort: raft retries what is lost.
pub trait Transport: Send + Sync + 'static {
    /// Sends one batch (messages of any groups) to node `to`.
    fn send(&self, to: NodeId, batch: Vec<GroupMessage>);

    /// Fetches chunk `chunk` of snapshot `key` from node `from`, which
    /// exported it (blocking, bounded in time). Errors say whether to retry:
    /// network ones are retryable, `SnapshotNotFound` is final.
    fn fetch_chunk(&self, from: NodeId, key: &SnapshotKey, chunk: u32) -> Result<Vec<u8>>;

    /// Serves this node's snapshot chunks to the nodes that fetch them.
    fn serve_snapshots(&self, server: ChunkServer);
}

/// The receiving end of a node: decodes a batch and queues it for the node's loop.
#[derive(Clone)]
pub struct Inbox {
    deliver: Arc<dyn Fn(Vec<GroupMessage>) -> Result<()> + Send + Sync>,
    limit: usize,
}

impl Inbox {
    /// An inbox that hands decoded batches (at most `limit` bytes encoded) to
    /// `deliver`. Nodes make theirs with `RaftNode::inbox`; tests of a
    /// transport make their own.
    pub fn new(
        limit: usize,
        deliver: impl Fn(Vec<GroupMessage>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        Inbox {
            deliver: Arc::new(deliver),
            limit,
        }
    }

    /// Decodes a batch that arrived (refusing one over the size limit) and
    /// queues it for the node.
    pub fn deliver(&self, bytes: &[u8]) -> Result<()> {
        let batch = decode_batch(bytes, self.limit)?;
        (self.deliver)(batch)
    }
}
