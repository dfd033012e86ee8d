//! The cluster map: placement invariants and deterministic apply (property
//! tests), and the map replicated as the metadata group's commands through
//! an in-process three-node cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use stratosdb_engine::{ApplyOutcome, Command, Op, Value};
use stratosdb_replication::placement::{PlacementError, place};
use stratosdb_replication::{
    ClusterMap, GroupId, METADATA_GROUP, MapCommand, MemHub, NodeId, NodeInfo, RaftNode, ShardInfo,
};

fn node(id: NodeId, zone: Option<u8>, up: bool) -> NodeInfo {
    let mut n = NodeInfo::new(
        id,
        format!("peer{id}"),
        format!("/ip4/127.0.0.1/tcp/{}", 7000 + id),
        format!("127.0.0.1:{}", 8000 + id),
    );
    n.zone = zone.map(|z| format!("z{z}"));
    n.up = up;
    n
}

/// Up to 9 nodes with ids 1..; zones from a pool of `zones` (none when 0).
fn nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
    (
        0u8..4,
        prop::collection::vec((0u8..4, prop::bool::weighted(0.85)), 1..10),
    )
        .prop_map(|(zones, specs)| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (z, up))| {
                    let zone = (zones > 0).then_some(z % zones.max(1));
                    node(i as NodeId + 1, zone, up)
                })
                .collect()
        })
}

fn per_node(nodes: &[NodeInfo], shards: &[ShardInfo]) -> BTreeMap<NodeId, usize> {
    let mut count: BTreeMap<NodeId, usize> =
        nodes.iter().filter(|n| n.up).map(|n| (n.id, 0)).collect();
    for r in shards.iter().flat_map(|s| &s.replicas) {
        *count.get_mut(r).expect("a replica on a live node") += 1;
    }
    count
}

proptest! {
    #[test]
    fn placement_invariants(
        nodes in nodes(),
        layouts in prop::collection::vec((1u32..9, 1u32..5), 1..5),
    ) {
        let live = nodes.iter().filter(|n| n.up).count();
        let zone_of: BTreeMap<NodeId, Option<String>> =
            nodes.iter().map(|n| (n.id, n.zone.clone())).collect();
        let mut all: Vec<ShardInfo> = Vec::new();
        let mut next: GroupId = 1;
        for (i, (shards, replicas)) in layouts.into_iter().enumerate() {
            let name = format!("c{i}");
            let placed = place(&nodes, &all, next, &name, shards, replicas);
            if (replicas as usize) > live {
                prop_assert_eq!(placed, Err(PlacementError::NotEnoughNodes { live, replicas }));
                continue;
            }
            let placed = placed.expect("enough live nodes");
            // Deterministic.
            let again = place(&nodes, &all, next, &name, shards, replicas);
            prop_assert_eq!(Ok(&placed), again.as_ref());
            prop_assert_eq!(placed.len(), shards as usize);
            let before = per_node(&nodes, &all);
            let fresh = before.values().min() == before.values().max();
            for (k, s) in placed.iter().enumerate() {
                prop_assert_eq!(s.group, next + k as GroupId);
                prop_assert_eq!(s.shard, k as u32);
                prop_assert_eq!(s.replicas.len(), replicas as usize);
                let distinct: BTreeSet<_> = s.replicas.iter().collect();
                prop_assert_eq!(distinct.len(), s.replicas.len(), "two replicas on one node");
                prop_assert!(s.replicas.iter().all(|r| nodes.iter().any(|n| n.id == *r && n.up)));
            }
            // The first shard placed on equally loaded nodes spans as many
            // zones as it can.
            if fresh {
                let zones_live: BTreeSet<_> =
                    nodes.iter().filter(|n| n.up).filter_map(|n| n.zone.clone()).collect();
                let used: BTreeSet<_> =
                    placed[0].replicas.iter().filter_map(|r| zone_of[r].clone()).collect();
                let zoned_live = nodes.iter().filter(|n| n.up && n.zone.is_some()).count();
                if zoned_live == live {
                    prop_assert_eq!(used.len(), zones_live.len().min(replicas as usize));
                }
            }
            next += shards;
            all.extend(placed);
            let count = per_node(&nodes, &all);
            let (lo, hi) = (count.values().min(), count.values().max());
            prop_assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "unbalanced: {:?}", count);
        }
    }

    #[test]
    fn same_commands_same_map(
        nodes in nodes(),
        ops in prop::collection::vec((0u8..6, 0u64..12, 0u32..5, prop::bool::ANY), 0..40),
    ) {
        let mut cmds: Vec<MapCommand> = nodes.into_iter().map(MapCommand::AddNode).collect();
        for (kind, a, b, flag) in ops {
            cmds.push(match kind {
                0 => MapCommand::MarkNode { id: a, up: flag },
                1 => MapCommand::CreateCollection {
                    name: format!("c{}", a % 4),
                    shards: flag.then_some(b),
                    replicas: (!flag).then_some(b),
                },
                2 => MapCommand::DropCollection { name: format!("c{}", a % 4) },
                3 => MapCommand::SetLeader { group: b, leader: flag.then_some(a) },
                4 => MapCommand::SetReplicas {
                    group: b,
                    replicas: (0..=b as u64).map(|i| (a + i) % 10).collect(),
                },
                _ => MapCommand::AddNode(node(a, None, flag)),
            });
        }
        let (mut one, mut two) = (ClusterMap::new(), ClusterMap::new());
        for cmd in &cmds {
            // Through the wire form, as the metadata group carries it.
            let decoded = MapCommand::decode(&cmd.encode()).expect("round trip");
            let before = one.clone();
            let a = one.apply(cmd);
            let b = two.apply(&decoded);
            prop_assert_eq!(&a, &b);
            match a {
                Err(_) => prop_assert_eq!(&one, &before, "a refused command changed the map"),
                Ok(true) => prop_assert_eq!(one.version, before.version + 1),
                Ok(false) => prop_assert_eq!(&one, &before),
            }
        }
        prop_assert_eq!(one, two);
    }
}

// ---- the map through the metadata group of a 3-node cluster ----

const SYSTEM: &str = "_cluster";
const WAIT: Duration = Duration::from_secs(20);

mod common;
use common::fast_config as config;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn propose(nodes: &BTreeMap<NodeId, RaftNode>, cmd: &Command) -> ApplyOutcome {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = nodes
            .iter()
            .find(|(_, n)| n.status(METADATA_GROUP).is_ok_and(|s| s.is_leader));
        if let Some((_, n)) = leader {
            match n.propose(METADATA_GROUP, cmd).wait(Duration::from_secs(3)) {
                Ok(outcome) => return outcome,
                Err(e) if e.is_retryable() => {}
                Err(e) => panic!("propose: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader for the metadata group"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The map a node rebuilds from the `_cluster` documents it applied, in
/// sequence order.
fn rebuild(node: &RaftNode) -> ClusterMap {
    let shard = node.shard(METADATA_GROUP).expect("metadata shard");
    let mut map = ClusterMap::new();
    let docs = shard
        .scan(
            SYSTEM,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        )
        .expect("scan");
    for doc in docs {
        let (_, doc) = doc.expect("doc");
        let Some(Value::String(text)) = doc.as_object().and_then(|o| o.get("cmd")) else {
            panic!("no cmd in {doc:?}");
        };
        let bytes = unhex(text).expect("hex");
        let cmd = MapCommand::decode(&bytes).expect("decode");
        // A refused command is refused identically everywhere.
        let _ = map.apply(&cmd);
    }
    map
}

#[test]
fn the_map_replicates_through_the_metadata_group() {
    let hub = MemHub::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let voters = [1, 2, 3];
    let mut nodes = BTreeMap::new();
    for (i, id) in voters.into_iter().enumerate() {
        let n = RaftNode::open(dirs[i].path(), config(id), hub.transport(id)).unwrap();
        n.create_group(METADATA_GROUP, &voters).unwrap();
        hub.register(id, n.inbox());
        nodes.insert(id, n);
    }
    let create = Command {
        ops: vec![Op::CreateCollection {
            name: SYSTEM.into(),
        }],
    };
    assert!(matches!(propose(&nodes, &create), ApplyOutcome::Applied(_)));

    let mut cmds: Vec<MapCommand> = (1..=4)
        .map(|id| MapCommand::AddNode(node(id, Some((id % 2) as u8), true)))
        .collect();
    cmds.extend([
        MapCommand::CreateCollection {
            name: "users".into(),
            shards: None,
            replicas: None,
        },
        MapCommand::MarkNode { id: 4, up: false },
        MapCommand::CreateCollection {
            name: "orders".into(),
            shards: Some(2),
            replicas: Some(3),
        },
        MapCommand::SetLeader {
            group: 1,
            leader: None,
        },
        // Refused (a duplicate) on every node alike.
        MapCommand::AddNode(node(2, None, true)),
        MapCommand::DropCollection {
            name: "users".into(),
        },
    ]);
    let mut expected = ClusterMap::new();
    for (seq, cmd) in cmds.iter().enumerate() {
        let _ = expected.apply(cmd);
        let json = format!(r#"{{"_id":"{seq:020}","cmd":"{}"}}"#, hex(&cmd.encode()));
        let doc = Value::from_json_str(&json).unwrap();
        let put = Command {
            ops: vec![Op::Upsert {
                collection: SYSTEM.into(),
                doc,
            }],
        };
        assert!(matches!(propose(&nodes, &put), ApplyOutcome::Applied(_)));
    }
    assert_eq!(expected.collections.len(), 1);
    assert_eq!(expected.version, 8);

    let deadline = Instant::now() + WAIT;
    loop {
        let maps: Vec<ClusterMap> = nodes.values().map(rebuild).collect();
        if maps.iter().all(|m| *m == expected) {
            break;
        }
        assert!(Instant::now() < deadline, "maps differ: {maps:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(nodes);
}
