//! A shard: a named partition of the engine holding collections of documents,
//! their indexes and the shard's Merkle state. Replication puts one shard in
//! each Raft group; the embedded database uses shard 0.
//!
//! - this file: the handle, opening (catalog, Merkle rebuild), the catalog;
//! - `read.rs`: point reads, scans, index scans, root and proofs;
//! - `anchored.rs`: anchor marks and proofs against the latest one;
//! - `export.rs`: the documents and the changes since the mark, page by page;
//! - `write.rs`: writes and raft applies, run as one atomic batch each;
//! - `writer.rs`: what each operation does inside a batch;
//! - `maintenance.rs`: DDL that runs in chunks (index builds, garbage).

mod anchored;
mod export;
pub use export::{ExportPage, ExportedDocument, MarkChange};
mod generation;
mod maintenance;
mod read;
pub use read::ProvenSet;
mod write;
mod writer;

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use stratosdb_proof::hash::{key_hash, to_hex};
use stratosdb_proof::{Value, decode_value};

use crate::anchor::{Marks, load_mark_changes};
use crate::catalog::{self, CollectionInfo};
use crate::keys::{self, LAYOUT_VERSION, LAYOUT_VERSION_KEY};
use crate::merkle::MerkleTree;
use crate::shared::Shared;
use crate::storage::{KvStore, KvTree, WriteBatch};
use crate::{EngineError, Op, Result};
pub(crate) use generation::Generation;

pub use crate::commit::Durability;
pub use write::{ApplyOutcome, Entries, OpOutcome, WriteResult};

pub use crate::directory::ShardId;

/// Bounds of an index scan over the indexed values. A bound with fewer values
/// than the index has fields is a prefix: `Included([5])` as upper bound takes
/// every key that starts with 5, `Excluded([5])` as lower bound skips them all.
#[derive(Clone, Debug, PartialEq, bincode::Encode, bincode::Decode)]
pub struct IndexRange {
    pub lower: Bound<Vec<Value>>,
    pub upper: Bound<Vec<Value>>,
}

impl IndexRange {
    /// Every entry of the index.
    pub fn all() -> Self {
        IndexRange {
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
        }
    }

    /// Entries whose leading fields equal `values`.
    pub fn prefix(values: Vec<Value>) -> Self {
        IndexRange {
            lower: Bound::Included(values.clone()),
            upper: Bound::Included(values),
        }
    }
}

/// A stored document, not yet decoded: what a point read returns cheaply.
#[derive(Clone)]
pub struct RawDocument<B>(B);

impl<B: AsRef<[u8]>> RawDocument<B> {
    /// The storage encoding of the document.
    pub fn bytes(&self) -> &[u8] {
        self.0
            .as_ref()
            .get(keys::DOC_HASH_BYTES..)
            .unwrap_or_default()
    }

    /// The document's hash (`doc_hash`, the Merkle leaf's document part): what
    /// a conditional write ([`Op::Expect`]) compares.
    pub fn hash(&self) -> Result<stratosdb_proof::Hash> {
        keys::split_doc_record(self.0.as_ref())
            .map(|(hash, _)| hash)
            .ok_or_else(|| EngineError::Corruption("truncated document record".into()))
    }

    pub fn decode(&self) -> Result<Value> {
        decode_stored(self.0.as_ref())
    }
}

/// Decodes a document record read from storage: a failure is corruption, not
/// bad input.
pub(crate) fn decode_stored(record: &[u8]) -> Result<Value> {
    let (_, encoded) = keys::split_doc_record(record)
        .ok_or_else(|| EngineError::Corruption("truncated document record".into()))?;
    decode_value(encoded).map_err(|e| EngineError::Corruption(format!("stored document: {e}")))
}

/// Writes `batch` to the shard's `tree`, first handing the snapshot exports
/// that run the document records it is about to overwrite or delete.
pub(crate) fn apply_noted<S: KvStore>(
    inner: &ShardInner<S>,
    tree: &S::Tree,
    batch: WriteBatch,
) -> Result<()> {
    note_exports(inner, tree, &batch)?;
    tree.apply(batch)
}

/// Hands the snapshot exports that run the document records `batch` is about
/// to overwrite or delete in `tree`.
pub(crate) fn note_exports<S: KvStore>(
    inner: &ShardInner<S>,
    tree: &S::Tree,
    batch: &WriteBatch,
) -> Result<()> {
    let views = inner.exports.lock().clone();
    for view in views {
        view.before_write(tree, batch)?;
    }
    Ok(())
}

/// An iterator over documents as `(_id, document)`.
pub type DocIter = Box<dyn Iterator<Item = Result<(String, Value)>> + Send>;
/// An iterator over the `_id`s an index scan finds.
pub type IdIter = Box<dyn Iterator<Item = Result<String>> + Send>;

/// A handle on one shard; cheap to clone.
pub struct Shard<S: KvStore = crate::DefaultStore> {
    pub(crate) inner: Arc<ShardInner<S>>,
}

impl<S: KvStore> Clone for Shard<S> {
    fn clone(&self) -> Self {
        Shard {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct ShardInner<S: KvStore> {
    pub id: ShardId,
    pub shared: Arc<Shared<S>>,
    /// Swapped whole when a snapshot is imported; the old generation is
    /// dropped once its last reader is done with it.
    pub tree: RwLock<Arc<Generation<S>>>,
    /// Serializes writers (a write reads and changes the Merkle trie and the
    /// catalog, which must not interleave) and holds the trie they change.
    pub merkle: Mutex<MerkleTree>,
    /// The catalog, cached; changed only under the `merkle` lock, after a commit.
    pub catalog: RwLock<HashMap<String, Arc<CollectionInfo>>>,
    /// The anchor marks kept, cached like the catalog.
    pub marks: RwLock<Marks>,
    /// Snapshot exports reading the documents as they were when they
    /// started: writers hand them what they overwrite first.
    pub exports: Mutex<Vec<Arc<crate::snapshot::ExportView>>>,
}

impl<S: KvStore> Shard<S> {
    /// Opens a shard on its tree: checks the layout, loads the catalog and
    /// rebuilds the Merkle trie from the document records' hashes.
    pub(crate) fn open(id: ShardId, shared: Arc<Shared<S>>, tree: S::Tree) -> Result<Self> {
        check_layout(id, &tree)?;
        let catalog = load_catalog(&tree)?;
        let mut merkle = rebuild_merkle(&tree, &catalog)?;
        let marks = Marks::load(&tree)?;
        restore_mark_view(&tree, &mut merkle, &marks)?;
        Ok(Shard {
            inner: Arc::new(ShardInner {
                id,
                shared,
                tree: RwLock::new(Generation::new(tree)),
                merkle: Mutex::new(merkle),
                catalog: RwLock::new(catalog),
                marks: RwLock::new(marks),
                exports: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn id(&self) -> ShardId {
        self.inner.id
    }

    /// The current generation of the shard's tree: reads through it stay
    /// on it even if a snapshot import switches the shard meanwhile.
    pub(crate) fn tree(&self) -> Arc<Generation<S>> {
        self.inner.tree.read().clone()
    }

    // ---- catalog --------------------------------------------------------

    /// Names of the collections, sorted.
    pub fn collections(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.catalog.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// A collection's metadata: document count and indexes.
    pub fn collection(&self, name: &str) -> Result<Arc<CollectionInfo>> {
        self.inner
            .catalog
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_string()))
    }

    pub(crate) fn collection_number(&self, collection: &str) -> Result<u32> {
        self.inner
            .catalog
            .read()
            .get(collection)
            .map(|c| c.number)
            .ok_or_else(|| EngineError::CollectionNotFound(collection.to_string()))
    }

    pub fn create_collection(&self, name: &str) -> Result<()> {
        self.write_one(Op::CreateCollection { name: name.into() })
    }

    fn write_one(&self, op: Op) -> Result<()> {
        self.write(vec![op], Durability::Buffered).map(|_| ())
    }
}

/// A new tree gets the current layout; a tree with data but another (or no)
/// layout version was written by an older stratosdb and is refused.
fn check_layout<T: KvTree>(id: ShardId, tree: &T) -> Result<()> {
    match tree.get(LAYOUT_VERSION_KEY)? {
        Some(v) if v.as_ref() == [LAYOUT_VERSION] => Ok(()),
        Some(v) => Err(EngineError::UnsupportedLayout {
            shard: id,
            found: v.as_ref().first().copied().unwrap_or(0),
            expected: LAYOUT_VERSION,
        }),
        None => {
            let empty = tree
                .range(Bound::Unbounded, Bound::Unbounded, false)
                .next()
                .is_none();
            if !empty {
                return Err(EngineError::UnsupportedLayout {
                    shard: id,
                    found: 1,
                    expected: LAYOUT_VERSION,
                });
            }
            let mut batch = WriteBatch::default();
            batch.put(LAYOUT_VERSION_KEY.to_vec(), vec![LAYOUT_VERSION]);
            tree.apply(batch)
        }
    }
}

fn load_catalog<T: KvTree>(tree: &T) -> Result<HashMap<String, Arc<CollectionInfo>>> {
    let prefix = keys::collection_meta_prefix();
    let mut out = HashMap::new();
    for item in tree.range(
        Bound::Included(prefix.clone()),
        keys::successor_bound(&prefix),
        false,
    ) {
        let (_, v) = item?;
        let info = catalog::decode_info(v.as_ref())?;
        out.insert(info.name.clone(), Arc::new(info));
    }
    Ok(out)
}

/// The trie of every document of the shard, from the hashes in the records.
fn rebuild_merkle<T: KvTree>(
    tree: &T,
    catalog: &HashMap<String, Arc<CollectionInfo>>,
) -> Result<MerkleTree> {
    let mut leaves = Vec::new();
    for info in catalog.values() {
        let prefix = keys::doc_prefix(info.number);
        for item in tree.range(
            Bound::Included(prefix.clone()),
            keys::successor_bound(&prefix),
            false,
        ) {
            let (key, record) = item?;
            let id = id_from_doc_key(key.as_ref(), prefix.len())?;
            let (hash, _) = keys::split_doc_record(record.as_ref())
                .ok_or_else(|| EngineError::Corruption("truncated document record".into()))?;
            leaves.push((key_hash(&info.name, id), hash));
        }
    }
    Ok(MerkleTree::from_leaves(&mut leaves))
}

/// Rebuilds the trie as of the latest anchor mark from the stored records of
/// what changed since (`merkle/mark.rs`); they must lead back to its root.
pub(crate) fn restore_mark_view<T: KvTree>(
    tree: &T,
    merkle: &mut MerkleTree,
    marks: &Marks,
) -> Result<()> {
    let Some(latest) = marks.latest() else {
        return Ok(());
    };
    let changes = load_mark_changes(tree, latest.epoch)?;
    merkle
        .restore_view(latest.epoch, &latest.root, changes.all.clone(), changes.open)
        .map_err(|found| {
            EngineError::Corruption(format!(
                "the documents and the changes recorded since the anchor mark of epoch {} lead back to root {}, not the mark's root {}",
                latest.epoch,
                to_hex(&found),
                to_hex(&latest.root)
            ))
        })?;
    // The mark before: only an aid to anchoring proofs, so a view that its
    // records do not rebuild (a snapshot carries none) is left out.
    if let Some(previous) = marks.before_latest() {
        let own = load_mark_changes(tree, previous.epoch)?;
        merkle.restore_previous_view(previous.epoch, &previous.root, &changes.all, &own.all);
    }
    Ok(())
}

pub(crate) fn id_from_doc_key(key: &[u8], prefix_len: usize) -> Result<&str> {
    key.get(prefix_len..)
        .and_then(|id| std::str::from_utf8(id).ok())
        .ok_or_else(|| EngineError::Corruption("non-UTF-8 _id in a document key".into()))
}
