//! The shard and the writes that `benches/anchors.rs` (`apply_with_marks`)
//! times and `examples/apply_marks.rs` counts the instructions of.

use stratosdb_engine::{ApplyOutcome, Command, Durability, Engine, Op, Shard, Value};

/// A document of about 120 bytes of canonical JSON.
pub fn document(i: u64, version: u64) -> Value {
    Value::from_json_str(&format!(
        r#"{{"_id":"k{i:07}","name":"user {i}","age":{},"city":"city-{}","active":{},"v":{version}}}"#,
        i % 100,
        i % 50,
        i.is_multiple_of(2)
    ))
    .expect("valid document")
}

/// A shard whose collection `c` holds documents 0..n.
pub fn shard_of(n: u64) -> (Engine, Shard) {
    let engine = Engine::open_temporary().expect("engine");
    let shard = engine.shard(0).expect("shard");
    shard.create_collection("c").expect("collection");
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let ops = chunk
            .iter()
            .map(|&i| Op::Insert {
                collection: "c".into(),
                doc: document(i, 0),
            })
            .collect();
        shard.write(ops, Durability::Buffered).expect("load");
    }
    (engine, shard)
}

/// Write number `i` as raft applies, after `*index` (the last raft index
/// applied, advanced here): an upsert of document `i * 7919 % docs`, with an
/// anchor mark entry before it when `i` is a multiple of `every` (0: never).
pub fn apply_write(shard: &Shard, index: &mut u64, every: u64, docs: u64, i: u64) -> ApplyOutcome {
    if every > 0 && i.is_multiple_of(every) {
        let mark = Command {
            ops: vec![Op::AnchorMark { epoch: i / every }],
        };
        *index += 1;
        shard.apply(*index, &mark.encode()).expect("mark");
    }
    let write = Command {
        ops: vec![Op::Upsert {
            collection: "c".into(),
            doc: document(i * 7919 % docs, i),
        }],
    };
    *index += 1;
    shard.apply(*index, &write.encode()).expect("apply")
}
