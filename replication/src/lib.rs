//! # stratosdb-replication
//!
//! Multi-Raft for stratosdb: every shard is a raft group (raft-rs) whose
//! replicas live on different nodes. One [`RaftNode`] per process hosts many
//! groups and drives them from one loop thread.
//!
//! - [`log`]: the raft log of a group on a sled tree (`raft::Storage`).
//! - [`transport`]: the [`Transport`] trait and the in-memory, filterable
//!   implementation for tests ([`MemHub`]).
//! - [`node`]: the loop thread, proposals, linearizable reads, membership.
//! - [`codec`]: the bytes on the wire.

pub mod codec;
mod error;
pub mod log;
mod snapshot;

pub use codec::GroupMessage;
pub use error::{ReplicationError, Result};
pub use snapshot::{export_chunks, install};

/// A node of the cluster; the same id in every group it is a replica of.
pub type NodeId = u64;
/// A raft group; one per shard, so it is the shard's id.
pub type GroupId = stratosdb_engine::ShardId;
