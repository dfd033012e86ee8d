//! Withdrawals (`docs/traffic.md`, "Withdrawals"): an account takes its
//! unspent funds back. The metadata group debits the account and records
//! the payout in one command, so no wei leaves twice; then the metadata
//! leader pays it on the chain the way it records a settlement: each
//! submission recorded before it is sent, all of them looked for before
//! another is made.

use serde::{Deserialize, Serialize};
use stratosdb_chain_anchor::{ChainError, Payout, SubmissionStatus};
use stratosdb_engine::{Command, Hash, Op, Shard, Value};
use stratosdb_replication::METADATA_GROUP;
use stratosdb_verifier::traffic::{Address, wei};

use super::Traffic;
use super::accounts::{self, AccountState, TRAFFIC_COLLECTION};
use crate::node::backend::{BackendError, ErrorClass};
use crate::node::cluster::NodeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayoutStatus {
    Pending,
    Paid,
}

/// A withdrawal as group 0 records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecord {
    pub id: u64,
    pub account: Address,
    #[serde(with = "wei::string")]
    pub amount: u128,
    pub status: PayoutStatus,
    /// The chain submissions prepared, the newest last.
    #[serde(default)]
    pub submissions: Vec<Payout>,
    /// The chain's reference once paid.
    pub reference: Option<String>,
    pub requested_ms: u64,
}

fn record_id(id: u64) -> String {
    format!("payout:{id:020}")
}

fn record_doc(record: &PayoutRecord) -> Value {
    accounts::json_doc(record_id(record.id), "record", record)
}

/// Every payout record (of `account`, when given), oldest id first.
pub fn list(shard: &Shard, account: Option<&Address>) -> Result<Vec<PayoutRecord>, NodeError> {
    Ok(scan(shard)?
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| account.is_none_or(|a| &r.account == a))
        .collect())
}

fn scan(shard: &Shard) -> Result<Vec<(PayoutRecord, Hash)>, NodeError> {
    accounts::scan_prefix(shard, "payout:", "payout:", false, usize::MAX)?
        .iter()
        .map(|(_, doc)| Ok(accounts::from_json_doc(doc, "record")?))
        .collect()
}

impl Traffic {
    /// Debits `amount` from `account` and records its payout `id`, in one
    /// command; 402 when the account cannot spare it.
    pub fn withdraw(
        &self,
        account: &Address,
        amount: u128,
        id: u64,
    ) -> Result<(PayoutRecord, AccountState), BackendError> {
        if amount == 0 {
            return Err(BackendError::bad_request(
                "invalid_amount",
                "a withdrawal of 0 wei",
            ));
        }
        let record = PayoutRecord {
            id,
            account: *account,
            amount,
            status: PayoutStatus::Pending,
            submissions: Vec::new(),
            reference: None,
            requested_ms: super::auth::now_ms(),
        };
        self.change_account(
            account,
            |_, read| {
                if read.available() < amount {
                    return Err(BackendError::new(
                        ErrorClass::PaymentRequired,
                        "insufficient_funds",
                        format!(
                            "the account {account} has {} wei available ({} reserved for \
                             traffic not yet settled), less than the {amount} wei asked for",
                            read.available(),
                            read.reserved()
                        ),
                    ));
                }
                let mut next = read.clone();
                next.withdrawn = next.withdrawn.saturating_add(amount);
                let insert = Op::Insert {
                    collection: TRAFFIC_COLLECTION.into(),
                    doc: record_doc(&record),
                };
                Ok((next.clone(), vec![insert], (record.clone(), next)))
            },
            || {
                BackendError::new(
                    ErrorClass::Conflict,
                    "duplicate_withdrawal",
                    format!("withdrawal {id} was made already"),
                )
            },
        )
    }

    /// On the metadata leader: moves every pending payout one step on.
    pub(super) fn payout_round(&self) -> Result<(), NodeError> {
        let meta = self.node.metadata(true)?;
        let cluster_id = self
            .cluster_id()
            .map_err(|e| NodeError::new(&e.code, e.message, false))?;
        for (mut record, read) in scan(&meta)? {
            if record.status != PayoutStatus::Pending {
                continue;
            }
            let chain = &self.config.chain;
            let unavailable = |e: ChainError| NodeError::unavailable(format!("paying out: {e}"));
            let Some(latest) = record.submissions.last().cloned() else {
                let payout = Payout {
                    cluster_id,
                    id: record.id,
                    to: record.account,
                    amount: record.amount,
                    detail: serde_json::Value::Null,
                };
                record
                    .submissions
                    .push(chain.prepare_payout(&payout, None).map_err(unavailable)?);
                self.update_payout(read, &record)?;
                continue;
            };
            let mut latest_status = SubmissionStatus::Dropped;
            let mut paid = None;
            for (i, payout) in record.submissions.iter().enumerate().rev() {
                match chain.payout_status(payout).map_err(unavailable)? {
                    SubmissionStatus::Included(reference) => {
                        paid = Some(reference);
                        break;
                    }
                    status if i + 1 == record.submissions.len() => latest_status = status,
                    _ => {}
                }
            }
            if let Some(reference) = paid {
                record.reference = Some(reference.to_string());
                record.status = PayoutStatus::Paid;
                self.update_payout(read, &record)?;
                continue;
            }
            let why = match latest_status {
                SubmissionStatus::Pending | SubmissionStatus::Included(_) => continue,
                SubmissionStatus::Dropped => match chain.send_payout(&latest) {
                    Ok(()) => continue,
                    Err(ChainError::Refused(why)) => why,
                    Err(e) => return Err(unavailable(e)),
                },
                SubmissionStatus::Failed(why) => why,
            };
            tracing::warn!(payout = record.id, %why, "replacing a payout submission");
            record.submissions.push(
                chain
                    .prepare_payout(&latest, Some(&latest))
                    .map_err(unavailable)?,
            );
            self.update_payout(read, &record)?;
        }
        Ok(())
    }

    fn update_payout(&self, read: Hash, record: &PayoutRecord) -> Result<(), NodeError> {
        let ops = vec![
            Op::Expect {
                collection: TRAFFIC_COLLECTION.into(),
                id: record_id(record.id),
                doc_hash: Some(read),
            },
            Op::Upsert {
                collection: TRAFFIC_COLLECTION.into(),
                doc: record_doc(record),
            },
        ];
        self.node
            .propose(METADATA_GROUP, &Command { ops })
            .map(|_| ())
    }
}
