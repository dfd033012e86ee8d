//! The raft logs of all groups of a node on one raft-engine (TiKV's log
//! engine, [`RaftLog`]), and one group's log on it implementing
//! `raft::Storage` ([`LogStore`]).
//!
//! raft-engine keys everything by group (`raft_group_id`): the entries, and
//! per group the keys `h` → hard state; `c` → conf state and `i` → the index
//! it took effect at; `t` → truncated index and term (after compaction or a
//! snapshot); `p` → the metadata of a snapshot being installed (see
//! [`LogStore::begin_snapshot`]).
//!
//! Writes are staged, in program order, in the node's one `LogBatch` and
//! written by the driver once per loop iteration with one sync (group commit
//! over all groups). The rare writes that must be durable at once
//! (bootstrap, a conf change, the snapshot steps) write the staged batch with
//! a sync themselves. The shards stay in sled and are NOT flushed per
//! iteration: the invariants that make that safe are in
//! `docs/replication.md` ("The raft log on raft-engine").

use std::collections::{VecDeque, vec_deque};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use raft_engine::{Command, LogBatch};
use stratosdb_engine::Shard;

use crate::snapshot::{SnapshotDescriptor, SnapshotFiles};
use crate::{GroupId, NodeId, ReplicationError, Result};

/// The raft-engine folder inside the node's data folder (beside sled's files).
pub const LOG_DIR: &str = "raft-log";

const KEY_HARD: &[u8] = b"h";
const KEY_CONF: &[u8] = b"c";
const KEY_CONF_INDEX: &[u8] = b"i";
const KEY_TRUNCATED: &[u8] = b"t";
const KEY_PENDING_SNAPSHOT: &[u8] = b"p";

/// Total size of raft-engine's files before it purges the obsolete ones
/// (its default, 10 GiB, is sized for a TiKV store, not one node's shards).
const PURGE_THRESHOLD_BYTES: u64 = 1 << 30;

/// The sled tree a group's log was in before the log moved to raft-engine;
/// a data folder with one is refused (see [`crate::RaftNode::open`]).
pub fn legacy_group_of_tree(name: &str) -> Option<GroupId> {
    name.strip_prefix("raft/")?.parse().ok()
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Corruption(format!("{what}: {e}"))
}

/// How raft-engine reads an entry's index.
#[derive(Clone, Copy)]
struct EntryExt;

impl raft_engine::MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// The node's raft-engine and the batch of log writes staged since the last
/// write. Shared by every group's [`LogStore`] and the driver.
pub struct RaftLog {
    engine: raft_engine::Engine,
    staged: Mutex<LogBatch>,
}

impl RaftLog {
    /// Opens (or creates) the raft-engine in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<RaftLog>> {
        let path = dir.to_str().ok_or_else(|| {
            ReplicationError::Corruption(format!(
                "raft log folder {} is not valid UTF-8",
                dir.display()
            ))
        })?;
        let config = raft_engine::Config {
            dir: path.to_owned(),
            purge_threshold: raft_engine::ReadableSize(PURGE_THRESHOLD_BYTES),
            // No LZ4 on the write path: a loop iteration's batch (a few KiB
            // to a few hundred) was compressed on every node, for ~12% of
            // the cluster's CPU per write (BENCHMARKS.md, "CPU per write").
            batch_compression_threshold: raft_engine::ReadableSize(0),
            ..Default::default()
        };
        Ok(Arc::new(RaftLog {
            engine: raft_engine::Engine::open(config)?,
            staged: Mutex::new(LogBatch::default()),
        }))
    }

    /// The groups with a log here, ascending.
    pub fn groups(&self) -> Result<Vec<GroupId>> {
        let mut groups = self
            .engine
            .raft_groups()
            .into_iter()
            .map(|g| GroupId::try_from(g).map_err(|_| corrupt("raft log group id", g.to_string())))
            .collect::<Result<Vec<_>>>()?;
        groups.sort_unstable();
        Ok(groups)
    }

    /// Writes everything staged, in one batch; with `sync`, durable on
    /// return (one `fdatasync` for all groups).
    pub fn write(&self, sync: bool) -> Result<()> {
        let mut batch = std::mem::take(&mut *self.staged.lock());
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.write(&mut batch, sync)?;
        Ok(())
    }

    /// Drops a group's whole log (entries and keys: `Command::Clean`),
    /// durably on return; the group is then no longer in [`RaftLog::groups`].
    /// Everything staged before goes in the same write.
    pub fn clean(&self, group: GroupId) -> Result<()> {
        self.stage(|b| {
            b.add_command(u64::from(group), Command::Clean);
            Ok(())
        })?;
        self.write(true)
    }

    /// Deletes raft-engine files that only hold compacted entries.
    pub fn purge(&self) -> Result<()> {
        let behind = self.engine.purge_expired_files()?;
        if !behind.is_empty() {
            // Their old entries keep files alive; they compact when applied.
            tracing::debug!(groups = ?behind, "raft log files held by groups not compacted yet");
        }
        Ok(())
    }

    /// The term of entry `index` of `group` as written (an entry in the
    /// log, or the one the log was truncated at), for threads other than the
    /// loop; `None` if the log no longer knows it.
    fn written_term(&self, group: u64, index: u64) -> Result<Option<u64>> {
        if let Some(e) = self.engine.get_entry::<EntryExt>(group, index)? {
            return Ok(Some(e.term));
        }
        let Some(v) = self.engine.get(group, KEY_TRUNCATED) else {
            return Ok(None);
        };
        let (i, t) = v.split_at(v.len().min(8));
        let truncated = u64_of(i, "truncated index")?;
        (truncated == index)
            .then(|| u64_of(t, "truncated term"))
            .transpose()
    }

    fn stage(&self, f: impl FnOnce(&mut LogBatch) -> raft_engine::Result<()>) -> Result<()> {
        Ok(f(&mut self.staged.lock())?)
    }
}

/// Where a group's snapshots go when raft asks for one: exported in chunks
/// of about `chunk_bytes` into the node's snapshot files, served as `node`.
#[derive(Clone)]
pub struct SnapshotExport {
    pub files: Arc<SnapshotFiles>,
    pub node: NodeId,
    pub chunk_bytes: usize,
}

/// One group's raft log. Reads come from raft-engine; the small state (hard
/// state, conf state, bounds) is cached in memory and always includes the
/// staged writes (raft reads nothing between a stage and its write that the
/// cache does not answer).
pub struct LogStore {
    log: Arc<RaftLog>,
    group: u64,
    shard: Shard,
    hard: HardState,
    conf: ConfState,
    /// The index of the entry that produced `conf` (1 when bootstrapped, the
    /// snapshot's index after one): conf changes at or below it are in it.
    conf_index: u64,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    /// The terms of the log's last entries (up to `last_index`), as
    /// appended here: raft asks for terms several times per message (the
    /// previous entry of an append, the commit's term), and raft-engine
    /// answers only by reading and decoding the whole entry.
    tail_terms: Tail<u64>,
    /// The log's last entries (up to `last_index`), as appended here: raft
    /// asks for the committed entries to apply, and for the entries of
    /// appends to followers, mostly just after they were appended; from
    /// raft-engine every one would be read back and decoded. Staged
    /// entries are in it before the driver writes them: if that write
    /// fails, the node's loop stops and nothing reads them.
    entry_cache: Tail<Entry>,
    snapshots: SnapshotExport,
    /// The last snapshot built for a follower (its descriptor), reused while
    /// still recent enough and on disk.
    snapshot_cache: Mutex<Option<Snapshot>>,
    /// The export running on its own thread, if one does.
    export_job: Mutex<Option<ExportJob>>,
}

/// An export of the shard running on its own thread, so the node's loop
/// (every group on the node) goes on while a large shard is written out.
struct ExportJob {
    /// The configuration's index when it started: the snapshot is taken
    /// only if no membership change applied meanwhile (its metadata carries
    /// the configuration at its index, which is then the current one).
    conf_index: u64,
    done: Arc<Mutex<Option<Result<SnapshotDescriptor>>>>,
}

impl LogStore {
    /// Opens the group's log. A new log with `voters` is bootstrapped: it
    /// starts truncated at index 1, term 1, with that configuration, so a
    /// replica added later (with an empty log) is brought up by a snapshot
    /// that carries the configuration, never by replaying from nothing. Both
    /// kinds of new log are written durably at once, so the group is found
    /// again on restart.
    pub fn open(
        log: &Arc<RaftLog>,
        group: GroupId,
        shard: Shard,
        voters: &[u64],
        snapshots: SnapshotExport,
    ) -> Result<LogStore> {
        let mut store = LogStore {
            log: log.clone(),
            group: u64::from(group),
            shard,
            hard: HardState::default(),
            conf: ConfState::default(),
            conf_index: 0,
            truncated_index: 0,
            truncated_term: 0,
            last_index: 0,
            tail_terms: Tail::terms(),
            entry_cache: Tail::entries(),
            snapshots,
            snapshot_cache: Mutex::new(None),
            export_job: Mutex::new(None),
        };
        let exists = store.log.engine.get(store.group, KEY_TRUNCATED).is_some();
        store.load()?;
        let fresh = store.last_index == 0 && store.conf == ConfState::default();
        let g = store.group;
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
            store.log.stage(|b| {
                b.put_message(g, KEY_CONF.to_vec(), &conf)?;
                b.put(g, KEY_CONF_INDEX.to_vec(), 1u64.to_be_bytes().to_vec())?;
                b.put_message(g, KEY_HARD.to_vec(), &hard)?;
                b.put(g, KEY_TRUNCATED.to_vec(), truncated_bytes(1, 1))
            })?;
            store.log.write(true)?;
            store.load()?;
        } else if !exists {
            // A replica waiting for its first snapshot: an empty log on record.
            store
                .log
                .stage(|b| b.put(g, KEY_TRUNCATED.to_vec(), truncated_bytes(0, 0)))?;
            store.log.write(true)?;
        }
        Ok(store)
    }

    fn load(&mut self) -> Result<()> {
        let engine = &self.log.engine;
        let g = self.group;
        if let Some(hard) = engine.get_message::<HardState>(g, KEY_HARD)? {
            self.hard = hard;
        }
        if let Some(conf) = engine.get_message::<ConfState>(g, KEY_CONF)? {
            self.conf = conf;
        }
        if let Some(v) = engine.get(g, KEY_CONF_INDEX) {
            self.conf_index = u64_of(&v, "conf index")?;
        }
        if let Some(v) = engine.get(g, KEY_TRUNCATED) {
            let (i, t) = v.split_at(v.len().min(8));
            self.truncated_index = u64_of(i, "truncated index")?;
            self.truncated_term = u64_of(t, "truncated term")?;
        }
        match (engine.first_index(g), engine.last_index(g)) {
            (Some(first), Some(last)) => {
                if first != self.truncated_index + 1 || last < first {
                    return Err(ReplicationError::Corruption(format!(
                        "group {g}: entries {first}..={last} do not start after the truncated index {}",
                        self.truncated_index
                    )));
                }
                self.last_index = last;
            }
            _ => self.last_index = self.truncated_index,
        }
        Ok(())
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    /// The index of the entry the current configuration comes from.
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }

    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    /// Stages new entries (raft-engine drops any conflicting tail of the log
    /// as it appends them) and the hard state. Durable at the driver's next
    /// synced write.
    pub fn persist(&mut self, entries: &[Entry], hard: Option<&HardState>) -> Result<()> {
        if let Some(first) = entries.first() {
            // raft-engine panics on both; refuse them first.
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
        }
        let g = self.group;
        self.log.stage(|b| {
            b.add_entries::<EntryExt>(g, entries)?;
            match hard {
                Some(hard) => b.put_message(g, KEY_HARD.to_vec(), hard),
                None => Ok(()),
            }
        })?;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let prev = self.last_index;
            self.tail_terms
                .append(prev, first.index, entries.iter().map(|e| e.term));
            self.entry_cache
                .append(prev, first.index, entries.iter().cloned());
            self.last_index = last.index;
        }
        if let Some(hard) = hard {
            self.hard = hard.clone();
        }
        Ok(())
    }

    /// Records the commit index a `LightReady` reported. Need not be durable:
    /// [`LogStore::recover`] raises a stale commit to what the shard applied.
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hard = self.hard.clone();
        hard.commit = commit;
        self.persist(&[], Some(&hard))
    }

    /// Records the configuration the conf change at `index` produced, durably
    /// before returning: the shard batch that moves the applied index past
    /// `index` is written after this, and sled may flush it any time.
    pub fn set_conf_state(&mut self, conf: ConfState, index: u64) -> Result<()> {
        let g = self.group;
        self.log.stage(|b| {
            b.put_message(g, KEY_CONF.to_vec(), &conf)?;
            b.put(g, KEY_CONF_INDEX.to_vec(), index.to_be_bytes().to_vec())
        })?;
        self.log.write(true)?;
        self.conf = conf;
        self.conf_index = index;
        Ok(())
    }

    /// Stages dropping entries up to and including `index`, which must be
    /// applied and durable in the shard; its term is kept for matching. The
    /// caller writes the staged batch.
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
        let g = self.group;
        // One batch: the entries go with the record of where the log starts.
        self.log.stage(|b| {
            b.add_command(g, Command::Compact { index: index + 1 });
            b.put(g, KEY_TRUNCATED.to_vec(), truncated_bytes(index, term))
        })?;
        self.truncated_index = index;
        self.truncated_term = term;
        self.tail_terms.drop_through(index, self.last_index);
        self.entry_cache.drop_through(index, self.last_index);
        Ok(())
    }

    /// Step one of installing a snapshot: remember its metadata, durably
    /// before the engine imports it, so a crash between the import and
    /// [`LogStore::apply_snapshot`] is finished on restart
    /// ([`LogStore::recover`]).
    pub fn begin_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        let g = self.group;
        self.log
            .stage(|b| b.put_message(g, KEY_PENDING_SNAPSHOT.to_vec(), meta))?;
        self.log.write(true)
    }

    /// Step two (the shard is durable at the snapshot's index: the engine's
    /// import flushes): the log now starts after the snapshot.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        let mut hard = self.hard.clone();
        hard.term = hard.term.max(meta.term);
        hard.commit = hard.commit.max(meta.index);
        let conf = meta.conf_state.clone().unwrap_or_default();
        let g = self.group;
        self.log.stage(|b| {
            // `Clean` drops the group's entries (a tail past the snapshot
            // too) and keys; the same batch writes the new state back.
            b.add_command(g, Command::Clean);
            b.put_message(g, KEY_HARD.to_vec(), &hard)?;
            b.put_message(g, KEY_CONF.to_vec(), &conf)?;
            b.put(
                g,
                KEY_CONF_INDEX.to_vec(),
                meta.index.to_be_bytes().to_vec(),
            )?;
            b.put(
                g,
                KEY_TRUNCATED.to_vec(),
                truncated_bytes(meta.index, meta.term),
            )
        })?;
        self.log.write(true)?;
        self.hard = hard;
        self.conf = conf;
        self.conf_index = meta.index;
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        self.tail_terms.clear();
        self.entry_cache.clear();
        Ok(())
    }

    /// On open: finishes a snapshot install the engine completed before a
    /// crash, or forgets one it did not; checks the shard is within the log
    /// (its unflushed applies may be lost, so it may be behind: raft applies
    /// again from there; the log never drops what the shard has not made
    /// durable); and makes sure the commit index is not behind what the
    /// shard applied (the commit is not synced when it moves).
    pub fn recover(&mut self, engine_applied: u64) -> Result<()> {
        let g = self.group;
        let pending = self
            .log
            .engine
            .get_message::<SnapshotMetadata>(g, KEY_PENDING_SNAPSHOT)?;
        if let Some(meta) = pending {
            if engine_applied >= meta.index {
                self.apply_snapshot(&meta)?;
            } else {
                self.log.stage(|b| {
                    b.delete(g, KEY_PENDING_SNAPSHOT.to_vec());
                    Ok(())
                })?;
            }
        }
        if engine_applied > self.last_index {
            return Err(ReplicationError::Corruption(format!(
                "the engine applied {engine_applied}, past the log's last index {}",
                self.last_index
            )));
        }
        // A bootstrapped log starts at 1 with nothing applied; otherwise the
        // log starts at most right after what the shard holds durably.
        if engine_applied < self.truncated_index && self.truncated_index > 1 {
            return Err(ReplicationError::Corruption(format!(
                "the engine applied {engine_applied}, before the log's start {}: entries it needs are gone",
                self.truncated_index + 1
            )));
        }
        if engine_applied > self.hard.commit {
            self.set_commit(engine_applied)?;
        }
        self.log.write(true)
    }

    /// `Storage::entries` from raft-engine (bounds checked by the caller).
    fn stored_entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        // raft-engine counts entry sizes as encoded, as `fitting`: its
        // limit fetches the same entries; `fitting` keeps the rule exact.
        let limit = max_size.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        self.log
            .engine
            .fetch_entries_to::<EntryExt>(self.group, low, high, limit, &mut out)
            .map_err(|e| corrupt(&format!("entries {low}..{high}"), e))?;
        out.truncate(fitting(out.iter(), max_size));
        let complete = out.len() as u64 == high - low;
        if (!complete && max_size.is_none()) || (out.is_empty() && high > low) {
            return Err(ReplicationError::Corruption(format!(
                "entries {low}..{high}: only {} present",
                out.len()
            )));
        }
        Ok(out)
    }

    fn entry(&self, index: u64) -> Result<Entry> {
        self.log
            .engine
            .get_entry::<EntryExt>(self.group, index)?
            .ok_or_else(|| ReplicationError::Corruption(format!("entry {index} missing")))
    }

    /// A snapshot of the state machine at its applied index, at least
    /// `request_index`: exported to the snapshot files, its descriptor as
    /// the raft snapshot's data. Reused while it still reaches the log and
    /// its files are there. The export runs on its own thread: until it is
    /// done this answers `None` (raft's "temporarily unavailable", and raft
    /// asks again on a later heartbeat response).
    fn build_snapshot(&self, request_index: u64) -> Result<Option<Snapshot>> {
        let mut cache = self.snapshot_cache.lock();
        let floor = self.truncated_index.max(request_index);
        // A snapshot built before a membership change would be refused by
        // a replica that change added: its configuration must be current.
        if let Some(snap) = cache.as_ref() {
            let meta = snap.get_metadata();
            let key = crate::snapshot::SnapshotKey {
                group: self.group as GroupId,
                index: meta.index,
                term: meta.term,
            };
            if meta.index >= floor
                && meta.get_conf_state() == &self.conf
                && self.snapshots.files.has_outgoing(&key)
            {
                return Ok(Some(snap.clone()));
            }
        }
        let mut job = self.export_job.lock();
        let finished = job.as_ref().map(|j| j.done.lock().take());
        match finished {
            // Still running.
            Some(None) => return Ok(None),
            Some(Some(result)) => {
                let started_at_conf = job.take().map(|j| j.conf_index);
                match result {
                    Ok(descriptor)
                        if descriptor.key.index >= floor
                            && started_at_conf == Some(self.conf_index) =>
                    {
                        let mut snap = Snapshot {
                            data: descriptor.encode().into(),
                            ..Default::default()
                        };
                        let meta = snap.mut_metadata();
                        meta.index = descriptor.key.index;
                        meta.term = descriptor.key.term;
                        meta.set_conf_state(self.conf.clone());
                        *cache = Some(snap.clone());
                        return Ok(Some(snap));
                    }
                    // Too old, or a membership change applied meanwhile:
                    // export again.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(group = self.group, error = %e, "a snapshot export failed")
                    }
                }
            }
            None => {}
        }
        *job = Some(self.start_export()?);
        Ok(None)
    }

    /// Starts exporting the shard on a thread of its own.
    fn start_export(&self) -> Result<ExportJob> {
        let done: Arc<Mutex<Option<Result<SnapshotDescriptor>>>> = Arc::default();
        let (slot, export, shard, log, group) = (
            done.clone(),
            self.snapshots.clone(),
            self.shard.clone(),
            self.log.clone(),
            self.group,
        );
        std::thread::Builder::new()
            .name(format!("snapshot-export-{group}"))
            .spawn(move || {
                let result =
                    export
                        .files
                        .export(&shard, export.chunk_bytes, export.node, |index| {
                            log.written_term(group, index)?.ok_or_else(|| {
                        ReplicationError::Corruption(format!(
                            "group {group}: the term of index {index} is no longer in the log"
                        ))
                    })
                        });
                *slot.lock() = Some(result);
            })
            .map_err(|e| ReplicationError::Corruption(format!("cannot start a thread: {e}")))?;
        Ok(ExportJob {
            conf_index: self.conf_index,
            done,
        })
    }
}

/// Terms of entries remembered (8 bytes each).
const TAIL_TERMS: usize = 4096;

/// Entries of a group's log kept in memory to answer `Storage::entries`
/// (enough to reach from an append to its apply, and to followers a little
/// behind; one of 4,096 entries and 2 MiB measured no gain, BENCHMARKS.md):
/// at most this many...
const CACHED_ENTRIES: usize = 1024;
/// ...and at most this many bytes of them (as encoded, `compute_size`).
const CACHED_ENTRY_BYTES: usize = 256 << 10;

/// Values for the log's last entries (a term, or the entry itself), the
/// last one for the log's last index, as appended here; the oldest fall off
/// the front beyond `max_len` values or `max_bytes` (by `weight`).
struct Tail<T> {
    items: VecDeque<T>,
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
    weight: fn(&T) -> usize,
}

impl<T> Tail<T> {
    fn new(max_len: usize, max_bytes: usize, weight: fn(&T) -> usize) -> Self {
        Tail {
            items: VecDeque::new(),
            bytes: 0,
            max_len,
            max_bytes,
            weight,
        }
    }

    /// The index of the first value kept, in a log whose last index is `last`.
    fn start(&self, last: u64) -> u64 {
        (last + 1).saturating_sub(self.items.len() as u64)
    }

    /// The values of entries from index `first` on, appended to a log whose
    /// last index was `last` (at most `last + 1`): an append at or below it
    /// replaced the entries from `first` on.
    fn append(&mut self, last: u64, first: u64, values: impl IntoIterator<Item = T>) {
        let start = self.start(last);
        let keep = if first < start {
            0
        } else {
            usize::try_from(first - start)
                .unwrap_or(usize::MAX)
                .min(self.items.len())
        };
        let weight = self.weight;
        let dropped: usize = self.items.drain(keep..).map(|v| weight(&v)).sum();
        self.bytes -= dropped;
        for v in values {
            self.bytes += weight(&v);
            self.items.push_back(v);
        }
        while self.items.len() > self.max_len || self.bytes > self.max_bytes {
            let Some(v) = self.items.pop_front() else {
                break;
            };
            self.bytes -= weight(&v);
        }
    }

    /// Drops the values of entries up to and including `index` (compacted),
    /// in a log whose last index is `last`.
    fn drop_through(&mut self, index: u64, last: u64) {
        let Some(n) = (index + 1).checked_sub(self.start(last)) else {
            return;
        };
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.items.len());
        let weight = self.weight;
        let dropped: usize = self.items.drain(..n).map(|v| weight(&v)).sum();
        self.bytes -= dropped;
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    /// The value for entry `index`, if kept, in a log whose last index is `last`.
    fn get(&self, index: u64, last: u64) -> Option<&T> {
        let back = usize::try_from(last.checked_sub(index)?).ok()?;
        let at = self.items.len().checked_sub(back + 1)?;
        self.items.get(at)
    }

    /// The values for entries `low..high`, if all are kept, in a log whose
    /// last index is `last`.
    fn range(&self, low: u64, high: u64, last: u64) -> Option<vec_deque::Iter<'_, T>> {
        let start = self.start(last);
        if low < start || high > last + 1 || low > high {
            return None;
        }
        let from = usize::try_from(low - start).ok()?;
        let to = usize::try_from(high - start).ok()?;
        Some(self.items.range(from..to))
    }
}

impl Tail<u64> {
    fn terms() -> Self {
        Tail::new(TAIL_TERMS, usize::MAX, |_| 0)
    }
}

impl Tail<Entry> {
    fn entries() -> Self {
        Tail::new(CACHED_ENTRIES, CACHED_ENTRY_BYTES, |e| {
            e.compute_size() as usize
        })
    }
}

/// How many of `entries` (at least one, if any) a reply of at most
/// `max_size` bytes takes: raft's rule for `Storage::entries`.
fn fitting<'a>(entries: impl Iterator<Item = &'a Entry>, max_size: Option<u64>) -> usize {
    let mut size = 0u64;
    let mut keep = 0;
    for e in entries {
        size += u64::from(e.compute_size());
        if keep > 0 && max_size.is_some_and(|m| size > m) {
            break;
        }
        keep += 1;
    }
    keep
}

fn truncated_bytes(index: u64, term: u64) -> Vec<u8> {
    let mut v = index.to_be_bytes().to_vec();
    v.extend(term.to_be_bytes());
    v
}

fn u64_of(bytes: &[u8], what: &str) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt(what, format!("{} bytes, not 8", bytes.len())))
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
        if let Some(cached) = self.entry_cache.range(low, high, self.last_index) {
            let n = fitting(cached.clone(), max_size);
            return Ok(cached.take(n).cloned().collect());
        }
        self.stored_entries(low, high, max_size).map_err(store_err)
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
        if let Some(&term) = self.tail_terms.get(idx, self.last_index) {
            return Ok(term);
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
