//! Differential property test: random documents (missing fields, nulls, mixed
//! types, arrays) and random queries (filters, ORDER BY, LIMIT/OFFSET,
//! DISTINCT, aggregates), answered by
//! 1. a database with many indexes (the planner uses them),
//! 2. a database with no index (full scans),
//! 3. two shards holding halves of the documents, merged,
//! 4. a `ShardedDatabase` of four `LocalShards` with the indexes, documents
//!    routed by `_id`, every plan and shard answer sent through the wire
//!    encoding (`stratosdb_query::wire`) and back,
//! 5. a naive evaluator over all documents (no planner, no engine),
//!
//! and all five answers must be identical, rows and order. ORDER BY is made
//! total by the dialect itself (`_id` breaks ties), so orders compare exactly.
//!
//! The naive evaluator has its own reading of the semantics (it shares only
//! the parser and the engine's `Value` order with the code under test):
//! `< <= > >=` and BETWEEN hold only within one type class, never for null
//! or missing; `=`/`<>`/IN use the total order; a field path fans out over
//! arrays; scalar functions give missing for missing and null for null.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value as Json, json};
use stratosdb_engine::path_values;
use stratosdb_engine::{Durability, Engine, IndexSpec, Op, Shard, Value};
use stratosdb_query::ast::{CmpOp, Expr, Projection, Query, ScalarFunc, Statement};
use stratosdb_query::eval::{Ctx, eval};
use stratosdb_query::exec::Partial;
use stratosdb_query::exec::{canonical_key, run_query};
use stratosdb_query::plan::ShardPlan;
use stratosdb_query::{
    Database, LocalShards, ReadConsistency, ShardedDatabase, ShardedStore, StatementResult,
    decode_partial, decode_shard_plan, encode_partial, encode_shard_plan, parse_statement,
};

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

/// Scalar function calls on fields whose types suit them (a type error in a
/// WHERE depends on which documents a plan reads, so none is generated).
fn function_expr() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "LOWER(c)",
        "UPPER(c)",
        "LENGTH(c)",
        "TRIM(c)",
        "SUBSTR(c, 1, 1)",
        "c || '-' || c",
        "CONCAT(c, 1)",
        "ABS(n.x)",
        "ROUND(n.x)",
        "FLOOR(n.x)",
        "CEIL(n.x)",
        "COALESCE(a, b, 0)",
        "COALESCE(n.x, c)",
        "ARRAY_LENGTH(tags)",
    ])
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            function_expr(),
            prop::sample::select(vec!["=", "<>", "<", ">="]),
            literal()
        )
            .prop_map(|(f, op, l)| format!("{f} {op} {l}")),
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
            prop::sample::select(vec![
                "a",
                "b",
                "c",
                "n.x",
                "_id",
                "LOWER(c)",
                "COALESCE(a, b)",
            ]),
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
            prop::sample::select(vec![
                "*",
                "_id, a, b",
                "c, n.x AS nx, tags[0] AS t0",
                "UPPER(c) AS uc, ARRAY_LENGTH(tags) AS nt, COALESCE(b, a) AS ba",
                "c || '!' AS bang, ABS(n.x) AS ax, SUBSTR(c, 0, 2) AS s",
            ]),
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
            prop::sample::select(vec!["", " GROUP BY c", " GROUP BY n.x", " GROUP BY LOWER(c)"]),
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

const INDEXES: [(&str, &[&str]); 6] = [
    ("by_a", &["a"]),
    ("by_b", &["b"]),
    ("by_c_b", &["c", "b"]),
    ("by_c_nx", &["c", "n.x"]),
    ("by_nx", &["n.x"]),
    ("by_tags", &["tags"]),
];

fn setup_indexes(shard: &Shard) {
    for (name, fields) in INDEXES {
        shard
            .create_index("t", IndexSpec::new(name, fields))
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

/// A store that sends every shard plan and answer through the wire encoding,
/// as a cluster does between nodes.
struct Wire(LocalShards);

impl ShardedStore for Wire {
    fn shard_count(&self, collection: &str) -> stratosdb_query::Result<u32> {
        self.0.shard_count(collection)
    }
    fn shard_of(&self, collection: &str, id: &str) -> stratosdb_query::Result<u32> {
        self.0.shard_of(collection, id)
    }
    fn shard_catalog(
        &self,
        collection: &str,
        shard: u32,
    ) -> stratosdb_query::Result<std::sync::Arc<stratosdb_engine::CollectionInfo>> {
        self.0.shard_catalog(collection, shard)
    }
    fn execute_partial(
        &self,
        shard: u32,
        plan: &ShardPlan,
        consistency: ReadConsistency,
    ) -> stratosdb_query::Result<(Partial, u64)> {
        let sent = decode_shard_plan(&encode_shard_plan(plan))?;
        assert_eq!(&sent, plan);
        let (partial, applied) = self.0.execute_partial(shard, &sent, consistency)?;
        let back = decode_partial(&encode_partial(&partial))?;
        assert_eq!(back, partial);
        Ok((back, applied))
    }
    fn write(
        &self,
        collection: &str,
        shard: u32,
        ops: Vec<Op>,
    ) -> stratosdb_query::Result<Vec<stratosdb_engine::OpOutcome>> {
        self.0.write(collection, shard, ops)
    }
    fn collections(&self) -> stratosdb_query::Result<Vec<String>> {
        self.0.collections()
    }
    fn create_collection(
        &self,
        name: &str,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> stratosdb_query::Result<()> {
        self.0.create_collection(name, shards, replicas)
    }
    fn drop_collection(&self, name: &str) -> stratosdb_query::Result<()> {
        self.0.drop_collection(name)
    }
    fn create_index(&self, collection: &str, spec: &IndexSpec) -> stratosdb_query::Result<()> {
        self.0.create_index(collection, spec)
    }
    fn drop_index(&self, collection: &str, name: &str) -> stratosdb_query::Result<()> {
        self.0.drop_index(collection, name)
    }
}

fn four_shards(docs: &[Value]) -> ShardedDatabase<Wire> {
    let db = ShardedDatabase::new(Wire(LocalShards::temporary(4).expect("local shards")));
    let run = |stmt: &Statement| db.run(stmt, ReadConsistency::Linearizable).expect("setup");
    run(&parse_statement("CREATE COLLECTION t").expect("parse"));
    for (name, fields) in INDEXES {
        run(&Statement::CreateIndex {
            collection: "t".into(),
            spec: IndexSpec::new(name, fields),
        });
    }
    run(&Statement::Insert {
        collection: "t".into(),
        docs: docs.to_vec(),
    });
    db
}

fn rows_of(r: StatementResult) -> Vec<Value> {
    match r {
        StatementResult::Rows { rows, .. } => rows,
        other => panic!("expected rows, got {other:?}"),
    }
}

/// What the naive evaluator reads: a document, or a group's keys and aggregates.
#[derive(Clone, Copy)]
enum Row<'a> {
    Doc(&'a Value),
    Group(&'a [Option<Value>], &'a [Option<Value>]),
}

/// A scalar value (`None`: missing), independently of `stratosdb_query::eval`
/// for everything but arithmetic (which the generator does not produce).
fn naive_eval(e: &Expr, row: Row<'_>) -> Option<Value> {
    match (e, row) {
        (Expr::Literal(v), _) => Some(v.clone()),
        (Expr::Path(p), Row::Doc(d)) => d.get_path(p.segments()).cloned(),
        (Expr::GroupKey(i), Row::Group(keys, _)) => keys.get(*i).cloned().flatten(),
        (Expr::Aggregate(i), Row::Group(_, aggs)) => aggs.get(*i).cloned().flatten(),
        (Expr::Call(f, args), _) => {
            let args: Vec<Option<Value>> = args.iter().map(|a| naive_eval(a, row)).collect();
            naive_call(*f, args)
        }
        (Expr::Arith(..), Row::Doc(d)) => eval(e, Ctx::doc(d)).expect("arith"),
        (Expr::Path(_) | Expr::Arith(..), Row::Group(..)) => panic!("unbound {e}"),
        (Expr::GroupKey(_) | Expr::Aggregate(_), Row::Doc(_)) => panic!("group outside a group"),
        _ => Some(Value::Bool(naive_matches(e, row))),
    }
}

fn naive_call(f: ScalarFunc, args: Vec<Option<Value>>) -> Option<Value> {
    if f == ScalarFunc::Coalesce {
        return Some(
            args.into_iter()
                .flatten()
                .find(|v| *v != Value::Null)
                .unwrap_or(Value::Null),
        );
    }
    let args: Vec<Value> = args.into_iter().collect::<Option<_>>()?;
    if args.contains(&Value::Null) {
        return Some(Value::Null);
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_json_string(),
    };
    let int = |v: &Value| match v {
        Value::Int(i) => *i,
        other => panic!("not an integer: {other}"),
    };
    Some(match (f, args.as_slice()) {
        (ScalarFunc::Lower, [s]) => Value::String(text(s).to_lowercase()),
        (ScalarFunc::Upper, [s]) => Value::String(text(s).to_uppercase()),
        (ScalarFunc::Trim, [s]) => Value::String(text(s).trim().to_string()),
        (ScalarFunc::Length, [s]) => Value::Int(text(s).chars().count() as i64),
        (ScalarFunc::Substr, [s, start, len]) => {
            // Positions start .. start + len - 1, 1-based, clipped to the string.
            let (start, len) = (int(start), int(len));
            Value::String(
                text(s)
                    .chars()
                    .enumerate()
                    .filter(|(i, _)| {
                        let pos = *i as i64 + 1;
                        pos >= start && pos < start + len
                    })
                    .map(|(_, c)| c)
                    .collect(),
            )
        }
        (ScalarFunc::Concat, parts) => Value::String(parts.iter().map(text).collect()),
        (ScalarFunc::Abs, [n]) => Value::Int(int(n).abs()),
        (ScalarFunc::Round | ScalarFunc::Floor | ScalarFunc::Ceil, [n]) => Value::Int(int(n)),
        (ScalarFunc::ArrayLength, [Value::Array(items)]) => Value::Int(items.len() as i64),
        (f, args) => panic!("naive evaluator has no {f:?} of {args:?}"),
    })
}

/// The values a comparison operand stands for: a field path fans out over
/// arrays; anything else is its one value.
fn naive_reach(e: &Expr, row: Row<'_>) -> Vec<Option<Value>> {
    if let (Expr::Path(p), Row::Doc(d)) = (e, row)
        && let Some(fields) = p.fields()
    {
        return path_values(d, fields)
            .into_iter()
            .map(|v| v.cloned())
            .collect();
    }
    vec![naive_eval(e, row)]
}

/// `< <= > >=`: both values of one type class, and not null.
fn naive_range(op: CmpOp, l: &Value, r: &Value) -> bool {
    let class = |v: &Value| match v {
        Value::Null => None,
        Value::Bool(_) => Some(1),
        Value::Int(_) | Value::Float(_) => Some(2),
        Value::String(_) => Some(3),
        Value::Array(_) => Some(4),
        Value::Object(_) => Some(5),
    };
    if class(l).is_none() || class(l) != class(r) {
        return false;
    }
    match op {
        CmpOp::Lt => l < r,
        CmpOp::Le => l <= r,
        CmpOp::Gt => l > r,
        CmpOp::Ge => l >= r,
        CmpOp::Eq | CmpOp::Ne => unreachable!("not a range operator"),
    }
}

fn naive_matches(e: &Expr, row: Row<'_>) -> bool {
    let present = |e: &Expr| {
        naive_reach(e, row)
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
    };
    match e {
        Expr::And(list) => list.iter().all(|x| naive_matches(x, row)),
        Expr::Or(list) => list.iter().any(|x| naive_matches(x, row)),
        Expr::Not(x) => !naive_matches(x, row),
        Expr::Compare(op, a, b) => {
            let (ls, rs) = (present(a), present(b));
            ls.iter().any(|l| {
                rs.iter().any(|r| match op {
                    // `=` and `<>` use the total order, null included.
                    CmpOp::Eq => l == r,
                    CmpOp::Ne => l != r,
                    _ => naive_range(*op, l, r),
                })
            })
        }
        Expr::In(x, list) => {
            let options: Vec<Value> = list.iter().filter_map(|i| naive_eval(i, row)).collect();
            present(x).iter().any(|v| options.contains(v))
        }
        Expr::Between(x, lo, hi) => {
            let (Some(lo), Some(hi)) = (naive_eval(lo, row), naive_eval(hi, row)) else {
                return false;
            };
            present(x)
                .iter()
                .any(|v| naive_range(CmpOp::Ge, v, &lo) && naive_range(CmpOp::Le, v, &hi))
        }
        Expr::IsNull(x) => naive_reach(x, row)
            .iter()
            .any(|v| matches!(v, None | Some(Value::Null))),
        Expr::Like { expr, pattern, .. } => {
            // The generator's patterns are 'p%' and '%s'.
            present(expr).iter().any(|v| match v {
                Value::String(s) => match (pattern.strip_suffix('%'), pattern.strip_prefix('%')) {
                    (Some(prefix), _) => s.starts_with(prefix),
                    (None, Some(suffix)) => s.ends_with(suffix),
                    (None, None) => s == pattern,
                },
                _ => false,
            })
        }
        other => naive_eval(other, row) == Some(Value::Bool(true)),
    }
}

/// The naive evaluator: every document, the WHERE, a full sort, no planner.
fn naive(q: &Query, docs: &[Value]) -> Vec<Value> {
    let kept: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            q.filter
                .as_ref()
                .is_none_or(|f| naive_matches(f, Row::Doc(d)))
        })
        .collect();
    let project = |items: &[stratosdb_query::ast::SelectItem], ctx: Row<'_>| {
        let mut row = BTreeMap::new();
        for i in items {
            if let Some(v) = naive_eval(&i.expr, ctx) {
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
                .map(|g| canonical_key(naive_eval(g, Row::Doc(d))))
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
                project(items, Row::Group(&key, &aggs))
            })
            .collect()
    } else {
        let mut keyed: Vec<(Vec<Option<Value>>, &Value)> = kept
            .iter()
            .map(|d| {
                let mut key: Vec<Option<Value>> = q
                    .order_by
                    .iter()
                    .map(|k| naive_eval(&k.expr, Row::Doc(d)))
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
                Projection::Items(items) => project(items, Row::Doc(d)),
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
        .filter_map(|d| call.arg.as_ref().and_then(|a| naive_eval(a, Row::Doc(d))))
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

        let sharded = four_shards(&docs);

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
            let executed = sharded.execute_one(sql, ReadConsistency::Linearizable).expect(sql);
            let four = to_json(&rows_of(executed.result));
            prop_assert_eq!(&four, &want, "four shards: {}\nplan: {:?}", sql, sharded.plan(&q));
            prop_assert!(executed.reads.len() <= 4);
        }
    }
}
