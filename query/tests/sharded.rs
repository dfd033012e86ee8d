//! The sharded executor's own promises: which shards a statement reads, what
//! a write that fails on one shard reports, that only a conflicting shard is
//! retried (a Remote write_conflict too), and the one-shard store's options.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use stratosdb_engine::{CollectionInfo, IndexSpec, Op, OpOutcome};
use stratosdb_query::exec::Partial;
use stratosdb_query::plan::ShardPlan;
use stratosdb_query::{
    Database, LocalShards, QueryError, ReadConsistency, Result, ShardedDatabase, ShardedStore,
    StatementResult,
};

/// LocalShards whose writes can be made to fail, once or always, per shard.
struct Faulty {
    inner: LocalShards,
    /// (shard, error code, times left)
    faults: Mutex<Vec<(u32, &'static str, u32)>>,
    writes: Mutex<Vec<u32>>,
}

impl ShardedStore for Faulty {
    fn shard_count(&self, collection: &str) -> Result<u32> {
        self.inner.shard_count(collection)
    }
    fn shard_of(&self, collection: &str, id: &str) -> Result<u32> {
        self.inner.shard_of(collection, id)
    }
    fn shard_catalog(&self, collection: &str, shard: u32) -> Result<Arc<CollectionInfo>> {
        self.inner.shard_catalog(collection, shard)
    }
    fn execute_partial(
        &self,
        shard: u32,
        plan: &ShardPlan,
        consistency: ReadConsistency,
    ) -> Result<(Partial, u64)> {
        self.inner.execute_partial(shard, plan, consistency)
    }
    fn write(&self, collection: &str, shard: u32, ops: Vec<Op>) -> Result<Vec<OpOutcome>> {
        self.writes.lock().push(shard);
        let mut faults = self.faults.lock();
        if let Some(f) = faults.iter_mut().find(|f| f.0 == shard && f.2 > 0) {
            f.2 -= 1;
            return Err(match f.1 {
                "unavailable" => QueryError::Unavailable(format!("shard {shard} has no quorum")),
                code => QueryError::Remote {
                    code: code.to_string(),
                    message: format!("{code} on shard {shard}"),
                },
            });
        }
        drop(faults);
        self.inner.write(collection, shard, ops)
    }
    fn collections(&self) -> Result<Vec<String>> {
        self.inner.collections()
    }
    fn create_collection(
        &self,
        name: &str,
        shards: Option<u32>,
        replicas: Option<u32>,
    ) -> Result<()> {
        self.inner.create_collection(name, shards, replicas)
    }
    fn drop_collection(&self, name: &str) -> Result<()> {
        self.inner.drop_collection(name)
    }
    fn create_index(&self, collection: &str, spec: &IndexSpec) -> Result<()> {
        self.inner.create_index(collection, spec)
    }
    fn drop_index(&self, collection: &str, name: &str) -> Result<()> {
        self.inner.drop_index(collection, name)
    }
}

fn faulty() -> ShardedDatabase<Faulty> {
    let db = ShardedDatabase::new(Faulty {
        inner: LocalShards::temporary(4).unwrap(),
        faults: Mutex::new(Vec::new()),
        writes: Mutex::new(Vec::new()),
    });
    run(&db, "CREATE COLLECTION c").unwrap();
    let docs: Vec<String> = (0..12)
        .map(|i| format!("('{{\"_id\":\"k{i}\",\"n\":0}}')"))
        .collect();
    run(&db, &format!("INSERT INTO c VALUES {}", docs.join(", "))).unwrap();
    db.store().writes.lock().clear();
    db
}

fn run<S: ShardedStore>(db: &ShardedDatabase<S>, sql: &str) -> Result<StatementResult> {
    db.execute_one(sql, ReadConsistency::Linearizable)
        .map(|e| e.result)
}

fn json<S: ShardedStore>(db: &ShardedDatabase<S>, sql: &str) -> String {
    match run(db, sql).unwrap() {
        StatementResult::Rows { rows, .. } => {
            let rows: Vec<String> = rows.iter().map(|r| r.to_json_string()).collect();
            format!("[{}]", rows.join(","))
        }
        other => panic!("{other:?}"),
    }
}

fn shard(id: &str) -> u32 {
    stratosdb_engine::shard_of("c", id, 4)
}

/// The quoted ids of the fixture's documents that live on `s`.
fn ids_on(s: u32) -> String {
    let ids: Vec<String> = (0..12)
        .map(|i| format!("k{i}"))
        .filter(|id| shard(id) == s)
        .map(|id| format!("'{id}'"))
        .collect();
    ids.join(", ")
}

#[test]
fn reads_name_the_shards_read_and_their_applied_index() {
    let db = faulty();
    let all = db
        .execute_one("SELECT COUNT(*) FROM c", ReadConsistency::Follower)
        .unwrap();
    let shards: Vec<u32> = all.reads.iter().map(|r| r.shard).collect();
    assert_eq!(shards, [0, 1, 2, 3]);
    assert!(all.reads.iter().all(|r| r.collection == "c"));
    // A point lookup reads only the shards that own the ids.
    let one = db
        .execute_one(
            "SELECT * FROM c WHERE _id = 'k3'",
            ReadConsistency::Linearizable,
        )
        .unwrap();
    assert_eq!(one.reads.len(), 1);
    assert_eq!(one.reads[0].shard, shard("k3"));
    let two = db
        .execute_one(
            "SELECT _id FROM c WHERE _id IN ('k1', 'k2', 'k5') ORDER BY _id",
            ReadConsistency::Linearizable,
        )
        .unwrap();
    let want: BTreeSet<u32> = ["k1", "k2", "k5"].iter().map(|i| shard(i)).collect();
    let got: BTreeSet<u32> = two.reads.iter().map(|r| r.shard).collect();
    assert_eq!(got, want);
    assert_eq!(
        json(
            &db,
            "SELECT _id FROM c WHERE _id IN ('k5', 'k1', 'k2') ORDER BY _id DESC"
        ),
        r#"[{"_id":"k5"},{"_id":"k2"},{"_id":"k1"}]"#
    );
    let (rows, reads) = db
        .find(
            "c",
            &serde_json::json!({"_id": "k7"}),
            &Default::default(),
            ReadConsistency::Linearizable,
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(reads.len(), 1);
}

#[test]
fn a_remote_write_conflict_retries_only_that_shard() {
    let db = faulty();
    let victim = shard("k0");
    db.store().faults.lock().push((victim, "write_conflict", 2));
    assert_eq!(
        run(&db, "UPDATE c SET n = n + 1").unwrap(),
        StatementResult::Affected(12)
    );
    // Every document incremented exactly once.
    assert_eq!(
        json(&db, "SELECT MIN(n) AS lo, MAX(n) AS hi FROM c"),
        r#"[{"hi":1,"lo":1}]"#
    );
    let writes = db.store().writes.lock().clone();
    for s in 0..4 {
        let n = writes.iter().filter(|w| **w == s).count();
        assert_eq!(n, if s == victim { 3 } else { 1 }, "shard {s}: {writes:?}");
    }
}

#[test]
fn endless_conflict_is_contention() {
    let db = faulty();
    db.store()
        .faults
        .lock()
        .push((0, "write_conflict", u32::MAX));
    let err = run(&db, &format!("DELETE FROM c WHERE _id IN ({})", ids_on(0))).unwrap_err();
    assert_eq!(err.code(), "contention", "{err}");
    assert_eq!(json(&db, "SELECT COUNT(*) AS n FROM c"), r#"[{"n":12}]"#);
}

#[test]
fn a_shard_failing_after_others_applied_says_how_much_was_written() {
    let db = faulty();
    db.store().faults.lock().push((2, "unavailable", 1));
    let err = run(&db, "UPDATE c SET n = 5").unwrap_err();
    let on_2 = (0..12).filter(|i| shard(&format!("k{i}")) == 2).count();
    assert_eq!(err.code(), "partial_write");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "{} of 12 documents were written before shard 2 failed",
            12 - on_2
        )),
        "{message}"
    );
    assert!(message.contains("no quorum"), "{message}");
    let QueryError::PartialWrite { source, .. } = err else {
        panic!()
    };
    assert_eq!(source.code(), "unavailable");
    // A failure before anything was written is reported as itself.
    db.store().faults.lock().push((3, "unavailable", 1));
    let err = run(&db, &format!("DELETE FROM c WHERE _id IN ({})", ids_on(3))).unwrap_err();
    assert_eq!(err.code(), "unavailable");
}

#[test]
fn inserts_check_ids_before_writing_anything() {
    let db = faulty();
    let err = run(
        &db,
        r#"INSERT INTO c VALUES ('{"_id":"new1"}'), ('{"_id":"new2"}'), ('{"_id":"k4"}')"#,
    )
    .unwrap_err();
    assert_eq!(err.code(), "duplicate_id");
    let err = run(
        &db,
        r#"INSERT INTO c VALUES ('{"_id":"new1"}'), ('{"_id":7}')"#,
    )
    .unwrap_err();
    assert_eq!(err.code(), "invalid_id");
    assert!(db.store().writes.lock().is_empty());
    // Documents without _id get one before routing.
    assert_eq!(
        run(&db, "INSERT INTO c (n) VALUES (1), (2), (3), (4), (5), (6)").unwrap(),
        StatementResult::Affected(6)
    );
    assert_eq!(json(&db, "SELECT COUNT(*) AS n FROM c"), r#"[{"n":18}]"#);
}

#[test]
fn unique_indexes_need_one_shard() {
    let db = faulty();
    let err = run(&db, "CREATE UNIQUE INDEX u ON c (n)").unwrap_err();
    assert_eq!(err.code(), "unique_needs_single_shard");
    let message = err.to_string();
    assert!(message.contains("\"c\" has 4 shards"), "{message}");
    assert!(message.contains("WITH (shards = 1)"), "{message}");
    assert_eq!(json(&db, "SHOW INDEXES FROM c"), "[]");
    run(&db, "CREATE COLLECTION one WITH (shards = 1)").unwrap();
    run(&db, "CREATE UNIQUE INDEX u ON one (n)").unwrap();
}

#[test]
fn the_embedded_database_accepts_the_options_and_keeps_one_shard() {
    let db = Database::open_temporary().unwrap();
    let r = db
        .execute_one("CREATE COLLECTION c WITH (shards = 4, replicas = 3)")
        .unwrap();
    assert_eq!(
        r,
        StatementResult::Message(
            "created collection c with 1 shard (shards = 4 asked; this store keeps 1)".into()
        )
    );
    // One shard: UNIQUE is fine.
    db.execute_one("CREATE UNIQUE INDEX u ON c (email)")
        .unwrap();
    assert_eq!(
        db.execute_one("CREATE COLLECTION d").unwrap(),
        StatementResult::Message("created collection d".into())
    );
}
