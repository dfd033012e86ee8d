//! Snapshot transfers and membership changes, in process on the in-memory
//! transport: every node has its own data folder; the hub's filters cut
//! links and chunk fetches mid-way, and count the chunks each node served.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stratosdb_engine::{ApplyOutcome, Command, EngineError, Op, Value};
use stratosdb_replication::{
    GroupId, MemHub, MembershipChange, NodeConfig, NodeId, RaftNode, ReplicationError, SnapshotKey,
    TransferDirection,
};

const G: GroupId = 1;
const WAIT: Duration = Duration::from_secs(30);

mod common;
use common::fast_config;

/// Logs to the test's output (`RUST_LOG=info` shows the transfers).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Small chunks (dozens per snapshot), frequent compaction, quick give-ups.
fn config(id: NodeId) -> NodeConfig {
    let mut c = fast_config(id);
    c.compact_after = 50;
    c.compact_keep = 5;
    c.snapshot_chunk_bytes = 2 << 10;
    c.snapshot_stall_timeout = Duration::from_millis(500);
    c
}

/// A document of about 300 bytes, so a few hundred make dozens of chunks.
fn insert(id: &str) -> Command {
    let doc = format!(r#"{{"_id":"{id}","pad":"{}"}}"#, "p".repeat(280));
    Command {
        ops: vec![Op::Insert {
            collection: "c".into(),
            doc: Value::from_json_str(&doc).unwrap(),
        }],
    }
}

/// Fields drop in order: the nodes (joining their threads) before the
/// folders they write to.
struct Cluster {
    nodes: BTreeMap<NodeId, RaftNode>,
    hub: MemHub,
    dirs: HashMap<NodeId, tempfile::TempDir>,
}

impl Cluster {
    /// `n` founding voters of group G, and the collection `c` created.
    fn new(n: u64) -> Cluster {
        logs();
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            hub: MemHub::new(),
            dirs: HashMap::new(),
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

    /// Starts (or restarts, from its folder) a node hosting group G; with
    /// no voters it waits to be added.
    fn start(&mut self, id: NodeId, voters: &[NodeId]) {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap());
        // sled lets go of a dropped database's lock a moment after the drop.
        let deadline = Instant::now() + Duration::from_secs(5);
        let node = loop {
            match RaftNode::open(dir.path(), config(id), self.hub.transport(id)) {
                Ok(node) => break node,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("start node {id}: {e}"),
            }
        };
        node.create_group(G, voters).unwrap();
        self.hub.register(id, node.inbox());
        self.nodes.insert(id, node);
    }

    fn stop(&mut self, id: NodeId) {
        self.hub.unregister(id);
        self.nodes.remove(&id);
    }

    fn leader(&self) -> NodeId {
        let deadline = Instant::now() + WAIT;
        loop {
            for (&id, node) in &self.nodes {
                if node.status(G).is_ok_and(|s| s.is_leader) {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

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
            Ok(ApplyOutcome::Rejected(EngineError::DuplicateId { .. })) => {}
            other => panic!("write {id}: {other:?}"),
        }
    }

    fn change(&self, change: MembershipChange) {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader();
            match self.nodes[&leader]
                .change_membership(G, &[change])
                .wait(Duration::from_secs(5))
            {
                Ok(_) => return,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("{change:?}: {e}"),
            }
        }
    }

    /// Waits until the nodes report the same root at the same applied
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

    /// The shard's applied index (readable while an install switches the
    /// shard's tree: the old one stays until its readers are done).
    fn applied(&self, node: NodeId) -> u64 {
        self.nodes[&node].shard(G).unwrap().applied_index().unwrap()
    }

    /// Node 3 cut off while `n` documents are written and the log is
    /// compacted past it: it can only catch up by a snapshot.
    fn leave_node_3_far_behind(&self, n: usize) {
        self.hub.partition(&[3], &[1, 2]);
        for i in 0..n {
            self.write(&format!("d{i:04}"));
        }
        self.wait_compacted_past(3);
    }

    /// The leader compacts on its ticks: waits until its log starts past
    /// anything `node` has; returns the leader and `node`'s applied index.
    fn wait_compacted_past(&self, node: NodeId) -> (NodeId, u64) {
        let leader = self.leader();
        let behind = self.applied(node);
        wait_for("the leader's log to be compacted", || {
            self.nodes[&leader]
                .status(G)
                .is_ok_and(|s| s.first_index > behind + 1)
        });
        (leader, behind)
    }

    /// The chunks the leader served for one snapshot, and that snapshot.
    fn served_by(&self, node: NodeId) -> (SnapshotKey, BTreeMap<u32, u32>) {
        let mut keys: BTreeMap<SnapshotKey, BTreeMap<u32, u32>> = BTreeMap::new();
        for ((from, key, chunk), count) in self.hub.chunks_served() {
            if from == node {
                keys.entry(key).or_default().insert(chunk, count);
            }
        }
        assert_eq!(keys.len(), 1, "one snapshot served: {:?}", keys.keys());
        keys.into_iter().next().unwrap()
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The node installed exactly one snapshot. (The counter moves just after
/// the shard switches, which is what `converge` sees: wait for it.)
fn installed_one(c: &Cluster, node: NodeId) {
    wait_for("the install to be counted", || {
        c.nodes[&node].counters().snapshots_installed >= 1
    });
    assert_eq!(c.nodes[&node].counters().snapshots_installed, 1);
}

#[test]
fn a_far_behind_replica_catches_up_by_a_multi_chunk_snapshot() {
    let c = Cluster::new(3);
    c.leave_node_3_far_behind(300);
    c.hub.heal();
    let applied = c.converge(&[1, 2, 3], c.applied(c.leader()));
    assert!(applied > 300);
    let leader = c.leader();
    let (_, served) = c.served_by(leader);
    assert!(served.len() >= 24, "{} chunks", served.len());
    assert!(served.values().all(|&n| n == 1), "a chunk served twice");
    installed_one(&c, 3);
    let (lc, fc) = (c.nodes[&leader].counters(), c.nodes[&3].counters());
    assert!(lc.snapshot_bytes_sent > 40_000, "{lc:?}");
    assert_eq!(lc.snapshot_bytes_sent, fc.snapshot_bytes_received);
    // The transfer is over on both sides.
    wait_for("the transfers to end", || {
        c.nodes.values().all(|n| n.snapshot_transfers().is_empty())
    });
    // The follower's incoming files are gone once installed.
    let incoming = c.dirs[&3].path().join("snapshots/in");
    assert_eq!(std::fs::read_dir(incoming).unwrap().count(), 0);
}

#[test]
fn a_cut_transfer_resumes_without_fetching_a_chunk_twice() {
    let c = Cluster::new(3);
    c.leave_node_3_far_behind(300);
    // Ten chunks go through, then the fetches fail as if the leader were
    // unreachable; raft messages still flow.
    c.hub.update_filters(|f| f.fetch_budget = Some(10));
    c.hub.heal_links();
    wait_for("ten chunks and refused fetches", || {
        c.hub.chunks_served().len() == 10 && c.hub.fetches_refused() > 0
    });
    // Progress is visible on the receiver while it is cut (it retries, gives
    // up, and starts again at chunk 10 when raft resends the snapshot).
    wait_for("the receiver's progress at chunk 10", || {
        c.nodes[&3].snapshot_transfers().iter().any(|t| {
            t.direction == TransferDirection::In
                && (t.from, t.to, t.chunks_done) == (c.leader(), 3, 10)
                && t.chunks_total >= 24
                && t.bytes_done < t.bytes_total
        })
    });
    // Long enough for the fetch to give up and the leader to tell raft;
    // raft sends the snapshot again, which resumes from disk.
    std::thread::sleep(Duration::from_millis(1500));
    c.hub.update_filters(|f| f.fetch_budget = None);
    let applied = c.converge(&[1, 2, 3], c.applied(c.leader()));
    assert!(applied > 300);
    let (key, served) = c.served_by(c.leader());
    assert!(served.len() >= 24, "{} chunks of {key:?}", served.len());
    assert_eq!(
        served.keys().copied().collect::<Vec<_>>(),
        (0..served.len() as u32).collect::<Vec<_>>()
    );
    assert!(
        served.values().all(|&n| n == 1),
        "every chunk served exactly once: {served:?}"
    );
    installed_one(&c, 3);
}

#[test]
fn a_restarted_receiver_resumes_from_the_chunks_it_verified() {
    let mut c = Cluster::new(3);
    c.leave_node_3_far_behind(300);
    c.hub.update_filters(|f| f.fetch_budget = Some(10));
    c.hub.heal_links();
    wait_for("ten chunks", || c.hub.chunks_served().len() == 10);
    c.stop(3);
    c.hub.update_filters(|f| f.fetch_budget = None);
    c.start(3, &[]);
    let applied = c.converge(&[1, 2, 3], c.applied(c.leader()));
    assert!(applied > 300);
    let (_, served) = c.served_by(c.leader());
    assert!(served.len() >= 24);
    assert!(
        served.values().all(|&n| n == 1),
        "a chunk served twice: {served:?}"
    );
}

#[test]
fn a_new_learner_gets_a_snapshot_and_is_promoted() {
    let mut c = Cluster::new(3);
    for i in 0..200 {
        c.write(&format!("d{i:04}"));
    }
    c.start(4, &[]);
    c.change(MembershipChange::AddLearner(4));
    let applied = c.converge(&[1, 2, 3, 4], c.applied(c.leader()));
    assert!(applied > 200);
    installed_one(&c, 4);
    c.change(MembershipChange::AddVoter(4));
    let status = c.nodes[&c.leader()].status(G).unwrap();
    assert_eq!(
        status.voters.iter().copied().collect::<BTreeSet<_>>(),
        [1, 2, 3, 4].into()
    );
    assert!(status.learners.is_empty());
    // The new voter takes writes like the others.
    c.write("after");
    c.converge(&[1, 2, 3, 4], applied + 1);
}

/// What the clients saw: ids acknowledged as applied, and how often.
#[derive(Default)]
struct Acks {
    applied: HashMap<String, u32>,
    /// Ids whose outcome is unknown (timeouts, snapshots): they may or may
    /// not be in; a retry that finds them applied says so.
    unknown: BTreeSet<String>,
}

/// Proposes `id` until it is acknowledged (or found applied by a retry) or
/// the deadline passes; records what happened.
fn propose_until_known(c: &Cluster, id: &str, deadline: Instant, acks: &Mutex<Acks>) {
    let cmd = insert(id);
    while Instant::now() < deadline {
        let leader = c
            .nodes
            .iter()
            .find(|(_, n)| n.status(G).is_ok_and(|s| s.is_leader))
            .map(|(&l, _)| l);
        let Some(leader) = leader else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        match c.nodes[&leader]
            .propose(G, &cmd)
            .wait(Duration::from_secs(3))
        {
            Ok(ApplyOutcome::Applied(_)) => {
                *acks.lock().unwrap().applied.entry(id.into()).or_default() += 1;
                return;
            }
            // An earlier try applied after all.
            Ok(ApplyOutcome::Rejected(EngineError::DuplicateId { .. })) => return,
            Ok(other) => panic!("{id}: {other:?}"),
            Err(e) if e.is_retryable() || matches!(e, ReplicationError::OutcomeUnknown { .. }) => {
                acks.lock().unwrap().unknown.insert(id.into());
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
}

#[test]
fn membership_changes_under_load_lose_no_acknowledged_write() {
    const CLIENTS: usize = 3;
    const PER_CLIENT: usize = 400;
    let mut c = Cluster::new(3);
    // A fourth node, not yet a member: it will catch up by snapshot.
    c.start(4, &[]);
    let load_deadline = Instant::now() + Duration::from_secs(60);
    let acks = Mutex::new(Acks::default());
    let c = &c;
    let first_leader = c.leader();
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let (acks, done) = (&acks, &done);
        for client in 0..CLIENTS {
            s.spawn(move || {
                for i in 0..PER_CLIENT {
                    if Instant::now() >= load_deadline {
                        break;
                    }
                    propose_until_known(c, &format!("k{client}-{i:04}"), load_deadline, acks);
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        // The changes, while the clients write.
        wait_for("some writes", || acks.lock().unwrap().applied.len() >= 100);
        c.change(MembershipChange::AddLearner(4));
        wait_for("the learner to catch up", || {
            c.applied(4) + 50 >= c.applied(c.leader())
        });
        c.change(MembershipChange::AddVoter(4));
        // A second change while one is pending is refused, never dropped
        // silently (raft would turn it into an empty entry).
        let leader = c.leader();
        let first = c.nodes[&leader].change_membership(G, &[MembershipChange::AddLearner(5)]);
        let second = c.nodes[&leader].change_membership(G, &[MembershipChange::Remove(5)]);
        assert!(
            matches!(
                second.wait(WAIT),
                Err(ReplicationError::ConfChangeInProgress { .. })
            ),
            "a second pending change must be refused"
        );
        first.wait(WAIT).expect("the first change applies");
        c.change(MembershipChange::Remove(5));
        // Leadership moves to the new voter, then the first leader leaves.
        let deadline = Instant::now() + WAIT;
        while c.nodes[&4].leader(G) != Some(4) {
            assert!(Instant::now() < deadline, "leadership did not move to 4");
            let leader = c.leader();
            if leader != 4 {
                let _ = c.nodes[&leader].transfer_leader(G, 4);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.change(MembershipChange::Remove(first_leader));
        wait_for("the clients", || {
            done.load(std::sync::atomic::Ordering::SeqCst) == CLIENTS
        });
    });
    let acks = acks.into_inner().unwrap();
    let members: Vec<NodeId> = [1, 2, 3, 4]
        .into_iter()
        .filter(|&n| n != first_leader)
        .collect();
    let leader = c.leader();
    assert!(members.contains(&leader));
    let status = c.nodes[&leader].status(G).unwrap();
    assert_eq!(
        status.voters.iter().copied().collect::<BTreeSet<_>>(),
        members.iter().copied().collect()
    );
    assert!(status.learners.is_empty(), "{status:?}");
    let applied = c.converge(&members, c.applied(leader));
    assert!(
        acks.applied.len() >= 300,
        "{} acknowledged",
        acks.applied.len()
    );
    assert!(
        acks.applied.values().all(|&n| n == 1),
        "a write acknowledged twice"
    );
    for id in acks.applied.keys() {
        for &n in &members {
            let shard = c.nodes[&n].shard(G).unwrap();
            assert!(shard.get("c", id).unwrap().is_some(), "{id} missing on {n}");
        }
    }
    // Nothing is there that no client proposed.
    let shard = c.nodes[&leader].shard(G).unwrap();
    let count = shard.collection("c").unwrap().count;
    let known = acks.applied.len() + acks.unknown.len();
    assert!(
        (acks.applied.len()..=known).contains(&(count as usize)),
        "{count} docs"
    );
    assert!(applied > acks.applied.len() as u64);
    // Caught up by snapshot (under load with a short log, maybe twice: the
    // log can be compacted past it again before it catches up).
    assert!(c.nodes[&4].counters().snapshots_installed >= 1);
}

/// A command inserting `n` documents of about 300 bytes, `_id`s from `prefix`.
fn bulk_insert(prefix: &str, n: usize) -> Command {
    Command {
        ops: (0..n)
            .map(|i| Op::Insert {
                collection: "c".into(),
                doc: Value::from_json_str(&format!(
                    r#"{{"_id":"{prefix}{i:05}","pad":"{}"}}"#,
                    "p".repeat(280)
                ))
                .unwrap(),
            })
            .collect(),
    }
}

/// The leader exports a large snapshot of group G on a thread of its own:
/// meanwhile its loop goes on, and group H on the same nodes commits writes
/// (each seen acknowledged between two sightings of the export's unfinished
/// file), and so do writes to G itself (the export reads the shard as it
/// was when it started, without keeping writers out).
#[test]
fn an_export_does_not_hold_up_the_loop_or_the_shards_writers() {
    const H: GroupId = 2;
    let c = Cluster::new(3);
    for node in c.nodes.values() {
        node.create_group(H, &[1, 2, 3]).unwrap();
    }
    let leader_of_h = |c: &Cluster| -> NodeId {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((&id, _)) = c
                .nodes
                .iter()
                .find(|(_, n)| n.status(H).is_ok_and(|s| s.is_leader))
            {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader of H");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let propose_h = |c: &Cluster, cmd: &Command| -> bool {
        let leader = leader_of_h(c);
        matches!(
            c.nodes[&leader]
                .propose(H, cmd)
                .wait(Duration::from_secs(5)),
            Ok(ApplyOutcome::Applied(_))
        )
    };
    let create = Command {
        ops: vec![Op::CreateCollection { name: "c".into() }],
    };
    assert!(propose_h(&c, &create));

    // Node 3 falls behind on G by some 20,000 documents, past compaction.
    c.hub.partition(&[3], &[1, 2]);
    for b in 0..40 {
        match c.propose(&bulk_insert(&format!("b{b:02}-"), 500)) {
            Ok(ApplyOutcome::Applied(_)) => {}
            other => panic!("bulk insert {b}: {other:?}"),
        }
    }
    // Enough entries for the leader to compact its log.
    for i in 0..80 {
        c.write(&format!("s{i:03}"));
    }
    let (leader, behind) = c.wait_compacted_past(3);
    let out = c.dirs[&leader].path().join("snapshots/out");
    let exporting = || {
        std::fs::read_dir(&out).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with("-export.tmp"))
        })
    };
    assert!(!exporting());
    c.hub.heal();
    wait_for("the export to start", exporting);

    // While the export's file is unfinished, writes to H and to G commit.
    let (mut h_during, mut g_during, mut n) = (0, 0, 0);
    while exporting() && n < 10_000 {
        let h = propose_h(&c, &insert(&format!("h{n:05}")));
        let g = c.nodes[&leader]
            .propose(G, &insert(&format!("g{n:05}")))
            .wait(Duration::from_secs(5));
        let g = matches!(g, Ok(ApplyOutcome::Applied(_)));
        if exporting() {
            h_during += usize::from(h);
            g_during += usize::from(g);
        }
        n += 1;
    }
    assert!(
        h_during > 0 && g_during > 0,
        "writes acknowledged during the export: {h_during} to H, {g_during} to G"
    );
    // And node 3 still catches up, by that snapshot and the entries after it.
    let applied = c.converge(&[1, 2, 3], c.applied(leader));
    assert!(applied > behind);
}
