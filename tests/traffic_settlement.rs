//! Settlement per epoch on real node processes sharing one local ledger:
//! every payer debited and every serving node credited exactly the fees of
//! its receipts, once, with two thirds of the nodes' signatures on the
//! chain, and the same when the nodes (the settling leader among them) are
//! SIGKILLed mid-run. Every child is killed when its test ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use stratosdb::client::{Client, ClientError};
use stratosdb_chain_anchor::{Chain, LedgerKey, LocalLedger};
use stratosdb_verifier::traffic::{Receipt, RequestSigner, VolumeReport};

mod common;
use common::cluster::TestCluster;
use common::http::{parse, raw};
use common::traffic::{new_signer, node_receipts};

const SETTLE_WAIT: Duration = Duration::from_secs(90);

fn wei(v: &Json) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

fn start(n: usize, ledger: &std::path::Path) -> TestCluster {
    let ledger = ledger.to_str().unwrap();
    TestCluster::start_with(
        n,
        &[
            "--no-dev",
            "--anchor-interval",
            "1s",
            "--ledger",
            ledger,
            "--price-per-kib",
            "1024 wei",
            "--price-per-document",
            "1000 wei",
        ],
    )
}

fn funded(cluster: &TestCluster, amount: u128) -> RequestSigner {
    let who = new_signer();
    Client::new(cluster.url(0))
        .unwrap()
        .deposit_signed(&who, amount)
        .unwrap();
    who
}

fn settlements(url: &str) -> Vec<Json> {
    let (status, text) = raw(
        "GET",
        &format!("{url}/v1/settlements?from=0&limit=1000"),
        None,
    );
    assert_eq!(status, 200, "{text}");
    parse(&text)["settlements"].as_array().unwrap().clone()
}

/// Waits until every epoch up to `epoch` is settled; returns the records.
fn settled_through(cluster: &mut TestCluster, epoch: u64) -> Vec<Json> {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let running = cluster.running();
        let records = settlements(cluster.url(running[0]));
        let done = records
            .iter()
            .filter(|r| r["status"] == "settled")
            .map(|r| r["epoch"].as_u64().unwrap())
            .max();
        if done.is_some_and(|d| d >= epoch) {
            for r in &records {
                let e = r["epoch"].as_u64().unwrap();
                if e <= epoch {
                    assert_eq!(r["status"], "settled", "{r}");
                }
            }
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "epochs up to {epoch} not settled within {SETTLE_WAIT:?}: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every receipt every node issued, by node key.
fn all_receipts(cluster: &TestCluster, nodes: &[usize]) -> BTreeMap<String, Vec<Receipt>> {
    let mut out = BTreeMap::new();
    for &i in nodes {
        let receipts = node_receipts(cluster.url(i));
        if let Some(r) = receipts.first() {
            out.insert(hex::encode(r.node_key), receipts);
        }
    }
    out
}

/// Checks each settled record against the receipts, the chain and the
/// accounts; returns the fees settled per payer and per earnings account.
fn check_settled(
    cluster: &TestCluster,
    ledger: &LocalLedger,
    records: &[Json],
    receipts: &BTreeMap<String, Vec<Receipt>>,
) -> BTreeMap<String, u128> {
    let map = cluster.api(0).cluster().unwrap();
    let members: Vec<[u8; 32]> = map
        .nodes
        .iter()
        .map(|n| stratosdb_chain_anchor::hex_hash(n.node_key.as_deref().unwrap()).unwrap())
        .collect();
    let mut fees: BTreeMap<String, u128> = BTreeMap::new();
    for record in records.iter().filter(|r| r["status"] == "settled") {
        let epoch = record["epoch"].as_u64().unwrap();
        let report: VolumeReport = serde_json::from_value(record["report"].clone()).unwrap();
        report.check().unwrap();
        assert!(record["absent"].as_array().unwrap().is_empty(), "{record}");
        // The report is what the receipts of the epoch say.
        let of_epoch: Vec<([u8; 32], Vec<Receipt>)> = receipts
            .values()
            .map(|rs| {
                let key = rs[0].node_key;
                (
                    key,
                    rs.iter().filter(|r| r.epoch == epoch).cloned().collect(),
                )
            })
            .collect();
        let rebuilt = VolumeReport::from_receipts(report.cluster_id, epoch, &of_epoch).unwrap();
        assert_eq!(rebuilt, report, "epoch {epoch}");
        // On the chain once, with two thirds of the nodes' signatures.
        let (reference, entry) = ledger
            .read_settlement(&report.cluster_id, epoch)
            .unwrap()
            .unwrap_or_else(|| panic!("epoch {epoch} is not on the ledger"));
        assert_eq!(record["reference"], reference.to_string());
        assert_eq!(entry.report_hash, report.hash());
        entry.verify(&members).unwrap();
        for w in &report.wallet_volumes {
            *fees.entry(w.payer.to_string()).or_default() += w.fee;
        }
        for n in &report.node_volumes {
            let node = map
                .nodes
                .iter()
                .find(|m| m.node_key.as_deref() == Some(&hex::encode(n.node_key)))
                .unwrap();
            *fees
                .entry(node.earnings_account.clone().unwrap())
                .or_default() += n.fee;
        }
    }
    fees
}

fn account(url: &str, address: &str) -> Json {
    parse(&raw("GET", &format!("{url}/v1/accounts/{address}"), None).1)
}

#[test]
fn an_epoch_settles_once_payers_pay_and_nodes_earn_their_receipts_fees() {
    let shared = tempfile::tempdir().unwrap();
    let ledger_dir = shared.path().join("ledger");
    let mut cluster = start(3, &ledger_dir);
    let alice = funded(&cluster, 1_000_000_000);
    let bob = funded(&cluster, 1_000_000_000);
    let setup = Client::new(cluster.url(0)).unwrap().signing(alice.clone());
    setup.sql("CREATE COLLECTION t").unwrap();
    let values: Vec<String> = (0..30)
        .map(|i| format!("('{{\"_id\": \"d{i}\", \"n\": {i}}}')"))
        .collect();
    setup
        .sql(&format!("INSERT INTO t VALUES {}", values.join(", ")))
        .unwrap();
    // Traffic through every node over a few epochs.
    let clients: Vec<Client> = (0..3)
        .flat_map(|i| {
            [&alice, &bob].map(|who| Client::new(cluster.url(i)).unwrap().signing(who.clone()))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < until && n < 2000 {
        let c = &clients[n % clients.len()];
        c.sql(&format!("SELECT * FROM t WHERE n < {}", n % 7 + 1))
            .unwrap();
        n += 1;
    }
    let last_epoch = clients
        .iter()
        .chain([&setup])
        .filter_map(|c| c.last_receipt())
        .map(|r| r.epoch)
        .max()
        .unwrap();
    let records = settled_through(&mut cluster, last_epoch);
    let receipts = all_receipts(&cluster, &[0, 1, 2]);
    let ledger = LocalLedger::open(&ledger_dir, LedgerKey::from_secret_bytes([1; 32])).unwrap();
    let fees = check_settled(&cluster, &ledger, &records, &receipts);

    // What the clients were billed is what the accounts paid, to the wei.
    let billed = |who: &RequestSigner| -> u128 {
        clients
            .iter()
            .chain([&setup])
            .filter(|c| c.payer() == Some(who.address()))
            .map(|c| c.receipt_totals().1)
            .sum()
    };
    for who in [&alice, &bob] {
        let a = account(cluster.url(1), &who.address().to_string());
        assert_eq!(wei(&a["spent"]), billed(who), "{a}");
        assert_eq!(fees[&who.address().to_string()], billed(who));
        assert_eq!(a["reserved"], "0", "every reservation returned: {a}");
        assert_eq!(wei(&a["available"]), 1_000_000_000 - billed(who));
    }
    // The nodes earned it all.
    let map = cluster.api(0).cluster().unwrap();
    let earned: u128 = map
        .nodes
        .iter()
        .map(|n| wei(&account(cluster.url(0), n.earnings_account.as_ref().unwrap())["earned"]))
        .sum();
    assert_eq!(earned, billed(&alice) + billed(&bob));

    // The auditor agrees, settlement by settlement...
    let audit = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stratosdb"))
            .args(["audit", "--settlements", "--connect", url, "--ledger"])
            .arg(&ledger_dir)
            .output()
            .unwrap()
    };
    let out = audit(cluster.url(2));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ok      settlement of epoch"), "{text}");
    assert!(
        text.contains("signed by 3 of 3 nodes, on the chain at ledger:"),
        "{text}"
    );
    // ...and catches a receipt inflated after the fact on a node's disk.
    let file = cluster.data(1).join("receipts").join("receipts.jsonl");
    let log = std::fs::read_to_string(&file).unwrap();
    let at = log.find("\"fee\":\"").unwrap() + 7;
    let digit = log.as_bytes()[at];
    let inflated = if digit == b'9' { b'8' } else { digit + 1 };
    let mut bytes = log.into_bytes();
    bytes[at] = inflated;
    std::fs::write(&file, bytes).unwrap();
    let out = audit(cluster.url(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED  settlement of epoch"), "{text}");
    assert!(text.contains("the receipts: receipt"), "{text}");
}

#[test]
fn killing_nodes_and_the_settling_leader_mid_run_debits_nobody_twice_and_loses_no_traffic() {
    let shared = tempfile::tempdir().unwrap();
    let ledger_dir = shared.path().join("ledger");
    let mut cluster = start(3, &ledger_dir);
    let payer = funded(&cluster, 10_000_000_000);
    Client::new(cluster.url(0))
        .unwrap()
        .signing(payer.clone())
        .sql("CREATE COLLECTION t")
        .unwrap();
    let mut last_epoch = 0;
    let mut billed = 0u128;
    // Each node in turn is SIGKILLed (one of them leads group 0 and
    // settles) and restarted while the others serve.
    for victim in 0..3 {
        cluster.kill(victim);
        for i in (0..3).filter(|&i| i != victim) {
            let client = Client::new(cluster.url(i)).unwrap().signing(payer.clone());
            for k in 0..20 {
                match client.sql(&format!(
                    "INSERT INTO t VALUES ('{{\"_id\": \"v{victim}n{i}k{k}\"}}')"
                )) {
                    Ok(_) => {}
                    // No quorum for a moment, or the write's outcome unknown
                    // while the leader moves: retried as a new request.
                    Err(ClientError::Api { status: 503, .. }) => {
                        std::thread::sleep(Duration::from_millis(200))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            billed += client.receipt_totals().1;
            if let Some(r) = client.last_receipt() {
                last_epoch = last_epoch.max(r.epoch);
            }
        }
        cluster.restart(victim);
    }
    let records = settled_through(&mut cluster, last_epoch);
    let receipts = all_receipts(&cluster, &[0, 1, 2]);
    let ledger = LocalLedger::open(&ledger_dir, LedgerKey::from_secret_bytes([1; 32])).unwrap();
    let fees = check_settled(&cluster, &ledger, &records, &receipts);
    // Every receipt the nodes issued is in a settled epoch and was paid
    // once: the payer's spending is the sum of all its receipts.
    let issued: u128 = receipts
        .values()
        .flatten()
        .filter(|r| r.payer == payer.address() && r.epoch <= last_epoch)
        .map(|r| r.fee)
        .sum();
    let a = account(cluster.url(0), &payer.address().to_string());
    assert_eq!(wei(&a["spent"]), issued, "{a}");
    assert_eq!(fees[&payer.address().to_string()], issued);
    assert!(
        issued >= billed,
        "the clients kept {billed} wei of receipts, the nodes {issued}"
    );
}
