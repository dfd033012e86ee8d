//! One `stratosdb node` process: spawned with piped stdout and stderr, its
//! first stdout line (`stratosdb node NODE_ID listening on http://HOST:PORT`)
//! read with a bounded wait, everything else it prints drained into a log
//! file. Dropping it SIGKILLs and reaps the child; when the test is failing,
//! the tail of its log is printed first, so a failure shows what the node said.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a test waits for a node to start, answer or stop.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// How many log lines a failure prints per node.
pub const TAIL_LINES: usize = 60;

/// What a node prints first: its id and its API's URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    pub id: String,
    pub url: String,
}

/// A running `stratosdb` child process, SIGKILLed and reaped when dropped.
pub struct NodeProcess {
    /// A name for messages (`node 1`, `stranger`).
    pub name: String,
    child: Child,
    log: PathBuf,
    first_line: Option<Receiver<String>>,
    drains: Vec<JoinHandle<()>>,
    /// Set once the child has been reaped.
    exit: Option<ExitStatus>,
}

impl NodeProcess {
    /// Spawns `stratosdb ARGS`, appending what it prints to `log` (after a
    /// header line naming the command).
    ///
    /// A `node` runs as a `--dev` cluster member (unsigned requests are
    /// billed to the dev account) unless its arguments say `--no-dev`
    /// (which is taken out): the tests of signed requests use that.
    pub fn spawn(name: &str, args: &[OsString], log: &Path) -> NodeProcess {
        let args = &node_flags(args);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open the log {}: {e}", log.display()));
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        writeln!(file, "==== {name}: stratosdb {} ====", shown.join(" ")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the stratosdb binary runs");
        let file = Arc::new(Mutex::new(file));
        let (tx, rx) = channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let out_log = Arc::clone(&file);
        let drains = vec![
            std::thread::spawn(move || drain_stdout(stdout, tx, out_log)),
            std::thread::spawn(move || drain_stderr(stderr, file)),
        ];
        NodeProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            first_line: Some(rx),
            drains,
            exit: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `timeout`) for the first stdout line and parses it.
    /// `Err` says why not: the process exited first (with its status and the
    /// tail of its log), the line is not the announced form, or time ran out.
    pub fn announce(&mut self, timeout: Duration) -> Result<Announce, String> {
        let rx = self
            .first_line
            .take()
            .unwrap_or_else(|| panic!("{}: announce() called twice", self.name));
        let line = match rx.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "{} printed no line on stdout in {timeout:?}\n{}",
                    self.name,
                    self.log_tail(TAIL_LINES)
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                // stdout closed without a line: the process is exiting.
                let status = self.wait_exit(Duration::from_secs(10));
                return Err(format!(
                    "{} exited before printing its address ({}):\n{}",
                    self.name,
                    status.map_or("still running".to_string(), |s| s.to_string()),
                    self.log_tail(TAIL_LINES)
                ));
            }
        };
        parse_announce(&line).ok_or_else(|| {
            format!(
                "{}'s first line is not `stratosdb node NODE_ID listening on http://HOST:PORT`: {line:?}",
                self.name
            )
        })
    }

    /// The exit status, if the process has exited (it is reaped then).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (a crash) and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        // `Child::kill` is SIGKILL on unix.
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for the killed child");
        self.exit = Some(status);
        status
    }

    /// SIGTERM, then waits at most `timeout` for the exit. On a timeout the
    /// process is SIGKILLed and the error says so.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(status) = self.try_wait() {
            return Err(format!(
                "{} had already exited ({status}) before SIGTERM\n{}",
                self.name,
                self.log_tail(TAIL_LINES)
            ));
        }
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("`kill` runs");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
        match self.wait_exit(timeout) {
            Some(status) => Ok(status),
            None => {
                self.kill();
                Err(format!(
                    "{} did not stop within {timeout:?} of SIGTERM (SIGKILLed)\n{}",
                    self.name,
                    self.log_tail(TAIL_LINES)
                ))
            }
        }
    }

    /// The last `lines` lines of the log, with a header naming it.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.name, &self.log, lines)
    }

    /// Waits (bounded) for the drain threads, so the log holds everything the
    /// process wrote. Only after the process has exited.
    fn join_drains(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for handle in std::mem::take(&mut self.drains) {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        self.join_drains();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(TAIL_LINES));
        }
    }
}

/// `stratosdb node NODE_ID listening on http://HOST:PORT` → id and URL.
pub fn parse_announce(line: &str) -> Option<Announce> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        ["stratosdb", "node", id, "listening", "on", url] if url.starts_with("http://") => {
            Some(Announce {
                id: id.to_string(),
                url: url.to_string(),
            })
        }
        _ => None,
    }
}

/// The last `lines` lines of a log file, with a header naming it.
pub fn log_tail(name: &str, log: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(log) {
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    format!(
        "---- last {} lines of {name}'s log ({}) ----\n{}\n---- end of {name}'s log ----",
        tail.len(),
        log.display(),
        tail.join("\n")
    )
}

/// `args` with `--dev` added to a `node` command, or `--no-dev` taken out.
pub fn node_flags(args: &[OsString]) -> Vec<OsString> {
    let is_node = args.first().is_some_and(|a| a == "node");
    let no_dev = args.iter().any(|a| a == "--no-dev");
    let mut out: Vec<OsString> = args.iter().filter(|a| *a != "--no-dev").cloned().collect();
    if is_node && !no_dev && !out.iter().any(|a| a == "--dev") {
        out.push("--dev".into());
    }
    out
}

fn drain_stdout(
    stdout: ChildStdout,
    first: std::sync::mpsc::Sender<String>,
    log: Arc<Mutex<File>>,
) {
    let mut reader = BufReader::new(stdout);
    let mut first = Some(first);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = write!(log.lock().unwrap(), "[stdout] {line}");
        if let Some(tx) = first.take() {
            let _ = tx.send(line.trim_end().to_string());
        }
    }
}

fn drain_stderr(stderr: ChildStderr, log: Arc<Mutex<File>>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = log.lock().unwrap().write_all(&line);
    }
}

/// Runs `stratosdb ARGS` to its end with `stdin` as its input, at most
/// `timeout` (then it is SIGKILLed and this panics): its exit status, stdout
/// and stderr.
pub fn run_to_end(args: &[OsString], stdin: &str, timeout: Duration) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the stratosdb binary runs");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("stderr")));
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    // On a thread, so that a stuck child is caught by the timeout; a child
    // that stops reading early closes the pipe: not an error.
    std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let shown: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            panic!(
                "`stratosdb {}` did not exit within {timeout:?} (killed)",
                shown.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}
