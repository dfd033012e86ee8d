//! The Stratos backend against a real EVM node: anvil (npm package
//! `@foundry-rs/anvil`, pinned in the repository's package.json; `npm ci`
//! installs it), started on a free loopback port with Stratos's chain id and
//! London rules, and killed when the test ends, also when it fails.

use std::time::Duration;

use serde_json::{Value, json};
#[path = "support/anvil.rs"]
mod anvil;

use anvil::{Anvil, CHAIN_ID, free_port};
use stratosdb_chain_anchor::stratos::{StratosChain, StratosConfig, decode_anchor_transaction};
use stratosdb_chain_anchor::{
    AnchorPayload, Chain, ChainError, ChainRef, LeafProof, ShardLeaf, Submission, SubmissionStatus,
    cluster_root,
};

/// anvil's first development account (unlocked: `eth_sendTransaction` works).
const DEV_ACCOUNT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
const DEV_ACCOUNT_2: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";

fn leaves() -> Vec<ShardLeaf> {
    (0..5)
        .map(|s| ShardLeaf {
            collection: "people".into(),
            shard: s,
            raft_index: 100 + u64::from(s),
            root: [s as u8 + 1; 32],
        })
        .collect()
}

fn payload(epoch: u64, previous: [u8; 32]) -> AnchorPayload {
    let leaves = leaves();
    AnchorPayload {
        cluster_id: [0x5d; 32],
        epoch,
        cluster_root: cluster_root(&leaves),
        leaf_count: leaves.len() as u32,
        previous,
    }
}

/// anvil, a funded key file, and the backend connected with it; the
/// account's address in lowercase hex.
fn started() -> (Anvil, StratosChain, String) {
    let anvil = Anvil::start();
    let (key, address) = anvil.funded_key("anchor.key");
    let chain = anvil.connect(&key);
    (anvil, chain, address)
}

/// Prepares and sends the anchor of `payload`.
fn submit(chain: &StratosChain, payload: &AnchorPayload) -> Submission {
    let submission = chain.prepare(payload, None).expect("prepare");
    chain.send(&submission).expect("send");
    submission
}

fn tx_hash(submission: &Submission) -> String {
    submission.detail["tx_hash"]
        .as_str()
        .expect("tx_hash in the detail")
        .to_string()
}

fn included(chain: &StratosChain, submission: &Submission) -> ChainRef {
    match chain
        .wait_included(submission, Duration::from_secs(30))
        .expect("status")
    {
        SubmissionStatus::Included(reference) => reference,
        other => panic!("not included: {other:?}"),
    }
}

#[test]
fn an_anchor_is_included_read_back_and_verified() {
    let (anvil, chain, address) = started();
    assert_eq!(chain.info().chain_id, Some(CHAIN_ID));

    let first = payload(1, [0; 32]);
    let submission = submit(&chain, &first);
    let reference = included(&chain, &submission);
    let ChainRef::Evm {
        chain_id,
        tx_hash: hash,
    } = reference
    else {
        panic!("an EVM reference: {reference}");
    };
    assert_eq!(chain_id, CHAIN_ID);
    assert_eq!(format!("0x{}", hex::encode(hash)), tx_hash(&submission));

    let record = chain.read_anchor(&reference).expect("read back");
    assert_eq!(record.payload, first);
    assert_eq!(record.submitter.to_lowercase(), address);
    assert!(record.block >= 1, "{record:?}");
    assert!(record.timestamp_ms > 1_600_000_000_000, "{record:?}");
    // A shard leaf checks out against the anchored root read from the chain.
    let leaves = leaves();
    let proof = LeafProof::new(&leaves, 3).expect("proof");
    proof
        .verify_anchored(&leaves[3], &record.payload)
        .expect("leaf under the anchored root");

    // What the chain holds, byte for byte: a type-2 self-send of the payload.
    let tx = anvil.rpc("eth_getTransactionByHash", json!([tx_hash(&submission)]));
    assert_eq!(tx["type"], "0x2");
    assert_eq!(tx["to"], json!(address));
    assert_eq!(
        tx["input"],
        json!(format!("0x{}", hex::encode(first.encode())))
    );
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([tx_hash(&submission)]));
    let gas = u64::from_str_radix(
        receipt["gasUsed"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    );
    assert!(
        gas.unwrap() < 30_000,
        "a self-send with 113 bytes: {receipt}"
    );

    // The next epoch names this one: the cluster's anchors chain up.
    let second = payload(2, reference.hash());
    let next = submit(&chain, &second);
    let next_ref = included(&chain, &next);
    let record = chain.read_anchor(&next_ref).expect("read back");
    assert_eq!(record.payload.previous, reference.hash());

    // The methods block: inside an async runtime they refuse, not panic.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let inside = runtime.block_on(async { chain.status(&next) });
    assert!(matches!(inside, Err(ChainError::Misuse(_))), "{inside:?}");
    // Nor does dropping the backend there panic.
    runtime.block_on(async move { drop(chain) });
}

#[test]
fn the_payload_decodes_from_the_raw_transaction_alone() {
    let (anvil, chain, address) = started();
    let anchored = payload(9, [7; 32]);
    let submission = submit(&chain, &anchored);
    let ChainRef::Evm { tx_hash: hash, .. } = included(&chain, &submission) else {
        panic!("an EVM reference");
    };

    let raw = anvil.rpc("eth_getRawTransactionByHash", json!([tx_hash(&submission)]));
    let raw = hex::decode(raw.as_str().expect("hex").trim_start_matches("0x")).expect("hex");
    let tx = decode_anchor_transaction(&raw, CHAIN_ID).expect("an anchor");
    assert_eq!(tx.payload, anchored);
    assert_eq!(tx.from.to_string().to_lowercase(), address);
    assert_eq!(tx.tx_hash, hash);
    assert_eq!(chain.read_raw_anchor(hash).expect("raw anchor"), tx);
    let other_chain = decode_anchor_transaction(&raw, 1).unwrap_err().to_string();
    assert!(
        other_chain.contains("chain id 2048, not 1"),
        "{other_chain}"
    );
}

#[test]
fn a_wrong_chain_id_or_an_unusable_url_is_refused_at_connect() {
    let anvil = Anvil::start();
    let (key, _) = anvil.funded_key("anchor.key");
    let config = |rpc_url: String, chain_id: u64| StratosConfig {
        rpc_url,
        chain_id,
        key_file: key.clone(),
    };
    match StratosChain::connect(&config(anvil.url(), 1)) {
        Err(e @ ChainError::WrongChainId { .. }) => {
            let text = e.to_string();
            assert!(text.contains("2048") && text.contains("says 1"), "{text}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("connected to chain 2048 configured as chain 1"),
    }
    // Nothing listens there (a port just found free).
    let closed = format!("http://127.0.0.1:{}", free_port());
    assert!(matches!(
        StratosChain::connect(&config(closed, CHAIN_ID)),
        Err(ChainError::Unavailable(_))
    ));
    for bad in ["not a url", "https://127.0.0.1:1"] {
        assert!(matches!(
            StratosChain::connect(&config(bad.into(), CHAIN_ID)),
            Err(ChainError::Config(_))
        ));
    }
}

#[test]
fn a_dropped_anchor_is_replaced_and_only_one_is_ever_on_chain() {
    let (anvil, chain, address) = started();
    let anchored = payload(3, [1; 32]);

    anvil.set_automine(false);
    let first = submit(&chain, &anchored);
    assert_eq!(
        chain.status(&first).expect("status"),
        SubmissionStatus::Pending
    );
    anvil.rpc("anvil_dropTransaction", json!([tx_hash(&first)]));
    assert_eq!(
        chain.status(&first).expect("status"),
        SubmissionStatus::Dropped
    );

    let second = chain.prepare(&anchored, Some(&first)).expect("replacement");
    assert_eq!(second.detail["nonce"], first.detail["nonce"]);
    for fee in ["max_fee_per_gas", "max_priority_fee_per_gas"] {
        let old: u128 = first.detail[fee].as_str().unwrap().parse().unwrap();
        let new: u128 = second.detail[fee].as_str().unwrap().parse().unwrap();
        assert!(new * 10 >= old * 11, "{fee}: {old} -> {new}");
    }
    chain.send(&second).expect("send the replacement");
    anvil.mine();
    anvil.set_automine(true);
    included(&chain, &second);
    assert_eq!(
        chain.status(&first).expect("status"),
        SubmissionStatus::Dropped
    );

    // The dropped one, sent again by a confused leader, cannot land.
    let again = chain.send(&first).unwrap_err().to_string();
    assert!(
        again.contains("already used by another transaction"),
        "{again}"
    );
    anvil.mine();
    let on_chain = anvil.anchors_on_chain(&address, anchored.epoch);
    assert_eq!(on_chain.len(), 1, "{on_chain:?}");
    assert_eq!(on_chain[0].0, tx_hash(&second));

    // A replacement of another epoch's submission is refused.
    let other_epoch = chain
        .prepare(&payload(4, [1; 32]), Some(&first))
        .unwrap_err();
    assert!(
        other_epoch.to_string().contains("same cluster and epoch"),
        "{other_epoch}"
    );
}

#[test]
fn replacing_a_still_pending_anchor_leaves_exactly_one() {
    let (anvil, chain, address) = started();
    let anchored = payload(5, [2; 32]);

    anvil.set_automine(false);
    let first = submit(&chain, &anchored);
    // Not dropped, replaced anyway (say, a new leader that gave up waiting).
    let second = chain.prepare(&anchored, Some(&first)).expect("replacement");
    chain.send(&second).expect("the node takes the replacement");
    anvil.mine();
    anvil.set_automine(true);

    let statuses = [
        chain.status(&first).expect("status"),
        chain.status(&second).expect("status"),
    ];
    let included_count = statuses
        .iter()
        .filter(|s| matches!(s, SubmissionStatus::Included(_)))
        .count();
    assert_eq!(included_count, 1, "{statuses:?}");
    assert!(
        statuses.contains(&SubmissionStatus::Dropped),
        "{statuses:?}"
    );
    assert_eq!(anvil.anchors_on_chain(&address, anchored.epoch).len(), 1);
}

#[test]
fn sending_the_same_submission_again_is_harmless() {
    let (anvil, chain, address) = started();
    let anchored = payload(6, [3; 32]);

    anvil.set_automine(false);
    let submission = submit(&chain, &anchored);
    chain
        .send(&submission)
        .expect("again, while pending: already known");
    anvil.mine();
    anvil.set_automine(true);
    included(&chain, &submission);
    chain.send(&submission).expect("again, once included");
    anvil.mine();
    assert_eq!(anvil.anchors_on_chain(&address, anchored.epoch).len(), 1);

    // A detail that does not match its own signed transaction is refused.
    let mut forged = submission.clone();
    forged.detail["nonce"] = json!(99);
    assert!(matches!(chain.send(&forged), Err(ChainError::Refused(_))));
}

#[test]
fn transactions_that_are_not_anchors_are_refused_by_read_anchor() {
    let (anvil, chain, _) = started();
    let anchor_data = format!("0x{}", hex::encode(payload(1, [0; 32]).encode()));
    let send = |tx: Value| -> ChainRef {
        let hash = anvil.rpc("eth_sendTransaction", json!([tx]));
        let hash = hex::decode(hash.as_str().unwrap().trim_start_matches("0x")).unwrap();
        ChainRef::Evm {
            chain_id: CHAIN_ID,
            tx_hash: hash.try_into().unwrap(),
        }
    };
    let refused = |reference: &ChainRef| chain.read_anchor(reference).unwrap_err().to_string();

    let to_another = send(json!({"from": DEV_ACCOUNT, "to": DEV_ACCOUNT_2, "input": anchor_data}));
    let err = refused(&to_another);
    assert!(err.contains("an anchor is sent to its sender"), "{err}");

    let other_data = send(json!({"from": DEV_ACCOUNT, "to": DEV_ACCOUNT, "input": "0x68656c6c6f"}));
    let err = refused(&other_data);
    assert!(err.contains("not an anchor: calldata"), "{err}");

    let legacy = send(json!({
        "from": DEV_ACCOUNT, "to": DEV_ACCOUNT, "input": anchor_data, "gasPrice": "0x77359400"
    }));
    let err = refused(&legacy);
    assert!(err.contains("type 0 transaction"), "{err}");

    let unknown = ChainRef::Evm {
        chain_id: CHAIN_ID,
        tx_hash: [0xee; 32],
    };
    assert!(matches!(
        chain.read_anchor(&unknown),
        Err(ChainError::NotFound(_))
    ));
    let other_chain = ChainRef::Evm {
        chain_id: 1,
        tx_hash: [0xee; 32],
    };
    assert!(refused(&other_chain).contains("chain id 1"));
    let ledger = ChainRef::Ledger {
        height: 1,
        block_hash: [0; 32],
    };
    assert!(refused(&ledger).contains("local ledger"));
}

#[test]
fn a_bad_key_file_is_refused_with_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("anchor.key");
    // No node is needed: the key is checked before the network.
    let connect = || {
        StratosChain::connect(&StratosConfig {
            rpc_url: format!("http://127.0.0.1:{}", free_port()),
            chain_id: CHAIN_ID,
            key_file: key.clone(),
        })
    };
    let secret = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    std::fs::write(&key, secret).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err(err) = connect() else {
        panic!("a world-readable key file was accepted")
    };
    let err = err.to_string();
    assert!(
        err.contains("anchor.key") && err.contains("mode 0644"),
        "{err}"
    );
    assert!(!err.contains(secret));

    std::fs::write(&key, "0xnot-a-key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let Err(err) = connect() else {
        panic!("a key file without a key was accepted")
    };
    assert!(err.to_string().contains("expected 64 hex digits"), "{err}");
}
