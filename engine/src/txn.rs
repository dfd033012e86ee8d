//! A write transaction over one shard's tree: reads see the transaction's own
//! writes, and everything is applied as one atomic batch at the end. The shard's
//! write lock is held throughout, so no other writer interleaves.

use std::collections::BTreeMap;

use crate::Result;
use crate::storage::{KvTree, WriteBatch};

pub(crate) struct Txn<'a, T: KvTree> {
    tree: &'a T,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a, T: KvTree> Txn<'a, T> {
    pub fn new(tree: &'a T) -> Self {
        Txn {
            tree,
            overlay: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.tree.get(key)?.map(|b| b.as_ref().to_vec())),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key, None);
    }

    /// Keys in `[start, end)` as the transaction sees them (tree merged with overlay).
    pub fn keys_in(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<Vec<u8>>> {
        use std::ops::Bound;
        let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        let mut keys = std::collections::BTreeSet::new();
        for item in self
            .tree
            .range(Bound::Included(start.to_vec()), upper.clone(), false)
        {
            keys.insert(item?.0.as_ref().to_vec());
        }
        for (k, v) in self
            .overlay
            .range::<[u8], _>((Bound::Included(start), upper.as_ref().map(|e| e.as_slice())))
        {
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().collect())
    }

    pub fn into_batch(self) -> WriteBatch {
        WriteBatch {
            ops: self.overlay.into_iter().collect(),
        }
    }
}
