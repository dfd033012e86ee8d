//! The node's HTTP/JSON API, as users and the cluster tests see it: real
//! `stratosdb node` processes on 127.0.0.1 (port 0: the node tells its port
//! on the first line of stdout), driven through the client and through raw
//! HTTP. Every child is killed when its test ends, also when it fails, and
//! every wait is bounded.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use stratosdb::client::{Client, ClientError};
use stratosdb_engine::{Engine, Value};

mod common;
use common::http::{assert_error, parse, raw, sql, sql_ok};
use common::process::{NodeProcess, TIMEOUT};

/// A running node, killed (SIGKILL) and reaped when dropped (the tail of
/// its log printed if the test is failing).
struct Node {
    process: NodeProcess,
    url: String,
    _logs: tempfile::TempDir,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        let logs = tempfile::tempdir().unwrap();
        let mut args: Vec<std::ffi::OsString> = vec![
            "node".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--data".into(),
            data.into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let mut process = NodeProcess::spawn("node", &args, &logs.path().join("node.log"));
        let announced = process.announce(TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            announced.url.starts_with("http://127.0.0.1:"),
            "{announced:?}"
        );
        let mut node = Node {
            process,
            url: announced.url,
            _logs: logs,
        };
        node.wait_healthy();
        node
    }

    fn client(&self) -> Client {
        Client::new(&self.url).expect("a valid URL")
    }

    fn wait_healthy(&mut self) {
        let client = self.client();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if client.health().is_ok() {
                return;
            }
            if let Some(status) = self.process.try_wait() {
                panic!("the node exited: {status}");
            }
            assert!(Instant::now() < deadline, "the node never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    fn crash(mut self) {
        self.process.kill();
    }
}

/// Everything a node holds, to check that a bad request changed nothing.
/// The data and every shard's root. (Not the applied indexes: a command a
/// shard refuses at apply time, such as a duplicate `_id`, still takes its
/// place in the raft log, changing nothing else.)
fn state(url: &str) -> (String, Vec<String>) {
    let (_, rows) = sql(url, "SELECT * FROM users ORDER BY _id");
    let map = parse(&raw("GET", &format!("{url}/v1/cluster"), None).1);
    let roots = map["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            format!(
                "{}/{}: {}",
                s["collection"], s["shard"], s["replicas"][0]["root"]
            )
        })
        .collect();
    (rows, roots)
}

#[test]
fn sql_documents_find_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--body-limit", "65536"]);
    let url = node.url.as_str();

    let (status, body) = raw("GET", &format!("{url}/v1/health"), None);
    assert_eq!((status, parse(&body)), (200, json!({"status": "ok"})));

    // SQL round trip; rows keep the SELECT order of their keys.
    assert_eq!(
        // One shard: the UNIQUE index below needs it.
        sql_ok(url, "CREATE COLLECTION users WITH (shards = 1)"),
        json!({"rows": [], "affected": 0})
    );
    let inserted = sql_ok(
        url,
        r#"INSERT INTO users VALUES ('{"_id":"u1","name":"Ann","age":31}'), ('{"_id":"u2","name":"Bob","age":40}')"#,
    );
    assert_eq!(inserted, json!({"rows": [], "affected": 2}));
    let (_, text) = sql(url, "SELECT name, _id, age FROM users ORDER BY age DESC");
    assert_eq!(
        text,
        r#"{"rows":[{"name":"Bob","_id":"u2","age":40},{"name":"Ann","_id":"u1","age":31}],"affected":0}"#
    );
    let follower = json!({"sql": "SELECT COUNT(*) AS n FROM users", "consistency": "follower"});
    let (status, text) = raw(
        "POST",
        &format!("{url}/v1/sql"),
        Some(follower.to_string().as_bytes()),
    );
    let reply = parse(&text);
    assert_eq!(status, 200, "{text}");
    assert_eq!(reply["rows"], json!([{"n": 2}]));
    assert_eq!(reply["affected"], 0);
    // A follower read says where each shard was read: its applied index.
    let applied = reply["applied"].as_array().expect("applied");
    assert_eq!(applied.len(), 1, "{text}");
    for a in applied {
        assert_eq!(a["collection"], "users");
        assert!(a["index"].as_u64().unwrap() > 0, "{text}");
    }

    // Documents.
    let docs = format!("{url}/v1/collections/users/docs");
    let (status, text) = raw(
        "PUT",
        &format!("{docs}/u3"),
        Some(br#"{"name":"Cy","age":25}"#),
    );
    assert_eq!(
        (status, parse(&text)),
        (201, json!({"_id": "u3", "created": true}))
    );
    let (status, text) = raw(
        "PUT",
        &format!("{docs}/u3"),
        Some(br#"{"_id":"u3","name":"Cy","age":26}"#),
    );
    assert_eq!(
        (status, parse(&text)),
        (200, json!({"_id": "u3", "created": false}))
    );
    let (status, text) = raw("GET", &format!("{docs}/u3"), None);
    assert_eq!(
        (status, parse(&text)),
        (200, json!({"_id": "u3", "name": "Cy", "age": 26}))
    );
    let (status, _) = raw("DELETE", &format!("{docs}/u3"), None);
    assert_eq!(status, 200);
    assert_error(
        raw("GET", &format!("{docs}/u3"), None),
        404,
        "document_not_found",
    );

    // Find.
    let find = json!({"filter": {"age": {"$gt": 30}}, "sort": {"age": -1}, "skip": 0, "limit": 5, "projection": ["name", "age"]});
    let (status, text) = raw(
        "POST",
        &format!("{url}/v1/collections/users/find"),
        Some(find.to_string().as_bytes()),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        text,
        r#"{"rows":[{"name":"Bob","age":40},{"name":"Ann","age":31}]}"#
    );
    let rows = node
        .client()
        .find("users", &json!({"filter": {"name": "Ann"}}))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].to_json_string(),
        r#"{"_id":"u1","age":31,"name":"Ann"}"#
    );

    // Bad requests: a clear error, and nothing changed.
    let before = state(url);
    type Request<'a> = Box<dyn Fn() -> (u16, String) + 'a>;
    let bad_requests: Vec<(Request, u16, &str)> = vec![
        (
            Box::new(|| raw("POST", &format!("{url}/v1/sql"), Some(b"{\"sql\": "))),
            400,
            "malformed_json",
        ),
        (
            Box::new(|| raw("POST", &format!("{url}/v1/sql"), Some(b"not json"))),
            400,
            "malformed_json",
        ),
        (
            Box::new(|| sql(url, "INSERT INTO users VALUES ('{\"_id\":\"u9\"}') garbage")),
            400,
            "syntax_error",
        ),
        (
            Box::new(|| sql(url, "UPDATE users SET age = (1 WHERE _id = 'u1'")),
            400,
            "syntax_error",
        ),
        (
            Box::new(|| raw("PUT", &format!("{docs}/u1"), Some(b"{\"name\": "))),
            400,
            "malformed_json",
        ),
        (
            Box::new(|| raw("PUT", &format!("{docs}/u1"), Some(b"{\"a\":1,\"a\":2}"))),
            400,
            "malformed_json",
        ),
        (
            Box::new(|| raw("PUT", &format!("{docs}/u1"), Some(br#"{"_id":"u2"}"#))),
            400,
            "id_mismatch",
        ),
        (
            Box::new(|| {
                raw(
                    "POST",
                    &format!("{url}/v1/collections/users/find"),
                    Some(b"{"),
                )
            }),
            400,
            "malformed_json",
        ),
        (
            Box::new(|| sql(url, "SELECT * FROM nope")),
            404,
            "collection_not_found",
        ),
        (
            Box::new(|| sql(url, "INSERT INTO nope VALUES ('{}')")),
            404,
            "collection_not_found",
        ),
        (
            Box::new(|| raw("GET", &format!("{url}/v1/collections/nope/docs/u1"), None)),
            404,
            "collection_not_found",
        ),
        (
            Box::new(|| {
                raw(
                    "PUT",
                    &format!("{url}/v1/collections/nope/docs/u1"),
                    Some(b"{}"),
                )
            }),
            404,
            "collection_not_found",
        ),
        (
            Box::new(|| raw("DELETE", &format!("{docs}/nobody"), None)),
            404,
            "document_not_found",
        ),
        (
            Box::new(|| {
                sql(
                    url,
                    r#"INSERT INTO users VALUES ('{"_id":"u9"}'), ('{"_id":"u1"}')"#,
                )
            }),
            409,
            "duplicate_id",
        ),
        (
            Box::new(|| sql(url, "CREATE COLLECTION users")),
            409,
            "collection_exists",
        ),
    ];
    for (request, status, code) in bad_requests {
        assert_error(request(), status, code);
        assert_eq!(
            state(url),
            before,
            "a bad request ({code}) changed something"
        );
    }
    // A collection of several shards cannot enforce a UNIQUE index.
    sql_ok(url, "CREATE COLLECTION spread WITH (shards = 4)");
    assert_error(
        sql(url, "CREATE UNIQUE INDEX by_name ON spread (name)"),
        400,
        "unique_needs_single_shard",
    );
    sql_ok(url, "CREATE UNIQUE INDEX by_name ON users (name)");
    let before = state(url);
    assert_error(
        raw("PUT", &format!("{docs}/u2"), Some(br#"{"name":"Ann"}"#)),
        409,
        "unique_violation",
    );
    assert_error(
        sql(url, "UPDATE users SET name = 'Ann' WHERE _id = 'u2'"),
        409,
        "unique_violation",
    );
    assert_eq!(state(url), before);

    // Oversized bodies, declared and chunked: 413 naming the limit.
    let big = vec![b' '; 70_000];
    let message = assert_error(
        raw("POST", &format!("{url}/v1/sql"), Some(&big)),
        413,
        "body_too_large",
    );
    assert!(message.contains("65536"), "{message}");
    let doc = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000));
    let message = assert_error(
        raw("PUT", &format!("{docs}/big"), Some(doc.as_bytes())),
        413,
        "body_too_large",
    );
    assert!(message.contains("65536"), "{message}");
    let chunked = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(format!("{url}/v1/sql"))
        .send(ureq::SendBody::from_reader(&mut &big[..]));
    let mut chunked = chunked.expect("the node answers");
    assert_eq!(chunked.status().as_u16(), 413);
    let text = chunked.body_mut().read_to_string().unwrap();
    assert!(
        parse(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536"),
        "{text}"
    );
    assert_eq!(state(url), before);

    // Unknown routes are errors in the same shape; the node keeps serving.
    assert_error(
        raw("GET", &format!("{url}/v1/nothing"), None),
        404,
        "no_route",
    );
    let (status, _) = raw("GET", &format!("{url}/v1/health"), None);
    assert_eq!(status, 200);
}

#[test]
fn cluster_map_reports_the_root_the_data_implies() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--zone", "eu-1", "--p2p", "127.0.0.1:0"]);
    let url = node.url.as_str();
    let docs = [
        ("users", r#"{"_id":"a","n":1}"#),
        ("users", r#"{"_id":"b","tags":["x",{"y":2.5}]}"#),
        ("logs", r#"{"_id":"l1","text":"héllo"}"#),
    ];
    sql_ok(url, "CREATE COLLECTION users");
    sql_ok(url, "CREATE COLLECTION logs");
    for (collection, doc) in docs {
        sql_ok(url, &format!("INSERT INTO {collection} VALUES ('{doc}')"));
    }
    sql_ok(url, "DELETE FROM users WHERE _id = 'b'");
    sql_ok(
        url,
        r#"INSERT INTO users VALUES ('{"_id":"b","tags":["x",{"y":2.5}]}')"#,
    );

    // The same documents in fresh shards, routed as the node routes them:
    // a shard's root depends on its documents alone.
    let engine = Engine::open_temporary().unwrap();
    let mut expected_roots = std::collections::BTreeMap::new();
    for (n, collection) in ["logs", "users"].into_iter().enumerate() {
        for shard_no in 0..4u32 {
            let shard = engine.shard(n as u32 * 4 + shard_no).unwrap();
            shard.create_collection(collection).unwrap();
            for (c, doc) in docs.iter().filter(|(c, _)| *c == collection) {
                let value = Value::from_json_str(doc).unwrap();
                let id = value.as_object().unwrap()["_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                if stratosdb_engine::shard_of(c, &id, 4) == shard_no {
                    shard.insert(c, value).unwrap();
                }
            }
            expected_roots.insert(
                (collection.to_string(), u64::from(shard_no)),
                hex::encode(shard.root().unwrap()),
            );
        }
    }

    let (status, text) = raw("GET", &format!("{url}/v1/cluster"), None);
    assert_eq!(status, 200);
    let map = parse(&text);
    let keys = |v: &Json| {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&map),
        [
            "cluster_id",
            "collections",
            "moves",
            "nodes",
            "self",
            "shards"
        ]
    );
    let me = map["self"].as_str().expect("self is a string").to_string();
    assert_eq!(map["nodes"].as_array().unwrap().len(), 1);
    let node_info = &map["nodes"][0];
    assert_eq!(
        keys(node_info),
        [
            "earnings_account",
            "http",
            "id",
            "node_key",
            "p2p",
            "state",
            "up",
            "zone"
        ]
    );
    // The node key is the ed25519 key its PeerId carries (64 hex digits);
    // its earnings account an address.
    assert_eq!(node_info["node_key"].as_str().unwrap().len(), 64);
    assert!(
        node_info["earnings_account"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    assert_eq!(node_info["id"], me.as_str());
    assert_eq!(
        format!("http://{}", node_info["http"].as_str().unwrap()),
        url
    );
    assert_eq!(node_info["zone"], "eu-1");
    assert_eq!(node_info["up"], true);
    let mut collections = map["collections"].as_array().unwrap().clone();
    collections.sort_by_key(|c| c["name"].as_str().unwrap_or_default().to_string());
    // One node: the default 4 shards, one replica each.
    assert_eq!(
        collections,
        [
            json!({"name": "logs", "shards": 4, "replicas": 1}),
            json!({"name": "users", "shards": 4, "replicas": 1})
        ]
    );
    let shards = map["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 8);
    for s in shards {
        let key = (
            s["collection"].as_str().unwrap().to_string(),
            s["shard"].as_u64().unwrap(),
        );
        assert_eq!(keys(s), ["collection", "leader", "replicas", "shard"]);
        assert_eq!(s["leader"], me.as_str());
        let replicas = s["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 1);
        assert_eq!(keys(&replicas[0]), ["applied", "node", "role", "root"]);
        assert_eq!(replicas[0]["node"], me.as_str());
        // The shard's raft group applied its entries: at least the
        // collection's creation.
        assert!(replicas[0]["applied"].as_u64().unwrap() >= 1, "{s}");
        assert_eq!(replicas[0]["root"], expected_roots[&key].as_str(), "{s}");
    }
    // The client reads the same map.
    let typed = node.client().cluster().unwrap();
    assert_eq!(typed.self_id, me);
    let first = &typed.shards[0];
    assert_eq!(
        first.replicas[0].root,
        expected_roots[&(first.collection.clone(), u64::from(first.shard))]
    );
}

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Every line of the Prometheus text format: comments, or `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let words: Vec<&str> = rest.splitn(3, ' ').collect();
            assert!(matches!(words[0], "HELP" | "TYPE"), "{line}");
            if words[0] == "TYPE" {
                assert!(
                    matches!(
                        words[2],
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ),
                    "{line}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = body
                    .split("\",")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

#[test]
fn metrics_are_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let url = node.url.as_str();
    sql_ok(url, "CREATE COLLECTION c");
    for _ in 0..3 {
        sql_ok(url, "SELECT * FROM c");
    }
    assert_error(sql(url, "SELEC"), 400, "syntax_error");
    let (status, text) = raw("GET", &format!("{url}/metrics"), None);
    assert_eq!(status, 200);
    let samples = parse_prometheus(&text);
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    };
    let ok = [("route", "/v1/sql"), ("method", "POST"), ("status", "200")];
    assert_eq!(
        find("stratosdb_http_requests_total", &ok),
        Some(4.0),
        "{text}"
    );
    let bad = [("route", "/v1/sql"), ("status", "400")];
    assert_eq!(
        find("stratosdb_http_requests_total", &bad),
        Some(1.0),
        "{text}"
    );
    let count = find(
        "stratosdb_http_request_duration_seconds_count",
        &[("route", "/v1/sql")],
    );
    assert_eq!(count, Some(5.0), "{text}");
    let inf = [("route", "/v1/sql"), ("le", "+Inf")];
    assert_eq!(
        find("stratosdb_http_request_duration_seconds_bucket", &inf),
        Some(5.0)
    );
    // The raft gauges: the metadata group and the collection's shards.
    let metadata = find("stratosdb_raft_applied_index", &[("group", "0")]);
    assert!(metadata.is_some_and(|i| i >= 1.0), "{text}");
    let shard = find(
        "stratosdb_raft_applied_index",
        &[("collection", "c"), ("shard", "0")],
    );
    assert!(shard.is_some_and(|i| i >= 1.0), "{text}");
    assert!(
        find("stratosdb_raft_proposals_total", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        find("stratosdb_raft_leader_changes_total", &[]).is_some(),
        "{text}"
    );
    // A node alone installs no snapshot and has no transfer in progress,
    // but the families are declared.
    assert_eq!(
        find("stratosdb_raft_snapshots_installed_total", &[]),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE stratosdb_snapshot_transfer_bytes gauge"),
        "{text}"
    );
}

#[test]
fn concurrent_increments_through_the_api_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let client = node.client();
    client.sql("CREATE COLLECTION counters").unwrap();
    client
        .sql(r#"INSERT INTO counters VALUES ('{"_id":"k","n":0}')"#)
        .unwrap();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    // `contention` means nothing was written: running the
                    // statement again is what the error asks for.
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        match client.sql("UPDATE counters SET n = n + 1 WHERE _id = 'k'") {
                            Ok(reply) => {
                                assert_eq!(reply.affected, 1);
                                break;
                            }
                            Err(e) if e.code() == Some("contention") && attempts < 20 => {}
                            Err(e) => panic!("increment failed: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    let doc = client.get("counters", "k").unwrap();
    assert_eq!(doc.to_json_string(), r#"{"_id":"k","n":800}"#);
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let client = node.client();
    client.sql("CREATE COLLECTION acks").unwrap();
    // Writers run until the node dies under them; they keep what was acknowledged.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..2_000 {
                    let id = format!("w{w}-{i}");
                    let result = if i % 2 == 0 {
                        client
                            .put("acks", &id, &json!({"w": w, "i": i}))
                            .map(|_| ())
                    } else {
                        let doc = json!({"_id": id, "w": w, "i": i}).to_string();
                        client
                            .sql(&format!("INSERT INTO acks VALUES ('{doc}')"))
                            .map(|_| ())
                    };
                    match result {
                        Ok(()) => acknowledged.push(id),
                        Err(ClientError::Api { .. }) => panic!("a write was refused"),
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    // Let some writes be acknowledged, then crash the node.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let rows = client.sql("SELECT COUNT(*) AS n FROM acks").unwrap().rows;
        let n = rows[0].as_object().and_then(|o| o.get("n")).cloned();
        if matches!(n, Some(Value::Int(n)) if n >= 200) {
            break;
        }
        assert!(Instant::now() < deadline, "writes were too slow");
        std::thread::sleep(Duration::from_millis(10));
    }
    node.crash();
    let acknowledged: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("a writer panicked"))
        .collect();
    // 200 were applied; each of the 4 writers may have had one of them in
    // flight, applied but not yet acknowledged, when the node died.
    assert!(acknowledged.len() >= 200 - 4, "{}", acknowledged.len());

    let node = Node::start(dir.path(), &[]);
    let client = node.client();
    for id in &acknowledged {
        let doc = client
            .get("acks", id)
            .unwrap_or_else(|e| panic!("acknowledged write {id} lost: {e}"));
        let fields = doc.as_object().expect("an object");
        assert!(
            fields.contains_key("w") && fields.contains_key("i"),
            "{id} torn: {doc:?}"
        );
    }
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.unwrap_or("").to_string();
    std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let (tx, rx) = channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("the command ran"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!(
                "`stratosdb {}` did not finish in {TIMEOUT:?}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let client = node.client();
    client.sql("CREATE COLLECTION c").unwrap();
    client.put("c", "a", &json!({"v": 1})).unwrap();
    let exit = node
        .process
        .terminate(TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(exit.success(), "{exit}");
    // The folder is released and holds the write: the same command starts
    // the node again on it, and the write is there.
    let node = Node::start(dir.path(), &[]);
    let doc = node.client().get("c", "a").unwrap();
    assert_eq!(doc.to_json_string(), r#"{"_id":"a","v":1}"#);
}

/// A script with DDL, `\import`, `\d`, an UPDATE, a syntax error spanning
/// lines and an unknown collection.
const SCRIPT: &str = r#"CREATE COLLECTION c; \import IMPORT_FILE INTO c
SELECT n, _id, t FROM c ORDER BY n;
CREATE INDEX by_n ON c (n);
\d c
\d
UPDATE c SET n = n + 10 WHERE _id = 'b';
SELECT *
  FROM WHERE;
SELECT * FROM nope;
SELECT n AS k, t FROM c WHERE n > 1;
"#;

#[test]
fn shell_connect_prints_what_the_embedded_shell_prints() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("docs.jsonl");
    std::fs::write(
        &file,
        "{\"_id\":\"a\",\"t\":\"it's \\n ok\",\"n\":1}\n{\"_id\":\"b\",\"n\":2}\nnot json\n{\"_id\":\"a\"}\n",
    )
    .unwrap();
    let script = SCRIPT.replace("IMPORT_FILE", file.to_str().unwrap());
    for format in ["json", "table", "csv"] {
        let node_dir = dir.path().join(format!("node-{format}"));
        let node = Node::start(&node_dir, &[]);
        let remote = run(
            &["shell", "--connect", &node.url, "--format", format],
            Some(&script),
        );
        let data = dir.path().join(format!("embedded-{format}"));
        let embedded = run(
            &[
                "shell",
                "--data",
                data.to_str().unwrap(),
                "--format",
                format,
            ],
            Some(&script),
        );
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        assert_eq!(text(&remote.stdout), text(&embedded.stdout), "{format}");
        assert_eq!(text(&remote.stderr), text(&embedded.stderr), "{format}");
        assert_eq!(remote.status.code(), embedded.status.code());
        if format == "json" {
            assert_eq!(
                text(&remote.stdout),
                "{\"affected\":0}\n{\"n\":1,\"_id\":\"a\",\"t\":\"it's \\n ok\"}\n{\"n\":2,\"_id\":\"b\"}\n\
                 {\"affected\":0}\n{\"name\":\"by_n\",\"fields\":[\"n\"],\"unique\":false,\"multikey\":false}\n\
                 {\"collection\":\"c\",\"documents\":2,\"indexes\":1}\n{\"affected\":1}\n{\"k\":12}\n"
            );
            let err = text(&remote.stderr);
            assert!(
                err.contains("error: statement 5 (line 7, column 1): syntax error: Expected: table name, found: WHERE at Line: 8, Column: 8"),
                "{err}"
            );
            assert!(
                err.contains("Loaded 2 documents into c; 2 lines failed."),
                "{err}"
            );
        }
    }
}

#[test]
fn shell_connect_to_nothing_is_a_clear_error() {
    let out = run(
        &["shell", "--connect", "http://127.0.0.1:9", "-c", "SELECT 1"],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://127.0.0.1:9"), "{err}");
}

#[test]
fn cluster_status_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--zone", "z1"]);
    let client = node.client();
    client.sql("CREATE COLLECTION users").unwrap();
    client.put("users", "u1", &json!({"n": 1})).unwrap();
    let map = client.cluster().unwrap();
    let out = run(&["cluster", "status", "--connect", &node.url], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let root = &map.shards[0].replicas[0].root;
    assert!(text.contains(&format!("{} (self)", map.self_id)), "{text}");
    assert!(text.contains(&map.nodes[0].http), "{text}");
    assert!(text.contains("z1"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains(root.as_str()))
        .unwrap_or_else(|| panic!("no row with the root: {text}"));
    assert!(row.contains("users"), "{row}");
    assert!(
        text.trim_end().ends_with("(1 node, 1 collection)"),
        "{text}"
    );
}
