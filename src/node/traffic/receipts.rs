//! The node's receipt log: every receipt it signed, one JSON line each, in
//! `DATA/receipts/receipts.jsonl`. Sequences count from 1 without gaps across
//! restarts: on open the log is read to its last whole line (a line torn by
//! a crash was never returned to a client, so it is cut off) and numbering
//! goes on from there. A receipt is written (to the OS) before its reply is
//! sent, and the file is synced in the background at least every
//! [`SYNC_EVERY`]. Settlement takes an epoch's volume from a running
//! [`VolumeBuilder`] the log keeps beside each epoch it issued receipts in
//! (so closing an epoch does not read them back), and from the file for an
//! epoch that began before the log was opened.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::gather::Gather;
use ed25519_dalek::SigningKey;
use parking_lot::Mutex;
use stratosdb_verifier::VerifyError;
use stratosdb_verifier::traffic::{Receipt, VolumeBuilder, VolumeReport};
use tokio::sync::oneshot;

/// Longest time a written receipt waits for its sync.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);
const FILE: &str = "receipts.jsonl";
/// How many epochs below the floor keep their running volume (an epoch is
/// closed again when its report is signed; an older one is read back).
const VOLUMES_KEPT: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum ReceiptLogError {
    #[error("receipt log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("receipt log {path}, line {line}: {reason}")]
    Corrupt {
        path: String,
        line: u64,
        reason: String,
    },
    /// The epoch's receipts do not make a volume (a check of
    /// [`VolumeReport::from_own_receipts`] failed).
    #[error("{0}")]
    Volume(#[from] VerifyError),
}

struct Inner {
    file: File,
    next: u64,
    dirty: bool,
    /// Bytes of whole receipts in the file.
    end: u64,
    /// The receipts of each epoch: epochs only grow along the log, so each
    /// epoch's receipts are one run of sequences.
    epochs: BTreeMap<u64, Span>,
    /// The running volume of each epoch whose first receipt this process
    /// issued (none for an epoch that had receipts when the log was opened,
    /// or whose receipts failed a check: those are read back).
    volumes: BTreeMap<u64, VolumeBuilder>,
}

impl Inner {
    /// Counts a receipt just written (`line_len` bytes at the file's end)
    /// in its epoch's span and running volume.
    fn record(&mut self, receipt: &Receipt, hash: &[u8; 32], line_len: u64) {
        let (sequence, offset, epoch) = (self.next, self.end, receipt.epoch);
        match self.epochs.entry(epoch) {
            std::collections::btree_map::Entry::Occupied(mut span) => {
                span.get_mut().last = sequence
            }
            std::collections::btree_map::Entry::Vacant(span) => {
                span.insert(Span {
                    first: sequence,
                    last: sequence,
                    offset,
                });
                let volume = VolumeBuilder::new(receipt.cluster_id, epoch, receipt.node_key);
                self.volumes.insert(epoch, volume);
            }
        }
        if let Some(volume) = self.volumes.get_mut(&epoch)
            && volume.add(receipt, hash).is_err()
        {
            // Closing the epoch reads it back and reports what is wrong.
            self.volumes.remove(&epoch);
        }
        self.next += 1;
        self.end += line_len;
    }
}

/// An epoch's receipts in the log: sequences `first..=last`, the first at
/// byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
    pub offset: u64,
}

/// The log, shared by the request handlers.
pub struct ReceiptLog {
    path: PathBuf,
    key: SigningKey,
    inner: Mutex<Inner>,
    /// The log file again, synced without the lock that issuing takes.
    sync_file: File,
    /// No receipt is issued in an epoch below this (a settlement closed it);
    /// read on every request, so kept outside the lock.
    floor: AtomicU64,
    stopped: Arc<AtomicBool>,
    /// Receipts of concurrent replies, waiting to be issued in one batch.
    pending: Gather<Pending>,
}

/// A reply's receipt waiting for its batch, and where its answer goes.
struct Pending {
    receipt: Receipt,
    issued: oneshot::Sender<Result<(Receipt, String), String>>,
}

/// Most receipts signed in one batch (a path of at most 8 hashes).
const BATCH_LIMIT: usize = 256;

impl ReceiptLog {
    /// Opens (or creates) the log in `dir`; receipts are signed with `key`.
    pub fn open(dir: &Path, key: SigningKey) -> Result<Arc<ReceiptLog>, ReceiptLogError> {
        let path = dir.join(FILE);
        let shown = path.display().to_string();
        let io = |source| ReceiptLogError::Io {
            path: shown.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let (last, intact, epochs) = scan(&file, &path)?;
        if intact < file.metadata().map_err(io)?.len() {
            tracing::warn!(path = %path.display(), "cutting a torn receipt off the log's end");
            file.set_len(intact).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let sync_file = file.try_clone().map_err(io)?;
        let log = Arc::new(ReceiptLog {
            path,
            key,
            sync_file,
            inner: Mutex::new(Inner {
                file,
                next: last + 1,
                dirty: false,
                end: intact,
                epochs,
                volumes: BTreeMap::new(),
            }),
            floor: AtomicU64::new(0),
            stopped: Arc::new(AtomicBool::new(false)),
            pending: Gather::default(),
        });
        let syncer = Arc::downgrade(&log);
        let stopped = log.stopped.clone();
        std::thread::Builder::new()
            .name("receipt-sync".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    std::thread::sleep(SYNC_EVERY);
                    match syncer.upgrade() {
                        Some(log) => {
                            if let Err(e) = log.sync() {
                                tracing::error!(error = %e, "syncing the receipt log");
                            }
                        }
                        None => return,
                    }
                }
            })
            .map_err(io)?;
        Ok(log)
    }

    pub fn node_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// This node's signature on a settlement report's hash.
    pub fn sign_report(
        &self,
        report_hash: &[u8; 32],
    ) -> stratosdb_verifier::traffic::ReportSignature {
        stratosdb_verifier::traffic::ReportSignature::sign(&self.key, report_hash)
    }

    /// The lowest epoch a receipt can still be issued in.
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    /// Numbers, signs and writes `receipt` (its `sequence`, `node_key`,
    /// `batch` and `signature` are set here), and returns it. Its epoch is
    /// raised to the newest one of the log and to the floor, if it is below
    /// them (a request that began before its epoch was closed is billed in
    /// the next).
    pub fn issue(&self, receipt: Receipt) -> Result<Receipt, ReceiptLogError> {
        let mut issued = self.issue_batch(vec![receipt])?;
        Ok(issued.swap_remove(0).0)
    }

    /// [`ReceiptLog::issue`] for a reply being served: the receipts of
    /// concurrent replies are issued together in batches ([`Gather`]), one
    /// signature each. The error is the log's, as text (every receipt of a
    /// failed batch gets it).
    pub async fn issue_gathered(&self, receipt: Receipt) -> Result<(Receipt, String), String> {
        let (issued, answer) = oneshot::channel();
        let job = Pending { receipt, issued };
        self.pending
            .submit(job, |jobs| {
                let mut jobs = jobs.into_iter().peekable();
                while jobs.peek().is_some() {
                    let (receipts, answers): (Vec<_>, Vec<_>) = jobs
                        .by_ref()
                        .take(BATCH_LIMIT)
                        .map(|job| (job.receipt, job.issued))
                        .unzip();
                    match self.issue_batch(receipts) {
                        Ok(issued) => {
                            for (receipt, answer) in issued.into_iter().zip(answers) {
                                let _ = answer.send(Ok(receipt));
                            }
                        }
                        Err(e) => {
                            for answer in answers {
                                let _ = answer.send(Err(e.to_string()));
                            }
                        }
                    }
                }
            })
            .await;
        answer
            .await
            .unwrap_or_else(|_| Err("the receipt's batch was dropped".into()))
    }

    /// Issues `receipts` (1 to [`stratosdb_verifier::traffic::MAX_BATCH`] of them) as [`ReceiptLog::issue`]
    /// does each, under one signature (consecutive sequences, one batch),
    /// with one write; returns them with their JSON as written (what a
    /// reply's header carries).
    pub fn issue_batch(
        &self,
        mut receipts: Vec<Receipt>,
    ) -> Result<Vec<(Receipt, String)>, ReceiptLogError> {
        let mut inner = self.inner.lock();
        let mut newest = inner.epochs.keys().next_back().copied().unwrap_or(0);
        let floor = self.floor();
        for (i, receipt) in receipts.iter_mut().enumerate() {
            receipt.epoch = receipt.epoch.max(floor).max(newest);
            newest = receipt.epoch;
            receipt.sequence = inner.next + i as u64;
        }
        let hashes = Receipt::sign_batch(&mut receipts, &self.key);
        // Plain data always encodes.
        let issued: Vec<(Receipt, String)> = receipts
            .into_iter()
            .map(|r| {
                let json = serde_json::to_string(&r).unwrap_or_default();
                (r, json)
            })
            .collect();
        let mut lines = String::with_capacity(issued.iter().map(|(_, j)| j.len() + 1).sum());
        for (_, json) in &issued {
            lines.push_str(json);
            lines.push('\n');
        }
        inner
            .file
            .write_all(lines.as_bytes())
            .map_err(self.io_error())?;
        for ((receipt, json), hash) in issued.iter().zip(&hashes) {
            inner.record(receipt, hash, json.len() as u64 + 1);
        }
        inner.dirty = true;
        Ok(issued)
    }

    /// Closes `epoch`: no receipt is issued in it (or before it) any more.
    /// Returns its receipts, read back from the file.
    pub fn close(&self, epoch: u64) -> Result<Vec<Receipt>, ReceiptLogError> {
        let span = {
            // Under the lock, so no receipt of `epoch` is being issued.
            let inner = self.inner.lock();
            self.floor
                .fetch_max(epoch.saturating_add(1), Ordering::AcqRel);
            inner.epochs.get(&epoch).copied()
        };
        let Some(span) = span else {
            return Ok(Vec::new());
        };
        self.read_span(span)
    }

    /// Closes `epoch` (as [`ReceiptLog::close`]) and returns this node's
    /// volume report of it in `cluster_id` (what
    /// [`VolumeReport::from_own_receipts`] makes of its receipts): from the
    /// epoch's running volume when the log has it, else from its receipts
    /// read back. Receipts that fail a check are a [`ReceiptLogError::Volume`].
    pub fn close_volume(
        &self,
        epoch: u64,
        cluster_id: [u8; 32],
    ) -> Result<VolumeReport, ReceiptLogError> {
        let (span, volume) = {
            let mut inner = self.inner.lock();
            let floor = self
                .floor
                .fetch_max(epoch.saturating_add(1), Ordering::AcqRel)
                .max(epoch.saturating_add(1));
            let kept = floor.saturating_sub(VOLUMES_KEPT);
            inner.volumes = inner.volumes.split_off(&kept);
            let span = inner.epochs.get(&epoch).copied();
            let volume = inner.volumes.get(&epoch).cloned();
            (span, volume)
        };
        let Some(span) = span else {
            return Ok(VolumeBuilder::new(cluster_id, epoch, self.node_key()).report());
        };
        match volume {
            Some(volume)
                if volume.cluster_id() == cluster_id
                    && volume.sequences() == Some((span.first, span.last)) =>
            {
                Ok(volume.report())
            }
            _ => {
                let receipts = self.read_span(span)?;
                Ok(VolumeReport::from_own_receipts(
                    cluster_id,
                    epoch,
                    self.node_key(),
                    receipts,
                )?)
            }
        }
    }

    /// The receipts of `epoch` issued so far.
    pub fn epoch_receipts(&self, epoch: u64) -> Result<Vec<Receipt>, ReceiptLogError> {
        let span = self.inner.lock().epochs.get(&epoch).copied();
        span.map_or(Ok(Vec::new()), |s| self.read_span(s))
    }

    fn read_span(&self, span: Span) -> Result<Vec<Receipt>, ReceiptLogError> {
        self.read_lines(span.offset, span.first, span.first, span.last)
    }

    fn io_error(&self) -> impl Fn(std::io::Error) -> ReceiptLogError + '_ {
        |source| ReceiptLogError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The receipts `from..=to`, reading the file from byte `offset`, where
    /// receipt `first` starts (`first <= from`).
    fn read_lines(
        &self,
        offset: u64,
        first: u64,
        from: u64,
        to: u64,
    ) -> Result<Vec<Receipt>, ReceiptLogError> {
        let mut file = File::open(&self.path).map_err(self.io_error())?;
        file.seek(SeekFrom::Start(offset))
            .map_err(self.io_error())?;
        let mut out = Vec::with_capacity(to.saturating_sub(from).saturating_add(1) as usize);
        let mut lines = BufReader::new(file).lines();
        for sequence in first..=to {
            let line = lines
                .next()
                .ok_or_else(|| ReceiptLogError::Corrupt {
                    path: self.path.display().to_string(),
                    line: sequence,
                    reason: "the log ends before it".into(),
                })?
                .map_err(self.io_error())?;
            if sequence >= from {
                out.push(parse(&line, sequence, &self.path)?);
            }
        }
        Ok(out)
    }

    /// Syncs what was written since the last sync. The flag is taken under
    /// the lock and the file synced outside it, so replies do not wait for
    /// the disk: a sync covers every write made before it began (through
    /// either handle), and a receipt written meanwhile sets the flag again.
    pub fn sync(&self) -> Result<(), ReceiptLogError> {
        if !std::mem::take(&mut self.inner.lock().dirty) {
            return Ok(());
        }
        self.sync_file.sync_data().map_err(|source| {
            self.inner.lock().dirty = true;
            ReceiptLogError::Io {
                path: self.path.display().to_string(),
                source,
            }
        })
    }

    /// The receipts with sequences in `from..=to` (`to` at most the last
    /// issued), read back from the file from the start of the epoch that
    /// holds `from`.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<Receipt>, ReceiptLogError> {
        let (offset, first) = {
            let inner = self.inner.lock();
            // Epochs only grow along the log: the spans are in sequence order.
            inner
                .epochs
                .values()
                .take_while(|span| span.first <= from)
                .last()
                .map_or((0, 1), |span| (span.offset, span.first))
        };
        self.read_lines(offset, first, from.max(first), to)
    }

    /// The last sequence issued (0: none yet).
    pub fn last_sequence(&self) -> u64 {
        self.inner.lock().next - 1
    }
}

impl Drop for ReceiptLog {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.sync();
    }
}

fn parse(line: &str, sequence: u64, path: &Path) -> Result<Receipt, ReceiptLogError> {
    let corrupt = |reason: String| ReceiptLogError::Corrupt {
        path: path.display().to_string(),
        line: sequence,
        reason,
    };
    let receipt: Receipt = serde_json::from_str(line).map_err(|e| corrupt(e.to_string()))?;
    if receipt.sequence != sequence {
        return Err(corrupt(format!(
            "holds sequence {}, expected {sequence}",
            receipt.sequence
        )));
    }
    Ok(receipt)
}

/// The last whole receipt's sequence, the byte length of the whole lines,
/// and each epoch's span.
fn scan(file: &File, path: &Path) -> Result<(u64, u64, BTreeMap<u64, Span>), ReceiptLogError> {
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let (mut last, mut intact) = (0u64, 0u64);
    let mut epochs = BTreeMap::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|source| ReceiptLogError::Io {
                path: path.display().to_string(),
                source,
            })?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        match parse(line.trim_end(), last + 1, path) {
            Ok(receipt) => {
                last += 1;
                epochs
                    .entry(receipt.epoch)
                    .and_modify(|span: &mut Span| span.last = last)
                    .or_insert(Span {
                        first: last,
                        last,
                        offset: intact,
                    });
                intact += n as u64;
            }
            // Only a torn last line may be dropped; damage before it is not
            // this process's crash, and is reported.
            Err(e) => {
                let mut rest = String::new();
                let more = reader.read_line(&mut rest).unwrap_or(0);
                if more > 0 {
                    return Err(e);
                }
                break;
            }
        }
    }
    Ok((last, intact, epochs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb_verifier::traffic::{Address, Prices};

    fn blank() -> Receipt {
        Receipt {
            version: stratosdb_verifier::traffic::RECEIPT_VERSION,
            cluster_id: [1; 32],
            node_key: [0; 32],
            sequence: 0,
            epoch: 3,
            payer: Address([2; 20]),
            request_hash: [3; 32],
            bytes: 100,
            documents: 1,
            prices: Prices {
                wei_per_kib: 1024,
                wei_per_document: 5,
            },
            fee: 105,
            batch: Default::default(),
            signature: [0; 64],
        }
    }

    /// Syncs run beside issuing (the lock is not held while the disk
    /// works): every receipt issued meanwhile is in the log, in order.
    #[test]
    fn receipts_issued_while_syncing_are_all_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        {
            let log = ReceiptLog::open(dir.path(), key.clone()).unwrap();
            let done = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let syncer = scope.spawn(|| {
                    let mut syncs = 0;
                    while !done.load(Ordering::Acquire) {
                        log.sync().unwrap();
                        syncs += 1;
                    }
                    syncs
                });
                let writers: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            for _ in 0..250 {
                                log.issue(blank()).unwrap();
                            }
                        })
                    })
                    .collect();
                writers.into_iter().for_each(|w| w.join().unwrap());
                done.store(true, Ordering::Release);
                assert!(syncer.join().unwrap() > 0);
            });
            log.sync().unwrap();
        }
        let log = ReceiptLog::open(dir.path(), key).unwrap();
        assert_eq!(log.last_sequence(), 1000);
        let all = log.read(1, 1000).unwrap();
        assert!(
            all.iter()
                .zip(1..)
                .all(|(r, n)| r.sequence == n && r.verify().is_ok())
        );
    }

    /// Concurrent replies' receipts are issued in batches: each answer is
    /// its own receipt (its request's hash), numbered without gaps, one
    /// signature a batch, and every receipt verifies on its own, also read
    /// back after a reopen; a volume closed from them is the one read back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receipts_of_concurrent_replies_share_batch_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let log = ReceiptLog::open(dir.path(), key.clone()).unwrap();
        let tasks: Vec<_> = (0..400u32)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut r = blank();
                    r.request_hash[..4].copy_from_slice(&i.to_be_bytes());
                    let (receipt, json) = log.issue_gathered(r).await.unwrap();
                    assert_eq!(receipt.request_hash[..4], i.to_be_bytes());
                    assert_eq!(serde_json::from_str::<Receipt>(&json).unwrap(), receipt);
                    receipt
                })
            })
            .collect();
        let mut issued = Vec::new();
        for task in tasks {
            issued.push(task.await.unwrap());
        }
        issued.sort_by_key(|r| r.sequence);
        assert!(issued.iter().zip(1..).all(|(r, n)| r.sequence == n));
        let signatures: std::collections::HashSet<_> = issued.iter().map(|r| r.signature).collect();
        assert!(
            signatures.len() < issued.len(),
            "400 concurrent receipts, none shared a batch"
        );
        let mut checker = stratosdb_verifier::traffic::ReceiptChecker::default();
        for r in &issued {
            r.verify().unwrap();
            checker.verify(r).unwrap();
        }
        let closed = log.close_volume(3, [1; 32]).unwrap();
        drop(log);
        let log = ReceiptLog::open(dir.path(), key.clone()).unwrap();
        assert_eq!(log.read(1, 400).unwrap(), issued);
        let node = key.verifying_key().to_bytes();
        let read_back =
            VolumeReport::from_own_receipts([1; 32], 3, node, log.read(1, 400).unwrap()).unwrap();
        assert_eq!(closed, read_back);
    }

    /// The volume an epoch's close gives without reading the log back is
    /// the one its receipts read back give, for every epoch: issued by this
    /// process, begun before a reopen and continued after it, or empty.
    #[test]
    fn closed_volumes_are_what_the_receipts_read_back_give() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let node = key.verifying_key().to_bytes();
        let cluster = blank().cluster_id;
        let issue = |log: &ReceiptLog, epoch: u64, payer: u8, bytes: u64| {
            let mut r = blank();
            r.epoch = epoch;
            r.payer = Address([payer; 20]);
            r.bytes = bytes;
            r.fee = r.prices.fee(bytes, r.documents).unwrap();
            log.issue(r).unwrap()
        };
        let from_file = |log: &ReceiptLog, epoch: u64| {
            let receipts = log.epoch_receipts(epoch).unwrap();
            VolumeReport::from_own_receipts(cluster, epoch, node, receipts).unwrap()
        };
        {
            let log = ReceiptLog::open(dir.path(), key.clone()).unwrap();
            for n in 0..30u64 {
                issue(&log, 3 + n / 10, (n % 3) as u8, 100 + n);
            }
            let expected = from_file(&log, 3);
            assert_eq!(expected.node_volumes[0].receipts(), 10);
            assert_eq!(expected.wallet_volumes.len(), 3);
            assert_eq!(log.close_volume(3, cluster).unwrap(), expected);
            // Closed again (its report is signed later): the same.
            assert_eq!(log.close_volume(3, cluster).unwrap(), expected);
            // Another cluster's settlement of it is refused, as the
            // receipts read back are.
            let other = log.close_volume(4, [7; 32]).unwrap_err();
            assert!(matches!(other, ReceiptLogError::Volume(_)), "{other}");
            // An epoch without receipts: no node volume.
            let empty = log.close_volume(2, cluster).unwrap();
            assert!(empty.node_volumes.is_empty() && empty.wallet_volumes.is_empty());
            assert_eq!(empty, from_file(&log, 2));
        }
        // Epoch 5 began before the reopen and goes on after it: its running
        // volume would miss the first part, so it is read back; epoch 6 is
        // this process's alone.
        let log = ReceiptLog::open(dir.path(), key).unwrap();
        issue(&log, 5, 1, 500);
        issue(&log, 6, 2, 600);
        issue(&log, 6, 1, 601);
        for epoch in [5, 6] {
            let expected = from_file(&log, epoch);
            assert_eq!(log.close_volume(epoch, cluster).unwrap(), expected);
        }
        assert_eq!(from_file(&log, 5).node_volumes[0].receipts(), 11);
        // A receipt issued after the close goes to the next epoch.
        assert_eq!(issue(&log, 6, 1, 700).epoch, 7);
    }

    #[test]
    fn sequences_go_on_across_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        {
            let log = ReceiptLog::open(dir.path(), key.clone()).unwrap();
            for n in 1..=3 {
                let r = log.issue(blank()).unwrap();
                assert_eq!(r.sequence, n);
                r.verify().unwrap();
            }
        }
        // A crash mid-line.
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"version\":1,\"clus").unwrap();
        drop(f);
        let log = ReceiptLog::open(dir.path(), key).unwrap();
        assert_eq!(log.last_sequence(), 3);
        assert_eq!(log.issue(blank()).unwrap().sequence, 4);
        let read = log.read(2, 4).unwrap();
        assert_eq!(
            read.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert!(read.iter().all(|r| r.verify().is_ok()));

        // Closing epoch 3 moves later receipts to epoch 4; each epoch's
        // receipts read back as one run, across a reopen too.
        assert_eq!(log.close(3).unwrap().len(), 4);
        let late = log.issue(blank()).unwrap();
        assert_eq!((late.epoch, late.sequence), (4, 5));
        drop(log);
        let log = ReceiptLog::open(dir.path(), SigningKey::from_bytes(&[9; 32])).unwrap();
        assert_eq!(log.epoch_receipts(4).unwrap(), std::slice::from_ref(&late));
        // A range across epochs, read from the start of the first one's.
        let across: Vec<u64> = log.read(3, 5).unwrap().iter().map(|r| r.sequence).collect();
        assert_eq!(across, [3, 4, 5]);
        assert_eq!(log.read(5, 5).unwrap(), [late]);
        assert_eq!(log.epoch_receipts(3).unwrap().len(), 4);
        assert!(log.epoch_receipts(2).unwrap().is_empty());
    }
}
