//! Raft applies of single upserts on a 10k-document shard, with an anchor
//! mark entry every `EVERY` writes (0: never), as `engine/benches/anchors.rs`
//! (`apply_with_marks`) runs them, but a fixed number (`WRITES`), so that
//! the instructions they take can be counted: on a shared machine a count
//! is steady where times are not (`BENCHMARKS.md`, issue 9).
//!
//!   cargo build --release -p stratosdb-engine --example apply_marks
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --collect-atstart=no --toggle-collect='*counted_writes*' \
//!     target/release/examples/apply_marks EVERY WRITES
//!
//! callgrind prints the instructions of `counted_writes` (its thread's) as
//! "Collected"; divide by `WRITES`. `WARM_UP` writes run first, not counted.

use std::hint::black_box;

use stratosdb_engine::{Command, Durability, Engine, Op, Shard, Value};

const DOCS: u64 = 10_000;

/// A document of about 120 bytes of canonical JSON.
fn document(i: u64, version: u64) -> Value {
    Value::from_json_str(&format!(
        r#"{{"_id":"k{i:07}","name":"user {i}","age":{},"city":"city-{}","active":{},"v":{version}}}"#,
        i % 100,
        i % 50,
        i.is_multiple_of(2)
    ))
    .expect("valid document")
}

/// `writes` applies from raft index `index` on: an upsert of document
/// `i * 7919 % DOCS` each, a mark entry before every `every`-th.
#[inline(never)]
fn apply_writes(shard: &Shard, index: &mut u64, every: u64, writes: std::ops::Range<u64>) {
    for i in writes {
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
                doc: document(i * 7919 % DOCS, i),
            }],
        };
        *index += 1;
        black_box(shard.apply(*index, &write.encode()).expect("apply"));
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let (Some(Ok(every)), Some(Ok(writes))) = (args.next(), args.next()) else {
        eprintln!("usage: apply_marks EVERY WRITES");
        std::process::exit(2);
    };
    let engine = Engine::open_temporary().expect("engine");
    let shard = engine.shard(0).expect("shard");
    shard.create_collection("c").expect("collection");
    for chunk in (0..DOCS).collect::<Vec<_>>().chunks(5000) {
        let ops = chunk
            .iter()
            .map(|&i| Op::Insert {
                collection: "c".into(),
                doc: document(i, 0),
            })
            .collect();
        shard.write(ops, Durability::Buffered).expect("load");
    }
    let mut index = 1;
    // Not counted: the views, records and cleanup reach their steady state.
    apply_writes(&shard, &mut index, every, 0..WARM_UP);
    counted_writes(&shard, &mut index, every, WARM_UP..WARM_UP + writes);
}

const WARM_UP: u64 = 3_000;

#[inline(never)]
fn counted_writes(shard: &Shard, index: &mut u64, every: u64, writes: std::ops::Range<u64>) {
    apply_writes(shard, index, every, writes);
}
