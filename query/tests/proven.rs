//! Proven reads on four local shards: every row comes with a proof of its
//! document that verifies and matches the row, absent `_id`s of a lookup
//! come with non-inclusion proofs, and all of it holds while writers change
//! the documents being read (the proof is taken atomically with the read).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use stratosdb_query::ast::Statement;
use stratosdb_query::{
    LocalShards, ReadConsistency, ShardedDatabase, parse_statement, project_document,
};
use stratosdb_verifier::{Verified, verify_rows};

fn select(sql: &str) -> stratosdb_query::ast::Query {
    match parse_statement(sql) {
        Ok(Statement::Select(q)) => q,
        other => panic!("{sql}: {other:?}"),
    }
}

fn check(db: &ShardedDatabase<LocalShards>, sql: &str) -> usize {
    let q = select(sql);
    let proven = db
        .query_proven(&q, ReadConsistency::Linearizable)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let project = |d: &stratosdb_query::Value| project_document(&q, d).map_err(|e| e.to_string());
    verify_rows(&q.collection, &proven.rows.rows, &proven.proofs, &project)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    for p in proven.proofs.iter().chain(&proven.absent) {
        assert!(
            matches!(p.verify(None), Ok(Verified::Unanchored { .. })),
            "{sql}: {}",
            p.describe()
        );
    }
    for p in &proven.absent {
        assert!(p.document.is_none());
    }
    proven.rows.rows.len()
}

#[test]
fn proven_reads_verify_and_match_their_rows_even_under_concurrent_writes() {
    let db = Arc::new(ShardedDatabase::new(LocalShards::temporary(4).unwrap()));
    db.execute_one("CREATE COLLECTION c", ReadConsistency::Linearizable)
        .unwrap();
    for i in 0..40 {
        let sql = format!(
            r#"INSERT INTO c VALUES ('{{"_id":"k{i:02}","n":{i},"g":{}}}')"#,
            i % 4
        );
        db.execute_one(&sql, ReadConsistency::Linearizable).unwrap();
    }
    assert_eq!(check(&db, "SELECT * FROM c ORDER BY n"), 40);
    assert_eq!(
        check(
            &db,
            "SELECT n, g * 10 AS h FROM c WHERE g = 1 ORDER BY n DESC LIMIT 3"
        ),
        3
    );
    assert_eq!(
        check(
            &db,
            "SELECT * FROM c WHERE _id IN ('k01', 'nope', 'k02', 'zz')"
        ),
        2
    );
    let q = select("SELECT * FROM c WHERE _id IN ('k01', 'nope', 'zz')");
    let proven = db.query_proven(&q, ReadConsistency::Linearizable).unwrap();
    let absent: Vec<&str> = proven.absent.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(absent, ["nope", "zz"]);
    for sql in [
        "SELECT COUNT(*) FROM c",
        "SELECT g, COUNT(*) FROM c GROUP BY g",
        "SELECT DISTINCT g FROM c",
    ] {
        let err = db
            .query_proven(&select(sql), ReadConsistency::Linearizable)
            .unwrap_err();
        assert_eq!(err.code(), "proof_unsupported", "{sql}");
    }

    // Writers change documents while proven reads run: every read verifies.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::SeqCst) && round < 5_000 {
                    let sql = format!("UPDATE c SET n = n + 1 WHERE g = {}", (round + w) % 4);
                    db.execute_one(&sql, ReadConsistency::Linearizable).unwrap();
                    round += 1;
                }
            })
        })
        .collect();
    for _ in 0..100 {
        assert_eq!(check(&db, "SELECT * FROM c WHERE g >= 2"), 20);
        assert_eq!(
            check(
                &db,
                "SELECT _id, n FROM c WHERE _id IN ('k03', 'k06', 'absent')"
            ),
            2
        );
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
}
