//! The raft log's write path, three ways, in the same run: what one loop
//! iteration of a node writes for 8 shard groups under load (8 entries of
//! 1 KiB per group and each group's hard state) made durable with ONE sync.
//!
//! - `sled_log`: the former log, a sled tree per group (`raft/<group>`,
//!   entry keys `e` + index, the hard state under `h`) in the database that
//!   also holds the shards, one `flush` for all;
//! - `raft_engine`: TiKV's raft-engine 0.4.2 with its default settings (one
//!   `LogBatch` for all groups, written with `sync = true`);
//! - `node_log`: the replication crate's log as `stratosdb node` runs it
//!   (`LogStore::persist` per group into the node's one batch, then
//!   `RaftLog::write(sync = true)`): raft-engine plus the crate's checks.
//!
//!   cargo bench --bench raft_log
//!   python3 benches/ratios.py
//!
//! The figure and the choice are in `docs/replication.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use raft::eraftpb::{Entry, HardState};
use stratosdb_engine::storage::WriteBatch;
use stratosdb_engine::{DefaultStore, Engine, EngineConfig, KvStore as _, KvTree as _, SledStore};
use stratosdb_replication::log::{LOG_DIR, LogStore, RaftLog, SnapshotExport};
use stratosdb_replication::snapshot::SnapshotFiles;

const GROUPS: u64 = 8;
const ENTRIES_PER_GROUP: u64 = 8;
const ENTRY_BYTES: usize = 1024;

fn entries(group: u64, first: u64) -> Vec<Entry> {
    (first..first + ENTRIES_PER_GROUP)
        .map(|index| Entry {
            index,
            term: 1,
            // Text-like payload (documents are JSON): compressible as real ones are.
            data: (0..ENTRY_BYTES)
                .map(|k| b'a' + ((index as usize * 31 + k * 7 + group as usize) % 26) as u8)
                .collect(),
            ..Default::default()
        })
        .collect()
}

fn hard_state(commit: u64) -> HardState {
    HardState {
        term: 1,
        commit,
        ..Default::default()
    }
}

/// About the entry's protobuf encoding (index, term, data): what the sled log
/// stored, without a protobuf dependency in the bench.
fn encoded(e: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(e.data.len() + 16);
    v.extend(e.index.to_be_bytes());
    v.extend(e.term.to_be_bytes());
    v.extend_from_slice(&e.data);
    v
}

/// raft-engine wants to know how to read an entry's index.
#[derive(Clone)]
struct EntryExt;

impl raft_engine::MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

fn log_write_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_log_write_64_entries_synced");
    group.throughput(Throughput::Elements(GROUPS * ENTRIES_PER_GROUP));
    group.sample_size(20);
    {
        let dir = tempfile::tempdir().expect("dir");
        let store = SledStore::open(dir.path(), 64 << 20).expect("sled");
        let trees: Vec<_> = (0..GROUPS)
            .map(|g| store.open_tree(&format!("raft/{g}")).expect("tree"))
            .collect();
        let next = AtomicU64::new(2);
        group.bench_function("sled_log", |b| {
            b.iter(|| {
                let first = next.fetch_add(ENTRIES_PER_GROUP, Ordering::Relaxed);
                for (g, tree) in trees.iter().enumerate() {
                    let mut batch = WriteBatch::default();
                    for e in entries(g as u64, first) {
                        let mut key = vec![b'e'];
                        key.extend(e.index.to_be_bytes());
                        batch.put(key, encoded(&e));
                    }
                    let hs = hard_state(first + ENTRIES_PER_GROUP - 1);
                    batch.put(
                        b"h".to_vec(),
                        [hs.term, hs.vote, hs.commit].map(u64::to_be_bytes).concat(),
                    );
                    tree.apply(batch).expect("apply");
                }
                store.flush().expect("flush");
            })
        });
    }
    {
        let dir = tempfile::tempdir().expect("dir");
        let config = EngineConfig {
            cache_bytes: 64 << 20,
            ..EngineConfig::default()
        };
        let store = DefaultStore::open(dir.path(), &config).expect("sled");
        let engine = Engine::with_store(store.clone(), config).expect("engine");
        let raft_log = RaftLog::open(&dir.path().join(LOG_DIR)).expect("raft log");
        let export = SnapshotExport {
            files: SnapshotFiles::open(dir.path(), Duration::from_secs(600), 1 << 30)
                .expect("snapshot files"),
            node: 1,
            chunk_bytes: 1 << 20,
        };
        let mut logs: Vec<LogStore> = (0..GROUPS as u32)
            .map(|g| {
                let shard = engine.shard(g).expect("shard");
                LogStore::open(&raft_log, g, shard, &[1, 2, 3], export.clone()).expect("log")
            })
            .collect();
        // Founding logs start after index 1.
        let next = AtomicU64::new(2);
        group.bench_function("node_log", |b| {
            b.iter(|| {
                let first = next.fetch_add(ENTRIES_PER_GROUP, Ordering::Relaxed);
                for (g, log) in logs.iter_mut().enumerate() {
                    let batch = entries(g as u64, first);
                    let hs = hard_state(first + ENTRIES_PER_GROUP - 1);
                    log.persist(&batch, Some(&hs)).expect("persist");
                }
                raft_log.write(true).expect("write");
            })
        });
    }
    {
        let dir = tempfile::tempdir().expect("dir");
        let config = raft_engine::Config {
            dir: dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        };
        let log = raft_engine::Engine::open(config).expect("raft-engine");
        let next = AtomicU64::new(1);
        group.bench_function("raft_engine", |b| {
            b.iter(|| {
                let first = next.fetch_add(ENTRIES_PER_GROUP, Ordering::Relaxed);
                let mut batch = raft_engine::LogBatch::default();
                for g in 0..GROUPS {
                    batch
                        .add_entries::<EntryExt>(g + 1, &entries(g, first))
                        .expect("entries");
                    batch
                        .put_message(g + 1, b"hard_state".to_vec(), &hard_state(first))
                        .expect("hard state");
                }
                log.write(&mut batch, true).expect("write");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, log_write_path);
criterion_main!(benches);
