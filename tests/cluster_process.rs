//! The cluster as users run it: real `stratosdb node` processes on
//! 127.0.0.1, founding a cluster together (`--peers`), driven over HTTP,
//! killed with SIGKILL, stopped with SIGTERM and restarted with the same
//! command line. The tests follow the contract of `stratosdb node` and the
//! HTTP API (README, "A node and its HTTP API"), not one build's behavior.
//!
//! The same scenarios also run on a single node (a cluster of one).
//!
//! Every wait is bounded, every writer is bounded in count and time, and
//! every process is killed when its test ends, also when it fails (then the
//! tail of each node's log is printed).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use stratosdb::api::ClusterMap;

mod common;
use common::cluster::{Api, Reply, TestCluster, free_ports, retry_until, until_answered};
use common::http::assert_error;
use common::process::{NodeProcess, TIMEOUT, run_to_end};

/// Longest a test waits for the replicas to converge.
const CONVERGE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

/// `SELECT COUNT(*)` through one node, linearizable (retried while the node
/// answers 503).
fn count(api: &Api, collection: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) AS n FROM {collection}");
    let reply = until_answered(TIMEOUT, &sql, || api.sql(&sql));
    assert_eq!(reply.status, 200, "{sql} through {}: {reply}", api.url);
    reply.json()["rows"][0]["n"]
        .as_i64()
        .unwrap_or_else(|| panic!("{sql}: {reply}"))
}

/// Runs a DDL statement once: a 503 (or no answer) is retried, and then the
/// statement may have been applied already, so `exists_code` counts as done.
fn ddl(api: &Api, sql: &str, exists_code: &str) {
    let mut retried = false;
    retry_until(TIMEOUT, sql, || {
        let result = api.sql(sql);
        match &result {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) if retried && r.status == 409 && r.code().as_deref() == Some(exists_code) => {
                Ok(())
            }
            Ok(r) if r.status == 503 => {
                retried = true;
                Err(r.to_string())
            }
            Ok(r) => panic!("{sql} through {}: {r}", api.url),
            Err(e) => {
                retried = true;
                Err(e.clone())
            }
        }
    })
}

fn create_collection(api: &Api, sql: &str) {
    ddl(api, sql, "collection_exists");
}

/// A PUT that must succeed (retried on 503 or no answer: a PUT may repeat).
fn put_ok(api: &Api, collection: &str, id: &str, doc: &Json) {
    let reply = until_answered(TIMEOUT, &format!("PUT {collection}/{id}"), || {
        api.put(collection, id, doc)
    });
    assert!(
        reply.ok(),
        "PUT {collection}/{id} through {}: {reply}",
        api.url
    );
}

/// A GET that must find the document (retried on 503 or no answer).
fn get_ok(api: &Api, collection: &str, id: &str, follower: bool) -> Json {
    let reply = until_answered(TIMEOUT, &format!("GET {collection}/{id}"), || {
        api.get(collection, id, follower)
    });
    assert_eq!(
        reply.status, 200,
        "GET {collection}/{id} (follower: {follower}) through {}: {reply}",
        api.url
    );
    reply.json()
}

/// The node (index) that leads `collection`'s `shard`, as the running nodes
/// report it (polled until one reports a leader that is running).
fn leader_of(cluster: &mut TestCluster, collection: &str, shard: u32) -> usize {
    let running = cluster.running();
    let ids = cluster.ids();
    retry_until(
        TIMEOUT,
        &format!("a running leader of {collection}/{shard}"),
        || {
            for &i in &running {
                let Ok(map) = cluster.api(i).cluster() else {
                    continue;
                };
                let leader = map
                    .shards
                    .iter()
                    .find(|s| s.collection == collection && s.shard == shard)
                    .and_then(|s| s.leader.clone());
                if let Some(leader) = leader
                    && let Some(j) = ids.iter().position(|id| *id == leader)
                    && running.contains(&j)
                {
                    return Ok(j);
                }
            }
            Err("no running node reports a running leader".to_string())
        },
    )
}

/// Checks that `map` (from node i) lists exactly the cluster's nodes, all
/// up, with the addresses they were started with.
fn check_members(cluster: &TestCluster, i: usize, map: &ClusterMap) -> Result<(), String> {
    if map.self_id != cluster.id(i) {
        return Err(format!(
            "node {i} says self = {:?}, but announced {:?}",
            map.self_id,
            cluster.id(i)
        ));
    }
    let listed: BTreeSet<&str> = map.nodes.iter().map(|n| n.id.as_str()).collect();
    let ids = cluster.ids();
    let expected: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    if listed != expected || map.nodes.len() != ids.len() {
        return Err(format!("node {i} lists {listed:?}, expected {expected:?}"));
    }
    for node in &map.nodes {
        let j = cluster.index_of(&node.id);
        if !node.up {
            return Err(format!("node {i} lists node {j} as down: {node:?}"));
        }
        if node.http != cluster.http(j) || node.p2p.as_deref() != Some(cluster.p2p(j)) {
            return Err(format!(
                "node {i} lists node {j} at {node:?}; it was started with --http {} --p2p {}",
                cluster.http(j),
                cluster.p2p(j)
            ));
        }
    }
    Ok(())
}

/// Checks that `map` places `collection` in `shards` shards (numbered from
/// 0) of `replicas` distinct replicas on `members`, each with a leader among
/// its replicas.
fn check_layout(
    map: &ClusterMap,
    collection: &str,
    shards: u32,
    replicas: usize,
    members: &BTreeSet<String>,
) -> Result<(), String> {
    let placement: Vec<_> = map
        .collections
        .iter()
        .filter(|c| c.name == collection)
        .collect();
    if placement.len() != 1
        || placement[0].shards != shards
        || placement[0].replicas as usize != replicas
    {
        return Err(format!("collections: {:?}", map.collections));
    }
    let listed: Vec<_> = map
        .shards
        .iter()
        .filter(|s| s.collection == collection)
        .collect();
    let numbers: BTreeSet<u32> = listed.iter().map(|s| s.shard).collect();
    if listed.len() != shards as usize || numbers != (0..shards).collect() {
        return Err(format!("{collection}'s shards: {listed:?}"));
    }
    for s in listed {
        let nodes: BTreeSet<&String> = s.replicas.iter().map(|r| &r.node).collect();
        if s.replicas.len() != replicas || nodes.len() != replicas {
            return Err(format!(
                "shard {} has not {replicas} distinct replicas: {s:?}",
                s.shard
            ));
        }
        if let Some(stranger) = nodes.iter().find(|n| !members.contains(**n)) {
            return Err(format!(
                "shard {} has a replica on {stranger}, not a member",
                s.shard
            ));
        }
        match &s.leader {
            Some(l) if nodes.contains(l) => {}
            _ => {
                return Err(format!(
                    "shard {} has no leader among its replicas: {s:?}",
                    s.shard
                ));
            }
        }
    }
    Ok(())
}

/// Node i's documents of `collection` (sorted) and its own replicas' roots:
/// what a refused request must leave alone.
fn state(
    cluster: &TestCluster,
    i: usize,
    collection: &str,
) -> (String, Vec<(String, u32, String)>) {
    let api = cluster.api(i);
    let sql = format!("SELECT * FROM {collection} ORDER BY _id");
    let rows = until_answered(TIMEOUT, &sql, || api.sql(&sql));
    assert_eq!(rows.status, 200, "{rows}");
    let map = cluster.cluster_map(i);
    let mut roots: Vec<(String, u32, String)> = map
        .shards
        .iter()
        .flat_map(|s| {
            s.replicas
                .iter()
                .filter(|r| r.node == map.self_id)
                .map(|r| (s.collection.clone(), s.shard, r.root.clone()))
        })
        .collect();
    roots.sort();
    (rows.text, roots)
}

// ------------------------------------------------------------ scenarios

/// Writers through every node while nodes are SIGKILLed and restarted:
/// every acknowledged write is then readable from every node.
fn writes_survive_sigkill(n: usize) {
    let mut cluster = TestCluster::start(n);
    create_collection(&cluster.api(0), "CREATE COLLECTION acks");
    let apis: Vec<Api> = (0..n).map(|i| cluster.api(i)).collect();

    const WRITERS: usize = 3;
    const MAX_WRITES: usize = 3_000;
    let writers_deadline = Instant::now() + Duration::from_secs(240);
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let unexpected = Arc::new(Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let apis = apis.clone();
            let stop = Arc::clone(&stop);
            let acked_count = Arc::clone(&acked_count);
            let unexpected = Arc::clone(&unexpected);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..MAX_WRITES {
                    if stop.load(Ordering::SeqCst) || Instant::now() >= writers_deadline {
                        break;
                    }
                    let api = &apis[(w + i) % apis.len()];
                    let id = format!("w{w}-{i}");
                    let result = if i % 2 == 0 {
                        api.put("acks", &id, &json!({"w": w, "i": i}))
                    } else {
                        let doc = json!({"_id": id, "w": w, "i": i}).to_string();
                        api.sql(&format!("INSERT INTO acks VALUES ('{doc}')"))
                    };
                    match result {
                        Ok(r) if r.ok() => {
                            acked.push(id);
                            acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        // Not acknowledged: it may or may not have been
                        // applied; this id is not written again.
                        Ok(r) if r.status == 503 => {}
                        Err(_) => {}
                        Ok(r) => unexpected.lock().unwrap().push(format!("{id}: {r}")),
                    }
                    // Paced, so that the writes spread over the faults.
                    std::thread::sleep(Duration::from_millis(10));
                }
                acked
            })
        })
        .collect();

    let progress = |more: usize, what: &str| {
        let target = acked_count.load(Ordering::SeqCst) + more;
        retry_until(TIMEOUT, what, || {
            let now = acked_count.load(Ordering::SeqCst);
            if now >= target {
                Ok(())
            } else {
                Err(format!("{now} writes acknowledged, waiting for {target}"))
            }
        });
    };
    progress(50, "the first acknowledged writes");
    if n == 1 {
        cluster.kill(0);
        cluster.restart(0);
        progress(20, "writes after the node's restart");
    } else {
        let leader = leader_of(&mut cluster, "acks", 0);
        let follower = (0..n).find(|&i| i != leader).unwrap();
        cluster.kill(follower);
        progress(20, "writes while a follower of shard 0 is down");
        cluster.restart(follower);
        progress(20, "writes after the follower's restart");
        let leader = leader_of(&mut cluster, "acks", 0);
        cluster.kill(leader);
        progress(20, "writes after the leader of shard 0 was killed");
        cluster.restart(leader);
        progress(20, "writes after the old leader's restart");
    }
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("a writer panicked"))
        .collect();
    let unexpected = unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "writes were refused with errors other than 503: {unexpected:?}"
    );
    assert_eq!(acked.len(), acked_count.load(Ordering::SeqCst));

    // Every acknowledged write, from every node: linearizable first, then
    // follower reads once the replicas have converged.
    let check_all = |follower: bool| {
        let checkers: Vec<_> = apis
            .iter()
            .cloned()
            .enumerate()
            .map(|(node, api)| {
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let mut lost = Vec::new();
                    for id in &acked {
                        let reply = until_answered(TIMEOUT, &format!("GET acks/{id}"), || {
                            api.get("acks", id, follower)
                        });
                        let whole = reply.status == 200 && {
                            let doc = reply.json();
                            doc["_id"] == id.as_str() && doc["w"].is_u64() && doc["i"].is_u64()
                        };
                        if !whole {
                            lost.push(format!("{id}: {reply}"));
                        }
                    }
                    (node, lost)
                })
            })
            .collect();
        for checker in checkers {
            let (node, lost) = checker.join().expect("a reader panicked");
            assert!(
                lost.is_empty(),
                "{} of {} acknowledged writes are missing or torn on node {node} (follower read: {follower}); first: {:?}",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(10)]
            );
        }
    };
    check_all(false);
    cluster.wait_converged(CONVERGE);
    check_all(true);
    for (i, api) in apis.iter().enumerate() {
        let n = count(api, "acks");
        assert!(
            n >= acked.len() as i64,
            "node {i} counts {n} documents, but {} were acknowledged",
            acked.len()
        );
    }
}

/// Writes, SIGTERM of every node (clean exit 0), restart of every node with
/// the same command: the data and the node ids are kept.
fn restart_all_keeps_data(n: usize) {
    let mut cluster = TestCluster::start(n);
    create_collection(&cluster.api(0), "CREATE COLLECTION kept");
    let ids = cluster.ids();
    let docs: Vec<(String, Json)> = (0..100)
        .map(|k| (format!("k{k}"), json!({"k": k, "text": format!("doc {k}")})))
        .collect();
    for (k, (id, doc)) in docs.iter().enumerate() {
        put_ok(&cluster.api(k % n), "kept", id, doc);
    }
    cluster.stop_all();
    let all: Vec<usize> = (0..n).collect();
    // The harness checks that each node announces the id it had.
    cluster.restart_all(&all);
    assert_eq!(cluster.ids(), ids);
    for i in 0..n {
        retry_until(
            TIMEOUT,
            &format!("node {i}'s map after the restart"),
            || {
                let map = cluster.api(i).cluster()?;
                check_members(&cluster, i, &map)?;
                if map.collections.iter().any(|c| c.name == "kept") {
                    Ok(())
                } else {
                    Err(format!("no collection kept in {:?}", map.collections))
                }
            },
        );
        let api = cluster.api(i);
        assert_eq!(count(&api, "kept"), 100, "node {i}");
        for (id, doc) in &docs {
            let mut expected = doc.clone();
            expected["_id"] = json!(id);
            assert_eq!(get_ok(&api, "kept", id, false), expected, "node {i}");
        }
    }
    cluster.wait_converged(CONVERGE);
}

/// 8 clients × 100 increments of one counter, round-robin over the nodes:
/// exactly 800, on every node.
fn no_increment_lost(n: usize) {
    let mut cluster = TestCluster::start(n);
    let api = cluster.api(0);
    create_collection(&api, "CREATE COLLECTION counters");
    let insert = r#"INSERT INTO counters VALUES ('{"_id":"c","n":0}')"#;
    ddl(&api, insert, "duplicate_id");
    let apis: Vec<Api> = (0..n).map(|i| cluster.api(i)).collect();

    const THREADS: usize = 8;
    const INCREMENTS: usize = 100;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let apis = apis.clone();
            std::thread::spawn(move || {
                let (mut acked, mut indeterminate, mut refused) = (0u64, Vec::new(), Vec::new());
                for k in 0..INCREMENTS {
                    let api = &apis[(t + k) % apis.len()];
                    // `contention` (409) is documented as "nothing was
                    // written, run it again": the only retried error. A 503
                    // or no answer may have applied: never retried.
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        match api.sql("UPDATE counters SET n = n + 1 WHERE _id = 'c'") {
                            Ok(r) if r.status == 200 => {
                                assert_eq!(r.json()["affected"], 1, "{r}");
                                acked += 1;
                                break;
                            }
                            Ok(r)
                                if r.status == 409
                                    && r.code().as_deref() == Some("contention")
                                    && attempts < 100 => {}
                            Ok(r) if r.status == 503 => {
                                indeterminate.push(r.to_string());
                                break;
                            }
                            Err(e) => {
                                indeterminate.push(e);
                                break;
                            }
                            Ok(r) => {
                                refused.push(r.to_string());
                                break;
                            }
                        }
                    }
                }
                (acked, indeterminate, refused)
            })
        })
        .collect();
    let (mut acked, mut indeterminate, mut refused) = (0u64, Vec::new(), Vec::new());
    for w in workers {
        let (a, i, r) = w.join().expect("a client panicked");
        acked += a;
        indeterminate.extend(i);
        refused.extend(r);
    }
    assert!(refused.is_empty(), "increments refused: {refused:?}");
    assert!(
        indeterminate.is_empty(),
        "in a healthy cluster no increment may end without an answer or with a 503: {indeterminate:?}"
    );
    assert_eq!(acked, (THREADS * INCREMENTS) as u64);
    for (i, api) in apis.iter().enumerate() {
        assert_eq!(
            get_ok(api, "counters", "c", false),
            json!({"_id": "c", "n": 800}),
            "node {i}, linearizable"
        );
    }
    cluster.wait_converged(CONVERGE);
    for (i, api) in apis.iter().enumerate() {
        assert_eq!(
            get_ok(api, "counters", "c", true),
            json!({"_id": "c", "n": 800}),
            "node {i}, follower read after convergence"
        );
    }
}

/// Bad requests through every node: a clear error, nothing changed, and
/// every node keeps serving.
fn bad_input_changes_nothing(n: usize) {
    // A small body limit, so that an oversized body fits in the socket's
    // buffers and the 413 is read (a 17 MiB body gets a broken pipe instead).
    let limit = 65_536;
    let mut cluster = TestCluster::start_with(n, &["--body-limit", "65536"]);
    let api = cluster.api(0);
    create_collection(&api, "CREATE COLLECTION users");
    put_ok(&api, "users", "u1", &json!({"name": "Ann", "age": 31}));
    put_ok(&api, "users", "u2", &json!({"name": "Bob", "age": 40}));
    cluster.wait_converged(CONVERGE);
    let before: Vec<_> = (0..n).map(|i| state(&cluster, i, "users")).collect();

    let too_big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(limit + 4_000));
    type Request<'a> = Box<dyn Fn(&Api) -> Result<Reply, String> + 'a>;
    let bad: Vec<(&str, Request, u16, &str)> = vec![
        (
            "malformed JSON (SQL request)",
            Box::new(|a| a.call("POST", "/v1/sql", Some(b"{\"sql\": "))),
            400,
            "malformed_json",
        ),
        (
            "malformed JSON (document)",
            Box::new(|a| a.call("PUT", "/v1/collections/users/docs/u1", Some(b"{\"name\": "))),
            400,
            "malformed_json",
        ),
        (
            "SQL syntax error",
            Box::new(|a| a.sql("UPDATE users SET age = (1 WHERE _id = 'u1'")),
            400,
            "syntax_error",
        ),
        (
            "unknown collection (SQL)",
            Box::new(|a| a.sql("SELECT * FROM nope")),
            404,
            "collection_not_found",
        ),
        (
            "unknown collection (document)",
            Box::new(|a| a.put("nope", "u1", &json!({"a": 1}))),
            404,
            "collection_not_found",
        ),
        (
            "unknown document (GET)",
            Box::new(|a| a.get("users", "nobody", false)),
            404,
            "document_not_found",
        ),
        (
            "unknown document (DELETE)",
            Box::new(|a| a.call("DELETE", "/v1/collections/users/docs/nobody", None)),
            404,
            "document_not_found",
        ),
        (
            "body over the limit",
            Box::new(|a| {
                a.call(
                    "PUT",
                    "/v1/collections/users/docs/u1",
                    Some(too_big.as_bytes()),
                )
            }),
            413,
            "body_too_large",
        ),
        (
            "duplicate _id by INSERT",
            Box::new(|a| a.sql(r#"INSERT INTO users VALUES ('{"_id":"u1","name":"again"}')"#)),
            409,
            "duplicate_id",
        ),
    ];
    for entry in 0..n {
        let api = cluster.api(entry);
        for (what, request, status, code) in &bad {
            let reply = request(&api)
                .unwrap_or_else(|e| panic!("{what} through node {entry}: no answer: {e}"));
            let message = assert_error((reply.status, reply.text), *status, code);
            if *status == 413 {
                assert!(
                    message.contains(&limit.to_string()),
                    "the 413 message must name the limit ({limit}): {message}"
                );
            }
            for (i, before) in before.iter().enumerate() {
                assert_eq!(
                    cluster.api(i).health(),
                    Ok(200),
                    "node {i} after {what} through node {entry}"
                );
                assert_eq!(
                    &state(&cluster, i, "users"),
                    before,
                    "{what} through node {entry} changed something on node {i}"
                );
            }
        }
    }
}

// ------------------------------------------------ runs on today's build

#[test]
fn harness_starts_kills_restarts_and_stops_a_node() {
    let mut cluster = TestCluster::start(1);
    let id = cluster.id(0).to_string();
    assert!(!id.is_empty());
    assert_eq!(cluster.url(0), format!("http://{}", cluster.http(0)));
    let map = cluster.cluster_map(0);
    assert_eq!(map.self_id, id);
    check_members(&cluster, 0, &map).unwrap();
    let api = cluster.api(0);
    create_collection(&api, "CREATE COLLECTION h");
    // The statement applied: asking again is a conflict, not a success.
    assert_error(
        api.sql("CREATE COLLECTION h").unwrap().into(),
        409,
        "collection_exists",
    );
    put_ok(&api, "h", "a", &json!({"v": 1}));

    cluster.kill(0);
    assert!(!cluster.is_running(0));
    assert!(api.health().is_err(), "a killed node answers");
    cluster.restart(0);
    assert_eq!(cluster.id(0), id);
    assert_eq!(get_ok(&api, "h", "a", false), json!({"_id": "a", "v": 1}));

    cluster.stop(0);
    assert!(cluster.running().is_empty());
    cluster.restart(0);
    assert_eq!(get_ok(&api, "h", "a", true), json!({"_id": "a", "v": 1}));
    cluster.wait_converged(CONVERGE);
    assert!(cluster.convergence_problems(&[0]).is_empty());

    // Every start is in the node's log, with its first line.
    let log = std::fs::read_to_string(cluster.dir().join("node0.log")).unwrap();
    assert_eq!(
        log.matches("==== node 0: stratosdb node --data").count(),
        3,
        "{log}"
    );
    assert_eq!(
        log.matches(&format!("[stdout] stratosdb node {id} listening on"))
            .count(),
        3,
        "{log}"
    );
}

#[test]
fn single_node_writes_survive_sigkill_and_restart() {
    writes_survive_sigkill(1);
}

#[test]
fn single_node_restart_with_same_command_keeps_data() {
    restart_all_keeps_data(1);
}

#[test]
fn single_node_no_increment_lost() {
    no_increment_lost(1);
}

#[test]
fn single_node_bad_input_changes_nothing() {
    bad_input_changes_nothing(1);
}

// ------------------------------------------------ needs the cluster

#[test]
fn three_nodes_form_a_cluster() {
    let cluster = TestCluster::start(3);
    let ids: BTreeSet<String> = cluster.ids().into_iter().collect();
    assert_eq!(
        ids.len(),
        3,
        "the nodes' ids must differ: {:?}",
        cluster.ids()
    );
    for i in 0..3 {
        retry_until(
            TIMEOUT,
            &format!("node {i} to list the 3 nodes, all up"),
            || check_members(&cluster, i, &cluster.api(i).cluster()?),
        );
    }
    create_collection(
        &cluster.api(0),
        "CREATE COLLECTION users WITH (shards = 8, replicas = 3)",
    );
    for i in 0..3 {
        retry_until(
            TIMEOUT,
            &format!("node {i} to show users with 8 shards of 3 replicas, each with a leader"),
            || check_layout(&cluster.api(i).cluster()?, "users", 8, 3, &ids),
        );
    }
}

#[test]
fn writes_through_every_node_survive_sigkill_of_follower_and_leader() {
    writes_survive_sigkill(3);
}

#[test]
fn restart_all_with_same_command_keeps_data() {
    restart_all_keeps_data(3);
}

#[test]
fn no_increment_lost_across_nodes() {
    no_increment_lost(3);
}

#[test]
fn bad_input_changes_nothing_and_the_node_keeps_serving() {
    bad_input_changes_nothing(3);
}

#[test]
fn a_stranger_cannot_join() {
    let mut cluster = TestCluster::start(3);
    create_collection(&cluster.api(0), "CREATE COLLECTION s");
    let ports = free_ports(2);
    let stranger_http = format!("127.0.0.1:{}", ports[1]);
    let peers: Vec<&str> = (0..3).map(|i| cluster.p2p(i)).collect();
    let args: Vec<std::ffi::OsString> = vec![
        "node".into(),
        "--data".into(),
        cluster.dir().join("stranger").into(),
        "--p2p".into(),
        format!("127.0.0.1:{}", ports[0]).into(),
        "--http".into(),
        stranger_http.clone().into(),
        "--peers".into(),
        peers.join(",").into(),
    ];
    let mut stranger = NodeProcess::spawn("stranger", &args, &cluster.dir().join("stranger.log"));
    let stranger_api =
        Api::with_timeout(&format!("http://{stranger_http}"), Duration::from_secs(5));

    // For a while: the members list exactly themselves, and the stranger is
    // not healthy (or has exited with an error).
    let watch_until = Instant::now() + Duration::from_secs(5);
    let mut exited = None;
    while Instant::now() < watch_until {
        for i in 0..3 {
            let map = cluster.cluster_map(i);
            check_members(&cluster, i, &map)
                .unwrap_or_else(|e| panic!("with a stranger knocking: {e}"));
        }
        if exited.is_none() {
            exited = stranger.try_wait();
        }
        if exited.is_none() {
            assert_ne!(
                stranger_api.health(),
                Ok(200),
                "the stranger reports itself healthy: it has no cluster"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if let Some(status) = exited {
        assert!(
            !status.success(),
            "the stranger exited with {status}, not an error"
        );
    }

    // The cluster keeps serving, through every member.
    for i in 0..3 {
        put_ok(&cluster.api(i), "s", &format!("d{i}"), &json!({"i": i}));
    }
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(
                get_ok(&cluster.api(i), "s", &format!("d{j}"), false),
                json!({"_id": format!("d{j}"), "i": j})
            );
        }
    }
    stranger.kill();
    cluster.wait_converged(CONVERGE);
}

#[test]
fn no_quorum_is_a_503_with_a_retryable_error() {
    let mut cluster = TestCluster::start(3);
    let api = cluster.api(0);
    create_collection(&api, "CREATE COLLECTION q WITH (shards = 4, replicas = 3)");
    put_ok(&api, "q", "before", &json!({"v": 1}));
    cluster.kill(1);
    cluster.kill(2);

    // The survivor answers within the bound, with a 503 that says to retry.
    let bound = Duration::from_secs(15);
    let survivor = Api::with_timeout(cluster.url(0), bound);
    let reply = survivor
        .put("q", "during", &json!({"v": 2}))
        .unwrap_or_else(|e| panic!("a write without quorum got no answer within {bound:?}: {e}"));
    assert_eq!(reply.status, 503, "a write without quorum: {reply}");
    let body = reply.json();
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(
        matches!(code, "no_quorum" | "unavailable"),
        "a write without quorum: code {code:?}, expected no_quorum or unavailable: {reply}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains("retry"),
        "the message must say to retry: {message:?}"
    );
    // Nor a linearizable read: its read index needs a quorum's heartbeats,
    // even on a replica that still believes it leads the shard.
    for id in ["before", "nobody"] {
        let reply = survivor.get("q", id, false).unwrap_or_else(|e| {
            panic!("a read without quorum got no answer within {bound:?}: {e}")
        });
        assert_eq!(reply.status, 503, "a read of {id} without quorum: {reply}");
        let body = reply.json();
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert_eq!(code, "no_quorum", "a read without quorum: {reply}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("retry"),
            "the message must say to retry: {message:?}"
        );
    }
    // A follower read is served from the replica here.
    assert_eq!(
        get_ok(&survivor, "q", "before", true),
        json!({"_id": "before", "v": 1})
    );

    cluster.restart_all(&[1, 2]);
    // The 503'd write may or may not have applied; a PUT may repeat.
    put_ok(&api, "q", "during", &json!({"v": 2}));
    for i in 0..3 {
        let node = cluster.api(i);
        assert_eq!(
            get_ok(&node, "q", "before", false),
            json!({"_id": "before", "v": 1})
        );
        assert_eq!(
            get_ok(&node, "q", "during", false),
            json!({"_id": "during", "v": 2})
        );
    }
    cluster.wait_converged(CONVERGE);
}

#[test]
fn single_node_cluster_founds_itself() {
    let mut cluster = TestCluster::start(1);
    let api = cluster.api(0);
    let me = cluster.id(0).to_string();
    check_members(&cluster, 0, &cluster.cluster_map(0)).unwrap();
    create_collection(&api, "CREATE COLLECTION users");
    // One member: every replica and every leader is the node itself.
    let members = BTreeSet::from([me]);
    retry_until(
        TIMEOUT,
        "users with 4 shards of 1 replica, led by the node",
        || check_layout(&cluster.api(0).cluster()?, "users", 4, 1, &members),
    );
    for k in 0..20 {
        put_ok(&api, "users", &format!("u{k}"), &json!({"k": k}));
    }
    api.sql_ok(r#"INSERT INTO users VALUES ('{"_id":"x","k":100}')"#);
    for k in 0..20 {
        assert_eq!(
            get_ok(&api, "users", &format!("u{k}"), false),
            json!({"_id": format!("u{k}"), "k": k})
        );
    }
    assert_eq!(count(&api, "users"), 21);
    let found = api
        .find(
            "users",
            &json!({"filter": {"k": {"$gte": 18}}, "sort": {"k": 1}, "projection": ["k"]}),
        )
        .unwrap();
    assert_eq!(found.status, 200, "{found}");
    assert_eq!(
        found.json(),
        json!({"rows": [{"k": 18}, {"k": 19}, {"k": 100}]})
    );
    cluster.wait_converged(CONVERGE);
}

// ------------------------------------------------ joining with the token

/// The join token node i printed on stdout, checked against the one it keeps
/// in `DATA/join-token` (mode 0600).
fn token_of(cluster: &TestCluster, i: usize) -> String {
    use std::os::unix::fs::PermissionsExt;
    let printed = cluster.printed_token(i, TIMEOUT);
    assert!(!printed.is_empty(), "node {i} printed an empty token");
    let path = cluster.data(i).join("join-token");
    let kept = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("node {i} keeps no {}: {e}", path.display()));
    assert_eq!(
        kept.trim(),
        printed,
        "node {i}'s join-token file and its stdout differ"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o600,
        "{} has mode {mode:o}, not 600: the token is a secret",
        path.display()
    );
    printed
}

/// Every node of the cluster lists exactly the cluster's nodes, all up.
fn wait_members(cluster: &TestCluster, what: &str) {
    for i in 0..cluster.len() {
        retry_until(TIMEOUT, &format!("node {i} to list {what}"), || {
            check_members(cluster, i, &cluster.api(i).cluster()?)
        });
    }
}

/// How many of `collection`'s replicas the map places on each node.
fn replicas_per_node(
    map: &ClusterMap,
    collection: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut per = std::collections::BTreeMap::new();
    for s in map.shards.iter().filter(|s| s.collection == collection) {
        for r in &s.replicas {
            *per.entry(r.node.clone()).or_insert(0) += 1;
        }
    }
    per
}

#[test]
fn a_node_joins_with_the_token() {
    let mut cluster = TestCluster::start(3);
    let token = token_of(&cluster, 0);
    // Every founder prints the same token.
    for i in 1..3 {
        assert_eq!(token_of(&cluster, i), token, "node {i}'s token");
    }
    create_collection(&cluster.api(0), "CREATE COLLECTION before");
    put_ok(&cluster.api(1), "before", "b1", &json!({"v": 1}));

    // No --peers: the token and a member's HTTP address are enough.
    let new = cluster.join(0, &token, &[]);
    assert_eq!(new, 3);
    let ids: BTreeSet<String> = cluster.ids().into_iter().collect();
    assert_eq!(ids.len(), 4, "the new node's id must differ: {ids:?}");
    wait_members(&cluster, "the 4 nodes, all up");
    // It prints the token too, once it has joined.
    assert_eq!(cluster.printed_token(new, TIMEOUT), token);

    // The collection from before the join is served through the new node; then it is dropped, so that the
    // placement below starts from no load (it balances over every
    // collection's replicas).
    let new_api = cluster.api(new);
    assert_eq!(
        get_ok(&new_api, "before", "b1", false),
        json!({"_id": "b1", "v": 1})
    );
    put_ok(&new_api, "before", "b2", &json!({"v": 2}));
    assert_eq!(count(&cluster.api(0), "before"), 2);
    // Replicas of "before" may move to the new node now (rebalancing on
    // join: tests/cluster_heal.rs).
    new_api.sql_ok("DROP COLLECTION before");

    // A new collection places replicas on the new node: 8 shards × 3
    // replicas over 4 nodes, balanced, are 6 on each.
    create_collection(
        &new_api,
        "CREATE COLLECTION j WITH (shards = 8, replicas = 3)",
    );
    for i in 0..4 {
        retry_until(
            TIMEOUT,
            &format!("node {i} to show j with 8 shards of 3 replicas, each with a leader"),
            || check_layout(&cluster.api(i).cluster()?, "j", 8, 3, &ids),
        );
    }
    let per = replicas_per_node(&cluster.cluster_map(new), "j");
    assert!(
        per.get(cluster.id(new)).copied().unwrap_or(0) > 0,
        "no replica of j on the new node: {per:?}"
    );
    assert_eq!(
        per.values().copied().collect::<Vec<_>>(),
        vec![6, 6, 6, 6],
        "8×3 replicas on 4 nodes are not balanced: {per:?}"
    );

    // Writes and linearizable reads through the new node, and through the others.
    for k in 0..20 {
        put_ok(&new_api, "j", &format!("k{k}"), &json!({"k": k}));
    }
    new_api.sql_ok(r#"INSERT INTO j VALUES ('{"_id":"x","k":100}')"#);
    for i in 0..4 {
        let api = cluster.api(i);
        assert_eq!(count(&api, "j"), 21, "node {i}");
        assert_eq!(get_ok(&api, "j", "k7", false), json!({"_id": "k7", "k": 7}));
    }

    // A crash, and the same command line: it comes back with its id and its
    // data, without being admitted again.
    let id = cluster.id(new).to_string();
    cluster.kill(new);
    put_ok(&cluster.api(0), "j", "while-down", &json!({"k": -1}));
    cluster.restart(new);
    assert_eq!(cluster.id(new), id);
    wait_members(&cluster, "the 4 nodes after the new node's restart");
    let new_api = cluster.api(new);
    assert_eq!(count(&new_api, "j"), 22);
    for k in 0..20 {
        assert_eq!(
            get_ok(&new_api, "j", &format!("k{k}"), false),
            json!({"_id": format!("k{k}"), "k": k})
        );
    }
    put_ok(&new_api, "j", "after", &json!({"k": 200}));
    cluster.wait_converged(CONVERGE);
    // Its own replicas have the data: follower reads from it.
    for k in 0..20 {
        assert_eq!(
            get_ok(&new_api, "j", &format!("k{k}"), true),
            json!({"_id": format!("k{k}"), "k": k})
        );
    }
    assert_eq!(
        get_ok(&new_api, "j", "after", true),
        json!({"_id": "after", "k": 200})
    );
}

/// A fifth process asks to join with a wrong token: it exits non-zero
/// (bounded wait), saying on stderr that it was not admitted (`bad_token`),
/// and the members list only the admitted nodes and keep serving.
#[test]
fn a_wrong_token_is_refused() {
    let mut cluster = TestCluster::start(3);
    let token = token_of(&cluster, 0);
    let new = cluster.join(1, &token, &[]);
    wait_members(&cluster, "the 4 admitted nodes");

    // The address with `http://` this time.
    let wrong = format!("{token}x");
    let ports = free_ports(2);
    let args: Vec<std::ffi::OsString> = vec![
        "node".into(),
        "--data".into(),
        cluster.dir().join("refused").into(),
        "--p2p".into(),
        format!("127.0.0.1:{}", ports[0]).into(),
        "--http".into(),
        format!("127.0.0.1:{}", ports[1]).into(),
        "--join".into(),
        cluster.url(0).into(),
        "--token".into(),
        wrong.into(),
    ];
    let log = cluster.dir().join("refused.log");
    let mut refused = NodeProcess::spawn("refused", &args, &log);
    let refused_api = Api::with_timeout(
        &format!("http://127.0.0.1:{}", ports[1]),
        Duration::from_secs(5),
    );
    let stderr = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("[stdout] ") && !l.starts_with("===="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let bound = Duration::from_secs(30);
    let Some(status) = refused.wait_exit(bound) else {
        panic!(
            "a node with a wrong token still runs {bound:?} after it started (health: {:?}); it must exit non-zero, saying it was not admitted\n{}",
            refused_api.health(),
            refused.log_tail(40)
        );
    };
    assert!(
        !status.success(),
        "a refused node exited with {status}\n{}",
        refused.log_tail(40)
    );
    // Its last lines may still be on their way into the log.
    retry_until(
        Duration::from_secs(5),
        "the refused node's stderr to say it was not admitted (bad_token)",
        || {
            let said = stderr();
            if said.contains("bad_token") && said.to_lowercase().contains("not admit") {
                Ok(())
            } else {
                Err(format!("its stderr: {said}"))
            }
        },
    );
    let all = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !all.contains("[stdout] join token:"),
        "a refused node printed the token: {all}"
    );

    // The members list only the admitted nodes, and keep serving.
    for i in 0..cluster.len() {
        check_members(&cluster, i, &cluster.cluster_map(i))
            .unwrap_or_else(|e| panic!("after a refused join: {e}"));
    }
    create_collection(&cluster.api(new), "CREATE COLLECTION after");
    put_ok(&cluster.api(new), "after", "a", &json!({"v": 1}));
    assert_eq!(
        get_ok(&cluster.api(2), "after", "a", false),
        json!({"_id": "a", "v": 1})
    );
    refused.kill();
    cluster.wait_converged(CONVERGE);
}

// ------------------------------------------------ the shell and status on a cluster

#[test]
fn shell_connect_against_a_cluster() {
    let cluster = TestCluster::start(3);
    let script = r#"CREATE COLLECTION people;
INSERT INTO people VALUES ('{"_id":"p1","name":"Ann","age":31}'), ('{"_id":"p2","name":"Bob","age":40}'), ('{"_id":"p3","name":"Cy","age":25,"tags":["x","y"]}');
INSERT INTO people VALUES ('{"_id":"p4","name":"Dee","age":52,"address":{"city":"Oslo"}}'), ('{"_id":"p5","name":"Eve","age":19}');
SELECT * FROM people ORDER BY age;
SELECT name, age FROM people WHERE age > 30 ORDER BY age DESC LIMIT 2;
UPDATE people SET age = age + 1 WHERE age < 35;
SELECT _id, age FROM people ORDER BY _id;
SELECT COUNT(*) AS n, SUM(age) AS s FROM people;
CREATE INDEX by_age ON people (age);
DELETE FROM people WHERE _id = 'p2';
SELECT COUNT(*) AS n FROM people;
\d
\d people
SELECT * FROM nowhere;
SELECT name FROM people WHERE _id = 'p4';
"#;
    let run = |target: &[std::ffi::OsString]| {
        let mut args: Vec<std::ffi::OsString> = vec!["shell".into()];
        args.extend(target.iter().cloned());
        args.extend(["--format".into(), "json".into()]);
        let out = run_to_end(&args, script, TIMEOUT);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let embedded_dir = tempfile::tempdir().unwrap();
    let embedded = run(&["--data".into(), embedded_dir.path().join("db").into()]);
    let remote = run(&["--connect".into(), cluster.url(1).into()]);
    // The script is meaningful: rows, and the failing statement's error.
    assert!(
        embedded.1.contains(r#""name":"Dee""#),
        "embedded stdout: {}",
        embedded.1
    );
    assert!(
        embedded.2.contains("nowhere"),
        "embedded stderr: {}",
        embedded.2
    );
    assert_eq!(
        remote.1, embedded.1,
        "stdout of `shell --connect` against a cluster (left) and embedded (right)"
    );
    assert_eq!(
        remote.2, embedded.2,
        "stderr of `shell --connect` against a cluster (left) and embedded (right)"
    );
    assert_eq!(remote.0, embedded.0, "exit status");

    // The data is in the cluster, through every node.
    for i in 0..3 {
        assert_eq!(count(&cluster.api(i), "people"), 4, "node {i}");
    }

    // `cluster status` names every node and the collection's shards.
    let out = run_to_end(
        &[
            "cluster".into(),
            "status".into(),
            "--connect".into(),
            cluster.url(2).into(),
        ],
        "",
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cluster status exited with {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for id in cluster.ids() {
        assert!(
            stdout.contains(&id),
            "cluster status does not name {id}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("{} (self)", cluster.id(2))),
        "cluster status does not mark the node it asked:\n{stdout}"
    );
    let map = cluster.cluster_map(2);
    let people: Vec<_> = map
        .shards
        .iter()
        .filter(|s| s.collection == "people")
        .collect();
    assert!(!people.is_empty(), "{map:?}");
    let shard_rows = stdout
        .lines()
        .filter(|l| l.split(['│', '┆']).map(str::trim).nth(1) == Some("people"))
        .count();
    let replicas: usize = people.iter().map(|s| s.replicas.len()).sum();
    assert_eq!(
        shard_rows, replicas,
        "cluster status must show one row per replica of each shard of people:\n{stdout}"
    );
    assert!(
        stdout.contains("(3 nodes, 1 collection)"),
        "cluster status' summary:\n{stdout}"
    );
}

// ------------------------------------------------ follower reads

#[test]
fn follower_reads_report_applied_indexes() {
    let mut cluster = TestCluster::start(3);
    let api = cluster.api(0);
    create_collection(&api, "CREATE COLLECTION f WITH (shards = 4, replicas = 3)");
    for k in 0..12 {
        put_ok(&cluster.api(k % 3), "f", &format!("d{k}"), &json!({"k": k}));
    }
    cluster.wait_converged(CONVERGE);
    for i in 0..3 {
        let api = cluster.api(i);
        // A scan reads every shard: one entry each.
        let sql = "SELECT COUNT(*) AS n FROM f";
        let reply = until_answered(TIMEOUT, sql, || api.sql_with(sql, "follower"));
        assert_eq!(reply.status, 200, "node {i}: {reply}");
        let body = reply.json();
        assert_eq!(body["rows"], json!([{"n": 12}]), "node {i}: {reply}");
        let applied = body["applied"]
            .as_array()
            .unwrap_or_else(|| panic!("node {i}: a follower read without \"applied\": {reply}"));
        let mut shards = BTreeSet::new();
        for entry in applied {
            let fields: BTreeSet<&str> = entry
                .as_object()
                .unwrap_or_else(|| panic!("node {i}: {entry}"))
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                fields,
                BTreeSet::from(["collection", "shard", "index"]),
                "node {i}: {entry}"
            );
            assert_eq!(entry["collection"], "f", "node {i}: {entry}");
            let index = entry["index"].as_u64().unwrap_or(0);
            assert!(index >= 1, "node {i}: applied index {entry}");
            let shard = entry["shard"].as_u64().expect("a shard number");
            assert!(
                shards.insert(shard),
                "node {i}: shard {shard} twice: {reply}"
            );
        }
        assert_eq!(
            shards,
            (0..4).collect::<BTreeSet<u64>>(),
            "node {i}: one entry per shard read: {reply}"
        );

        // A read of one document reads one shard.
        let sql = "SELECT * FROM f WHERE _id = 'd5'";
        let reply = until_answered(TIMEOUT, sql, || api.sql_with(sql, "follower"));
        assert_eq!(reply.status, 200, "node {i}: {reply}");
        let body = reply.json();
        assert_eq!(body["rows"], json!([{"_id": "d5", "k": 5}]), "node {i}");
        let applied = body["applied"].as_array().expect("applied");
        assert_eq!(applied.len(), 1, "node {i}: one shard read: {reply}");
        assert!(applied[0]["index"].as_u64().unwrap_or(0) >= 1, "{reply}");

        // A linearizable read has no "applied".
        let sql = "SELECT COUNT(*) AS n FROM f";
        let reply = until_answered(TIMEOUT, sql, || api.sql(sql));
        assert_eq!(reply.status, 200, "node {i}: {reply}");
        assert!(reply.json().get("applied").is_none(), "node {i}: {reply}");

        // GET with ?consistency=follower, every document, through every node.
        for k in 0..12 {
            assert_eq!(
                get_ok(&api, "f", &format!("d{k}"), true),
                json!({"_id": format!("d{k}"), "k": k}),
                "node {i}"
            );
        }
    }
}

// ------------------------------------------------ DDL seen from another node

/// A collection dropped through one node is gone, at once, through the
/// others: a second DROP, a SELECT and an INSERT through another node are
/// 404 `collection_not_found` (found by the fixture suite on the cluster,
/// `01_collections.sql`'s second `DROP COLLECTION orders`).
#[test]
fn a_dropped_collection_is_gone_through_every_node() {
    let cluster = TestCluster::start(3);
    let mut wrong = Vec::new();
    for round in 0..20 {
        let name = format!("d{round}");
        let first = cluster.api(round % 3);
        first.sql_ok(&format!("CREATE COLLECTION {name}"));
        first.sql_ok(&format!(r#"INSERT INTO {name} VALUES ('{{"_id":"a"}}')"#));
        first.sql_ok(&format!("DROP COLLECTION {name}"));
        for other in [(round + 1) % 3, (round + 2) % 3] {
            let api = cluster.api(other);
            for sql in [
                format!("DROP COLLECTION {name}"),
                format!("SELECT * FROM {name}"),
                format!(r#"INSERT INTO {name} VALUES ('{{"_id":"b"}}')"#),
            ] {
                let reply = api.sql(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                if reply.status != 404 || reply.code().as_deref() != Some("collection_not_found") {
                    wrong.push(format!("round {round}, node {other}: {sql}: {reply}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} statements on a dropped collection were not 404 collection_not_found:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
