//! The engine: one store, many shards, and durability through group commit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Result;
use crate::commit::{Durability, GroupCommit};
use crate::config::EngineConfig;
use crate::directory::Directory;
use crate::shard::{Shard, ShardId};
use crate::shared::Shared;
use crate::storage::{KvStore, SledStore};

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
        let directory = Directory::open(&store)?;
        directory.remove_abandoned_trees(&store)?;
        Ok(Engine {
            shared: Arc::new(Shared {
                store,
                config,
                directory,
                commit: GroupCommit::default(),
            }),
            shards: Arc::new(Mutex::new(HashMap::new())),
        })
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
        let tree_name = self.shared.directory.current_tree(id)?;
        let tree = self.shared.store.open_tree(&tree_name)?;
        let shard = Shard::open(id, self.shared.clone(), tree)?;
        shards.insert(id, shard.clone());
        Ok(shard)
    }

    /// Ids of the shards that exist.
    pub fn shard_ids(&self) -> Result<Vec<ShardId>> {
        self.shared.directory.shard_ids()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.shared.wait_durable(Durability::Sync).map(|_| ())
    }
}
