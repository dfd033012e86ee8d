//! Byte layouts: the order-preserving encoding of values for index keys
//! (`docs/keys.md`), and where each kind of record lives in a shard's tree.
//!
//! Encoded values compare byte-wise exactly as [`Value`]s compare:
//! `missing < null < false < true < numbers < strings < arrays < objects`,
//! with integers and floats interleaved numerically (`1` and `1.0` encode the same).

use std::ops::Bound;

use stratosdb_proof::{Hash, Value};

/// Type tags of the index encoding. 0x00 is kept free as a terminator.
pub const TAG_MISSING: u8 = 0x01;
pub const TAG_NULL: u8 = 0x02;
pub const TAG_FALSE: u8 = 0x03;
pub const TAG_TRUE: u8 = 0x04;
pub const TAG_NUMBER: u8 = 0x05;
pub const TAG_STRING: u8 = 0x06;
pub const TAG_ARRAY: u8 = 0x07;
pub const TAG_OBJECT: u8 = 0x08;

/// Appends the order-preserving encoding of `value` (`None`: the field is missing).
pub fn encode_index_value(value: Option<&Value>, out: &mut Vec<u8>) {
    let Some(value) = value else {
        out.push(TAG_MISSING);
        return;
    };
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Int(i) => encode_number(*i as f64, int_residual(*i), out),
        Value::Float(f) => encode_number(*f, 0, out),
        Value::String(s) => {
            out.push(TAG_STRING);
            encode_bytes(s.as_bytes(), out);
        }
        Value::Array(items) => {
            out.push(TAG_ARRAY);
            for item in items {
                encode_index_value(Some(item), out);
            }
            out.push(0x00);
        }
        Value::Object(map) => {
            out.push(TAG_OBJECT);
            for (k, v) in map {
                out.push(0x01);
                encode_bytes(k.as_bytes(), out);
                encode_index_value(Some(v), out);
            }
            out.push(0x00);
        }
    }
}

/// How far an integer is from the double nearest to it. Doubles are 2048 apart
/// at most near 2^63, so the residual fits an i16.
fn int_residual(i: i64) -> i16 {
    let rounded = i as f64;
    // `rounded` may be 2^63, which does not fit i64: compute in i128.
    let diff = i as i128 - rounded as i128;
    diff as i16
}

/// A number is its nearest double (order-preserving bits) then the integer's
/// residual from it: rounding is monotonic, so (double, residual) orders exactly.
fn encode_number(f: f64, residual: i16, out: &mut Vec<u8>) {
    let f = if f == 0.0 { 0.0 } else { f }; // -0.0 == 0.0
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    out.push(TAG_NUMBER);
    out.extend_from_slice(&ordered.to_be_bytes());
    out.extend_from_slice(&((residual as u16) ^ 0x8000).to_be_bytes());
}

/// Byte strings: 0x00 escaped as 0x00 0xFF, terminated by 0x00 0x00, so the
/// encoding is prefix-free and keeps byte order.
fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// The smallest byte string greater than every string that starts with `prefix`
/// (`None` when there is none: the prefix is all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

// ---- The layout of a shard's tree ----------------------------------------
//
//   0x00 'a'                       applied raft index (u64 be), then maybe the
//                                  open records of changes since the latest
//                                  mark: epoch (u64 be), 65-byte records
//   0x00 'c' name                  collection metadata (CollectionInfo, bincode)
//   0x00 'g' prefix                garbage: a key range of a dropped collection
//                                  or index, deleted in chunks (value empty)
//   0x00 'm' epoch(u64 be)         anchor mark: raft index (u64 be), root (32)
//   0x00 'p' epoch(u64 be) key_hash   a key changed since the mark of epoch:
//                                  its doc_hash at the mark (empty: absent);
//                                  the first layout, read but no longer written
//   0x00 'q' epoch(u64 be) key_hash   packed records of keys changed since the
//                                  mark of epoch (`anchor.rs`), named by the
//                                  smallest key hash among them
//   0x00 'n'                       next collection number (u32 be)
//   0x00 'v'                       layout version of the shard (one byte)
//   0x01 coll(u32 be) _id          document record: doc_hash (32 bytes), then
//                                  the document (stratosdb_proof::encode_value)
//   0x02 coll index(u32 be) values [_id]   index entry; value = _id
//
// The Merkle trie is not stored: it is rebuilt from the document records'
// hashes when a shard opens (`merkle.rs`, `docs/engine.md`).

pub const APPLIED_INDEX_KEY: &[u8] = &[0x00, b'a'];
pub const NEXT_COLLECTION_KEY: &[u8] = &[0x00, b'n'];
pub const LAYOUT_VERSION_KEY: &[u8] = &[0x00, b'v'];
/// Version 2: document records carry their hash; no stored Merkle nodes.
pub const LAYOUT_VERSION: u8 = 2;
pub const META_PREFIX: u8 = 0x00;
pub const DOC_PREFIX: u8 = 0x01;
pub const INDEX_PREFIX: u8 = 0x02;
/// Bytes of the document hash at the start of a document record.
pub const DOC_HASH_BYTES: usize = 32;

/// A document record: its hash, then its storage encoding.
pub fn doc_record(hash: &Hash, encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOC_HASH_BYTES + encoded.len());
    out.extend_from_slice(hash);
    out.extend_from_slice(encoded);
    out
}

/// Splits a document record into its hash and the encoded document; `None`
/// if it is too short to be one (corrupt).
pub fn split_doc_record(record: &[u8]) -> Option<(Hash, &[u8])> {
    let (hash, doc) = record.split_at_checked(DOC_HASH_BYTES)?;
    Some((hash.try_into().ok()?, doc))
}

pub fn collection_meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![0x00, b'c'];
    k.extend_from_slice(name.as_bytes());
    k
}

pub const GARBAGE_PREFIX: &[u8] = &[0x00, b'g'];
pub const MARK_PREFIX: &[u8] = &[0x00, b'm'];

/// One key per key changed since a mark (the first layout, still read and
/// cleaned up): `0x00 'p' epoch key_hash` -> its hash at the mark, or nothing.
pub const MARK_CHANGE_PREFIX: &[u8] = &[0x00, b'p'];

/// Packed records of keys changed since a mark: `0x00 'q' epoch
/// first_key_hash` -> 65-byte records (`anchor.rs`, `docs/merkle.md`).
pub const MARK_PACK_PREFIX: &[u8] = &[0x00, b'q'];

/// Where the packed records of the changes since the mark of `epoch` are.
pub fn mark_pack_prefix(epoch: u64) -> Vec<u8> {
    let mut k = MARK_PACK_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// The pack of records of changes since the mark of `epoch` whose smallest
/// key hash is `first` (a key is recorded once per mark, so no two packs of
/// an epoch share it).
pub fn mark_pack_key(epoch: u64, first: &Hash) -> Vec<u8> {
    let mut k = mark_pack_prefix(epoch);
    k.extend_from_slice(first);
    k
}

/// Where the keys changed since the mark of `epoch` are recorded.
pub fn mark_change_prefix(epoch: u64) -> Vec<u8> {
    let mut k = MARK_CHANGE_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// The record of a key changed since the mark of `epoch`.
pub fn mark_change_key(epoch: u64, key_hash: &Hash) -> Vec<u8> {
    let mut k = mark_change_prefix(epoch);
    k.extend_from_slice(key_hash);
    k
}

/// Where the anchor mark of `epoch` is stored (`anchor.rs`).
pub fn mark_key(epoch: u64) -> Vec<u8> {
    let mut k = MARK_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// The marker that the keys starting with `prefix` are garbage.
pub fn garbage_key(prefix: &[u8]) -> Vec<u8> {
    let mut k = GARBAGE_PREFIX.to_vec();
    k.extend_from_slice(prefix);
    k
}

/// Every index entry of a collection starts with this.
pub fn collection_index_prefix(collection: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.push(INDEX_PREFIX);
    k.extend_from_slice(&collection.to_be_bytes());
    k
}

pub fn collection_meta_prefix() -> Vec<u8> {
    vec![0x00, b'c']
}

pub fn doc_prefix(collection: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + 32);
    k.push(DOC_PREFIX);
    k.extend_from_slice(&collection.to_be_bytes());
    k
}

pub fn doc_key(collection: u32, id: &str) -> Vec<u8> {
    let mut k = doc_prefix(collection);
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn index_prefix(collection: u32, index: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + 32);
    k.push(INDEX_PREFIX);
    k.extend_from_slice(&collection.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The exclusive upper bound just past every key starting with `prefix`.
pub(crate) fn successor_bound(prefix: &[u8]) -> Bound<Vec<u8>> {
    match prefix_successor(prefix) {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    }
}

/// The lower bound that skips every key starting with `prefix`.
pub(crate) fn past_prefix(prefix: &[u8]) -> Bound<Vec<u8>> {
    match prefix_successor(prefix) {
        Some(k) => Bound::Included(k),
        None => Bound::Excluded(prefix.to_vec()),
    }
}

/// An inverted range is empty (sled panics on one).
pub(crate) fn range_is_empty(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_index_value(Some(v), &mut out);
        out
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-5i64..5).prop_map(Value::Int),
            (-5i64..5).prop_map(|i| Value::Float(i as f64)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Float),
            (-4.0f64..4.0).prop_map(Value::Float),
            Just(Value::Int(i64::MAX)),
            Just(Value::Int(i64::MIN)),
            Just(Value::Float(9_223_372_036_854_775_808.0)),
            "[a-c\u{0}]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\u{0}]{0,2}", inner, 0..3).prop_map(Value::Object),
            ]
        })
    }

    proptest! {
        #[test]
        fn encoding_order_matches_value_order(a in arb_value(), b in arb_value()) {
            prop_assert_eq!(enc(&a).cmp(&enc(&b)), a.cmp(&b), "{} vs {}", a, b);
        }
    }

    #[test]
    fn ints_and_floats_interleave() {
        let seq = [
            Value::Int(i64::MIN),
            Value::Float(-1.5),
            Value::Int(-1),
            Value::Float(-0.5),
            Value::Int(0),
            Value::Float(0.5),
            Value::Int(1),
            Value::Float(1.5),
            Value::Int(9_007_199_254_740_992),
            Value::Int(9_007_199_254_740_993),
            Value::Float(9_007_199_254_740_994.0),
            Value::Int(i64::MAX),
            Value::Float(1e300),
        ];
        for w in seq.windows(2) {
            assert!(enc(&w[0]) < enc(&w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(enc(&Value::Int(1)), enc(&Value::Float(1.0)));
        assert_eq!(enc(&Value::Float(-0.0)), enc(&Value::Int(0)));
    }

    #[test]
    fn missing_sorts_first() {
        let mut missing = Vec::new();
        encode_index_value(None, &mut missing);
        assert!(missing < enc(&Value::Null));
    }
}
