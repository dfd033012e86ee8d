//! The cluster map as the state of the metadata group (group 0).
//!
//! The map is one document, `_cluster/map`, in group 0's engine shard: the
//! bincode of the [`ClusterMap`] in hex, and its version. A change is made
//! the way an UPDATE is: read the map, apply the [`MapCommand`] to a copy,
//! and propose the new document guarded by an [`Op::Expect`] on the hash of
//! the one read. The check runs at apply time on every replica, so two
//! concurrent changes cannot both apply on top of the same map (the loser
//! reads again), and the metadata group reuses everything a data group has:
//! batched apply, snapshots, roots.
//!
//! The join token lives beside it, in `_cluster/token`, written once, and
//! so does the cluster id (`_cluster/cluster_id`, 32 random bytes in hex)
//! that names the cluster in its chain anchors.

use stratosdb_engine::proof::hash::doc_hash;
use stratosdb_engine::{Command, Hash, Op, Shard, Value};

use crate::{ClusterMap, ReplicationError, Result};

/// The collection of group 0's shard that holds the map and the token.
pub const SYSTEM_COLLECTION: &str = "_cluster";
const MAP_ID: &str = "map";
const TOKEN_ID: &str = "token";
const CLUSTER_ID: &str = "cluster_id";

/// Largest encoded map accepted when reading it back.
const MAX_MAP_BYTES: usize = 64 << 20;

/// The command that creates the system collection (the founders' first entry).
pub fn create_system_collection() -> Command {
    Command {
        ops: vec![Op::CreateCollection {
            name: SYSTEM_COLLECTION.into(),
        }],
    }
}

/// The map a replica of group 0 holds, and the hash of its document (the
/// precondition of the next change). No document yet: an empty map, `None`.
pub fn read_map(shard: &Shard) -> Result<(ClusterMap, Option<Hash>)> {
    if !shard.collections().iter().any(|c| c == SYSTEM_COLLECTION) {
        return Ok((ClusterMap::new(), None));
    }
    let Some(doc) = shard.get(SYSTEM_COLLECTION, MAP_ID)? else {
        return Ok((ClusterMap::new(), None));
    };
    let hash = doc_hash(&doc);
    let text = match doc.as_object().and_then(|o| o.get("map")) {
        Some(Value::String(s)) => s,
        _ => return Err(corrupt("the map document has no map field")),
    };
    let bytes = unhex(text).ok_or_else(|| corrupt("the map document is not hex"))?;
    let config = bincode::config::standard().with_limit::<MAX_MAP_BYTES>();
    let (map, used): (ClusterMap, usize) = bincode::serde::decode_from_slice(&bytes, config)
        .map_err(|e| corrupt(&format!("the map does not decode: {e}")))?;
    if used != bytes.len() {
        return Err(corrupt("trailing bytes after the map"));
    }
    Ok((map, Some(hash)))
}

/// The command that replaces the map read with hash `read` by `map`.
pub fn write_map(read: Option<Hash>, map: &ClusterMap) -> Command {
    // Encoding plain data into a Vec cannot fail.
    let bytes = bincode::serde::encode_to_vec(map, bincode::config::standard()).unwrap_or_default();
    let mut doc = std::collections::BTreeMap::new();
    doc.insert("_id".to_string(), Value::String(MAP_ID.into()));
    doc.insert("map".to_string(), Value::String(hex(&bytes)));
    doc.insert(
        "version".to_string(),
        Value::Int(i64::try_from(map.version).unwrap_or(i64::MAX)),
    );
    Command {
        ops: vec![
            Op::Expect {
                collection: SYSTEM_COLLECTION.into(),
                id: MAP_ID.into(),
                doc_hash: read,
            },
            Op::Upsert {
                collection: SYSTEM_COLLECTION.into(),
                doc: Value::Object(doc),
            },
        ],
    }
}

/// The command that records the join token; it fails (duplicate `_id`) if
/// one is recorded already, so the first proposal wins everywhere.
pub fn write_token(token: &str) -> Command {
    write_once(TOKEN_ID, "token", token)
}

/// The recorded join token, if any.
pub fn read_token(shard: &Shard) -> Result<Option<String>> {
    read_once(shard, TOKEN_ID, "token")
}

/// The command that records the cluster id; like the token, the first
/// proposal wins.
pub fn write_cluster_id(id: &[u8; 32]) -> Command {
    write_once(CLUSTER_ID, "id", &hex(id))
}

/// The recorded cluster id, if any.
pub fn read_cluster_id(shard: &Shard) -> Result<Option<[u8; 32]>> {
    let Some(text) = read_once(shard, CLUSTER_ID, "id")? else {
        return Ok(None);
    };
    unhex(&text)
        .and_then(|b| b.try_into().ok())
        .map(Some)
        .ok_or_else(|| corrupt("the cluster id is not 32 bytes of hex"))
}

/// An insert of `{_id, field: value}`: refused if the document exists.
fn write_once(id: &str, field: &str, value: &str) -> Command {
    let mut doc = std::collections::BTreeMap::new();
    doc.insert("_id".to_string(), Value::String(id.into()));
    doc.insert(field.to_string(), Value::String(value.into()));
    Command {
        ops: vec![Op::Insert {
            collection: SYSTEM_COLLECTION.into(),
            doc: Value::Object(doc),
        }],
    }
}

fn read_once(shard: &Shard, id: &str, field: &str) -> Result<Option<String>> {
    if !shard.collections().iter().any(|c| c == SYSTEM_COLLECTION) {
        return Ok(None);
    }
    Ok(shard.get(SYSTEM_COLLECTION, id)?.and_then(|doc| {
        match doc.as_object().and_then(|o| o.get(field)) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }))
}

fn corrupt(what: &str) -> ReplicationError {
    ReplicationError::Corruption(format!("cluster map: {what}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MapCommand, NodeInfo};
    use stratosdb_engine::{ApplyOutcome, Engine};

    fn apply(shard: &Shard, index: u64, cmd: &Command) -> ApplyOutcome {
        shard.apply(index, &cmd.encode()).unwrap()
    }

    #[test]
    fn the_map_round_trips_and_a_stale_change_is_refused() {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        assert_eq!(read_map(&shard).unwrap(), (ClusterMap::new(), None));
        apply(&shard, 1, &create_system_collection());
        let mut map = ClusterMap::new();
        map.apply(&MapCommand::AddNode(NodeInfo::new(
            u64::MAX,
            "peer".into(),
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
        )))
        .unwrap();
        assert!(matches!(
            apply(&shard, 2, &write_map(None, &map)),
            ApplyOutcome::Applied(_)
        ));
        let (read, hash) = read_map(&shard).unwrap();
        assert_eq!(read, map);
        // A change computed from the empty map lost the race: refused.
        assert!(matches!(
            apply(&shard, 3, &write_map(None, &ClusterMap::new())),
            ApplyOutcome::Rejected(_)
        ));
        assert_eq!(read_map(&shard).unwrap().0, map);
        let mut next = map.clone();
        next.apply(&MapCommand::MarkNode {
            id: u64::MAX,
            up: false,
        })
        .unwrap();
        assert!(matches!(
            apply(&shard, 4, &write_map(hash, &next)),
            ApplyOutcome::Applied(_)
        ));
        assert_eq!(read_map(&shard).unwrap().0, next);
    }

    #[test]
    fn the_first_token_wins() {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        apply(&shard, 1, &create_system_collection());
        assert_eq!(read_token(&shard).unwrap(), None);
        apply(&shard, 2, &write_token("a"));
        assert!(matches!(
            apply(&shard, 3, &write_token("b")),
            ApplyOutcome::Rejected(_)
        ));
        assert_eq!(read_token(&shard).unwrap().as_deref(), Some("a"));
        assert_eq!(read_cluster_id(&shard).unwrap(), None);
        apply(&shard, 4, &write_cluster_id(&[7; 32]));
        apply(&shard, 5, &write_cluster_id(&[8; 32]));
        assert_eq!(read_cluster_id(&shard).unwrap(), Some([7; 32]));
    }
}
