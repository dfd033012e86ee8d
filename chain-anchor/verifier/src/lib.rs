//! # stratosdb-verifier
//!
//! What a client that trusts nothing but the chain needs to check stratosdb:
//!
//! - [`AnchorPayload`]: the bytes an anchor carries on the chain (magic,
//!   version, cluster id, epoch, cluster root, previous anchor reference);
//! - [`ShardLeaf`] and [`cluster_root`]: how the shard roots of one epoch fold
//!   into the one cluster root an anchor carries, and [`LeafProof`], the proof
//!   that one shard leaf is under it;
//! - [`ReadProof`]: a served document's proof to its shard root and on to an
//!   anchored cluster root, and [`verify_rows`], which ties a reply's rows to it;
//! - [`ledger`]: the local ledger's signed, hash-chained blocks and the
//!   checks an auditor runs over its file;
//! - [`traffic`]: Proof of Traffic's accounts, signed requests, prices and
//!   receipts;
//! - the proofs of single documents come from `stratosdb-proof` (re-exported
//!   as [`proof`]).
//!
//! It depends on no storage engine, network stack or async runtime, so a light
//! client, a browser (wasm32) or an auditor can use it alone. The formats are
//! in `docs/chain.md` and `docs/merkle.md`, byte for byte.

mod error;
pub mod leaves;
pub mod ledger;
pub mod payload;
pub mod read_proof;
pub mod traffic;

pub use error::VerifyError;
pub use leaves::{LeafProof, ShardLeaf, cluster_root};
pub use payload::{AnchorPayload, PAYLOAD_LEN, PAYLOAD_MAGIC, PAYLOAD_VERSION};
pub use read_proof::{AnchorProof, ReadProof, Verified, verify_rows};
pub use stratosdb_proof as proof;
pub use stratosdb_proof::Hash;
pub use stratosdb_proof::hex_serde;
