//! Fault campaigns over real node processes: client threads issue a
//! bounded mix of writes, conditional updates and linearizable reads on a
//! few keys through random nodes, recording each operation's invocation,
//! completion and outcome, while a nemesis SIGKILLs and restarts nodes,
//! pauses them (SIGSTOP/SIGCONT) and partitions them (the nodes run with
//! `--fault-injection`; see `replication/src/p2p/faults.rs`). Afterwards
//! everything is healed and the campaign checks:
//!
//! - each key's history is linearizable ([`super::linearizability`]), which
//!   also means no acknowledged write was lost: its value is the final one
//!   or a later operation overwrote it;
//! - each key's final value is one that some write not known to have failed
//!   produced;
//! - every replica of every shard reports the same root at the same applied
//!   index;
//! - every shard has its configured number of replicas, on distinct nodes.
//!
//! How a reply is classified: 2xx is acknowledged; 4xx (409 `contention`
//! included), 503 `no_quorum`/`not_ready` and a refused connection certainly
//! did nothing; a timeout, a reset, a 5xx other than those, and 503
//! `unavailable` are indeterminate (the write may apply at any time later,
//! or never). A read without an answer tells nothing and is left out.
//!
//! `STRATOSDB_SOAK_SECONDS=N` makes the campaigns run N seconds instead of
//! their default (see `docs/testing.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

use super::cluster::{Api, TestCluster, retry_until, until_answered};
use super::linearizability::{Call, Operation, Outcome, Verdict, check_history};

/// The collection the campaigns write to.
pub const COLLECTION: &str = "c";

/// States one key's check may explore before it gives up.
pub const CHECK_BUDGET: usize = 2_000_000;

/// What a campaign does.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    pub nodes: usize,
    pub shards: u32,
    pub replicas: u32,
    pub clients: usize,
    pub keys: usize,
    /// How long clients and the nemesis run.
    pub duration: Duration,
    /// Upper bound on each client's operations (the loops are bounded in
    /// count as well as in time).
    pub max_ops_per_client: usize,
    /// One request's timeout; past it the operation is indeterminate. Above
    /// the node's 10 s `no_quorum` wait, so that answer gets through.
    pub request_timeout: Duration,
    /// Fault kinds the nemesis may choose.
    pub faults: Vec<Fault>,
    pub seed: u64,
}

impl CampaignConfig {
    /// The defaults for `nodes` nodes: 3 replicas of 4 shards, one client
    /// per node, 5 keys, every fault kind that fits, `default_seconds` long
    /// unless `STRATOSDB_SOAK_SECONDS` says otherwise.
    pub fn new(nodes: usize, default_seconds: u64) -> CampaignConfig {
        let seconds = soak_seconds().unwrap_or(default_seconds);
        let mut faults = vec![Fault::Kill, Fault::Pause, Fault::Isolate];
        if nodes >= 5 {
            faults.push(Fault::Split);
        }
        CampaignConfig {
            nodes,
            shards: 4,
            replicas: 3,
            clients: nodes.max(3),
            keys: 5,
            duration: Duration::from_secs(seconds),
            max_ops_per_client: 50_000,
            request_timeout: Duration::from_secs(12),
            faults,
            seed: std::env::var("STRATOSDB_CAMPAIGN_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(rand::random),
        }
    }
}

/// `STRATOSDB_SOAK_SECONDS`, if set to a number.
pub fn soak_seconds() -> Option<u64> {
    std::env::var("STRATOSDB_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// What the nemesis can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a node, wait, start it again.
    Kill,
    /// SIGSTOP a node, wait, SIGCONT it.
    Pause,
    /// Cut one node off from all others (both sides drop), then heal.
    Isolate,
    /// Split the nodes in two sides, 2 | rest, then heal.
    Split,
}

/// How one reply was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Acknowledged,
    Failed,
    Indeterminate,
}

/// What one request got back.
enum Answer {
    Reply {
        status: u16,
        body: String,
    },
    /// Nothing was sent (refused connection): certainly not applied.
    NotSent(String),
    /// Sent, no answer (timeout, reset): may have applied.
    Lost(String),
}

/// One client's view of the nodes.
struct Client {
    agent: ureq::Agent,
    urls: Vec<String>,
}

impl Client {
    fn new(urls: Vec<String>, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        Client { agent, urls }
    }

    fn send(&self, node: usize, method: &str, path: &str, body: Option<String>) -> Answer {
        let url = format!("{}{path}", self.urls[node]);
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("PUT", b) => self
                .agent
                .put(&url)
                .header("content-type", "application/json")
                .send(b.unwrap_or_default()),
            (_, b) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(b.unwrap_or_default()),
        };
        match sent {
            Ok(mut response) => {
                let status = response.status().as_u16();
                match response.body_mut().read_to_string() {
                    Ok(body) => Answer::Reply { status, body },
                    Err(e) => Answer::Lost(format!("reading the reply: {e}")),
                }
            }
            Err(e) => classify_error(e),
        }
    }
}

fn classify_error(e: ureq::Error) -> Answer {
    use ureq::Timeout;
    match &e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Answer::NotSent(e.to_string())
        }
        ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Timeout(Timeout::Connect | Timeout::Resolve) => {
            Answer::NotSent(e.to_string())
        }
        _ => Answer::Lost(e.to_string()),
    }
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Json>(body)
        .ok()
        .and_then(|j| j["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The class of a write's (PUT or UPDATE) answer.
fn write_class(answer: &Answer) -> Class {
    match answer {
        Answer::Reply { status, .. } if (200..300).contains(status) => Class::Acknowledged,
        Answer::Reply { status, .. } if (400..500).contains(status) => Class::Failed,
        Answer::Reply { status: 503, body } => match error_code(body).as_str() {
            "no_quorum" | "not_ready" => Class::Failed,
            _ => Class::Indeterminate,
        },
        Answer::Reply { .. } => Class::Indeterminate,
        Answer::NotSent(_) => Class::Failed,
        Answer::Lost(_) => Class::Indeterminate,
    }
}

/// What a campaign saw and did.
#[derive(Default)]
pub struct CampaignReport {
    pub history: Vec<Operation>,
    /// (kind, class) -> count.
    pub counts: BTreeMap<(String, Class), usize>,
    /// Unexpected answers (a 4xx other than the expected ones), kept to show.
    pub surprises: Vec<String>,
    pub nemesis: Vec<String>,
    /// Keys' final values, read after healing.
    pub finals: BTreeMap<String, Option<String>>,
}

impl CampaignReport {
    pub fn summary(&self, config: &CampaignConfig) -> String {
        let mut out = format!(
            "campaign: {} nodes, {} clients, {} keys, {:?}, seed {}\n",
            config.nodes, config.clients, config.keys, config.duration, config.seed
        );
        for ((kind, class), n) in &self.counts {
            out.push_str(&format!("  {kind:<6} {class:?}: {n}\n"));
        }
        out.push_str(&format!(
            "  operations in the history: {}\n  nemesis ({} actions):\n",
            self.history.len(),
            self.nemesis.len()
        ));
        for action in &self.nemesis {
            out.push_str(&format!("    {action}\n"));
        }
        if !self.surprises.is_empty() {
            out.push_str(&format!(
                "  unexpected answers (first 10 of {}):\n",
                self.surprises.len()
            ));
            for s in self.surprises.iter().take(10) {
                out.push_str(&format!("    {s}\n"));
            }
        }
        out
    }
}

/// One client's run: its operations and counts.
struct ClientRun {
    ops: Vec<Operation>,
    counts: BTreeMap<(String, Class), usize>,
    surprises: Vec<String>,
}

fn key_name(k: usize) -> String {
    format!("k{k}")
}

/// One client: until `stop` or its bound, a random operation on a random
/// key through a random node.
fn run_client(
    id: usize,
    client: Client,
    config: CampaignConfig,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> ClientRun {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(1 + id as u64));
    let mut run = ClientRun {
        ops: Vec::new(),
        counts: BTreeMap::new(),
        surprises: Vec::new(),
    };
    // The last value this client knows per key: what its cas expect.
    let mut known: HashMap<String, String> = HashMap::new();
    let now = |start: Instant| start.elapsed().as_nanos() as u64;
    for seq in 0..config.max_ops_per_client {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = key_name(rng.random_range(0..config.keys));
        let node = rng.random_range(0..client.urls.len());
        let value = format!("{id}-{seq}");
        let path = format!("/v1/collections/{COLLECTION}/docs/{key}");
        let choice = rng.random_range(0..10);
        let invoked = now(start);
        let (kind, call, answer) = if choice < 4 {
            let answer = client.send(node, "GET", &path, None);
            ("read", Call::Read, answer)
        } else if choice < 7 || !known.contains_key(&key) {
            let body = serde_json::json!({ "v": value }).to_string();
            let answer = client.send(node, "PUT", &path, Some(body));
            ("write", Call::Write(value.clone()), answer)
        } else {
            let expected = known[&key].clone();
            let sql = format!(
                "UPDATE {COLLECTION} SET v = '{value}' WHERE _id = '{key}' AND v = '{expected}'"
            );
            let body = serde_json::json!({ "sql": sql, "consistency": "linearizable" });
            let answer = client.send(node, "POST", "/v1/sql", Some(body.to_string()));
            let call = Call::Cas {
                expected,
                new: value.clone(),
            };
            ("cas", call, answer)
        };
        let completed = now(start);
        let mut record = |class: Class| {
            *run.counts.entry((kind.to_string(), class)).or_default() += 1;
        };
        let outcome = match (&call, &answer) {
            (Call::Read, Answer::Reply { status: 200, body }) => {
                let doc: Json = serde_json::from_str(body).unwrap_or(Json::Null);
                let v = doc["v"].as_str().map(str::to_string);
                if v.is_none() {
                    run.surprises
                        .push(format!("read {key}: a document without v: {body}"));
                }
                record(Class::Acknowledged);
                Some(Outcome::Read(v))
            }
            (Call::Read, Answer::Reply { status: 404, body })
                if error_code(body) == "document_not_found" =>
            {
                record(Class::Acknowledged);
                Some(Outcome::Read(None))
            }
            (Call::Read, a) => {
                if let Answer::Reply { status, body } = a
                    && *status != 503
                {
                    run.surprises
                        .push(format!("read {key} via node {node}: HTTP {status} {body}"));
                }
                record(Class::Failed);
                None
            }
            (_, a) => {
                let class = write_class(a);
                record(class);
                if let Answer::Reply { status, body } = a
                    && (400..500).contains(status)
                    && error_code(body) != "contention"
                {
                    run.surprises.push(format!(
                        "{kind} {key} via node {node}: HTTP {status} {body}"
                    ));
                }
                match class {
                    Class::Failed => None,
                    Class::Indeterminate => Some(Outcome::Unknown),
                    Class::Acknowledged => match (&call, a) {
                        (Call::Cas { .. }, Answer::Reply { body, .. }) => {
                            let affected = serde_json::from_str::<Json>(body)
                                .ok()
                                .and_then(|j| j["affected"].as_u64());
                            match affected {
                                Some(1) => Some(Outcome::Ok),
                                Some(0) => {
                                    // Answered, but the register held another value.
                                    *run.counts
                                        .entry(("cas (not applied)".to_string(), class))
                                        .or_default() += 1;
                                    Some(Outcome::CasFailed)
                                }
                                _ => {
                                    run.surprises.push(format!("cas {key}: reply {body}"));
                                    Some(Outcome::Unknown)
                                }
                            }
                        }
                        _ => Some(Outcome::Ok),
                    },
                }
            }
        };
        let Some(outcome) = outcome else { continue };
        match (&call, &outcome) {
            (Call::Read, Outcome::Read(Some(v))) => {
                known.insert(key.clone(), v.clone());
            }
            (Call::Write(v), Outcome::Ok) | (Call::Cas { new: v, .. }, Outcome::Ok) => {
                known.insert(key.clone(), v.clone());
            }
            _ => {}
        }
        let unknown = outcome == Outcome::Unknown;
        run.ops.push(Operation {
            client: id,
            key,
            call,
            outcome,
            invoked,
            completed: (!unknown).then_some(completed),
        });
    }
    run
}

/// Cuts the running nodes into `sides`: every node drops every node of the
/// other sides.
pub fn partition(cluster: &TestCluster, sides: &[Vec<usize>]) -> Result<(), String> {
    for (s, side) in sides.iter().enumerate() {
        let others: Vec<String> = sides
            .iter()
            .enumerate()
            .filter(|(o, _)| *o != s)
            .flat_map(|(_, nodes)| nodes.iter().map(|&j| cluster.id(j).to_string()))
            .collect();
        for &i in side {
            cluster.set_faults(i, &others)?;
        }
    }
    Ok(())
}

/// Empties every running node's drop set (retried for a while: a node that
/// was just resumed may be slow to answer).
pub fn heal_all(cluster: &mut TestCluster) {
    for i in cluster.running() {
        retry_until(
            Duration::from_secs(30),
            &format!("healing node {i}"),
            || cluster.set_faults(i, &[]),
        );
    }
}

/// The nemesis: one fault at a time, a random kind on a random node, held
/// for a few seconds, then undone; a quiet gap between faults. Runs until
/// `until`, at most `max_actions` faults.
fn run_nemesis(
    cluster: &mut TestCluster,
    config: &CampaignConfig,
    until: Instant,
    log: &mut Vec<String>,
    start: Instant,
) {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let max_actions = 1000;
    let stamp = |start: Instant| format!("{:>6.1}s", start.elapsed().as_secs_f64());
    for _ in 0..max_actions {
        let gap = Duration::from_millis(rng.random_range(1000..3000));
        if Instant::now() + gap >= until {
            break;
        }
        std::thread::sleep(gap);
        let Some(&fault) = config.faults.choose(&mut rng) else {
            break;
        };
        let hold = Duration::from_millis(rng.random_range(2000..6000));
        let n = cluster.len();
        let victim = rng.random_range(0..n);
        match fault {
            Fault::Kill => {
                log.push(format!("{} SIGKILL node {victim}", stamp(start)));
                cluster.kill(victim);
                std::thread::sleep(hold);
                cluster.restart(victim);
                log.push(format!("{} node {victim} restarted", stamp(start)));
            }
            Fault::Pause => {
                log.push(format!("{} SIGSTOP node {victim}", stamp(start)));
                cluster.pause(victim);
                std::thread::sleep(hold);
                cluster.resume(victim);
                log.push(format!("{} SIGCONT node {victim}", stamp(start)));
            }
            Fault::Isolate | Fault::Split => {
                let mut order: Vec<usize> = (0..n).collect();
                rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
                let cut = if fault == Fault::Isolate { 1 } else { 2 };
                let sides = vec![order[..cut].to_vec(), order[cut..].to_vec()];
                log.push(format!(
                    "{} partition {:?} | {:?}",
                    stamp(start),
                    sides[0],
                    sides[1]
                ));
                if let Err(e) = partition(cluster, &sides) {
                    log.push(format!("  (partition incomplete: {e})"));
                }
                std::thread::sleep(hold);
                heal_all(cluster);
                log.push(format!("{} healed", stamp(start)));
            }
        }
    }
}

/// Runs a campaign end to end and checks it; panics with the summary and
/// what failed. Returns the report (for the test to print or look at).
pub fn run_campaign(config: CampaignConfig) -> CampaignReport {
    let mut cluster = TestCluster::start_with(config.nodes, &["--fault-injection"]);
    let api = cluster.api(0);
    let create = format!(
        "CREATE COLLECTION {COLLECTION} WITH (shards = {}, replicas = {})",
        config.shards, config.replicas
    );
    let reply = until_answered(Duration::from_secs(60), &create, || api.sql(&create));
    assert!(reply.ok(), "{create}: {reply}");
    // Every node must know the collection before clients go through it.
    for i in 0..cluster.len() {
        let node = cluster.api(i);
        let path = format!("/v1/collections/{COLLECTION}/docs/none");
        retry_until(
            Duration::from_secs(60),
            &format!("node {i} to know {COLLECTION}"),
            || match node.call("GET", &path, None) {
                Ok(r) if r.status == 404 && r.code().as_deref() == Some("document_not_found") => {
                    Ok(())
                }
                Ok(r) => Err(r.to_string()),
                Err(e) => Err(e),
            },
        );
    }

    let urls: Vec<String> = (0..cluster.len())
        .map(|i| cluster.url(i).to_string())
        .collect();
    let start = Instant::now();
    let until = start + config.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..config.clients)
        .map(|id| {
            let client = Client::new(urls.clone(), config.request_timeout);
            let (config, stop) = (config.clone(), stop.clone());
            std::thread::spawn(move || run_client(id, client, config, start, stop))
        })
        .collect();

    let mut report = CampaignReport::default();
    // The nemesis runs here; a panic in it still stops the clients (the
    // guard) and the cluster's Drop kills the nodes.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let guard = StopOnDrop(stop.clone());
    run_nemesis(&mut cluster, &config, until, &mut report.nemesis, start);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(guard);
    for c in clients {
        let run = c.join().expect("a client thread panicked");
        report.history.extend(run.ops);
        for (k, n) in run.counts {
            *report.counts.entry(k).or_default() += n;
        }
        report.surprises.extend(run.surprises);
    }

    // Heal: everything runs, nothing is paused or cut.
    for i in 0..cluster.len() {
        if cluster.is_paused(i) {
            cluster.resume(i);
        }
    }
    let stopped: Vec<usize> = (0..cluster.len())
        .filter(|&i| !cluster.is_running(i))
        .collect();
    if !stopped.is_empty() {
        cluster.restart_all(&stopped);
    }
    heal_all(&mut cluster);

    // The final value of each key, read linearizably (and recorded: these
    // reads are part of the history too).
    let final_reader = Api::with_timeout(cluster.url(0), Duration::from_secs(15));
    for k in 0..config.keys {
        let key = key_name(k);
        let invoked = start.elapsed().as_nanos() as u64;
        let reply = until_answered(Duration::from_secs(90), &format!("reading {key}"), || {
            final_reader.get(COLLECTION, &key, false)
        });
        let completed = start.elapsed().as_nanos() as u64;
        let value = match reply.status {
            200 => reply.json()["v"].as_str().map(str::to_string),
            404 => None,
            _ => panic!("reading {key} after healing: {reply}"),
        };
        report.finals.insert(key.clone(), value.clone());
        report.history.push(Operation {
            client: usize::MAX,
            key,
            call: Call::Read,
            outcome: Outcome::Read(value),
            invoked,
            completed: Some(completed),
        });
    }

    let summary = report.summary(&config);
    eprintln!("{summary}");
    let mut failures = Vec::new();

    // Linearizable, key by key.
    for (key, verdict) in check_history(&report.history, CHECK_BUDGET) {
        match verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { explanation, .. } => failures.push(explanation),
            Verdict::TooComplex { states, .. } => failures.push(format!(
                "key {key:?}: the linearizability check gave up after {states} states \
                 (inconclusive; rerun with STRATOSDB_CAMPAIGN_SEED={})",
                config.seed
            )),
        }
    }
    // The final value came from a write not known to have failed; absent
    // only if no write was acknowledged.
    for (key, value) in &report.finals {
        let writes: Vec<&Operation> = report
            .history
            .iter()
            .filter(|o| &o.key == key && o.call != Call::Read)
            .collect();
        let produced = |v: &String| {
            writes.iter().any(|o| match &o.call {
                Call::Write(w) => w == v,
                Call::Cas { new, .. } => new == v && o.outcome != Outcome::CasFailed,
                Call::Read => false,
            })
        };
        match value {
            Some(v) if !produced(v) => failures.push(format!(
                "key {key:?} ends as {v:?}, which no write that may have applied produced"
            )),
            None if writes.iter().any(|o| o.outcome == Outcome::Ok) => failures.push(format!(
                "key {key:?} ends absent although writes to it were acknowledged"
            )),
            _ => {}
        }
    }
    // Converged, and every shard at its replica count.
    let running = cluster.running();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut problems = cluster.convergence_problems(&running);
    while !problems.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        problems = cluster.convergence_problems(&running);
    }
    failures.extend(
        problems
            .into_iter()
            .map(|p| format!("not converged after 120 s: {p}")),
    );
    for i in &running {
        failures.extend(replica_count_problems(&cluster, *i));
    }

    if !failures.is_empty() {
        cluster.dump_logs();
        panic!(
            "the campaign found {} problem(s):\n{}\n\n{summary}",
            failures.len(),
            failures.join("\n\n")
        );
    }
    report
}

/// What node i's cluster map says is wrong with the replica counts: every
/// shard of every collection listed, with as many replicas as configured,
/// on distinct member nodes.
fn replica_count_problems(cluster: &TestCluster, i: usize) -> Vec<String> {
    let map = match cluster.api(i).cluster() {
        Ok(map) => map,
        Err(e) => return vec![format!("node {i} gives no cluster map: {e}")],
    };
    let members: BTreeSet<&String> = map.nodes.iter().map(|n| &n.id).collect();
    let mut problems = Vec::new();
    for c in &map.collections {
        let shards: Vec<_> = map
            .shards
            .iter()
            .filter(|s| s.collection == c.name)
            .collect();
        if shards.len() != c.shards as usize {
            problems.push(format!(
                "node {i}: {} lists {} shards, configured {}",
                c.name,
                shards.len(),
                c.shards
            ));
        }
        for s in shards {
            let nodes: BTreeSet<&String> = s.replicas.iter().map(|r| &r.node).collect();
            if s.replicas.len() != c.replicas as usize
                || nodes.len() != s.replicas.len()
                || nodes.iter().any(|n| !members.contains(n))
            {
                problems.push(format!(
                    "node {i}: {}/{} has replicas {nodes:?}, configured {} on distinct members",
                    c.name, s.shard, c.replicas
                ));
            }
        }
    }
    problems
}
