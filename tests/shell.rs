//! The shell's scriptable contract, run as a user would: the real binary on a
//! real data folder, with `-c`, with standard input, and driven through a
//! pipe one statement at a time, in every format. Every child is bounded by a
//! timeout and killed if it outlives its test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Longest a test waits for the shell to answer or to exit.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) when dropped, whatever happened.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// Waits for the exit, at most [`TIMEOUT`]; panics (and kills) after it.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the shell did not exit in {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(data: &Path, args: &[&str]) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratosdb"));
    cmd.arg("shell").arg("--data").arg(data).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Killed(cmd.spawn().expect("the binary runs"))
}

/// Reads a pipe to its end on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs the shell to its end with `stdin` as input (bounded by [`TIMEOUT`]).
fn shell(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = spawn(data, args);
    let out = collect(child.0.stdout.take().expect("stdout"));
    let err = collect(child.0.stderr.take().expect("stderr"));
    let mut input = child.0.stdin.take().expect("stdin");
    let text = stdin.unwrap_or("").to_string();
    // On a thread, so that a stuck shell is caught by the timeout below; a
    // shell that stops reading early (\q) closes the pipe: not an error.
    std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let status = child.wait();
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A shell driven through pipes, one statement at a time.
struct Driven {
    child: Killed,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
}

fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Driven {
    fn start(data: &Path, args: &[&str]) -> Driven {
        let mut child = spawn(data, args);
        let out = lines_of(child.0.stdout.take().expect("stdout"));
        let err = lines_of(child.0.stderr.take().expect("stderr"));
        let stdin = child.0.stdin.take();
        Driven {
            child,
            stdin,
            out,
            err,
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(text.as_bytes())
            .expect("write to the shell");
        stdin.flush().expect("flush");
    }

    /// The next line of stdout, waiting at most [`TIMEOUT`].
    fn line(&self) -> String {
        self.out
            .recv_timeout(TIMEOUT)
            .expect("a line on stdout in time")
    }

    /// Lines of stderr until one contains `needle` (which is returned).
    fn err_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .err
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no stderr line with {needle:?} in time"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Nothing more on stdout for a while.
    fn quiet(&self) {
        if let Ok(line) = self.out.recv_timeout(Duration::from_millis(300)) {
            panic!("unexpected output {line:?}");
        }
    }

    /// Closes stdin and waits for the exit.
    fn close(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.child.wait()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8")
}

const SETUP: &str = r#"CREATE COLLECTION users;
INSERT INTO users VALUES
  ('{"_id":"u1","name":"Ann","age":31,"address":{"city":"Paris"}}'),
  ('{"_id":"u2","name":"Bob, Jr.","age":40}');
CREATE INDEX by_age ON users (age);"#;

#[test]
fn json_format_prints_one_object_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = shell(dir.path(), &["--format", "json", "-c", SETUP], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "{\"affected\":0}\n{\"affected\":2}\n{\"affected\":0}\n"
    );

    let out = shell(
        dir.path(),
        &[
            "--format",
            "json",
            "-c",
            "SELECT * FROM users ORDER BY age; SELECT name, address.city, age + 1 AS next FROM users WHERE age < 35",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"_id":"u1","name":"Ann","age":31,"address":{"city":"Paris"}}),
            serde_json::json!({"_id":"u2","name":"Bob, Jr.","age":40}),
            serde_json::json!({"name":"Ann","address.city":"Paris","next":32}),
        ]
    );
}

#[test]
fn statements_from_stdin_spanning_lines() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{SETUP}\nSELECT name\n  FROM users\n  WHERE age >= 40;\nUPDATE users SET age = age + 1, address.zip = '75001' WHERE _id = 'u1';\nSELECT age, address.zip FROM users WHERE _id = 'u1'"
    );
    let out = shell(dir.path(), &["--format", "json"], Some(&script));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[3..],
        [
            r#"{"name":"Bob, Jr."}"#,
            r#"{"affected":1}"#,
            r#"{"age":32,"address.zip":"75001"}"#
        ]
    );
}

#[test]
fn csv_and_table_formats() {
    let dir = tempfile::tempdir().unwrap();
    assert!(shell(dir.path(), &["-c", SETUP], None).status.success());
    let out = shell(
        dir.path(),
        &[
            "--format",
            "csv",
            "-c",
            "SELECT _id, name, age FROM users ORDER BY _id",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "_id,name,age\nu1,Ann,31\nu2,\"Bob, Jr.\",40\n"
    );

    let out = shell(
        dir.path(),
        &["-c", "SELECT name, age FROM users WHERE age > 35"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("name") && table.contains("Bob, Jr.") && table.contains("40"));
    assert!(table.contains("(1 row)"), "{table}");
}

#[test]
fn errors_go_to_stderr_and_set_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    assert!(shell(dir.path(), &["-c", SETUP], None).status.success());
    let out = shell(
        dir.path(),
        &[
            "--format",
            "json",
            "-c",
            "SELECT FROM WHERE; SELECT * FROM nope; SELECT count(*) AS n FROM users",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Line: 1, Column"), "{err}");
    assert!(err.contains("nope"), "{err}");
    // The statements after a failure still run.
    assert_eq!(stdout(&out), "{\"n\":2}\n");

    // A failing multi-row INSERT changes nothing.
    let out = shell(
        dir.path(),
        &[
            "-c",
            r#"INSERT INTO users VALUES ('{"_id":"u3"}'), ('{"_id":"u1"}')"#,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("u1"), "{}", stderr(&out));
    let out = shell(
        dir.path(),
        &["--format", "json", "-c", "SELECT count(*) AS n FROM users"],
        None,
    );
    assert_eq!(stdout(&out), "{\"n\":2}\n");
}

#[test]
fn import_reports_loaded_and_failed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.jsonl");
    let mut lines = String::new();
    for i in 0..2500 {
        lines.push_str(&format!("{{\"_id\":\"p{i}\",\"n\":{i}}}\n"));
    }
    lines.push_str("{not json}\n[1,2]\n{\"_id\":\"p7\"}\n\n{\"_id\":\"last\"}\n");
    std::fs::write(&file, lines).unwrap();
    let script = format!(
        "CREATE COLLECTION people;\n\\import {} INTO people\nSELECT count(*) AS n FROM people;\n\\d people\n",
        file.display()
    );
    let out = shell(dir.path().join("db").as_path(), &[], Some(&script));
    assert!(!out.status.success(), "failed lines make the run fail");
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(
        text.contains("Loaded 2501 documents into people; 3 lines failed."),
        "{text}"
    );
    assert!(
        err.contains("line 2501:") && err.contains("invalid JSON"),
        "{err}"
    );
    assert!(
        err.contains("line 2502:") && err.contains("object"),
        "{err}"
    );
    assert!(
        err.contains("line 2503:") && err.contains("duplicate _id \"p7\""),
        "{err}"
    );
    assert!(text.contains("2501"), "{text}");
    assert!(
        text.contains("Collection \"people\": 2501 documents"),
        "{text}"
    );
}

#[test]
fn backslash_commands() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "{SETUP}\n\\timing\nSELECT 1 AS one FROM users LIMIT 1;\n\\d\n\\help\n\\nonsense\n\\q\nSELECT * FROM users;"
    );
    let out = shell(dir.path(), &[], Some(&script));
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(text.contains("Timing is on."), "{text}");
    assert!(err.contains("Time: "), "{err}");
    assert!(text.contains("users"), "{text}");
    assert!(text.contains("\\import FILE INTO COLL"), "{text}");
    assert!(err.contains("unknown command"), "{err}");
    // \q stops before the last statement: no document table printed.
    assert!(!text.contains("Bob, Jr."), "{text}");
    assert!(!out.status.success());
}

/// The dialect examples of the README run as written.
#[test]
fn readme_sql_examples_run() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```sql\n").expect("a sql block") + "```sql\n".len();
    let end = start + readme[start..].find("```").expect("its end");
    let dir = tempfile::tempdir().unwrap();
    let out = shell(dir.path(), &["--format", "json"], Some(&readme[start..end]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#""n":"#), "{}", stdout(&out));
}

/// Item 1 of the shell's contract: through a pipe, each statement's result
/// comes back before the next statement is written (as with psql).
#[test]
fn a_program_drives_the_shell_through_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let mut shell = Driven::start(dir.path(), &["--format", "json"]);
    shell.send("CREATE COLLECTION c;\n");
    assert_eq!(shell.line(), r#"{"affected":0}"#);
    shell.send("INSERT INTO c VALUES ('{\"_id\":\"a\",\"n\":1}');\n");
    assert_eq!(shell.line(), r#"{"affected":1}"#);
    // Half a statement: nothing runs until its ';'.
    shell.send("SELECT n, _id\n");
    shell.quiet();
    shell.send("  FROM c;\n");
    assert_eq!(shell.line(), r#"{"n":1,"_id":"a"}"#);
    // An error is answered too, and the shell reads on.
    shell.send("SELECT * FROM nope;\n");
    assert!(shell.err_until("error").contains("nope"));
    shell.send("SELECT count(*) AS n FROM c;\n");
    assert_eq!(shell.line(), r#"{"n":1}"#);
    assert!(!shell.close().success(), "one statement failed");
}

#[test]
fn errors_name_the_statement_and_its_place_in_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        "CREATE COLLECTION c;\nSELECT * FROM c;\n\n  SELECT *\n  FROM WHERE;\nSELECT * FROM nope;";
    for (args, stdin) in [(vec!["-c", script], None), (vec![], Some(script))] {
        let out = shell(dir.path(), &args, stdin);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("statement 3 (line 4, column 3): syntax error:")
                && err.contains("at Line: 5, Column: 8"),
            "{err}"
        );
        assert!(
            err.contains("statement 4 (line 6, column 1):") && err.contains("\"nope\""),
            "{err}"
        );
        // The statements after an error run: the collection exists for the second round.
        let _ = shell(dir.path(), &["-c", "DROP COLLECTION c"], None);
    }
}

/// With json and csv, stdout holds data only; informational lines go to stderr.
#[test]
fn json_and_csv_stdout_holds_data_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.jsonl");
    std::fs::write(
        &file,
        "{\"_id\":\"a\",\"x\":null,\"s\":\"\",\"n\":1}\n{\"_id\":\"b\",\"s\":\"q\\\"uote\"}\n",
    )
    .unwrap();
    let data = dir.path().join("db");
    let script = format!(
        "\\timing\nCREATE COLLECTION t; \\import {} INTO t\n\\d t\n\\d\n\\help\nSELECT s, x, n, _id FROM t ORDER BY _id;",
        file.display()
    );
    let out = shell(&data, &["--format", "json"], Some(&script));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in text.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line:?}"
        );
    }
    assert!(
        text.ends_with(
            "{\"s\":\"\",\"x\":null,\"n\":1,\"_id\":\"a\"}\n{\"s\":\"q\\\"uote\",\"_id\":\"b\"}\n"
        ),
        "{text}"
    );
    let err = stderr(&out);
    for info in [
        "Timing is on.",
        "Loaded 2 documents into t",
        "Collection \"t\": 2 documents",
        "\\import FILE",
    ] {
        assert!(err.contains(info), "{info:?} not on stderr: {err}");
    }

    let out = shell(
        &data,
        &["--format", "csv"],
        Some("\\timing\nSELECT s, x, n, _id FROM t ORDER BY _id;\n\\d t"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "s,x,n,_id\n\"\",,1,a\n\"q\"\"uote\",,,b\nname,fields,unique,multikey\n"
    );
    assert!(stderr(&out).contains("Timing is on."));
}

#[test]
fn backslash_commands_after_a_semicolon_and_in_c_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let out = shell(
        dir.path(),
        &[
            "-c",
            "CREATE COLLECTION c; \\d c\nINSERT INTO c VALUES ('{\"_id\":\"a\"}'); \\d",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Collection \"c\": 0 documents"), "{text}");
    assert!(text.contains("1 affected"), "{text}");
    assert!(text.contains("│ c "), "the \\d table: {text}");
}

/// A statement left without ';' at the end of input runs (or its error is
/// reported); it is never dropped.
#[test]
fn a_statement_left_unterminated_at_eof_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = shell(
        dir.path(),
        &["--format", "json"],
        Some("CREATE COLLECTION c;\nINSERT INTO c VALUES ('{\"_id\":\"a\"}')\n  \n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"affected\":0}\n{\"affected\":1}\n");
    let out = shell(dir.path(), &[], Some("SELECT 'never closed FROM c;\n"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("statement 1 (line 1, column 1)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_data_folder_in_use_or_foreign_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let mut holder = Driven::start(&data, &["--format", "json"]);
    holder.send("CREATE COLLECTION c;\n");
    assert_eq!(holder.line(), r#"{"affected":0}"#);
    let out = shell(&data, &["-c", "SHOW COLLECTIONS"], None);
    assert!(!out.status.success());
    let expected = format!(
        "data folder {} is in use by another stratosdb process (pid {})",
        data.display(),
        holder.pid()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(holder.close().success());
    // Free again once the holder is gone.
    assert!(
        shell(&data, &["-c", "SHOW COLLECTIONS"], None)
            .status
            .success()
    );

    let foreign = dir.path().join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("cat.jpg"), "meow").unwrap();
    let out = shell(&foreign, &["-c", "SHOW COLLECTIONS"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a stratosdb data folder"),
        "{}",
        stderr(&out)
    );
    let names: Vec<_> = std::fs::read_dir(&foreign)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cat.jpg"], "the folder is left as it was");
}

#[test]
fn reimport_summarises_duplicates_and_on_conflict_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let file = dir.path().join("p.jsonl");
    let write = |n: usize, v: &str| {
        let lines: String = (0..n)
            .map(|i| format!("{{\"_id\":\"p{i}\",\"v\":\"{v}\"}}\n"))
            .collect();
        std::fs::write(&file, lines).unwrap();
    };
    write(300, "old");
    let f = file.display();
    let out = shell(
        &data,
        &[],
        Some(&format!("CREATE COLLECTION p;\n\\import {f} INTO p")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Loaded 300 documents into p; 0 lines failed."));

    let out = shell(&data, &[], Some(&format!("\\import {f} INTO p")));
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("Loaded 0 documents into p; 300 lines failed."),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("300 lines have an _id already in p"), "{err}");
    let examples = err.lines().filter(|l| l.contains("duplicate _id")).count();
    assert!(
        (1..=5).contains(&examples),
        "a few examples, not one per line: {err}"
    );

    write(350, "new");
    let out = shell(
        &data,
        &["--format", "json"],
        Some(&format!(
            "\\import {f} INTO p ON CONFLICT SKIP\nSELECT v, count(*) AS n FROM p GROUP BY v ORDER BY v;"
        )),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Loaded 50 documents into p; 0 lines failed; 300 lines skipped"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "{\"v\":\"new\",\"n\":50}\n{\"v\":\"old\",\"n\":300}\n"
    );

    let out = shell(
        &data,
        &["--format", "json"],
        Some(&format!(
            "\\import {f} into p on conflict replace\nSELECT v, count(*) AS n FROM p GROUP BY v;"
        )),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Loaded 350 documents into p; 0 lines failed."),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "{\"v\":\"new\",\"n\":350}\n");

    for bad in [
        "\\import",
        &format!("\\import {f}"),
        &format!("\\import {f} p"),
        &format!("\\import {f} INTO p ON CONFLICT"),
    ] {
        let out = shell(&data, &[], Some(bad));
        assert!(!out.status.success(), "{bad}");
        assert!(
            stderr(&out)
                .contains("usage: \\import FILE INTO COLLECTION [ON CONFLICT SKIP|REPLACE]"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

/// Ctrl-C (SIGINT) during \import: the import stops after the batch under
/// way, says how many documents it loaded, and the shell reads on.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_an_import_and_the_shell_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let file = dir.path().join("big.jsonl");
    let total = 200_000;
    let lines: String = (0..total)
        .map(|i| format!("{{\"_id\":\"d{i:06}\",\"n\":{i}}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let mut shell = Driven::start(&data, &["--format", "json"]);
    shell.send("CREATE COLLECTION c;\n");
    assert_eq!(shell.line(), r#"{"affected":0}"#);
    shell.send(&format!("\\import {} INTO c\n", file.display()));
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &shell.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let message = shell.err_until("Import interrupted");
    let loaded: u64 = message
        .split("Loaded ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {message:?}"));
    assert!(loaded < total, "{message}");
    eprintln!("{message}");
    shell.err_until("To resume: \\import");
    // Still open: what was loaded is there, and nothing else.
    shell.send("SELECT count(*) AS n FROM c;\n");
    assert_eq!(shell.line(), format!("{{\"n\":{loaded}}}"));
    // Outside an import, Ctrl-C ends the shell as by default.
    let killed = Command::new("kill")
        .args(["-INT", &shell.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = shell.child.wait();
    assert!(!status.success(), "{status:?}");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(2), "{status:?}");
    }
}

/// The import's own memory does not grow with the file: a 100 MB file of
/// lines that all fail (nothing is written, so sled's page cache stays out
/// of the measure) leaves the shell's peak RSS (VmHWM) far below the file's
/// size, where holding the file, or one report line per failed line, would not.
#[cfg(target_os = "linux")]
#[test]
fn import_memory_does_not_grow_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let file = dir.path().join("bad.jsonl");
    let line = format!("{{\"_id\":\"x\",\"pad\":\"{}\n", "y".repeat(4000));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for _ in 0..25_000 {
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    let peak = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM");
        kb.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let mut shell = Driven::start(&data, &["--format", "json", "--cache-mb", "16"]);
    shell.send("CREATE COLLECTION c;\n");
    assert_eq!(shell.line(), r#"{"affected":0}"#);
    let before = peak(shell.pid());
    shell.send(&format!(
        "\\import {} INTO c\nSELECT count(*) AS n FROM c;\n",
        file.display()
    ));
    assert_eq!(shell.line(), r#"{"n":0}"#);
    shell.err_until("Loaded 0 documents into c; 25000 lines failed.");
    let after = peak(shell.pid());
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 100_000_000);
    eprintln!(
        "peak RSS {} MB before, {} MB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after - before < 32 << 20,
        "peak RSS grew by {} MB importing a {} MB file",
        (after - before) >> 20,
        size >> 20
    );
    shell.close();
}

#[test]
fn names_in_any_script_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"CREATE COLLECTION café;
INSERT INTO café VALUES ('{"_id":"1","prix":3}');
CREATE INDEX par_prix ON café (prix);
CREATE INDEX "日本" ON "café" (prix);
SELECT prix FROM "café" WHERE prix = 3;
SHOW COLLECTIONS;
SHOW INDEXES FROM café;"#;
    let out = shell(dir.path(), &["--format", "json", "-c", script], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(r#"{"prix":3}"#), "{text}");
    assert!(
        text.contains(r#"{"collection":"café","documents":1,"indexes":2}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""name":"日本""#) && text.contains(r#""name":"par_prix""#),
        "{text}"
    );
    // Reopened, and through \d.
    let out = shell(dir.path(), &["-c", "\\d café"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Collection \"café\": 1 documents") && stdout(&out).contains("日本"),
        "{}",
        stdout(&out)
    );
    let out = shell(dir.path(), &["-c", "CREATE COLLECTION 9lives"], None);
    assert!(!out.status.success());
}

/// `stratosdb audit --proofs FILE --ledger DIR`: whether it passed, and its output.
fn audit_proofs(file: &Path, ledger: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .arg("audit")
        .arg("--proofs")
        .arg(file)
        .arg("--ledger")
        .arg(ledger)
        .output()
        .expect("the binary runs");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    (out.status.success(), text)
}

/// The embedded shell with `\proof on`: SELECTs come with proofs verified
/// against the folder's own ledger, anchored for documents unchanged since
/// the last epoch (its anchor mark), unanchored for a document written
/// since; `\save FILE` writes the reply that `audit --proofs FILE` passes,
/// and fails once a proven document in the file is altered.
#[test]
fn embedded_proofs_are_verified_saved_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let ledger = data.join("ledger");
    // The first session's exit anchors epoch 1 (and marks the shard).
    let out = shell(&data, &["--anchor-interval", "0"], Some(SETUP));
    assert!(out.status.success(), "{}", stderr(&out));

    let saved = dir.path().join("proofs.json");
    let fresh = dir.path().join("fresh.json");
    let script = format!(
        "\\proof on\n\
         SELECT name FROM users WHERE _id IN ('u1', 'u2', 'zz') ORDER BY _id;\n\
         \\save {}\n\
         INSERT INTO users VALUES ('{{\"_id\":\"u3\",\"name\":\"Cy\"}}');\n\
         SELECT * FROM users WHERE _id = 'u3';\n\
         \\save {}\n\
         \\proof off\n\
         SELECT name FROM users WHERE _id = 'u1';\n",
        saved.display(),
        fresh.display()
    );
    let out = shell(
        &data,
        &["--anchor-interval", "0", "--format", "csv"],
        Some(&script),
    );
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{err}");
    assert!(text.contains("Ann,anchored (epoch 1)"), "{text}");
    assert!(text.contains("\"Bob, Jr.\",anchored (epoch 1)"), "{text}");
    assert!(text.contains("unanchored"), "{text}");
    // With proofs off, no proof column.
    assert!(text.lines().any(|l| l == "Ann"), "{text}");
    assert!(
        err.contains("saved the reply with proofs (2 rows)"),
        "{err}"
    );

    let (ok, report) = audit_proofs(&saved, &ledger);
    assert!(ok, "{report}");
    assert!(report.contains("document users/0 _id \"u1\""), "{report}");
    assert!(report.contains("anchored (epoch 1)"), "{report}");
    assert!(report.contains("absent users/0 _id \"zz\""), "{report}");
    let (ok, report) = audit_proofs(&fresh, &ledger);
    assert!(ok, "{report}");
    assert!(report.contains("unanchored"), "{report}");
    // A saved document altered (its row too, so that they still agree):
    // its proof no longer holds.
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains("\"Ann\""));
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, text.replace("\"Ann\"", "\"Eve\"")).unwrap();
    let (ok, report) = audit_proofs(&tampered, &ledger);
    assert!(!ok, "{report}");
    assert!(report.contains("FAILED  document"), "{report}");
    // And a row that is not its document's projection.
    let rows_only = dir.path().join("rows.json");
    let row = text.replacen("\"name\": \"Ann\"", "\"name\": \"Eve\"", 1);
    assert_ne!(row, text);
    std::fs::write(&rows_only, row).unwrap();
    let (ok, report) = audit_proofs(&rows_only, &ledger);
    assert!(!ok, "{report}");

    // Without a saved reply, \save says so.
    let out = shell(&data, &[], Some(&format!("\\save {}\n", saved.display())));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no reply with proofs to save"));
}
