//! The crate's one error type. Each variant carries what a caller needs to act
//! on it; `code()` is a stable name users can look up.

use crate::{GroupId, NodeId};
use stratosdb_engine::EngineError;

/// Everything that can go wrong in replication.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// This replica is not the group's leader; retry at `leader` if known.
    #[error("not the leader of group {group}; leader hint: {leader:?}")]
    NotLeader {
        group: GroupId,
        leader: Option<NodeId>,
    },
    /// Raft refused the proposal (for example during a leader transfer).
    #[error("proposal to group {group} was dropped by raft; retry")]
    ProposalDropped { group: GroupId },
    /// A new leader replaced the proposed entry: it was not applied.
    #[error(
        "proposal at index {index} (term {term}) of group {group} was overwritten by a new leader"
    )]
    Overwritten {
        group: GroupId,
        index: u64,
        term: u64,
    },
    /// A snapshot covered the proposed entry: it may or may not have applied.
    #[error(
        "the outcome of the proposal at index {index} of group {group} is unknown (a snapshot covered it)"
    )]
    OutcomeUnknown { group: GroupId, index: u64 },
    /// The leader keeps the group: its own node sends most of the group's
    /// requests (`locality.rs`), so balancing it away would cost them a hop.
    #[error("the leader of group {group} keeps it: most of its requests enter at its node")]
    LeaderServesOwnLoad { group: GroupId },
    /// Another membership change is still pending; retry once it is applied.
    #[error("group {group} already has a membership change in progress")]
    ConfChangeInProgress { group: GroupId },
    #[error("invalid membership change for group {group}: {reason}")]
    InvalidConfChange { group: GroupId, reason: String },
    #[error("timed out waiting on group {group}")]
    Timeout { group: GroupId },
    #[error("group {0} does not exist on this node")]
    GroupNotFound(GroupId),
    #[error("the replication node has stopped")]
    Stopped,
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("raft log is corrupt: {0}")]
    Corruption(String),
    /// The raft log engine (raft-engine) failed: I/O, or a record it cannot read.
    #[error("raft log engine: {0}")]
    LogEngine(#[from] raft_engine::Error),
    /// The data folder keeps its raft logs in sled, from before the logs
    /// moved to raft-engine; there is no migration.
    #[error(
        "data folder {dir} holds raft logs in the old format (sled trees of groups {groups:?}); this version keeps them in raft-engine and does not migrate: start the node on a new folder"
    )]
    LegacyLog { dir: String, groups: Vec<GroupId> },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The node key could not be read or created.
    #[error("node identity at {path}: {reason}")]
    Identity { path: String, reason: String },
    /// The network transport could not start or listen.
    #[error("network: {0}")]
    Network(String),
    /// Two members' PeerIds map to one node id; the second is refused.
    #[error("peer {peer} maps to node id {node}, which member {existing} already has")]
    NodeIdCollision {
        node: NodeId,
        peer: String,
        existing: String,
    },
    #[error("node {0} is not a cluster member this transport knows")]
    UnknownNode(NodeId),
    /// The send queue to the node is full; retry later.
    #[error("the send queue to node {0} is full")]
    QueueFull(NodeId),
    #[error("invalid address {addr}: {reason}")]
    InvalidAddress { addr: String, reason: String },
    /// No stream to the node could be opened before the call's deadline.
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String },
    /// The node took longer than the call's timeout to answer.
    #[error("node {node} did not answer within {timeout:?}")]
    CallTimeout {
        node: NodeId,
        timeout: std::time::Duration,
    },
    /// The node ended the call's stream without an answer: it has no handler
    /// yet, refused the request, or went away. The request may or may not
    /// have been handled.
    #[error("node {node} gave no answer: {reason}")]
    NoAnswer { node: NodeId, reason: String },
    /// The snapshot's sender no longer has it (replaced by a newer one, or
    /// expired); raft sends a new snapshot.
    #[error("snapshot of group {group} at index {index} (term {term}) is not held by its sender")]
    SnapshotNotFound {
        group: GroupId,
        index: u64,
        term: u64,
    },
    /// A snapshot (or the incoming ones together) would pass the disk limit.
    #[error("snapshot of {bytes} bytes is over the limit of {limit}")]
    SnapshotTooLarge { bytes: u64, limit: u64 },
    /// Snapshot bytes do not match their descriptor.
    #[error("snapshot is corrupt: {0}")]
    SnapshotCorrupt(String),
    /// No chunk arrived for too long; what was fetched is kept for a resume.
    #[error("snapshot fetch of group {group} stalled at chunk {chunk}: {reason}")]
    SnapshotStalled {
        group: GroupId,
        chunk: u32,
        reason: String,
    },
    /// The node serves as many chunk reads as it allows at once; ask again.
    #[error("snapshot chunk reads are at their limit here; retry")]
    SnapshotBusy,
    /// Reading or writing snapshot files failed.
    #[error("snapshot files: {0}")]
    SnapshotIo(String),
    #[error(transparent)]
    Descriptor(#[from] crate::snapshot::DescriptorError),
    /// No peer proved its identity at the address before the deadline.
    #[error("no peer found at {addr} in time: {last_error}")]
    DiscoveryTimeout { addr: String, last_error: String },
}

impl ReplicationError {
    /// A stable, greppable code for the error kind.
    pub fn code(&self) -> &'static str {
        use ReplicationError::*;
        match self {
            NotLeader { .. } => "not_leader",
            ProposalDropped { .. } => "proposal_dropped",
            Overwritten { .. } => "overwritten",
            OutcomeUnknown { .. } => "outcome_unknown",
            LeaderServesOwnLoad { .. } => "leader_serves_own_load",
            ConfChangeInProgress { .. } => "conf_change_in_progress",
            InvalidConfChange { .. } => "invalid_conf_change",
            Timeout { .. } => "timeout",
            GroupNotFound(_) => "group_not_found",
            Stopped => "stopped",
            MessageTooLarge { .. } => "message_too_large",
            Malformed(_) => "malformed_message",
            Corruption(_) => "corruption",
            LogEngine(_) => "raft_log_engine",
            LegacyLog { .. } => "legacy_raft_log",
            Engine(e) => e.code(),
            Raft(_) => "raft",
            Identity { .. } => "identity",
            Network(_) => "network",
            NodeIdCollision { .. } => "node_id_collision",
            UnknownNode(_) => "unknown_node",
            QueueFull(_) => "queue_full",
            InvalidAddress { .. } => "invalid_address",
            Unreachable { .. } => "unreachable",
            CallTimeout { .. } => "call_timeout",
            NoAnswer { .. } => "no_answer",
            DiscoveryTimeout { .. } => "discovery_timeout",
            SnapshotNotFound { .. } => "snapshot_not_found",
            SnapshotTooLarge { .. } => "snapshot_too_large",
            SnapshotCorrupt(_) => "snapshot_corrupt",
            SnapshotStalled { .. } => "snapshot_stalled",
            SnapshotBusy => "snapshot_busy",
            SnapshotIo(_) => "snapshot_io",
            Descriptor(_) => "snapshot_descriptor",
        }
    }

    /// Whether the same request may succeed if retried (at the leader hint).
    pub fn is_retryable(&self) -> bool {
        use ReplicationError::*;
        matches!(
            self,
            NotLeader { .. }
                | ProposalDropped { .. }
                | Overwritten { .. }
                | ConfChangeInProgress { .. }
                | Timeout { .. }
                | QueueFull(_)
                | Unreachable { .. }
                | CallTimeout { .. }
                | NoAnswer { .. }
                | DiscoveryTimeout { .. }
                | SnapshotNotFound { .. }
                | SnapshotStalled { .. }
                | SnapshotBusy
        )
    }
}

pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;
