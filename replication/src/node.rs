//! The handle on a replication node: many raft groups, one loop thread
//! (`driver.rs`). Calls queue a request for the loop and return a
//! [`Pending`] answer; dropping the node stops the loop and waits for it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, mpsc};

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};
use stratosdb_engine::{ApplyOutcome, Command, DefaultStore, Engine, KvStore as _, Shard};

use crate::codec::GroupMessage;
use crate::config::NodeConfig;
use crate::counters::{CounterValues, Counters};
use crate::driver::{Driver, Request};
use crate::group::GroupStatus;
use crate::read::ReadWaiter;
use crate::reply;
use crate::snapshot::{
    ChunkReadLimit, FetchContext, Fetcher, SnapshotFiles, SnapshotTransfer, TransferDirection,
};
use crate::transport::{ChunkServer, Inbox, Transport};
use crate::{GroupId, NodeId, ReplicationError, Result, log};

/// An answer that comes later (when an entry applies, a read index is
/// reached, ...). Wait for it with a timeout, blocking ([`Pending::wait`])
/// or async ([`Pending::wait_async`]).
pub struct Pending<T> {
    group: GroupId,
    answer: reply::Answer<T>,
}

impl<T> Pending<T> {
    fn new(group: GroupId) -> (reply::Reply<T>, Self) {
        let (tx, answer) = reply::channel();
        (tx, Pending { group, answer })
    }

    /// Waits up to `timeout`; `Timeout` says only that the answer did not
    /// come in time (a proposal may still apply later: wait again to know).
    pub fn wait(&self, timeout: Duration) -> Result<T> {
        reply::closed_is_stopped(self.answer.wait(timeout))
            .unwrap_or(Err(ReplicationError::Timeout { group: self.group }))
    }

    /// [`Pending::wait`] for async callers: awaits the answer without
    /// blocking a thread (call it inside a tokio runtime with time enabled).
    pub async fn wait_async(&self, timeout: Duration) -> Result<T> {
        reply::closed_is_stopped(self.answer.wait_async(timeout).await)
            .unwrap_or(Err(ReplicationError::Timeout { group: self.group }))
    }
}

/// One membership step for [`RaftNode::change_membership`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Adds a non-voting replica that receives the log (or a snapshot).
    AddLearner(NodeId),
    /// Makes a learner (or a new node) a voter.
    AddVoter(NodeId),
    /// Removes a voter or learner.
    Remove(NodeId),
}

/// A node hosting raft groups.
///
/// ```
/// use std::time::Duration;
/// use stratosdb_engine::{ApplyOutcome, Command, Op};
/// use stratosdb_replication::{MemHub, NodeConfig, RaftNode};
///
/// let dir = tempfile::tempdir().unwrap();
/// let hub = MemHub::new();
/// let mut config = NodeConfig::new(1);
/// config.tick = Duration::from_millis(10);
/// let node = RaftNode::open(dir.path(), config, hub.transport(1)).unwrap();
/// hub.register(1, node.inbox());
/// node.create_group(7, &[1]).unwrap(); // a one-replica group
/// let create = Command { ops: vec![Op::CreateCollection { name: "users".into() }] };
/// let outcome = loop {
///     match node.propose(7, &create).wait(Duration::from_secs(5)) {
///         Err(e) if e.is_retryable() => std::thread::sleep(Duration::from_millis(10)), // electing
///         other => break other.unwrap(),
///     }
/// };
/// assert!(matches!(outcome, ApplyOutcome::Applied(_)));
/// node.read_index(7, Duration::from_secs(5)).wait(Duration::from_secs(5)).unwrap();
/// assert_eq!(node.shard(7).unwrap().collections(), ["users"]);
/// ```
pub struct RaftNode {
    id: NodeId,
    engine: Engine,
    tx: mpsc::Sender<Request>,
    thread: Option<JoinHandle<()>>,
    max_message_bytes: usize,
    counters: Arc<Counters>,
}

impl RaftNode {
    /// Opens (or creates) the node's data in `dir`: a sled database there
    /// holds the engine's shards, and raft-engine in `dir/raft-log` (see
    /// [`log::LOG_DIR`]) every group's raft log. Groups whose logs it holds
    /// are reopened. A folder with a raft log in sled (before the move to
    /// raft-engine) is refused: there is no migration.
    pub fn open(
        dir: impl AsRef<Path>,
        config: NodeConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<RaftNode> {
        let dir = dir.as_ref();
        // sled first: it makes (or checks) the data folder the log goes in.
        let store = DefaultStore::open(dir, &config.engine)?;
        let legacy: Vec<GroupId> = store
            .tree_names()?
            .iter()
            .filter_map(|name| log::legacy_group_of_tree(name))
            .collect();
        if !legacy.is_empty() {
            return Err(ReplicationError::LegacyLog {
                dir: dir.display().to_string(),
                groups: legacy,
            });
        }
        let raft_log = log::RaftLog::open(&dir.join(log::LOG_DIR))?;
        let files =
            SnapshotFiles::open(dir, config.snapshot_expiry, config.snapshot_max_disk_bytes)?;
        RaftNode::start(config, store, raft_log, files, transport)
    }

    fn start(
        config: NodeConfig,
        store: DefaultStore,
        raft_log: Arc<log::RaftLog>,
        files: Arc<SnapshotFiles>,
        transport: Arc<dyn Transport>,
    ) -> Result<RaftNode> {
        let engine = Engine::with_store(store.clone(), config.engine.clone())?;
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel();
        let limit = Arc::new(ChunkReadLimit::new(
            config.snapshot_serve_concurrency,
            config.snapshot_stall_timeout / 4,
        ));
        transport.serve_snapshots(chunk_server(files.clone(), counters.clone(), limit));
        let requeue = tx.clone();
        let fetcher = Fetcher::start(
            config.snapshot_fetchers,
            FetchContext {
                node: config.id,
                files: files.clone(),
                transport: transport.clone(),
                counters: counters.clone(),
                stall_timeout: config.snapshot_stall_timeout,
                window: config.snapshot_fetch_window,
                shard_of: {
                    let engine = engine.clone();
                    Box::new(move |g| {
                        let ids = engine.shard_ids().ok()?;
                        ids.contains(&g).then(|| engine.shard(g).ok()).flatten()
                    })
                },
                requeue: Box::new(move |m: GroupMessage| {
                    requeue
                        .send(Request::Raft(vec![m]))
                        .map_err(|_| ReplicationError::Stopped)
                }),
            },
        )?;
        let mut driver = Driver {
            config: config.clone(),
            store,
            engine: engine.clone(),
            log: raft_log.clone(),
            transport,
            groups: BTreeMap::new(),
            rx,
            read_seq: 0,
            counters: counters.clone(),
            files,
            fetcher,
            last_sweep: Instant::now(),
        };
        let groups = raft_log.groups()?;
        for &group in &groups {
            driver.create_group(group, &[])?;
        }
        // A shard without a log: a removal (`remove_group`) the node did not
        // finish before it stopped, or a group whose log never got written.
        for shard in engine.shard_ids()? {
            if !groups.contains(&shard) {
                tracing::info!(group = shard, "removing a shard left without its raft log");
                engine.remove_shard(shard)?;
            }
        }
        let thread = std::thread::Builder::new()
            .name(format!("raft-node-{}", config.id))
            .spawn(move || driver.run())
            .map_err(|e| ReplicationError::Corruption(format!("cannot start a thread: {e}")))?;
        Ok(RaftNode {
            id: config.id,
            engine,
            tx,
            thread: Some(thread),
            max_message_bytes: config.max_message_bytes,
            counters,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The engine under this node's groups (read the shards here).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The shard that is the state machine of `group`.
    pub fn shard(&self, group: GroupId) -> Result<Shard> {
        Ok(self.engine.shard(group)?)
    }

    /// Where a transport delivers the batches that arrive for this node.
    pub fn inbox(&self) -> Inbox {
        let tx = self.tx.clone();
        Inbox::new(self.max_message_bytes, move |batch| {
            tx.send(Request::Raft(batch))
                .map_err(|_| ReplicationError::Stopped)
        })
    }

    fn request<T>(
        &self,
        group: GroupId,
        make: impl FnOnce(reply::Reply<T>) -> Request,
    ) -> Pending<T> {
        let (reply, pending) = Pending::new(group);
        // If the loop has stopped, the dropped reply reads as `Stopped`.
        let _ = self.tx.send(make(reply));
        pending
    }

    /// Hosts `group` here. With `voters`, a new group is bootstrapped with
    /// that membership (every founding replica passes the same list); with
    /// none, the replica waits to be added and brought up by a snapshot.
    pub fn create_group(&self, group: GroupId, voters: &[NodeId]) -> Result<()> {
        let voters = voters.to_vec();
        self.request(group, |reply| Request::CreateGroup {
            group,
            voters,
            reply,
        })
        .wait(Duration::from_secs(30))
    }

    /// Proposes a command to the group's leader (this node); the answer comes
    /// when its entry applies. Fails at once with `NotLeader` elsewhere.
    pub fn propose(&self, group: GroupId, command: &Command) -> Pending<ApplyOutcome> {
        self.propose_with(group, command, false)
    }

    /// Proposes a command through this node's replica of the group, leader
    /// or follower: a follower's raft forwards the entry to the leader along
    /// with its other raft messages (no call of its own), and the answer
    /// comes when the entry applies on this replica. Fails at once with
    /// `ProposalDropped` when the replica knows no leader, and with
    /// `NotLeader` (nothing proposed: ask the leader) when the leader has
    /// been silent for two heartbeats or the replica is far behind. An entry
    /// the leader drops (while it hands leadership over) comes back refused:
    /// `ProposalDropped`, nothing applied. One lost on the way gets no
    /// answer: the wait times out and the outcome is unknown.
    pub fn propose_anywhere(&self, group: GroupId, command: &Command) -> Pending<ApplyOutcome> {
        self.propose_with(group, command, true)
    }

    fn propose_with(
        &self,
        group: GroupId,
        command: &Command,
        anywhere: bool,
    ) -> Pending<ApplyOutcome> {
        let data = command.encode();
        self.request(group, |reply| Request::Propose {
            group,
            data,
            anywhere,
            reply,
        })
    }

    /// A linearizable read barrier: answers with a read index once this
    /// replica has applied it; reads of the shard after that see every write
    /// acknowledged before the call.
    pub fn read_index(&self, group: GroupId, timeout: Duration) -> Pending<u64> {
        let deadline = Instant::now() + timeout;
        self.request(group, |reply| Request::Read {
            group,
            waiter: ReadWaiter { reply, deadline },
        })
    }

    /// Proposes a membership change (one step: a simple change; several: a
    /// joint change the leader leaves by itself). The answer is the new
    /// configuration once applied, or an error if raft dropped it.
    pub fn change_membership(
        &self,
        group: GroupId,
        changes: &[MembershipChange],
    ) -> Pending<ConfState> {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for change in changes {
            let (change_type, node_id) = match *change {
                MembershipChange::AddLearner(n) => (ConfChangeType::AddLearnerNode, n),
                MembershipChange::AddVoter(n) => (ConfChangeType::AddNode, n),
                MembershipChange::Remove(n) => (ConfChangeType::RemoveNode, n),
            };
            cc.mut_changes().push(ConfChangeSingle {
                change_type,
                node_id,
                ..Default::default()
            });
        }
        self.request(group, |reply| Request::ConfChange { group, cc, reply })
    }

    /// Leaves a joint configuration (an empty `ConfChangeV2`).
    pub fn leave_joint(&self, group: GroupId) -> Pending<ConfState> {
        let cc = ConfChangeV2::default();
        self.request(group, |reply| Request::ConfChange { group, cc, reply })
    }

    /// Asks the group's leader (this node) to hand leadership to voter `to`.
    /// Returns once raft took the request; the transfer itself completes
    /// when `to` has caught up and won its election (watch [`RaftNode::leader`]).
    pub fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<()> {
        self.request_transfer(group, to, false)
    }

    /// [`RaftNode::transfer_leader`] to balance leaders across nodes:
    /// refused with `LeaderServesOwnLoad` while this node itself sends most
    /// of the group's requests (`locality.rs`).
    pub fn balance_leader(&self, group: GroupId, to: NodeId) -> Result<()> {
        self.request_transfer(group, to, true)
    }

    fn request_transfer(&self, group: GroupId, to: NodeId, balance: bool) -> Result<()> {
        self.request(group, |reply| Request::TransferLeader {
            group,
            to,
            balance,
            reply,
        })
        .wait(Duration::from_secs(30))
    }

    /// Deletes this node's replica of `group`: the raft group stops here,
    /// its raft log is dropped (durably), then its shard's data is deleted
    /// (in batches, on the calling thread). Returns whether the group was
    /// here. For a replica its group no longer has as a member: the caller
    /// decides that (a stale replica on a node that came back after its
    /// replicas were moved, or a dropped collection's). A crash between the
    /// two steps is finished when the node opens again (a shard without a
    /// log is removed).
    pub fn remove_group(&self, group: GroupId) -> Result<bool> {
        let was_open = self
            .request(group, |reply| Request::RemoveGroup { group, reply })
            .wait(Duration::from_secs(30))?;
        self.engine.remove_shard(group)?;
        Ok(was_open)
    }

    /// The groups open on this node, ascending.
    pub fn groups(&self) -> Result<Vec<GroupId>> {
        self.request(0, |reply| Request::Groups { reply })
            .wait(Duration::from_secs(30))
    }

    /// The snapshot transfers in progress on this node, both ways, read
    /// without a round trip through the loop.
    pub fn snapshot_transfers(&self) -> Vec<SnapshotTransfer> {
        self.counters.transfers.list()
    }

    /// Totals since the node started (proposals, leader changes, snapshot bytes).
    pub fn counters(&self) -> CounterValues {
        self.counters.values()
    }

    /// The group's leader as this node's replica last saw it, without a
    /// round trip through the loop: `None` if the group is not here or knows
    /// no leader.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.counters
            .leaders
            .read()
            .get(&group)
            .copied()
            .filter(|&l| l != 0)
    }

    /// The group as this node sees it.
    pub fn status(&self, group: GroupId) -> Result<GroupStatus> {
        self.request(group, |reply| Request::Status { group, reply })
            .wait(Duration::from_secs(30))
    }
}

/// Serves this node's exported snapshot chunks, counting and reporting
/// them, at most `limit` reads at once.
fn chunk_server(
    files: Arc<SnapshotFiles>,
    counters: Arc<Counters>,
    limit: Arc<ChunkReadLimit>,
) -> ChunkServer {
    Arc::new(move |by, key, n| {
        let turn = limit.turn().ok_or(ReplicationError::SnapshotBusy)?;
        let (chunk, bytes_through) = files.read_outgoing_chunk(key, n)?;
        drop(turn);
        counters
            .snapshot_bytes_sent
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        counters
            .transfers
            .chunk_done(key, by, TransferDirection::Out, n + 1, bytes_through);
        Ok(chunk)
    })
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
