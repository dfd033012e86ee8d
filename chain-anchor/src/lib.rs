//! # stratosdb-chain-anchor
//!
//! Where stratosdb's epoch roots go: a [`Chain`] takes an epoch's
//! [`AnchorPayload`], records it, and reads it back by its [`ChainRef`].
//! Two backends implement it: the embedded local ledger (a hash-chained log
//! of signed blocks in a folder) and the Stratos chain (an EVM transaction per
//! anchor over Ethereum JSON-RPC). The formats are in `docs/chain.md`.
//!
//! Submitting is split in two steps, [`Chain::prepare`] and [`Chain::send`],
//! so that the node can record a submission in its metadata group before it
//! is sent: whoever leads next sends that same submission again (harmless),
//! or replaces a dropped one by a submission that excludes it, never a second
//! anchor for one epoch.

mod chain;
mod error;
pub mod funds;
mod ledger;
pub mod stratos;

pub use chain::{AnchorRecord, Chain, ChainInfo, ChainRef, Submission, SubmissionStatus};
pub use error::ChainError;
pub use funds::{DepositAuthorization, DepositRecord, Payout};
pub use ledger::{LOG_FILE, LedgerAnchor, LedgerKey, LedgerReport, LocalLedger, verify_ledger};
pub use stratos::{StratosChain, StratosConfig};
pub use stratosdb_verifier::hex_serde::parse as hex_hash;
pub use stratosdb_verifier::ledger as block;
pub use stratosdb_verifier::{AnchorPayload, Hash, LeafProof, ShardLeaf, cluster_root};
