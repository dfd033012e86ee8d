//! The query crate's SQL fixture suite (`query/tests/fixtures/*.sql` and
//! `query/tests/fixtures/sharded/*.sql`, format in
//! [`stratosdb_query::fixture`]) against a cluster of three real `stratosdb
//! node` processes: the cluster must give the answers the embedded database
//! gives. The statements of each file are sent round-robin to the three
//! nodes over HTTP (`POST /v1/sql` with `"detail": true`, what the shell's
//! `--connect` sends), so that every node's view of what the others just did
//! is checked too.
//!
//! One cluster serves every file (clusters are slow to start); a file runs on
//! a cluster with no collections, as the fixture format promises: whatever a
//! file leaves is dropped before the next one.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use stratosdb_query::StatementResult;
use stratosdb_query::fixture::{FixtureTarget, fixture_files, run_fixture_file};

mod common;
use common::cluster::{Api, TestCluster, until_answered};
use common::http::statement_result;
use common::process::TIMEOUT;

/// The cluster, through every node in turn.
struct RoundRobin {
    apis: Vec<Api>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// One statement through the next node, linearizable. A healthy
    /// cluster answers every statement as the embedded database does: a 503
    /// is a failure here.
    fn send(&self, sql: &str) -> Result<StatementResult, String> {
        let i = self.next.fetch_add(1, Ordering::SeqCst) % self.apis.len();
        let reply = self.apis[i]
            .sql_detail(sql, "linearizable")
            .map_err(|e| format!("node {i} did not answer: {e}"))?;
        statement_result(reply.status, &reply.text)
    }
}

impl FixtureTarget for RoundRobin {
    fn run(&self, sql: &str) -> Result<StatementResult, String> {
        self.send(sql)
    }
}

/// The collections the cluster has (`SHOW COLLECTIONS` through node 0).
fn collections(api: &Api) -> Vec<String> {
    let reply = until_answered(TIMEOUT, "SHOW COLLECTIONS", || {
        api.sql_detail("SHOW COLLECTIONS", "linearizable")
    });
    match statement_result(reply.status, &reply.text) {
        Ok(StatementResult::Rows { rows, .. }) => rows
            .iter()
            .map(|r| {
                r.to_json()["collection"]
                    .as_str()
                    .unwrap_or_else(|| panic!("SHOW COLLECTIONS: a row without a name: {reply}"))
                    .to_string()
            })
            .collect(),
        other => panic!("SHOW COLLECTIONS: {other:?}"),
    }
}

/// Drops every collection, so that the next file starts on a cluster with
/// none.
fn drop_all(api: &Api) {
    for name in collections(api) {
        let sql = format!("DROP COLLECTION \"{name}\"");
        let reply = api.sql(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(reply.ok(), "{sql}: {reply}");
    }
    let left = collections(api);
    assert!(left.is_empty(), "collections left after dropping: {left:?}");
}

#[test]
fn fixtures_on_a_three_node_cluster_give_the_embedded_answers() {
    let cluster = TestCluster::start(3);
    let target = RoundRobin {
        apis: (0..cluster.len()).map(|i| cluster.api(i)).collect(),
        next: AtomicUsize::new(0),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("query/tests/fixtures");
    let mut files = fixture_files(&root).expect("the fixtures folder");
    assert!(
        files.len() >= 5,
        "fixture files missing in {}",
        root.display()
    );
    // The cluster's collections have several shards by default: the
    // multi-shard fixtures hold there too.
    let sharded = fixture_files(&root.join("sharded")).expect("the sharded fixtures folder");
    assert!(!sharded.is_empty(), "no sharded fixtures");
    files.extend(sharded);

    let mut failures = Vec::new();
    let mut cases = 0;
    for file in &files {
        drop_all(&cluster.api(0));
        match run_fixture_file(file, &target) {
            Ok(n) => cases += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "the cluster's answers differ from the embedded database's in {} of {} files:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
    assert!(cases > 100, "only {cases} cases ran");
    drop_all(&cluster.api(0));
}
