//! The chain abstraction.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stratosdb_verifier::AnchorPayload;

use stratosdb_verifier::traffic::{Address, SettlementEntry};

use crate::ChainError;
use crate::funds::{DepositAuthorization, DepositRecord, Payout};

/// Where an anchor is on a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainRef {
    /// A block of the local ledger: its height and hash.
    Ledger {
        height: u64,
        #[serde(with = "stratosdb_verifier::hex_serde::hash")]
        block_hash: [u8; 32],
    },
    /// An EVM transaction.
    Evm {
        chain_id: u64,
        #[serde(with = "stratosdb_verifier::hex_serde::hash")]
        tx_hash: [u8; 32],
    },
}

impl ChainRef {
    /// The 32 bytes the next anchor's payload names as its `previous`.
    pub fn hash(&self) -> [u8; 32] {
        match self {
            ChainRef::Ledger { block_hash, .. } => *block_hash,
            ChainRef::Evm { tx_hash, .. } => *tx_hash,
        }
    }
}

/// `ledger:HEIGHT:BLOCKHASH` or `evm:CHAINID:0xTXHASH`.
impl fmt::Display for ChainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainRef::Ledger { height, block_hash } => {
                write!(f, "ledger:{height}:{}", hex::encode(block_hash))
            }
            ChainRef::Evm { chain_id, tx_hash } => {
                write!(f, "evm:{chain_id}:0x{}", hex::encode(tx_hash))
            }
        }
    }
}

impl FromStr for ChainRef {
    type Err = ChainError;

    fn from_str(s: &str) -> Result<ChainRef, ChainError> {
        let bad = || ChainError::MalformedReference(s.to_string());
        let hash = |text: &str| -> Result<[u8; 32], ChainError> {
            let text = text.strip_prefix("0x").unwrap_or(text);
            hex::decode(text)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)
        };
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("ledger"), Some(height), Some(h)) => Ok(ChainRef::Ledger {
                height: height.parse().map_err(|_| bad())?,
                block_hash: hash(h)?,
            }),
            (Some("evm"), Some(id), Some(h)) => Ok(ChainRef::Evm {
                chain_id: id.parse().map_err(|_| bad())?,
                tx_hash: hash(h)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Which chain a backend talks to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    /// `local` or `stratos`.
    pub kind: String,
    /// The EVM chain id (`None` for the local ledger).
    pub chain_id: Option<u64>,
    /// Where it is: the ledger's folder, or the RPC URL.
    pub location: String,
}

/// One epoch's anchor on its way to the chain. The node records it in its
/// metadata group before [`Chain::send`], so any node can send it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    pub payload: AnchorPayload,
    /// What the backend needs to send it again exactly (for an EVM chain: the
    /// signed raw transaction, its hash, nonce and fees); opaque to the node.
    pub detail: serde_json::Value,
}

/// Where a sent submission stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmissionStatus {
    /// Sent, not yet included.
    Pending,
    /// On the chain, at `reference`.
    Included(ChainRef),
    /// The chain no longer knows it (evicted from the mempool, never mined):
    /// prepare a replacement with [`Chain::prepare`]`(payload, Some(this))`.
    Dropped,
    /// Included but failed (a reverted transaction): the reason.
    Failed(String),
}

/// An anchor read back from the chain, checked: included, successful, on the
/// configured chain, its payload decoded from what the chain holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRecord {
    pub reference: ChainRef,
    pub payload: AnchorPayload,
    /// Who put it there: the EVM sender address (`0x…`), or the ledger
    /// block's signing key (hex), so an auditor can check it is the cluster's.
    pub submitter: String,
    /// The block that includes it (ledger height or EVM block number).
    pub block: u64,
    /// When that block was made, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A chain that records anchors. Blocking: backends that speak an async
/// protocol run their own runtime inside.
pub trait Chain: Send + Sync {
    fn info(&self) -> ChainInfo;

    /// Builds (for an EVM chain: signs) the submission of `payload` without
    /// sending it. `replacing` is an earlier submission of the same epoch that
    /// was dropped: the new one must exclude it (on an EVM chain, the same
    /// nonce), so at most one of them is ever included.
    fn prepare(
        &self,
        payload: &AnchorPayload,
        replacing: Option<&Submission>,
    ) -> Result<Submission, ChainError>;

    /// Sends a prepared submission. Sending the same submission again is
    /// harmless; a chain that already holds an anchor of that cluster and
    /// epoch with another payload refuses it with
    /// [`ChainError::ConflictingAnchor`].
    fn send(&self, submission: &Submission) -> Result<(), ChainError>;

    /// Where a sent submission stands.
    fn status(&self, submission: &Submission) -> Result<SubmissionStatus, ChainError>;

    /// Reads an anchor back by its reference and checks it (see [`AnchorRecord`]).
    fn read_anchor(&self, reference: &ChainRef) -> Result<AnchorRecord, ChainError>;

    /// The anchor of the latest epoch this chain holds for `cluster_id`
    /// (`None`: none yet), checked as [`Chain::read_anchor`] checks it. What
    /// a client asks to refuse reads proved to an older epoch. A backend
    /// that cannot search its anchors says so with `Unavailable`.
    fn latest_anchor(&self, cluster_id: &[u8; 32]) -> Result<Option<AnchorRecord>, ChainError> {
        let _ = cluster_id;
        Err(ChainError::Unavailable(format!(
            "the {} chain cannot find the latest anchor",
            self.info().kind
        )))
    }

    // --- Funds (Proof of Traffic). The defaults refuse: a backend that
    // holds STOS overrides them. ---

    /// The address that holds the cluster's STOS on this chain: deposits are
    /// transfers to it, payouts come from it. `None` on the local ledger,
    /// where a deposit is a signed entry and no STOS moves.
    fn settlement_address(&self) -> Option<Address> {
        None
    }

    /// Records a deposit the account authorized with its signature (the
    /// local ledger's kind of deposit). An EVM chain refuses it: there a
    /// deposit is the account's own transfer ([`Chain::transfer`]).
    fn record_deposit(&self, deposit: &DepositAuthorization) -> Result<DepositRecord, ChainError> {
        let _ = deposit;
        Err(self.no_funds("record a signed deposit"))
    }

    /// Reads a deposit back by its reference and checks it (see
    /// [`DepositRecord`]), refusing one that is not for `cluster_id`.
    fn read_deposit(
        &self,
        cluster_id: &[u8; 32],
        reference: &ChainRef,
    ) -> Result<DepositRecord, ChainError> {
        let _ = (cluster_id, reference);
        Err(self.no_funds("read deposits"))
    }

    /// Every deposit of `cluster_id` recorded at or after `from_block`: how a
    /// node credits a deposit whose crediting was cut short by a crash.
    fn deposits_since(
        &self,
        cluster_id: &[u8; 32],
        from_block: u64,
    ) -> Result<Vec<DepositRecord>, ChainError> {
        let _ = (cluster_id, from_block);
        Err(self.no_funds("list deposits"))
    }

    /// Records an epoch's settlement, once: the same entry again returns
    /// its reference; another entry for a recorded epoch is refused.
    fn record_settlement(&self, entry: &SettlementEntry) -> Result<ChainRef, ChainError> {
        let _ = entry;
        Err(self.no_funds("record settlements"))
    }

    /// The settlement recorded for `cluster_id`'s `epoch`, if any.
    fn read_settlement(
        &self,
        cluster_id: &[u8; 32],
        epoch: u64,
    ) -> Result<Option<(ChainRef, SettlementEntry)>, ChainError> {
        let _ = (cluster_id, epoch);
        Err(self.no_funds("read settlements"))
    }

    /// The settlement entry recorded at `reference`.
    fn read_settlement_at(&self, reference: &ChainRef) -> Result<SettlementEntry, ChainError> {
        let _ = reference;
        Err(self.no_funds("read settlements"))
    }

    /// Prepares the transaction that records `entry`, without sending it
    /// (the cluster records it first, as it does an anchor's); `replacing`
    /// a dropped one takes its place. The default, for a backend that
    /// appends at once (the local ledger), has nothing to prepare.
    fn prepare_settlement(
        &self,
        entry: &SettlementEntry,
        replacing: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ChainError> {
        let _ = (entry, replacing);
        Ok(serde_json::json!({ "backend": self.info().kind }))
    }

    /// Sends a prepared settlement (again: harmless).
    fn send_settlement(
        &self,
        entry: &SettlementEntry,
        detail: &serde_json::Value,
    ) -> Result<(), ChainError> {
        let _ = detail;
        self.record_settlement(entry).map(|_| ())
    }

    /// Where a prepared settlement stands.
    fn settlement_status(
        &self,
        entry: &SettlementEntry,
        detail: &serde_json::Value,
    ) -> Result<SubmissionStatus, ChainError> {
        let _ = detail;
        Ok(
            match self.read_settlement(&entry.cluster_id, entry.epoch)? {
                Some((reference, held)) if held.report_hash == entry.report_hash => {
                    SubmissionStatus::Included(reference)
                }
                Some((reference, _)) => SubmissionStatus::Failed(format!(
                    "epoch {} is settled with another report at {reference}",
                    entry.epoch
                )),
                None => SubmissionStatus::Dropped,
            },
        )
    }

    /// Sends `amount` wei from this backend's key to `to` and waits for its
    /// inclusion: an account's deposit to the settlement address.
    fn transfer(&self, to: Address, amount: u128) -> Result<ChainRef, ChainError> {
        let _ = (to, amount);
        Err(self.no_funds("transfer STOS"))
    }

    /// Builds a payout without sending it, as [`Chain::prepare`] does for
    /// anchors; `replacing` a dropped one excludes it.
    fn prepare_payout(
        &self,
        payout: &Payout,
        replacing: Option<&Payout>,
    ) -> Result<Payout, ChainError> {
        let _ = (payout, replacing);
        Err(self.no_funds("pay out"))
    }

    /// Sends a prepared payout (again: harmless).
    fn send_payout(&self, payout: &Payout) -> Result<(), ChainError> {
        let _ = payout;
        Err(self.no_funds("pay out"))
    }

    /// Where a sent payout stands.
    fn payout_status(&self, payout: &Payout) -> Result<SubmissionStatus, ChainError> {
        let _ = payout;
        Err(self.no_funds("pay out"))
    }

    /// The refusal of a fund operation this backend does not do.
    fn no_funds(&self, what: &str) -> ChainError {
        ChainError::Unavailable(format!("the {} chain cannot {what}", self.info().kind))
    }

    /// Polls [`Chain::status`] until the submission is no longer pending or
    /// `timeout` has passed (then it is still `Pending`).
    fn wait_included(
        &self,
        submission: &Submission,
        timeout: Duration,
    ) -> Result<SubmissionStatus, ChainError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(submission)?;
            if status != SubmissionStatus::Pending || Instant::now() >= deadline {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_print_and_parse_back() {
        for r in [
            ChainRef::Ledger {
                height: 42,
                block_hash: [0xab; 32],
            },
            ChainRef::Evm {
                chain_id: 2048,
                tx_hash: [0x01; 32],
            },
        ] {
            assert_eq!(r.to_string().parse::<ChainRef>().unwrap(), r);
        }
        for bad in ["", "ledger:x:00", "evm:2048:0x12", "btc:1:00", "ledger:1"] {
            assert!(bad.parse::<ChainRef>().is_err(), "{bad}");
        }
    }
}
