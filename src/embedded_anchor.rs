//! Anchoring an embedded database folder on its own local ledger, so that a
//! single-user database is auditable too (`docs/chain.md`, "The embedded
//! database's anchors").
//!
//! The folder holds, beside sled's files: `cluster-id` (32 random bytes in
//! hex, made once: the folder's cluster id), `ledger-key` (the ed25519 key
//! that signs its blocks, mode 0600) and `ledger/` (the local ledger). The
//! embedded database is one engine shard holding every collection, so an
//! epoch has one leaf, `{collection: "", shard: 0, raft_index: EPOCH, root}`:
//! with no raft log, the leaf's index is the epoch number itself, which
//! makes the leaf a function of the ledger's payload and the documents alone.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use stratosdb_chain_anchor::{
    AnchorPayload, Chain, ChainError, ChainRef, LeafProof, LedgerKey, LocalLedger, ShardLeaf,
    SubmissionStatus,
};
use stratosdb_engine::{AnchorMark, Engine, Hash, Shard};
use stratosdb_verifier::AnchorProof;

/// The folder's cluster id file.
pub const CLUSTER_ID_FILE: &str = "cluster-id";
/// The ledger key file.
pub const KEY_FILE: &str = "ledger-key";
/// The ledger's folder.
pub const LEDGER_DIR: &str = "ledger";

/// The one leaf of an embedded database's epoch.
pub fn leaf(epoch: u64, root: Hash) -> ShardLeaf {
    ShardLeaf {
        collection: String::new(),
        shard: 0,
        raft_index: epoch,
        root,
    }
}

/// The folder's cluster id, if it has one.
pub fn read_cluster_id(data: &Path) -> Result<Option<Hash>, ChainError> {
    let path = data.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => stratosdb_chain_anchor::hex_hash(text.trim())
            .map(Some)
            .map_err(|why| ChainError::Integrity(format!("{}: {why}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ChainError::Io {
            context: format!("reading {}", path.display()),
            source,
        }),
    }
}

fn cluster_id_or_create(data: &Path) -> Result<Hash, ChainError> {
    if let Some(id) = read_cluster_id(data)? {
        return Ok(id);
    }
    let mut id = [0u8; 32];
    rand::fill(&mut id);
    let path = data.join(CLUSTER_ID_FILE);
    let tmp = data.join(format!("{CLUSTER_ID_FILE}.tmp"));
    std::fs::write(&tmp, format!("{}\n", hex::encode(id)))
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| ChainError::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
    Ok(id)
}

/// The anchors of one cluster on a ledger, in epoch order.
pub fn cluster_anchors(
    ledger: &LocalLedger,
    cluster_id: &Hash,
) -> Result<Vec<(ChainRef, AnchorPayload)>, ChainError> {
    let mut all = ledger.anchors()?;
    all.retain(|(_, p)| &p.cluster_id == cluster_id);
    Ok(all)
}

/// The last anchored epoch: its number, reference, cluster root, and the
/// shard root it anchored if that is the root the shard has now.
struct Last {
    epoch: u64,
    reference: Option<ChainRef>,
    cluster_root: Hash,
    root: Option<Hash>,
}

/// Anchors one embedded database's shard on the folder's ledger.
pub struct Anchorer {
    ledger: LocalLedger,
    cluster_id: Hash,
    engine: Engine,
    shard: Shard,
    last: Mutex<Last>,
}

impl Anchorer {
    /// Opens the ledger of the data folder `data` (creating its key, cluster
    /// id and ledger on first use) for the database's engine and shard.
    pub fn open(data: &Path, engine: Engine, shard: Shard) -> Result<Anchorer, ChainError> {
        let cluster_id = cluster_id_or_create(data)?;
        let key = LedgerKey::load_or_create(&data.join(KEY_FILE))?;
        let ledger = LocalLedger::open(data.join(LEDGER_DIR), key)?;
        let root = shard
            .root()
            .map_err(|e| ChainError::Unavailable(e.to_string()))?;
        let last = match cluster_anchors(&ledger, &cluster_id)?.pop() {
            Some((reference, payload)) => Last {
                epoch: payload.epoch,
                reference: Some(reference),
                cluster_root: payload.cluster_root,
                root: (leaf(payload.epoch, root).hash() == payload.cluster_root).then_some(root),
            },
            // An empty database needs no anchor.
            None => Last {
                epoch: 0,
                reference: None,
                cluster_root: [0; 32],
                root: Some(stratosdb_engine::proof::EMPTY_ROOT),
            },
        };
        Ok(Anchorer {
            ledger,
            cluster_id,
            engine,
            shard,
            last: Mutex::new(last),
        })
    }

    pub fn ledger(&self) -> &LocalLedger {
        &self.ledger
    }

    pub fn cluster_id(&self) -> Hash {
        self.cluster_id
    }

    /// Anchors the next epoch if the shard's root is not the one anchored
    /// last; the writes it covers are made durable first. The shard records
    /// an anchor mark of the epoch (durably), and the root anchored is the
    /// mark's, so that proofs of documents unchanged since can be proved to
    /// it ([`stratosdb_engine::Shard::prove_anchored`]). A mark left by an
    /// append that failed is the one its epoch anchors when tried again.
    pub fn anchor_if_changed(&self) -> Result<Option<ChainRef>, ChainError> {
        let mut last = self.last.lock();
        let engine_error =
            |e: stratosdb_engine::EngineError| ChainError::Unavailable(e.to_string());
        if last.root == Some(self.shard.root().map_err(engine_error)?) {
            return Ok(None);
        }
        // A mark newer than the ledger's next epoch (the ledger folder was
        // replaced) cannot be followed by an older one: number on from it.
        let epoch = match self.shard.latest_anchor_mark() {
            Some(mark) if mark.epoch > last.epoch + 1 => mark.epoch + 1,
            _ => last.epoch + 1,
        };
        let root = self
            .shard
            .record_anchor_mark(epoch)
            .map_err(engine_error)?
            .root;
        // The ledger must never hold a root the folder could lose in a crash.
        self.engine.flush().map_err(engine_error)?;
        let payload = AnchorPayload {
            cluster_id: self.cluster_id,
            epoch,
            cluster_root: leaf(epoch, root).hash(),
            leaf_count: 1,
            previous: last.reference.map(|r| r.hash()).unwrap_or([0; 32]),
        };
        let submission = self.ledger.prepare(&payload, None)?;
        self.ledger.send(&submission)?;
        match self.ledger.status(&submission)? {
            SubmissionStatus::Included(reference) => {
                *last = Last {
                    epoch,
                    reference: Some(reference),
                    cluster_root: payload.cluster_root,
                    root: Some(root),
                };
                Ok(Some(reference))
            }
            other => Err(ChainError::Refused(format!(
                "epoch {epoch} is not on the ledger after sending it: {other:?}"
            ))),
        }
    }
}

/// Proofs of the embedded database's reads: its one leaf per epoch names no
/// collection and has the epoch as its index; a mark's epoch is anchored
/// when it is the last anchored epoch and its leaf's hash is the anchored
/// cluster root (a tree of one leaf).
impl stratosdb_query::AnchorLookup for Anchorer {
    fn anchor_of(&self, shard_leaf: &ShardLeaf, epoch: u64) -> Option<AnchorProof> {
        let last = self.last.lock();
        let reference = last.reference?;
        if last.epoch != epoch || shard_leaf.hash() != last.cluster_root {
            return None;
        }
        Some(AnchorProof {
            epoch,
            cluster_root: last.cluster_root,
            reference: reference.to_string(),
            leaf_proof: LeafProof::new(std::slice::from_ref(shard_leaf), 0).ok()?,
        })
    }

    fn leaf_of(&self, _collection: &str, _shard: u32, mark: &AnchorMark) -> ShardLeaf {
        leaf(mark.epoch, mark.root)
    }
}

/// Anchors every `interval` while it lives (when something changed); stops
/// when dropped.
pub struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// `report` is told of each failure (the ticker goes on).
    pub fn start(
        anchorer: Arc<Anchorer>,
        interval: Duration,
        report: impl Fn(ChainError) + Send + 'static,
    ) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                if let Err(e) = anchorer.anchor_if_changed() {
                    report(e);
                }
            }
        });
        Ticker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use stratosdb_engine::{EngineConfig, Value};

    use super::*;

    fn open(data: &Path) -> (Engine, Anchorer) {
        let engine = Engine::open(data, EngineConfig::default()).unwrap();
        let shard = engine.shard(0).unwrap();
        let anchorer = Anchorer::open(data, engine.clone(), shard).unwrap();
        (engine, anchorer)
    }

    fn insert(engine: &Engine, id: &str) {
        let shard = engine.shard(0).unwrap();
        let _ = shard.create_collection("c");
        let doc = Value::from_json_str(&format!(r#"{{"_id":"{id}"}}"#)).unwrap();
        shard.insert("c", doc).unwrap();
    }

    #[test]
    fn an_epoch_only_when_the_root_changed_and_the_leaf_is_the_documented_one() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, anchorer) = open(dir.path());
        assert_eq!(anchorer.anchor_if_changed().unwrap(), None);
        insert(&engine, "a");
        let first = anchorer.anchor_if_changed().unwrap().expect("epoch 1");
        assert_eq!(anchorer.anchor_if_changed().unwrap(), None);
        let root = engine.shard(0).unwrap().root().unwrap();
        let anchors = cluster_anchors(anchorer.ledger(), &anchorer.cluster_id()).unwrap();
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].1.cluster_root, leaf(1, root).hash());
        drop((engine, anchorer));
        // Reopened: the anchored root is known, the next epoch names epoch 1.
        let (engine, anchorer) = open(dir.path());
        assert_eq!(anchorer.anchor_if_changed().unwrap(), None);
        insert(&engine, "b");
        anchorer.anchor_if_changed().unwrap().expect("epoch 2");
        let anchors = cluster_anchors(anchorer.ledger(), &anchorer.cluster_id()).unwrap();
        assert_eq!(anchors[1].1.epoch, 2);
        assert_eq!(anchors[1].1.previous, first.hash());
    }

    /// A folder whose ledger was removed: its shard's marks are newer than
    /// the new ledger's epochs, so the epochs number on from the marks.
    #[test]
    fn a_replaced_ledger_numbers_on_from_the_marks() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, anchorer) = open(dir.path());
        insert(&engine, "a");
        for _ in 0..3 {
            insert(&engine, &format!("{}", rand::random::<u32>()));
            anchorer.anchor_if_changed().unwrap().expect("an epoch");
        }
        drop((engine, anchorer));
        std::fs::remove_dir_all(dir.path().join(LEDGER_DIR)).unwrap();
        let (engine, anchorer) = open(dir.path());
        insert(&engine, "b");
        anchorer.anchor_if_changed().unwrap().expect("an epoch");
        let anchors = cluster_anchors(anchorer.ledger(), &anchorer.cluster_id()).unwrap();
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].1.epoch, 4);
    }

    #[test]
    fn the_ticker_anchors_changes_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, anchorer) = open(dir.path());
        let anchorer = Arc::new(anchorer);
        let ticker = Ticker::start(anchorer.clone(), Duration::from_millis(20), |e| {
            panic!("anchoring: {e}")
        });
        insert(&engine, "a");
        let started = Instant::now();
        while anchorer.ledger().height().unwrap() == 0
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(ticker);
        assert_eq!(anchorer.ledger().height().unwrap(), 1);
    }
}
