//! Raft applies of single upserts on a 10k-document shard (or `DOCS`), with an anchor
//! mark entry every `EVERY` writes (0: never), as `engine/benches/anchors.rs`
//! (`apply_with_marks`) runs them, but a fixed number (`WRITES`), so that
//! the instructions they take can be counted: on a shared machine a count
//! is steady where times are not (`BENCHMARKS.md`, issue 9).
//!
//!   cargo build --release -p stratosdb-engine --example apply_marks
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     --collect-atstart=no --toggle-collect='*counted_writes*' \
//!     target/release/examples/apply_marks EVERY WRITES [DOCS]
//!
//! callgrind prints the instructions of `counted_writes` (its thread's) as
//! "Collected"; divide by `WRITES`. `WARM_UP` writes run first, not counted.

use std::hint::black_box;

use stratosdb_engine::Shard;

#[path = "../benches/common/mark_workload.rs"]
mod mark_workload;
use mark_workload::{apply_write, shard_of};

/// The shard's documents unless `DOCS` is given.
const DOCS: u64 = 10_000;

/// `writes` applies from raft index `index` on, as the bench's.
#[inline(never)]
fn apply_writes(
    shard: &Shard,
    index: &mut u64,
    (every, docs): (u64, u64),
    writes: std::ops::Range<u64>,
) {
    for i in writes {
        black_box(apply_write(shard, index, every, docs, i));
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let (Some(Ok(every)), Some(Ok(writes)), docs) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: apply_marks EVERY WRITES [DOCS]");
        std::process::exit(2);
    };
    let Ok(docs) = docs.unwrap_or(Ok(DOCS)) else {
        eprintln!("DOCS: a number");
        std::process::exit(2);
    };
    let (_engine, shard) = shard_of(docs);
    let mut index = 0;
    // Not counted: the views, records and cleanup reach their steady state.
    apply_writes(&shard, &mut index, (every, docs), 0..WARM_UP);
    counted_writes(&shard, &mut index, (every, docs), WARM_UP..WARM_UP + writes);
}

const WARM_UP: u64 = 3_000;

#[inline(never)]
fn counted_writes(
    shard: &Shard,
    index: &mut u64,
    params: (u64, u64),
    writes: std::ops::Range<u64>,
) {
    apply_writes(shard, index, params, writes);
}
