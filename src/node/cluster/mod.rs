//! The replicated backend: a [`ClusterNode`] (transport, raft groups, map)
//! with the query layer's [`ShardedDatabase`] over it, behind the API's
//! [`Backend`] trait. Every `stratosdb node` runs one; a node without
//! `--peers` founds a cluster of one.

mod anchors;
mod epochs;
mod export;
mod heal;
mod node;
mod rpc;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use stratosdb_engine::{CollectionInfo, Command, Op, OpOutcome, Value};
use stratosdb_query::ast::{CmpOp, Expr, Query};
use stratosdb_query::{FindOptions, ReadConsistency, ShardedDatabase, ShardedStore as _};
use stratosdb_replication::{GroupId, NodeId, TransferDirection};

pub use epochs::AnchorConfig;
pub use node::{
    Bootstrap, ClusterConfig, ClusterNode, DEFAULT_DOWN_AFTER, ExtensionHandler, LEADER_WAIT,
    NodeError, REMOVED, TOKEN_FILE, show_id,
};
pub use store::ClusterStore;

use rpc::ReplicaStatus;

use super::backend::{
    Backend, BackendError, BackendFuture, ErrorClass, PutOutcome, SqlOutcome, on_blocking_pool,
    put_blocking,
};
use crate::api::{
    AnchorsQuery, AnchorsReply, ClusterMap as ApiMap, CollectionPlacement, Consistency, JoinReply,
    JoinRequest, MoveInfo, NodeInfo, RemoveNodeReply, RemoveNodeRequest, ReplicaInfo, ShardInfo,
};

pub struct ClusterBackend {
    node: Arc<ClusterNode>,
    db: ShardedDatabase<ClusterStore>,
}

impl ClusterBackend {
    pub fn start(config: ClusterConfig) -> Result<ClusterBackend, BackendError> {
        let node = ClusterNode::start(config).map_err(backend_error)?;
        let db = ShardedDatabase::new(ClusterStore { node: node.clone() });
        Ok(ClusterBackend { node, db })
    }

    pub fn node(&self) -> &Arc<ClusterNode> {
        &self.node
    }

    /// One operation on the shard that holds document `id`.
    fn write_one(&self, collection: &str, id: &str, op: Op) -> Result<u64, BackendError> {
        let store = self.db.store();
        let shard = store.shard_of(collection, id)?;
        let outcomes = store.write(collection, shard, vec![op])?;
        Ok(outcomes.iter().map(|o| o.affected).sum())
    }
}

/// The ed25519 key a node's PeerId carries.
pub fn node_key_of(peer_id: &str) -> Option<[u8; 32]> {
    let peer: stratosdb_replication::p2p::PeerId = peer_id.parse().ok()?;
    stratosdb_replication::p2p::ed25519_key_of(&peer)
}

fn consistency(c: Consistency) -> ReadConsistency {
    match c {
        Consistency::Linearizable => ReadConsistency::Linearizable,
        Consistency::Follower => ReadConsistency::Follower,
    }
}

fn backend_error(e: NodeError) -> BackendError {
    BackendError::new(super::backend::class_of_code(&e.code), &e.code, e.message)
}

fn upsert(collection: &str, doc: Value) -> Op {
    Op::Upsert {
        collection: collection.to_string(),
        doc,
    }
}

/// A PUT's outcome: whether its upsert created the document.
fn put_outcome(outcomes: &[OpOutcome]) -> PutOutcome {
    if outcomes.iter().any(|o| o.created) {
        PutOutcome::Created
    } else {
        PutOutcome::Replaced
    }
}

impl Backend for ClusterBackend {
    fn readiness(&self) -> Result<(), BackendError> {
        self.node
            .readiness()
            .map_err(|e| BackendError::new(ErrorClass::Unavailable, &e.code, e.message))
    }

    fn sql(&self, sql: &str, c: Consistency) -> Result<SqlOutcome, BackendError> {
        let executed = self.db.execute_one(sql, consistency(c))?;
        Ok(SqlOutcome {
            result: executed.result,
            reads: executed.reads,
        })
    }

    fn put(&self, collection: &str, id: &str, doc: Value) -> Result<PutOutcome, BackendError> {
        // One upsert: its outcome says whether it created the document.
        let store = self.db.store();
        let shard = store.shard_of(collection, id)?;
        let outcomes = store.write(collection, shard, vec![upsert(collection, doc)])?;
        Ok(put_outcome(&outcomes))
    }

    /// The upsert proposed and awaited on the API's worker: no blocking
    /// pool thread per write. A collection this node's map does not know
    /// yet takes the blocking path, which reads the map again.
    fn put_async(
        self: Arc<Self>,
        collection: String,
        id: String,
        doc: Value,
    ) -> BackendFuture<PutOutcome> {
        Box::pin(async move {
            let Some(group) = self.db.store().group_known(&collection, &id) else {
                return put_blocking(self, collection, id, doc).await;
            };
            let command = Command {
                ops: vec![upsert(&collection, doc)],
            };
            let outcomes = self
                .node
                .propose_async(group, &command)
                .await
                .map_err(|e| store::error_in(&collection, e))?;
            Ok(put_outcome(&outcomes))
        })
    }

    fn get(&self, collection: &str, id: &str, c: Consistency) -> Result<Value, BackendError> {
        // Straight to the one shard: a plan for `_id = id` needs no catalog
        // (no index can beat the `_id` lookup), so none is fetched.
        let store = self.db.store();
        let shard = store.shard_of(collection, id)?;
        let mut query = Query::all(collection);
        query.filter = Some(Expr::cmp(CmpOp::Eq, Expr::path("_id"), Expr::lit(id)));
        let info = CollectionInfo {
            name: collection.to_string(),
            number: 0,
            count: 0,
            next_index_number: 0,
            indexes: Vec::new(),
            building: Vec::new(),
        };
        let plan = stratosdb_query::plan::plan(&query, &info);
        let (partial, _) = store.execute_partial(shard, &plan.shard, consistency(c))?;
        let rows = stratosdb_query::exec::merge(&plan, vec![partial])?;
        rows.rows
            .into_iter()
            .next()
            .ok_or_else(|| BackendError::document_not_found(collection, id))
    }

    /// On the API's worker when this node holds a replica of the document's
    /// shard: the read index awaited there (the same barrier as the blocking
    /// path's, so the read stays linearizable), then a point read of the
    /// replica, with no blocking-pool thread and no query plan. Otherwise,
    /// or when the replica here cannot serve it (the next replica may), the
    /// blocking path with its retries over the shard's replicas.
    fn get_async(
        self: Arc<Self>,
        collection: String,
        id: String,
        c: Consistency,
    ) -> BackendFuture<Value> {
        Box::pin(async move {
            if let Some((shard, group)) = self.db.store().shard_known(&collection, &id)
                && self.node.hosts(group)
            {
                let started = std::time::Instant::now();
                let linearizable = c == Consistency::Linearizable;
                match store::readable_shard_async(&self.node, group, linearizable).await {
                    Ok(replica) => {
                        if let Ok(doc) = replica.get(&collection, &id) {
                            return doc
                                .ok_or_else(|| BackendError::document_not_found(&collection, &id));
                        }
                    }
                    // The wait is over: the blocking path would give up too.
                    Err(e) if e.retry && started.elapsed() >= LEADER_WAIT => {
                        return Err(store::unreadable(&collection, shard, &e).into());
                    }
                    Err(_) => {}
                }
            }
            on_blocking_pool(self, move |b| b.get(&collection, &id, c)).await
        })
    }

    fn delete(&self, collection: &str, id: &str) -> Result<(), BackendError> {
        // An absent document is answered from a read: a refused request
        // leaves no entry in the shard's log.
        self.get(collection, id, Consistency::Linearizable)?;
        let op = Op::Delete {
            collection: collection.to_string(),
            id: id.to_string(),
        };
        if self.write_one(collection, id, op)? == 0 {
            return Err(BackendError::document_not_found(collection, id));
        }
        Ok(())
    }

    fn find(
        &self,
        collection: &str,
        filter: &serde_json::Value,
        options: &FindOptions,
        c: Consistency,
    ) -> Result<Vec<Value>, BackendError> {
        Ok(self.db.find(collection, filter, options, consistency(c))?.0)
    }

    fn query_proven(
        &self,
        query: &Query,
        c: Consistency,
    ) -> Result<stratosdb_query::ProvenRows, BackendError> {
        Ok(self.db.query_proven(query, consistency(c))?)
    }

    fn join(&self, request: &JoinRequest) -> Result<JoinReply, BackendError> {
        let members = self.node.admit(request)?;
        Ok(JoinReply { members })
    }

    fn cluster(&self) -> Result<ApiMap, BackendError> {
        let map = self.node.map();
        let statuses = self.node.cluster_status();
        let nodes = map
            .nodes
            .values()
            .map(|n| NodeInfo {
                id: show_id(n.id),
                p2p: Some(n.p2p.clone()),
                http: n.http.clone(),
                zone: n.zone.clone(),
                up: n.up,
                state: if map.draining.contains(&n.id) {
                    "draining"
                } else if n.up {
                    "active"
                } else {
                    "down"
                }
                .to_string(),
                node_key: node_key_of(&n.peer_id).map(hex::encode),
                earnings_account: node_key_of(&n.peer_id)
                    .map(|k| crate::node::traffic::settle::earnings_account(&k).to_string()),
            })
            .collect();
        let collections = map
            .collections
            .values()
            .map(|c| CollectionPlacement {
                name: c.name.clone(),
                shards: c.shards,
                replicas: c.replicas,
            })
            .collect();
        let mut shards = Vec::new();
        let mut moves = Vec::new();
        for name in map.collections.keys() {
            for s in map.shards_of(name) {
                // The freshest leader anyone reports, else the map's hint.
                let leader = s
                    .replicas
                    .iter()
                    .find_map(|&n| statuses.get(&(n, s.group)).and_then(|st| st.leader))
                    .or(s.leader);
                // Roles as the leader's configuration has them.
                let leader_status = leader.and_then(|l| statuses.get(&(l, s.group)));
                let is_learner = |n: u64| match leader_status {
                    Some(st) => st.learners.contains(&n) || !st.voters.contains(&n),
                    None => statuses
                        .get(&(n, s.group))
                        .is_some_and(|st| !st.voters.contains(&n)),
                };
                let placed = s.replicas.iter().chain(s.moves.iter().map(|m| &m.to));
                let replicas = placed
                    .map(|&n| {
                        let st = statuses.get(&(n, s.group));
                        ReplicaInfo {
                            node: show_id(n),
                            applied: st.map_or(0, |st| st.applied),
                            root: st.map_or_else(String::new, |st| hex::encode(st.root)),
                            role: if is_learner(n) { "learner" } else { "voter" }.to_string(),
                        }
                    })
                    .collect();
                let target = leader_status.map_or(0, |st| st.applied);
                for m in &s.moves {
                    let applied = statuses.get(&(m.to, s.group)).map_or(0, |st| st.applied);
                    let phase = if !is_learner(m.to) {
                        "removing"
                    } else if applied >= target && target > 0 {
                        "promoting"
                    } else {
                        "learner"
                    };
                    let (bytes, total_bytes) =
                        move_transfer(&statuses, s.group, m.to, leader_status);
                    moves.push(MoveInfo {
                        collection: s.collection.clone(),
                        shard: s.shard,
                        from: m.from.map(show_id),
                        to: show_id(m.to),
                        phase: phase.to_string(),
                        applied,
                        target,
                        bytes,
                        total_bytes,
                    });
                }
                shards.push(ShardInfo {
                    collection: s.collection.clone(),
                    shard: s.shard,
                    leader: leader.map(show_id),
                    replicas,
                });
            }
        }
        Ok(ApiMap {
            self_id: show_id(self.node.id),
            nodes,
            collections,
            shards,
            moves,
            cluster_id: self.node.cluster_id()?.map(hex::encode),
        })
    }

    fn anchors(&self, query: &AnchorsQuery) -> Result<AnchorsReply, BackendError> {
        self.node.anchors(query).map_err(|e| {
            let class = match e.code.as_str() {
                "epoch_not_found" => ErrorClass::NotFound,
                "invalid_request" => ErrorClass::BadRequest,
                _ => super::backend::class_of_code(&e.code),
            };
            BackendError::new(class, &e.code, e.message)
        })
    }

    fn export_shard(
        &self,
        collection: &str,
        shard: u32,
        query: &crate::api::ExportQuery,
    ) -> Result<crate::api::ShardExport, BackendError> {
        export::export_shard(&self.node, collection, shard, query)
    }

    fn remove_node(&self, request: &RemoveNodeRequest) -> Result<RemoveNodeReply, BackendError> {
        self.node.remove_node(&request.node).map_err(|e| {
            let class = match e.code.as_str() {
                heal::NOT_ENOUGH_NODES => ErrorClass::Conflict,
                "unknown_node" => ErrorClass::NotFound,
                _ => super::backend::class_of_code(&e.code),
            };
            BackendError::new(class, &e.code, e.message)
        })
    }

    fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let map = self.node.map();
        let mut applied = String::new();
        let mut leader = String::new();
        let mut term = String::new();
        for group in self.node.hosted_groups() {
            let Ok(status) = self.node.raft.status(group) else {
                continue;
            };
            let (collection, shard) = map
                .shards
                .get(&group)
                .map_or((String::new(), String::new()), |s| {
                    (s.collection.clone(), s.shard.to_string())
                });
            let labels = format!(
                "group=\"{group}\",collection=\"{}\",shard=\"{shard}\"",
                super::metrics::escape(&collection)
            );
            let _ = writeln!(
                applied,
                "stratosdb_raft_applied_index{{{labels}}} {}",
                status.applied
            );
            let _ = writeln!(
                leader,
                "stratosdb_raft_is_leader{{{labels}}} {}",
                u8::from(status.is_leader)
            );
            let _ = writeln!(term, "stratosdb_raft_term{{{labels}}} {}", status.term);
        }
        // Snapshot transfers in progress, both ways: a replica being built
        // shows here, chunk by chunk, until it is installed.
        let mut transfer_done = String::new();
        let mut transfer_total = String::new();
        for t in self.node.raft.snapshot_transfers() {
            let (collection, shard) = map
                .shards
                .get(&t.group)
                .map_or((String::new(), String::new()), |s| {
                    (s.collection.clone(), s.shard.to_string())
                });
            let (direction, peer) = match t.direction {
                TransferDirection::In => ("in", t.from),
                TransferDirection::Out => ("out", t.to),
            };
            let labels = format!(
                "group=\"{}\",collection=\"{}\",shard=\"{shard}\",direction=\"{direction}\",peer=\"{}\"",
                t.group,
                super::metrics::escape(&collection),
                show_id(peer)
            );
            let _ = writeln!(
                transfer_done,
                "stratosdb_snapshot_transfer_bytes{{{labels}}} {}",
                t.bytes_done
            );
            let _ = writeln!(
                transfer_total,
                "stratosdb_snapshot_transfer_total_bytes{{{labels}}} {}",
                t.bytes_total
            );
        }
        let mut submissions = String::new();
        for (status, n) in self.node.anchor_counters.values() {
            let _ = writeln!(
                submissions,
                "stratosdb_anchor_submissions_total{{status=\"{status}\"}} {n}"
            );
        }
        let c = self.node.raft.counters();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, body: &str| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}");
        };
        family(
            "stratosdb_raft_applied_index",
            "gauge",
            "The raft index each group replica on this node has applied (group 0 is the metadata group).",
            &applied,
        );
        family(
            "stratosdb_raft_is_leader",
            "gauge",
            "1 if this node leads the group.",
            &leader,
        );
        family(
            "stratosdb_raft_term",
            "gauge",
            "The group's raft term as this node sees it.",
            &term,
        );
        family(
            "stratosdb_snapshot_transfer_bytes",
            "gauge",
            "Bytes of a snapshot transfer in progress moved so far (direction in: fetched here; out: served from here).",
            &transfer_done,
        );
        family(
            "stratosdb_snapshot_transfer_total_bytes",
            "gauge",
            "Size of a snapshot transfer in progress.",
            &transfer_total,
        );
        family(
            "stratosdb_anchor_epoch",
            "gauge",
            "The newest anchored epoch recorded in the metadata group (0: none).",
            &format!(
                "stratosdb_anchor_epoch {}\n",
                self.node.last_anchored_epoch()
            ),
        );
        family(
            "stratosdb_anchor_submissions_total",
            "counter",
            "Epochs this node handled as the anchoring leader, by outcome: submissions sent (again), anchored, dropped by the chain (and replaced), failed; epochs skipped.",
            &submissions,
        );
        for (name, help, value) in [
            (
                "stratosdb_raft_proposals_total",
                "Commands this node proposed as a leader.",
                c.proposals,
            ),
            (
                "stratosdb_raft_leader_changes_total",
                "Leader changes seen by this node's groups.",
                c.leader_changes,
            ),
            (
                "stratosdb_raft_workload_hand_overs_total",
                "Shard leaderships this node handed to the node sending most of the shard's requests.",
                c.workload_hand_overs,
            ),
            (
                "stratosdb_raft_snapshot_sent_bytes_total",
                "Bytes of snapshots sent to lagging replicas.",
                c.snapshot_bytes_sent,
            ),
            (
                "stratosdb_raft_snapshot_received_bytes_total",
                "Bytes of snapshot chunks fetched by this node.",
                c.snapshot_bytes_received,
            ),
            (
                "stratosdb_raft_snapshots_installed_total",
                "Snapshots installed on this node's replicas.",
                c.snapshots_installed,
            ),
        ] {
            family(name, "counter", help, &format!("{name} {value}\n"));
        }
        // Every replica stored here, hosted or not: a stale one (moved away
        // while this node was gone) counts until it is deleted.
        let groups = self.node.raft.groups().map_or(0, |g| g.len());
        let shards = self.node.raft.engine().shard_ids().map_or(0, |s| s.len());
        for (name, help, value) in [
            (
                "stratosdb_raft_groups",
                "Raft groups with a log on this node (group 0 included).",
                groups,
            ),
            (
                "stratosdb_engine_shards",
                "Shards stored in this node's engine (group 0's included).",
                shards,
            ),
        ] {
            family(name, "gauge", help, &format!("{name} {value}\n"));
        }
        out
    }

    fn shutdown(&self) -> Result<(), BackendError> {
        self.node.shutdown().map_err(backend_error)
    }
}

/// The bytes moved and the size of the snapshot building the replica of
/// `group` on `to`: as the target reports its fetch, else as the leader
/// reports serving it; (0, 0) when neither has a transfer in flight.
fn move_transfer(
    statuses: &HashMap<(NodeId, GroupId), ReplicaStatus>,
    group: GroupId,
    to: NodeId,
    leader_status: Option<&ReplicaStatus>,
) -> (u64, u64) {
    let fetching = statuses
        .get(&(to, group))
        .and_then(|st| st.transfers.iter().find(|t| t.incoming));
    let serving =
        || leader_status.and_then(|st| st.transfers.iter().find(|t| !t.incoming && t.peer == to));
    fetching
        .or_else(serving)
        .map_or((0, 0), |t| (t.bytes, t.total_bytes))
}

impl From<NodeError> for BackendError {
    fn from(e: NodeError) -> Self {
        backend_error(e)
    }
}
