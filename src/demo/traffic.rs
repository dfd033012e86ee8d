//! The demo's Proof of Traffic step: an account deposits on the shared
//! ledger, pays for a few queries (each reply with its signed receipt), the
//! cluster settles the epochs it used, and `audit --settlements` checks them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use stratosdb::client::Client;
use stratosdb::node::traffic::settle::{SettlementRecord, SettlementStatus};
use stratosdb_verifier::traffic::{RequestSigner, wei};

use super::people::COLLECTION;
use super::{POLL, print_rows};

/// Longest wait for the epochs of the demo's traffic to be settled.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);
/// What the demo account deposits: 0.001 STOS.
const DEPOSIT: u128 = wei::WEI_PER_STOS / 1000;

pub fn pay_and_settle(url: &str, ledger: &Path) -> anyhow::Result<()> {
    let signer = loop {
        if let Ok(s) = RequestSigner::from_bytes(&rand::random()) {
            break s;
        }
    };
    let me = signer.address();
    let client = Client::new(url)?.signing(signer.clone());
    let prices = client.prices().context("reading the prices")?;
    println!(
        "account {me} ({}); prices: {} wei a KiB, {} wei a document",
        me.to_stratos(),
        prices.prices.wei_per_kib,
        prices.prices.wei_per_document
    );
    let deposit = client
        .deposit_signed(&signer, DEPOSIT)
        .context("depositing on the ledger")?;
    println!(
        "deposited {}, signed by the account, on the ledger at {}",
        wei::format_stos(DEPOSIT),
        deposit.reference
    );
    let queries = [
        format!("SELECT * FROM {COLLECTION} WHERE _id = 'p000007'"),
        format!("SELECT city, COUNT(*) AS n FROM {COLLECTION} GROUP BY city"),
        format!("SELECT name, age FROM {COLLECTION} WHERE age > 60 LIMIT 20"),
    ];
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for sql in &queries {
        client.sql(sql).with_context(|| format!("{sql} (signed)"))?;
        let r = client
            .last_receipt()
            .context("a reply came without its receipt")?;
        rows.push(json!({
            "query": sql,
            "bytes": r.bytes,
            "docs": r.documents,
            "fee (wei)": r.fee.to_string(),
            "epoch": r.epoch,
            "receipt": format!("#{} by {}…", r.sequence, &hex::encode(r.node_key)[..8]),
        }));
    }
    let first_epoch = rows
        .iter()
        .filter_map(|r| r["epoch"].as_u64())
        .min()
        .unwrap_or(0);
    print_rows(
        &["query", "bytes", "docs", "fee (wei)", "epoch", "receipt"],
        rows,
    )?;
    let (count, fees) = client.receipt_totals();
    let last_epoch = client
        .last_receipt()
        .map(|r| r.epoch)
        .context("no receipt kept")?;
    println!("{count} receipts checked (node signature, fee, request, bytes): {fees} wei");

    let settled = wait_settled(&client, last_epoch)?;
    print_rows(
        &[
            "epoch",
            "payers",
            "receipts",
            "fees (wei)",
            "signed by",
            "on the ledger",
        ],
        settled
            .iter()
            .filter(|r| !r.report.wallet_volumes.is_empty())
            .map(|r| {
                let receipts: u64 = r.report.wallet_volumes.iter().map(|w| w.receipts).sum();
                json!({
                    "epoch": r.epoch,
                    "payers": r.report.wallet_volumes.len(),
                    "receipts": receipts,
                    "fees (wei)": r.report.total_fee.to_string(),
                    "signed by": format!("{} of {}", r.signatures.len(), r.members.len()),
                    "on the ledger": r.reference.clone().unwrap_or_default(),
                })
            })
            .collect(),
    )?;
    let account = client.account(&me).context("reading the account")?;
    println!(
        "account {me}: deposited {} wei, spent {} wei (its receipts: {fees}), available {} wei",
        account.deposited, account.spent, account.available
    );
    if account.spent != fees {
        bail!(
            "the account was charged {} wei for receipts of {fees} wei",
            account.spent
        );
    }
    audit_settlements(url, ledger, first_epoch)
}

/// Waits until every epoch up to `epoch` is settled; the settled records.
fn wait_settled(client: &Client, epoch: u64) -> anyhow::Result<Vec<SettlementRecord>> {
    let started = Instant::now();
    loop {
        let records = client.settlements(0).context("reading the settlements")?;
        let through = records
            .iter()
            .take_while(|r| r.status == SettlementStatus::Settled)
            .last()
            .map(|r| r.epoch);
        if through.is_some_and(|t| t >= epoch) {
            println!(
                "epochs 0 to {epoch} settled in {:.1} s: each volume report signed by two \
                 thirds of the nodes and on the ledger, payers debited, nodes credited",
                started.elapsed().as_secs_f64()
            );
            return Ok(records.into_iter().filter(|r| r.epoch <= epoch).collect());
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            bail!("the epochs up to {epoch} were not settled within {SETTLE_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Audits the settlements from `from_epoch` on (the earlier ones' receipts
/// may be on the node the demo killed).
fn audit_settlements(url: &str, ledger: &Path, from_epoch: u64) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    println!(
        "stratosdb audit --settlements --from-epoch {from_epoch} --connect {url} --ledger {}",
        ledger.display()
    );
    let output = std::process::Command::new(exe)
        .args(["audit", "--settlements", "--connect", url, "--ledger"])
        .arg(ledger)
        .args(["--from-epoch", &from_epoch.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running `stratosdb audit --settlements`")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let checked: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ok      settlement") && !l.ends_with("no traffic"))
        .collect();
    for line in &checked {
        println!("{line}");
    }
    for line in text.lines().filter(|l| l.starts_with("FAILED")) {
        println!("{line}");
    }
    let verdict = text
        .lines()
        .find(|l| l.starts_with("audit "))
        .unwrap_or("audit: no verdict");
    println!("{verdict}");
    if !output.status.success() {
        bail!(
            "the audit of the settlements failed ({}): {verdict}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
