//! Shard leaves and the cluster root of an epoch.
//!
//! Each shard contributes one leaf: its collection, shard number, the raft
//! index of its anchor mark and its root at that index. The leaves, sorted by
//! (collection as UTF-8 bytes, shard number), are the leaves of an `rs_merkle`
//! SHA-256 tree: an inner node is `SHA-256(left ‖ right)` and an odd node at
//! the end of a level moves up unchanged. Its root is the **cluster root**;
//! an epoch with no shards has the empty root (32 zero bytes).

use rs_merkle::{MerkleTree, algorithms::Sha256 as MerkleSha256};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Hash, VerifyError};

/// The domain tag of a shard leaf's hash (the shard commitment's own tags are
/// 0x00–0x03, `docs/merkle.md`).
pub const TAG_SHARD_LEAF: u8 = 0x10;

/// One shard's root at the raft index of its anchor mark.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardLeaf {
    pub collection: String,
    pub shard: u32,
    pub raft_index: u64,
    #[serde(with = "crate::hex_serde::hash")]
    pub root: Hash,
}

impl ShardLeaf {
    /// `SHA-256(0x10 ‖ u32be(len(collection)) ‖ collection ‖ u32be(shard) ‖
    /// u64be(raft_index) ‖ root)`.
    pub fn hash(&self) -> Hash {
        let mut h = Sha256::new();
        h.update([TAG_SHARD_LEAF]);
        h.update((self.collection.len() as u32).to_be_bytes());
        h.update(self.collection.as_bytes());
        h.update(self.shard.to_be_bytes());
        h.update(self.raft_index.to_be_bytes());
        h.update(self.root);
        h.finalize().into()
    }
}

/// Sorts leaves into their canonical order: by collection, then shard.
pub fn sort_leaves(leaves: &mut [ShardLeaf]) {
    leaves.sort_by(|a, b| {
        (a.collection.as_bytes(), a.shard).cmp(&(b.collection.as_bytes(), b.shard))
    });
}

/// The cluster root over leaves given in canonical order (see [`sort_leaves`]).
///
/// ```
/// use stratosdb_verifier::{cluster_root, LeafProof, ShardLeaf};
/// let leaves: Vec<ShardLeaf> = (0..3)
///     .map(|s| ShardLeaf { collection: "users".into(), shard: s, raft_index: 10 + s as u64, root: [s as u8; 32] })
///     .collect();
/// let root = cluster_root(&leaves);
/// let proof = LeafProof::new(&leaves, 1).unwrap();
/// proof.verify(&leaves[1], &root).unwrap();
/// assert!(proof.verify(&leaves[2], &root).is_err());
/// ```
pub fn cluster_root(leaves: &[ShardLeaf]) -> Hash {
    let hashes: Vec<Hash> = leaves.iter().map(ShardLeaf::hash).collect();
    MerkleTree::<MerkleSha256>::from_leaves(&hashes)
        .root()
        .unwrap_or([0u8; 32])
}

/// Proves that one shard leaf is under a cluster root: the leaf's position,
/// the number of leaves, and the sibling hashes `rs_merkle` needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafProof {
    pub index: u32,
    pub count: u32,
    #[serde(with = "crate::hex_serde::hash_list")]
    pub hashes: Vec<Hash>,
}

impl LeafProof {
    /// The proof of `leaves[index]`, the leaves in canonical order.
    pub fn new(leaves: &[ShardLeaf], index: usize) -> Result<LeafProof, VerifyError> {
        if index >= leaves.len() {
            return Err(VerifyError::MalformedLeafProof(format!(
                "leaf {index} of {}",
                leaves.len()
            )));
        }
        let hashes: Vec<Hash> = leaves.iter().map(ShardLeaf::hash).collect();
        let tree = MerkleTree::<MerkleSha256>::from_leaves(&hashes);
        Ok(LeafProof {
            index: index as u32,
            count: leaves.len() as u32,
            hashes: tree.proof(&[index]).proof_hashes().to_vec(),
        })
    }

    /// Checks that `leaf` is at this proof's position under the cluster root
    /// of an anchor, which also fixes the number of leaves: with `rs_merkle`'s
    /// odd-node rule, some proofs fit trees of two sizes, so the count must
    /// come from the anchor (its payload's `leaf_count`), not from the proof.
    pub fn verify_anchored(
        &self,
        leaf: &ShardLeaf,
        anchor: &crate::AnchorPayload,
    ) -> Result<(), VerifyError> {
        if self.count != anchor.leaf_count {
            return Err(VerifyError::MalformedLeafProof(format!(
                "proof for {} leaves, epoch {} anchored {}",
                self.count, anchor.epoch, anchor.leaf_count
            )));
        }
        self.verify(leaf, &anchor.cluster_root)
    }

    /// Checks that `leaf` is at this proof's position under `root`, in a tree
    /// of `self.count` leaves (see [`LeafProof::verify_anchored`]).
    pub fn verify(&self, leaf: &ShardLeaf, root: &Hash) -> Result<(), VerifyError> {
        if self.count == 0 || self.index >= self.count {
            return Err(VerifyError::MalformedLeafProof(format!(
                "leaf {} of {}",
                self.index, self.count
            )));
        }
        // A tree of n leaves has depth ceil(log2 n): no honest proof is longer.
        let depth = u32::BITS - (self.count - 1).leading_zeros();
        if self.hashes.len() > depth as usize {
            return Err(VerifyError::MalformedLeafProof(format!(
                "{} hashes for a tree of {} leaves",
                self.hashes.len(),
                self.count
            )));
        }
        let ok = self
            .root_from(leaf.hash())
            .is_some_and(|computed| computed == *root);
        if ok {
            Ok(())
        } else {
            Err(VerifyError::LeafNotUnderRoot {
                leaf: format!(
                    "{}/{} at raft index {}",
                    leaf.collection, leaf.shard, leaf.raft_index
                ),
                root: hex::encode(root),
            })
        }
    }
}

impl LeafProof {
    /// The root the proof leads to from the leaf's hash, walking up
    /// `rs_merkle`'s tree of `self.count` leaves: at each layer the node's
    /// sibling is the next proof hash (a left sibling when the node's index
    /// is odd), except for the last node of an odd layer, which moves up
    /// unchanged. `None` unless the proof has exactly the hashes the walk
    /// takes. (It is what `rs_merkle::MerkleProof::root` computes for one
    /// leaf, without its allocations; the tests check them against each other.)
    fn root_from(&self, leaf_hash: Hash) -> Option<Hash> {
        let mut hashes = self.hashes.iter();
        let mut node = leaf_hash;
        let mut index = self.index as usize;
        let mut count = self.count as usize;
        let mut pair = [0u8; 64];
        while count > 1 {
            let lone = index.is_multiple_of(2) && index + 1 == count;
            if !lone {
                let sibling = hashes.next()?;
                let (left, right) = if index.is_multiple_of(2) {
                    (&node, sibling)
                } else {
                    (sibling, &node)
                };
                pair[..32].copy_from_slice(left);
                pair[32..].copy_from_slice(right);
                node = Sha256::digest(pair).into();
            }
            index /= 2;
            count = count.div_ceil(2);
        }
        hashes.next().is_none().then_some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u32) -> Vec<ShardLeaf> {
        let mut v: Vec<ShardLeaf> = (0..n)
            .map(|s| ShardLeaf {
                collection: if s % 2 == 0 { "a".into() } else { "b".into() },
                shard: s,
                raft_index: 100 + u64::from(s),
                root: [s as u8; 32],
            })
            .collect();
        sort_leaves(&mut v);
        v
    }

    #[test]
    fn the_empty_epoch_has_the_empty_root_and_one_leaf_is_its_own_root() {
        assert_eq!(cluster_root(&[]), [0u8; 32]);
        let one = leaves(1);
        assert_eq!(cluster_root(&one), one[0].hash());
    }

    #[test]
    fn two_leaves_hash_as_documented() {
        let two = leaves(2);
        let mut h = Sha256::new();
        h.update(two[0].hash());
        h.update(two[1].hash());
        let expected: Hash = h.finalize().into();
        assert_eq!(cluster_root(&two), expected);
    }

    #[test]
    fn every_leaf_of_every_size_proves_and_no_other_leaf_does() {
        for n in 1..=17 {
            let all = leaves(n);
            let root = cluster_root(&all);
            for i in 0..all.len() {
                let proof = LeafProof::new(&all, i).unwrap();
                proof.verify(&all[i], &root).unwrap();
                for (j, other) in all.iter().enumerate() {
                    if j != i {
                        assert!(proof.verify(other, &root).is_err(), "n={n} i={i} j={j}");
                    }
                }
            }
        }
    }

    /// The walk computes what `rs_merkle` computes, for every leaf of every
    /// tree size up to 70, and refuses a proof with a hash too few or too many.
    #[test]
    fn the_walk_agrees_with_rs_merkle() {
        use rs_merkle::MerkleProof;
        for n in 1..=70 {
            let all = leaves(n);
            let root = cluster_root(&all);
            for i in 0..all.len() {
                let proof = LeafProof::new(&all, i).unwrap();
                let theirs = MerkleProof::<MerkleSha256>::new(proof.hashes.clone())
                    .root(&[i], &[all[i].hash()], all.len())
                    .unwrap();
                assert_eq!(theirs, root, "n={n} i={i}");
                assert_eq!(proof.root_from(all[i].hash()), Some(root), "n={n} i={i}");
                let mut longer = proof.clone();
                longer.hashes.push([7; 32]);
                assert_eq!(longer.root_from(all[i].hash()), None);
                if !proof.hashes.is_empty() {
                    let mut shorter = proof.clone();
                    shorter.hashes.pop();
                    assert_eq!(shorter.root_from(all[i].hash()), None);
                }
            }
        }
    }

    #[test]
    fn every_bit_flip_of_leaf_root_or_proof_is_rejected() {
        let all = leaves(5);
        let root = cluster_root(&all);
        let proof = LeafProof::new(&all, 3).unwrap();
        let leaf = &all[3];
        for byte in 0..32 {
            for bit in 0..8 {
                let mut r = root;
                r[byte] ^= 1 << bit;
                assert!(proof.verify(leaf, &r).is_err());
                let mut l = leaf.clone();
                l.root[byte] ^= 1 << bit;
                assert!(proof.verify(&l, &root).is_err());
                for k in 0..proof.hashes.len() {
                    let mut p = proof.clone();
                    p.hashes[k][byte] ^= 1 << bit;
                    assert!(proof.verify(leaf, &root).is_ok());
                    assert!(p.verify(leaf, &root).is_err());
                }
            }
        }
        for bit in 0..64 {
            let mut l = leaf.clone();
            l.raft_index ^= 1 << bit;
            assert!(proof.verify(&l, &root).is_err());
        }
        let mut other_shard = leaf.clone();
        other_shard.shard += 1;
        assert!(proof.verify(&other_shard, &root).is_err());
        let mut other_collection = leaf.clone();
        other_collection.collection.push('x');
        assert!(proof.verify(&other_collection, &root).is_err());
        let anchor = crate::AnchorPayload {
            cluster_id: [1; 32],
            epoch: 4,
            cluster_root: root,
            leaf_count: 5,
            previous: [0; 32],
        };
        proof.verify_anchored(leaf, &anchor).unwrap();
        for count in [4, 6, 7, 8] {
            let mut wrong_count = proof.clone();
            wrong_count.count = count;
            assert!(wrong_count.verify_anchored(leaf, &anchor).is_err());
        }
    }
}
