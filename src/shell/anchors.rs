//! `\anchors [N]`: the cluster's newest epochs and their anchors, printed as
//! rows in the shell's output format. The rows come from an
//! [`AnchorsReply`], whatever produced it (a node's `GET /v1/anchors`, or an
//! embedded folder's own ledger).

use std::collections::BTreeMap;

use stratosdb::api::{AnchorInfo, AnchorsReply, ChainBody};
use stratosdb::embedded_anchor::{Anchorer, cluster_anchors};
use stratosdb_chain_anchor::{Chain, ChainError};
use stratosdb_engine::Value;
use stratosdb_query::StatementResult;

pub const USAGE: &str = "usage: \\anchors [N]   (the newest N epochs, 20 by default)";

/// The epochs as rows: epoch, status, cluster root, chain reference, number
/// of shard leaves, and why it failed or was skipped.
pub fn rows(reply: &AnchorsReply) -> StatementResult {
    let columns = [
        "epoch",
        "status",
        "cluster_root",
        "reference",
        "leaves",
        "reason",
    ];
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
    let rows = reply
        .anchors
        .iter()
        .map(|a| {
            let mut row = BTreeMap::new();
            row.insert(
                "epoch".to_string(),
                Value::Int(i64::try_from(a.epoch).unwrap_or(i64::MAX)),
            );
            row.insert("status".to_string(), Value::String(a.status.clone()));
            row.insert("cluster_root".to_string(), text(&a.cluster_root));
            row.insert("reference".to_string(), text(&a.reference));
            row.insert(
                "leaves".to_string(),
                Value::Int(i64::try_from(a.leaves.len()).unwrap_or(i64::MAX)),
            );
            row.insert("reason".to_string(), text(&a.reason));
            Value::Object(row)
        })
        .collect();
    StatementResult::Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

/// An embedded folder's newest `limit` epochs, from its own ledger, each read
/// back and checked there (hash, place in the chain, signature).
pub fn embedded(anchorer: &Anchorer, limit: Option<u64>) -> Result<AnchorsReply, ChainError> {
    let ledger = anchorer.ledger();
    let mut listed = cluster_anchors(ledger, &anchorer.cluster_id())?;
    listed.reverse();
    listed.truncate(usize::try_from(limit.unwrap_or(20)).unwrap_or(usize::MAX));
    let anchors = listed
        .into_iter()
        .map(|(reference, payload)| {
            let (status, reason) = match ledger.read_anchor(&reference) {
                Ok(record) if record.payload == payload => ("anchored", None),
                Ok(_) => (
                    "failed",
                    Some("the block holds another payload".to_string()),
                ),
                Err(e) => ("failed", Some(e.to_string())),
            };
            AnchorInfo {
                epoch: payload.epoch,
                status: status.to_string(),
                cluster_root: Some(hex::encode(payload.cluster_root)),
                reference: Some(reference.to_string()),
                previous: hex::encode(payload.previous),
                reason,
                // The one leaf of an embedded epoch is the shard's (docs/chain.md).
                leaves: Vec::new(),
            }
        })
        .collect();
    let info = ledger.info();
    Ok(AnchorsReply {
        cluster_id: Some(hex::encode(anchorer.cluster_id())),
        chain: Some(ChainBody {
            kind: info.kind,
            chain_id: info.chain_id,
            location: info.location,
        }),
        anchors,
    })
}

/// The line above the rows: the cluster and its chain.
pub fn heading(reply: &AnchorsReply) -> String {
    let cluster = reply.cluster_id.as_deref().unwrap_or("(no id yet)");
    match &reply.chain {
        Some(chain) => {
            let id = chain
                .chain_id
                .map_or(String::new(), |id| format!(" chain id {id}"));
            format!(
                "Cluster {cluster}, anchored on {}{id} at {}",
                chain.kind, chain.location
            )
        }
        None => format!("Cluster {cluster}, anchoring off"),
    }
}

/// `\anchors`'s argument: how many epochs.
pub fn parse_limit(words: &[&str]) -> Option<Option<u64>> {
    match words {
        [] => Some(None),
        [n] => n.parse().ok().filter(|&n| n > 0).map(Some),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb::api::{AnchorInfo, ChainBody};

    #[test]
    fn anchors_print_as_rows() {
        let reply = AnchorsReply {
            cluster_id: Some("ab".into()),
            chain: Some(ChainBody {
                kind: "local".into(),
                chain_id: None,
                location: "/l".into(),
            }),
            anchors: vec![AnchorInfo {
                epoch: 2,
                status: "skipped".into(),
                cluster_root: None,
                reference: None,
                previous: "00".into(),
                reason: Some("users/1: no quorum".into()),
                leaves: Vec::new(),
            }],
        };
        let StatementResult::Rows { columns, rows } = rows(&reply) else {
            panic!("rows");
        };
        assert_eq!(columns[0], "epoch");
        assert_eq!(rows.len(), 1);
        assert_eq!(heading(&reply), "Cluster ab, anchored on local at /l");
        assert_eq!(parse_limit(&[]), Some(None));
        assert_eq!(parse_limit(&["5"]), Some(Some(5)));
        assert_eq!(parse_limit(&["0"]), None);
        assert_eq!(parse_limit(&["x", "y"]), None);
    }
}
