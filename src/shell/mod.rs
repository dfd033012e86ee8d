//! `stratosdb shell`: statements ending in `;` (they may span lines), and a few
//! backslash commands. Interactive on a terminal (rustyline, with history);
//! scriptable with `-c` or from standard input.

mod import;
mod output;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
pub use output::Format;
use output::Outcome;
use rustyline::error::ReadlineError;
use stratosdb_query::{Database, split_statements};

use crate::ShellArgs;

const HELP: &str = r#"Statements end with ';' and may span lines. For example:
  CREATE COLLECTION users;
  INSERT INTO users VALUES ('{"_id":"u1","name":"Ann","age":31}');
  CREATE INDEX by_age ON users (age);
  SELECT name, age FROM users WHERE age > 30 ORDER BY age DESC LIMIT 10;
  EXPLAIN SELECT * FROM users WHERE age = 31;
Commands:
  \d                      list collections
  \d COLLECTION           describe a collection: documents, indexes
  \import FILE INTO COLL  load a JSON Lines file
  \timing                 print the time each statement takes (on/off)
  \help                   this text
  \q                      quit"#;

pub fn run(args: ShellArgs) -> anyhow::Result<bool> {
    let db = Database::open(&args.data)
        .with_context(|| format!("cannot open the database in {}", args.data.display()))?;
    let mut session = Session {
        db,
        format: args.format,
        timing: false,
        ok: true,
        quit: false,
        interactive: false,
    };
    if let Some(text) = args.command {
        session.run_script(&text);
        return Ok(session.ok);
    }
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading statements from standard input")?;
        session.run_script(&text);
        return Ok(session.ok);
    }
    session.interactive = true;
    session.repl(&args.data)?;
    Ok(true)
}

struct Session {
    db: Database,
    format: Format,
    timing: bool,
    /// False once any statement has failed.
    ok: bool,
    quit: bool,
    interactive: bool,
}

impl Session {
    /// Runs a script: backslash commands on their own lines, statements ending
    /// in `;` (the last one may omit it).
    fn run_script(&mut self, text: &str) {
        let mut buffer = String::new();
        for line in text.lines() {
            if self.quit {
                return;
            }
            if is_blank(&buffer) && line.trim_start().starts_with('\\') {
                self.backslash(line.trim());
                continue;
            }
            buffer.push_str(line);
            buffer.push('\n');
            let (statements, rest) = complete_statements(&buffer);
            for stmt in statements {
                self.statement(&stmt);
            }
            buffer = rest;
        }
        if !is_blank(&buffer) && !self.quit {
            self.statement(buffer.trim());
        }
    }

    fn repl(&mut self, data: &std::path::Path) -> anyhow::Result<()> {
        let mut editor = rustyline::DefaultEditor::new()?;
        let history = history_file(data);
        let _ = editor.load_history(&history);
        println!(
            "stratosdb shell on {} — \\help for help, \\q to quit",
            data.display()
        );
        let mut buffer = String::new();
        while !self.quit {
            let prompt = if buffer.is_empty() {
                "stratosdb> "
            } else {
                "      ...> "
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    if buffer.is_empty() && line.trim_start().starts_with('\\') {
                        let _ = editor.add_history_entry(line.as_str());
                        self.backslash(line.trim());
                        continue;
                    }
                    buffer.push_str(&line);
                    buffer.push('\n');
                    let (statements, rest) = complete_statements(&buffer);
                    if !statements.is_empty() {
                        let entry = buffer[..buffer.len() - rest.len()].trim().to_string();
                        let _ = editor.add_history_entry(entry.replace('\n', " "));
                    }
                    for stmt in statements {
                        self.statement(&stmt);
                    }
                    buffer = if is_blank(&rest) { String::new() } else { rest };
                }
                Err(ReadlineError::Interrupted) => buffer.clear(),
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let _ = editor.save_history(&history);
        Ok(())
    }

    fn statement(&mut self, sql: &str) {
        let started = Instant::now();
        let result = execute(&self.db, sql);
        let elapsed = started.elapsed();
        let mut out = std::io::stdout().lock();
        match result {
            Ok(outcomes) => {
                for outcome in &outcomes {
                    if let Err(e) = output::print(&mut out, self.format, outcome) {
                        eprintln!("error: writing output: {e}");
                        self.ok = false;
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                self.ok = false;
            }
        }
        let _ = out.flush();
        if self.timing {
            eprintln!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
        }
    }

    fn backslash(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        match (command, rest.as_slice()) {
            ("\\q" | "\\quit", _) => self.quit = true,
            ("\\help" | "\\h" | "\\?", _) => println!("{HELP}"),
            ("\\timing", _) => {
                self.timing = !self.timing;
                println!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            ("\\d", []) => self.statement("SHOW COLLECTIONS"),
            ("\\d", [name]) => self.describe(name),
            ("\\import", [file, into, collection]) if into.eq_ignore_ascii_case("into") => {
                self.import(file, collection)
            }
            _ => {
                eprintln!("error: unknown command {line:?}; \\help lists the commands");
                self.ok = false;
            }
        }
    }

    fn describe(&mut self, name: &str) {
        match self.db.shard().collection(name) {
            Ok(info) => {
                println!("Collection {:?}: {} documents", info.name, info.count);
                self.statement(&format!("SHOW INDEXES FROM {name}"));
            }
            Err(e) => {
                eprintln!("error: {e}");
                self.ok = false;
            }
        }
    }

    fn import(&mut self, file: &str, collection: &str) {
        let path = PathBuf::from(file);
        match import::import(self.db.shard(), &path, collection, self.interactive) {
            Ok(report) => {
                println!(
                    "Loaded {} documents into {collection}; {} lines failed.",
                    report.loaded,
                    report.failed.len()
                );
                for (line, error) in &report.failed {
                    eprintln!("line {line}: {error}");
                }
                if !report.failed.is_empty() {
                    self.ok = false;
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                self.ok = false;
            }
        }
    }
}

/// The statements of `buffer` that end with `;`, and the unfinished rest.
fn complete_statements(buffer: &str) -> (Vec<String>, String) {
    let mut done = Vec::new();
    let mut rest_start = 0;
    for part in split_statements(buffer) {
        let end = part.offset + part.text.len();
        if buffer[end..].starts_with(';') {
            done.push(part.text.trim().to_string());
            rest_start = end + 1;
        }
    }
    (done, buffer[rest_start..].to_string())
}

/// Nothing but whitespace and comments.
fn is_blank(text: &str) -> bool {
    split_statements(text).is_empty()
}

/// The history lives beside the user's other shell histories.
fn history_file(data: &std::path::Path) -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".stratosdb_history"),
        None => data.join(".stratosdb_history"),
    }
}

/// Runs one statement through the query layer.
fn execute(db: &Database, sql: &str) -> Result<Vec<Outcome>, stratosdb_query::QueryError> {
    let results = db.execute(sql)?;
    Ok(results.into_iter().map(to_outcome).collect())
}

fn to_outcome(result: stratosdb_query::StatementResult) -> Outcome {
    use stratosdb_query::StatementResult as R;
    match result {
        R::Rows { columns, rows } => Outcome::Rows { columns, rows },
        R::Affected(n) => Outcome::Affected(n),
        R::Message(m) => Outcome::Message(m),
    }
}
