//! # stratosdb-query
//!
//! The query layer of stratosdb, a pipeline read top to bottom:
//!
//! 1. [`parse`]: text to statements — a script split on `;`, the few
//!    statements that are not SQL (`CREATE COLLECTION`, `SHOW COLLECTIONS`,
//!    ...) recognized by hand, the rest parsed by sqlparser (GenericDialect);
//! 2. [`translate`]: sqlparser's AST to this crate's small [`ast`] (paths,
//!    expressions, one [`ast::Query`] shape for every SELECT);
//!    [`filter`] compiles MongoDB-style JSON filters to the same `Query`;
//! 3. [`plan`]: a `Query` and the catalog to a [`plan::QueryPlan`] — the access
//!    path (full scan, `_id` lookup or range, index ranges), the filter,
//!    projection, sort, limit, and aggregates split into a per-shard part and
//!    a merge;
//! 4. [`exec`]: the per-shard part behind [`exec::ShardSource`] (implemented
//!    for the engine's `Shard`), and the merge of N shard answers;
//! 5. [`ShardedDatabase`]: statements over any [`ShardedStore`] (routing,
//!    scatter/gather, per-shard isolation of writes); [`Database`], the
//!    embedded database, is its one-shard case, and [`LocalShards`] N engine
//!    shards in one process; [`wire`] encodes plans and answers for the network.
//!
//! Expressions are rewritten through one traversal ([`tree`]); the scalar
//! functions live in [`functions`]. Semantics (missing vs null, comparisons
//! bracketed by type, arrays) are written down in `docs/query.md`.

pub mod ast;
mod database;
pub mod error;
pub mod eval;
pub mod exec;
pub mod filter;
pub mod fixture;
pub mod functions;
pub mod limits;
pub mod parse;
pub mod plan;
mod proven;
mod sharded;
pub mod translate;
pub mod tree;
pub mod wire;

pub use database::{Database, StatementResult};
pub use error::{QueryError, Result};
pub use exec::{Rows, ShardSource};
pub use filter::{FindOptions, Order};
pub use parse::{StatementText, parse_script, parse_statement, split_statements};
pub use proven::{
    AnchorLookup, MAX_PROOF_ATTEMPTS, NoAnchors, ProvenRows, execute_proven, project_document,
    proof_unsupported,
};
pub use sharded::{
    Executed, LOCAL_MAX_SHARDS, LocalShards, MAX_WRITE_ATTEMPTS, ReadConsistency, ShardRead,
    ShardedDatabase, ShardedStore,
};
pub use stratosdb_engine::Value;
pub use wire::{
    decode_partial, decode_query_plan, decode_shard_plan, encode_partial, encode_query_plan,
    encode_shard_plan,
};
