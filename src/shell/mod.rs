//! `stratosdb shell`: statements ending in `;` (they may span lines), and a few
//! backslash commands. Interactive on a terminal (rustyline, with history);
//! scriptable with `-c` or from standard input, where each statement runs as
//! soon as its `;` is read, so that a program can drive the shell through a pipe.

pub(crate) mod anchors;
mod import;
mod input;
mod interrupt;
mod output;
mod target;

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use input::{Assembler, Item, Statement};
pub use output::Format;
pub use output::print as print_result;
use rustyline::error::ReadlineError;
use stratosdb_query::StatementResult;
use stratosdb_query::parse::parse_statement_at;
use target::{Embedded, Remote, Target};

use crate::ShellArgs;

const HELP: &str = r#"Statements end with ';' and may span lines. For example:
  CREATE COLLECTION users;
  INSERT INTO users VALUES ('{"_id":"u1","name":"Ann","age":31}');
  CREATE INDEX by_age ON users (age);
  SELECT name, age FROM users WHERE age > 30 ORDER BY age DESC LIMIT 10;
  EXPLAIN SELECT * FROM users WHERE age = 31;
Commands (a command takes the rest of its line; it may follow a ';'):
  \d                      list collections
  \d COLLECTION           describe a collection: documents, indexes
  \import FILE INTO COLL [ON CONFLICT SKIP|REPLACE]
                          load a JSON Lines file (Ctrl-C stops it)
  \anchors [N]             the newest N epochs and their chain anchors
  \proof on|off           SELECTs come with proofs, verified (against the folder's ledger
                          when embedded); a proof column per row
  \save FILE              write the last reply with proofs to FILE, for
                          stratosdb audit --proofs FILE
  \timing                 print the time each statement takes (on/off)
  \help                   this text
  \q                      quit"#;

pub fn run(args: ShellArgs) -> anyhow::Result<bool> {
    let target: Box<dyn Target> = match &args.connect {
        Some(url) => {
            let signer = match &args.key_file {
                Some(path) => Some(crate::account_cmd::load_signer(path)?),
                None => None,
            };
            let chain = stratosdb::verified::open_chain_reader(
                args.ledger.as_deref(),
                args.rpc.as_deref().map(|rpc| (rpc, args.chain_id)),
            )
            .map_err(anyhow::Error::msg)?;
            Box::new(Remote::connect(
                url,
                signer,
                args.receipts.as_deref(),
                chain,
            )?)
        }
        None => Box::new(Embedded::open(
            &args.data,
            args.cache_mb,
            args.anchor_interval,
        )?),
    };
    // Without the handler, Ctrl-C during \import ends the program, as by default.
    let _ = interrupt::install();
    let mut session = Session {
        target,
        format: args.format,
        timing: false,
        ok: true,
        quit: false,
        interactive: false,
        input: Assembler::default(),
    };
    if let Some(text) = args.command {
        for line in text.lines() {
            session.feed_line(line);
        }
        session.finish();
    } else if !std::io::stdin().is_terminal() {
        session.run_stream(std::io::stdin().lock())?;
    } else {
        session.interactive = true;
        let history = match &args.connect {
            Some(_) => history_file(Path::new(".")),
            None => history_file(&args.data),
        };
        session.repl(&history)?;
        // Interactively, failures were shown as they happened.
        session.ok = true;
    }
    if let Err(e) = session.target.close() {
        session.fail(&e);
    }
    Ok(session.ok)
}

struct Session {
    /// Where statements run: a data folder or a node.
    target: Box<dyn Target>,
    format: Format,
    timing: bool,
    /// False once any statement or command has failed.
    ok: bool,
    quit: bool,
    interactive: bool,
    input: Assembler,
}

impl Session {
    /// Reads a script line by line, running each statement as soon as it is
    /// complete (its result is written and flushed before reading on).
    fn run_stream(&mut self, mut reader: impl BufRead) -> anyhow::Result<()> {
        let mut line = Vec::new();
        let mut number = 0u64;
        while !self.quit {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .context("reading statements from standard input")?;
            if n == 0 {
                break;
            }
            number += 1;
            match std::str::from_utf8(&line) {
                Ok(text) => self.feed_line(text.trim_end_matches(['\n', '\r'])),
                Err(e) => {
                    // Never run a statement with bytes replaced: drop the line
                    // and the statement it belongs to.
                    self.input = Assembler::default();
                    self.fail(&format!(
                        "line {number} of the input is not valid UTF-8 (at byte {}); it was skipped, with the statement it belongs to",
                        e.valid_up_to() + 1
                    ));
                }
            }
        }
        self.finish();
        Ok(())
    }

    fn feed_line(&mut self, line: &str) {
        if self.quit {
            return;
        }
        for item in self.input.feed_line(line) {
            if self.quit {
                return;
            }
            match item {
                Item::Statement(stmt) => self.statement(&stmt),
                Item::Command(command) => self.backslash(&command),
            }
        }
    }

    /// The end of the input: a statement left without its `;` still runs.
    fn finish(&mut self) {
        if let Some(stmt) = self.input.finish()
            && !self.quit
        {
            self.statement(&stmt);
        }
    }

    fn repl(&mut self, history: &Path) -> anyhow::Result<()> {
        let mut editor = rustyline::DefaultEditor::new()?;
        let _ = editor.load_history(history);
        println!(
            "stratosdb shell on {} — \\help for help, \\q to quit",
            self.target.describe()
        );
        let mut entry = String::new();
        while !self.quit {
            let prompt = if self.input.is_idle() {
                "stratosdb> "
            } else {
                "      ...> "
            };
            match editor.readline(prompt) {
                Ok(line) => {
                    if !entry.is_empty() {
                        entry.push(' ');
                    }
                    entry.push_str(line.trim());
                    self.feed_line(&line);
                    if self.input.is_idle() {
                        let _ = editor.add_history_entry(entry.as_str());
                        entry.clear();
                    }
                }
                Err(ReadlineError::Interrupted) => {
                    self.input.discard();
                    entry.clear();
                }
                Err(ReadlineError::Eof) => {
                    if !self.input.is_idle() {
                        eprintln!("(running the statement left without ';')");
                    }
                    self.finish();
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let _ = editor.save_history(history);
        Ok(())
    }

    /// A line for people: on stdout in table format, on stderr otherwise
    /// (stdout then holds data only).
    fn info(&self, text: &str) {
        if self.format.data_only() {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    fn fail(&mut self, message: &str) {
        eprintln!("error: {message}");
        self.ok = false;
    }

    fn statement(&mut self, stmt: &Statement) {
        let started = Instant::now();
        let (line, column) = stmt.origin;
        // Parsed here in either case, so that a syntax error names its
        // place in the script whether the statement runs here or on a node.
        let result = parse_statement_at(&stmt.text, line, column)
            .map_err(|e| e.to_string())
            .and_then(|parsed| self.target.run(&stmt.text, &parsed));
        let elapsed = started.elapsed();
        match result {
            Ok(result) => self.print(&result),
            Err(e) => {
                let (line, column) = stmt.at;
                self.fail(&format!(
                    "statement {} (line {line}, column {column}): {e}",
                    stmt.number
                ));
            }
        }
        if self.timing {
            eprintln!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
        }
    }

    /// Runs a query the shell makes itself (for `\d`).
    fn internal(&mut self, sql: &str) {
        match self.target.run_sql(sql) {
            Ok(result) => self.print(&result),
            Err(e) => self.fail(&e),
        }
    }

    /// Writes a result to stdout, flushed before the shell reads on.
    fn print(&mut self, result: &StatementResult) {
        let mut out = BufWriter::new(std::io::stdout().lock());
        let written = output::print(&mut out, self.format, result).and_then(|_| out.flush());
        drop(out);
        if let Err(e) = written {
            self.fail(&format!("writing output: {e}"));
        }
    }

    fn backslash(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        match (command, rest.as_slice()) {
            ("\\q" | "\\quit", _) => self.quit = true,
            ("\\help" | "\\h" | "\\?", _) => self.info(HELP),
            ("\\timing", _) => {
                self.timing = !self.timing;
                self.info(&format!(
                    "Timing is {}.",
                    if self.timing { "on" } else { "off" }
                ));
            }
            ("\\d", []) => self.internal("SHOW COLLECTIONS"),
            ("\\proof", [switch @ ("on" | "off")]) => {
                match self.target.set_proofs(*switch == "on") {
                    Ok(()) => self.info(&format!("proofs {switch}")),
                    Err(e) => self.fail(&e),
                }
            }
            ("\\save", [file]) => self.save(Path::new(file)),
            ("\\save", _) => self.fail("usage: \\save FILE"),
            ("\\d", [name]) => self.describe(name),
            ("\\anchors", words) => match anchors::parse_limit(words) {
                Some(limit) => self.anchors(limit),
                None => {
                    eprintln!("{}", anchors::USAGE);
                    self.ok = false;
                }
            },
            ("\\import", words) => match import::ImportArgs::parse(words) {
                Some(args) => self.import(&args),
                None => {
                    eprintln!("{}", import::USAGE);
                    self.ok = false;
                }
            },
            _ => self.fail(&format!(
                "unknown command {line:?}; \\help lists the commands"
            )),
        }
    }

    /// `\save FILE`: the last proven reply, as `audit --proofs` reads it.
    fn save(&mut self, file: &Path) {
        let Some(reply) = self.target.last_proven() else {
            return self.fail("no reply with proofs to save: \\proof on, then a SELECT");
        };
        let written = serde_json::to_string_pretty(&reply)
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(file, text + "\n").map_err(|e| e.to_string()));
        match written {
            Ok(()) => self.info(&format!(
                "saved the reply with proofs ({} rows) to {}",
                reply.rows.len(),
                file.display()
            )),
            Err(e) => self.fail(&format!("writing {}: {e}", file.display())),
        }
    }

    fn anchors(&mut self, limit: Option<u64>) {
        match self.target.anchors(limit) {
            Ok(reply) => {
                self.info(&anchors::heading(&reply));
                self.print(&anchors::rows(&reply));
            }
            Err(e) => self.fail(&e),
        }
    }

    fn describe(&mut self, name: &str) {
        match self.target.count(name) {
            Ok(count) => {
                self.info(&format!("Collection {name:?}: {count} documents"));
                self.internal(&format!("SHOW INDEXES FROM \"{name}\""));
            }
            Err(e) => self.fail(&e),
        }
    }

    fn import(&mut self, args: &import::ImportArgs) {
        let report = match import::import(self.target.as_ref(), args, self.interactive) {
            Ok(report) => report,
            Err(e) => return self.fail(&format!("{e:#}")),
        };
        let collection = &args.collection;
        let mut summary = format!(
            "Loaded {} documents into {collection}; {} lines failed",
            report.loaded,
            report.failed_lines()
        );
        if report.skipped > 0 {
            summary.push_str(&format!(
                "; {} lines skipped (_id already there)",
                report.skipped
            ));
        }
        summary.push('.');
        if let Some(line) = report.interrupted_at {
            self.info(&format!(
                "Import interrupted (Ctrl-C) after line {line}. {summary}"
            ));
            eprintln!(
                "To resume: \\import {} INTO {collection} ON CONFLICT SKIP",
                args.file.display()
            );
            self.ok = false;
        } else {
            self.info(&summary);
        }
        let duplicates = &report.duplicates;
        if duplicates.count > 0 {
            eprintln!(
                "{} lines have an _id already in {collection} (ON CONFLICT SKIP or REPLACE handles them); the first:",
                duplicates.count
            );
            for (line, error) in &duplicates.examples {
                eprintln!("  line {line}: {error}");
            }
        }
        let failed = &report.failed;
        for (line, error) in &failed.examples {
            eprintln!("line {line}: {error}");
        }
        let more = failed.count - failed.examples.len() as u64;
        if more > 0 {
            eprintln!("... and {more} more failed lines");
        }
        if report.failed_lines() > 0 {
            self.ok = false;
        }
    }
}

/// The history lives beside the user's other shell histories.
fn history_file(data: &Path) -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".stratosdb_history"),
        None => data.join(".stratosdb_history"),
    }
}
