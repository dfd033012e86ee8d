//! `\import FILE.jsonl INTO collection`: loads JSON Lines in batches, reporting
//! how many documents were loaded and which lines failed, and why.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use stratosdb_engine::{Durability, Op, Shard, Value};

const BATCH: usize = 1000;

/// What an import did.
pub struct ImportReport {
    pub loaded: u64,
    /// (line number, error) for each line that was not loaded.
    pub failed: Vec<(usize, String)>,
}

pub fn import(
    shard: &Shard,
    file: &Path,
    collection: &str,
    progress: bool,
) -> anyhow::Result<ImportReport> {
    shard.collection(collection)?;
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let reader = BufReader::new(
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
    let mut report = ImportReport {
        loaded: 0,
        failed: Vec::new(),
    };
    let mut batch: Vec<(usize, Value)> = Vec::with_capacity(BATCH);
    for (n, line) in reader.lines().enumerate() {
        let line_no = n + 1;
        let line = line.with_context(|| format!("reading line {line_no}"))?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        match Value::from_json_str(&line) {
            Ok(doc) => batch.push((line_no, doc)),
            Err(e) => report.failed.push((line_no, e.to_string())),
        }
        if batch.len() == BATCH {
            load_batch(shard, collection, std::mem::take(&mut batch), &mut report)?;
            bar.set_message(format!("{} loaded", report.loaded));
        }
    }
    load_batch(shard, collection, batch, &mut report)?;
    bar.finish_and_clear();
    Ok(report)
}

/// One atomic write per batch; if the batch fails, its documents are retried
/// one by one so that only the bad lines are left out, each with its reason.
fn load_batch(
    shard: &Shard,
    collection: &str,
    batch: Vec<(usize, Value)>,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let op = |doc: Value| Op::Insert {
        collection: collection.to_string(),
        doc,
    };
    let ops = batch.iter().map(|(_, d)| op(d.clone())).collect();
    if shard.write(ops, Durability::Sync).is_ok() {
        report.loaded += batch.len() as u64;
        return Ok(());
    }
    for (line_no, doc) in batch {
        match shard.write(vec![op(doc)], Durability::Buffered) {
            Ok(_) => report.loaded += 1,
            Err(e) => report.failed.push((line_no, e.to_string())),
        }
    }
    shard.write(vec![], Durability::Sync)?;
    Ok(())
}
