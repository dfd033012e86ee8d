//! Anchor marks: the (epoch, raft index, root) a shard records when its raft
//! group applies an [`crate::Op::AnchorMark`], so that every replica holds the
//! same leaf for the epoch's cluster root (`docs/merkle.md`, "Anchor marks").
//!
//! A mark is stored under `0x00 'm' epoch(u64 be)` as `raft_index(u64 be) ‖
//! root`, in the same batch as the entry that made it. The last
//! [`MARK_HISTORY`] epochs are kept (in storage and in memory), so a metadata
//! leader that asks late still finds the mark of its epoch.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use bincode::{Decode, Encode};
use stratosdb_proof::hash::to_hex;
use stratosdb_proof::{Hash, Proof, Value};

use crate::keys::{self, APPLIED_INDEX_KEY, MARK_PREFIX};
use crate::storage::KvTree;
use crate::{EngineError, Result};

/// How many epochs' marks a shard keeps; older ones are deleted as new ones
/// arrive (the same way on every replica).
pub const MARK_HISTORY: usize = 1024;

/// What a shard recorded for an epoch: the raft index of the mark's entry and
/// the shard's root after every entry before it. On every replica of a shard
/// the mark of an epoch is the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct AnchorMark {
    pub epoch: u64,
    /// The raft index of the mark's own entry (for a shard written without
    /// raft, its applied index when the mark was made).
    pub raft_index: u64,
    /// The shard root as of the mark: a commitment to every document then.
    pub root: Hash,
}

impl AnchorMark {
    /// The stored value: `raft_index(u64 be) ‖ root`.
    pub(crate) fn stored(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.extend_from_slice(&self.raft_index.to_be_bytes());
        out.extend_from_slice(&self.root);
        out
    }

    fn from_stored(key: &[u8], value: &[u8]) -> Result<AnchorMark> {
        let corrupt = || EngineError::Corruption("anchor mark record".into());
        let epoch = key
            .get(MARK_PREFIX.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(corrupt)?;
        let (index, root) = value.split_at_checked(8).ok_or_else(corrupt)?;
        Ok(AnchorMark {
            epoch: u64::from_be_bytes(epoch),
            raft_index: u64::from_be_bytes(index.try_into().map_err(|_| corrupt())?),
            root: root.try_into().map_err(|_| corrupt())?,
        })
    }
}

/// A key changed since a mark, and its document hash at the mark (`None`:
/// absent then).
pub(crate) type MarkChange = (Hash, Option<Hash>);

/// The records of the changes since the mark of one epoch, as stored
/// (`docs/merkle.md`, "Restart").
pub(crate) struct StoredChanges {
    /// Every record, from all three places.
    pub all: Vec<MarkChange>,
    /// Those of them open in the applied index's value.
    pub open: Vec<MarkChange>,
}

/// The keys changed since the mark of `epoch`, with their document hash at
/// the mark (`None`: absent then), from the three places records are stored:
/// one key per record (the first layout), packs, and the open records in the
/// applied index's value (when they are that epoch's). A key recorded twice
/// is corruption.
pub(crate) fn load_mark_changes<T: KvTree>(tree: &T, epoch: u64) -> Result<StoredChanges> {
    let mut all = Vec::new();
    let prefix = keys::mark_change_prefix(epoch);
    for item in tree.range(
        Bound::Included(prefix.clone()),
        keys::successor_bound(&prefix),
        false,
    ) {
        let (key, value) = item?;
        all.push(decode_mark_change(&prefix, key.as_ref(), value.as_ref())?);
    }
    let prefix = keys::mark_pack_prefix(epoch);
    for item in tree.range(
        Bound::Included(prefix.clone()),
        keys::successor_bound(&prefix),
        false,
    ) {
        let (_, value) = item?;
        all.extend(decode_records(value.as_ref())?);
    }
    let open = match tree.get(APPLIED_INDEX_KEY)? {
        Some(value) => match open_records(value.as_ref())? {
            Some((at, open)) if at == epoch => open,
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    all.extend_from_slice(&open);
    let mut seen = HashSet::with_capacity(all.len());
    if let Some((key, _)) = all.iter().find(|(key, _)| !seen.insert(*key)) {
        return Err(EngineError::Corruption(format!(
            "key hash {} is recorded twice as changed since the anchor mark of epoch {epoch}",
            to_hex(key)
        )));
    }
    Ok(StoredChanges { all, open })
}

/// A change record of the first layout under `prefix` (its mark's): the key
/// hash and the document hash at the mark.
fn decode_mark_change(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<MarkChange> {
    let corrupt = || EngineError::Corruption("record of a change since an anchor mark".into());
    let key_hash: Hash = key
        .get(prefix.len()..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let doc = match value {
        [] => None,
        hash => Some(hash.try_into().map_err(|_| corrupt())?),
    };
    Ok((key_hash, doc))
}

/// Bytes of one packed or open record: the key hash, 1 if the key was
/// present at the mark (0 if absent), and its document hash then (zeros
/// when absent).
pub(crate) const RECORD_BYTES: usize = 65;

/// Appends the records of `changes` to `out`.
pub(crate) fn encode_records(changes: &[MarkChange], out: &mut Vec<u8>) {
    out.reserve(changes.len() * RECORD_BYTES);
    for (key, doc) in changes {
        out.extend_from_slice(key);
        out.push(u8::from(doc.is_some()));
        out.extend_from_slice(doc.as_ref().unwrap_or(&[0; 32]));
    }
}

fn decode_records(bytes: &[u8]) -> Result<Vec<MarkChange>> {
    let corrupt =
        || EngineError::Corruption("packed records of changes since an anchor mark".into());
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(corrupt());
    }
    bytes
        .chunks_exact(RECORD_BYTES)
        .map(|record| {
            let (key, rest) = record.split_at(32);
            let (flag, doc) = rest.split_at(1);
            let key: Hash = key.try_into().map_err(|_| corrupt())?;
            let doc: Hash = doc.try_into().map_err(|_| corrupt())?;
            match flag {
                [0] if doc == [0; 32] => Ok((key, None)),
                [1] => Ok((key, Some(doc))),
                _ => Err(corrupt()),
            }
        })
        .collect()
}

/// The applied index's stored value: `index(u64 be)`, then, while records
/// of the changes since the mark of `epoch` are open (not packed into a key
/// of their own yet), `epoch(u64 be) ‖ records`.
pub(crate) fn applied_value(index: u64, open: Option<(u64, &[MarkChange])>) -> Vec<u8> {
    let records = open.map_or(0, |(_, r)| r.len());
    let mut out = Vec::with_capacity(16 + records * RECORD_BYTES);
    out.extend_from_slice(&index.to_be_bytes());
    if let Some((epoch, records)) = open {
        out.extend_from_slice(&epoch.to_be_bytes());
        encode_records(records, &mut out);
    }
    out
}

/// The applied index in its stored value ([`applied_value`]).
pub(crate) fn applied_index_of(value: &[u8]) -> Result<u64> {
    value
        .get(..8)
        .and_then(|index| index.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| EngineError::Corruption("applied index".into()))
}

/// The open records in an applied index's stored value, with their epoch.
fn open_records(value: &[u8]) -> Result<Option<(u64, Vec<MarkChange>)>> {
    let corrupt = || EngineError::Corruption("applied index".into());
    match value.len() {
        8 => Ok(None),
        n if n >= 16 => {
            let epoch = value[8..16].try_into().map_err(|_| corrupt())?;
            Ok(Some((
                u64::from_be_bytes(epoch),
                decode_records(&value[16..])?,
            )))
        }
        _ => Err(corrupt()),
    }
}

/// A proof against the latest anchor mark's root ([`crate::Shard::prove_anchored`]):
/// the document (or its absence) is the same now as at the mark.
#[derive(Clone, Debug, PartialEq)]
pub struct AnchoredProof {
    pub mark: AnchorMark,
    pub proof: Proof,
    /// The document as stored, which is also the document as of the mark.
    pub doc: Option<Value>,
}

/// The marks a shard keeps, by epoch (at most [`MARK_HISTORY`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Marks {
    by_epoch: BTreeMap<u64, AnchorMark>,
}

impl Marks {
    /// The marks stored in a shard's tree.
    pub fn load<T: KvTree>(tree: &T) -> Result<Marks> {
        let mut by_epoch = BTreeMap::new();
        for item in tree.range(
            Bound::Included(MARK_PREFIX.to_vec()),
            keys::successor_bound(MARK_PREFIX),
            false,
        ) {
            let (key, value) = item?;
            let mark = AnchorMark::from_stored(key.as_ref(), value.as_ref())?;
            by_epoch.insert(mark.epoch, mark);
        }
        Ok(Marks { by_epoch })
    }

    pub fn get(&self, epoch: u64) -> Option<AnchorMark> {
        self.by_epoch.get(&epoch).copied()
    }

    /// The mark of the newest epoch before the latest's.
    pub fn before_latest(&self) -> Option<AnchorMark> {
        self.by_epoch.values().rev().nth(1).copied()
    }

    pub fn latest(&self) -> Option<AnchorMark> {
        self.by_epoch.last_key_value().map(|(_, m)| *m)
    }

    pub fn len(&self) -> usize {
        self.by_epoch.len()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &AnchorMark> {
        self.by_epoch.values()
    }

    /// Adds a mark, dropping the oldest beyond [`MARK_HISTORY`].
    pub fn insert(&mut self, mark: AnchorMark) {
        self.by_epoch.insert(mark.epoch, mark);
        while self.by_epoch.len() > MARK_HISTORY {
            self.by_epoch.pop_first();
        }
    }
}
