//! The libp2p transport on real sockets (127.0.0.1, ports chosen by the OS):
//! ordering, large payloads beside raft traffic, membership, reconnection,
//! the node key; then a 3-node raft cluster talking only over libp2p.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use raft::eraftpb::Message;
use stratosdb_engine::{ApplyOutcome, Command, Op};
use stratosdb_replication::p2p::{P2pConfig, P2pTransport, node_id_of};
use stratosdb_replication::{
    ChunkServer, GroupId, GroupMessage, Inbox, NodeConfig, NodeId, RaftNode, ReplicationError,
    SnapshotKey, Transport,
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
    start_with(dir, listen, |_| {})
}

/// [`start_at`] with changes to the test configuration.
fn start_with(
    dir: &std::path::Path,
    listen: &str,
    change: impl Fn(&mut P2pConfig),
) -> P2pTransport {
    logs();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = config(dir, listen);
        change(&mut c);
        match P2pTransport::start(c) {
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

/// Members `a` and `b`, and a stranger that knows `b` (who does not know it).
fn members_and_stranger() -> (
    Vec<tempfile::TempDir>,
    P2pTransport,
    P2pTransport,
    P2pTransport,
) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, stranger) = (
        start(dirs[0].path()),
        start(dirs[1].path()),
        start(dirs[2].path()),
    );
    pair(&a, &b);
    know(&stranger, &b);
    (dirs, a, b, stranger)
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
    // The stranger knows b and accepts it; b does not accept the stranger.
    let (_dirs, a, b, stranger) = members_and_stranger();
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

// ---- request/response: /stratosdb/rpc/2 ----

const CALL: Duration = Duration::from_secs(10);

/// Counts the calls `t` answers; echoes the request, with the caller's id
/// in front.
fn echo(t: &P2pTransport) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    t.set_rpc_handler(move |from, request| {
        seen.fetch_add(1, Ordering::SeqCst);
        let mut answer = from.to_be_bytes().to_vec();
        answer.extend_from_slice(&request);
        answer
    });
    calls
}

fn echoed(from: NodeId, request: &[u8]) -> Vec<u8> {
    let mut answer = from.to_be_bytes().to_vec();
    answer.extend_from_slice(request);
    answer
}

#[test]
fn rpc_echoes_small_and_4_mib_requests() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (start(da.path()), start(db.path()));
    pair(&a, &b);
    // Before a handler is set: no answer, and worth retrying.
    let early = a.call(b.node_id(), b"early".to_vec(), CALL).unwrap_err();
    assert!(
        matches!(early, ReplicationError::NoAnswer { .. }),
        "{early:?}"
    );
    assert!(early.is_retryable());

    let calls = echo(&b);
    let got = a.call(b.node_id(), b"hello".to_vec(), CALL).unwrap();
    assert_eq!(got, echoed(a.node_id(), b"hello"));
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
    let got = a.call(b.node_id(), big.clone(), CALL).unwrap();
    assert!(
        got == echoed(a.node_id(), &big),
        "4 MiB there and back intact"
    );
    // The other way too, and an empty request.
    echo(&a);
    assert_eq!(
        b.call(a.node_id(), Vec::new(), CALL).unwrap(),
        echoed(b.node_id(), b"")
    );
    // A call to ourselves runs the handler without the network.
    a.allow_peer(a.peer_id()).unwrap();
    assert_eq!(
        a.call(a.node_id(), b"me".to_vec(), CALL).unwrap(),
        echoed(a.node_id(), b"me")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    a.shutdown();
    assert!(matches!(
        a.call(b.node_id(), b"x".to_vec(), CALL),
        Err(ReplicationError::Stopped)
    ));
    b.shutdown();
}

#[test]
fn sixty_four_concurrent_calls_to_one_peer_are_all_answered_side_by_side() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Arc::new(start(da.path())), start(db.path()));
    pair(&a, &b);
    // Each answer takes 300 ms: 64 in a row would take 19 s.
    b.set_rpc_handler(|_, request| {
        std::thread::sleep(Duration::from_millis(300));
        request
    });
    let to = b.node_id();
    // From another runtime than the transport's own, as an HTTP handler would.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = Instant::now();
    let answers = rt.block_on(async {
        let calls = (0..64u32).map(|i| {
            let a = a.clone();
            async move { a.call_async(to, i.to_be_bytes().to_vec(), CALL).await }
        });
        libp2p::futures::future::join_all(calls).await
    });
    let took = began.elapsed();
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), (i as u32).to_be_bytes().to_vec());
    }
    assert!(
        took < Duration::from_secs(8),
        "calls ran in series: {took:?}"
    );
    // And from 64 plain threads, blocking.
    let threads: Vec<_> = (0..64u32)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || a.call(to, i.to_be_bytes().to_vec(), CALL))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_eq!(
            t.join().unwrap().unwrap(),
            (i as u32).to_be_bytes().to_vec()
        );
    }
    a.shutdown();
    b.shutdown();
}

#[test]
fn calls_on_streams_of_their_own_are_answered_like_shared_ones() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Every request over 0 bytes gets a stream of its own (as large ones do).
    let own = |c: &mut P2pConfig| c.rpc_shared_stream_max_bytes = 0;
    let a = Arc::new(start_with(da.path(), "127.0.0.1:0", own));
    let b = start(db.path());
    pair(&a, &b);
    let calls = echo(&b);
    let to = b.node_id();
    let threads: Vec<_> = (0..16u32)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || {
                (0..8u32)
                    .map(|j| {
                        a.call(to, (i * 8 + j).to_be_bytes().to_vec(), CALL)
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        for (j, answer) in t.join().unwrap().into_iter().enumerate() {
            assert_eq!(
                answer,
                echoed(a.node_id(), &((i * 8 + j) as u32).to_be_bytes())
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 128);
    // The answerer's own calls (shared stream) go the other way meanwhile.
    echo(&a);
    assert_eq!(
        b.call(a.node_id(), b"back".to_vec(), CALL).unwrap(),
        echoed(b.node_id(), b"back")
    );
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_sleeping_handler_holds_up_neither_other_calls_nor_raft_batches() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Arc::new(start(da.path())), start(db.path()));
    pair(&a, &b);
    let rb = receiver(&b);
    b.set_rpc_handler(|_, request| {
        if request == b"slow" {
            std::thread::sleep(Duration::from_secs(4));
        }
        request
    });
    let to = b.node_id();
    // The connection is up first.
    assert_eq!(a.call(to, b"up".to_vec(), CALL).unwrap(), b"up");
    let slow = {
        let a = a.clone();
        std::thread::spawn(move || a.call(to, b"slow".to_vec(), CALL))
    };
    std::thread::sleep(Duration::from_millis(100));
    let began = Instant::now();
    for i in 0..20u64 {
        let request = i.to_be_bytes().to_vec();
        assert_eq!(a.call(to, request.clone(), CALL).unwrap(), request);
        a.send(to, batch(to, 1, i));
        assert_eq!(recv(&rb)[0].msg.index, i);
    }
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "fast calls waited for the slow one: {:?}",
        began.elapsed()
    );
    assert!(!slow.is_finished(), "the slow call is still being answered");
    assert_eq!(slow.join().unwrap().unwrap(), b"slow");
    // A call that outlives its timeout is a typed, retryable error.
    let late = a
        .call(to, b"slow".to_vec(), Duration::from_millis(300))
        .unwrap_err();
    assert!(
        matches!(late, ReplicationError::CallTimeout { node, .. } if node == to),
        "{late:?}"
    );
    assert!(late.is_retryable());
    a.shutdown();
    b.shutdown();
}

#[test]
fn calls_to_or_from_non_members_fail_and_change_nothing() {
    let (_dirs, a, b, stranger) = members_and_stranger();
    let calls = echo(&b);
    echo(&stranger);
    // To a non-member: refused at once, by name.
    let e = a
        .call(stranger.node_id(), b"hi".to_vec(), CALL)
        .unwrap_err();
    assert!(matches!(e, ReplicationError::UnknownNode(n) if n == stranger.node_id()));
    assert!(!e.is_retryable());
    // From a non-member, gate closed: no connection, so no stream.
    let e = stranger
        .call(b.node_id(), b"let me in".to_vec(), Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(e, ReplicationError::Unreachable { .. }), "{e:?}");
    assert!(e.is_retryable());
    // Gate open: the connection is accepted, the stream is still dropped.
    b.set_founding(true);
    let e = stranger
        .call(b.node_id(), b"let me in".to_vec(), Duration::from_secs(2))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ReplicationError::NoAnswer { .. } | ReplicationError::Unreachable { .. }
        ),
        "{e:?}"
    );
    b.set_founding(false);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the stranger reached no handler"
    );
    assert!(b.members().len() == 1 && b.members().contains_key(&a.node_id()));
    // The member is still answered.
    assert_eq!(
        a.call(b.node_id(), b"hi".to_vec(), CALL).unwrap(),
        echoed(a.node_id(), b"hi")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    a.shutdown();
    b.shutdown();
    stranger.shutdown();
}

#[test]
fn a_call_reaches_a_peer_that_restarted_on_the_same_address() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(da.path());
    let b = start(db.path());
    pair(&a, &b);
    echo(&b);
    let b_id = b.node_id();
    assert_eq!(
        a.call(b_id, b"one".to_vec(), CALL).unwrap(),
        echoed(a.node_id(), b"one")
    );
    let b_addr = b.local_socket_addr().unwrap().to_string();
    b.shutdown();
    drop(b);
    // While it is down: a typed, retryable failure.
    let e = a
        .call(b_id, b"down".to_vec(), Duration::from_millis(500))
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");

    let b = start_at(db.path(), &b_addr);
    know(&b, &a);
    echo(&b);
    assert_eq!(
        a.call(b_id, b"two".to_vec(), CALL).unwrap(),
        echoed(a.node_id(), b"two")
    );
    a.shutdown();
    b.shutdown();
}

#[test]
fn rpc_frames_over_the_limit_are_refused_by_name() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let small = |c: &mut P2pConfig| c.max_rpc_bytes = 1024;
    let a = start_with(dirs[0].path(), "127.0.0.1:0", small);
    let b = start(dirs[1].path());
    pair(&a, &b);
    let b_calls = Arc::new(AtomicUsize::new(0));
    let seen = b_calls.clone();
    b.set_rpc_handler(move |_, request| {
        seen.fetch_add(1, Ordering::SeqCst);
        vec![0; request.len() * 2]
    });
    let a_calls = echo(&a);
    // A request over our own limit never leaves.
    let e = a.call(b.node_id(), vec![1; 1025], CALL).unwrap_err();
    assert!(matches!(
        e,
        ReplicationError::MessageTooLarge {
            size: 1025,
            limit: 1024
        }
    ));
    assert_eq!(e.code(), "message_too_large");
    assert!(!e.is_retryable());
    assert_eq!(b_calls.load(Ordering::SeqCst), 0);
    // An answer over our limit is refused from its length, before reading it.
    let e = a.call(b.node_id(), vec![1; 1000], CALL).unwrap_err();
    assert!(
        matches!(
            e,
            ReplicationError::MessageTooLarge {
                size: 2000,
                limit: 1024
            }
        ),
        "{e:?}"
    );
    // A request over the answerer's limit is dropped unread: no answer.
    let e = b.call(a.node_id(), vec![1; 1025], CALL).unwrap_err();
    assert!(matches!(e, ReplicationError::NoAnswer { .. }), "{e:?}");
    assert_eq!(a_calls.load(Ordering::SeqCst), 0);
    // Within the limits all is well.
    assert_eq!(a.call(b.node_id(), vec![1; 512], CALL).unwrap().len(), 1024);
    a.shutdown();
    b.shutdown();
}

// ---- founding discovery ----

#[test]
fn founding_nodes_discover_each_other_both_ways_at_once() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<_> = dirs.iter().map(|d| Arc::new(start(d.path()))).collect();
    nodes.iter().for_each(|n| n.set_founding(true));
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| n.local_socket_addr().unwrap().to_string())
        .collect();
    // Every node discovers every other, all at the same time.
    let mut dials = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                let (n, addr) = (n.clone(), addr.clone());
                dials.push((i, j, std::thread::spawn(move || n.discover(&addr, CALL))));
            }
        }
    }
    for (i, j, dial) in dials {
        let found = dial.join().unwrap().unwrap();
        assert_eq!(found, nodes[j].peer_id(), "{i} found {j}");
    }
    assert!(
        nodes.iter().all(|n| n.members().is_empty()),
        "discovery makes no member"
    );
    // Our own address answers with our own PeerId.
    assert_eq!(
        nodes[0].discover(&addrs[0], CALL).unwrap(),
        nodes[0].peer_id()
    );
    // Trusting what was discovered is enough to talk, gate closed.
    for (i, n) in nodes.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                let peer = n.discover(addr, CALL).unwrap();
                n.allow_peer(peer).unwrap();
                n.set_peer_addresses(peer, &[addr]).unwrap();
            }
        }
        n.set_founding(false);
    }
    let inboxes: Vec<_> = nodes.iter().map(|n| receiver(n)).collect();
    nodes.iter().for_each(|n| drop(echo(n)));
    for (i, from) in nodes.iter().enumerate() {
        for (j, to) in nodes.iter().enumerate() {
            if i != j {
                from.send(
                    to.node_id(),
                    batch(to.node_id(), i as GroupId + 1, j as u64),
                );
                assert_eq!(
                    from.call(to.node_id(), b"hi".to_vec(), CALL).unwrap(),
                    echoed(from.node_id(), b"hi")
                );
            }
        }
    }
    for rx in &inboxes {
        assert_eq!(recv(rx).len(), 1);
        assert_eq!(recv(rx).len(), 1);
    }
    nodes.iter().for_each(|n| n.shutdown());
}

#[test]
fn with_the_founding_gate_closed_a_stranger_gets_nothing_and_members_keep_talking() {
    let (_dirs, a, b, stranger) = members_and_stranger();
    let rb = receiver(&b);
    let calls = echo(&b);
    let b_addr = b.local_socket_addr().unwrap().to_string();
    // The stranger may learn b's PeerId from the handshake (it is public),
    // but b drops the connection at once: nothing it sends gets through.
    let _ = stranger.discover(&b_addr, Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut i = 0;
    while Instant::now() < deadline {
        stranger.send(b.node_id(), batch(b.node_id(), 66, i));
        a.send(b.node_id(), batch(b.node_id(), 1, i));
        assert_eq!(recv(&rb)[0].group, 1, "only the member's batches arrive");
        assert_eq!(
            a.call(b.node_id(), b"hi".to_vec(), CALL).unwrap(),
            echoed(a.node_id(), b"hi")
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        stranger
            .call(b.node_id(), b"hi".to_vec(), Duration::from_millis(500))
            .is_err()
    );
    assert!(rb.try_iter().all(|b| b[0].group == 1));
    assert_eq!(calls.load(Ordering::SeqCst), i as usize);
    a.shutdown();
    b.shutdown();
    stranger.shutdown();
}

#[test]
fn discovering_a_silent_address_times_out_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path());
    // Accepts TCP and never speaks: the handshake never completes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let began = Instant::now();
    let e = t.discover(&addr, Duration::from_secs(1)).unwrap_err();
    assert!(
        matches!(&e, ReplicationError::DiscoveryTimeout { addr: a, .. } if *a == addr),
        "{e:?}"
    );
    assert_eq!(e.code(), "discovery_timeout");
    assert!(e.is_retryable());
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    // Nothing listening at all: refused, retried, then the same error.
    drop(silent);
    let e = t.discover(&addr, Duration::from_millis(500)).unwrap_err();
    assert!(
        matches!(e, ReplicationError::DiscoveryTimeout { .. }),
        "{e:?}"
    );
    // An address that is not one is refused at once.
    assert!(matches!(
        t.discover("not an address", CALL),
        Err(ReplicationError::InvalidAddress { .. })
    ));
    t.shutdown();
}

// ---- a raft cluster over libp2p ----

const G: GroupId = 1;

/// Lets a test replace a node's transport while its raft loop runs.
struct Swap(RwLock<Arc<P2pTransport>>, RwLock<Option<ChunkServer>>);

impl Transport for Swap {
    fn send(&self, to: NodeId, batch: Vec<GroupMessage>) {
        self.0.read().send(to, batch);
    }

    fn fetch_chunk(
        &self,
        from: NodeId,
        key: &SnapshotKey,
        chunk: u32,
    ) -> Result<Vec<u8>, ReplicationError> {
        let t = self.0.read().clone();
        t.fetch_chunk(from, key, chunk)
    }

    fn serve_snapshots(&self, server: ChunkServer) {
        *self.1.write() = Some(server.clone());
        self.0.read().serve_snapshots(server);
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
    // (whose chunks travel on the snapshot protocol).
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
            let swap = Arc::new(Swap(RwLock::new(t.clone()), RwLock::default()));
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
        if let Some(server) = member.transport.1.read().clone() {
            fresh.serve_snapshots(server);
        }
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
        // The leader compacts past the follower's log (not only what it
        // applied: it may hold entries it never learned were committed):
        // it will need a snapshot.
        let deadline = Instant::now() + WAIT;
        let leader = c.leader();
        let follower_last = c.members[&follower].node.status(G).unwrap().last_index;
        while c.members[&leader].node.status(G).unwrap().first_index <= follower_last + 1 {
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
        "the follower was restored from a snapshot (fetched on the snapshot protocol)"
    );
    assert!(c.members[&follower].node.counters().snapshots_installed >= 1);
}
