//! Anchor marks: the (epoch, raft index, root) a shard records when its raft
//! group applies an [`crate::Op::AnchorMark`], so that every replica holds the
//! same leaf for the epoch's cluster root (`docs/merkle.md`, "Anchor marks").
//!
//! A mark is stored under `0x00 'm' epoch(u64 be)` as `raft_index(u64 be) ‖
//! root`, in the same batch as the entry that made it. The last
//! [`MARK_HISTORY`] epochs are kept (in storage and in memory), so a metadata
//! leader that asks late still finds the mark of its epoch.

use std::collections::BTreeMap;
use std::ops::Bound;

use bincode::{Decode, Encode};
use stratosdb_proof::{Hash, Proof, Value};

use crate::keys::{self, MARK_PREFIX};
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

/// The keys changed since the mark of `epoch`, with their document hash at
/// the mark (`None`: absent then), as stored.
pub(crate) fn load_mark_changes<T: KvTree>(tree: &T, epoch: u64) -> Result<Vec<MarkChange>> {
    let prefix = keys::mark_change_prefix(epoch);
    let mut out = Vec::new();
    for item in tree.range(
        Bound::Included(prefix.clone()),
        keys::successor_bound(&prefix),
        false,
    ) {
        let (key, value) = item?;
        out.push(decode_mark_change(&prefix, key.as_ref(), value.as_ref())?);
    }
    Ok(out)
}

/// A stored change record under `prefix` (its mark's): the key hash and the
/// document hash at the mark.
pub(crate) fn decode_mark_change(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<MarkChange> {
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

/// The stored value of a change record: the document hash, or nothing.
pub(crate) fn mark_change_value(doc: Option<Hash>) -> Vec<u8> {
    doc.map_or_else(Vec::new, |h| h.to_vec())
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
