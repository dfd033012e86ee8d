//! CREATE INDEX and DROP COLLECTION run in bounded chunks: an index is built
//! chunk by chunk while writers keep writing, is unused until complete, and
//! resumes after a restart; a drop leaves garbage that is deleted in batches.

use std::collections::BTreeSet;
use std::ops::Bound;

use stratosdb_engine::{
    Durability, Engine, EngineConfig, EngineError, IndexRange, IndexSpec, Op, Shard, Value,
};

fn doc(id: usize, age: i64) -> Value {
    Value::from_json_str(&format!(r#"{{"_id":"d{id:05}","age":{age}}}"#)).unwrap()
}

fn load(shard: &Shard, n: usize) {
    shard.create_collection("c").unwrap();
    let ops = (0..n)
        .map(|i| Op::Insert {
            collection: "c".into(),
            doc: doc(i, (i % 50) as i64),
        })
        .collect();
    shard.write(ops, Durability::Buffered).unwrap();
}

fn write(shard: &Shard, op: Op) -> Result<(), EngineError> {
    shard.write(vec![op], Durability::Buffered).map(|_| ())
}

/// Declares `by_age` without building it (as a replicated CREATE INDEX does).
fn declare_index(shard: &Shard) {
    let op = Op::CreateIndex {
        collection: "c".into(),
        spec: IndexSpec::new("by_age", &["age"]),
    };
    write(shard, op).unwrap();
}

fn build_chunk(shard: &Shard, max_docs: u32) {
    write(
        shard,
        Op::BuildIndex {
            collection: "c".into(),
            index: "by_age".into(),
            max_docs,
        },
    )
    .unwrap();
}

/// (age, _id) pairs from the index, and the same from a full scan.
fn index_vs_scan(shard: &Shard) -> (Vec<String>, Vec<String>) {
    let from_index: Vec<String> = shard
        .index_scan("c", "by_age", &IndexRange::all(), false)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut from_scan: Vec<(Value, String)> = shard
        .scan("c", Bound::Unbounded, Bound::Unbounded, false)
        .unwrap()
        .map(|r| {
            let (id, d) = r.unwrap();
            let age = match &d {
                Value::Object(m) => m.get("age").cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            };
            (age, id)
        })
        .collect();
    from_scan.sort();
    (
        from_index,
        from_scan.into_iter().map(|(_, id)| id).collect(),
    )
}

#[test]
fn writes_between_build_chunks_are_indexed_and_the_index_is_unused_until_complete() {
    let engine = Engine::open_temporary().unwrap();
    let shard = engine.shard(0).unwrap();
    load(&shard, 1000);
    declare_index(&shard);
    let mut chunks = 0;
    let mut next_id = 1000;
    while shard
        .collection("c")
        .unwrap()
        .building
        .iter()
        .any(|b| b.index.spec.name == "by_age")
    {
        // Not complete: queries cannot use it.
        assert!(shard.collection("c").unwrap().index("by_age").is_err());
        assert!(
            shard
                .index_scan("c", "by_age", &IndexRange::all(), false)
                .is_err()
        );
        build_chunk(&shard, 97);
        chunks += 1;
        // Writers on both sides of the build's cursor: inserts, updates, deletes.
        for k in [chunks * 13 % 1000, (chunks * 131 + 500) % 1000] {
            let id = format!("d{k:05}");
            write(
                &shard,
                Op::Delete {
                    collection: "c".into(),
                    id,
                },
            )
            .unwrap();
            let replaced = doc(k + 1, 77);
            write(
                &shard,
                Op::Upsert {
                    collection: "c".into(),
                    doc: replaced,
                },
            )
            .unwrap();
        }
        write(
            &shard,
            Op::Insert {
                collection: "c".into(),
                doc: doc(next_id, 3),
            },
        )
        .unwrap();
        next_id += 1;
        assert!(chunks < 100, "the build does not finish");
    }
    assert!(
        chunks >= 10,
        "1000 documents in chunks of 97 take at least 11 chunks, took {chunks}"
    );
    let (from_index, from_scan) = index_vs_scan(&shard);
    assert_eq!(from_index, from_scan);
    assert_eq!(shard.root().unwrap(), shard.root_from_scratch().unwrap());
}

#[test]
fn an_interrupted_build_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let shard = engine.shard(0).unwrap();
        load(&shard, 3000);
        declare_index(&shard);
        build_chunk(&shard, 1000);
        engine.flush().unwrap();
        // Each chunk is one atomic batch: stopping here is what a crash between
        // two chunks leaves on disk.
    }
    let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
    let shard = engine.shard(0).unwrap();
    let info = shard.collection("c").unwrap();
    assert_eq!(info.building.len(), 1);
    assert!(info.building[0].after.is_some());
    shard.finish_interrupted_work().unwrap();
    assert!(shard.collection("c").unwrap().building.is_empty());
    let (from_index, from_scan) = index_vs_scan(&shard);
    assert_eq!(from_index.len(), 3000);
    assert_eq!(from_index, from_scan);
}

#[test]
fn a_unique_index_the_data_breaks_is_refused_and_removed() {
    let engine = Engine::open_temporary().unwrap();
    let shard = engine.shard(0).unwrap();
    load(&shard, 3000);
    let err = shard
        .create_index("c", IndexSpec::new("by_age", &["age"]).unique())
        .unwrap_err();
    assert!(matches!(err, EngineError::UniqueViolation { .. }), "{err}");
    let info = shard.collection("c").unwrap();
    assert!(info.indexes.is_empty() && info.building.is_empty());
    // Its partial entries were garbage, and are gone.
    assert_eq!(shard.collect_garbage(usize::MAX).unwrap(), 0);
    shard
        .create_index("c", IndexSpec::new("by_age", &["age"]))
        .unwrap();
}

#[test]
fn a_dropped_collection_leaves_garbage_deleted_in_bounded_batches() {
    let engine = Engine::open_temporary().unwrap();
    let shard = engine.shard(0).unwrap();
    load(&shard, 2000);
    shard
        .create_index("c", IndexSpec::new("by_age", &["age"]))
        .unwrap();
    let keep = Op::CreateCollection {
        name: "other".into(),
    };
    write(&shard, keep).unwrap();
    shard.insert("other", doc(1, 1)).unwrap();
    let root_of_other = shard.root_from_scratch().unwrap();

    write(&shard, Op::DropCollection { name: "c".into() }).unwrap();
    // Gone at once, from the catalog and from the root.
    assert!(shard.collection("c").is_err());
    assert_eq!(shard.root().unwrap(), shard.root_from_scratch().unwrap());
    assert_ne!(shard.root().unwrap(), root_of_other, "the root must change");
    // 2000 documents and 2000 index entries, 500 keys per batch.
    let mut batches = Vec::new();
    loop {
        let n = shard.collect_garbage(500).unwrap();
        if n == 0 {
            break;
        }
        batches.push(n);
    }
    assert!(batches.iter().all(|&n| n <= 500), "{batches:?}");
    // The markers are deleted with the last keys of their range.
    assert!(batches.iter().sum::<usize>() >= 4000, "{batches:?}");
    // A new collection of the same name starts empty.
    shard.create_collection("c").unwrap();
    assert_eq!(
        shard
            .scan("c", Bound::Unbounded, Bound::Unbounded, false)
            .unwrap()
            .count(),
        0
    );
    assert_eq!(shard.get("other", "d00001").unwrap(), Some(doc(1, 1)));
    let ids: BTreeSet<String> = shard.collections().into_iter().collect();
    assert_eq!(ids, BTreeSet::from(["c".to_string(), "other".to_string()]));
}
