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

/// The anchors of one epoch, as a node would record them.
struct Epoch {
    leaves: Vec<stratosdb_verifier::ShardLeaf>,
    payload: stratosdb_verifier::AnchorPayload,
}

impl stratosdb_query::AnchorLookup for Epoch {
    fn anchor_of(
        &self,
        leaf: &stratosdb_verifier::ShardLeaf,
        epoch: u64,
    ) -> Option<stratosdb_verifier::AnchorProof> {
        let index = self.leaves.iter().position(|l| l == leaf)?;
        (epoch == self.payload.epoch).then(|| stratosdb_verifier::AnchorProof {
            epoch,
            cluster_root: self.payload.cluster_root,
            reference: "ledger:1:00".into(),
            leaf_proof: stratosdb_verifier::LeafProof::new(&self.leaves, index).unwrap(),
        })
    }
}

/// The shard plan of `sql` (for whole documents) and its proofs on the one
/// shard of collection `c`, with `anchors`.
fn proven(
    db: &ShardedDatabase<LocalShards>,
    sql: &str,
    anchors: &dyn stratosdb_query::AnchorLookup,
) -> (
    stratosdb_query::plan::ShardPlan,
    Vec<stratosdb_verifier::ReadProof>,
) {
    let shard = db.store().shard("c", 0).unwrap();
    let mut plan = db.plan(&select(sql)).unwrap().shard;
    plan.output = stratosdb_query::plan::ShardOutput::Documents;
    let (_, proofs) = stratosdb_query::execute_proven(&shard, 0, &plan, anchors).unwrap();
    (plan, proofs)
}

#[test]
fn documents_unchanged_since_an_anchored_mark_are_proved_to_the_anchor() {
    let db = ShardedDatabase::new(LocalShards::temporary(1).unwrap());
    db.execute_one("CREATE COLLECTION c", ReadConsistency::Linearizable)
        .unwrap();
    for i in 0..10 {
        let sql = format!(r#"INSERT INTO c VALUES ('{{"_id":"k{i}","n":{i}}}')"#);
        db.execute_one(&sql, ReadConsistency::Linearizable).unwrap();
    }
    let shard = db.store().shard("c", 0).unwrap();
    let mark = shard.record_anchor_mark(7).unwrap();
    let mut leaves = vec![
        stratosdb_verifier::ShardLeaf {
            collection: "c".into(),
            shard: 0,
            raft_index: mark.raft_index,
            root: mark.root,
        },
        stratosdb_verifier::ShardLeaf {
            collection: "other".into(),
            shard: 0,
            raft_index: 3,
            root: [4; 32],
        },
    ];
    stratosdb_verifier::leaves::sort_leaves(&mut leaves);
    let epoch = Epoch {
        payload: stratosdb_verifier::AnchorPayload {
            cluster_id: [1; 32],
            epoch: 7,
            cluster_root: stratosdb_verifier::cluster_root(&leaves),
            leaf_count: 2,
            previous: [0; 32],
        },
        leaves,
    };
    db.execute_one(
        "UPDATE c SET n = 100 WHERE _id = 'k3'",
        ReadConsistency::Linearizable,
    )
    .unwrap();
    let (plan, proofs) = proven(
        &db,
        "SELECT * FROM c WHERE _id IN ('k2', 'k3', 'gone')",
        &epoch,
    );
    let by_id = |id: &str| proofs.iter().find(|p| p.id == id).unwrap();
    // k2 and the absent _id: unchanged since the mark, so anchored.
    for id in ["k2", "gone"] {
        assert_eq!(
            by_id(id).verify(Some(&epoch.payload)).unwrap(),
            Verified::Anchored { epoch: 7 }
        );
    }
    // k3 changed after the mark: proved to the current root, unanchored.
    let k3 = by_id("k3");
    assert!(k3.anchor.is_none());
    assert!(matches!(k3.verify(None), Ok(Verified::Unanchored { .. })));
    assert_eq!(
        k3.document.as_ref().unwrap().to_json_string(),
        r#"{"_id":"k3","n":100}"#
    );
    // Without anchors known, all are unanchored.
    let (_, proofs) =
        stratosdb_query::execute_proven(&shard, 0, &plan, &stratosdb_query::NoAnchors).unwrap();
    assert!(
        proofs
            .iter()
            .all(|p| p.anchor.is_none() && p.verify(None).is_ok())
    );
    // A newer mark, whose epoch is not anchored yet (being sealed): the
    // proofs fall back to the mark before it, epoch 7, which is.
    shard.record_anchor_mark(8).unwrap();
    db.execute_one(
        "UPDATE c SET n = 200 WHERE _id = 'k4'",
        ReadConsistency::Linearizable,
    )
    .unwrap();
    let (_, proofs) = proven(
        &db,
        "SELECT * FROM c WHERE _id IN ('k2', 'k3', 'k4', 'gone')",
        &epoch,
    );
    let by_id = |id: &str| proofs.iter().find(|p| p.id == id).unwrap();
    for id in ["k2", "gone"] {
        assert_eq!(
            by_id(id).verify(Some(&epoch.payload)).unwrap(),
            Verified::Anchored { epoch: 7 },
            "{id}"
        );
    }
    // Changed since mark 7 (k3) or since mark 8 (k4): unanchored.
    for id in ["k3", "k4"] {
        assert!(by_id(id).anchor.is_none(), "{id}");
        assert!(by_id(id).verify(None).is_ok(), "{id}");
    }
}
