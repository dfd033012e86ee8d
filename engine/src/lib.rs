//! # stratosdb-engine
//!
//! The storage core of stratosdb: JSON documents in collections, secondary
//! indexes with an order-preserving key encoding, and each shard's Merkle
//! commitment, all written in one atomic batch per write, on a storage trait
//! ([`KvStore`]) implemented with sled.
//!
//! - [`Engine`] opens the files and hands out [`Shard`]s.
//! - A [`Shard`] holds collections; writes are [`Op`]s applied atomically
//!   ([`Shard::write`]), or serialized [`Command`]s applied at a raft index
//!   ([`Shard::apply`], or a run of them at once with [`Shard::apply_batch`]).
//! - Reads: [`Shard::get`], [`Shard::scan`] by `_id`, [`Shard::index_scan`].
//! - Authenticated state: [`Shard::root`], [`Shard::prove`]; verification lives
//!   in `stratosdb-proof` (re-exported as [`proof`]) and needs no storage.
//! - Anchor marks: [`Op::AnchorMark`] records (epoch, raft index, root) on
//!   every replica alike; [`Shard::anchor_mark`], [`Shard::latest_anchor_mark`].
//! - Snapshots: [`Shard::export_snapshot`], [`Shard::import_snapshot`].

mod anchor;
mod catalog;
mod command;
mod commit;
mod config;
pub mod data_dir;
mod directory;
mod document;
mod engine;
mod error;
mod index_keys;
pub mod keys;
pub mod limits;
mod merkle;
mod overlay;
mod routing;
mod shard;
mod shared;
mod snapshot;
pub mod storage;
mod txn;

pub use anchor::{AnchorMark, AnchoredProof, MARK_HISTORY};
pub use catalog::{CollectionInfo, IndexBuild, IndexInfo, IndexSpec, validate_name};
pub use command::{Command, Op, PatchChange};
pub use config::EngineConfig;
pub use document::{parse_path, path_values};
pub use engine::Engine;
pub use error::{EngineError, Result};
pub use limits::Limits;
pub use merkle::root_from_scratch;
pub use routing::{assign_id, shard_of};
pub use shard::{
    ApplyOutcome, DocIter, Durability, Entries, ExportPage, ExportedDocument, IdIter, IndexRange,
    MarkChange, OpOutcome, ProvenSet, RawDocument, Shard, ShardId, WriteResult,
};
pub use snapshot::{PreparedImport, SnapshotSummary};
pub use storage::{DefaultStore, KvStore, KvTree, SledStore, WriteBack, WriteBackTree};
pub use stratosdb_proof as proof;
pub use stratosdb_proof::{Hash, Object, Value};
