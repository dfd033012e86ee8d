//! Work that would block writers or hold a whole collection in one batch if it
//! ran at once, run in bounded chunks instead:
//!
//! - an index is built by [`Op::BuildIndex`] chunks of [`INDEX_BUILD_CHUNK`]
//!   documents, each its own write, so writers interleave; it is "building"
//!   (maintained by writers, unused by queries) until the last chunk;
//! - dropping a collection or an index removes it from the catalog (and the
//!   collection's documents from the Merkle trie) at once, and leaves its keys
//!   as garbage that [`Shard::collect_garbage`] deletes [`GARBAGE_BATCH`] keys
//!   at a time. Garbage is unreachable (key-space numbers are never reused),
//!   so deleting it is local work that replication need not carry.
//!
//! Both survive a crash: a build resumes from its cursor in the catalog, and
//! garbage markers stay until their range is empty
//! ([`Shard::finish_interrupted_work`]).

use std::ops::Bound;

use super::Shard;
use crate::keys::{self, GARBAGE_PREFIX};
use crate::limits::{GARBAGE_BATCH, INDEX_BUILD_CHUNK};
use crate::storage::{KvStore, KvTree, WriteBatch};
use crate::{Durability, EngineError, IndexSpec, Op, Result};

impl<S: KvStore> Shard<S> {
    /// Creates an index and builds it from the documents already there, in
    /// chunks (writers run between them). If the documents break a UNIQUE
    /// index, the index is dropped again and the violation returned.
    pub fn create_index(&self, collection: &str, spec: IndexSpec) -> Result<()> {
        let name = spec.name.clone();
        self.write(
            vec![Op::CreateIndex {
                collection: collection.into(),
                spec,
            }],
            Durability::Buffered,
        )?;
        self.build_index(collection, &name)
    }

    /// Runs build chunks until the index is complete.
    fn build_index(&self, collection: &str, name: &str) -> Result<()> {
        while self.is_building(collection, name)? {
            let chunk = Op::BuildIndex {
                collection: collection.into(),
                index: name.into(),
                max_docs: INDEX_BUILD_CHUNK,
            };
            if let Err(e) = self.write(vec![chunk], Durability::Buffered) {
                if !e.is_fault() {
                    self.drop_index(collection, name)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn is_building(&self, collection: &str, name: &str) -> Result<bool> {
        Ok(self
            .collection(collection)?
            .building
            .iter()
            .any(|b| b.index.spec.name == name))
    }

    /// Drops a collection: gone from queries and from the root at once, its
    /// stored keys deleted in chunks before this returns.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        self.write(
            vec![Op::DropCollection { name: name.into() }],
            Durability::Buffered,
        )?;
        while self.collect_garbage(GARBAGE_BATCH)? > 0 {}
        Ok(())
    }

    pub fn drop_index(&self, collection: &str, name: &str) -> Result<()> {
        self.write(
            vec![Op::DropIndex {
                collection: collection.into(),
                name: name.into(),
            }],
            Durability::Buffered,
        )?;
        while self.collect_garbage(GARBAGE_BATCH)? > 0 {}
        Ok(())
    }

    /// Deletes up to `max_keys` keys of dropped collections and indexes, in one
    /// batch; returns how many it deleted (0: no garbage left).
    pub fn collect_garbage(&self, max_keys: usize) -> Result<usize> {
        let tree = self.tree();
        let mut batch = WriteBatch::default();
        let markers = tree.range(
            Bound::Included(GARBAGE_PREFIX.to_vec()),
            keys::successor_bound(GARBAGE_PREFIX),
            false,
        );
        for marker in markers {
            let (marker, _) = marker?;
            let prefix = marker.as_ref()[GARBAGE_PREFIX.len()..].to_vec();
            let mut emptied = true;
            for item in tree.range(
                Bound::Included(prefix.clone()),
                keys::successor_bound(&prefix),
                false,
            ) {
                if batch.len() >= max_keys.max(1) {
                    emptied = false;
                    break;
                }
                batch.delete(item?.0.as_ref().to_vec());
            }
            if !emptied || batch.len() >= max_keys.max(1) {
                break;
            }
            batch.delete(marker.as_ref().to_vec());
        }
        let deleted = batch.len();
        if deleted > 0 {
            super::apply_noted(&self.inner, &tree, batch)?;
            self.inner.shared.note_write();
        }
        Ok(deleted)
    }

    /// Finishes what a crash interrupted: index builds resume from their
    /// cursor, garbage is deleted. For a shard written directly (the embedded
    /// database); a replicated shard's builds are driven through its log.
    pub fn finish_interrupted_work(&self) -> Result<()> {
        for name in self.collections() {
            let info = self.collection(&name)?;
            for build in &info.building {
                match self.build_index(&name, &build.index.spec.name) {
                    Ok(()) | Err(EngineError::UniqueViolation { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        while self.collect_garbage(GARBAGE_BATCH)? > 0 {}
        Ok(())
    }
}
