use super::*;
use stratosdb_engine::{Engine, EngineConfig};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("{index}/{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Opens the store, an engine on it, and group 1's log.
    fn open(&self, voters: &[u64]) -> (SledStore, LogStore) {
        let store = open_retrying(self.dir.path());
        let engine = Engine::with_store(store.clone(), EngineConfig::default()).unwrap();
        let shard = engine.shard(1).unwrap();
        let log = LogStore::open(&store, 1, shard, voters, 1 << 16).unwrap();
        (store, log)
    }
}

/// sled releases its folder lock when its background thread lets go of the
/// dropped database, a moment after the drop: retry a reopen briefly.
fn open_retrying(dir: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match SledStore::open(dir, 8 << 20) {
            Ok(store) => return store,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

#[test]
fn a_bootstrapped_log_starts_truncated_at_one_with_its_voters() {
    let f = Fixture::new();
    let (_, log) = f.open(&[1, 2, 3]);
    let state = log.initial_state().unwrap();
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(state.hard_state.commit, 1);
    assert_eq!(log.first_index().unwrap(), 2);
    assert_eq!(log.last_index().unwrap(), 1);
    assert_eq!(log.term(1).unwrap(), 1);
    assert_eq!(
        log.term(0),
        Err(raft::Error::Store(StorageError::Compacted))
    );
}

#[test]
fn an_empty_log_without_voters_waits_for_a_snapshot() {
    let f = Fixture::new();
    let (_, log) = f.open(&[]);
    assert!(!log.initial_state().unwrap().initialized());
    assert_eq!(log.first_index().unwrap(), 1);
    assert_eq!(log.last_index().unwrap(), 0);
    assert_eq!(log.term(0).unwrap(), 0);
}

#[test]
fn entries_term_first_and_last_follow_raft_expectations() {
    let f = Fixture::new();
    let (_, mut log) = f.open(&[1]);
    log.persist(&entries(2..=6, 2), None).unwrap();
    assert_eq!(log.last_index().unwrap(), 6);
    assert_eq!(log.term(4).unwrap(), 2);
    assert_eq!(
        log.term(7),
        Err(raft::Error::Store(StorageError::Unavailable))
    );
    let got = log.entries(3, 6, None, ctx()).unwrap();
    assert_eq!(got, entries(3..=5, 2));
    assert_eq!(
        log.entries(1, 3, None, ctx()),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(
        log.entries(3, 8, None, ctx()),
        Err(raft::Error::Store(StorageError::Unavailable))
    );
    // A size limit still returns at least one entry.
    assert_eq!(log.entries(2, 7, 0, ctx()).unwrap().len(), 1);
    let one = u64::from(entry(2, 2).compute_size());
    assert_eq!(log.entries(2, 7, one * 2, ctx()).unwrap().len(), 2);
}

#[test]
fn a_conflicting_append_drops_the_old_tail() {
    let f = Fixture::new();
    let (_, mut log) = f.open(&[1]);
    log.persist(&entries(2..=8, 2), None).unwrap();
    log.persist(&entries(5..=6, 3), None).unwrap();
    assert_eq!(log.last_index().unwrap(), 6);
    assert_eq!(log.term(4).unwrap(), 2);
    assert_eq!(log.term(5).unwrap(), 3);
    assert_eq!(
        log.entries(2, 7, None, ctx()).unwrap(),
        [entries(2..=4, 2), entries(5..=6, 3)].concat()
    );
    assert!(log.persist(&entries(9..=9, 3), None).is_err(), "a gap");
}

#[test]
fn compaction_keeps_the_term_of_the_truncated_index() {
    let f = Fixture::new();
    let (_, mut log) = f.open(&[1]);
    log.persist(&entries(2..=10, 4), None).unwrap();
    log.compact(7).unwrap();
    assert_eq!(log.first_index().unwrap(), 8);
    assert_eq!(log.term(7).unwrap(), 4);
    assert_eq!(
        log.term(6),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(
        log.entries(7, 9, None, ctx()),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(log.entries(8, 11, None, ctx()).unwrap(), entries(8..=10, 4));
    log.compact(5).unwrap(); // already compacted: nothing happens
    assert!(log.compact(11).is_err());
}

#[test]
fn a_reopened_log_keeps_everything_flushed() {
    let f = Fixture::new();
    {
        let (store, mut log) = f.open(&[1, 2]);
        log.persist(&entries(2..=9, 3), None).unwrap();
        let hard = HardState {
            term: 3,
            vote: 2,
            commit: 8,
            ..Default::default()
        };
        log.persist(&entries(8..=9, 4), Some(&hard)).unwrap();
        log.compact(4).unwrap();
        let conf = ConfState {
            voters: vec![1, 2],
            learners: vec![5],
            ..Default::default()
        };
        log.set_conf_state(conf).unwrap();
        store.flush().unwrap();
    }
    let (_, log) = f.open(&[7, 8, 9]); // voters are ignored: not fresh
    let state = log.initial_state().unwrap();
    assert_eq!(
        (
            state.hard_state.term,
            state.hard_state.vote,
            state.hard_state.commit
        ),
        (3, 2, 8)
    );
    assert_eq!(state.conf_state.voters, vec![1, 2]);
    assert_eq!(state.conf_state.learners, vec![5]);
    assert_eq!(log.first_index().unwrap(), 5);
    assert_eq!(log.last_index().unwrap(), 9);
    assert_eq!(log.term(4).unwrap(), 3);
    assert_eq!(log.term(9).unwrap(), 4);
}

#[test]
fn an_applied_snapshot_replaces_the_log() {
    let f = Fixture::new();
    let (_, mut log) = f.open(&[]);
    log.persist(&entries(1..=3, 1), None).unwrap();
    let mut meta = SnapshotMetadata {
        index: 20,
        term: 5,
        ..Default::default()
    };
    meta.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    });
    log.begin_snapshot(&meta).unwrap();
    log.apply_snapshot(&meta).unwrap();
    assert_eq!(log.first_index().unwrap(), 21);
    assert_eq!(log.last_index().unwrap(), 20);
    assert_eq!(log.term(20).unwrap(), 5);
    assert_eq!(log.hard_state().commit, 20);
    assert_eq!(log.conf_state().voters, vec![1, 2, 3]);
    assert!(log.tree.get(&entry_key(2)).unwrap().is_none());
    assert!(log.tree.get(KEY_PENDING_SNAPSHOT).unwrap().is_none());
}

#[test]
fn recovery_finishes_a_snapshot_the_engine_installed_and_forgets_one_it_did_not() {
    let f = Fixture::new();
    let (_, mut log) = f.open(&[1]);
    let meta = SnapshotMetadata {
        index: 30,
        term: 2,
        ..Default::default()
    };
    log.begin_snapshot(&meta).unwrap();
    log.recover(0).unwrap();
    assert_eq!(log.first_index().unwrap(), 2, "forgotten");
    log.begin_snapshot(&meta).unwrap();
    log.recover(30).unwrap();
    assert_eq!(log.first_index().unwrap(), 31, "finished");
    // The engine applied past the recorded commit: the commit catches up.
    log.persist(&entries(31..=35, 2), None).unwrap();
    log.recover(33).unwrap();
    assert_eq!(log.hard_state().commit, 33);
    assert!(
        log.recover(36).is_err(),
        "applied past the log is corruption"
    );
}

#[test]
fn a_snapshot_is_built_from_the_shard_at_its_applied_index() {
    let f = Fixture::new();
    let (_, mut log) = f.open(&[1]);
    log.persist(&entries(2..=4, 2), None).unwrap();
    let cmd = stratosdb_engine::Command {
        ops: vec![stratosdb_engine::Op::CreateCollection { name: "c".into() }],
    }
    .encode();
    log.shard.apply(3, &cmd).unwrap();
    let snap = log.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 3);
    assert_eq!(snap.get_metadata().term, 2);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1]);
    assert!(!snap.data.is_empty());
    // Asking for a newer one than the state machine has is "not yet".
    assert_eq!(
        log.snapshot(4, 2),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    );
}
