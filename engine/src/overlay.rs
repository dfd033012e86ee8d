//! A write overlay with per-command rollback, shared by the transaction over the
//! shard's tree ([`crate::txn::Txn`]) and the Merkle trie's pending changes.
//!
//! A batch of commands writes into one overlay; each command starts with
//! [`Overlay::begin_command`], and a command that fails on its merits is undone
//! with [`Overlay::rollback_command`], leaving the earlier commands' writes in
//! place. The undo log only covers the current command, so it stays as small as
//! the largest command.

use std::collections::BTreeMap;
use std::ops::RangeBounds;

pub(crate) struct Overlay<K: Ord + Clone, V: Clone> {
    /// `Some(v)`: written; `None`: deleted.
    map: BTreeMap<K, Option<V>>,
    /// Entries of the current command: the key and what the overlay held before.
    undo: Vec<(K, Option<Option<V>>)>,
}

impl<K: Ord + Clone, V: Clone> Default for Overlay<K, V> {
    fn default() -> Self {
        Overlay {
            map: BTreeMap::new(),
            undo: Vec::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Overlay<K, V> {
    /// `None`: the overlay does not know the key (read the base). `Some(None)`: deleted.
    pub fn get<Q>(&self, key: &Q) -> Option<&Option<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.get(key)
    }

    pub fn put(&mut self, key: K, value: V) {
        self.set(key, Some(value));
    }

    pub fn delete(&mut self, key: K) {
        self.set(key, None);
    }

    fn set(&mut self, key: K, value: Option<V>) {
        let previous = self.map.insert(key.clone(), value);
        self.undo.push((key, previous));
    }

    /// Starts a command: what was written before it can no longer be undone.
    pub fn begin_command(&mut self) {
        self.undo.clear();
    }

    /// Undoes every write of the current command.
    pub fn rollback_command(&mut self) {
        while let Some((key, previous)) = self.undo.pop() {
            match previous {
                Some(v) => self.map.insert(key, v),
                None => self.map.remove(&key),
            };
        }
    }

    pub fn range<Q, R>(&self, range: R) -> impl Iterator<Item = (&K, &Option<V>)>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
        R: RangeBounds<Q>,
    {
        self.map.range(range)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn into_entries(self) -> impl Iterator<Item = (K, Option<V>)> {
        self.map.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_restores_the_state_before_the_command() {
        let mut o: Overlay<u32, &str> = Overlay::default();
        o.begin_command();
        o.put(1, "a");
        o.put(2, "b");
        o.begin_command();
        o.put(1, "changed");
        o.delete(2);
        o.put(3, "new");
        o.rollback_command();
        assert_eq!(o.get(&1), Some(&Some("a")));
        assert_eq!(o.get(&2), Some(&Some("b")));
        assert_eq!(o.get(&3), None);
        assert_eq!(o.len(), 2);
    }
}
