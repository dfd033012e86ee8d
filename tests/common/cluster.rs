//! A cluster of real `stratosdb node` processes on 127.0.0.1, for the
//! whole-system tests.
//!
//! [`TestCluster::start`] picks free loopback ports, makes one data folder per
//! node in a temporary folder, spawns every node with the founding list
//! (`--peers` naming the others' p2p addresses; none for a single node), reads
//! each node's first stdout line for its id and URL, and waits until every
//! node's `/v1/health` is 200. Each node's stdout and stderr go to a log file
//! beside its data folder; when a test fails, the tail of every node's log is
//! printed. Every wait is bounded, and dropping the cluster SIGKILLs every
//! node still running, also when the test panics.
//!
//! Clusters are heavy (three processes each, two cores shared): within one
//! test binary, one cluster runs at a time ([`TestCluster`] holds a lock).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use stratosdb::api::ClusterMap;
use stratosdb::client::Client;

use super::http::{REQUEST_TIMEOUT, agent, error_code, request, sql_body, sql_detail_body};
use super::process::{Announce, NodeProcess, TAIL_LINES, TIMEOUT, log_tail};

/// Longest a cluster waits for its nodes to stop on SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often polls ask again.
pub const POLL: Duration = Duration::from_millis(100);

/// How many times `start` tries again with new ports when one was taken.
const START_ATTEMPTS: usize = 3;

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One member of the cluster: its fixed command line and, while it runs,
/// its process.
struct Member {
    name: String,
    args: Vec<OsString>,
    data: PathBuf,
    log: PathBuf,
    p2p: String,
    http: String,
    /// The id the node announced the first time it started.
    id: String,
    url: String,
    process: Option<NodeProcess>,
    /// SIGSTOPped by [`TestCluster::pause`] and not yet resumed.
    paused: bool,
}

/// A reply: status and body text.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub text: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Json {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The error code of an error reply.
    pub fn code(&self) -> Option<String> {
        error_code(&self.text)
    }
}

impl From<Reply> for (u16, String) {
    fn from(r: Reply) -> Self {
        (r.status, r.text)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text.trim())
    }
}

/// Raw access to one node's API, every request bounded in time; a request
/// that got no answer (refused connection, reset, timeout) is `Err`.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(url: &str) -> Api {
        Api::with_timeout(url, REQUEST_TIMEOUT)
    }

    pub fn with_timeout(url: &str, timeout: Duration) -> Api {
        Api {
            url: url.trim_end_matches('/').to_string(),
            agent: agent(timeout),
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, String> {
        let url = format!("{}{path}", self.url);
        request(&self.agent, method, &url, body).map(|(status, text)| Reply { status, text })
    }

    /// `GET /v1/health`'s status.
    pub fn health(&self) -> Result<u16, String> {
        self.call("GET", "/v1/health", None).map(|r| r.status)
    }

    /// `POST /v1/sql`, linearizable.
    pub fn sql(&self, sql: &str) -> Result<Reply, String> {
        self.sql_with(sql, "linearizable")
    }

    /// `POST /v1/sql` with `"consistency": consistency`.
    pub fn sql_with(&self, sql: &str, consistency: &str) -> Result<Reply, String> {
        let body = sql_body(sql, consistency);
        self.call("POST", "/v1/sql", Some(body.as_bytes()))
    }

    /// `POST /v1/sql` with `"detail": true` (the reply also has `columns`
    /// or `message`, as the shell asks).
    pub fn sql_detail(&self, sql: &str, consistency: &str) -> Result<Reply, String> {
        let body = sql_detail_body(sql, consistency);
        self.call("POST", "/v1/sql", Some(body.as_bytes()))
    }

    /// `POST /v1/sql` that must answer 200: the reply's JSON.
    pub fn sql_ok(&self, sql: &str) -> Json {
        match self.sql(sql) {
            Ok(r) if r.status == 200 => r.json(),
            Ok(r) => panic!("{} answered `{sql}` with {r}", self.url),
            Err(e) => panic!("`{sql}`: no answer: {e}"),
        }
    }

    pub fn put(&self, collection: &str, id: &str, doc: &Json) -> Result<Reply, String> {
        let body = doc.to_string();
        self.call("PUT", &doc_path(collection, id), Some(body.as_bytes()))
    }

    /// `GET` a document, linearizable or (`follower`) from any replica.
    pub fn get(&self, collection: &str, id: &str, follower: bool) -> Result<Reply, String> {
        let mut path = doc_path(collection, id);
        if follower {
            path.push_str("?consistency=follower");
        }
        self.call("GET", &path, None)
    }

    pub fn find(&self, collection: &str, request: &Json) -> Result<Reply, String> {
        let path = format!("/v1/collections/{collection}/find");
        self.call("POST", &path, Some(request.to_string().as_bytes()))
    }

    /// `GET /v1/cluster`, parsed.
    pub fn cluster(&self) -> Result<ClusterMap, String> {
        let reply = self.call("GET", "/v1/cluster", None)?;
        if reply.status != 200 {
            return Err(format!("GET {}/v1/cluster: {reply}", self.url));
        }
        serde_json::from_str(&reply.text).map_err(|e| {
            format!(
                "GET {}/v1/cluster is not a cluster map ({e}): {}",
                self.url, reply.text
            )
        })
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to one process we started; whether it
/// was delivered. Never panics (it runs in `Drop`).
fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

fn doc_path(collection: &str, id: &str) -> String {
    format!(
        "/v1/collections/{}/docs/{}",
        stratosdb::client::encode_segment(collection),
        stratosdb::client::encode_segment(id)
    )
}

/// Calls `f` every [`POLL`] until it returns `Ok`, at most `timeout`; then
/// panics with `what` and the last error.
pub fn retry_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {e}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Whether a reply (or no reply) says "try again": 503, or no answer.
pub fn is_retryable(result: &Result<Reply, String>) -> bool {
    match result {
        Ok(reply) => reply.status == 503,
        Err(_) => true,
    }
}

/// Sends a request until it gets an answer that is not a 503 (at most
/// `timeout`); that answer. Only for requests that may be repeated safely
/// (reads, PUT, DDL checked afterwards).
pub fn until_answered(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Reply, String>,
) -> Reply {
    retry_until(timeout, what, || {
        let result = f();
        if is_retryable(&result) {
            Err(match result {
                Ok(r) => r.to_string(),
                Err(e) => e,
            })
        } else {
            Ok(result.unwrap())
        }
    })
}

/// Picks `n` distinct free loopback ports (bound together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A cluster of `stratosdb node` processes. See the module's documentation.
pub struct TestCluster {
    members: Vec<Member>,
    // Dropped after the members' processes are killed (see `Drop`).
    dir: tempfile::TempDir,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl TestCluster {
    /// Starts `n` nodes that found a cluster together and waits until every
    /// one answers `/v1/health` with 200.
    pub fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, &[])
    }

    /// [`TestCluster::start`], with `extra` flags on every node's command
    /// line (kept for restarts).
    pub fn start_with(n: usize, extra: &[&str]) -> TestCluster {
        assert!(n >= 1);
        for attempt in 1..=START_ATTEMPTS {
            let guard = ONE_CLUSTER_AT_A_TIME
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut cluster = TestCluster::spawn(n, extra, guard);
            let started = cluster
                .announce_all()
                .and_then(|()| cluster.wait_all_healthy(TIMEOUT));
            match started {
                Ok(()) => return cluster,
                Err(e) if attempt < START_ATTEMPTS && e.contains("in use") => {
                    eprintln!("a port was taken ({e}); starting again with new ports");
                    drop(cluster);
                }
                Err(e) => panic!("the cluster of {n} did not start: {e}"),
            }
        }
        unreachable!()
    }

    /// Lays out and spawns `n` nodes (not waiting for anything).
    fn spawn(n: usize, extra: &[&str], guard: MutexGuard<'static, ()>) -> TestCluster {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let ports = free_ports(2 * n);
        let p2p: Vec<String> = (0..n)
            .map(|i| format!("127.0.0.1:{}", ports[2 * i]))
            .collect();
        let members = (0..n)
            .map(|i| {
                let data = dir.path().join(format!("node{i}"));
                let http = format!("127.0.0.1:{}", ports[2 * i + 1]);
                let mut args: Vec<OsString> =
                    vec!["node".into(), "--data".into(), data.clone().into()];
                args.extend(["--p2p".into(), p2p[i].clone().into()]);
                args.extend(["--http".into(), http.clone().into()]);
                let others: Vec<&str> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| p2p[j].as_str())
                    .collect();
                if !others.is_empty() {
                    args.extend(["--peers".into(), others.join(",").into()]);
                }
                args.extend(extra.iter().map(Into::into));
                Member {
                    name: format!("node {i}"),
                    args,
                    data,
                    log: dir.path().join(format!("node{i}.log")),
                    p2p: p2p[i].clone(),
                    http,
                    id: String::new(),
                    url: String::new(),
                    process: None,
                    paused: false,
                }
            })
            .collect();
        let mut cluster = TestCluster {
            members,
            dir,
            _one_at_a_time: guard,
        };
        for i in 0..n {
            cluster.spawn_member(i);
        }
        cluster
    }

    fn spawn_member(&mut self, i: usize) {
        let m = &mut self.members[i];
        assert!(m.process.is_none(), "{} is already running", m.name);
        m.process = Some(NodeProcess::spawn(&m.name, &m.args, &m.log));
    }

    /// Reads every spawned node's first line.
    fn announce_all(&mut self) -> Result<(), String> {
        for i in 0..self.members.len() {
            if self.members[i].process.is_some() && self.members[i].url.is_empty() {
                self.announce(i)?;
            }
        }
        Ok(())
    }

    /// Reads node i's first line; checks it against what the node said before.
    fn announce(&mut self, i: usize) -> Result<(), String> {
        let m = &mut self.members[i];
        let process = m.process.as_mut().expect("running");
        let Announce { id, url } = process.announce(TIMEOUT)?;
        let expected_url = format!("http://{}", m.http);
        if url != expected_url {
            return Err(format!(
                "{} announced {url}, but was started with --http {}",
                m.name, m.http
            ));
        }
        if !m.id.is_empty() && m.id != id {
            return Err(format!(
                "{} came back as {id:?}, but was {:?}: a node keeps its id in its data folder",
                m.name, m.id
            ));
        }
        m.id = id;
        m.url = url;
        Ok(())
    }

    /// Lays out and spawns a new node that joins the cluster through node
    /// `via`'s API (`--join HOST:PORT --token T`, no `--peers`), with
    /// `extra` flags; kept as a member (its command line is kept for
    /// restarts). Waits for nothing: see [`TestCluster::join`].
    pub fn spawn_joiner(&mut self, via: usize, token: &str, extra: &[&str]) -> usize {
        let i = self.members.len();
        let ports = free_ports(2);
        let data = self.dir.path().join(format!("node{i}"));
        let p2p = format!("127.0.0.1:{}", ports[0]);
        let http = format!("127.0.0.1:{}", ports[1]);
        let mut args: Vec<OsString> = vec!["node".into(), "--data".into(), data.clone().into()];
        args.extend(["--p2p".into(), p2p.clone().into()]);
        args.extend(["--http".into(), http.clone().into()]);
        args.extend(["--join".into(), self.members[via].http.clone().into()]);
        args.extend(["--token".into(), token.into()]);
        args.extend(extra.iter().map(Into::into));
        self.members.push(Member {
            name: format!("node {i}"),
            args,
            data,
            log: self.dir.path().join(format!("node{i}.log")),
            p2p,
            http,
            id: String::new(),
            url: String::new(),
            process: None,
            paused: false,
        });
        self.spawn_member(i);
        i
    }

    /// A new node joins through node `via` with `token` ([`TestCluster::spawn_joiner`]);
    /// waits until it has announced itself and answers `/v1/health` with 200.
    pub fn join(&mut self, via: usize, token: &str, extra: &[&str]) -> usize {
        let i = self.spawn_joiner(via, token, extra);
        if let Err(e) = self.announce(i) {
            panic!("the joining node {i}: {e}");
        }
        self.wait_healthy(i, TIMEOUT);
        i
    }

    /// Everything node i has printed so far (all its runs): stdout lines
    /// prefixed with `[stdout] `, stderr as is.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The join token node i printed on stdout (`join token: T`, after its
    /// first line), waited for at most `timeout`.
    pub fn printed_token(&self, i: usize, timeout: Duration) -> String {
        retry_until(
            timeout,
            &format!("node {i} to print `join token: T`"),
            || {
                self.log(i)
                    .lines()
                    .find_map(|l| l.strip_prefix("[stdout] join token: "))
                    .map(|t| t.trim().to_string())
                    .ok_or_else(|| "no `join token:` line on stdout yet".to_string())
            },
        )
    }

    /// Waits at most `timeout` for node i to exit by itself; its exit status
    /// (the process is reaped and no longer running), or `None` if it still
    /// runs.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let process = self.members[i].process.as_mut()?;
        let status = process.wait_exit(timeout)?;
        self.members[i].process.take();
        Some(status)
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The temporary folder holding the data folders and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node i's data folder.
    pub fn data(&self, i: usize) -> &Path {
        &self.members[i].data
    }

    /// Node i's id, as it announced it.
    pub fn id(&self, i: usize) -> &str {
        &self.members[i].id
    }

    /// Every node's id, in order.
    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    /// Which node has this id.
    pub fn index_of(&self, id: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.id == id)
            .unwrap_or_else(|| {
                panic!(
                    "no node of the cluster has the id {id:?} (ids: {:?})",
                    self.ids()
                )
            })
    }

    /// Node i's API URL, `http://127.0.0.1:PORT`.
    pub fn url(&self, i: usize) -> &str {
        &self.members[i].url
    }

    /// Node i's p2p address, `127.0.0.1:PORT`.
    pub fn p2p(&self, i: usize) -> &str {
        &self.members[i].p2p
    }

    /// Node i's HTTP address, `127.0.0.1:PORT`.
    pub fn http(&self, i: usize) -> &str {
        &self.members[i].http
    }

    /// Raw, time-bounded HTTP to node i.
    pub fn api(&self, i: usize) -> Api {
        Api::new(self.url(i))
    }

    /// The crate's client for node i (its requests are not bounded in time:
    /// prefer [`TestCluster::api`] where a node may hang).
    pub fn client(&self, i: usize) -> Client {
        Client::new(self.url(i)).expect("a valid URL")
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].process.as_mut() {
            Some(p) => p.try_wait().is_none(),
            None => false,
        }
    }

    /// The nodes that are running.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.is_running(i)).collect()
    }

    /// Node i's cluster map (it must answer 200).
    pub fn cluster_map(&self, i: usize) -> ClusterMap {
        self.api(i)
            .cluster()
            .unwrap_or_else(|e| panic!("node {i}'s cluster map: {e}"))
    }

    /// SIGKILL node i and reap it.
    pub fn kill(&mut self, i: usize) {
        if self.members[i].paused {
            self.resume(i);
        }
        let mut process = self.members[i]
            .process
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        process.kill();
    }

    /// SIGTERM node i; it must exit with code 0 within [`STOP_TIMEOUT`].
    pub fn stop(&mut self, i: usize) {
        let mut process = self.members[i]
            .process
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        let status = process
            .terminate(STOP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            status.code() == Some(0),
            "node {i} exited with {status} on SIGTERM, not 0\n{}",
            process.log_tail(TAIL_LINES)
        );
    }

    /// SIGTERM every running node at once; each must exit 0.
    pub fn stop_all(&mut self) {
        let running = self.running();
        let mut processes: Vec<(usize, NodeProcess)> = running
            .iter()
            .map(|&i| (i, self.members[i].process.take().unwrap()))
            .collect();
        for (_, p) in &processes {
            let sent = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(p.pid().to_string())
                .status()
                .expect("`kill` runs");
            assert!(sent.success());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for (i, p) in &mut processes {
            let left = deadline.saturating_duration_since(Instant::now());
            let status = p.wait_exit(left).unwrap_or_else(|| {
                panic!(
                    "node {i} did not stop within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                    p.log_tail(TAIL_LINES)
                )
            });
            assert!(
                status.code() == Some(0),
                "node {i} exited with {status} on SIGTERM, not 0\n{}",
                p.log_tail(TAIL_LINES)
            );
        }
    }

    /// Starts node i again with exactly the same command line and waits
    /// until it answers `/v1/health` with 200. (To restart several nodes that
    /// need each other for a quorum, use [`TestCluster::restart_all`].)
    pub fn restart(&mut self, i: usize) {
        self.restart_all(&[i]);
    }

    /// Starts the given nodes again (all spawned before any is waited for),
    /// and waits until each answers `/v1/health` with 200.
    pub fn restart_all(&mut self, nodes: &[usize]) {
        for &i in nodes {
            self.spawn_member(i);
        }
        for &i in nodes {
            if let Err(e) = self.announce(i) {
                panic!("restarting node {i}: {e}");
            }
        }
        for &i in nodes {
            self.wait_healthy(i, TIMEOUT);
        }
    }

    /// Waits (at most `timeout`) until node i answers `/v1/health` with 200.
    pub fn wait_healthy(&mut self, i: usize, timeout: Duration) {
        if let Err(e) = self.try_wait_healthy(i, timeout) {
            panic!("{e}");
        }
    }

    fn try_wait_healthy(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        let api = Api::with_timeout(self.url(i), Duration::from_secs(5));
        let deadline = Instant::now() + timeout;
        loop {
            let last = match api.health() {
                Ok(200) => return Ok(()),
                Ok(status) => format!("HTTP {status}"),
                Err(e) => e,
            };
            if let Some(status) = self.members[i].process.as_mut().and_then(|p| p.try_wait()) {
                return Err(format!(
                    "node {i} exited ({status}) before it became healthy\n{}",
                    log_tail(&self.members[i].name, &self.members[i].log, TAIL_LINES)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {i} did not answer /v1/health with 200 within {timeout:?}; last: {last}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn wait_all_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            self.try_wait_healthy(i, left.max(POLL))?;
        }
        Ok(())
    }

    /// Polls every running node's cluster map until, for every (collection,
    /// shard), every replica listed is reported by its own node and all those
    /// reports have the same `applied` index and `root`. Panics after
    /// `timeout` with what differed.
    pub fn wait_converged(&mut self, timeout: Duration) {
        let running = self.running();
        let deadline = Instant::now() + timeout;
        loop {
            let problems = self.convergence_problems(&running);
            if problems.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the replicas did not converge within {timeout:?}:\n  {}",
                    problems.join("\n  ")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// What keeps the running nodes' replicas from being converged (nothing:
    /// converged).
    pub fn convergence_problems(&self, running: &[usize]) -> Vec<String> {
        let mut problems = Vec::new();
        // (collection, shard) -> replicas listed by anyone
        let mut listed: BTreeMap<(String, u32), BTreeSet<String>> = BTreeMap::new();
        // (collection, shard) -> node -> (applied, root), as the node itself reports
        let mut reported: BTreeMap<(String, u32), BTreeMap<String, (u64, String)>> =
            BTreeMap::new();
        for &i in running {
            let map = match self.api(i).cluster() {
                Ok(map) => map,
                Err(e) => {
                    problems.push(format!("node {i} gives no cluster map: {e}"));
                    continue;
                }
            };
            if map.self_id != self.id(i) {
                problems.push(format!(
                    "node {i} calls itself {:?}, but announced {:?}",
                    map.self_id,
                    self.id(i)
                ));
            }
            for shard in &map.shards {
                let key = (shard.collection.clone(), shard.shard);
                for r in &shard.replicas {
                    listed
                        .entry(key.clone())
                        .or_default()
                        .insert(r.node.clone());
                    if r.node == map.self_id {
                        reported
                            .entry(key.clone())
                            .or_default()
                            .insert(r.node.clone(), (r.applied, r.root.clone()));
                    }
                }
            }
        }
        for (key, nodes) in &listed {
            let reports = reported.get(key).cloned().unwrap_or_default();
            let missing: Vec<&String> =
                nodes.iter().filter(|n| !reports.contains_key(*n)).collect();
            let distinct: BTreeSet<&(u64, String)> = reports.values().collect();
            if !missing.is_empty() || distinct.len() > 1 {
                let shown: Vec<String> = reports
                    .iter()
                    .map(|(node, (applied, root))| format!("{node}: applied {applied} root {root}"))
                    .collect();
                problems.push(format!(
                    "{}/{}: [{}]{}",
                    key.0,
                    key.1,
                    shown.join("; "),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(" (no report from its own node for {missing:?})")
                    }
                ));
            }
        }
        problems
    }

    /// SIGSTOP node i: it stays alive (its sockets accept connections) but
    /// does nothing until [`TestCluster::resume`]. The cluster resumes it
    /// before killing it, also when dropped.
    pub fn pause(&mut self, i: usize) {
        let pid = self.members[i]
            .process
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
            .pid();
        assert!(signal(pid, "-STOP"), "kill -STOP {pid} (node {i}) failed");
        self.members[i].paused = true;
    }

    /// SIGCONT node i after [`TestCluster::pause`].
    pub fn resume(&mut self, i: usize) {
        // A process that has exited cannot be resumed, nor needs to be.
        if let Some(p) = self.members[i].process.as_ref() {
            signal(p.pid(), "-CONT");
        }
        self.members[i].paused = false;
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.members[i].paused
    }

    /// Sets node i's fault-injection drop set (`POST /v1/admin/faults`; the
    /// node must run with `--fault-injection`): its transport drops all
    /// traffic to and from the nodes with these ids; `[]` heals.
    pub fn set_faults(&self, i: usize, drop: &[String]) -> Result<(), String> {
        let body = serde_json::json!({ "drop": drop }).to_string();
        let reply = Api::with_timeout(self.url(i), Duration::from_secs(5)).call(
            "POST",
            "/v1/admin/faults",
            Some(body.as_bytes()),
        )?;
        if reply.status != 200 {
            return Err(format!("node {i}: POST /v1/admin/faults: {reply}"));
        }
        Ok(())
    }

    /// Node i's fault-injection drop set (`GET /v1/admin/faults`).
    pub fn faults(&self, i: usize) -> Result<Vec<String>, String> {
        let reply = self.api(i).call("GET", "/v1/admin/faults", None)?;
        if reply.status != 200 {
            return Err(format!("node {i}: GET /v1/admin/faults: {reply}"));
        }
        serde_json::from_value(reply.json()["drop"].clone())
            .map_err(|e| format!("node {i}: GET /v1/admin/faults ({e}): {reply}"))
    }

    /// Prints the tail of every node's log.
    pub fn dump_logs(&self) {
        for m in &self.members {
            eprintln!("{}", log_tail(&m.name, &m.log, TAIL_LINES));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A stopped process is resumed first, so the kill below is not
        // left pending on it.
        for i in 0..self.members.len() {
            if self.members[i].paused {
                self.resume(i);
            }
        }
        // A running process prints its own log tail when dropped during a
        // panic; the others' logs are printed here.
        for m in &mut self.members {
            match m.process.take() {
                Some(p) => drop(p),
                None if std::thread::panicking() => {
                    eprintln!("{} (not running)", log_tail(&m.name, &m.log, TAIL_LINES))
                }
                None => {}
            }
        }
    }
}
