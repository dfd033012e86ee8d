//! Property test in sled's style: random sequences of writes run against the
//! engine and against a plain in-memory model (a BTreeMap of documents). After
//! every step the documents, every index scan (order included) and the Merkle
//! root must agree with what the model predicts, and the incremental root must
//! equal a root computed from scratch.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use stratosdb_engine::proof::hash::{doc_hash, key_hash};
use stratosdb_engine::{
    Durability, Engine, EngineError, IndexRange, IndexSpec, Op, PatchChange, Shard, Value,
    root_from_scratch,
};

const COLLECTIONS: [&str; 2] = ["c1", "c2"];

/// The indexes a case may create: (name, fields, unique).
const INDEX_MENU: [(&str, &[&str], bool); 5] = [
    ("by_a", &["a"], false),
    ("by_b_a", &["b", "a"], false),
    ("by_tags", &["tags"], false),
    ("by_nx", &["n.x"], false),
    ("by_u", &["u"], true),
];

type Model = BTreeMap<(String, String), Value>;

#[derive(Clone, Debug)]
enum Step {
    Write(Vec<Op>),
    CreateIndex(usize, usize),
    DropIndex(usize, usize),
    RangeCheck(usize, usize, Bound<Value>, Bound<Value>, bool),
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::Int),
        (-3i64..4).prop_map(|i| Value::Float(i as f64 + 0.5)),
        (-2i64..3).prop_map(|i| Value::Float(i as f64)),
        "[ab]{0,2}".prop_map(Value::String),
    ]
}

fn doc(id: String) -> impl Strategy<Value = Value> {
    (
        proptest::option::of(scalar()),
        proptest::option::of(-2i64..3),
        proptest::option::of(prop::collection::vec("[xyz]", 0..3)),
        proptest::option::of(scalar()),
        proptest::option::of(0i64..4),
    )
        .prop_map(move |(a, b, tags, nx, u)| {
            let mut m = BTreeMap::new();
            m.insert("_id".to_string(), Value::String(id.clone()));
            if let Some(a) = a {
                m.insert("a".into(), a);
            }
            if let Some(b) = b {
                m.insert("b".into(), Value::Int(b));
            }
            if let Some(tags) = tags {
                m.insert(
                    "tags".into(),
                    Value::Array(tags.into_iter().map(Value::String).collect()),
                );
            }
            if let Some(nx) = nx {
                let mut n = BTreeMap::new();
                n.insert("x".to_string(), nx);
                m.insert("n".into(), Value::Object(n));
            }
            if let Some(u) = u {
                m.insert("u".into(), Value::Int(u));
            }
            Value::Object(m)
        })
}

fn id() -> impl Strategy<Value = String> {
    "d[0-9]{1,2}"
}

fn op() -> impl Strategy<Value = Op> {
    let coll = (0..COLLECTIONS.len()).prop_map(|i| COLLECTIONS[i].to_string());
    prop_oneof![
        3 => (coll.clone(), id().prop_flat_map(doc)).prop_map(|(collection, doc)| Op::Insert { collection, doc }),
        2 => (coll.clone(), id().prop_flat_map(doc)).prop_map(|(collection, doc)| Op::Upsert { collection, doc }),
        1 => (coll.clone(), id().prop_flat_map(doc)).prop_map(|(collection, doc)| Op::Replace { collection, doc }),
        2 => (coll.clone(), id(), scalar(), any::<bool>()).prop_map(|(collection, id, v, unset)| Op::Patch {
            collection,
            id,
            changes: if unset {
                vec![PatchChange::Unset { path: "a".into() }]
            } else {
                vec![PatchChange::Set { path: "n.x".into(), value: v }]
            },
        }),
        2 => (coll, id()).prop_map(|(collection, id)| Op::Delete { collection, id }),
    ]
}

fn bound() -> impl Strategy<Value = Bound<Value>> {
    prop_oneof![
        Just(Bound::Unbounded),
        scalar().prop_map(Bound::Included),
        scalar().prop_map(Bound::Excluded),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec(op(), 1..4).prop_map(Step::Write),
        1 => (0..2usize, 0..INDEX_MENU.len()).prop_map(|(c, i)| Step::CreateIndex(c, i)),
        1 => (0..2usize, 0..INDEX_MENU.len()).prop_map(|(c, i)| Step::DropIndex(c, i)),
        2 => (0..2usize, 0..INDEX_MENU.len(), bound(), bound(), any::<bool>())
            .prop_map(|(c, i, lo, hi, rev)| Step::RangeCheck(c, i, lo, hi, rev)),
    ]
}

/// Applies a batch to a copy of the model; `None` if any op must fail.
fn model_apply(model: &Model, indexes: &[Vec<usize>; 2], ops: &[Op]) -> Option<Model> {
    let mut next = model.clone();
    for op in ops {
        match op {
            Op::Insert { collection, doc } => {
                let key = (collection.clone(), id_of(doc));
                if next.contains_key(&key) {
                    return None;
                }
                next.insert(key, doc.clone());
            }
            Op::Upsert { collection, doc } => {
                next.insert((collection.clone(), id_of(doc)), doc.clone());
            }
            Op::Replace { collection, doc } => {
                let key = (collection.clone(), id_of(doc));
                next.get(&key)?;
                next.insert(key, doc.clone());
            }
            Op::Patch {
                collection,
                id,
                changes,
            } => {
                let key = (collection.clone(), id.clone());
                let Value::Object(mut m) = next.get(&key)?.clone() else {
                    return None;
                };
                for change in changes {
                    match change {
                        PatchChange::Unset { path } => {
                            m.remove(path);
                        }
                        PatchChange::Set { value, .. } => {
                            let mut n = BTreeMap::new();
                            n.insert("x".to_string(), value.clone());
                            // `n` is always an object or absent in generated documents.
                            match m.get_mut("n") {
                                Some(Value::Object(existing)) => {
                                    existing.insert("x".into(), value.clone());
                                }
                                _ => {
                                    m.insert("n".into(), Value::Object(n));
                                }
                            }
                        }
                    }
                }
                next.insert(key, Value::Object(m));
            }
            Op::Delete { collection, id } => {
                next.remove(&(collection.clone(), id.clone()));
            }
            _ => unreachable!("only document ops are generated"),
        }
    }
    for (c, coll) in COLLECTIONS.iter().enumerate() {
        if indexes[c].contains(&4) && !unique_holds(&next, coll) {
            return None;
        }
    }
    Some(next)
}

fn unique_holds(model: &Model, coll: &str) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    model
        .iter()
        .filter(|((c, _), _)| c == coll)
        .filter_map(|(_, d)| d.as_object().and_then(|m| m.get("u")).cloned())
        .filter(|u| *u != Value::Null)
        .all(|u| seen.insert(u))
}

fn id_of(doc: &Value) -> String {
    doc.as_object()
        .and_then(|m| m.get("_id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// What an index scan over everything returns, by the model: entries sorted
/// by (values, _id); missing sorts before every value.
fn model_entries(model: &Model, coll: &str, fields: &[&str]) -> Vec<(Vec<Option<Value>>, String)> {
    let mut out = Vec::new();
    for ((c, id), doc) in model {
        if c != coll {
            continue;
        }
        let mut tuples: Vec<Vec<Option<Value>>> = vec![vec![]];
        for field in fields {
            let path: Vec<String> = field.split('.').map(str::to_string).collect();
            let values: Vec<Option<Value>> = match doc_get(doc, &path) {
                Some(Value::Array(items)) if !items.is_empty() => {
                    items.iter().cloned().map(Some).collect()
                }
                other => vec![other.cloned()],
            };
            tuples = tuples
                .into_iter()
                .flat_map(|t| {
                    values.iter().map(move |v| {
                        let mut t = t.clone();
                        t.push(v.clone());
                        t
                    })
                })
                .collect();
        }
        tuples.sort();
        tuples.dedup();
        out.extend(tuples.into_iter().map(|t| (t, id.clone())));
    }
    out.sort();
    out
}

fn doc_get<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in path {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

fn check(shard: &Shard, model: &Model, indexes: &[Vec<usize>; 2]) -> Result<(), TestCaseError> {
    for (c, coll) in COLLECTIONS.iter().enumerate() {
        let got: Vec<(String, String)> = shard
            .scan(coll, Bound::Unbounded, Bound::Unbounded, false)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .map(|r| r.map(|(id, d)| (id, d.to_json_string())))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<(String, String)> = model
            .iter()
            .filter(|((mc, _), _)| mc == coll)
            .map(|((_, id), d)| (id.clone(), d.to_json_string()))
            .collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(shard.collection(coll).unwrap().count as usize, want.len());
        for &i in &indexes[c] {
            let (name, fields, _) = INDEX_MENU[i];
            let ids: Vec<String> = shard
                .index_scan(coll, name, &IndexRange::all(), false)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let want: Vec<String> = model_entries(model, coll, fields)
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            prop_assert_eq!(ids, want, "index {}", name);
        }
    }
    let mut leaves: Vec<_> = model
        .iter()
        .map(|((c, id), d)| (key_hash(c, id), doc_hash(d)))
        .collect();
    let expected_root = root_from_scratch(&mut leaves);
    prop_assert_eq!(shard.root().unwrap(), expected_root);
    prop_assert_eq!(shard.root_from_scratch().unwrap(), expected_root);
    Ok(())
}

fn in_bounds(v: &Option<Value>, lo: &Bound<Value>, hi: &Bound<Value>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(b) => v.as_ref().is_some_and(|v| v >= b),
        Bound::Excluded(b) => v.as_ref().is_some_and(|v| v > b),
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(b) => v.as_ref().is_none_or(|v| v <= b),
        Bound::Excluded(b) => v.as_ref().is_none_or(|v| v < b),
    };
    above && below
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(steps in prop::collection::vec(step(), 1..40)) {
        let engine = Engine::open_temporary().unwrap();
        let shard = engine.shard(0).unwrap();
        for c in COLLECTIONS {
            shard.create_collection(c).unwrap();
        }
        let mut model = Model::new();
        let mut indexes: [Vec<usize>; 2] = [vec![], vec![]];
        for step in steps {
            match step {
                Step::Write(ops) => {
                    let predicted = model_apply(&model, &indexes, &ops);
                    let result = shard.write(ops.clone(), Durability::Buffered);
                    match (predicted, result) {
                        (Some(next), Ok(_)) => model = next,
                        (None, Err(_)) => {}
                        (p, r) => prop_assert!(false, "model {:?} engine {:?} for {:?}", p.is_some(), r, ops),
                    }
                }
                Step::CreateIndex(c, i) => {
                    let (name, fields, unique) = INDEX_MENU[i];
                    let mut spec = IndexSpec::new(name, fields);
                    spec.unique = unique;
                    let result = shard.create_index(COLLECTIONS[c], spec);
                    let expect_ok = !indexes[c].contains(&i)
                        && (!unique || unique_holds(&model, COLLECTIONS[c]));
                    prop_assert_eq!(result.is_ok(), expect_ok, "{:?}", result);
                    if expect_ok {
                        indexes[c].push(i);
                    }
                }
                Step::DropIndex(c, i) => {
                    let result = shard.drop_index(COLLECTIONS[c], INDEX_MENU[i].0);
                    prop_assert_eq!(result.is_ok(), indexes[c].contains(&i));
                    indexes[c].retain(|&x| x != i);
                }
                Step::RangeCheck(c, i, lo, hi, reverse) => {
                    let (name, fields, _) = INDEX_MENU[i];
                    if !indexes[c].contains(&i) || fields.len() != 1 {
                        continue;
                    }
                    let range = IndexRange {
                        lower: lo.clone().map(|v| vec![v]),
                        upper: hi.clone().map(|v| vec![v]),
                    };
                    let got: Vec<String> = shard
                        .index_scan(COLLECTIONS[c], name, &range, reverse)
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let mut want: Vec<String> = model_entries(&model, COLLECTIONS[c], fields)
                        .into_iter()
                        .filter(|(vals, _)| in_bounds(&vals[0], &lo, &hi))
                        .map(|(_, id)| id)
                        .collect();
                    if reverse {
                        want.reverse();
                    }
                    prop_assert_eq!(got, want, "{} {:?}..{:?}", name, lo, hi);
                }
            }
            check(&shard, &model, &indexes)?;
        }
        // History independence: the same documents written fresh, in another
        // order, give the same root.
        let fresh = Engine::open_temporary().unwrap().shard(0).unwrap();
        for c in COLLECTIONS {
            fresh.create_collection(c).unwrap();
        }
        let ops: Vec<Op> = model
            .iter()
            .rev()
            .map(|((c, _), d)| Op::Insert { collection: c.clone(), doc: d.clone() })
            .collect();
        fresh.write(ops, Durability::Buffered).unwrap();
        prop_assert_eq!(fresh.root().unwrap(), shard.root().unwrap());
    }
}

#[test]
fn failed_batch_changes_nothing() {
    let engine = Engine::open_temporary().unwrap();
    let shard = engine.shard(0).unwrap();
    shard.create_collection("c").unwrap();
    shard.create_collection("d").unwrap();
    let doc = |id: &str| Value::from_json_str(&format!(r#"{{"_id":"{id}"}}"#)).unwrap();
    shard.insert("c", doc("x")).unwrap();
    let before = shard.root().unwrap();
    let err = shard
        .write(
            vec![
                Op::Insert {
                    collection: "d".into(),
                    doc: doc("new"),
                },
                Op::Delete {
                    collection: "c".into(),
                    id: "x".into(),
                },
                Op::Insert {
                    collection: "c".into(),
                    doc: doc("new"),
                },
                Op::Insert {
                    collection: "c".into(),
                    doc: doc("new"),
                },
            ],
            Durability::Sync,
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::DuplicateId { .. }), "{err}");
    assert_eq!(shard.root().unwrap(), before);
    assert!(shard.get("d", "new").unwrap().is_none());
    assert!(shard.get("c", "x").unwrap().is_some());
    assert_eq!(shard.collection("d").unwrap().count, 0);
}
