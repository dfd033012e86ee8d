//! Routing: which shard of a collection holds a document, and the `_id` a
//! document gets before it is routed. Shared by the cluster map, the cluster's
//! router and the query layer's sharded executor, so they can never disagree.

use stratosdb_proof::Value;
use stratosdb_proof::hash::key_hash;

/// The shard of `collection` that holds the document `id`:
/// `u64::from_be_bytes(key_hash(collection, id)[0..8]) % shards`, where
/// `key_hash` is the engine's Merkle key, `SHA-256(0x00 || u32_be(len(collection))
/// || collection || id)` (`docs/merkle.md`). `shards == 0` is taken as 1.
///
/// ```
/// use stratosdb_engine::shard_of;
/// assert!(shard_of("users", "alice", 8) < 8);
/// assert_eq!(shard_of("users", "alice", 1), 0);
/// assert_eq!(shard_of("users", "alice", 0), 0);
/// assert_eq!(shard_of("users", "alice", 8), 1);
/// ```
pub fn shard_of(collection: &str, id: &str, shards: u32) -> u32 {
    let key = key_hash(collection, id);
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    let n = u64::from_be_bytes(first) % u64::from(shards.max(1));
    // Below `shards`, so it fits.
    n as u32
}

/// Gives the document a fresh time-ordered `_id` (a ULID) if it is an object
/// without one: ids must be chosen before a document is routed to its shard.
pub fn assign_id(doc: &mut Value) {
    crate::document::assign_id(doc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_vectors() {
        // Computed independently (Python's hashlib): changing these moves
        // every document to another shard.
        let vectors = [
            ("a", 54608, 0),
            ("b", 850790, 6),
            ("alice", 668153, 1),
            ("bob", 631414, 6),
            ("0", 1006731, 3),
            ("42", 713006, 6),
        ];
        for (id, of_2_20, of_8) in vectors {
            assert_eq!(shard_of("users", id, 1 << 20), of_2_20, "{id}");
            assert_eq!(shard_of("users", id, 8), of_8, "{id}");
            assert_eq!(shard_of("users", id, 1), 0);
            assert_eq!(shard_of("users", id, 0), 0);
        }
    }

    #[test]
    fn roughly_uniform() {
        let shards = 4;
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[shard_of("c", &format!("doc-{i}"), shards) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn assign_id_keeps_a_given_id() {
        let mut doc = Value::from_json_str(r#"{"_id":"x"}"#).unwrap();
        assign_id(&mut doc);
        assert_eq!(doc.to_json_string(), r#"{"_id":"x"}"#);
        let mut doc = Value::from_json_str(r#"{"a":1}"#).unwrap();
        assign_id(&mut doc);
        assert!(doc.as_object().unwrap().contains_key("_id"));
    }
}
