//! Snapshot transfer throughput: one shard moved the way a lagging replica
//! gets it (exported to the sender's snapshot files, every chunk fetched over
//! the in-memory transport, verified and synced into the receiver's files,
//! then installed) against the engine's raw export and import of the same
//! shard in memory. The ratio is the cost of making the transfer chunked,
//! verified, durable and resumable.
//!
//! `cargo bench -p stratosdb-replication --bench snapshot_transfer`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stratosdb_engine::{Engine, Shard, Value};
use stratosdb_replication::snapshot::SnapshotFiles;
use stratosdb_replication::{MemHub, export_chunks};

const DOCS: usize = 4000;
const CHUNK_BYTES: usize = 64 << 10;
const SENDER: u64 = 1;
const RECEIVER: u64 = 2;

fn source() -> (Engine, Shard) {
    let engine = Engine::open_temporary().expect("engine");
    let shard = engine.shard(1).expect("shard");
    shard.create_collection("c").expect("collection");
    for i in 0..DOCS {
        let doc = format!(r#"{{"_id":"d{i:06}","n":{i},"pad":"{}"}}"#, "p".repeat(200));
        shard
            .insert("c", Value::from_json_str(&doc).expect("json"))
            .expect("insert");
    }
    (engine, shard)
}

fn transfer(c: &mut Criterion) {
    let (_source_engine, shard) = source();
    let (_target_engine, target) = {
        let e = Engine::open_temporary().expect("engine");
        let s = e.shard(1).expect("shard");
        (e, s)
    };
    let (_, chunks) = export_chunks(&shard, CHUNK_BYTES).expect("export");
    let bytes: u64 = chunks.iter().map(|c| c.len() as u64).sum();

    let mut group = c.benchmark_group("snapshot_transfer");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    group.bench_function("engine_export_import", |b| {
        b.iter(|| {
            let (_, chunks) = export_chunks(&shard, CHUNK_BYTES).expect("export");
            target.import_snapshot(chunks).expect("import");
        })
    });

    let dir_out = tempfile::tempdir().expect("dir");
    let dir_in = tempfile::tempdir().expect("dir");
    let files_out =
        SnapshotFiles::open(dir_out.path(), Duration::from_secs(600), 1 << 34).expect("files");
    let files_in =
        SnapshotFiles::open(dir_in.path(), Duration::from_secs(600), 1 << 34).expect("files");
    let hub = MemHub::new();
    let server_files = files_out.clone();
    hub.transport(SENDER)
        .serve_snapshots(Arc::new(move |_, key, n| {
            Ok(server_files.read_outgoing_chunk(key, n)?.0)
        }));
    let receiver = hub.transport(RECEIVER);
    group.bench_function("chunked_fetch_over_mem_transport", |b| {
        b.iter(|| {
            let d = files_out
                .export(&shard, CHUNK_BYTES, SENDER, |_| Ok(1))
                .expect("export");
            let mut incoming = files_in.begin_incoming(&d).expect("incoming");
            while !incoming.is_full() {
                let n = incoming.next_chunk();
                let chunk = receiver.fetch_chunk(SENDER, &d.key, n).expect("fetch");
                incoming.put(n, &chunk).expect("put");
            }
            incoming.finish().expect("finish");
            files_in.install_incoming(&d, &target).expect("install");
        })
    });
    group.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
