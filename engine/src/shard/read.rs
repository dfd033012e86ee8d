//! Reads: they take no lock; a write becomes visible as a whole when its batch
//! is applied. Root and proofs lock the trie so they match the documents.

use std::ops::Bound;

use stratosdb_proof::hash::{Hash, key_hash};
use stratosdb_proof::{Proof, Value};

use super::{DocIter, IdIter, IndexRange, RawDocument, Shard, decode_stored, id_from_doc_key};
use crate::keys::{self, APPLIED_INDEX_KEY};
use crate::storage::{KvStore, KvTree};
use crate::{EngineError, Result, merkle};

impl<S: KvStore> Shard<S> {
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
            Bound::Unbounded => keys::successor_bound(&prefix),
        };
        if keys::range_is_empty(&lo, &hi) {
            return Ok(Box::new(std::iter::empty()));
        }
        let skip = prefix.len();
        Ok(Box::new(self.tree().range_held(lo, hi, reverse).map(
            move |item| {
                let (k, v) = item?;
                let id = id_from_doc_key(k.as_ref(), skip)?.to_string();
                Ok((id, decode_stored(v.as_ref())?))
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
            Bound::Excluded(v) => keys::past_prefix(&encode(v)),
            Bound::Unbounded => Bound::Included(prefix.clone()),
        };
        let hi = match &range.upper {
            Bound::Included(v) => keys::successor_bound(&encode(v)),
            Bound::Excluded(v) => Bound::Excluded(encode(v)),
            Bound::Unbounded => keys::successor_bound(&prefix),
        };
        if keys::range_is_empty(&lo, &hi) {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(Box::new(self.tree().range_held(lo, hi, reverse).map(
            |item| {
                let (_, id) = item?;
                String::from_utf8(id.as_ref().to_vec())
                    .map_err(|_| EngineError::Corruption("non-UTF-8 _id in index".into()))
            },
        )))
    }

    /// The raft index of the last entry applied (0 if none). Read from the
    /// shard's current generation, which stays readable while a snapshot
    /// import switches the shard to the next one.
    pub fn applied_index(&self) -> Result<u64> {
        read_applied_index(&**self.tree())
    }

    /// The shard's Merkle root: a function of its documents alone.
    pub fn root(&self) -> Result<Hash> {
        Ok(self.inner.merkle.lock().root())
    }

    /// Bytes of memory the shard's Merkle trie holds (for metrics).
    pub fn merkle_memory_bytes(&self) -> usize {
        self.inner.merkle.lock().memory_bytes()
    }

    /// The root together with the raft index it is the root at: what a shard
    /// leader anchors.
    pub fn root_at_applied(&self) -> Result<(u64, Hash)> {
        let merkle = self.inner.merkle.lock();
        Ok((self.applied_index()?, merkle.root()))
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
        // Holding the trie's lock keeps writers out, so document and path agree.
        let merkle = self.inner.merkle.lock();
        let proof = merkle.prove(collection, id);
        let doc = match self.collection_number(collection) {
            Ok(number) => self
                .tree()
                .get(&keys::doc_key(number, id))?
                .map(|b| decode_stored(b.as_ref()))
                .transpose()?,
            Err(_) => None,
        };
        Ok((merkle.root(), proof, doc))
    }

    /// Proofs of several `_id`s of one collection, all against one root, with
    /// the raft index it is the root at and each document as stored (`None`:
    /// the proof is of its absence). One lock for all, so they agree.
    pub fn prove_many(&self, collection: &str, ids: &[String]) -> Result<ProvenSet> {
        let merkle = self.inner.merkle.lock();
        let number = self.collection_number(collection).ok();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let doc = match number {
                Some(number) => self
                    .tree()
                    .get(&keys::doc_key(number, id))?
                    .map(|b| decode_stored(b.as_ref()))
                    .transpose()?,
                None => None,
            };
            out.push((merkle.prove(collection, id), doc));
        }
        Ok((self.applied_index()?, merkle.root(), out))
    }

    /// Recomputes the root from every document, hashing each one anew (O(n));
    /// equals [`Shard::root`] unless a stored document or its hash is damaged.
    /// For checks and tests.
    pub fn root_from_scratch(&self) -> Result<Hash> {
        let _writers_out = self.inner.merkle.lock();
        let mut leaves = Vec::new();
        for name in self.collections() {
            for item in self.scan(&name, Bound::Unbounded, Bound::Unbounded, false)? {
                let (id, doc) = item?;
                leaves.push((key_hash(&name, &id), stratosdb_proof::hash::doc_hash(&doc)));
            }
        }
        Ok(merkle::root_from_scratch(&mut leaves))
    }
}

/// What [`Shard::prove_many`] returns: the raft index, the root at it, and
/// each `_id`'s proof with its document as stored (`None`: absent).
pub type ProvenSet = (u64, Hash, Vec<(Proof, Option<Value>)>);

pub(crate) fn read_applied_index<T: KvTree>(tree: &T) -> Result<u64> {
    // The index, then maybe open anchor mark records (`anchor::applied_value`).
    match tree.get(APPLIED_INDEX_KEY)? {
        Some(b) => crate::anchor::applied_index_of(b.as_ref()),
        None => Ok(0),
    }
}
