//! Differential property test: random documents (missing fields, nulls, mixed
//! types, arrays) and random queries (filters, ORDER BY, LIMIT/OFFSET,
//! DISTINCT, aggregates), answered by
//! 1. a database with many indexes (the planner uses them),
//! 2. a database with no index (full scans),
//! 3. two shards holding halves of the documents, merged,
//! 4. a naive evaluator over all documents (no planner, no engine),
//!
//! and all four answers must be identical, rows and order. ORDER BY is made
//! total by the dialect itself (`_id` breaks ties), so orders compare exactly.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value as Json, json};
use stratosdb_engine::{Durability, Engine, IndexSpec, Op, Shard, Value};
use stratosdb_query::ast::{Projection, Query, Statement};
use stratosdb_query::eval::{Ctx, eval, matches};
use stratosdb_query::exec::{canonical_key, run_query};
use stratosdb_query::{Database, StatementResult, parse_statement};

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        (-4i64..5).prop_map(|i| json!(i)),
        (-12i32..12).prop_map(|k| json!(k as f64 / 4.0)),
        prop::sample::select(vec!["a", "b", "ab", "ba", ""]).prop_map(|s| json!(s)),
    ]
}

fn maybe_array() -> impl Strategy<Value = Option<Json>> {
    prop_oneof![
        4 => scalar().prop_map(Some),
        1 => Just(None),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(|v| Some(Json::Array(v))),
    ]
}

fn doc() -> impl Strategy<Value = BTreeMap<String, Json>> {
    (
        maybe_array(),
        maybe_array(),
        prop::option::of(prop::sample::select(vec!["x", "y", "z"])),
        prop::option::of(prop_oneof![
            (-3i64..3).prop_map(|i| json!(i)),
            Just(Json::Null)
        ]),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["red", "green", "blue"]),
            0..3,
        )),
    )
        .prop_map(|(a, b, c, nx, tags)| {
            let mut m = BTreeMap::new();
            if let Some(a) = a {
                m.insert("a".into(), a);
            }
            if let Some(b) = b {
                m.insert("b".into(), b);
            }
            if let Some(c) = c {
                m.insert("c".into(), json!(c));
            }
            if let Some(nx) = nx {
                m.insert("n".into(), json!({ "x": nx }));
            }
            if let Some(tags) = tags {
                m.insert("tags".into(), json!(tags));
            }
            m
        })
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("NULL".to_string()),
        Just("true".to_string()),
        (-4i64..5).prop_map(|i| i.to_string()),
        (-12i32..12).prop_map(|k| format!("{}", k as f64 / 4.0)),
        prop::sample::select(vec!["'a'", "'b'", "'ab'", "'x'", "'red'", "''"])
            .prop_map(String::from),
    ]
}

fn field() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "n.x", "tags", "_id"])
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            field(),
            prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]),
            literal()
        )
            .prop_map(|(f, op, l)| format!("{f} {op} {l}")),
        (field(), prop::collection::vec(literal(), 1..4))
            .prop_map(|(f, ls)| format!("{f} IN ({})", ls.join(", "))),
        (field(), literal(), literal()).prop_map(|(f, l, h)| format!("{f} BETWEEN {l} AND {h}")),
        // Two conditions on one field: on a multikey index they may hold for
        // different elements, so the planner must not intersect them.
        (
            prop::sample::select(vec!["a", "b", "c"]),
            -1i64..4,
            -3i64..2
        )
            .prop_map(|(f, l, h)| format!("({f} > {l} AND {f} < {h})")),
        field().prop_map(|f| format!("{f} IS NULL")),
        field().prop_map(|f| format!("{f} IS NOT NULL")),
        (0usize..40).prop_map(|i| format!("_id = 'd{i:02}'")),
        (0usize..40, prop::sample::select(vec!["<", ">="]))
            .prop_map(|(i, op)| format!("_id {op} 'd{i:02}'")),
        prop::sample::select(vec!["c LIKE 'x%'", "tags LIKE 'r%'", "a LIKE '%b'"])
            .prop_map(String::from),
    ]
}

fn predicate() -> impl Strategy<Value = String> {
    atom().prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(x, y)| format!("({x} AND {y})")),
            (inner.clone(), inner.clone()).prop_map(|(x, y)| format!("({x} OR {y})")),
            inner.prop_map(|x| format!("NOT ({x})")),
        ]
    })
}

fn order_by() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["a", "b", "c", "n.x", "_id"]),
            any::<bool>(),
        ),
        0..3,
    )
    .prop_map(|keys| {
        if keys.is_empty() {
            String::new()
        } else {
            let keys: Vec<String> = keys
                .iter()
                .map(|(k, d)| format!("{k}{}", if *d { " DESC" } else { "" }))
                .collect();
            format!(" ORDER BY {}", keys.join(", "))
        }
    })
}

fn query() -> impl Strategy<Value = String> {
    let filter = || {
        prop::option::of(predicate())
            .prop_map(|p| p.map(|p| format!(" WHERE {p}")).unwrap_or_default())
    };
    let limit = (prop::option::of(0u64..8), prop::option::of(0u64..5)).prop_map(|(l, o)| {
        let mut s = String::new();
        if let Some(l) = l {
            s += &format!(" LIMIT {l}");
            if let Some(o) = o {
                s += &format!(" OFFSET {o}");
            }
        }
        s
    });
    prop_oneof![
        3 => (
            prop::sample::select(vec!["*", "_id, a, b", "c, n.x AS nx, tags[0] AS t0"]),
            filter(),
            order_by(),
            limit.clone(),
        )
            .prop_map(|(p, f, o, l)| format!("SELECT {p} FROM t{f}{o}{l}")),
        1 => (
            prop::sample::select(vec!["a", "c", "b"]),
            filter(),
            order_by(),
            limit.clone(),
        )
            .prop_map(|(p, f, o, l)| format!("SELECT DISTINCT {p} FROM t{f}{o}{l}")),
        1 => (
            prop::sample::select(vec!["", " GROUP BY c", " GROUP BY n.x"]),
            filter(),
        )
            .prop_map(|(g, f)| {
                let key = g.strip_prefix(" GROUP BY ").map(|k| format!("{k}, ")).unwrap_or_default();
                format!(
                    "SELECT {key}COUNT(*) AS n, COUNT(a) AS ca, SUM(b) AS sb, AVG(b) AS ab, MIN(a) AS lo, MAX(a) AS hi FROM t{f}{g}"
                )
            }),
    ]
}

fn setup_indexes(shard: &Shard) {
    for (name, fields) in [
        ("by_a", vec!["a"]),
        ("by_b", vec!["b"]),
        ("by_c_b", vec!["c", "b"]),
        ("by_c_nx", vec!["c", "n.x"]),
        ("by_nx", vec!["n.x"]),
        ("by_tags", vec!["tags"]),
    ] {
        shard
            .create_index("t", IndexSpec::new(name, &fields))
            .expect("index");
    }
}

fn load(shard: &Shard, docs: &[Value]) {
    let ops = docs
        .iter()
        .map(|d| Op::Insert {
            collection: "t".into(),
            doc: d.clone(),
        })
        .collect();
    shard.write(ops, Durability::Buffered).expect("load");
}

fn rows_of(r: StatementResult) -> Vec<Value> {
    match r {
        StatementResult::Rows { rows, .. } => rows,
        other => panic!("expected rows, got {other:?}"),
    }
}

/// The naive evaluator: every document, the WHERE, a full sort, no planner.
fn naive(q: &Query, docs: &[Value]) -> Vec<Value> {
    let kept: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            q.filter
                .as_ref()
                .is_none_or(|f| matches(f, Ctx::doc(d)).expect("filter"))
        })
        .collect();
    let project = |items: &[stratosdb_query::ast::SelectItem], ctx: Ctx<'_>| {
        let mut row = BTreeMap::new();
        for i in items {
            if let Some(v) = eval(&i.expr, ctx).expect("eval") {
                row.insert(i.name.clone(), v);
            }
        }
        Value::Object(row)
    };
    let mut rows: Vec<Value> = if q.is_aggregate() {
        let mut groups: BTreeMap<Vec<Option<Value>>, Vec<&Value>> = BTreeMap::new();
        for d in &kept {
            let key = q
                .group_by
                .iter()
                .map(|g| canonical_key(eval(g, Ctx::doc(d)).expect("key")))
                .collect();
            groups.entry(key).or_default().push(d);
        }
        if groups.is_empty() && q.group_by.is_empty() {
            groups.insert(Vec::new(), Vec::new());
        }
        let Projection::Items(items) = &q.projection else {
            panic!("aggregate with *")
        };
        groups
            .into_iter()
            .map(|(key, members)| {
                let aggs: Vec<Option<Value>> = q
                    .aggregates
                    .iter()
                    .map(|call| Some(naive_aggregate(call, &members)))
                    .collect();
                project(items, Ctx::group(&key, &aggs))
            })
            .collect()
    } else {
        let mut keyed: Vec<(Vec<Option<Value>>, &Value)> = kept
            .iter()
            .map(|d| {
                let mut key: Vec<Option<Value>> = q
                    .order_by
                    .iter()
                    .map(|k| eval(&k.expr, Ctx::doc(d)).expect("key"))
                    .collect();
                key.push(d.as_object().and_then(|m| m.get("_id")).cloned());
                (key, *d)
            })
            .collect();
        let mut desc: Vec<bool> = q.order_by.iter().map(|k| k.desc).collect();
        desc.push(q.order_by.last().is_some_and(|k| k.desc));
        keyed.sort_by(|a, b| {
            for (i, (x, y)) in a.0.iter().zip(&b.0).enumerate() {
                let o = if desc[i] { y.cmp(x) } else { x.cmp(y) };
                if o.is_ne() {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        keyed
            .into_iter()
            .map(|(_, d)| match &q.projection {
                Projection::All => d.clone(),
                Projection::Items(items) => project(items, Ctx::doc(d)),
            })
            .collect()
    };
    if q.distinct {
        let mut out: Vec<Value> = Vec::new();
        for r in rows {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        rows = out;
    }
    rows.into_iter()
        .skip(q.offset as usize)
        .take(q.limit.map_or(usize::MAX, |l| l as usize))
        .collect()
}

fn naive_aggregate(call: &stratosdb_query::ast::AggCall, members: &[&Value]) -> Value {
    use stratosdb_query::ast::AggFunc::*;
    let values: Vec<Value> = members
        .iter()
        .filter_map(|d| {
            call.arg
                .as_ref()
                .and_then(|a| eval(a, Ctx::doc(d)).expect("arg"))
        })
        .filter(|v| !matches!(v, Value::Null))
        .collect();
    let numbers: Vec<&Value> = values.iter().filter(|v| v.is_number()).collect();
    match call.func {
        CountRows => Value::Int(members.len() as i64),
        Count => Value::Int(values.len() as i64),
        Sum | Avg if numbers.is_empty() => Value::Null,
        Sum if numbers.iter().all(|v| matches!(v, Value::Int(_))) => Value::Int(
            numbers
                .iter()
                .map(|v| if let Value::Int(i) = v { *i } else { 0 })
                .sum(),
        ),
        Sum => Value::Float(numbers.iter().filter_map(|v| v.as_f64()).sum()),
        Avg => Value::Float(
            numbers.iter().filter_map(|v| v.as_f64()).sum::<f64>() / numbers.len() as f64,
        ),
        // Ties between equal values of different forms (2, 2.0): the smaller JSON text.
        Min => values
            .iter()
            .min_by(|a, b| {
                a.cmp(b)
                    .then_with(|| a.to_json_string().cmp(&b.to_json_string()))
            })
            .cloned()
            .unwrap_or(Value::Null),
        Max => values
            .iter()
            .max_by(|a, b| {
                a.cmp(b)
                    .then_with(|| b.to_json_string().cmp(&a.to_json_string()))
            })
            .cloned()
            .unwrap_or(Value::Null),
    }
}

fn to_json(rows: &[Value]) -> Json {
    Json::Array(rows.iter().map(Value::to_json).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn indexes_full_scans_shards_and_naive_agree(
        docs in prop::collection::vec(doc(), 0..40),
        queries in prop::collection::vec(query(), 1..10),
    ) {
        let docs: Vec<Value> = docs
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                m.insert("_id".into(), json!(format!("d{i:02}")));
                Value::from_json(Json::Object(m.into_iter().collect())).expect("doc")
            })
            .collect();

        let indexed = Database::open_temporary().expect("db");
        indexed.shard().create_collection("t").expect("create");
        setup_indexes(indexed.shard());
        load(indexed.shard(), &docs);

        let plain = Database::open_temporary().expect("db");
        plain.shard().create_collection("t").expect("create");
        load(plain.shard(), &docs);

        let engine = Engine::open_temporary().expect("engine");
        let shards = [engine.shard(0).expect("s0"), engine.shard(1).expect("s1")];
        for s in &shards {
            s.create_collection("t").expect("create");
            setup_indexes(s);
        }
        let (even, odd): (Vec<_>, Vec<_>) = docs.iter().cloned().enumerate().partition(|(i, _)| i % 3 == 0);
        load(&shards[0], &even.into_iter().map(|(_, d)| d).collect::<Vec<_>>());
        load(&shards[1], &odd.into_iter().map(|(_, d)| d).collect::<Vec<_>>());

        for sql in &queries {
            let Statement::Select(q) = parse_statement(sql).expect("parse") else {
                panic!("not a select: {sql}")
            };
            let want = to_json(&naive(&q, &docs));
            let with_indexes = to_json(&rows_of(indexed.execute_one(sql).expect(sql)));
            let without = to_json(&rows_of(plain.execute_one(sql).expect(sql)));
            let (plan, merged) = run_query(&shards, &q).expect(sql);
            let merged = to_json(&merged.rows);
            let index_plan = indexed.plan(&q).expect("plan");
            prop_assert_eq!(&with_indexes, &want, "with indexes: {}\nplan: {:?}", sql, index_plan);
            prop_assert_eq!(&without, &want, "without indexes: {}", sql);
            prop_assert_eq!(&merged, &want, "two shards: {}\nplan: {:?}", sql, plan);
        }
    }
}
