//! Helpers shared by the replication test files.

#![allow(dead_code)] // each test file uses some of them

use std::time::Duration;

use stratosdb_engine::{Command, Op, Value};
use stratosdb_replication::{NodeConfig, NodeId};

/// A node tuned for tests: 20 ms ticks (elections in about 200 ms) and a
/// small engine cache.
pub fn fast_config(id: NodeId) -> NodeConfig {
    let mut c = NodeConfig::new(id);
    c.tick = Duration::from_millis(20);
    c.election_ticks = 10;
    c.heartbeat_ticks = 2;
    c.engine.cache_bytes = 8 << 20;
    c
}

/// The command that inserts `{"_id": id, "n": 1}` into collection `c`.
pub fn insert(id: &str) -> Command {
    let doc = Value::from_json_str(&format!(r#"{{"_id":"{id}","n":1}}"#)).unwrap();
    Command {
        ops: vec![Op::Insert {
            collection: "c".into(),
            doc,
        }],
    }
}
