//! `stratosdb audit --connect URL --shard C/N` on a running cluster of three
//! node processes anchoring on a shared local ledger, through the real
//! binary: every replica of a shard passes, also right after writes that
//! came after its latest anchor mark; then a document altered on one
//! replica's disk (the node stopped, the record rewritten through sled, the
//! node started again) fails the audit of that replica, naming the shard and
//! the document, while another replica of the same shard still passes.
//! Also: `shell --connect URL --ledger DIR` with `\proof on` checks anchored
//! proofs against the ledger, and `\save FILE` writes what `audit --proofs`
//! passes.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{TestCluster, until_answered};
use common::disk::{alter_document, set_int};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `stratosdb audit --connect URL --shard SPEC --ledger DIR`.
fn audit(url: &str, spec: &str, ledger: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args([
            "audit",
            "--connect",
            url,
            "--shard",
            spec,
            "--ledger",
            ledger,
        ])
        .output()
        .expect("the binary runs");
    (out.status.success(), text(&out))
}

/// The audit, again every 500 ms until it passes (at most `WAIT`): right
/// after the writes the shard may have no anchored mark yet.
fn audit_passes(url: &str, spec: &str, ledger: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (ok, out) = audit(url, spec, ledger);
        if ok {
            return out;
        }
        assert!(Instant::now() < deadline, "the audit never passed:\n{out}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_replica_is_audited_against_its_anchored_leaf_and_an_altered_document_is_named() {
    let ledger = tempfile::tempdir().unwrap();
    let ledger_dir = ledger.path().to_string_lossy().to_string();
    let mut cluster =
        TestCluster::start_with(3, &["--anchor-interval", "1s", "--ledger", &ledger_dir]);
    let api = cluster.api(0);
    let sql = "CREATE COLLECTION docs WITH (shards = 2, replicas = 3)";
    let reply = until_answered(WAIT, sql, || api.sql(sql));
    assert!(reply.ok(), "{}", reply.text);
    for i in 0..20 {
        let id = format!("d{i:02}");
        let reply = until_answered(WAIT, &id, || api.put("docs", &id, &json!({"n": i})));
        assert!(reply.ok(), "{}", reply.text);
    }
    let shard = stratosdb_engine::shard_of("docs", "d03", 2);
    let spec = format!("docs/{shard}");

    // Every replica passes; the node at the URL is the one audited.
    for node in 0..3 {
        let out = audit_passes(cluster.url(node), &spec, &ledger_dir);
        assert!(
            out.contains(&format!("the replica on node {}", cluster.id(node))),
            "{out}"
        );
        assert!(out.contains("equals the leaf anchored in epoch"), "{out}");
        assert!(out.contains("audit passed"), "{out}");
    }
    export_pages(&cluster);
    saved_proofs_pass_the_audit(&cluster, &ledger_dir);
    a_node_without_the_shard_audits_another_replica(&cluster, &ledger_dir);

    // Writes after the latest mark: the mark's root is rebuilt from the
    // documents now and the keys changed since, with their hashes then.
    let update = "UPDATE docs SET n = n + 100";
    let reply = until_answered(WAIT, update, || api.sql(update));
    assert!(reply.ok(), "{}", reply.text);
    let delete = "DELETE FROM docs WHERE n = 105";
    let reply = until_answered(WAIT, delete, || api.sql(delete));
    assert!(reply.ok(), "{}", reply.text);
    for spec in ["docs/0", "docs/1"] {
        let (ok, out) = audit(cluster.url(2), spec, &ledger_dir);
        assert!(ok, "{out}");
    }

    // Node 1's copy of d03 is altered on disk, its recorded hash kept.
    cluster.stop(1);
    alter_document(&cluster.data(1).join("db"), "d03", set_int("n", 7));
    cluster.restart(1);
    let (ok, out) = audit(cluster.url(1), &spec, &ledger_dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "FAILED  document docs/d03 (shard {spec} on node {})",
            cluster.id(1)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAILED  shard {spec} on node {}", cluster.id(1))),
        "{out}"
    );
    assert!(out.contains("the first: docs/d03"), "{out}");
    assert!(out.contains("audit FAILED"), "{out}");
    // The same shard on node 0 is intact; the other shard of node 1 too.
    let (ok, out) = audit(cluster.url(0), &spec, &ledger_dir);
    assert!(ok, "{out}");
    let other = format!("docs/{}", 1 - shard);
    let (ok, out) = audit(cluster.url(1), &other, &ledger_dir);
    assert!(ok, "{out}");
    cluster.stop_all();
}

/// The shell on a node, `\proof on` against the cluster's ledger, a SELECT
/// whose proofs are anchored, `\save FILE`; then `audit --proofs FILE`.
fn saved_proofs_pass_the_audit(cluster: &TestCluster, ledger: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reply.json");
    let script = format!(
        "\\proof on\nSELECT _id, n FROM docs WHERE _id IN ('d01', 'd02', 'nope') ORDER BY _id;\n\\save {}\n",
        file.display()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
            .args(["shell", "--connect", cluster.url(1), "--ledger", ledger])
            .args(["--format", "csv", "-c", &script])
            .output()
            .expect("the binary runs");
        let printed = text(&out);
        assert!(out.status.success(), "{printed}");
        if printed.matches(",anchored (epoch ").count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never anchored:\n{printed}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .arg("audit")
        .arg("--proofs")
        .arg(&file)
        .args(["--ledger", ledger])
        .output()
        .expect("the binary runs");
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert_eq!(report.matches(": anchored (epoch ").count(), 3, "{report}");
}

/// A shard of one replica, audited through a node that holds none of it:
/// the audit takes the replica on the node that does, and says so.
fn a_node_without_the_shard_audits_another_replica(cluster: &TestCluster, ledger: &str) {
    let api = cluster.api(0);
    let sql = "CREATE COLLECTION solo WITH (shards = 1, replicas = 1)";
    let reply = until_answered(WAIT, sql, || api.sql(sql));
    assert!(reply.ok(), "{}", reply.text);
    let reply = until_answered(WAIT, "solo", || api.put("solo", "s1", &json!({"n": 1})));
    assert!(reply.ok(), "{}", reply.text);
    let map = cluster.cluster_map(0);
    let holder = map
        .shards
        .iter()
        .find(|s| s.collection == "solo")
        .and_then(|s| s.replicas.first())
        .map(|r| r.node.clone())
        .expect("solo/0 has a replica");
    let other = (0..3)
        .find(|&i| cluster.id(i) != holder)
        .expect("a node without it");
    let out = audit_passes(cluster.url(other), "solo/0", ledger);
    assert!(
        out.contains(&format!("the replica on node {holder} at ")),
        "{out}"
    );
    assert!(out.contains("holds none"), "{out}");
}

/// The export route: pages of 3 cover the shard's documents once, in `_id`
/// order, as one page of all of them does; bad requests are answered with
/// the API's codes.
fn export_pages(cluster: &TestCluster) {
    let api = cluster.api(2);
    let get = |path: &str| {
        let reply = api.call("GET", path, None).expect("the node answers");
        (reply.status, reply.json())
    };
    let base = "/v1/collections/docs/shards/0/export";
    let (status, all) = get(&format!("{base}?limit=10000"));
    assert_eq!(status, 200, "{all}");
    assert!(all["next"].is_null(), "{all}");
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["documents"]
            .as_array()
            .expect("documents")
            .iter()
            .map(|d| d["_id"].as_str().expect("an _id").to_string())
            .collect()
    };
    let expected = ids(&all);
    assert!(!expected.is_empty());
    let mut paged = Vec::new();
    let mut path = format!("{base}?limit=3");
    for _ in 0..100 {
        let (status, page) = get(&path);
        assert_eq!(status, 200, "{page}");
        assert!(page["documents"].as_array().unwrap().len() <= 3);
        paged.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("{base}?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(paged, expected);
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    let (status, changes) = get(&format!("{base}?part=changes"));
    assert_eq!(status, 200, "{changes}");
    assert!(changes["changes"].is_array(), "{changes}");
    for (path, status, code) in [
        (
            "/v1/collections/docs/shards/x/export",
            400,
            "invalid_request",
        ),
        (&format!("{base}?limit=0") as &str, 400, "invalid_request"),
        (&format!("{base}?part=other"), 400, "invalid_request"),
        (
            "/v1/collections/docs/shards/9/export",
            404,
            "shard_not_found",
        ),
    ] {
        let (got, body) = get(path);
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
}
