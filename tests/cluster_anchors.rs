//! Epochs and anchors on real node processes: a 3-node cluster anchors
//! consecutive epochs on one shared ledger folder; the leaves are the
//! replicas' own marks and the ledger's payloads verify; the metadata
//! leader SIGKILLed mid-run hands the epochs on without a second anchor for
//! any epoch and without a gap; `--anchor-interval off` anchors nothing; a
//! node with `--chain stratos` anchors on a real EVM node (anvil), and
//! `stratosdb audit --proofs FILE` and `--connect URL --shard C/N` check a
//! saved proven reply and a replica against those anchors, read from anvil.

#[path = "../chain-anchor/tests/support/anvil.rs"]
mod anvil;
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{Api, TestCluster, retry_until, until_answered};
use common::process::TIMEOUT;
use stratosdb::api::{AnchorInfo, AnchorsQuery, AnchorsReply};
use stratosdb_verifier::leaves::sort_leaves;
use stratosdb_verifier::{ShardLeaf, cluster_root};

/// How long a cluster may take to anchor a few more epochs (2 cores shared).
const ANCHOR_WAIT: Duration = Duration::from_secs(90);

fn create(api: &Api, sql: &str) {
    let reply = until_answered(TIMEOUT, sql, || api.sql(sql));
    assert!(
        reply.ok() || reply.code().as_deref() == Some("collection_exists"),
        "{sql}: {reply}"
    );
}

fn anchors(cluster: &TestCluster, i: usize) -> Result<AnchorsReply, String> {
    cluster
        .client(i)
        .anchors(AnchorsQuery {
            limit: Some(1000),
            epoch: None,
        })
        .map_err(|e| e.to_string())
}

fn hash(text: &str) -> [u8; 32] {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or_else(|| panic!("{text:?} is not 32 bytes of hex"))
}

fn leaves(a: &AnchorInfo) -> Vec<ShardLeaf> {
    a.leaves
        .iter()
        .map(|l| ShardLeaf {
            collection: l.collection.clone(),
            shard: l.shard,
            raft_index: l.raft_index,
            root: hash(&l.root),
        })
        .collect()
}

/// Waits until node `i` lists an anchored epoch at or above `epoch`.
fn wait_anchored(cluster: &TestCluster, nodes: &[usize], epoch: u64) -> AnchorsReply {
    let mut turn = 0;
    retry_until(ANCHOR_WAIT, &format!("epoch {epoch} anchored"), || {
        turn += 1;
        let reply = anchors(cluster, nodes[turn % nodes.len()])?;
        let top = reply
            .anchors
            .iter()
            .filter(|a| a.status == "anchored")
            .map(|a| a.epoch)
            .max()
            .unwrap_or(0);
        if top >= epoch {
            Ok(reply)
        } else {
            Err(format!("newest anchored epoch {top}"))
        }
    })
}

/// Every listed epoch, 1 to the newest, once; the final ones well formed;
/// the anchored ones' roots recomputed from their leaves and chained.
/// Returns the epochs by number.
fn check_epochs(reply: &AnchorsReply) -> BTreeMap<u64, AnchorInfo> {
    let by_epoch: BTreeMap<u64, AnchorInfo> =
        reply.anchors.iter().map(|a| (a.epoch, a.clone())).collect();
    assert_eq!(by_epoch.len(), reply.anchors.len(), "an epoch listed twice");
    let newest = reply.anchors.first().map_or(0, |a| a.epoch);
    assert_eq!(
        by_epoch.keys().copied().collect::<Vec<_>>(),
        (1..=newest).collect::<Vec<_>>(),
        "epochs are consecutive from 1, none missing"
    );
    let mut previous = [0u8; 32];
    for (epoch, a) in &by_epoch {
        assert_eq!(hash(&a.previous), previous, "epoch {epoch}'s previous");
        match a.status.as_str() {
            "anchored" => {
                let mut l = leaves(a);
                let sorted = {
                    sort_leaves(&mut l);
                    l
                };
                assert_eq!(leaves(a), sorted, "epoch {epoch}'s leaves are sorted");
                let root = a.cluster_root.as_deref().map(hash);
                assert_eq!(root, Some(cluster_root(&sorted)), "epoch {epoch}'s root");
                let reference: stratosdb_chain_anchor::ChainRef = a
                    .reference
                    .as_deref()
                    .unwrap_or_else(|| panic!("anchored epoch {epoch} without a reference"))
                    .parse()
                    .unwrap_or_else(|e| panic!("epoch {epoch}'s reference: {e}"));
                previous = reference.hash();
                assert!(a.reason.is_none());
            }
            "failed" | "skipped" => {
                assert!(a.reason.is_some(), "epoch {epoch} {} says why", a.status);
            }
            // Only the newest may still be under way.
            _ => assert_eq!(*epoch, newest, "epoch {epoch} is {}", a.status),
        }
    }
    by_epoch
}

/// The node that leads the metadata group (group 0), from `/metrics`.
fn metadata_leader(cluster: &mut TestCluster) -> Option<usize> {
    cluster.running().into_iter().find(|&i| {
        cluster.api(i).call("GET", "/metrics", None).is_ok_and(|r| {
            r.text
                .lines()
                .any(|l| l.starts_with("stratosdb_raft_is_leader{group=\"0\"") && l.ends_with(" 1"))
        })
    })
}

#[test]
fn epochs_anchor_on_a_shared_ledger_and_survive_the_metadata_leader() {
    let ledger = tempfile::tempdir().unwrap();
    let ledger_dir = ledger.path().to_string_lossy().to_string();
    let mut cluster =
        TestCluster::start_with(3, &["--anchor-interval", "500ms", "--ledger", &ledger_dir]);
    let api = cluster.api(0);
    create(
        &api,
        "CREATE COLLECTION users WITH (shards = 3, replicas = 3)",
    );
    for i in 0..20 {
        let doc = serde_json::json!({ "name": format!("u{i}") });
        let reply = until_answered(TIMEOUT, "PUT", || api.put("users", &format!("u{i}"), &doc));
        assert!(reply.ok(), "{reply}");
    }
    let map = cluster.cluster_map(0);
    let cluster_id = map.cluster_id.clone().expect("the map shows a cluster id");
    assert_eq!(hash(&cluster_id).len(), 32);

    let all = [0, 1, 2];
    let first = wait_anchored(&cluster, &all, 3);
    assert_eq!(first.cluster_id.as_deref(), Some(cluster_id.as_str()));
    let chain = first.chain.clone().expect("a chain");
    assert_eq!(chain.kind, "local");
    let epochs = check_epochs(&first);
    let newest = epochs
        .values()
        .rev()
        .find(|a| a.status == "anchored")
        .unwrap();
    assert_eq!(newest.leaves.len(), 3, "a leaf per shard: {newest:?}");

    // One epoch alone, and a bad query.
    let one = cluster
        .client(1)
        .anchors(AnchorsQuery {
            limit: None,
            epoch: Some(1),
        })
        .unwrap();
    assert_eq!(one.anchors.len(), 1);
    assert_eq!(one.anchors[0].epoch, 1);
    let missing = api.call("GET", "/v1/anchors?epoch=999999", None).unwrap();
    assert_eq!(missing.status, 404, "{missing}");
    let bad = api.call("GET", "/v1/anchors?limit=x", None).unwrap();
    assert_eq!(bad.status, 400, "{bad}");

    // SIGKILL the metadata leader while epochs run.
    let leader = retry_until(TIMEOUT, "a metadata leader", || {
        metadata_leader(&mut cluster).ok_or_else(|| "none".to_string())
    });
    let before = anchors(&cluster, leader).unwrap();
    let at_kill = before.anchors.first().map_or(0, |a| a.epoch);
    cluster.kill(leader);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let after = wait_anchored(&cluster, &rest, at_kill + 3);
    let epochs = check_epochs(&after);
    // What was recorded before the kill is unchanged (final) or moved on.
    for a in &before.anchors {
        let now = &epochs[&a.epoch];
        if a.status == "anchored" {
            assert_eq!(now, a, "anchored epoch {} changed", a.epoch);
        }
    }
    let metrics = cluster.api(rest[0]).call("GET", "/metrics", None).unwrap();
    assert!(
        metrics.text.contains("stratosdb_anchor_epoch "),
        "{metrics}"
    );
    assert!(
        metrics
            .text
            .contains("stratosdb_anchor_submissions_total{status=\"anchored\"}"),
        "{metrics}"
    );

    // The shell over --connect lists them.
    let out = common::process::run_to_end(
        &[
            "shell".into(),
            "--connect".into(),
            cluster.url(rest[0]).into(),
            "-c".into(),
            "\\anchors 3".into(),
        ],
        "",
        TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("anchored") && text.contains(&cluster_id),
        "{text}"
    );
    cluster.stop_all();
    check_marks(&cluster, &rest, &epochs);
    check_ledger(ledger.path(), &hash(&cluster_id), &epochs);
}

/// The shared ledger verifies (signatures, links, each cluster's chain of
/// anchors), holds each epoch of this cluster at most once, and each
/// anchored epoch exactly as recorded: its reference, and a payload whose
/// root is recomputed from the recorded leaves.
fn check_ledger(dir: &std::path::Path, cluster_id: &[u8; 32], epochs: &BTreeMap<u64, AnchorInfo>) {
    let report = stratosdb_chain_anchor::verify_ledger(dir, &mut |_, _| {}).unwrap();
    assert!(report.ok(), "{report:?}");
    let ours: Vec<_> = report
        .anchors
        .iter()
        .filter(|a| &a.payload.cluster_id == cluster_id)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for a in &ours {
        assert!(
            seen.insert(a.payload.epoch),
            "epoch {} on the ledger twice",
            a.payload.epoch
        );
    }
    let listed_up_to = epochs.keys().max().copied().unwrap_or(0);
    for a in ours.iter().filter(|a| a.payload.epoch <= listed_up_to) {
        let e = a.payload.epoch;
        let info = &epochs[&e];
        assert_eq!(
            info.status, "anchored",
            "epoch {e} is on the ledger: {info:?}"
        );
        assert_eq!(info.reference, Some(a.reference.to_string()), "epoch {e}");
        let l = leaves(info);
        assert_eq!(a.payload.cluster_root, cluster_root(&l), "epoch {e}'s root");
        assert_eq!(a.payload.leaf_count as usize, l.len(), "epoch {e}");
        assert_eq!(a.payload.previous, hash(&info.previous), "epoch {e}");
    }
    let on_ledger = ours
        .iter()
        .filter(|a| a.payload.epoch <= listed_up_to)
        .count();
    let anchored = epochs.values().filter(|a| a.status == "anchored").count();
    assert_eq!(on_ledger, anchored, "every anchored epoch is on the ledger");
}

/// Each anchored epoch's leaves are exactly the marks of that epoch on the
/// replicas of the nodes that stopped cleanly (each holds every shard).
fn check_marks(cluster: &TestCluster, nodes: &[usize], epochs: &BTreeMap<u64, AnchorInfo>) {
    use stratosdb_engine::{Engine, EngineConfig};
    for &i in nodes {
        let engine = Engine::open(cluster.data(i).join("db"), EngineConfig::default())
            .unwrap_or_else(|e| panic!("node {i}'s data: {e}"));
        let shards: Vec<_> = engine
            .shard_ids()
            .unwrap()
            .into_iter()
            .filter(|&id| id != 0)
            .map(|id| engine.shard(id).unwrap())
            .collect();
        for (epoch, a) in epochs.iter().filter(|(_, a)| a.status == "anchored") {
            let mut marks: Vec<(u64, [u8; 32])> = shards
                .iter()
                .filter_map(|s| s.anchor_mark(*epoch).unwrap())
                .map(|m| (m.raft_index, m.root))
                .collect();
            let mut expected: Vec<(u64, [u8; 32])> =
                leaves(a).iter().map(|l| (l.raft_index, l.root)).collect();
            marks.sort();
            expected.sort();
            assert_eq!(marks, expected, "node {i}'s marks of epoch {epoch}");
        }
    }
}

#[test]
fn anchor_interval_off_anchors_nothing() {
    let mut cluster = TestCluster::start_with(1, &["--anchor-interval", "off"]);
    let api = cluster.api(0);
    create(&api, "CREATE COLLECTION c");
    let reply = until_answered(TIMEOUT, "PUT", || {
        api.put("c", "a", &serde_json::json!({"x": 1}))
    });
    assert!(reply.ok(), "{reply}");
    // Anchoring every 500 ms would have started epochs by now.
    std::thread::sleep(Duration::from_secs(2));
    let reply = anchors(&cluster, 0).unwrap();
    assert!(reply.chain.is_none(), "{reply:?}");
    assert!(reply.anchors.is_empty(), "{reply:?}");
    assert!(reply.cluster_id.is_some());
    // The ledger is opened for deposits even with anchoring off: it holds
    // no anchor.
    let ledger = cluster.data(0).join("ledger");
    if ledger.exists() {
        let report = stratosdb_chain_anchor::verify_ledger(&ledger, &mut |_, _| {}).unwrap();
        assert_eq!(report.kinds.get(&1), None, "{:?}", report.kinds);
    }
    cluster.stop_all();
}

#[test]
fn a_node_anchors_its_epochs_on_the_stratos_backend() {
    let anvil = anvil::Anvil::start();
    let (key_file, address) = anvil.funded_key("anchor-key");
    let key_path = key_file.to_string_lossy().to_string();
    let rpc = anvil.url();
    let chain_id = anvil::CHAIN_ID.to_string();
    let cluster = TestCluster::start_with(
        1,
        &[
            "--anchor-interval",
            "500ms",
            "--chain",
            "stratos",
            "--rpc",
            &rpc,
            "--chain-id",
            &chain_id,
            "--key-file",
            &key_path,
        ],
    );
    let api = cluster.api(0);
    create(&api, "CREATE COLLECTION users WITH (shards = 2)");
    for i in 0..5 {
        let doc = serde_json::json!({ "name": format!("u{i}") });
        let reply = until_answered(TIMEOUT, "PUT", || api.put("users", &format!("u{i}"), &doc));
        assert!(reply.ok(), "{reply}");
    }
    let reply = wait_anchored(&cluster, &[0], 3);
    let chain = reply.chain.clone().expect("a chain");
    assert_eq!(
        (chain.kind.as_str(), chain.chain_id),
        ("stratos", Some(2048))
    );
    let epochs = check_epochs(&reply);

    // Each anchored epoch is on the EVM chain exactly as the node recorded
    // it, read back by its transaction and sent from the node's key, once.
    let reader = anvil.connect(&key_file);
    let mut anchored = 0;
    for (epoch, a) in &epochs {
        if a.status != "anchored" {
            continue;
        }
        anchored += 1;
        let reference: stratosdb_chain_anchor::ChainRef = a
            .reference
            .as_deref()
            .unwrap_or_default()
            .parse()
            .unwrap_or_else(|e| panic!("epoch {epoch}'s reference: {e}"));
        assert!(
            matches!(
                reference,
                stratosdb_chain_anchor::ChainRef::Evm { chain_id: 2048, .. }
            ),
            "{reference}"
        );
        let record = stratosdb_chain_anchor::Chain::read_anchor(&reader, &reference)
            .unwrap_or_else(|e| panic!("epoch {epoch} read back: {e}"));
        assert_eq!(record.payload.epoch, *epoch);
        assert_eq!(
            Some(hex::encode(record.payload.cluster_root)),
            a.cluster_root,
            "epoch {epoch}'s cluster root on chain"
        );
        assert_eq!(record.payload.leaf_count as usize, a.leaves.len());
        assert_eq!(record.submitter.to_lowercase(), address);
        assert_eq!(
            anvil.anchors_on_chain(&address, *epoch).len(),
            1,
            "epoch {epoch} is on the chain once"
        );
    }
    assert!(anchored >= 3, "{anchored} epochs anchored");
    audit_against_stratos(&cluster, &rpc, &chain_id);
}

/// `stratosdb audit ARGS --chain stratos --rpc RPC --chain-id ID`.
fn audit_on_chain(args: &[&str], rpc: &str, chain_id: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .arg("audit")
        .args(args)
        .args(["--chain", "stratos", "--rpc", rpc, "--chain-id", chain_id])
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A proven reply saved while its proofs are anchored passes `audit
/// --proofs` with the anchors read from the EVM chain, and fails once a
/// document in it is altered; a replica passes `audit --connect --shard`.
fn audit_against_stratos(cluster: &TestCluster, rpc: &str, chain_id: &str) {
    let client = cluster.client(0);
    let sql = "SELECT * FROM users ORDER BY _id";
    let deadline = std::time::Instant::now() + ANCHOR_WAIT;
    let reply = loop {
        let reply = client
            .sql_proven(sql, stratosdb::api::Consistency::Linearizable)
            .expect("a proven read");
        if reply.proofs.iter().all(|p| p.anchor.is_some()) {
            break reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reply whose proofs are all anchored"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("proofs.json");
    std::fs::write(&saved, serde_json::to_string(&reply).unwrap()).unwrap();
    let saved_arg = saved.to_string_lossy().to_string();
    let (ok, out) = audit_on_chain(&["--proofs", &saved_arg], rpc, chain_id);
    assert!(ok, "{out}");
    assert_eq!(out.matches(": anchored (epoch ").count(), 5, "{out}");
    let text = std::fs::read_to_string(&saved).unwrap();
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, text.replace(r#""u2""#, r#""u9""#)).unwrap();
    let tampered_arg = tampered.to_string_lossy().to_string();
    let (ok, out) = audit_on_chain(&["--proofs", &tampered_arg], rpc, chain_id);
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED  document"), "{out}");

    for shard in ["users/0", "users/1"] {
        let (ok, out) = audit_on_chain(
            &["--connect", cluster.url(0), "--shard", shard],
            rpc,
            chain_id,
        );
        assert!(ok, "{out}");
        assert!(out.contains("equals the leaf anchored in epoch"), "{out}");
    }
}
