//! Shard snapshots: a consistent export streamed in chunks, and an import that
//! rebuilds the shard beside the old one, checks the root, then swaps it in.
//!
//! Only the catalog, the documents and the anchor marks travel. Indexes and Merkle nodes are
//! rebuilt on import: that costs CPU on the receiver, but it is also what lets
//! the receiver check the exporter's root instead of trusting shipped nodes.

use std::ops::Bound;

use bincode::{Decode, Encode};
use stratosdb_proof::Value;
use stratosdb_proof::hash::Hash;

use crate::anchor::{AnchorMark, MARK_HISTORY, MarkChange, Marks, mark_change_value};
use crate::keys::APPLIED_INDEX_KEY;
use crate::shard::{Shard, restore_mark_view};
use crate::storage::{KvStore, KvTree, WriteBatch};
use crate::{EngineError, IndexSpec, Op, Result, keys};

/// Version 2 carries the anchor marks and the changes since the latest.
const SNAPSHOT_VERSION: u8 = 2;

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

impl<S: KvStore> Shard<S> {
    /// Streams a consistent snapshot of the shard to `sink`, in chunks of about
    /// `chunk_bytes`. Writes to this shard wait until the export is done.
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
        mut sink: impl FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<SnapshotSummary> {
        // Holding the trie's lock keeps writers out for the whole export.
        let merkle = self.inner.merkle.lock();
        let root = merkle.root();
        let applied_index = self.applied_index()?;
        let names = self.collections();
        let mut collections = Vec::new();
        let mut documents = 0;
        for name in &names {
            let info = self.collection(name)?;
            documents += info.count;
            collections.push((
                name.clone(),
                info.maintained_indexes().map(|i| i.spec.clone()).collect(),
            ));
        }
        let mut chunks = 1;
        sink(encode_chunk(&Chunk::Header {
            version: SNAPSHOT_VERSION,
            applied_index,
            root,
            documents,
            collections,
            marks: self.anchor_marks(),
        }))?;
        let mut scratch = Vec::new();
        for name in &names {
            let mut docs = Vec::new();
            let mut size = 0;
            for item in self.scan(name, Bound::Unbounded, Bound::Unbounded, false)? {
                let (_, doc) = item?;
                // A chunk carries each document in its storage encoding.
                scratch.clear();
                stratosdb_proof::encode_value(&doc, &mut scratch);
                size += scratch.len() + 8;
                docs.push(doc);
                if size >= chunk_bytes {
                    sink(encode_chunk(&Chunk::Documents {
                        collection: name.clone(),
                        docs: std::mem::take(&mut docs),
                    }))?;
                    chunks += 1;
                    size = 0;
                }
            }
            if !docs.is_empty() {
                sink(encode_chunk(&Chunk::Documents {
                    collection: name.clone(),
                    docs,
                }))?;
                chunks += 1;
            }
        }
        if let Some(latest) = self.latest_anchor_mark() {
            // About 70 bytes an entry.
            let per_chunk = (chunk_bytes / 70).max(1);
            for changes in merkle.mark_changes().chunks(per_chunk) {
                sink(encode_chunk(&Chunk::MarkChanges {
                    epoch: latest.epoch,
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
        let mut merkle = self.inner.merkle.lock();
        let shared = &self.inner.shared;
        let current = shared.directory.current_tree(self.id())?;
        let (generation, staging_name) = shared.directory.next_tree(self.id())?;
        let staging_tree = shared.store.open_tree(&staging_name)?;
        let result = self.fill_staging(staging_tree.clone(), chunks);
        let (summary, staging) = match result {
            Ok(ok) => ok,
            Err(e) => {
                shared.store.drop_tree(&staging_name)?;
                return Err(match e {
                    EngineError::Storage(_) | EngineError::SnapshotRejected(_) => e,
                    // A write the snapshot's own contents made fail (a duplicate, a limit).
                    other => EngineError::SnapshotRejected(other.to_string()),
                });
            }
        };
        // Durable before the switch, so the directory never points at a partial tree.
        shared.store.flush()?;
        shared.directory.point(self.id(), generation)?;
        shared.store.flush()?;
        *self.inner.tree.write() = staging_tree;
        *self.inner.catalog.write() = staging.inner.catalog.read().clone();
        *self.inner.marks.write() = staging.inner.marks.read().clone();
        *merkle = std::mem::take(&mut *staging.inner.merkle.lock());
        shared.store.drop_tree(&current)?;
        Ok(summary)
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
            for (key, doc) in mark_changes {
                batch.put(keys::mark_change_key(epoch, &key), mark_change_value(doc));
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

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
