//! `stratosdb demo`, run as users run it: the built binary, its real node
//! processes on loopback. Each run is bounded in time: past it, the demo's
//! whole process group (the demo and the nodes it started) is SIGKILLed, and
//! the nodes are looked for by the pids the demo printed.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest one demo run may take in a test (a debug build on a shared
/// machine; the release build takes well under two minutes).
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);

/// The demo under test, in its own process group; dropping it SIGKILLs the
/// group (the demo and its nodes), also when the test fails.
struct DemoRun {
    child: Child,
    /// What the demo has printed on stdout so far.
    stdout: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
}

impl DemoRun {
    fn start(args: &[&str]) -> DemoRun {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("the stratosdb binary runs");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let copy = |pipe: Box<dyn Read + Send>, into: Arc<Mutex<String>>| {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut text = into.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        };
        let readers = vec![
            copy(
                Box::new(child.stdout.take().expect("stdout")),
                stdout.clone(),
            ),
            copy(
                Box::new(child.stderr.take().expect("stderr")),
                stderr.clone(),
            ),
        ];
        DemoRun {
            child,
            stdout,
            readers,
            stderr,
        }
    }

    /// Waits (bounded) until stdout has a line starting with `start`.
    fn wait_for_line(&mut self, start: &str) {
        let deadline = Instant::now() + DEMO_TIMEOUT;
        while !self
            .stdout
            .lock()
            .unwrap()
            .lines()
            .any(|l| l.starts_with(start))
        {
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                let out = self.stdout.lock().unwrap().clone();
                panic!("no line {start:?} from the demo:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the demo's exit (at most [`DEMO_TIMEOUT`], then the group
    /// is killed and this panics): its status, stdout and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + DEMO_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill_group();
                let (out, err) = self.output();
                panic!("the demo did not finish within {DEMO_TIMEOUT:?} (killed)\n{out}\n{err}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (out, err) = self.output();
        (status, out, err)
    }

    /// Everything the demo printed (once it has exited or been killed).
    fn output(&mut self) -> (String, String) {
        // The pipes close when the demo and the nodes sharing them exit;
        // bounded, since a node left running would keep them open.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }

    fn kill_group(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Drop for DemoRun {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
        }
    }
}

/// The nodes the demo said it started: (name, pid, url), from its lines
/// `started nodeN  id ID  pid PID  URL`.
fn started_nodes(stdout: &str) -> Vec<(String, u32, String)> {
    stdout
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["started", name, "id", _, "pid", pid, url] => {
                    Some((name.to_string(), pid.parse().ok()?, url.to_string()))
                }
                _ => None,
            },
        )
        .collect()
}

/// Whether a process with this pid is running (a zombie is not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits (bounded) until none of the pids runs; panics naming those that do.
fn assert_all_stopped(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| running(p)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for pid in &left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            panic!("node processes left running after the demo: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILLs these pids when dropped (the nodes a `--keep` run leaves).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in self.0.iter().filter(|&&p| running(p)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn the_demo_loads_kills_a_node_heals_and_checks_the_roots() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let folder = data.path().join("demo");
    let folder_arg = folder.to_str().expect("a UTF-8 path");
    let (status, out, err) = DemoRun::start(&["--documents", "600", "--data", folder_arg]).finish();
    let nodes = started_nodes(&out);
    let pids: Vec<u32> = nodes.iter().map(|(_, pid, _)| *pid).collect();
    assert_all_stopped(&pids);
    assert!(
        status.success(),
        "the demo failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert_eq!(nodes.len(), 4, "four nodes started:\n{out}");
    for expected in [
        "loaded 600 documents into people",
        "roots agree before the kill",
        "all 600 documents are there",
        "healed: every shard of people has 3 voters on live nodes",
        "roots equal: 8 shards, 24 replicas",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    // The node killed is one the demo started, and a stopped list follows.
    let killed = out
        .lines()
        .find(|l| l.starts_with("killed node"))
        .unwrap_or_else(|| panic!("no `killed nodeN` line in:\n{out}"));
    assert!(
        nodes.iter().any(|(name, pid, _)| {
            killed.starts_with(&format!("killed {name} ")) && killed.contains(&format!("pid {pid}"))
        }),
        "{killed:?} names none of {nodes:?}"
    );
    assert!(killed.contains("with SIGKILL"), "{killed}");
    assert!(out.contains("stopped node"), "{out}");
    // The group-by table shows the cities, the point lookup its document.
    assert!(out.contains("p000042"), "{out}");
    assert!(out.contains("avg_age"), "{out}");
    // An anchored epoch covers the data, the anchors are listed, the reads
    // verify (by _id and the follower SELECT), an absent _id too, and the
    // audit of the shared ledger passes.
    assert!(
        out.contains("is anchored and covers the loaded data"),
        "{out}"
    );
    assert!(out.contains("anchored on local at "), "{out}");
    let verified: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("anchored (epoch ") || l.contains("unanchored (raft index "))
        .collect();
    assert!(verified.len() >= 4, "fewer than 4 verified rows in:\n{out}");
    assert!(
        ["p000000", "p000042", "p000599"]
            .iter()
            .all(|id| verified.iter().any(|l| l.contains(id))),
        "the rows read by _id are not all verified: {verified:?}"
    );
    assert!(
        out.contains("p000600: verified absent"),
        "no verified absent _id in:\n{out}"
    );
    assert!(out.contains("== 10. Auditing the ledger"), "{out}");
    let audit = out
        .lines()
        .find(|l| l.starts_with("audit "))
        .unwrap_or_else(|| panic!("no audit verdict in:\n{out}"));
    assert!(audit.starts_with("audit passed: "), "{audit}");
    assert!(
        out.contains("ok      epoch "),
        "no anchored epoch audited:\n{out}"
    );
    // Then an account pays for queries, a receipt per reply; the epochs are
    // settled (its spending equals its receipts) and the audit of the
    // settlements passes.
    assert!(
        out.contains("== 11. Paying for traffic: receipts, a settlement and its audit"),
        "{out}"
    );
    assert!(
        out.contains("3 receipts checked (node signature, fee, request, bytes)"),
        "{out}"
    );
    assert!(out.contains("settled in "), "{out}");
    let spent = out
        .lines()
        .find(|l| l.contains(", spent ") && l.contains("(its receipts: "))
        .unwrap_or_else(|| panic!("no account line in:\n{out}"));
    let between = |from: &str, to: &str| {
        let start = spent.find(from).unwrap() + from.len();
        spent[start..].split(to).next().unwrap().to_string()
    };
    assert_eq!(
        between(", spent ", " wei"),
        between("(its receipts: ", ")"),
        "{spent}"
    );
    assert!(out.contains("ok      settlement of epoch "), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("audit passed: "))
            .count(),
        2,
        "the ledger's and the settlements' audits:\n{out}"
    );
    // The given folder stays, with each node's log.
    assert!(folder.join("node1.log").is_file());
}

#[test]
fn keep_leaves_the_nodes_answering_until_they_are_stopped() {
    let (status, out, err) =
        DemoRun::start(&["--documents", "200", "--keep", "--no-kill"]).finish();
    let nodes = started_nodes(&out);
    let _cleanup = KillOnDrop(nodes.iter().map(|(_, pid, _)| *pid).collect());
    assert!(
        status.success(),
        "the demo failed ({status})\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert_eq!(nodes.len(), 4, "{out}");
    assert!(out.contains("shell --connect http://127.0.0.1:"), "{out}");
    assert!(out.contains("roots equal: 8 shards, 24 replicas"), "{out}");
    assert!(out.contains("audit passed: "), "{out}");
    assert!(out.contains("Audit the ledger:"), "{out}");
    let stop_line = out
        .lines()
        .find(|l| l.starts_with("Stop it:"))
        .unwrap_or_else(|| panic!("no `Stop it:` line in:\n{out}"));
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    for (name, pid, url) in &nodes {
        assert!(running(*pid), "{name} (pid {pid}) is not running");
        assert!(stop_line.contains(&pid.to_string()), "{stop_line}");
        let health = agent
            .get(&format!("{url}/v1/health"))
            .call()
            .unwrap_or_else(|e| panic!("{name} at {url} does not answer: {e}"));
        assert_eq!(health.status(), 200, "{name}");
    }
    // The data folder the demo made is kept, and so are the documents.
    let count = agent
        .post(&format!("{}/v1/sql", nodes[3].2))
        .send(r#"{"sql": "SELECT COUNT(*) AS n FROM people"}"#)
        .and_then(|mut r| r.body_mut().read_to_string())
        .expect("a count through node 4");
    assert!(count.contains(r#""n":200"#), "{count}");
    // Stopped as the demo says: SIGTERM to the pids it printed.
    for (_, pid, _) in &nodes {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let pids: Vec<u32> = nodes.iter().map(|(_, pid, _)| *pid).collect();
    assert_all_stopped(&pids);
    let data = out
        .lines()
        .find_map(|l| l.strip_prefix("Data and logs:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `Data and logs:` line in:\n{out}"));
    assert!(std::path::Path::new(data).join("node1.log").is_file());
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn a_data_path_that_is_a_file_fails_clearly_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").expect("write a file");
    let (status, out, err) = DemoRun::start(&["--data", file.to_str().expect("UTF-8")]).finish();
    assert!(!status.success(), "the demo succeeded:\n{out}");
    assert!(
        err.contains("is not a folder") && err.contains("not-a-folder"),
        "the error names the path and the problem:\n{err}"
    );
    assert!(started_nodes(&out).is_empty(), "nodes were started:\n{out}");
    assert_eq!(std::fs::read_to_string(&file).expect("the file"), "x");
}

#[test]
fn ctrl_c_mid_way_stops_every_node_and_removes_the_temporary_folder() {
    let mut run = DemoRun::start(&["--documents", "200000"]);
    run.wait_for_line("== 3. Loading");
    let out = run.stdout.lock().unwrap().clone();
    let nodes = started_nodes(&out);
    assert_eq!(nodes.len(), 4, "{out}");
    let data = out
        .lines()
        .find_map(|l| l.strip_prefix("data and logs in "))
        .and_then(|l| l.split(" (").next())
        .unwrap_or_else(|| panic!("no `data and logs in` line in:\n{out}"))
        .to_string();
    // SIGINT to the demo alone, as a terminal's Ctrl-C would reach it
    // (the nodes are left to the demo).
    let demo = run.child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &demo]).status();
    let (status, out, err) = run.finish();
    let pids: Vec<u32> = nodes.iter().map(|(_, pid, _)| *pid).collect();
    assert_all_stopped(&pids);
    assert_eq!(status.code(), Some(130), "{out}\n{err}");
    assert!(err.contains("interrupted: stopping the nodes"), "{err}");
    assert!(
        !std::path::Path::new(&data).exists(),
        "{data} was left behind"
    );
}

#[test]
fn a_data_folder_that_is_not_empty_is_refused_and_left_alone() {
    // The folder is not empty: refused before any node starts, and the
    // folder is left as it was.
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("precious.txt"), "keep me").expect("write a file");
    let (status, _out, err) =
        DemoRun::start(&["--data", dir.path().to_str().expect("UTF-8")]).finish();
    assert!(!status.success());
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("precious.txt")).expect("kept"),
        "keep me"
    );
}

#[test]
fn a_damaged_ledger_fails_the_demo_and_stops_its_nodes() {
    let data = tempfile::tempdir().expect("a temporary folder");
    let folder = data.path().join("demo");
    let folder_arg = folder.to_str().expect("a UTF-8 path");
    let mut run = DemoRun::start(&["--documents", "200", "--no-kill", "--data", folder_arg]);
    // Once an anchored epoch is listed, a byte inside the first block of the
    // shared ledger is flipped: the verified reads or the audit must refuse it.
    run.wait_for_line("GET /v1/anchors");
    let log = folder.join("ledger").join("ledger.log");
    let mut bytes = std::fs::read(&log).expect("the nodes' ledger");
    // 8 bytes of file header, 8 of frame header, then the first block.
    let at = 8 + 8 + 40;
    assert!(bytes.len() > at, "a ledger of {} bytes", bytes.len());
    bytes[at] ^= 0xff;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open the ledger");
        file.seek(SeekFrom::Start(at as u64)).expect("seek");
        file.write_all(&bytes[at..=at]).expect("flip a byte");
    }
    let (status, out, err) = run.finish();
    let pids: Vec<u32> = started_nodes(&out).iter().map(|(_, pid, _)| *pid).collect();
    assert_eq!(pids.len(), 4, "{out}");
    assert_all_stopped(&pids);
    assert!(!status.success(), "the demo succeeded:\n{out}\n{err}");
    assert!(!out.contains("demo finished"), "{out}");
    let ledger = folder.join("ledger");
    assert!(
        err.contains(ledger.to_str().expect("UTF-8")) && err.contains("the demo failed"),
        "the error names the ledger:\n{err}\n--- stdout\n{out}"
    );
}
