//! # stratosdb-replication
//!
//! Multi-Raft for stratosdb: every shard is a raft group (raft-rs) whose
//! replicas live on different nodes. One [`RaftNode`] per process hosts many
//! groups and drives them from one loop thread, with one synced log write per iteration
//! for all of them; committed entries apply to the group's engine shard in
//! one batch.
//!
//! - [`log`]: the raft logs of all groups on raft-engine (`raft::Storage`).
//! - [`Transport`]: how batches of raft messages travel; [`MemHub`] is the
//!   in-memory, filterable one for tests; [`p2p::P2pTransport`] is libp2p.
//! - [`RaftNode`]: proposals, linearizable reads, membership changes.
//! - [`codec`]: the bytes on the wire.
//! - [`snapshot`]: snapshots as a small descriptor in raft and chunks
//!   fetched, verified and resumable, with their progress.
//! - [`ClusterMap`]: nodes, collections, shards and their replicas, changed
//!   by [`MapCommand`]s; [`placement`] decides where new shards go.

mod cluster_map;
pub mod codec;
mod config;
mod counters;
mod driver;
mod error;
mod group;
pub mod locality;
pub mod log;
mod mem_transport;
pub mod metadata;
mod node;
pub mod p2p;
pub mod placement;
mod read;
mod reply;
pub mod snapshot;
mod transport;

pub use cluster_map::{
    ClusterMap, CollectionInfo, MAX_MAP_COMMAND_BYTES, METADATA_GROUP, MapCommand, MapError, Move,
    NodeInfo, ShardInfo, shard_of,
};
pub use codec::GroupMessage;
pub use config::NodeConfig;
pub use counters::CounterValues;
pub use error::{ReplicationError, Result};
pub use group::GroupStatus;
pub use mem_transport::{Filters, MemHub};
pub use node::{MembershipChange, Pending, RaftNode};
pub use raft::eraftpb::ConfState;
pub use snapshot::{
    SnapshotDescriptor, SnapshotKey, SnapshotTransfer, TransferDirection, export_chunks,
};
pub use transport::{ChunkServer, Inbox, Transport};

/// A node of the cluster; the same id in every group it is a replica of.
pub type NodeId = u64;
/// A raft group; one per shard, so it is the shard's id.
pub type GroupId = stratosdb_engine::ShardId;
