//! The engine: one store, many shards, and durability through group commit.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::commit::{Durability, GroupCommit};
use crate::config::EngineConfig;
use crate::directory::Directory;
use crate::limits::GARBAGE_BATCH;
use crate::shard::{Shard, ShardId};
use crate::shared::Shared;
use crate::storage::{DefaultStore, KvStore, KvTree, WriteBatch};
use crate::{EngineError, Result};

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
pub struct Engine<S: KvStore = DefaultStore> {
    shared: Arc<Shared<S>>,
    /// Open shards, and those being removed. Kept here, not in `Shared`,
    /// which every shard points to: that would be a reference cycle and the
    /// store would never close.
    shards: Arc<Mutex<Shards<S>>>,
}

struct Shards<S: KvStore> {
    open: HashMap<ShardId, Shard<S>>,
    /// Shards [`Engine::remove_shard`] is deleting: not opened meanwhile.
    removing: HashSet<ShardId>,
}

impl<S: KvStore> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            shared: self.shared.clone(),
            shards: self.shards.clone(),
        }
    }
}

impl Engine<DefaultStore> {
    /// Opens (or creates) the engine's files in `dir`.
    pub fn open(dir: impl AsRef<Path>, config: EngineConfig) -> Result<Self> {
        let store = DefaultStore::open(dir.as_ref(), &config)?;
        Engine::with_store(store, config)
    }

    /// An engine in a temporary folder that disappears when it is dropped.
    pub fn open_temporary() -> Result<Self> {
        let config = EngineConfig::default();
        Engine::with_store(DefaultStore::temporary(&config)?, config)
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
                staging_seq: Default::default(),
            }),
            shards: Arc::new(Mutex::new(Shards {
                open: HashMap::new(),
                removing: HashSet::new(),
            })),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The shard with this id, created empty if it does not exist.
    pub fn shard(&self, id: ShardId) -> Result<Shard<S>> {
        let mut shards = self.shards.lock();
        if let Some(shard) = shards.open.get(&id) {
            return Ok(shard.clone());
        }
        if shards.removing.contains(&id) {
            return Err(EngineError::ShardBeingRemoved(id));
        }
        let tree_name = self.shared.directory.current_tree(id)?;
        let tree = self.shared.store.open_tree(&tree_name)?;
        let shard = Shard::open(id, self.shared.clone(), tree)?;
        shards.open.insert(id, shard.clone());
        Ok(shard)
    }

    /// Deletes a shard and everything stored in it; returns whether it
    /// existed. It leaves the directory first, durably (after a crash its
    /// tree is abandoned and dropped when the engine opens), then its keys
    /// are deleted in batches of [`GARBAGE_BATCH`], as a dropped collection's
    /// are, so other shards' writes go on between them, and the emptied tree
    /// is dropped. The shard cannot be opened meanwhile
    /// ([`EngineError::ShardBeingRemoved`]); handles on it that callers
    /// still hold must not be used any more. A shard opened again later is
    /// a new, empty one.
    ///
    /// ```
    /// use stratosdb_engine::Engine;
    /// let engine = Engine::open_temporary().unwrap();
    /// engine.shard(3).unwrap().create_collection("c").unwrap();
    /// assert_eq!(engine.shard_ids().unwrap(), [3]);
    /// assert!(engine.remove_shard(3).unwrap());
    /// assert!(engine.shard_ids().unwrap().is_empty());
    /// assert!(engine.shard(3).unwrap().collections().is_empty());
    /// ```
    pub fn remove_shard(&self, id: ShardId) -> Result<bool> {
        {
            let mut shards = self.shards.lock();
            shards.open.remove(&id);
            if !shards.removing.insert(id) {
                return Err(EngineError::ShardBeingRemoved(id));
            }
        }
        let result = self.delete_shard(id);
        self.shards.lock().removing.remove(&id);
        result
    }

    fn delete_shard(&self, id: ShardId) -> Result<bool> {
        let shared = &self.shared;
        let Some(name) = shared.directory.existing_tree(id)? else {
            return Ok(false);
        };
        shared.directory.remove(id)?;
        self.flush()?;
        let tree = shared.store.open_tree(&name)?;
        loop {
            let mut batch = WriteBatch::default();
            for item in tree
                .range(Bound::Unbounded, Bound::Unbounded, false)
                .take(GARBAGE_BATCH)
            {
                batch.delete(item?.0.as_ref().to_vec());
            }
            if batch.is_empty() {
                break;
            }
            tree.apply(batch)?;
            shared.note_write();
        }
        shared.store.drop_tree(&name)?;
        Ok(true)
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
