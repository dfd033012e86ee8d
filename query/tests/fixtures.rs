//! The fixture suite: files of statements with what each must return, run
//! against a fresh database per file (GlueSQL's shared test-suite idea).
//!
//! # Format of `tests/fixtures/*.sql`
//!
//! - A statement is one or more lines, ended by a line whose text ends in `;`.
//! - Lines starting with `--` after a statement are its expectations:
//!   - `-- expect: [ {...}, ... ]` — the rows, exactly and in order, as JSON
//!     (types are compared strictly: `1` is not `1.0`);
//!   - `-- columns: ["a", "b"]` — the column list;
//!   - `-- affected: N` — documents written;
//!   - `-- error: text` — the statement must fail with a message containing `text`;
//!   - `-- contains: text` — the rows, as JSON text, contain `text` (for EXPLAIN);
//!   - any other `--` line is a comment.
//! - A statement with no expectation must succeed.
//!
//! The harness talks to a [`Target`]; the embedded database is one, and a
//! cluster client can be another, running the very same files.

use std::path::Path;

use stratosdb_query::{Database, StatementResult};

/// Something that runs statements: the embedded database, or a cluster.
pub trait Target {
    fn run(&self, sql: &str) -> Result<StatementResult, String>;
}

impl Target for Database {
    fn run(&self, sql: &str) -> Result<StatementResult, String> {
        self.execute_one(sql).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Default)]
struct Case {
    line: usize,
    sql: String,
    expect: Option<serde_json::Value>,
    columns: Option<serde_json::Value>,
    affected: Option<u64>,
    error: Option<String>,
    contains: Vec<String>,
}

fn parse_fixture(text: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    let mut current: Option<Case> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix("--") {
            let comment = comment.trim();
            let directive = ["expect:", "columns:", "affected:", "error:", "contains:"]
                .iter()
                .find_map(|d| comment.strip_prefix(d).map(|rest| (*d, rest.trim())));
            if let Some((d, rest)) = directive {
                let case = cases
                    .last_mut()
                    .ok_or_else(|| format!("line {}: {d} before any statement", n + 1))?;
                let json = |s: &str| {
                    serde_json::from_str::<serde_json::Value>(s)
                        .map_err(|e| format!("line {}: bad JSON: {e}", n + 1))
                };
                match d {
                    "expect:" => case.expect = Some(json(rest)?),
                    "columns:" => case.columns = Some(json(rest)?),
                    "affected:" => {
                        case.affected =
                            Some(rest.parse().map_err(|e| format!("line {}: {e}", n + 1))?)
                    }
                    "error:" => case.error = Some(rest.to_string()),
                    _ => case.contains.push(rest.to_string()),
                }
            }
            continue;
        }
        if trimmed.is_empty() && current.is_none() {
            continue;
        }
        let case = current.get_or_insert_with(|| Case {
            line: n + 1,
            ..Case::default()
        });
        case.sql.push_str(line);
        case.sql.push('\n');
        if trimmed.ends_with(';') {
            cases.extend(current.take());
        }
    }
    if let Some(case) = current {
        return Err(format!("line {}: statement without a final ';'", case.line));
    }
    Ok(cases)
}

/// Runs one fixture file against a target; returns the failures.
pub fn run_file(target: &dyn Target, path: &Path) -> Vec<String> {
    let name = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let cases = match parse_fixture(&text) {
        Ok(c) => c,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let mut failures = Vec::new();
    for case in cases {
        let at = format!("{name}:{}: {}", case.line, case.sql.trim());
        let result = target.run(&case.sql);
        match (&case.error, result) {
            (Some(want), Err(got)) => {
                if !got.contains(want.as_str()) {
                    failures.push(format!("{at}\n  error {got:?} does not contain {want:?}"));
                }
            }
            (Some(want), Ok(got)) => failures.push(format!(
                "{at}\n  expected an error with {want:?}, got {got:?}"
            )),
            (None, Err(got)) => failures.push(format!("{at}\n  failed: {got}")),
            (None, Ok(got)) => check(&case, &at, got, &mut failures),
        }
    }
    failures
}

fn check(case: &Case, at: &str, got: StatementResult, failures: &mut Vec<String>) {
    match got {
        StatementResult::Rows { columns, rows } => {
            let rows = serde_json::Value::Array(rows.iter().map(|r| r.to_json()).collect());
            if let Some(want) = &case.expect
                && *want != rows
            {
                failures.push(format!("{at}\n  expected {want}\n  got      {rows}"));
            }
            if let Some(want) = &case.columns {
                let got = serde_json::json!(columns);
                if *want != got {
                    failures.push(format!("{at}\n  expected columns {want}, got {got}"));
                }
            }
            let text = rows.to_string();
            for c in &case.contains {
                if !text.contains(c.as_str()) {
                    failures.push(format!("{at}\n  {text}\n  does not contain {c:?}"));
                }
            }
            if case.affected.is_some() {
                failures.push(format!("{at}\n  expected affected, got rows"));
            }
        }
        StatementResult::Affected(n) => {
            if let Some(want) = case.affected
                && want != n
            {
                failures.push(format!("{at}\n  expected {want} affected, got {n}"));
            }
            if case.expect.is_some() {
                failures.push(format!("{at}\n  expected rows, got affected {n}"));
            }
        }
        StatementResult::Message(m) => {
            if case.expect.is_some() || case.affected.is_some() {
                failures.push(format!(
                    "{at}\n  expected rows or affected, got message {m:?}"
                ));
            }
        }
    }
}

#[test]
fn fixtures_on_the_embedded_database() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "fixture files missing in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for file in &files {
        let mut db = Database::open_temporary().expect("database");
        db.set_durability(stratosdb_engine::Durability::Buffered);
        failures.extend(run_file(&db, file));
        count += 1;
    }
    assert!(
        failures.is_empty(),
        "{} failures in {count} files:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
