//! A shard: a named partition of the engine holding collections of documents,
//! their indexes and the shard's Merkle state. Replication puts one shard in
//! each Raft group; the embedded database uses shard 0.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use stratosdb_proof::hash::{Hash, doc_hash, key_hash};
use stratosdb_proof::{Proof, Value, decode_value};

use crate::catalog::{self, CollectionInfo, IndexInfo, IndexSpec};
use crate::document::{self, Limits};
use crate::engine::Shared;
use crate::keys::{self, APPLIED_INDEX_KEY, NEXT_COLLECTION_KEY};
use crate::storage::{KvStore, KvTree};
use crate::txn::Txn;
use crate::{Command, EngineError, Op, Result, merkle};

/// Shards are numbered.
pub type ShardId = u32;

/// When a write returns, it is applied and visible to reads. `Sync` also waits
/// until it is on disk (one flush shared by all writers waiting at that moment:
/// group commit); `Buffered` leaves that to the next flush (sled's background
/// flush runs every 500 ms, or call [`crate::Engine::flush`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Buffered,
    Sync,
}

/// What one operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpOutcome {
    /// The document's `_id` (for document operations).
    pub id: Option<String>,
    /// Documents inserted, replaced, patched or deleted.
    pub affected: u64,
}

/// What a write did, and whether it is durable yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub outcomes: Vec<OpOutcome>,
    pub durable: bool,
}

/// What [`Shard::apply`] did with a raft entry.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// Applied; the shard's applied index is now the entry's.
    Applied(Vec<OpOutcome>),
    /// The entry's command failed (the same way on every replica): no document
    /// changed, but the applied index advanced past it.
    Rejected(EngineError),
    /// The entry was at or below the applied index: nothing was done.
    AlreadyApplied,
}

/// Bounds of an index scan over the indexed values. A bound with fewer values
/// than the index has fields is a prefix: `Included([5])` as upper bound takes
/// every key that starts with 5, `Excluded([5])` as lower bound skips them all.
#[derive(Clone, Debug, PartialEq)]
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
    /// The storage encoding.
    pub fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    pub fn decode(&self) -> Result<Value> {
        decode_value(self.0.as_ref()).map_err(|e| EngineError::Corruption(e.to_string()))
    }
}

/// An iterator over documents as `(_id, document)`.
pub type DocIter = Box<dyn Iterator<Item = Result<(String, Value)>> + Send>;
/// An iterator over the `_id`s an index scan finds.
pub type IdIter = Box<dyn Iterator<Item = Result<String>> + Send>;

/// A handle on one shard; cheap to clone.
pub struct Shard<S: KvStore = crate::SledStore> {
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
    /// Swapped whole when a snapshot is imported.
    pub tree: RwLock<S::Tree>,
    /// Serializes writers: a write reads and updates the Merkle path and
    /// the catalog, which must not interleave.
    pub write_lock: Mutex<()>,
    /// The catalog, cached; changed only under `write_lock`, after a commit.
    pub catalog: RwLock<HashMap<String, Arc<CollectionInfo>>>,
}

impl<S: KvStore> Shard<S> {
    pub(crate) fn open(id: ShardId, shared: Arc<Shared<S>>, tree: S::Tree) -> Result<Self> {
        let catalog = load_catalog(&tree)?;
        Ok(Shard {
            inner: Arc::new(ShardInner {
                id,
                shared,
                tree: RwLock::new(tree),
                write_lock: Mutex::new(()),
                catalog: RwLock::new(catalog),
            }),
        })
    }

    pub fn id(&self) -> ShardId {
        self.inner.id
    }

    pub(crate) fn tree(&self) -> S::Tree {
        self.inner.tree.read().clone()
    }

    fn limits(&self) -> &Limits {
        &self.inner.shared.config.limits
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

    pub fn create_collection(&self, name: &str) -> Result<()> {
        self.write_one(Op::CreateCollection { name: name.into() })
    }

    pub fn drop_collection(&self, name: &str) -> Result<()> {
        self.write_one(Op::DropCollection { name: name.into() })
    }

    /// Creates an index, building it from the documents already there.
    pub fn create_index(&self, collection: &str, spec: IndexSpec) -> Result<()> {
        self.write_one(Op::CreateIndex {
            collection: collection.into(),
            spec,
        })
    }

    pub fn drop_index(&self, collection: &str, name: &str) -> Result<()> {
        self.write_one(Op::DropIndex {
            collection: collection.into(),
            name: name.into(),
        })
    }

    // ---- document writes ------------------------------------------------

    /// Inserts a document (assigning a ULID `_id` if it has none) and returns its `_id`.
    ///
    /// ```
    /// use stratosdb_engine::{Durability, Engine, Value};
    /// let engine = Engine::open_temporary().unwrap();
    /// let shard = engine.shard(0).unwrap();
    /// shard.create_collection("users").unwrap();
    /// let doc = Value::from_json_str(r#"{"name":"Ann"}"#).unwrap();
    /// let id = shard.insert("users", doc).unwrap();
    /// assert_eq!(id.len(), 26); // a ULID
    /// assert!(shard.get("users", &id).unwrap().is_some());
    /// ```
    pub fn insert(&self, collection: &str, doc: Value) -> Result<String> {
        let result = self.write(
            vec![Op::Insert {
                collection: collection.into(),
                doc,
            }],
            Durability::Buffered,
        )?;
        Ok(result
            .outcomes
            .into_iter()
            .next()
            .and_then(|o| o.id)
            .unwrap_or_default())
    }

    /// Applies the operations atomically: all of them, or (on any error) none.
    /// Documents without `_id` get one first.
    ///
    /// ```
    /// use stratosdb_engine::{Durability, Engine, Op, PatchChange, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// let doc = |s: &str| Value::from_json_str(s).unwrap();
    /// let result = shard
    ///     .write(
    ///         vec![
    ///             Op::CreateCollection { name: "users".into() },
    ///             Op::Insert { collection: "users".into(), doc: doc(r#"{"_id":"u1","n":1}"#) },
    ///             Op::Patch {
    ///                 collection: "users".into(),
    ///                 id: "u1".into(),
    ///                 changes: vec![PatchChange::Set { path: "address.city".into(), value: "Paris".into() }],
    ///             },
    ///         ],
    ///         Durability::Sync,
    ///     )
    ///     .unwrap();
    /// assert!(result.durable);
    /// // A batch with one bad operation changes nothing.
    /// let dup = Op::Insert { collection: "users".into(), doc: doc(r#"{"_id":"u1"}"#) };
    /// let new = Op::Insert { collection: "users".into(), doc: doc(r#"{"_id":"u2"}"#) };
    /// assert!(shard.write(vec![new, dup], Durability::Sync).is_err());
    /// assert!(shard.get("users", "u2").unwrap().is_none());
    /// ```
    pub fn write(&self, mut ops: Vec<Op>, durability: Durability) -> Result<WriteResult> {
        for op in &mut ops {
            if let Op::Insert { doc, .. } | Op::Upsert { doc, .. } = op {
                document::assign_id(doc);
            }
        }
        let outcomes = self.execute(&ops, None)?;
        let durable = self.inner.shared.wait_durable(durability)?;
        Ok(WriteResult { outcomes, durable })
    }

    fn write_one(&self, op: Op) -> Result<()> {
        self.write(vec![op], Durability::Buffered).map(|_| ())
    }

    /// Applies the raft entry at `raft_index`, atomically with the shard's applied
    /// index. Deterministic: the same entries give the same state on every replica.
    ///
    /// ```
    /// use stratosdb_engine::{ApplyOutcome, Command, Engine, Op};
    /// let shard = Engine::open_temporary().unwrap().shard(7).unwrap();
    /// let entry = Command { ops: vec![Op::CreateCollection { name: "c".into() }] }.encode();
    /// assert!(matches!(shard.apply(1, &entry).unwrap(), ApplyOutcome::Applied(_)));
    /// assert!(matches!(shard.apply(1, &entry).unwrap(), ApplyOutcome::AlreadyApplied));
    /// assert_eq!(shard.applied_index().unwrap(), 1);
    /// ```
    pub fn apply(&self, raft_index: u64, command: &[u8]) -> Result<ApplyOutcome> {
        let _guard = self.inner.write_lock.lock();
        if raft_index <= self.applied_index()? {
            return Ok(ApplyOutcome::AlreadyApplied);
        }
        let decoded = Command::decode(command, self.inner.shared.config.max_command_bytes);
        let outcome = match decoded {
            Ok(cmd) => self.execute_locked(&cmd.ops, Some(raft_index)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(outcomes) => Ok(ApplyOutcome::Applied(outcomes)),
            Err(e @ EngineError::Storage(_)) | Err(e @ EngineError::Corruption(_)) => Err(e),
            Err(rejected) => {
                // The command failed on its merits; record that the entry was consumed.
                let tree = self.tree();
                let mut txn = Txn::new(&tree);
                txn.put(
                    APPLIED_INDEX_KEY.to_vec(),
                    raft_index.to_be_bytes().to_vec(),
                );
                tree.apply(txn.into_batch())?;
                self.inner.shared.note_write();
                Ok(ApplyOutcome::Rejected(rejected))
            }
        }
    }

    /// The raft index of the last entry applied (0 if none).
    pub fn applied_index(&self) -> Result<u64> {
        Ok(match self.tree().get(APPLIED_INDEX_KEY)? {
            Some(b) => u64::from_be_bytes(
                b.as_ref()
                    .try_into()
                    .map_err(|_| EngineError::Corruption("applied index".into()))?,
            ),
            None => 0,
        })
    }

    fn execute(&self, ops: &[Op], raft_index: Option<u64>) -> Result<Vec<OpOutcome>> {
        let _guard = self.inner.write_lock.lock();
        self.execute_locked(ops, raft_index)
    }

    /// Runs the operations in one transaction and commits it as one batch.
    fn execute_locked(&self, ops: &[Op], raft_index: Option<u64>) -> Result<Vec<OpOutcome>> {
        let tree = self.tree();
        let mut writer = Writer {
            txn: Txn::new(&tree),
            limits: self.limits(),
            catalog: &self.inner.catalog,
            touched: HashMap::new(),
        };
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(writer.apply_op(op)?);
        }
        let Writer {
            mut txn, touched, ..
        } = writer;
        for (name, info) in &touched {
            match info {
                Some(info) => txn.put(keys::collection_meta_key(name), catalog::encode_info(info)),
                None => txn.delete(keys::collection_meta_key(name)),
            }
        }
        if let Some(index) = raft_index {
            txn.put(APPLIED_INDEX_KEY.to_vec(), index.to_be_bytes().to_vec());
        }
        tree.apply(txn.into_batch())?;
        self.inner.shared.note_write();
        let mut catalog = self.inner.catalog.write();
        for (name, info) in touched {
            match info {
                Some(info) => catalog.insert(name, Arc::new(info)),
                None => catalog.remove(&name),
            };
        }
        Ok(outcomes)
    }

    // ---- reads ----------------------------------------------------------

    /// The document with this `_id`, decoded.
    pub fn get(&self, collection: &str, id: &str) -> Result<Option<Value>> {
        self.get_raw(collection, id)?
            .map(|raw| raw.decode())
            .transpose()
    }

    /// The document with this `_id`, as stored (decode it with [`RawDocument::decode`]).
    pub fn get_raw(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<RawDocument<<S::Tree as KvTree>::Bytes>>> {
        let number = self.collection_number(collection)?;
        Ok(self
            .tree()
            .get(&keys::doc_key(number, id))?
            .map(RawDocument))
    }

    fn collection_number(&self, collection: &str) -> Result<u32> {
        self.inner
            .catalog
            .read()
            .get(collection)
            .map(|c| c.number)
            .ok_or_else(|| EngineError::CollectionNotFound(collection.to_string()))
    }

    /// Documents in `_id` order (byte order of the UTF-8), within bounds.
    pub fn scan(
        &self,
        collection: &str,
        lower: Bound<&str>,
        upper: Bound<&str>,
        reverse: bool,
    ) -> Result<DocIter> {
        let number = self.collection_number(collection)?;
        let prefix = keys::doc_prefix(number);
        let with_prefix = |id: &str| {
            let mut k = prefix.clone();
            k.extend_from_slice(id.as_bytes());
            k
        };
        let lo = match lower {
            Bound::Included(id) => Bound::Included(with_prefix(id)),
            Bound::Excluded(id) => Bound::Excluded(with_prefix(id)),
            Bound::Unbounded => Bound::Included(prefix.clone()),
        };
        let hi = match upper {
            Bound::Included(id) => Bound::Included(with_prefix(id)),
            Bound::Excluded(id) => Bound::Excluded(with_prefix(id)),
            Bound::Unbounded => successor_bound(&prefix),
        };
        if range_is_empty(&lo, &hi) {
            return Ok(Box::new(std::iter::empty()));
        }
        let skip = prefix.len();
        Ok(Box::new(self.tree().range(lo, hi, reverse).map(
            move |item| {
                let (k, v) = item?;
                let id = std::str::from_utf8(&k.as_ref()[skip..])
                    .map_err(|_| EngineError::Corruption("non-UTF-8 _id".into()))?
                    .to_string();
                let doc =
                    decode_value(v.as_ref()).map_err(|e| EngineError::Corruption(e.to_string()))?;
                Ok((id, doc))
            },
        )))
    }

    /// The `_id`s of documents whose indexed values fall in `range`, in index
    /// order (or reversed). A multikey index yields a document once per
    /// distinct matching element.
    pub fn index_scan(
        &self,
        collection: &str,
        index: &str,
        range: &IndexRange,
        reverse: bool,
    ) -> Result<IdIter> {
        let info = self.collection(collection)?;
        let index = info.index(index)?;
        let prefix = keys::index_prefix(info.number, index.number);
        let encode = |values: &[Value]| {
            let mut k = prefix.clone();
            for v in values {
                keys::encode_index_value(Some(v), &mut k);
            }
            k
        };
        let lo = match &range.lower {
            Bound::Included(v) => Bound::Included(encode(v)),
            Bound::Excluded(v) => successor_bound(&encode(v)).map_excluded_to_included(),
            Bound::Unbounded => Bound::Included(prefix.clone()),
        };
        let hi = match &range.upper {
            Bound::Included(v) => successor_bound(&encode(v)),
            Bound::Excluded(v) => Bound::Excluded(encode(v)),
            Bound::Unbounded => successor_bound(&prefix),
        };
        if range_is_empty(&lo, &hi) {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(Box::new(self.tree().range(lo, hi, reverse).map(|item| {
            let (_, id) = item?;
            String::from_utf8(id.as_ref().to_vec())
                .map_err(|_| EngineError::Corruption("non-UTF-8 _id in index".into()))
        })))
    }

    /// The shard's Merkle root: a function of its documents alone.
    pub fn root(&self) -> Result<Hash> {
        let _guard = self.inner.write_lock.lock();
        merkle::root(&self.tree())
    }

    /// A proof that the document is in the shard (with the document as stored),
    /// or that it is absent, against the root returned alongside.
    ///
    /// ```
    /// use stratosdb_engine::{Engine, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// shard.create_collection("c").unwrap();
    /// shard.insert("c", Value::from_json_str(r#"{"_id":"a","n":1}"#).unwrap()).unwrap();
    /// let (root, proof, doc) = shard.prove("c", "a").unwrap();
    /// proof.verify(&root, doc.as_ref()).unwrap(); // inclusion
    /// let (root, proof, doc) = shard.prove("c", "zz").unwrap();
    /// assert!(doc.is_none());
    /// proof.verify(&root, None).unwrap(); // non-inclusion
    /// ```
    pub fn prove(&self, collection: &str, id: &str) -> Result<(Hash, Proof, Option<Value>)> {
        let _guard = self.inner.write_lock.lock();
        let tree = self.tree();
        let root = merkle::root(&tree)?;
        let proof = merkle::prove(&tree, collection, id)?;
        let doc = match self.collection_number(collection) {
            Ok(number) => tree
                .get(&keys::doc_key(number, id))?
                .map(|b| decode_value(b.as_ref()))
                .transpose()
                .map_err(|e| EngineError::Corruption(e.to_string()))?,
            Err(_) => None,
        };
        Ok((root, proof, doc))
    }

    /// Recomputes the root from every document (O(n)); equals [`Shard::root`]
    /// unless the stored Merkle state is damaged. For checks and tests.
    pub fn root_from_scratch(&self) -> Result<Hash> {
        let _guard = self.inner.write_lock.lock();
        let mut leaves = Vec::new();
        for name in self.collections() {
            for item in self.scan(&name, Bound::Unbounded, Bound::Unbounded, false)? {
                let (id, doc) = item?;
                leaves.push((key_hash(&name, &id), doc_hash(&doc)));
            }
        }
        Ok(merkle::root_from_scratch(&mut leaves))
    }
}

trait BoundExt {
    fn map_excluded_to_included(self) -> Self;
}

impl BoundExt for Bound<Vec<u8>> {
    /// The successor of a prefix is the first key past it, so it is included.
    fn map_excluded_to_included(self) -> Self {
        match self {
            Bound::Excluded(k) => Bound::Included(k),
            other => other,
        }
    }
}

/// The exclusive upper bound just past every key starting with `prefix`.
fn successor_bound(prefix: &[u8]) -> Bound<Vec<u8>> {
    match keys::prefix_successor(prefix) {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    }
}

/// sled panics on an inverted range; an inverted range is simply empty.
fn range_is_empty(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

fn load_catalog<T: KvTree>(tree: &T) -> Result<HashMap<String, Arc<CollectionInfo>>> {
    let prefix = keys::collection_meta_prefix();
    let mut out = HashMap::new();
    for item in tree.range(
        Bound::Included(prefix.clone()),
        successor_bound(&prefix),
        false,
    ) {
        let (_, v) = item?;
        let info = catalog::decode_info(v.as_ref())?;
        out.insert(info.name.clone(), Arc::new(info));
    }
    Ok(out)
}

/// The state of one write transaction: its batch, and the catalog entries it changed.
struct Writer<'a, T: KvTree> {
    txn: Txn<'a, T>,
    limits: &'a Limits,
    catalog: &'a RwLock<HashMap<String, Arc<CollectionInfo>>>,
    /// Collections changed so far (None: dropped).
    touched: HashMap<String, Option<CollectionInfo>>,
}

impl<T: KvTree> Writer<'_, T> {
    fn info(&self, name: &str) -> Option<CollectionInfo> {
        match self.touched.get(name) {
            Some(info) => info.clone(),
            None => self.catalog.read().get(name).map(|i| (**i).clone()),
        }
    }

    fn existing(&self, name: &str) -> Result<CollectionInfo> {
        self.info(name)
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_string()))
    }

    fn apply_op(&mut self, op: &Op) -> Result<OpOutcome> {
        let none = |affected| OpOutcome { id: None, affected };
        match op {
            Op::CreateCollection { name } => {
                catalog::validate_name(name).map_err(|reason| {
                    EngineError::InvalidCollectionName {
                        name: name.clone(),
                        reason,
                    }
                })?;
                if self.info(name).is_some() {
                    return Err(EngineError::CollectionExists(name.clone()));
                }
                let number = match self.txn.get(NEXT_COLLECTION_KEY)? {
                    Some(b) => u32::from_be_bytes(
                        b.as_slice()
                            .try_into()
                            .map_err(|_| EngineError::Corruption("collection counter".into()))?,
                    ),
                    None => 1,
                };
                self.txn.put(
                    NEXT_COLLECTION_KEY.to_vec(),
                    (number + 1).to_be_bytes().to_vec(),
                );
                self.touched.insert(
                    name.clone(),
                    Some(CollectionInfo {
                        name: name.clone(),
                        number,
                        count: 0,
                        next_index_number: 1,
                        indexes: Vec::new(),
                    }),
                );
                Ok(none(0))
            }
            Op::DropCollection { name } => {
                let info = self.existing(name)?;
                let prefix = keys::doc_prefix(info.number);
                for key in self
                    .txn
                    .keys_in(&prefix, keys::prefix_successor(&prefix).as_deref())?
                {
                    let id = id_from_doc_key(&key, prefix.len())?;
                    merkle::update(&mut self.txn, &key_hash(name, &id), None)?;
                    self.txn.delete(key);
                }
                for index in &info.indexes {
                    self.delete_index_entries(&info, index)?;
                }
                self.touched.insert(name.clone(), None);
                Ok(none(0))
            }
            Op::CreateIndex { collection, spec } => {
                let mut info = self.existing(collection)?;
                validate_index_spec(spec)?;
                if info.indexes.iter().any(|i| i.spec.name == spec.name) {
                    return Err(EngineError::IndexExists {
                        collection: collection.clone(),
                        index: spec.name.clone(),
                    });
                }
                let mut index = IndexInfo {
                    spec: spec.clone(),
                    number: info.next_index_number,
                    multikey: false,
                };
                info.next_index_number += 1;
                // Build from the documents already there.
                let prefix = keys::doc_prefix(info.number);
                for key in self
                    .txn
                    .keys_in(&prefix, keys::prefix_successor(&prefix).as_deref())?
                {
                    let id = id_from_doc_key(&key, prefix.len())?;
                    let bytes = self.txn.get(&key)?.unwrap_or_default();
                    let doc =
                        decode_value(&bytes).map_err(|e| EngineError::Corruption(e.to_string()))?;
                    self.add_index_entries(&info, &mut index, &id, &doc)?;
                }
                info.indexes.push(index);
                self.touched.insert(collection.clone(), Some(info));
                Ok(none(0))
            }
            Op::DropIndex { collection, name } => {
                let mut info = self.existing(collection)?;
                let index = info.index(name)?.clone();
                self.delete_index_entries(&info, &index)?;
                info.indexes.retain(|i| i.spec.name != *name);
                self.touched.insert(collection.clone(), Some(info));
                Ok(none(0))
            }
            Op::Insert { collection, doc } => self.put_doc(collection, doc, PutMode::Insert),
            Op::Replace { collection, doc } => self.put_doc(collection, doc, PutMode::Replace),
            Op::Upsert { collection, doc } => self.put_doc(collection, doc, PutMode::Upsert),
            Op::Patch {
                collection,
                id,
                changes,
            } => {
                let info = self.existing(collection)?;
                let old =
                    self.read_doc(&info, id)?
                        .ok_or_else(|| EngineError::DocumentNotFound {
                            collection: collection.clone(),
                            id: id.clone(),
                        })?;
                let new = document::apply_patch(&old, changes)?;
                self.put_doc(collection, &new, PutMode::Replace)
            }
            Op::Delete { collection, id } => {
                let mut info = self.existing(collection)?;
                let Some(old) = self.read_doc(&info, id)? else {
                    return Ok(OpOutcome {
                        id: Some(id.clone()),
                        affected: 0,
                    });
                };
                for index in info.indexes.clone() {
                    for key in index_keys(&info, &index, id, &old)?.0 {
                        self.txn.delete(key);
                    }
                }
                merkle::update(&mut self.txn, &key_hash(collection, id), None)?;
                self.txn.delete(keys::doc_key(info.number, id));
                info.count -= 1;
                self.touched.insert(collection.clone(), Some(info));
                Ok(OpOutcome {
                    id: Some(id.clone()),
                    affected: 1,
                })
            }
        }
    }

    fn read_doc(&self, info: &CollectionInfo, id: &str) -> Result<Option<Value>> {
        self.txn
            .get(&keys::doc_key(info.number, id))?
            .map(|b| decode_value(&b).map_err(|e| EngineError::Corruption(e.to_string())))
            .transpose()
    }

    fn put_doc(&mut self, collection: &str, doc: &Value, mode: PutMode) -> Result<OpOutcome> {
        let mut info = self.existing(collection)?;
        let (id, bytes) = document::validate(doc, self.limits)?;
        let old = self.read_doc(&info, &id)?;
        match (&old, mode) {
            (Some(_), PutMode::Insert) => {
                return Err(EngineError::DuplicateId {
                    collection: collection.to_string(),
                    id,
                });
            }
            (None, PutMode::Replace) => {
                return Err(EngineError::DocumentNotFound {
                    collection: collection.to_string(),
                    id,
                });
            }
            _ => {}
        }
        let mut indexes = std::mem::take(&mut info.indexes);
        for index in &mut indexes {
            if let Some(old) = &old {
                for key in index_keys(&info, index, &id, old)?.0 {
                    self.txn.delete(key);
                }
            }
            self.add_index_entries(&info, index, &id, doc)?;
        }
        info.indexes = indexes;
        merkle::update(
            &mut self.txn,
            &key_hash(collection, &id),
            Some(doc_hash(doc)),
        )?;
        self.txn.put(keys::doc_key(info.number, &id), bytes);
        if old.is_none() {
            info.count += 1;
        }
        self.touched.insert(collection.to_string(), Some(info));
        Ok(OpOutcome {
            id: Some(id),
            affected: 1,
        })
    }

    /// Writes a document's entries in one index, enforcing UNIQUE.
    fn add_index_entries(
        &mut self,
        info: &CollectionInfo,
        index: &mut IndexInfo,
        id: &str,
        doc: &Value,
    ) -> Result<()> {
        let (entries, multikey) = index_keys(info, index, id, doc)?;
        index.multikey |= multikey;
        for key in entries {
            if index.spec.unique
                && let Some(existing) = self.txn.get(&key)?
                && existing != id.as_bytes()
            {
                return Err(EngineError::UniqueViolation {
                    collection: info.name.clone(),
                    index: index.spec.name.clone(),
                    key: unique_key_display(index, doc),
                    existing_id: String::from_utf8_lossy(&existing).into_owned(),
                });
            }
            self.txn.put(key, id.as_bytes().to_vec());
        }
        Ok(())
    }

    fn delete_index_entries(&mut self, info: &CollectionInfo, index: &IndexInfo) -> Result<()> {
        let prefix = keys::index_prefix(info.number, index.number);
        for key in self
            .txn
            .keys_in(&prefix, keys::prefix_successor(&prefix).as_deref())?
        {
            self.txn.delete(key);
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum PutMode {
    Insert,
    Replace,
    Upsert,
}

fn id_from_doc_key(key: &[u8], prefix_len: usize) -> Result<String> {
    String::from_utf8(key[prefix_len..].to_vec())
        .map_err(|_| EngineError::Corruption("non-UTF-8 _id".into()))
}

fn validate_index_spec(spec: &IndexSpec) -> Result<()> {
    catalog::validate_name(&spec.name)
        .map_err(|reason| EngineError::InvalidIndex(format!("name {:?}: {reason}", spec.name)))?;
    if spec.fields.is_empty() || spec.fields.len() > 16 {
        return Err(EngineError::InvalidIndex(format!(
            "an index has 1 to 16 fields, not {}",
            spec.fields.len()
        )));
    }
    for field in &spec.fields {
        document::parse_path(field)?;
    }
    Ok(())
}

/// The storage keys of a document's entries in an index, and whether an array
/// was involved. A compound index fans out over at most one array field.
/// UNIQUE applies to entries whose values are all present and non-null (as in
/// SQL, where NULLs are distinct): the others carry the `_id` in their key.
fn index_keys(
    info: &CollectionInfo,
    index: &IndexInfo,
    id: &str,
    doc: &Value,
) -> Result<(Vec<Vec<u8>>, bool)> {
    let mut per_field = Vec::with_capacity(index.spec.fields.len());
    let mut multikey = false;
    let mut fanned_fields = Vec::new();
    for field in &index.spec.fields {
        let path = document::parse_path(field)?;
        let (values, fanned) = document::path_values_and_fanout(doc, &path);
        if values.len() > 1 {
            fanned_fields.push(field.clone());
        }
        multikey |= fanned;
        per_field.push(values);
    }
    if fanned_fields.len() > 1 {
        return Err(EngineError::ParallelArrays(fanned_fields));
    }
    let prefix = keys::index_prefix(info.number, index.number);
    let mut out: Vec<Vec<u8>> = vec![prefix];
    let mut nullish = vec![false];
    for values in &per_field {
        let mut next = Vec::with_capacity(out.len() * values.len());
        let mut next_nullish = Vec::with_capacity(out.len() * values.len());
        for (key, null) in out.iter().zip(&nullish) {
            for v in values {
                let mut k = key.clone();
                keys::encode_index_value(*v, &mut k);
                next.push(k);
                next_nullish.push(*null || matches!(v, None | Some(Value::Null)));
            }
        }
        out = next;
        nullish = next_nullish;
    }
    for (key, null) in out.iter_mut().zip(&nullish) {
        if !index.spec.unique || *null {
            key.extend_from_slice(id.as_bytes());
        }
    }
    out.sort();
    out.dedup();
    Ok((out, multikey))
}

fn unique_key_display(index: &IndexInfo, doc: &Value) -> String {
    let parts: Vec<String> = index
        .spec
        .fields
        .iter()
        .map(|f| {
            let path = document::parse_path(f).unwrap_or_default();
            let values = document::path_values(doc, &path);
            let shown: Vec<String> = values
                .iter()
                .map(|v| v.map_or("missing".to_string(), |v| v.to_json_string()))
                .collect();
            format!("{f}={}", shown.join("|"))
        })
        .collect();
    parts.join(", ")
}
