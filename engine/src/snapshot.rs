//! Shard snapshots: a consistent export streamed in chunks, and an import that
//! rebuilds the shard beside the old one, checks the root, then swaps it in.
//!
//! Only the catalog, the documents and the anchor marks travel. Indexes and Merkle nodes are
//! rebuilt on import: that costs CPU on the receiver, but it is also what lets
//! the receiver check the exporter's root instead of trusting shipped nodes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bincode::{Decode, Encode};
use stratosdb_proof::Value;
use stratosdb_proof::hash::Hash;

use crate::anchor::{AnchorMark, MARK_HISTORY, MarkChange, Marks, encode_records};
use crate::keys::APPLIED_INDEX_KEY;
use crate::shard::{Generation, Shard, decode_stored, restore_mark_view};
use crate::storage::{KvStore, KvTree, WriteBatch};
use crate::{EngineError, IndexSpec, Op, Result, keys};
use parking_lot::Mutex;

/// Version 2 carries the anchor marks and the changes since the latest.
const SNAPSHOT_VERSION: u8 = 2;
/// Records of the changes since the latest mark per pack a receiver stores.
const SNAPSHOT_PACK_RECORDS: usize = 1024;

#[derive(Debug, Encode, Decode)]
enum Chunk {
    Header {
        version: u8,
        applied_index: u64,
        root: Hash,
        documents: u64,
        collections: Vec<(String, Vec<IndexSpec>)>,
        /// The marks kept, oldest epoch first.
        marks: Vec<AnchorMark>,
    },
    Documents {
        collection: String,
        docs: Vec<Value>,
    },
    /// Keys changed since the latest mark (of `epoch`), with their document
    /// hash at the mark: what the receiver needs to prove against the mark.
    MarkChanges {
        epoch: u64,
        changes: Vec<MarkChange>,
    },
    End,
}

/// A snapshot imported beside its shard and checked, not switched in yet
/// ([`Shard::prepare_import`], then [`Shard::commit_import`]). Dropped
/// without a commit, its tree is dropped too.
pub struct PreparedImport<S: KvStore = crate::DefaultStore> {
    shard: crate::ShardId,
    generation: u64,
    staging_name: String,
    staging: Option<Shard<S>>,
    summary: SnapshotSummary,
    shared: Arc<crate::shared::Shared<S>>,
}

impl<S: KvStore> PreparedImport<S> {
    /// What the snapshot holds (its applied index and root, checked).
    pub fn summary(&self) -> &SnapshotSummary {
        &self.summary
    }

    /// The shard it was prepared for.
    pub fn shard_id(&self) -> crate::ShardId {
        self.shard
    }
}

impl<S: KvStore> Drop for PreparedImport<S> {
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take() {
            drop(staging);
            // A tree that cannot be dropped now is an abandoned one, which
            // the engine drops when it opens.
            let _ = self.shared.store.drop_tree(&self.staging_name);
        }
    }
}

/// What a snapshot held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub applied_index: u64,
    pub root: Hash,
    pub documents: u64,
    pub chunks: u64,
}

fn encode_chunk(chunk: &Chunk) -> Vec<u8> {
    bincode::encode_to_vec(chunk, bincode::config::standard()).unwrap_or_default()
}

fn decode_chunk(bytes: &[u8]) -> Result<Chunk> {
    let config =
        bincode::config::standard().with_limit::<{ crate::limits::MAX_SNAPSHOT_CHUNK_BYTES }>();
    bincode::decode_from_slice(bytes, config)
        .map(|(c, _)| c)
        .map_err(|e| EngineError::SnapshotRejected(format!("undecodable chunk: {e}")))
}

/// What an export in progress needs from writers: the document records as
/// they were when the export started, for the keys it has not read yet.
///
/// The export reads the documents in key order without the shard's writer
/// lock. A writer about to overwrite or delete a document record the export
/// has not reached (a key past its cursor) first records the record's old
/// value here (once per key). The export then takes the recorded value over
/// the tree's for a key it finds recorded, and at the end adds the recorded
/// records it never met (deleted before it got there). Every record it emits
/// is thus the one at the export's start, and none other: the documents of
/// the root and applied index taken, under the lock, at its start.
pub(crate) struct ExportView {
    /// Document key prefixes of the collections exported.
    prefixes: Vec<Vec<u8>>,
    state: Mutex<ViewState>,
}

#[derive(Default)]
struct ViewState {
    /// The last key the export read; writes at or before it are not its business.
    cursor: Option<Vec<u8>>,
    /// No more recording: the export read everything.
    done: bool,
    /// Old record (None: absent) of each key written past the cursor, and
    /// whether the export met the key.
    before: BTreeMap<Vec<u8>, (Option<Vec<u8>>, bool)>,
}

impl ExportView {
    /// Records what `batch` is about to overwrite, for keys not read yet.
    pub(crate) fn before_write<T: KvTree>(&self, tree: &T, batch: &WriteBatch) -> Result<()> {
        let mut state = self.state.lock();
        if state.done {
            return Ok(());
        }
        for (key, _) in &batch.ops {
            let read = state.cursor.as_ref().is_some_and(|c| key <= c);
            if read
                || state.before.contains_key(key)
                || !self.prefixes.iter().any(|p| key.starts_with(p))
            {
                continue;
            }
            let old = tree.get(key)?.map(|v| v.as_ref().to_vec());
            state.before.insert(key.clone(), (old, false));
        }
        Ok(())
    }

    /// The record the export should take for `key`, read as `current`.
    fn take(&self, key: &[u8], current: &[u8]) -> Option<Vec<u8>> {
        let mut state = self.state.lock();
        state.cursor = Some(key.to_vec());
        match state.before.get_mut(key) {
            Some((old, met)) => {
                *met = true;
                old.clone()
            }
            None => Some(current.to_vec()),
        }
    }

    /// Stops the recording; the records deleted before the export met them.
    fn finish(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut state = self.state.lock();
        state.done = true;
        std::mem::take(&mut state.before)
            .into_iter()
            .filter_map(|(k, (old, met))| old.filter(|_| !met).map(|v| (k, v)))
            .collect()
    }
}

/// Unregisters an export's view from its shard, also when the export fails.
struct ViewGuard<'a, S: KvStore> {
    shard: &'a Shard<S>,
    view: Arc<ExportView>,
}

impl<S: KvStore> Drop for ViewGuard<'_, S> {
    fn drop(&mut self) {
        self.shard
            .inner
            .exports
            .lock()
            .retain(|v| !Arc::ptr_eq(v, &self.view));
    }
}

impl<S: KvStore> Shard<S> {
    /// Streams a consistent snapshot of the shard to `sink`, in chunks of about
    /// `chunk_bytes`: the documents, root and applied index as they were when
    /// it started. Writes to the shard go on meanwhile (the writer lock is
    /// held only while the export takes its starting point; see `ExportView`).
    ///
    /// ```
    /// use stratosdb_engine::{Engine, Value};
    /// let source = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// source.create_collection("c").unwrap();
    /// source.insert("c", Value::from_json_str(r#"{"_id":"a"}"#).unwrap()).unwrap();
    /// let mut chunks = Vec::new();
    /// source.export_snapshot(1 << 20, |chunk| { chunks.push(chunk); Ok(()) }).unwrap();
    ///
    /// let target = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// let summary = target.import_snapshot(chunks).unwrap();
    /// assert_eq!(summary.root, source.root().unwrap());
    /// assert_eq!(target.root().unwrap(), source.root().unwrap());
    /// ```
    pub fn export_snapshot(
        &self,
        chunk_bytes: usize,
        sink: impl FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<SnapshotSummary> {
        self.export_snapshot_paced(chunk_bytes, sink, |_| ())
    }

    /// [`Shard::export_snapshot`], calling `paced` with the count of
    /// documents read after each one (tests use it to write in the middle of
    /// an export).
    #[doc(hidden)]
    pub fn export_snapshot_paced(
        &self,
        chunk_bytes: usize,
        mut sink: impl FnMut(Vec<u8>) -> Result<()>,
        mut paced: impl FnMut(u64),
    ) -> Result<SnapshotSummary> {
        // The starting point, under the writer lock.
        let (root, applied_index, header, exported, tree, mark_changes, view) = {
            let merkle = self.inner.merkle.lock();
            let root = merkle.root();
            let applied_index = self.applied_index()?;
            let names = self.collections();
            let mut collections = Vec::new();
            // (doc key prefix, name), in key order.
            let mut exported = Vec::new();
            let mut documents = 0;
            for name in &names {
                let info = self.collection(name)?;
                documents += info.count;
                collections.push((
                    name.clone(),
                    info.maintained_indexes().map(|i| i.spec.clone()).collect(),
                ));
                exported.push((keys::doc_prefix(info.number), name.clone()));
            }
            exported.sort();
            let header = Chunk::Header {
                version: SNAPSHOT_VERSION,
                applied_index,
                root,
                documents,
                collections,
                marks: self.anchor_marks(),
            };
            let latest = self.latest_anchor_mark();
            let mark_changes = latest.map(|m| (m.epoch, merkle.mark_changes()));
            let view = Arc::new(ExportView {
                prefixes: exported.iter().map(|(p, _)| p.clone()).collect(),
                state: Mutex::new(ViewState::default()),
            });
            self.inner.exports.lock().push(view.clone());
            (
                root,
                applied_index,
                header,
                exported,
                self.tree(),
                mark_changes,
                view,
            )
        };
        let _registered = ViewGuard {
            shard: self,
            view: view.clone(),
        };
        let mut chunks = 1;
        sink(encode_chunk(&header))?;
        let mut documents = 0u64;
        let mut batcher = DocBatcher::new(chunk_bytes);
        for (prefix, name) in &exported {
            let items = tree.clone().range_held(
                Bound::Included(prefix.clone()),
                keys::successor_bound(prefix),
                false,
            );
            for item in items {
                let (key, current) = item?;
                let Some(record) = view.take(key.as_ref(), current.as_ref()) else {
                    continue;
                };
                documents += 1;
                if let Some(chunk) = batcher.push(name, decode_stored(&record)?) {
                    sink(chunk)?;
                    chunks += 1;
                }
                paced(documents);
            }
            if let Some(chunk) = batcher.flush() {
                sink(chunk)?;
                chunks += 1;
            }
        }
        // Documents deleted before the export met them.
        let deleted = view.finish();
        if !Arc::ptr_eq(&tree, &self.tree()) {
            // A snapshot was imported meanwhile: the writers' old records
            // came from the new contents.
            return Err(EngineError::SnapshotRejected(
                "the shard was replaced during the export".into(),
            ));
        }
        for (key, record) in deleted {
            let Some((_, name)) = exported.iter().find(|(p, _)| key.starts_with(p)) else {
                continue;
            };
            documents += 1;
            if let Some(chunk) = batcher.push(name, decode_stored(&record)?) {
                sink(chunk)?;
                chunks += 1;
            }
        }
        if let Some(chunk) = batcher.flush() {
            sink(chunk)?;
            chunks += 1;
        }
        if let Some((epoch, changes)) = mark_changes {
            // About 70 bytes an entry.
            let per_chunk = (chunk_bytes / 70).max(1);
            for changes in changes.chunks(per_chunk) {
                sink(encode_chunk(&Chunk::MarkChanges {
                    epoch,
                    changes: changes.to_vec(),
                }))?;
                chunks += 1;
            }
        }
        sink(encode_chunk(&Chunk::End))?;
        Ok(SnapshotSummary {
            applied_index,
            root,
            documents,
            chunks: chunks + 1,
        })
    }

    /// Replaces the shard's contents with a snapshot. The new contents are built
    /// in a separate tree; only if every chunk is sound and the rebuilt root
    /// equals the exporter's root does the shard switch to it. Otherwise the
    /// shard is unchanged and the error says why.
    pub fn import_snapshot(
        &self,
        chunks: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<SnapshotSummary> {
        let prepared = self.prepare_import(chunks)?;
        self.commit_import(prepared)
    }

    /// The slow half of [`Shard::import_snapshot`]: builds the snapshot's
    /// contents in a tree of their own and checks them (every chunk sound,
    /// the rebuilt root the exporter's), without touching the shard, which
    /// serves (and is written) meanwhile. Each preparation has its own tree;
    /// dropped without a commit, the tree goes.
    pub fn prepare_import(
        &self,
        chunks: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<PreparedImport<S>> {
        let shared = &self.inner.shared;
        // A tree of its own even if another preparation is pending.
        let skip = shared.staging_seq.fetch_add(1, Ordering::Relaxed);
        let (generation, staging_name) = shared.directory.next_tree(self.id(), skip)?;
        let staging_tree = shared.store.open_tree(&staging_name)?;
        match self.fill_staging(staging_tree, chunks) {
            Ok((summary, staging)) => Ok(PreparedImport {
                shard: self.id(),
                generation,
                staging_name,
                staging: Some(staging),
                summary,
                shared: shared.clone(),
            }),
            Err(e) => {
                shared.store.drop_tree(&staging_name)?;
                Err(match e {
                    EngineError::Storage(_) | EngineError::SnapshotRejected(_) => e,
                    // A write the snapshot's own contents made fail (a duplicate, a limit).
                    other => EngineError::SnapshotRejected(other.to_string()),
                })
            }
        }
    }

    /// The quick half of [`Shard::import_snapshot`]: switches the shard to a
    /// prepared import (made durable first, so the directory never points at
    /// a partial tree). Readers still on the old contents finish there.
    pub fn commit_import(&self, mut prepared: PreparedImport<S>) -> Result<SnapshotSummary> {
        if prepared.shard != self.id() {
            return Err(EngineError::SnapshotRejected(format!(
                "an import prepared for shard {} offered to shard {}",
                prepared.shard,
                self.id()
            )));
        }
        let Some(staging) = prepared.staging.take() else {
            return Err(EngineError::SnapshotRejected(
                "the prepared import was already used".into(),
            ));
        };
        let mut merkle = self.inner.merkle.lock();
        let shared = &self.inner.shared;
        let current = shared.directory.current_tree(self.id())?;
        shared.store.flush()?;
        shared.directory.point(self.id(), prepared.generation)?;
        shared.store.flush()?;
        let old = std::mem::replace(&mut *self.inner.tree.write(), staging.tree());
        *self.inner.catalog.write() = staging.inner.catalog.read().clone();
        *self.inner.marks.write() = staging.inner.marks.read().clone();
        *merkle = std::mem::take(&mut *staging.inner.merkle.lock());
        // Readers still on the old tree finish there; the last one drops it.
        Generation::retire(old, shared.clone(), current)?;
        Ok(prepared.summary.clone())
    }

    fn fill_staging(
        &self,
        tree: S::Tree,
        chunks: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<(SnapshotSummary, Shard<S>)> {
        let staging = Shard::open(self.id(), self.inner.shared.clone(), tree.clone())?;
        let mut chunks = chunks.into_iter();
        let reject = |why: String| EngineError::SnapshotRejected(why);
        let first = chunks.next().ok_or_else(|| reject("no chunks".into()))?;
        let Chunk::Header {
            version,
            applied_index,
            root,
            documents,
            collections,
            marks,
        } = decode_chunk(&first)?
        else {
            return Err(reject("the first chunk is not a header".into()));
        };
        if version != SNAPSHOT_VERSION {
            return Err(reject(format!("unknown snapshot version {version}")));
        }
        // Collections first; indexes are built once the documents are in.
        let ddl = collections
            .iter()
            .map(|(name, _)| Op::CreateCollection { name: name.clone() })
            .collect();
        staging.write(ddl, crate::Durability::Buffered)?;
        let mut seen = 0u64;
        let mut count = 1u64;
        let mut mark_changes = Vec::new();
        let latest_epoch = marks.last().map(|m| m.epoch);
        let mut ended = false;
        for bytes in chunks.by_ref() {
            count += 1;
            match decode_chunk(&bytes)? {
                Chunk::Documents { collection, docs } => {
                    seen += docs.len() as u64;
                    let ops = docs
                        .into_iter()
                        .map(|doc| Op::Insert {
                            collection: collection.clone(),
                            doc,
                        })
                        .collect();
                    staging.write(ops, crate::Durability::Buffered)?;
                }
                Chunk::MarkChanges { epoch, changes } => {
                    if Some(epoch) != latest_epoch {
                        return Err(reject(format!(
                            "changes since the mark of epoch {epoch}, which is not the latest mark"
                        )));
                    }
                    mark_changes.extend(changes);
                }
                Chunk::End => {
                    ended = true;
                    break;
                }
                Chunk::Header { .. } => return Err(reject("a second header".into())),
            }
        }
        if !ended || chunks.next().is_some() {
            return Err(reject(
                "the stream does not end with exactly one end chunk".into(),
            ));
        }
        if seen != documents {
            return Err(reject(format!(
                "the header announces {documents} documents, the chunks hold {seen}"
            )));
        }
        for (name, specs) in collections {
            for spec in specs {
                staging.create_index(&name, spec)?;
            }
        }
        let rebuilt = staging.root()?;
        if rebuilt != root {
            return Err(reject(format!(
                "rebuilt root {} differs from the exporter's root {}",
                hex(&rebuilt),
                hex(&root)
            )));
        }
        let mut batch = WriteBatch::default();
        batch.put(
            APPLIED_INDEX_KEY.to_vec(),
            applied_index.to_be_bytes().to_vec(),
        );
        let kept = check_marks(&marks, applied_index)?;
        for mark in &marks {
            batch.put(keys::mark_key(mark.epoch), mark.stored());
        }
        if let Some(epoch) = latest_epoch {
            // Packed (`docs/merkle.md`, "Restart"), in key-hash order.
            mark_changes.sort_unstable();
            if let Some(w) = mark_changes.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(reject(format!(
                    "key hash {} is carried twice as changed since the latest mark",
                    hex(&w[0].0)
                )));
            }
            for pack in mark_changes.chunks(SNAPSHOT_PACK_RECORDS) {
                let mut value = Vec::new();
                encode_records(pack, &mut value);
                batch.put(keys::mark_pack_key(epoch, &pack[0].0), value);
            }
        }
        tree.apply(batch)?;
        // The documents and the changes must lead back to the latest mark's root.
        restore_mark_view(&tree, &mut staging.inner.merkle.lock(), &kept)
            .map_err(|e| reject(e.to_string()))?;
        *staging.inner.marks.write() = kept;
        Ok((
            SnapshotSummary {
                applied_index,
                root,
                documents,
                chunks: count,
            },
            staging,
        ))
    }
}

/// The marks of a snapshot, if they are what a shard could have kept: at
/// most [`MARK_HISTORY`], epochs and raft indexes increasing, none past the
/// snapshot's applied index.
fn check_marks(marks: &[AnchorMark], applied_index: u64) -> Result<Marks> {
    let reject = |why: String| EngineError::SnapshotRejected(why);
    if marks.len() > MARK_HISTORY {
        return Err(reject(format!(
            "{} anchor marks, over the {MARK_HISTORY} a shard keeps",
            marks.len()
        )));
    }
    if marks
        .windows(2)
        .any(|w| w[0].epoch >= w[1].epoch || w[0].raft_index > w[1].raft_index)
    {
        return Err(reject(
            "anchor marks out of epoch or raft index order".into(),
        ));
    }
    if let Some(last) = marks.last().filter(|m| m.raft_index > applied_index) {
        return Err(reject(format!(
            "the mark of epoch {} is at raft index {}, past the snapshot's {applied_index}",
            last.epoch, last.raft_index
        )));
    }
    let mut kept = Marks::default();
    for mark in marks {
        kept.insert(*mark);
    }
    Ok(kept)
}

/// Groups documents into `Documents` chunks of about `chunk_bytes`, one
/// collection per chunk.
struct DocBatcher {
    chunk_bytes: usize,
    collection: String,
    docs: Vec<Value>,
    size: usize,
    scratch: Vec<u8>,
}

impl DocBatcher {
    fn new(chunk_bytes: usize) -> Self {
        DocBatcher {
            chunk_bytes,
            collection: String::new(),
            docs: Vec::new(),
            size: 0,
            scratch: Vec::new(),
        }
    }

    /// Adds a document; a full chunk (or the previous collection's) comes out.
    fn push(&mut self, collection: &str, doc: Value) -> Option<Vec<u8>> {
        let mut out = None;
        if self.collection != collection {
            out = self.flush();
            self.collection = collection.to_string();
        }
        // A chunk carries each document in its storage encoding.
        self.scratch.clear();
        stratosdb_proof::encode_value(&doc, &mut self.scratch);
        self.size += self.scratch.len() + 8;
        self.docs.push(doc);
        if self.size >= self.chunk_bytes && out.is_none() {
            out = self.flush();
        }
        out
    }

    fn flush(&mut self) -> Option<Vec<u8>> {
        if self.docs.is_empty() {
            return None;
        }
        self.size = 0;
        Some(encode_chunk(&Chunk::Documents {
            collection: self.collection.clone(),
            docs: std::mem::take(&mut self.docs),
        }))
    }
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
