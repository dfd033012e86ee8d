//! STOS on a chain: deposits that fund accounts, payouts that return them.
//! The types here are what [`crate::Chain`]'s fund methods take and give;
//! `docs/traffic.md` says how the cluster uses them.

use serde::{Deserialize, Serialize};
use stratosdb_verifier::traffic::{Address, wei};

use crate::ChainRef;

/// An account's signed word that it deposits `amount` wei with a cluster: on
/// the local ledger, where no STOS moves, this signature is the deposit (the
/// ledger records it); an auditor checks it against `account`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositAuthorization {
    #[serde(with = "stratosdb_verifier::hex_serde::hash")]
    pub cluster_id: [u8; 32],
    pub account: Address,
    #[serde(with = "wei::string")]
    pub amount: u128,
    /// 16 random bytes (hex): two deposits of one amount are two deposits.
    pub nonce: String,
    /// The account's EIP-191 signature (`0x` r ‖ s ‖ v) over the deposit
    /// message (`docs/traffic.md`).
    pub signature: String,
}

/// A deposit read back from the chain and checked: a successful, included
/// transfer of `amount` wei from `account` to the settlement address (EVM),
/// or a deposit entry of the cluster with a valid account signature (ledger).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRecord {
    pub reference: ChainRef,
    #[serde(with = "stratosdb_verifier::hex_serde::hash")]
    pub cluster_id: [u8; 32],
    pub account: Address,
    #[serde(with = "wei::string")]
    pub amount: u128,
    /// The block that includes it (ledger height or EVM block number).
    pub block: u64,
    pub timestamp_ms: u64,
}

/// A payout (a withdrawal of an account's unspent funds, or a node's
/// earnings) on its way to the chain. Like an anchor [`crate::Submission`],
/// the node records it in its metadata group before sending, so it is sent at
/// most once whoever leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    #[serde(with = "stratosdb_verifier::hex_serde::hash")]
    pub cluster_id: [u8; 32],
    /// Which payout of the cluster this is (unique, from the metadata group).
    pub id: u64,
    pub to: Address,
    #[serde(with = "wei::string")]
    pub amount: u128,
    /// What the backend needs to send it again exactly; opaque to the node.
    pub detail: serde_json::Value,
}
