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
        self.prove_at(collection, ids, false)
    }

    /// [`Shard::prove_anchored_many`] against the mark before the latest:
    /// while the latest mark's epoch is not anchored yet (it is being
    /// sealed or submitted, which with a short anchor interval is much of
    /// the time), the one before it usually is. `None` for a document
    /// changed since that mark, or when its view is not kept (after a
    /// snapshot, until the next mark).
    ///
    /// ```
    /// use stratosdb_engine::{Durability, Engine, Op, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// let doc = |s: &str| Value::from_json_str(s).unwrap();
    /// shard.create_collection("c").unwrap();
    /// shard.insert("c", doc(r#"{"_id":"a","n":1}"#)).unwrap();
    /// let first = shard.record_anchor_mark(1).unwrap();
    /// let a2 = Op::Upsert { collection: "c".into(), doc: doc(r#"{"_id":"a","n":2}"#) };
    /// shard.write(vec![a2], Durability::Buffered).unwrap();
    /// shard.record_anchor_mark(2).unwrap();
    ///
    /// // a changed between the marks: proved to mark 2, not to mark 1.
    /// assert!(shard.prove_anchored_previous_many("c", &["a"]).unwrap()[0].is_none());
    /// let b = shard.prove_anchored_previous_many("c", &["b"]).unwrap().pop().unwrap().unwrap();
    /// assert_eq!(b.mark, first);
    /// b.proof.verify(&first.root, None).unwrap();
    /// ```
    pub fn prove_anchored_previous_many<I: AsRef<str>>(
        &self,
        collection: &str,
        ids: &[I],
    ) -> Result<Vec<Option<AnchoredProof>>> {
        self.prove_at(collection, ids, true)
    }

    fn prove_at<I: AsRef<str>>(
        &self,
        collection: &str,
        ids: &[I],
        previous: bool,
    ) -> Result<Vec<Option<AnchoredProof>>> {
        // Holding the trie's lock keeps writers out, so documents, the mark
        // and its view agree.
        let merkle = self.inner.merkle.lock();
        let mark = match previous {
            false => self.latest_anchor_mark(),
            true => self.inner.marks.read().before_latest(),
        };
        let Some(mark) = mark else {
            return Ok(ids.iter().map(|_| None).collect());
        };
        let number = self.collection_number(collection).ok();
        let tree = self.tree();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id = id.as_ref();
            let at = match previous {
                false => merkle.prove_at_mark(collection, id),
                true => merkle.prove_at_previous_mark(collection, id),
            };
            let Some((epoch, proof, at_mark)) = at else {
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
    /// a new mark keeps the records of the mark before it (its view is
    /// rebuilt from them) and leaves older ones to be deleted a chunk per
    /// write.
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

        // Mark 1 is now the previous mark: its records stay.
        shard.record_anchor_mark(2).unwrap();
        let write = |i, n| {
            shard
                .write(vec![upsert(i, n)], Durability::Buffered)
                .unwrap()
        };
        write(5, 3);
        write(6, 3);
        assert_eq!(records(&shard), vec![(1, many), (2, 2)]);
        // Mark 3 makes mark 1's records stale: a chunk per batch goes.
        shard.record_anchor_mark(3).unwrap();
        assert_eq!(
            records(&shard),
            vec![(1, many - MARK_CHANGE_CLEANUP), (2, 2)]
        );
        write(7, 4);
        assert_eq!(records(&shard), vec![(1, 100), (2, 2), (3, 1)]);
        write(8, 4);
        assert_eq!(records(&shard), vec![(2, 2), (3, 2)]);
        assert!(shard.prove_anchored("c", "d9").unwrap().is_some());
        assert!(shard.prove_anchored("c", "d8").unwrap().is_none());
        // Against mark 2: d5 and d6 changed before mark 3, d7 after it.
        let at_2 = shard
            .prove_anchored_previous_many("c", &["d5", "d7", "d9"])
            .unwrap();
        assert!(at_2[0].is_none() && at_2[1].is_none());
        assert_eq!(at_2[2].as_ref().unwrap().mark.epoch, 2);
    }

    /// Checks that `shard`'s previous-mark proofs of `ids` are those of
    /// `at_mark` (a shard holding the mark's documents), for every id but
    /// `changed` (changed since that mark: none).
    fn assert_previous(shard: &Shard, at_mark: &Shard, ids: &[String], changed: &[&str]) {
        let proofs = shard.prove_anchored_previous_many("c", ids).unwrap();
        let mark = shard.anchor_mark(1).unwrap().unwrap();
        assert_eq!(mark.root, at_mark.root().unwrap());
        for (id, p) in ids.iter().zip(proofs) {
            match p {
                Some(p) => {
                    assert!(!changed.contains(&id.as_str()), "{id}");
                    assert_eq!(p.mark, mark);
                    assert_eq!(p.proof, at_mark.prove("c", id).unwrap().1, "{id}");
                }
                None => assert!(changed.contains(&id.as_str()), "{id}"),
            }
        }
    }

    /// The previous mark's view proves what a shard holding the documents
    /// of that mark proves, before and after a restart (rebuilt from both
    /// marks' records), with writes in the batch that made the latest mark,
    /// before and after it.
    #[test]
    fn the_previous_marks_view_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
        let first: Vec<Op> = (0..30).map(|i| upsert(i, 0)).collect();
        let at_1 = Engine::open_temporary().unwrap().shard(0).unwrap();
        at_1.create_collection("c").unwrap();
        at_1.write(first.clone(), Durability::Buffered).unwrap();
        let changed = ["d0", "d1", "d2", "d3", "d4", "d10", "d11", "d35", "d36"];
        {
            let engine = Engine::open(dir.path(), crate::EngineConfig::default()).unwrap();
            let shard = engine.shard(0).unwrap();
            shard.create_collection("c").unwrap();
            shard.write(first, Durability::Buffered).unwrap();
            shard.record_anchor_mark(1).unwrap();
            let between: Vec<Op> = (0..5).map(|i| upsert(i, 1)).collect();
            shard.write(between, Durability::Buffered).unwrap();
            // One batch: changes, the mark of epoch 2, more changes.
            let entry = |ops: Vec<Op>| crate::Command { ops }.encode();
            let before = entry(vec![upsert(10, 2), upsert(35, 2)]);
            let mark = entry(vec![Op::AnchorMark { epoch: 2 }]);
            let after = entry(vec![upsert(11, 3), upsert(0, 3), upsert(36, 3)]);
            shard
                .apply_batch(&[(100, &before), (101, &mark), (102, &after)])
                .unwrap();
            assert_previous(&shard, &at_1, &ids, &changed);
            engine.flush().unwrap();
        }
        let reopened = Engine::open(dir.path(), crate::EngineConfig::default())
            .unwrap()
            .shard(0)
            .unwrap();
        assert_previous(&reopened, &at_1, &ids, &changed);
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
