//! The shard's authenticated state: a 16-ary sparse Merkle trie over
//! `key_hash(collection, _id)` (`docs/merkle.md`), held in memory.
//!
//! Each position of the complete 16-ary trie over the 64 nibbles of a key hash
//! is empty (no key below it), a leaf (exactly one key below it, and its parent
//! has more), or an inner node (two or more keys below it). The shape therefore
//! depends only on the set of keys, and the root only on the documents.
//! An update touches the nodes on one path: O(log16 n) nodes.
//!
//! Why in memory (`docs/engine.md`): the trie is derived state. Every document
//! record stores its document hash, so the trie is rebuilt from the documents
//! when a shard opens, and a write stores no Merkle node at all: the nodes on a
//! path cost hashing, not storage keys. Pending changes of a write live in a
//! [`MerkleTxn`] and reach the trie only after the write's batch is on storage.

mod mark;

use std::collections::HashMap;

use stratosdb_proof::hash::{EMPTY_ROOT, Hash, leaf_hash, nibble, node_hash};
use stratosdb_proof::{InclusionProof, NonInclusionProof, Proof, ProofLevel, Terminal};

use crate::overlay::Overlay;

/// What occupies a position of the trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Leaf { key: Hash, doc: Hash },
    Inner { hash: Hash },
}

impl Slot {
    fn hash(&self) -> Hash {
        match self {
            Slot::Leaf { key, doc } => leaf_hash(key, doc),
            Slot::Inner { hash } => *hash,
        }
    }
}

/// An inner node: its present children in nibble order (compact: a node holds
/// three children on average, not sixteen slots).
#[derive(Clone, Debug, Default)]
struct Node {
    bitmap: u16,
    /// The views' generation ([`MerkleTree`]) this version was stored in; 0:
    /// not known. Not part of the node's content (it sits in padding).
    stamp: u32,
    children: Vec<Slot>,
}

impl Node {
    fn position(&self, n: u8) -> usize {
        (self.bitmap & ((1u16 << n) - 1)).count_ones() as usize
    }

    fn child(&self, n: u8) -> Option<Slot> {
        if self.bitmap & (1 << n) == 0 {
            return None;
        }
        self.children.get(self.position(n)).copied()
    }

    fn set_child(&mut self, n: u8, slot: Option<Slot>) {
        let at = self.position(n);
        let present = self.bitmap & (1 << n) != 0;
        match (present, slot) {
            (true, Some(s)) => self.children[at] = s,
            (true, None) => {
                self.children.remove(at);
                self.bitmap &= !(1 << n);
            }
            (false, Some(s)) => {
                // Nodes are many and small: no spare capacity.
                self.children.reserve_exact(1);
                self.children.insert(at, s);
                self.bitmap |= 1 << n;
            }
            (false, None) => {}
        }
    }

    fn hash(&self) -> Hash {
        // On the stack: a write hashes every node on its path.
        let mut hashes = [[0u8; 32]; 16];
        for (hash, child) in hashes.iter_mut().zip(&self.children) {
            *hash = child.hash();
        }
        node_hash(self.bitmap, &hashes[..self.children.len().min(16)])
    }

    /// The children with their nibbles.
    fn entries(&self) -> impl Iterator<Item = (u8, Slot)> + '_ {
        (0u8..16)
            .filter(|n| self.bitmap & (1 << n) != 0)
            .zip(self.children.iter().copied())
    }
}

/// Where an inner node sits: its depth and the key-hash nibbles above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct NodeKey {
    depth: u8,
    prefix: Hash,
}

impl NodeKey {
    fn on_path(key: &Hash, depth: usize) -> NodeKey {
        let mut prefix = [0u8; 32];
        prefix[..depth / 2].copy_from_slice(&key[..depth / 2]);
        if depth % 2 == 1 {
            prefix[depth / 2] = key[depth / 2] & 0xF0;
        }
        NodeKey {
            depth: depth as u8,
            prefix,
        }
    }
}

/// The committed trie of one shard.
#[derive(Default)]
pub(crate) struct MerkleTree {
    root: Option<Slot>,
    nodes: HashMap<NodeKey, Node>,
    /// The trie as of the latest anchor mark, kept as its difference from
    /// this one (`mark.rs`).
    view: Option<mark::MarkView>,
    /// The trie as of the mark before the latest, kept the same way.
    previous: Option<mark::MarkView>,
    /// Changes whenever a view is made or rebuilt (never 0 after that). A
    /// node stored with this stamp was stored since the latest mark, so the
    /// views hold its version at their marks already: replacing it again
    /// needs no look-up in their maps.
    generation: u32,
}

impl MerkleTree {
    /// Builds the trie of a set of leaves `(key hash, document hash)`.
    pub fn from_leaves(leaves: &mut [(Hash, Hash)]) -> MerkleTree {
        leaves.sort_unstable_by_key(|l| l.0);
        let mut tree = MerkleTree::default();
        tree.root = tree.build(leaves, 0);
        tree
    }

    fn build(&mut self, leaves: &[(Hash, Hash)], depth: usize) -> Option<Slot> {
        match leaves {
            [] => None,
            [(key, doc)] => Some(Slot::Leaf {
                key: *key,
                doc: *doc,
            }),
            // Equal keys cannot reach past the last nibble; keys are unique.
            [(key, doc), ..] if depth >= 64 => Some(Slot::Leaf {
                key: *key,
                doc: *doc,
            }),
            _ => {
                let mut node = Node::default();
                let mut start = 0;
                while start < leaves.len() {
                    let n = nibble(&leaves[start].0, depth);
                    let end = start
                        + leaves[start..]
                            .iter()
                            .take_while(|l| nibble(&l.0, depth) == n)
                            .count();
                    let child = self.build(&leaves[start..end], depth + 1);
                    node.set_child(n, child);
                    start = end;
                }
                let hash = node.hash();
                self.nodes
                    .insert(NodeKey::on_path(&leaves[0].0, depth), node);
                Some(Slot::Inner { hash })
            }
        }
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        self.root.map_or(EMPTY_ROOT, |s| s.hash())
    }

    /// Bytes of memory the trie holds: its nodes, their children, and the
    /// map's slots (hashbrown keeps at least one free slot in eight), and the
    /// view of the latest anchor mark.
    pub fn memory_bytes(&self) -> usize {
        let per_entry = std::mem::size_of::<NodeKey>() + std::mem::size_of::<Node>() + 1;
        let map = self.nodes.capacity() * per_entry;
        let children: usize = self
            .nodes
            .values()
            .map(|n| n.children.capacity() * std::mem::size_of::<Slot>())
            .sum();
        map + children + self.view_memory_bytes()
    }

    /// Inner nodes held.
    #[cfg(test)]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A proof for (`collection`, `id`): inclusion if present, else non-inclusion.
    pub fn prove(&self, collection: &str, id: &str) -> Proof {
        prove_in(self.root, |k| self.nodes.get(k), collection, id).0
    }

    /// Makes a transaction's changes part of the trie. While a mark's view
    /// is kept, each node replaced keeps its version of the mark (copy on
    /// write); a batch that made a new mark brings the new mark's view, and
    /// the view it replaces becomes the previous mark's, kept the same way.
    pub fn commit(&mut self, txn: MerkleChanges) {
        if let Some(root) = txn.root {
            self.root = root;
        }
        let new_mark = matches!(txn.view, mark::ViewChange::New(..));
        if new_mark {
            self.previous = self.view.take();
        }
        // A node replaced again since the latest mark (stamped with this
        // generation) has its version at that mark in the latest view
        // already, and so in the previous one (replaced since the latest
        // mark is replaced since the one before): the views' maps are looked
        // up once per node and mark, not per write. A batch that makes a
        // mark stamps nothing (0): its new view holds only what changed
        // after the mark inside the batch.
        let generation = self.generation;
        let stamp = if new_mark { 0 } else { generation };
        let mut keep = if new_mark { None } else { self.view.as_mut() };
        for (key, node) in txn.nodes {
            let before = match node {
                Some(mut node) => {
                    node.stamp = stamp;
                    self.nodes.insert(key, node)
                }
                None => self.nodes.remove(&key),
            };
            if generation != 0 && before.as_ref().is_some_and(|b| b.stamp == generation) {
                continue;
            }
            if let Some(previous) = self.previous.as_mut() {
                previous.nodes.entry(key).or_insert_with(|| before.clone());
            }
            if let Some(view) = keep.as_mut() {
                view.nodes.entry(key).or_insert(before);
            }
        }
        if new_mark {
            self.new_generation();
        }
        self.commit_view(txn.view);
    }

    /// A view was made or rebuilt: no node stored so far is known to be
    /// kept in it.
    fn new_generation(&mut self) {
        self.generation = match self.generation.checked_add(1) {
            Some(next) => next,
            None => {
                // Once in 2^32 marks: no stamp may name a generation again.
                for node in self.nodes.values_mut() {
                    node.stamp = 0;
                }
                1
            }
        };
    }
}

/// The proof of (`collection`, `id`) in the trie of `root` whose nodes
/// `node` finds, and the document hash the key has there (`None`: absent).
fn prove_in<'n>(
    root: Option<Slot>,
    node: impl Fn(&NodeKey) -> Option<&'n Node>,
    collection: &str,
    id: &str,
) -> (Proof, Option<Hash>) {
    let key = stratosdb_proof::hash::key_hash(collection, id);
    let mut levels = Vec::new();
    let mut slot = root;
    let mut depth = 0;
    while let Some(Slot::Inner { .. }) = slot {
        // An inner slot always has its node; a missing one would be a bug
        // in this module, and the proof then ends at an empty slot.
        let Some(node) = node(&NodeKey::on_path(&key, depth)) else {
            slot = None;
            break;
        };
        let n = nibble(&key, depth);
        let siblings = node
            .entries()
            .filter(|(i, _)| *i != n)
            .map(|(_, c)| c.hash())
            .collect();
        levels.push(ProofLevel {
            bitmap: node.bitmap,
            siblings,
        });
        slot = node.child(n);
        depth += 1;
    }
    let (collection, id) = (collection.to_string(), id.to_string());
    match slot {
        Some(Slot::Leaf { key: k, doc }) if k == key => (
            Proof::Inclusion(InclusionProof {
                collection,
                id,
                levels,
            }),
            Some(doc),
        ),
        Some(Slot::Leaf { key: other, doc }) => (
            Proof::NonInclusion(NonInclusionProof {
                collection,
                id,
                levels,
                terminal: Terminal::OtherLeaf {
                    key_hash: other,
                    doc_hash: doc,
                },
            }),
            None,
        ),
        _ => (
            Proof::NonInclusion(NonInclusionProof {
                collection,
                id,
                levels,
                terminal: Terminal::EmptySlot,
            }),
            None,
        ),
    }
}

/// Pending changes to a [`MerkleTree`], with per-command rollback.
pub(crate) struct MerkleTxn<'a> {
    base: &'a MerkleTree,
    /// `None`: the root is unchanged.
    root: Option<Option<Slot>>,
    root_undo: Option<Option<Option<Slot>>>,
    nodes: Overlay<NodeKey, Node>,
    /// What the batch does to the view of the latest mark (`mark.rs`).
    view: mark::ViewChange,
}

/// What a committed [`MerkleTxn`] changes.
pub(crate) struct MerkleChanges {
    root: Option<Option<Slot>>,
    nodes: Vec<(NodeKey, Option<Node>)>,
    view: mark::ViewChange,
}

impl<'a> MerkleTxn<'a> {
    pub fn new(base: &'a MerkleTree) -> Self {
        MerkleTxn {
            base,
            root: None,
            root_undo: None,
            nodes: Overlay::default(),
            view: mark::ViewChange::default(),
        }
    }

    pub fn begin_command(&mut self) {
        self.nodes.begin_command();
        self.root_undo = None;
    }

    pub fn rollback_command(&mut self) {
        self.nodes.rollback_command();
        if let Some(previous) = self.root_undo.take() {
            self.root = previous;
        }
    }

    pub fn into_changes(self) -> MerkleChanges {
        MerkleChanges {
            root: self.root,
            nodes: self.nodes.into_entries().collect(),
            view: self.view,
        }
    }

    fn current_root(&self) -> Option<Slot> {
        self.root.unwrap_or(self.base.root)
    }

    fn set_root(&mut self, slot: Option<Slot>) {
        if self.root_undo.is_none() {
            self.root_undo = Some(self.root);
        }
        self.root = Some(slot);
    }

    fn node(&self, key: &NodeKey) -> Option<Node> {
        match self.nodes.get(key) {
            Some(pending) => pending.clone(),
            None => self.base.nodes.get(key).cloned(),
        }
    }

    /// The document hash of `key`'s leaf with the changes so far (`None`:
    /// no such document). The trie has a leaf for exactly the stored
    /// documents, so this answers "does it exist" without reading storage.
    pub fn leaf(&self, key: &Hash) -> Option<Hash> {
        let mut slot = self.current_root();
        let mut depth = 0;
        loop {
            match slot? {
                Slot::Leaf { key: k, doc } => return (k == *key).then_some(doc),
                Slot::Inner { .. } => {
                    let node_key = NodeKey::on_path(key, depth);
                    let node = match self.nodes.get(&node_key) {
                        Some(pending) => pending.as_ref(),
                        None => self.base.nodes.get(&node_key),
                    };
                    slot = node?.child(nibble(key, depth));
                    depth += 1;
                }
            }
        }
    }

    /// The root the trie will have once the changes so far are committed.
    pub fn root(&self) -> Hash {
        self.current_root().map_or(EMPTY_ROOT, |s| s.hash())
    }

    /// Sets (`Some(doc_hash)`) or removes (`None`) the leaf of `key`;
    /// returns the leaf's document hash before (`None`: there was none).
    pub fn update(&mut self, key: &Hash, doc: Option<Hash>) -> Option<Hash> {
        let root = self.current_root();
        let mut before = None;
        let new_root = self.update_slot(0, key, root, doc, &mut before);
        if new_root != root {
            self.set_root(new_root);
        }
        self.note_changed(key, before);
        before
    }

    /// Writes a node (`None`: removes it), first keeping the node of a mark
    /// made earlier in this batch.
    fn set_node(&mut self, key: NodeKey, node: Option<Node>) {
        if self.view.needs_node(&key) {
            let before = self.node(&key);
            self.view.keep_node(key, before);
        }
        match node {
            Some(node) => self.nodes.put(key, node),
            None => self.nodes.delete(key),
        }
    }

    /// `before`: set to the key's document hash before the change.
    fn update_slot(
        &mut self,
        depth: usize,
        key: &Hash,
        slot: Option<Slot>,
        doc: Option<Hash>,
        before: &mut Option<Hash>,
    ) -> Option<Slot> {
        match slot {
            None => doc.map(|doc| Slot::Leaf { key: *key, doc }),
            Some(Slot::Leaf {
                key: other,
                doc: other_doc,
            }) => {
                if other == *key {
                    *before = Some(other_doc);
                    return doc.map(|doc| Slot::Leaf { key: *key, doc });
                }
                match doc {
                    None => slot,
                    Some(doc) => Some(self.split(depth, (key, doc), (&other, other_doc))),
                }
            }
            Some(Slot::Inner { .. }) => {
                let node_key = NodeKey::on_path(key, depth);
                // An inner slot without its node cannot happen (the trie is built
                // and changed only here); treat it as empty rather than panic.
                let mut node = self.node(&node_key).unwrap_or_default();
                let n = nibble(key, depth);
                let child = self.update_slot(depth + 1, key, node.child(n), doc, before);
                node.set_child(n, child);
                match (node.children.first().copied(), node.children.len()) {
                    (None, _) => {
                        self.set_node(node_key, None);
                        None
                    }
                    (Some(leaf @ Slot::Leaf { .. }), 1) => {
                        // A lone leaf moves up to take the node's place.
                        self.set_node(node_key, None);
                        Some(leaf)
                    }
                    _ => {
                        let hash = node.hash();
                        self.set_node(node_key, Some(node));
                        Some(Slot::Inner { hash })
                    }
                }
            }
        }
    }

    /// Makes the inner node(s) that separate two leaves meeting at `depth`.
    fn split(&mut self, depth: usize, a: (&Hash, Hash), b: (&Hash, Hash)) -> Slot {
        let (na, nb) = (nibble(a.0, depth), nibble(b.0, depth));
        let mut node = Node::default();
        if na == nb && depth < 63 {
            let below = self.split(depth + 1, a, b);
            node.set_child(na, Some(below));
        } else {
            node.set_child(
                na,
                Some(Slot::Leaf {
                    key: *a.0,
                    doc: a.1,
                }),
            );
            node.set_child(
                nb,
                Some(Slot::Leaf {
                    key: *b.0,
                    doc: b.1,
                }),
            );
        }
        let hash = node.hash();
        self.set_node(NodeKey::on_path(a.0, depth), Some(node));
        Slot::Inner { hash }
    }
}

/// The root of a set of leaves computed from nothing: what the incremental
/// root must always equal. Used by snapshot import and tests.
pub fn root_from_scratch(leaves: &mut [(Hash, Hash)]) -> Hash {
    MerkleTree::from_leaves(leaves).root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb_proof::hash::key_hash;

    fn doc(i: u32) -> Hash {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&i.to_be_bytes());
        h
    }

    /// `leaf` of every key of the space 0..300, as the leaves say.
    fn assert_leaves(txn: &MerkleTxn, leaves: &[(Hash, Hash)]) {
        for i in 0..300u32 {
            let key = key_hash("c", &i.to_string());
            let expected = leaves.iter().find(|(k, _)| *k == key).map(|l| l.1);
            assert_eq!(txn.leaf(&key), expected, "key {i}");
        }
    }

    #[test]
    fn incremental_updates_match_a_rebuild_and_rollback_undoes() {
        let mut tree = MerkleTree::default();
        let mut leaves = Vec::new();
        for round in 0..5u32 {
            let mut txn = MerkleTxn::new(&tree);
            for i in 0..200u32 {
                txn.begin_command();
                let key = key_hash("c", &format!("{}", (i * 7 + round * 13) % 300));
                let value = (i % 3 != 0).then(|| doc(i + round));
                txn.update(&key, value);
                if i % 10 == 0 {
                    txn.rollback_command();
                    continue;
                }
                leaves.retain(|(k, _)| *k != key);
                if let Some(v) = value {
                    leaves.push((key, v));
                }
            }
            // Pending changes are seen before the commit, and after it.
            assert_leaves(&txn, &leaves);
            let pending = txn.root();
            let changes = txn.into_changes();
            tree.commit(changes);
            assert_eq!(tree.root(), pending);
            assert_leaves(&MerkleTxn::new(&tree), &leaves);
            let rebuilt = MerkleTree::from_leaves(&mut leaves.clone());
            assert_eq!(tree.root(), rebuilt.root());
            assert_eq!(tree.node_count(), rebuilt.node_count());
        }
    }

    /// The memory the design note quotes: about 130 bytes a document.
    #[test]
    fn a_trie_of_100k_documents_holds_under_140_bytes_each() {
        let n = 100_000u32;
        let mut leaves: Vec<(Hash, Hash)> = (0..n)
            .map(|i| (key_hash("c", &i.to_string()), doc(i)))
            .collect();
        let tree = MerkleTree::from_leaves(&mut leaves);
        let per_doc = tree.memory_bytes() as f64 / f64::from(n);
        assert!(
            (60.0..140.0).contains(&per_doc),
            "{per_doc:.1} bytes per document"
        );
    }
}
