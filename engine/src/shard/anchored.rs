//! Anchor marks of a shard (`crate::anchor`), and proofs against the latest.

use super::Shard;
use crate::anchor::AnchorMark;
use crate::storage::KvStore;
use crate::{Durability, EngineError, Op, Result};

impl<S: KvStore> Shard<S> {
    /// The mark of `epoch`, if this shard recorded one (and it is among the
    /// last [`crate::MARK_HISTORY`] epochs).
    ///
    /// ```
    /// use stratosdb_engine::{ApplyOutcome, Command, Engine, Op};
    /// let shard = Engine::open_temporary().unwrap().shard(1).unwrap();
    /// let entry = Command { ops: vec![Op::AnchorMark { epoch: 7 }] }.encode();
    /// let ApplyOutcome::Applied(outcomes) = shard.apply(12, &entry).unwrap() else { panic!() };
    /// let mark = outcomes[0].mark.unwrap();
    /// assert_eq!((mark.epoch, mark.raft_index), (7, 12));
    /// assert_eq!(shard.anchor_mark(7).unwrap(), Some(mark));
    /// assert_eq!(shard.latest_anchor_mark(), Some(mark));
    /// ```
    pub fn anchor_mark(&self, epoch: u64) -> Result<Option<AnchorMark>> {
        Ok(self.inner.marks.read().get(epoch))
    }

    /// The mark of the newest epoch this shard recorded.
    pub fn latest_anchor_mark(&self) -> Option<AnchorMark> {
        self.inner.marks.read().latest()
    }

    /// The marks kept, oldest epoch first.
    pub fn anchor_marks(&self) -> Vec<AnchorMark> {
        self.inner.marks.read().iter().copied().collect()
    }

    /// Records the mark of `epoch` on a shard written directly (the embedded
    /// database; a replicated shard proposes [`Op::AnchorMark`] through its
    /// log instead), durably. Returns the mark, the earlier one if the epoch
    /// was marked before.
    ///
    /// ```
    /// use stratosdb_engine::{Engine, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// shard.create_collection("c").unwrap();
    /// shard.insert("c", Value::from_json_str(r#"{"_id":"a"}"#).unwrap()).unwrap();
    /// let mark = shard.record_anchor_mark(1).unwrap();
    /// assert_eq!(mark.root, shard.root().unwrap());
    /// assert_eq!(shard.record_anchor_mark(1).unwrap(), mark);
    /// ```
    pub fn record_anchor_mark(&self, epoch: u64) -> Result<AnchorMark> {
        let result = self.write(vec![Op::AnchorMark { epoch }], Durability::Sync)?;
        result
            .outcomes
            .first()
            .and_then(|o| o.mark)
            .ok_or_else(|| EngineError::InvalidAnchorMark(format!("epoch {epoch} left no mark")))
    }
}
