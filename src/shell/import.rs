//! `\import FILE INTO collection [ON CONFLICT SKIP|REPLACE]`: loads JSON
//! Lines, streaming. Memory stays bounded whatever the file size: one line
//! at a time (a line longer than [`MAX_LINE`] is skipped and reported without
//! being held), one batch of at most [`BATCH`] documents and [`BATCH_BYTES`]
//! of text at a time, and only the first few failures kept as examples.
//! Ctrl-C stops after the batch under way is written.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use stratosdb_engine::Value;

use super::interrupt::Catch;

/// Documents written in one atomic batch.
pub const BATCH: usize = 1000;
/// Bytes of JSON text in one batch, at most (large documents make small batches).
pub const BATCH_BYTES: usize = 8 << 20;
/// The longest line read: four times the engine's default document limit.
pub const MAX_LINE: usize = 16 << 20;
/// Failures kept, per kind, to show as examples.
const EXAMPLES: usize = 5;

pub const USAGE: &str = "usage: \\import FILE INTO COLLECTION [ON CONFLICT SKIP|REPLACE]
  loads a JSON Lines file (one document per line) into an existing collection;
  ON CONFLICT SKIP keeps the stored document when an _id is already there
  (to resume an interrupted import), REPLACE overwrites it";

/// What to do with a document whose `_id` is already in the collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConflict {
    /// Report the line as failed.
    Fail,
    /// Keep the stored document; count the line as skipped.
    Skip,
    /// Overwrite the stored document.
    Replace,
}

/// A parsed `\import` command.
#[derive(Debug, PartialEq, Eq)]
pub struct ImportArgs {
    pub file: PathBuf,
    pub collection: String,
    pub on_conflict: OnConflict,
}

impl ImportArgs {
    /// The words after `\import`; `None` if they are not `FILE INTO COLL
    /// [ON CONFLICT SKIP|REPLACE]`.
    pub fn parse(words: &[&str]) -> Option<ImportArgs> {
        let is = |w: &str, k: &str| w.eq_ignore_ascii_case(k);
        let (file, collection, rest) = match words {
            [file, into, collection, rest @ ..] if is(into, "INTO") => (file, collection, rest),
            _ => return None,
        };
        let on_conflict = match rest {
            [] => OnConflict::Fail,
            [on, conflict, action] if is(on, "ON") && is(conflict, "CONFLICT") => {
                if is(action, "SKIP") {
                    OnConflict::Skip
                } else if is(action, "REPLACE") {
                    OnConflict::Replace
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        Some(ImportArgs {
            file: PathBuf::from(file),
            collection: collection.to_string(),
            on_conflict,
        })
    }
}

/// Lines of one kind that were not loaded: how many, and the first few.
#[derive(Debug, Default)]
pub struct Failures {
    pub count: u64,
    /// (line number, reason), the first [`EXAMPLES`].
    pub examples: Vec<(usize, String)>,
}

impl Failures {
    fn add(&mut self, line: usize, reason: String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push((line, reason));
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Documents written (inserted, or replaced with `ON CONFLICT REPLACE`).
    pub loaded: u64,
    /// Lines whose `_id` was already there, left alone (`ON CONFLICT SKIP`).
    pub skipped: u64,
    /// Lines whose `_id` was already there (without `ON CONFLICT`).
    pub duplicates: Failures,
    /// Lines that failed for another reason (bad JSON, not an object, ...).
    pub failed: Failures,
    /// Set when Ctrl-C stopped the import: the last line read.
    pub interrupted_at: Option<usize>,
}

impl ImportReport {
    pub fn failed_lines(&self) -> u64 {
        self.duplicates.count + self.failed.count
    }
}

/// Why a write of the import failed.
#[derive(Debug)]
pub enum WriteError {
    /// An `_id` is already in the collection.
    Duplicate(String),
    /// A document was refused on its merits (bad `_id`, too large, ...).
    Rejected(String),
    /// The storage or the connection failed: the import stops.
    Fault(anyhow::Error),
}

/// Where an import writes: the embedded shard or a node.
pub trait ImportSink {
    /// Fails unless the collection exists.
    fn check_collection(&self, collection: &str) -> anyhow::Result<()>;
    /// Whether a document with this `_id` is stored already.
    fn exists(&self, collection: &str, id: &str) -> anyhow::Result<bool>;
    /// Writes every document, durably, at once: all or nothing.
    /// `replace`: overwrite a document with the same `_id`.
    fn write_batch(
        &self,
        collection: &str,
        docs: &[Value],
        replace: bool,
    ) -> Result<(), WriteError>;
    /// Writes one document (made durable by [`ImportSink::sync`]).
    fn write_one(&self, collection: &str, doc: Value, replace: bool) -> Result<(), WriteError>;
    /// Makes every write so far durable.
    fn sync(&self) -> anyhow::Result<()>;
}

pub fn import(
    sink: &dyn ImportSink,
    args: &ImportArgs,
    progress: bool,
) -> anyhow::Result<ImportReport> {
    sink.check_collection(&args.collection)?;
    let file = &args.file;
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let mut reader = BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let bar = if progress {
        ProgressBar::new(size)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let catch = Catch::start();
    let mut loader = Loader {
        sink,
        args,
        report: ImportReport::default(),
        batch: Vec::with_capacity(BATCH),
        batch_bytes: 0,
    };
    let mut line = Vec::new();
    let mut line_no = 0;
    while let Some(read) = read_line(&mut reader, &mut line, MAX_LINE)
        .with_context(|| format!("reading line {}", line_no + 1))?
    {
        line_no += 1;
        bar.inc(read.bytes);
        if read.too_long {
            let reason = format!(
                "line of {} bytes is over the limit of {MAX_LINE}",
                read.bytes
            );
            loader.report.failed.add(line_no, reason);
        } else {
            loader.line(line_no, &line)?;
        }
        if loader.batch.len() >= BATCH || loader.batch_bytes >= BATCH_BYTES {
            loader.flush()?;
            bar.set_message(format!("{} loaded", loader.report.loaded));
        }
        if catch.interrupted() {
            loader.report.interrupted_at = Some(line_no);
            break;
        }
    }
    loader.flush()?;
    bar.finish_and_clear();
    Ok(loader.report)
}

struct Loader<'a> {
    sink: &'a dyn ImportSink,
    args: &'a ImportArgs,
    report: ImportReport,
    batch: Vec<(usize, Value)>,
    batch_bytes: usize,
}

impl Loader<'_> {
    fn line(&mut self, line_no: usize, bytes: &[u8]) -> anyhow::Result<()> {
        let Ok(text) = std::str::from_utf8(bytes) else {
            self.report.failed.add(line_no, "not UTF-8 text".into());
            return Ok(());
        };
        if text.trim().is_empty() {
            return Ok(());
        }
        match Value::from_json_str(text) {
            Ok(doc) => {
                self.batch.push((line_no, doc));
                self.batch_bytes += text.len();
            }
            Err(e) => self.report.failed.add(line_no, e.to_string()),
        }
        Ok(())
    }

    /// Writes the batch: one atomic write; if it fails, document by document,
    /// so that only the bad lines are left out, each counted with its reason.
    fn flush(&mut self) -> anyhow::Result<()> {
        let mut batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if self.args.on_conflict == OnConflict::Skip {
            let mut kept = Vec::with_capacity(batch.len());
            for (line_no, doc) in batch {
                if self.stored(&doc)? {
                    self.report.skipped += 1;
                } else {
                    kept.push((line_no, doc));
                }
            }
            batch = kept;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let collection = &self.args.collection;
        let replace = self.args.on_conflict == OnConflict::Replace;
        let docs: Vec<Value> = batch.iter().map(|(_, d)| d.clone()).collect();
        match self.sink.write_batch(collection, &docs, replace) {
            Ok(()) => {
                self.report.loaded += batch.len() as u64;
                return Ok(());
            }
            Err(WriteError::Fault(e)) => return Err(e),
            Err(_) => {}
        }
        for (line_no, doc) in batch {
            match self.sink.write_one(collection, doc, replace) {
                Ok(()) => self.report.loaded += 1,
                Err(WriteError::Duplicate(_)) if self.args.on_conflict == OnConflict::Skip => {
                    self.report.skipped += 1
                }
                Err(WriteError::Duplicate(e)) => self.report.duplicates.add(line_no, e),
                Err(WriteError::Rejected(e)) => self.report.failed.add(line_no, e),
                Err(WriteError::Fault(e)) => return Err(e),
            }
        }
        self.sink.sync()
    }

    /// Whether a document with this one's `_id` is stored already.
    fn stored(&self, doc: &Value) -> anyhow::Result<bool> {
        match doc.as_object().and_then(|o| o.get("_id")) {
            Some(Value::String(id)) => self.sink.exists(&self.args.collection, id),
            _ => Ok(false),
        }
    }
}

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub struct LineRead {
    /// Bytes the line took in the file, line break included.
    pub bytes: u64,
    /// The line was longer than the limit: the buffer holds nothing of it.
    pub too_long: bool,
}

/// Reads the next line into `buf` (without `\n` or `\r\n`), holding at most
/// `max` bytes of it: a longer line is read through and dropped. `None` at
/// the end of the input.
pub fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<LineRead>> {
    buf.clear();
    let mut read = LineRead {
        bytes: 0,
        too_long: false,
    };
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if !read.too_long && buf.len() + part.len() <= max {
            buf.extend_from_slice(part);
        } else if !read.too_long {
            read.too_long = true;
            buf.clear();
            buf.shrink_to(0);
        }
        read.bytes += used as u64;
        reader.consume(used);
        if done {
            break;
        }
    }
    if read.bytes == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_arguments() {
        let parse = |s: &str| ImportArgs::parse(&s.split_whitespace().collect::<Vec<_>>());
        assert_eq!(
            parse("a.jsonl into c on conflict skip"),
            Some(ImportArgs {
                file: "a.jsonl".into(),
                collection: "c".into(),
                on_conflict: OnConflict::Skip,
            })
        );
        assert_eq!(
            parse("a.jsonl INTO c ON CONFLICT REPLACE").map(|a| a.on_conflict),
            Some(OnConflict::Replace)
        );
        assert_eq!(
            parse("a.jsonl INTO c").map(|a| a.on_conflict),
            Some(OnConflict::Fail)
        );
        for bad in [
            "a.jsonl",
            "a.jsonl c",
            "a.jsonl INTO",
            "a INTO c ON CONFLICT",
            "a INTO c ON CONFLICT IGNORE",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// The reader never holds more than the limit, whatever the line length:
    /// a 20 MB line with a 1 MB limit is skipped with the buffer kept small.
    #[test]
    fn a_line_over_the_limit_is_not_held() {
        let mut text = vec![b'x'; 20 << 20];
        text.extend_from_slice(b"\n{\"a\":1}\r\nlast");
        let mut reader = BufReader::with_capacity(64 << 10, &text[..]);
        let mut buf = Vec::new();
        let first = read_line(&mut reader, &mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(
            first,
            LineRead {
                bytes: (20 << 20) + 1,
                too_long: true
            }
        );
        assert!(
            buf.capacity() <= (1 << 20) + (64 << 10),
            "{}",
            buf.capacity()
        );
        let second = read_line(&mut reader, &mut buf, 1 << 20).unwrap().unwrap();
        assert!(!second.too_long);
        assert_eq!(buf, b"{\"a\":1}");
        read_line(&mut reader, &mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut reader, &mut buf, 1 << 20).unwrap(), None);
    }
}
