//! Helpers for the self-healing tests: "healed" as `GET /v1/cluster` shows
//! it, a bounded background writer that records what was acknowledged,
//! and the replica counts per node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use stratosdb::api::ClusterMap;

use super::cluster::{Api, POLL, TestCluster};

/// What keeps `collection` from being healed in `map` (nothing: healed):
/// every shard has exactly the collection's replica count, all voters on
/// nodes that are up, no move of it in flight, and every replica at the
/// same applied index and root.
pub fn heal_problems(map: &ClusterMap, collection: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(placement) = map.collections.iter().find(|c| c.name == collection) else {
        return vec![format!("no collection {collection}")];
    };
    let up: BTreeSet<&str> = map
        .nodes
        .iter()
        .filter(|n| n.up)
        .map(|n| n.id.as_str())
        .collect();
    for shard in map.shards.iter().filter(|s| s.collection == collection) {
        let name = format!("{collection}/{}", shard.shard);
        if shard.replicas.len() != placement.replicas as usize {
            problems.push(format!("{name}: {} replicas", shard.replicas.len()));
        }
        for r in &shard.replicas {
            if r.role != "voter" {
                problems.push(format!("{name}: {} is a {}", r.node, r.role));
            }
            if !up.contains(r.node.as_str()) {
                problems.push(format!("{name}: {} is not up", r.node));
            }
        }
        if map
            .moves
            .iter()
            .any(|m| m.collection == collection && m.shard == shard.shard)
        {
            problems.push(format!("{name}: a move is in flight"));
        }
        let states: BTreeSet<(u64, &str)> = shard
            .replicas
            .iter()
            .map(|r| (r.applied, r.root.as_str()))
            .collect();
        if states.len() != 1 || states.iter().any(|(_, root)| root.is_empty()) {
            problems.push(format!("{name}: replicas differ: {states:?}"));
        }
    }
    problems
}

/// Waits (bounded) until `collection` is healed as node i sees it; the map.
pub fn wait_healed(
    cluster: &TestCluster,
    i: usize,
    collection: &str,
    timeout: Duration,
) -> ClusterMap {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match cluster.api(i).cluster() {
            Ok(map) => {
                let problems = heal_problems(&map, collection);
                if problems.is_empty() {
                    return map;
                }
                problems.join("\n  ")
            }
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            cluster.dump_logs();
            panic!("{collection} did not heal within {timeout:?} (node {i}):\n  {last}");
        }
        std::thread::sleep(POLL * 5);
    }
}

/// Replicas per node id in `map` (nodes without any count 0).
pub fn replicas_per_node(map: &ClusterMap) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = map.nodes.iter().map(|n| (n.id.clone(), 0)).collect();
    for shard in &map.shards {
        for r in &shard.replicas {
            *counts.entry(r.node.clone()).or_default() += 1;
        }
    }
    counts
}

/// Shards led per node id in `map`.
pub fn leaders_per_node(map: &ClusterMap) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for shard in &map.shards {
        if let Some(l) = &shard.leader {
            *counts.entry(l.clone()).or_default() += 1;
        }
    }
    counts
}

/// A writer thread: PUTs `{collection}/w{n}` through the given APIs in
/// turn, at most `max` documents and until stopped, and records the ids
/// whose PUT was acknowledged (200 or 201).
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(urls: Vec<String>, collection: &str, max: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let collection = collection.to_string();
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let apis: Vec<Api> = urls
                .iter()
                .map(|u| Api::with_timeout(u, Duration::from_secs(15)))
                .collect();
            for n in 0..max {
                if s.load(Ordering::Acquire) {
                    break;
                }
                let id = format!("w{n}");
                let api = &apis[n % apis.len()];
                if let Ok(reply) = api.put(&collection, &id, &json!({"n": n}))
                    && reply.ok()
                {
                    a.lock().unwrap().push(id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    /// Ids acknowledged so far.
    pub fn acked(&self) -> Vec<String> {
        self.acked.lock().unwrap().clone()
    }

    /// Stops the writer and waits for it; every acknowledged id.
    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every (group, term) that more than one running node claims to lead, as
/// their `/metrics` say (empty: no split brain).
pub fn split_brains(cluster: &mut TestCluster) -> Vec<String> {
    // (group, term) -> nodes that lead it
    let mut leaders: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
    for i in cluster.running() {
        let Ok(reply) = cluster.api(i).call("GET", "/metrics", None) else {
            continue;
        };
        let mut terms: BTreeMap<String, u64> = BTreeMap::new();
        let mut leads: Vec<String> = Vec::new();
        for line in reply.text.lines() {
            let Some(group) = line
                .split("group=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
            else {
                continue;
            };
            let value = line.rsplit(' ').next().unwrap_or("");
            if line.starts_with("stratosdb_raft_term{") {
                terms.insert(group.to_string(), value.parse().unwrap_or(0));
            } else if line.starts_with("stratosdb_raft_is_leader{") && value == "1" {
                leads.push(group.to_string());
            }
        }
        for group in leads {
            let term = terms.get(&group).copied().unwrap_or(0);
            leaders.entry((group, term)).or_default().push(i);
        }
    }
    leaders
        .into_iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|((group, term), nodes)| format!("group {group} term {term}: leaders {nodes:?}"))
        .collect()
}

/// A gauge without labels from node i's `/metrics` (`None`: no answer, or
/// no such line).
pub fn gauge(cluster: &TestCluster, i: usize, name: &str) -> Option<u64> {
    let reply = cluster.api(i).call("GET", "/metrics", None).ok()?;
    reply.text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}
