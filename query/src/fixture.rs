//! The fixture suite's harness: files of statements with what each must
//! return (GlueSQL's shared test-suite idea), run against anything that runs
//! statements — the embedded [`Database`], a [`ShardedDatabase`] over any
//! store, or a cluster client — so they all answer the very same files.
//!
//! # Format of a fixture file (`query/tests/fixtures/*.sql`)
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
//! - A file is run against a fresh target (no collections).
//!
//! Files under `query/tests/fixtures/` hold for any number of shards (a file
//! that creates a UNIQUE index declares its collection `WITH (shards = 1)`);
//! files under `query/tests/fixtures/sharded/` expect collections of several
//! shards by default (the refusal of UNIQUE indexes there) and are run only
//! against multi-shard stores.
//!
//! ```
//! use stratosdb_query::Database;
//! use stratosdb_query::fixture::run_fixture_text;
//! let db = Database::open_temporary().unwrap();
//! let cases = run_fixture_text("example", "CREATE COLLECTION c;\nSELECT * FROM c;\n-- expect: []\n", &db).unwrap();
//! assert_eq!(cases, 2);
//! ```

use std::path::Path;

use crate::{Database, ShardedDatabase, ShardedStore, StatementResult};

/// Something that runs statements: the embedded database, a sharded one, or a cluster.
pub trait FixtureTarget {
    /// Runs one statement; an error as its message.
    fn run(&self, sql: &str) -> Result<StatementResult, String>;
}

impl FixtureTarget for Database {
    fn run(&self, sql: &str) -> Result<StatementResult, String> {
        self.execute_one(sql).map_err(|e| e.to_string())
    }
}

impl<S: ShardedStore> FixtureTarget for ShardedDatabase<S> {
    fn run(&self, sql: &str) -> Result<StatementResult, String> {
        self.execute_one(sql, crate::ReadConsistency::Linearizable)
            .map(|e| e.result)
            .map_err(|e| e.to_string())
    }
}

/// Runs one fixture file; the number of cases, or every failure (one per
/// paragraph, with the file, line and statement).
pub fn run_fixture_file(path: &Path, target: &dyn FixtureTarget) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    run_fixture_text(&path.display().to_string(), &text, target)
}

/// Runs fixture text (`name` prefixes the failures).
pub fn run_fixture_text(
    name: &str,
    text: &str,
    target: &dyn FixtureTarget,
) -> Result<usize, String> {
    let cases = parse_fixture(text).map_err(|e| format!("{name}: {e}"))?;
    let count = cases.len();
    let failures = run_cases(name, cases, target);
    if failures.is_empty() {
        Ok(count)
    } else {
        Err(failures.join("\n\n"))
    }
}

/// The `.sql` files of a folder, sorted by name (not recursive).
pub fn fixture_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    Ok(files)
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

/// Runs parsed cases in order; returns the failures.
fn run_cases(name: &str, cases: Vec<Case>, target: &dyn FixtureTarget) -> Vec<String> {
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
