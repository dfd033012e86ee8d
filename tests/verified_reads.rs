//! Verifiable reads on real node processes: follower reads with proofs that
//! the client verifies, a non-inclusion proof for a missing `_id`, replies
//! altered on the wire (by a proxy on loopback) rejected, and the audit of a
//! saved reply; with anchoring, follower reads proved to the latest anchored
//! epoch, and a saved (stale) proof of an older epoch caught.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::cluster::TestCluster;
use serde_json::{Value as Json, json};
use stratosdb::api::Consistency;
use stratosdb::client::{Client, ClientError};
use stratosdb::verified::{Anchors, Freshness, Policy, Rejection, audit_proofs, verify_reply};
use stratosdb_chain_anchor::{Chain, LedgerKey, LocalLedger};
use stratosdb_verifier::Verified;

/// Changes a reply's JSON on its way to the client.
type Tamper = Arc<dyn Fn(&mut Json) + Send + Sync>;

/// An HTTP proxy on 127.0.0.1 in front of one node that alters every JSON
/// reply with `tamper`. One request per connection; stopped on drop.
struct Proxy {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(target: &str, tamper: Tamper) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (target, flag) = (target.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .new_agent();
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    // A failed exchange fails the test's request, which says so.
                    let _ = serve(conn, &agent, &target, tamper.as_ref());
                }
            }
        });
        Proxy {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    agent: &ureq::Agent,
    target: &str,
    tamper: &(dyn Fn(&mut Json) + Send + Sync),
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let url = format!("{target}{path}");
    let sent = if method == "GET" {
        agent.get(&url).call()
    } else {
        agent
            .post(&url)
            .header("content-type", "application/json")
            .send(&body[..])
    };
    let (status, text) = match sent {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (502, e.to_string()),
    };
    let text = match serde_json::from_str::<Json>(&text) {
        Ok(mut j) => {
            tamper(&mut j);
            j.to_string()
        }
        Err(_) => text,
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()
}

fn setup() -> TestCluster {
    // Unanchored proofs only: the anchored ones have a test of their own.
    let cluster = TestCluster::start_with(3, &["--anchor-interval", "off"]);
    let api = cluster.api(0);
    let sql = "CREATE COLLECTION docs WITH (shards = 3, replicas = 3)";
    let reply = common::cluster::until_answered(Duration::from_secs(60), sql, || api.sql(sql));
    assert!(
        reply.ok() || reply.code().as_deref() == Some("collection_exists"),
        "{}",
        reply.text
    );
    for i in 0..30 {
        let doc = json!({"n": i, "name": format!("doc {i}"), "tags": [i % 3]});
        let id = format!("d{i:02}");
        let reply = common::cluster::until_answered(Duration::from_secs(60), &id, || {
            api.put("docs", &id, &doc)
        });
        assert!(reply.ok(), "{}", reply.text);
    }
    cluster
}

fn rejected(result: Result<impl std::fmt::Debug, ClientError>) -> Rejection {
    match result {
        Err(ClientError::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Follower reads until every replica has the writes (bounded).
fn follower_rows(
    client: &Client,
    sql: &str,
    expected: usize,
) -> (Vec<stratosdb_engine::Value>, Vec<Verified>) {
    for _ in 0..200 {
        let (reply, verdicts) = client.sql_verified(sql, Consistency::Follower).unwrap();
        if reply.rows.len() == expected {
            return (reply.rows, verdicts);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the follower never served {expected} rows of {sql}");
}

#[test]
fn verified_reads_on_a_cluster() {
    let cluster = setup();
    for node in 0..3 {
        let client = cluster.client(node).verifying_unanchored();
        // Follower reads, whole documents and a projection, verified.
        let (rows, verdicts) =
            follower_rows(&client, "SELECT * FROM docs WHERE n < 10 ORDER BY n", 10);
        assert_eq!(rows[3].as_object().unwrap()["_id"].as_str(), Some("d03"));
        assert!(
            verdicts
                .iter()
                .all(|v| matches!(v, Verified::Unanchored { .. }))
        );
        let (rows, _) = follower_rows(
            &client,
            "SELECT name, n * 2 AS twice FROM docs ORDER BY n DESC LIMIT 4",
            4,
        );
        assert_eq!(rows[0].to_json_string(), r#"{"name":"doc 29","twice":58}"#);
        // A lookup by _id, found and missing (a verified non-inclusion proof).
        let doc = client
            .get_verified("docs", "d07", Consistency::Follower)
            .unwrap();
        assert_eq!(doc.as_object().unwrap()["n"].to_json_string(), "7");
        let missing = client.get_verified("docs", "nope", Consistency::Follower);
        let missing = missing.unwrap_err();
        assert_eq!(missing.code(), Some("document_not_found"), "{missing}");
        let (rows, _) = follower_rows(
            &client,
            "SELECT * FROM docs WHERE _id IN ('d01', 'zz', 'd02')",
            2,
        );
        assert_eq!(rows.len(), 2);
        // find, with a projection.
        let found = client
            .find(
                "docs",
                &json!({"filter": {"n": {"$gte": 27}}, "projection": ["n"], "sort": "n"}),
            )
            .unwrap();
        assert_eq!(found.len(), 3);
    }

    // Statements that cannot be proven are refused with the reason.
    let api = cluster.api(1);
    for sql in [
        "SELECT COUNT(*) FROM docs",
        "SELECT DISTINCT n FROM docs",
        "DELETE FROM docs WHERE n = 1",
    ] {
        let body = json!({"sql": sql, "proof": true}).to_string();
        let reply = api.call("POST", "/v1/sql", Some(body.as_bytes())).unwrap();
        assert_eq!(reply.status, 400, "{sql}: {}", reply.text);
        assert_eq!(
            reply.code().as_deref(),
            Some("proof_unsupported"),
            "{}",
            reply.text
        );
    }
    // A missing _id's 404 carries the non-inclusion proof.
    let reply = api
        .call("GET", "/v1/collections/docs/docs/nope?proof=true", None)
        .unwrap();
    assert_eq!(reply.status, 404);
    let body = reply.json();
    assert_eq!(body["error"]["code"], "document_not_found");
    assert_eq!(body["absent"][0]["proof"]["proof"], "non_inclusion");

    // Replies altered on the wire are rejected.
    let flip_hex = |s: &mut Json| {
        let text = s.as_str().unwrap().to_string();
        let first = if text.starts_with('0') { "1" } else { "0" };
        *s = Json::String(format!("{first}{}", &text[1..]));
    };
    let tampers: Vec<(&str, Tamper)> = vec![
        (
            "a row's value",
            Arc::new(|j: &mut Json| {
                if let Some(r) = j["rows"].get_mut(0) {
                    r["n"] = json!(1000)
                }
            }),
        ),
        (
            "the proven document",
            Arc::new(|j: &mut Json| {
                if let Some(p) = j["proofs"].get_mut(0) {
                    p["document"]["name"] = json!("forged")
                }
            }),
        ),
        (
            "a row and its document together",
            Arc::new(|j: &mut Json| {
                if let Some(r) = j["rows"].get_mut(0) {
                    r["name"] = json!("forged")
                }
                if let Some(p) = j["proofs"].get_mut(0) {
                    p["document"]["name"] = json!("forged")
                }
            }),
        ),
        (
            "the shard root",
            Arc::new(move |j: &mut Json| {
                if let Some(p) = j["proofs"].get_mut(0) {
                    flip_hex(&mut p["shard_root"])
                }
            }),
        ),
        (
            "a proof's sibling hash",
            Arc::new(move |j: &mut Json| {
                if let Some(p) = j["proofs"].get_mut(0) {
                    flip_hex(&mut p["proof"]["levels"][0]["siblings"][0])
                }
            }),
        ),
        (
            "a dropped row",
            Arc::new(|j: &mut Json| {
                if let Some(rows) = j["rows"].as_array_mut() {
                    rows.pop();
                }
            }),
        ),
    ];
    for (what, tamper) in tampers {
        let proxy = Proxy::start(cluster.url(1), tamper);
        let client = Client::new(&proxy.url).unwrap().verifying_unanchored();
        let reason = rejected(client.sql_verified(
            "SELECT * FROM docs ORDER BY n LIMIT 5",
            Consistency::Follower,
        ));
        assert!(matches!(reason, Rejection::Invalid(_)), "{what}: {reason}");
        let reason = rejected(client.get_verified("docs", "d04", Consistency::Follower));
        assert!(matches!(reason, Rejection::Invalid(_)), "{what}: {reason}");
    }
    // A 404 whose non-inclusion proof was removed, or an absent document
    // claimed for one that exists.
    let proxy = Proxy::start(
        cluster.url(1),
        Arc::new(|j: &mut Json| {
            if let Some(a) = j["absent"].as_array_mut() {
                a.clear()
            }
        }),
    );
    let client = Client::new(&proxy.url).unwrap().verifying_unanchored();
    rejected(client.get_verified("docs", "nope", Consistency::Follower));
    drop(proxy);
    let proxy = Proxy::start(
        cluster.url(1),
        Arc::new(|j: &mut Json| {
            let proof = j["proofs"][0].clone();
            if !proof.is_null() {
                j["rows"] = json!([]);
                j["proofs"] = json!([]);
                j["absent"] = json!([proof]);
            }
        }),
    );
    let client = Client::new(&proxy.url).unwrap().verifying_unanchored();
    rejected(client.get_verified("docs", "d05", Consistency::Follower));
    drop(proxy);
    // The audit of a saved reply passes; with one bit flipped it fails.
    let saved = cluster
        .client(2)
        .sql_proven(
            "SELECT _id, name FROM docs WHERE n >= 20 ORDER BY n",
            Consistency::Follower,
        )
        .unwrap();
    let text = serde_json::to_string_pretty(&saved).unwrap();
    let lines = audit_proofs(&text, None, &Policy::default());
    assert_eq!(lines.len(), 1 + saved.proofs.len());
    assert!(lines.iter().all(|l| l.verdict.is_ok()), "{lines:?}");
    let mut flipped: Json = serde_json::from_str(&text).unwrap();
    flip_hex(&mut flipped["proofs"][3]["shard_root"]);
    let lines = audit_proofs(&flipped.to_string(), None, &Policy::default());
    let failed: Vec<_> = lines.iter().filter(|l| l.verdict.is_err()).collect();
    assert_eq!(failed.len(), 1, "{lines:?}");
    let mut renamed: Json = serde_json::from_str(&text).unwrap();
    renamed["rows"][0]["name"] = json!("forged");
    let lines = audit_proofs(&renamed.to_string(), None, &Policy::default());
    assert!(lines[0].verdict.is_err(), "{lines:?}");
    // The shell with --connect: `\proof on` adds a verified proof column.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args([
            "shell",
            "--connect",
            cluster.url(2),
            "--format",
            "json",
            "-c",
        ])
        .arg("\\proof on\nSELECT _id, n FROM docs WHERE n < 2 ORDER BY n;")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("unanchored (raft index").count(),
        2,
        "{stdout}"
    );

    // The same through `stratosdb audit --proofs FILE`: exit 0, then 1.
    let dir = tempfile::tempdir().unwrap();
    let audit = |json: &str| {
        let file = dir.path().join("reply.json");
        std::fs::write(&file, json).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratosdb"))
            .args(["audit", "--proofs"])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, out) = audit(&text);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("unanchored (raft index"), "{out}");
    let (code, out) = audit(&flipped.to_string());
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.matches("FAILED ").count(), 1, "{out}");
    let required = Policy {
        require_anchored: true,
        ..Policy::default()
    };
    assert!(
        audit_proofs(&text, None, &required)
            .iter()
            .skip(1)
            .all(|l| l.verdict.is_err())
    );
}

/// Retries `attempt` every 200 ms for at most `limit`; its last error.
fn within<T>(limit: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(e) if std::time::Instant::now() >= deadline => panic!("gave up: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Checks a saved reply against the chain, as a client would.
fn check_saved(
    reply: &stratosdb::verified::ProvenReply,
    chain: &dyn Chain,
    freshness: Freshness,
) -> Result<Vec<Verified>, Rejection> {
    let query = stratosdb::verified::projection_of(reply.sql.as_deref())?;
    let policy = Policy {
        require_anchored: true,
        freshness,
    };
    verify_reply(
        reply,
        query.as_ref(),
        &mut Anchors::new(Some(chain)),
        &policy,
    )
}

#[test]
fn anchored_reads_verify_against_the_chain_and_a_stale_proof_is_caught() {
    let ledger = tempfile::tempdir().unwrap();
    let ledger_dir = ledger.path().to_string_lossy().to_string();
    let cluster = TestCluster::start_with(3, &["--anchor-interval", "1s", "--ledger", &ledger_dir]);
    let api = cluster.api(0);
    let sql = "CREATE COLLECTION docs WITH (shards = 2, replicas = 3)";
    let reply = common::cluster::until_answered(Duration::from_secs(60), sql, || api.sql(sql));
    assert!(reply.ok(), "{}", reply.text);
    for i in 0..10 {
        let id = format!("d{i:02}");
        let doc = json!({"n": i, "v": 1});
        let reply = common::cluster::until_answered(Duration::from_secs(60), &id, || {
            api.put("docs", &id, &doc)
        });
        assert!(reply.ok(), "{}", reply.text);
    }
    // The client reads anchors from the ledger itself, never from a node.
    let key = LedgerKey::load_or_create(&ledger.path().join("reader-key")).unwrap();
    let chain: Arc<dyn Chain> = Arc::new(LocalLedger::open(ledger.path(), key).unwrap());
    let latest = Policy {
        require_anchored: true,
        freshness: Freshness::Latest,
    };

    // Once an epoch after the writes is anchored, follower reads through
    // every node are proved to the latest anchored epoch.
    for node in 0..3 {
        let client = cluster.client(node).with_verifier(chain.clone(), latest);
        let (rows, verdicts) = within(Duration::from_secs(90), || {
            client
                .sql_verified("SELECT * FROM docs ORDER BY n", Consistency::Follower)
                .map_err(|e| e.to_string())
        });
        assert_eq!(rows.rows.len(), 10);
        assert!(
            verdicts
                .iter()
                .all(|v| matches!(v, Verified::Anchored { .. })),
            "{verdicts:?}"
        );
    }

    // A proof saved now is genuine and of the latest epoch...
    let sql = "SELECT * FROM docs WHERE _id = 'd03'";
    let saved = within(Duration::from_secs(90), || {
        let reply = cluster
            .client(1)
            .sql_proven(sql, Consistency::Follower)
            .map_err(|e| e.to_string())?;
        check_saved(&reply, chain.as_ref(), Freshness::Latest).map_err(|e| e.to_string())?;
        Ok(reply)
    });
    let Some(Verified::Anchored { epoch: saved_epoch }) =
        check_saved(&saved, chain.as_ref(), Freshness::Any)
            .unwrap()
            .first()
            .cloned()
    else {
        panic!("the saved proof is anchored");
    };
    // ...then the document changes and newer epochs are anchored: a replica
    // that served the saved (stale) document with its old proof is caught by
    // a client that asks for the latest epoch, though the proof still holds
    // for the epoch it names.
    let update = "UPDATE docs SET v = 2 WHERE _id = 'd03'";
    let reply =
        common::cluster::until_answered(Duration::from_secs(60), update, || api.sql(update));
    assert!(reply.ok(), "{}", reply.text);
    let stale = within(Duration::from_secs(90), || {
        match check_saved(&saved, chain.as_ref(), Freshness::Latest) {
            Err(Rejection::Stale {
                epoch, required, ..
            }) => Ok((epoch, required)),
            other => Err(format!("not yet caught: {other:?}")),
        }
    });
    assert_eq!(stale.0, saved_epoch);
    assert!(stale.1 > saved_epoch, "{stale:?}");
    assert!(check_saved(&saved, chain.as_ref(), Freshness::Any).is_ok());
    // The fresh read serves the new version, proved to the latest epoch.
    let client = cluster.client(2).with_verifier(chain.clone(), latest);
    let rows = within(Duration::from_secs(90), || {
        let (rows, _) = client
            .sql_verified(sql, Consistency::Follower)
            .map_err(|e| e.to_string())?;
        match rows.rows.first() {
            Some(doc) if doc.to_json_string().contains(r#""v":2"#) => Ok(rows.rows),
            other => Err(format!("served {other:?}")),
        }
    });
    assert_eq!(rows.len(), 1);
}
