//! `RaftNode::remove_group`: a replica deleted from a node leaves neither
//! its raft log nor its shard behind, also across a restart, and the other
//! groups of the node are untouched.

use std::time::{Duration, Instant};

use stratosdb_engine::{ApplyOutcome, Command, Op, Value};
use stratosdb_replication::{MemHub, NodeConfig, RaftNode};

fn open(dir: &std::path::Path, hub: &MemHub) -> RaftNode {
    let mut config = NodeConfig::new(1);
    config.tick = Duration::from_millis(10);
    let node = RaftNode::open(dir, config, hub.transport(1)).unwrap();
    hub.register(1, node.inbox());
    node
}

fn propose(node: &RaftNode, group: u32, command: &Command) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match node.propose(group, command).wait(Duration::from_secs(5)) {
            Ok(ApplyOutcome::Applied(_)) => return,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10)) // electing
            }
            other => panic!("group {group}: {other:?}"),
        }
    }
}

#[test]
fn a_removed_group_leaves_no_log_and_no_shard_behind() {
    let dir = tempfile::tempdir().unwrap();
    let hub = MemHub::new();
    let node = open(dir.path(), &hub);
    for group in [7, 8] {
        node.create_group(group, &[1]).unwrap();
        let create = Command {
            ops: vec![Op::CreateCollection { name: "c".into() }],
        };
        propose(&node, group, &create);
        for i in 0..50 {
            let doc = Value::from_json_str(&format!(r#"{{"_id":"d{i}","n":{i}}}"#)).unwrap();
            let insert = Command {
                ops: vec![Op::Insert {
                    collection: "c".into(),
                    doc,
                }],
            };
            propose(&node, group, &insert);
        }
    }
    assert_eq!(node.groups().unwrap(), [7, 8]);
    assert_eq!(node.engine().shard_ids().unwrap(), [7, 8]);

    assert!(node.remove_group(7).unwrap());
    assert_eq!(node.groups().unwrap(), [8]);
    assert_eq!(node.engine().shard_ids().unwrap(), [8]);
    assert!(node.status(7).is_err(), "group 7 still answers");
    assert!(!node.remove_group(7).unwrap(), "removed twice");

    // After a restart: group 7 is not reopened, group 8 has its data.
    drop(node);
    let node = open(dir.path(), &hub);
    assert_eq!(node.groups().unwrap(), [8]);
    assert_eq!(node.engine().shard_ids().unwrap(), [8]);
    assert_eq!(node.shard(8).unwrap().collection("c").unwrap().count, 50);
    // A replica of group 7 created again starts empty.
    node.create_group(7, &[]).unwrap();
    assert!(node.shard(7).unwrap().collections().is_empty());
    assert_eq!(node.shard(7).unwrap().applied_index().unwrap(), 0);
}
