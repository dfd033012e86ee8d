use super::*;
use stratosdb_engine::{DefaultStore, Engine, EngineConfig, KvStore as _};

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

/// Snapshots of the log under test go to `dir/snapshots`, as node 1's.
fn export(dir: &std::path::Path) -> SnapshotExport {
    SnapshotExport {
        files: SnapshotFiles::open(dir, std::time::Duration::from_secs(600), 1 << 30).unwrap(),
        node: 1,
        chunk_bytes: 1 << 16,
    }
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

    /// Opens the store, an engine on it, the raft log and group 1's log.
    fn open(&self, voters: &[u64]) -> Opened {
        let store = open_store(self.dir.path());
        let engine = Engine::with_store(store.clone(), EngineConfig::default()).unwrap();
        let shard = engine.shard(1).unwrap();
        let raft_log = RaftLog::open(&self.dir.path().join(LOG_DIR)).unwrap();
        let log =
            LogStore::open(&raft_log, 1, shard.clone(), voters, export(self.dir.path())).unwrap();
        Opened {
            store,
            raft_log,
            shard,
            log,
        }
    }
}

/// One open: the log's fields drop before the engines they use.
struct Opened {
    log: LogStore,
    shard: Shard,
    raft_log: Arc<RaftLog>,
    store: DefaultStore,
}

impl Opened {
    /// What the driver does at the end of an iteration.
    fn write(&self) {
        self.raft_log.write(true).unwrap();
    }
}

/// Opens the store in `dir` (a reopen right after a close waits for sled to
/// release the folder: `SledStore::open`).
fn open_store(dir: &std::path::Path) -> DefaultStore {
    let config = EngineConfig {
        cache_bytes: 8 << 20,
        ..EngineConfig::default()
    };
    DefaultStore::open(dir, &config).unwrap()
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

/// Writes what the log staged, as the driver does once per iteration.
fn w(log: &LogStore) {
    log.log.write(true).unwrap();
}

#[test]
fn a_bootstrapped_log_starts_truncated_at_one_with_its_voters() {
    let f = Fixture::new();
    let o = f.open(&[1, 2, 3]);
    let log = &o.log;
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
    let o = f.open(&[]);
    let log = &o.log;
    assert!(!log.initial_state().unwrap().initialized());
    assert_eq!(log.first_index().unwrap(), 1);
    assert_eq!(log.last_index().unwrap(), 0);
    assert_eq!(log.term(0).unwrap(), 0);
}

#[test]
fn entries_term_first_and_last_follow_raft_expectations() {
    let f = Fixture::new();
    let mut o = f.open(&[1]);
    let log = &mut o.log;
    log.persist(&entries(2..=6, 2), None).unwrap();
    w(log);
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
    let mut o = f.open(&[1]);
    let log = &mut o.log;
    log.persist(&entries(2..=8, 2), None).unwrap();
    log.persist(&entries(5..=6, 3), None).unwrap();
    w(log);
    assert_eq!(log.last_index().unwrap(), 6);
    assert_eq!(log.term(4).unwrap(), 2);
    assert_eq!(log.term(5).unwrap(), 3);
    assert_eq!(
        log.entries(2, 7, None, ctx()).unwrap(),
        [entries(2..=4, 2), entries(5..=6, 3)].concat()
    );
    assert!(log.persist(&entries(9..=9, 3), None).is_err(), "a gap");
}

/// The terms remembered for the log's tail answer as the stored entries do,
/// through appends, overwritten tails, more entries than are remembered, a
/// compaction and a reopen.
#[test]
fn remembered_terms_match_the_stored_entries() {
    let f = Fixture::new();
    let check = |log: &LogStore| {
        let first = log.first_index().unwrap();
        for i in first..=log.last_index().unwrap() {
            let stored = log.entry(i).unwrap().term;
            assert_eq!(log.term(i).unwrap(), stored, "entry {i}");
        }
    };
    {
        let mut o = f.open(&[1]);
        let log = &mut o.log;
        log.persist(&entries(2..=40, 2), None).unwrap();
        log.persist(&entries(30..=35, 3), None).unwrap();
        log.persist(&entries(36..=36, 4), None).unwrap();
        w(log);
        check(log);
        assert_eq!(log.term(29).unwrap(), 2);
        assert_eq!(log.term(36).unwrap(), 4);
        assert!(log.term(37).is_err(), "past the overwritten tail");
        // More entries than remembered, one append at a time and in runs.
        let last = 36 + TAIL_TERMS as u64 + 100;
        for i in 37..=last {
            log.persist(&[entry(i, 5 + i % 3)], None).unwrap();
        }
        log.persist(&entries(last - 10..=last + 5, 9), None)
            .unwrap();
        log.persist(&entries(20..=25, 10), None).unwrap();
        w(log);
        check(log);
        log.compact(22).unwrap();
        w(log);
        check(log);
        assert_eq!(log.term(22).unwrap(), 10);
        log.persist(&entries(26..=30, 11), None).unwrap();
        w(log);
        check(log);
    }
    let mut o = f.open(&[1]);
    check(&o.log);
    o.log.persist(&entries(31..=33, 12), None).unwrap();
    w(&o.log);
    check(&o.log);
}

#[test]
fn compaction_keeps_the_term_of_the_truncated_index() {
    let f = Fixture::new();
    let mut o = f.open(&[1]);
    let log = &mut o.log;
    log.persist(&entries(2..=10, 4), None).unwrap();
    w(log);
    log.compact(7).unwrap();
    w(log);
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
    // Compacting everything leaves an empty log that appends go on from.
    log.compact(10).unwrap();
    w(log);
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (11, 10)
    );
    log.persist(&entries(11..=12, 5), None).unwrap();
    w(log);
    assert_eq!(
        log.entries(11, 13, None, ctx()).unwrap(),
        entries(11..=12, 5)
    );
    assert!(
        log.persist(&entries(10..=10, 5), None).is_err(),
        "compacted"
    );
}

#[test]
fn a_reopened_log_keeps_everything_written() {
    let f = Fixture::new();
    {
        let mut o = f.open(&[1, 2]);
        let log = &mut o.log;
        log.persist(&entries(2..=9, 3), None).unwrap();
        let hard = HardState {
            term: 3,
            vote: 2,
            commit: 8,
            ..Default::default()
        };
        log.persist(&entries(8..=9, 4), Some(&hard)).unwrap();
        w(log);
        log.compact(4).unwrap();
        let conf = ConfState {
            voters: vec![1, 2],
            learners: vec![5],
            ..Default::default()
        };
        log.set_conf_state(conf, 9).unwrap();
    }
    let o = f.open(&[7, 8, 9]); // voters are ignored: not fresh
    let log = &o.log;
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
    assert_eq!(log.conf_index(), 9);
}

#[test]
fn an_applied_snapshot_replaces_the_log() {
    let f = Fixture::new();
    let mut o = f.open(&[]);
    let log = &mut o.log;
    log.persist(&entries(1..=3, 1), None).unwrap();
    w(log);
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
    assert_eq!(log.conf_index(), 20);
    let engine = &log.log.engine;
    assert!(engine.get_entry::<EntryExt>(1, 2).unwrap().is_none());
    assert!(engine.get(1, KEY_PENDING_SNAPSHOT).is_none());
    // Appends go on after the snapshot.
    log.persist(&entries(21..=22, 5), None).unwrap();
    w(log);
    assert_eq!(
        log.entries(21, 23, None, ctx()).unwrap(),
        entries(21..=22, 5)
    );
}

#[test]
fn recovery_finishes_a_snapshot_the_engine_installed_and_forgets_one_it_did_not() {
    let f = Fixture::new();
    let mut o = f.open(&[1]);
    let log = &mut o.log;
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
    w(log);
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
    let mut o = f.open(&[1]);
    let log = &mut o.log;
    log.persist(&entries(2..=4, 2), None).unwrap();
    w(log);
    let cmd = stratosdb_engine::Command {
        ops: vec![stratosdb_engine::Op::CreateCollection { name: "c".into() }],
    }
    .encode();
    log.shard.apply(3, &cmd).unwrap();
    // The export runs on its own thread: "not yet" until it is done.
    assert_eq!(
        log.snapshot(0, 2),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    );
    let snap = snapshot_when_exported(log, 0);
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

/// Asks for a snapshot until the export thread has written it (bounded).
fn snapshot_when_exported(log: &LogStore, request_index: u64) -> Snapshot {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match log.snapshot(request_index, 2) {
            Ok(snap) => return snap,
            Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)) => {
                assert!(std::time::Instant::now() < deadline, "no export in 30 s");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("snapshot: {e}"),
        }
    }
}

/// An entry whose command creates the collection `c<index>`.
fn create_entry(index: u64) -> Entry {
    let cmd = stratosdb_engine::Command {
        ops: vec![stratosdb_engine::Op::CreateCollection {
            name: format!("c{index}"),
        }],
    };
    Entry {
        index,
        term: 2,
        data: cmd.encode().into(),
        ..Default::default()
    }
}

fn apply(shard: &Shard, entries: &[Entry]) {
    let batch: Vec<(u64, &[u8])> = entries.iter().map(|e| (e.index, &e.data[..])).collect();
    shard.apply_batch(&batch).unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

#[test]
fn a_shard_that_lost_its_unflushed_applies_applies_them_again_from_the_log() {
    let f = Fixture::new();
    let shard_copy = tempfile::tempdir().unwrap();
    let log_dir = f.dir.path().join(LOG_DIR);
    let committed: Vec<Entry> = (2..=6).map(create_entry).collect();
    {
        let mut o = f.open(&[1]);
        let hard = HardState {
            term: 2,
            commit: 6,
            ..Default::default()
        };
        o.log.persist(&committed, Some(&hard)).unwrap();
        o.write();
        // The shard made 2..=3 durable; 4..=6 it applies after the copy,
        // which stands for the sled state a crash leaves behind.
        apply(&o.shard, &committed[..2]);
        o.store.flush().unwrap();
    }
    // The copy holds the sled folder only (the log stays where it is).
    copy_dir(f.dir.path(), shard_copy.path());
    std::fs::remove_dir_all(shard_copy.path().join(LOG_DIR)).unwrap();
    {
        let o = f.open(&[1]);
        apply(&o.shard, &committed[2..]);
        assert_eq!(o.shard.applied_index().unwrap(), 6);
    }
    // Restart on the shard that lost 4..=6, with the log that has them.
    let store = open_store(shard_copy.path());
    let engine = Engine::with_store(store.clone(), EngineConfig::default()).unwrap();
    let shard = engine.shard(1).unwrap();
    let applied = shard.applied_index().unwrap();
    assert_eq!(applied, 3);
    let raft_log = RaftLog::open(&log_dir).unwrap();
    let mut log =
        LogStore::open(&raft_log, 1, shard.clone(), &[1], export(shard_copy.path())).unwrap();
    log.recover(applied).unwrap();
    assert_eq!(log.hard_state().commit, 6);
    let again = log.entries(applied + 1, 7, None, ctx()).unwrap();
    assert_eq!(again, committed[2..]);
    apply(&shard, &again);
    assert_eq!(shard.applied_index().unwrap(), 6);
    assert_eq!(shard.collections(), ["c2", "c3", "c4", "c5", "c6"]);
}

#[test]
fn a_conf_change_is_durable_before_its_apply_without_another_write() {
    let f = Fixture::new();
    {
        let mut o = f.open(&[1]);
        let log = &mut o.log;
        log.persist(&entries(2..=7, 2), None).unwrap();
        w(log);
        log.set_commit(7).unwrap(); // staged only: not durable by itself
        let conf = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        log.set_conf_state(conf, 7).unwrap();
        // Dropped without the driver's write: a crash right after the apply.
    }
    let o = f.open(&[]);
    assert_eq!(o.log.conf_state().voters, vec![1, 2]);
    assert_eq!(o.log.conf_index(), 7);
    // The staged commit went out with the conf change's synced write.
    assert_eq!(o.log.hard_state().commit, 7);
}

#[test]
fn an_interrupted_snapshot_install_is_forgotten_or_finished_on_reopen() {
    let f = Fixture::new();
    let mut meta = SnapshotMetadata {
        index: 30,
        term: 2,
        ..Default::default()
    };
    meta.set_conf_state(ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    });
    {
        let mut o = f.open(&[1]);
        o.log.begin_snapshot(&meta).unwrap();
        // A crash before the engine imported: the shard is still at 0.
    }
    {
        let mut o = f.open(&[1]);
        let pending = o.log.log.engine.get(1, KEY_PENDING_SNAPSHOT);
        assert!(pending.is_some(), "begin_snapshot is durable");
        o.log.recover(0).unwrap();
        assert_eq!(o.log.first_index().unwrap(), 2, "forgotten");
        assert!(o.log.log.engine.get(1, KEY_PENDING_SNAPSHOT).is_none());
        o.log.begin_snapshot(&meta).unwrap();
        // A crash after the import, before apply_snapshot.
    }
    {
        let mut o = f.open(&[1]);
        o.log.recover(30).unwrap();
        assert_eq!(o.log.first_index().unwrap(), 31, "finished");
    }
    let o = f.open(&[1]);
    assert_eq!(o.log.first_index().unwrap(), 31, "and durable");
    assert_eq!(o.log.last_index().unwrap(), 30);
    assert_eq!(o.log.term(30).unwrap(), 2);
    assert_eq!(o.log.hard_state().commit, 30);
    assert_eq!(o.log.conf_state().voters, vec![1, 2, 3]);
    assert_eq!(o.log.conf_index(), 30);
    assert!(o.log.log.engine.get(1, KEY_PENDING_SNAPSHOT).is_none());
}

#[test]
fn a_replica_waiting_for_a_snapshot_is_found_again_and_groups_are_listed() {
    let f = Fixture::new();
    {
        let o = f.open(&[]);
        let shard = o.shard.clone();
        LogStore::open(&o.raft_log, 9, shard, &[1, 2], export(f.dir.path())).unwrap();
    }
    let o = f.open(&[]);
    assert_eq!(o.raft_log.groups().unwrap(), vec![1, 9]);
    assert!(!o.log.initial_state().unwrap().initialized());
}

/// Bounds the entry cache (and the remembered terms) of a log just opened,
/// so tests reach them with few entries.
fn bound_tail(log: &mut LogStore, max_len: usize, max_bytes: usize) {
    log.entry_cache.max_len = max_len;
    log.entry_cache.max_bytes = max_bytes;
    log.tail_terms.max_len = max_len;
}

/// The entries the cache holds are the ones raft-engine holds at their
/// indexes, and a read it covers answers from it as raft-engine does.
fn check_cache(log: &LogStore) {
    let start = log.entry_cache.start(log.last_index);
    assert!(start > log.truncated_index, "nothing compacted is cached");
    for (i, e) in (start..).zip(&log.entry_cache.items) {
        assert_eq!(e.index, i);
        assert_eq!(
            Some(e),
            log.log.engine.get_entry::<EntryExt>(1, i).unwrap().as_ref()
        );
    }
    let weight: usize = log
        .entry_cache
        .items
        .iter()
        .map(|e| e.compute_size() as usize)
        .sum();
    assert_eq!(log.entry_cache.bytes, weight);
    assert!(log.entry_cache.items.len() <= log.entry_cache.max_len);
    assert!(log.entry_cache.bytes <= log.entry_cache.max_bytes);
}

/// Whether `entries(low, high)` is answered from the cache.
fn cached(log: &LogStore, low: u64, high: u64) -> bool {
    log.entry_cache.range(low, high, log.last_index).is_some()
}

#[test]
fn the_entry_cache_serves_the_tail_and_follows_every_change_of_the_log() {
    let f = Fixture::new();
    let mut o = f.open(&[1]);
    let log = &mut o.log;
    log.persist(&entries(2..=9, 2), None).unwrap();
    w(log);
    check_cache(log);
    assert!(cached(log, 2, 10));
    assert_eq!(log.entries(3, 7, None, ctx()).unwrap(), entries(3..=6, 2));
    // The size rule as from raft-engine: at least one, then what fits.
    let one = u64::from(entry(2, 2).compute_size());
    for max in [0, one, one * 2 - 1, one * 3, u64::MAX] {
        assert_eq!(
            log.entries(2, 10, max, ctx()).unwrap(),
            log.stored_entries(2, 10, Some(max)).unwrap(),
            "max_size {max}"
        );
    }
    // A conflicting append replaces the cached tail, as the stored one.
    log.persist(&entries(5..=6, 3), None).unwrap();
    w(log);
    check_cache(log);
    let expected = [entries(2..=4, 2), entries(5..=6, 3)].concat();
    assert_eq!(log.entries(2, 7, None, ctx()).unwrap(), expected);
    assert_eq!(
        log.entries(2, 8, None, ctx()),
        Err(raft::Error::Store(StorageError::Unavailable)),
        "the old tail is gone"
    );
    // Compaction drops the cached entries it drops.
    log.compact(3).unwrap();
    w(log);
    check_cache(log);
    assert_eq!(log.entry_cache.items.len(), 3);
    assert_eq!(
        log.entries(3, 5, None, ctx()),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(log.entries(4, 7, None, ctx()).unwrap(), expected[2..]);
    // Beyond its bounds the oldest entries fall off: those come from
    // raft-engine, also for a read that starts before the cache does.
    bound_tail(log, 4, usize::MAX);
    log.persist(&entries(7..=12, 3), None).unwrap();
    w(log);
    check_cache(log);
    assert_eq!(log.entry_cache.start(log.last_index), 9);
    assert!(!cached(log, 8, 13) && cached(log, 9, 13));
    let all = [entries(4..=4, 2), entries(5..=12, 3)].concat();
    assert_eq!(log.entries(4, 13, None, ctx()).unwrap(), all);
    let two = 2 * entry(13, 3).compute_size() as usize;
    bound_tail(log, 4096, two);
    log.persist(&entries(13..=13, 3), None).unwrap();
    w(log);
    check_cache(log);
    assert_eq!(log.entry_cache.items.len(), 2, "bounded by bytes");
    // A snapshot empties it; appends after it fill it again.
    let meta = SnapshotMetadata {
        index: 20,
        term: 4,
        ..Default::default()
    };
    log.begin_snapshot(&meta).unwrap();
    log.apply_snapshot(&meta).unwrap();
    assert!(log.entry_cache.items.is_empty());
    log.persist(&entries(21..=22, 4), None).unwrap();
    w(log);
    check_cache(log);
    assert!(cached(log, 21, 23));
    assert_eq!(
        log.entries(21, 23, None, ctx()).unwrap(),
        entries(21..=22, 4)
    );
    drop(o);
    // Reopened, it starts empty: reads come from raft-engine.
    let o = f.open(&[1]);
    assert!(o.log.entry_cache.items.is_empty());
    assert_eq!(
        o.log.entries(21, 23, None, ctx()).unwrap(),
        entries(21..=22, 4)
    );
}

mod model {
    //! The log against a model (a map of entries and the truncation point):
    //! random appends with conflicting tails, compactions, snapshots,
    //! reopens and reads, with the cache bounded to a few entries or bytes
    //! so entries fall off it.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// Entries of these data sizes from `back` before the log's end
        /// (0: right after it; never into the compacted part), in a new
        /// term if `new_term`; written at once if `write`, or staged with
        /// what follows.
        Append {
            back: u64,
            sizes: Vec<usize>,
            new_term: bool,
            write: bool,
        },
        /// Compacts up to `back` before the last index.
        Compact { back: u64 },
        /// Installs a snapshot at `at` past the truncated index (below the
        /// last index: its tail goes too).
        Snapshot { at: u64 },
        /// `entries(low, low + len, max)`, `low` counted from the truncated
        /// index (0: compacted).
        Read {
            low: u64,
            len: u64,
            max: Option<u64>,
        },
        /// Closes the raft log and opens it again.
        Reopen,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u64..6, prop::collection::vec(0usize..300, 1..8), prop::bool::weighted(0.3), prop::bool::weighted(0.7))
                .prop_map(|(back, sizes, new_term, write)| Step::Append { back, sizes, new_term, write }),
            1 => (0u64..12).prop_map(|back| Step::Compact { back }),
            1 => (1u64..40).prop_map(|at| Step::Snapshot { at }),
            6 => (0u64..40, 0u64..12, prop::option::of(prop_oneof![Just(0u64), 1u64..2000, Just(u64::MAX)]))
                .prop_map(|(low, len, max)| Step::Read { low, len, max }),
            1 => Just(Step::Reopen),
        ]
    }

    #[derive(Default)]
    struct Model {
        entries: BTreeMap<u64, Entry>,
        truncated: (u64, u64),
    }

    impl Model {
        fn last(&self) -> u64 {
            self.entries
                .keys()
                .next_back()
                .copied()
                .unwrap_or(self.truncated.0)
        }

        fn term(&self, index: u64) -> raft::Result<u64> {
            if index == self.truncated.0 {
                return Ok(self.truncated.1);
            }
            if index < self.truncated.0 {
                return Err(raft::Error::Store(StorageError::Compacted));
            }
            self.entries
                .get(&index)
                .map(|e| e.term)
                .ok_or(raft::Error::Store(StorageError::Unavailable))
        }

        fn entries(&self, low: u64, high: u64, max: Option<u64>) -> raft::Result<Vec<Entry>> {
            if low <= self.truncated.0 {
                return Err(raft::Error::Store(StorageError::Compacted));
            }
            if high > self.last() + 1 {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
            let mut out = Vec::new();
            let mut size = 0u64;
            for e in self.entries.range(low..high).map(|(_, e)| e) {
                size += u64::from(e.compute_size());
                if !out.is_empty() && max.is_some_and(|m| size > m) {
                    break;
                }
                out.push(e.clone());
            }
            Ok(out)
        }
    }

    fn data_entry(index: u64, term: u64, size: usize) -> Entry {
        let mut data = format!("{index}/{term}/").into_bytes();
        data.resize(data.len() + size, b'x');
        Entry {
            index,
            term,
            data: data.into(),
            ..Default::default()
        }
    }

    /// Closes the raft log (the engines stay open) and opens it again.
    fn reopen(f: &Fixture, o: Opened, bounds: (usize, usize)) -> Opened {
        let Opened {
            log,
            shard,
            raft_log,
            store,
        } = o;
        drop(log);
        drop(raft_log);
        let raft_log = RaftLog::open(&f.dir.path().join(LOG_DIR)).unwrap();
        let mut log =
            LogStore::open(&raft_log, 1, shard.clone(), &[1], export(f.dir.path())).unwrap();
        bound_tail(&mut log, bounds.0, bounds.1);
        Opened {
            log,
            shard,
            raft_log,
            store,
        }
    }

    /// Everything the log answers, as the model does, from the cache and
    /// from raft-engine alone.
    fn check_all(log: &LogStore, model: &Model) -> std::result::Result<(), TestCaseError> {
        check_cache(log);
        prop_assert_eq!(log.first_index().unwrap(), model.truncated.0 + 1);
        prop_assert_eq!(log.last_index().unwrap(), model.last());
        let last = model.last();
        for i in model.truncated.0.saturating_sub(1)..=last + 1 {
            prop_assert_eq!(log.term(i), model.term(i), "term {}", i);
        }
        let low = model.truncated.0 + 1;
        prop_assert_eq!(
            log.entries(low, last + 1, None, ctx()),
            model.entries(low, last + 1, None)
        );
        if low <= last {
            prop_assert_eq!(
                log.stored_entries(low, last + 1, None).ok(),
                model.entries(low, last + 1, None).ok()
            );
        }
        Ok(())
    }

    fn run(steps: Vec<Step>, bounds: (usize, usize)) -> std::result::Result<(), TestCaseError> {
        let f = Fixture::new();
        let mut o = f.open(&[1]);
        bound_tail(&mut o.log, bounds.0, bounds.1);
        let mut model = Model {
            truncated: (1, 1),
            ..Default::default()
        };
        let mut term = 1;
        let mut staged = false;
        for step in steps {
            if staged && !matches!(step, Step::Append { .. }) {
                // The driver writes before raft reads (or compacts) again.
                o.write();
                staged = false;
            }
            match step {
                Step::Append {
                    back,
                    sizes,
                    new_term,
                    write,
                } => {
                    term += u64::from(new_term);
                    let first = (model.last() + 1)
                        .saturating_sub(back)
                        .max(model.truncated.0 + 1);
                    let new: Vec<Entry> = (first..)
                        .zip(&sizes)
                        .map(|(i, &size)| data_entry(i, term, size))
                        .collect();
                    o.log.persist(&new, None).unwrap();
                    model.entries.split_off(&first);
                    model.entries.extend(new.into_iter().map(|e| (e.index, e)));
                    staged = !write;
                    if write {
                        o.write();
                    }
                }
                Step::Compact { back } => {
                    let index = model.last().saturating_sub(back).max(model.truncated.0);
                    o.log.compact(index).unwrap();
                    o.write();
                    if index > model.truncated.0 {
                        model.truncated = (index, model.term(index).unwrap());
                        model.entries = model.entries.split_off(&(index + 1));
                    }
                }
                Step::Snapshot { at } => {
                    term += 1;
                    let meta = SnapshotMetadata {
                        index: model.truncated.0 + at,
                        term,
                        ..Default::default()
                    };
                    o.log.begin_snapshot(&meta).unwrap();
                    o.log.apply_snapshot(&meta).unwrap();
                    model.entries.clear();
                    model.truncated = (meta.index, meta.term);
                }
                Step::Read { low, len, max } => {
                    let low = model.truncated.0 + low;
                    let high = low + len;
                    prop_assert_eq!(
                        o.log.entries(low, high, max, ctx()),
                        model.entries(low, high, max),
                        "entries({}, {}, {:?})",
                        low,
                        high,
                        max
                    );
                }
                Step::Reopen => o = reopen(&f, o, bounds),
            }
            if !staged {
                check_all(&o.log, &model)?;
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// `entries` and `term` answer as the model (and raft-engine alone)
        /// do, whatever the cache holds.
        #[test]
        fn the_log_answers_as_a_model_with_its_cache(
            steps in prop::collection::vec(step(), 1..60),
            bounds in prop_oneof![
                Just((CACHED_ENTRIES, CACHED_ENTRY_BYTES)),
                Just((5, usize::MAX)),
                Just((4096, 600)),
            ],
        ) {
            run(steps, bounds)?;
        }
    }
}
