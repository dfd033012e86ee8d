//! Self-healing with real `stratosdb node` processes on 127.0.0.1
//! (`--down-after 2s`): nodes SIGKILLed while clients write, replicas
//! rebuilt elsewhere, a killed node coming back, a node joining (and
//! getting replicas and its share of the leaders), a node
//! removed with `stratosdb cluster remove-node`, and a cluster founded by
//! one node that survives the founder's death.
//!
//! Every wait is bounded, the writers are bounded in count and time, and
//! every process is killed when its test ends (also when it fails).

use std::ffi::OsString;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::cluster::{Api, TestCluster, retry_until, until_answered};
use common::heal::{
    Writer, gauge, heal_problems, leaders_per_node, replicas_per_node, split_brains, wait_healed,
};
use common::process::{TIMEOUT, run_to_end};

/// Longest a test waits for the cluster to heal.
const HEAL: Duration = Duration::from_secs(120);
const DOWN_AFTER: [&str; 2] = ["--down-after", "2s"];

fn create(api: &Api, sql: &str) {
    let reply = until_answered(TIMEOUT, sql, || api.sql(sql));
    assert!(
        reply.ok() || reply.code().as_deref() == Some("collection_exists"),
        "{sql}: {reply}"
    );
}

/// Every id in `acked` reads back (linearizable) through node i.
fn assert_all_readable(cluster: &TestCluster, i: usize, collection: &str, acked: &[String]) {
    let api = cluster.api(i);
    for id in acked {
        let reply = until_answered(TIMEOUT, &format!("GET {collection}/{id}"), || {
            api.get(collection, id, false)
        });
        assert_eq!(
            reply.status, 200,
            "acknowledged {collection}/{id} is lost as node {i} sees it: {reply}"
        );
    }
}

/// The node index of every replica in node i's map.
fn nodes_holding(cluster: &TestCluster, i: usize) -> Vec<usize> {
    let map = cluster.cluster_map(i);
    let mut out: Vec<usize> = map
        .shards
        .iter()
        .flat_map(|s| s.replicas.iter().map(|r| cluster.index_of(&r.node)))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn killed_nodes_are_replaced_and_nothing_is_lost_then_a_returning_node_drops_its_stale_replicas() {
    let mut cluster = TestCluster::start_with(5, &DOWN_AFTER);
    let api = cluster.api(0);
    create(&api, "CREATE COLLECTION h WITH (shards = 8, replicas = 3)");
    wait_healed(&cluster, 0, "h", HEAL);
    let urls: Vec<String> = (0..5).map(|i| cluster.url(i).to_string()).collect();
    let writer = Writer::start(urls, "h", 3000);
    retry_until(TIMEOUT, "some acknowledged writes", || {
        if writer.acked().len() >= 50 {
            Ok(())
        } else {
            Err(format!("{} acked", writer.acked().len()))
        }
    });

    // First kill: node 4 (node 0 keeps answering the test).
    assert!(nodes_holding(&cluster, 0).contains(&4));
    let stored_before = gauge(&cluster, 4, "stratosdb_raft_groups").unwrap_or(0);
    assert!(stored_before > 1, "node 4 stores {stored_before} groups");
    cluster.kill(4);
    let killed_at = Instant::now();
    cluster_answers_without_the_dead_node(&cluster, 0, 4);
    let map = wait_healed(&cluster, 0, "h", HEAL);
    // A figure, not an assertion: healing time over --down-after.
    eprintln!(
        "healed {:?} after the first kill ({:.1}x --down-after)",
        killed_at.elapsed(),
        killed_at.elapsed().as_secs_f64() / 2.0
    );
    let killed = cluster.id(4).to_string();
    assert!(
        map.shards
            .iter()
            .all(|s| s.replicas.iter().all(|r| r.node != killed)),
        "node 4's replicas were not replaced"
    );
    assert!(
        map.nodes
            .iter()
            .any(|n| n.id == killed && !n.up && n.state == "down"),
        "node 4 is not marked down: {:?}",
        map.nodes
    );

    // Second kill: node 3; 3 nodes are left for 3 replicas each.
    cluster.kill(3);
    let killed_at = Instant::now();
    let map = wait_healed(&cluster, 0, "h", HEAL);
    eprintln!(
        "healed {:?} after the second kill ({:.1}x --down-after)",
        killed_at.elapsed(),
        killed_at.elapsed().as_secs_f64() / 2.0
    );
    assert_eq!(map.shards.len(), 8);
    let acked = writer.finish();
    assert!(
        acked.len() >= 50,
        "only {} writes acknowledged",
        acked.len()
    );
    for i in 0..3 {
        assert_all_readable(&cluster, i, "h", &acked);
    }
    // Roots equal at the same applied index (the heal check), again after
    // the last writes.
    wait_healed(&cluster, 0, "h", HEAL);

    // Node 4 comes back: its replicas were replaced, so it serves none of
    // them; it is marked up again, then gets replicas by rebalancing.
    cluster.restart(4);
    for id in acked.iter().take(200) {
        let reply = until_answered(TIMEOUT, "follower GET through the returning node", || {
            cluster.api(4).get("h", id, true)
        });
        assert_eq!(
            reply.status, 200,
            "a follower read through the returning node missed {id}: {reply}"
        );
    }
    let map = retry_until(
        HEAL,
        "the returning node up and the cluster rebalanced",
        || {
            let map = cluster.api(0).cluster()?;
            let problems = heal_problems(&map, "h");
            let returned_up = map.nodes.iter().any(|n| n.id == killed && n.up);
            let holds = replicas_per_node(&map).get(&killed).copied().unwrap_or(0);
            if problems.is_empty() && returned_up && holds > 0 {
                Ok(map)
            } else {
                Err(format!("up {returned_up}, holds {holds}, {problems:?}"))
            }
        },
    );
    for s in &map.shards {
        assert_eq!(s.replicas.len(), 3, "{s:?}");
        assert!(s.leader.is_some(), "{s:?}");
    }
    // No split brain: never two leaders of a group in one term.
    for _ in 0..5 {
        let twins = split_brains(&mut cluster);
        assert!(twins.is_empty(), "{twins:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The returning node and node 0 agree on every shard's replicas (once
    // rebalancing has settled, both healed).
    let replica_sets = |i: usize| -> Result<Vec<Vec<String>>, String> {
        let m = cluster.api(i).cluster()?;
        let problems = heal_problems(&m, "h");
        if !problems.is_empty() {
            return Err(format!("node {i}: {problems:?}"));
        }
        Ok(m.shards
            .iter()
            .map(|s| {
                let mut v: Vec<String> = s.replicas.iter().map(|r| r.node.clone()).collect();
                v.sort();
                v
            })
            .collect())
    };
    retry_until(HEAL, "node 0 and the returning node agreeing", || {
        let (a, b) = (replica_sets(0)?, replica_sets(4)?);
        if a == b {
            Ok(())
        } else {
            Err(format!("{a:?} != {b:?}"))
        }
    });
    assert_all_readable(&cluster, 4, "h", &acked);
    // Its stale replicas (moved away while it was dead) are deleted: it
    // stores the raft logs and shards of what the map places on it, and
    // group 0, nothing more.
    retry_until(HEAL, "the returning node's stale replicas deleted", || {
        let map = cluster.api(4).cluster()?;
        let placed = 1 + map
            .shards
            .iter()
            .filter(|s| {
                s.replicas.iter().any(|r| r.node == killed)
                    || map
                        .moves
                        .iter()
                        .any(|m| m.to == killed && m.shard == s.shard)
            })
            .count() as u64;
        let groups = gauge(&cluster, 4, "stratosdb_raft_groups");
        let shards = gauge(&cluster, 4, "stratosdb_engine_shards");
        if groups == Some(placed) && shards == Some(placed) {
            Ok(())
        } else {
            Err(format!(
                "placed {placed} (with group 0), raft groups {groups:?}, engine shards {shards:?}"
            ))
        }
    });
    assert_all_readable(&cluster, 0, "h", &acked);
}

/// `GET /v1/cluster` through node `via` answers while node `dead` is dead
/// (killed, not yet marked down): within an HTTP client bound of 3 s, less
/// than the 5 s RPC timeout it used to wait for, showing the dead node's
/// replicas without a status (`applied` 0, empty `root`). A few tries, so
/// one slow answer on a loaded machine is not taken for the old wait.
fn cluster_answers_without_the_dead_node(cluster: &TestCluster, via: usize, dead: usize) {
    let api = Api::with_timeout(cluster.url(via), Duration::from_secs(3));
    let dead_id = cluster.id(dead).to_string();
    let mut errors = Vec::new();
    for _ in 0..3 {
        match api.cluster() {
            Ok(map) => {
                let unknown: Vec<_> = map
                    .shards
                    .iter()
                    .flat_map(|s| &s.replicas)
                    .filter(|r| r.node == dead_id)
                    .collect();
                assert!(
                    unknown.iter().all(|r| r.applied == 0 && r.root.is_empty()),
                    "the dead node's replicas: {unknown:?}"
                );
                return;
            }
            Err(e) => errors.push(e),
        }
    }
    panic!("GET /v1/cluster did not answer within 3 s with node {dead} dead: {errors:?}");
}

#[test]
fn a_joining_node_gets_replicas_and_leaders() {
    let mut cluster = TestCluster::start_with(3, &DOWN_AFTER);
    let api = cluster.api(0);
    create(&api, "CREATE COLLECTION j WITH (shards = 8, replicas = 3)");
    for n in 0..40 {
        let id = format!("d{n}");
        let reply = until_answered(TIMEOUT, "PUT", || api.put("j", &id, &json!({"n": n})));
        assert!(reply.ok(), "{reply}");
    }
    wait_healed(&cluster, 0, "j", HEAL);
    let token = cluster.printed_token(0, TIMEOUT);
    let joiner = cluster.join(0, &token, &DOWN_AFTER);
    let joiner_id = cluster.id(joiner).to_string();
    let map = retry_until(HEAL, "replicas balanced onto the joiner", || {
        let map = cluster.api(0).cluster()?;
        let problems = heal_problems(&map, "j");
        let counts = replicas_per_node(&map);
        let (lo, hi) = (
            counts.values().min().copied().unwrap_or(0),
            counts.values().max().copied().unwrap_or(0),
        );
        if problems.is_empty() && counts.len() == 4 && hi - lo <= 1 {
            Ok(map)
        } else {
            Err(format!("{counts:?} {problems:?}"))
        }
    });
    let leaders = leaders_per_node(&map);
    assert!(
        leaders.get(&joiner_id).copied().unwrap_or(0) >= 1,
        "the joiner leads nothing: {leaders:?}"
    );
    // Leaders too end up balanced: none of the 4 nodes leads more than
    // ceil(8 / 4) + 1 of the 8 shards (the metadata leader has the others
    // hand over).
    retry_until(HEAL, "leaders balanced", || {
        let map = cluster.api(0).cluster()?;
        let leaders = leaders_per_node(&map);
        let total: usize = leaders.values().sum();
        let most = leaders.values().max().copied().unwrap_or(0);
        if total == 8 && most <= 8usize.div_ceil(4) + 1 {
            Ok(())
        } else {
            Err(format!("{leaders:?}"))
        }
    });
    for n in 0..40 {
        let reply = until_answered(TIMEOUT, "GET", || {
            cluster.api(joiner).get("j", &format!("d{n}"), false)
        });
        assert_eq!(reply.status, 200, "{reply}");
    }
}

#[test]
fn remove_node_drains_a_node_and_refuses_when_too_few_would_remain() {
    let cluster = TestCluster::start_with(4, &DOWN_AFTER);
    let api = cluster.api(0);
    create(&api, "CREATE COLLECTION r WITH (shards = 4, replicas = 3)");
    for n in 0..20 {
        let id = format!("d{n}");
        let reply = until_answered(TIMEOUT, "PUT", || api.put("r", &id, &json!({"n": n})));
        assert!(reply.ok(), "{reply}");
    }
    wait_healed(&cluster, 0, "r", HEAL);
    let leaving = cluster.id(3).to_string();
    let args: Vec<OsString> = vec![
        "cluster".into(),
        "remove-node".into(),
        leaving.clone().into(),
        "--connect".into(),
        cluster.url(0).into(),
        "--timeout".into(),
        "120".into(),
    ];
    let out = run_to_end(&args, "", HEAL + Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "remove-node failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("removed"), "{stdout}");
    let map = wait_healed(&cluster, 0, "r", HEAL);
    assert!(
        map.nodes.iter().all(|n| n.id != leaving),
        "the removed node is still in the map"
    );
    // The removed node refuses work.
    let reply = retry_until(TIMEOUT, "the removed node refusing", || {
        let r = cluster.api(3).get("r", "d0", false)?;
        if r.status == 503 && r.code().as_deref() == Some("removed") {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    });
    assert_eq!(reply.status, 503);
    for n in 0..20 {
        let reply = until_answered(TIMEOUT, "GET", || api.get("r", &format!("d{n}"), false));
        assert_eq!(reply.status, 200, "{reply}");
    }

    // 3 nodes left, replicas = 3: removing another is refused with 409.
    let body = json!({"node": cluster.id(2)}).to_string();
    let reply = api
        .call("POST", "/v1/cluster/remove-node", Some(body.as_bytes()))
        .unwrap();
    assert_eq!(reply.status, 409, "{reply}");
    assert_eq!(reply.code().as_deref(), Some("not_enough_nodes"), "{reply}");
    assert!(
        cluster
            .cluster_map(0)
            .nodes
            .iter()
            .all(|n| n.state == "active")
    );
}

#[test]
fn a_cluster_founded_by_one_node_survives_the_founders_death() {
    let mut cluster = TestCluster::start_with(1, &DOWN_AFTER);
    let token = cluster.printed_token(0, TIMEOUT);
    cluster.join(0, &token, &DOWN_AFTER);
    cluster.join(0, &token, &DOWN_AFTER);
    let api = cluster.api(1);
    create(&api, "CREATE COLLECTION f WITH (shards = 2, replicas = 3)");
    for n in 0..10 {
        let id = format!("d{n}");
        let reply = until_answered(TIMEOUT, "PUT", || api.put("f", &id, &json!({"n": n})));
        assert!(reply.ok(), "{reply}");
    }
    wait_healed(&cluster, 1, "f", HEAL);
    // The joiners are promoted to metadata voters within a few probe rounds.
    std::thread::sleep(Duration::from_secs(5));
    cluster.kill(0);
    let started = Instant::now();
    for n in 10..20 {
        let id = format!("d{n}");
        let reply = until_answered(TIMEOUT, "PUT", || api.put("f", &id, &json!({"n": n})));
        assert!(reply.ok(), "{reply}");
    }
    for n in 0..20 {
        let reply = until_answered(TIMEOUT, "GET", || {
            cluster.api(2).get("f", &format!("d{n}"), false)
        });
        assert_eq!(reply.status, 200, "{reply}");
    }
    let map = retry_until(TIMEOUT, "the founder marked down", || {
        let map = cluster.api(1).cluster()?;
        if map.nodes.iter().any(|n| n.id == cluster.id(0) && !n.up) {
            Ok(map)
        } else {
            Err("founder still up".into())
        }
    });
    // The map still changes: a new collection on the two live nodes.
    create(
        &api,
        "CREATE COLLECTION after WITH (shards = 1, replicas = 2)",
    );
    assert!(
        cluster
            .cluster_map(2)
            .collections
            .iter()
            .any(|c| c.name == "after")
    );
    assert!(map.nodes.len() == 3);
    eprintln!(
        "worked on without the founder after {:?}",
        started.elapsed()
    );
}
