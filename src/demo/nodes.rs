//! The demo's cluster: `stratosdb node` child processes of this very binary
//! on free loopback ports, founded together (`--peers`), each with its data
//! folder and its log file (stdout and stderr) in the demo's folder.
//!
//! Whatever happens, the demo stops what it started: [`LocalCluster`] stops
//! its nodes when dropped (on success, on an error, in a panic), and a
//! signal thread stops them on Ctrl-C, SIGTERM or SIGHUP before the process
//! exits. Only `--keep` ([`LocalCluster::keep`]) leaves them running.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use stratosdb::client::Client;

/// Longest a node may take to print its address and answer `/v1/health`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest a node may take to stop on SIGTERM before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times the cluster is started again with new ports when a port
/// picked as free was taken in between by another program.
const START_ATTEMPTS: usize = 3;

/// How many lines of a node's log an error shows.
const LOG_TAIL_LINES: usize = 20;

const POLL: Duration = Duration::from_millis(100);

/// Set when a signal is stopping the demo.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether a signal is stopping the demo (the signal thread stops the nodes
/// and exits the process; the main thread's errors meanwhile are its echo).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Where the demo keeps its nodes' data and logs.
pub struct DemoFolder {
    pub path: PathBuf,
    /// Made by the demo (no `--data`): removed when the demo ends well.
    pub temporary: bool,
}

impl DemoFolder {
    /// `--data DIR` (absent or empty), or a new folder under the system's
    /// temporary folder.
    pub fn prepare(data: Option<&Path>) -> anyhow::Result<DemoFolder> {
        let Some(path) = data else {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let path =
                std::env::temp_dir().join(format!("stratosdb-demo-{}-{stamp}", std::process::id()));
            std::fs::create_dir(&path)
                .with_context(|| format!("cannot create the folder {}", path.display()))?;
            return Ok(DemoFolder {
                path,
                temporary: true,
            });
        };
        if path.exists() {
            if !path.is_dir() {
                bail!(
                    "--data {} is not a folder: give a folder for the nodes' data (absent or empty)",
                    path.display()
                );
            }
            let mut entries = std::fs::read_dir(path)
                .with_context(|| format!("cannot read the folder {}", path.display()))?;
            if entries.next().is_some() {
                bail!(
                    "--data {} is not empty: the demo founds a new cluster, give an absent or empty folder",
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the folder {}", path.display()))?;
        Ok(DemoFolder {
            path: path.to_path_buf(),
            temporary: false,
        })
    }

    /// Removes the folder if the demo made it.
    pub fn remove_if_temporary(&self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One node the demo started.
pub struct LocalNode {
    /// `node1`, `node2`, ...: the name of its folder and log.
    pub name: String,
    /// The node id it announced (16 hex digits).
    pub id: String,
    /// Its API, `http://127.0.0.1:PORT`.
    pub url: String,
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
    /// Set once the process has exited and been reaped.
    exited: bool,
}

impl LocalNode {
    fn running(&mut self) -> bool {
        if !self.exited && matches!(self.child.try_wait(), Ok(Some(_))) {
            self.exited = true;
        }
        !self.exited
    }
}

/// The nodes, shared with the signal thread.
type Nodes = Arc<Mutex<Vec<LocalNode>>>;

/// The running cluster. Dropping it stops every node (unless kept).
pub struct LocalCluster {
    nodes: Nodes,
    kept: bool,
}

impl LocalCluster {
    /// Starts `count` nodes that found a cluster together and waits until
    /// every one answers `/v1/health` and sees all the others.
    /// `extra` flags go on every node's command line.
    pub fn start(folder: &DemoFolder, count: usize, extra: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program's own path")?;
        let nodes: Nodes = Arc::new(Mutex::new(Vec::new()));
        stop_on_signals(Arc::clone(&nodes), folder)?;
        let cluster = LocalCluster { nodes, kept: false };
        for attempt in 1..=START_ATTEMPTS {
            let started = cluster.spawn_all(&exe, folder, count, extra);
            match started {
                Ok(()) => break,
                Err(e) if attempt < START_ATTEMPTS && format!("{e:#}").contains("in use") => {
                    // Another program took a port between our pick and the bind.
                    cluster.stop_all();
                    cluster.nodes.lock().clear();
                    for i in 1..=count {
                        let _ = std::fs::remove_dir_all(folder.path.join(format!("node{i}")));
                        let _ = std::fs::remove_file(folder.path.join(format!("node{i}.log")));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        cluster.wait_formed(count)?;
        Ok(cluster)
    }

    fn spawn_all(
        &self,
        exe: &Path,
        folder: &DemoFolder,
        count: usize,
        extra: &[String],
    ) -> anyhow::Result<()> {
        let ports = free_ports(2 * count)?;
        let p2p: Vec<String> = (0..count)
            .map(|i| format!("127.0.0.1:{}", ports[2 * i]))
            .collect();
        for i in 0..count {
            let name = format!("node{}", i + 1);
            let data = folder.path.join(&name);
            let log = folder.path.join(format!("{name}.log"));
            let http = format!("127.0.0.1:{}", ports[2 * i + 1]);
            let peers: Vec<&str> = (0..count)
                .filter(|&j| j != i)
                .map(|j| p2p[j].as_str())
                .collect();
            let mut command = Command::new(exe);
            command
                .arg("node")
                .arg("--data")
                .arg(&data)
                .args(["--p2p", &p2p[i], "--http", &http])
                .args(extra);
            if !peers.is_empty() {
                command.args(["--peers", &peers.join(",")]);
            }
            let out = File::create(&log)
                .with_context(|| format!("cannot create the log {}", log.display()))?;
            let err = out.try_clone().context("cannot share the log file")?;
            let child = command
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .with_context(|| format!("cannot start {}", exe.display()))?;
            self.nodes.lock().push(LocalNode {
                name,
                id: String::new(),
                url: String::new(),
                pid: child.id(),
                log,
                child,
                exited: false,
            });
        }
        for i in 0..count {
            self.announce(i)?;
        }
        Ok(())
    }

    /// Reads node i's first line, `stratosdb node ID listening on URL`, from
    /// its log.
    fn announce(&self, i: usize) -> anyhow::Result<()> {
        let (name, log) = {
            let nodes = self.nodes.lock();
            (nodes[i].name.clone(), nodes[i].log.clone())
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some((id, url)) = read_announce(&log) {
                let mut nodes = self.nodes.lock();
                nodes[i].id = id;
                nodes[i].url = url;
                return Ok(());
            }
            if !self.nodes.lock()[i].running() {
                bail!(
                    "{name} exited before printing its address\n{}",
                    log_tail(&log)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} printed no address in {START_TIMEOUT:?}\n{}",
                    log_tail(&log)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every node answers `/v1/health` and its cluster map
    /// lists all `count` nodes up.
    fn wait_formed(&self, count: usize) -> anyhow::Result<()> {
        for i in 0..count {
            let (name, url, log) = {
                let nodes = self.nodes.lock();
                (
                    nodes[i].name.clone(),
                    nodes[i].url.clone(),
                    nodes[i].log.clone(),
                )
            };
            let client = Client::new(&url)?;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                let formed = client.health().is_ok()
                    && client.cluster().is_ok_and(|map| {
                        map.nodes.len() == count && map.nodes.iter().all(|n| n.up)
                    });
                if formed {
                    break;
                }
                if !self.nodes.lock()[i].running() {
                    bail!("{name} exited while starting\n{}", log_tail(&log));
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{name} ({url}) did not see a cluster of {count} nodes within {START_TIMEOUT:?}\n{}",
                        log_tail(&log)
                    );
                }
                std::thread::sleep(POLL);
            }
        }
        Ok(())
    }

    /// (name, id, url, pid) of every node, in order.
    pub fn list(&self) -> Vec<(String, String, String, u32)> {
        self.nodes
            .lock()
            .iter()
            .map(|n| (n.name.clone(), n.id.clone(), n.url.clone(), n.pid))
            .collect()
    }

    /// The URLs of the nodes whose process is running.
    pub fn running_urls(&self) -> Vec<String> {
        self.nodes
            .lock()
            .iter_mut()
            .filter_map(|n| n.running().then(|| n.url.clone()))
            .collect()
    }

    /// A node that has exited although the demo did not stop it, if any:
    /// its name and the tail of its log.
    pub fn crashed(&self, killed: Option<&str>) -> Option<String> {
        let mut nodes = self.nodes.lock();
        nodes
            .iter_mut()
            .filter(|n| Some(n.id.as_str()) != killed)
            .find_map(|n| {
                (!n.running())
                    .then(|| format!("{} exited on its own\n{}", n.name, log_tail(&n.log)))
            })
    }

    /// SIGKILLs the node with this id (a crash: nothing is flushed) and
    /// reaps it; its pid.
    pub fn kill(&self, id: &str) -> anyhow::Result<u32> {
        let mut nodes = self.nodes.lock();
        let Some(node) = nodes.iter_mut().find(|n| n.id == id) else {
            bail!("no node {id} was started by the demo");
        };
        // `Child::kill` is SIGKILL on unix.
        node.child
            .kill()
            .with_context(|| format!("cannot SIGKILL {} (pid {})", node.name, node.pid))?;
        let _ = node.child.wait();
        node.exited = true;
        Ok(node.pid)
    }

    /// Stops every running node (SIGTERM, then SIGKILL after a while); the
    /// names and pids of those it stopped.
    pub fn stop_all(&self) -> Vec<(String, u32)> {
        stop(&mut self.nodes.lock())
    }

    /// Leaves the running nodes running: nothing stops them any more.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.kept {
            self.stop_all();
        }
    }
}

/// SIGTERM to every running node (they flush and exit), then SIGKILL to
/// those still running after [`STOP_TIMEOUT`]; every one is reaped.
fn stop(nodes: &mut [LocalNode]) -> Vec<(String, u32)> {
    let mut stopped = Vec::new();
    for node in nodes.iter_mut() {
        if !node.running() {
            continue;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &node.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        stopped.push((node.name.clone(), node.pid));
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while nodes.iter_mut().any(|n| n.running()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for node in nodes.iter_mut().filter(|n| !n.exited) {
        let _ = node.child.kill();
        let _ = node.child.wait();
        node.exited = true;
    }
    stopped
}

/// On SIGINT, SIGTERM or SIGHUP: stop the nodes, remove a temporary folder
/// and exit, wherever the demo was.
fn stop_on_signals(nodes: Nodes, folder: &DemoFolder) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handler")?;
    let path = folder.path.clone();
    let temporary = folder.temporary;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("\ninterrupted: stopping the nodes the demo started");
            let stopped = stop(&mut nodes.lock());
            eprintln!("stopped {} node(s)", stopped.len());
            if temporary {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                eprintln!("data and logs are in {}", path.display());
            }
            std::process::exit(128 + signal);
        }
    });
    Ok(())
}

/// `n` distinct free loopback ports (bound together, then released).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .context("cannot find free ports on 127.0.0.1")
}

/// The id and URL in a node's first line, once it has printed it.
fn read_announce(log: &Path) -> Option<(String, String)> {
    let file = File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["stratosdb", "node", id, "listening", "on", url] if url.starts_with("http://") => {
                    Some((id.to_string(), url.to_string()))
                }
                _ => None,
            },
        )
}

/// The last lines of a log, with its path.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(
        "---- last lines of {} ----\n{}\n----",
        log.display(),
        tail.join("\n")
    )
}
