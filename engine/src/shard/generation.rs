//! The tree a shard reads and writes, one generation of it (see
//! `directory.rs`). A snapshot import switches the shard to a new
//! generation; the old tree is dropped only once nothing reads it any more:
//! a read that took the old generation (a point read, or a scan that began
//! before the switch) finishes on it, never on a tree dropped under it.

use std::ops::{Bound, Deref};
use std::sync::{Arc, OnceLock};

use crate::Result;
use crate::shared::Shared;
use crate::storage::{KvIter, KvStore, KvTree};

/// One generation of a shard's tree, shared by the shard and its readers.
pub(crate) struct Generation<S: KvStore> {
    tree: S::Tree,
    /// Set once the shard moved past this generation: whoever holds it last
    /// drops the tree (named here) from the store.
    retired: OnceLock<(Arc<Shared<S>>, String)>,
}

impl<S: KvStore> Generation<S> {
    pub fn new(tree: S::Tree) -> Arc<Self> {
        Arc::new(Generation {
            tree,
            retired: OnceLock::new(),
        })
    }

    /// Entries of the range; the iterator keeps this generation alive.
    pub fn range_held(
        self: Arc<Self>,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> KvIter<<S::Tree as KvTree>::Bytes> {
        let iter = self.tree.range(lower, upper, reverse);
        Box::new(Held {
            iter,
            _generation: self,
        })
    }

    /// The shard moved past `generation`, whose tree is `name`: drops the
    /// tree now if nothing else holds it (its error is the caller's), else
    /// when the last reader lets go.
    pub fn retire(generation: Arc<Self>, shared: Arc<Shared<S>>, name: String) -> Result<()> {
        match Arc::try_unwrap(generation) {
            Ok(unused) => {
                drop(unused);
                shared.store.drop_tree(&name)
            }
            Err(held) => {
                let _ = held.retired.set((shared, name));
                Ok(())
            }
        }
    }
}

/// An iterator that keeps its generation alive (declared after the
/// iterator, so it is dropped after it).
struct Held<S: KvStore> {
    iter: KvIter<<S::Tree as KvTree>::Bytes>,
    _generation: Arc<Generation<S>>,
}

impl<S: KvStore> Iterator for Held<S> {
    type Item = Result<(<S::Tree as KvTree>::Bytes, <S::Tree as KvTree>::Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.iter.next()
    }
}

impl<S: KvStore> Deref for Generation<S> {
    type Target = S::Tree;

    fn deref(&self) -> &S::Tree {
        &self.tree
    }
}

impl<S: KvStore> Drop for Generation<S> {
    fn drop(&mut self) {
        if let Some((shared, name)) = self.retired.take() {
            // On failure the tree stays, unreferenced: the directory does
            // not point at it, so the next open drops it.
            let _ = shared.store.drop_tree(&name);
        }
    }
}
