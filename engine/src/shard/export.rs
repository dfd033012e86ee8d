//! A shard's contents page by page, for an auditor that recomputes its root
//! (`stratosdb audit --connect URL --shard C/N`): each page is read under the
//! trie's lock, so its documents, the applied index, the current root and the
//! latest anchor mark agree; the keys changed since that mark, with their
//! document hashes at the mark, let the auditor rebuild the mark's root from
//! the current documents (`docs/chain.md`, "Auditing a replica").

use std::ops::Bound;

use stratosdb_proof::Value;
use stratosdb_proof::hash::Hash;

use super::{Shard, decode_stored, id_from_doc_key};
use crate::anchor::AnchorMark;
use crate::keys;
use crate::storage::{KvStore, KvTree};
use crate::{EngineError, Result};

/// One page of an export: what it holds, and the state it was read in.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportPage<T> {
    /// The raft index the page was read at.
    pub applied_index: u64,
    /// The shard's root at that index.
    pub root: Hash,
    /// The shard's latest anchor mark then.
    pub mark: Option<AnchorMark>,
    pub items: Vec<T>,
    /// Whether items follow the last one of this page.
    pub more: bool,
}

/// A document as stored: its `_id`, the hash its record holds (what the
/// shard's trie is built from) and the document decoded from its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedDocument {
    pub id: String,
    pub hash: Hash,
    pub doc: Value,
}

/// A key changed since the latest mark: its key hash and its document hash
/// at the mark (`None`: it was absent then).
pub type MarkChange = (Hash, Option<Hash>);

impl<S: KvStore> Shard<S> {
    /// Up to `limit` documents of `collection` after `_id` `after` (from the
    /// first without), in `_id` order, stopping early once `max_bytes` of
    /// stored records are in the page (at least one document per page).
    ///
    /// ```
    /// use stratosdb_engine::{Engine, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// shard.create_collection("c").unwrap();
    /// for id in ["a", "b", "c"] {
    ///     shard.insert("c", Value::from_json_str(&format!(r#"{{"_id":"{id}"}}"#)).unwrap()).unwrap();
    /// }
    /// let page = shard.export_documents("c", Some("a"), 1, 1 << 20).unwrap();
    /// assert_eq!(page.items[0].id, "b");
    /// assert!(page.more);
    /// assert_eq!(page.root, shard.root().unwrap());
    /// ```
    pub fn export_documents(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ExportPage<ExportedDocument>> {
        let merkle = self.inner.merkle.lock();
        let number = self.collection_number(collection)?;
        let prefix = keys::doc_prefix(number);
        let lower = match after {
            Some(id) => Bound::Excluded(keys::doc_key(number, id)),
            None => Bound::Included(prefix.clone()),
        };
        let tree = self.tree();
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        for item in tree.range(lower, keys::successor_bound(&prefix), false) {
            if items.len() >= limit.max(1) || (bytes >= max_bytes && !items.is_empty()) {
                more = true;
                break;
            }
            let (key, record) = item?;
            let (hash, _) = keys::split_doc_record(record.as_ref())
                .ok_or_else(|| EngineError::Corruption("truncated document record".into()))?;
            bytes += record.as_ref().len();
            items.push(ExportedDocument {
                id: id_from_doc_key(key.as_ref(), prefix.len())?.to_string(),
                hash,
                doc: decode_stored(record.as_ref())?,
            });
        }
        Ok(ExportPage {
            applied_index: self.applied_index()?,
            root: merkle.root(),
            mark: self.latest_anchor_mark(),
            items,
            more,
        })
    }

    /// Up to `limit` keys changed since the latest anchor mark, after key
    /// hash `after`, in key-hash order, with their document hashes at the
    /// mark. Read after a shard's documents, they give its state at the mark:
    /// a changed key's hash then, every other key's hash now.
    ///
    /// ```
    /// use stratosdb_engine::{Engine, Value};
    /// use stratosdb_engine::proof::hash::key_hash;
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// shard.create_collection("c").unwrap();
    /// shard.insert("c", Value::from_json_str(r#"{"_id":"a"}"#).unwrap()).unwrap();
    /// let mark = shard.record_anchor_mark(1).unwrap();
    /// shard.insert("c", Value::from_json_str(r#"{"_id":"b"}"#).unwrap()).unwrap();
    /// let page = shard.export_mark_changes(None, 100).unwrap();
    /// assert_eq!(page.mark, Some(mark));
    /// assert_eq!(page.items, vec![(key_hash("c", "b"), None)]);
    /// ```
    pub fn export_mark_changes(
        &self,
        after: Option<&Hash>,
        limit: usize,
    ) -> Result<ExportPage<MarkChange>> {
        // The trie's view of the mark holds what its stored records hold
        // (they are written in the same batch), in key-hash order here.
        let merkle = self.inner.merkle.lock();
        let mark = self.latest_anchor_mark();
        let (items, more) = match (mark, merkle.mark_changes_after(after, limit)) {
            (None, _) => (Vec::new(), false),
            (Some(mark), Some((epoch, items, more))) if epoch == mark.epoch => (items, more),
            (Some(mark), _) => {
                return Err(EngineError::Corruption(format!(
                    "the trie's view is not of the latest anchor mark (epoch {})",
                    mark.epoch
                )));
            }
        };
        Ok(ExportPage {
            applied_index: self.applied_index()?,
            root: merkle.root(),
            mark,
            items,
            more,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stratosdb_proof::hash::{doc_hash, key_hash};

    use crate::{Durability, Engine, Op, Value, root_from_scratch};

    fn upsert(id: &str, n: i64) -> Op {
        Op::Upsert {
            collection: "c".into(),
            doc: Value::from_json_str(&format!(r#"{{"_id":"{id}","n":{n}}}"#)).unwrap(),
        }
    }

    /// The documents now, with the changes since the mark undone, give the
    /// mark's root, whatever was inserted, updated or deleted since; pages
    /// of one document cover the whole collection once.
    #[test]
    fn documents_and_changes_give_the_marks_root() {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        shard.create_collection("c").unwrap();
        let ops = (0..20).map(|i| upsert(&format!("d{i:02}"), 0)).collect();
        shard.write(ops, Durability::Buffered).unwrap();
        let mark = shard.record_anchor_mark(4).unwrap();
        let delete = Op::Delete {
            collection: "c".into(),
            id: "d03".into(),
        };
        let changes = vec![upsert("d01", 1), upsert("d01", 2), upsert("new", 0), delete];
        shard.write(changes, Durability::Buffered).unwrap();

        let mut state = BTreeMap::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = shard
                .export_documents("c", after.as_deref(), 1, 1 << 20)
                .unwrap();
            pages += 1;
            for d in &page.items {
                assert_eq!(d.hash, doc_hash(&d.doc));
                state.insert(key_hash("c", &d.id), d.hash);
            }
            assert_eq!(page.mark, Some(mark));
            after = page.items.last().map(|d| d.id.clone());
            if !page.more {
                break;
            }
        }
        assert_eq!(pages, 20, "20 documents (one new, one deleted), one a page");
        let now: Vec<_> = state.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(root_from_scratch(&mut now.clone()), shard.root().unwrap());
        let changes = shard.export_mark_changes(None, 2).unwrap();
        assert!(changes.more);
        let rest = shard
            .export_mark_changes(changes.items.last().map(|c| &c.0), 2)
            .unwrap();
        assert!(!rest.more);
        for (key, at_mark) in changes.items.into_iter().chain(rest.items) {
            match at_mark {
                Some(hash) => state.insert(key, hash),
                None => state.remove(&key),
            };
        }
        let mut then: Vec<_> = state.into_iter().collect();
        assert_eq!(root_from_scratch(&mut then), mark.root);
    }
}
