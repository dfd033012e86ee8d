//! Proof of Traffic's costs, each against a baseline measured in the same run:
//!
//! - `requests`: point reads by `_id` (`get_*`), and durable PUTs of the
//!   same ~220-byte documents (`put_*`: proposed, synced and applied through
//!   the node's raft group), through a real `stratosdb node` process
//!   (`--dev`, this build's binary) from 4 client threads (`TRAFFIC_THREADS`
//!   to change), 64 requests a batch: signed by a funded account (EIP-191 headers checked, the nonce
//!   remembered, the fee metered, a receipt signed) vs unsigned (billed to
//!   the dev account: metered and receipted, but no signature to recover).
//!   Requests are signed before the clock starts, so the client's signing
//!   does not count: the ratio is the node's cost of a signature.
//!   `requests` times each batch on the wall clock; `requests_node_cpu`
//!   measures the node process's CPU time for it (its CPU clock), which
//!   the client threads sharing the machine's cores do not blur.
//! - `settlement_100k`: what a node does to settle an epoch of 100,000
//!   receipts (`node_volume`: read them back from its receipt log, check
//!   each one's fee and sequence, fold them into its volume report) and
//!   what the auditor does with them (`audit_volume`: the same, and each
//!   receipt's ed25519 signature) vs reading and parsing the same receipts
//!   alone (`read_receipts`).
//!
//!   cargo bench --bench traffic
//!   python3 benches/ratios.py
//!
//! `TRAFFIC_NODES=3` runs `requests` against a 3-node cluster instead
//! (groups `requests_3nodes`, `requests_3nodes_cpu`: the CPU of all three).
//! `STRATOSDB_BIN=PATH` runs another build's node (e.g. one of `main`) under
//! the same client code, to compare two builds on one machine.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use stratosdb::client::Client;
use stratosdb::node::traffic::receipts::ReceiptLog;
use stratosdb_verifier::traffic::{
    Address, Prices, RECEIPT_VERSION, Receipt, RequestAuth, RequestSigner, VolumeReport,
};

#[path = "common/cpu_time.rs"]
mod cpu_time;

const BATCH: usize = 64;

/// Client threads, hence requests in flight at once: `TRAFFIC_THREADS`
/// (a divisor of 64), 4 by default.
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        let threads = std::env::var("TRAFFIC_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(4);
        assert!(
            threads > 0 && BATCH.is_multiple_of(threads),
            "TRAFFIC_THREADS divides {BATCH}"
        );
        threads
    })
}
const DOCUMENTS: usize = 200;
const RECEIPTS: u64 = 100_000;

/// Nodes to run: `TRAFFIC_NODES`, 1 by default; with 3, a cluster founded
/// together on loopback (collection `t`: 4 shards x 3 replicas), the client
/// talking to the first node, and the CPU time of all three counted.
fn nodes() -> usize {
    std::env::var("TRAFFIC_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nodes, and the folder that holds their data (and their shared
/// ledger), removed after them.
struct Cluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn spawn_node(binary: &std::ffi::OsStr, args: &[String]) -> Node {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    // Keep reading: a node whose stdout is closed fails on its next line.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let url = first
        .split_whitespace()
        .last()
        .expect("the node's first line names its URL")
        .to_string();
    Node { child, url }
}

fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let binary =
        std::env::var_os("STRATOSDB_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_stratosdb").into());
    let count = nodes();
    let p2p: Vec<String> = (0..count)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let ledger = dir.path().join("ledger").display().to_string();
    let mut cluster = Cluster {
        nodes: Vec::new(),
        dir,
    };
    for i in 0..count {
        let data = cluster.dir.path().join(format!("n{i}"));
        let mut args: Vec<String> = [
            "node",
            "--dev",
            "--http",
            "127.0.0.1:0",
            "--anchor-interval",
            "10s",
            "--data",
        ]
        .map(String::from)
        .into();
        args.push(data.display().to_string());
        if count > 1 {
            let others: Vec<&str> = (0..count)
                .filter(|j| *j != i)
                .map(|j| p2p[j].as_str())
                .collect();
            args.extend([
                "--p2p".into(),
                p2p[i].clone(),
                "--peers".into(),
                others.join(","),
            ]);
            args.extend(["--ledger".into(), ledger.clone()]);
        }
        cluster.nodes.push(spawn_node(&binary, &args));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &cluster.nodes {
        let client = Client::new(&node.url).unwrap();
        while client.health().is_err() {
            assert!(Instant::now() < deadline, "a node did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let client = Client::new(&cluster.nodes[0].url).unwrap();
    while client.sql("CREATE COLLECTION t").is_err() {
        assert!(Instant::now() < deadline, "the collection was not created");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..DOCUMENTS {
        client
            .put(
                "t",
                &format!("d{i}"),
                &serde_json::json!({"n": i, "name": "x".repeat(200)}),
            )
            .unwrap();
    }
    cluster
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a batch's requests do to the `i`-th document of a thread's chunk.
#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
}

impl Op {
    fn method(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Put => "PUT",
        }
    }

    fn path(i: usize) -> String {
        format!("/v1/collections/t/docs/d{}", i % DOCUMENTS)
    }

    /// The request body (a document as the fill writes them, for a PUT).
    fn body(self, i: usize) -> Vec<u8> {
        match self {
            Op::Get => Vec::new(),
            Op::Put => serde_json::json!({"n": i % DOCUMENTS, "name": "x".repeat(200)})
                .to_string()
                .into_bytes(),
        }
    }
}

/// One batch: `BATCH` requests from [`threads`] threads, each with its headers.
fn batch(agent: &ureq::Agent, url: &str, op: Op, signed: &[Option<RequestAuth>]) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in signed.chunks(BATCH / threads()) {
            scope.spawn(move || {
                for (i, auth) in chunk.iter().enumerate() {
                    let target = format!("{url}{}", Op::path(i));
                    let headers = auth.iter().flat_map(|a| a.headers());
                    let mut response = match op {
                        Op::Get => headers
                            .fold(agent.get(target), |r, (name, value)| r.header(name, value))
                            .call(),
                        Op::Put => headers
                            .fold(agent.put(target), |r, (name, value)| r.header(name, value))
                            .header("content-type", "application/json")
                            .send(op.body(i)),
                    }
                    .unwrap();
                    let status = response.status().as_u16();
                    assert!(matches!(status, 200 | 201), "status {status}");
                    let _ = response.body_mut().read_to_string().unwrap();
                }
            });
        }
    });
    started.elapsed()
}

/// The node process's CPU time so far (user + system, all its threads,
/// also those that ended), in nanoseconds: its process CPU clock
/// (`clock_getcpuclockid`). `/proc/PID/stat` counts in clock ticks of 10 ms,
/// more than a batch costs the node.
fn node_cpu(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the call writes the clock id it is given a place for.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    assert_eq!(rc, 0, "clock_getcpuclockid({pid})");
    cpu_time::now(clock)
}

/// The headers of a batch's `BATCH` requests, signed by `payer` (signed
/// before the clock starts: the node's cost only) or none (unsigned).
fn auths(payer: Option<&RequestSigner>, cluster_id: &[u8; 32], op: Op) -> Vec<Option<RequestAuth>> {
    (0..BATCH)
        .map(|k| {
            let i = k % (BATCH / threads());
            payer.map(|p| {
                let body = op.body(i);
                p.sign_request(
                    cluster_id,
                    op.method(),
                    &Op::path(i),
                    &body,
                    now_ms(),
                    rand::random(),
                )
            })
        })
        .collect()
}

fn requests(c: &mut Criterion) {
    let cluster = start_cluster();
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.child.id()).collect();
    let nodes_cpu = || pids.iter().map(|pid| node_cpu(*pid)).sum::<Duration>();
    let url = cluster.nodes[0].url.clone();
    let client = Client::new(&url).unwrap();
    let cluster_id = client.prices().unwrap().cluster_id;
    let payer = RequestSigner::from_bytes(&[7; 32]).unwrap();
    client
        .deposit_signed(
            &payer,
            1_000_000 * stratosdb_verifier::traffic::wei::WEI_PER_STOS,
        )
        .unwrap();
    // Keep-alive connections for every client thread (ureq keeps 3 a host
    // by default, and opens new ones past that).
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(threads())
        .max_idle_connections_per_host(threads())
        .build()
        .into();
    // Wall time of a batch, and the node's CPU time for it: the client
    // threads share this machine's cores with the node, so the second says
    // what a signature costs the node itself, and what bounds its
    // throughput when its clients are elsewhere.
    let groups = match cluster.nodes.len() {
        1 => ["requests".to_string(), "requests_node_cpu".to_string()],
        n => [
            format!("requests_{n}nodes"),
            format!("requests_{n}nodes_cpu"),
        ],
    };
    for (group, cpu) in groups.into_iter().zip([false, true]) {
        let mut group = c.benchmark_group(group);
        group.throughput(Throughput::Elements(BATCH as u64));
        let variants = [
            ("get_unsigned_dev", Op::Get, None),
            ("get_signed", Op::Get, Some(&payer)),
            ("put_unsigned_dev", Op::Put, None),
            ("put_signed", Op::Put, Some(&payer)),
        ];
        for (name, op, signer) in variants {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let auths = auths(signer, &cluster_id, op);
                        let before = nodes_cpu();
                        let wall = batch(&agent, &url, op, &auths);
                        total += if cpu {
                            nodes_cpu().saturating_sub(before)
                        } else {
                            wall
                        };
                    }
                    total
                })
            });
        }
        group.finish();
    }
}

/// Receipts a node signs at once in [`receipt_log`].
const RECEIPT_BATCH: usize = 8;

/// A receipt log of `RECEIPTS` receipts of epoch 1 from a few payers.
fn receipt_log() -> (tempfile::TempDir, Arc<ReceiptLog>, [u8; 32]) {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[3; 32]);
    let log = ReceiptLog::open(dir.path(), key).unwrap();
    let prices = Prices {
        wei_per_kib: 1_000_000_000_000,
        wei_per_document: 100_000_000_000,
    };
    let receipt = |n: u64| {
        let bytes = 200 + n % 800;
        Receipt {
            version: RECEIPT_VERSION,
            cluster_id: [1; 32],
            node_key: [0; 32],
            sequence: 0,
            epoch: 1,
            payer: Address([(n % 16) as u8; 20]),
            request_hash: [(n % 251) as u8; 32],
            bytes,
            documents: 1,
            prices,
            fee: prices.fee(bytes, 1).unwrap(),
            batch: Default::default(),
            signature: [0; 64],
        }
    };
    // In batches of 8, about what a node serving 16 concurrent clients
    // signs at once (BENCHMARKS.md, "Receipts signed in batches").
    for first in (0..RECEIPTS).step_by(RECEIPT_BATCH) {
        let last = (first + RECEIPT_BATCH as u64).min(RECEIPTS);
        log.issue_batch((first..last).map(receipt).collect())
            .unwrap();
    }
    let key = log.node_key();
    (dir, log, key)
}

fn settlement(c: &mut Criterion) {
    let (_dir, log, key) = receipt_log();
    let mut group = c.benchmark_group("settlement_100k");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECEIPTS));
    group.bench_function("read_receipts", |b| {
        b.iter(|| assert_eq!(log.epoch_receipts(1).unwrap().len() as u64, RECEIPTS))
    });
    group.bench_function("node_volume", |b| {
        b.iter(|| {
            let receipts = log.epoch_receipts(1).unwrap();
            let report = VolumeReport::from_own_receipts([1; 32], 1, key, receipts).unwrap();
            assert_eq!(report.wallet_volumes.len(), 16);
        })
    });
    // What a node does now: its running volume of the epoch, kept as the
    // receipts were issued (`ReceiptLog::close_volume`), nothing read back.
    group.bench_function("closed_volume", |b| {
        b.iter(|| {
            let report = log.close_volume(1, [1; 32]).unwrap();
            assert_eq!(report.wallet_volumes.len(), 16);
        })
    });
    group.bench_function("audit_volume", |b| {
        b.iter(|| {
            let receipts = log.epoch_receipts(1).unwrap();
            let report = VolumeReport::from_receipts([1; 32], 1, &[(key, receipts)]).unwrap();
            assert_eq!(report.wallet_volumes.len(), 16);
        })
    });
    group.finish();
}

criterion_group!(benches, requests, settlement);
criterion_main!(benches);
