//! The fixture suite (`tests/fixtures/*.sql`, format in
//! [`stratosdb_query::fixture`]) against the embedded database and against a
//! sharded database of four shards (`LocalShards`), which must give the very
//! same answers; `tests/fixtures/sharded/*.sql` runs on the latter only.

use std::path::Path;

use stratosdb_engine::Durability;
use stratosdb_query::fixture::{FixtureTarget, fixture_files, run_fixture_file};
use stratosdb_query::{Database, LocalShards, ShardedDatabase};

fn run_all(dir: &str, min_files: usize, target: impl Fn() -> Box<dyn FixtureTarget>) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let files = fixture_files(&dir).expect("fixtures folder");
    assert!(
        files.len() >= min_files,
        "fixture files missing in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in &files {
        match run_fixture_file(file, target().as_ref()) {
            Ok(n) => cases += n,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "failures in {} files:\n{}",
        files.len(),
        failures.join("\n\n")
    );
    cases
}

fn embedded() -> Box<dyn FixtureTarget> {
    let mut db = Database::open_temporary().expect("database");
    db.set_durability(Durability::Buffered);
    Box::new(db)
}

fn four_shards() -> Box<dyn FixtureTarget> {
    Box::new(ShardedDatabase::new(
        LocalShards::temporary(4).expect("local shards"),
    ))
}

#[test]
fn fixtures_on_the_embedded_database() {
    assert!(run_all("tests/fixtures", 5, embedded) > 100);
}

#[test]
fn fixtures_on_four_local_shards() {
    assert!(run_all("tests/fixtures", 5, four_shards) > 100);
}

#[test]
fn sharded_fixtures_on_four_local_shards() {
    assert!(run_all("tests/fixtures/sharded", 1, four_shards) > 10);
}
