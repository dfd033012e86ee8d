//! Deposits on the local ledger: recorded once per nonce, read back and
//! checked, listed, kept across reopening, and refused when not signed by
//! their account.

use stratosdb_chain_anchor::{
    Chain, ChainError, ChainRef, DepositAuthorization, LedgerKey, LocalLedger, verify_ledger,
};
use stratosdb_verifier::traffic::{DepositEntry, RequestSigner};

fn authorization(
    signer: &RequestSigner,
    cluster: [u8; 32],
    amount: u128,
    nonce: [u8; 16],
) -> DepositAuthorization {
    let entry = DepositEntry::sign(signer, cluster, amount, nonce);
    DepositAuthorization {
        cluster_id: cluster,
        account: entry.account,
        amount,
        nonce: hex::encode(nonce),
        signature: format!("0x{}", hex::encode(entry.signature)),
    }
}

#[test]
fn a_deposit_is_recorded_once_read_back_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = LocalLedger::open(dir.path(), LedgerKey::from_secret_bytes([4; 32])).unwrap();
    let alice = RequestSigner::from_bytes(&[1; 32]).unwrap();
    let cluster = [7; 32];
    let first = authorization(&alice, cluster, 5_000, [1; 16]);
    let record = ledger.record_deposit(&first).unwrap();
    assert_eq!(
        (record.account, record.amount, record.block),
        (alice.address(), 5_000, 0)
    );
    // The same deposit again (a retry): the same record, no second block.
    assert_eq!(ledger.record_deposit(&first).unwrap(), record);
    assert_eq!(ledger.height().unwrap(), 1);
    // The nonce reused for another amount: refused.
    let clash = authorization(&alice, cluster, 6_000, [1; 16]);
    assert!(matches!(
        ledger.record_deposit(&clash),
        Err(ChainError::Refused(_))
    ));
    // Another account's signature on Alice's deposit: refused.
    let mut forged = authorization(
        &RequestSigner::from_bytes(&[2; 32]).unwrap(),
        cluster,
        9,
        [3; 16],
    );
    forged.account = alice.address();
    let refused = ledger.record_deposit(&forged).unwrap_err();
    assert!(refused.to_string().contains("not signed by"), "{refused}");
    let second = ledger
        .record_deposit(&authorization(&alice, cluster, 1, [2; 16]))
        .unwrap();
    assert_eq!(
        ledger.read_deposit(&cluster, &record.reference).unwrap(),
        record
    );
    // Read as another cluster's: not found.
    assert!(matches!(
        ledger.read_deposit(&[8; 32], &record.reference),
        Err(ChainError::NotFound(_))
    ));
    let bogus = ChainRef::Ledger {
        height: 0,
        block_hash: [0; 32],
    };
    assert!(ledger.read_deposit(&cluster, &bogus).is_err());
    assert_eq!(
        ledger.deposits_since(&cluster, 0).unwrap(),
        [record.clone(), second.clone()]
    );
    assert_eq!(
        ledger.deposits_since(&cluster, 1).unwrap(),
        std::slice::from_ref(&second)
    );
    drop(ledger);

    // Reopened (another process would read the same): the same deposits,
    // and the audit checks each one's signature.
    let again = LocalLedger::open(dir.path(), LedgerKey::from_secret_bytes([5; 32])).unwrap();
    assert_eq!(again.deposits_since(&cluster, 0).unwrap(), [record, second]);
    let report = verify_ledger(dir.path(), &mut |_, _| {}).unwrap();
    assert!(report.ok());
    assert_eq!(report.kinds.get(&2), Some(&2));
    assert_eq!(report.blocks, 2);
}

#[test]
fn a_settlement_is_recorded_once_per_epoch() {
    use stratosdb_verifier::traffic::SettlementEntry;
    let dir = tempfile::tempdir().unwrap();
    let ledger = LocalLedger::open(dir.path(), LedgerKey::from_secret_bytes([4; 32])).unwrap();
    let entry = SettlementEntry {
        cluster_id: [7; 32],
        epoch: 3,
        report_hash: [9; 32],
        signatures: Vec::new(),
    };
    assert_eq!(ledger.read_settlement(&[7; 32], 3).unwrap(), None);
    let reference = ledger.record_settlement(&entry).unwrap();
    // Submitted twice (a retry, a new leader): one entry.
    assert_eq!(ledger.record_settlement(&entry).unwrap(), reference);
    assert_eq!(ledger.height().unwrap(), 1);
    // Another report for a settled epoch: refused.
    let other = SettlementEntry {
        report_hash: [8; 32],
        ..entry.clone()
    };
    assert!(matches!(
        ledger.record_settlement(&other),
        Err(ChainError::Refused(_))
    ));
    assert_eq!(
        ledger.read_settlement(&[7; 32], 3).unwrap(),
        Some((reference, entry))
    );
    assert_eq!(ledger.read_settlement(&[7; 32], 4).unwrap(), None);
}
