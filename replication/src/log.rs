//! The raft log of one group on a sled tree (through the engine's `KvTree`),
//! implementing `raft::Storage`.
//!
//! Keys: `e` + index (big-endian) → entry; `h` → hard state; `c` → conf state;
//! `t` → truncated index and term (after compaction or a snapshot); `p` → the
//! metadata of a snapshot being installed (see [`LogStore::begin_snapshot`]).
//! Writes are applied to the tree at once and made durable by the node's one
//! flush per loop iteration (group commit over all groups).

use std::ops::Bound;

use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use stratosdb_engine::storage::{SledTree, WriteBatch};
use stratosdb_engine::{KvStore, KvTree, Shard, SledStore};

use crate::{GroupId, ReplicationError, Result, snapshot};

const KEY_HARD: &[u8] = b"h";
const KEY_CONF: &[u8] = b"c";
const KEY_TRUNCATED: &[u8] = b"t";
const KEY_PENDING_SNAPSHOT: &[u8] = b"p";
const ENTRY_PREFIX: u8 = b'e';

/// Name of a group's log tree (outside the engine's `shard/` name space).
pub fn tree_name(group: GroupId) -> String {
    format!("raft/{group}")
}

/// The group id a log tree name stands for.
pub fn group_of_tree(name: &str) -> Option<GroupId> {
    name.strip_prefix("raft/")?.parse().ok()
}

fn entry_key(index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(ENTRY_PREFIX);
    k.extend(index.to_be_bytes());
    k
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Corruption(format!("{what}: {e}"))
}

/// One group's raft log. Reads come from the tree; the small state (hard
/// state, conf state, bounds) is cached in memory.
pub struct LogStore {
    tree: SledTree,
    shard: Shard,
    hard: HardState,
    conf: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    snapshot_chunk_bytes: usize,
    /// The last snapshot built for a follower, reused while still recent enough.
    snapshot_cache: Mutex<Option<Snapshot>>,
}

impl LogStore {
    /// Opens the group's log. A new log with `voters` is bootstrapped: it
    /// starts truncated at index 1, term 1, with that configuration, so a
    /// replica added later (with an empty log) is brought up by a snapshot
    /// that carries the configuration, never by replaying from nothing.
    pub fn open(
        store: &SledStore,
        group: GroupId,
        shard: Shard,
        voters: &[u64],
        snapshot_chunk_bytes: usize,
    ) -> Result<LogStore> {
        let tree = store.open_tree(&tree_name(group))?;
        let mut log = LogStore {
            tree,
            shard,
            hard: HardState::default(),
            conf: ConfState::default(),
            truncated_index: 0,
            truncated_term: 0,
            last_index: 0,
            snapshot_chunk_bytes,
            snapshot_cache: Mutex::new(None),
        };
        log.load()?;
        let fresh = log.last_index == 0 && log.conf == ConfState::default();
        if fresh && !voters.is_empty() {
            let conf = ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            };
            let hard = HardState {
                term: 1,
                commit: 1,
                ..Default::default()
            };
            let mut batch = WriteBatch::default();
            batch.put(KEY_CONF.to_vec(), encode(&conf));
            batch.put(KEY_HARD.to_vec(), encode(&hard));
            batch.put(KEY_TRUNCATED.to_vec(), truncated_bytes(1, 1));
            log.tree.apply(batch)?;
            log.load()?;
        }
        Ok(log)
    }

    fn load(&mut self) -> Result<()> {
        if let Some(v) = self.tree.get(KEY_HARD)? {
            self.hard = HardState::parse_from_bytes(&v).map_err(|e| corrupt("hard state", e))?;
        }
        if let Some(v) = self.tree.get(KEY_CONF)? {
            self.conf = ConfState::parse_from_bytes(&v).map_err(|e| corrupt("conf state", e))?;
        }
        if let Some(v) = self.tree.get(KEY_TRUNCATED)? {
            let b = <[u8; 16]>::try_from(v.as_ref()).map_err(|e| corrupt("truncated", e))?;
            let (i, t) = b.split_at(8);
            self.truncated_index = u64::from_be_bytes(i.try_into().unwrap_or_default());
            self.truncated_term = u64::from_be_bytes(t.try_into().unwrap_or_default());
        }
        let last = self
            .tree
            .range(
                Bound::Included(vec![ENTRY_PREFIX]),
                Bound::Excluded(vec![ENTRY_PREFIX + 1]),
                true,
            )
            .next()
            .transpose()?;
        self.last_index = match last {
            Some((k, _)) => index_of_key(k.as_ref())?,
            None => self.truncated_index,
        };
        Ok(())
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    /// Persists new entries (dropping any conflicting tail of the log) and the
    /// hard state, as one atomic batch. Durable at the node's next flush.
    pub fn persist(&mut self, entries: &[Entry], hard: Option<&HardState>) -> Result<()> {
        let mut batch = WriteBatch::default();
        if let Some(first) = entries.first() {
            if first.index <= self.truncated_index {
                return Err(ReplicationError::Corruption(format!(
                    "append at {} at or below the truncated index {}",
                    first.index, self.truncated_index
                )));
            }
            if first.index > self.last_index + 1 {
                return Err(ReplicationError::Corruption(format!(
                    "append at {} leaves a gap after {}",
                    first.index, self.last_index
                )));
            }
            // Everything from the first new index on is replaced.
            let new_last = first.index + entries.len() as u64 - 1;
            for index in new_last + 1..=self.last_index {
                batch.delete(entry_key(index));
            }
            for e in entries {
                batch.put(entry_key(e.index), encode(e));
            }
        }
        if let Some(hard) = hard {
            batch.put(KEY_HARD.to_vec(), encode(hard));
        }
        self.tree.apply(batch)?;
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
        if let Some(hard) = hard {
            self.hard = hard.clone();
        }
        Ok(())
    }

    /// Records the commit index a `LightReady` reported.
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hard = self.hard.clone();
        hard.commit = commit;
        self.persist(&[], Some(&hard))
    }

    /// Records the configuration an applied conf change produced.
    pub fn set_conf_state(&mut self, conf: ConfState) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_CONF.to_vec(), encode(&conf));
        self.tree.apply(batch)?;
        self.conf = conf;
        Ok(())
    }

    /// Drops entries up to and including `index` (which must be applied and
    /// durable in the state machine); its term is kept for matching.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.truncated_index {
            return Ok(());
        }
        if index > self.last_index {
            return Err(ReplicationError::Corruption(format!(
                "compact to {index} past the last index {}",
                self.last_index
            )));
        }
        let term = self.term(index)?;
        let mut batch = WriteBatch::default();
        for i in self.truncated_index + 1..=index {
            batch.delete(entry_key(i));
        }
        batch.put(KEY_TRUNCATED.to_vec(), truncated_bytes(index, term));
        self.tree.apply(batch)?;
        self.truncated_index = index;
        self.truncated_term = term;
        Ok(())
    }

    /// Step one of installing a snapshot: remember its metadata, so a crash
    /// between the engine's import and [`LogStore::apply_snapshot`] is
    /// finished on restart ([`LogStore::recover`]).
    pub fn begin_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_PENDING_SNAPSHOT.to_vec(), encode(meta));
        Ok(self.tree.apply(batch)?)
    }

    /// Step two: the log now starts after the snapshot.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        let mut batch = WriteBatch::default();
        for item in self.tree.range(
            Bound::Included(vec![ENTRY_PREFIX]),
            Bound::Excluded(vec![ENTRY_PREFIX + 1]),
            false,
        ) {
            let (k, _) = item?;
            batch.delete(k.to_vec());
        }
        let mut hard = self.hard.clone();
        hard.term = hard.term.max(meta.term);
        hard.commit = hard.commit.max(meta.index);
        let conf = meta.conf_state.clone().unwrap_or_default();
        batch.put(KEY_HARD.to_vec(), encode(&hard));
        batch.put(KEY_CONF.to_vec(), encode(&conf));
        batch.put(
            KEY_TRUNCATED.to_vec(),
            truncated_bytes(meta.index, meta.term),
        );
        batch.delete(KEY_PENDING_SNAPSHOT.to_vec());
        self.tree.apply(batch)?;
        self.hard = hard;
        self.conf = conf;
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        Ok(())
    }

    /// On open: finishes a snapshot install the engine completed before a
    /// crash, or forgets one it did not; and makes sure the commit index is
    /// not behind what the engine applied (it may have been flushed later).
    pub fn recover(&mut self, engine_applied: u64) -> Result<()> {
        if let Some(v) = self.tree.get(KEY_PENDING_SNAPSHOT)? {
            let meta = SnapshotMetadata::parse_from_bytes(&v)
                .map_err(|e| corrupt("pending snapshot", e))?;
            if engine_applied >= meta.index {
                self.apply_snapshot(&meta)?;
            } else {
                let mut batch = WriteBatch::default();
                batch.delete(KEY_PENDING_SNAPSHOT.to_vec());
                self.tree.apply(batch)?;
            }
        }
        if engine_applied > self.last_index {
            return Err(ReplicationError::Corruption(format!(
                "the engine applied {engine_applied}, past the log's last index {}",
                self.last_index
            )));
        }
        if engine_applied > self.hard.commit {
            self.set_commit(engine_applied)?;
        }
        Ok(())
    }

    fn entry(&self, index: u64) -> Result<Entry> {
        let bytes = self
            .tree
            .get(&entry_key(index))?
            .ok_or_else(|| ReplicationError::Corruption(format!("entry {index} missing")))?;
        Entry::parse_from_bytes(&bytes).map_err(|e| corrupt("entry", e))
    }

    /// A snapshot of the state machine at its applied index, at least
    /// `request_index`. Reused while it still reaches the log.
    fn build_snapshot(&self, request_index: u64) -> Result<Option<Snapshot>> {
        let mut cache = self.snapshot_cache.lock();
        let floor = self.truncated_index.max(request_index);
        if let Some(snap) = cache.as_ref()
            && snap.get_metadata().index >= floor
        {
            return Ok(Some(snap.clone()));
        }
        let (index, data) = snapshot::export(&self.shard, self.snapshot_chunk_bytes)?;
        if index < floor {
            return Ok(None);
        }
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = self.term(index)?;
        meta.set_conf_state(self.conf.clone());
        *cache = Some(snap.clone());
        Ok(Some(snap))
    }
}

fn encode(m: &impl protobuf::Message) -> Vec<u8> {
    // Encoding a well-formed message into a Vec cannot fail.
    m.write_to_bytes().unwrap_or_default()
}

fn truncated_bytes(index: u64, term: u64) -> Vec<u8> {
    let mut v = index.to_be_bytes().to_vec();
    v.extend(term.to_be_bytes());
    v
}

fn index_of_key(key: &[u8]) -> Result<u64> {
    key.get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| ReplicationError::Corruption("entry key".into()))
}

fn store_err(e: ReplicationError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard.clone(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in self.tree.range(
            Bound::Included(entry_key(low)),
            Bound::Excluded(entry_key(high)),
            false,
        ) {
            let (_, v) = item.map_err(|e| store_err(e.into()))?;
            let e = Entry::parse_from_bytes(&v).map_err(|e| store_err(corrupt("entry", e)))?;
            size += u64::from(e.compute_size());
            // At least one entry, then only as many as fit.
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e);
        }
        if out.len() as u64 != high - low && max_size.is_none() {
            return Err(store_err(ReplicationError::Corruption(format!(
                "entries {low}..{high}: only {} present",
                out.len()
            ))));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.entry(idx).map(|e| e.term).map_err(store_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.build_snapshot(request_index) {
            Ok(Some(snap)) => Ok(snap),
            Ok(None) => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
            Err(e) => {
                tracing::warn!(error = %e, "building a snapshot failed");
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
