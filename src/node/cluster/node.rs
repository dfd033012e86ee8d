//! One node of a cluster: the libp2p transport, the raft groups (the
//! metadata group 0 and the data groups of the shards it holds), the cluster
//! map as its group 0 replica has it, and the forwarding of proposals and
//! reads to the replica that can serve them.
//!
//! Bring-up runs in its own thread (the API answers 503 meanwhile): a node
//! whose data holds group 0 just restarts; otherwise it joins (`--join`) or
//! founds: it learns the PeerId at each `--peers` address (the founding gate
//! is open only until then), and every founder bootstraps group 0 with the
//! same voters, the sorted ids of all founders. Then a reconcile loop keeps
//! the node in step with the map: members allowed on the transport, groups
//! created for the shards placed here, the node's own entry and leader
//! hints in the map, each led shard holding its collection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use stratosdb_engine::{ApplyOutcome, Command, EngineConfig, EngineError, Op, OpOutcome, Shard};
use stratosdb_replication::p2p::{P2pConfig, P2pTransport, PeerId, multiaddr_of, node_id_of};
use stratosdb_replication::{
    ClusterMap, GroupId, METADATA_GROUP, MapCommand, NodeConfig, NodeId, NodeInfo, RaftNode,
    ReplicationError, TransferDirection, Transport, metadata,
};

use crate::api::{JoinRequest, Member};
use crate::client::Client;

use super::rpc::{self, ReplicaStatus, RpcReply, RpcRequest, TransferProgress};

/// How long a forwarded request keeps looking for a leader before the
/// client gets a retryable 503.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// One RPC's bound.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `GET /v1/cluster` waits for a member's status: a member that
/// has not answered by then (dead, but not yet marked down) is shown
/// without one rather than holding up the answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// The code of an error about a group no longer in the map.
pub const GROUP_GONE: &str = "group_gone";
/// How often the node reconciles itself with the map.
const RECONCILE_EVERY: Duration = Duration::from_millis(100);
/// How long `--join` keeps asking a member that is not ready.
const JOIN_WAIT: Duration = Duration::from_secs(60);
/// The file in the data folder that keeps the join token (0600).
pub const TOKEN_FILE: &str = "join-token";

/// How a cluster node starts.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub data: PathBuf,
    /// `HOST:PORT` the transport listens on.
    pub p2p: String,
    /// The HTTP API's bound address, `HOST:PORT`.
    pub http: String,
    /// The other founders' p2p addresses.
    pub peers: Vec<String>,
    /// `(HTTP address of a member, token)`.
    pub join: Option<(String, String)>,
    pub zone: Option<String>,
    pub engine: EngineConfig,
    /// How long a member may go without answering the metadata leader's
    /// probes before it is marked down (and its replicas move elsewhere).
    pub down_after: Duration,
    /// Epochs and anchors (`None`: `--anchor-interval off`).
    pub anchor: Option<super::epochs::AnchorConfig>,
    /// What the metadata leader writes into group 0 once, when the cluster
    /// is new (the traffic ledger's collection, prices and dev account).
    pub bootstrap: Option<Bootstrap>,
    /// Shard leaders hand leadership to the node sending most of the
    /// shard's requests (`--follow-workload`).
    pub follow_workload: bool,
}

/// A command the metadata leader proposes while `collection` does not exist
/// in group 0; the command creates it, so it applies once.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub collection: String,
    pub command: Command,
}

/// `--down-after`'s default.
pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(30);

/// The code of the errors of a node removed from its cluster.
pub const REMOVED: &str = "removed";

/// Why a request could not be served: its stable code, its message, and
/// whether nothing was done so it may be retried.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    pub code: String,
    pub message: String,
    pub retry: bool,
}

impl NodeError {
    pub fn new(code: &str, message: impl Into<String>, retry: bool) -> NodeError {
        NodeError {
            code: code.into(),
            message: message.into(),
            retry,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> NodeError {
        NodeError::new("unavailable", message, true)
    }
}

impl From<EngineError> for NodeError {
    fn from(e: EngineError) -> Self {
        NodeError::new(e.code(), e.to_string(), false)
    }
}

impl From<ReplicationError> for NodeError {
    fn from(e: ReplicationError) -> Self {
        // A group not (yet) on a node: nothing was done, and the node creates
        // it as soon as it sees the map that places it there.
        let retry = e.is_retryable() || matches!(e, ReplicationError::GroupNotFound(_));
        NodeError::new(replication_code(&e), e.to_string(), retry)
    }
}

fn replication_code(e: &ReplicationError) -> &'static str {
    match e {
        ReplicationError::NotLeader { .. }
        | ReplicationError::ProposalDropped { .. }
        | ReplicationError::Overwritten { .. }
        | ReplicationError::Timeout { .. }
        | ReplicationError::OutcomeUnknown { .. }
        | ReplicationError::GroupNotFound(_)
        | ReplicationError::QueueFull(_)
        | ReplicationError::Stopped => "unavailable",
        _ => "internal",
    }
}

/// Node ids as the API shows them: 16 hex digits.
pub fn show_id(id: NodeId) -> String {
    format!("{id:016x}")
}

pub struct ClusterNode {
    pub id: NodeId,
    pub raft: RaftNode,
    pub transport: Arc<P2pTransport>,
    config: ClusterConfig,
    /// The map as this node's replica of group 0 last had it.
    map: RwLock<Arc<ClusterMap>>,
    /// The data groups hosted here.
    hosted: Mutex<BTreeSet<GroupId>>,
    ready: AtomicBool,
    stopping: AtomicBool,
    token_shown: AtomicBool,
    /// Set once the node's first stdout line is out (the token comes after).
    announced: AtomicBool,
    /// Why bring-up failed, if it did (the API says so).
    failed: Mutex<Option<String>>,
    /// The metadata leader's probe clocks (see `heal.rs`).
    pub(super) liveness: Mutex<super::heal::Liveness>,
    /// What this node did as the anchoring leader.
    pub(super) anchor_counters: super::epochs::AnchorCounters,
    /// The handler of [`RpcRequest::Extension`] requests, once set.
    extension: std::sync::OnceLock<ExtensionHandler>,
}

/// Serves a service's requests from other nodes: (sender, request bytes) →
/// reply bytes, or an error.
pub type ExtensionHandler = Arc<dyn Fn(NodeId, &[u8]) -> Result<Vec<u8>, NodeError> + Send + Sync>;

impl ClusterNode {
    /// Opens the transport (key in `DATA/p2p`) and the raft node (data in
    /// `DATA/db`), and starts bring-up and reconciling in a thread.
    pub fn start(config: ClusterConfig) -> Result<Arc<ClusterNode>, NodeError> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            NodeError::new("internal", format!("{what}: {e}"), false)
        };
        let p2p_dir = config.data.join("p2p");
        let db_dir = config.data.join("db");
        for dir in [&p2p_dir, &db_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| internal("cannot create the data folder", &e))?;
        }
        let transport = Arc::new(
            P2pTransport::start(P2pConfig::new(&p2p_dir, config.p2p.clone()))
                .map_err(|e| internal("cannot start the p2p transport", &e))?,
        );
        let id = transport.node_id();
        let mut raft_config = NodeConfig::new(id);
        raft_config.engine = config.engine.clone();
        raft_config.follow_workload = config.follow_workload;
        let raft = RaftNode::open(
            &db_dir,
            raft_config,
            transport.clone() as Arc<dyn Transport>,
        )?;
        transport.set_inbox(raft.inbox());
        let node = Arc::new(ClusterNode {
            id,
            raft,
            transport,
            config,
            map: RwLock::new(Arc::new(ClusterMap::new())),
            hosted: Mutex::new(BTreeSet::new()),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            token_shown: AtomicBool::new(false),
            announced: AtomicBool::new(false),
            failed: Mutex::new(None),
            liveness: Mutex::new(super::heal::Liveness::default()),
            anchor_counters: Default::default(),
            extension: std::sync::OnceLock::new(),
        });
        let handler = Arc::downgrade(&node);
        node.transport.set_rpc_handler_async(move |from, bytes| {
            let node = handler.upgrade();
            Box::pin(async move {
                let reply = match node {
                    Some(node) => node.serve_rpc_async(from, bytes).await,
                    None => RpcReply::error("unavailable", "the node is stopping", true),
                };
                Some(rpc::encode(&reply))
            })
        });
        let runner = node.clone();
        std::thread::Builder::new()
            .name("cluster-reconcile".into())
            .spawn(move || runner.run())
            .map_err(|e| internal("cannot start a thread", &e))?;
        let healer = node.clone();
        std::thread::Builder::new()
            .name("cluster-heal".into())
            .spawn(move || healer.heal_loop())
            .map_err(|e| internal("cannot start a thread", &e))?;
        if let Some(anchor) = node.config.anchor.clone() {
            let anchorer = node.clone();
            std::thread::Builder::new()
                .name("cluster-anchor".into())
                .spawn(move || anchorer.anchor_loop(anchor))
                .map_err(|e| internal("cannot start a thread", &e))?;
        }
        Ok(node)
    }

    /// Says that the node's first line is printed: later lines may follow.
    pub fn announced(&self) {
        self.announced.store(true, Ordering::Release);
    }

    /// The p2p address others reach this node at.
    pub fn p2p_address(&self) -> String {
        self.transport
            .local_socket_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| self.config.p2p.clone())
    }

    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.read().clone()
    }

    /// Why bring-up failed for good (a refused join), if it did: the node
    /// cannot serve and should stop.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    /// Ready once group 0 has given this node a map that lists it.
    pub fn readiness(&self) -> Result<(), NodeError> {
        if let Some(why) = self.failed.lock().clone() {
            return Err(NodeError::new("not_ready", why, false));
        }
        if self.map().removed.contains(&self.id) {
            return Err(NodeError::new(
                REMOVED,
                "this node was removed from its cluster (cluster remove-node); it serves nothing",
                false,
            ));
        }
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(NodeError::new(
                "not_ready",
                "the node has not joined its cluster yet (founding, joining or catching up)",
                true,
            ))
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(super) fn down_after(&self) -> Duration {
        self.config.down_after
    }

    /// The cluster id recorded in this node's replica of group 0.
    pub fn cluster_id(&self) -> Result<Option<[u8; 32]>, NodeError> {
        Ok(metadata::read_cluster_id(
            &self.raft.shard(METADATA_GROUP)?,
        )?)
    }

    pub(super) fn anchor_config(&self) -> Option<&super::epochs::AnchorConfig> {
        self.config.anchor.as_ref()
    }

    /// Stops reconciling and flushes; raft and the transport stop on drop.
    pub fn shutdown(&self) -> Result<(), NodeError> {
        self.stopping.store(true, Ordering::Release);
        self.raft.engine().flush()?;
        self.transport.shutdown();
        Ok(())
    }

    // ---- bring-up and reconciling ---------------------------------------------

    fn run(self: Arc<Self>) {
        if let Err(e) = self.bring_up() {
            tracing::error!(error = %e, "the node could not join a cluster");
            *self.failed.lock() = Some(e.message);
            return;
        }
        while !self.stopping.load(Ordering::Acquire) {
            if let Err(e) = self.reconcile() {
                tracing::debug!(error = %e, "reconcile");
            }
            std::thread::sleep(RECONCILE_EVERY);
        }
    }

    fn bring_up(&self) -> Result<(), NodeError> {
        if self.raft.status(METADATA_GROUP).is_ok() {
            // A restart: the map on disk names the members.
            let (map, _) = metadata::read_map(&self.raft.shard(METADATA_GROUP)?)?;
            self.adopt(map);
            return Ok(());
        }
        if let Some((at, token)) = self.config.join.clone() {
            return self.join(&at, &token);
        }
        self.found()
    }

    /// Joining: a member checks the token and adds this node to the map;
    /// this node then trusts the members it names and waits for the
    /// metadata group to bring its replica (as a learner) up to date.
    fn join(&self, at: &str, token: &str) -> Result<(), NodeError> {
        let url = if at.starts_with("http://") {
            at.to_string()
        } else {
            format!("http://{at}")
        };
        let client = Client::new(&url)
            .map_err(|e| NodeError::new("invalid_join_address", e.to_string(), false))?;
        let request = JoinRequest {
            token: token.to_string(),
            peer_id: self.transport.peer_id().to_string(),
            p2p: self.p2p_address(),
            http: self.config.http.clone(),
            zone: self.config.zone.clone(),
        };
        let deadline = Instant::now() + JOIN_WAIT;
        let reply = loop {
            if self.stopping.load(Ordering::Acquire) {
                return Err(NodeError::unavailable("stopped while joining"));
            }
            match client.join(&request) {
                Ok(reply) => break reply,
                Err(e) if e.status().is_some_and(|s| s != 503) || Instant::now() > deadline => {
                    let code = e.code().unwrap_or("unreachable");
                    return Err(NodeError::new(
                        "join_refused",
                        format!("{url} did not admit this node ({code}): {e}"),
                        false,
                    ));
                }
                Err(e) => {
                    tracing::info!(%url, error = %e, "waiting to join");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        };
        for member in &reply.members {
            let Ok(peer) = member.peer_id.parse::<PeerId>() else {
                continue;
            };
            if peer == self.transport.peer_id() {
                continue;
            }
            self.transport.allow_peer(peer)?;
            self.transport.set_peer_addresses(peer, &[&member.p2p])?;
        }
        // No voters: the replica starts empty and gets a snapshot.
        self.raft.create_group(METADATA_GROUP, &[])?;
        Ok(())
    }

    /// On any member: admits a node that asks to join with the right token.
    pub fn admit(&self, request: &JoinRequest) -> Result<Vec<Member>, NodeError> {
        let meta = self.raft.shard(METADATA_GROUP)?;
        let Some(token) = metadata::read_token(&meta)? else {
            return Err(NodeError::unavailable(
                "the cluster has no join token yet; retry",
            ));
        };
        if !same_secret(token.as_bytes(), request.token.as_bytes()) {
            return Err(NodeError::new(
                "bad_token",
                "the join token is wrong (it is printed at bootstrap and kept in the founders' join-token file)",
                false,
            ));
        }
        let peer: PeerId = request.peer_id.parse().map_err(|e| {
            NodeError::new(
                "invalid_peer_id",
                format!("peer_id {:?}: {e}", request.peer_id),
                false,
            )
        })?;
        multiaddr_of(&request.p2p)
            .map_err(|e| NodeError::new("invalid_address", e.to_string(), false))?;
        let info = NodeInfo {
            id: node_id_of(&peer),
            peer_id: peer.to_string(),
            p2p: request.p2p.clone(),
            http: request.http.clone(),
            zone: request.zone.clone(),
            up: true,
        };
        match self.change_map(MapCommand::AddNode(info.clone())) {
            Ok(()) => {}
            // A node joining again (a restart before it caught up).
            Err(e) if e.code == "duplicate_node" => {
                let known = self.map().nodes.get(&info.id).map(|n| n.peer_id.clone());
                if known.as_deref() != Some(info.peer_id.as_str()) {
                    return Err(NodeError::new(
                        "node_id_collision",
                        format!("another member has node id {}", show_id(info.id)),
                        false,
                    ));
                }
                self.change_map(MapCommand::UpdateNode(info))?;
            }
            Err(e) => return Err(e),
        }
        self.raft
            .read_index(METADATA_GROUP, RPC_TIMEOUT)
            .wait(RPC_TIMEOUT)?;
        let (map, _) = metadata::read_map(&meta)?;
        Ok(map
            .nodes
            .values()
            .map(|n| Member {
                peer_id: n.peer_id.clone(),
                p2p: n.p2p.clone(),
            })
            .collect())
    }

    /// Founding: learn who answers at each `--peers` address, then bootstrap
    /// group 0 with every founder as a voter.
    fn found(&self) -> Result<(), NodeError> {
        self.transport.set_founding(true);
        let mut voters = vec![self.id];
        for addr in &self.config.peers {
            let peer = loop {
                if self.stopping.load(Ordering::Acquire) {
                    return Err(NodeError::unavailable("stopped while founding"));
                }
                match self.transport.discover(addr, Duration::from_secs(5)) {
                    Ok(peer) => break peer,
                    Err(e) => tracing::info!(%addr, error = %e, "waiting for a founding peer"),
                }
            };
            let id = self.transport.allow_peer(peer)?;
            self.transport.set_peer_addresses(peer, &[addr])?;
            tracing::info!(%addr, %peer, node = %show_id(id), "found a founding peer");
            voters.push(id);
        }
        voters.sort_unstable();
        voters.dedup();
        self.raft.create_group(METADATA_GROUP, &voters)?;
        self.transport.set_founding(false);
        Ok(())
    }

    /// Takes a map read from group 0: members become reachable. A map older
    /// than the one held (a read that lost a race with a newer one) is
    /// ignored: the map never goes back.
    fn adopt(&self, map: ClusterMap) {
        if map.version < self.map().version {
            return;
        }
        for node in map.nodes.values() {
            if node.id == self.id {
                continue;
            }
            match node.peer_id.parse() {
                Ok(peer) => {
                    if let Err(e) = self.transport.allow_peer(peer) {
                        tracing::warn!(node = %show_id(node.id), error = %e, "member refused");
                        continue;
                    }
                    let _ = self.transport.set_peer_addresses(peer, &[&node.p2p]);
                }
                Err(e) => {
                    tracing::warn!(node = %show_id(node.id), error = %e, "bad PeerId in the map")
                }
            }
        }
        *self.map.write() = Arc::new(map);
    }

    fn self_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            peer_id: self.transport.peer_id().to_string(),
            p2p: self.p2p_address(),
            http: self.config.http.clone(),
            zone: self.config.zone.clone(),
            up: true,
        }
    }

    fn reconcile(&self) -> Result<(), NodeError> {
        let meta = self.raft.shard(METADATA_GROUP)?;
        let (map, _) = metadata::read_map(&meta)?;
        if map.version != self.map().version || map.nodes.len() != self.map().nodes.len() {
            self.adopt(map.clone());
        }
        let meta_status = self.raft.status(METADATA_GROUP)?;
        // Members become learners of the metadata group in `heal.rs`.
        if meta_status.is_leader {
            if !meta
                .collections()
                .iter()
                .any(|c| c == metadata::SYSTEM_COLLECTION)
            {
                self.propose_local(METADATA_GROUP, &metadata::create_system_collection())?;
            }
            if metadata::read_token(&meta)?.is_none() {
                let token = format!("{:032x}", rand::random::<u128>());
                let _ = self.propose_local(METADATA_GROUP, &metadata::write_token(&token));
            }
            if metadata::read_cluster_id(&meta)?.is_none() {
                let id: [u8; 32] = rand::random();
                let _ = self.propose_local(METADATA_GROUP, &metadata::write_cluster_id(&id));
            }
            if let Some(boot) = &self.config.bootstrap
                && !meta.collections().contains(&boot.collection)
            {
                let _ = self.propose_local(METADATA_GROUP, &boot.command);
            }
        }
        if map.removed.contains(&self.id) {
            // Removed (`cluster remove-node`): it stays out.
            return Ok(());
        }
        // This node's own entry: added once, updated when its addresses change.
        let me = self.self_info();
        match map.nodes.get(&self.id) {
            None => {
                self.try_change_map(MapCommand::AddNode(me))?;
                return Ok(());
            }
            Some(known)
                if known.p2p != me.p2p || known.http != me.http || known.zone != me.zone =>
            {
                self.try_change_map(MapCommand::UpdateNode(me))?;
                return Ok(());
            }
            Some(_) => {}
        }
        self.show_token(&meta)?;
        if !self.ready.load(Ordering::Acquire) {
            // Serve only once the map is as fresh as the metadata leader's:
            // a node back from a long absence must not act on the map it
            // had (replicas it held may have moved).
            self.refresh_map()?;
        }
        self.ready.store(true, Ordering::Release);
        self.host_groups(&map)?;
        self.remove_stale_replicas()?;
        self.lead_groups(&map)
    }

    /// Prints the join token once and keeps it in the data folder.
    fn show_token(&self, meta: &Shard) -> Result<(), NodeError> {
        if self.token_shown.load(Ordering::Acquire) || !self.announced.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(token) = metadata::read_token(meta)? else {
            return Ok(());
        };
        let path = self.config.data.join(TOKEN_FILE);
        if let Err(e) = write_private(&path, &token) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the join token");
        }
        println!("join token: {token}");
        self.token_shown.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates the raft groups of the shards placed on this node, and stops
    /// counting as hosted the groups the map no longer places here.
    fn host_groups(&self, map: &ClusterMap) -> Result<(), NodeError> {
        self.hosted.lock().retain(|group| {
            let kept = map.shards.get(group).is_some_and(|s| s.placed_on(self.id));
            if !kept {
                tracing::info!(group, "the replica here was moved away: no longer served");
            }
            kept
        });
        for shard in map.shards.values() {
            if !shard.placed_on(self.id) || self.hosted.lock().contains(&shard.group) {
                continue;
            }
            if shard.replicas.contains(&self.id) && shard.moves.iter().all(|m| m.to != self.id) {
                // Every founding replica bootstraps with the same voters.
                self.raft.create_group(shard.group, &shard.replicas)?;
            } else {
                // The target of a move: empty, until the leader sends a snapshot.
                self.raft.create_group(shard.group, &[])?;
            }
            self.hosted.lock().insert(shard.group);
        }
        Ok(())
    }

    /// Deletes the replicas here that the map no longer places on this node
    /// (moved away while the node was gone, or of a dropped collection): raft
    /// log and shard data. Decided on a map read fresh at a read index of
    /// group 0, never on the copy this node had: a group this node is still
    /// a replica or a move's target of is kept.
    fn remove_stale_replicas(&self) -> Result<(), NodeError> {
        let stale = |map: &ClusterMap, group: GroupId| {
            group != METADATA_GROUP
                && !self.hosts(group)
                && !map.shards.get(&group).is_some_and(|s| s.placed_on(self.id))
        };
        let map = self.map();
        let candidates: Vec<GroupId> = self
            .raft
            .groups()?
            .into_iter()
            .filter(|&g| stale(&map, g))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let map = self.refresh_map()?;
        for group in candidates {
            if !stale(&map, group) {
                continue;
            }
            self.raft.remove_group(group)?;
            tracing::info!(
                group,
                "removed the stale replica here (raft log and shard data): the map places it elsewhere"
            );
        }
        Ok(())
    }

    /// For the data groups this node leads: the shard has its collection,
    /// and the map's leader hint names this node.
    fn lead_groups(&self, map: &ClusterMap) -> Result<(), NodeError> {
        let hosted: Vec<GroupId> = self.hosted.lock().iter().copied().collect();
        for group in hosted {
            let Some(info) = map.shards.get(&group) else {
                continue;
            };
            let status = self.raft.status(group)?;
            if !status.is_leader {
                continue;
            }
            let shard = self.raft.shard(group)?;
            if !shard.collections().contains(&info.collection) {
                let create = Command {
                    ops: vec![Op::CreateCollection {
                        name: info.collection.clone(),
                    }],
                };
                let _ = self.propose_local(group, &create);
            }
            if info.leader != Some(self.id) {
                self.try_change_map(MapCommand::SetLeader {
                    group,
                    leader: Some(self.id),
                })?;
            }
        }
        Ok(())
    }

    // ---- proposals -------------------------------------------------------------

    /// Proposes on this node, which must lead the group.
    pub(super) fn propose_local(
        &self,
        group: GroupId,
        command: &Command,
    ) -> Result<Vec<OpOutcome>, NodeError> {
        match self.raft.propose(group, command).wait(RPC_TIMEOUT)? {
            ApplyOutcome::Applied(outcomes) => Ok(outcomes),
            ApplyOutcome::Rejected(e) => Err(e.into()),
            // Our own entry can only be below the applied index after a
            // snapshot replaced it; its fate is unknown.
            ApplyOutcome::AlreadyApplied => Err(NodeError::unavailable(
                "the write's outcome is unknown (a snapshot overtook it); read before retrying",
            )),
        }
    }

    /// This node's replica of group 0, after a read index when `fresh`: what
    /// was applied anywhere before the call is then in it.
    pub fn metadata(&self, fresh: bool) -> Result<Shard, NodeError> {
        if fresh {
            self.raft
                .read_index(METADATA_GROUP, RPC_TIMEOUT)
                .wait(RPC_TIMEOUT)?;
        }
        Ok(self.raft.shard(METADATA_GROUP)?)
    }

    /// The newest epoch this node's replica of group 0 has seen started (0
    /// before the first): receipts are served in it.
    pub fn current_epoch(&self) -> u64 {
        self.raft
            .shard(METADATA_GROUP)
            .ok()
            .and_then(|meta| super::anchors::newest(&meta, 1).ok())
            .and_then(|newest| newest.first().map(|(record, _)| record.epoch))
            .unwrap_or(0)
    }

    /// Reads the map again at a read index of the metadata group, so that
    /// what was changed anywhere before the call is seen.
    pub fn refresh_map(&self) -> Result<Arc<ClusterMap>, NodeError> {
        self.raft
            .read_index(METADATA_GROUP, RPC_TIMEOUT)
            .wait(RPC_TIMEOUT)?;
        let (map, _) = metadata::read_map(&self.raft.shard(METADATA_GROUP)?)?;
        self.adopt(map);
        Ok(self.map())
    }

    /// Changes the cluster map through the metadata group's leader; the
    /// change is in [`ClusterNode::map`] when this returns.
    pub fn change_map(&self, cmd: MapCommand) -> Result<(), NodeError> {
        self.change_map_within(&cmd, LEADER_WAIT)?;
        self.refresh_map().map(|_| ())
    }

    /// One attempt (the reconcile loop tries again on its next round, and
    /// must not sit in a retry loop while it is the one that would unblock it).
    pub(super) fn try_change_map(&self, cmd: MapCommand) -> Result<(), NodeError> {
        self.change_map_within(&cmd, Duration::ZERO)
    }

    fn change_map_within(&self, cmd: &MapCommand, wait: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + wait;
        loop {
            let status = self.raft.status(METADATA_GROUP)?;
            let attempt = if status.is_leader {
                self.change_map_here(cmd)
            } else if let Some(leader) = status.leader {
                let request = RpcRequest::ChangeMap {
                    command: cmd.encode(),
                };
                match self.call(leader, &request) {
                    Ok(RpcReply::MapChanged) => Ok(()),
                    Ok(RpcReply::NotLeader { .. }) => {
                        Err(NodeError::unavailable("the metadata leader moved"))
                    }
                    Ok(other) => Err(failed_reply(other)),
                    Err(e) => Err(e),
                }
            } else {
                Err(NodeError::unavailable("the metadata group has no leader"))
            };
            match attempt {
                Err(e) if e.retry && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.retry => {
                    return Err(NodeError::new(
                        "no_quorum",
                        format!("the cluster map cannot be changed now ({e}); retry later"),
                        true,
                    ));
                }
                other => return other,
            }
        }
    }

    /// On the metadata leader: read the map at a read index, apply the
    /// command to a copy, propose it guarded by the hash read.
    fn change_map_here(&self, cmd: &MapCommand) -> Result<(), NodeError> {
        self.raft
            .read_index(METADATA_GROUP, RPC_TIMEOUT)
            .wait(RPC_TIMEOUT)?;
        let (map, read) = metadata::read_map(&self.raft.shard(METADATA_GROUP)?)?;
        let mut next = map;
        match next.apply(cmd) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(NodeError::new(e.code(), e.to_string(), false)),
        }
        match self.propose_local(METADATA_GROUP, &metadata::write_map(read, &next)) {
            // Another change applied between the read and ours: read again.
            Err(e) if e.code == "write_conflict" => Err(NodeError::unavailable(e.message)),
            Err(e) if e.code == "collection_not_found" => Err(NodeError::unavailable(
                "the cluster map is not initialized yet",
            )),
            other => other.map(|_| ()),
        }
    }

    /// Proposes `command` to `group`'s leader, wherever it is. Retries only
    /// what certainly did not apply (no leader, a leader that moved).
    pub fn propose(&self, group: GroupId, command: &Command) -> Result<Vec<OpOutcome>, NodeError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut hint = None;
        let mut turn = 0usize;
        let mut encoded = None;
        loop {
            let target = self.target(group, hint.take(), &mut turn)?;
            let attempt = if target == self.id {
                local_attempt(
                    self.raft.propose(group, command).wait(RPC_TIMEOUT),
                    &mut hint,
                )
            } else {
                let request = forward_request(group, command, &mut encoded);
                remote_attempt(self.call(target, &request), target, &mut hint)
            };
            match next_attempt(group, attempt, deadline, hint) {
                Next::Done(result) => return result,
                Next::Retry(pause) => std::thread::sleep(pause),
            }
        }
    }

    /// [`ClusterNode::propose`] for async callers (the HTTP API's document
    /// writes, a forwarded proposal): no thread waits for the raft loop or
    /// for the leader's answer, so a write costs no hand-offs through the
    /// blocking pool. Same retries, errors and bounds.
    pub async fn propose_async(
        self: &Arc<Self>,
        group: GroupId,
        command: &Command,
    ) -> Result<Vec<OpOutcome>, NodeError> {
        if group != METADATA_GROUP && !self.map().shards.contains_key(&group) {
            // The caller's map may be newer than this node's: read it again
            // (a read index: blocking) before routing.
            let node = self.clone();
            tokio::task::spawn_blocking(move || node.refresh_map())
                .await
                .map_err(|e| NodeError::new("internal", e.to_string(), false))??;
        }
        let deadline = Instant::now() + LEADER_WAIT;
        let mut hint = None;
        let mut turn = 0usize;
        let mut encoded = None;
        // Until the replica here declines (NotLeader): then the RPC path.
        let mut through_raft = true;
        loop {
            let target = self.target_with(group, hint.take(), &mut turn, || Ok(self.map()))?;
            let via_raft = target != self.id && through_raft && self.proposes_through_raft(group);
            let attempt = if target == self.id || via_raft {
                // A follower replica here hands the entry to raft, which
                // forwards it to the leader: no call of our own.
                let pending = if via_raft {
                    self.raft.propose_anywhere(group, command)
                } else {
                    self.raft.propose(group, command)
                };
                let result = pending.wait_async(RPC_TIMEOUT).await;
                if via_raft && matches!(result, Err(ReplicationError::NotLeader { .. })) {
                    through_raft = false;
                }
                local_attempt(result, &mut hint)
            } else {
                let request = forward_request(group, command, &mut encoded);
                let reply = self.call_within_async(target, &request, RPC_TIMEOUT).await;
                remote_attempt(reply, target, &mut hint)
            };
            match next_attempt(group, attempt, deadline, hint) {
                Next::Done(result) => return result,
                Next::Retry(pause) => tokio::time::sleep(pause).await,
            }
        }
    }

    /// Which node to send a request for `group` to: a hint from the last
    /// answer, else the map's leader, else the replicas in turn.
    pub(super) fn target(
        &self,
        group: GroupId,
        hint: Option<NodeId>,
        turn: &mut usize,
    ) -> Result<NodeId, NodeError> {
        self.target_with(group, hint, turn, || self.map_with_group(group))
    }

    /// [`ClusterNode::target`] with the map from `map` (called only when
    /// the map is needed).
    fn target_with(
        &self,
        group: GroupId,
        hint: Option<NodeId>,
        turn: &mut usize,
        map: impl FnOnce() -> Result<Arc<ClusterMap>, NodeError>,
    ) -> Result<NodeId, NodeError> {
        if let Some(h) = hint {
            return Ok(h);
        }
        if group == METADATA_GROUP {
            // Group 0 is not in the map's shards: every member holds it.
            *turn += 1;
            return self
                .raft
                .leader(METADATA_GROUP)
                .ok_or_else(|| NodeError::unavailable("the metadata group has no leader"));
        }
        let map = map()?;
        let info = map.shards.get(&group).ok_or_else(|| group_gone(group))?;
        // The local replica's view of the leader, read without a round trip
        // through the raft loop.
        if let Some(leader) = self.raft.leader(group) {
            *turn += 1;
            return Ok(leader);
        }
        let pick = if *turn == 0 {
            info.leader.unwrap_or(info.replicas[0])
        } else {
            info.replicas[*turn % info.replicas.len()]
        };
        *turn += 1;
        Ok(pick)
    }

    /// The map, read again at a read index if it does not have `group`
    /// (the caller's map may be newer than the one this node last adopted).
    fn map_with_group(&self, group: GroupId) -> Result<Arc<ClusterMap>, NodeError> {
        let map = self.map();
        if map.shards.contains_key(&group) {
            return Ok(map);
        }
        self.refresh_map()
    }

    /// A read replica for `group`: this node's if it holds one, else the
    /// leader hint, else the replicas in turn.
    pub fn read_target(&self, group: GroupId, turn: usize) -> Result<NodeId, NodeError> {
        if turn == 0 && self.hosts(group) {
            return Ok(self.id);
        }
        let map = self.map_with_group(group)?;
        let info = map.shards.get(&group).ok_or_else(|| group_gone(group))?;
        Ok(match (turn, info.leader) {
            (0 | 1, Some(l)) => l,
            _ => info.replicas[turn % info.replicas.len()],
        })
    }

    /// Sends an RPC and decodes the reply.
    pub fn call(&self, to: NodeId, request: &RpcRequest) -> Result<RpcReply, NodeError> {
        self.call_within(to, request, RPC_TIMEOUT)
    }

    /// Sets the handler of extension requests (once; later calls are ignored).
    pub fn set_extension(&self, handler: ExtensionHandler) {
        let _ = self.extension.set(handler);
    }

    /// Sends an extension request to node `to` (this node included) and
    /// returns its reply, waiting at most `timeout`.
    pub fn call_extension(
        &self,
        to: NodeId,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, NodeError> {
        if to == self.id {
            return self.serve_extension(to, &request);
        }
        match self.call_within(to, &RpcRequest::Extension(request), timeout)? {
            RpcReply::Extension(reply) => Ok(reply),
            other => Err(failed_reply(other)),
        }
    }

    fn serve_extension(&self, from: NodeId, request: &[u8]) -> Result<Vec<u8>, NodeError> {
        match self.extension.get() {
            Some(handler) => handler(from, request),
            None => Err(NodeError::unavailable("this node is not serving that yet")),
        }
    }

    /// [`ClusterNode::call`] with its own bound on the wait.
    pub fn call_within(
        &self,
        to: NodeId,
        request: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcReply, NodeError> {
        call_reply(to, self.transport.call(to, rpc::encode(request), timeout))
    }

    /// [`ClusterNode::call_within`], async.
    pub async fn call_within_async(
        &self,
        to: NodeId,
        request: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcReply, NodeError> {
        let answer = self
            .transport
            .call_async(to, rpc::encode(request), timeout)
            .await;
        call_reply(to, answer)
    }

    // ---- serving other nodes -----------------------------------------------------

    /// Answers a request from another node. A forwarded proposal is awaited
    /// on the transport's runtime; everything else may block (disk, read
    /// indexes), so it runs on the blocking pool.
    async fn serve_rpc_async(self: Arc<Self>, from: NodeId, bytes: Vec<u8>) -> RpcReply {
        let request: RpcRequest = match rpc::decode(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(from = %show_id(from), error = %e, "malformed request");
                return RpcReply::error("malformed", e, false);
            }
        };
        if let RpcRequest::Propose { group, command } = &request {
            return self.serve_propose_async(*group, command).await;
        }
        tokio::task::spawn_blocking(move || self.serve_rpc(from, request))
            .await
            .unwrap_or_else(|e| {
                RpcReply::error("internal", format!("the handler failed: {e}"), false)
            })
    }

    fn serve_rpc(&self, from: NodeId, request: RpcRequest) -> RpcReply {
        match request {
            RpcRequest::Propose { group, command } => self.serve_propose(group, &command),
            RpcRequest::ChangeMap { command } => match MapCommand::decode(&command) {
                Err(e) => RpcReply::error("malformed", e.to_string(), false),
                Ok(cmd) => match self.raft.status(METADATA_GROUP) {
                    Ok(s) if !s.is_leader => RpcReply::NotLeader { leader: s.leader },
                    Err(e) => reply_error(e.into()),
                    Ok(_) => match self.change_map_here(&cmd) {
                        Ok(()) => RpcReply::MapChanged,
                        Err(e) => reply_error(e),
                    },
                },
            },
            RpcRequest::Partial {
                group,
                plan,
                linearizable,
            } => match super::store::serve_partial(self, group, &plan, linearizable) {
                Ok((partial, applied)) => RpcReply::Partial { partial, applied },
                Err(e) => reply_error(e),
            },
            RpcRequest::PartialProven {
                group,
                shard,
                plan,
                linearizable,
            } => {
                match super::store::serve_partial_proven(self, group, shard, &plan, linearizable) {
                    Ok((partial, proofs)) => RpcReply::PartialProven { partial, proofs },
                    Err(e) => reply_error(e),
                }
            }
            RpcRequest::Catalog { group, collection } if !self.hosts(group) => {
                tracing::debug!(group, %collection, "catalog asked of a replica not hosted here");
                reply_error(ReplicationError::GroupNotFound(group).into())
            }
            RpcRequest::Catalog { group, collection } => {
                match self
                    .raft
                    .shard(group)
                    .map_err(NodeError::from)
                    .and_then(|s| s.collection(&collection).map_err(NodeError::from))
                {
                    Ok(info) => RpcReply::Catalog(info.as_ref().clone()),
                    Err(e) => reply_error(e),
                }
            }
            RpcRequest::Status { groups } => RpcReply::Status(self.local_status(&groups)),
            RpcRequest::AnchorMark { group, epoch } => self.serve_mark(group, epoch),
            RpcRequest::Extension(request) => match self.serve_extension(from, &request) {
                Ok(reply) => RpcReply::Extension(reply),
                Err(e) => reply_error(e),
            },
            RpcRequest::TransferLeader { group, to } => match self.raft.balance_leader(group, to) {
                Ok(()) => RpcReply::LeaderTransferring,
                Err(ReplicationError::NotLeader { leader, .. }) => RpcReply::NotLeader { leader },
                Err(e) => reply_error(e.into()),
            },
        }
    }

    fn serve_propose(&self, group: GroupId, command: &[u8]) -> RpcReply {
        match decode_command(command) {
            Ok(command) => propose_reply(self.raft.propose(group, &command).wait(RPC_TIMEOUT)),
            Err(reply) => reply,
        }
    }

    /// [`ClusterNode::serve_propose`], async: the answer is awaited on the
    /// transport's runtime, with no thread of the blocking pool held.
    async fn serve_propose_async(&self, group: GroupId, command: &[u8]) -> RpcReply {
        match decode_command(command) {
            Ok(command) => {
                let pending = self.raft.propose(group, &command);
                propose_reply(pending.wait_async(RPC_TIMEOUT).await)
            }
            Err(reply) => reply,
        }
    }

    /// This node's replicas of `groups` (the others are left out).
    pub fn local_status(&self, groups: &[GroupId]) -> Vec<ReplicaStatus> {
        let transfers = self.raft.snapshot_transfers();
        let mut out = Vec::new();
        for &group in groups {
            if !self.hosts(group) {
                continue;
            }
            let Ok(shard) = self.raft.shard(group) else {
                continue;
            };
            let Ok((applied, root)) = shard.root_at_applied() else {
                continue;
            };
            // The configuration as this replica knows it (the leader's is
            // the one that counts for roles and moves).
            let (voters, learners) = self
                .raft
                .status(group)
                .map(|s| (s.voters, s.learners))
                .unwrap_or_default();
            let transfers = transfers
                .iter()
                .filter(|t| t.group == group)
                .map(|t| {
                    let incoming = t.direction == TransferDirection::In;
                    TransferProgress {
                        peer: if incoming { t.from } else { t.to },
                        incoming,
                        bytes: t.bytes_done,
                        total_bytes: t.bytes_total,
                    }
                })
                .collect();
            out.push(ReplicaStatus {
                group,
                applied,
                root,
                leader: self.raft.leader(group),
                voters,
                learners,
                transfers,
            });
        }
        out
    }

    /// Whether a replica of `group` is on this node.
    pub fn hosts(&self, group: GroupId) -> bool {
        group == METADATA_GROUP || self.hosted.lock().contains(&group)
    }

    /// Whether a write to `group` may be proposed through this node's
    /// replica when it is a follower (raft forwards the entry): a current
    /// voter replica of a shard with no move under way (a move hands
    /// leadership over, and a leader handing over refuses what raft
    /// forwards to it: those writes would only bounce until it is done).
    fn proposes_through_raft(&self, group: GroupId) -> bool {
        group != METADATA_GROUP
            && self.hosts(group)
            && self
                .map()
                .shards
                .get(&group)
                .is_some_and(|s| s.replicas.contains(&self.id) && s.moves.is_empty())
    }

    /// Whether this node's replica of `group` may answer a follower read:
    /// the map lists it as a voter replica, not a move's target.
    pub fn serves_follower_reads(&self, group: GroupId) -> bool {
        group == METADATA_GROUP
            || self.map().shards.get(&group).is_some_and(|s| {
                s.replicas.contains(&self.id) && s.moves.iter().all(|m| m.to != self.id)
            })
    }

    /// The groups this node hosts: the metadata group and its data groups.
    pub fn hosted_groups(&self) -> Vec<GroupId> {
        let mut groups = vec![METADATA_GROUP];
        groups.extend(self.hosted.lock().iter().copied());
        groups
    }

    /// Every replica's status, asking each node for its own, all at once
    /// and for [`STATUS_TIMEOUT`] at most; nodes the map marks down are not
    /// asked. A replica whose node did not answer is left out (the API
    /// shows it with `applied` 0 and an empty root).
    pub fn cluster_status(&self) -> HashMap<(NodeId, GroupId), ReplicaStatus> {
        let map = self.map();
        let down = |n: &NodeId| map.nodes.get(n).is_some_and(|info| !info.up);
        let mut by_node: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
        for info in map.shards.values() {
            for n in info.replicas.iter().chain(info.moves.iter().map(|m| &m.to)) {
                if *n == self.id || !down(n) {
                    by_node.entry(*n).or_default().push(info.group);
                }
            }
        }
        let mut out = HashMap::new();
        std::thread::scope(|scope| {
            let handles: Vec<_> = by_node
                .into_iter()
                .map(|(node, groups)| {
                    scope.spawn(move || {
                        let statuses = if node == self.id {
                            self.local_status(&groups)
                        } else {
                            let request = RpcRequest::Status { groups };
                            match self.call_within(node, &request, STATUS_TIMEOUT) {
                                Ok(RpcReply::Status(s)) => s,
                                _ => Vec::new(),
                            }
                        };
                        (node, statuses)
                    })
                })
                .collect();
            for h in handles {
                if let Ok((node, statuses)) = h.join() {
                    for s in statuses {
                        out.insert((node, s.group), s);
                    }
                }
            }
        });
        out
    }
}

/// The group is in no map: its collection was dropped.
/// Where a proposal attempt leaves [`ClusterNode::propose`].
enum Next {
    Done(Result<Vec<OpOutcome>, NodeError>),
    /// Try again after this pause.
    Retry(Duration),
}

/// The attempt's result, or another attempt when it certainly did not apply
/// and there is time left (at once when a leader was hinted).
fn next_attempt(
    group: GroupId,
    attempt: Result<Vec<OpOutcome>, NodeError>,
    deadline: Instant,
    hint: Option<NodeId>,
) -> Next {
    match attempt {
        Err(e) if e.retry && Instant::now() < deadline => Next::Retry(if hint.is_none() {
            Duration::from_millis(25)
        } else {
            Duration::ZERO
        }),
        Err(e) if e.retry => Next::Done(Err(no_quorum(group, &e))),
        other => Next::Done(other),
    }
}

/// A proposal on this node, as [`ClusterNode::propose`] sees it: a
/// leader elsewhere is a hint and a retry; a timeout is an unknown outcome.
fn local_attempt(
    result: Result<ApplyOutcome, ReplicationError>,
    hint: &mut Option<NodeId>,
) -> Result<Vec<OpOutcome>, NodeError> {
    match result {
        Err(ReplicationError::NotLeader { leader, .. }) => {
            *hint = leader;
            Err(NodeError::unavailable("not the leader"))
        }
        Err(e @ (ReplicationError::Timeout { .. } | ReplicationError::OutcomeUnknown { .. })) => {
            Err(outcome_unknown(&e))
        }
        Err(e) => Err(e.into()),
        Ok(ApplyOutcome::Applied(outcomes)) => Ok(outcomes),
        Ok(ApplyOutcome::Rejected(e)) => Err(e.into()),
        Ok(ApplyOutcome::AlreadyApplied) => Err(NodeError::new(
            "unavailable",
            "the write's outcome is unknown; read before retrying",
            false,
        )),
    }
}

/// A proposal forwarded to `target`, as [`ClusterNode::propose`] sees it.
fn remote_attempt(
    reply: Result<RpcReply, NodeError>,
    target: NodeId,
    hint: &mut Option<NodeId>,
) -> Result<Vec<OpOutcome>, NodeError> {
    match reply {
        Ok(RpcReply::Applied(outcomes)) => Ok(outcomes
            .into_iter()
            .map(|(id, affected, created)| OpOutcome {
                id,
                affected,
                created,
                mark: None,
            })
            .collect()),
        Ok(RpcReply::NotLeader { leader }) => {
            *hint = leader.filter(|&l| l != target);
            Err(NodeError::unavailable("not the leader"))
        }
        Ok(other) => Err(failed_reply(other)),
        // The request may have reached the leader: unknown.
        Err(e) if e.code == "unreachable" => Err(e),
        Err(e) => Err(outcome_unknown(&e)),
    }
}

/// A write that may or may not have applied: not retried here.
fn outcome_unknown(e: &dyn std::fmt::Display) -> NodeError {
    NodeError::new(
        "unavailable",
        format!("{e}: the write may or may not have applied; read before retrying"),
        false,
    )
}

/// The forwarded proposal, its command encoded once for all attempts.
fn forward_request(group: GroupId, command: &Command, encoded: &mut Option<Vec<u8>>) -> RpcRequest {
    RpcRequest::Propose {
        group,
        command: encoded.get_or_insert_with(|| command.encode()).clone(),
    }
}

/// A forwarded command, decoded within the engine's limit.
fn decode_command(bytes: &[u8]) -> Result<Command, RpcReply> {
    Command::decode(bytes, stratosdb_engine::limits::MAX_COMMAND_BYTES)
        .map_err(|e| reply_error(e.into()))
}

/// The answer to a forwarded proposal.
fn propose_reply(result: Result<ApplyOutcome, ReplicationError>) -> RpcReply {
    match result {
        Err(ReplicationError::NotLeader { leader, .. }) => RpcReply::NotLeader { leader },
        Err(e @ (ReplicationError::Timeout { .. } | ReplicationError::OutcomeUnknown { .. })) => {
            reply_error(outcome_unknown(&e))
        }
        Err(e) => reply_error(e.into()),
        Ok(ApplyOutcome::Applied(outcomes)) => RpcReply::Applied(
            outcomes
                .into_iter()
                .map(|o| (o.id, o.affected, o.created))
                .collect(),
        ),
        Ok(ApplyOutcome::Rejected(e)) => reply_error(e.into()),
        Ok(ApplyOutcome::AlreadyApplied) => RpcReply::error(
            "unavailable",
            "the write's outcome is unknown; read before retrying",
            false,
        ),
    }
}

/// An RPC's answer decoded, or the transport's error as a node error.
fn call_reply(
    to: NodeId,
    answer: Result<Vec<u8>, ReplicationError>,
) -> Result<RpcReply, NodeError> {
    let bytes = answer.map_err(|e| match e {
        // No stream was opened: the request went nowhere.
        ReplicationError::Unreachable { .. } | ReplicationError::UnknownNode(_) => {
            NodeError::new("unreachable", format!("node {}: {e}", show_id(to)), true)
        }
        // It may have been handled: whoever retries must know that.
        _ => NodeError::new("unavailable", format!("node {}: {e}", show_id(to)), false),
    })?;
    rpc::decode(&bytes).map_err(|e| NodeError::new("internal", e, false))
}

fn group_gone(group: GroupId) -> NodeError {
    NodeError::new(
        GROUP_GONE,
        format!("group {group} is not in the cluster map (its collection was dropped)"),
        false,
    )
}

/// A reply that is not the answer asked for: the remote error it carries,
/// or an internal error naming what came instead.
pub fn failed_reply(reply: RpcReply) -> NodeError {
    match reply {
        RpcReply::Error {
            code,
            message,
            retry,
        } => NodeError {
            code,
            message,
            retry,
        },
        other => NodeError::new("internal", format!("unexpected reply {other:?}"), false),
    }
}

pub fn reply_error(e: NodeError) -> RpcReply {
    RpcReply::Error {
        code: e.code,
        message: e.message,
        retry: e.retry,
    }
}

fn no_quorum(group: GroupId, last: &NodeError) -> NodeError {
    NodeError::new(
        "no_quorum",
        format!(
            "no leader of group {group} could be reached within {} s ({last}); retry later",
            LEADER_WAIT.as_secs()
        ),
        true,
    )
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
