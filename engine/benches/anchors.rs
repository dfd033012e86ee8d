//! Anchor marks and anchored proofs, each beside a baseline measured in the
//! same run (BENCHMARKS.md reports the ratios; `benches/ratios.py` prints them):
//!
//! - `proof_verify`: verifying an inclusion proof (anchored, from a shard of
//!   10k documents, and of 1M with `STRATOSDB_BENCH_FULL=1`) vs hashing the
//!   document alone (canonical form + SHA-256), the floor of any check;
//! - `anchored_prove`: a proof against the latest mark vs one against the
//!   current root, once writes have changed documents since the mark;
//! - `apply_with_marks`: applying single-write raft entries with an anchor
//!   mark every N writes vs never;
//! - the size of a proof, for one document and for 100, vs the documents
//!   (printed before the measurements).
//!
//! Times are CPU time (`benches/common/cpu_time.rs`), not wall time: the
//! machine these run on is shared.
//!
//!   cargo bench --workspace --bench anchors

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use stratosdb_engine::proof::hash::{doc_hash, key_hash, nibble};
use stratosdb_engine::proof::{Proof, canonical_json};
use stratosdb_engine::{Durability, Op, Shard, Value};

#[path = "../../benches/common/cpu_time.rs"]
mod cpu_time;
use cpu_time::{ProcessCpuTime, ThreadCpuTime};
#[path = "common/mark_workload.rs"]
mod mark_workload;
use mark_workload::{apply_write, document, shard_of};

fn id(i: u64) -> String {
    format!("k{i:07}")
}

fn sizes() -> Vec<u64> {
    if std::env::var("STRATOSDB_BENCH_FULL").is_ok_and(|v| v == "1") {
        vec![10_000, 1_000_000]
    } else {
        vec![10_000]
    }
}

/// Bytes of a proof in binary: per level a 2-byte bitmap and 32 bytes a
/// sibling, plus the terminal of a non-inclusion proof.
fn binary_size(proof: &Proof) -> usize {
    let (levels, terminal) = match proof {
        Proof::Inclusion(p) => (&p.levels, 0),
        Proof::NonInclusion(p) => (&p.levels, 65),
    };
    levels
        .iter()
        .map(|l| 2 + 32 * l.siblings.len())
        .sum::<usize>()
        + terminal
}

/// Bytes of one multiproof for several keys: each node on the union of their
/// paths once, with the hashes of its children that no path goes through.
fn multiproof_size(proofs: &[(String, &Proof)]) -> usize {
    use std::collections::BTreeMap;
    // (depth, the key's nibbles above) -> (bitmap, children on some path)
    let mut nodes: BTreeMap<(usize, Vec<u8>), (u16, u16)> = BTreeMap::new();
    for (id, proof) in proofs {
        let Proof::Inclusion(p) = proof else { continue };
        let key = key_hash("c", id);
        for (depth, level) in p.levels.iter().enumerate() {
            let prefix: Vec<u8> = (0..depth).map(|d| nibble(&key, d)).collect();
            let entry = nodes.entry((depth, prefix)).or_insert((level.bitmap, 0));
            entry.1 |= 1 << nibble(&key, depth);
        }
    }
    nodes
        .values()
        .map(|(bitmap, on_path)| 2 + 32 * (bitmap.count_ones() - on_path.count_ones()) as usize)
        .sum()
}

fn print_sizes(n: u64, shard: &Shard) {
    let canonical = |v: &Value| canonical_json(v).len();
    let one: Vec<(usize, usize, usize)> = (0..1000)
        .map(|i| {
            let a = shard
                .prove_anchored("c", &id(i * 7919 % n))
                .expect("prove")
                .expect("anchored");
            let doc = a.doc.as_ref().expect("present");
            let json = serde_json::to_vec(&a.proof).expect("json").len();
            (binary_size(&a.proof), json, canonical(doc))
        })
        .collect();
    let mean = |f: fn(&(usize, usize, usize)) -> usize| {
        one.iter().map(f).sum::<usize>() as f64 / one.len() as f64
    };
    let (bin, json, doc) = (mean(|t| t.0), mean(|t| t.1), mean(|t| t.2));
    eprintln!(
        "proof size, {n} documents, one document: {bin:.0} bytes binary ({:.2}x the document's {doc:.0}), {json:.0} bytes as JSON ({:.2}x)",
        bin / doc,
        json / doc
    );
    // A LIMIT 100 page: 100 consecutive _ids (spread over the trie by hashing).
    let ids: Vec<String> = (0..100).map(|i| id(n / 2 + i)).collect();
    let page = shard.prove_anchored_many("c", &ids).expect("prove");
    let page: Vec<_> = page.into_iter().map(|a| a.expect("anchored")).collect();
    let docs: usize = page
        .iter()
        .map(|a| canonical(a.doc.as_ref().expect("doc")))
        .sum();
    let bin: usize = page.iter().map(|a| binary_size(&a.proof)).sum();
    let json: usize = page
        .iter()
        .map(|a| serde_json::to_vec(&a.proof).expect("json").len())
        .sum();
    let with_ids: Vec<(String, &Proof)> = ids
        .iter()
        .cloned()
        .zip(page.iter().map(|a| &a.proof))
        .collect();
    let multi = multiproof_size(&with_ids);
    eprintln!(
        "proof size, {n} documents, LIMIT 100: documents {docs} bytes; 100 proofs {bin} bytes binary ({:.2}x), {json} as JSON ({:.2}x); one multiproof would be {multi} bytes ({:.2}x)",
        bin as f64 / docs as f64,
        json as f64 / docs as f64,
        multi as f64 / docs as f64
    );
}

fn verification<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("proof_verify");
    group.throughput(Throughput::Elements(1));
    let mut baseline_docs = Vec::new();
    for n in sizes() {
        let (engine, shard) = shard_of(n);
        shard.record_anchor_mark(1).expect("mark");
        print_sizes(n, &shard);
        let proofs: Vec<_> = (0..1000)
            .map(|i| {
                shard
                    .prove_anchored("c", &id(i * 7919 % n))
                    .expect("prove")
                    .expect("anchored")
            })
            .collect();
        if baseline_docs.is_empty() {
            baseline_docs = proofs.iter().filter_map(|a| a.doc.clone()).collect();
        }
        let next = AtomicU64::new(0);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let a = &proofs[next.fetch_add(1, Ordering::Relaxed) as usize % proofs.len()];
                a.proof
                    .verify(&a.mark.root, a.doc.as_ref())
                    .expect("verifies")
            })
        });
        drop(shard);
        drop(engine);
    }
    let next = AtomicU64::new(0);
    group.bench_function("sha256_of_document", |b| {
        b.iter(|| {
            let doc =
                &baseline_docs[next.fetch_add(1, Ordering::Relaxed) as usize % baseline_docs.len()];
            black_box(doc_hash(doc))
        })
    });
    group.finish();
}

/// Proofs against the mark once a tenth of the documents changed since it.
fn anchored_prove<M: Measurement>(c: &mut Criterion<M>) {
    let n = 10_000;
    let (_engine, shard) = shard_of(n);
    shard.record_anchor_mark(1).expect("mark");
    let changed: Vec<Op> = (0..n / 10)
        .map(|i| Op::Upsert {
            collection: "c".into(),
            doc: document(i * 10 + 1, 1),
        })
        .collect();
    shard.write(changed, Durability::Buffered).expect("changes");
    // Documents unchanged since the mark (ids not ending in 1).
    let unchanged = |i: u64| id((i * 7919 % n) / 10 * 10 + 2);
    let mut group = c.benchmark_group("anchored_prove");
    group.throughput(Throughput::Elements(1));
    let next = AtomicU64::new(0);
    group.bench_function("current_root", |b| {
        b.iter(|| black_box(shard.prove("c", &unchanged(next.fetch_add(1, Ordering::Relaxed)))))
    });
    group.bench_function("anchored", |b| {
        b.iter(|| {
            let a = shard
                .prove_anchored("c", &unchanged(next.fetch_add(1, Ordering::Relaxed)))
                .expect("prove");
            black_box(a.expect("anchored"))
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("anchored_many_100", |b| {
        b.iter(|| {
            let start = next.fetch_add(100, Ordering::Relaxed);
            let ids: Vec<String> = (start..start + 100).map(unchanged).collect();
            black_box(shard.prove_anchored_many("c", &ids).expect("prove"))
        })
    });
    group.finish();
}

/// Single-write raft entries (an upsert of a random document), with an
/// anchor mark entry every `every` writes (0: never), each on its own shard.
fn apply_with_marks<M: Measurement>(c: &mut Criterion<M>) {
    let n = 10_000;
    let mut group = c.benchmark_group("apply_with_marks");
    group.throughput(Throughput::Elements(1));
    for every in [0u64, 1000, 100] {
        let (_engine, shard) = shard_of(n);
        let mut index = 0;
        let mut writes = 0;
        let name = match every {
            0 => "no_marks".to_string(),
            n => format!("mark_every_{n}"),
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                writes += 1;
                black_box(apply_write(&shard, &mut index, every, n, writes - 1))
            })
        });
    }
    group.finish();
}

fn config<M: Measurement>(measurement: M) -> Criterion<M> {
    Criterion::default()
        .with_measurement(measurement)
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4))
}

// Verification and proving run on the bench's thread: its CPU time is the
// rate per core. An apply hands work to sled's threads: the process's.
criterion_group! {
    name = on_one_thread;
    config = config(ThreadCpuTime);
    targets = verification, anchored_prove
}
criterion_group! {
    name = applies;
    config = config(ProcessCpuTime);
    targets = apply_with_marks
}
// Wall time instead (`STRATOSDB_BENCH_WALL=1`), as the figures before
// 2026-12-07 were measured.
criterion_group! {
    name = wall;
    config = config(criterion::measurement::WallTime);
    targets = verification, anchored_prove, apply_with_marks
}

fn main() {
    if std::env::var("STRATOSDB_BENCH_WALL").is_ok_and(|v| v == "1") {
        wall();
    } else {
        on_one_thread();
        applies();
    }
    Criterion::default().configure_from_args().final_summary();
}
