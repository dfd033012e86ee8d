//! Snapshot chunks over libp2p (`/stratosdb/snapshot/1`) on real sockets
//! (127.0.0.1, ports chosen by the OS): a member fetches a multi-chunk
//! snapshot and installs it with the exporter's root; a non-member cannot
//! fetch; a snapshot the sender no longer has is reported as such.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stratosdb_engine::{Engine, Value};
use stratosdb_replication::p2p::{P2pConfig, P2pTransport};
use stratosdb_replication::snapshot::SnapshotFiles;
use stratosdb_replication::{ReplicationError, SnapshotKey, Transport};

fn start(dir: &std::path::Path) -> P2pTransport {
    let mut c = P2pConfig::new(dir, "127.0.0.1:0");
    c.backoff_max = Duration::from_millis(300);
    c.snapshot_fetch_timeout = Duration::from_secs(5);
    P2pTransport::start(c).unwrap()
}

/// `a` accepts `b` and knows where it listens.
fn know(a: &P2pTransport, b: &P2pTransport) {
    a.allow_peer(b.peer_id()).unwrap();
    let addr = b.local_socket_addr().unwrap().to_string();
    a.set_peer_addresses(b.peer_id(), &[&addr]).unwrap();
}

/// Fetches a chunk, retrying while the first connection comes up.
fn fetch(t: &P2pTransport, from: u64, key: &SnapshotKey, n: u32) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match t.fetch_chunk(from, key, n) {
            Ok(bytes) => return bytes,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("chunk {n}: {e}"),
        }
    }
}

#[test]
fn a_member_fetches_a_multi_chunk_snapshot_and_a_stranger_cannot() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, stranger) = (
        start(&dirs[0].path().join("p2p")),
        start(&dirs[1].path().join("p2p")),
        start(&dirs[2].path().join("p2p")),
    );
    know(&a, &b);
    know(&b, &a);
    // The stranger knows `a`, but `a` does not count it as a member.
    know(&stranger, &a);

    // `a` exports a shard of 300 documents in 2 KiB chunks and serves them.
    let engine = Engine::open_temporary().unwrap();
    let shard = engine.shard(5).unwrap();
    shard.create_collection("c").unwrap();
    for i in 0..300 {
        let doc = format!(r#"{{"_id":"d{i:04}","pad":"{}"}}"#, "p".repeat(280));
        shard
            .insert("c", Value::from_json_str(&doc).unwrap())
            .unwrap();
    }
    let files_a = SnapshotFiles::open(dirs[0].path(), Duration::from_secs(600), 1 << 30).unwrap();
    let descriptor = files_a
        .export(&shard, 2 << 10, a.node_id(), |_| Ok(1))
        .unwrap();
    assert!(
        descriptor.chunks.len() >= 24,
        "{} chunks",
        descriptor.chunks.len()
    );
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    a.serve_snapshots(Arc::new(move |_, key, n| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(files_a.read_outgoing_chunk(key, n)?.0)
    }));

    // `b` fetches every chunk into its incoming files, then installs.
    let files_b = SnapshotFiles::open(dirs[1].path(), Duration::from_secs(600), 1 << 30).unwrap();
    let mut incoming = files_b.begin_incoming(&descriptor).unwrap();
    while !incoming.is_full() {
        let n = incoming.next_chunk();
        let bytes = fetch(&b, a.node_id(), &descriptor.key, n);
        incoming.put(n, &bytes).unwrap();
    }
    incoming.finish().unwrap();
    let target_engine = Engine::open_temporary().unwrap();
    let target = target_engine.shard(5).unwrap();
    files_b.install_incoming(&descriptor, &target).unwrap();
    assert_eq!(target.root().unwrap(), shard.root().unwrap());
    assert_eq!(served.load(Ordering::SeqCst), descriptor.chunks.len());

    // A snapshot `a` does not have is "not found", which is final.
    let missing = SnapshotKey {
        index: descriptor.key.index + 1,
        ..descriptor.key
    };
    assert!(matches!(
        b.fetch_chunk(a.node_id(), &missing, 0),
        Err(ReplicationError::SnapshotNotFound { .. })
    ));

    // The stranger's streams are dropped unanswered; `a` serves it nothing.
    let before = served.load(Ordering::SeqCst);
    let refused = stranger.fetch_chunk(a.node_id(), &descriptor.key, 0);
    assert!(refused.is_err(), "a non-member fetched a chunk");
    // And `b` cannot ask a node it does not count as a member at all.
    assert!(matches!(
        b.fetch_chunk(stranger.node_id(), &descriptor.key, 0),
        Err(ReplicationError::UnknownNode(_))
    ));
    assert_eq!(served.load(Ordering::SeqCst), before);
    for t in [&a, &b, &stranger] {
        t.shutdown();
    }
}
