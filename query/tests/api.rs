//! The JSON filter API against SQL, the sharded merge against one shard,
//! stale plans, atomicity and error messages.

use serde_json::json;
use stratosdb_engine::{Engine, IndexSpec, Value};
use stratosdb_query::ast::Statement;
use stratosdb_query::exec::{plan_query, run_plan, run_query};
use stratosdb_query::filter::find_query;
use stratosdb_query::plan::AccessPath;
use stratosdb_query::{Database, FindOptions, Order, QueryError, StatementResult, parse_statement};

fn users() -> Database {
    let db = Database::open_temporary().unwrap();
    db.execute(
        r#"CREATE COLLECTION users;
        CREATE INDEX by_age ON users (age);
        CREATE INDEX by_city_age ON users (address.city, age);
        INSERT INTO users VALUES
          ('{"_id":"u1","name":"Ann","age":31,"address":{"city":"Paris"}}'),
          ('{"_id":"u2","name":"Bob","age":40,"address":{"city":"Paris"}}'),
          ('{"_id":"u3","name":"Cid","age":25,"address":{"city":"Rome"}}'),
          ('{"_id":"u4","name":"Dee","age":52}'),
          ('{"_id":"u5","name":"Eve","age":null,"address":{"city":"Paris"}}')"#,
    )
    .unwrap();
    db
}

fn select(sql: &str) -> stratosdb_query::ast::Query {
    match parse_statement(sql).unwrap() {
        Statement::Select(q) => q,
        other => panic!("not a select: {other:?}"),
    }
}

#[test]
fn filters_and_sql_give_the_same_plan_and_rows() {
    let db = users();
    let cases = [
        (
            json!({"address.city": "Paris", "age": {"$gt": 30}}),
            FindOptions::default(),
            "SELECT * FROM users WHERE address.city = 'Paris' AND age > 30",
        ),
        (
            json!({"age": {"$gte": 25, "$lt": 45}}),
            FindOptions::default()
                .project(&["name", "address.city"])
                .sort("age", Order::Desc)
                .limit(2),
            "SELECT name, address.city FROM users WHERE age >= 25 AND age < 45 ORDER BY age DESC LIMIT 2",
        ),
        (
            json!({"age": {"$in": [25, 52]}}),
            FindOptions::default().project(&["_id"]).skip(1),
            "SELECT _id FROM users WHERE age IN (25, 52) OFFSET 1",
        ),
        (
            json!({"$or": [{"name": "Ann"}, {"age": {"$lte": 25}}]}),
            FindOptions::default().project(&["name"]),
            "SELECT name FROM users WHERE name = 'Ann' OR age <= 25",
        ),
        (
            json!({"age": {"$ne": 31, "$exists": true}}),
            FindOptions::default().project(&["_id"]),
            "",
        ),
        (
            json!({"age": {"$nin": [31, 40]}}),
            FindOptions::default().project(&["_id"]),
            "SELECT _id FROM users WHERE age NOT IN (31, 40)",
        ),
        (
            json!({"$not": {"age": {"$gt": 30}}}),
            FindOptions::default()
                .project(&["_id"])
                .sort("_id", Order::Desc),
            "SELECT _id FROM users WHERE NOT (age > 30) ORDER BY _id DESC",
        ),
        (
            json!({"address.city": {"$not": {"$eq": "Paris"}}, "_id": {"$gte": "u2"}}),
            FindOptions::default().project(&["_id"]),
            "SELECT _id FROM users WHERE _id >= 'u2' AND NOT (address.city = 'Paris')",
        ),
    ];
    for (filter, options, sql) in cases {
        let fq = find_query("users", &filter, &options).unwrap();
        let rows = db.find("users", &filter, &options).unwrap();
        if sql.is_empty() {
            // `$ne` matches a missing age (as in MongoDB); `$exists` keeps present ones (null too).
            let ids: Vec<String> = rows.iter().map(|r| r.to_json_string()).collect();
            assert_eq!(
                ids,
                [
                    r#"{"_id":"u2"}"#,
                    r#"{"_id":"u3"}"#,
                    r#"{"_id":"u4"}"#,
                    r#"{"_id":"u5"}"#
                ]
            );
            continue;
        }
        let sq = select(sql);
        assert_eq!(fq, sq, "{sql}");
        assert_eq!(db.plan(&fq).unwrap(), db.plan(&sq).unwrap(), "{sql}");
        let StatementResult::Rows { rows: sql_rows, .. } = db.execute_one(sql).unwrap() else {
            panic!()
        };
        assert_eq!(rows, sql_rows, "{sql}");
        assert!(!rows.is_empty(), "{sql} found nothing");
    }
    let bad = db.find(
        "users",
        &json!({"age": {"$near": 1}}),
        &FindOptions::default(),
    );
    assert!(matches!(bad, Err(QueryError::InvalidFilter(m)) if m.contains("$near")));
    let bad = db.find("users", &json!([1]), &FindOptions::default());
    assert!(matches!(bad, Err(QueryError::InvalidFilter(_))));
}

#[test]
fn two_shards_merge_to_the_single_shard_answer() {
    let single = Database::open_temporary().unwrap();
    let engine = Engine::open_temporary().unwrap();
    let shards = [engine.shard(0).unwrap(), engine.shard(1).unwrap()];
    let all = [single.shard().clone(), shards[0].clone(), shards[1].clone()];
    for s in &all {
        s.create_collection("o").unwrap();
        s.create_index("o", IndexSpec::new("by_total", &["total"]))
            .unwrap();
    }
    for i in 0..200i64 {
        let doc = Value::from_json_str(&format!(
            r#"{{"_id":"o{i:03}","city":"{}","total":{},"qty":{}}}"#,
            ["Paris", "Lyon", "Rome"][(i % 3) as usize],
            (i * 37) % 101,
            i % 7
        ))
        .unwrap();
        single.shard().insert("o", doc.clone()).unwrap();
        shards[(i % 2) as usize].insert("o", doc).unwrap();
    }
    for sql in [
        "SELECT * FROM o WHERE total > 50 ORDER BY total DESC, qty LIMIT 7 OFFSET 3",
        "SELECT _id, total FROM o ORDER BY total LIMIT 15",
        "SELECT city, COUNT(*) AS n, SUM(total) AS s, AVG(qty) AS a, MIN(total) AS lo, MAX(total) AS hi FROM o GROUP BY city ORDER BY s DESC",
        "SELECT DISTINCT qty FROM o WHERE total BETWEEN 10 AND 90 ORDER BY qty DESC LIMIT 4",
        "SELECT COUNT(*) AS n FROM o WHERE city = 'Rome'",
        "SELECT qty, COUNT(*) AS n FROM o GROUP BY qty HAVING COUNT(*) > 28 ORDER BY n DESC, qty LIMIT 3",
        "SELECT _id FROM o WHERE _id >= 'o150' LIMIT 5",
    ] {
        let q = select(sql);
        let one = single.query(&q).unwrap();
        let (plan, two) = run_query(&shards, &q).unwrap();
        assert_eq!(one, two, "{sql}\n{plan:?}");
        assert!(!one.rows.is_empty(), "{sql}");
    }
}

#[test]
fn a_stale_plan_on_an_index_that_became_multikey_still_answers_right() {
    let db = users();
    let q = select("SELECT _id FROM users WHERE age > 20 AND age < 35 ORDER BY age");
    let plan = db.plan(&q).unwrap();
    assert!(matches!(
        &plan.shard.access,
        AccessPath::IndexScan {
            single_valued: true,
            ..
        }
    ));
    assert!(plan.shard.presorted);
    // Now an array makes by_age multikey: [10, 50] matches > 20 and < 35.
    db.execute(r#"INSERT INTO users VALUES ('{"_id":"u6","age":[10,50]}')"#)
        .unwrap();
    let stale = db.run_plan(&plan).unwrap();
    let fresh = db.query(&q).unwrap();
    assert_eq!(stale, fresh);
    let ids: Vec<String> = fresh.rows.iter().map(|r| r.to_json_string()).collect();
    assert_eq!(
        ids,
        [r#"{"_id":"u3"}"#, r#"{"_id":"u1"}"#, r#"{"_id":"u6"}"#]
    );
    // A new plan knows the index is multikey and does not take order from it.
    let plan = plan_query(std::slice::from_ref(db.shard()), &q).unwrap();
    assert!(!plan.shard.presorted);
    assert_eq!(
        run_plan(std::slice::from_ref(db.shard()), &plan).unwrap(),
        fresh
    );
}

#[test]
fn failing_statements_change_nothing() {
    let db = users();
    let before = db.execute_one("SELECT * FROM users").unwrap();
    let err = db
        .execute_one(
            r#"INSERT INTO users VALUES ('{"_id":"n1"}'), ('{"_id":"n2"}'), ('{"_id":"u1"}')"#,
        )
        .unwrap_err();
    assert_eq!(err.code(), "duplicate_id");
    db.execute("CREATE UNIQUE INDEX by_name ON users (name)")
        .unwrap();
    let err = db
        .execute_one("UPDATE users SET name = 'Same' WHERE age > 30")
        .unwrap_err();
    assert_eq!(err.code(), "unique_violation", "{err}");
    let err = db
        .execute_one("UPDATE users SET age = age * 9223372036854775807 WHERE age > 0")
        .unwrap_err();
    assert_eq!(err.code(), "arithmetic_error");
    assert_eq!(db.execute_one("SELECT * FROM users").unwrap(), before);
    // A script stops at its first failing statement; earlier ones stay applied.
    let err = db
        .execute("DELETE FROM users WHERE _id = 'u4'; DELETE FROM nowhere; DELETE FROM users")
        .unwrap_err();
    assert_eq!(err.code(), "collection_not_found");
    let StatementResult::Rows { rows, .. } =
        db.execute_one("SELECT COUNT(*) AS n FROM users").unwrap()
    else {
        panic!()
    };
    assert_eq!(rows[0].to_json_string(), r#"{"n":4}"#);
}

#[test]
fn errors_name_what_is_wrong() {
    let db = users();
    let msg = |sql: &str| db.execute(sql).unwrap_err().to_string();
    assert_eq!(
        msg("SELECT * FROM users;\nSELECT * FROM users WHERE age >"),
        "syntax error: Expected: an expression, found: EOF at Line: 2, Column: 32"
    );
    assert_eq!(
        msg("SELECT * FROM users WHERE age = = 3"),
        "syntax error: Expected: an expression, found: = at Line: 1, Column: 33"
    );
    assert_eq!(
        msg("SELECT * FROM nope"),
        "collection \"nope\" does not exist"
    );
    assert_eq!(
        msg("DROP INDEX nope"),
        "index \"nope\" does not exist on any collection"
    );
    assert_eq!(
        msg("DROP INDEX users.nope"),
        "index \"nope\" does not exist on collection \"users\""
    );
    assert_eq!(
        msg("SELECT FOO(age) FROM users"),
        "unknown function \"FOO\""
    );
    db.execute("CREATE COLLECTION other; CREATE INDEX by_age ON other (age)")
        .unwrap();
    assert!(msg("DROP INDEX by_age").contains("exists on several collections (other, users)"));
    assert_eq!(
        db.execute("SELECT * FROM users WHERE").unwrap_err().code(),
        "syntax_error"
    );
}

#[test]
fn statements_split_and_report_one_by_one() {
    let db = users();
    let script = "SELECT name FROM users WHERE _id = 'u1'; UPDATE users SET age = 1 WHERE _id = 'u1'; CREATE COLLECTION x";
    let results = db.execute(script).unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1], StatementResult::Affected(1));
    assert!(matches!(&results[2], StatementResult::Message(m) if m.contains("x")));
}

#[test]
fn cached_plans_follow_index_changes() {
    let db = users();
    let sql = "SELECT _id FROM users WHERE name = 'Bob'";
    assert_eq!(db.execute_one(sql).unwrap(), db.execute_one(sql).unwrap());
    assert!(matches!(
        db.plan_sql(sql).unwrap().shard.access,
        AccessPath::FullScan { .. }
    ));
    db.execute("CREATE INDEX by_name ON users (name)").unwrap();
    assert!(matches!(
        &db.plan_sql(sql).unwrap().shard.access,
        AccessPath::IndexScan { index, .. } if index == "by_name"
    ));
    let StatementResult::Rows { rows, .. } = db.execute_one(sql).unwrap() else {
        panic!()
    };
    assert_eq!(rows[0].to_json_string(), r#"{"_id":"u2"}"#);
    db.execute("DROP INDEX by_name").unwrap();
    assert!(matches!(
        db.plan_sql(sql).unwrap().shard.access,
        AccessPath::FullScan { .. }
    ));
    assert_eq!(
        db.execute_one(sql).unwrap(),
        StatementResult::Rows {
            columns: vec!["_id".into()],
            rows: vec![Value::from_json_str(r#"{"_id":"u2"}"#).unwrap()],
        }
    );
}

/// Runs `f` in a thread with the default 2 MiB stack of a test thread, so a
/// recursion that only a big main-thread stack survives is caught here.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the thread did not crash")
}

fn numbers_db() -> Database {
    let db = Database::open_temporary().unwrap();
    db.execute(
        r#"CREATE COLLECTION t;
        CREATE INDEX by_n ON t (n);
        INSERT INTO t VALUES ('{"_id":"a","n":1,"s":"x"}'), ('{"_id":"b","n":2,"s":"y"}'), ('{"_id":"c","n":null}')"#,
    )
    .unwrap();
    db
}

fn count(db: &Database, sql: &str) -> Value {
    match db.execute_one(sql).unwrap() {
        StatementResult::Rows { rows, .. } => rows
            .first()
            .and_then(|r| r.get_path(&[stratosdb_engine::proof::PathSegment::Field("c".into())]))
            .cloned()
            .unwrap_or(Value::Null),
        other => panic!("expected rows, got {other:?}"),
    }
}

#[test]
fn ten_thousand_term_chains_run_on_a_small_stack() {
    let answers = on_small_stack(|| {
        let db = numbers_db();
        let terms = |f: &dyn Fn(usize) -> String, sep: &str| {
            (0..10_000).map(f).collect::<Vec<_>>().join(sep)
        };
        // 10,000 ANDs: every term holds for n = 1.
        let and = format!(
            "SELECT COUNT(*) AS c FROM t WHERE {}",
            terms(&|i| format!("n < {}", i + 2), " AND ")
        );
        // 10,000 ORs: only the last term matches anything.
        let or = format!(
            "SELECT COUNT(*) AS c FROM t WHERE {}",
            terms(
                &|i| if i == 9_999 {
                    "n = 2".to_string()
                } else {
                    format!("n = {}", 100 + i)
                },
                " OR "
            )
        );
        // 1 + 1 + ... (10,000 ones), in SELECT and in WHERE.
        let plus = terms(&|_| "1".to_string(), " + ");
        let sum = format!("SELECT n + {plus} AS c FROM t WHERE _id = 'a'");
        let sum_where = format!("SELECT COUNT(*) AS c FROM t WHERE n + {plus} = 10002");
        let mixed = format!(
            "SELECT COUNT(*) AS c FROM t WHERE {} = 10001",
            terms(
                &|i| if i % 2 == 0 { "n * 2" } else { "n - 1" }.into(),
                " + "
            )
        );
        let concat = format!(
            "SELECT LENGTH(s || {}) AS c FROM t WHERE _id = 'b'",
            terms(&|_| "'ab'".to_string(), " || ")
        );
        [and, or, sum, sum_where, mixed, concat].map(|sql| count(&db, &sql))
    });
    // mixed: for n = 1, 5,000 terms of 2 and 5,000 of 0: 10,000 ≠ 10,001, so no row.
    assert_eq!(
        answers,
        [
            Value::Int(1),
            Value::Int(1),
            Value::Int(10_001),
            Value::Int(1),
            Value::Int(0),
            Value::Int(20_001),
        ]
    );
}

#[test]
fn too_deep_expressions_are_refused_cleanly() {
    let errors = on_small_stack(|| {
        let db = numbers_db();
        let parens = format!(
            "SELECT * FROM t WHERE {}n = 1{}",
            "(".repeat(5_000),
            ")".repeat(5_000)
        );
        let nots = format!("SELECT * FROM t WHERE {}n = 1", "NOT ".repeat(5_000));
        // A chain of comparisons nests (each `=` takes the last as operand).
        let compares = format!("SELECT * FROM t WHERE n{}", " = true".repeat(10_000));
        let is_nulls = format!("SELECT * FROM t WHERE n{}", " IS NULL".repeat(10_000));
        let deep_filter = {
            let mut f = json!({"n": 1});
            // (serde_json's own values drop recursively: keep this one modest.)
            for _ in 0..200 {
                f = json!({ "$not": f });
            }
            db.find("t", &f, &FindOptions::default()).unwrap_err()
        };
        let sql = [parens, nots, compares, is_nulls].map(|s| db.execute_one(&s).unwrap_err());
        (sql, deep_filter)
    });
    let (sql, filter) = errors;
    for e in &sql {
        let msg = e.to_string();
        // Either our limit, or sqlparser's own (parentheses, NOT) as a syntax error.
        assert!(
            matches!(e, QueryError::LimitExceeded { .. } | QueryError::Syntax(_)),
            "{msg}"
        );
    }
    // Our own limit names itself and its value.
    assert_eq!(sql[2].code(), "limit_exceeded");
    assert!(
        sql[2]
            .to_string()
            .contains("expression nesting depth is more than 64"),
        "{}",
        sql[2]
    );
    assert_eq!(filter.code(), "limit_exceeded");
}

#[test]
fn the_deepest_allowed_expression_evaluates_on_a_small_stack() {
    let depth = stratosdb_query::translate::MAX_EXPR_DEPTH;
    let got = on_small_stack(move || {
        let db = numbers_db();
        // Depth just under the limit: sqlparser nests `=` chains without
        // counting them (it stops other nesting at 50), so they reach ours.
        let chain = " = true".repeat(depth - 2);
        let where_clause = format!("(n = 2){chain}");
        count(
            &db,
            &format!("SELECT COUNT(*) AS c FROM t WHERE {where_clause}"),
        )
    });
    assert_eq!(got, Value::Int(1));
}

#[test]
fn range_comparisons_stay_within_the_literals_type() {
    let db = Database::open_temporary().unwrap();
    db.execute(
        r#"CREATE COLLECTION u;
        INSERT INTO u VALUES ('{"_id":"a","age":10,"address":{"city":"Paris"}}'),
          ('{"_id":"b","age":null,"address":{"city":"Rome"}}'), ('{"_id":"c"}'),
          ('{"_id":"d","age":"young","address":{"city":7}}'), ('{"_id":"e","age":30.5}')"#,
    )
    .unwrap();
    let ask = |db: &Database| {
        [
            "SELECT COUNT(*) AS c FROM u WHERE age < 18",
            "SELECT COUNT(*) AS c FROM u WHERE age >= 18",
            "SELECT COUNT(*) AS c FROM u WHERE address.city > 5",
            "SELECT COUNT(*) AS c FROM u WHERE address.city > 'A'",
            "SELECT COUNT(*) AS c FROM u WHERE age BETWEEN 0 AND 100",
        ]
        .map(|sql| count(db, sql))
    };
    let want = [1, 1, 1, 2, 2].map(Value::Int);
    assert_eq!(ask(&db), want, "full scan");
    db.execute("CREATE INDEX by_age ON u (age); CREATE INDEX by_city ON u (address.city)")
        .unwrap();
    assert_eq!(ask(&db), want, "with indexes");
    // The filter API brackets the same way.
    let find = |f: serde_json::Value| db.find("u", &f, &FindOptions::default()).unwrap().len();
    assert_eq!(find(json!({"age": {"$lt": 18}})), 1);
    assert_eq!(find(json!({"age": {"$gte": "a"}})), 1);
    assert_eq!(find(json!({"age": {"$lte": null}})), 0);
}

#[test]
fn lowest_and_highest_numbers_are_inside_the_number_range() {
    let db = Database::open_temporary().unwrap();
    db.execute(&format!(
        r#"CREATE COLLECTION t; CREATE INDEX by_v ON t (v);
        INSERT INTO t VALUES ('{{"_id":"min","v":{}}}'), ('{{"_id":"max","v":{}}}'),
          ('{{"_id":"lowf","v":-1.7976931348623157e308}}'), ('{{"_id":"highf","v":1.7976931348623157e308}}'),
          ('{{"_id":"t","v":true}}'), ('{{"_id":"s","v":""}}')"#,
        i64::MIN,
        i64::MAX
    ))
    .unwrap();
    let plan = db.plan_sql("SELECT _id FROM t WHERE v < 0").unwrap();
    assert!(matches!(plan.shard.access, AccessPath::IndexScan { .. }));
    let ids = |sql: &str| match db.execute_one(sql).unwrap() {
        StatementResult::Rows { rows, .. } => rows
            .iter()
            .map(|r| r.to_json()["_id"].clone())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ids("SELECT _id FROM t WHERE v < 0"),
        [json!("lowf"), json!("min")]
    );
    assert_eq!(
        ids("SELECT _id FROM t WHERE v > 0"),
        [json!("highf"), json!("max")]
    );
    assert_eq!(ids("SELECT _id FROM t WHERE v <= 'a'"), [json!("s")]);
    assert_eq!(ids("SELECT _id FROM t WHERE v >= false"), [json!("t")]);
}

#[test]
fn a_clause_keyword_where_a_value_is_due_is_a_syntax_error_and_changes_nothing() {
    let db = users();
    for sql in [
        "UPDATE users SET age = WHERE _id = 'u1'",
        "UPDATE users SET age = WHERE",
        "SELECT FROM users",
    ] {
        let err = db.execute(sql).unwrap_err();
        assert_eq!(err.code(), "syntax_error", "{sql}: {err}");
    }
    let err = db.execute("UPDATE users SET age = WHERE").unwrap_err();
    assert!(err.to_string().contains("keyword WHERE"), "{err}");
    let rows = db
        .execute("SELECT COUNT(*) AS n FROM users WHERE age >= 0")
        .unwrap();
    let StatementResult::Rows { rows, .. } = &rows[0] else {
        panic!("rows")
    };
    assert_eq!(rows[0].to_json_string(), r#"{"n":4}"#);
    // Quoted, the word is a field name.
    db.execute(r#"UPDATE users SET "where" = 1 WHERE _id = 'u1'"#)
        .unwrap();
    let rows = db
        .execute(r#"SELECT "where" FROM users WHERE _id = 'u1'"#)
        .unwrap();
    let StatementResult::Rows { rows, .. } = &rows[0] else {
        panic!("rows")
    };
    assert_eq!(rows[0].to_json_string(), r#"{"where":1}"#);
}
