//! Query-layer benchmarks: each measurement beside its baseline in the same
//! run, so the report is ratios.
//!
//!   cargo bench --bench query -- --warm-up-time 1 --measurement-time 3
//!
//! N documents of about 1 KiB: 20 000 by default, 200 000 with
//! STRATOSDB_BENCH_FULL=1. The dataset is built once, twice over: with
//! indexes, and without any (the same queries as full scans).
//!
//! - `eq_limit10/indexed` vs `eq_limit10/full_scan`: `WHERE email = ... LIMIT 10`
//!   (one match) — target: indexed ≥ 20× the full scan's throughput;
//! - `city_eq_limit10/*`: an equality with N/100 matches, LIMIT 10;
//! - `range/indexed`: `WHERE age >= 40 AND age < 42` on an indexed integer;
//! - `group_by/whole_collection`: COUNT, AVG by city over every document;
//! - `overhead/parse_plan` vs `overhead/point_query`: parsing and planning a
//!   point query vs running it whole — target: parse+plan ≤ 10%.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use stratosdb_engine::{Durability, IndexSpec, Op, Value};
use stratosdb_query::ast::Statement;
use stratosdb_query::{Database, StatementResult, parse_statement};

const CITIES: u64 = 100;

fn size() -> u64 {
    if std::env::var("STRATOSDB_BENCH_FULL").is_ok_and(|v| v == "1") {
        200_000
    } else {
        20_000
    }
}

/// A document of about 1 KiB.
fn document(i: u64) -> Value {
    let bio: String = (0..850)
        .map(|k| (b'a' + ((i as usize * 31 + k * 7) % 26) as u8) as char)
        .collect();
    Value::from_json_str(&format!(
        r#"{{"_id":"u{i:08}","name":"user {i}","email":"user{i}@example.com","age":{},"city":"city-{}","score":{}.5,"active":{},"bio":"{bio}"}}"#,
        i % 100,
        (i * 7919) % CITIES,
        i % 1000,
        i.is_multiple_of(2)
    ))
    .expect("valid document")
}

fn database(n: u64, indexed: bool) -> Database {
    let mut db = Database::open_temporary().expect("database");
    db.set_durability(Durability::Buffered);
    let shard = db.shard().clone();
    shard.create_collection("users").expect("collection");
    if indexed {
        for (name, field) in [
            ("by_email", "email"),
            ("by_city", "city"),
            ("by_age", "age"),
        ] {
            shard
                .create_index("users", IndexSpec::new(name, &[field]))
                .expect("index");
        }
    }
    for start in (0..n).step_by(1000) {
        let ops = (start..(start + 1000).min(n))
            .map(|i| Op::Insert {
                collection: "users".into(),
                doc: document(i),
            })
            .collect();
        shard.write(ops, Durability::Buffered).expect("load");
    }
    db
}

fn rows(db: &Database, sql: &str) -> usize {
    match db.execute_one(sql).expect("query") {
        StatementResult::Rows { rows, .. } => rows.len(),
        other => panic!("expected rows, got {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let n = size();
    let indexed = database(n, true);
    let plain = database(n, false);
    let target = n / 2;
    let email_sql =
        format!("SELECT * FROM users WHERE email = 'user{target}@example.com' LIMIT 10");
    let city_sql = "SELECT * FROM users WHERE city = 'city-42' LIMIT 10";
    let range_sql = "SELECT _id, age FROM users WHERE age >= 40 AND age < 42";
    let group_sql = "SELECT city, COUNT(*) AS n, AVG(age) AS a FROM users GROUP BY city";
    let point_sql = format!("SELECT * FROM users WHERE email = 'user{target}@example.com'");

    // The answers are the same with and without indexes.
    assert_eq!(rows(&indexed, &email_sql), 1);
    assert_eq!(rows(&plain, &email_sql), 1);
    assert_eq!(rows(&indexed, city_sql), rows(&plain, city_sql));
    assert_eq!(rows(&indexed, range_sql), (n / 50) as usize);
    assert_eq!(rows(&indexed, group_sql), CITIES as usize);

    let mut g = c.benchmark_group(format!("eq_limit10_{n}"));
    g.sample_size(10);
    g.bench_function("indexed", |b| {
        b.iter(|| black_box(rows(&indexed, &email_sql)))
    });
    g.bench_function("full_scan", |b| {
        b.iter(|| black_box(rows(&plain, &email_sql)))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("city_eq_limit10_{n}"));
    g.sample_size(20);
    g.bench_function("indexed", |b| {
        b.iter(|| black_box(rows(&indexed, city_sql)))
    });
    g.bench_function("full_scan", |b| {
        b.iter(|| black_box(rows(&plain, city_sql)))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("range_{n}"));
    g.sample_size(10);
    g.bench_function("indexed", |b| {
        b.iter(|| black_box(rows(&indexed, range_sql)))
    });
    g.bench_function("full_scan", |b| {
        b.iter(|| black_box(rows(&plain, range_sql)))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("group_by_{n}"));
    g.sample_size(10);
    g.bench_function("whole_collection", |b| {
        b.iter(|| black_box(rows(&indexed, group_sql)))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("overhead_{n}"));
    g.bench_function("parse_plan", |b| {
        b.iter(|| {
            let Statement::Select(q) = parse_statement(black_box(&point_sql)).expect("parse")
            else {
                unreachable!()
            };
            black_box(indexed.plan(&q).expect("plan"))
        })
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| black_box(parse_statement(black_box(&point_sql)).expect("parse")))
    });
    let Statement::Select(parsed) = parse_statement(&point_sql).expect("parse") else {
        unreachable!()
    };
    g.bench_function("plan_only", |b| {
        b.iter(|| black_box(indexed.plan(black_box(&parsed)).expect("plan")))
    });
    g.bench_function("execute_planned", |b| {
        let plan = indexed.plan(&parsed).expect("plan");
        b.iter(|| black_box(indexed.run_plan(black_box(&plan)).expect("run").rows.len()))
    });
    g.bench_function("parse_plan_cached", |b| {
        // What a repeated statement costs before execution: the statement
        // cache returns the parsed query and its plan.
        let db = &indexed;
        let sql = format!(
            "SELECT * FROM users WHERE email = 'user{}@example.com'",
            n / 3
        );
        rows(db, &sql);
        rows(db, &sql);
        b.iter(|| black_box(db.plan_sql(black_box(&sql)).expect("plan")))
    });
    g.bench_function("point_query", |b| {
        b.iter(|| black_box(rows(&indexed, &point_sql)))
    });
    g.finish();
}

criterion_group!(query_benches, benches);
criterion_main!(query_benches);
