//! The hashes of the shard commitment, byte for byte as `docs/merkle.md` states
//! them. Every hash is SHA-256 with a one-byte domain tag, so a key, a document,
//! a leaf and an inner node can never be confused with one another.

use sha2::{Digest, Sha256};

use crate::{Value, canonical_json};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The root of a shard that holds no documents.
pub const EMPTY_ROOT: Hash = [0u8; 32];

pub const TAG_KEY: u8 = 0x00;
pub const TAG_DOC: u8 = 0x01;
pub const TAG_LEAF: u8 = 0x02;
pub const TAG_NODE: u8 = 0x03;

/// `SHA-256(0x00 || u32be(len(collection)) || collection || _id)`: the document's
/// position in the tree (its 64 nibbles are the path from the root).
pub fn key_hash(collection: &str, id: &str) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_KEY]);
    h.update((collection.len() as u32).to_be_bytes());
    h.update(collection.as_bytes());
    h.update(id.as_bytes());
    h.finalize().into()
}

/// `SHA-256(0x01 || RFC8785(document))`.
pub fn doc_hash(document: &Value) -> Hash {
    doc_hash_of_canonical(&canonical_json(document))
}

/// [`doc_hash`] of bytes already in canonical form.
pub fn doc_hash_of_canonical(canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_DOC]);
    h.update(canonical);
    h.finalize().into()
}

/// `SHA-256(0x02 || key_hash || doc_hash)`.
pub fn leaf_hash(key_hash: &Hash, doc_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_LEAF]);
    h.update(key_hash);
    h.update(doc_hash);
    h.finalize().into()
}

/// `SHA-256(0x03 || u16be(bitmap) || child hashes in nibble order)`, where bit `i`
/// of `bitmap` is set when child `i` (nibble value `i`) is present.
pub fn node_hash<'a>(bitmap: u16, children: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_NODE]);
    h.update(bitmap.to_be_bytes());
    for c in children {
        h.update(c);
    }
    h.finalize().into()
}

/// Nibble `depth` (0..64) of a key hash: the high nibble of byte 0 is nibble 0.
pub fn nibble(key: &Hash, depth: usize) -> u8 {
    let byte = key[depth / 2];
    if depth.is_multiple_of(2) {
        byte >> 4
    } else {
        byte & 0x0F
    }
}

/// Lower-case hex, for hashes in JSON and messages.
pub fn to_hex(hash: &Hash) -> String {
    hex::encode(hash)
}
