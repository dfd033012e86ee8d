//! The settings of a replication node.

use std::time::Duration;

use stratosdb_engine::EngineConfig;

use crate::NodeId;

/// Settings of a [`crate::RaftNode`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id, the same in every group.
    pub id: NodeId,
    /// One raft tick.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Ticks a read index request waits before it is re-sent.
    pub read_retry_ticks: u32,
    /// Compact a group's log once this many applied entries are in it.
    pub compact_after: u64,
    /// Applied entries kept after a compaction, for followers slightly behind.
    pub compact_keep: u64,
    /// Size of the engine's snapshot chunks: the unit a snapshot transfer
    /// fetches, verifies and resumes from.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot this node exports, and the most bytes of incoming
    /// snapshots it keeps on disk at once; a larger one is refused.
    pub snapshot_max_disk_bytes: u64,
    /// Snapshot transfers that run at once on this node (fetch threads).
    pub snapshot_fetchers: usize,
    /// Chunk fetches one transfer keeps in flight (at most this many chunks
    /// ahead of the first missing one are held in memory or on the way).
    pub snapshot_fetch_window: usize,
    /// Snapshot chunk reads this node serves at once; more wait for a turn
    /// (up to `snapshot_stall_timeout / 4`), then are refused as busy and
    /// retried by their fetcher.
    pub snapshot_serve_concurrency: usize,
    /// A fetch gives up (keeping its chunks for a resume) after this long
    /// without a chunk; a leader reports a transfer failed to raft after
    /// twice this without a chunk served.
    pub snapshot_stall_timeout: Duration,
    /// Snapshot files not used for this long are removed.
    pub snapshot_expiry: Duration,
    /// Entry bytes per append message (raft's `max_size_per_msg`).
    pub max_entries_bytes_per_message: u64,
    /// Largest encoded batch the node accepts from a transport.
    pub max_message_bytes: usize,
    /// A shard's leader hands leadership to the replica whose node sends
    /// it most of the shard's requests (`locality.rs`).
    pub follow_workload: bool,
    pub engine: EngineConfig,
}

impl NodeConfig {
    /// Defaults: 100 ms ticks, elections after 10 ticks, heartbeats every 3.
    pub fn new(id: NodeId) -> Self {
        NodeConfig {
            id,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 3,
            read_retry_ticks: 10,
            compact_after: 10_000,
            compact_keep: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_max_disk_bytes: 64 << 30,
            snapshot_fetchers: 2,
            snapshot_fetch_window: 4,
            snapshot_serve_concurrency: 4,
            snapshot_stall_timeout: Duration::from_secs(10),
            snapshot_expiry: Duration::from_secs(600),
            max_entries_bytes_per_message: 1 << 20,
            // Snapshots travel as chunks outside raft messages: a batch holds
            // entries and at most a snapshot descriptor (about 2.4 MiB at most).
            max_message_bytes: 64 << 20,
            follow_workload: true,
            engine: EngineConfig::default(),
        }
    }
}
