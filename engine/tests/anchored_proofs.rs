//! Proofs against the latest anchor mark, checked against a model: random
//! writes, marks (alone or in the middle of raft batches), restarts and
//! snapshot moves run on a real shard and on a map of documents that keeps a
//! copy of itself at each mark. Every anchored proof must verify against the
//! mark's root with the document as it was at the mark, and one must be given
//! exactly when the document is the same now as then; against the mark before
//! the latest too, whose view a snapshot does not carry (and a batch making
//! two marks does not keep): there a proof given must be right, none may be
//! missing where the view is kept.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stratosdb_engine::{AnchorMark, ApplyOutcome, Command, Engine, EngineConfig, Op, Shard, Value};

const COLLECTIONS: [&str; 2] = ["c1", "c2"];
const IDS: usize = 12;
const SHARD: u32 = 2;

type Model = BTreeMap<(String, String), Value>;

#[derive(Clone, Debug)]
enum Step {
    /// Raft entries applied as one batch; `None` is an anchor mark.
    Batch(Vec<Option<Op>>),
    /// A batch of writes through `Shard::write` (no raft).
    Direct(Vec<Op>),
    Restart,
    /// The shard is exported and imported into a fresh one, which goes on.
    Move,
}

fn doc(id: String, n: i64) -> Value {
    Value::from_json_str(&format!(r#"{{"_id":"{id}","n":{n}}}"#)).unwrap()
}

fn op() -> impl Strategy<Value = Op> {
    let key = (0..COLLECTIONS.len(), 0..IDS);
    prop_oneof![
        4 => (key.clone(), 0i64..3).prop_map(|((c, i), n)| Op::Upsert {
            collection: COLLECTIONS[c].into(),
            doc: doc(format!("d{i}"), n),
        }),
        2 => key.prop_map(|(c, i)| Op::Delete {
            collection: COLLECTIONS[c].into(),
            id: format!("d{i}"),
        }),
        // Dropping and recreating a collection changes every key in it.
        1 => (0..COLLECTIONS.len()).prop_map(|c| Op::DropCollection {
            name: COLLECTIONS[c].into(),
        }),
        1 => (0..COLLECTIONS.len()).prop_map(|c| Op::CreateCollection {
            name: COLLECTIONS[c].into(),
        }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec(
            prop_oneof![4 => op().prop_map(Some), 1 => Just(None)],
            1..8,
        )
        .prop_map(Step::Batch),
        2 => prop::collection::vec(op(), 1..4).prop_map(Step::Direct),
        1 => Just(Step::Restart),
        1 => Just(Step::Move),
    ]
}

/// What an op does to the model, if it applies (a failing op changes nothing).
fn apply_model(model: &mut Model, collections: &mut Vec<String>, op: &Op) -> bool {
    match op {
        Op::Upsert { collection, doc } => {
            if !collections.contains(collection) {
                return false;
            }
            let id = doc.as_object().unwrap()["_id"]
                .as_str()
                .unwrap()
                .to_string();
            model.insert((collection.clone(), id), doc.clone());
        }
        Op::Delete { collection, id } => {
            if !collections.contains(collection) {
                return false;
            }
            model.remove(&(collection.clone(), id.clone()));
        }
        Op::DropCollection { name } => {
            if !collections.contains(name) {
                return false;
            }
            collections.retain(|c| c != name);
            model.retain(|(c, _), _| c != name);
        }
        Op::CreateCollection { name } => {
            if collections.contains(name) {
                return false;
            }
            collections.push(name.clone());
        }
        other => panic!("not generated: {other:?}"),
    }
    true
}

struct Run {
    dir: tempfile::TempDir,
    engine: Engine,
    shard: Shard,
    next_index: u64,
    next_epoch: u64,
    model: Model,
    collections: Vec<String>,
    /// The model as of the latest mark, and the mark.
    at_mark: Option<(AnchorMark, Model)>,
    /// The same for the mark before it, and whether the shard keeps its
    /// view for sure.
    previous: Option<(AnchorMark, Model)>,
    previous_kept: bool,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default()).unwrap();
        let shard = engine.shard(SHARD).unwrap();
        Run {
            dir,
            engine,
            shard,
            next_index: 1,
            next_epoch: 1,
            model: Model::new(),
            collections: Vec::new(),
            at_mark: None,
            previous: None,
            previous_kept: true,
        }
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Batch(entries) => self.batch(entries),
            Step::Direct(ops) => {
                let (mut model, mut collections) = (self.model.clone(), self.collections.clone());
                let ok = ops
                    .iter()
                    .all(|op| apply_model(&mut model, &mut collections, op));
                let result = self
                    .shard
                    .write(ops.clone(), stratosdb_engine::Durability::Buffered);
                assert_eq!(result.is_ok(), ok, "{ops:?}: {result:?}");
                if ok {
                    (self.model, self.collections) = (model, collections);
                }
            }
            Step::Restart => {
                self.engine.flush().unwrap();
                // Close the shard and its engine before reopening the folder.
                let spare = Engine::open_temporary().unwrap();
                let old_shard = std::mem::replace(&mut self.shard, spare.shard(SHARD).unwrap());
                let old_engine = std::mem::replace(&mut self.engine, spare);
                drop(old_shard);
                drop(old_engine);
                self.engine = Engine::open(self.dir.path(), EngineConfig::default()).unwrap();
                self.shard = self.engine.shard(SHARD).unwrap();
            }
            Step::Move => {
                let mut chunks = Vec::new();
                self.shard
                    .export_snapshot(256, |c| {
                        chunks.push(c);
                        Ok(())
                    })
                    .unwrap();
                let old = std::mem::replace(self, Run::new());
                self.shard.import_snapshot(chunks).unwrap();
                assert_eq!(self.shard.anchor_marks(), old.shard.anchor_marks());
                (self.next_index, self.next_epoch) = (old.next_index, old.next_epoch);
                (self.model, self.collections, self.at_mark) =
                    (old.model, old.collections, old.at_mark);
                // A snapshot carries the latest mark's changes only.
                (self.previous, self.previous_kept) = (old.previous, false);
            }
        }
    }

    fn batch(&mut self, entries: &[Option<Op>]) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for entry in entries {
            let op = match entry {
                Some(op) => op.clone(),
                None => {
                    self.next_epoch += 1;
                    Op::AnchorMark {
                        epoch: self.next_epoch,
                    }
                }
            };
            let applies = match &op {
                Op::AnchorMark { .. } => true,
                op => apply_model(&mut self.model, &mut self.collections, op),
            };
            expected.push((applies, self.model.clone()));
            bytes.push(Command { ops: vec![op] }.encode());
        }
        let indexed: Vec<(u64, &[u8])> = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| (self.next_index + i as u64, b.as_slice()))
            .collect();
        self.next_index += bytes.len() as u64;
        let outcomes = self.shard.apply_batch(&indexed).unwrap();
        let marks = entries.iter().filter(|e| e.is_none()).count();
        if marks > 0 {
            self.previous_kept = marks == 1;
        }
        for ((outcome, (applies, model)), entry) in outcomes.iter().zip(expected).zip(entries) {
            match (outcome, entry) {
                (ApplyOutcome::Applied(o), None) => {
                    let mark = o[0].mark.expect("a mark");
                    self.previous = self.at_mark.replace((mark, model));
                }
                (ApplyOutcome::Applied(_), Some(_)) => assert!(applies),
                (ApplyOutcome::Rejected(_), Some(_)) => assert!(!applies),
                (other, entry) => panic!("{entry:?}: {other:?}"),
            }
        }
    }

    /// Every key of the universe: anchored proofs exactly where the document
    /// is unchanged since the mark, each verifying against the mark's root
    /// with the document of the mark; the current root proves the rest.
    fn check(&self) {
        assert_eq!(
            self.shard.latest_anchor_mark(),
            self.at_mark.as_ref().map(|(m, _)| *m)
        );
        for collection in COLLECTIONS {
            let ids: Vec<String> = (0..IDS).map(|i| format!("d{i}")).collect();
            let many = self.shard.prove_anchored_many(collection, &ids).unwrap();
            for (id, anchored) in ids.iter().zip(many) {
                let key = (collection.to_string(), id.clone());
                let now = self.model.get(&key);
                let one = self.shard.prove_anchored(collection, id).unwrap();
                assert_eq!(one, anchored, "{collection}/{id}: one and many agree");
                match (&self.at_mark, anchored) {
                    (None, None) => {}
                    (None, Some(a)) => panic!("{collection}/{id}: anchored with no mark: {a:?}"),
                    (Some((mark, then)), anchored) => {
                        let then = then.get(&key);
                        assert_eq!(
                            anchored.is_some(),
                            then == now,
                            "{collection}/{id}: then {then:?}, now {now:?}"
                        );
                        if let Some(a) = anchored {
                            assert_eq!(a.mark, *mark);
                            assert_eq!(a.doc.as_ref(), then);
                            a.proof.verify(&mark.root, a.doc.as_ref()).unwrap();
                        }
                    }
                }
                self.check_previous(collection, id, now);
                let (root, proof, doc) = self.shard.prove(collection, id).unwrap();
                assert_eq!(doc.as_ref(), now);
                proof.verify(&root, doc.as_ref()).unwrap();
            }
        }
    }
}

impl Run {
    /// Against the mark before the latest: a proof given is right, and one
    /// is given wherever the document is the same now as then while the
    /// view is kept.
    fn check_previous(&self, collection: &str, id: &str, now: Option<&Value>) {
        let anchored = self
            .shard
            .prove_anchored_previous_many(collection, &[id])
            .unwrap()
            .pop()
            .unwrap();
        let key = (collection.to_string(), id.to_string());
        match (&self.previous, anchored) {
            (None, None) => {}
            (None, Some(a)) => panic!("{collection}/{id}: anchored with no previous mark: {a:?}"),
            (Some((mark, then)), anchored) => {
                let then = then.get(&key);
                match anchored {
                    Some(a) => {
                        assert_eq!(then, now, "{collection}/{id}: proved, changed since");
                        assert_eq!(a.mark, *mark);
                        assert_eq!(a.doc.as_ref(), then);
                        a.proof.verify(&mark.root, a.doc.as_ref()).unwrap();
                    }
                    None => assert!(
                        !self.previous_kept || then != now,
                        "{collection}/{id}: unchanged since mark {}, not proved",
                        mark.epoch
                    ),
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn anchored_proofs_match_the_model(steps in prop::collection::vec(step(), 1..24)) {
        let mut run = Run::new();
        run.batch(&COLLECTIONS.map(|c| Some(Op::CreateCollection { name: c.into() })));
        for step in &steps {
            run.step(step);
            run.check();
        }
    }
}

/// A mark made in the middle of a batch proves documents changed by the
/// entries before it (in that batch) with their new version, and documents
/// changed by the entries after it with none; also after a restart.
#[test]
fn a_mark_in_the_middle_of_a_batch_proves_the_state_at_that_point() {
    let mut run = Run::new();
    let cmd = |op: Op| Some(op);
    run.batch(&[
        cmd(Op::CreateCollection { name: "c1".into() }),
        cmd(Op::Upsert {
            collection: "c1".into(),
            doc: doc("d1".into(), 1),
        }),
        cmd(Op::Upsert {
            collection: "c1".into(),
            doc: doc("d2".into(), 1),
        }),
    ]);
    run.batch(&[
        cmd(Op::Upsert {
            collection: "c1".into(),
            doc: doc("d1".into(), 2),
        }),
        None,
        cmd(Op::Upsert {
            collection: "c1".into(),
            doc: doc("d2".into(), 2),
        }),
        cmd(Op::Upsert {
            collection: "c1".into(),
            doc: doc("d3".into(), 2),
        }),
    ]);
    for _ in 0..2 {
        let d1 = run.shard.prove_anchored("c1", "d1").unwrap().unwrap();
        assert_eq!(d1.doc, Some(doc("d1".into(), 2)));
        assert!(run.shard.prove_anchored("c1", "d2").unwrap().is_none());
        assert!(run.shard.prove_anchored("c1", "d3").unwrap().is_none());
        let d4 = run.shard.prove_anchored("c1", "d4").unwrap().unwrap();
        assert_eq!(d4.doc, None);
        d4.proof.verify(&d4.mark.root, None).unwrap();
        run.check();
        run.step(&Step::Restart);
    }
}
