//! One raft group on this node: its `RawNode`, its engine shard as the state
//! machine, the proposals waiting to apply and the reads waiting for an index.
//! The node's loop (`driver.rs`) calls these in the order raft-rs requires.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot,
};
use raft::{ProgressState, RawNode, ReadOnlyOption, Ready, SnapshotStatus, StateRole};
use stratosdb_engine::{ApplyOutcome, Shard};

use crate::config::NodeConfig;
use crate::counters::Counters;
use crate::driver::Outbox;
use crate::locality::Origins;
use crate::log::{LogStore, RaftLog, SnapshotExport};
use crate::read::{ReadQueue, ReadWaiter, Reply};
use crate::snapshot::{SnapshotDescriptor, SnapshotFiles, TransferDirection};
use crate::{GroupId, METADATA_GROUP, NodeId, ReplicationError, Result};

enum Waiter {
    Write(Reply<ApplyOutcome>),
    Conf(Reply<ConfState>),
}

struct Proposal {
    term: u64,
    waiter: Waiter,
}

/// A proposal this replica made as a follower: raft forwarded its entry to
/// the leader; it is answered when an entry with its context applies here.
struct Forwarded {
    reply: Reply<ApplyOutcome>,
    since: Instant,
}

/// How long a forwarded proposal is remembered: past this, its entry was
/// lost (a leader that dropped it, a message lost) or overtaken by a
/// snapshot, and its caller gave up long before.
const FORWARDED_EXPIRY: Duration = Duration::from_secs(60);

/// Committed entries a follower may have left to apply and still propose
/// through raft (its answer waits for its own apply).
const MAX_FORWARD_LAG: u64 = 1_000;

/// Entries a voter may lack and still be handed leadership to follow the
/// workload (raft sends them first, in one or two appends, dropping
/// proposals meanwhile).
const MAX_HAND_OVER_LAG: u64 = 1_000;

/// What a group looks like from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub is_leader: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// On the leader: each replica's matched index (how far its log is
    /// known to agree with the leader's); empty elsewhere.
    pub matched: Vec<(NodeId, u64)>,
}

/// The entries a group got committed in one loop iteration, waiting for the
/// node's one engine write for all groups.
#[derive(Default)]
pub(crate) struct Committed {
    entries: Vec<Entry>,
    /// Each conf change's result, by entry index.
    confs: HashMap<u64, Result<ConfState>>,
}

impl Committed {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The engine commands: every entry's (empty and conf-change entries as
    /// `noop`, so the applied index moves past them).
    pub fn commands<'a>(&'a self, noop: &'a [u8]) -> Vec<(u64, &'a [u8])> {
        self.entries
            .iter()
            .map(|e| match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => (e.index, &e.data[..]),
                _ => (e.index, noop),
            })
            .collect()
    }
}

pub(crate) struct Group {
    id: GroupId,
    raw: RawNode<LogStore>,
    shard: Shard,
    /// Proposals by log index, resolved when that index applies.
    proposals: BTreeMap<u64, Proposal>,
    /// Proposals forwarded by raft to the leader, by their entries' context
    /// (this run's nonce and a sequence number).
    forwarded: HashMap<Vec<u8>, Forwarded>,
    forward_nonce: u64,
    forward_seq: u64,
    pub reads: ReadQueue,
    applied: u64,
    last_leader: NodeId,
    counters: Arc<Counters>,
    files: Arc<SnapshotFiles>,
    /// Followers this node (as leader) sent a snapshot descriptor to, until
    /// raft's progress for them leaves the snapshot state.
    sending_snapshots: BTreeSet<NodeId>,
    /// As leader: which nodes the group's requests enter at.
    origins: Origins,
    /// The node the last window named to lead the group, and when.
    hand_over_to: Option<(NodeId, Instant)>,
}

fn logger(group: GroupId) -> slog::Logger {
    slog::Logger::root(tracing_slog::TracingSlogDrain, slog::o!("group" => group))
}

impl Group {
    /// Opens (or bootstraps, with `voters`) the group on its log and shard;
    /// raft resumes after what the shard has applied.
    pub fn open(
        config: &NodeConfig,
        raft_log: &Arc<RaftLog>,
        id: GroupId,
        shard: Shard,
        voters: &[NodeId],
        counters: Arc<Counters>,
        files: Arc<SnapshotFiles>,
    ) -> Result<Group> {
        let export = SnapshotExport {
            files: files.clone(),
            node: config.id,
            chunk_bytes: config.snapshot_chunk_bytes,
        };
        let mut log = LogStore::open(raft_log, id, shard.clone(), voters, export)?;
        let applied = shard.applied_index()?;
        // The shard may be behind what it applied before a crash (sled
        // flushes in the background): raft applies again from `applied + 1`.
        log.recover(applied)?;
        // A bootstrapped log starts at 1 with nothing to apply.
        let applied = applied.max(log.truncated_index());
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            max_size_per_msg: config.max_entries_bytes_per_message,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        let raw = RawNode::new(&raft_config, log, &logger(id))?;
        Ok(Group {
            id,
            raw,
            shard,
            proposals: BTreeMap::new(),
            forwarded: HashMap::new(),
            forward_nonce: forward_nonce(config.id, id),
            forward_seq: 0,
            reads: ReadQueue::default(),
            applied,
            last_leader: 0,
            counters,
            files,
            sending_snapshots: BTreeSet::new(),
            origins: Origins::new(Instant::now()),
            hand_over_to: None,
        })
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The highest index raft knows committed here.
    pub fn committed(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Asks raft to hand leadership to `to` (a voter that is caught up).
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        let conf = self.raw.store().conf_state();
        if !conf.voters.contains(&to) {
            return Err(ReplicationError::InvalidConfChange {
                group: self.id,
                reason: format!("node {to} is not a voter; leadership goes only to a voter"),
            });
        }
        self.raw.transfer_leader(to);
        Ok(())
    }

    fn leader_hint(&self) -> Option<NodeId> {
        Some(self.raw.raft.leader_id).filter(|&l| l != 0)
    }

    fn not_leader(&self) -> Option<ReplicationError> {
        (self.raw.raft.state != StateRole::Leader).then(|| ReplicationError::NotLeader {
            group: self.id,
            leader: self.leader_hint(),
        })
    }

    pub fn status(&self) -> GroupStatus {
        let store = self.raw.store();
        let conf = store.conf_state();
        GroupStatus {
            group: self.id,
            is_leader: self.raw.raft.state == StateRole::Leader,
            leader: self.leader_hint(),
            term: self.raw.raft.term,
            commit: self.raw.raft.raft_log.committed,
            applied: self.applied,
            first_index: store.truncated_index() + 1,
            last_index: self.raw.raft.raft_log.last_index(),
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            matched: if self.raw.raft.state == StateRole::Leader {
                self.raw
                    .raft
                    .prs()
                    .iter()
                    .map(|(&id, pr)| (id, pr.matched))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    pub fn step(&mut self, msg: Message) {
        // A follower's batch of reads: where they entered, for the leader.
        if msg.get_msg_type() == MessageType::MsgReadIndex
            && self.raw.raft.state == StateRole::Leader
        {
            self.origins.note(msg.from, 1);
        }
        // Stale or misdirected messages are normal in raft; they change nothing.
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(group = self.id, error = %e, "message not stepped");
        }
    }

    /// Steps entries another replica's raft forwarded to this one (the
    /// leader, or a follower that forwards them on). Returns the refusal to
    /// send back when raft dropped them (a leader handing leadership over,
    /// no leader known): nothing of them was appended anywhere, so their
    /// proposer may safely propose them again ([`Group::forward_refused`]).
    /// As leader, counts where the entries entered the cluster.
    pub fn step_forwarded(&mut self, msg: Message) -> Option<Message> {
        let from = msg.from;
        if self.raw.raft.state == StateRole::Leader {
            self.origins.note(from, msg.entries.len() as u64);
        }
        // Shared, not copied: the refusal needs only the contexts.
        let contexts: Vec<_> = msg.entries.iter().map(|e| e.context.clone()).collect();
        match self.raw.step(msg) {
            Ok(()) => None,
            Err(raft::Error::ProposalDropped) => {
                let mut refusal = Message::default();
                refusal.set_msg_type(MessageType::MsgPropose);
                refusal.reject = true;
                refusal.to = from;
                refusal.from = self.raw.raft.id;
                refusal.entries = contexts
                    .into_iter()
                    .map(|context| Entry {
                        context,
                        ..Default::default()
                    })
                    .collect();
                Some(refusal)
            }
            Err(e) => {
                tracing::debug!(group = self.id, error = %e, "forwarded entries not stepped");
                None
            }
        }
    }

    /// Another replica dropped entries this one forwarded (`refusal`, from
    /// [`Group::step_forwarded`]): their proposals are answered
    /// `ProposalDropped`, which the caller retries (nothing was applied).
    pub fn forward_refused(&mut self, refusal: &Message) {
        for e in &refusal.entries {
            if let Some(f) = self.forwarded.remove(&e.context[..]) {
                let _ = f
                    .reply
                    .send(Err(ReplicationError::ProposalDropped { group: self.id }));
            }
        }
    }

    /// As leader, once a window of requests closed: the node to hand the
    /// leadership to, because it sends most of them (`locality.rs`); asked
    /// of raft at once. Never for the metadata group, whose leadership the
    /// node's heal loop places.
    pub fn follow_workload(&mut self) -> Option<NodeId> {
        if self.id == METADATA_GROUP || self.raw.raft.state != StateRole::Leader {
            self.hand_over_to = None;
            return None;
        }
        let me = self.raw.raft.id;
        let now = Instant::now();
        if let Some(to) = self.origins.decide(me, now) {
            self.hand_over_to = Some((to, now));
        }
        // A node the window named is asked for until the next window closes:
        // it may lag behind now and then, with writes in flight.
        let (to, since) = self.hand_over_to?;
        if now.duration_since(since) >= crate::locality::WINDOW {
            self.hand_over_to = None;
            return None;
        }
        let conf = self.raw.store().conf_state();
        // Only to a voter whose log is (nearly) the leader's: raft drops
        // proposals until the hand-over completes, so it must be quick.
        let last = self.raw.raft.raft_log.last_index();
        let caught_up = self
            .raw
            .raft
            .prs()
            .get(to)
            .is_some_and(|pr| pr.matched + MAX_HAND_OVER_LAG >= last);
        if !conf.voters.contains(&to) || !caught_up {
            return None;
        }
        self.hand_over_to = None;
        self.origins.handed_over(now);
        self.raw.transfer_leader(to);
        self.counters.workload_hand_overs.fetch_add(1, Relaxed);
        tracing::info!(
            group = self.id,
            to,
            "leadership handed to the node sending most requests"
        );
        Some(to)
    }

    /// Whether this node, as leader, sends most of the group's requests itself.
    pub fn serves_own_load(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
            && self
                .origins
                .serves_own_load(self.raw.raft.id, Instant::now())
    }

    /// The group is being removed from this node (its collection was
    /// dropped): whatever waits on it is told the group is not here, so the
    /// caller reads the map again (and finds the collection gone) instead of
    /// taking the removal for a stopped node.
    pub fn fail_waiters_removed(&mut self) {
        let id = self.id;
        for (_, p) in std::mem::take(&mut self.proposals) {
            match p.waiter {
                Waiter::Write(r) => drop(r.send(Err(ReplicationError::GroupNotFound(id)))),
                Waiter::Conf(r) => drop(r.send(Err(ReplicationError::GroupNotFound(id)))),
            }
        }
        for (_, f) in std::mem::take(&mut self.forwarded) {
            drop(f.reply.send(Err(ReplicationError::GroupNotFound(id))));
        }
        self.reads.fail_all(|| ReplicationError::GroupNotFound(id));
    }

    /// Proposes a command; the reply comes when its entry applies.
    pub fn propose(&mut self, data: Vec<u8>, reply: Reply<ApplyOutcome>) {
        if let Some(e) = self.not_leader() {
            let _ = reply.send(Err(e));
            return;
        }
        let result = self.raw.propose(Vec::new(), data);
        self.counters.proposals.fetch_add(1, Relaxed);
        self.origins.note(self.raw.raft.id, 1);
        self.track(result, Waiter::Write(reply));
    }

    /// Proposes a command from any replica: the leader proposes it as
    /// [`Group::propose`] does; a follower hands it to raft, which forwards
    /// the entry to the leader with the raft messages already flowing there
    /// (no call of its own), and the reply comes when the entry applies on
    /// this replica, matched by the entry's context. Refused at once when no
    /// leader is known (`ProposalDropped`), and with `NotLeader` (nothing
    /// proposed: ask the leader) when the leader has been silent for two
    /// heartbeats or this replica is far behind. An entry the leader drops
    /// (it is handing leadership over) comes back refused and is answered
    /// `ProposalDropped` ([`Group::forward_refused`]); one lost on the way
    /// is never answered: the caller's wait times out, outcome unknown.
    pub fn propose_anywhere(&mut self, data: Vec<u8>, reply: Reply<ApplyOutcome>) {
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader {
            return self.propose(data, reply);
        }
        // A leader silent for two heartbeats may be gone (an entry sent to
        // it would be lost, its outcome unknown), and a replica far behind
        // would answer late: not proposed here, the caller asks the leader.
        if raft.state == StateRole::Follower
            && (raft.election_elapsed > 2 * raft.heartbeat_timeout()
                || raft.raft_log.committed.saturating_sub(self.applied) > MAX_FORWARD_LAG)
        {
            let _ = reply.send(Err(ReplicationError::NotLeader {
                group: self.id,
                leader: self.leader_hint(),
            }));
            return;
        }
        self.forward_seq += 1;
        let mut ctx = Vec::with_capacity(16);
        ctx.extend(self.forward_nonce.to_be_bytes());
        ctx.extend(self.forward_seq.to_be_bytes());
        match self.raw.propose(ctx.clone(), data) {
            Ok(()) => {
                self.counters.proposals.fetch_add(1, Relaxed);
                self.forwarded.insert(
                    ctx,
                    Forwarded {
                        reply,
                        since: Instant::now(),
                    },
                );
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(ReplicationError::ProposalDropped { group: self.id }));
            }
            Err(e) => drop(reply.send(Err(e.into()))),
        }
    }

    /// Proposes a membership change; refused at once while another is pending.
    pub fn propose_conf_change(&mut self, cc: ConfChangeV2, reply: Reply<ConfState>) {
        if let Some(e) = self.not_leader() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.raw.raft.has_pending_conf() {
            let _ = reply.send(Err(ReplicationError::ConfChangeInProgress {
                group: self.id,
            }));
            return;
        }
        let result = self.raw.propose_conf_change(Vec::new(), cc);
        self.track(result, Waiter::Conf(reply));
    }

    /// Remembers a proposal by the index and term its entry got.
    fn track(&mut self, result: raft::Result<()>, waiter: Waiter) {
        let fail = |waiter: Waiter, e: ReplicationError| match waiter {
            Waiter::Write(r) => drop(r.send(Err(e))),
            Waiter::Conf(r) => drop(r.send(Err(e))),
        };
        match result {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.proposals.insert(index, Proposal { term, waiter });
            }
            Err(raft::Error::ProposalDropped) => {
                fail(waiter, ReplicationError::ProposalDropped { group: self.id })
            }
            Err(e) => fail(waiter, e.into()),
        }
    }

    pub fn read(&mut self, waiter: ReadWaiter) {
        if self.raw.raft.state == StateRole::Leader {
            self.origins.note(self.raw.raft.id, 1);
        }
        self.reads.push(waiter);
    }

    /// Sends the batched read index request, if one is due.
    pub fn issue_reads(&mut self, new_ctx: impl FnOnce() -> Vec<u8>) {
        if let Some(ctx) = self.reads.take_request(new_ctx) {
            self.raw.read_index(ctx);
        }
    }

    pub fn tick(&mut self, config: &NodeConfig, new_ctx: impl FnOnce() -> Vec<u8>) {
        self.raw.tick();
        if !self.forwarded.is_empty() {
            let group = self.id;
            self.forwarded.retain(|_, f| {
                let live = f.since.elapsed() < FORWARDED_EXPIRY;
                if !live {
                    let _ = f.reply.answer(Err(ReplicationError::Timeout { group }));
                }
                live
            });
        }
        self.check_snapshot_transfers(config.snapshot_stall_timeout * 2);
        if let Some(ctx) = self
            .reads
            .on_tick(self.id, config.read_retry_ticks, new_ctx)
        {
            self.raw.read_index(ctx);
        }
        // The leader leaves a joint configuration by itself, but not one it
        // inherited from a leader that stepped down: leave it explicitly.
        let joint = !self.raw.store().conf_state().voters_outgoing.is_empty();
        if joint && self.not_leader().is_none() && !self.raw.raft.has_pending_conf() {
            let _ = self
                .raw
                .propose_conf_change(Vec::new(), ConfChangeV2::default());
        }
    }

    /// Ready, part one (before the node's synced log write): sends what may
    /// go at once, installs a snapshot, stages entries and hard state.
    pub fn begin_ready(&mut self, out: &mut Outbox) -> Result<Option<Ready>> {
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss()
            && ss.leader_id != self.last_leader
        {
            if ss.leader_id == self.raw.raft.id {
                self.origins.restart(Instant::now());
            }
            self.reads.on_leader_change();
            self.last_leader = ss.leader_id;
            self.counters.leader_changes.fetch_add(1, Relaxed);
            self.counters.leaders.write().insert(self.id, ss.leader_id);
        }
        self.add_messages(out, rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot())?;
        }
        self.raw.mut_store().persist(rd.entries(), rd.hs())?;
        for rs in rd.take_read_states() {
            self.reads.on_read_state(&rs.request_ctx, rs.index);
        }
        Ok(Some(rd))
    }

    /// Ready, part two (after the synced log write): messages that needed the
    /// log on disk, `advance` and the light ready. Returns the committed
    /// entries (conf changes already applied to raft): the node applies every
    /// group's to the engine in one write, then hands them to [`Group::finish_apply`].
    pub fn finish_ready(&mut self, mut rd: Ready, out: &mut Outbox) -> Result<Committed> {
        self.add_messages(out, rd.take_persisted_messages());
        let mut committed = Committed::default();
        self.take_committed(rd.take_committed_entries(), &mut committed);
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.add_messages(out, light.take_messages());
        self.take_committed(light.take_committed_entries(), &mut committed);
        Ok(committed)
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The engine applied `committed` (`outcomes`: one per entry): answers
    /// the proposals, tells raft, and serves the reads waiting for the index.
    pub fn finish_apply(&mut self, committed: Committed, outcomes: Vec<ApplyOutcome>) {
        let Committed { entries, mut confs } = committed;
        if let Some(last) = entries.last() {
            self.applied = last.index;
        }
        for (e, outcome) in entries.iter().zip(outcomes) {
            self.resolve(e, outcome, &mut confs);
        }
        self.raw.advance_apply();
        self.reads.on_applied(self.applied);
    }

    /// Queues raft's messages; a snapshot descriptor going out starts a
    /// transfer this node serves.
    fn add_messages(&mut self, out: &mut Outbox, msgs: Vec<Message>) {
        for m in &msgs {
            if m.get_msg_type() != MessageType::MsgSnapshot {
                continue;
            }
            match SnapshotDescriptor::decode(&m.get_snapshot().data, u64::MAX) {
                Ok(d) => {
                    self.sending_snapshots.insert(m.to);
                    self.counters.transfers.begin(
                        d.key,
                        d.sender,
                        m.to,
                        TransferDirection::Out,
                        d.chunks.len() as u32,
                        d.total_bytes(),
                        0,
                        0,
                    );
                }
                Err(e) => {
                    tracing::warn!(group = self.id, error = %e, "own snapshot descriptor unreadable")
                }
            }
        }
        out.add(self.id, msgs);
    }

    /// Ends the transfers whose follower left raft's snapshot state (it
    /// installed the snapshot, or raft gave up), and tells raft about the
    /// ones no chunk was fetched of for `stall`: raft then probes the
    /// follower again and sends a new snapshot if it still needs one.
    fn check_snapshot_transfers(&mut self, stall: Duration) {
        if self.sending_snapshots.is_empty() {
            return;
        }
        let leader = self.not_leader().is_none();
        let transfers = &self.counters.transfers;
        let mut ended = Vec::new();
        for &to in &self.sending_snapshots {
            let progress = self.raw.raft.prs().get(to);
            let waiting = progress.is_some_and(|pr| pr.state == ProgressState::Snapshot);
            if !leader || !waiting {
                let installed = progress.is_some_and(|pr| pr.matched >= pr.pending_snapshot);
                let outcome = if !leader {
                    "leadership lost"
                } else if installed {
                    "installed"
                } else {
                    "aborted"
                };
                transfers.end(self.id, to, TransferDirection::Out, outcome);
                ended.push((to, false));
            } else if transfers
                .outgoing(self.id, to)
                .is_none_or(|(_, idle)| idle >= stall)
            {
                transfers.end(self.id, to, TransferDirection::Out, "stalled");
                ended.push((to, true));
            }
        }
        for (to, failed) in ended {
            self.sending_snapshots.remove(&to);
            if failed {
                tracing::info!(
                    group = self.id,
                    to,
                    "snapshot transfer stalled; reported to raft"
                );
                self.raw.report_snapshot(to, SnapshotStatus::Failure);
            }
        }
    }

    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata().clone();
        let descriptor = SnapshotDescriptor::decode(&snap.data, self.files.max_bytes())?;
        if descriptor.key.index != meta.index || descriptor.key.term != meta.term {
            return Err(ReplicationError::SnapshotCorrupt(format!(
                "descriptor of index {} term {}, raft metadata of index {} term {}",
                descriptor.key.index, descriptor.key.term, meta.index, meta.term
            )));
        }
        let store = self.raw.mut_store();
        // Pending (synced), imported (the engine's import flushes sled), then
        // the log restarts after it (synced).
        store.begin_snapshot(&meta)?;
        self.files.install_incoming(&descriptor, &self.shard)?;
        store.apply_snapshot(&meta)?;
        self.applied = meta.index;
        self.counters.snapshots_installed.fetch_add(1, Relaxed);
        // Entries under the snapshot were never seen here: their fate is unknown.
        let rest = self.proposals.split_off(&(meta.index + 1));
        for (index, p) in std::mem::replace(&mut self.proposals, rest) {
            let e = ReplicationError::OutcomeUnknown {
                group: self.id,
                index,
            };
            match p.waiter {
                Waiter::Write(r) => drop(r.send(Err(e))),
                Waiter::Conf(r) => drop(r.send(Err(e))),
            }
        }
        // A forwarded entry under the snapshot will not apply here: unknown.
        for (_, f) in std::mem::take(&mut self.forwarded) {
            let e = ReplicationError::OutcomeUnknown {
                group: self.id,
                index: meta.index,
            };
            drop(f.reply.send(Err(e)));
        }
        tracing::info!(group = self.id, index = meta.index, "installed a snapshot");
        Ok(())
    }

    /// Takes committed entries to apply; conf changes go to raft now.
    fn take_committed(&mut self, entries: Vec<Entry>, committed: &mut Committed) {
        for e in &entries {
            if matches!(
                e.get_entry_type(),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2
            ) {
                committed.confs.insert(e.index, self.apply_conf_change(e));
            }
        }
        committed.entries.extend(entries);
    }

    /// Applies a committed conf change to raft and records the new
    /// configuration (durably, before the shard batch that carries its
    /// index). An invalid one fails the same way on every replica. One the
    /// recorded configuration already includes (applied again after a
    /// restart, the shard having lost its unflushed applies) is not applied
    /// twice: raft started from that configuration.
    fn apply_conf_change(&mut self, e: &Entry) -> Result<ConfState> {
        if e.index <= self.raw.store().conf_index() {
            return Ok(self.raw.store().conf_state().clone());
        }
        let cc = if e.get_entry_type() == EntryType::EntryConfChange {
            let v1 = ConfChange::parse_from_bytes(&e.data)
                .map_err(|err| ReplicationError::Malformed(err.to_string()))?;
            v1_to_v2(v1)
        } else {
            ConfChangeV2::parse_from_bytes(&e.data)
                .map_err(|err| ReplicationError::Malformed(err.to_string()))?
        };
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.raw.mut_store().set_conf_state(cs.clone(), e.index)?;
                tracing::info!(group = self.id, index = e.index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                Ok(cs)
            }
            Err(err) => Err(ReplicationError::InvalidConfChange {
                group: self.id,
                reason: err.to_string(),
            }),
        }
    }

    /// Answers the proposal at this entry's index, if this node made one.
    fn resolve(
        &mut self,
        e: &Entry,
        outcome: ApplyOutcome,
        confs: &mut HashMap<u64, Result<ConfState>>,
    ) {
        if !e.context.is_empty()
            && let Some(f) = self.forwarded.remove(e.context.as_ref())
        {
            drop(f.reply.send(Ok(outcome)));
            return;
        }
        // Anything older was lost under a snapshot or a new leader's log.
        let newer = self.proposals.split_off(&e.index);
        let older = std::mem::replace(&mut self.proposals, newer);
        for (index, p) in older {
            let err = ReplicationError::OutcomeUnknown {
                group: self.id,
                index,
            };
            match p.waiter {
                Waiter::Write(r) => drop(r.send(Err(err))),
                Waiter::Conf(r) => drop(r.send(Err(err))),
            }
        }
        let Some(p) = self.proposals.remove(&e.index) else {
            return;
        };
        let overwritten = ReplicationError::Overwritten {
            group: self.id,
            index: e.index,
            term: p.term,
        };
        match p.waiter {
            Waiter::Write(r) if p.term != e.term => drop(r.send(Err(overwritten))),
            Waiter::Write(r) => drop(r.send(Ok(outcome))),
            Waiter::Conf(r) if p.term != e.term => drop(r.send(Err(overwritten))),
            Waiter::Conf(r) => {
                // raft turns a conf change it cannot take into an empty entry.
                let result =
                    confs
                        .remove(&e.index)
                        .unwrap_or(Err(ReplicationError::ConfChangeInProgress {
                            group: self.id,
                        }));
                drop(r.send(result));
            }
        }
    }

    /// Whether enough applied entries piled up in the log to compact it.
    pub fn compaction_due(&self, config: &NodeConfig) -> bool {
        self.compact_target(self.applied, config)
            >= self.raw.store().truncated_index() + config.compact_after
    }

    /// Stages dropping log entries up to `durable_applied` less `keep` recent
    /// ones (for followers slightly behind). The caller made the shard
    /// durable at `durable_applied`, and writes the staged batch.
    pub fn compact(&mut self, durable_applied: u64, config: &NodeConfig) -> Result<()> {
        let target = self.compact_target(durable_applied, config);
        if target <= self.raw.store().truncated_index() {
            return Ok(());
        }
        self.raw.mut_store().compact(target)
    }

    /// Where compaction may cut the log: `applied` less `keep`, but, on a
    /// leader, not past the index of a snapshot a follower is receiving (nor
    /// what a live follower has not matched yet): the follower needs the
    /// entries after it once it installed it, or it needs another snapshot
    /// (with writes going on, a copy and an install of a large shard take
    /// longer than it takes to write `compact_after` entries). The log is
    /// held back by at most `compact_after * HOLD_FACTOR` entries.
    fn compact_target(&self, applied: u64, config: &NodeConfig) -> u64 {
        const HOLD_FACTOR: u64 = 10;
        let target = applied.saturating_sub(config.compact_keep);
        if self.raw.raft.state != StateRole::Leader {
            return target;
        }
        let me = self.raw.raft.id;
        let needed = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|&(&id, _)| id != me)
            .filter_map(|(_, pr)| match pr.state {
                ProgressState::Snapshot => Some(pr.pending_snapshot),
                _ if pr.recent_active => Some(pr.matched),
                _ => None,
            })
            .min();
        let floor = applied.saturating_sub(config.compact_after.saturating_mul(HOLD_FACTOR));
        match needed {
            Some(n) => target.min(n.max(floor)),
            None => target,
        }
    }
}

/// What makes this run's forwarded contexts differ from any earlier run's
/// (whose entries may still apply after a restart): the clock at opening,
/// mixed with the node and group.
fn forward_nonce(node: NodeId, group: GroupId) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ node.rotate_left(17) ^ u64::from(group).rotate_left(43)
}

fn v1_to_v2(v1: ConfChange) -> ConfChangeV2 {
    let mut cc = ConfChangeV2::default();
    cc.mut_changes().push(ConfChangeSingle {
        change_type: v1.get_change_type(),
        node_id: v1.node_id,
        ..Default::default()
    });
    cc
}
