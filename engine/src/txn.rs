//! A write transaction over one shard's tree: reads see the transaction's own
//! writes, and everything is applied as one atomic batch at the end. The shard's
//! write lock is held throughout, so no other writer interleaves. A command of a
//! batch that fails is rolled back alone ([`Overlay`]).

use std::ops::Bound;

use crate::Result;
use crate::overlay::Overlay;
use crate::storage::{KvTree, WriteBatch};

pub(crate) struct Txn<'a, T: KvTree> {
    tree: &'a T,
    overlay: Overlay<Vec<u8>, Vec<u8>>,
}

impl<'a, T: KvTree> Txn<'a, T> {
    pub fn new(tree: &'a T) -> Self {
        Txn {
            tree,
            overlay: Overlay::default(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.tree.get(key)?.map(|b| b.as_ref().to_vec())),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.put(key, value);
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.overlay.delete(key);
    }

    pub fn begin_command(&mut self) {
        self.overlay.begin_command();
    }

    pub fn rollback_command(&mut self) {
        self.overlay.rollback_command();
    }

    /// Up to `limit` keys in `[start, end)` as the transaction sees them (tree
    /// merged with overlay), in order.
    pub fn keys_in(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Vec<u8>>> {
        let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        let mut keys = std::collections::BTreeSet::new();
        for item in self
            .tree
            .range(Bound::Included(start.to_vec()), upper.clone(), false)
        {
            let key = item?.0.as_ref().to_vec();
            if !matches!(self.overlay.get(key.as_slice()), Some(None)) {
                keys.insert(key);
                if keys.len() >= limit {
                    break;
                }
            }
        }
        // Keys the overlay added (before the tree's last key, or all of them when
        // the tree ran out), then cut back to the limit.
        let last = (keys.len() >= limit)
            .then(|| keys.last().cloned())
            .flatten();
        for (k, v) in self
            .overlay
            .range::<[u8], _>((Bound::Included(start), upper.as_ref().map(|e| e.as_slice())))
        {
            if last.as_ref().is_some_and(|l| k > l) {
                break;
            }
            if v.is_some() {
                keys.insert(k.clone());
            }
        }
        Ok(keys.into_iter().take(limit).collect())
    }

    pub fn into_batch(self) -> WriteBatch {
        WriteBatch {
            ops: self.overlay.into_entries().collect(),
        }
    }
}
