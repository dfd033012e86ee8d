//! What each operation does inside a write batch: one method per [`Op`]. The
//! writer reads through its overlay (so later operations see earlier ones),
//! changes the Merkle trie in a pending transaction, and records which catalog
//! entries changed; [`Writer::finish`] hands all of it over for commit.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use stratosdb_proof::Value;
use stratosdb_proof::hash::{Hash, doc_hash, key_hash};

use super::{decode_stored, id_from_doc_key};
use crate::anchor::{
    AnchorMark, MARK_HISTORY, MarkChange, Marks, applied_index_of, applied_value, encode_records,
};
use crate::catalog::{self, CollectionInfo, IndexBuild, IndexInfo, IndexSpec};
use crate::document;
use crate::index_keys::{index_keys, unique_key_display};
use crate::keys::{self, APPLIED_INDEX_KEY, NEXT_COLLECTION_KEY};
use crate::limits::{DROP_STEP, Limits, MARK_CHANGE_CLEANUP, OPEN_MARK_RECORDS};
use crate::merkle::{MerkleChanges, MerkleTree, MerkleTxn};
use crate::storage::{KvTree, WriteBatch};
use crate::txn::Txn;
use crate::{EngineError, Op, OpOutcome, PatchChange, Result};

type Catalog = RwLock<HashMap<String, Arc<CollectionInfo>>>;
/// Collections changed by the batch (`None`: dropped).
pub(super) type Touched = HashMap<String, Option<CollectionInfo>>;

/// What a batch changes, handed over for commit by [`Writer::finish`].
pub(super) struct Finished {
    pub batch: WriteBatch,
    pub merkle: MerkleChanges,
    pub touched: Touched,
    /// Anchor marks the batch recorded, in order.
    pub marks: Vec<AnchorMark>,
}

pub(super) struct Writer<'a, T: KvTree> {
    txn: Txn<'a, T>,
    merkle: MerkleTxn<'a>,
    limits: &'a Limits,
    catalog: &'a Catalog,
    touched: Touched,
    /// What the current command changed in `touched`: each name once, with
    /// its entry before the command (`None`: it had none), for rollback.
    touched_undo: Vec<(String, Option<Option<CollectionInfo>>)>,
    /// UNIQUE entries the current command took over from other documents.
    unique_clashes: Vec<UniqueClash>,
    /// The shard's marks before the batch, and those the batch adds.
    marks: &'a RwLock<Marks>,
    new_marks: Vec<AnchorMark>,
    /// The raft index of the command running (for a direct write, the
    /// applied index): what an anchor mark records.
    raft_index: u64,
}

/// A UNIQUE index entry written over another document's.
struct UniqueClash {
    collection: String,
    index: String,
    key: Vec<u8>,
    /// The clashing values, for the error message.
    shown: String,
    /// The document that held the entry.
    holder: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PutMode {
    Insert,
    Replace,
    Upsert,
}

impl<'a, T: KvTree> Writer<'a, T> {
    pub fn new(
        tree: &'a T,
        merkle: &'a MerkleTree,
        limits: &'a Limits,
        catalog: &'a Catalog,
        marks: &'a RwLock<Marks>,
    ) -> Self {
        Writer {
            txn: Txn::new(tree),
            merkle: MerkleTxn::new(merkle),
            limits,
            catalog,
            touched: HashMap::new(),
            touched_undo: Vec::new(),
            unique_clashes: Vec::new(),
            marks,
            new_marks: Vec::new(),
            raft_index: 0,
        }
    }

    /// Runs one command's operations, applied at `raft_index`; if one fails,
    /// the command's writes are undone and the error returned (earlier
    /// commands of the batch stay).
    pub fn run_command(&mut self, ops: &[Op], raft_index: u64) -> Result<Vec<OpOutcome>> {
        if ops.len() > 1 && ops.iter().any(|op| matches!(op, Op::AnchorMark { .. })) {
            return Err(EngineError::InvalidAnchorMark(
                "an anchor mark must be the only operation of its command".into(),
            ));
        }
        self.raft_index = raft_index;
        self.txn.begin_command();
        self.merkle.begin_command();
        self.touched_undo.clear();
        self.unique_clashes.clear();
        let result: Result<Vec<OpOutcome>> = ops
            .iter()
            .map(|op| self.apply_op(op))
            .collect::<Result<_>>()
            .and_then(|outcomes| self.check_unique_clashes().map(|()| outcomes));
        if result.is_err() {
            self.txn.rollback_command();
            self.merkle.rollback_command();
            for (name, before) in std::mem::take(&mut self.touched_undo) {
                match before {
                    Some(info) => self.touched.insert(name, info),
                    None => self.touched.remove(&name),
                };
            }
        }
        result
    }

    /// The storage batch (with the catalog records and, for a raft apply, the
    /// applied index), the trie's changes, and the changed catalog entries.
    pub fn finish(mut self, applied_index: Option<u64>) -> Result<Finished> {
        for (name, info) in &self.touched {
            match info {
                Some(info) => self
                    .txn
                    .put(keys::collection_meta_key(name), catalog::encode_info(info)),
                None => self.txn.delete(keys::collection_meta_key(name)),
            }
        }
        self.store_mark_changes(applied_index)?;
        Ok(Finished {
            batch: self.txn.into_batch(),
            merkle: self.merkle.into_changes(),
            touched: self.touched,
            marks: self.new_marks,
        })
    }

    /// Stores, for each key first changed since the latest anchor mark, its
    /// document hash at the mark (so the mark's view survives a restart),
    /// stores the applied index of a raft apply, and deletes a bounded chunk
    /// of stale records (`docs/merkle.md`, "Restart" and "Cleanup").
    ///
    /// A raft apply stores the applied index anyway: its records join the
    /// latest mark's open ones carried in that value, until there are more
    /// than [`OPEN_MARK_RECORDS`], which then go into one pack (a key of
    /// their own); so a lone write stores no key more than without marks. A
    /// direct write packs its own records. A batch that makes a mark packs
    /// the records of the mark before it (the open ones and the batch's
    /// changes before the mark): that mark's records stay until the next.
    fn store_mark_changes(&mut self, applied_index: Option<u64>) -> Result<()> {
        let carry = applied_index.is_some();
        let made_mark = self.merkle.made_mark();
        let latest = self.merkle.latest_epoch();
        // A direct write that makes no mark leaves the open records where
        // they are: it does not write the applied index's value.
        let mut before = self
            .merkle
            .open_records()
            .filter(|(_, open)| !open.is_empty() && (carry || made_mark));
        let moved = before.is_some();
        let mut open = Vec::new();
        for (epoch, records) in self.merkle.mark_records().into_iter().flatten() {
            // The batch's records (sorted) after the open ones, if of the
            // same mark: one copy, whether they stay open or are packed.
            let was_open = before
                .take_if(|(e, _)| *e == epoch)
                .map_or(&[][..], |b| b.1);
            let mut all = Vec::with_capacity(was_open.len() + records.len());
            all.extend_from_slice(was_open);
            all.extend_from_slice(&records);
            if carry && Some(epoch) == latest && all.len() <= OPEN_MARK_RECORDS {
                open = all;
            } else {
                put_pack(&mut self.txn, epoch, &mut all);
            }
        }
        if let Some((epoch, records)) = before {
            put_pack(&mut self.txn, epoch, &mut records.to_vec());
        }
        let index = match applied_index {
            Some(index) => Some(index),
            // A direct write that moved the open records into a pack: the
            // applied index's value keeps the index alone.
            None if moved => match self.txn.get(APPLIED_INDEX_KEY)? {
                Some(value) => Some(applied_index_of(&value)?),
                None => None,
            },
            None => None,
        };
        if let Some(index) = index {
            let carried = match (latest, open.is_empty()) {
                (Some(epoch), false) => Some((epoch, open.as_slice())),
                _ => None,
            };
            self.txn
                .put(APPLIED_INDEX_KEY.to_vec(), applied_value(index, carried));
        }
        if carry || made_mark {
            self.merkle.set_open_records(open);
        }
        if let Some(epoch) = self.merkle.stale_records_below() {
            let mut done = true;
            for prefix in [keys::mark_change_prefix, keys::mark_pack_prefix] {
                let stale =
                    self.txn
                        .keys_in(&prefix(0), Some(&prefix(epoch)), MARK_CHANGE_CLEANUP)?;
                done &= stale.len() < MARK_CHANGE_CLEANUP;
                for key in stale {
                    self.txn.delete(key);
                }
            }
            self.merkle.records_cleaned(done);
        }
        Ok(())
    }

    fn apply_op(&mut self, op: &Op) -> Result<OpOutcome> {
        match op {
            Op::CreateCollection { name } => self.create_collection(name),
            Op::DropCollection { name } => self.drop_collection(name),
            Op::CreateIndex { collection, spec } => self.create_index(collection, spec),
            Op::DropIndex { collection, name } => self.drop_index(collection, name),
            Op::BuildIndex {
                collection,
                index,
                max_docs,
            } => self.build_index(collection, index, *max_docs),
            Op::Insert { collection, doc } => self.put_doc(collection, doc, PutMode::Insert),
            Op::Replace { collection, doc } => self.put_doc(collection, doc, PutMode::Replace),
            Op::Upsert { collection, doc } => self.put_doc(collection, doc, PutMode::Upsert),
            Op::Patch {
                collection,
                id,
                changes,
            } => self.patch(collection, id, changes),
            Op::Delete { collection, id } => self.delete(collection, id),
            Op::Expect {
                collection,
                id,
                doc_hash,
            } => self.expect(collection, id, doc_hash.as_ref()),
            Op::AnchorMark { epoch } => self.anchor_mark(*epoch),
        }
    }

    // ---- anchor marks -----------------------------------------------------

    /// Records the mark of `epoch` at the command's raft index with the root
    /// as the commands before it left it; an epoch already marked keeps its
    /// mark. The command holds nothing else, so the root the trie has now is
    /// the root after every entry before this one.
    fn anchor_mark(&mut self, epoch: u64) -> Result<OpOutcome> {
        let marks = self.marks.read();
        let existing = self
            .new_marks
            .iter()
            .find(|m| m.epoch == epoch)
            .copied()
            .or_else(|| marks.get(epoch));
        if let Some(mark) = existing {
            return Ok(mark_outcome(mark, 0));
        }
        let latest = self.new_marks.last().copied().or_else(|| marks.latest());
        if let Some(latest) = latest.filter(|l| l.epoch > epoch) {
            return Err(EngineError::InvalidAnchorMark(format!(
                "epoch {epoch} is older than the latest marked epoch {}",
                latest.epoch
            )));
        }
        let mark = AnchorMark {
            epoch,
            raft_index: self.raft_index,
            root: self.merkle.root(),
        };
        self.txn.put(keys::mark_key(epoch), mark.stored());
        self.merkle.start_mark(epoch);
        // Keep the last MARK_HISTORY epochs: the marks are kept in epoch
        // order, and the batch's own are newer than the stored ones.
        let kept = marks.len() + self.new_marks.len() + 1;
        let stale: Vec<u64> = marks
            .iter()
            .map(|m| m.epoch)
            .chain(self.new_marks.iter().map(|m| m.epoch))
            .take(kept.saturating_sub(MARK_HISTORY))
            .collect();
        drop(marks);
        for old in stale {
            self.txn.delete(keys::mark_key(old));
        }
        self.new_marks.push(mark);
        Ok(mark_outcome(mark, 1))
    }

    // ---- catalog ----------------------------------------------------------

    /// Records a collection's new catalog entry (`None`: dropped), remembering
    /// the old one the first time this command changes it.
    fn touch(&mut self, name: String, info: Option<CollectionInfo>) {
        if !self.touched_undo.iter().any(|(n, _)| *n == name) {
            let before = self.touched.get(&name).cloned();
            self.touched_undo.push((name.clone(), before));
        }
        self.touched.insert(name, info);
    }

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

    fn create_collection(&mut self, name: &str) -> Result<OpOutcome> {
        catalog::validate_name(name).map_err(|reason| EngineError::InvalidCollectionName {
            name: name.to_string(),
            reason,
        })?;
        if self.info(name).is_some() {
            return Err(EngineError::CollectionExists(name.to_string()));
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
        self.touch(
            name.to_string(),
            Some(CollectionInfo {
                name: name.to_string(),
                number,
                count: 0,
                next_index_number: 1,
                indexes: Vec::new(),
                building: Vec::new(),
            }),
        );
        Ok(no_document(0))
    }

    /// Removes the collection from the catalog and its documents from the
    /// Merkle trie now; its stored keys become garbage, deleted in chunks
    /// afterwards ([`crate::Shard::collect_garbage`]), so the batch stays small.
    fn drop_collection(&mut self, name: &str) -> Result<OpOutcome> {
        let info = self.existing(name)?;
        let prefix = keys::doc_prefix(info.number);
        let end = keys::prefix_successor(&prefix);
        let mut start = prefix.clone();
        loop {
            let chunk = self.txn.keys_in(&start, end.as_deref(), DROP_STEP)?;
            for key in &chunk {
                let id = id_from_doc_key(key, prefix.len())?;
                self.merkle.update(&key_hash(name, id), None);
            }
            match chunk.last() {
                Some(last) if chunk.len() == DROP_STEP => start = key_after(last),
                _ => break,
            }
        }
        self.mark_garbage(&prefix);
        self.mark_garbage(&keys::collection_index_prefix(info.number));
        self.touch(name.to_string(), None);
        Ok(no_document(0))
    }

    /// Declares the index; [`Op::BuildIndex`] chunks fill it.
    fn create_index(&mut self, collection: &str, spec: &IndexSpec) -> Result<OpOutcome> {
        let mut info = self.existing(collection)?;
        validate_index_spec(spec)?;
        if info.has_index(&spec.name) {
            return Err(EngineError::IndexExists {
                collection: collection.to_string(),
                index: spec.name.clone(),
            });
        }
        info.building.push(IndexBuild {
            index: IndexInfo {
                spec: spec.clone(),
                number: info.next_index_number,
                multikey: false,
            },
            after: None,
        });
        info.next_index_number += 1;
        self.touch(collection.to_string(), Some(info));
        Ok(no_document(0))
    }

    fn build_index(&mut self, collection: &str, name: &str, max_docs: u32) -> Result<OpOutcome> {
        let mut info = self.existing(collection)?;
        let Some(at) = info.building.iter().position(|b| b.index.spec.name == name) else {
            // Already complete (a replica that caught up from a snapshot has it).
            info.index(name)?;
            return Ok(no_document(0));
        };
        let mut build = info.building[at].clone();
        let prefix = keys::doc_prefix(info.number);
        let start = match &build.after {
            Some(id) => key_after(&keys::doc_key(info.number, id)),
            None => prefix.clone(),
        };
        let limit = max_docs.max(1) as usize;
        let chunk = self
            .txn
            .keys_in(&start, keys::prefix_successor(&prefix).as_deref(), limit)?;
        for key in &chunk {
            let id = id_from_doc_key(key, prefix.len())?;
            let Some(doc) = self.read_record(key)? else {
                continue;
            };
            let (entries, multikey) = index_keys(&info, &build.index, id, &doc)?;
            build.index.multikey |= multikey;
            self.add_index_entries(&info, &build.index, id, &doc, entries)?;
        }
        if chunk.len() < limit {
            info.building.remove(at);
            info.indexes.push(build.index);
        } else {
            build.after = match chunk.last() {
                Some(last) => Some(id_from_doc_key(last, prefix.len())?.to_string()),
                None => None,
            };
            info.building[at] = build;
        }
        self.touch(collection.to_string(), Some(info));
        Ok(no_document(0))
    }

    /// Removes the index from the catalog; its entries become garbage.
    fn drop_index(&mut self, collection: &str, name: &str) -> Result<OpOutcome> {
        let mut info = self.existing(collection)?;
        let number = match info.building.iter().position(|b| b.index.spec.name == name) {
            Some(at) => info.building.remove(at).index.number,
            None => {
                let number = info.index(name)?.number;
                info.indexes.retain(|i| i.spec.name != name);
                number
            }
        };
        self.mark_garbage(&keys::index_prefix(info.number, number));
        self.touch(collection.to_string(), Some(info));
        Ok(no_document(0))
    }

    fn mark_garbage(&mut self, prefix: &[u8]) {
        self.txn.put(keys::garbage_key(prefix), Vec::new());
    }

    // ---- documents --------------------------------------------------------

    fn read_record(&self, key: &[u8]) -> Result<Option<Value>> {
        self.txn
            .get(key)?
            .map(|record| decode_stored(&record))
            .transpose()
    }

    fn read_doc(&self, info: &CollectionInfo, id: &str) -> Result<Option<Value>> {
        self.read_record(&keys::doc_key(info.number, id))
    }

    fn put_doc(&mut self, collection: &str, doc: &Value, mode: PutMode) -> Result<OpOutcome> {
        let info = self.existing(collection)?;
        let (id, encoded) = document::validate(doc, self.limits)?;
        let refused = |existed: bool| match (existed, mode) {
            (true, PutMode::Insert) => Err(EngineError::DuplicateId {
                collection: collection.to_string(),
                id: id.clone(),
            }),
            (false, PutMode::Replace) => Err(EngineError::DocumentNotFound {
                collection: collection.to_string(),
                id: id.clone(),
            }),
            _ => Ok(()),
        };
        // The stored record is read only when index entries depend on the
        // old document (checked before they change); otherwise whether one
        // existed, the Merkle trie's update says, and a refused write is
        // undone with its command.
        let mut old = None;
        if info.maintained_indexes().next().is_some() {
            old = match self.txn.get(&keys::doc_key(info.number, &id))? {
                Some(record) => Some(decode_stored(&record)?),
                None => None,
            };
            refused(old.is_some())?;
        }
        let outcome = self.store_doc(info, &id, doc, &encoded, old)?;
        refused(!outcome.created)?;
        Ok(outcome)
    }

    /// Writes a validated document over the one stored, if any (`old`, its
    /// decoded form, is needed only if the collection has indexes): index
    /// entries that changed, the Merkle leaf, the record, and the
    /// collection's count if it changed. `created`: no document was there.
    fn store_doc(
        &mut self,
        mut info: CollectionInfo,
        id: &str,
        doc: &Value,
        encoded: &[u8],
        old: Option<Value>,
    ) -> Result<OpOutcome> {
        let mut changed = false;
        let mut indexes = std::mem::take(&mut info.indexes);
        let mut building = std::mem::take(&mut info.building);
        let maintained = indexes
            .iter_mut()
            .chain(building.iter_mut().map(|b| &mut b.index));
        for index in maintained {
            let (new_keys, multikey) = index_keys(&info, index, id, doc)?;
            let old_keys = match &old {
                Some(old) => index_keys(&info, index, id, old)?.0,
                None => Vec::new(),
            };
            // Both lists are sorted: write only the difference.
            for key in old_keys
                .iter()
                .filter(|k| new_keys.binary_search(k).is_err())
            {
                self.remove_index_entry(key, id)?;
            }
            let added: Vec<Vec<u8>> = new_keys
                .into_iter()
                .filter(|k| old_keys.binary_search(k).is_err())
                .collect();
            self.add_index_entries(&info, index, id, doc, added)?;
            if multikey && !index.multikey {
                index.multikey = true;
                changed = true;
            }
        }
        info.indexes = indexes;
        info.building = building;
        let hash = doc_hash(doc);
        let before = self.merkle.update(&key_hash(&info.name, id), Some(hash));
        self.txn.put(
            keys::doc_key(info.number, id),
            keys::doc_record(&hash, encoded),
        );
        let created = before.is_none();
        if created {
            info.count += 1;
            changed = true;
        }
        if changed {
            self.touch(info.name.clone(), Some(info));
        }
        Ok(OpOutcome {
            id: Some(id.to_string()),
            affected: 1,
            created,
            mark: None,
        })
    }

    fn patch(&mut self, collection: &str, id: &str, changes: &[PatchChange]) -> Result<OpOutcome> {
        let info = self.existing(collection)?;
        let old = self
            .read_doc(&info, id)?
            .ok_or_else(|| EngineError::DocumentNotFound {
                collection: collection.to_string(),
                id: id.to_string(),
            })?;
        let new = document::apply_patch(&old, changes)?;
        let (_, encoded) = document::validate(&new, self.limits)?;
        self.store_doc(info, id, &new, &encoded, Some(old))
    }

    fn delete(&mut self, collection: &str, id: &str) -> Result<OpOutcome> {
        let mut info = self.existing(collection)?;
        let Some(old) = self.read_doc(&info, id)? else {
            return Ok(OpOutcome {
                id: Some(id.to_string()),
                affected: 0,
                created: false,
                mark: None,
            });
        };
        for index in info.maintained_indexes() {
            for key in index_keys(&info, index, id, &old)?.0 {
                self.remove_index_entry(&key, id)?;
            }
        }
        self.merkle.update(&key_hash(collection, id), None);
        self.txn.delete(keys::doc_key(info.number, id));
        info.count = info.count.saturating_sub(1);
        self.touch(collection.to_string(), Some(info));
        Ok(OpOutcome {
            id: Some(id.to_string()),
            affected: 1,
            created: false,
            mark: None,
        })
    }

    /// The precondition of a conditional write: the document is exactly the
    /// version with this hash (or, with `None`, absent).
    fn expect(&mut self, collection: &str, id: &str, expected: Option<&Hash>) -> Result<OpOutcome> {
        let info = self.existing(collection)?;
        // Each stored record's hash is its Merkle leaf's.
        let current = self.merkle.leaf(&key_hash(&info.name, id));
        if current.as_ref() != expected {
            return Err(EngineError::WriteConflict {
                collection: collection.to_string(),
                id: id.to_string(),
            });
        }
        Ok(no_document(0))
    }

    // ---- index entries ----------------------------------------------------

    /// Writes a document's new entries in one index. A UNIQUE entry that
    /// another document holds is taken over, and the clash is checked when
    /// the command ends ([`Writer::check_unique_clashes`]): UNIQUE holds for
    /// the command's result, as SQL checks a statement, so a command may swap
    /// two documents' values.
    fn add_index_entries(
        &mut self,
        info: &CollectionInfo,
        index: &IndexInfo,
        id: &str,
        doc: &Value,
        entries: Vec<Vec<u8>>,
    ) -> Result<()> {
        for key in entries {
            if index.spec.unique
                && let Some(existing) = self.txn.get(&key)?
                && existing != id.as_bytes()
            {
                self.unique_clashes.push(UniqueClash {
                    collection: info.name.clone(),
                    index: index.spec.name.clone(),
                    key: key.clone(),
                    shown: unique_key_display(index, doc),
                    holder: String::from_utf8_lossy(&existing).into_owned(),
                });
            }
            self.txn.put(key, id.as_bytes().to_vec());
        }
        Ok(())
    }

    /// Removes an index entry of document `id`, unless another document has
    /// taken the (UNIQUE) entry over in this command.
    fn remove_index_entry(&mut self, key: &[u8], id: &str) -> Result<()> {
        match self.txn.get(key)? {
            Some(holder) if holder != id.as_bytes() => Ok(()),
            _ => {
                self.txn.delete(key.to_vec());
                Ok(())
            }
        }
    }

    /// Settles the UNIQUE entries the command took over, on its result: if the
    /// former holder no longer has the value, nothing is wrong; if it still
    /// has it and another document has it too, that is a violation; if only
    /// the former holder has it now (the other document let it go again), the
    /// entry goes back to it.
    fn check_unique_clashes(&mut self) -> Result<()> {
        for clash in std::mem::take(&mut self.unique_clashes) {
            let info = self.existing(&clash.collection)?;
            let Some(index) = info
                .maintained_indexes()
                .find(|i| i.spec.name == clash.index)
                .cloned()
            else {
                continue;
            };
            if !self.has_entry(&info, &index, &clash.holder, &clash.key)? {
                continue;
            }
            let owner = self
                .txn
                .get(&clash.key)?
                .map(|o| String::from_utf8_lossy(&o).into_owned());
            match owner {
                Some(owner)
                    if owner != clash.holder
                        && self.has_entry(&info, &index, &owner, &clash.key)? =>
                {
                    return Err(EngineError::UniqueViolation {
                        collection: clash.collection,
                        index: clash.index,
                        key: clash.shown,
                        existing_id: clash.holder,
                    });
                }
                _ => self.txn.put(clash.key, clash.holder.into_bytes()),
            }
        }
        Ok(())
    }

    /// Whether document `id`, as the command leaves it, has `key` in `index`.
    fn has_entry(
        &self,
        info: &CollectionInfo,
        index: &IndexInfo,
        id: &str,
        key: &[u8],
    ) -> Result<bool> {
        let Some(doc) = self.read_doc(info, id)? else {
            return Ok(false);
        };
        let (keys, _) = index_keys(info, index, id, &doc)?;
        Ok(keys.iter().any(|k| k.as_slice() == key))
    }
}

/// Stores `records` of the changes since the mark of `epoch` (if any) as
/// one pack, in key-hash order, under the smallest key hash.
fn put_pack<T: KvTree>(txn: &mut Txn<'_, T>, epoch: u64, records: &mut [MarkChange]) {
    records.sort_unstable();
    let Some((first, _)) = records.first() else {
        return;
    };
    let mut value = Vec::new();
    encode_records(records, &mut value);
    txn.put(keys::mark_pack_key(epoch, first), value);
}

/// The first key after `key` (keys are compared bytewise).
fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

fn no_document(affected: u64) -> OpOutcome {
    OpOutcome {
        id: None,
        affected,
        created: false,
        mark: None,
    }
}

/// A mark's outcome: `affected` 1 if this command recorded it, 0 if the
/// epoch was marked before.
fn mark_outcome(mark: AnchorMark, affected: u64) -> OpOutcome {
    OpOutcome {
        mark: Some(mark),
        ..no_document(affected)
    }
}

fn validate_index_spec(spec: &IndexSpec) -> Result<()> {
    catalog::validate_name(&spec.name)
        .map_err(|reason| EngineError::InvalidIndex(format!("name {:?}: {reason}", spec.name)))?;
    if spec.fields.is_empty() || spec.fields.len() > catalog::MAX_INDEX_FIELDS {
        return Err(EngineError::InvalidIndex(format!(
            "an index has 1 to {} fields, not {}",
            catalog::MAX_INDEX_FIELDS,
            spec.fields.len()
        )));
    }
    for field in &spec.fields {
        document::parse_path(field)?;
    }
    Ok(())
}
