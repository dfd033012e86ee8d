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

    use crate::keys::{self, APPLIED_INDEX_KEY, MARK_CHANGE_PREFIX, MARK_PACK_PREFIX};
    use crate::limits::{MARK_CHANGE_CLEANUP, OPEN_MARK_RECORDS};
    use crate::storage::{KvTree, WriteBatch};
    use crate::{Command, Durability, Engine, EngineConfig, Op, Shard, Value};

    /// Stored keys holding change records, per mark epoch, in each layout:
    /// `(epoch, keys of one record each, packs)`.
    fn record_keys(shard: &Shard) -> Vec<(u64, usize, usize)> {
        let mut out: Vec<(u64, usize, usize)> = Vec::new();
        for (prefix, packed) in [(MARK_CHANGE_PREFIX, false), (MARK_PACK_PREFIX, true)] {
            for item in shard.tree().range(
                Bound::Included(prefix.to_vec()),
                keys::successor_bound(prefix),
                false,
            ) {
                let (key, _) = item.unwrap();
                let epoch = u64::from_be_bytes(key.as_ref()[2..10].try_into().unwrap());
                let at = match out.iter().position(|(e, _, _)| *e == epoch) {
                    Some(at) => at,
                    None => {
                        out.push((epoch, 0, 0));
                        out.len() - 1
                    }
                };
                match packed {
                    false => out[at].1 += 1,
                    true => out[at].2 += 1,
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Bytes of the applied index's stored value.
    fn applied_value_len(shard: &Shard) -> usize {
        shard
            .tree()
            .get(APPLIED_INDEX_KEY)
            .unwrap()
            .map_or(0, |v| v.as_ref().len())
    }

    fn upsert(i: usize, n: usize) -> Op {
        Op::Upsert {
            collection: "c".into(),
            doc: Value::from_json_str(&format!(r#"{{"_id":"d{i}","n":{n}}}"#)).unwrap(),
        }
    }

    /// A direct write packs the keys it changes first since the latest mark
    /// into one key; a new mark keeps the records of the mark before it (its
    /// view is rebuilt from them) and leaves older ones to be deleted a few
    /// keys per write.
    #[test]
    fn older_marks_records_are_deleted_a_few_keys_per_write() {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        shard.create_collection("c").unwrap();
        let many = 300;
        let ops: Vec<Op> = (0..many).map(|i| upsert(i, 0)).collect();
        shard.write(ops, Durability::Buffered).unwrap();
        assert_eq!(record_keys(&shard), vec![], "no mark yet: nothing recorded");
        shard.record_anchor_mark(1).unwrap();
        let ops: Vec<Op> = (0..many).map(|i| upsert(i, 1)).collect();
        shard.write(ops, Durability::Buffered).unwrap();
        let write = |i, n| {
            shard
                .write(vec![upsert(i, n)], Durability::Buffered)
                .unwrap()
        };
        // Changed twice: recorded once, with the hash at the mark.
        write(0, 2);
        assert_eq!(record_keys(&shard), vec![(1, 0, 1)]);
        let lone = 2 * MARK_CHANGE_CLEANUP + 5;
        for i in 0..lone {
            write(many + i, 0);
        }
        assert_eq!(record_keys(&shard), vec![(1, 0, 1 + lone)]);
        assert_eq!(
            applied_value_len(&shard),
            0,
            "direct writes: no applied index"
        );

        // Mark 1 is now the previous mark: its records stay.
        shard.record_anchor_mark(2).unwrap();
        write(5, 3);
        write(6, 3);
        assert_eq!(record_keys(&shard), vec![(1, 0, 1 + lone), (2, 0, 2)]);
        // Mark 3 makes mark 1's records stale: a few keys per batch go.
        shard.record_anchor_mark(3).unwrap();
        assert_eq!(
            record_keys(&shard),
            vec![(1, 0, 1 + lone - MARK_CHANGE_CLEANUP), (2, 0, 2)]
        );
        write(7, 4);
        assert_eq!(record_keys(&shard), vec![(1, 0, 6), (2, 0, 2), (3, 0, 1)]);
        write(8, 4);
        assert_eq!(record_keys(&shard), vec![(2, 0, 2), (3, 0, 2)]);
        assert!(shard.prove_anchored("c", "d9").unwrap().is_some());
        assert!(shard.prove_anchored("c", "d8").unwrap().is_none());
        // Against mark 2: d5 and d6 changed before mark 3, d7 after it.
        let at_2 = shard
            .prove_anchored_previous_many("c", &["d5", "d7", "d9"])
            .unwrap();
        assert!(at_2[0].is_none() && at_2[1].is_none());
        assert_eq!(at_2[2].as_ref().unwrap().mark.epoch, 2);
    }

    /// Checks that `shard`'s proofs of `ids` against the mark of `epoch`
    /// (the latest, or with `previous` the one before) are those of `at`
    /// (a shard holding the mark's documents): one exactly for each
    /// document that is the same now as at the mark.
    fn assert_view(shard: &Shard, at: &Shard, epoch: u64, previous: bool, ids: &[String]) {
        let mark = shard.anchor_mark(epoch).unwrap().unwrap();
        assert_eq!(mark.root, at.root().unwrap());
        let proofs = match previous {
            false => shard.prove_anchored_many("c", ids),
            true => shard.prove_anchored_previous_many("c", ids),
        };
        for (id, p) in ids.iter().zip(proofs.unwrap()) {
            let same = shard.get("c", id).unwrap() == at.get("c", id).unwrap();
            match p {
                Some(p) => {
                    assert!(same, "{id}: proved against mark {epoch}, changed since");
                    assert_eq!(p.mark, mark);
                    assert_eq!(p.proof, at.prove("c", id).unwrap().1, "{id}");
                }
                None => assert!(!same, "{id}: unchanged since mark {epoch}, not proved"),
            }
        }
    }

    /// A shard holding the documents written by `ops`.
    fn shard_with(ops: &[Op]) -> Shard {
        let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
        shard.create_collection("c").unwrap();
        shard.write(ops.to_vec(), Durability::Buffered).unwrap();
        shard
    }

    /// Rewrites the records of every pack, and the open ones, as one key
    /// each: the first layout, as a folder written before the packing has
    /// them.
    fn to_first_layout(shard: &Shard) {
        let tree = shard.tree();
        let mut batch = WriteBatch::default();
        let mut records = Vec::new();
        for item in tree.range(
            Bound::Included(MARK_PACK_PREFIX.to_vec()),
            keys::successor_bound(MARK_PACK_PREFIX),
            false,
        ) {
            let (key, value) = item.unwrap();
            batch.delete(key.as_ref().to_vec());
            let epoch = u64::from_be_bytes(key.as_ref()[2..10].try_into().unwrap());
            records.push((epoch, value.as_ref().to_vec()));
        }
        let applied = tree.get(APPLIED_INDEX_KEY).unwrap().unwrap();
        let applied = applied.as_ref();
        if applied.len() > 8 {
            let epoch = u64::from_be_bytes(applied[8..16].try_into().unwrap());
            records.push((epoch, applied[16..].to_vec()));
        }
        batch.put(APPLIED_INDEX_KEY.to_vec(), applied[..8].to_vec());
        for (epoch, packed) in records {
            for record in packed.chunks_exact(65) {
                let key: [u8; 32] = record[..32].try_into().unwrap();
                let value = match record[32] {
                    1 => record[33..].to_vec(),
                    _ => Vec::new(),
                };
                batch.put(keys::mark_change_key(epoch, &key), value);
            }
        }
        tree.apply(batch).unwrap();
    }

    /// Raft applies carry their records in the applied index's value (a
    /// lone write stores no key more) and pack them once there are more
    /// than [`OPEN_MARK_RECORDS`]; a new mark packs the open records of
    /// the mark before it. A restart rebuilds both marks' views exactly,
    /// from packs and open records, and from the first layout (one key a
    /// record) too, whose records are cleaned up like packs. A direct mark
    /// packs the open records and leaves the applied index alone.
    #[test]
    fn packed_and_open_records_rebuild_both_views_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..120).map(|i| format!("d{i}")).collect();
        let mut index = 0;
        let apply = |shard: &Shard, index: &mut u64, op: Op| {
            *index += 1;
            let entry = Command { ops: vec![op] }.encode();
            shard.apply(*index, &entry).unwrap();
        };
        let open_len = |n: usize| 16 + 65 * n;
        let mut written: Vec<Op> = (0..100).map(|i| upsert(i, 0)).collect();
        let at_1 = shard_with(&written);
        let reopen = || {
            let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
            let shard = engine.shard(0).unwrap();
            (engine, shard)
        };
        let (engine, shard) = reopen();
        apply(
            &shard,
            &mut index,
            Op::CreateCollection { name: "c".into() },
        );
        for op in &written {
            apply(&shard, &mut index, op.clone());
        }
        assert_eq!(applied_value_len(&shard), 8);
        apply(&shard, &mut index, Op::AnchorMark { epoch: 1 });
        let mut since_1 = Vec::new();
        for i in 0..OPEN_MARK_RECORDS {
            since_1.push(upsert(i, 1));
        }
        since_1.push(upsert(7, 2)); // changed twice: one record
        for op in &since_1 {
            apply(&shard, &mut index, op.clone());
        }
        assert_eq!(record_keys(&shard), vec![], "all open");
        assert_eq!(applied_value_len(&shard), open_len(OPEN_MARK_RECORDS));
        since_1.push(upsert(OPEN_MARK_RECORDS, 1));
        apply(&shard, &mut index, since_1.last().unwrap().clone());
        assert_eq!(record_keys(&shard), vec![(1, 0, 1)], "packed");
        assert_eq!(applied_value_len(&shard), 8);
        // Two open again: an insert and a delete.
        let delete = |i: usize| Op::Delete {
            collection: "c".into(),
            id: format!("d{i}"),
        };
        since_1.extend([upsert(110, 1), delete(51)]);
        for op in &since_1[since_1.len() - 2..] {
            apply(&shard, &mut index, op.clone());
        }
        assert_eq!(applied_value_len(&shard), open_len(2));
        written.extend(since_1);
        let at_2 = shard_with(&written);
        // Mark 2 packs mark 1's open records; its own start open.
        apply(&shard, &mut index, Op::AnchorMark { epoch: 2 });
        assert_eq!(record_keys(&shard), vec![(1, 0, 2)]);
        assert_eq!(applied_value_len(&shard), 8);
        let since_2 = vec![upsert(60, 2), upsert(0, 3), delete(110), upsert(111, 2)];
        for op in &since_2 {
            apply(&shard, &mut index, op.clone());
        }
        assert_eq!(applied_value_len(&shard), open_len(4));
        let check = |shard: &Shard| {
            assert_view(shard, &at_2, 2, false, &ids);
            assert_view(shard, &at_1, 1, true, &ids);
        };
        check(&shard);
        engine.flush().unwrap();
        drop((engine, shard));

        let (engine, shard) = reopen();
        assert_eq!(shard.applied_index().unwrap(), index);
        check(&shard);
        // The same records in the first layout.
        to_first_layout(&shard);
        assert_eq!(record_keys(&shard), vec![(1, 19, 0), (2, 4, 0)]);
        engine.flush().unwrap();
        drop((engine, shard));

        let (engine, shard) = reopen();
        check(&shard);
        apply(&shard, &mut index, upsert(61, 2));
        assert_eq!(applied_value_len(&shard), open_len(1));
        written.extend(since_2);
        written.push(upsert(61, 2));
        let at_3 = shard_with(&written);
        // A direct mark packs the open record; mark 1's 19 stale records
        // go 16 keys per batch.
        shard.record_anchor_mark(3).unwrap();
        assert_eq!(applied_value_len(&shard), 8);
        assert_eq!(shard.applied_index().unwrap(), index);
        assert_eq!(record_keys(&shard), vec![(1, 3, 0), (2, 4, 1)]);
        apply(&shard, &mut index, upsert(62, 3));
        assert_eq!(record_keys(&shard), vec![(2, 4, 1)]);
        assert_eq!(applied_value_len(&shard), open_len(1));
        let check = |shard: &Shard| {
            assert_view(shard, &at_3, 3, false, &ids);
            assert_view(shard, &at_2, 2, true, &ids);
        };
        check(&shard);
        engine.flush().unwrap();
        drop((engine, shard));
        let (_engine, shard) = reopen();
        check(&shard);
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
    /// refuses to open, saying which mark it is, whether the record is in a
    /// pack, open in the applied index's value, or a key recorded twice.
    #[test]
    fn a_damaged_change_record_is_caught_on_open() {
        for damage in ["pack", "open", "twice"] {
            let dir = tempfile::tempdir().unwrap();
            {
                let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
                let shard = engine.shard(0).unwrap();
                let entries = [
                    Op::CreateCollection { name: "c".into() },
                    upsert(1, 0),
                    upsert(2, 0),
                    Op::AnchorMark { epoch: 3 },
                    upsert(1, 1),
                ];
                for (i, op) in entries.into_iter().enumerate() {
                    let entry = Command { ops: vec![op] }.encode();
                    shard.apply(i as u64 + 1, &entry).unwrap();
                }
                let key_hash = stratosdb_proof::hash::key_hash("c", "d1");
                let mut record = key_hash.to_vec();
                record.push(1);
                record.extend_from_slice(&[9; 32]);
                let mut batch = WriteBatch::default();
                match damage {
                    // d1's record (open) read with a wrong hash.
                    "pack" => {
                        batch.put(APPLIED_INDEX_KEY.to_vec(), 5u64.to_be_bytes().to_vec());
                        batch.put(keys::mark_pack_key(3, &key_hash), record);
                    }
                    "open" => {
                        let mut value = 5u64.to_be_bytes().to_vec();
                        value.extend_from_slice(&3u64.to_be_bytes());
                        value.extend_from_slice(&record);
                        batch.put(APPLIED_INDEX_KEY.to_vec(), value);
                    }
                    // Also one key of the first layout.
                    _ => batch.put(keys::mark_change_key(3, &key_hash), vec![9; 32]),
                }
                shard.tree().apply(batch).unwrap();
                engine.flush().unwrap();
            }
            let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
            let err = engine.shard(0).err().unwrap();
            assert_eq!(err.code(), "corruption", "{damage}");
            assert!(
                err.to_string().contains("anchor mark of epoch 3"),
                "{damage}: {err}"
            );
        }
    }
}
