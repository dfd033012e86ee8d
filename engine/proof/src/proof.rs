//! Inclusion and non-inclusion proofs for a shard root, and their verification.
//!
//! The tree is a 16-ary sparse Merkle tree over `key_hash(collection, _id)`
//! (see `docs/merkle.md`): a proof is the list of inner nodes on the key's path,
//! each given as its child bitmap and the hashes of the children not on the path.

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::hash::{EMPTY_ROOT, Hash, TAG_NODE, doc_hash, key_hash, leaf_hash, nibble};
use crate::{ProofError, Value};

/// One inner node on the path from the root, top first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofLevel {
    /// Bit `i` set when the node has a child at nibble `i`.
    pub bitmap: u16,
    /// Hashes of the present children other than the one on the path, in nibble order.
    #[serde(with = "crate::hex_serde::hash_list")]
    pub siblings: Vec<Hash>,
}

/// Proves that a document, exactly as given, is in a shard under a root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub collection: String,
    pub id: String,
    pub levels: Vec<ProofLevel>,
}

/// What sits where the absent key would be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Terminal {
    /// The slot is empty (with no levels: the whole shard is empty).
    EmptySlot,
    /// Another document's leaf occupies the slot: its key shares the path so far.
    OtherLeaf {
        #[serde(with = "crate::hex_serde::hash")]
        key_hash: Hash,
        #[serde(with = "crate::hex_serde::hash")]
        doc_hash: Hash,
    },
}

/// Proves that no document with this `_id` is in the collection under a root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonInclusionProof {
    pub collection: String,
    pub id: String,
    pub levels: Vec<ProofLevel>,
    pub terminal: Terminal,
}

/// Either kind of proof, as a lookup returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "proof", rename_all = "snake_case")]
pub enum Proof {
    Inclusion(InclusionProof),
    NonInclusion(NonInclusionProof),
}

/// Reads what the derived form writes (`{"proof":"inclusion",...}`), in one
/// pass: serde's internally tagged enums first copy the whole object into
/// an owned buffer, every sibling hash a new string, to find the tag.
impl<'de> Deserialize<'de> for Proof {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Kind {
            Inclusion,
            NonInclusion,
        }
        #[derive(Deserialize)]
        struct Fields {
            proof: Kind,
            collection: String,
            id: String,
            levels: Vec<ProofLevel>,
            terminal: Option<Terminal>,
        }
        let f = Fields::deserialize(d)?;
        match (f.proof, f.terminal) {
            (Kind::Inclusion, _) => Ok(Proof::Inclusion(InclusionProof {
                collection: f.collection,
                id: f.id,
                levels: f.levels,
            })),
            (Kind::NonInclusion, Some(terminal)) => Ok(Proof::NonInclusion(NonInclusionProof {
                collection: f.collection,
                id: f.id,
                levels: f.levels,
                terminal,
            })),
            (Kind::NonInclusion, None) => Err(serde::de::Error::missing_field("terminal")),
        }
    }
}

/// The longest possible path: one level per nibble of a SHA-256 key.
pub const MAX_PROOF_DEPTH: usize = 64;

impl InclusionProof {
    /// Checks that `document` is stored under (`collection`, `id`) in the shard
    /// whose root is `root`.
    ///
    /// ```
    /// use stratosdb_proof::{hash, InclusionProof, Value};
    /// let doc = Value::from_json_str(r#"{"_id":"a","n":1}"#).unwrap();
    /// // A shard holding one document has that document's leaf as its root.
    /// let root = hash::leaf_hash(&hash::key_hash("c", "a"), &hash::doc_hash(&doc));
    /// let proof = InclusionProof { collection: "c".into(), id: "a".into(), levels: vec![] };
    /// assert!(proof.verify(&root, &doc).is_ok());
    /// ```
    pub fn verify(&self, root: &Hash, document: &Value) -> Result<(), ProofError> {
        self.verify_doc_hash(root, &doc_hash(document))
    }

    /// As [`InclusionProof::verify`], for a document hash computed by the caller.
    pub fn verify_doc_hash(&self, root: &Hash, doc_hash: &Hash) -> Result<(), ProofError> {
        let key = key_hash(&self.collection, &self.id);
        let computed = fold_to_root(&key, &self.levels, Some(leaf_hash(&key, doc_hash)))?;
        check_root(root, &computed)
    }
}

impl NonInclusionProof {
    /// Checks that no document with (`collection`, `id`) is in the shard under `root`.
    pub fn verify(&self, root: &Hash) -> Result<(), ProofError> {
        let key = key_hash(&self.collection, &self.id);
        let slot = match &self.terminal {
            Terminal::EmptySlot => None,
            Terminal::OtherLeaf {
                key_hash: other,
                doc_hash,
            } => {
                if *other == key {
                    return Err(ProofError::Malformed(
                        "the occupying leaf is the key itself".into(),
                    ));
                }
                if (0..self.levels.len()).any(|d| nibble(other, d) != nibble(&key, d)) {
                    return Err(ProofError::Malformed(
                        "the occupying leaf is not on the key's path".into(),
                    ));
                }
                Some(leaf_hash(other, doc_hash))
            }
        };
        let computed = fold_to_root(&key, &self.levels, slot)?;
        check_root(root, &computed)
    }
}

impl Proof {
    /// Verifies an inclusion proof against `document` (which must be given) or a
    /// non-inclusion proof (for which `document` must be `None`).
    pub fn verify(&self, root: &Hash, document: Option<&Value>) -> Result<(), ProofError> {
        match (self, document) {
            (Proof::Inclusion(p), Some(doc)) => p.verify(root, doc),
            (Proof::NonInclusion(p), None) => p.verify(root),
            (Proof::Inclusion(_), None) => Err(ProofError::Malformed(
                "an inclusion proof needs the document".into(),
            )),
            (Proof::NonInclusion(_), Some(_)) => Err(ProofError::Malformed(
                "a non-inclusion proof cannot vouch for a document".into(),
            )),
        }
    }
}

fn check_root(expected: &Hash, computed: &Hash) -> Result<(), ProofError> {
    if expected == computed {
        Ok(())
    } else {
        Err(ProofError::RootMismatch {
            expected: hex::encode(expected),
            computed: hex::encode(computed),
        })
    }
}

/// Hashes from the slot at depth `levels.len()` on `key`'s path up to the root.
/// `slot` is the hash in that slot, `None` when it is empty.
fn fold_to_root(key: &Hash, levels: &[ProofLevel], slot: Option<Hash>) -> Result<Hash, ProofError> {
    if levels.len() > MAX_PROOF_DEPTH {
        return Err(ProofError::Malformed(format!(
            "{} levels, more than the {MAX_PROOF_DEPTH} a key has",
            levels.len()
        )));
    }
    let mut current = slot;
    // An inner node's whole message (`docs/merkle.md`): tag, bitmap, and up
    // to 16 child hashes, laid out once and hashed in one call.
    let mut message = [0u8; 3 + 16 * 32];
    message[0] = TAG_NODE;
    for (depth, level) in levels.iter().enumerate().rev() {
        let on_path = nibble(key, depth);
        let present = level.bitmap & (1 << on_path) != 0;
        if present != current.is_some() {
            return Err(ProofError::Malformed(format!(
                "level {depth}: bitmap disagrees with the child on the path"
            )));
        }
        let expected_siblings = level.bitmap.count_ones() as usize - usize::from(present);
        if level.siblings.len() != expected_siblings {
            return Err(ProofError::Malformed(format!(
                "level {depth}: {} sibling hashes for a bitmap that needs {expected_siblings}",
                level.siblings.len()
            )));
        }
        message[1..3].copy_from_slice(&level.bitmap.to_be_bytes());
        let mut len = 3;
        let mut siblings = level.siblings.iter();
        for i in 0..16u8 {
            if level.bitmap & (1 << i) == 0 {
                continue;
            }
            // The counts were checked above: every set bit has its hash.
            let child = if i == on_path {
                current.as_ref()
            } else {
                siblings.next()
            };
            if let Some(child) = child {
                message[len..len + 32].copy_from_slice(child);
                len += 32;
            }
        }
        current = Some(Sha256::digest(&message[..len]).into());
    }
    Ok(current.unwrap_or(EMPTY_ROOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written reading takes what the derived writing gives, for
    /// both kinds, and refuses what the derived reading refused.
    #[test]
    fn proofs_round_trip_through_json() {
        let level = ProofLevel {
            bitmap: 0b101,
            siblings: vec![[3; 32]],
        };
        let proofs = [
            Proof::Inclusion(InclusionProof {
                collection: "c".into(),
                id: "a".into(),
                levels: vec![level.clone()],
            }),
            Proof::NonInclusion(NonInclusionProof {
                collection: "c".into(),
                id: "b".into(),
                levels: vec![level.clone()],
                terminal: Terminal::EmptySlot,
            }),
            Proof::NonInclusion(NonInclusionProof {
                collection: "c".into(),
                id: "b".into(),
                levels: vec![level],
                terminal: Terminal::OtherLeaf {
                    key_hash: [1; 32],
                    doc_hash: [2; 32],
                },
            }),
        ];
        for proof in proofs {
            let json = serde_json::to_string(&proof).unwrap();
            assert_eq!(
                serde_json::from_str::<Proof>(&json).unwrap(),
                proof,
                "{json}"
            );
            // The tag need not come first.
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            let mut fields = value.as_object().unwrap().clone();
            let tag = fields.remove("proof").unwrap();
            fields.insert("proof".into(), tag);
            let moved = serde_json::to_string(&fields).unwrap();
            assert_eq!(serde_json::from_str::<Proof>(&moved).unwrap(), proof);
        }
        let bad = [
            r#"{"proof":"exclusion","collection":"c","id":"a","levels":[]}"#,
            r#"{"collection":"c","id":"a","levels":[]}"#,
            r#"{"proof":"non_inclusion","collection":"c","id":"a","levels":[]}"#,
            r#"{"proof":"non_inclusion","collection":"c","id":"a","levels":[],"terminal":null}"#,
            r#"{"proof":"inclusion","id":"a","levels":[]}"#,
            r#"{"proof":"inclusion","collection":"c","id":"a","levels":[{"bitmap":1,"siblings":["00"]}]}"#,
        ];
        for text in bad {
            assert!(serde_json::from_str::<Proof>(text).is_err(), "{text}");
        }
    }
}
