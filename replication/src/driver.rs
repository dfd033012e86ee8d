//! The node's loop thread: every group on the node is driven from here.
//! Per iteration: take what arrived (messages, proposals, reads, membership
//! changes), tick when due, send batched read index requests, then handle
//! the Ready of every group: messages that may go at once; entries and hard
//! states of all groups staged, then ONE raft-engine write with one sync;
//! then messages that needed the sync, the applies (to sled, not flushed
//! here), `advance` and the light ready. Nothing steps or proposes between
//! `ready()` and `advance`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChangeV2, ConfState, Message, MessageType};
use stratosdb_engine::{ApplyOutcome, Command, DefaultStore, Engine, Entries, KvStore as _, Shard};

use crate::codec::GroupMessage;
use crate::config::NodeConfig;
use crate::counters::Counters;
use crate::group::{Committed, Group, GroupStatus};
use crate::log::RaftLog;
use crate::read::{ReadWaiter, Reply};
use crate::snapshot::{Fetcher, SnapshotDescriptor, SnapshotFiles, SnapshotKey};
use crate::transport::Transport;
use crate::{GroupId, NodeId, ReplicationError, Result};

/// What the node's handle and its transport ask of the loop.
pub(crate) enum Request {
    Raft(Vec<GroupMessage>),
    CreateGroup {
        group: GroupId,
        voters: Vec<NodeId>,
        reply: Reply<()>,
    },
    Propose {
        group: GroupId,
        data: Vec<u8>,
        /// A follower may propose (raft forwards the entry to the leader).
        anywhere: bool,
        reply: Reply<ApplyOutcome>,
    },
    Read {
        group: GroupId,
        waiter: ReadWaiter,
    },
    ConfChange {
        group: GroupId,
        cc: ConfChangeV2,
        reply: Reply<ConfState>,
    },
    Status {
        group: GroupId,
        reply: Reply<GroupStatus>,
    },
    TransferLeader {
        group: GroupId,
        to: NodeId,
        /// For balance only: refused while the leader's own node sends
        /// most of the group's requests.
        balance: bool,
        reply: Reply<()>,
    },
    RemoveGroup {
        group: GroupId,
        reply: Reply<bool>,
    },
    Groups {
        reply: Reply<Vec<GroupId>>,
    },
    Stop,
}

/// Messages of one iteration, batched per destination node.
#[derive(Default)]
pub(crate) struct Outbox {
    by_node: HashMap<NodeId, Vec<GroupMessage>>,
}

impl Outbox {
    pub fn add(&mut self, group: GroupId, msgs: Vec<Message>) {
        for msg in msgs {
            self.by_node
                .entry(msg.to)
                .or_default()
                .push(GroupMessage { group, msg });
        }
    }

    fn send(&mut self, transport: &dyn Transport) {
        for (to, batch) in self.by_node.drain() {
            transport.send(to, batch);
        }
    }
}

/// Requests handled per iteration at most, so ticks and readies keep pace.
const MAX_REQUESTS_PER_ITERATION: usize = 4096;

pub(crate) struct Driver {
    pub config: NodeConfig,
    /// The engine's database (the shards): flushed before a compaction.
    pub store: DefaultStore,
    pub engine: Engine,
    /// Every group's raft log.
    pub log: Arc<RaftLog>,
    pub transport: Arc<dyn Transport>,
    pub groups: BTreeMap<GroupId, Group>,
    pub rx: mpsc::Receiver<Request>,
    /// Makes read index contexts unique on this node.
    pub read_seq: u64,
    pub counters: Arc<Counters>,
    /// The node's snapshot files (exports served, snapshots received).
    pub files: Arc<SnapshotFiles>,
    /// Fetches the chunks of snapshots sent to this node.
    pub fetcher: Fetcher,
    pub last_sweep: Instant,
}

impl Driver {
    pub fn run(mut self) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let now = Instant::now();
            // Held-back reads go out when the bound passes, tick or not.
            let wake = self
                .reads_held_back(now)
                .map_or(next_tick, |t| t.min(next_tick));
            let wait = wake.saturating_duration_since(now);
            let mut requests = Vec::new();
            match self.rx.recv_timeout(wait) {
                Ok(r) => requests.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            while requests.len() < MAX_REQUESTS_PER_ITERATION {
                match self.rx.try_recv() {
                    Ok(r) => requests.push(r),
                    Err(_) => break,
                }
            }
            for r in requests {
                if matches!(r, Request::Stop) {
                    return;
                }
                self.handle(r);
            }
            if Instant::now() >= next_tick {
                self.tick();
                if let Err(e) = self.compact() {
                    tracing::error!(node = self.config.id, error = %e, "log compaction failed");
                    return;
                }
                self.sweep_snapshots();
                next_tick += self.config.tick;
                // After a stall, tick again from now rather than catching up.
                next_tick = next_tick.max(Instant::now());
            }
            self.issue_reads();
            if let Err(e) = self.process_ready() {
                // A storage fault: this node cannot go on safely.
                tracing::error!(node = self.config.id, error = %e, "replication loop stopped");
                return;
            }
        }
    }

    fn new_ctx(id: NodeId, seq: &mut u64) -> Vec<u8> {
        *seq += 1;
        let mut ctx = id.to_be_bytes().to_vec();
        ctx.extend(seq.to_be_bytes());
        ctx
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Raft(batch) => {
                for GroupMessage { group, msg } in batch {
                    self.deliver(group, msg);
                }
            }
            Request::CreateGroup {
                group,
                voters,
                reply,
            } => {
                let _ = reply.send(self.create_group(group, &voters));
            }
            Request::Propose {
                group,
                data,
                anywhere,
                reply,
            } => match self.groups.get_mut(&group) {
                Some(g) if anywhere => g.propose_anywhere(data, reply),
                Some(g) => g.propose(data, reply),
                None => drop(reply.send(Err(ReplicationError::GroupNotFound(group)))),
            },
            Request::Read { group, waiter } => match self.groups.get_mut(&group) {
                Some(g) => g.read(waiter),
                None => drop(
                    waiter
                        .reply
                        .send(Err(ReplicationError::GroupNotFound(group))),
                ),
            },
            Request::ConfChange { group, cc, reply } => match self.groups.get_mut(&group) {
                Some(g) => g.propose_conf_change(cc, reply),
                None => drop(reply.send(Err(ReplicationError::GroupNotFound(group)))),
            },
            Request::Status { group, reply } => {
                let status = self
                    .groups
                    .get(&group)
                    .map(Group::status)
                    .ok_or(ReplicationError::GroupNotFound(group));
                let _ = reply.send(status);
            }
            Request::TransferLeader {
                group,
                to,
                balance,
                reply,
            } => {
                let result = match self.groups.get_mut(&group) {
                    Some(g) if balance && g.serves_own_load() => {
                        Err(ReplicationError::LeaderServesOwnLoad { group })
                    }
                    Some(g) => g.transfer_leader(to),
                    None => Err(ReplicationError::GroupNotFound(group)),
                };
                let _ = reply.send(result);
            }
            Request::RemoveGroup { group, reply } => {
                let _ = reply.send(self.remove_group(group));
            }
            Request::Groups { reply } => {
                let _ = reply.send(Ok(self.groups.keys().copied().collect()));
            }
            Request::Stop => {}
        }
    }

    /// Steps a message that arrived, except a snapshot whose chunks are not
    /// here yet (or are being imported beside the shard): that goes to the
    /// fetcher, which queues it again once they are (raft installs only from
    /// complete, verified chunks).
    fn deliver(&mut self, group: GroupId, msg: Message) {
        let Some(g) = self.groups.get_mut(&group) else {
            tracing::debug!(group, "message for a group not on this node");
            return;
        };
        match msg.get_msg_type() {
            MessageType::MsgSnapshot => {}
            // A replica that dropped entries this one forwarded says so.
            MessageType::MsgPropose if msg.reject => return g.forward_refused(&msg),
            MessageType::MsgPropose => {
                if let Some(refusal) = g.step_forwarded(msg) {
                    let to = refusal.to;
                    self.transport.send(
                        to,
                        vec![GroupMessage {
                            group,
                            msg: refusal,
                        }],
                    );
                }
                return;
            }
            _ => return g.step(msg),
        }
        let meta = msg.get_snapshot().get_metadata();
        let key = SnapshotKey {
            group,
            index: meta.index,
            term: meta.term,
        };
        if meta.index <= g.committed() {
            // Nothing to install: raft answers with what this replica has,
            // and chunks fetched for it are not needed any more.
            self.files.remove_incoming(&key);
            g.step(msg);
            return;
        }
        let descriptor = match SnapshotDescriptor::decode(
            &msg.get_snapshot().data,
            self.files.max_bytes(),
        ) {
            Ok(d) if d.key == key => d,
            Ok(d) => {
                tracing::warn!(group, ?key, described = ?d.key, "snapshot descriptor does not match its message");
                return;
            }
            Err(e) => {
                tracing::warn!(group, from = msg.from, error = %e, "snapshot descriptor refused");
                return;
            }
        };
        // Complete, and not being prepared by the fetcher (which queues its
        // own message once done): install. Otherwise the fetcher takes it
        // (a duplicate of its job is dropped).
        if self.files.is_complete(&key) && !self.fetcher.is_working_on(&key) {
            g.step(msg);
        } else {
            self.fetcher.submit(descriptor, GroupMessage { group, msg });
        }
    }

    /// Removes expired snapshot files, about ten times per expiry period.
    fn sweep_snapshots(&mut self) {
        let every = (self.config.snapshot_expiry / 10).max(Duration::from_secs(1));
        if self.last_sweep.elapsed() >= every {
            self.last_sweep = Instant::now();
            self.files.sweep();
        }
    }

    pub fn create_group(&mut self, group: GroupId, voters: &[NodeId]) -> Result<()> {
        if self.groups.contains_key(&group) {
            return Ok(());
        }
        let shard = self.engine.shard(group)?;
        let g = Group::open(
            &self.config,
            &self.log,
            group,
            shard,
            voters,
            self.counters.clone(),
            self.files.clone(),
        )?;
        self.groups.insert(group, g);
        Ok(())
    }

    /// Closes the group here and drops its raft log (synced) and snapshot
    /// files; the caller deletes the shard's data after. Proposals and reads
    /// still waiting on it are answered `GroupNotFound`. Returns whether it
    /// was open.
    fn remove_group(&mut self, group: GroupId) -> Result<bool> {
        let removed = self.groups.remove(&group);
        let was_open = removed.is_some();
        if let Some(mut g) = removed {
            g.fail_waiters_removed();
        }
        self.log.clean(group)?;
        self.fetcher.cancel(group);
        self.files.remove_group(group);
        self.counters.leaders.write().remove(&group);
        Ok(was_open)
    }

    fn tick(&mut self) {
        let id = self.config.id;
        for g in self.groups.values_mut() {
            g.tick(&self.config, || Self::new_ctx(id, &mut self.read_seq));
            if self.config.follow_workload {
                g.follow_workload();
            }
        }
    }

    /// Compacts the logs that have enough applied entries. The shards'
    /// applies must be durable first (they are not flushed per iteration):
    /// one sled flush covers them all, then one log write drops the entries.
    fn compact(&mut self) -> Result<()> {
        let due: Vec<(GroupId, u64)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.compaction_due(&self.config))
            .map(|(&id, g)| (id, g.applied()))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        self.store.flush()?;
        for (id, applied) in due {
            if let Some(g) = self.groups.get_mut(&id) {
                g.compact(applied, &self.config)?;
            }
        }
        self.log.write(true)?;
        self.log.purge()
    }

    /// Sends the groups' read index requests together (`read.rs`): none while
    /// another group's request is out and holds them back.
    fn issue_reads(&mut self) {
        if self.reads_held_back(Instant::now()).is_some() {
            return;
        }
        let id = self.config.id;
        for g in self.groups.values_mut() {
            g.issue_reads(|| Self::new_ctx(id, &mut self.read_seq));
        }
    }

    /// Until when reads that wait are held back, if they are.
    fn reads_held_back(&self, now: Instant) -> Option<Instant> {
        if !self.groups.values().any(|g| g.reads.has_waiting()) {
            return None;
        }
        self.groups
            .values()
            .filter_map(|g| g.reads.holds_back(now))
            .max()
    }

    fn process_ready(&mut self) -> Result<()> {
        let mut out = Outbox::default();
        let mut readies = Vec::new();
        for (&id, g) in &mut self.groups {
            if let Some(rd) = g.begin_ready(&mut out)? {
                readies.push((id, rd));
            }
        }
        out.send(&*self.transport);
        if readies.is_empty() {
            return Ok(());
        }
        // One write, one sync for every group (group commit). Without
        // anything to sync it still writes what is staged (a commit index).
        let sync = readies.iter().any(|(_, rd)| rd.must_sync());
        self.log.write(sync)?;
        let mut committed = Vec::with_capacity(readies.len());
        for (id, rd) in readies {
            if let Some(g) = self.groups.get_mut(&id) {
                committed.push((id, g.finish_ready(rd, &mut out)?));
            }
        }
        // Nothing here waits for the applies (acks of persisted entries, the
        // light ready's appends and commits).
        out.send(&*self.transport);
        self.apply_committed(committed)
    }

    /// Applies every group's committed entries in ONE engine write (a
    /// storage batch costs about the same for one shard or all), then
    /// answers each group's proposals.
    fn apply_committed(&mut self, committed: Vec<(GroupId, Committed)>) -> Result<()> {
        let noop = Command { ops: Vec::new() }.encode();
        let mut outcomes = {
            let commands: Vec<_> = committed.iter().map(|(_, c)| c.commands(&noop)).collect();
            let work: Vec<(&Shard, &Entries)> = committed
                .iter()
                .zip(&commands)
                .filter(|(_, c)| !c.is_empty())
                .filter_map(|((id, _), c)| Some((self.groups.get(id)?.shard(), c.as_slice())))
                .collect();
            Shard::apply_batches(&work)?.into_iter()
        };
        for (id, c) in committed {
            let Some(g) = self.groups.get_mut(&id) else {
                continue;
            };
            let applied = if c.is_empty() {
                Vec::new()
            } else {
                outcomes.next().unwrap_or_default()
            };
            g.finish_apply(c, applied);
        }
        Ok(())
    }
}
