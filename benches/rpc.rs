//! The forwarding hop's transport: `/stratosdb/rpc/2` calls between two
//! libp2p transports on 127.0.0.1 (real sockets, noise, yamux), a 1 KiB
//! request (a forwarded PUT's size) echoed back, 64 calls in flight as
//! under the HTTP benchmark's 64 connections, two ways in the same run:
//!
//! - `shared_stream`: the default, every call on the peer's one call stream;
//! - `stream_per_call`: `rpc_shared_stream_max_bytes = 0`, a stream opened
//!   per call, as `/stratosdb/rpc/1` did.
//!
//!   cargo bench --bench rpc
//!   python3 benches/ratios.py
//!
//! Wall time per batch of 64 calls; on this 2-core machine both sides and
//! the bench share the cores, so the time tracks the CPU the calls cost.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stratosdb_replication::p2p::{P2pConfig, P2pTransport};

const CALLS_IN_FLIGHT: usize = 64;
const REQUEST_BYTES: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Pair {
    caller: Arc<P2pTransport>,
    answerer: P2pTransport,
    to: u64,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn pair(shared_stream_max_bytes: usize) -> Pair {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |dir: &std::path::Path| {
        let mut config = P2pConfig::new(dir, "127.0.0.1:0");
        config.rpc_shared_stream_max_bytes = shared_stream_max_bytes;
        P2pTransport::start(config).unwrap()
    };
    let (caller, answerer) = (start(dirs.0.path()), start(dirs.1.path()));
    for (a, b) in [(&caller, &answerer), (&answerer, &caller)] {
        a.allow_peer(b.peer_id()).unwrap();
        let addr = b.local_socket_addr().unwrap().to_string();
        a.set_peer_addresses(b.peer_id(), &[&addr]).unwrap();
    }
    answerer.set_rpc_handler(|_, request| request);
    let to = answerer.node_id();
    Pair {
        caller: Arc::new(caller),
        answerer,
        to,
        _dirs: dirs,
    }
}

fn calls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("rpc_64_calls_1k");
    group.throughput(Throughput::Elements(CALLS_IN_FLIGHT as u64));
    for (name, max) in [("shared_stream", 64 << 10), ("stream_per_call", 0)] {
        let p = pair(max);
        // Connected and warm before measuring.
        p.caller.call(p.to, vec![0; 8], TIMEOUT).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..CALLS_IN_FLIGHT {
                        let caller = p.caller.clone();
                        let to = p.to;
                        set.spawn(async move {
                            caller.call_async(to, vec![7; REQUEST_BYTES], TIMEOUT).await
                        });
                    }
                    while let Some(answer) = set.join_next().await {
                        assert_eq!(answer.unwrap().unwrap().len(), REQUEST_BYTES);
                    }
                })
            })
        });
        p.caller.shutdown();
        p.answerer.shutdown();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = calls
}
criterion_main!(benches);
