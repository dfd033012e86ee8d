//! Read-modify-write statements from many threads are isolated: no update is
//! lost, no document is deleted twice, and the outcome is that of some serial
//! order (checked against a model where the order cannot matter).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use stratosdb_query::{Database, LocalShards, ReadConsistency, ShardedDatabase, StatementResult};

fn count(db: &Database, sql: &str) -> i64 {
    let results = db.execute(sql).expect("query");
    let Some(StatementResult::Rows { rows, .. }) = results.first() else {
        panic!("{sql}: no rows");
    };
    let row = rows[0].to_json_string();
    let value: serde_json::Value = serde_json::from_str(&row).expect("json");
    value
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_i64())
        .expect("a number")
}

fn affected(result: &[StatementResult]) -> u64 {
    match result.first() {
        Some(StatementResult::Affected(n)) => *n,
        other => panic!("expected an affected count, got {other:?}"),
    }
}

#[test]
fn eight_threads_incrementing_one_field_lose_nothing() {
    let db = Arc::new(Database::open_temporary().expect("open"));
    db.execute("CREATE COLLECTION c; INSERT INTO c VALUES ('{\"_id\":\"x\",\"n\":0}')")
        .expect("setup");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let r = db
                        .execute("UPDATE c SET n = n + 1 WHERE _id = 'x'")
                        .expect("update");
                    assert_eq!(affected(&r), 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(count(&db, "SELECT n FROM c WHERE _id = 'x'"), 1600);
}

#[test]
fn concurrent_deletes_delete_each_document_once() {
    let db = Arc::new(Database::open_temporary().expect("open"));
    db.execute("CREATE COLLECTION c").expect("create");
    for i in 0..200 {
        db.execute(&format!(
            "INSERT INTO c VALUES ('{{\"_id\":\"d{i}\",\"n\":{i}}}')"
        ))
        .expect("insert");
    }
    deletes_race(Arc::new(move |sql: &str| {
        db.execute_one(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }));
}

/// Something that runs one statement, shared by threads.
type Run = Arc<dyn Fn(&str) -> StatementResult + Send + Sync>;

/// Four threads race to delete overlapping ranges of the 200 documents of
/// `c` while four others bump every document: the deletes' counts must add
/// up to 200 exactly.
fn deletes_race(run: Run) {
    let deleters: Vec<_> = (0..4)
        .map(|t| {
            let run = run.clone();
            std::thread::spawn(move || {
                let mut total = 0;
                for step in 0..10 {
                    let hi = (t + 1) * 20 + step * 15;
                    match run(&format!("DELETE FROM c WHERE n < {hi} OR n >= 100000")) {
                        StatementResult::Affected(n) => total += n,
                        other => panic!("{other:?}"),
                    }
                }
                total
            })
        })
        .collect();
    let bumpers: Vec<_> = (0..4)
        .map(|_| {
            let run = run.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    run("UPDATE c SET bumped = true");
                }
            })
        })
        .collect();
    let deleted: u64 = deleters
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .sum();
    for t in bumpers {
        t.join().expect("thread");
    }
    let StatementResult::Rows { rows, .. } = run("SELECT COUNT(*) AS n FROM c") else {
        panic!("rows")
    };
    assert_eq!(
        rows[0].to_json_string(),
        format!(r#"{{"n":{}}}"#, 200 - deleted)
    );
}

/// One statement of the differential test. Filters read only `grp`, which no
/// statement changes, so each statement's set of candidate documents is fixed.
#[derive(Clone, Debug)]
enum Step {
    /// `n += k, m -= k` on the group: `n + m` stays what it was.
    Move {
        grp: u8,
        k: i64,
    },
    Delete {
        grp: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..6, 1i64..5).prop_map(|(grp, k)| Step::Move { grp, k }),
        1 => (0u8..6).prop_map(|grp| Step::Delete { grp }),
    ]
}

fn sql(step: &Step) -> String {
    match step {
        Step::Move { grp, k } => format!("UPDATE c SET n = n + {k}, m = m - {k} WHERE grp = {grp}"),
        Step::Delete { grp } => format!("DELETE FROM c WHERE grp = {grp}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Threads run random UPDATE/DELETE statements at once. Whatever order the
    /// engine serialized them in, the model knows the result: a group touched
    /// by a delete is gone (deleted once), and every other document has taken
    /// every move of its group, with `n + m` unchanged.
    #[test]
    fn concurrent_updates_and_deletes_match_a_serial_model(
        plans in prop::collection::vec(prop::collection::vec(step(), 1..25), 2..5)
    ) {
        let db = Arc::new(Database::open_temporary().expect("open"));
        db.execute("CREATE COLLECTION c").expect("create");
        let per_group = 5;
        for grp in 0..6 {
            for i in 0..per_group {
                db.execute(&format!(
                    "INSERT INTO c VALUES ('{{\"_id\":\"g{grp}-{i}\",\"grp\":{grp},\"n\":0,\"m\":100}}')"
                ))
                .expect("insert");
            }
        }
        let handles: Vec<_> = plans
            .iter()
            .cloned()
            .map(|plan| {
                let db = db.clone();
                std::thread::spawn(move || {
                    plan.iter()
                        .map(|s| (s.clone(), affected(&db.execute(&sql(s)).expect("statement"))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let done: Vec<(Step, u64)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();

        let mut moved: BTreeMap<u8, i64> = BTreeMap::new();
        let mut deleted_groups = std::collections::BTreeSet::new();
        let mut delete_total = 0;
        for (step, n) in &done {
            match step {
                Step::Move { grp, k } => {
                    *moved.entry(*grp).or_default() += k;
                    prop_assert!(*n <= per_group);
                }
                Step::Delete { grp } => {
                    deleted_groups.insert(*grp);
                    delete_total += n;
                }
            }
        }
        prop_assert_eq!(delete_total, deleted_groups.len() as u64 * per_group);
        for grp in 0u8..6 {
            let alive = count(&db, &format!("SELECT COUNT(*) FROM c WHERE grp = {grp}"));
            if deleted_groups.contains(&grp) {
                prop_assert_eq!(alive, 0);
                continue;
            }
            prop_assert_eq!(alive, per_group as i64);
            let expect = moved.get(&grp).copied().unwrap_or(0);
            let wrong = count(&db, &format!(
                "SELECT COUNT(*) FROM c WHERE grp = {grp} AND (n != {expect} OR m != {})",
                100 - expect
            ));
            prop_assert_eq!(wrong, 0, "group {} should have n = {}", grp, expect);
        }
    }
}

// ---- the same isolation over four shards --------------------------------------

fn four_shards() -> Arc<ShardedDatabase<LocalShards>> {
    Arc::new(ShardedDatabase::new(
        LocalShards::temporary(4).expect("local shards"),
    ))
}

fn sharded(db: &ShardedDatabase<LocalShards>, sql: &str) -> StatementResult {
    db.execute_one(sql, ReadConsistency::Linearizable)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .result
}

/// 8 threads each add 1 to every document of a collection spread over four
/// shards, 100 times: every document ends at exactly 800 (no shard re-applies
/// its part when another shard conflicted, none loses an increment).
#[test]
fn eight_threads_incrementing_documents_on_four_shards_lose_nothing() {
    let db = four_shards();
    sharded(&db, "CREATE COLLECTION c");
    let docs: Vec<String> = (0..12)
        .map(|i| format!("('{{\"_id\":\"k{i}\",\"n\":0}}')"))
        .collect();
    sharded(&db, &format!("INSERT INTO c VALUES {}", docs.join(", ")));
    let shards: std::collections::BTreeSet<u32> = (0..12)
        .map(|i| stratosdb_engine::shard_of("c", &format!("k{i}"), 4))
        .collect();
    assert_eq!(shards.len(), 4, "the documents must span every shard");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let r = sharded(&db, "UPDATE c SET n = n + 1");
                    assert_eq!(r, StatementResult::Affected(12));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let StatementResult::Rows { rows, .. } = sharded(
        &db,
        "SELECT MIN(n) AS lo, MAX(n) AS hi, COUNT(*) AS k FROM c",
    ) else {
        panic!("rows")
    };
    assert_eq!(rows[0].to_json_string(), r#"{"hi":800,"k":12,"lo":800}"#);
}

#[test]
fn concurrent_deletes_on_four_shards_delete_each_document_once() {
    let db = four_shards();
    sharded(&db, "CREATE COLLECTION c");
    let docs: Vec<String> = (0..200)
        .map(|i| format!("('{{\"_id\":\"d{i}\",\"n\":{i}}}')"))
        .collect();
    sharded(&db, &format!("INSERT INTO c VALUES {}", docs.join(", ")));
    deletes_race(Arc::new(move |sql: &str| sharded(&db, sql)));
}
