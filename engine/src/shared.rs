//! What every shard of an engine shares: the store, the settings, the shard
//! directory and the group commit. Shards point here; the engine owns it.

use crate::Result;
use crate::commit::{Durability, GroupCommit};
use crate::config::EngineConfig;
use crate::directory::Directory;
use crate::storage::KvStore;

pub(crate) struct Shared<S: KvStore> {
    pub store: S,
    pub config: EngineConfig,
    pub directory: Directory<S::Tree>,
    pub commit: GroupCommit,
    /// Snapshot imports prepared so far: each gets a tree of its own.
    pub staging_seq: std::sync::atomic::AtomicU64,
}

impl<S: KvStore> Shared<S> {
    /// Records that a write was applied (it is now covered by the next flush).
    pub fn note_write(&self) {
        self.commit.note_write();
    }

    /// Waits, if asked, until everything written so far is durable. Returns
    /// whether it is. Concurrent waiters share one flush (group commit).
    pub fn wait_durable(&self, durability: Durability) -> Result<bool> {
        self.commit.wait_durable(durability, || self.store.flush())
    }
}
