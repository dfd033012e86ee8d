//! Engine benchmarks, each beside its baseline measured in the same run:
//! raw sled doing the same bytes. Ratios, not absolute times, are what
//! BENCHMARKS.md reports (`benches/ratios.py` prints them).
//!
//!   cargo bench --bench engine
//!
//! Set STRATOSDB_BENCH_FULL=1 to include the 1M-document Merkle measurement.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stratosdb_engine::proof::encode_value;
use stratosdb_engine::{
    ApplyOutcome, Command, Durability, Engine, IndexRange, IndexSpec, Op, PatchChange, Shard, Value,
};

const CITIES: usize = 50;

/// A document of about 1 KiB.
fn document(i: u64) -> Value {
    let bio: String = (0..900)
        .map(|k| (b'a' + ((i as usize * 31 + k * 7) % 26) as u8) as char)
        .collect();
    Value::from_json_str(&format!(
        r#"{{"_id":"u{i:08}","name":"user {i}","age":{},"city":"city-{}","active":{},"bio":"{bio}"}}"#,
        i % 100,
        i % CITIES as u64,
        i.is_multiple_of(2)
    ))
    .expect("valid document")
}

fn encoded(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(doc, &mut out);
    out
}

fn engine_with_indexes() -> (Engine, Shard) {
    let engine = Engine::open_temporary().expect("engine");
    let shard = engine.shard(0).expect("shard");
    shard.create_collection("users").expect("collection");
    shard
        .create_index("users", IndexSpec::new("by_age", &["age"]))
        .expect("index");
    shard
        .create_index("users", IndexSpec::new("by_city", &["city"]))
        .expect("index");
    (engine, shard)
}

fn load(shard: &Shard, n: u64) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let ops = chunk
            .iter()
            .map(|&i| Op::Insert {
                collection: "users".into(),
                doc: document(i),
            })
            .collect();
        shard.write(ops, Durability::Buffered).expect("load");
    }
}

fn raw_sled(n: u64) -> sled::Tree {
    let db = sled::Config::new().temporary(true).open().expect("sled");
    let tree = db.open_tree("raw").expect("tree");
    for i in 0..n {
        let doc = document(i);
        tree.insert(format!("u{i:08}"), encoded(&doc))
            .expect("insert");
    }
    tree
}

fn inserts(c: &mut Criterion) {
    let mut group = c.benchmark_group("insert_1k");
    group.throughput(Throughput::Elements(1));
    // Documents are prepared outside the timed loop for every side.
    let docs: Vec<Value> = (0..200_000).map(document).collect();
    let doc_at = |i: u64| &docs[(i % docs.len() as u64) as usize];
    let index_key = |name: &str, i: u64| format!("{name}/{:03}/{i:08}", i % 100);
    {
        // The baseline: one plain sled insert of the same bytes.
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("raw").expect("tree");
        let next = AtomicU64::new(0);
        group.bench_function("raw_sled", |b| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                tree.insert(format!("u{i:08}"), encoded(doc_at(i)))
                    .expect("insert");
            })
        });
        // Where sled's floor is for what the engine must write: the document
        // and two index entries, as plain inserts and as one atomic batch.
        group.bench_function("raw_sled_doc_and_2_index_keys", |b| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                tree.insert(format!("u{i:08}"), encoded(doc_at(i)))
                    .expect("insert");
                tree.insert(index_key("age", i), &b"x"[..]).expect("insert");
                tree.insert(index_key("city", i), &b"x"[..])
                    .expect("insert");
            })
        });
        group.bench_function("raw_sled_atomic_batch_doc_and_2_index_keys", |b| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let mut batch = sled::Batch::default();
                batch.insert(format!("u{i:08}").as_bytes(), encoded(doc_at(i)));
                batch.insert(index_key("age", i).as_bytes(), &b"x"[..]);
                batch.insert(index_key("city", i).as_bytes(), &b"x"[..]);
                tree.apply_batch(batch).expect("batch");
            })
        });
    }
    {
        let (_engine, shard) = engine_with_indexes();
        let next = AtomicU64::new(0);
        group.bench_function("engine_2_indexes_merkle", |b| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                shard
                    .write(
                        vec![Op::Insert {
                            collection: "users".into(),
                            doc: with_id(doc_at(i), i),
                        }],
                        Durability::Buffered,
                    )
                    .expect("insert");
            })
        });
    }
    group.finish();

    // Bulk loading: 100 documents per write (per atomic batch for the engine).
    let mut group = c.benchmark_group("insert_1k_batch_100");
    group.throughput(Throughput::Elements(100));
    {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("raw").expect("tree");
        let next = AtomicU64::new(0);
        group.bench_function("raw_sled", |b| {
            b.iter(|| {
                for _ in 0..100 {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    tree.insert(format!("u{i:08}"), encoded(doc_at(i)))
                        .expect("insert");
                }
            })
        });
    }
    {
        let (_engine, shard) = engine_with_indexes();
        let next = AtomicU64::new(0);
        group.bench_function("engine_2_indexes_merkle", |b| {
            b.iter(|| {
                let ops = (0..100)
                    .map(|_| {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        Op::Insert {
                            collection: "users".into(),
                            doc: with_id(doc_at(i), i),
                        }
                    })
                    .collect();
                shard.write(ops, Durability::Buffered).expect("insert");
            })
        });
    }
    group.finish();
}

/// The replicated write path: 64 single-document insert commands (as raft
/// entries carry them) applied as one batch, against 64 raw sled inserts of the
/// same document bytes; and sled's own floor for what the batch must store
/// (each document and its two index entries, in one atomic batch).
fn apply_batches(c: &mut Criterion) {
    const RUN: u64 = 64;
    let mut group = c.benchmark_group("apply_batch_64");
    group.throughput(Throughput::Elements(RUN));
    let docs: Vec<Value> = (0..20_000).map(document).collect();
    let doc_at = |i: u64| &docs[(i % docs.len() as u64) as usize];
    let next = AtomicU64::new(0);
    let prepared_bytes = || -> Vec<(String, Vec<u8>)> {
        (0..RUN)
            .map(|_| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                (format!("u{i:08}"), encoded(doc_at(i)))
            })
            .collect()
    };
    {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("raw").expect("tree");
        group.bench_function("raw_sled_64_inserts", |b| {
            b.iter_batched(
                prepared_bytes,
                |docs| {
                    for (key, bytes) in docs {
                        tree.insert(key, bytes).expect("insert");
                    }
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("raw_sled_one_batch_docs_and_2_index_keys", |b| {
            b.iter_batched(
                prepared_bytes,
                |docs| {
                    // Index keys spread over the key space as the engine's do
                    // (100 ages, 50 cities, then the _id).
                    let mut batch = sled::Batch::default();
                    for (key, bytes) in docs {
                        let i: u64 = key[1..].parse().expect("a numbered key");
                        let age = format!("age/{:03}/{key}", i % 100);
                        let city = format!("city/{:03}/{key}", i % 50);
                        batch.insert(age.as_bytes(), key.as_bytes());
                        batch.insert(city.as_bytes(), key.as_bytes());
                        batch.insert(key.as_bytes(), bytes);
                    }
                    tree.apply_batch(batch).expect("batch");
                },
                BatchSize::SmallInput,
            )
        });
    }
    {
        let (_engine, shard) = engine_with_indexes();
        let raft_index = AtomicU64::new(shard.applied_index().expect("applied") + 1);
        group.bench_function("engine_apply_batch", |b| {
            b.iter_batched(
                || {
                    (0..RUN)
                        .map(|_| {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let command = Command {
                                ops: vec![Op::Insert {
                                    collection: "users".into(),
                                    doc: with_id(doc_at(i), i),
                                }],
                            };
                            (raft_index.fetch_add(1, Ordering::Relaxed), command.encode())
                        })
                        .collect::<Vec<_>>()
                },
                |entries| {
                    let batch: Vec<(u64, &[u8])> =
                        entries.iter().map(|(i, c)| (*i, c.as_slice())).collect();
                    let outcomes = shard.apply_batch(&batch).expect("apply");
                    debug_assert!(
                        outcomes
                            .iter()
                            .all(|o| matches!(o, ApplyOutcome::Applied(_)))
                    );
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Opening a shard rebuilds its Merkle trie from the document records' hashes:
/// the cost of a restart, against sled opening the same files and scanning
/// every record once (what any rebuild must at least do).
fn open_shard(c: &mut Criterion) {
    const DOCS: u64 = 100_000;
    let mut group = c.benchmark_group("open_100k");
    group.sample_size(10);
    let dir = tempfile::tempdir().expect("dir");
    let config = || stratosdb_engine::EngineConfig {
        cache_bytes: 64 << 20,
        ..Default::default()
    };
    {
        let engine = Engine::open(dir.path(), config()).expect("engine");
        let shard = engine.shard(0).expect("shard");
        shard.create_collection("m").expect("collection");
        for chunk in (0..DOCS).collect::<Vec<_>>().chunks(5000) {
            let ops = chunk
                .iter()
                .map(|i| Op::Insert {
                    collection: "m".into(),
                    doc: Value::from_json_str(&format!(r#"{{"_id":"k{i}","v":{i}}}"#))
                        .expect("doc"),
                })
                .collect();
            shard.write(ops, Durability::Buffered).expect("load");
        }
        engine.flush().expect("flush");
        eprintln!(
            "open_100k: the trie holds {} bytes per document",
            shard.merkle_memory_bytes() as u64 / DOCS
        );
    }
    group.bench_function("raw_sled_open_and_scan", |b| {
        b.iter(|| {
            let db = sled::Config::new()
                .path(dir.path())
                .cache_capacity(64 << 20)
                .open()
                .expect("sled");
            let mut n = 0usize;
            for name in db.tree_names() {
                for item in db.open_tree(name).expect("tree").iter() {
                    n += item.expect("item").1.len();
                }
            }
            black_box(n)
        })
    });
    group.bench_function("engine_open_and_rebuild", |b| {
        b.iter(|| {
            let engine = Engine::open(dir.path(), config()).expect("engine");
            black_box(engine.shard(0).expect("shard").root().expect("root"))
        })
    });
    group.finish();
}

/// The document with a fresh `_id` (the prepared ones repeat after 200k).
fn with_id(doc: &Value, i: u64) -> Value {
    let mut doc = doc.clone();
    if let Value::Object(m) = &mut doc {
        m.insert("_id".into(), Value::String(format!("n{i:08}")));
    }
    doc
}

fn gets(c: &mut Criterion) {
    const N: u64 = 20_000;
    let mut group = c.benchmark_group("get_1k");
    group.throughput(Throughput::Elements(1));
    let tree = raw_sled(N);
    let (_engine, shard) = engine_with_indexes();
    load(&shard, N);
    let key = |i: u64| format!("u{:08}", (i * 7919) % N);
    let next = AtomicU64::new(0);
    group.bench_function("raw_sled", |b| {
        b.iter(|| {
            let k = key(next.fetch_add(1, Ordering::Relaxed));
            black_box(tree.get(k.as_bytes()).expect("get"))
        })
    });
    group.bench_function("engine_get_raw", |b| {
        b.iter(|| {
            let k = key(next.fetch_add(1, Ordering::Relaxed));
            black_box(shard.get_raw("users", &k).expect("get"))
        })
    });
    group.bench_function("engine_get_decoded", |b| {
        b.iter(|| {
            let k = key(next.fetch_add(1, Ordering::Relaxed));
            black_box(shard.get("users", &k).expect("get"))
        })
    });
    group.finish();

    // Index range scan of 100 documents (ages 40..=40 hold N/100 = 200; take
    // the first 100), against sled scanning 100 consecutive entries.
    let mut group = c.benchmark_group("range_scan_100");
    group.throughput(Throughput::Elements(100));
    group.bench_function("raw_sled", |b| {
        b.iter(|| {
            let n = tree
                .range("u00005000".as_bytes()..)
                .take(100)
                .map(|r| r.expect("scan").1.len())
                .sum::<usize>();
            black_box(n)
        })
    });
    group.bench_function("engine_index_scan_and_fetch", |b| {
        let range = IndexRange::prefix(vec![Value::Int(40)]);
        b.iter(|| {
            let mut n = 0;
            for id in shard
                .index_scan("users", "by_age", &range, false)
                .expect("scan")
                .take(100)
            {
                let doc = shard.get_raw("users", &id.expect("id")).expect("get");
                n += doc.map_or(0, |d| d.bytes().len());
            }
            black_box(n)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("proof");
    group.throughput(Throughput::Elements(1));
    group.bench_function("generate", |b| {
        let next = AtomicU64::new(0);
        b.iter(|| {
            let k = key(next.fetch_add(1, Ordering::Relaxed));
            black_box(shard.prove("users", &k).expect("prove"))
        })
    });
    let proofs: Vec<_> = (0..1000)
        .map(|i| shard.prove("users", &key(i)).expect("prove"))
        .collect();
    group.bench_function("verify", |b| {
        let next = AtomicU64::new(0);
        b.iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize % proofs.len();
            let (root, proof, doc) = &proofs[i];
            proof.verify(root, doc.as_ref()).expect("verifies");
        })
    });
    group.finish();
}

/// The cost of one Merkle update (a patch of a small field rewrites one leaf
/// and its path) as the shard grows: it must grow like log n.
fn merkle_growth(c: &mut Criterion) {
    let full = std::env::var("STRATOSDB_BENCH_FULL").is_ok_and(|v| v == "1");
    let sizes: &[u64] = if full {
        &[10_000, 1_000_000]
    } else {
        &[10_000, 100_000]
    };
    let mut group = c.benchmark_group("merkle_update");
    group.throughput(Throughput::Elements(1));
    for &n in sizes {
        let engine = Engine::open_temporary().expect("engine");
        let shard = engine.shard(0).expect("shard");
        shard.create_collection("m").expect("collection");
        for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
            let ops = chunk
                .iter()
                .map(|i| Op::Insert {
                    collection: "m".into(),
                    doc: Value::from_json_str(&format!(r#"{{"_id":"k{i}","v":0}}"#)).expect("doc"),
                })
                .collect();
            shard.write(ops, Durability::Buffered).expect("load");
        }
        let depth: usize = (0..200)
            .map(|i| match shard.prove("m", &format!("k{}", i * 37 % n)) {
                Ok((_, stratosdb_engine::proof::Proof::Inclusion(p), _)) => p.levels.len(),
                _ => 0,
            })
            .sum();
        eprintln!(
            "merkle_update/{n}: mean path length {:.2} inner nodes",
            depth as f64 / 200.0
        );
        let next = AtomicU64::new(0);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                shard
                    .write(
                        vec![Op::Patch {
                            collection: "m".into(),
                            id: format!("k{}", (i * 7919) % n),
                            changes: vec![PatchChange::Set {
                                path: "v".into(),
                                value: Value::Int(i as i64),
                            }],
                        }],
                        Durability::Buffered,
                    )
                    .expect("patch")
            })
        });
        drop(shard);
        drop(engine);
    }
    group.finish();

    // The raw-sled baseline of the same work without any Merkle state: a point
    // overwrite of a small value, at the same sizes.
    let mut group = c.benchmark_group("sled_overwrite");
    group.throughput(Throughput::Elements(1));
    for &n in sizes {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        for i in 0..n {
            db.insert(format!("k{i}"), &b"0"[..]).expect("insert");
        }
        let next = AtomicU64::new(0);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let k = format!("k{}", (i * 7919) % n);
                let v = db.get(&k).expect("get");
                db.insert(k, v.map_or(vec![0], |v| v.to_vec()))
                    .expect("insert")
            })
        });
    }
    group.finish();
}

/// Durable (`Durability::Sync`) inserts from one writer vs four at once: with
/// group commit the four share flushes, so their total throughput is higher.
fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync_insert_small");
    group.throughput(Throughput::Elements(1));
    for writers in [1u64, 4] {
        let dir = tempfile::tempdir().expect("dir");
        let engine =
            Engine::open(dir.path(), stratosdb_engine::EngineConfig::default()).expect("engine");
        let shard = engine.shard(0).expect("shard");
        shard.create_collection("s").expect("collection");
        let next = std::sync::Arc::new(AtomicU64::new(0));
        group.bench_function(format!("{writers}_writers"), |b| {
            b.iter_custom(|iters| {
                let per_writer = iters.div_ceil(writers);
                let started = std::time::Instant::now();
                std::thread::scope(|scope| {
                    for _ in 0..writers {
                        let (shard, next) = (&shard, next.clone());
                        scope.spawn(move || {
                            for _ in 0..per_writer {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let doc = Value::from_json_str(&format!(r#"{{"_id":"s{i}"}}"#))
                                    .expect("doc");
                                shard
                                    .write(
                                        vec![Op::Insert {
                                            collection: "s".into(),
                                            doc,
                                        }],
                                        Durability::Sync,
                                    )
                                    .expect("insert");
                            }
                        });
                    }
                });
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(30);
    targets = inserts, apply_batches, open_shard, gets, merkle_growth, group_commit
}
criterion_main!(benches);
