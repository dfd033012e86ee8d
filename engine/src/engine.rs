//! The engine: one store, many shards, and the group commit that makes writes
//! durable many at a time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::document::Limits;
use crate::shard::{Durability, Shard, ShardId};
use crate::storage::{KvStore, KvTree, SledStore, WriteBatch};
use crate::{EngineError, Result};

/// Settings of an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub limits: Limits,
    /// Bytes of sled page cache.
    pub cache_bytes: u64,
    /// Largest raft command [`Shard::apply`] will decode.
    pub max_command_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            cache_bytes: 256 << 20,
            max_command_bytes: 64 << 20,
        }
    }
}

/// The storage engine: documents on a [`KvStore`], split into shards.
///
/// ```
/// use stratosdb_engine::{Engine, IndexSpec, IndexRange, Value};
/// let engine = Engine::open_temporary().unwrap();
/// let shard = engine.shard(0).unwrap();
/// shard.create_collection("users").unwrap();
/// shard.create_index("users", IndexSpec::new("by_age", &["age"])).unwrap();
/// for (id, age) in [("a", 31), ("b", 40), ("c", 25)] {
///     let doc = Value::from_json_str(&format!(r#"{{"_id":"{id}","age":{age}}}"#)).unwrap();
///     shard.insert("users", doc).unwrap();
/// }
/// let ids: Vec<String> = shard
///     .index_scan("users", "by_age", &IndexRange::all(), false)
///     .unwrap()
///     .collect::<Result<_, _>>()
///     .unwrap();
/// assert_eq!(ids, ["c", "a", "b"]);
/// ```
pub struct Engine<S: KvStore = SledStore> {
    shared: Arc<Shared<S>>,
    /// Open shards. Kept here, not in `Shared`, which every shard points to:
    /// that would be a reference cycle and the store would never close.
    shards: Arc<Mutex<HashMap<ShardId, Shard<S>>>>,
}

impl<S: KvStore> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            shared: self.shared.clone(),
            shards: self.shards.clone(),
        }
    }
}

pub(crate) struct Shared<S: KvStore> {
    pub store: S,
    pub config: EngineConfig,
    /// Maps a shard to the tree that holds it (changed by snapshot import).
    pub directory: S::Tree,
    commit: GroupCommit,
}

const DIRECTORY_TREE: &str = "shard-directory";

impl Engine<SledStore> {
    /// Opens (or creates) the engine's files in `dir`.
    pub fn open(dir: impl AsRef<Path>, config: EngineConfig) -> Result<Self> {
        let store = SledStore::open(dir.as_ref(), config.cache_bytes)?;
        Engine::with_store(store, config)
    }

    /// An engine in a temporary folder that disappears when it is dropped.
    pub fn open_temporary() -> Result<Self> {
        Engine::with_store(SledStore::temporary()?, EngineConfig::default())
    }
}

impl<S: KvStore> Engine<S> {
    /// An engine over any store.
    pub fn with_store(store: S, config: EngineConfig) -> Result<Self> {
        let directory = store.open_tree(DIRECTORY_TREE)?;
        let engine = Engine {
            shared: Arc::new(Shared {
                store,
                config,
                directory,
                commit: GroupCommit::default(),
            }),
            shards: Arc::new(Mutex::new(HashMap::new())),
        };
        engine.remove_abandoned_trees()?;
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The shard with this id, created empty if it does not exist.
    pub fn shard(&self, id: ShardId) -> Result<Shard<S>> {
        let mut shards = self.shards.lock();
        if let Some(shard) = shards.get(&id) {
            return Ok(shard.clone());
        }
        let tree_name = match self.shared.directory.get(&id.to_be_bytes())? {
            Some(name) => String::from_utf8(name.as_ref().to_vec())
                .map_err(|_| EngineError::Corruption("shard directory".into()))?,
            None => {
                let name = tree_name(id, 0);
                let mut batch = WriteBatch::default();
                batch.put(id.to_be_bytes().to_vec(), name.clone().into_bytes());
                self.shared.directory.apply(batch)?;
                name
            }
        };
        let tree = self.shared.store.open_tree(&tree_name)?;
        let shard = Shard::open(id, self.shared.clone(), tree)?;
        shards.insert(id, shard.clone());
        Ok(shard)
    }

    /// Ids of the shards that exist.
    pub fn shard_ids(&self) -> Result<Vec<ShardId>> {
        let mut ids = Vec::new();
        for item in self.shared.directory.range(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        ) {
            let (k, _) = item?;
            if let Ok(bytes) = <[u8; 4]>::try_from(k.as_ref()) {
                ids.push(u32::from_be_bytes(bytes));
            }
        }
        Ok(ids)
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.shared.wait_durable(Durability::Sync).map(|_| ())
    }

    /// Trees left behind by an import that did not finish, or replaced by one
    /// that did: the directory does not point at them.
    fn remove_abandoned_trees(&self) -> Result<()> {
        let mut live = std::collections::HashSet::new();
        for item in self.shared.directory.range(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            false,
        ) {
            live.insert(item?.1.as_ref().to_vec());
        }
        for name in self.shared.store.tree_names()? {
            if name.starts_with("shard-")
                && name != DIRECTORY_TREE
                && !live.contains(name.as_bytes())
            {
                self.shared.store.drop_tree(&name)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn tree_name(id: ShardId, generation: u64) -> String {
    format!("shard-{id}-gen-{generation}")
}

impl<S: KvStore> Shared<S> {
    /// Records that a write was applied (it is now covered by the next flush).
    pub fn note_write(&self) {
        self.commit.state.lock().written += 1;
    }

    /// Waits, if asked, until everything written so far is durable. Returns
    /// whether it is. Concurrent waiters share one flush (group commit).
    pub fn wait_durable(&self, durability: Durability) -> Result<bool> {
        if durability == Durability::Buffered {
            return Ok(false);
        }
        let commit = &self.commit;
        let mut state = commit.state.lock();
        let target = state.written;
        loop {
            if state.durable >= target {
                return Ok(true);
            }
            if state.flushing {
                commit.flushed.wait(&mut state);
                continue;
            }
            // Become the flusher for everyone waiting now.
            state.flushing = true;
            let covered = state.written;
            drop(state);
            let result = self.store.flush();
            state = commit.state.lock();
            state.flushing = false;
            if result.is_ok() {
                state.durable = state.durable.max(covered);
            }
            commit.flushed.notify_all();
            result?;
        }
    }
}

#[derive(Default)]
struct GroupCommit {
    state: Mutex<CommitState>,
    flushed: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// Writes applied so far.
    written: u64,
    /// Writes known to be on disk.
    durable: u64,
    flushing: bool,
}
