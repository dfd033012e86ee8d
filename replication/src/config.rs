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
    /// Size of the engine's snapshot chunks.
    pub snapshot_chunk_bytes: usize,
    /// Entry bytes per append message (raft's `max_size_per_msg`).
    pub max_entries_bytes_per_message: u64,
    /// Largest encoded batch the node accepts from a transport.
    pub max_message_bytes: usize,
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
            max_entries_bytes_per_message: 1 << 20,
            // Snapshots still travel inside one raft message in this step.
            max_message_bytes: 256 << 20,
            engine: EngineConfig::default(),
        }
    }
}
