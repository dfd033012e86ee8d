//! The shell's scriptable contract, run as a user would: the real binary on a
//! real data folder, with `-c` and with standard input, in every format.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn shell(data: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratosdb"));
    cmd.arg("shell").arg("--data").arg(data).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("the binary exits")
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
