//! Writes and raft applies. Both run commands through one [`Writer`] batch:
//! every command sees the ones before it, a command that fails on its merits
//! is rolled back alone, and the batch is applied to storage at once, then the
//! Merkle trie and the catalog cache take its changes.

use stratosdb_proof::Value;

use super::writer::{Finished, Writer};
use super::{Generation, Shard};
use crate::commit::Durability;
use crate::merkle::MerkleTree;
use crate::storage::KvStore;
use crate::{AnchorMark, Command, EngineError, Op, Result, document};

/// What one operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpOutcome {
    /// The document's `_id` (for document operations).
    pub id: Option<String>,
    /// Documents inserted, replaced, patched or deleted.
    pub affected: u64,
    /// The operation created the document (an insert, or an upsert of an
    /// absent one), so a PUT knows which it was from one write.
    pub created: bool,
    /// For [`Op::AnchorMark`]: the shard's mark of the epoch, the one this
    /// command recorded (`affected` 1) or the one recorded before (`affected` 0).
    pub mark: Option<AnchorMark>,
}

/// What a write did, and whether it is durable yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub outcomes: Vec<OpOutcome>,
    pub durable: bool,
}

/// What [`Shard::apply`] did with a raft entry.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// Applied; the shard's applied index is now at least the entry's.
    Applied(Vec<OpOutcome>),
    /// The entry's command failed (the same way on every replica): no document
    /// changed, but the applied index advanced past it.
    Rejected(EngineError),
    /// The entry was at or below the applied index: nothing was done.
    AlreadyApplied,
}

/// Committed raft entries, `(index, encoded command)`, in index order.
pub type Entries<'a> = [(u64, &'a [u8])];

/// One command's result inside a batch.
type CommandResult = Result<Vec<OpOutcome>>;

impl<S: KvStore> Shard<S> {
    /// Inserts a document (assigning a ULID `_id` if it has none) and returns its `_id`.
    ///
    /// ```
    /// use stratosdb_engine::{Durability, Engine, Value};
    /// let engine = Engine::open_temporary().unwrap();
    /// let shard = engine.shard(0).unwrap();
    /// shard.create_collection("users").unwrap();
    /// let doc = Value::from_json_str(r#"{"name":"Ann"}"#).unwrap();
    /// let id = shard.insert("users", doc).unwrap();
    /// assert_eq!(id.len(), 26); // a ULID
    /// assert!(shard.get("users", &id).unwrap().is_some());
    /// ```
    pub fn insert(&self, collection: &str, doc: Value) -> Result<String> {
        let result = self.write(
            vec![Op::Insert {
                collection: collection.into(),
                doc,
            }],
            Durability::Buffered,
        )?;
        Ok(result
            .outcomes
            .into_iter()
            .next()
            .and_then(|o| o.id)
            .unwrap_or_default())
    }

    /// Applies the operations atomically: all of them, or (on any error) none.
    /// Documents without `_id` get one first.
    ///
    /// ```
    /// use stratosdb_engine::{Durability, Engine, Op, PatchChange, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(0).unwrap();
    /// let doc = |s: &str| Value::from_json_str(s).unwrap();
    /// let result = shard
    ///     .write(
    ///         vec![
    ///             Op::CreateCollection { name: "users".into() },
    ///             Op::Insert { collection: "users".into(), doc: doc(r#"{"_id":"u1","n":1}"#) },
    ///             Op::Patch {
    ///                 collection: "users".into(),
    ///                 id: "u1".into(),
    ///                 changes: vec![PatchChange::Set { path: "address.city".into(), value: "Paris".into() }],
    ///             },
    ///         ],
    ///         Durability::Sync,
    ///     )
    ///     .unwrap();
    /// assert!(result.durable);
    /// // A batch with one bad operation changes nothing.
    /// let dup = Op::Insert { collection: "users".into(), doc: doc(r#"{"_id":"u1"}"#) };
    /// let new = Op::Insert { collection: "users".into(), doc: doc(r#"{"_id":"u2"}"#) };
    /// assert!(shard.write(vec![new, dup], Durability::Sync).is_err());
    /// assert!(shard.get("users", "u2").unwrap().is_none());
    /// ```
    pub fn write(&self, mut ops: Vec<Op>, durability: Durability) -> Result<WriteResult> {
        for op in &mut ops {
            if let Op::Insert { doc, .. } | Op::Upsert { doc, .. } = op {
                document::assign_id(doc);
            }
        }
        let result = {
            let mut merkle = self.inner.merkle.lock();
            // No raft here: a mark records the applied index as it is (read
            // only for a mark: other writes need no extra read).
            let marks = ops.iter().any(|op| matches!(op, Op::AnchorMark { .. }));
            let at = if marks { self.applied_index()? } else { 0 };
            self.run_batch(&mut merkle, vec![(at, Ok(ops))], None)?
                .pop()
                .unwrap_or_else(|| Ok(Vec::new()))
        };
        let outcomes = result?;
        let durable = self.inner.shared.wait_durable(durability)?;
        Ok(WriteResult { outcomes, durable })
    }

    /// Applies the raft entry at `raft_index`, atomically with the shard's applied
    /// index. Deterministic: the same entries give the same state on every replica.
    ///
    /// ```
    /// use stratosdb_engine::{ApplyOutcome, Command, Engine, Op};
    /// let shard = Engine::open_temporary().unwrap().shard(7).unwrap();
    /// let entry = Command { ops: vec![Op::CreateCollection { name: "c".into() }] }.encode();
    /// assert!(matches!(shard.apply(1, &entry).unwrap(), ApplyOutcome::Applied(_)));
    /// assert!(matches!(shard.apply(1, &entry).unwrap(), ApplyOutcome::AlreadyApplied));
    /// assert_eq!(shard.applied_index().unwrap(), 1);
    /// ```
    pub fn apply(&self, raft_index: u64, command: &[u8]) -> Result<ApplyOutcome> {
        Ok(self
            .apply_batch(&[(raft_index, command)])?
            .pop()
            .unwrap_or(ApplyOutcome::AlreadyApplied))
    }

    /// Applies a run of committed raft entries `(index, command)`, in order, as
    /// ONE atomic storage batch that also stores the last index. Each entry keeps
    /// its own outcome: a command that fails on its merits is rejected alone, on
    /// every replica alike. Entries at or below the applied index (or not above
    /// the previous entry) are skipped. Merkle nodes touched by several commands
    /// are hashed per command but stored nowhere: the trie is in memory.
    ///
    /// ```
    /// use stratosdb_engine::{ApplyOutcome, Command, Engine, Op, Value};
    /// let shard = Engine::open_temporary().unwrap().shard(1).unwrap();
    /// let doc = |s: &str| Value::from_json_str(s).unwrap();
    /// let cmd = |op: Op| Command { ops: vec![op] }.encode();
    /// let entries = [
    ///     cmd(Op::CreateCollection { name: "c".into() }),
    ///     cmd(Op::Insert { collection: "c".into(), doc: doc(r#"{"_id":"a"}"#) }),
    ///     cmd(Op::Insert { collection: "c".into(), doc: doc(r#"{"_id":"a"}"#) }), // duplicate
    /// ];
    /// let batch: Vec<(u64, &[u8])> = entries.iter().enumerate().map(|(i, e)| (i as u64 + 1, e.as_slice())).collect();
    /// let outcomes = shard.apply_batch(&batch).unwrap();
    /// assert!(matches!(outcomes[1], ApplyOutcome::Applied(_)));
    /// assert!(matches!(outcomes[2], ApplyOutcome::Rejected(_)));
    /// assert_eq!(shard.applied_index().unwrap(), 3);
    /// ```
    pub fn apply_batch(&self, entries: &[(u64, &[u8])]) -> Result<Vec<ApplyOutcome>> {
        Ok(Self::apply_batches(&[(self, entries)])?
            .pop()
            .unwrap_or_default())
    }

    /// [`Shard::apply_batch`] for several shards of one engine at once (a
    /// node's raft loop applies every group's committed entries together):
    /// each shard's entries run as its own batch, with its own outcomes, and
    /// all the batches are stored in ONE atomic storage write, which costs
    /// about what one shard's does.
    ///
    /// ```
    /// use stratosdb_engine::{ApplyOutcome, Command, Engine, Op, Shard};
    /// let engine = Engine::open_temporary().unwrap();
    /// let (a, b) = (engine.shard(1).unwrap(), engine.shard(2).unwrap());
    /// let create = Command { ops: vec![Op::CreateCollection { name: "c".into() }] }.encode();
    /// let entries: &[(u64, &[u8])] = &[(1, create.as_slice())];
    /// let outcomes = Shard::apply_batches(&[(&a, entries), (&b, entries)]).unwrap();
    /// assert!(outcomes.iter().all(|o| matches!(o[0], ApplyOutcome::Applied(_))));
    /// assert_eq!((a.applied_index().unwrap(), b.applied_index().unwrap()), (1, 1));
    /// // A shard given twice is refused, not waited on forever.
    /// assert!(Shard::apply_batches(&[(&a, entries), (&a, entries)]).is_err());
    /// ```
    pub fn apply_batches(work: &[(&Shard<S>, &Entries)]) -> Result<Vec<Vec<ApplyOutcome>>> {
        let Some((first, _)) = work.first() else {
            return Ok(Vec::new());
        };
        if work
            .iter()
            .any(|(shard, _)| !std::sync::Arc::ptr_eq(&shard.inner.shared, &first.inner.shared))
        {
            return Err(EngineError::Storage(
                "shards of different engines cannot be applied in one write".into(),
            ));
        }
        // A shard twice would wait for its own writer lock.
        if work.iter().enumerate().any(|(i, (a, _))| {
            work[..i]
                .iter()
                .any(|(b, _)| std::sync::Arc::ptr_eq(&a.inner, &b.inner))
        }) {
            return Err(EngineError::Storage(
                "a shard can be given only once in one write".into(),
            ));
        }
        // Each shard's writer lock, taken in the caller's order and held until
        // its changes are published. Nothing else takes two of them.
        let mut locked: Vec<_> = work
            .iter()
            .map(|&(shard, entries)| (shard, entries, shard.inner.merkle.lock()))
            .collect();
        let mut prepared = Vec::with_capacity(locked.len());
        for (shard, entries, merkle) in &mut locked {
            prepared.push(shard.prepare_apply(merkle, entries)?);
        }
        let mut batches = Vec::with_capacity(prepared.len());
        for ((shard, _, _), p) in locked.iter().zip(&mut prepared) {
            if let Some(run) = &mut p.run {
                let batch = std::mem::take(&mut run.finished.batch);
                if !batch.is_empty() {
                    super::note_exports(&shard.inner, &run.tree, &batch)?;
                    batches.push((&**run.tree, batch));
                }
            }
        }
        let stored = !batches.is_empty();
        first.inner.shared.store.apply_all(batches)?;
        if stored {
            first.inner.shared.note_write();
        }
        Ok(locked
            .iter_mut()
            .zip(prepared)
            .map(|((shard, _, merkle), mut p)| {
                let results = p.run.take().map(|run| {
                    shard.publish(merkle, run.finished);
                    run.results
                });
                p.outcomes(results)
            })
            .collect())
    }

    /// Decodes the entries above the applied index and runs them through a
    /// writer (the caller holds the trie's lock); nothing is stored yet.
    fn prepare_apply(
        &self,
        merkle: &MerkleTree,
        entries: &[(u64, &[u8])],
    ) -> Result<PreparedApply<S>> {
        let mut last = self.applied_index()?;
        let limit = self.inner.shared.config.max_command_bytes;
        // Which entries run (true) and the commands they carry.
        let mut runs = Vec::with_capacity(entries.len());
        let mut commands = Vec::with_capacity(entries.len());
        for &(index, bytes) in entries {
            let new = index > last;
            runs.push(new);
            if new {
                last = index;
                commands.push((index, Command::decode(bytes, limit).map(|c| c.ops)));
            }
        }
        let run = if commands.is_empty() {
            None
        } else {
            let tree = self.tree();
            let (results, finished) = self.run_commands(&tree, merkle, commands, Some(last))?;
            Some(PreparedRun {
                tree,
                results,
                finished,
            })
        };
        Ok(PreparedApply { runs, run })
    }

    /// Runs commands in one batch (the caller holds the trie's lock, which
    /// serializes writers) and commits it. A storage fault or corruption aborts
    /// the whole batch; any other error rejects only its command.
    fn run_batch(
        &self,
        merkle: &mut MerkleTree,
        commands: Vec<(u64, Result<Vec<Op>>)>,
        applied_index: Option<u64>,
    ) -> Result<Vec<CommandResult>> {
        let tree = self.tree();
        let (results, mut finished) = self.run_commands(&tree, merkle, commands, applied_index)?;
        let batch = std::mem::take(&mut finished.batch);
        if !batch.is_empty() {
            super::apply_noted(&self.inner, &tree, batch)?;
            self.inner.shared.note_write();
        }
        self.publish(merkle, finished);
        Ok(results)
    }

    /// Runs the commands through one writer: their results, and the batch and
    /// in-memory changes they make, not stored yet.
    fn run_commands(
        &self,
        tree: &S::Tree,
        merkle: &MerkleTree,
        commands: Vec<(u64, Result<Vec<Op>>)>,
        applied_index: Option<u64>,
    ) -> Result<(Vec<CommandResult>, Finished)> {
        let mut writer = Writer::new(
            tree,
            merkle,
            &self.inner.shared.config.limits,
            &self.inner.catalog,
            &self.inner.marks,
        );
        let mut results = Vec::with_capacity(commands.len());
        for (index, command) in commands {
            let result = command.and_then(|ops| writer.run_command(&ops, index));
            match result {
                Err(e) if e.is_fault() => return Err(e),
                other => results.push(other),
            }
        }
        Ok((results, writer.finish(applied_index)?))
    }

    /// Once the batch is stored: the trie, the catalog cache and the marks
    /// take its changes.
    fn publish(&self, merkle: &mut MerkleTree, finished: Finished) {
        merkle.commit(finished.merkle);
        if !finished.touched.is_empty() {
            let mut catalog = self.inner.catalog.write();
            for (name, info) in finished.touched {
                match info {
                    Some(info) => catalog.insert(name, std::sync::Arc::new(info)),
                    None => catalog.remove(&name),
                };
            }
        }
        if !finished.marks.is_empty() {
            let mut marks = self.inner.marks.write();
            for mark in finished.marks {
                marks.insert(mark);
            }
        }
    }
}

/// A shard's part of [`Shard::apply_batches`], run but not stored yet.
struct PreparedApply<S: KvStore> {
    /// Per entry: whether it was above the applied index.
    runs: Vec<bool>,
    /// The commands that ran, if any did.
    run: Option<PreparedRun<S>>,
}

struct PreparedRun<S: KvStore> {
    tree: std::sync::Arc<Generation<S>>,
    results: Vec<CommandResult>,
    finished: Finished,
}

impl<S: KvStore> PreparedApply<S> {
    /// Each entry's outcome, from the results of the commands that ran.
    fn outcomes(self, results: Option<Vec<CommandResult>>) -> Vec<ApplyOutcome> {
        let mut results = results.unwrap_or_default().into_iter();
        self.runs
            .into_iter()
            .map(|new| match (new, results.next()) {
                (true, Some(Ok(outcomes))) => ApplyOutcome::Applied(outcomes),
                (true, Some(Err(rejected))) => ApplyOutcome::Rejected(rejected),
                _ => ApplyOutcome::AlreadyApplied,
            })
            .collect()
    }
}
