//! Self-healing: what keeps every shard at its replica count while nodes
//! die, come back, join and leave. It runs in its own thread beside the
//! reconcile loop, because its probes wait on the network.
//!
//! - The metadata leader probes every member about once a second and marks
//!   a node down after `--down-after` without an answer (and up again when
//!   it answers). A new leader starts its clocks afresh.
//! - The metadata leader keeps group 0 at 3 voters (5 with 5 or more live
//!   members): caught-up live learners are promoted, down voters demoted.
//! - The metadata leader records replica moves in the map
//!   ([`placement::plan_moves`]): off nodes that are down or draining, and
//!   onto nodes that hold fewer replicas than the others.
//! - Each data group's leader carries out the moves of its group, one raft
//!   step at a time: add the target as a learner, promote it once its log
//!   matches the leader's commit, remove the source, then tell the map.
//!   Voters never drop below a quorum: the new voter comes before the removal.
//! - Once no replica moves, the metadata leader balances the shard leaders
//!   ([`placement::plan_leader_moves`], from the map's leader hints): a node
//!   leading more than `ceil(groups / live nodes) + 1` shards is asked to
//!   hand one over (raft's leadership transfer) to a replica on a node
//!   leading fewer than `ceil(groups / live nodes)`; a few per round, and a
//!   shard handed over is left alone while its new leader settles. A leader
//!   whose own node sends most of its shard's requests refuses (it took or
//!   keeps the shard to follow the workload: `stratosdb_replication::locality`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stratosdb_replication::placement::{self, MoveLimits};
use stratosdb_replication::{
    ClusterMap, GroupId, GroupStatus, METADATA_GROUP, MapCommand, MembershipChange, NodeId,
};

use super::node::{ClusterNode, NodeError, show_id};
use super::rpc::{RpcReply, RpcRequest};
use crate::api::RemoveNodeReply;

/// The code of a removal refused for want of nodes (409).
pub const NOT_ENOUGH_NODES: &str = "not_enough_nodes";

/// How often the metadata leader probes the members and plans moves.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);
/// How often group leaders step their moves.
const STEP_EVERY: Duration = Duration::from_millis(200);
/// How long a membership change may take to apply before the next round
/// looks again.
const CONF_WAIT: Duration = Duration::from_secs(3);
/// Leadership hand-overs the metadata leader asks for per round.
const LEADER_MOVES_PER_ROUND: usize = 2;
/// How long a shard handed over is left alone: its new leader puts its
/// hint in the map meanwhile (or raft gave the transfer up).
const LEADER_SETTLE: Duration = Duration::from_secs(5);

/// The metadata leader's clocks: when each member last answered.
#[derive(Default)]
pub struct Liveness {
    /// The metadata term these clocks started in (0: none yet).
    term: u64,
    /// When this node's clocks started (its leadership of that term).
    since: Option<Instant>,
    last_seen: HashMap<NodeId, Instant>,
    last_probe: Option<Instant>,
    /// Shards whose leadership this node asked to hand over, and when.
    leader_moves: HashMap<GroupId, Instant>,
}

/// Group 0's voter count for `live` live members: 3, or 5 with 5 or more.
pub fn metadata_voters(live: usize) -> usize {
    if live >= 5 { 5 } else { live.min(3) }
}

impl ClusterNode {
    /// The heal thread's loop (see the module's documentation).
    pub(super) fn heal_loop(&self) {
        while !self.is_stopping() {
            if self.readiness().is_ok()
                && let Err(e) = self.heal_round()
            {
                tracing::debug!(error = %e, "heal round");
            }
            std::thread::sleep(STEP_EVERY);
        }
    }

    fn heal_round(&self) -> Result<(), NodeError> {
        let map = self.map();
        if map.removed.contains(&self.id) {
            return Ok(());
        }
        self.step_moves(&map);
        let meta = self.raft.status(METADATA_GROUP)?;
        if !meta.is_leader {
            *self.liveness.lock() = Liveness::default();
            return Ok(());
        }
        let due = {
            let mut clocks = self.liveness.lock();
            let due = clocks
                .last_probe
                .is_none_or(|at| at.elapsed() >= PROBE_EVERY);
            if due {
                clocks.last_probe = Some(Instant::now());
            }
            due
        };
        if !due {
            return Ok(());
        }
        self.probe_members(&map, meta.term);
        let map = self.map();
        self.shape_metadata_group(&map, &meta);
        self.start_moves(&map);
        self.balance_leaders(&map);
        self.finish_removals(&map, &meta);
        Ok(())
    }

    /// Asks the nodes leading too many shards to hand some over (see the
    /// module's documentation); only while no replica moves.
    fn balance_leaders(&self, map: &ClusterMap) {
        if map.shards.values().any(|s| !s.moves.is_empty()) {
            return;
        }
        let settling: Vec<GroupId> = {
            let mut clocks = self.liveness.lock();
            clocks
                .leader_moves
                .retain(|_, at| at.elapsed() < LEADER_SETTLE);
            clocks.leader_moves.keys().copied().collect()
        };
        let planned =
            placement::plan_leader_moves(map, LEADER_MOVES_PER_ROUND, |g| settling.contains(&g));
        for m in planned {
            let asked = if m.from == self.id {
                self.raft
                    .balance_leader(m.group, m.to)
                    .map_err(NodeError::from)
            } else {
                let request = RpcRequest::TransferLeader {
                    group: m.group,
                    to: m.to,
                };
                match self.call(m.from, &request) {
                    Ok(RpcReply::LeaderTransferring) => Ok(()),
                    Ok(other) => Err(super::node::failed_reply(other)),
                    Err(e) => Err(e),
                }
            };
            match asked {
                Ok(()) => tracing::info!(
                    group = m.group,
                    from = %show_id(m.from),
                    to = %show_id(m.to),
                    "leadership handed over for balance"
                ),
                // A leader serving its own node's requests keeps the group.
                Err(e) => {
                    tracing::debug!(group = m.group, error = %e, "cannot hand over leadership")
                }
            }
            // Asked either way: left alone while it settles.
            self.liveness
                .lock()
                .leader_moves
                .insert(m.group, Instant::now());
        }
    }

    /// `cluster remove-node`: refuses when the live nodes left could not
    /// hold every collection's replica count; else marks the node draining
    /// (its replicas then move away and the metadata leader removes it from
    /// the map). Asked again, says how far the removal got.
    pub fn remove_node(&self, text: &str) -> Result<RemoveNodeReply, NodeError> {
        let id = u64::from_str_radix(text.trim(), 16).map_err(|_| {
            NodeError::new(
                "invalid_node_id",
                format!("{text:?} is not a node id (16 hex digits, as `cluster status` shows)"),
                false,
            )
        })?;
        let map = self.refresh_map()?;
        if map.removed.contains(&id) {
            return Ok(RemoveNodeReply {
                node: show_id(id),
                state: "removed".into(),
                replicas: 0,
            });
        }
        if !map.nodes.contains_key(&id) {
            return Err(NodeError::new(
                "unknown_node",
                format!("node {} is not in the cluster", show_id(id)),
                false,
            ));
        }
        if !map.draining.contains(&id) {
            let left = map
                .nodes
                .keys()
                .filter(|&&n| n != id && map.is_live(n))
                .count();
            let needed = map
                .collections
                .values()
                .map(|c| c.replicas)
                .max()
                .unwrap_or(1);
            if left < needed.max(1) as usize {
                return Err(NodeError::new(
                    NOT_ENOUGH_NODES,
                    format!(
                        "removing node {} would leave {left} live node(s), but a collection keeps {needed} replicas; add a node first",
                        show_id(id)
                    ),
                    false,
                ));
            }
            self.change_map(MapCommand::DrainNode { id })?;
            tracing::warn!(node = %show_id(id), "node draining for removal");
        }
        let map = self.map();
        let replicas = map.shards.values().filter(|s| s.placed_on(id)).count();
        Ok(RemoveNodeReply {
            node: show_id(id),
            state: "draining".into(),
            replicas: replicas as u64,
        })
    }

    /// On the metadata leader: drained nodes leave the map; a leader that
    /// is itself draining hands group 0 over to a live voter.
    fn finish_removals(&self, map: &ClusterMap, meta: &GroupStatus) {
        for &id in &map.draining {
            if id != self.id && !map.shards.values().any(|s| s.placed_on(id)) {
                match self.try_change_map(MapCommand::RemoveNode { id }) {
                    Ok(()) => tracing::warn!(node = %show_id(id), "node removed from the cluster"),
                    Err(e) => tracing::debug!(error = %e, "cannot remove a node"),
                }
            }
        }
        if map.draining.contains(&self.id)
            && let Some(&to) = meta
                .voters
                .iter()
                .find(|&&n| n != self.id && map.is_live(n) && caught_up(meta, n))
            && let Err(e) = self.raft.transfer_leader(METADATA_GROUP, to)
        {
            tracing::debug!(error = %e, "cannot hand over the metadata group");
        }
    }

    /// Probes every member (in parallel, bounded) and marks the ones whose
    /// answers stopped for longer than `--down-after` down, and the ones
    /// that answer again up.
    fn probe_members(&self, map: &ClusterMap, term: u64) {
        let others: Vec<NodeId> = map
            .nodes
            .keys()
            .copied()
            .filter(|&n| n != self.id)
            .collect();
        let answered: Vec<(NodeId, bool)> = std::thread::scope(|scope| {
            let probes: Vec<_> = others
                .iter()
                .map(|&n| scope.spawn(move || (n, self.ping(n))))
                .collect();
            probes.into_iter().filter_map(|p| p.join().ok()).collect()
        });
        let now = Instant::now();
        let mut changes = Vec::new();
        {
            let mut clocks = self.liveness.lock();
            if clocks.term != term || clocks.since.is_none() {
                // New leadership: nobody is judged on what an older leader saw.
                *clocks = Liveness {
                    term,
                    since: Some(now),
                    last_seen: HashMap::new(),
                    last_probe: clocks.last_probe,
                    leader_moves: HashMap::new(),
                };
            }
            let since = clocks.since.unwrap_or(now);
            for (node, ok) in answered {
                let up = map.nodes.get(&node).is_some_and(|n| n.up);
                if ok {
                    clocks.last_seen.insert(node, now);
                    if !up {
                        changes.push((node, true));
                    }
                } else {
                    let last = clocks.last_seen.get(&node).copied().unwrap_or(since);
                    if up && now.duration_since(last) > self.down_after() {
                        changes.push((node, false));
                    }
                }
            }
        }
        for (id, up) in changes {
            match self.try_change_map(MapCommand::MarkNode { id, up }) {
                Ok(()) if up => tracing::info!(node = %show_id(id), "node answers again: up"),
                Ok(()) => tracing::warn!(
                    node = %show_id(id),
                    after = ?self.down_after(),
                    "node does not answer: down"
                ),
                Err(e) => tracing::debug!(node = %show_id(id), error = %e, "cannot mark node"),
            }
        }
    }

    /// Whether `node` answers a cheap request in time.
    fn ping(&self, node: NodeId) -> bool {
        let request = super::rpc::encode(&RpcRequest::Status { groups: Vec::new() });
        match self.transport.call(node, request, PROBE_TIMEOUT) {
            Ok(bytes) => matches!(
                super::rpc::decode::<RpcReply>(&bytes),
                Ok(RpcReply::Status(_))
            ),
            Err(_) => false,
        }
    }

    /// Group 0's membership: every member a learner at least; live caught-up
    /// learners promoted up to [`metadata_voters`]; down voters demoted once
    /// there are enough live ones; removed nodes dropped once caught up
    /// (so they learn that they were removed). One change per round.
    fn shape_metadata_group(&self, map: &ClusterMap, meta: &GroupStatus) {
        let live: Vec<NodeId> = map
            .nodes
            .keys()
            .copied()
            .filter(|&n| map.is_live(n))
            .collect();
        let target = metadata_voters(live.len());
        let live_voters = meta.voters.iter().filter(|v| live.contains(v)).count();
        let caught_up = |n: NodeId| caught_up(meta, n);
        let change = if let Some(&n) = map
            .nodes
            .keys()
            .find(|n| !meta.voters.contains(n) && !meta.learners.contains(n))
        {
            Some(MembershipChange::AddLearner(n))
        } else if live_voters < target
            && let Some(&n) = meta
                .learners
                .iter()
                .find(|&&n| live.contains(&n) && caught_up(n))
        {
            Some(MembershipChange::AddVoter(n))
        } else if live_voters >= target
            && meta.voters.len() > target
            && let Some(&n) = meta
                .voters
                .iter()
                .find(|&&n| n != self.id && !live.contains(&n))
        {
            // A down (or draining) voter steps back to learner: it catches
            // up when it returns.
            Some(MembershipChange::AddLearner(n))
        } else {
            meta.voters
                .iter()
                .chain(&meta.learners)
                .find(|&&n| n != self.id && map.removed.contains(&n) && caught_up(n))
                .map(|&n| MembershipChange::Remove(n))
        };
        if let Some(change) = change {
            self.change_group(METADATA_GROUP, change);
        }
    }

    /// Records the moves the placement asks for in the map.
    fn start_moves(&self, map: &ClusterMap) {
        for m in placement::plan_moves(map, MoveLimits::default()) {
            let cmd = MapCommand::StartMove {
                group: m.group,
                from: m.from,
                to: m.to,
            };
            match self.try_change_map(cmd) {
                Ok(()) => tracing::info!(
                    group = m.group,
                    from = ?m.from.map(show_id),
                    to = %show_id(m.to),
                    "replica move started"
                ),
                Err(e) => tracing::debug!(group = m.group, error = %e, "cannot start a move"),
            }
        }
    }

    /// On the leader of each data group with moves: one raft step per move.
    fn step_moves(&self, map: &ClusterMap) {
        for shard in map.shards.values().filter(|s| !s.moves.is_empty()) {
            if self.raft.leader(shard.group) != Some(self.id) {
                continue;
            }
            let Ok(status) = self.raft.status(shard.group) else {
                continue;
            };
            if !status.is_leader {
                continue;
            }
            for m in &shard.moves {
                self.step_move(shard.group, &status, m.from, m.to);
            }
        }
    }

    fn step_move(&self, group: GroupId, status: &GroupStatus, from: Option<NodeId>, to: NodeId) {
        let member = |n: NodeId| status.voters.contains(&n) || status.learners.contains(&n);
        if !member(to) {
            self.change_group(group, MembershipChange::AddLearner(to));
        } else if status.learners.contains(&to) {
            if caught_up(status, to) {
                self.change_group(group, MembershipChange::AddVoter(to));
            }
        } else if let Some(f) = from.filter(|&f| member(f)) {
            if f == self.id {
                // A leader does not remove itself: it hands over first.
                if let Err(e) = self.raft.transfer_leader(group, to) {
                    tracing::debug!(group, error = %e, "cannot hand over leadership");
                }
            } else {
                self.change_group(group, MembershipChange::Remove(f));
            }
        } else {
            match self.try_change_map(MapCommand::FinishMove { group, to }) {
                Ok(()) => tracing::info!(
                    group,
                    from = ?from.map(show_id),
                    to = %show_id(to),
                    "replica move done"
                ),
                Err(e) => tracing::debug!(group, error = %e, "cannot finish a move"),
            }
        }
    }

    /// Proposes one membership change and waits (bounded) for it to apply;
    /// raft drops a second pending change, which the answer says.
    fn change_group(&self, group: GroupId, change: MembershipChange) {
        match self
            .raft
            .change_membership(group, &[change])
            .wait(CONF_WAIT)
        {
            Ok(conf) => tracing::info!(
                group,
                ?change,
                voters = ?conf.voters,
                learners = ?conf.learners,
                "membership changed"
            ),
            Err(e) => tracing::debug!(group, ?change, error = %e, "membership change not applied"),
        }
    }
}

/// Whether the leader knows `node`'s log to match its commit index.
fn caught_up(status: &GroupStatus, node: NodeId) -> bool {
    status
        .matched
        .iter()
        .any(|&(n, matched)| n == node && matched >= status.commit && matched > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_group_gets_three_voters_then_five() {
        let voters: Vec<usize> = (0..=7).map(metadata_voters).collect();
        assert_eq!(voters, [0, 1, 2, 3, 3, 5, 5, 5]);
    }

    #[test]
    fn caught_up_means_matched_at_the_commit_index() {
        let status = GroupStatus {
            group: 1,
            is_leader: true,
            leader: Some(1),
            term: 2,
            commit: 10,
            applied: 10,
            first_index: 1,
            last_index: 10,
            voters: vec![1, 2],
            learners: vec![3, 4],
            matched: vec![(1, 10), (2, 10), (3, 10), (4, 7)],
        };
        assert!(caught_up(&status, 3));
        assert!(!caught_up(&status, 4));
        assert!(!caught_up(&status, 5));
    }
}
