//! The libp2p transport on real sockets (127.0.0.1, ports chosen by the OS):
//! ordering, large payloads beside raft traffic, membership, reconnection,
//! the node key; then a 3-node raft cluster talking only over libp2p.

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use raft::eraftpb::Message;
use stratosdb_engine::{ApplyOutcome, Command, Op};
use stratosdb_replication::p2p::{P2pConfig, P2pTransport, node_id_of};
use stratosdb_replication::{
    GroupId, GroupMessage, Inbox, NodeConfig, NodeId, RaftNode, ReplicationError, Transport,
};

const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test's output (`RUST_LOG=debug` to see more).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn config(dir: &std::path::Path, listen: &str) -> P2pConfig {
    let mut c = P2pConfig::new(dir, listen);
    c.backoff_max = Duration::from_millis(300);
    c
}

/// Starts a transport, retrying while a just-closed port is still held.
fn start_at(dir: &std::path::Path, listen: &str) -> P2pTransport {
    logs();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match P2pTransport::start(config(dir, listen)) {
            Ok(t) => return t,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying start on {listen}: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("start on {listen}: {e}"),
        }
    }
}

fn start(dir: &std::path::Path) -> P2pTransport {
    start_at(dir, "127.0.0.1:0")
}

/// `a` accepts `b` and knows where it listens.
fn know(a: &P2pTransport, b: &P2pTransport) {
    a.allow_peer(b.peer_id()).unwrap();
    let addr = b.local_socket_addr().unwrap().to_string();
    a.set_peer_addresses(b.peer_id(), &[&addr]).unwrap();
}

fn pair(a: &P2pTransport, b: &P2pTransport) {
    know(a, b);
    know(b, a);
}

/// Collects what arrives at `t`.
fn receiver(t: &P2pTransport) -> mpsc::Receiver<Vec<GroupMessage>> {
    let (tx, rx) = mpsc::channel();
    t.set_inbox(Inbox::new(64 << 20, move |b| {
        tx.send(b).map_err(|_| ReplicationError::Stopped)
    }));
    rx
}

/// One message of group `group` tagged with `seq` (in its index field).
fn batch(to: NodeId, group: GroupId, seq: u64) -> Vec<GroupMessage> {
    vec![GroupMessage {
        group,
        msg: Message {
            to,
            index: seq,
            ..Default::default()
        },
    }]
}

fn recv(rx: &mpsc::Receiver<Vec<GroupMessage>>) -> Vec<GroupMessage> {
    rx.recv_timeout(WAIT).expect("a batch in time")
}

#[test]
fn two_transports_exchange_batches_in_order() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (start(da.path()), start(db.path()));
    pair(&a, &b);
    let (ra, rb) = (receiver(&a), receiver(&b));
    for i in 0..300 {
        a.send(b.node_id(), batch(b.node_id(), 1, i));
        b.send(a.node_id(), batch(a.node_id(), 2, i));
    }
    for i in 0..300 {
        let got = recv(&rb);
        assert_eq!((got[0].group, got[0].msg.index), (1, i));
        let got = recv(&ra);
        assert_eq!((got[0].group, got[0].msg.index), (2, i));
    }
    assert_eq!(a.dropped(b.node_id()), 0);
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_4_mib_payload_arrives_while_small_batches_keep_flowing() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (start(da.path()), start(db.path()));
    pair(&a, &b);
    let rb = receiver(&b);
    let (ltx, lrx) = mpsc::channel();
    b.set_large_handler(move |from, bytes| drop(ltx.send((from, bytes))));
    // The connection is up before the big one goes.
    a.send(b.node_id(), batch(b.node_id(), 1, 0));
    assert_eq!(recv(&rb)[0].msg.index, 0);

    let payload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    a.send_large(b.node_id(), payload.clone()).unwrap();
    let mut next = 1;
    let mut small_seen = 0;
    let (from, got) = loop {
        a.send(b.node_id(), batch(b.node_id(), 1, next));
        next += 1;
        while let Ok(got) = rb.try_recv() {
            assert_eq!(got[0].msg.index, small_seen + 1, "in order");
            small_seen += 1;
        }
        if let Ok(large) = lrx.recv_timeout(Duration::from_millis(5)) {
            break large;
        }
        assert!(next < 20_000, "the large payload never arrived");
    };
    assert_eq!(from, a.node_id());
    assert!(got == payload, "the payload arrived intact");
    // Every small batch sent arrives, in order, after the large one too.
    while small_seen + 1 < next {
        assert_eq!(recv(&rb)[0].msg.index, small_seen + 1);
        small_seen += 1;
    }
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_peer_that_is_not_a_member_cannot_deliver_anything() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, stranger) = (
        start(dirs[0].path()),
        start(dirs[1].path()),
        start(dirs[2].path()),
    );
    pair(&a, &b);
    // The stranger knows b and accepts it; b does not accept the stranger.
    know(&stranger, &b);
    let rb = receiver(&b);
    let (ltx, lrx) = mpsc::channel();
    b.set_large_handler(move |from, bytes| drop(ltx.send((from, bytes))));
    for i in 0..50 {
        stranger.send(b.node_id(), batch(b.node_id(), 66, i));
    }
    stranger.send_large(b.node_id(), vec![1; 1024]).unwrap();
    // b answers a throughout: it keeps working.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut i = 0;
    while Instant::now() < deadline {
        a.send(b.node_id(), batch(b.node_id(), 1, i));
        let got = recv(&rb);
        assert_eq!(got[0].group, 1, "only the member's batches arrive");
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rb.try_iter().all(|b| b[0].group == 1));
    assert!(
        lrx.try_recv().is_err(),
        "no large payload from the stranger"
    );
    // Removing a member closes its connection and stops its traffic too.
    b.remove_peer(a.peer_id());
    assert!(!b.members().contains_key(&a.node_id()));
    std::thread::sleep(Duration::from_millis(200));
    rb.try_iter().for_each(drop);
    for i in 0..20 {
        a.send(b.node_id(), batch(b.node_id(), 2, i));
    }
    assert!(
        rb.recv_timeout(Duration::from_secs(1)).is_err(),
        "nothing from a removed member"
    );
    a.shutdown();
    b.shutdown();
    stranger.shutdown();
}

#[test]
fn a_peer_that_comes_back_on_the_same_address_is_reconnected() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(da.path());
    let b = start(db.path());
    pair(&a, &b);
    let rb = receiver(&b);
    a.send(b.node_id(), batch(b.node_id(), 1, 0));
    assert_eq!(recv(&rb)[0].msg.index, 0);

    let b_addr = b.local_socket_addr().unwrap().to_string();
    let b_id = b.node_id();
    b.shutdown();
    drop(b);
    for i in 1..5 {
        a.send(b_id, batch(b_id, 1, i)); // lost or queued: both are fine
    }
    std::thread::sleep(Duration::from_millis(300));

    let b = start_at(db.path(), &b_addr);
    assert_eq!(b.node_id(), b_id, "same key, same node");
    know(&b, &a);
    let rb = receiver(&b);
    let deadline = Instant::now() + WAIT;
    let mut seq = 1000;
    loop {
        a.send(b_id, batch(b_id, 1, seq));
        seq += 1;
        if let Ok(got) = rb.recv_timeout(Duration::from_millis(50))
            && got[0].msg.index >= 1000
        {
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected");
    }
    a.shutdown();
    b.shutdown();
}

#[test]
fn the_node_key_is_the_same_after_reopening_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path());
    let peer = first.peer_id();
    first.shutdown();
    drop(first);
    let again = start(dir.path());
    assert_eq!(again.peer_id(), peer);
    assert_eq!(again.node_id(), node_id_of(&peer));
    let other = tempfile::tempdir().unwrap();
    assert_ne!(
        start(other.path()).peer_id(),
        peer,
        "a new folder, a new key"
    );
}

// ---- a raft cluster over libp2p ----

const G: GroupId = 1;

/// Lets a test replace a node's transport while its raft loop runs.
struct Swap(RwLock<Arc<P2pTransport>>);

impl Transport for Swap {
    fn send(&self, to: NodeId, batch: Vec<GroupMessage>) {
        self.0.read().send(to, batch);
    }
}

struct Member {
    node: RaftNode,
    transport: Arc<Swap>,
}

/// Fields drop in order: nodes, then transports, then folders.
struct Cluster {
    members: BTreeMap<NodeId, Member>,
    dirs: BTreeMap<NodeId, tempfile::TempDir>,
}

mod common;
use common::{fast_config, insert};

fn node_config(id: NodeId) -> NodeConfig {
    let mut c = fast_config(id);
    // Compact early, so a replica cut off for 20 writes needs a snapshot
    // (which travels on the large-payload protocol).
    c.compact_after = 10;
    c.compact_keep = 2;
    c
}

impl Cluster {
    fn new() -> Cluster {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        // The key beside the engine's folder (the engine wants its own).
        let transports: Vec<_> = dirs.iter().map(|d| start(&d.path().join("p2p"))).collect();
        for a in &transports {
            for b in &transports {
                if a.peer_id() != b.peer_id() {
                    know(a, b);
                }
            }
        }
        let voters: Vec<NodeId> = transports.iter().map(|t| t.node_id()).collect();
        let mut c = Cluster {
            members: BTreeMap::new(),
            dirs: BTreeMap::new(),
        };
        for (t, dir) in transports.into_iter().zip(dirs) {
            let id = t.node_id();
            let t = Arc::new(t);
            let swap = Arc::new(Swap(RwLock::new(t.clone())));
            let node =
                RaftNode::open(dir.path().join("data"), node_config(id), swap.clone()).unwrap();
            t.set_inbox(node.inbox());
            node.create_group(G, &voters).unwrap();
            c.members.insert(
                id,
                Member {
                    node,
                    transport: swap,
                },
            );
            c.dirs.insert(id, dir);
        }
        c
    }

    fn ids(&self) -> Vec<NodeId> {
        self.members.keys().copied().collect()
    }

    fn leader(&self) -> NodeId {
        let deadline = Instant::now() + WAIT;
        let mut terms: BTreeMap<u64, NodeId> = BTreeMap::new();
        loop {
            for (&id, m) in &self.members {
                if let Ok(s) = m.node.status(G)
                    && s.is_leader
                {
                    assert_eq!(*terms.entry(s.term).or_insert(id), id, "two leaders");
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn propose(&self, cmd: &Command) {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.leader();
            match self.members[&leader]
                .node
                .propose(G, cmd)
                .wait(Duration::from_secs(3))
            {
                Ok(ApplyOutcome::Applied(_)) => return,
                Ok(ApplyOutcome::Rejected(stratosdb_engine::EngineError::DuplicateId {
                    ..
                })) => return,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => panic!("proposal: {other:?}"),
            }
        }
    }

    /// Waits until every node has the same root at the same applied index,
    /// at least `min`.
    fn converge(&self, min: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let states: Vec<_> = self
                .members
                .values()
                .map(|m| m.node.shard(G).unwrap().root_at_applied().unwrap())
                .collect();
            if states[0].0 >= min && states.iter().all(|s| *s == states[0]) {
                return states[0].0;
            }
            assert!(Instant::now() < deadline, "no convergence: {states:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn applied(&self, id: NodeId) -> u64 {
        self.members[&id]
            .node
            .shard(G)
            .unwrap()
            .applied_index()
            .unwrap()
    }

    fn has(&self, id: NodeId, doc: &str) -> bool {
        self.members[&id]
            .node
            .shard(G)
            .unwrap()
            .get("c", doc)
            .unwrap()
            .is_some()
    }

    /// Shuts the node's transport down, lets `meanwhile` run, then starts a
    /// new transport on the same folder (key) and address.
    fn restart_transport(&self, id: NodeId, meanwhile: impl FnOnce()) {
        let member = &self.members[&id];
        let old = member.transport.0.read().clone();
        let addr = old.local_socket_addr().unwrap().to_string();
        old.shutdown();
        meanwhile();
        let fresh = Arc::new(start_at(&self.dirs[&id].path().join("p2p"), &addr));
        assert_eq!(fresh.node_id(), id);
        for other in self.members.values() {
            let t = other.transport.0.read().clone();
            if t.node_id() != id {
                know(&fresh, &t);
            }
        }
        fresh.set_inbox(member.node.inbox());
        *member.transport.0.write() = fresh;
    }
}

#[test]
fn three_raft_nodes_over_libp2p_elect_apply_and_catch_up() {
    let c = Cluster::new();
    c.propose(&Command {
        ops: vec![Op::CreateCollection { name: "c".into() }],
    });
    for i in 0..20 {
        c.propose(&insert(&format!("a{i}")));
    }
    let applied = c.converge(c.applied(c.leader()));
    for id in c.ids() {
        assert!((0..20).all(|i| c.has(id, &format!("a{i}"))), "node {id}");
    }
    assert!(applied >= 21);

    let leader = c.leader();
    let follower = c.ids().into_iter().find(|&n| n != leader).unwrap();
    c.restart_transport(follower, || {
        for i in 0..20 {
            c.propose(&insert(&format!("b{i}")));
        }
        assert!(!c.has(follower, "b19"), "the follower is cut off");
        // The leader compacts past the follower: it will need a snapshot.
        let deadline = Instant::now() + WAIT;
        let leader = c.leader();
        while c.members[&leader].node.status(G).unwrap().first_index <= c.applied(follower) + 1 {
            assert!(Instant::now() < deadline, "the leader never compacted");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let leader = c.leader();
    let applied = c.converge(c.applied(leader));
    for id in c.ids() {
        assert!((0..20).all(|i| c.has(id, &format!("b{i}"))), "node {id}");
    }
    assert!(applied >= 41);
    assert!(
        c.members[&follower].node.status(G).unwrap().first_index > 2,
        "the follower was restored from a snapshot (sent on the large-payload protocol)"
    );
}
