//! What a client that trusts only the chain pays to check one served
//! document (BENCHMARKS.md, "Anchor marks and anchored proofs"), beside the
//! floor of any check measured in the same run, hashing the document alone
//! (canonical form + SHA-256):
//!
//! - `verify/N`: [`ReadProof::verify_anchored`] of a decoded bundle: the
//!   document to the root of its mark in a shard of N documents (16-ary trie),
//!   that shard leaf to the epoch's cluster root (`rs_merkle`, 64 leaves);
//! - `decode_and_verify/N`: the same from the bundle's JSON, as a reply
//!   carries it (hex hashes, the document as JSON).
//!
//! 10k documents; with `STRATOSDB_BENCH_FULL=1` also 1M. Times are the
//! benchmark thread's CPU time, not wall time: the rate per core the target
//! speaks of, which other work on a shared machine does not dilute (it still
//! disturbs caches).
//!
//!   STRATOSDB_BENCH_FULL=1 cargo bench -p stratosdb-verifier --bench read_proofs

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stratosdb_proof::hash::doc_hash;
use stratosdb_verifier::leaves::sort_leaves;
#[path = "../../../benches/common/cpu_time.rs"]
mod cpu_time;
use cpu_time::ThreadCpuTime;
// The shard of `engine/benches/anchors.rs` (its writes are not used here).
#[path = "../../../engine/benches/common/mark_workload.rs"]
#[allow(dead_code)]
mod mark_workload;
use mark_workload::shard_of;

use stratosdb_verifier::{
    AnchorPayload, AnchorProof, LeafProof, ReadProof, ShardLeaf, cluster_root,
};

fn sizes() -> Vec<u64> {
    if std::env::var("STRATOSDB_BENCH_FULL").is_ok_and(|v| v == "1") {
        vec![10_000, 1_000_000]
    } else {
        vec![10_000]
    }
}

/// 1000 bundles of documents of a shard of `n` (shard 3 of collection `c`,
/// in an epoch of 8 collections x 8 shards), and the epoch's anchor payload.
fn bundles(n: u64) -> (Vec<ReadProof>, AnchorPayload) {
    let (_engine, shard) = shard_of(n);
    let mark = shard.record_anchor_mark(1).expect("mark");
    let mut leaves: Vec<ShardLeaf> = ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .flat_map(|c| {
            (0..8u32).map(|s| ShardLeaf {
                collection: (*c).into(),
                shard: s,
                raft_index: 1000 + u64::from(s),
                root: [s as u8 + 1; 32],
            })
        })
        .collect();
    let ours = leaves
        .iter_mut()
        .find(|l| l.collection == "c" && l.shard == 3)
        .expect("leaf");
    ours.raft_index = mark.raft_index;
    ours.root = mark.root;
    sort_leaves(&mut leaves);
    let index = leaves
        .iter()
        .position(|l| l.collection == "c" && l.shard == 3)
        .expect("leaf");
    let anchor = AnchorPayload {
        cluster_id: [9; 32],
        epoch: 1,
        cluster_root: cluster_root(&leaves),
        leaf_count: leaves.len() as u32,
        previous: [0; 32],
    };
    let leaf_proof = LeafProof::new(&leaves, index).expect("leaf proof");
    let bundles = (0..1000u64)
        .map(|i| {
            let id = format!("k{:07}", i * 7919 % n);
            let a = shard
                .prove_anchored("c", &id)
                .expect("prove")
                .expect("anchored");
            ReadProof {
                collection: "c".into(),
                leaf_collection: None,
                shard: 3,
                id,
                raft_index: a.mark.raft_index,
                shard_root: a.mark.root,
                proof: a.proof,
                document: a.doc,
                anchor: Some(AnchorProof {
                    epoch: 1,
                    cluster_root: anchor.cluster_root,
                    reference: "ledger:1:00".into(),
                    leaf_proof: leaf_proof.clone(),
                }),
            }
        })
        .collect();
    (bundles, anchor)
}

fn read_proofs(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("read_proof_verify");
    group.throughput(Throughput::Elements(1));
    let mut baseline_docs = Vec::new();
    for n in sizes() {
        let (bundles, anchor) = bundles(n);
        for b in &bundles {
            b.verify_anchored(&anchor).expect("verifies");
        }
        if baseline_docs.is_empty() {
            baseline_docs = bundles.iter().filter_map(|b| b.document.clone()).collect();
        }
        let json: Vec<Vec<u8>> = bundles
            .iter()
            .map(|b| serde_json::to_vec(b).expect("json"))
            .collect();
        let next = AtomicUsize::new(0);
        group.bench_with_input(BenchmarkId::new("verify", n), &n, |b, _| {
            b.iter(|| {
                let bundle = &bundles[next.fetch_add(1, Ordering::Relaxed) % bundles.len()];
                bundle.verify_anchored(&anchor).expect("verifies")
            })
        });
        group.bench_with_input(BenchmarkId::new("decode_and_verify", n), &n, |b, _| {
            b.iter(|| {
                let bytes = &json[next.fetch_add(1, Ordering::Relaxed) % json.len()];
                let bundle: ReadProof = serde_json::from_slice(bytes).expect("decodes");
                bundle.verify_anchored(&anchor).expect("verifies")
            })
        });
    }
    let next = AtomicUsize::new(0);
    group.bench_function("sha256_of_document", |b| {
        b.iter(|| {
            let doc = &baseline_docs[next.fetch_add(1, Ordering::Relaxed) % baseline_docs.len()];
            black_box(doc_hash(doc))
        })
    });
    // What one level of a 16-ary proof costs at least: the SHA-256 of a
    // full inner node (tag, bitmap, 16 hashes: 515 bytes, 9 blocks).
    let node = [7u8; 3 + 16 * 32];
    group.bench_function("sha256_of_full_node", |b| {
        b.iter(|| black_box(<sha2::Sha256 as sha2::Digest>::digest(black_box(&node))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = read_proofs
}
criterion_main!(benches);
