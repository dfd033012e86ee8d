//! The settlements of a cluster (`--settlements --connect URL`): each settled
//! epoch's volume report rebuilt from the receipts its serving nodes give
//! out, checked against the report the cluster recorded, against the chain's
//! entry (the report's hash) and against the node keys of the cluster map
//! (two thirds of the nodes signed it).

use std::collections::HashMap;

use stratosdb::client::Client;
use stratosdb::node::traffic::endpoints::MAX_RECEIPTS;
use stratosdb::node::traffic::settle::SettlementRecord;
use stratosdb_chain_anchor::{Chain, ChainRef};
use stratosdb_verifier::traffic::{Receipt, VolumeReport};

use super::Audit;

pub fn check(
    audit: &mut Audit,
    url: &str,
    client: Client,
    from_epoch: u64,
    chain: Option<&dyn Chain>,
) {
    let what = format!("settlements of {url}");
    let map = match client.cluster() {
        Ok(m) => m,
        Err(e) => return audit.failed(&what, &format!("reading the cluster map: {e}")),
    };
    if chain.is_none() {
        audit.note(
            "no chain given (--ledger DIR or --rpc URL): the recorded entries cannot be checked",
        );
    }
    // Node key → a client of that node's API.
    let mut nodes: HashMap<[u8; 32], (String, Client)> = HashMap::new();
    for n in &map.nodes {
        let Some(key) = n
            .node_key
            .as_deref()
            .and_then(|k| stratosdb_chain_anchor::hex_hash(k).ok())
        else {
            continue;
        };
        if let Ok(c) = Client::new(&n.http) {
            nodes.insert(key, (n.id.clone(), c));
        }
    }
    let records = match client.settlements(from_epoch) {
        Ok(r) => r,
        Err(e) => return audit.failed(&what, &format!("reading the settlements: {e}")),
    };
    let settled: Vec<&SettlementRecord> = records
        .iter()
        .filter(|r| r.status == stratosdb::node::traffic::settle::SettlementStatus::Settled)
        .collect();
    audit.note(&format!(
        "{} settlement records, {} settled",
        records.len(),
        settled.len()
    ));
    let bar = audit.progress(settled.len() as u64, "checking settlements");
    for record in settled {
        let item = format!("settlement of epoch {}", record.epoch);
        match check_one(record, &nodes, chain) {
            Ok(summary) => audit.ok(&format!("{item}: {summary}")),
            Err(reason) => audit.failed(&item, &reason),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
}

fn check_one(
    record: &SettlementRecord,
    nodes: &HashMap<[u8; 32], (String, Client)>,
    chain: Option<&dyn Chain>,
) -> Result<String, String> {
    let report = &record.report;
    report.check().map_err(|e| e.to_string())?;
    if report.hash() != record.report_hash {
        return Err("the recorded report hash is not the report's".into());
    }
    if report.node_volumes.is_empty() {
        // No node served anything: there is nothing to sign or record.
        return Ok("no traffic".into());
    }
    // The receipts, fetched from each serving node, with one on each side
    // to show the range leaves none of the epoch out.
    let mut per_node = Vec::new();
    for volume in &report.node_volumes {
        let short = hex::encode(&volume.node_key[..4]);
        let (id, client) = nodes
            .get(&volume.node_key)
            .ok_or_else(|| format!("node {short}… is not in the cluster map"))?;
        let from = volume.first_sequence.saturating_sub(1).max(1);
        let to = volume.last_sequence + 1;
        let receipts = client
            .node_receipts_range(from, to, MAX_RECEIPTS)
            .map_err(|e| format!("fetching node {id}'s receipts: {e}"))?;
        let (inside, outside): (Vec<Receipt>, Vec<Receipt>) = receipts
            .into_iter()
            .partition(|r| (volume.first_sequence..=volume.last_sequence).contains(&r.sequence));
        if let Some(r) = outside.iter().find(|r| r.epoch == record.epoch) {
            return Err(format!(
                "node {id}'s receipt #{} is of epoch {} but outside the report's range {}..={}",
                r.sequence, record.epoch, volume.first_sequence, volume.last_sequence
            ));
        }
        per_node.push((volume.node_key, inside));
    }
    let rebuilt = VolumeReport::from_receipts(report.cluster_id, record.epoch, &per_node)
        .map_err(|e| format!("the receipts: {e}"))?;
    if &rebuilt != report {
        return Err(format!(
            "the receipts give {} wei over {} payers, the report says {} wei over {}",
            rebuilt.total_fee,
            rebuilt.wallet_volumes.len(),
            report.total_fee,
            report.wallet_volumes.len()
        ));
    }
    // The members who sign must be the map's nodes; two thirds of them signed.
    if let Some(stranger) = record.members.iter().find(|k| !nodes.contains_key(*k)) {
        return Err(format!(
            "member {}… is not a node of the cluster map",
            hex::encode(&stranger[..4])
        ));
    }
    record
        .entry()
        .verify(&record.members)
        .map_err(|e| e.to_string())?;
    let mut on_chain = String::from("chain not checked");
    if let Some(chain) = chain {
        let reference: ChainRef = record
            .reference
            .as_deref()
            .ok_or("settled without a chain reference")?
            .parse()
            .map_err(|e| format!("its chain reference: {e}"))?;
        let entry = chain
            .read_settlement_at(&reference)
            .map_err(|e| format!("reading {reference} on the chain: {e}"))?;
        if (entry.cluster_id, entry.epoch, entry.report_hash)
            != (report.cluster_id, record.epoch, record.report_hash)
        {
            return Err(format!(
                "the chain's entry {reference} is of another cluster, epoch or report"
            ));
        }
        entry
            .verify(&record.members)
            .map_err(|e| format!("the chain's entry: {e}"))?;
        on_chain = format!("on the chain at {reference}");
    }
    let receipts: u64 = report.node_volumes.iter().map(|n| n.receipts()).sum();
    Ok(format!(
        "{receipts} receipts of {} node(s) for {} payer(s), {} wei, signed by {} of {} nodes, {on_chain}",
        report.node_volumes.len(),
        report.wallet_volumes.len(),
        report.total_fee,
        record.signatures.len(),
        record.members.len()
    ))
}
