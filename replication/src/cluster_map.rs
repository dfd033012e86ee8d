//! The cluster map: nodes, collections, and each shard's group, replicas and
//! leader. The metadata group (group 0) replicates it: every change is a
//! [`MapCommand`] in one of its raft entries, and [`ClusterMap::apply`] is
//! deterministic, so every node that applied the same entries holds the
//! same map. `docs/replication.md` ("The cluster map") has the design.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::placement::{self, DEFAULT_SHARDS, PlacementError};
use crate::{GroupId, NodeId};

/// The metadata group's id; data groups start at 1.
pub const METADATA_GROUP: GroupId = 0;

/// Largest encoded [`MapCommand`] that [`MapCommand::decode`] accepts.
pub const MAX_MAP_COMMAND_BYTES: usize = 1 << 20;

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The libp2p PeerId, as text.
    pub peer_id: String,
    /// The libp2p listen address (a multiaddr).
    pub p2p: String,
    /// The HTTP API's address (`host:port`).
    pub http: String,
    pub zone: Option<String>,
    /// Whether the node is live; placement uses live nodes only.
    pub up: bool,
}

impl NodeInfo {
    /// A live node without a zone.
    pub fn new(id: NodeId, peer_id: String, p2p: String, http: String) -> NodeInfo {
        NodeInfo {
            id,
            peer_id,
            p2p,
            http,
            zone: None,
            up: true,
        }
    }
}

/// A collection and its layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub name: String,
    pub shards: u32,
    pub replicas: u32,
}

/// One shard of a collection: its raft group, replicas and leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub collection: String,
    /// The shard's number within its collection, `0..shards`.
    pub shard: u32,
    pub group: GroupId,
    /// Distinct nodes; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// The last leader the metadata group was told of.
    pub leader: Option<NodeId>,
    /// Replicas being moved: the shard's group leader adds `to` as a
    /// learner, promotes it once caught up, then removes `from`.
    pub moves: Vec<Move>,
}

impl ShardInfo {
    /// Whether `node` holds (or is getting) a replica of this shard.
    pub fn placed_on(&self, node: NodeId) -> bool {
        self.replicas.contains(&node) || self.moves.iter().any(|m| m.to == node)
    }
}

/// One replica move: a new replica on `to`, then the one on `from` (if
/// any) removed. Voters never drop below a quorum: add before remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: Option<NodeId>,
    pub to: NodeId,
}

/// One change to the map: the payload of a metadata group entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapCommand {
    AddNode(NodeInfo),
    /// A member's new addresses or zone (a restart on other ports); its
    /// liveness is kept.
    UpdateNode(NodeInfo),
    MarkNode {
        id: NodeId,
        up: bool,
    },
    /// `None` takes the defaults: [`DEFAULT_SHARDS`] shards and
    /// `min(3, live nodes)` replicas.
    CreateCollection {
        name: String,
        shards: Option<u32>,
        replicas: Option<u32>,
    },
    DropCollection {
        name: String,
    },
    SetLeader {
        group: GroupId,
        leader: Option<NodeId>,
    },
    SetReplicas {
        group: GroupId,
        replicas: Vec<NodeId>,
    },
    /// Starts moving a replica of `group` to `to` (from `from`, if any).
    StartMove {
        group: GroupId,
        from: Option<NodeId>,
        to: NodeId,
    },
    /// The move to `to` is done: `to` replaces `from` among the replicas.
    FinishMove {
        group: GroupId,
        to: NodeId,
    },
    /// Marks a node draining: its replicas move elsewhere.
    DrainNode {
        id: NodeId,
    },
    /// Removes a drained node (one that holds no replica) from the map.
    RemoveNode {
        id: NodeId,
    },
}

impl MapCommand {
    /// bincode 2 (standard configuration) of the command, through serde.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// The inverse of [`MapCommand::encode`]; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<MapCommand, MapError> {
        let config = bincode::config::standard().with_limit::<MAX_MAP_COMMAND_BYTES>();
        let (cmd, used) = bincode::serde::decode_from_slice(bytes, config)
            .map_err(|e| MapError::Malformed(e.to_string()))?;
        if used != bytes.len() {
            return Err(MapError::Malformed(format!(
                "{} trailing bytes",
                bytes.len() - used
            )));
        }
        Ok(cmd)
    }
}

/// Why a [`MapCommand`] was refused; a refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("node {0} is already in the cluster")]
    DuplicateNode(NodeId),
    #[error("node {0} is not in the cluster")]
    UnknownNode(NodeId),
    #[error("collection {0:?} already exists")]
    DuplicateCollection(String),
    #[error("collection {0:?} does not exist")]
    UnknownCollection(String),
    #[error("group {0} is not a shard of any collection")]
    UnknownGroup(GroupId),
    #[error("invalid replicas for group {group}: {reason}")]
    InvalidReplicas { group: GroupId, reason: String },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("malformed map command: {0}")]
    Malformed(String),
    #[error("invalid move in group {group}: {reason}")]
    InvalidMove { group: GroupId, reason: String },
    #[error("node {0} still holds replicas")]
    NodeInUse(NodeId),
}

impl MapError {
    /// A stable, greppable code for the error kind.
    pub fn code(&self) -> &'static str {
        match self {
            MapError::DuplicateNode(_) => "duplicate_node",
            MapError::UnknownNode(_) => "unknown_node",
            MapError::DuplicateCollection(_) => "duplicate_collection",
            MapError::UnknownCollection(_) => "unknown_collection",
            MapError::UnknownGroup(_) => "unknown_group",
            MapError::InvalidReplicas { .. } => "invalid_replicas",
            MapError::Placement(e) => e.code(),
            MapError::Malformed(_) => "malformed_map_command",
            MapError::InvalidMove { .. } => "invalid_move",
            MapError::NodeInUse(_) => "node_in_use",
        }
    }
}

/// The shard of `collection` that holds document `id` (the engine's
/// routing hash; `docs/replication.md`, "Routing").
pub use stratosdb_engine::shard_of;

/// The cluster map. `version` counts the changes applied to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    pub version: u64,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub collections: BTreeMap<String, CollectionInfo>,
    /// By group id.
    pub shards: BTreeMap<GroupId, ShardInfo>,
    /// The next group id to hand out; ids are never reused.
    pub next_group: GroupId,
    /// Nodes being drained for removal (`cluster remove-node`).
    pub draining: BTreeSet<NodeId>,
    /// Nodes removed from the cluster: they refuse further work.
    pub removed: BTreeSet<NodeId>,
}

impl Default for ClusterMap {
    fn default() -> Self {
        ClusterMap::new()
    }
}

impl ClusterMap {
    /// An empty map at version 0; data groups start after [`METADATA_GROUP`].
    pub fn new() -> ClusterMap {
        ClusterMap {
            version: 0,
            nodes: BTreeMap::new(),
            collections: BTreeMap::new(),
            shards: BTreeMap::new(),
            next_group: METADATA_GROUP + 1,
            draining: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// Whether `node` is a member that is up and not draining: only those
    /// get new replicas.
    pub fn is_live(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.up) && !self.draining.contains(&node)
    }

    /// The shards of `collection`, in shard order.
    pub fn shards_of(&self, collection: &str) -> Vec<&ShardInfo> {
        let mut out: Vec<&ShardInfo> = self
            .shards
            .values()
            .filter(|s| s.collection == collection)
            .collect();
        out.sort_by_key(|s| s.shard);
        out
    }

    /// The shard holding document `id` of `collection`.
    pub fn route(&self, collection: &str, id: &str) -> Result<&ShardInfo, MapError> {
        let info = self
            .collections
            .get(collection)
            .ok_or_else(|| MapError::UnknownCollection(collection.to_owned()))?;
        let shard = shard_of(collection, id, info.shards);
        self.shards
            .values()
            .find(|s| s.collection == collection && s.shard == shard)
            .ok_or_else(|| MapError::UnknownCollection(collection.to_owned()))
    }

    /// Where `CreateCollection` would put the collection's shards, without
    /// changing the map.
    pub fn plan(
        &self,
        collection: &str,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<Vec<ShardInfo>, MapError> {
        let nodes: Vec<NodeInfo> = self.nodes.values().cloned().collect();
        let existing: Vec<ShardInfo> = self.shards.values().cloned().collect();
        let replicas = replicas.unwrap_or_else(|| placement::default_replicas(&nodes));
        Ok(placement::place(
            &nodes,
            &existing,
            self.next_group,
            collection,
            shards.unwrap_or(DEFAULT_SHARDS),
            replicas,
        )?)
    }

    /// Applies one command. `Ok(true)`: the map changed and its version went
    /// up by one; `Ok(false)`: the command was a no-op (a leader or liveness
    /// it already had). An error leaves the map as it was.
    pub fn apply(&mut self, cmd: &MapCommand) -> Result<bool, MapError> {
        let changed = match cmd {
            MapCommand::AddNode(node) => {
                if self.nodes.contains_key(&node.id) {
                    return Err(MapError::DuplicateNode(node.id));
                }
                self.nodes.insert(node.id, node.clone());
                true
            }
            MapCommand::UpdateNode(node) => {
                let known = self
                    .nodes
                    .get_mut(&node.id)
                    .ok_or(MapError::UnknownNode(node.id))?;
                let updated = NodeInfo {
                    up: known.up,
                    ..node.clone()
                };
                let changed = *known != updated;
                *known = updated;
                changed
            }
            MapCommand::MarkNode { id, up } => {
                let node = self.nodes.get_mut(id).ok_or(MapError::UnknownNode(*id))?;
                let changed = node.up != *up;
                node.up = *up;
                changed
            }
            MapCommand::CreateCollection {
                name,
                shards,
                replicas,
            } => {
                self.create_collection(name, *shards, *replicas)?;
                true
            }
            MapCommand::DropCollection { name } => {
                if self.collections.remove(name).is_none() {
                    return Err(MapError::UnknownCollection(name.clone()));
                }
                self.shards.retain(|_, s| s.collection != *name);
                true
            }
            MapCommand::SetLeader { group, leader } => self.set_leader(*group, *leader)?,
            MapCommand::SetReplicas { group, replicas } => self.set_replicas(*group, replicas)?,
            MapCommand::StartMove { group, from, to } => self.start_move(*group, *from, *to)?,
            MapCommand::FinishMove { group, to } => self.finish_move(*group, *to)?,
            MapCommand::DrainNode { id } => {
                if !self.nodes.contains_key(id) {
                    return Err(MapError::UnknownNode(*id));
                }
                self.draining.insert(*id)
            }
            MapCommand::RemoveNode { id } => {
                if !self.nodes.contains_key(id) {
                    return Err(MapError::UnknownNode(*id));
                }
                if self.shards.values().any(|s| s.placed_on(*id)) {
                    return Err(MapError::NodeInUse(*id));
                }
                self.nodes.remove(id);
                self.draining.remove(id);
                self.removed.insert(*id);
                true
            }
        };
        if changed {
            self.version += 1;
        }
        Ok(changed)
    }

    fn create_collection(
        &mut self,
        name: &str,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<(), MapError> {
        if self.collections.contains_key(name) {
            return Err(MapError::DuplicateCollection(name.to_owned()));
        }
        let placed = self.plan(name, shards, replicas)?;
        let count = u32::try_from(placed.len()).unwrap_or(u32::MAX);
        let next = self
            .next_group
            .checked_add(count)
            .ok_or(PlacementError::GroupsExhausted {
                next: self.next_group,
            })?;
        let replicas = placed.first().map_or(0, |s| s.replicas.len() as u32);
        self.collections.insert(
            name.to_owned(),
            CollectionInfo {
                name: name.to_owned(),
                shards: count,
                replicas,
            },
        );
        for shard in placed {
            self.shards.insert(shard.group, shard);
        }
        self.next_group = next;
        Ok(())
    }

    fn set_leader(&mut self, group: GroupId, leader: Option<NodeId>) -> Result<bool, MapError> {
        let shard = self
            .shards
            .get_mut(&group)
            .ok_or(MapError::UnknownGroup(group))?;
        if let Some(l) = leader
            && !shard.placed_on(l)
        {
            return Err(MapError::InvalidReplicas {
                group,
                reason: format!("leader {l} is not a replica"),
            });
        }
        let changed = shard.leader != leader;
        shard.leader = leader;
        Ok(changed)
    }

    fn start_move(
        &mut self,
        group: GroupId,
        from: Option<NodeId>,
        to: NodeId,
    ) -> Result<bool, MapError> {
        let invalid = |reason: &str| MapError::InvalidMove {
            group,
            reason: reason.to_owned(),
        };
        if !self.is_live(to) {
            return Err(invalid("the target node is not live"));
        }
        let shard = self
            .shards
            .get_mut(&group)
            .ok_or(MapError::UnknownGroup(group))?;
        if shard.placed_on(to) {
            return Err(invalid("the target already holds a replica"));
        }
        if let Some(f) = from {
            if !shard.replicas.contains(&f) {
                return Err(invalid("the source holds no replica"));
            }
            if shard.moves.iter().any(|m| m.from == Some(f)) {
                return Err(invalid("the source is already moving"));
            }
        }
        shard.moves.push(Move { from, to });
        Ok(true)
    }

    fn finish_move(&mut self, group: GroupId, to: NodeId) -> Result<bool, MapError> {
        let shard = self
            .shards
            .get_mut(&group)
            .ok_or(MapError::UnknownGroup(group))?;
        let Some(at) = shard.moves.iter().position(|m| m.to == to) else {
            return Err(MapError::InvalidMove {
                group,
                reason: format!("no move to {to}"),
            });
        };
        let done = shard.moves.remove(at);
        match done
            .from
            .and_then(|f| shard.replicas.iter().position(|&r| r == f))
        {
            Some(i) => shard.replicas[i] = to,
            None => shard.replicas.push(to),
        }
        if shard.leader.is_some_and(|l| !shard.replicas.contains(&l)) {
            shard.leader = None;
        }
        Ok(true)
    }

    fn set_replicas(&mut self, group: GroupId, replicas: &[NodeId]) -> Result<bool, MapError> {
        let invalid = |reason: String| MapError::InvalidReplicas { group, reason };
        if replicas.is_empty() {
            return Err(invalid("no replicas".into()));
        }
        if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return Err(invalid("a node is listed twice".into()));
        }
        if let Some(&unknown) = replicas.iter().find(|id| !self.nodes.contains_key(id)) {
            return Err(MapError::UnknownNode(unknown));
        }
        let shard = self
            .shards
            .get_mut(&group)
            .ok_or(MapError::UnknownGroup(group))?;
        if shard.replicas == replicas {
            return Ok(false);
        }
        shard.replicas = replicas.to_vec();
        if shard.leader.is_some_and(|l| !replicas.contains(&l)) {
            shard.leader = None;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: NodeId) -> MapCommand {
        MapCommand::AddNode(NodeInfo::new(
            id,
            format!("peer{id}"),
            format!("/ip4/127.0.0.1/tcp/{}", 7000 + id),
            format!("127.0.0.1:{}", 8000 + id),
        ))
    }

    #[test]
    fn invalid_commands_change_nothing() {
        let mut map = ClusterMap::new();
        for id in 1..=3 {
            assert_eq!(map.apply(&add(id)), Ok(true));
        }
        let create = MapCommand::CreateCollection {
            name: "users".into(),
            shards: None,
            replicas: None,
        };
        assert_eq!(map.apply(&create), Ok(true));
        let before = map.clone();
        let group = map.shards_of("users")[0].group;
        let bad = [
            add(2),
            create.clone(),
            MapCommand::MarkNode { id: 9, up: false },
            MapCommand::DropCollection { name: "x".into() },
            MapCommand::SetLeader {
                group: 99,
                leader: None,
            },
            MapCommand::SetLeader {
                group,
                leader: Some(9),
            },
            MapCommand::SetReplicas {
                group,
                replicas: vec![1, 1],
            },
            MapCommand::SetReplicas {
                group,
                replicas: vec![1, 9],
            },
            MapCommand::SetReplicas {
                group,
                replicas: vec![],
            },
            MapCommand::CreateCollection {
                name: "big".into(),
                shards: Some(2),
                replicas: Some(4),
            },
        ];
        for cmd in &bad {
            assert!(map.apply(cmd).is_err(), "{cmd:?}");
            assert_eq!(map, before, "{cmd:?}");
        }
        // A no-op keeps the version.
        assert_eq!(
            map.apply(&MapCommand::MarkNode { id: 1, up: true }),
            Ok(false)
        );
        assert_eq!(map.version, before.version);
    }

    #[test]
    fn defaults_and_routing() {
        let mut map = ClusterMap::new();
        map.apply(&add(1)).unwrap();
        map.apply(&add(2)).unwrap();
        map.apply(&MapCommand::CreateCollection {
            name: "users".into(),
            shards: None,
            replicas: None,
        })
        .unwrap();
        assert_eq!(
            map.collections["users"],
            CollectionInfo {
                name: "users".into(),
                shards: 4,
                replicas: 2
            }
        );
        let groups: Vec<GroupId> = map.shards_of("users").iter().map(|s| s.group).collect();
        assert_eq!(groups, vec![1, 2, 3, 4]);
        let routed = map.route("users", "alice").unwrap();
        assert_eq!(routed.shard, shard_of("users", "alice", 4));
        map.apply(&MapCommand::DropCollection {
            name: "users".into(),
        })
        .unwrap();
        assert!(map.shards.is_empty());
        // Group ids are not reused.
        map.apply(&MapCommand::CreateCollection {
            name: "users".into(),
            shards: Some(1),
            replicas: Some(1),
        })
        .unwrap();
        assert_eq!(map.shards_of("users")[0].group, 5);
    }

    #[test]
    fn commands_round_trip_through_bincode() {
        let cmds = [
            add(1),
            MapCommand::SetReplicas {
                group: 3,
                replicas: vec![1, 2],
            },
        ];
        for cmd in &cmds {
            assert_eq!(MapCommand::decode(&cmd.encode()).as_ref(), Ok(cmd));
        }
        let mut bytes = cmds[0].encode();
        bytes.push(0);
        assert_eq!(
            MapCommand::decode(&bytes).unwrap_err().code(),
            "malformed_map_command"
        );
        assert!(MapCommand::decode(&[0xff, 0xff]).is_err());
    }
}
