//! The storage trait the engine is written against (TiKV's engine_traits idea):
//! an ordered key-value store of named trees with atomic write batches and an
//! explicit durability point. [`SledStore`] is the implementation, behind a
//! [`WriteBack`] buffer ([`DefaultStore`]).

mod sled_store;
mod write_back;

use std::ops::Bound;
use std::path::Path;

pub use sled_store::{SledStore, SledTree};
pub use write_back::{WriteBack, WriteBackTree};

use crate::{EngineConfig, Result};

/// The store an engine runs on: sled behind a write-back buffer.
pub type DefaultStore = WriteBack<SledStore>;

impl WriteBack<SledStore> {
    /// Opens (or creates) the sled database in `dir`, buffered as `config` says.
    pub fn open(dir: &Path, config: &EngineConfig) -> Result<Self> {
        let sled = SledStore::open(dir, config.cache_bytes)?;
        Ok(WriteBack::new(sled, config.write_buffer_bytes))
    }

    /// A database in a temporary folder, removed when dropped.
    pub fn temporary(config: &EngineConfig) -> Result<Self> {
        Ok(WriteBack::new(
            SledStore::temporary()?,
            config.write_buffer_bytes,
        ))
    }
}

/// A store of independent ordered trees; the engine keeps one tree per shard.
pub trait KvStore: Send + Sync + 'static {
    type Tree: KvTree;

    /// Opens a tree, creating it empty if it does not exist.
    fn open_tree(&self, name: &str) -> Result<Self::Tree>;
    /// Names of all trees.
    fn tree_names(&self) -> Result<Vec<String>>;
    /// Removes a tree and its contents.
    fn drop_tree(&self, name: &str) -> Result<()>;
    /// Makes every write applied so far durable. Expensive: batch writes per call.
    fn flush(&self) -> Result<()>;
    /// Applies several trees' batches as ONE atomic write: after a crash, all
    /// or none. Costs about what one tree's batch does, whatever the number
    /// of trees, so a node applying many shards at once writes them together.
    fn apply_all(&self, batches: Vec<(&Self::Tree, WriteBatch)>) -> Result<()>;
}

/// An ordered map from byte strings to byte strings.
pub trait KvTree: Clone + Send + Sync + 'static {
    /// Bytes handed out by reads; a cheap clone, no copy for large values.
    type Bytes: AsRef<[u8]> + Clone + Send + Sync + 'static;

    fn get(&self, key: &[u8]) -> Result<Option<Self::Bytes>>;
    /// Entries with keys in the range, ascending or (with `reverse`) descending.
    fn range(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> KvIter<Self::Bytes>;
    /// Applies all writes of the batch atomically: after a crash, all or none.
    fn apply(&self, batch: WriteBatch) -> Result<()>;
}

/// An iterator over `(key, value)` pairs.
pub type KvIter<B> = Box<dyn Iterator<Item = Result<(B, B)>> + Send>;

/// A set of puts and deletes applied all at once.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
