//! `\anchors`: the epochs an embedded folder anchored on its ledger, each
//! read back and checked (hash, place in the chain, signature).

use stratosdb::embedded_anchor::{Anchorer, cluster_anchors};
use stratosdb_chain_anchor::{Chain, ChainError};
use stratosdb_engine::{Object, Value};
use stratosdb_query::StatementResult;

const COLUMNS: [&str; 4] = ["epoch", "cluster_root", "reference", "status"];

pub fn list(anchorer: &Anchorer) -> Result<StatementResult, ChainError> {
    let ledger = anchorer.ledger();
    let rows = cluster_anchors(ledger, &anchorer.cluster_id())?
        .into_iter()
        .map(|(reference, payload)| {
            let status = match ledger.read_anchor(&reference) {
                Ok(record) if record.payload == payload => "included".to_string(),
                Ok(_) => "FAILED: the block holds another payload".to_string(),
                Err(e) => format!("FAILED: {e}"),
            };
            let values = [
                Value::Int(payload.epoch as i64),
                Value::from(hex::encode(payload.cluster_root).as_str()),
                Value::from(reference.to_string().as_str()),
                Value::from(status.as_str()),
            ];
            let row: Object = COLUMNS.iter().map(|c| c.to_string()).zip(values).collect();
            Value::Object(row)
        })
        .collect();
    Ok(StatementResult::Rows {
        columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
        rows,
    })
}
