//! No input crashes the query layer: whatever text, JSON or filter comes in,
//! `execute`, `plan_sql` and `find` return `Ok` or a typed error with a
//! message; they never panic.
//!
//! Random inputs (proptest; a panic fails the property and is shrunk to a
//! minimal input) run against a small populated collection with indexes, so
//! the planner's index paths and the executor run too. The explicit
//! regressions at the end feed inputs of the size that used to overflow the
//! stack, each in a thread with the default 2 MiB test stack.

use proptest::prelude::*;
use serde_json::{Value as Json, json};
use stratosdb_query::{Database, FindOptions, Order, QueryError, Value};

/// A fresh database with `t` (documents of every shape, three indexes, one
/// UNIQUE) and an empty `e`.
fn populated() -> Database {
    let db = Database::open_temporary().expect("a temporary database");
    db.execute(
        r#"CREATE COLLECTION t;
        CREATE COLLECTION e;
        CREATE INDEX by_a ON t (a);
        CREATE INDEX by_bc_n ON t (b.c, n);
        CREATE UNIQUE INDEX by_u ON t (u);
        INSERT INTO t VALUES
          ('{"_id":"d1","a":1,"b":{"c":"x"},"n":1.5,"u":"one","tags":["p","q"]}'),
          ('{"_id":"d2","a":-7,"b":{"c":"y"},"n":null,"u":"two","tags":[]}'),
          ('{"_id":"d3","a":"str","b":{"c":["x","z"]},"n":9223372036854775807}'),
          ('{"_id":"d4","a":[1,2,[3]],"b":5,"s":"ü€😀","n":-0.0}'),
          ('{"_id":"d5","a":{"k":{"l":true}},"b":{"c":null},"n":1e300}'),
          ('{"_id":"d6","n":-9223372036854775808,"tags":["p"],"z":false}'),
          ('{"_id":"d7","a":null,"b":{},"n":0}')"#,
    )
    .expect("the fixture loads");
    db
}

/// The property every call must hold: `Ok`, or an error that says something.
fn assert_clean<T>(what: &str, input: &str, result: Result<T, QueryError>) {
    if let Err(e) = result {
        let msg = e.to_string();
        assert!(
            !msg.trim().is_empty() && !e.code().is_empty(),
            "{what} gave an empty error for {input:?}: {e:?}"
        );
    }
}

/// Runs a script through every SQL entry point.
fn run_sql(db: &Database, sql: &str) {
    assert_clean("plan_sql", sql, db.plan_sql(sql));
    assert_clean("execute", sql, db.execute(sql));
    // Twice: the second run may hit the statement cache, after the first
    // may have changed the catalog.
    assert_clean("execute (again)", sql, db.execute(sql));
    assert_clean("plan_sql (again)", sql, db.plan_sql(sql));
}

/// A string as an SQL literal ('' doubles a quote).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------
// Token soups

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "DROP",
    "COLLECTION",
    "COLLECTIONS",
    "INDEX",
    "INDEXES",
    "UNIQUE",
    "ON",
    "SHOW",
    "EXPLAIN",
    "ORDER",
    "GROUP",
    "BY",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "IN",
    "BETWEEN",
    "LIKE",
    "ESCAPE",
    "DISTINCT",
    "AS",
    "ASC",
    "DESC",
    "TRUE",
    "FALSE",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "CASE",
    "WHEN",
    "THEN",
    "END",
    "JOIN",
    "UNION",
    "WITH",
    "TABLE",
];

const IDENTIFIERS: &[&str] = &[
    "t",
    "e",
    "nope",
    "a",
    "b.c",
    "b.c.d",
    "n",
    "u",
    "_id",
    "tags",
    "tags[0]",
    "tags[99999999999999999999]",
    "a[-1]",
    "\"quoted id\"",
    "\"unterminated",
    "`back`",
    "`",
    "by_a",
    "by_u",
    "t.a",
    "x.0.y",
];

const LITERALS: &[&str] = &[
    "1",
    "0",
    "-1",
    "1.5",
    "-0.0",
    "1e308",
    "1e999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "99999999999999999999999999",
    "0x1F",
    "'str'",
    "''",
    "'it''s'",
    "'unterminated",
    "'{\"_id\":\"n1\",\"a\":1}'",
    "'{\"a\":1,\"a\":2}'",
    "'[1,2]'",
    "'{\"a\":NaN}'",
    "'{\"a\":\"\\ud800\"}'",
    "'%'",
    "'_%\\'",
    "NULL",
    "E'esc\\n'",
    "$1",
    "?",
    ":name",
];

const PUNCTUATION: &[&str] = &[
    "+", "-", "*", "/", "%", "=", "==", "<>", "!=", "<", "<=", ">", ">=", "||", "::", "->", "->>",
    "(", ")", "((", "))", "[", "]", "{", "}", ",", ";", ".", "..", "@", "#", "--", "/*", "*/",
    "\"", "'", "`", "\\", "\\d", "\n", "\t", "\u{0}", "é", "😀",
];

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYWORDS).prop_map(str::to_string),
        2 => prop::sample::select(IDENTIFIERS).prop_map(str::to_string),
        2 => prop::sample::select(LITERALS).prop_map(str::to_string),
        3 => prop::sample::select(PUNCTUATION).prop_map(str::to_string),
        1 => "\\PC{0,6}",
        1 => any::<i64>().prop_map(|i| i.to_string()),
    ]
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((token(), prop::bool::weighted(0.8)), 0..40).prop_map(|tokens| {
        let mut out = String::new();
        for (t, space) in tokens {
            out.push_str(&t);
            if space {
                out.push(' ');
            }
        }
        out
    })
}

/// Soups that begin like a real statement, so they get past the first keyword.
fn statement_soup() -> impl Strategy<Value = String> {
    let start = prop::sample::select(vec![
        "SELECT * FROM t WHERE",
        "SELECT",
        "SELECT a FROM t ORDER BY",
        "SELECT COUNT(*) FROM t GROUP BY",
        "INSERT INTO t VALUES (",
        "INSERT INTO t (a, b.c) VALUES",
        "UPDATE t SET",
        "DELETE FROM t WHERE",
        "CREATE INDEX i ON t (",
        "CREATE COLLECTION",
        "DROP",
        "SHOW INDEXES FROM",
        "EXPLAIN SELECT * FROM t WHERE",
    ]);
    (start, token_soup()).prop_map(|(s, soup)| format!("{s} {soup}"))
}

// ---------------------------------------------------------------------------
// Random SQL from a small grammar

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a",
        "b.c",
        "b",
        "n",
        "u",
        "_id",
        "tags",
        "tags[0]",
        "tags[1]",
        "s",
        "z",
        "missing",
        "a.k.l",
        "b.c.d",
        "\"odd key\"",
    ])
    .prop_map(str::to_string)
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        (-5i64..5).prop_map(|i| i.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        prop::sample::select(vec![
            "NULL",
            "TRUE",
            "FALSE",
            "1e308",
            "1e999",
            "-0.0",
            "9223372036854775808",
            "0.1"
        ])
        .prop_map(str::to_string),
        "[a-z%_\\\\']{0,6}".prop_map(|s| sql_string(&s)),
        "\\PC{0,4}".prop_map(|s| sql_string(&s)),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![3 => path(), 2 => literal()];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let binop = prop::sample::select(vec![
            "+", "-", "*", "/", "%", "=", "<>", "!=", "<", "<=", ">", ">=", "AND", "OR",
        ]);
        let func = prop::sample::select(vec![
            "COUNT", "SUM", "AVG", "MIN", "MAX", "LOWER", "count", "abs",
        ]);
        prop_oneof![
            (inner.clone(), binop, inner.clone()).prop_map(|(l, op, r)| format!("{l} {op} {r}")),
            inner.clone().prop_map(|x| format!("({x})")),
            inner.clone().prop_map(|x| format!("NOT {x}")),
            inner.clone().prop_map(|x| format!("-{x}")),
            (inner.clone(), any::<bool>())
                .prop_map(|(x, not)| format!("{x} IS {}NULL", if not { "NOT " } else { "" })),
            (
                inner.clone(),
                prop::collection::vec(inner.clone(), 0..4),
                any::<bool>()
            )
                .prop_map(|(x, list, not)| format!(
                    "{x} {}IN ({})",
                    if not { "NOT " } else { "" },
                    list.join(", ")
                )),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(x, lo, hi)| format!("{x} BETWEEN {lo} AND {hi}")),
            (
                inner.clone(),
                "[a-z%_\\\\]{0,5}",
                prop::option::of("[%_\\\\a]")
            )
                .prop_map(|(x, p, esc)| match esc {
                    Some(e) => format!("{x} LIKE {} ESCAPE {}", sql_string(&p), sql_string(&e)),
                    None => format!("{x} LIKE {}", sql_string(&p)),
                }),
            (func.clone(), inner.clone()).prop_map(|(f, x)| format!("{f}({x})")),
            func.clone().prop_map(|f| format!("{f}(*)")),
            (func, inner.clone()).prop_map(|(f, x)| format!("{f}(DISTINCT {x})")),
        ]
    })
}

fn collection() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["t", "t", "t", "e", "nope"])
}

fn limit() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..10).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "18446744073709551615",
            "9223372036854775807",
            "-1",
            "1.5",
            "'x'",
            "NULL",
            "99999999999999999999999"
        ])
        .prop_map(str::to_string),
    ]
}

fn select() -> impl Strategy<Value = String> {
    let items = prop_oneof![
        Just("*".to_string()),
        prop::collection::vec(
            (expr(), prop::option::of("[a-z]{1,3}")).prop_map(|(e, alias)| match alias {
                Some(a) => format!("{e} AS {a}"),
                None => e,
            }),
            1..4
        )
        .prop_map(|items| items.join(", ")),
    ];
    (
        any::<bool>(),
        items,
        collection(),
        prop::option::of(expr()),
        prop::option::of(prop::collection::vec(path(), 1..3)),
        prop::option::of(expr()),
        prop::option::of((expr(), any::<bool>())),
        prop::option::of(limit()),
        prop::option::of(limit()),
    )
        .prop_map(
            |(distinct, items, coll, filter, group, having, order, lim, off)| {
                let mut s = format!(
                    "SELECT {}{items} FROM {coll}",
                    if distinct { "DISTINCT " } else { "" }
                );
                if let Some(f) = filter {
                    s.push_str(&format!(" WHERE {f}"));
                }
                if let Some(g) = group {
                    s.push_str(&format!(" GROUP BY {}", g.join(", ")));
                }
                if let Some(h) = having {
                    s.push_str(&format!(" HAVING {h}"));
                }
                if let Some((o, desc)) = order {
                    s.push_str(&format!(" ORDER BY {o}{}", if desc { " DESC" } else { "" }));
                }
                if let Some(l) = lim {
                    s.push_str(&format!(" LIMIT {l}"));
                }
                if let Some(o) = off {
                    s.push_str(&format!(" OFFSET {o}"));
                }
                s
            },
        )
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(),
        1 => select().prop_map(|s| format!("EXPLAIN {s}")),
        1 => (collection(), prop::collection::vec(json_document(), 1..3)).prop_map(|(c, docs)| {
            let rows: Vec<String> = docs.iter().map(|d| format!("({})", sql_string(d))).collect();
            format!("INSERT INTO {c} VALUES {}", rows.join(", "))
        }),
        1 => (collection(), prop::collection::vec((path(), expr()), 1..3)).prop_map(|(c, cols)| {
            let (names, vals): (Vec<_>, Vec<_>) = cols.into_iter().unzip();
            format!("INSERT INTO {c} ({}) VALUES ({})", names.join(", "), vals.join(", "))
        }),
        1 => (collection(), prop::collection::vec((path(), expr()), 1..3), prop::option::of(expr()))
            .prop_map(|(c, sets, filter)| {
                let sets: Vec<String> = sets.iter().map(|(p, e)| format!("{p} = {e}")).collect();
                let mut s = format!("UPDATE {c} SET {}", sets.join(", "));
                if let Some(f) = filter {
                    s.push_str(&format!(" WHERE {f}"));
                }
                s
            }),
        1 => (collection(), prop::option::of(expr())).prop_map(|(c, filter)| match filter {
            Some(f) => format!("DELETE FROM {c} WHERE {f}"),
            None => format!("DELETE FROM {c}"),
        }),
        1 => (any::<bool>(), "[a-z_]{1,4}", collection(), prop::collection::vec(path(), 0..3))
            .prop_map(|(unique, name, c, paths)| format!(
                "CREATE {}INDEX {name} ON {c} ({})",
                if unique { "UNIQUE " } else { "" },
                paths.join(", ")
            )),
        1 => prop::sample::select(vec![
            "DROP INDEX by_a",
            "DROP INDEX t.by_u",
            "DROP INDEX nope",
            "DROP COLLECTION e",
            "DROP COLLECTION nope",
            "CREATE COLLECTION t",
            "CREATE COLLECTION \"new one\"",
            "SHOW COLLECTIONS",
            "SHOW INDEXES FROM t",
            "SHOW INDEXES FROM nope",
            "SHOW INDEXES",
        ])
        .prop_map(str::to_string),
    ]
}

// ---------------------------------------------------------------------------
// JSON documents, fair and hostile

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        "\\PC{0,6}".prop_map(Json::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map("[a-c_]{0,2}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON text for a document: often a valid object, often hostile.
fn json_document() -> impl Strategy<Value = String> {
    let fair = (prop::option::of("[a-z0-9]{1,4}"), json_value()).prop_map(|(id, v)| {
        let mut doc = serde_json::Map::new();
        if let Some(id) = id {
            doc.insert("_id".into(), Json::from(id));
        }
        doc.insert("a".into(), v.clone());
        doc.insert("b".into(), json!({ "c": v }));
        Json::Object(doc).to_string()
    });
    prop_oneof![
        4 => fair,
        1 => (1usize..400).prop_map(|d| format!("{{\"a\":{}1{}}}", "[".repeat(d), "]".repeat(d))),
        1 => (1usize..400).prop_map(|d| format!("{}{}", "{\"a\":".repeat(d), "}".repeat(d))),
        1 => (1usize..400).prop_map(|d| "[".repeat(d)),
        1 => prop::sample::select(vec![
            r#"{"a":1,"a":2}"#,
            r#"{"_id":"x","_id":"y"}"#,
            r#"{"b":{"c":1,"c":1}}"#,
            r#"{"a":NaN}"#,
            r#"{"a":Infinity}"#,
            r#"{"a":-Infinity}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00\ud800"}"#,
            r#"{"a":1e999}"#,
            r#"{"a":123456789012345678901234567890}"#,
            r#"{"_id":5}"#,
            r#"{"_id":""}"#,
            r#"{"_id":null}"#,
            r#"{"u":"one"}"#,
            r#"{"a":1"#,
            r#"{"a":1}}"#,
            "{\"a\":\"\u{0}\"}",
            "{\"a\":\"\\u0000\"}",
            "{}",
            "[]",
            "null",
            "",
        ])
        .prop_map(str::to_string),
        1 => (1usize..200_000).prop_map(|n| format!("{{\"big\":\"{}\"}}", "x".repeat(n))),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

// ---------------------------------------------------------------------------
// Filters for `find`

fn filter() -> impl Strategy<Value = Json> {
    let field = prop::sample::select(vec![
        "a", "b.c", "n", "u", "_id", "tags", "tags.0", "missing", "", "a..b", ".a", "$weird",
    ]);
    let leaf = (field.clone(), json_value()).prop_map(|(f, v)| json!({ f: v }));
    leaf.prop_recursive(3, 24, 4, move |inner| {
        let op = prop::sample::select(vec![
            "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not", "$bogus",
        ]);
        prop_oneof![
            (field.clone(), op, json_value()).prop_map(|(f, op, v)| json!({ f: { op: v } })),
            (field.clone(), prop::collection::vec(json_value(), 0..4))
                .prop_map(|(f, vs)| json!({ f: { "$in": vs } })),
            (field.clone(), inner.clone()).prop_map(|(f, x)| json!({ f: { "$not": x } })),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|xs| json!({ "$and": xs })),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|xs| json!({ "$or": xs })),
            inner.clone().prop_map(|x| json!({ "$and": x })),
            prop::collection::vec(inner, 0..3).prop_map(Json::Array),
            json_value(),
        ]
    })
}

fn find_options() -> impl Strategy<Value = FindOptions> {
    let p = prop::sample::select(vec![
        "a", "b.c", "n", "_id", "tags.0", "missing", "", "x..y",
    ]);
    (
        prop::option::of(prop::collection::vec(p.clone(), 0..3)),
        prop::collection::vec((p, any::<bool>()), 0..3),
        prop_oneof![Just(0u64), 0u64..10, Just(u64::MAX), any::<u64>()],
        prop::option::of(prop_oneof![0u64..10, Just(u64::MAX), any::<u64>()]),
    )
        .prop_map(|(projection, sort, skip, limit)| {
            let mut o = FindOptions::default();
            if let Some(paths) = projection {
                o = o.project(&paths);
            }
            for (p, desc) in sort {
                o = o.sort(p, if desc { Order::Desc } else { Order::Asc });
            }
            o = o.skip(skip);
            if let Some(l) = limit {
                o = o.limit(l);
            }
            o
        })
}

/// 256 cases per property (a few seconds in debug); set `ROBUSTNESS_CASES`
/// to hunt longer.
fn cases() -> u32 {
    std::env::var("ROBUSTNESS_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn token_soups_never_panic(soup in prop_oneof![token_soup(), statement_soup()]) {
        run_sql(&populated(), &soup);
    }

    #[test]
    fn grammar_sql_never_panics(stmts in prop::collection::vec(statement(), 1..4)) {
        let db = populated();
        for s in &stmts {
            run_sql(&db, s);
        }
        // And all of them as one script.
        run_sql(&db, &stmts.join(";\n"));
    }

    #[test]
    fn hostile_documents_never_panic(docs in prop::collection::vec(json_document(), 1..4)) {
        let db = populated();
        for doc in &docs {
            let sql = format!("INSERT INTO t VALUES ({})", sql_string(doc));
            run_sql(&db, &sql);
            // A document read from bytes goes through the same rules.
            assert_clean("from_json_slice", doc, Value::from_json_slice(doc.as_bytes()).map_err(
                |e| QueryError::InvalidValue(e.to_string()),
            ));
        }
        let rows: Vec<String> = docs.iter().map(|d| format!("({})", sql_string(d))).collect();
        run_sql(&db, &format!("INSERT INTO t VALUES {}", rows.join(", ")));
        run_sql(&db, "SELECT * FROM t ORDER BY a; SELECT b.c, COUNT(*) FROM t GROUP BY b.c");
    }

    #[test]
    fn invalid_utf8_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        // The byte-level readers refuse or accept; what they accept runs.
        if let Ok(doc) = Value::from_json_slice(&bytes) {
            prop_assert!(std::str::from_utf8(&bytes).is_ok());
            let db = populated();
            run_sql(&db, &format!("INSERT INTO t VALUES ({})", sql_string(&doc.to_json_string())));
        }
        if let Ok(filter) = serde_json::from_slice::<Json>(&bytes) {
            let db = populated();
            assert_clean("find", "bytes", db.find("t", &filter, &FindOptions::default()));
        }
        let text = String::from_utf8_lossy(&bytes);
        run_sql(&populated(), &text);
    }

    #[test]
    fn random_filters_never_panic(f in filter(), options in find_options(), coll in collection()) {
        let db = populated();
        let input = f.to_string();
        assert_clean("find", &input, db.find(coll, &f, &options));
        assert_clean("find", &input, db.find(coll, &f, &FindOptions::default()));
    }
}

// ---------------------------------------------------------------------------
// Inputs of the sizes that used to overflow the stack. Each runs on a thread
// with the default test stack; a panic fails the test, a stack overflow would
// abort the whole binary.

/// Runs `sql` on the populated database in a 2 MiB thread; returns the
/// outcome of `execute` (already checked for a clean error).
fn on_default_stack(sql: String) -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let db = populated();
            assert_clean("plan_sql", "(large input)", db.plan_sql(&sql));
            let result = db.execute(&sql);
            match result {
                Ok(_) => Ok(()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.trim().is_empty(), "empty error: {e:?}");
                    Err(msg)
                }
            }
        })
        .expect("a thread")
        .join()
        .expect("no panic")
}

fn terms(n: usize, term: impl Fn(usize) -> String, sep: &str) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(sep)
}

#[test]
fn ten_thousand_and_terms() {
    let sql = format!(
        "SELECT _id FROM t WHERE {}",
        terms(10_000, |i| format!("a <> {i}"), " AND ")
    );
    assert_eq!(on_default_stack(sql), Ok(()));
}

#[test]
fn ten_thousand_or_terms() {
    let sql = format!(
        "SELECT _id FROM t WHERE {}",
        terms(10_000, |i| format!("a = {i}"), " OR ")
    );
    assert_eq!(on_default_stack(sql), Ok(()));
}

#[test]
fn ten_thousand_plus_terms() {
    let sql = format!(
        "SELECT {} AS s FROM t LIMIT 1",
        terms(10_000, |_| "1".into(), "+")
    );
    assert_eq!(on_default_stack(sql), Ok(()));
}

#[test]
fn ten_thousand_nested_parentheses() {
    let sql = format!(
        "SELECT _id FROM t WHERE {}a = 1{}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let err = on_default_stack(sql).expect_err("refused");
    assert!(err.contains("recursion limit"), "{err}");
}

#[test]
fn hundred_thousand_deep_json_in_insert() {
    let doc = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
    let err = on_default_stack(format!("INSERT INTO t VALUES ('{doc}')")).expect_err("refused");
    assert!(
        err.contains("row 1: invalid JSON: nested deeper than 100 levels at line 1, column 105"),
        "{err}"
    );
    // Unclosed, and as a column value: the same clean refusal or a plain string.
    let doc = format!("{{\"a\":{}", "[".repeat(100_000));
    let err = on_default_stack(format!("INSERT INTO t VALUES ('{doc}')")).expect_err("refused");
    assert!(err.contains("nested deeper than 100 levels"), "{err}");
}

#[test]
fn duplicate_keys_are_refused_with_key_and_path() {
    let db = populated();
    let err = db
        .execute(
            r#"INSERT INTO t VALUES ('{"_id":"k1","a":1}'), ('{"_id":"k2","b":{"c":1,"c":2}}')"#,
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid_value");
    assert_eq!(
        err.to_string(),
        r#"invalid value: row 2: invalid JSON: duplicate key "c" in the object at b at line 1, column 24"#
    );
    // Nothing of the statement was written.
    let rows = db
        .find("t", &json!({"_id": "k1"}), &FindOptions::default())
        .unwrap();
    assert!(rows.is_empty());
    let err = db
        .execute(r#"INSERT INTO t VALUES ('{"_id":"k3","_id":"k4"}')"#)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"duplicate key "_id" in the top-level object"#),
        "{err}"
    );
}

#[test]
fn nan_and_surrogates_in_documents_are_refused_by_name() {
    let db = populated();
    for (doc, expect) in [
        (r#"{"a":NaN}"#, "NaN is not a JSON value"),
        (r#"{"a":[-Infinity]}"#, "-Infinity is not a JSON value"),
        (r#"{"a":"\ud800"}"#, "lone surrogate \\ud800"),
        (r#"{"a":1e999}"#, "out of the 64-bit float range"),
        (
            r#"{"a":123456789012345678901234567890}"#,
            "outside the 64-bit signed range",
        ),
    ] {
        let err = db
            .execute(&format!("INSERT INTO t VALUES ('{doc}')"))
            .unwrap_err();
        assert!(err.to_string().contains(expect), "{doc}: {err}");
    }
}
