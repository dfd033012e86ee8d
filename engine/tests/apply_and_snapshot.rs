//! What replication will rely on: deterministic apply at raft indexes, an
//! applied index that survives restarts, and snapshots that move a shard and
//! refuse anything that does not rebuild to the exporter's root.

use std::ops::Bound;

use stratosdb_engine::{
    ApplyOutcome, Command, Durability, Engine, EngineConfig, EngineError, IndexRange, IndexSpec,
    Op, PatchChange, Shard, Value,
};

fn commands() -> Vec<Vec<u8>> {
    let v = |s: String| Value::from_json_str(&s).unwrap();
    let mut out = vec![
        Command {
            ops: vec![
                Op::CreateCollection {
                    name: "users".into(),
                },
                Op::CreateIndex {
                    collection: "users".into(),
                    spec: IndexSpec::new("by_age", &["age"]),
                },
                // The collection is empty: one chunk completes the build.
                Op::BuildIndex {
                    collection: "users".into(),
                    index: "by_age".into(),
                    max_docs: 1024,
                },
            ],
        }
        .encode(),
    ];
    for i in 0..200 {
        let mut ops = vec![Op::Insert {
            collection: "users".into(),
            doc: v(format!(
                r#"{{"_id":"u{i}","age":{},"tags":["t{}"]}}"#,
                i % 50,
                i % 7
            )),
        }];
        if i % 10 == 9 {
            ops.push(Op::Patch {
                collection: "users".into(),
                id: format!("u{}", i - 5),
                changes: vec![PatchChange::Set {
                    path: "address.city".into(),
                    value: "Paris".into(),
                }],
            });
            ops.push(Op::Delete {
                collection: "users".into(),
                id: format!("u{}", i - 9),
            });
        }
        if i == 100 {
            // A duplicate: rejected the same way everywhere.
            ops.push(Op::Insert {
                collection: "users".into(),
                doc: v(r#"{"_id":"u3"}"#.into()),
            });
        }
        out.push(Command { ops }.encode());
    }
    out
}

fn replica() -> (tempfile::TempDir, Engine, Shard) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let shard = engine.shard(3).unwrap();
    (dir, engine, shard)
}

/// A replica that applied `cmds`, and its snapshot in chunks of 4 KiB.
fn exported(cmds: &[Vec<u8>]) -> (tempfile::TempDir, Engine, Shard, Vec<Vec<u8>>) {
    let (dir, engine, source) = replica();
    for (i, cmd) in cmds.iter().enumerate() {
        source.apply(i as u64 + 1, cmd).unwrap();
    }
    let mut chunks = Vec::new();
    source
        .export_snapshot(4096, |c| {
            chunks.push(c);
            Ok(())
        })
        .unwrap();
    (dir, engine, source, chunks)
}

fn docs(shard: &Shard) -> Vec<String> {
    shard
        .scan("users", Bound::Unbounded, Bound::Unbounded, false)
        .unwrap()
        .map(|r| r.unwrap().1.to_json_string())
        .collect()
}

#[test]
fn replicas_applying_the_same_log_agree() {
    let cmds = commands();
    let (_d1, _e1, a) = replica();
    let (_d2, _e2, b) = replica();
    let mut rejected = 0;
    for (i, cmd) in cmds.iter().enumerate() {
        let index = i as u64 + 1;
        let outcome = a.apply(index, cmd).unwrap();
        if matches!(
            outcome,
            ApplyOutcome::Rejected(EngineError::DuplicateId { .. })
        ) {
            rejected += 1;
        }
        b.apply(index, cmd).unwrap();
        // Re-delivery of an applied entry is a no-op.
        assert!(matches!(
            b.apply(index, cmd).unwrap(),
            ApplyOutcome::AlreadyApplied
        ));
    }
    assert_eq!(rejected, 1);
    assert_eq!(a.root().unwrap(), b.root().unwrap());
    assert_eq!(docs(&a), docs(&b));
    assert_eq!(a.applied_index().unwrap(), cmds.len() as u64);
    let by_age = |s: &Shard| -> Vec<String> {
        s.index_scan("users", "by_age", &IndexRange::all(), true)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(by_age(&a), by_age(&b));
}

#[test]
fn applied_index_and_data_survive_restart() {
    let cmds = commands();
    let dir = tempfile::tempdir().unwrap();
    let (root, count) = {
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let shard = engine.shard(3).unwrap();
        for (i, cmd) in cmds.iter().take(50).enumerate() {
            shard.apply(i as u64 + 1, cmd).unwrap();
        }
        engine.flush().unwrap();
        (
            shard.root().unwrap(),
            shard.collection("users").unwrap().count,
        )
    };
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let shard = engine.shard(3).unwrap();
    assert_eq!(shard.applied_index().unwrap(), 50);
    assert_eq!(shard.root().unwrap(), root);
    assert_eq!(shard.root_from_scratch().unwrap(), root);
    assert_eq!(shard.collection("users").unwrap().count, count);
    assert!(matches!(
        shard.apply(50, &cmds[49]).unwrap(),
        ApplyOutcome::AlreadyApplied
    ));
    assert!(matches!(
        shard.apply(51, &cmds[50]).unwrap(),
        ApplyOutcome::Applied(_)
    ));
}

#[test]
fn snapshot_moves_a_shard_and_checks_its_root() {
    let cmds = commands();
    let (_d1, _e1, source) = replica();
    for (i, cmd) in cmds.iter().enumerate() {
        source.apply(i as u64 + 1, cmd).unwrap();
    }
    let mut chunks = Vec::new();
    let summary = source
        .export_snapshot(4096, |c| {
            chunks.push(c);
            Ok(())
        })
        .unwrap();
    assert!(chunks.len() > 3, "streamed in several chunks");
    assert_eq!(summary.root, source.root().unwrap());

    // The target has unrelated data that the snapshot replaces.
    let (dir, engine, target) = replica();
    target.create_collection("old").unwrap();
    target
        .insert("old", Value::from_json_str(r#"{"_id":"x"}"#).unwrap())
        .unwrap();
    let imported = target.import_snapshot(chunks.clone()).unwrap();
    assert_eq!(imported.root, summary.root);
    assert_eq!(target.root().unwrap(), source.root().unwrap());
    assert_eq!(target.collections(), vec!["users".to_string()]);
    assert_eq!(docs(&target), docs(&source));
    assert_eq!(target.applied_index().unwrap(), cmds.len() as u64);
    let ids: Vec<String> = target
        .index_scan(
            "users",
            "by_age",
            &IndexRange::prefix(vec![Value::Int(7)]),
            false,
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!ids.is_empty());

    // The switch is durable: a restart sees the imported shard.
    drop(target);
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let target = engine.shard(3).unwrap();
    assert_eq!(target.root().unwrap(), summary.root);
    assert_eq!(docs(&target), docs(&source));
}

#[test]
fn tampered_or_truncated_snapshots_change_nothing() {
    let cmds = commands();
    let (_d1, _e1, _source, chunks) = exported(&cmds);
    let (_d2, _e2, target) = replica();
    target.create_collection("old").unwrap();
    let before = target.root().unwrap();

    // A document changed in flight: the rebuilt root differs.
    let mut tampered = chunks.clone();
    let victim = &mut tampered[1];
    let pos = victim
        .windows(3)
        .position(|w| w == b"u10")
        .expect("an id in the chunk");
    victim[pos + 2] = b'9';
    let e = target.import_snapshot(tampered).unwrap_err();
    assert!(matches!(e, EngineError::SnapshotRejected(_)), "{e}");

    // A chunk missing.
    let mut missing = chunks.clone();
    missing.remove(2);
    let e = target.import_snapshot(missing).unwrap_err();
    assert!(e.to_string().contains("documents"), "{e}");

    // Cut short before the end chunk, and garbage.
    let e = target
        .import_snapshot(chunks[..chunks.len() - 1].to_vec())
        .unwrap_err();
    assert!(e.to_string().contains("end chunk"), "{e}");
    let e = target.import_snapshot(vec![vec![0xFF; 10]]).unwrap_err();
    assert!(matches!(e, EngineError::SnapshotRejected(_)), "{e}");

    assert_eq!(target.root().unwrap(), before);
    assert_eq!(target.collections(), vec!["old".to_string()]);
}

/// Reads that run while snapshots are imported over and over never meet
/// the tree an import switched away from: the applied index, a point read
/// and a scan begun before a switch all answer (the old tree is dropped
/// once its last reader is done), and the shard ends on the last import.
#[test]
fn reads_during_snapshot_imports_never_fail() {
    let cmds = commands();
    let (_d1, _e1, source, chunks) = exported(&cmds);
    let expected = docs(&source);
    let (_d2, engine, target) = replica();
    target.import_snapshot(chunks.clone()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(target.applied_index().unwrap(), cmds.len() as u64);
                assert!(target.get("users", "u199").unwrap().is_some());
                let mut scan = target
                    .scan("users", Bound::Unbounded, Bound::Unbounded, false)
                    .unwrap();
                let first = scan.next().unwrap().unwrap();
                std::thread::yield_now();
                let rest: Vec<_> = scan.map(Result::unwrap).collect();
                assert_eq!(rest.len() + 1, expected.len(), "after {}", first.0);
                reads += 1;
            }
            reads
        });
        for _ in 0..20 {
            target.import_snapshot(chunks.clone()).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert_eq!(docs(&target), expected);
    // Old generations are gone from the store once nothing reads them.
    let fresh = engine.shard(3).unwrap();
    assert_eq!(fresh.applied_index().unwrap(), cmds.len() as u64);
}

#[test]
fn a_removed_shard_is_gone_and_comes_back_empty() {
    let cmds = commands();
    let (dir, engine, shard) = replica();
    for (i, cmd) in cmds.iter().enumerate() {
        shard.apply(i as u64 + 1, cmd).unwrap();
    }
    let other = engine.shard(4).unwrap();
    other.create_collection("kept").unwrap();
    drop(shard);
    assert!(engine.remove_shard(3).unwrap());
    assert!(!engine.remove_shard(3).unwrap(), "already gone");
    assert_eq!(engine.shard_ids().unwrap(), [4]);
    // Gone after a restart too, and the other shard untouched.
    drop(other);
    drop(engine);
    // sled lets go of the folder's lock when its last handle is gone, which
    // after a flush of many deletions can be its background flusher's, a
    // moment after our drop: retry the reopen for a bounded time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let engine = loop {
        match Engine::open(dir.path(), EngineConfig::default()) {
            Ok(engine) => break engine,
            Err(e) if std::time::Instant::now() < deadline && e.code() == "data_dir_in_use" => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("reopening: {e}"),
        }
    };
    assert_eq!(engine.shard_ids().unwrap(), [4]);
    assert_eq!(engine.shard(4).unwrap().collections(), ["kept"]);
    let again = engine.shard(3).unwrap();
    assert!(again.collections().is_empty());
    assert_eq!(again.applied_index().unwrap(), 0);
}

/// Writes made in the middle of an export (to documents it already read, to
/// ones it has not reached, deletes, inserts, a new collection) leave it what
/// the shard was when it started: it imports to the root taken then.
#[test]
fn an_export_is_the_shard_at_its_start_while_writes_go_on() {
    let engine = Engine::open_temporary().unwrap();
    let source = engine.shard(5).unwrap();
    let doc = |s: String| Value::from_json_str(&s).unwrap();
    for c in ["a", "b"] {
        source.create_collection(c).unwrap();
        for i in 0..300 {
            let d = format!(
                r#"{{"_id":"{c}{i:04}","v":"old","pad":"{}"}}"#,
                "x".repeat(100)
            );
            source.insert(c, doc(d)).unwrap();
        }
    }
    let root_before = source.root().unwrap();
    let upsert = |c: &str, id: &str| Op::Upsert {
        collection: c.into(),
        doc: doc(format!(r#"{{"_id":"{id}","v":"new"}}"#)),
    };
    let delete = |c: &str, id: &str| Op::Delete {
        collection: c.into(),
        id: id.into(),
    };
    let mut wrote = false;
    let mut chunks = Vec::new();
    let summary = source
        .export_snapshot_paced(
            4 << 10,
            |c| {
                chunks.push(c);
                Ok(())
            },
            |read| {
                if read != 150 || wrote {
                    return;
                }
                wrote = true;
                let ops = vec![
                    upsert("a", "a0010"), // read already
                    upsert("a", "a0200"), // not read yet
                    delete("a", "a0250"), // not read yet: must still travel
                    delete("a", "a0020"), // read already
                    upsert("a", "a0999"), // new, past the cursor
                    upsert("b", "b0100"), // another collection, not read yet
                    delete("b", "b0005"), // deleted, then written again
                    upsert("b", "b0005"),
                    Op::CreateCollection { name: "c".into() },
                ];
                source.write(ops, Durability::Buffered).unwrap();
                source.insert("c", doc(r#"{"_id":"c1"}"#.into())).unwrap();
            },
        )
        .unwrap();
    assert!(wrote, "the writes ran in the middle of the export");
    assert_eq!(summary.root, root_before);
    assert_eq!(summary.documents, 600);
    assert_ne!(source.root().unwrap(), root_before, "the writes went in");

    let target = Engine::open_temporary().unwrap().shard(5).unwrap();
    let imported = target.import_snapshot(chunks).unwrap();
    assert_eq!(imported.root, root_before);
    assert_eq!(target.root().unwrap(), root_before);
    for (c, id) in [
        ("a", "a0010"),
        ("a", "a0200"),
        ("b", "b0100"),
        ("b", "b0005"),
    ] {
        let got = target.get(c, id).unwrap().expect(id);
        assert!(
            got.to_json_string().contains(r#""v":"old""#),
            "{id}: {got:?}"
        );
    }
    assert!(target.get("a", "a0250").unwrap().is_some());
    assert!(target.get("a", "a0999").unwrap().is_none());
    assert!(!target.collections().contains(&"c".to_string()));
    // Nothing is left registered: a later write is not recorded anywhere.
    source
        .write(vec![upsert("a", "a0001")], Durability::Buffered)
        .unwrap();
}

/// An import is prepared beside the shard (which keeps its contents and
/// takes writes meanwhile), two side by side each in a tree of its own; the
/// one committed is what the shard then holds, the other is dropped.
#[test]
fn imports_are_prepared_beside_the_shard_then_committed() {
    let doc = |s: String| Value::from_json_str(&s).unwrap();
    let source = |n: usize| {
        let shard = Engine::open_temporary().unwrap().shard(9).unwrap();
        shard.create_collection("c").unwrap();
        for i in 0..n {
            shard
                .insert("c", doc(format!(r#"{{"_id":"s{i:03}"}}"#)))
                .unwrap();
        }
        let mut chunks = Vec::new();
        let summary = shard
            .export_snapshot(1 << 10, |c| {
                chunks.push(c);
                Ok(())
            })
            .unwrap();
        (summary.root, chunks)
    };
    let (root_a, chunks_a) = source(50);
    let (root_b, chunks_b) = source(80);

    let engine = Engine::open_temporary().unwrap();
    let target = engine.shard(9).unwrap();
    target.create_collection("own").unwrap();
    let before = target.root().unwrap();
    let a = target.prepare_import(chunks_a).unwrap();
    let b = target.prepare_import(chunks_b).unwrap();
    assert_eq!(a.summary().root, root_a);
    assert_eq!(b.summary().root, root_b);
    // Untouched, and writable, while the imports wait.
    assert_eq!(target.root().unwrap(), before);
    target.insert("own", doc(r#"{"_id":"x"}"#.into())).unwrap();
    drop(a);
    let summary = target.commit_import(b).unwrap();
    assert_eq!(summary.root, root_b);
    assert_eq!(target.root().unwrap(), root_b);
    assert_eq!(target.collection("c").unwrap().count, 80);
    assert!(target.get("own", "x").is_err() || target.get("own", "x").unwrap().is_none());
    // A preparation for another shard is refused by this one.
    let other = engine.shard(10).unwrap();
    let (_, chunks_c) = source(5);
    let c = other.prepare_import(chunks_c).unwrap();
    assert!(target.commit_import(c).is_err());
}
