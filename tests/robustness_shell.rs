//! No input crashes `stratosdb shell`: hostile scripts through `-c` and
//! through standard input (token soups, bytes that are not UTF-8, NUL bytes,
//! a 10 MB line, unterminated strings and comments, deeply nested JSON) end
//! in a normal exit — 0, 1 (a statement failed) or 2 (the shell could not
//! run: unreadable input, bad arguments) — never a signal, a panic (101) or an
//! abort (134); and a failure says why on stderr. Every child runs under a
//! deadline and is killed past it, so no test can hang.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEADLINE: Duration = Duration::from_secs(90);

struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `stratosdb shell --data DATA ARGS` with `stdin` piped in; kills it
/// and fails the test if it outlives the deadline.
fn shell(data: &Path, args: &[&OsStr], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .arg("shell")
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Feed and drain on threads, so that a child that writes a lot while we
    // write (or stops reading) cannot block us.
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        // A child that exits early closes the pipe; that is not our failure.
        let _ = input.write_all(&stdin);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the shell ran past {DEADLINE:?} on args {args:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    feeder.join().expect("feeder");
    Run {
        status,
        stdout: out.join().expect("stdout drain"),
        stderr: err.join().expect("stderr drain"),
    }
}

/// A data folder with collection `t`: documents and two indexes.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    let run = shell(
        dir.path(),
        &[
            OsStr::new("-c"),
            OsStr::new(
                r#"CREATE COLLECTION t;
                CREATE INDEX by_a ON t (a);
                CREATE UNIQUE INDEX by_u ON t (u);
                INSERT INTO t VALUES ('{"_id":"d1","a":1,"u":"x","b":{"c":[1,2]}}'),
                  ('{"_id":"d2","a":"s","n":null}'), ('{"_id":"d3","a":[1,{"k":2}]}')"#,
            ),
        ],
        b"",
    );
    assert!(run.status.success(), "setup: {}", run.stderr());
    dir
}

/// The contract: a normal exit, and a reason on stderr when it failed (`error:
/// ...` for a statement, `line N: ...` for an imported line).
fn assert_normal_exit(run: &Run, what: &str) {
    assert_eq!(
        run.status.signal(),
        None,
        "{what}: killed by a signal; stderr: {}",
        tail(&run.stderr())
    );
    let code = run.status.code().expect("an exit code");
    assert!(
        matches!(code, 0..=2),
        "{what}: exit status {code} (101 is a panic, 134 an abort); stderr: {}",
        tail(&run.stderr())
    );
    if code != 0 {
        assert!(
            !run.stderr().trim().is_empty(),
            "{what}: failed with status {code} and nothing on stderr; stdout: {}",
            tail(&String::from_utf8_lossy(&run.stdout))
        );
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(2000);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Runs a script both ways: as `-c` (when it can be an argument) and on stdin.
fn both_ways(dir: &Path, script: &[u8], what: &str) -> (Option<Run>, Run) {
    // An argument cannot hold NUL, and Linux caps one argument at 128 KiB.
    let by_arg = (!script.contains(&0) && script.len() < 100_000).then(|| {
        let run = shell(dir, &[OsStr::new("-c"), OsStr::from_bytes(script)], b"");
        assert_normal_exit(&run, &format!("{what} (-c)"));
        run
    });
    let by_stdin = shell(dir, &[], script);
    assert_normal_exit(&by_stdin, &format!("{what} (stdin)"));
    (by_arg, by_stdin)
}

const SOUP: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "DROP",
    "COLLECTION",
    "INDEX",
    "UNIQUE",
    "ON",
    "SHOW",
    "COLLECTIONS",
    "INDEXES",
    "EXPLAIN",
    "ORDER",
    "GROUP",
    "BY",
    "LIMIT",
    "OFFSET",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "IN",
    "LIKE",
    "BETWEEN",
    "COUNT(*)",
    "SUM(a)",
    "t",
    "a",
    "b.c",
    "_id",
    "tags[0]",
    "\"q",
    "`",
    "1",
    "-1",
    "1.5",
    "1e999",
    "99999999999999999999",
    "'s'",
    "'",
    "''",
    "'{\"a\":1}'",
    "'{\"a\":1,\"a\":2}'",
    "'{\"a\":NaN}'",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    ".",
    "*",
    "+",
    "=",
    "<>",
    "<=",
    "--",
    "/*",
    "*/",
    "\\d",
    "\\q",
    "\\import",
    "\\timing",
    "\n",
    "é",
    "😀",
];

#[test]
fn token_soups_exit_normally() {
    let dir = data_dir();
    let mut rng = StdRng::seed_from_u64(6);
    for n in 0..12 {
        let mut script = String::new();
        for _ in 0..rng.random_range(1..60) {
            script.push_str(SOUP[rng.random_range(0..SOUP.len())]);
            if rng.random_bool(0.8) {
                script.push(' ');
            }
        }
        // `\q` would end the script early; keep most soups running to the end.
        if n % 3 != 0 {
            script = script.replace("\\q", "\\d");
        }
        both_ways(dir.path(), script.as_bytes(), &format!("soup {script:?}"));
    }
    // The collection is still there and still answers.
    let run = shell(
        dir.path(),
        &[OsStr::new("-c"), OsStr::new("SELECT COUNT(*) AS n FROM t")],
        b"",
    );
    assert!(run.status.success(), "{}", run.stderr());
}

#[test]
fn bytes_that_are_not_utf8() {
    let dir = data_dir();
    let script = b"SELECT * FROM t;\nSELECT '\xff\xfe' FROM t;\n\xc3\x28 INSERT INTO t VALUES ('{\"a\":\"\xed\xa0\x80\"}');";
    let run = shell(dir.path(), &[], script);
    assert_normal_exit(&run, "invalid UTF-8 on stdin");
    assert!(run.stderr().contains("UTF-8"), "{}", run.stderr());
    // As an argument, too.
    let run = shell(
        dir.path(),
        &[OsStr::new("-c"), OsStr::from_bytes(b"SELECT '\xff' FROM t")],
        b"",
    );
    assert_normal_exit(&run, "invalid UTF-8 in -c");
    assert!(!run.status.success());
}

#[test]
fn nul_bytes() {
    let dir = data_dir();
    let script = b"SELECT\0* FROM t;\0\0\nINSERT INTO t VALUES ('{\"_id\":\"z\",\"a\":\"\0\"}');\n\0;SELECT _id FROM t WHERE a = '\0';";
    let (_, run) = both_ways(dir.path(), script, "NUL bytes");
    assert!(
        !run.status.success(),
        "a statement with a raw NUL is refused"
    );
}

#[test]
fn a_ten_megabyte_line() {
    let dir = data_dir();
    let big = "x".repeat(10 << 20);
    let json = [OsStr::new("--format"), OsStr::new("json")];
    for script in [
        // A document far over the size limit.
        format!("INSERT INTO t VALUES ('{{\"_id\":\"big\",\"s\":\"{big}\"}}');"),
        // A string literal, an identifier, a comment, all on one line.
        format!("SELECT '{big}' AS s FROM t LIMIT 1;"),
        format!("SELECT {big} FROM t;"),
        format!("SELECT * FROM t; -- {big}"),
        // Parentheses by the million: sqlparser's recursion limit.
        format!("SELECT * FROM t WHERE {}", "(".repeat(10 << 20)),
    ] {
        // JSON output: the table format is another story (see below).
        let run = shell(dir.path(), &json, script.as_bytes());
        assert_normal_exit(&run, &format!("10 MB line {:.40}", script));
    }
    // Nothing of the oversized document was stored.
    let run = shell(
        dir.path(),
        &[
            OsStr::new("--format"),
            OsStr::new("json"),
            OsStr::new("-c"),
            OsStr::new("SELECT COUNT(*) AS n FROM t"),
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "{\"n\":3}\n");
}

#[test]
fn unterminated_strings_comments_and_identifiers() {
    let dir = data_dir();
    for script in [
        "SELECT 'abc",
        "SELECT * FROM t WHERE a = 'x;\nSELECT 1",
        "SELECT /* never closed",
        "SELECT * FROM t /* ; */ WHERE /*",
        "SELECT \"id FROM t",
        "SELECT `x FROM t",
        "INSERT INTO t VALUES ('{\"a\":1",
        "INSERT INTO t VALUES ('{\"a\":\"",
        "INSERT INTO t VALUES ('{\"a\":\"\\",
        "CREATE COLLECTION \"",
        "SHOW INDEXES FROM `",
        "'",
        "\"",
        "--",
        "/*",
        "\\",
        "\\import",
        "\\import /nonexistent/file INTO t",
        "\\d \"",
    ] {
        let (arg, stdin) = both_ways(dir.path(), script.as_bytes(), script);
        if !matches!(script, "--" | "/*") {
            assert!(!stdin.status.success(), "{script:?} is not a statement");
            assert!(arg.is_none_or(|r| !r.status.success()), "{script:?}");
        }
    }
}

#[test]
fn deeply_nested_json_in_insert() {
    let dir = data_dir();
    for depth in [101, 50_000, 100_000] {
        for doc in [
            format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth)),
            format!("{{\"a\":{}", "[".repeat(depth)),
            format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
        ] {
            let script = format!("INSERT INTO t VALUES ('{doc}')");
            let (_, run) = both_ways(dir.path(), script.as_bytes(), &format!("depth {depth}"));
            assert!(!run.status.success());
            assert!(
                run.stderr().contains("nested deeper than 100 levels"),
                "{}",
                tail(&run.stderr())
            );
        }
    }
}

#[test]
fn hostile_import_file() {
    let dir = data_dir();
    let file = dir.path().join("hostile.jsonl");
    let mut lines: Vec<u8> = Vec::new();
    for line in [
        format!(
            "{{\"_id\":\"i1\",\"a\":{}1{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        r#"{"_id":"i2","a":1,"a":2}"#.to_string(),
        r#"{"_id":"i3","a":NaN}"#.to_string(),
        r#"{"_id":"i4","a":"\ud800"}"#.to_string(),
        "{\"_id\":\"i5\",\"a\":\"\0\"}".to_string(),
        r#"{"_id":"ok","a":2}"#.to_string(),
    ] {
        lines.extend_from_slice(line.as_bytes());
        lines.push(b'\n');
    }
    std::fs::write(&file, &lines).expect("write the file");
    let script = format!("\\import {} INTO t\n", file.display());
    let run = shell(dir.path(), &[], script.as_bytes());
    assert_normal_exit(&run, "hostile import");
    let err = run.stderr();
    for expect in [
        "line 1: invalid JSON: nested deeper than 100 levels",
        "line 2: invalid JSON: duplicate key \"a\" in the top-level object",
        "line 3: invalid JSON: NaN is not a JSON value",
        "line 4: invalid JSON: lone surrogate \\ud800",
        "line 5: invalid JSON: control character U+0000",
    ] {
        assert!(err.contains(expect), "missing {expect:?} in {}", tail(&err));
    }
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("Loaded 1 documents into t; 5 lines failed."),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );

    // A file that is not UTF-8 ends the import with a reason, not a crash.
    std::fs::write(&file, b"{\"_id\":\"u1\"}\n{\"a\":\"\xff\"}\n").expect("write the file");
    let run = shell(dir.path(), &[], script.as_bytes());
    assert_normal_exit(&run, "import of bytes that are not UTF-8");
    assert!(!run.status.success());
}

/// `SELECT 1+1+…+1` with 10,000 terms: the left-deep sum is translated
/// recursively and overflows the main thread's stack (SIGSEGV / abort) —
/// `translate::expr_inner` (query/src/translate.rs, the BinaryOp arm) calls
/// itself once per term. The same holds for 10,000 AND or OR terms.
#[test]
fn ten_thousand_term_expressions() {
    let dir = data_dir();
    let terms = |sep: &str, term: &str| vec![term; 10_000].join(sep);
    for script in [
        format!("SELECT {} AS s FROM t", terms("+", "1")),
        format!("SELECT _id FROM t WHERE {}", terms(" AND ", "a <> 1")),
        format!("SELECT _id FROM t WHERE {}", terms(" OR ", "a = 1")),
    ] {
        let run = shell(dir.path(), &[], script.as_bytes());
        assert_normal_exit(&run, &format!("{:.40}", script));
    }
}

/// A 10 MB column name printed as a table: `SELECT xxx…x FROM t` (the
/// identifier 10 MB long) takes about 100 s in a debug build (1 MB: 1 s), so
/// the time grows with the square of the width. The rendering in
/// src/shell/output.rs (`print_table`, comfy-table with
/// `ContentArrangement::Dynamic`) wraps the header; with `--format json` the
/// same statement takes 2 s.
#[test]
fn a_ten_megabyte_column_name_as_a_table() {
    let dir = data_dir();
    let script = format!("SELECT {} FROM t;", "x".repeat(10 << 20));
    let started = Instant::now();
    let run = shell(dir.path(), &[], script.as_bytes());
    assert_normal_exit(&run, "10 MB column name, table format");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
