//! The local ledger on real files: concurrent appends from threads and from
//! processes, a torn tail, damage anywhere, conflicting anchors, a kill.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stratosdb_chain_anchor::{
    AnchorPayload, Chain, ChainError, ChainRef, LOG_FILE, LedgerKey, LocalLedger, SubmissionStatus,
    verify_ledger,
};

/// Set for the copy of this test binary that a test runs as an appender.
const CHILD_DIR: &str = "STRATOSDB_LEDGER_TEST_CHILD_DIR";
const CHILD_CLUSTER: &str = "STRATOSDB_LEDGER_TEST_CHILD_CLUSTER";
const CHILD_COUNT: &str = "STRATOSDB_LEDGER_TEST_CHILD_COUNT";

fn payload(cluster: u8, epoch: u64) -> AnchorPayload {
    AnchorPayload {
        cluster_id: [cluster; 32],
        epoch,
        cluster_root: [epoch as u8; 32],
        leaf_count: 1,
        previous: [0; 32],
    }
}

/// Anchors epochs 1..=count of a cluster, each naming the one before.
fn anchor_epochs(ledger: &LocalLedger, cluster: u8, count: u64, mut each: impl FnMut(u64)) {
    let mut previous = [0; 32];
    for epoch in 1..=count {
        let mut p = payload(cluster, epoch);
        p.previous = previous;
        previous = anchor(ledger, &p).hash();
        each(epoch);
    }
}

fn open(dir: &Path, key: u8) -> LocalLedger {
    LocalLedger::open(dir, LedgerKey::from_secret_bytes([key; 32])).unwrap()
}

fn anchor(ledger: &LocalLedger, p: &AnchorPayload) -> ChainRef {
    let submission = ledger.prepare(p, None).unwrap();
    ledger.send(&submission).unwrap();
    match ledger.status(&submission).unwrap() {
        SubmissionStatus::Included(r) => r,
        other => panic!("epoch {}: {other:?}", p.epoch),
    }
}

fn verify(dir: &Path) -> stratosdb_chain_anchor::LedgerReport {
    verify_ledger(dir, &mut |_, _| {}).unwrap()
}

/// The report of a ledger that must check out whole.
fn verify_ok(dir: &Path) -> stratosdb_chain_anchor::LedgerReport {
    let report = verify(dir);
    assert!(
        report.ok(),
        "{:?} {:?}",
        report.broken,
        report.anchor_problems
    );
    report
}

/// Not a test of its own: the appender process the tests start. It anchors
/// epochs 1..=COUNT of its cluster and prints each epoch once `send` returned.
#[test]
fn child_appender() {
    let (Ok(dir), Ok(cluster), Ok(count)) = (
        std::env::var(CHILD_DIR),
        std::env::var(CHILD_CLUSTER),
        std::env::var(CHILD_COUNT),
    ) else {
        return;
    };
    let cluster: u8 = cluster.parse().unwrap();
    let ledger = open(Path::new(&dir), cluster);
    anchor_epochs(&ledger, cluster, count.parse().unwrap(), |epoch| {
        println!("acked {epoch}")
    });
}

fn spawn_child(dir: &Path, cluster: u8, count: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_appender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_CLUSTER, cluster.to_string())
        .env(CHILD_COUNT, count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills the child when dropped, also when the test fails.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn appends_from_threads_and_processes_make_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<Reap> = (0..2)
        .map(|i| Reap(spawn_child(dir.path(), 10 + i, 15)))
        .collect();
    let ledger = std::sync::Arc::new(open(dir.path(), 1));
    let threads: Vec<_> = (0..3u8)
        .map(|t| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                anchor_epochs(&ledger, 20 + t, 10, |_| {});
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for child in &mut children {
        assert!(child.0.wait().unwrap().success());
    }
    let report = verify_ok(dir.path());
    assert_eq!(report.blocks, 2 * 15 + 3 * 10);
    assert_eq!(report.signers.len(), 3);
    assert_eq!(ledger.height().unwrap(), 60);
    // Every anchor is readable back through any handle.
    let other = open(dir.path(), 2);
    for (reference, p) in ledger.anchors().unwrap() {
        assert_eq!(other.read_anchor(&reference).unwrap().payload, p);
    }
}

#[test]
fn one_anchor_per_cluster_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 1);
    let first = anchor(&ledger, &payload(1, 1));
    // The same payload again is a no-op, from another process's handle too.
    assert_eq!(anchor(&open(dir.path(), 2), &payload(1, 1)), first);
    let mut other = payload(1, 1);
    other.cluster_root = [0xee; 32];
    let submission = ledger.prepare(&other, None).unwrap();
    let err = ledger.send(&submission).unwrap_err();
    assert!(
        matches!(err, ChainError::ConflictingAnchor { epoch: 1, .. }),
        "{err}"
    );
    assert!(matches!(
        ledger.status(&submission).unwrap(),
        SubmissionStatus::Failed(_)
    ));
    // Another cluster's epoch 1 is its own.
    anchor(&ledger, &payload(2, 1));
    assert_eq!(ledger.height().unwrap(), 2);
    // An anchor that does not name its cluster's previous one is reported.
    anchor(&ledger, &payload(2, 2));
    let problems = verify(dir.path()).anchor_problems;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, 2, "{problems:?}");
    let never_sent = ledger.prepare(&payload(1, 2), None).unwrap();
    assert_eq!(
        ledger.status(&never_sent).unwrap(),
        SubmissionStatus::Dropped
    );
    let record = ledger.read_anchor(&first).unwrap();
    assert_eq!(
        record.submitter,
        hex::encode(LedgerKey::from_secret_bytes([1; 32]).public_key())
    );
    let wrong = ChainRef::Ledger {
        height: 0,
        block_hash: [9; 32],
    };
    assert!(matches!(
        ledger.read_anchor(&wrong),
        Err(ChainError::NotFound(_))
    ));
}

#[test]
fn a_torn_tail_is_dropped_and_the_ledger_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 1);
    anchor_epochs(&ledger, 1, 3, |_| {});
    drop(ledger);
    let path = dir.path().join(LOG_FILE);
    let whole = std::fs::read(&path).unwrap();
    // The start of a record, as a crash in the middle of an append leaves.
    let record = (whole.len() - 8) / 3;
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[whole.len() - record..whole.len() - record + 60]);
    std::fs::write(&path, &torn).unwrap();
    assert_eq!(verify(dir.path()).torn_bytes, 60);
    let ledger = open(dir.path(), 1);
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    let mut fourth = payload(1, 4);
    fourth.previous = ledger.anchors().unwrap()[2].0.hash();
    anchor(&ledger, &fourth);
    let report = verify(dir.path());
    assert!(report.ok() && report.blocks == 4 && report.torn_bytes == 0);
}

#[test]
fn a_flipped_bit_anywhere_is_caught_naming_the_height() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path(), 1);
    anchor_epochs(&ledger, 1, 3, |_| {});
    let refs: Vec<ChainRef> = ledger
        .anchors()
        .unwrap()
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    drop(ledger);
    let path = dir.path().join(LOG_FILE);
    let whole = std::fs::read(&path).unwrap();
    let record = (whole.len() - 8) / 3;
    for (height, byte) in [
        (0, 8 + 5),
        (1, 8 + record + 100),
        (2, whole.len() - 1),
        (2, 8 + 2 * record + 20),
    ] {
        let mut damaged = whole.clone();
        damaged[byte] ^= 0x10;
        std::fs::write(&path, &damaged).unwrap();
        let report = verify(dir.path());
        let broken = report.broken.expect("damage found").to_string();
        assert!(
            broken.starts_with(&format!("ledger block {height}:")),
            "{byte}: {broken}"
        );
        let err = LocalLedger::open(dir.path(), LedgerKey::from_secret_bytes([1; 32]))
            .err()
            .expect("opening refuses a damaged ledger");
        assert!(
            err.to_string().contains(&format!("ledger block {height}")),
            "{err}"
        );
    }
    // Damage after opening is caught when the block is read.
    std::fs::write(&path, &whole).unwrap();
    let ledger = open(dir.path(), 1);
    let mut damaged = whole.clone();
    damaged[8 + record + 100] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    let err = ledger.read_anchor(&refs[1]).unwrap_err();
    assert!(err.to_string().contains("ledger block 1"), "{err}");
}

#[test]
fn a_killed_appender_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Reap(spawn_child(dir.path(), 5, 100_000));
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut acked = 0u64;
    // Kill it after a few acknowledged appends, while it goes on appending.
    while acked < 20 && started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("acked ") => acked = line[6..].parse().unwrap(),
            Some(_) => {}
            None => break,
        }
    }
    assert!(acked >= 20, "the child acknowledged {acked} appends");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let ledger = open(dir.path(), 6);
    let epochs: Vec<u64> = ledger
        .anchors()
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.epoch)
        .collect();
    assert!(
        epochs.len() as u64 >= acked,
        "{} anchors, {acked} acknowledged",
        epochs.len()
    );
    assert!(epochs.iter().copied().eq(1..=epochs.len() as u64));
    anchor(&ledger, &payload(6, 1));
    let report = verify_ok(dir.path());
    assert!(report.blocks > acked);
}

#[cfg(unix)]
#[test]
fn a_created_key_file_is_private_and_a_bad_one_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger-key");
    LedgerKey::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(&path, b"short").unwrap();
    let err = LedgerKey::load_or_create(&path).err().unwrap();
    assert!(err.to_string().contains("5 bytes"), "{err}");
}
