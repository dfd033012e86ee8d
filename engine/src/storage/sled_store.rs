//! [`KvStore`] on sled 0.34. sled persists in the background every 500 ms; a
//! durable write needs [`KvStore::flush`], which the engine groups (group commit).
//!
//! sled's atomic batch (`Tree::apply_batch`) rolls its IO buffer before and
//! after the batch (so recovery finds it whole): each roll is a write of the
//! buffer by a sled thread. That is what a batch costs, more than its keys,
//! so batches are few and large: the engine runs this store behind a
//! write-back buffer (`write_back.rs`) that stores many applies in one
//! [`KvStore::apply_all`], and a single key goes without one.

use std::ops::Bound;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{KvIter, KvStore, KvTree, WriteBatch};
use crate::{EngineError, Result};

fn storage_err(e: sled::Error) -> EngineError {
    match e {
        sled::Error::Corruption { .. } => EngineError::Corruption(e.to_string()),
        other => EngineError::Storage(other.to_string()),
    }
}

/// How long a process reopening a folder it just closed waits for sled to
/// release it.
const SAME_PROCESS_REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A sled database on disk (or in a temporary folder).
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    /// Opens or creates the database in `dir`: a missing or empty folder, or
    /// a stratosdb data folder not open in another process (see
    /// [`crate::data_dir`]).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        crate::data_dir::prepare(dir)?;
        // sled lets go of its folder lock when its flusher thread drops the
        // last handle, a moment after the database was dropped: a reopen by
        // the same process (a restart in place) waits for that, briefly.
        let deadline = std::time::Instant::now() + SAME_PROCESS_REOPEN_WAIT;
        loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .open();
            let e = match opened {
                Ok(db) => {
                    crate::data_dir::claim(dir);
                    return Ok(SledStore { db });
                }
                Err(e) => e,
            };
            match crate::data_dir::in_use(dir, &e.to_string()) {
                Some(crate::data_dir::DataDirError::InUse { pid, .. })
                    if pid == Some(std::process::id()) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Some(in_use) => return Err(in_use.into()),
                None => return Err(storage_err(e)),
            }
        }
    }

    /// A database in a temporary folder, removed when dropped.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(storage_err)?;
        Ok(SledStore { db })
    }
}

impl KvStore for SledStore {
    type Tree = SledTree;

    fn open_tree(&self, name: &str) -> Result<SledTree> {
        Ok(SledTree {
            tree: self.db.open_tree(name).map_err(storage_err)?,
        })
    }

    fn tree_names(&self) -> Result<Vec<String>> {
        Ok(self
            .db
            .tree_names()
            .into_iter()
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .collect())
    }

    fn drop_tree(&self, name: &str) -> Result<()> {
        self.db.drop_tree(name).map_err(storage_err)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(storage_err)?;
        Ok(())
    }

    fn apply_all(&self, mut batches: Vec<(&SledTree, WriteBatch)>) -> Result<()> {
        batches.retain(|(_, batch)| !batch.is_empty());
        if batches.len() <= 1 {
            return match batches.pop() {
                Some((tree, batch)) => tree.apply(batch),
                None => Ok(()),
            };
        }
        // A transaction over the trees: sled writes it as one log batch (one
        // pair of IO buffer rolls, see `SledTree::apply`), where a batch per
        // tree would roll the buffer twice per tree.
        let trees: Vec<&sled::Tree> = batches.iter().map(|(t, _)| &t.tree).collect();
        let sled_batches: Vec<sled::Batch> = batches
            .into_iter()
            .map(|(_, batch)| to_sled_batch(batch))
            .collect();
        trees
            .as_slice()
            .transaction(|views| {
                for (view, batch) in views.iter().zip(&sled_batches) {
                    view.apply_batch(batch)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => storage_err(e),
                TransactionError::Abort(()) => {
                    EngineError::Storage("a multi-tree write was aborted".into())
                }
            })
    }
}

fn to_sled_batch(batch: WriteBatch) -> sled::Batch {
    let mut b = sled::Batch::default();
    for (k, v) in batch.ops {
        match v {
            Some(v) => b.insert(k, v),
            None => b.remove(k),
        }
    }
    b
}

/// One sled tree.
#[derive(Clone)]
pub struct SledTree {
    tree: sled::Tree,
}

impl KvTree for SledTree {
    type Bytes = sled::IVec;

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.tree.get(key).map_err(storage_err)
    }

    fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> KvIter<sled::IVec> {
        let iter = self.tree.range::<Vec<u8>, _>((lower, upper));
        let map = |r: sled::Result<(sled::IVec, sled::IVec)>| r.map_err(storage_err);
        if reverse {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }

    fn apply(&self, mut batch: WriteBatch) -> Result<()> {
        // One key is atomic by itself, and a plain insert costs a fraction of
        // sled's batch (which takes a global lock and seals a log batch).
        if batch.ops.len() == 1
            && let Some((k, v)) = batch.ops.pop()
        {
            return match v {
                Some(v) => self.tree.insert(k, v).map(|_| ()),
                None => self.tree.remove(k).map(|_| ()),
            }
            .map_err(storage_err);
        }
        self.tree
            .apply_batch(to_sled_batch(batch))
            .map_err(storage_err)
    }
}
