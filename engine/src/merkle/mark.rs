//! The trie as of the latest anchor mark, kept beside the current trie as
//! their difference, so that a document unchanged since the mark can be
//! proven against the mark's root (`docs/merkle.md`, "Anchor marks"); and
//! the trie as of the mark before it, kept the same way, so that proofs can
//! still be anchored while the latest mark's epoch is not anchored yet.
//!
//! - **Memory O(changes since the mark).** The view holds, for each node a
//!   write replaced since the mark, the node as it was at the mark (copy on
//!   write: a write changes O(log n) nodes, so a write costs O(log n) more
//!   work at most), and for each key changed since the mark its document hash
//!   then. Every other node is the same in both tries.
//! - **Restart.** The view is not stored. What is stored, in the write's own
//!   batch, is the document hash at the mark of each key first changed after
//!   it (a record: open in the applied index's value, or packed with others
//!   in a key of their own, `docs/merkle.md`). On open the view is rebuilt by undoing
//!   those changes on a copy of the paths they touch, and its root must be the
//!   mark's root. The previous mark's records are kept until the next mark:
//!   undoing the latest mark's changes, then the previous one's, gives the
//!   previous view (a key changed only since the latest mark had the same
//!   hash at both). A previous view that cannot be rebuilt is left out.

use std::collections::HashMap;

/// The views' maps: they are keyed by SHA-256 outputs (key hashes, trie
/// paths of them) and touched several times a write, so a seeded fast hash
/// instead of SipHash, which was half the instructions a mark added per
/// write (`BENCHMARKS.md`, issue 9).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use stratosdb_proof::Proof;
use stratosdb_proof::hash::{EMPTY_ROOT, Hash};

use crate::anchor::MarkChange;

use super::{MerkleTree, MerkleTxn, Node, NodeKey, Slot, prove_in};

/// The trie as of one mark.
pub(crate) struct MarkView {
    epoch: u64,
    root: Option<Slot>,
    /// Nodes replaced since the mark: their version at the mark (`None`: the
    /// position was empty or a leaf then).
    pub(super) nodes: Map<NodeKey, Option<Node>>,
    /// Keys changed since the mark: their document hash at it.
    changed: Map<Hash, Option<Hash>>,
    /// Stored records of older marks may remain (deleted a chunk per write).
    stale_records: bool,
    /// Records of this mark stored in the applied index's value, not packed
    /// into a key of their own yet (`docs/merkle.md`, "Restart").
    open: Vec<MarkChange>,
}

impl MarkView {
    fn new(epoch: u64, root: Option<Slot>) -> Self {
        MarkView {
            epoch,
            root,
            nodes: Map::default(),
            changed: Map::default(),
            stale_records: true,
            open: Vec::new(),
        }
    }

    fn memory_bytes(&self) -> usize {
        let node = std::mem::size_of::<NodeKey>() + std::mem::size_of::<Option<Node>>() + 1;
        let children: usize = self
            .nodes
            .values()
            .flatten()
            .map(|n| n.children.capacity() * std::mem::size_of::<Slot>())
            .sum();
        let changed = std::mem::size_of::<MarkChange>() + 1;
        self.nodes.capacity() * node
            + children
            + self.changed.capacity() * changed
            + self.open.capacity() * std::mem::size_of::<MarkChange>()
    }
}

/// What a write batch does to the view of the latest mark.
pub(crate) enum ViewChange {
    /// The mark stays the latest: the keys the batch changed first since it,
    /// with their hash at the mark, (`cleaned`) whether the stale records
    /// of older marks are all deleted now, and the records open after the
    /// batch if it changed them.
    Kept {
        changed: BatchChanges,
        cleaned: Option<bool>,
        open: Option<Vec<MarkChange>>,
    },
    /// The batch made a new mark: its view, with the batch's changes after
    /// it, and the keys the batch changed before it, first since the mark
    /// before (with their hash at that mark: its records).
    New(MarkView, BatchChanges),
}

impl Default for ViewChange {
    fn default() -> Self {
        ViewChange::Kept {
            changed: BatchChanges::default(),
            cleaned: None,
            open: None,
        }
    }
}

/// A batch's first changes of keys since a mark, with their hash at it, in
/// the order the batch made them: a list, not a map, so that a write adds a
/// push (the view's own map, looked up anyway, says which changes are
/// first since the mark). A key the batch changes twice is listed twice,
/// the first entry holding its hash at the mark, until
/// [`BatchChanges::settle`] sorts the list and keeps the first of each key.
#[derive(Default)]
pub(crate) struct BatchChanges {
    records: Vec<MarkChange>,
    settled: bool,
}

impl BatchChanges {
    fn push(&mut self, key: Hash, before: Option<Hash>) {
        self.records.push((key, before));
        self.settled = false;
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sorts by key hash, keeping each key's first entry (a stable sort).
    fn settle(&mut self) {
        if !self.settled {
            self.records.sort_by_key(|r| r.0);
            self.records.dedup_by_key(|r| r.0);
            self.settled = true;
        }
    }
}

impl ViewChange {
    /// A mark was made earlier in this batch and `key` has not been kept yet.
    pub(super) fn needs_node(&self, key: &NodeKey) -> bool {
        matches!(self, ViewChange::New(view, _) if !view.nodes.contains_key(key))
    }

    pub(super) fn keep_node(&mut self, key: NodeKey, node: Option<Node>) {
        if let ViewChange::New(view, _) = self {
            view.nodes.insert(key, node);
        }
    }
}

impl<'a> MerkleTxn<'a> {
    /// Records the hash a key had before its first change since the latest
    /// mark. Changes of a command that is rolled back may leave an entry:
    /// it holds the hash at the mark all the same, so it is harmless.
    pub(super) fn note_changed(&mut self, key: &Hash, before: Option<Hash>) {
        match &mut self.view {
            ViewChange::New(view, _) => {
                view.changed.entry(*key).or_insert(before);
            }
            ViewChange::Kept { changed, .. } => {
                let first = self
                    .base
                    .view
                    .as_ref()
                    .is_some_and(|v| !v.changed.contains_key(key));
                if first {
                    changed.push(*key, before);
                }
            }
        }
    }

    /// Starts the view of a mark made now: the trie as the batch has it so
    /// far. The batch's changes before it stay the records of the mark
    /// before (which becomes the previous mark).
    pub fn start_mark(&mut self, epoch: u64) {
        let before_mark = match std::mem::take(&mut self.view) {
            ViewChange::Kept { changed, .. } => changed,
            ViewChange::New(_, before_mark) => before_mark,
        };
        self.view = ViewChange::New(MarkView::new(epoch, self.current_root()), before_mark);
    }

    /// What the batch must store: for the latest mark (and, in a batch that
    /// made one, for the mark before it) the epoch and, for each key first
    /// changed since it, the key's document hash at the mark, in key-hash
    /// order. Borrowed: the records stay in the batch's view change.
    pub fn mark_records(&mut self) -> [Option<(u64, std::borrow::Cow<'_, [MarkChange]>)>; 2] {
        use std::borrow::Cow;
        match (&mut self.view, self.base.view.as_ref()) {
            (ViewChange::New(view, before_mark), before) => {
                let mut latest: Vec<MarkChange> =
                    view.changed.iter().map(|(k, h)| (*k, *h)).collect();
                latest.sort_unstable();
                before_mark.settle();
                let before = before
                    .filter(|_| !before_mark.is_empty())
                    .map(|b| (b.epoch, Cow::Borrowed(before_mark.records.as_slice())));
                [Some((view.epoch, Cow::Owned(latest))), before]
            }
            (ViewChange::Kept { changed, .. }, Some(view)) => {
                changed.settle();
                [
                    Some((view.epoch, Cow::Borrowed(changed.records.as_slice()))),
                    None,
                ]
            }
            (ViewChange::Kept { .. }, None) => [None, None],
        }
    }

    /// Whether the batch made a mark.
    pub fn made_mark(&self) -> bool {
        matches!(self.view, ViewChange::New(..))
    }

    /// The epoch of the latest mark after the batch.
    pub fn latest_epoch(&self) -> Option<u64> {
        match &self.view {
            ViewChange::New(view, _) => Some(view.epoch),
            ViewChange::Kept { .. } => self.base.view.as_ref().map(|v| v.epoch),
        }
    }

    /// The records open before the batch, with their mark's epoch (the
    /// latest mark's before the batch).
    pub fn open_records(&self) -> Option<(u64, &'a [MarkChange])> {
        let view = self.base.view.as_ref()?;
        Some((view.epoch, view.open.as_slice()))
    }

    /// The records of the latest mark open after the batch.
    pub fn set_open_records(&mut self, records: Vec<MarkChange>) {
        match &mut self.view {
            ViewChange::New(view, _) => view.open = records,
            ViewChange::Kept { open, .. } => *open = Some(records),
        }
    }

    /// Records of marks before this epoch may remain in storage: those older
    /// than the previous mark (or than the latest, with no previous view).
    pub fn stale_records_below(&self) -> Option<u64> {
        match &self.view {
            ViewChange::New(view, _) => Some(self.base.view.as_ref().unwrap_or(view).epoch),
            ViewChange::Kept { .. } => {
                let view = self.base.view.as_ref()?;
                let keep_from = self.base.previous.as_ref().unwrap_or(view).epoch;
                view.stale_records.then_some(keep_from)
            }
        }
    }

    /// Whether the batch deleted the last stale records.
    pub fn records_cleaned(&mut self, done: bool) {
        match &mut self.view {
            ViewChange::New(view, _) => view.stale_records = !done,
            ViewChange::Kept { cleaned, .. } => *cleaned = Some(done),
        }
    }
}

impl MerkleTree {
    /// A proof of (`collection`, `id`) against the latest mark's root, with
    /// the mark's epoch and the document hash the key had then.
    pub fn prove_at_mark(&self, collection: &str, id: &str) -> Option<(u64, Proof, Option<Hash>)> {
        self.prove_in_view(self.view.as_ref()?, collection, id)
    }

    /// [`MerkleTree::prove_at_mark`] against the mark before the latest.
    pub fn prove_at_previous_mark(
        &self,
        collection: &str,
        id: &str,
    ) -> Option<(u64, Proof, Option<Hash>)> {
        self.prove_in_view(self.previous.as_ref()?, collection, id)
    }

    fn prove_in_view(
        &self,
        view: &MarkView,
        collection: &str,
        id: &str,
    ) -> Option<(u64, Proof, Option<Hash>)> {
        let node = |k: &NodeKey| match view.nodes.get(k) {
            Some(at_mark) => at_mark.as_ref(),
            None => self.nodes.get(k),
        };
        let (proof, doc) = prove_in(view.root, node, collection, id);
        Some((view.epoch, proof, doc))
    }

    /// Rebuilds the view of the mark before the latest, of `epoch`, by
    /// undoing the latest mark's recorded changes (`latest`) and then its
    /// own (`changed`); `false` (and no previous view) if that does not lead
    /// to `mark_root` (its records were partly deleted, say by a version
    /// that kept none).
    pub fn restore_previous_view(
        &mut self,
        epoch: u64,
        mark_root: &Hash,
        latest: &[MarkChange],
        changed: &[MarkChange],
    ) -> bool {
        self.previous = None;
        self.new_generation();
        let mut undo = MerkleTxn::new(self);
        for (key, doc) in latest.iter().chain(changed) {
            undo.update(key, *doc);
        }
        let root = undo.current_root();
        let nodes = undo.nodes.into_entries().collect();
        if root.map_or(EMPTY_ROOT, |s| s.hash()) != *mark_root {
            return false;
        }
        let mut view = MarkView::new(epoch, root);
        view.nodes = nodes;
        self.previous = Some(view);
        true
    }

    /// Rebuilds the view of the mark of `epoch` from the stored document
    /// hashes at the mark of the keys changed since (`changed`, of which
    /// `open` are those stored in the applied index's value), by undoing
    /// those changes; fails with the root it found if that is not `mark_root`.
    pub fn restore_view(
        &mut self,
        epoch: u64,
        mark_root: &Hash,
        changed: Vec<MarkChange>,
        open: Vec<MarkChange>,
    ) -> Result<(), Hash> {
        self.view = None;
        self.new_generation();
        let mut undo = MerkleTxn::new(self);
        for (key, doc) in &changed {
            undo.update(key, *doc);
        }
        let root = undo.current_root();
        let nodes = undo.nodes.into_entries().collect();
        let found = root.map_or(EMPTY_ROOT, |s| s.hash());
        if found != *mark_root {
            return Err(found);
        }
        let mut view = MarkView::new(epoch, root);
        view.nodes = nodes;
        view.changed = changed.into_iter().collect();
        view.open = open;
        self.view = Some(view);
        Ok(())
    }

    /// The keys changed since the latest mark with their hash at it (what a
    /// snapshot carries so the receiver can rebuild the view).
    pub fn mark_changes(&self) -> Vec<MarkChange> {
        let Some(view) = &self.view else {
            return Vec::new();
        };
        let mut out: Vec<_> = view.changed.iter().map(|(k, h)| (*k, *h)).collect();
        out.sort_unstable();
        out
    }

    /// Up to `limit` of [`MerkleTree::mark_changes`] after key hash `after`,
    /// in key-hash order, with the latest mark's epoch, and whether more
    /// follow (an export's page).
    pub fn mark_changes_after(
        &self,
        after: Option<&Hash>,
        limit: usize,
    ) -> Option<(u64, Vec<MarkChange>, bool)> {
        let view = self.view.as_ref()?;
        let mut out: Vec<MarkChange> = view
            .changed
            .iter()
            .filter(|(k, _)| after.is_none_or(|after| *k > after))
            .map(|(k, h)| (*k, *h))
            .collect();
        let limit = limit.max(1);
        let more = out.len() > limit;
        if more {
            out.select_nth_unstable(limit);
            out.truncate(limit);
        }
        out.sort_unstable();
        Some((view.epoch, out, more))
    }

    pub(super) fn view_memory_bytes(&self) -> usize {
        self.view.as_ref().map_or(0, MarkView::memory_bytes)
            + self.previous.as_ref().map_or(0, MarkView::memory_bytes)
    }

    pub(super) fn commit_view(&mut self, change: ViewChange) {
        match change {
            ViewChange::New(view, _) => self.view = Some(view),
            ViewChange::Kept {
                changed,
                cleaned,
                open,
            } => {
                if let Some(view) = &mut self.view {
                    if let Some(open) = open {
                        view.open = open;
                    }
                    // In the batch's order: a key's first entry holds its
                    // hash at the mark.
                    for (key, doc) in changed.records {
                        view.changed.entry(key).or_insert(doc);
                    }
                    if let Some(done) = cleaned {
                        view.stale_records &= !done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MerkleTree, MerkleTxn};
    use stratosdb_proof::hash::{Hash, key_hash};

    fn doc(i: u32) -> Hash {
        let mut h = [7u8; 32];
        h[..4].copy_from_slice(&i.to_be_bytes());
        h
    }

    fn id(i: u32) -> String {
        format!("k{i}")
    }

    /// The view kept by copy on write proves what a trie built from the
    /// mark's leaves proves, and so does the view rebuilt from the recorded
    /// changes; its memory follows the changes, not the shard.
    #[test]
    fn the_view_is_the_trie_of_the_mark() {
        let n = 10_000u32;
        let (mut leaves, mut tree) = trie_of(n);
        // Some changes, then a mark in the middle of a batch, then more.
        let mut txn = MerkleTxn::new(&tree);
        for i in 0..50 {
            txn.update(&key_hash("c", &id(i)), Some(doc(i + n)));
        }
        txn.start_mark(1);
        for i in 40..60 {
            txn.update(&key_hash("c", &id(i)), None);
        }
        let changes = txn.into_changes();
        tree.commit(changes);
        for (i, leaf) in leaves.iter_mut().enumerate().take(50) {
            leaf.1 = doc(i as u32 + n);
        }
        let at_mark = MerkleTree::from_leaves(&mut leaves.clone());
        let after_batch = tree.view_memory_bytes();
        // Later batches: changes, inserts of new keys, deletes.
        for round in 0..5u32 {
            let mut txn = MerkleTxn::new(&tree);
            for i in 0..40 {
                let k = (i * 37 + round * 11) % (n + 100);
                let value = (i % 4 != 0).then(|| doc(k + 2 * n + round));
                txn.update(&key_hash("c", &id(k)), value);
            }
            txn.records_cleaned(true);
            tree.commit(txn.into_changes());
        }
        for i in (0..n + 100).step_by(7).chain(35..65) {
            let (epoch, proof, _) = tree.prove_at_mark("c", &id(i)).unwrap();
            assert_eq!(epoch, 1);
            assert_eq!(proof, at_mark.prove("c", &id(i)), "key {i}");
        }
        let changed = tree.mark_changes();
        assert!(changed.len() <= 60 + 5 * 40);
        let memory = tree.view_memory_bytes();
        assert!(
            memory < after_batch + changed.len() * 6 * 600,
            "{memory} bytes for {} changes",
            changed.len()
        );

        // Rebuilt from the changes: the same proofs.
        let mut reopened = MerkleTree::from_leaves(&mut current_leaves(&tree, n));
        reopened
            .restore_view(1, &at_mark.root(), changed.clone(), Vec::new())
            .unwrap();
        for i in (0..n + 100).step_by(7).chain(35..65) {
            assert_eq!(
                reopened.prove_at_mark("c", &id(i)).unwrap().1,
                at_mark.prove("c", &id(i))
            );
        }
        // A wrong record does not lead back to the mark's root.
        let mut wrong = changed;
        wrong[0].1 = Some(doc(999_999));
        assert!(
            MerkleTree::from_leaves(&mut current_leaves(&tree, n))
                .restore_view(1, &at_mark.root(), wrong, Vec::new())
                .is_err()
        );
    }

    /// Nodes replaced again and again across batches (a few keys written
    /// over and over, so every write replaces the same paths), across
    /// marks, and in the batch that makes a mark: the latest and the
    /// previous views still prove what tries built from their marks'
    /// leaves prove (the views' maps are looked up once per node and mark).
    #[test]
    fn nodes_replaced_many_times_keep_their_version_at_both_marks() {
        replace_nodes_across_marks(0);
    }

    /// The same across the views' generation number wrapping around.
    #[test]
    fn the_views_generation_wraps_around_safely() {
        replace_nodes_across_marks(u32::MAX - 1);
    }

    fn replace_nodes_across_marks(generation: u32) {
        let n = 300u32;
        let (mut leaves, mut tree) = trie_of(n);
        tree.generation = generation;
        let mut at_marks = Vec::new();
        let mut version = n;
        for epoch in 1..=4u64 {
            // Batches of two writes on a handful of keys; one batch makes
            // the mark between its writes.
            for batch in 0..6u32 {
                let mut txn = MerkleTxn::new(&tree);
                for w in 0..2u32 {
                    if batch == 3 && w == 1 {
                        txn.start_mark(epoch);
                        at_marks.push(MerkleTree::from_leaves(&mut leaves.clone()));
                    }
                    let i = (batch * 2 + w + epoch as u32) % 7;
                    version += 1;
                    // Every fourth write deletes, then the key comes back.
                    let value = (!version.is_multiple_of(4)).then(|| doc(version));
                    txn.update(&key_hash("c", &id(i)), value);
                    leaves.retain(|(k, _)| *k != key_hash("c", &id(i)));
                    if let Some(v) = value {
                        leaves.push((key_hash("c", &id(i)), v));
                    }
                }
                txn.records_cleaned(true);
                tree.commit(txn.into_changes());
            }
            let latest = &at_marks[at_marks.len() - 1];
            for i in 0..n {
                let (e, proof, _) = tree.prove_at_mark("c", &id(i)).unwrap();
                assert_eq!((e, &proof), (epoch, &latest.prove("c", &id(i))), "key {i}");
                if let Some(previous) = at_marks.len().checked_sub(2).map(|p| &at_marks[p]) {
                    let (e, proof, _) = tree.prove_at_previous_mark("c", &id(i)).unwrap();
                    assert_eq!(e, epoch - 1);
                    assert_eq!(proof, previous.prove("c", &id(i)), "key {i}, previous");
                }
            }
        }
    }

    /// `n` documents' leaves and their trie.
    fn trie_of(n: u32) -> (Vec<(Hash, Hash)>, MerkleTree) {
        let leaves: Vec<(Hash, Hash)> = (0..n).map(|i| (key_hash("c", &id(i)), doc(i))).collect();
        let tree = MerkleTree::from_leaves(&mut leaves.clone());
        (leaves, tree)
    }

    /// The leaves of the current trie, read back through its proofs.
    fn current_leaves(tree: &MerkleTree, n: u32) -> Vec<(Hash, Hash)> {
        (0..n + 100)
            .filter_map(|i| {
                let key = key_hash("c", &id(i));
                super::super::prove_in(tree.root, |k| tree.nodes.get(k), "c", &id(i))
                    .1
                    .map(|d| (key, d))
            })
            .collect()
    }
}
