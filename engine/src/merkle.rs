//! The shard's authenticated state: a 16-ary sparse Merkle tree over
//! `key_hash(collection, _id)`, stored node by node in the shard's tree and
//! updated in the same batch as the documents (`docs/merkle.md`).
//!
//! Each position of the complete 16-ary trie over the 64 nibbles of a key hash
//! is empty (no key below it), a leaf (exactly one key below it, and its parent
//! has more), or an inner node (two or more keys below it). The shape therefore
//! depends only on the set of keys, and the root only on the documents.
//! An update touches the nodes on one path: O(log16 n) nodes.

use stratosdb_proof::hash::{EMPTY_ROOT, Hash, leaf_hash, nibble, node_hash};
use stratosdb_proof::{InclusionProof, NonInclusionProof, Proof, ProofLevel, Terminal};

use crate::keys::MERKLE_PREFIX;
use crate::storage::KvTree;
use crate::txn::Txn;
use crate::{EngineError, Result};

/// Where the root slot lives (a [`Slot`] encoding; absent = empty shard).
pub(crate) const ROOT_SLOT_KEY: &[u8] = &[0x00, b'm'];

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

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Slot::Leaf { key, doc } => {
                out.push(0);
                out.extend_from_slice(key);
                out.extend_from_slice(doc);
            }
            Slot::Inner { hash } => {
                out.push(1);
                out.extend_from_slice(hash);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<(Slot, usize)> {
        let hash_at = |at: usize| -> Result<Hash> {
            bytes
                .get(at..at + 32)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| EngineError::Corruption("truncated Merkle slot".into()))
        };
        match bytes.first() {
            Some(0) => Ok((
                Slot::Leaf {
                    key: hash_at(1)?,
                    doc: hash_at(33)?,
                },
                65,
            )),
            Some(1) => Ok((Slot::Inner { hash: hash_at(1)? }, 33)),
            _ => Err(EngineError::Corruption("bad Merkle slot tag".into())),
        }
    }
}

/// An inner node: up to 16 children.
#[derive(Clone, Debug, Default)]
struct Node {
    children: [Option<Slot>; 16],
}

impl Node {
    fn bitmap(&self) -> u16 {
        self.children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .fold(0u16, |b, (i, _)| b | (1 << i))
    }

    fn hash(&self) -> Hash {
        let hashes: Vec<Hash> = self.children.iter().flatten().map(Slot::hash).collect();
        node_hash(self.bitmap(), hashes.iter())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 16 * 65);
        out.extend_from_slice(&self.bitmap().to_be_bytes());
        for child in self.children.iter().flatten() {
            child.encode(&mut out);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Node> {
        let bitmap = match bytes {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => return Err(EngineError::Corruption("truncated Merkle node".into())),
        };
        let mut node = Node::default();
        let mut pos = 2;
        for i in 0..16 {
            if bitmap & (1 << i) != 0 {
                let (slot, used) = Slot::decode(&bytes[pos..])?;
                node.children[i] = Some(slot);
                pos += used;
            }
        }
        Ok(node)
    }
}

/// Storage key of the inner node at `depth` on `key`'s path.
fn node_key(key: &Hash, depth: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + depth.div_ceil(2));
    k.push(MERKLE_PREFIX);
    k.push(depth as u8);
    k.extend_from_slice(&key[..depth / 2]);
    if depth % 2 == 1 {
        k.push(key[depth / 2] & 0xF0);
    }
    k
}

/// The root slot's record when the root is an inner node: a marker only, so
/// that the record does not change (and is not rewritten) on every write. The
/// root's hash is then the hash of the inner node at depth 0.
const ROOT_IS_INNER: u8 = 2;

fn read_root_slot(get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>>) -> Result<Option<Slot>> {
    match get(ROOT_SLOT_KEY)? {
        None => Ok(None),
        Some(raw) if raw == [ROOT_IS_INNER] => {
            let node = get(&node_key(&[0u8; 32], 0))?
                .ok_or_else(|| EngineError::Corruption("missing Merkle root node".into()))?;
            Ok(Some(Slot::Inner {
                hash: Node::decode(&node)?.hash(),
            }))
        }
        Some(raw) => Slot::decode(&raw).map(|(slot, _)| Some(slot)),
    }
}

/// Sets (`Some(doc_hash)`) or removes (`None`) the leaf of `key`.
pub(crate) fn update<T: KvTree>(txn: &mut Txn<'_, T>, key: &Hash, doc: Option<Hash>) -> Result<()> {
    let raw = txn.get(ROOT_SLOT_KEY)?;
    let root = match raw.as_deref() {
        None => None,
        // `update_slot` reads an inner node from storage and never uses this hash.
        Some([ROOT_IS_INNER]) => Some(Slot::Inner { hash: [0u8; 32] }),
        Some(bytes) => Some(Slot::decode(bytes)?.0),
    };
    let new_raw = match update_slot(txn, 0, key, root, doc)? {
        None => None,
        Some(Slot::Inner { .. }) => Some(vec![ROOT_IS_INNER]),
        Some(leaf) => {
            let mut buf = Vec::with_capacity(65);
            leaf.encode(&mut buf);
            Some(buf)
        }
    };
    if new_raw != raw {
        match new_raw {
            Some(bytes) => txn.put(ROOT_SLOT_KEY.to_vec(), bytes),
            None => txn.delete(ROOT_SLOT_KEY.to_vec()),
        }
    }
    Ok(())
}

fn update_slot<T: KvTree>(
    txn: &mut Txn<'_, T>,
    depth: usize,
    key: &Hash,
    slot: Option<Slot>,
    doc: Option<Hash>,
) -> Result<Option<Slot>> {
    match slot {
        None => Ok(doc.map(|doc| Slot::Leaf { key: *key, doc })),
        Some(Slot::Leaf {
            key: other,
            doc: other_doc,
        }) => {
            if other == *key {
                return Ok(doc.map(|doc| Slot::Leaf { key: *key, doc }));
            }
            match doc {
                None => Ok(slot),
                Some(doc) => split(txn, depth, (key, doc), (&other, other_doc)).map(Some),
            }
        }
        Some(Slot::Inner { .. }) => {
            let storage_key = node_key(key, depth);
            let mut node = match txn.get(&storage_key)? {
                Some(bytes) => Node::decode(&bytes)?,
                None => {
                    return Err(EngineError::Corruption(format!(
                        "missing Merkle node at depth {depth}"
                    )));
                }
            };
            let n = nibble(key, depth) as usize;
            node.children[n] = update_slot(txn, depth + 1, key, node.children[n].take(), doc)?;
            let mut present = node.children.iter().flatten();
            match (present.next().copied(), present.next()) {
                (None, _) => {
                    txn.delete(storage_key);
                    Ok(None)
                }
                (Some(leaf @ Slot::Leaf { .. }), None) => {
                    // A lone leaf moves up to take the node's place.
                    txn.delete(storage_key);
                    Ok(Some(leaf))
                }
                _ => {
                    let hash = node.hash();
                    txn.put(storage_key, node.encode());
                    Ok(Some(Slot::Inner { hash }))
                }
            }
        }
    }
}

/// Makes the inner node(s) that separate two leaves meeting at `depth`.
fn split<T: KvTree>(
    txn: &mut Txn<'_, T>,
    depth: usize,
    a: (&Hash, Hash),
    b: (&Hash, Hash),
) -> Result<Slot> {
    let (na, nb) = (nibble(a.0, depth) as usize, nibble(b.0, depth) as usize);
    let mut node = Node::default();
    if na == nb {
        node.children[na] = Some(split(txn, depth + 1, a, b)?);
    } else {
        node.children[na] = Some(Slot::Leaf {
            key: *a.0,
            doc: a.1,
        });
        node.children[nb] = Some(Slot::Leaf {
            key: *b.0,
            doc: b.1,
        });
    }
    let hash = node.hash();
    txn.put(node_key(a.0, depth), node.encode());
    Ok(Slot::Inner { hash })
}

/// The current root.
pub(crate) fn root<T: KvTree>(tree: &T) -> Result<Hash> {
    let slot = read_root_slot(|k| Ok(tree.get(k)?.map(|b| b.as_ref().to_vec())))?;
    Ok(slot.map_or(EMPTY_ROOT, |s| s.hash()))
}

/// A proof for (`collection`, `id`): inclusion if present, else non-inclusion.
/// The caller holds the shard's write lock so the path is consistent.
pub(crate) fn prove<T: KvTree>(tree: &T, collection: &str, id: &str) -> Result<Proof> {
    let key = stratosdb_proof::hash::key_hash(collection, id);
    let get =
        |k: &[u8]| -> Result<Option<Vec<u8>>> { Ok(tree.get(k)?.map(|b| b.as_ref().to_vec())) };
    let mut levels = Vec::new();
    let mut slot = read_root_slot(get)?;
    let mut depth = 0;
    while let Some(Slot::Inner { .. }) = slot {
        let node = get(&node_key(&key, depth))?
            .map(|b| Node::decode(&b))
            .transpose()?
            .ok_or_else(|| {
                EngineError::Corruption(format!("missing Merkle node at depth {depth}"))
            })?;
        let n = nibble(&key, depth) as usize;
        let siblings = node
            .children
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != n)
            .filter_map(|(_, c)| c.map(|c| c.hash()))
            .collect();
        levels.push(ProofLevel {
            bitmap: node.bitmap(),
            siblings,
        });
        slot = node.children[n];
        depth += 1;
    }
    let (collection, id) = (collection.to_string(), id.to_string());
    Ok(match slot {
        Some(Slot::Leaf { key: k, .. }) if k == key => Proof::Inclusion(InclusionProof {
            collection,
            id,
            levels,
        }),
        Some(Slot::Leaf { key: other, doc }) => Proof::NonInclusion(NonInclusionProof {
            collection,
            id,
            levels,
            terminal: Terminal::OtherLeaf {
                key_hash: other,
                doc_hash: doc,
            },
        }),
        _ => Proof::NonInclusion(NonInclusionProof {
            collection,
            id,
            levels,
            terminal: Terminal::EmptySlot,
        }),
    })
}

/// The root of a set of leaves computed from nothing, in memory: what the
/// incremental root must always equal. Used by snapshot import and tests.
pub fn root_from_scratch(leaves: &mut [(Hash, Hash)]) -> Hash {
    leaves.sort_unstable_by_key(|l| l.0);
    subtree_hash(leaves, 0).unwrap_or(EMPTY_ROOT)
}

fn subtree_hash(leaves: &[(Hash, Hash)], depth: usize) -> Option<Hash> {
    match leaves {
        [] => None,
        [(key, doc)] => Some(leaf_hash(key, doc)),
        // Only equal keys reach past the last nibble; keys are unique, so keep the first.
        [(key, doc), ..] if depth >= 64 => Some(leaf_hash(key, doc)),
        _ => {
            let mut bitmap = 0u16;
            let mut hashes = Vec::with_capacity(16);
            let mut start = 0;
            while start < leaves.len() {
                let n = nibble(&leaves[start].0, depth);
                let end = start
                    + leaves[start..]
                        .iter()
                        .take_while(|l| nibble(&l.0, depth) == n)
                        .count();
                if let Some(h) = subtree_hash(&leaves[start..end], depth + 1) {
                    bitmap |= 1 << n;
                    hashes.push(h);
                }
                start = end;
            }
            Some(node_hash(bitmap, hashes.iter()))
        }
    }
}
