//! The shard directory: which tree holds each shard. A snapshot import builds
//! the shard in a new tree (the next generation) and then points the directory
//! at it, so the switch is one write. Tree names are made and read only here;
//! trees of the shard name space that the directory does not point at are left
//! over from an interrupted import, or replaced by one, and are dropped.

use std::collections::HashSet;
use std::ops::Bound;

use crate::storage::{KvStore, KvTree, WriteBatch};
use crate::{EngineError, Result};

/// The directory's own tree (outside the shard name space).
const DIRECTORY_TREE: &str = "directory";
/// The directory of layout 1, which stored tree names; its presence marks a
/// data folder written by an older stratosdb.
const LAYOUT_1_DIRECTORY: &str = "shard-directory";
/// Every shard tree's name starts with this.
const SHARD_TREE_PREFIX: &str = "shard/";

/// Shards are numbered.
pub type ShardId = u32;

fn tree_name(id: ShardId, generation: u64) -> String {
    format!("{SHARD_TREE_PREFIX}{id}/{generation}")
}

pub(crate) struct Directory<T: KvTree> {
    tree: T,
}

impl<T: KvTree> Directory<T> {
    pub fn open<S: KvStore<Tree = T>>(store: &S) -> Result<Self> {
        let names = store.tree_names()?;
        if names.iter().any(|n| n == LAYOUT_1_DIRECTORY)
            && !names.iter().any(|n| n == DIRECTORY_TREE)
        {
            return Err(EngineError::UnsupportedLayout {
                shard: 0,
                found: 1,
                expected: crate::keys::LAYOUT_VERSION,
            });
        }
        Ok(Directory {
            tree: store.open_tree(DIRECTORY_TREE)?,
        })
    }

    /// The generation of the shard's current tree, if the shard exists.
    pub fn generation(&self, id: ShardId) -> Result<Option<u64>> {
        match self.tree.get(&id.to_be_bytes())? {
            None => Ok(None),
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(|b| Some(u64::from_be_bytes(b)))
                .map_err(|_| {
                    EngineError::Corruption(format!("shard directory entry of shard {id}"))
                }),
        }
    }

    /// The name of the shard's current tree, creating the entry if needed.
    pub fn current_tree(&self, id: ShardId) -> Result<String> {
        match self.generation(id)? {
            Some(generation) => Ok(tree_name(id, generation)),
            None => {
                self.point(id, 0)?;
                Ok(tree_name(id, 0))
            }
        }
    }

    /// The name of the tree a snapshot import should fill: a generation past
    /// the current one, `skip` further (imports prepared side by side each
    /// get their own; the engine's `staging_seq` makes `skip` unique).
    pub fn next_tree(&self, id: ShardId, skip: u64) -> Result<(u64, String)> {
        let next = self
            .generation(id)?
            .map_or(0, |g| g + 1)
            .saturating_add(skip);
        Ok((next, tree_name(id, next)))
    }

    /// Points the shard at a generation's tree.
    pub fn point(&self, id: ShardId, generation: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(id.to_be_bytes().to_vec(), generation.to_be_bytes().to_vec());
        self.tree.apply(batch)
    }

    /// The name of the shard's current tree, if the shard exists.
    pub fn existing_tree(&self, id: ShardId) -> Result<Option<String>> {
        Ok(self.generation(id)?.map(|g| tree_name(id, g)))
    }

    /// Forgets the shard: its tree is then abandoned (see
    /// [`Directory::remove_abandoned_trees`]).
    pub fn remove(&self, id: ShardId) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete(id.to_be_bytes().to_vec());
        self.tree.apply(batch)
    }

    /// Ids of the shards that exist.
    pub fn shard_ids(&self) -> Result<Vec<ShardId>> {
        let mut ids = Vec::new();
        for item in self.tree.range(Bound::Unbounded, Bound::Unbounded, false) {
            let (k, _) = item?;
            let bytes = <[u8; 4]>::try_from(k.as_ref())
                .map_err(|_| EngineError::Corruption("shard directory key".into()))?;
            ids.push(u32::from_be_bytes(bytes));
        }
        Ok(ids)
    }

    /// Drops shard trees the directory does not point at.
    pub fn remove_abandoned_trees<S: KvStore<Tree = T>>(&self, store: &S) -> Result<()> {
        let mut live = HashSet::new();
        for id in self.shard_ids()? {
            if let Some(generation) = self.generation(id)? {
                live.insert(tree_name(id, generation));
            }
        }
        for name in store.tree_names()? {
            if name.starts_with(SHARD_TREE_PREFIX) && !live.contains(&name) {
                store.drop_tree(&name)?;
            }
        }
        Ok(())
    }
}
