//! The epochs' records in the metadata group (group 0): one document per
//! epoch in the `_anchors` collection, `_id` the epoch number in 20 digits
//! (so `_id` order is epoch order), its `record` field the JSON of an
//! [`EpochRecord`]. Every change is guarded the way the cluster map's is: an
//! [`Op::Expect`] on the hash of the version read, checked at apply time on
//! every replica, so of two leaders acting on one epoch only one change
//! applies. A new epoch is an insert (refused if the epoch exists) guarded by
//! the previous epoch's final version: epoch numbers are consecutive and each
//! is started once.

use std::ops::Bound;

use serde::{Deserialize, Serialize};
use stratosdb_chain_anchor::{AnchorPayload, ChainRef, LeafProof, ShardLeaf, Submission};
use stratosdb_engine::proof::hash::doc_hash;
use stratosdb_engine::{Command, Hash, Op, Shard, Value};
use stratosdb_verifier::AnchorProof;

use std::time::Duration;

use stratosdb_replication::{METADATA_GROUP, metadata};

use super::node::{ClusterNode, NodeError};
use crate::api::{AnchorInfo, AnchorsQuery, AnchorsReply, ChainBody, LeafInfo};

/// How long `GET /v1/anchors` waits for a read index of group 0.
const READ_WAIT: Duration = Duration::from_secs(5);

/// The collection of group 0 that holds the epochs.
pub const ANCHORS_COLLECTION: &str = "_anchors";

/// Where an epoch stands. `Anchored`, `Failed` and `Skipped` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochStatus {
    /// Started: its shard marks are being collected (no payload yet), or it
    /// is sealed (leaves and payload recorded) and not yet prepared.
    Sealing,
    /// A submission is recorded and may have been sent.
    Submitted,
    Anchored,
    /// The chain refused it, or it failed on the chain.
    Failed,
    /// It could not be sealed (a shard without quorum).
    Skipped,
}

impl EpochStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EpochStatus::Anchored | EpochStatus::Failed | EpochStatus::Skipped
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            EpochStatus::Sealing => "sealing",
            EpochStatus::Submitted => "submitted",
            EpochStatus::Anchored => "anchored",
            EpochStatus::Failed => "failed",
            EpochStatus::Skipped => "skipped",
        }
    }
}

/// One epoch as the metadata group records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub status: EpochStatus,
    /// The hash of the last anchored epoch's chain reference before this
    /// one (zeros if none): the payload's `previous`.
    #[serde(with = "stratosdb_verifier::hex_serde::hash")]
    pub previous: Hash,
    /// When it was started, in milliseconds since the Unix epoch (only to
    /// pace epochs; nothing depends on clocks agreeing).
    pub started_ms: u64,
    /// The shard leaves in canonical order, once sealed.
    pub leaves: Vec<ShardLeaf>,
    /// What goes on the chain, once sealed.
    pub payload: Option<AnchorPayload>,
    /// The submission recorded before it is sent (the one to send again).
    pub submission: Option<Submission>,
    pub reference: Option<ChainRef>,
    pub reason: Option<String>,
}

impl EpochRecord {
    /// Epoch `epoch`, started after `last` (the newest record, final).
    pub fn start(epoch: u64, last: Option<&EpochRecord>, started_ms: u64) -> EpochRecord {
        let previous = match last {
            None => [0; 32],
            Some(r) => match &r.reference {
                Some(reference) if r.status == EpochStatus::Anchored => reference.hash(),
                _ => r.previous,
            },
        };
        EpochRecord {
            epoch,
            status: EpochStatus::Sealing,
            previous,
            started_ms,
            leaves: Vec::new(),
            payload: None,
            submission: None,
            reference: None,
            reason: None,
        }
    }

    /// The record ended with `status` for `reason`.
    pub fn ended(&self, status: EpochStatus, reason: String) -> EpochRecord {
        EpochRecord {
            status,
            reason: Some(reason),
            ..self.clone()
        }
    }

    /// How `GET /v1/anchors` shows it.
    pub fn info(&self) -> AnchorInfo {
        AnchorInfo {
            epoch: self.epoch,
            status: self.status.name().to_string(),
            cluster_root: self.payload.as_ref().map(|p| hex::encode(p.cluster_root)),
            reference: self.reference.map(|r| r.to_string()),
            previous: hex::encode(self.previous),
            reason: self.reason.clone(),
            leaves: self
                .leaves
                .iter()
                .map(|l| LeafInfo {
                    collection: l.collection.clone(),
                    shard: l.shard,
                    raft_index: l.raft_index,
                    root: hex::encode(l.root),
                })
                .collect(),
        }
    }
}

/// A record as read, with the hash of its document (the precondition of
/// the next change).
pub type Read = (EpochRecord, Hash);

fn doc_id(epoch: u64) -> String {
    format!("{epoch:020}")
}

pub fn create_collection() -> Command {
    Command {
        ops: vec![Op::CreateCollection {
            name: ANCHORS_COLLECTION.into(),
        }],
    }
}

pub fn has_collection(shard: &Shard) -> bool {
    shard.collections().iter().any(|c| c == ANCHORS_COLLECTION)
}

fn document(record: &EpochRecord) -> Result<Value, NodeError> {
    let text = serde_json::to_string(record)
        .map_err(|e| NodeError::new("internal", format!("encoding epoch record: {e}"), false))?;
    let mut doc = std::collections::BTreeMap::new();
    doc.insert("_id".to_string(), Value::String(doc_id(record.epoch)));
    doc.insert("record".to_string(), Value::String(text));
    Ok(Value::Object(doc))
}

fn decode(doc: &Value) -> Result<Read, NodeError> {
    let corrupt = |why: String| NodeError::new("corruption", format!("epoch record: {why}"), false);
    let text = match doc.as_object().and_then(|o| o.get("record")) {
        Some(Value::String(s)) => s,
        _ => return Err(corrupt("no record field".into())),
    };
    let record = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    Ok((record, doc_hash(doc)))
}

/// The command that starts `record`'s epoch after `last`, the newest record
/// as read (`None`: the first epoch).
pub fn start_command(last: Option<&Read>, record: &EpochRecord) -> Result<Command, NodeError> {
    let mut ops = Vec::new();
    if let Some((prev, hash)) = last {
        ops.push(Op::Expect {
            collection: ANCHORS_COLLECTION.into(),
            id: doc_id(prev.epoch),
            doc_hash: Some(*hash),
        });
    }
    ops.push(Op::Insert {
        collection: ANCHORS_COLLECTION.into(),
        doc: document(record)?,
    });
    Ok(Command { ops })
}

/// The command that replaces the record read with hash `read` by `record`.
pub fn update_command(read: Hash, record: &EpochRecord) -> Result<Command, NodeError> {
    Ok(Command {
        ops: vec![
            Op::Expect {
                collection: ANCHORS_COLLECTION.into(),
                id: doc_id(record.epoch),
                doc_hash: Some(read),
            },
            Op::Upsert {
                collection: ANCHORS_COLLECTION.into(),
                doc: document(record)?,
            },
        ],
    })
}

/// One epoch's record.
pub fn read(shard: &Shard, epoch: u64) -> Result<Option<Read>, NodeError> {
    if !has_collection(shard) {
        return Ok(None);
    }
    shard
        .get(ANCHORS_COLLECTION, &doc_id(epoch))?
        .map(|doc| decode(&doc))
        .transpose()
}

/// Up to `limit` records, newest first.
pub fn newest(shard: &Shard, limit: usize) -> Result<Vec<Read>, NodeError> {
    if !has_collection(shard) || limit == 0 {
        return Ok(Vec::new());
    }
    let docs = shard.scan(ANCHORS_COLLECTION, Bound::Unbounded, Bound::Unbounded, true)?;
    let mut out = Vec::new();
    for item in docs.take(limit) {
        let (_, doc) = item?;
        out.push(decode(&doc)?);
    }
    Ok(out)
}

/// The anchored epochs as this node's replica of the metadata group knows
/// them, for proofs: a shard leaf is anchored at an epoch when that epoch's
/// record is `anchored` and lists exactly this leaf; its anchor proof is
/// built from the recorded leaves. A replica of group 0 that is behind only
/// knows fewer epochs: the proofs it cannot anchor stay unanchored.
pub struct RecordedAnchors {
    pub meta: Shard,
}

impl stratosdb_query::AnchorLookup for RecordedAnchors {
    fn anchor_of(&self, leaf: &ShardLeaf, epoch: u64) -> Option<AnchorProof> {
        let (record, _) = read(&self.meta, epoch).ok()??;
        let (EpochStatus::Anchored, Some(payload), Some(reference)) =
            (record.status, record.payload.as_ref(), record.reference)
        else {
            return None;
        };
        let index = record.leaves.iter().position(|l| l == leaf)?;
        let leaf_proof = LeafProof::new(&record.leaves, index).ok()?;
        Some(AnchorProof {
            epoch,
            cluster_root: payload.cluster_root,
            reference: reference.to_string(),
            leaf_proof,
        })
    }
}

/// Most epochs `GET /v1/anchors` lists at once.
pub const MAX_LIST: u64 = 1000;
/// How many `GET /v1/anchors` lists without `?limit`.
pub const DEFAULT_LIST: u64 = 20;

impl ClusterNode {
    /// `GET /v1/anchors`: the epochs' records as of a read index of group 0.
    pub fn anchors(&self, query: &AnchorsQuery) -> Result<AnchorsReply, NodeError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIST);
        if limit > MAX_LIST {
            return Err(NodeError::new(
                "invalid_request",
                format!("limit {limit} is above {MAX_LIST}"),
                false,
            ));
        }
        self.raft
            .read_index(METADATA_GROUP, READ_WAIT)
            .wait(READ_WAIT)?;
        let meta = self.raft.shard(METADATA_GROUP)?;
        let records = match query.epoch {
            Some(epoch) => match read(&meta, epoch)? {
                Some(r) => vec![r],
                None => {
                    return Err(NodeError::new(
                        "epoch_not_found",
                        format!("no epoch {epoch} is recorded"),
                        false,
                    ));
                }
            },
            None => newest(&meta, usize::try_from(limit).unwrap_or(usize::MAX))?,
        };
        Ok(AnchorsReply {
            cluster_id: metadata::read_cluster_id(&meta)?.map(hex::encode),
            chain: self.anchor_config().map(|c| {
                let info = c.chain.info();
                ChainBody {
                    kind: info.kind,
                    chain_id: info.chain_id,
                    location: info.location,
                }
            }),
            anchors: records.iter().map(|(r, _)| r.info()).collect(),
        })
    }

    /// The newest anchored epoch among the last [`MAX_LIST`] (0: none), from
    /// this node's replica of group 0.
    pub fn last_anchored_epoch(&self) -> u64 {
        let Ok(meta) = self.raft.shard(METADATA_GROUP) else {
            return 0;
        };
        newest(&meta, MAX_LIST as usize)
            .unwrap_or_default()
            .iter()
            .find(|(r, _)| r.status == EpochStatus::Anchored)
            .map_or(0, |(r, _)| r.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb_engine::{ApplyOutcome, Engine};

    fn apply(shard: &Shard, index: u64, cmd: &Command) -> bool {
        matches!(
            shard.apply(index, &cmd.encode()).unwrap(),
            ApplyOutcome::Applied(_)
        )
    }

    #[test]
    fn epochs_start_once_in_order_and_changes_need_the_version_read() {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        assert!(newest(&shard, 5).unwrap().is_empty());
        assert!(apply(&shard, 1, &create_collection()));
        let first = EpochRecord::start(1, None, 10);
        assert!(apply(&shard, 2, &start_command(None, &first).unwrap()));
        // A second start of epoch 1 (another leader) is refused.
        let again = EpochRecord::start(1, None, 11);
        assert!(!apply(&shard, 3, &start_command(None, &again).unwrap()));
        let (read1, hash1) = read(&shard, 1).unwrap().unwrap();
        assert_eq!(read1, first);
        let reference = ChainRef::Ledger {
            height: 1,
            block_hash: [5; 32],
        };
        let mut anchored = read1.clone();
        anchored.status = EpochStatus::Anchored;
        anchored.reference = Some(reference);
        assert!(apply(&shard, 4, &update_command(hash1, &anchored).unwrap()));
        // A change computed from the old version lost the race.
        let stale = read1.ended(EpochStatus::Failed, "x".into());
        assert!(!apply(&shard, 5, &update_command(hash1, &stale).unwrap()));
        // Epoch 2 starts only after the final version of epoch 1.
        let last = read(&shard, 1).unwrap().unwrap();
        let second = EpochRecord::start(2, Some(&last.0), 20);
        assert_eq!(second.previous, [5; 32]);
        assert!(!apply(
            &shard,
            6,
            &start_command(Some(&(read1.clone(), hash1)), &second).unwrap()
        ));
        assert!(apply(
            &shard,
            7,
            &start_command(Some(&last), &second).unwrap()
        ));
        let listed: Vec<u64> = newest(&shard, 5)
            .unwrap()
            .iter()
            .map(|(r, _)| r.epoch)
            .collect();
        assert_eq!(listed, [2, 1]);
        // A failed epoch passes the last anchored reference on.
        let failed = second.ended(EpochStatus::Failed, "refused".into());
        assert_eq!(EpochRecord::start(3, Some(&failed), 30).previous, [5; 32]);
        assert_eq!(failed.info().status, "failed");
    }
}
