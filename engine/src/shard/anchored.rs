//! Anchor marks of a shard (`crate::anchor`), and proofs against the latest.

use super::{Shard, decode_stored};
use crate::anchor::{AnchorMark, AnchoredProof};
use crate::keys;
use crate::storage::{KvStore, KvTree};
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

    /// A proof of (`collection`, `id`) against the latest anchor mark's root,
    /// with the document, when the document (or its absence) is the same now
    /// as at the mark. `None` when the shard has no mark or the document
    /// changed since: then prove it with [`Shard::prove`] against the current
    /// root, and present it as not anchored yet.
    ///
    /// The trie as of the mark is kept as its difference from the current one,
    /// so this costs what [`Shard::prove`] costs.
    ///
    /// ```
    /// use stratosdb_engine::{Durability, Engine, Op, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// let doc = |s: &str| Value::from_json_str(s).unwrap();
    /// shard.create_collection("c").unwrap();
    /// shard.insert("c", doc(r#"{"_id":"a","n":1}"#)).unwrap();
    /// shard.insert("c", doc(r#"{"_id":"b","n":1}"#)).unwrap();
    /// let mark = shard.record_anchor_mark(1).unwrap();
    /// let b2 = Op::Upsert { collection: "c".into(), doc: doc(r#"{"_id":"b","n":2}"#) };
    /// shard.write(vec![b2], Durability::Buffered).unwrap();
    ///
    /// let anchored = shard.prove_anchored("c", "a").unwrap().unwrap();
    /// assert_eq!(anchored.mark, mark);
    /// anchored.proof.verify(&mark.root, anchored.doc.as_ref()).unwrap();
    /// // b changed after the mark: prove it against the current root instead.
    /// assert!(shard.prove_anchored("c", "b").unwrap().is_none());
    /// ```
    pub fn prove_anchored(&self, collection: &str, id: &str) -> Result<Option<AnchoredProof>> {
        Ok(self.prove_anchored_many(collection, &[id])?.pop().flatten())
    }

    /// [`Shard::prove_anchored`] for many `_id`s of one collection (a page of
    /// results), all against the same mark; one entry per id, in order.
    pub fn prove_anchored_many<I: AsRef<str>>(
        &self,
        collection: &str,
        ids: &[I],
    ) -> Result<Vec<Option<AnchoredProof>>> {
        // Holding the trie's lock keeps writers out, so documents, the mark
        // and its view agree.
        let merkle = self.inner.merkle.lock();
        let Some(mark) = self.latest_anchor_mark() else {
            return Ok(ids.iter().map(|_| None).collect());
        };
        let number = self.collection_number(collection).ok();
        let tree = self.tree();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id = id.as_ref();
            let Some((epoch, proof, at_mark)) = merkle.prove_at_mark(collection, id) else {
                out.push(None);
                continue;
            };
            let record = match number {
                Some(number) => tree.get(&keys::doc_key(number, id))?,
                None => None,
            };
            let now = match &record {
                Some(record) => Some(
                    keys::split_doc_record(record.as_ref())
                        .ok_or_else(|| EngineError::Corruption("truncated document record".into()))?
                        .0,
                ),
                None => None,
            };
            if epoch != mark.epoch || now != at_mark {
                out.push(None);
                continue;
            }
            let doc = record
                .map(|record| decode_stored(record.as_ref()))
                .transpose()?;
            out.push(Some(AnchoredProof { mark, proof, doc }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use crate::keys::{self, MARK_CHANGE_PREFIX};
    use crate::limits::MARK_CHANGE_CLEANUP;
    use crate::storage::KvTree;
    use crate::{Durability, Engine, Op, Shard, Value};

    /// Stored change records per mark epoch.
    fn records(shard: &Shard) -> Vec<(u64, usize)> {
        let mut out: Vec<(u64, usize)> = Vec::new();
        for item in shard.tree().range(
            Bound::Included(MARK_CHANGE_PREFIX.to_vec()),
            keys::successor_bound(MARK_CHANGE_PREFIX),
            false,
        ) {
            let (key, _) = item.unwrap();
            let epoch = u64::from_be_bytes(key.as_ref()[2..10].try_into().unwrap());
            match out.last_mut() {
                Some((e, n)) if *e == epoch => *n += 1,
                _ => out.push((epoch, 1)),
            }
        }
        out
    }

    fn upsert(i: usize, n: usize) -> Op {
        Op::Upsert {
            collection: "c".into(),
            doc: Value::from_json_str(&format!(r#"{{"_id":"d{i}","n":{n}}}"#)).unwrap(),
        }
    }

    /// Each write records the keys it changes first since the latest mark;
    /// a new mark leaves the older records to be deleted a chunk per write.
    #[test]
    fn older_marks_records_are_deleted_in_chunks() {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        shard.create_collection("c").unwrap();
        let many = MARK_CHANGE_CLEANUP * 2 + 100;
        let ops: Vec<Op> = (0..many).map(|i| upsert(i, 0)).collect();
        shard.write(ops, Durability::Buffered).unwrap();
        assert_eq!(records(&shard), vec![], "no mark yet: nothing recorded");
        shard.record_anchor_mark(1).unwrap();
        let ops: Vec<Op> = (0..many).map(|i| upsert(i, 1)).collect();
        shard.write(ops, Durability::Buffered).unwrap();
        // Changed twice: recorded once, with the hash at the mark.
        shard
            .write(vec![upsert(0, 2)], Durability::Buffered)
            .unwrap();
        assert_eq!(records(&shard), vec![(1, many)]);

        // The mark's own batch deletes a first chunk.
        shard.record_anchor_mark(2).unwrap();
        assert_eq!(records(&shard), vec![(1, many - MARK_CHANGE_CLEANUP)]);
        shard
            .write(vec![upsert(5, 3)], Durability::Buffered)
            .unwrap();
        assert_eq!(records(&shard), vec![(1, 100), (2, 1)]);
        shard
            .write(vec![upsert(6, 3)], Durability::Buffered)
            .unwrap();
        assert_eq!(records(&shard), vec![(2, 2)]);
        assert!(shard.prove_anchored("c", "d7").unwrap().is_some());
        assert!(shard.prove_anchored("c", "d6").unwrap().is_none());
    }

    /// A damaged change record cannot pass for the mark's state: the shard
    /// refuses to open, saying which mark it is.
    #[test]
    fn a_damaged_change_record_is_caught_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
            let shard = engine.shard(0).unwrap();
            shard.create_collection("c").unwrap();
            shard
                .write(vec![upsert(1, 0), upsert(2, 0)], Durability::Buffered)
                .unwrap();
            shard.record_anchor_mark(3).unwrap();
            shard
                .write(vec![upsert(1, 1)], Durability::Buffered)
                .unwrap();
            let key = keys::mark_change_key(3, &stratosdb_proof::hash::key_hash("c", "d1"));
            let mut batch = crate::storage::WriteBatch::default();
            batch.put(key, vec![9; 32]);
            shard.tree().apply(batch).unwrap();
            engine.flush().unwrap();
        }
        let engine = Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
        let err = engine.shard(0).err().unwrap();
        assert_eq!(err.code(), "corruption");
        assert!(err.to_string().contains("anchor mark of epoch 3"), "{err}");
    }
}
