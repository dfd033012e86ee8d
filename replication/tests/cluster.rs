//! In-process clusters on the in-memory transport: every node has its own
//! data folder (engine and raft log), and the hub drops, delays, duplicates,
//! reorders and partitions messages between chosen nodes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use stratosdb_engine::{ApplyOutcome, Command, Op};
use stratosdb_replication::{
    Filters, GroupId, MemHub, MembershipChange, NodeConfig, NodeId, RaftNode, ReplicationError,
};

const G: GroupId = 1;
const WAIT: Duration = Duration::from_secs(20);

mod common;
use common::{fast_config, insert};

fn config(id: NodeId) -> NodeConfig {
    let mut c = fast_config(id);
    c.compact_after = 100;
    c.compact_keep = 10;
    c
}

/// Fields drop in order: the nodes (joining their threads) before the
/// folders they write to.
struct Cluster {
    nodes: BTreeMap<NodeId, RaftNode>,
    hub: MemHub,
    dirs: HashMap<NodeId, tempfile::TempDir>,
    /// Every (term, leader) any node reported: one leader per term, ever.
    leaders: std::cell::RefCell<BTreeMap<u64, NodeId>>,
}

impl Cluster {
    /// `n` founding nodes of group G, and the collection `c` created.
    fn new(n: u64) -> Cluster {
        let mut c = Cluster {
            leaders: Default::default(),
            hub: MemHub::new(),
            dirs: HashMap::new(),
            nodes: BTreeMap::new(),
        };
        let voters: Vec<NodeId> = (1..=n).collect();
        for id in 1..=n {
            c.start(id, &voters);
        }
        let create = Command {
            ops: vec![Op::CreateCollection { name: "c".into() }],
        };
        c.propose(&create).expect("create the collection");
        c
    }

    /// Starts (or restarts, from its folder) a node hosting group G.
    fn start(&mut self, id: NodeId, voters: &[NodeId]) {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap());
        // sled lets go of a dropped database's folder lock a moment after
        // the drop (its background thread): retry a restart briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        let node = loop {
            match RaftNode::open(dir.path(), config(id), self.hub.transport(id)) {
                Ok(node) => break node,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("start node {id}: {e}"),
            }
        };
        node.create_group(G, voters).unwrap();
        self.hub.register(id, node.inbox());
        self.nodes.insert(id, node);
    }

    /// Stops a node (its folder stays).
    fn stop(&mut self, id: NodeId) {
        self.hub.unregister(id);
        self.nodes.remove(&id);
    }

    /// A node that says it leads, among `among` (all when empty).
    fn leader_among(&self, among: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let mut found = None;
            for (&id, node) in &self.nodes {
                let Ok(s) = node.status(G) else { continue };
                if s.is_leader {
                    let first = *self.leaders.borrow_mut().entry(s.term).or_insert(id);
                    assert_eq!(first, id, "two leaders in term {}", s.term);
                    if among.is_empty() || among.contains(&id) {
                        found = found.or(Some(id));
                    }
                }
            }
            if let Some(id) = found {
                return id;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no leader among {among:?}");
    }

    fn leader(&self) -> NodeId {
        self.leader_among(&[])
    }

    /// Proposes through whichever node leads, retrying what is retryable.
    fn propose(&self, cmd: &Command) -> Result<ApplyOutcome, ReplicationError> {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader();
            match self.nodes[&leader]
                .propose(G, cmd)
                .wait(Duration::from_secs(3))
            {
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    fn write(&self, id: &str) {
        match self.propose(&insert(id)) {
            Ok(ApplyOutcome::Applied(_)) => {}
            // A retried insert whose first try applied after all.
            Ok(ApplyOutcome::Rejected(stratosdb_engine::EngineError::DuplicateId { .. })) => {}
            other => panic!("write {id}: {other:?}"),
        }
    }

    /// Waits until the given nodes report the same root at the same applied
    /// index, at least `min_applied`; returns that index.
    fn converge(&self, ids: &[NodeId], min_applied: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let states: Vec<_> = ids
                .iter()
                .map(|id| self.nodes[id].shard(G).unwrap().root_at_applied().unwrap())
                .collect();
            if states[0].0 >= min_applied && states.iter().all(|s| *s == states[0]) {
                return states[0].0;
            }
            assert!(Instant::now() < deadline, "no convergence: {states:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn has(&self, node: NodeId, id: &str) -> bool {
        self.nodes[&node]
            .shard(G)
            .unwrap()
            .get("c", id)
            .unwrap()
            .is_some()
    }

    fn applied(&self, node: NodeId) -> u64 {
        self.nodes[&node].shard(G).unwrap().applied_index().unwrap()
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }
}

#[test]
fn three_nodes_elect_a_leader_and_apply_everywhere() {
    let c = Cluster::new(3);
    for i in 0..20 {
        c.write(&format!("d{i}"));
    }
    let applied = c.applied(c.leader());
    c.converge(&c.ids(), applied);
    for node in c.ids() {
        assert!(
            (0..20).all(|i| c.has(node, &format!("d{i}"))),
            "node {node}"
        );
    }
    // A proposal to a follower fails at once with a leader hint.
    let leader = c.leader();
    let follower = c.ids().into_iter().find(|&n| n != leader).unwrap();
    match c.nodes[&follower].propose(G, &insert("x")).wait(WAIT) {
        Err(ReplicationError::NotLeader { leader: hint, .. }) => assert_eq!(hint, Some(leader)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_follower_proposes_through_raft_and_gets_the_outcome_when_it_applies() {
    let c = Cluster::new(3);
    let leader = c.leader();
    let follower = c.ids().into_iter().find(|&n| n != leader).unwrap();
    // Many at once from the follower: raft forwards every entry to the
    // leader, and each answer is its own entry's outcome.
    let pending: Vec<_> = (0..50)
        .map(|i| c.nodes[&follower].propose_anywhere(G, &insert(&format!("f{i}"))))
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        match p.wait(WAIT) {
            Ok(ApplyOutcome::Applied(outcomes)) => {
                assert_eq!(outcomes[0].id.as_deref(), Some(format!("f{i}").as_str()));
                assert!(outcomes[0].created);
            }
            other => panic!("f{i}: {other:?}"),
        }
        // Answered once applied on the follower itself.
        assert!(c.has(follower, &format!("f{i}")));
    }
    // A rejection is the entry's outcome too; on the leader it is a proposal.
    let dup = c.nodes[&follower]
        .propose_anywhere(G, &insert("f3"))
        .wait(WAIT);
    assert!(matches!(dup, Ok(ApplyOutcome::Rejected(_))), "{dup:?}");
    let on_leader = c.nodes[&leader]
        .propose_anywhere(G, &insert("l"))
        .wait(WAIT);
    assert!(
        matches!(on_leader, Ok(ApplyOutcome::Applied(_))),
        "{on_leader:?}"
    );
    let applied = c.applied(leader);
    c.converge(&c.ids(), applied);
    for node in c.ids() {
        assert!((0..50).all(|i| c.has(node, &format!("f{i}"))) && c.has(node, "l"));
    }
    // Cut off from the others, the follower soon stops forwarding: once its
    // leader has been silent for two heartbeats it declines (`NotLeader`,
    // nothing proposed), and once it lost the leader raft drops the
    // proposal. Nothing then waits on an entry that cannot arrive.
    let others: Vec<NodeId> = c.ids().into_iter().filter(|&n| n != follower).collect();
    c.hub.partition(&[follower], &others);
    let deadline = Instant::now() + WAIT;
    let mut declined = false;
    loop {
        let r = c.nodes[&follower]
            .propose_anywhere(G, &insert("cut"))
            .wait(Duration::from_secs(1));
        match r {
            Err(ReplicationError::NotLeader { .. }) => declined = true,
            Err(ReplicationError::ProposalDropped { .. }) => break,
            // Sent before the leader's silence showed: lost on the way.
            Err(ReplicationError::Timeout { .. }) if !declined => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "still proposing through raft");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.hub.heal();
    let applied = c.applied(c.leader());
    c.converge(&c.ids(), applied);
    assert!(!c.has(leader, "cut"));
}

#[test]
fn five_nodes_apply_a_concurrent_burst_identically() {
    let c = Cluster::new(5);
    let leader = c.leader();
    let pending: Vec<_> = (0..100)
        .map(|i| c.nodes[&leader].propose(G, &insert(&format!("d{i}"))))
        .collect();
    for p in pending {
        assert!(matches!(p.wait(WAIT), Ok(ApplyOutcome::Applied(_))));
    }
    let applied = c.applied(leader);
    c.converge(&c.ids(), applied);
    // A duplicate is rejected the same way on every replica.
    assert!(matches!(
        c.propose(&insert("d1")),
        Ok(ApplyOutcome::Rejected(_))
    ));
}

#[test]
fn losing_the_leader_elects_another_and_loses_nothing() {
    let mut c = Cluster::new(3);
    for i in 0..10 {
        c.write(&format!("a{i}"));
    }
    let old = c.leader();
    c.stop(old);
    let rest = c.ids();
    let new = c.leader_among(&rest);
    assert_ne!(new, old);
    for i in 0..10 {
        c.write(&format!("b{i}"));
    }
    let applied = c.applied(new);
    c.converge(&rest, applied);
    for node in &rest {
        assert!((0..10).all(|i| c.has(*node, &format!("a{i}")) && c.has(*node, &format!("b{i}"))));
    }
    // The old leader comes back with its data and catches up.
    c.start(old, &[]);
    c.converge(&c.ids(), applied);
    assert!(c.has(old, "b9"));
}

#[test]
fn a_minority_cannot_commit_and_the_majority_can() {
    let c = Cluster::new(5);
    c.write("before");
    let old = c.leader();
    let buddy = c.ids().into_iter().find(|&n| n != old).unwrap();
    let majority: Vec<NodeId> = c
        .ids()
        .into_iter()
        .filter(|n| ![old, buddy].contains(n))
        .collect();
    c.hub.partition(&[old, buddy], &majority);

    // The old leader cannot commit: it times out or has stepped down.
    let r = c.nodes[&old]
        .propose(G, &insert("minority"))
        .wait(Duration::from_secs(2));
    assert!(
        matches!(
            r,
            Err(ReplicationError::Timeout { .. } | ReplicationError::NotLeader { .. })
        ),
        "{r:?}"
    );
    let new = c.leader_among(&majority);
    let r = c.nodes[&new].propose(G, &insert("majority")).wait(WAIT);
    assert!(matches!(r, Ok(ApplyOutcome::Applied(_))), "{r:?}");

    // No term ever had two leaders that committed: terms and leaders agree.
    let mut leaders: BTreeMap<u64, NodeId> = BTreeMap::new();
    for node in c.ids() {
        let s = c.nodes[&node].status(G).unwrap();
        if s.is_leader {
            assert_eq!(*leaders.entry(s.term).or_insert(node), node);
        }
    }
    c.hub.heal();
    let applied = c.applied(new);
    c.converge(&c.ids(), applied);
    for node in c.ids() {
        assert!(c.has(node, "majority") && c.has(node, "before"));
        assert!(
            !c.has(node, "minority"),
            "node {node} applied an uncommitted write"
        );
    }
}

#[test]
fn lossy_duplicating_reordering_links_still_converge() {
    let c = Cluster::new(3);
    c.hub.set_filters(Filters {
        drop_rate: 0.1,
        duplicate_rate: 0.2,
        max_delay: Some(Duration::from_millis(15)),
        ..Default::default()
    });
    for i in 0..30 {
        c.write(&format!("d{i}"));
    }
    c.hub.heal();
    let applied = c.applied(c.leader());
    c.converge(&c.ids(), applied);
    for node in c.ids() {
        assert!((0..30).all(|i| c.has(node, &format!("d{i}"))));
    }
}

#[test]
fn a_far_behind_replica_catches_up_by_snapshot() {
    let c = Cluster::new(3);
    let leader = c.leader();
    let behind = c.ids().into_iter().find(|&n| n != leader).unwrap();
    let others: Vec<NodeId> = c.ids().into_iter().filter(|&n| n != behind).collect();
    c.hub.partition(&[behind], &others);
    let pending: Vec<_> = (0..600)
        .map(|i| c.nodes[&leader].propose(G, &insert(&format!("d{i}"))))
        .collect();
    for p in pending {
        assert!(matches!(p.wait(WAIT), Ok(ApplyOutcome::Applied(_))));
    }
    let applied = c.applied(leader);
    c.converge(&others, applied);
    // The leader's log no longer holds what the lagging replica needs.
    let deadline = Instant::now() + WAIT;
    while c.nodes[&leader].status(G).unwrap().first_index <= c.applied(behind) + 1 {
        assert!(Instant::now() < deadline, "the leader never compacted");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.hub.heal();
    c.converge(&c.ids(), applied);
    assert!(c.has(behind, "d599"));
    assert!(
        c.nodes[&behind].status(G).unwrap().first_index > 2,
        "restored from a snapshot"
    );
}

#[test]
fn a_fourth_node_joins_as_learner_is_promoted_and_a_voter_leaves() {
    let mut c = Cluster::new(3);
    c.write("a");
    c.start(4, &[]); // no voters: waits to be added
    let leader = c.leader();
    let cs = c.nodes[&leader]
        .change_membership(G, &[MembershipChange::AddLearner(4)])
        .wait(WAIT)
        .unwrap();
    assert_eq!(cs.learners, vec![4]);
    c.write("b");
    let applied = c.applied(c.leader());
    c.converge(&c.ids(), applied);
    assert!(c.has(4, "a") && c.has(4, "b"));

    // Two changes at once: the second is refused while the first is pending
    // (usually; if the first applied already, it is taken), never reported
    // done without having applied.
    let leader = c.leader();
    let first = c.nodes[&leader].change_membership(G, &[MembershipChange::AddVoter(4)]);
    let second = c.nodes[&leader].change_membership(G, &[MembershipChange::Remove(2)]);
    let cs = first.wait(WAIT).unwrap();
    assert!(cs.voters.contains(&4) && cs.learners.is_empty(), "{cs:?}");
    match second.wait(WAIT) {
        Err(ReplicationError::ConfChangeInProgress { .. }) => {}
        Ok(cs) => {
            assert!(!cs.voters.contains(&2), "{cs:?}");
            c.stop(2);
        }
        other => panic!("{other:?}"),
    }
    c.write("c");

    // Remove a voter that is not the leader.
    let leader = c.leader();
    let gone = c
        .ids()
        .into_iter()
        .find(|&n| n != leader && n != 4)
        .unwrap();
    let cs = c.nodes[&leader]
        .change_membership(G, &[MembershipChange::Remove(gone)])
        .wait(WAIT)
        .unwrap();
    assert!(!cs.voters.contains(&gone));
    c.stop(gone);
    c.write("d");
    let status = c.nodes[&c.leader()].status(G).unwrap();
    let mut voters = status.voters.clone();
    voters.sort();
    assert_eq!(voters, c.ids(), "the voters are the nodes still running");
    let applied = c.applied(c.leader());
    c.converge(&c.ids(), applied);
    assert!(c.ids().iter().all(|&n| c.has(n, "d")));
}

#[test]
fn a_restarted_node_rejoins_with_its_data() {
    let mut c = Cluster::new(3);
    for i in 0..10 {
        c.write(&format!("a{i}"));
    }
    let leader = c.leader();
    let node = c.ids().into_iter().find(|&n| n != leader).unwrap();
    let applied = c.applied(leader);
    c.converge(&c.ids(), applied);
    c.stop(node);
    for i in 0..10 {
        c.write(&format!("b{i}"));
    }
    c.start(node, &[1, 2, 3]); // the founding list again: ignored, the log exists
    assert!(c.has(node, "a9"), "its own data is there at once");
    let applied = c.applied(c.leader());
    c.converge(&c.ids(), applied);
    assert!(c.has(node, "b9"));
}

#[test]
fn a_linearizable_read_after_a_write_sees_it() {
    let c = Cluster::new(3);
    let leader = c.leader();
    for node in c.ids() {
        let id = format!("w{node}");
        c.write(&id);
        // Read on every replica, the leader and the followers alike.
        for reader in c.ids() {
            let index = c.nodes[&reader]
                .read_index(G, Duration::from_secs(5))
                .wait(WAIT)
                .unwrap();
            assert!(index >= 1);
            assert!(
                c.has(reader, &id),
                "node {reader} missed {id} (leader {leader})"
            );
        }
    }
    // Many reads waiting together share read index requests.
    let pending: Vec<_> = (0..50)
        .map(|_| c.nodes[&leader].read_index(G, Duration::from_secs(5)))
        .collect();
    for p in pending {
        p.wait(WAIT).unwrap();
    }
}

#[test]
fn a_group_without_a_leader_does_not_stall_the_other_groups_reads() {
    // The node's groups send their read index requests together; one whose
    // request is never answered (its group has no leader: no other node hosts
    // it) holds the others back only briefly.
    const LEADERLESS: GroupId = 2;
    let c = Cluster::new(3);
    c.write("before");
    let reader = c.leader();
    c.nodes[&reader]
        .create_group(LEADERLESS, &c.ids())
        .expect("create the group on one node");
    let stuck = c.nodes[&reader].read_index(LEADERLESS, Duration::from_secs(5));
    for round in 0..20 {
        let started = Instant::now();
        let pending: Vec<_> = (0..5)
            .map(|_| c.nodes[&reader].read_index(G, Duration::from_secs(5)))
            .collect();
        for p in pending {
            p.wait(WAIT).unwrap();
        }
        // Far below the stuck read's 5 s: the reads did not wait for it.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "round {round} of reads of group {G} waited {:?} behind the leaderless group",
            started.elapsed()
        );
        assert!(c.has(reader, "before"));
    }
    assert!(
        matches!(stuck.wait(WAIT), Err(ReplicationError::Timeout { .. })),
        "a read of a group with no leader must time out"
    );
}

/// Writes `ids` through `node`'s replica (raft forwards them while it is a
/// follower), answering each: an entry a leader dropped comes back refused
/// (`ProposalDropped`, nothing applied) and is proposed again; none may be
/// left without an answer (a timeout). Returns how many were refused.
fn write_through(c: &Cluster, node: NodeId, ids: &[String]) -> usize {
    let mut refused = 0;
    let mut todo: Vec<&String> = ids.iter().collect();
    let deadline = Instant::now() + WAIT;
    while !todo.is_empty() {
        assert!(Instant::now() < deadline, "writes still refused: {todo:?}");
        let pending: Vec<_> = todo
            .iter()
            .map(|id| (*id, c.nodes[&node].propose_anywhere(G, &insert(id))))
            .collect();
        todo.clear();
        for (id, p) in pending {
            match p.wait(Duration::from_secs(5)) {
                Ok(ApplyOutcome::Applied(_)) => {}
                Err(ReplicationError::ProposalDropped { .. }) => {
                    refused += 1;
                    todo.push(id);
                }
                Err(ReplicationError::NotLeader { .. }) => todo.push(id),
                other => panic!("write {id}: {other:?}"),
            }
        }
        if !todo.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    refused
}

#[test]
fn the_leadership_follows_the_node_sending_most_writes_and_no_write_is_lost() {
    let c = Cluster::new(3);
    let leader = c.leader();
    let busy = c.ids().into_iter().find(|&n| n != leader).unwrap();
    // Writes enter at one follower only: after a window of them, the leader
    // hands the group to that node, and every write gets its answer.
    let mut written = Vec::new();
    // Generous: a loaded machine (CI) writes slowly in a debug build.
    let deadline = Instant::now() + 3 * WAIT;
    while c.nodes[&busy].leader(G) != Some(busy) {
        assert!(Instant::now() < deadline, "the leadership never moved");
        let batch: Vec<String> = (written.len()..written.len() + 100)
            .map(|i| format!("w{i}"))
            .collect();
        write_through(&c, busy, &batch);
        written.extend(batch);
    }
    assert_eq!(c.leader(), busy);
    assert_eq!(c.nodes[&leader].counters().workload_hand_overs, 1);
    // The new leader serves its own load: the balancer's request to hand
    // it back is refused while it does; a plain hand-over is not.
    let window_end = Instant::now() + stratosdb_replication::locality::WINDOW * 2;
    while Instant::now() < window_end {
        let batch: Vec<String> = (written.len()..written.len() + 100)
            .map(|i| format!("w{i}"))
            .collect();
        write_through(&c, busy, &batch);
        written.extend(batch);
    }
    match c.nodes[&busy].balance_leader(G, leader) {
        Err(ReplicationError::LeaderServesOwnLoad { group }) => assert_eq!(group, G),
        other => panic!("balance while serving its own load: {other:?}"),
    }
    assert_eq!(c.leader(), busy);
    assert_eq!(c.nodes[&busy].counters().workload_hand_overs, 0);
    let applied = c.applied(busy);
    c.converge(&c.ids(), applied);
    for node in c.ids() {
        let missing: Vec<&String> = written.iter().filter(|id| !c.has(node, id)).collect();
        assert!(missing.is_empty(), "node {node} lacks {missing:?}");
    }
}

#[test]
fn entries_a_leader_drops_while_handing_over_come_back_refused_not_lost() {
    let c = Cluster::new(3);
    let leader = c.leader();
    let mut others = c.ids().into_iter().filter(|&n| n != leader);
    let (proposer, behind) = (others.next().unwrap(), others.next().unwrap());
    // The hand-over's target lags behind (cut off), so the leader keeps
    // handing over, dropping proposals, until raft gives up (an election
    // timeout).
    c.hub.partition(&[behind], &[leader, proposer]);
    c.write("before");
    c.nodes[&leader].transfer_leader(G, behind).unwrap();
    let forwarded = c.nodes[&proposer]
        .propose_anywhere(G, &insert("dropped"))
        .wait(Duration::from_secs(5));
    assert!(
        matches!(forwarded, Err(ReplicationError::ProposalDropped { .. })),
        "{forwarded:?}"
    );
    c.hub.heal();
    // Proposed again once the hand-over is over: applied, and only now (an
    // insert of an id already there would be rejected as a duplicate).
    write_through(&c, proposer, &["dropped".to_string()]);
    let applied = c.applied(c.leader());
    c.converge(&c.ids(), applied);
    for node in c.ids() {
        assert!(
            c.has(node, "dropped") && c.has(node, "before"),
            "node {node}"
        );
    }
}
