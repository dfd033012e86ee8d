//! Walking a whole ledger: what `stratosdb audit --ledger` runs.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use stratosdb_verifier::ledger::{Block, LogReader};
use stratosdb_verifier::{AnchorPayload, Hash, VerifyError};

use super::{FileLock, LOG_FILE, io_error};
use crate::{ChainError, ChainRef};

/// One anchor found on the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerAnchor {
    pub reference: ChainRef,
    pub payload: AnchorPayload,
    /// The signing key of its block, hex.
    pub signer: String,
    pub timestamp_ms: u64,
}

/// What [`verify_ledger`] found.
#[derive(Clone, Debug, Default)]
pub struct LedgerReport {
    /// Blocks read whose record, hash link and signature check out, from
    /// height 0 on (the blocks after a broken one are not counted).
    pub blocks: u64,
    /// Bytes at the end that are only the start of a record (a crash in the
    /// middle of an append, which the next writer removes).
    pub torn_bytes: u64,
    /// Blocks per entry kind.
    pub kinds: BTreeMap<u8, u64>,
    /// Blocks per signer (hex public key).
    pub signers: BTreeMap<String, u64>,
    /// The anchors, in height order.
    pub anchors: Vec<LedgerAnchor>,
    /// The first block that does not check out; nothing after it is read.
    pub broken: Option<VerifyError>,
    /// Anchors that break their cluster's own chain: a second anchor of an
    /// epoch, an epoch not after the cluster's previous one, or a `previous`
    /// that is not the block of the cluster's previous anchor. (height, why)
    pub anchor_problems: Vec<(u64, String)>,
}

impl LedgerReport {
    /// True when every block and every anchor checked out.
    pub fn ok(&self) -> bool {
        self.broken.is_none() && self.anchor_problems.is_empty()
    }
}

/// Reads and checks the whole ledger in `dir` under a shared lock (so it
/// sees no half-written append): each record's checksums, each block's
/// height, link, timestamp and signature, and each cluster's chain of
/// anchors. `progress(done, total)` is called in bytes as it goes. An `Err`
/// means the ledger could not be read at all (no such file, not a ledger).
pub fn verify_ledger(
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<LedgerReport, ChainError> {
    let path = dir.join(LOG_FILE);
    let file = File::open(&path).map_err(io_error("opening", &path))?;
    let mut bytes = Vec::new();
    {
        let _lock = FileLock::shared(&file, &path)?;
        (&file)
            .read_to_end(&mut bytes)
            .map_err(io_error("reading", &path))?;
    }
    let total = bytes.len() as u64;
    let mut reader = LogReader::new(&bytes).map_err(|e| match e {
        VerifyError::MalformedLedger(why) => {
            ChainError::Integrity(format!("{}: {why}", path.display()))
        }
        e => ChainError::Integrity(e.to_string()),
    })?;
    let mut report = LedgerReport::default();
    let mut anchors = AnchorChains::default();
    let mut previous: Option<Block> = None;
    loop {
        let read = match reader.next_block() {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(e) => {
                report.broken = Some(e);
                break;
            }
        };
        if let Err(e) = read.block.verify_after(previous.as_ref()) {
            report.broken = Some(e);
            break;
        }
        let block = read.block;
        let hash = block.hash();
        report.blocks += 1;
        *report.kinds.entry(block.entry.kind).or_default() += 1;
        *report.signers.entry(hex::encode(block.signer)).or_default() += 1;
        if let Some(Ok(payload)) = block.entry.anchor_payload() {
            if let Some(problem) = anchors.add(&payload, hash) {
                report.anchor_problems.push((block.height, problem));
            }
            report.anchors.push(LedgerAnchor {
                reference: ChainRef::Ledger {
                    height: block.height,
                    block_hash: hash,
                },
                payload,
                signer: hex::encode(block.signer),
                timestamp_ms: block.timestamp_ms,
            });
        }
        progress(reader.offset() as u64, total);
        previous = Some(block);
    }
    report.torn_bytes = reader.torn() as u64;
    progress(total, total);
    Ok(report)
}

/// Each cluster's latest anchor while walking: (epoch, block hash).
#[derive(Default)]
struct AnchorChains {
    latest: HashMap<Hash, (u64, Hash)>,
}

impl AnchorChains {
    fn add(&mut self, payload: &AnchorPayload, block: Hash) -> Option<String> {
        let (expected_previous, problem) = match self.latest.get(&payload.cluster_id) {
            None => ([0; 32], None),
            Some(&(epoch, _)) if payload.epoch == epoch => {
                return Some(format!("a second anchor of epoch {epoch}"));
            }
            Some(&(epoch, _)) if payload.epoch < epoch => {
                return Some(format!(
                    "epoch {} comes after epoch {epoch} of the same cluster",
                    payload.epoch
                ));
            }
            Some(&(_, hash)) => (hash, None::<String>),
        };
        self.latest
            .insert(payload.cluster_id, (payload.epoch, block));
        if payload.previous != expected_previous {
            return Some(format!(
                "epoch {} names previous anchor {}, the cluster's previous anchor is block {}",
                payload.epoch,
                hex::encode(payload.previous),
                hex::encode(expected_previous)
            ));
        }
        problem
    }
}
