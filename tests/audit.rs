//! `stratosdb audit` on an embedded shell's data folder, through the real
//! binary: a clean folder passes; a document altered on disk (through sled,
//! the shell closed) fails naming the document; a flipped byte of the ledger
//! fails naming the block.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::disk::{alter_document, restore_document, set_int};

fn stratosdb(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args(args)
        .arg(data)
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn shell(data: &Path, script: &str) -> String {
    let out = stratosdb(
        &["shell", "--anchor-interval", "0", "-c", script, "--data"],
        data,
    );
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn audit(data: &Path) -> (bool, String) {
    let out = stratosdb(&["audit", "--data"], data);
    (out.status.success(), text(&out))
}

#[test]
fn the_audit_passes_then_names_an_altered_document_and_a_damaged_block() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    shell(
        &data,
        r#"CREATE COLLECTION users;
           INSERT INTO users VALUES ('{"_id":"u1","name":"Ann","age":31}'), ('{"_id":"u2","name":"Bob","age":40}');"#,
    );
    shell(&data, r#"UPDATE users SET age = 41 WHERE _id = 'u2';"#);
    // Two exits after writes: two epochs; a third exit without writes adds none.
    let anchors = shell(&data, r"\anchors");
    assert!(
        anchors.contains("ledger:1:") && !anchors.contains("ledger:2:"),
        "{anchors}"
    );
    let anchored = anchors
        .lines()
        .filter(|l| l.contains("┆ anchored "))
        .count();
    assert_eq!(anchored, 2, "{anchors}");

    let (ok, out) = audit(&data);
    assert!(ok, "{out}");
    assert!(out.contains("equals the leaf anchored in epoch 2"), "{out}");

    let (key, record) = alter_document(&data, "u2", set_int("age", 18));
    let (ok, out) = audit(&data);
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED  document users/u2"), "{out}");
    assert!(!out.contains("users/u1"), "{out}");

    restore_document(&data, &key, record);
    let (ok, out) = audit(&data);
    assert!(ok, "{out}");

    let log = data.join("ledger").join(stratosdb_chain_anchor::LOG_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    let last = bytes.len() - 30;
    bytes[last] ^= 0x04;
    std::fs::write(&log, &bytes).unwrap();
    let (ok, out) = audit(&data);
    assert!(!ok, "{out}");
    assert!(out.contains("ledger block 1"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_stratosdb"))
        .args(["audit", "--ledger"])
        .arg(data.join("ledger"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("ledger block 1"),
        "{}",
        text(&out)
    );
}
