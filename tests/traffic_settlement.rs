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
use common::traffic::{cli, new_signer, node_receipts};

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
        if report.node_volumes.is_empty() {
            // No traffic: settled at once, nothing signed or recorded.
            assert!(record["reference"].is_null(), "{record}");
            continue;
        }
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

#[path = "../chain-anchor/tests/support/anvil.rs"]
mod anvil;

fn balance_on_chain(anvil: &anvil::Anvil, address: &str) -> u128 {
    let hex = anvil.rpc("eth_getBalance", serde_json::json!([address, "latest"]));
    u128::from_str_radix(hex.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn on_anvil_a_deposit_pays_for_queries_and_the_settlement_moves_balances_by_the_fees() {
    let anvil = anvil::Anvil::start();
    let (cluster_key, settlement_address) = anvil.funded_key("cluster-key");
    let (user_key, user_address) = anvil.funded_key("user-key");
    let rpc = anvil.url();
    let flags = [
        "--no-dev",
        "--anchor-interval",
        "1s",
        "--chain",
        "stratos",
        "--rpc",
        &rpc,
        "--chain-id",
        "2048",
        "--key-file",
        cluster_key.to_str().unwrap(),
        "--price-per-kib",
        "1000000 wei",
        "--price-per-document",
        "50000 wei",
    ];
    let mut cluster = TestCluster::start_with(1, &flags);
    let url = cluster.url(0).to_string();
    let prices = parse(&raw("GET", &format!("{url}/v1/prices"), None).1);
    assert_eq!(
        prices["settlement_address"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        settlement_address
    );

    // The deposit: a real transfer from the user's key, credited once.
    let user_before = balance_on_chain(&anvil, &user_address);
    let deposit = 3_000_000_000_000_000u128; // 0.003 STOS
    let os = |t: &'static str| std::ffi::OsStr::new(t);
    let text = cli(&[
        os("account"),
        os("deposit"),
        os("--connect"),
        url.as_ref(),
        os("--key-file"),
        user_key.as_os_str(),
        os("--rpc"),
        rpc.as_ref(),
        os("--chain-id"),
        os("2048"),
        os("0.003"),
    ]);
    assert!(text.contains("deposited 0.003 STOS"), "{text}");
    let reference = text
        .split_whitespace()
        .find(|w| w.starts_with("evm:2048:"))
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    // On the chain: the user paid the deposit and the transfer's gas, to
    // the wei, and the transfer went to the settlement address.
    let tx_hash = reference.trim_start_matches("evm:2048:");
    let tx = anvil.rpc("eth_getTransactionByHash", serde_json::json!([tx_hash]));
    assert_eq!(
        tx["to"].as_str().unwrap().to_lowercase(),
        settlement_address
    );
    let receipt = anvil.rpc("eth_getTransactionReceipt", serde_json::json!([tx_hash]));
    let quantity =
        |v: &Json| u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let gas = quantity(&receipt["gasUsed"]) * quantity(&receipt["effectiveGasPrice"]);
    assert_eq!(
        balance_on_chain(&anvil, &user_address),
        user_before - deposit - gas
    );
    // Posting the same transfer again: 409.
    let body = serde_json::json!({ "reference": reference }).to_string();
    let (status, again) = raw(
        "POST",
        &format!("{url}/v1/accounts/{user_address}/deposits"),
        Some(body.as_bytes()),
    );
    assert_eq!(status, 409, "{again}");

    // Queries, paid from the deposit.
    let key_text = std::fs::read_to_string(&user_key).unwrap();
    let secret: [u8; 32] = hex::decode(key_text.trim().trim_start_matches("0x"))
        .unwrap()
        .try_into()
        .unwrap();
    let user = RequestSigner::from_bytes(&secret).unwrap();
    assert_eq!(user.address().to_string().to_lowercase(), user_address);
    let client = Client::new(&url).unwrap().signing(user.clone());
    client.sql("CREATE COLLECTION t").unwrap();
    for i in 0..20 {
        client
            .put("t", &format!("d{i}"), &serde_json::json!({"n": i}))
            .unwrap();
        client.sql("SELECT * FROM t").unwrap();
    }
    let last_epoch = client.last_receipt().unwrap().epoch;
    let (_, fees) = client.receipt_totals();
    let records = settled_through(&mut cluster, last_epoch);
    for r in records
        .iter()
        .filter(|r| r["status"] == "settled" && r["report"]["total_fee"] != "0")
    {
        assert!(
            r["reference"].as_str().unwrap().starts_with("evm:2048:0x"),
            "{r}"
        );
    }
    let a = account(&url, &user_address);
    assert_eq!(wei(&a["deposited"]), deposit);
    assert_eq!(wei(&a["spent"]), fees, "{a}");
    assert_eq!(wei(&a["available"]), deposit - fees, "{a}");
    let map = cluster.api(0).cluster().unwrap();
    let node_account = map.nodes[0].earnings_account.clone().unwrap();
    assert_eq!(wei(&account(&url, &node_account)["earned"]), fees);

    // A withdrawal: debited at once, paid out by a transfer from the
    // settlement address, the user's balance up by exactly the amount.
    let before = balance_on_chain(&anvil, &user_address);
    let back = 1_000_000_000_000_000u128;
    let withdrawal = client.withdraw(back).unwrap();
    assert_eq!(withdrawal.account.available, deposit - fees - back);
    let deadline = Instant::now() + Duration::from_secs(60);
    let paid = loop {
        let payouts = client.payouts(&user.address()).unwrap();
        if let Some(r) = payouts.iter().find_map(|p| p.reference.clone()) {
            break r;
        }
        assert!(Instant::now() < deadline, "not paid out: {payouts:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(paid.starts_with("evm:2048:0x"), "{paid}");
    assert_eq!(balance_on_chain(&anvil, &user_address), before + back);

    // The auditor checks each settlement against the EVM chain.
    let text = cli(&[
        os("audit"),
        os("--settlements"),
        os("--connect"),
        url.as_ref(),
        os("--rpc"),
        rpc.as_ref(),
        os("--chain-id"),
        os("2048"),
    ]);
    assert!(text.contains("on the chain at evm:2048:0x"), "{text}");
}
