//! Anchor marks: recorded at a raft index with the root as of the entries
//! before it, the same on every replica however the log is batched; kept per
//! epoch (the first mark wins), bounded, across restarts and in snapshots.

use stratosdb_engine::{
    AnchorMark, ApplyOutcome, Command, Durability, Engine, EngineConfig, EngineError, MARK_HISTORY,
    Op, Shard, Value,
};

fn replica() -> (tempfile::TempDir, Engine, Shard) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let shard = engine.shard(5).unwrap();
    (dir, engine, shard)
}

fn cmd(op: Op) -> Vec<u8> {
    Command { ops: vec![op] }.encode()
}

fn insert(id: &str, n: i64) -> Op {
    Op::Upsert {
        collection: "c".into(),
        doc: Value::from_json_str(&format!(r#"{{"_id":"{id}","n":{n}}}"#)).unwrap(),
    }
}

/// A log of writes with a mark of epoch `e` after every 7th write; the
/// indexes of the marks' entries.
fn log() -> (Vec<Vec<u8>>, Vec<u64>) {
    let mut entries = vec![cmd(Op::CreateCollection { name: "c".into() })];
    let mut marks = Vec::new();
    for i in 0..60i64 {
        entries.push(cmd(insert(&format!("d{}", i % 23), i)));
        if i % 5 == 4 {
            entries.push(cmd(Op::Delete {
                collection: "c".into(),
                id: format!("d{}", i % 11),
            }));
        }
        if i % 7 == 6 {
            entries.push(cmd(Op::AnchorMark {
                epoch: (i / 7) as u64 + 1,
            }));
            marks.push(entries.len() as u64);
        }
    }
    (entries, marks)
}

fn indexed(entries: &[Vec<u8>]) -> Vec<(u64, &[u8])> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u64 + 1, e.as_slice()))
        .collect()
}

fn applied_mark(outcome: &ApplyOutcome) -> AnchorMark {
    match outcome {
        ApplyOutcome::Applied(outcomes) => outcomes[0].mark.expect("a mark outcome"),
        other => panic!("not applied: {other:?}"),
    }
}

#[test]
fn replicas_record_the_same_marks_however_the_log_is_batched() {
    let (entries, mark_indexes) = log();
    let all = indexed(&entries);
    // One entry at a time, and the root read just before each mark's entry.
    let (_d1, _e1, one) = replica();
    let mut expected = Vec::new();
    for &(index, bytes) in &all {
        if mark_indexes.contains(&index) {
            let root_before = one.root().unwrap();
            let mark = applied_mark(&one.apply(index, bytes).unwrap());
            assert_eq!(mark.raft_index, index);
            assert_eq!(mark.root, root_before);
            expected.push(mark);
        } else {
            one.apply(index, bytes).unwrap();
        }
    }
    assert_eq!(one.anchor_marks(), expected);
    assert!(expected.len() >= 8);

    // The whole log in batches of 10 (marks fall in the middle of batches)
    // and in one batch: the same marks, reported by the outcomes too.
    for size in [10, all.len()] {
        let (_d, _e, other) = replica();
        let mut reported = Vec::new();
        for batch in all.chunks(size) {
            for (outcome, (index, _)) in other.apply_batch(batch).unwrap().iter().zip(batch) {
                if mark_indexes.contains(index) {
                    reported.push(applied_mark(outcome));
                }
            }
        }
        assert_eq!(reported, expected, "batches of {size}");
        assert_eq!(other.anchor_marks(), expected, "batches of {size}");
        assert_eq!(other.root().unwrap(), one.root().unwrap());
    }
}

#[test]
fn a_mark_in_the_middle_of_a_batch_records_the_root_as_of_that_point() {
    let entries = [
        cmd(Op::CreateCollection { name: "c".into() }),
        cmd(insert("a", 1)),
        cmd(Op::AnchorMark { epoch: 1 }),
        cmd(insert("b", 2)),
    ];
    let (_d, _e, shard) = replica();
    let outcomes = shard.apply_batch(&indexed(&entries)).unwrap();
    let mark = applied_mark(&outcomes[2]);

    let (_d2, _e2, reference) = replica();
    reference.apply_batch(&indexed(&entries[..2])).unwrap();
    assert_eq!(mark.root, reference.root().unwrap());
    assert_eq!(mark.raft_index, 3);
    assert_ne!(mark.root, shard.root().unwrap(), "b came after the mark");
}

#[test]
fn the_first_mark_of_an_epoch_stays_and_older_epochs_are_refused() {
    let (_d, _e, shard) = replica();
    let entries = [
        cmd(Op::CreateCollection { name: "c".into() }),
        cmd(Op::AnchorMark { epoch: 4 }),
        cmd(insert("a", 1)),
        // The same epoch again (a new leader re-proposing): the first stays.
        cmd(Op::AnchorMark { epoch: 4 }),
        // An older epoch, unmarked: refused, on every replica alike.
        cmd(Op::AnchorMark { epoch: 3 }),
        // A mark with another operation in its command: refused.
        Command {
            ops: vec![Op::AnchorMark { epoch: 5 }, insert("b", 2)],
        }
        .encode(),
    ];
    let outcomes = shard.apply_batch(&indexed(&entries)).unwrap();
    let first = applied_mark(&outcomes[1]);
    let ApplyOutcome::Applied(again) = &outcomes[3] else {
        panic!("{:?}", outcomes[3]);
    };
    assert_eq!(again[0].mark, Some(first));
    assert_eq!((again[0].affected, outcomes_affected(&outcomes[1])), (0, 1));
    for (i, why) in [(4, "older than the latest"), (5, "only operation")] {
        match &outcomes[i] {
            ApplyOutcome::Rejected(e @ EngineError::InvalidAnchorMark(_)) => {
                assert!(e.to_string().contains(why), "{e}");
                assert_eq!(e.code(), "invalid_anchor_mark");
            }
            other => panic!("entry {i}: {other:?}"),
        }
    }
    assert_eq!(shard.anchor_marks(), vec![first]);
    assert!(shard.get("c", "b").unwrap().is_none(), "nothing changed");
    assert_eq!(shard.applied_index().unwrap(), 6);

    // The same through a direct write.
    let err = shard
        .write(
            vec![insert("b", 2), Op::AnchorMark { epoch: 9 }],
            Durability::Buffered,
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid_anchor_mark");
    assert!(shard.get("c", "b").unwrap().is_none());
    assert_eq!(shard.latest_anchor_mark(), Some(first));
}

fn outcomes_affected(outcome: &ApplyOutcome) -> u64 {
    match outcome {
        ApplyOutcome::Applied(o) => o[0].affected,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_direct_write_marks_at_the_applied_index() {
    let (_d, _e, shard) = replica();
    shard
        .apply(41, &cmd(Op::CreateCollection { name: "c".into() }))
        .unwrap();
    shard
        .insert("c", Value::from_json_str(r#"{"_id":"x"}"#).unwrap())
        .unwrap();
    let mark = shard.record_anchor_mark(2).unwrap();
    assert_eq!(
        mark,
        AnchorMark {
            epoch: 2,
            raft_index: 41,
            root: shard.root().unwrap()
        }
    );
}

#[test]
fn marks_survive_a_restart_and_the_history_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let extra = 6u64;
    let kept = {
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let shard = engine.shard(5).unwrap();
        shard
            .apply(1, &cmd(Op::CreateCollection { name: "c".into() }))
            .unwrap();
        let total = MARK_HISTORY as u64 + extra;
        // In batches of 100, so pruning happens inside batches as well.
        let entries: Vec<Vec<u8>> = (1..=total)
            .map(|epoch| {
                if epoch % 3 == 0 {
                    cmd(insert(&format!("d{epoch}"), 0))
                } else {
                    cmd(Op::AnchorMark { epoch })
                }
            })
            .collect();
        let indexed: Vec<(u64, &[u8])> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 2, e.as_slice()))
            .collect();
        for batch in indexed.chunks(100) {
            shard.apply_batch(batch).unwrap();
        }
        // Then MARK_HISTORY marks more, so the oldest are pruned.
        let base = total + 1;
        for (i, epoch) in (total + 1..=total + MARK_HISTORY as u64 + extra).enumerate() {
            let index = base + 1 + i as u64;
            applied_mark(&shard.apply(index, &cmd(Op::AnchorMark { epoch })).unwrap());
        }
        let kept = shard.anchor_marks();
        assert_eq!(kept.len(), MARK_HISTORY);
        assert_eq!(kept[0].epoch, total + extra + 1);
        assert_eq!(shard.anchor_mark(total).unwrap(), None);
        engine.flush().unwrap();
        kept
    };
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let shard = engine.shard(5).unwrap();
    assert_eq!(
        shard.anchor_marks(),
        kept,
        "the same marks, no more, after a restart"
    );
    let latest = *kept.last().unwrap();
    assert_eq!(shard.latest_anchor_mark(), Some(latest));
    assert_eq!(shard.anchor_mark(latest.epoch).unwrap(), Some(latest));
}

#[test]
fn marks_travel_in_snapshots() {
    let (entries, _) = log();
    let (_d1, _e1, source) = replica();
    source.apply_batch(&indexed(&entries)).unwrap();
    let mut chunks = Vec::new();
    source
        .export_snapshot(512, |c| {
            chunks.push(c);
            Ok(())
        })
        .unwrap();
    let (dir, engine, target) = replica();
    target.record_anchor_mark(99).unwrap();
    target.import_snapshot(chunks).unwrap();
    assert_eq!(target.anchor_marks(), source.anchor_marks());
    // A mark of an epoch the snapshot holds keeps the snapshot's.
    let latest = source.latest_anchor_mark().unwrap();
    let next = entries.len() as u64 + 1;
    let again = applied_mark(
        &target
            .apply(
                next,
                &cmd(Op::AnchorMark {
                    epoch: latest.epoch,
                }),
            )
            .unwrap(),
    );
    assert_eq!(again, latest);
    drop(target);
    drop(engine);
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let target = engine.shard(5).unwrap();
    assert_eq!(target.anchor_marks(), source.anchor_marks());
}
