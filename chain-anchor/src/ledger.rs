//! The local ledger: the embedded [`Chain`], an append-only, hash-chained log
//! of signed blocks in one file of a folder (`docs/chain.md`, "The local
//! ledger"). It needs no network. Several processes may share one folder (a
//! cluster on one machine): each append takes an exclusive lock on the file,
//! reads what others appended, appends, and syncs before it returns.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer as _, SigningKey};
use parking_lot::Mutex;
use stratosdb_verifier::ledger::{
    Block, ENTRY_DEPOSIT, ENTRY_PAYOUT, ENTRY_SETTLEMENT, Entry, FILE_HEADER, LogReader, frame,
};
use stratosdb_verifier::traffic::{Address, DepositEntry, PayoutEntry, SettlementEntry};
use stratosdb_verifier::{AnchorPayload, Hash, VerifyError};

mod verify;

pub use verify::{LedgerAnchor, LedgerReport, verify_ledger};

use crate::ChainError;
use crate::chain::{AnchorRecord, Chain, ChainInfo, ChainRef, Submission, SubmissionStatus};
use crate::{DepositAuthorization, DepositRecord, Payout};

/// The ledger's file inside its folder.
pub const LOG_FILE: &str = "ledger.log";

/// The ed25519 key a process signs its ledger blocks with.
pub struct LedgerKey {
    signing: SigningKey,
}

impl LedgerKey {
    /// A key from its 32 secret bytes (a node passes its libp2p ed25519 node
    /// key's secret, so its blocks are signed by its network identity).
    pub fn from_secret_bytes(secret: [u8; 32]) -> LedgerKey {
        LedgerKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// Loads the key kept in `path` (32 raw secret bytes), or creates one
    /// there (file mode 0600, written to a temporary file and renamed into
    /// place): for the embedded shell, which has no node key.
    ///
    /// ```
    /// use stratosdb_chain_anchor::LedgerKey;
    /// let dir = tempfile::tempdir().unwrap();
    /// let a = LedgerKey::load_or_create(&dir.path().join("ledger-key")).unwrap();
    /// let b = LedgerKey::load_or_create(&dir.path().join("ledger-key")).unwrap();
    /// assert_eq!(a.public_key(), b.public_key());
    /// ```
    pub fn load_or_create(path: &Path) -> Result<LedgerKey, ChainError> {
        let io = |what: &str| {
            let context = format!("{what} the ledger key {}", path.display());
            move |source| ChainError::Io { context, source }
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let secret: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                    ChainError::Integrity(format!(
                        "the ledger key {} holds {} bytes, a key has 32",
                        path.display(),
                        b.len()
                    ))
                })?;
                return Ok(LedgerKey::from_secret_bytes(secret));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading")(e)),
        }
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let tmp = path.with_extension("tmp");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io("creating"))?;
        file.write_all(&secret).map_err(io("writing"))?;
        file.sync_all().map_err(io("syncing"))?;
        std::fs::rename(&tmp, path).map_err(io("renaming"))?;
        Ok(LedgerKey::from_secret_bytes(secret))
    }

    /// The public key that blocks name as their signer.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }
}

/// What is known of the file up to `end`: every whole block before it was
/// read, its checksums and its link to the block before checked.
#[derive(Default)]
struct Index {
    /// Where the next record goes (0: the header is not read yet).
    end: u64,
    offsets: Vec<u64>,
    hashes: Vec<Hash>,
    last_time: u64,
    /// (cluster id, epoch) → (height, payload) of its anchor.
    anchors: HashMap<(Hash, u64), (u64, AnchorPayload)>,
    /// (cluster id, account, nonce) → (height, deposit): the first
    /// deposit of each; a second with the same nonce is the same deposit.
    deposits: HashMap<(Hash, Address, [u8; 16]), (u64, DepositEntry)>,
    /// (cluster id, epoch) → (height, entry) of its settlement (the first).
    settlements: HashMap<(Hash, u64), (u64, SettlementEntry)>,
    /// (cluster id, payout id) → (height, entry) of the payout (the first).
    payouts: HashMap<(Hash, u64), (u64, PayoutEntry)>,
}

impl Index {
    fn height(&self) -> u64 {
        self.hashes.len() as u64
    }

    /// Indexes the next block, read at `offset` with hash `hash`: its entry
    /// by kind (the first anchor of an epoch, deposit of a nonce, payout of
    /// an id or settlement of an epoch is the one that counts).
    fn add(&mut self, block: &Block, offset: u64, hash: Hash) -> Result<(), VerifyError> {
        let broken = |what: &str, e: VerifyError| VerifyError::LedgerBlock {
            height: block.height,
            reason: format!("{what} entry: {e}"),
        };
        if let Some(payload) = block.entry.anchor_payload() {
            let payload = payload.map_err(|e| broken("anchor", e))?;
            self.anchors
                .entry((payload.cluster_id, payload.epoch))
                .or_insert((block.height, payload));
        }
        if let Some(deposit) = block.entry.deposit() {
            let deposit = deposit.map_err(|e| broken("deposit", e))?;
            self.deposits
                .entry((deposit.cluster_id, deposit.account, deposit.nonce))
                .or_insert((block.height, deposit));
        }
        if let Some(payout) = block.entry.payout() {
            let payout = payout.map_err(|e| broken("payout", e))?;
            self.payouts
                .entry((payout.cluster_id, payout.id))
                .or_insert((block.height, payout));
        }
        if let Some(settlement) = block.entry.settlement() {
            let settlement = settlement.map_err(|e| broken("settlement", e))?;
            self.settlements
                .entry((settlement.cluster_id, settlement.epoch))
                .or_insert((block.height, settlement));
        }
        self.offsets.push(offset);
        self.hashes.push(hash);
        self.last_time = block.timestamp_ms;
        Ok(())
    }
}

/// The local ledger in a folder, appending blocks signed with one key.
///
/// ```
/// use stratosdb_chain_anchor::{AnchorPayload, Chain, LedgerKey, LocalLedger, SubmissionStatus};
/// let dir = tempfile::tempdir().unwrap();
/// let ledger = LocalLedger::open(dir.path(), LedgerKey::from_secret_bytes([3; 32])).unwrap();
/// let payload = AnchorPayload { cluster_id: [1; 32], epoch: 1, cluster_root: [2; 32], leaf_count: 1, previous: [0; 32] };
/// let submission = ledger.prepare(&payload, None).unwrap();
/// ledger.send(&submission).unwrap();
/// let SubmissionStatus::Included(reference) = ledger.status(&submission).unwrap() else { panic!() };
/// assert_eq!(ledger.read_anchor(&reference).unwrap().payload, payload);
/// ```
pub struct LocalLedger {
    dir: PathBuf,
    key: LedgerKey,
    /// Held for a whole operation: threads of one process share the file
    /// handle, whose lock only keeps other processes out.
    state: Mutex<(File, Index)>,
}

/// A lock on the ledger file, released when dropped.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File, path: &Path) -> Result<FileLock<'a>, ChainError> {
        file.lock().map_err(io_error("locking", path))?;
        Ok(FileLock(file))
    }

    fn shared(file: &'a File, path: &Path) -> Result<FileLock<'a>, ChainError> {
        file.lock_shared().map_err(io_error("locking", path))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn io_error(what: &'static str, path: &Path) -> impl Fn(std::io::Error) -> ChainError {
    let context = format!("{what} {}", path.display());
    move |source| ChainError::Io {
        context: context.clone(),
        source,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LocalLedger {
    /// Opens the ledger in `dir` (creating the folder and its file if
    /// absent), reads it whole and checks its records and links. A record cut
    /// short by a crash is removed; any other damage is
    /// [`ChainError::Integrity`] naming the height.
    pub fn open(dir: impl AsRef<Path>, key: LedgerKey) -> Result<LocalLedger, ChainError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        let ledger = LocalLedger {
            dir,
            key,
            state: Mutex::new((file, Index::default())),
        };
        {
            let mut state = ledger.state.lock();
            let (file, index) = &mut *state;
            let _lock = FileLock::exclusive(file, &path)?;
            ledger.catch_up(file, index, true)?;
        }
        Ok(ledger)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The number of blocks.
    pub fn height(&self) -> Result<u64, ChainError> {
        self.with_shared(|_, index| Ok(index.height()))
    }

    /// Runs `f` on the index brought up to date, under a shared lock.
    fn with_shared<T>(
        &self,
        f: impl FnOnce(&File, &Index) -> Result<T, ChainError>,
    ) -> Result<T, ChainError> {
        let mut state = self.state.lock();
        let (file, index) = &mut *state;
        let _lock = FileLock::shared(file, &self.path())?;
        self.catch_up(file, index, false)?;
        f(file, index)
    }

    /// Reads what was appended since `index.end`. With the exclusive lock
    /// (`writer`), a new file gets its header and a torn last record is cut
    /// off; with a shared one they are left for a writer.
    fn catch_up(&self, file: &File, index: &mut Index, writer: bool) -> Result<(), ChainError> {
        let path = self.path();
        let mut file = file;
        let len = file.metadata().map_err(io_error("reading", &path))?.len();
        if len < FILE_HEADER.len() as u64 {
            // New, or its header cut short by a crash while it was created.
            let mut start = Vec::new();
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_end(&mut start))
                .map_err(io_error("reading", &path))?;
            LogReader::new(&start).map_err(integrity)?;
            if writer {
                file.seek(SeekFrom::Start(0))
                    .and_then(|_| file.write_all(&FILE_HEADER))
                    .and_then(|_| file.sync_all())
                    .map_err(io_error("writing the header of", &path))?;
                index.end = FILE_HEADER.len() as u64;
            }
            return Ok(());
        }
        if len < index.end {
            return Err(ChainError::Integrity(format!(
                "{} shrank from {} to {len} bytes",
                path.display(),
                index.end
            )));
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(index.end))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(io_error("reading", &path))?;
        let (mut reader, base) = if index.end == 0 {
            (LogReader::new(&bytes).map_err(integrity)?, 0)
        } else {
            (LogReader::resume(&bytes, 0, index.height()), index.end)
        };
        while let Some(read) = reader.next_block().map_err(integrity)? {
            let block = read.block;
            let previous = index.hashes.last().copied().unwrap_or([0; 32]);
            block
                .verify_link(index.height(), &previous, index.last_time)
                .map_err(integrity)?;
            index
                .add(&block, base + read.offset, block.hash())
                .map_err(integrity)?;
        }
        let end = base + reader.offset() as u64;
        index.end = end.max(FILE_HEADER.len() as u64);
        if writer && reader.torn() > 0 {
            // A crash in the middle of an append: that block was never
            // acknowledged, so it is dropped.
            file.set_len(index.end)
                .and_then(|_| file.sync_all())
                .map_err(io_error("truncating the torn tail of", &path))?;
        }
        Ok(())
    }

    /// Appends one block with `entry`, unless `existing` (run on the index
    /// brought up to date, under the lock) finds what it needs already there.
    fn append(
        &self,
        entry: Entry,
        existing: impl FnOnce(&Index) -> Result<Option<ChainRef>, ChainError>,
    ) -> Result<ChainRef, ChainError> {
        let path = self.path();
        let mut state = self.state.lock();
        let (file, index) = &mut *state;
        let _lock = FileLock::exclusive(file, &path)?;
        self.catch_up(file, index, true)?;
        let mut file: &File = file;
        if let Some(found) = existing(index)? {
            return Ok(found);
        }
        let previous = index.hashes.last().copied().unwrap_or([0; 32]);
        let mut block = Block::unsigned(
            index.height(),
            previous,
            now_ms().max(index.last_time),
            self.key.public_key(),
            entry,
        );
        let hash = block.hash();
        block.signature = self.key.signing.sign(&hash).to_bytes();
        let record = frame(&block.encode());
        file.seek(SeekFrom::Start(index.end))
            .and_then(|_| file.write_all(&record))
            .and_then(|_| file.sync_data())
            .map_err(io_error("appending to", &path))?;
        // The block was built here from a checked entry: it indexes.
        index.add(&block, index.end, hash).map_err(integrity)?;
        index.end += record.len() as u64;
        Ok(ChainRef::Ledger {
            height: block.height,
            block_hash: hash,
        })
    }

    /// The block at `height`, read from the file and checked: its record,
    /// its hash against the index, its link and its signature.
    pub fn read_block(&self, height: u64) -> Result<Block, ChainError> {
        self.with_shared(|file, index| read_checked(file, index, height, &self.path()))
    }

    /// The block `reference` names, read and checked, and its entry as
    /// `decode` reads it (`None`: an entry of another kind than `what`).
    fn read_entry<T>(
        &self,
        reference: &ChainRef,
        what: &str,
        decode: impl FnOnce(&Entry) -> Option<Result<T, VerifyError>>,
    ) -> Result<(Block, T), ChainError> {
        let ChainRef::Ledger { height, block_hash } = *reference else {
            return Err(ChainError::NotFound(format!(
                "{reference} (not a local ledger reference)"
            )));
        };
        self.with_shared(|file, index| {
            if index.hashes.get(height as usize) != Some(&block_hash) {
                return Err(ChainError::NotFound(reference.to_string()));
            }
            let block = read_checked(file, index, height, &self.path())?;
            let value = decode(&block.entry)
                .ok_or_else(|| {
                    ChainError::NotFound(format!(
                        "{reference} (block of entry kind {}, not {what})",
                        block.entry.kind
                    ))
                })?
                .map_err(|e| {
                    integrity(VerifyError::LedgerBlock {
                        height,
                        reason: e.to_string(),
                    })
                })?;
            Ok((block, value))
        })
    }

    /// Every anchor on the ledger (the first of each cluster and epoch), in
    /// height order, as [`ChainRef`] and payload.
    pub fn anchors(&self) -> Result<Vec<(ChainRef, AnchorPayload)>, ChainError> {
        self.with_shared(|_, index| {
            let mut all: Vec<(ChainRef, AnchorPayload)> = index
                .anchors
                .values()
                .map(|(height, payload)| (reference(index, *height), payload.clone()))
                .collect();
            all.sort_by_key(|(r, _)| match r {
                ChainRef::Ledger { height, .. } => *height,
                ChainRef::Evm { .. } => u64::MAX,
            });
            Ok(all)
        })
    }
}

/// The entry an authorization becomes, checked: well-formed and signed by
/// its account.
fn deposit_entry(deposit: &DepositAuthorization) -> Result<DepositEntry, ChainError> {
    let refuse = |why: String| ChainError::Refused(format!("deposit: {why}"));
    let nonce: [u8; 16] = hex::decode(&deposit.nonce)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| refuse("the nonce is not 32 hex digits".into()))?;
    let sig = deposit.signature.trim_start_matches("0x");
    let signature: [u8; 65] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| refuse("the signature is not 0x and 130 hex digits".into()))?;
    let entry = DepositEntry {
        cluster_id: deposit.cluster_id,
        account: deposit.account,
        amount: deposit.amount,
        nonce,
        signature,
    };
    entry.verify().map_err(|e| refuse(e.to_string()))?;
    Ok(entry)
}

fn record_of(reference: &ChainRef, entry: &DepositEntry, block: &Block) -> DepositRecord {
    DepositRecord {
        reference: *reference,
        cluster_id: entry.cluster_id,
        account: entry.account,
        amount: entry.amount,
        block: block.height,
        timestamp_ms: block.timestamp_ms,
    }
}

fn reference(index: &Index, height: u64) -> ChainRef {
    ChainRef::Ledger {
        height,
        block_hash: index.hashes[height as usize],
    }
}

fn integrity(e: VerifyError) -> ChainError {
    ChainError::Integrity(e.to_string())
}

fn read_checked(file: &File, index: &Index, height: u64, path: &Path) -> Result<Block, ChainError> {
    let h = height as usize;
    let Some(&offset) = index.offsets.get(h) else {
        return Err(ChainError::NotFound(format!(
            "ledger block {height} (the ledger has {})",
            index.height()
        )));
    };
    let end = index.offsets.get(h + 1).copied().unwrap_or(index.end);
    let mut bytes = vec![0u8; (end - offset) as usize];
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(offset))
        .and_then(|_| reader.read_exact(&mut bytes))
        .map_err(io_error("reading", path))?;
    let block = LogReader::resume(&bytes, 0, height)
        .next_block()
        .map_err(integrity)?
        .ok_or_else(|| {
            integrity(VerifyError::LedgerBlock {
                height,
                reason: "its record is cut short".into(),
            })
        })?
        .block;
    let broken = |reason: &str| {
        integrity(VerifyError::LedgerBlock {
            height,
            reason: reason.into(),
        })
    };
    if block.hash() != index.hashes[h] {
        return Err(broken("changed since it was read"));
    }
    let previous = h.checked_sub(1).map(|p| index.hashes[p]).unwrap_or([0; 32]);
    block.verify_link(height, &previous, 0).map_err(integrity)?;
    block.verify_signature().map_err(integrity)?;
    Ok(block)
}

impl Chain for LocalLedger {
    fn info(&self) -> ChainInfo {
        ChainInfo {
            kind: "local".into(),
            chain_id: None,
            location: self.dir.display().to_string(),
        }
    }

    /// The ledger signs at [`Chain::send`] (a block names the block before
    /// it, known only then), so a submission is the payload alone; a
    /// replacement is the same payload.
    fn prepare(
        &self,
        payload: &AnchorPayload,
        _replacing: Option<&Submission>,
    ) -> Result<Submission, ChainError> {
        Ok(Submission {
            payload: payload.clone(),
            detail: serde_json::json!({ "backend": "local" }),
        })
    }

    fn send(&self, submission: &Submission) -> Result<(), ChainError> {
        let payload = &submission.payload;
        self.append(Entry::anchor(payload), |index| {
            match index.anchors.get(&(payload.cluster_id, payload.epoch)) {
                Some((height, held)) if held == payload => Ok(Some(reference(index, *height))),
                Some((height, _)) => Err(ChainError::ConflictingAnchor {
                    epoch: payload.epoch,
                    reference: reference(index, *height).to_string(),
                }),
                None => Ok(None),
            }
        })
        .map(|_| ())
    }

    fn status(&self, submission: &Submission) -> Result<SubmissionStatus, ChainError> {
        let payload = &submission.payload;
        self.with_shared(
            |_, index| match index.anchors.get(&(payload.cluster_id, payload.epoch)) {
                Some((height, held)) if held == payload => {
                    Ok(SubmissionStatus::Included(reference(index, *height)))
                }
                Some((height, _)) => Ok(SubmissionStatus::Failed(format!(
                    "epoch {} is anchored with another payload at {}",
                    payload.epoch,
                    reference(index, *height)
                ))),
                // Sending is synchronous: what is not there was never appended.
                None => Ok(SubmissionStatus::Dropped),
            },
        )
    }

    /// Appends the deposit (entry kind 2) once: the same cluster, account
    /// and nonce again returns the deposit recorded first.
    fn record_deposit(&self, deposit: &DepositAuthorization) -> Result<DepositRecord, ChainError> {
        let entry = deposit_entry(deposit)?;
        let key = (entry.cluster_id, entry.account, entry.nonce);
        let reference = self.append(
            Entry {
                kind: ENTRY_DEPOSIT,
                data: entry.encode(),
            },
            |index| match index.deposits.get(&key) {
                Some((height, held)) if held.amount == entry.amount => {
                    Ok(Some(reference(index, *height)))
                }
                Some((height, _)) => Err(ChainError::Refused(format!(
                    "the deposit nonce {} of {} is used by another deposit at {}",
                    hex::encode(entry.nonce),
                    entry.account,
                    reference(index, *height)
                ))),
                None => Ok(None),
            },
        )?;
        self.read_deposit(&entry.cluster_id, &reference)
    }

    fn read_deposit(
        &self,
        cluster_id: &[u8; 32],
        reference: &ChainRef,
    ) -> Result<DepositRecord, ChainError> {
        let (block, entry) = self.read_entry(reference, "deposit", |e| e.deposit())?;
        if &entry.cluster_id != cluster_id {
            return Err(ChainError::NotFound(format!(
                "{reference} is a deposit to another cluster"
            )));
        }
        Ok(record_of(reference, &entry, &block))
    }

    fn deposits_since(
        &self,
        cluster_id: &[u8; 32],
        from_block: u64,
    ) -> Result<Vec<DepositRecord>, ChainError> {
        let heights: Vec<u64> = self.with_shared(|_, index| {
            let mut found: Vec<u64> = index
                .deposits
                .iter()
                .filter(|((cluster, _, _), (height, _))| {
                    cluster == cluster_id && *height >= from_block
                })
                .map(|(_, (height, _))| *height)
                .collect();
            found.sort_unstable();
            Ok(found)
        })?;
        heights
            .into_iter()
            .map(|height| {
                let block = self.read_block(height)?;
                let reference = ChainRef::Ledger {
                    height,
                    block_hash: block.hash(),
                };
                self.read_deposit(cluster_id, &reference)
            })
            .collect()
    }

    fn record_settlement(&self, entry: &SettlementEntry) -> Result<ChainRef, ChainError> {
        self.append(
            Entry {
                kind: ENTRY_SETTLEMENT,
                data: entry.encode(),
            },
            |index| match index.settlements.get(&(entry.cluster_id, entry.epoch)) {
                Some((height, held)) if held.report_hash == entry.report_hash => {
                    Ok(Some(reference(index, *height)))
                }
                Some((height, _)) => Err(ChainError::Refused(format!(
                    "epoch {} is settled already with another report at {}",
                    entry.epoch,
                    reference(index, *height)
                ))),
                None => Ok(None),
            },
        )
    }

    fn prepare_payout(
        &self,
        payout: &Payout,
        _replacing: Option<&Payout>,
    ) -> Result<Payout, ChainError> {
        Ok(Payout {
            detail: serde_json::json!({ "backend": "local" }),
            ..payout.clone()
        })
    }

    /// Appends the payout (entry kind 4) once per cluster and id.
    fn send_payout(&self, payout: &Payout) -> Result<(), ChainError> {
        let entry = PayoutEntry {
            cluster_id: payout.cluster_id,
            id: payout.id,
            to: payout.to,
            amount: payout.amount,
        };
        self.append(
            Entry {
                kind: ENTRY_PAYOUT,
                data: entry.encode(),
            },
            |index| match index.payouts.get(&(entry.cluster_id, entry.id)) {
                Some((height, held)) if held == &entry => Ok(Some(reference(index, *height))),
                Some((height, _)) => Err(ChainError::Refused(format!(
                    "payout {} is on the ledger with other terms at {}",
                    entry.id,
                    reference(index, *height)
                ))),
                None => Ok(None),
            },
        )
        .map(|_| ())
    }

    fn payout_status(&self, payout: &Payout) -> Result<SubmissionStatus, ChainError> {
        self.with_shared(|_, index| {
            Ok(match index.payouts.get(&(payout.cluster_id, payout.id)) {
                Some((height, held)) if (held.to, held.amount) == (payout.to, payout.amount) => {
                    SubmissionStatus::Included(reference(index, *height))
                }
                Some((height, _)) => SubmissionStatus::Failed(format!(
                    "payout {} is on the ledger with other terms at {}",
                    payout.id,
                    reference(index, *height)
                )),
                None => SubmissionStatus::Dropped,
            })
        })
    }

    fn read_settlement_at(&self, reference: &ChainRef) -> Result<SettlementEntry, ChainError> {
        self.read_entry(reference, "settlement", |e| e.settlement())
            .map(|(_, entry)| entry)
    }

    fn read_settlement(
        &self,
        cluster_id: &[u8; 32],
        epoch: u64,
    ) -> Result<Option<(ChainRef, SettlementEntry)>, ChainError> {
        self.with_shared(|_, index| {
            Ok(index
                .settlements
                .get(&(*cluster_id, epoch))
                .map(|(height, entry)| (reference(index, *height), entry.clone())))
        })
    }

    fn latest_anchor(&self, cluster_id: &[u8; 32]) -> Result<Option<AnchorRecord>, ChainError> {
        let latest = self
            .anchors()?
            .into_iter()
            .filter(|(_, p)| &p.cluster_id == cluster_id)
            .max_by_key(|(_, p)| p.epoch);
        latest.map(|(r, _)| self.read_anchor(&r)).transpose()
    }

    fn read_anchor(&self, reference: &ChainRef) -> Result<AnchorRecord, ChainError> {
        let (block, payload) = self.read_entry(reference, "anchor", |e| e.anchor_payload())?;
        Ok(AnchorRecord {
            reference: *reference,
            payload,
            submitter: hex::encode(block.signer),
            block: block.height,
            timestamp_ms: block.timestamp_ms,
        })
    }
}
