//! A write-back buffer (a memtable) in front of a [`KvStore`]: applied batches
//! land in memory, and reach the store together, as ONE atomic write, when
//! the buffer fills or on [`KvStore::flush`]. Reads see the pending writes.
//!
//! Why: sled seals and writes its IO buffer (a write and a `sync_file_range`,
//! by a sled thread) for every atomic batch, whatever its size, and a raft
//! node applies a batch per loop iteration. On a 3-node cluster that was
//! about a fifth of a follower's CPU (docs/engine.md, "Write-back buffer").
//! Keys written again before a drain (the applied index, a shard's hot trie
//! nodes) also reach the store once.
//!
//! What it keeps: a drain writes every tree's pending batches in one atomic
//! write, so after a crash the store holds its state as of some drain,
//! whole: each shard at its applied index, with exactly the writes up to it.
//! What was applied after the last drain is lost with the process and
//! applied again from the raft log, which keeps those entries: a log is
//! compacted only after a flush. Whoever acknowledges a write only once it
//! is durable (the embedded engine's group commit) flushes first, and a
//! flush drains.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use super::{KvIter, KvStore, KvTree, WriteBatch};
use crate::Result;

/// The bytes a store's trees hand out.
type Bytes<S> = <<S as KvStore>::Tree as KvTree>::Bytes;

/// Pending writes of one tree: `Some` written, `None` deleted.
type Writes<B> = BTreeMap<Vec<u8>, Option<B>>;

/// A [`KvStore`] whose writes are buffered in memory up to `limit_bytes`.
pub struct WriteBack<S: KvStore> {
    shared: Arc<Shared<S>>,
}

impl<S: KvStore> Clone for WriteBack<S> {
    fn clone(&self) -> Self {
        WriteBack {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<S: KvStore> {
    inner: S,
    /// Taken by every write and every drain, so a drain sees no write
    /// half-buffered and clears only what it wrote.
    pending: Mutex<Pending<S>>,
    /// A write that finds this many bytes pending drains them first.
    limit_bytes: usize,
}

struct Pending<S: KvStore> {
    /// The buffer of every open tree, by name: one per tree however often
    /// it is opened.
    trees: HashMap<String, Arc<Buffer<S>>>,
    /// Keys and values pending in all the trees.
    bytes: usize,
}

struct Buffer<S: KvStore> {
    tree: S::Tree,
    writes: RwLock<Writes<Bytes<S>>>,
    /// The tree was dropped; a handle still held (a reader's old
    /// generation) writes straight to the store.
    dropped: AtomicBool,
}

impl<S: KvStore> WriteBack<S>
where
    Bytes<S>: From<Vec<u8>>,
{
    /// Buffers writes to `inner` until `limit_bytes` of keys and values are
    /// pending (0: every write goes straight through).
    pub fn new(inner: S, limit_bytes: usize) -> Self {
        WriteBack {
            shared: Arc::new(Shared {
                inner,
                pending: Mutex::new(Pending {
                    trees: HashMap::new(),
                    bytes: 0,
                }),
                limit_bytes,
            }),
        }
    }

    /// Bytes of keys and values waiting for the next drain.
    pub fn pending_bytes(&self) -> usize {
        self.shared.pending.lock().bytes
    }
}

impl<S: KvStore> Shared<S> {
    /// Writes every pending batch to the store in one atomic write, then
    /// forgets them. On an error they stay pending (and readable).
    fn drain(&self, pending: &mut Pending<S>) -> Result<()> {
        if pending.bytes == 0 {
            return Ok(());
        }
        let buffers: Vec<_> = pending.trees.values().collect();
        let guards: Vec<_> = buffers.iter().map(|b| b.writes.read()).collect();
        let batches = buffers
            .iter()
            .zip(&guards)
            .filter(|(_, writes)| !writes.is_empty())
            .map(|(buffer, writes)| (&buffer.tree, to_batch(writes)))
            .collect();
        self.inner.apply_all(batches)?;
        drop(guards);
        for buffer in pending.trees.values() {
            buffer.writes.write().clear();
        }
        pending.bytes = 0;
        Ok(())
    }
}

fn to_batch<B: AsRef<[u8]>>(writes: &Writes<B>) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for (key, value) in writes {
        match value {
            Some(v) => batch.put(key.clone(), v.as_ref().to_vec()),
            None => batch.delete(key.clone()),
        }
    }
    batch
}

impl<S: KvStore> Shared<S>
where
    Bytes<S>: From<Vec<u8>>,
{
    fn apply_all(&self, batches: Vec<(&WriteBackTree<S>, WriteBatch)>) -> Result<()> {
        let mut pending = self.pending.lock();
        // Drained before this write is buffered, so that a failed drain
        // leaves the write out, as a failed write must.
        if pending.bytes > 0 && pending.bytes >= self.limit_bytes {
            self.drain(&mut pending)?;
        }
        let (buffered, through): (Vec<_>, Vec<_>) = batches
            .into_iter()
            .partition(|(t, _)| self.limit_bytes > 0 && !t.buffer.dropped.load(Ordering::Relaxed));
        if !through.is_empty() {
            self.inner.apply_all(
                through
                    .into_iter()
                    .map(|(t, batch)| (&t.buffer.tree, batch))
                    .collect(),
            )?;
        }
        for (tree, batch) in buffered {
            let mut writes = tree.buffer.writes.write();
            for (key, value) in batch.ops {
                let key_len = key.len();
                pending.bytes += key_len + value.as_ref().map_or(0, Vec::len);
                if let Some(old) = writes.insert(key, value.map(Bytes::<S>::from)) {
                    pending.bytes -= key_len + old.as_ref().map_or(0, |v| v.as_ref().len());
                }
            }
        }
        Ok(())
    }
}

impl<S: KvStore> Drop for Shared<S> {
    fn drop(&mut self) {
        // Whatever is pending reaches the store before it closes (sled
        // flushes when its last handle goes).
        let mut pending = self.pending.lock();
        if let Err(e) = self.drain(&mut pending) {
            tracing::error!(error = %e, "pending writes could not be stored at close");
        }
    }
}

impl<S: KvStore> KvStore for WriteBack<S>
where
    Bytes<S>: From<Vec<u8>>,
{
    type Tree = WriteBackTree<S>;

    fn open_tree(&self, name: &str) -> Result<WriteBackTree<S>> {
        let mut pending = self.shared.pending.lock();
        let buffer = match pending.trees.get(name) {
            Some(buffer) => buffer.clone(),
            None => {
                let buffer = Arc::new(Buffer {
                    tree: self.shared.inner.open_tree(name)?,
                    writes: RwLock::new(BTreeMap::new()),
                    dropped: AtomicBool::new(false),
                });
                pending.trees.insert(name.to_string(), buffer.clone());
                buffer
            }
        };
        Ok(WriteBackTree {
            buffer,
            shared: self.shared.clone(),
        })
    }

    fn tree_names(&self) -> Result<Vec<String>> {
        self.shared.inner.tree_names()
    }

    fn drop_tree(&self, name: &str) -> Result<()> {
        let mut pending = self.shared.pending.lock();
        if let Some(buffer) = pending.trees.remove(name) {
            buffer.dropped.store(true, Ordering::Relaxed);
            let mut writes = buffer.writes.write();
            for (key, value) in writes.iter() {
                pending.bytes -= key.len() + value.as_ref().map_or(0, |v| v.as_ref().len());
            }
            writes.clear();
        }
        self.shared.inner.drop_tree(name)
    }

    fn flush(&self) -> Result<()> {
        self.shared.drain(&mut self.shared.pending.lock())?;
        // Outside the lock: writes go on while the store syncs; what they
        // add is the next flush's.
        self.shared.inner.flush()
    }

    fn apply_all(&self, batches: Vec<(&WriteBackTree<S>, WriteBatch)>) -> Result<()> {
        self.shared.apply_all(batches)
    }
}

/// A tree of a [`WriteBack`] store.
pub struct WriteBackTree<S: KvStore> {
    buffer: Arc<Buffer<S>>,
    shared: Arc<Shared<S>>,
}

impl<S: KvStore> Clone for WriteBackTree<S> {
    fn clone(&self) -> Self {
        WriteBackTree {
            buffer: self.buffer.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: KvStore> KvTree for WriteBackTree<S>
where
    Bytes<S>: From<Vec<u8>>,
{
    type Bytes = Bytes<S>;

    fn get(&self, key: &[u8]) -> Result<Option<Bytes<S>>> {
        if let Some(value) = self.buffer.writes.read().get(key) {
            return Ok(value.clone());
        }
        self.buffer.tree.get(key)
    }

    fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> KvIter<Bytes<S>> {
        // The pending entries of the range, copied now (values are cheap
        // clones); a drain meanwhile writes the same values to the store.
        let mut pending: Vec<(Vec<u8>, Option<Bytes<S>>)> = {
            let writes = self.buffer.writes.read();
            if writes.is_empty() || holds_nothing(&lower, &upper) {
                return self.buffer.tree.range(lower, upper, reverse);
            }
            writes
                .range((lower.clone(), upper.clone()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let stored = self.buffer.tree.range(lower, upper, reverse);
        if pending.is_empty() {
            return stored;
        }
        if reverse {
            pending.reverse();
        }
        Box::new(Merged {
            stored: stored.peekable(),
            pending: pending.into_iter().peekable(),
            reverse,
        })
    }

    fn apply(&self, batch: WriteBatch) -> Result<()> {
        self.shared.apply_all(vec![(self, batch)])
    }
}

/// Whether no key lies between the bounds (a `BTreeMap` refuses such a range).
fn holds_nothing(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
        | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
        _ => false,
    }
}

/// The store's entries of a range merged with the pending ones, in the
/// range's order; a pending write hides the stored entry of its key.
struct Merged<B> {
    stored: std::iter::Peekable<KvIter<B>>,
    pending: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Option<B>)>>,
    reverse: bool,
}

impl<B: AsRef<[u8]> + From<Vec<u8>>> Iterator for Merged<B> {
    type Item = Result<(B, B)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_pending = match (self.stored.peek(), self.pending.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.stored.next(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(Ok((stored, _))), Some((pending, _))) => {
                    let order = pending.as_slice().cmp(stored.as_ref());
                    if order == std::cmp::Ordering::Equal {
                        // The stored entry is hidden by the pending one.
                        self.stored.next();
                        true
                    } else {
                        (order == std::cmp::Ordering::Less) != self.reverse
                    }
                }
            };
            if !take_pending {
                return self.stored.next();
            }
            if let Some((key, Some(value))) = self.pending.next() {
                return Some(Ok((B::from(key), value)));
            }
            // A pending delete: nothing to yield for that key.
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ops::Bound;

    use proptest::prelude::*;

    use super::*;
    use crate::storage::SledStore;

    #[derive(Debug, Clone)]
    enum Step {
        /// Puts (`Some`) and deletes (`None`) on one tree, as one batch.
        Apply(usize, Vec<(u8, Option<u8>)>),
        /// One batch on each of the two trees, written together.
        ApplyBoth(Vec<(u8, Option<u8>)>, Vec<(u8, Option<u8>)>),
        Get(usize, u8),
        Range(usize, Option<u8>, Option<u8>, bool),
        Flush,
        /// Drops the tree and opens it again, empty.
        DropTree(usize),
        /// Closes the store and opens its folder again.
        Reopen,
    }

    fn batch() -> impl Strategy<Value = Vec<(u8, Option<u8>)>> {
        prop::collection::vec((0u8..24, prop::option::weighted(0.7, any::<u8>())), 0..6)
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0usize..2, batch()).prop_map(|(t, b)| Step::Apply(t, b)),
            2 => (batch(), batch()).prop_map(|(a, b)| Step::ApplyBoth(a, b)),
            3 => (0usize..2, 0u8..24).prop_map(|(t, k)| Step::Get(t, k)),
            3 => (0usize..2, prop::option::of(0u8..24), prop::option::of(0u8..24), any::<bool>())
                .prop_map(|(t, lo, hi, rev)| Step::Range(t, lo, hi, rev)),
            1 => Just(Step::Flush),
            1 => (0usize..2).prop_map(Step::DropTree),
            1 => Just(Step::Reopen),
        ]
    }

    fn key(k: u8) -> Vec<u8> {
        vec![b'k', k]
    }

    /// Values of varied length, so that the byte bound is crossed at
    /// different points.
    fn value(v: u8) -> Vec<u8> {
        vec![v; 1 + v as usize % 7]
    }

    fn to_write_batch(ops: &[(u8, Option<u8>)]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for &(k, v) in ops {
            match v {
                Some(v) => batch.put(key(k), value(v)),
                None => batch.delete(key(k)),
            }
        }
        batch
    }

    fn apply_model(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: &[(u8, Option<u8>)]) {
        for &(k, v) in ops {
            match v {
                Some(v) => model.insert(key(k), value(v)),
                None => model.remove(&key(k)),
            };
        }
    }

    const NAMES: [&str; 2] = ["a", "b"];

    fn open(
        dir: &std::path::Path,
        limit: usize,
    ) -> (WriteBack<SledStore>, Vec<WriteBackTree<SledStore>>) {
        let store = WriteBack::new(SledStore::open(dir, 1 << 20).unwrap(), limit);
        let trees = NAMES.iter().map(|n| store.open_tree(n).unwrap()).collect();
        (store, trees)
    }

    fn bound(k: Option<u8>) -> Bound<Vec<u8>> {
        k.map_or(Bound::Unbounded, |k| Bound::Included(key(k)))
    }

    fn run(steps: Vec<Step>, limit: usize) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut trees) = open(dir.path(), limit);
        let mut model: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = vec![BTreeMap::new(); 2];
        for step in steps {
            match step {
                Step::Apply(t, ops) => {
                    trees[t].apply(to_write_batch(&ops)).unwrap();
                    apply_model(&mut model[t], &ops);
                }
                Step::ApplyBoth(a, b) => {
                    store
                        .apply_all(vec![
                            (&trees[0], to_write_batch(&a)),
                            (&trees[1], to_write_batch(&b)),
                        ])
                        .unwrap();
                    apply_model(&mut model[0], &a);
                    apply_model(&mut model[1], &b);
                }
                Step::Get(t, k) => {
                    let got = trees[t].get(&key(k)).unwrap().map(|v| v.to_vec());
                    prop_assert_eq!(got, model[t].get(&key(k)).cloned());
                }
                Step::Range(t, lo, hi, reverse) => {
                    let got: Vec<(Vec<u8>, Vec<u8>)> = trees[t]
                        .range(bound(lo), bound(hi), reverse)
                        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
                        .collect::<Result<_>>()
                        .unwrap();
                    let in_range = (bound(lo), bound(hi));
                    let mut want: Vec<(Vec<u8>, Vec<u8>)> =
                        if lo.is_some() && hi.is_some() && lo > hi {
                            Vec::new()
                        } else {
                            model[t]
                                .range(in_range)
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        };
                    if reverse {
                        want.reverse();
                    }
                    prop_assert_eq!(got, want);
                }
                Step::Flush => {
                    store.flush().unwrap();
                    prop_assert_eq!(store.pending_bytes(), 0);
                }
                Step::DropTree(t) => {
                    store.drop_tree(NAMES[t]).unwrap();
                    trees[t] = store.open_tree(NAMES[t]).unwrap();
                    model[t].clear();
                }
                Step::Reopen => {
                    drop(trees);
                    drop(store);
                    (store, trees) = open(dir.path(), limit);
                }
            }
            if limit > 0 {
                // A write drains what it finds at or over the bound, so no
                // more than one batch's worth ever waits above it.
                prop_assert!(store.pending_bytes() < limit + 6 * 10);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Reads through the buffer answer as a plain map does, whether the
        /// writes are pending, drained by the bound, flushed, or read back
        /// after a reopen; a dropped tree comes back empty.
        #[test]
        fn answers_as_a_map(steps in prop::collection::vec(step(), 1..60), limit in prop_oneof![Just(0usize), Just(40), Just(1 << 20)]) {
            run(steps, limit)?;
        }
    }

    /// A drain bigger than sled's IO buffer (8 MiB) is written whole.
    #[test]
    fn a_large_drain_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (store, trees) = open(dir.path(), 64 << 20);
        for chunk in 0..24u32 {
            for tree in &trees {
                let mut batch = WriteBatch::default();
                for i in 0..64u32 {
                    batch.put(
                        (chunk * 64 + i).to_be_bytes().to_vec(),
                        vec![chunk as u8; 4096],
                    );
                }
                tree.apply(batch).unwrap();
            }
        }
        assert!(store.pending_bytes() > 12 << 20);
        store.flush().unwrap();
        drop(trees);
        drop(store);
        let (_store, trees) = open(dir.path(), 64 << 20);
        for tree in &trees {
            let entries: Vec<_> = tree
                .range(Bound::Unbounded, Bound::Unbounded, false)
                .collect::<Result<_>>()
                .unwrap();
            assert_eq!(entries.len(), 24 * 64);
            assert!(entries.iter().all(|(k, v)| {
                let n = u32::from_be_bytes(k.as_ref().try_into().unwrap());
                v.as_ref() == vec![(n / 64) as u8; 4096].as_slice()
            }));
        }
    }
}
