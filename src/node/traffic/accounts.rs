//! The traffic ledger: accounts, prices and credited deposits as documents
//! of the `_traffic` collection in group 0 (the metadata group), changed the
//! way the cluster map is: read a document, compute the next one, propose it
//! guarded by an `Op::Expect` on the hash read. Two nodes changing one
//! account at once cannot both apply on top of the same state; the loser
//! reads again.
//!
//! Documents: `prices` (written once, at bootstrap), `account:0x…` (an
//! [`AccountState`] as JSON), `credit:<chain reference>` (a deposit that was
//! credited: inserting it again fails, so a deposit is credited once).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stratosdb_engine::proof::hash::doc_hash;
use stratosdb_engine::{Command, Hash, Op, Shard, Value};
use stratosdb_replication::NodeId;
use stratosdb_verifier::traffic::{Address, Prices, wei};

/// The collection in group 0 that holds the traffic ledger.
pub const TRAFFIC_COLLECTION: &str = "_traffic";
const PRICES_ID: &str = "prices";

/// One account's funds, in wei. What it can still spend is
/// `deposited − withdrawn − spent − Σ reservations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    #[serde(with = "wei::string")]
    pub deposited: u128,
    #[serde(with = "wei::string")]
    pub withdrawn: u128,
    /// Settled fees.
    #[serde(with = "wei::string")]
    pub spent: u128,
    /// A node account's settled income.
    #[serde(with = "wei::string")]
    pub earned: u128,
    /// What nodes have set aside to serve this payer, per node and epoch
    /// (returned when the epoch is settled).
    #[serde(default)]
    pub reservations: Vec<Reservation>,
}

/// Wei a node holds to serve one payer in one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub node: NodeId,
    pub epoch: u64,
    #[serde(with = "wei::string")]
    pub amount: u128,
}

impl AccountState {
    pub fn reserved(&self) -> u128 {
        self.reservations
            .iter()
            .fold(0u128, |sum, r| sum.saturating_add(r.amount))
    }

    /// What is left to reserve or withdraw.
    pub fn available(&self) -> u128 {
        self.deposited
            .saturating_add(self.earned)
            .saturating_sub(self.withdrawn)
            .saturating_sub(self.spent)
            .saturating_sub(self.reserved())
    }

    /// Adds `amount` to `node`'s reservation for `epoch`.
    pub fn reserve(&mut self, node: NodeId, epoch: u64, amount: u128) {
        match self
            .reservations
            .iter_mut()
            .find(|r| r.node == node && r.epoch == epoch)
        {
            Some(r) => r.amount = r.amount.saturating_add(amount),
            None => self.reservations.push(Reservation {
                node,
                epoch,
                amount,
            }),
        }
    }
}

impl AccountState {
    /// Returns up to `amount` of `node`'s reservation for `epoch`.
    pub fn release(&mut self, node: NodeId, epoch: u64, amount: u128) {
        if let Some(r) = self
            .reservations
            .iter_mut()
            .find(|r| r.node == node && r.epoch == epoch)
        {
            r.amount = r.amount.saturating_sub(amount);
        }
        self.reservations.retain(|r| r.amount > 0);
    }
}

/// An account as read from group 0, with the hash of its document (`None`:
/// no document yet), the precondition of its next change.
pub struct ReadAccount {
    pub state: AccountState,
    pub hash: Option<Hash>,
}

fn account_id(address: &Address) -> String {
    format!("account:{}", address.to_lower_hex())
}

fn has_collection(shard: &Shard) -> bool {
    shard.collections().iter().any(|c| c == TRAFFIC_COLLECTION)
}

/// Failures reading the ledger: the replica's store, or a document that does
/// not decode (a bug or a damaged replica).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("reading the traffic ledger: {0}")]
    Store(#[from] stratosdb_engine::EngineError),
    #[error("the traffic ledger is damaged: {0}")]
    Corrupt(String),
}

impl From<LedgerError> for crate::node::cluster::NodeError {
    fn from(e: LedgerError) -> Self {
        let code = match e {
            LedgerError::Store(_) => "storage",
            LedgerError::Corrupt(_) => "corruption",
        };
        crate::node::cluster::NodeError::new(code, e.to_string(), false)
    }
}

/// A document of the traffic ledger: `{"_id": id, field: value as JSON}`.
pub fn json_doc<T: Serialize>(id: String, field: &str, value: &T) -> Value {
    let mut doc = BTreeMap::new();
    doc.insert("_id".to_string(), Value::String(id));
    // Plain data always encodes.
    doc.insert(
        field.to_string(),
        Value::String(serde_json::to_string(value).unwrap_or_default()),
    );
    Value::Object(doc)
}

/// The value [`json_doc`] put in `field`, and the document's hash (the
/// precondition of its next change).
pub fn from_json_doc<T: DeserializeOwned>(
    doc: &Value,
    field: &str,
) -> Result<(T, Hash), LedgerError> {
    let id = match doc.as_object().and_then(|o| o.get("_id")) {
        Some(Value::String(id)) => id.as_str(),
        _ => "a document",
    };
    let text = match doc.as_object().and_then(|o| o.get(field)) {
        Some(Value::String(s)) => s,
        _ => return Err(LedgerError::Corrupt(format!("{id} has no {field}"))),
    };
    let value =
        serde_json::from_str(text).map_err(|e| LedgerError::Corrupt(format!("{id}: {e}")))?;
    Ok((value, doc_hash(doc)))
}

/// Up to `limit` documents whose `_id` starts with `prefix` (which ends
/// with `:`), from `_id` `from` on, in `_id` order (`reverse`: from the
/// last back).
pub fn scan_prefix(
    shard: &Shard,
    prefix: &str,
    from: &str,
    reverse: bool,
    limit: usize,
) -> Result<Vec<(String, Value)>, LedgerError> {
    if !has_collection(shard) {
        return Ok(Vec::new());
    }
    // Every id with the prefix sorts below the prefix with ':' raised to ';'.
    let end = format!("{};", prefix.trim_end_matches(':'));
    let docs = shard.scan(
        TRAFFIC_COLLECTION,
        std::ops::Bound::Included(from.max(prefix)),
        std::ops::Bound::Excluded(end.as_str()),
        reverse,
    )?;
    Ok(docs.take(limit).collect::<Result<Vec<_>, _>>()?)
}

pub fn read_account(shard: &Shard, address: &Address) -> Result<ReadAccount, LedgerError> {
    if !has_collection(shard) {
        return Ok(ReadAccount {
            state: AccountState::default(),
            hash: None,
        });
    }
    match shard.get(TRAFFIC_COLLECTION, &account_id(address))? {
        None => Ok(ReadAccount {
            state: AccountState::default(),
            hash: None,
        }),
        Some(doc) => {
            let (state, hash) = from_json_doc(&doc, "state")?;
            Ok(ReadAccount {
                state,
                hash: Some(hash),
            })
        }
    }
}

/// Every account holding a reservation of `epoch` or before.
pub fn with_reservations(
    shard: &Shard,
    epoch: u64,
) -> Result<Vec<(Address, ReadAccount)>, LedgerError> {
    let mut out = Vec::new();
    for (id, doc) in scan_prefix(shard, "account:", "account:", false, usize::MAX)? {
        let (state, hash): (AccountState, Hash) = from_json_doc(&doc, "state")?;
        if !state.reservations.iter().any(|r| r.epoch <= epoch) {
            continue;
        }
        let address = id
            .strip_prefix("account:")
            .and_then(|a| a.parse::<Address>().ok())
            .ok_or_else(|| LedgerError::Corrupt(format!("{id} names no address")))?;
        out.push((
            address,
            ReadAccount {
                state,
                hash: Some(hash),
            },
        ));
    }
    Ok(out)
}

fn account_doc(address: &Address, state: &AccountState) -> Value {
    json_doc(account_id(address), "state", state)
}

/// The ops that replace the account read as `read` by `state`.
pub fn write_account(address: &Address, read: &ReadAccount, state: &AccountState) -> Vec<Op> {
    vec![
        Op::Expect {
            collection: TRAFFIC_COLLECTION.into(),
            id: account_id(address),
            doc_hash: read.hash,
        },
        Op::Upsert {
            collection: TRAFFIC_COLLECTION.into(),
            doc: account_doc(address, state),
        },
    ]
}

/// The op that records a deposit as credited; it fails (duplicate `_id`)
/// when it was credited already.
pub fn mark_credited(reference: &str) -> Op {
    let mut doc = BTreeMap::new();
    doc.insert("_id".to_string(), Value::String(credit_id(reference)));
    Op::Insert {
        collection: TRAFFIC_COLLECTION.into(),
        doc: Value::Object(doc),
    }
}

fn credit_id(reference: &str) -> String {
    format!("credit:{reference}")
}

/// Whether the deposit `reference` was credited.
pub fn is_credited(shard: &Shard, reference: &str) -> Result<bool, LedgerError> {
    Ok(has_collection(shard)
        && shard
            .get(TRAFFIC_COLLECTION, &credit_id(reference))?
            .is_some())
}

/// The cluster's prices (none before bootstrap has applied).
pub fn read_prices(shard: &Shard) -> Result<Option<Prices>, LedgerError> {
    if !has_collection(shard) {
        return Ok(None);
    }
    let Some(doc) = shard.get(TRAFFIC_COLLECTION, PRICES_ID)? else {
        return Ok(None);
    };
    from_json_doc(&doc, "prices").map(|(prices, _)| Some(prices))
}

/// The founding command: the collection, the prices, and on a `--dev`
/// cluster the dev account with `dev_funds` deposited. One command, so it
/// applies whole or not at all.
pub fn bootstrap(prices: &Prices, dev_account: Option<(Address, u128)>) -> Command {
    let mut ops = vec![
        Op::CreateCollection {
            name: TRAFFIC_COLLECTION.into(),
        },
        Op::Insert {
            collection: TRAFFIC_COLLECTION.into(),
            doc: json_doc(PRICES_ID.into(), "prices", prices),
        },
    ];
    if let Some((address, funds)) = dev_account {
        let state = AccountState {
            deposited: funds,
            ..AccountState::default()
        };
        ops.push(Op::Insert {
            collection: TRAFFIC_COLLECTION.into(),
            doc: account_doc(&address, &state),
        });
    }
    Command { ops }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb_engine::{ApplyOutcome, Engine};

    fn apply(shard: &Shard, index: u64, ops: Vec<Op>) -> bool {
        matches!(
            shard.apply(index, &Command { ops }.encode()).unwrap(),
            ApplyOutcome::Applied(_)
        )
    }

    #[test]
    fn bootstrap_then_a_credit_applies_once_and_a_stale_change_is_refused() {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        let dev = Address([0xde; 20]);
        let prices = Prices {
            wei_per_kib: 1000,
            wei_per_document: 10,
        };
        assert!(apply(&shard, 1, bootstrap(&prices, Some((dev, 500))).ops));
        assert_eq!(read_prices(&shard).unwrap(), Some(prices));
        assert_eq!(read_account(&shard, &dev).unwrap().state.deposited, 500);

        let payer = Address([7; 20]);
        let read = read_account(&shard, &payer).unwrap();
        assert_eq!(read.hash, None);
        let mut next = read.state.clone();
        next.deposited += 100;
        let mut ops = vec![mark_credited("ledger:1:ab")];
        ops.extend(write_account(&payer, &read, &next));
        assert!(apply(&shard, 2, ops.clone()));
        assert!(is_credited(&shard, "ledger:1:ab").unwrap());
        // The same credit again: refused whole, the balance unchanged.
        let again = read_account(&shard, &payer).unwrap();
        let mut ops2 = vec![mark_credited("ledger:1:ab")];
        let mut twice = again.state.clone();
        twice.deposited += 100;
        ops2.extend(write_account(&payer, &again, &twice));
        assert!(!apply(&shard, 3, ops2));
        assert_eq!(read_account(&shard, &payer).unwrap().state.deposited, 100);
        // A change computed from the stale read: refused.
        let mut stale = read.state.clone();
        stale.reserve(9, 1, 50);
        assert!(!apply(&shard, 4, write_account(&payer, &read, &stale)));
        let mut fresh = read_account(&shard, &payer).unwrap();
        fresh.state.reserve(9, 1, 50);
        fresh.state.reserve(9, 1, 25);
        assert_eq!(fresh.state.available(), 25);
    }
}
