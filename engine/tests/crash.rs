//! Crash test in sled's style: a child process writes batches with
//! `Durability::Sync` and reports each acknowledged one; the parent SIGKILLs it
//! at a random moment, reopens the files, and checks that every acknowledged
//! batch is there, no batch is torn, and the indexes and root match the
//! documents. Many rounds, each continuing from what the last one left.

use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use stratosdb_engine::{
    Command as EngineCommand, Durability, Engine, EngineConfig, IndexRange, IndexSpec, Op, Shard,
    Value,
};

const CHILD_ENV: &str = "STRATOSDB_CRASH_CHILD_DIR";
const CONCURRENT_CHILD_ENV: &str = "STRATOSDB_CRASH_CONCURRENT_CHILD_DIR";
const WRITERS: usize = 4;
const DOCS_PER_BATCH: u64 = 4;
const ROUNDS: usize = 12;

/// Runs only as the child: writes batches until killed (or 20 s pass).
#[test]
fn crash_child() {
    let Some((_engine, shard)) = open_as_child(CHILD_ENV) else {
        return;
    };
    if !shard.collections().contains(&"c".to_string()) {
        shard
            .write(
                vec![
                    Op::CreateCollection { name: "c".into() },
                    Op::CreateIndex {
                        collection: "c".into(),
                        spec: IndexSpec::new("by_batch", &["batch"]),
                    },
                    Op::BuildIndex {
                        collection: "c".into(),
                        index: "by_batch".into(),
                        max_docs: 1024,
                    },
                ],
                Durability::Sync,
            )
            .unwrap();
    }
    let mut n = last_batch(&shard) + 1;
    let started = Instant::now();
    let mut out = std::io::stdout();
    while started.elapsed() < Duration::from_secs(20) {
        let mut ops = vec![Op::Upsert {
            collection: "c".into(),
            doc: Value::from_json_str(&format!(r#"{{"_id":"counter","last":{n}}}"#)).unwrap(),
        }];
        for k in 0..DOCS_PER_BATCH {
            let pad = "p".repeat(((n * 7 + k) % 300) as usize);
            ops.push(Op::Insert {
                collection: "c".into(),
                doc: Value::from_json_str(&format!(
                    r#"{{"_id":"{n}-{k}","batch":{n},"pad":"{pad}"}}"#
                ))
                .unwrap(),
            });
            if n > 3 {
                ops.push(Op::Delete {
                    collection: "c".into(),
                    id: format!("{}-{k}", n - 3),
                });
            }
        }
        shard.write(ops, Durability::Sync).unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
        n += 1;
    }
}

fn last_batch(shard: &stratosdb_engine::Shard) -> u64 {
    match shard.get("c", "counter").unwrap() {
        Some(Value::Object(m)) => match m.get("last") {
            Some(Value::Int(i)) => *i as u64,
            other => panic!("counter holds {other:?}"),
        },
        _ => 0,
    }
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked = 0u64;
    for round in 0..ROUNDS {
        acked = acked.max(last_ack("crash_child", CHILD_ENV, dir.path(), &mut rng));

        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let shard = engine.shard(0).unwrap();
        if !shard.collections().contains(&"c".to_string()) {
            assert_eq!(
                acked, 0,
                "round {round}: acknowledged batches but no collection"
            );
            continue;
        }
        let last = last_batch(&shard);
        assert!(
            last >= acked,
            "round {round}: batch {acked} acknowledged, only {last} survived"
        );

        // No torn batch: exactly the last three batches are present, whole.
        let docs: Vec<(String, Value)> = shard
            .scan("c", Bound::Unbounded, Bound::Unbounded, false)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut expected: Vec<String> = (last.saturating_sub(2).max(1)..=last)
            .flat_map(|m| (0..DOCS_PER_BATCH).map(move |k| format!("{m}-{k}")))
            .collect();
        if last > 0 {
            expected.push("counter".into());
        }
        expected.sort();
        let ids: Vec<String> = docs.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, expected, "round {round}: last batch {last}");

        // Indexes and root agree with the documents.
        let mut by_batch: Vec<(i64, String)> = docs
            .iter()
            .filter_map(|(id, d)| match d.as_object()?.get("batch") {
                Some(Value::Int(b)) => Some((*b, id.clone())),
                _ => None,
            })
            .collect();
        by_batch.sort();
        let indexed: Vec<String> = shard
            .index_scan("c", "by_batch", &IndexRange::all(), false)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut want: Vec<String> = vec!["counter".into()]; // missing `batch` sorts first
        want.extend(by_batch.into_iter().map(|(_, id)| id));
        assert_eq!(indexed, want, "round {round}");
        assert_eq!(shard.root().unwrap(), shard.root_from_scratch().unwrap());
        assert_eq!(shard.collection("c").unwrap().count, docs.len() as u64);
    }
    assert!(
        acked > 0,
        "the child acknowledged nothing in {ROUNDS} rounds"
    );
    eprintln!("{ROUNDS} rounds of SIGKILL, {acked} batches acknowledged and checked");
}

/// Runs only as the child of the concurrent test: four threads write with
/// `Durability::Sync` at once (so their flushes are grouped) until killed.
#[test]
fn crash_concurrent_child() {
    let Some((engine, shard)) = open_as_child(CONCURRENT_CHILD_ENV) else {
        return;
    };
    if !shard.collections().contains(&"w".to_string()) {
        shard.create_collection("w").unwrap();
        engine.flush().unwrap();
    }
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (shard, out) = (shard.clone(), out.clone());
            std::thread::spawn(move || {
                let mut n = next_for_writer(&shard, t);
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(20) {
                    let doc = Value::from_json_str(&format!(r#"{{"_id":"t{t}-{n:06}","n":{n}}}"#))
                        .unwrap();
                    let result = shard
                        .write(
                            vec![Op::Insert {
                                collection: "w".into(),
                                doc,
                            }],
                            Durability::Sync,
                        )
                        .unwrap();
                    assert!(result.durable);
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ack {t} {n}").unwrap();
                    out.flush().unwrap();
                    n += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The numbers a writer has stored so far: 0..next.
fn writer_numbers(shard: &stratosdb_engine::Shard, t: usize) -> Vec<u64> {
    let prefix = format!("t{t}-");
    shard
        .scan(
            "w",
            Bound::Included(prefix.as_str()),
            Bound::Excluded(&format!("t{t}.")),
            false,
        )
        .unwrap()
        .map(|r| r.unwrap().0[prefix.len()..].parse().unwrap())
        .collect()
}

fn next_for_writer(shard: &stratosdb_engine::Shard, t: usize) -> u64 {
    writer_numbers(shard, t).last().map_or(0, |n| n + 1)
}

#[test]
fn group_committed_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked = [None::<u64>; WRITERS];
    for round in 0..6 {
        let acks = run_and_kill(
            "crash_concurrent_child",
            CONCURRENT_CHILD_ENV,
            dir.path(),
            &mut rng,
        );
        for ack in acks {
            let (t, n) = ack.split_once(' ').unwrap();
            let t: usize = t.parse().unwrap();
            acked[t] = acked[t].max(Some(n.parse().unwrap()));
        }
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let shard = engine.shard(0).unwrap();
        if !shard.collections().contains(&"w".to_string()) {
            assert!(acked.iter().all(Option::is_none), "round {round}");
            continue;
        }
        for (t, acked) in acked.iter().enumerate() {
            let numbers = writer_numbers(&shard, t);
            // Each writer's documents are a gap-free prefix: its writes are ordered.
            assert!(
                numbers.iter().enumerate().all(|(i, n)| i as u64 == *n),
                "round {round}, writer {t}"
            );
            if let Some(acked) = acked {
                assert!(
                    numbers.len() as u64 > *acked,
                    "round {round}: writer {t} lost acknowledged write {acked}"
                );
            }
        }
        assert_eq!(shard.root().unwrap(), shard.root_from_scratch().unwrap());
    }
    assert!(
        acked.iter().all(Option::is_some),
        "every writer acknowledged something: {acked:?}"
    );
}

const INDEX_CHILD_ENV: &str = "STRATOSDB_CRASH_INDEX_CHILD_DIR";
const INDEX_DOCS: u64 = 4000;

/// Runs only as the child of the index-build test: loads documents, then
/// builds, drops and rebuilds an index in chunks while a second thread keeps
/// writing, until killed.
#[test]
fn crash_index_child() {
    let Some((engine, shard)) = open_as_child(INDEX_CHILD_ENV) else {
        return;
    };
    if !shard.collections().contains(&"b".to_string()) {
        shard.create_collection("b").unwrap();
    }
    let loaded = shard.collection("b").unwrap().count;
    for start in (loaded..INDEX_DOCS).step_by(500) {
        let ops = (start..(start + 500).min(INDEX_DOCS))
            .map(|i| Op::Upsert {
                collection: "b".into(),
                doc: Value::from_json_str(&format!(r#"{{"_id":"d{i:05}","n":{}}}"#, i % 97))
                    .unwrap(),
            })
            .collect();
        shard.write(ops, Durability::Sync).unwrap();
    }
    engine.flush().unwrap();
    let writer = {
        let shard = shard.clone();
        std::thread::spawn(move || {
            for i in 0u64.. {
                let id = format!("d{:05}", (i * 7919) % INDEX_DOCS);
                let op = if i % 3 == 0 {
                    Op::Delete {
                        collection: "b".into(),
                        id,
                    }
                } else {
                    let doc = format!(r#"{{"_id":"{id}","n":{}}}"#, i % 89);
                    Op::Upsert {
                        collection: "b".into(),
                        doc: Value::from_json_str(&doc).unwrap(),
                    }
                };
                shard.write(vec![op], Durability::Buffered).unwrap();
            }
        })
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let info = shard.collection("b").unwrap();
        if info.has_index("by_n") {
            shard.drop_index("b", "by_n").unwrap();
        }
        shard
            .create_index("b", IndexSpec::new("by_n", &["n"]))
            .unwrap();
        engine.flush().unwrap();
    }
    drop(writer);
}

#[test]
fn index_builds_and_drops_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut saw_building = false;
    for round in 0..8 {
        // The first round loads; later ones die at any point of a build.
        let kill_after = if round == 0 {
            4000
        } else {
            rng.random_range(100..900)
        };
        run_and_kill_within("crash_index_child", INDEX_CHILD_ENV, dir.path(), kill_after);
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let shard = engine.shard(0).unwrap();
        if !shard.collections().contains(&"b".to_string()) {
            continue;
        }
        saw_building |= !shard.collection("b").unwrap().building.is_empty();
        // What the crash left is resumed: the build completes, garbage goes.
        shard.finish_interrupted_work().unwrap();
        assert_eq!(
            shard.collect_garbage(usize::MAX).unwrap(),
            0,
            "round {round}"
        );
        let info = shard.collection("b").unwrap();
        assert!(info.building.is_empty(), "round {round}");
        let mut docs: Vec<(Value, String)> = shard
            .scan("b", Bound::Unbounded, Bound::Unbounded, false)
            .unwrap()
            .map(|r| {
                let (id, d) = r.unwrap();
                (d.as_object().unwrap().get("n").cloned().unwrap(), id)
            })
            .collect();
        assert_eq!(info.count, docs.len() as u64, "round {round}");
        if info.has_index("by_n") {
            docs.sort();
            let indexed: Vec<String> = shard
                .index_scan("b", "by_n", &IndexRange::all(), false)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let want: Vec<String> = docs.into_iter().map(|(_, id)| id).collect();
            assert_eq!(indexed, want, "round {round}");
        }
        assert_eq!(shard.root().unwrap(), shard.root_from_scratch().unwrap());
    }
    eprintln!("index build interrupted mid-way in some round: {saw_building}");
}

/// In a child process (the environment variable names its data folder): the
/// engine and shard 0. `None` when this test binary runs as the parent.
fn open_as_child(env: &str) -> Option<(Engine, stratosdb_engine::Shard)> {
    let dir = std::env::var(env).ok()?;
    let engine = Engine::open(&dir, EngineConfig::default()).unwrap();
    let shard = engine.shard(0).unwrap();
    Some((engine, shard))
}

/// Runs the child test `name` of this binary on `dir`, SIGKILLs it after a
/// random moment, and returns what followed "ack " on each line it printed.
fn run_and_kill(name: &str, env: &str, dir: &std::path::Path, rng: &mut impl Rng) -> Vec<String> {
    run_and_kill_within(name, env, dir, rng.random_range(150..700))
}

/// [`run_and_kill`] for a child that acknowledges numbers: the highest.
fn last_ack(name: &str, env: &str, dir: &std::path::Path, rng: &mut impl Rng) -> u64 {
    run_and_kill(name, env, dir, rng)
        .iter()
        .map(|n| n.parse::<u64>().unwrap())
        .max()
        .unwrap_or(0)
}

/// [`run_and_kill`] with the moment of the kill given, in milliseconds.
fn run_and_kill_within(
    name: &str,
    env: &str,
    dir: &std::path::Path,
    kill_after_ms: u64,
) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("ack ").map(str::to_string))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(kill_after_ms));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

const MULTI_CHILD_ENV: &str = "STRATOSDB_CRASH_MULTI_CHILD_DIR";
const MULTI_SHARDS: u32 = 4;

/// Runs only as the child of the multi-shard test: applies raft-style entries
/// to four shards at once (`Shard::apply_batches`, as a node's raft loop
/// does), the same index on each, and every fourth time flushes and
/// acknowledges, until killed. A small write-back buffer drains into sled
/// between the flushes, so kills land before, during and after drains.
#[test]
fn crash_multi_shard_child() {
    let Ok(dir) = std::env::var(MULTI_CHILD_ENV) else {
        return;
    };
    let config = EngineConfig {
        write_buffer_bytes: 16 << 10,
        ..EngineConfig::default()
    };
    let engine = Engine::open(&dir, config).unwrap();
    let shards: Vec<_> = (1..=MULTI_SHARDS)
        .map(|id| engine.shard(id).unwrap())
        .collect();
    let mut index = shards[0].applied_index().unwrap() + 1;
    let started = Instant::now();
    let mut out = std::io::stdout();
    while started.elapsed() < Duration::from_secs(20) {
        // Two entries per shard: the collection (an error after the first
        // time, rejected alike everywhere) and a counter plus a document.
        let create = EngineCommand {
            ops: vec![Op::CreateCollection { name: "m".into() }],
        }
        .encode();
        let write = EngineCommand {
            ops: vec![
                Op::Upsert {
                    collection: "m".into(),
                    doc: Value::from_json_str(&format!(
                        r#"{{"_id":"counter","at":{}}}"#,
                        index + 1
                    ))
                    .unwrap(),
                },
                Op::Insert {
                    collection: "m".into(),
                    doc: Value::from_json_str(&format!(
                        r#"{{"_id":"d{}","pad":"{}"}}"#,
                        index + 1,
                        "p".repeat(200)
                    ))
                    .unwrap(),
                },
            ],
        }
        .encode();
        let entries: Vec<(u64, &[u8])> = vec![(index, &create), (index + 1, &write)];
        let work: Vec<_> = shards.iter().map(|s| (s, entries.as_slice())).collect();
        Shard::apply_batches(&work).unwrap();
        if index % 8 == 7 {
            engine.flush().unwrap();
            writeln!(out, "ack {}", index + 1).unwrap();
            out.flush().unwrap();
        }
        index += 2;
    }
}

#[test]
fn multi_shard_applies_survive_sigkill_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked = 0u64;
    for round in 0..8 {
        acked = acked.max(last_ack(
            "crash_multi_shard_child",
            MULTI_CHILD_ENV,
            dir.path(),
            &mut rng,
        ));
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let applied: Vec<u64> = (1..=MULTI_SHARDS)
            .map(|id| engine.shard(id).unwrap().applied_index().unwrap())
            .collect();
        // One atomic write for all shards: they all kept the same entries.
        assert!(
            applied.iter().all(|a| *a == applied[0]),
            "round {round}: shards at different indexes {applied:?}"
        );
        assert!(
            applied[0] >= acked,
            "round {round}: index {acked} acknowledged, only {} survived",
            applied[0]
        );
        for id in 1..=MULTI_SHARDS {
            let shard = engine.shard(id).unwrap();
            if applied[0] == 0 {
                assert!(shard.collections().is_empty());
                continue;
            }
            // Each shard's documents are exactly its applied entries'.
            let counter = shard.get("m", "counter").unwrap().unwrap();
            assert_eq!(
                counter.as_object().unwrap().get("at"),
                Some(&Value::Int(applied[0] as i64)),
                "round {round}, shard {id}"
            );
            assert_eq!(
                shard.collection("m").unwrap().count,
                1 + applied[0] / 2,
                "round {round}, shard {id}"
            );
            assert_eq!(shard.root().unwrap(), shard.root_from_scratch().unwrap());
        }
    }
    assert!(acked > 0, "the child acknowledged nothing in 8 rounds");
    eprintln!("8 rounds of SIGKILL, {acked} indexes acknowledged and checked");
}
