//! The cluster as the query layer's [`ShardedStore`]: shard `i` of a
//! collection is the raft group the map gives it; writes are proposed to the
//! group's leader (forwarded if it is elsewhere), reads run on a replica,
//! after a read index unless they are follower reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratosdb_engine::{CollectionInfo, Command, EngineError, IndexSpec, Op, OpOutcome};
use stratosdb_query::exec::{Partial, execute_on_shard};
use stratosdb_query::plan::ShardPlan;
use stratosdb_query::{QueryError, ReadConsistency, ShardedStore, execute_proven};
use stratosdb_replication::{
    ClusterMap, GroupId, MapCommand, NodeId, Pending, ReplicationError, shard_of,
};
use stratosdb_verifier::ReadProof;

use super::node::{ClusterNode, GROUP_GONE, LEADER_WAIT, NodeError, failed_reply};
use super::rpc::{RpcReply, RpcRequest};

/// Documents indexed per build step of a CREATE INDEX (one raft entry each).
const INDEX_BUILD_CHUNK: u32 = 1_000;

pub struct ClusterStore {
    pub node: Arc<ClusterNode>,
}

/// A node error about `collection`: a group the map no longer has means
/// the collection was dropped meanwhile.
pub(super) fn error_in(collection: &str, e: NodeError) -> QueryError {
    if e.code == GROUP_GONE {
        return EngineError::CollectionNotFound(collection.to_string()).into();
    }
    query_error(e)
}

fn query_error(e: NodeError) -> QueryError {
    QueryError::Remote {
        code: e.code,
        message: e.message,
    }
}

impl ClusterStore {
    /// The map, read again at a read index if it does not know `collection`
    /// (it may have been created through another node a moment ago).
    fn map_with(&self, collection: &str) -> Result<Arc<ClusterMap>, QueryError> {
        let map = self.node.map();
        if map.collections.contains_key(collection) {
            return Ok(map);
        }
        self.node.refresh_map().map_err(query_error)
    }

    /// Runs `attempt(group, replica)` on the replicas of a shard in the
    /// order the node prefers, until one answers or the wait is over.
    fn read_replica<T>(
        &self,
        shard: u32,
        plan: &ShardPlan,
        attempt: impl Fn(GroupId, NodeId) -> Result<T, NodeError>,
    ) -> Result<T, QueryError> {
        let group = self.group(&plan.collection, shard)?;
        let deadline = Instant::now() + LEADER_WAIT;
        let mut turn = 0;
        loop {
            let target: NodeId = self
                .node
                .read_target(group, turn)
                .map_err(|e| error_in(&plan.collection, e))?;
            turn += 1;
            match attempt(group, target) {
                Err(e) if retry_read(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.retry => return Err(unreadable(&plan.collection, shard, &e)),
                other => return other.map_err(|e| error_in(&plan.collection, e)),
            }
        }
    }

    /// The group of shard `shard` of `collection`.
    fn group(&self, collection: &str, shard: u32) -> Result<GroupId, QueryError> {
        let map = self.map_with(collection)?;
        group_in(&map, collection, shard)
            .ok_or_else(|| EngineError::CollectionNotFound(collection.to_string()).into())
    }

    /// The group holding document `id` of `collection`, if the node's map
    /// knows the collection (without reading the map again).
    pub fn group_known(&self, collection: &str, id: &str) -> Option<GroupId> {
        self.shard_known(collection, id).map(|(_, group)| group)
    }

    /// [`ClusterStore::group_known`] with the shard's number.
    pub fn shard_known(&self, collection: &str, id: &str) -> Option<(u32, GroupId)> {
        let map = self.node.map();
        let shards = map.collections.get(collection)?.shards;
        let shard = shard_of(collection, id, shards);
        Some((shard, group_in(&map, collection, shard)?))
    }

    fn groups(&self, collection: &str) -> Result<Vec<GroupId>, QueryError> {
        let map = self.map_with(collection)?;
        if !map.collections.contains_key(collection) {
            return Err(EngineError::CollectionNotFound(collection.to_string()).into());
        }
        Ok(map.shards_of(collection).iter().map(|s| s.group).collect())
    }

    /// Proposes a DDL command to every shard of a collection; `ignore` are
    /// error codes that mean "already so" (the reconciler may have done it).
    fn on_every_shard(&self, collection: &str, op: Op, ignore: &[&str]) -> Result<(), QueryError> {
        for group in self.groups(collection)? {
            self.propose_ddl(collection, group, &op, ignore)?;
        }
        Ok(())
    }

    fn propose_ddl(
        &self,
        collection: &str,
        group: GroupId,
        op: &Op,
        ignore: &[&str],
    ) -> Result<(), QueryError> {
        let command = Command {
            ops: vec![op.clone()],
        };
        // A new shard's group may still be electing, or its collection not
        // yet created there: wait for it within the leader bound.
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            match self.node.propose(group, &command) {
                Ok(_) => return Ok(()),
                Err(e) if ignore.contains(&e.code.as_str()) => return Ok(()),
                Err(e)
                    if (e.code == "collection_not_found" || e.code == "no_quorum")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(error_in(collection, e)),
            }
        }
    }

    /// Builds an index on one shard, a chunk per raft entry, until the
    /// leader's catalog says it is complete.
    fn build_index(&self, collection: &str, group: GroupId, name: &str) -> Result<(), QueryError> {
        loop {
            let info = self.catalog_of(group, collection, true)?;
            if !info.building.iter().any(|b| b.index.spec.name == name) {
                return Ok(());
            }
            let chunk = Op::BuildIndex {
                collection: collection.into(),
                index: name.into(),
                max_docs: INDEX_BUILD_CHUNK,
            };
            self.propose_ddl(collection, group, &chunk, &[])?;
        }
    }

    /// A collection's catalog in one group: the local replica when there is
    /// one (and `fresh` is not asked), else the leader's.
    fn catalog_of(
        &self,
        group: GroupId,
        collection: &str,
        fresh: bool,
    ) -> Result<Arc<CollectionInfo>, QueryError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut turn = usize::from(fresh);
        loop {
            let target = self
                .node
                .read_target(group, turn)
                .map_err(|e| error_in(collection, e))?;
            turn += 1;
            let attempt = if target == self.node.id {
                local_shard(&self.node, group)
                    .and_then(|s| s.collection(collection).map_err(NodeError::from))
            } else {
                match self.node.call(
                    target,
                    &RpcRequest::Catalog {
                        group,
                        collection: collection.into(),
                    },
                ) {
                    Ok(RpcReply::Catalog(info)) => Ok(Arc::new(info)),
                    Ok(other) => Err(failed_reply(other)),
                    Err(e) => Err(e),
                }
            };
            match attempt {
                Err(e) if retry_read(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other.map_err(|e| error_in(collection, e)),
            }
        }
    }
}

/// The group of shard `shard` of `collection` in `map`.
fn group_in(map: &ClusterMap, collection: &str, shard: u32) -> Option<GroupId> {
    map.shards_of(collection)
        .into_iter()
        .find(|s| s.shard == shard)
        .map(|s| s.group)
}

/// The error of a read that found no replica to serve it within the wait.
pub(super) fn unreadable(collection: &str, shard: u32, e: &NodeError) -> QueryError {
    query_error(NodeError::new(
        "no_quorum",
        format!("shard {shard} of {collection} cannot be read now ({e}); retry later"),
        true,
    ))
}

/// Whether a read failed in a way another replica (or a later try) may not.
fn retry_read(e: &NodeError) -> bool {
    e.retry || e.code == "collection_not_found" || e.code == "unreachable"
}

/// The engine shard of a group hosted here (never creates one).
fn local_shard(node: &ClusterNode, group: GroupId) -> Result<stratosdb_engine::Shard, NodeError> {
    // Checked against the node's own list, not the raft loop (a round trip
    // through its one thread per read would serialize every read).
    if !node.hosts(group) {
        return Err(ReplicationError::GroupNotFound(group).into());
    }
    Ok(node.raft.shard(group)?)
}

/// This node's replica of `group`, ready to be read: after a read index when
/// `linearizable`, else only if it is a current member.
fn readable_shard(
    node: &ClusterNode,
    group: GroupId,
    linearizable: bool,
) -> Result<stratosdb_engine::Shard, NodeError> {
    let (shard, barrier) = replica_to_read(node, group, linearizable)?;
    if let Some(barrier) = barrier {
        barrier.wait(LEADER_WAIT)?;
    }
    Ok(shard)
}

/// [`readable_shard`] for async callers: the read index is awaited without
/// a thread of its own (no hand-off through the blocking pool).
pub(super) async fn readable_shard_async(
    node: &ClusterNode,
    group: GroupId,
    linearizable: bool,
) -> Result<stratosdb_engine::Shard, NodeError> {
    let (shard, barrier) = replica_to_read(node, group, linearizable)?;
    if let Some(barrier) = barrier {
        barrier.wait_async(LEADER_WAIT).await?;
    }
    Ok(shard)
}

/// This node's replica of `group` and, when `linearizable`, the read index
/// to wait for before reading it; a follower read needs a current member.
fn replica_to_read(
    node: &ClusterNode,
    group: GroupId,
    linearizable: bool,
) -> Result<(stratosdb_engine::Shard, Option<Pending<u64>>), NodeError> {
    let shard = local_shard(node, group)?;
    if linearizable {
        return Ok((shard, Some(node.raft.read_index(group, LEADER_WAIT))));
    }
    current_member(node, group)?;
    Ok((shard, None))
}

/// Follower reads: a replica still being built (or moved away) is not current.
fn current_member(node: &ClusterNode, group: GroupId) -> Result<(), NodeError> {
    if node.serves_follower_reads(group) {
        return Ok(());
    }
    Err(NodeError::new(
        "not_ready",
        format!("the replica of group {group} here is not a current member"),
        true,
    ))
}

/// Runs a shard plan on this node's replica of `group` and proves what it
/// returns there, atomically with the read (`execute_proven`).
pub fn local_partial_proven(
    node: &ClusterNode,
    group: GroupId,
    shard_number: u32,
    plan: &ShardPlan,
    linearizable: bool,
) -> Result<(Partial, Vec<ReadProof>), NodeError> {
    let shard = readable_shard(node, group, linearizable)?;
    // Documents unchanged since the shard's latest mark are proven to it,
    // and through the epoch's record to the anchored cluster root.
    let anchors = super::anchors::RecordedAnchors {
        meta: node.raft.shard(stratosdb_replication::METADATA_GROUP)?,
    };
    execute_proven(&shard, shard_number, plan, &anchors)
        .map_err(|e| NodeError::new(e.code(), e.to_string(), false))
}

/// [`local_partial_proven`] for a plan that came over the wire; the proofs
/// travel as their JSON (`docs/chain.md`).
pub fn serve_partial_proven(
    node: &ClusterNode,
    group: GroupId,
    shard_number: u32,
    plan: &[u8],
    linearizable: bool,
) -> Result<(Vec<u8>, Vec<u8>), NodeError> {
    let plan = stratosdb_query::decode_shard_plan(plan)
        .map_err(|e| NodeError::new("malformed", e.to_string(), false))?;
    let (partial, proofs) = local_partial_proven(node, group, shard_number, &plan, linearizable)?;
    let proofs = serde_json::to_vec(&proofs)
        .map_err(|e| NodeError::new("internal", e.to_string(), false))?;
    Ok((stratosdb_query::encode_partial(&partial), proofs))
}

/// Runs a shard plan on this node's replica of `group`.
pub fn local_partial(
    node: &ClusterNode,
    group: GroupId,
    plan: &ShardPlan,
    linearizable: bool,
) -> Result<(Partial, u64), NodeError> {
    let shard = readable_shard(node, group, linearizable)?;
    let applied = shard.applied_index()?;
    let partial = execute_on_shard(&shard, plan)
        .map_err(|e| NodeError::new(e.code(), e.to_string(), false))?;
    Ok((partial, applied))
}

/// [`local_partial`] for a plan that came over the wire.
pub fn serve_partial(
    node: &ClusterNode,
    group: GroupId,
    plan: &[u8],
    linearizable: bool,
) -> Result<(Vec<u8>, u64), NodeError> {
    let plan = stratosdb_query::decode_shard_plan(plan)
        .map_err(|e| NodeError::new("malformed", e.to_string(), false))?;
    let (partial, applied) = local_partial(node, group, &plan, linearizable)?;
    Ok((stratosdb_query::encode_partial(&partial), applied))
}

impl ShardedStore for ClusterStore {
    fn shard_count(&self, collection: &str) -> Result<u32, QueryError> {
        self.map_with(collection)?
            .collections
            .get(collection)
            .map(|c| c.shards)
            .ok_or_else(|| EngineError::CollectionNotFound(collection.to_string()).into())
    }

    fn shard_of(&self, collection: &str, id: &str) -> Result<u32, QueryError> {
        Ok(shard_of(collection, id, self.shard_count(collection)?))
    }

    fn shard_catalog(
        &self,
        collection: &str,
        shard: u32,
    ) -> Result<Arc<CollectionInfo>, QueryError> {
        let group = self.group(collection, shard)?;
        self.catalog_of(group, collection, false)
    }

    /// The leader's catalog: a follower replica may not have applied an
    /// index acknowledged a moment ago.
    fn shard_catalog_fresh(
        &self,
        collection: &str,
        shard: u32,
    ) -> Result<Arc<CollectionInfo>, QueryError> {
        let group = self.group(collection, shard)?;
        if self.node.hosts(group) {
            // The local replica after a read index: what a linearizable
            // read sees.
            if let Ok(shard) = readable_shard(&self.node, group, true) {
                return shard
                    .collection(collection)
                    .map_err(|e| error_in(collection, NodeError::from(e)));
            }
        }
        self.catalog_of(group, collection, true)
    }

    fn execute_partial(
        &self,
        shard: u32,
        plan: &ShardPlan,
        consistency: ReadConsistency,
    ) -> Result<(Partial, u64), QueryError> {
        let linearizable = consistency == ReadConsistency::Linearizable;
        let encoded = stratosdb_query::encode_shard_plan(plan);
        self.read_replica(shard, plan, |group, target| {
            if target == self.node.id {
                return local_partial(&self.node, group, plan, linearizable);
            }
            let request = RpcRequest::Partial {
                group,
                plan: encoded.clone(),
                linearizable,
            };
            match self.node.call(target, &request)? {
                RpcReply::Partial { partial, applied } => stratosdb_query::decode_partial(&partial)
                    .map(|p| (p, applied))
                    .map_err(|e| NodeError::new("internal", e.to_string(), false)),
                other => Err(failed_reply(other)),
            }
        })
    }

    fn execute_partial_proven(
        &self,
        shard: u32,
        plan: &ShardPlan,
        consistency: ReadConsistency,
    ) -> Result<(Partial, Vec<ReadProof>), QueryError> {
        let linearizable = consistency == ReadConsistency::Linearizable;
        let encoded = stratosdb_query::encode_shard_plan(plan);
        self.read_replica(shard, plan, |group, target| {
            if target == self.node.id {
                return local_partial_proven(&self.node, group, shard, plan, linearizable);
            }
            let request = RpcRequest::PartialProven {
                group,
                shard,
                plan: encoded.clone(),
                linearizable,
            };
            match self.node.call(target, &request)? {
                RpcReply::PartialProven { partial, proofs } => {
                    let partial = stratosdb_query::decode_partial(&partial)
                        .map_err(|e| NodeError::new("internal", e.to_string(), false))?;
                    // Whatever the replica sent, the client verifies.
                    let proofs = serde_json::from_slice(&proofs).map_err(|e| {
                        NodeError::new("internal", format!("proofs from node: {e}"), false)
                    })?;
                    Ok((partial, proofs))
                }
                other => Err(failed_reply(other)),
            }
        })
    }

    fn write(
        &self,
        collection: &str,
        shard: u32,
        ops: Vec<Op>,
    ) -> Result<Vec<OpOutcome>, QueryError> {
        let group = self.group(collection, shard)?;
        self.node
            .propose(group, &Command { ops })
            .map_err(|e| error_in(collection, e))
    }

    fn collections(&self) -> Result<Vec<String>, QueryError> {
        let map = self.node.refresh_map().map_err(query_error)?;
        Ok(map.collections.keys().cloned().collect())
    }

    fn create_collection(
        &self,
        name: &str,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<(), QueryError> {
        stratosdb_engine::validate_name(name).map_err(|reason| {
            EngineError::InvalidCollectionName {
                name: name.into(),
                reason,
            }
        })?;
        let created = self.node.change_map(MapCommand::CreateCollection {
            name: name.into(),
            shards,
            replicas,
        });
        match created {
            Ok(()) => {}
            Err(e) if e.code == "duplicate_collection" => {
                return Err(EngineError::CollectionExists(name.into()).into());
            }
            Err(e) => return Err(query_error(e)),
        }
        self.on_every_shard(
            name,
            Op::CreateCollection { name: name.into() },
            &["collection_exists"],
        )
    }

    fn drop_collection(&self, name: &str) -> Result<(), QueryError> {
        // The shards first, while the map still routes to them.
        self.on_every_shard(
            name,
            Op::DropCollection { name: name.into() },
            &["collection_not_found"],
        )?;
        match self
            .node
            .change_map(MapCommand::DropCollection { name: name.into() })
        {
            Ok(()) => Ok(()),
            Err(e) if e.code == "unknown_collection" => {
                Err(EngineError::CollectionNotFound(name.into()).into())
            }
            Err(e) => Err(query_error(e)),
        }
    }

    fn create_index(&self, collection: &str, spec: &IndexSpec) -> Result<(), QueryError> {
        let groups = self.groups(collection)?;
        for &group in &groups {
            let create = Op::CreateIndex {
                collection: collection.into(),
                spec: spec.clone(),
            };
            self.propose_ddl(collection, group, &create, &[])?;
        }
        for &group in &groups {
            if let Err(e) = self.build_index(collection, group, &spec.name) {
                // A failed build (a unique clash) leaves no half index behind.
                let _ = self.drop_index(collection, &spec.name);
                return Err(e);
            }
        }
        Ok(())
    }

    fn drop_index(&self, collection: &str, name: &str) -> Result<(), QueryError> {
        self.on_every_shard(
            collection,
            Op::DropIndex {
                collection: collection.into(),
                name: name.into(),
            },
            &[],
        )
    }
}
