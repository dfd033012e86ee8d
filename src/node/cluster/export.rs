//! `GET /v1/collections/{c}/shards/{n}/export`: a page of a shard's
//! documents, or of the keys changed since its latest anchor mark, from this
//! node's own replica (`docs/chain.md`, "Auditing a replica").

use stratosdb_engine::{AnchorMark, ExportPage, Shard};

use super::node::{ClusterNode, show_id};
use crate::api::{
    EXPORT_DEFAULT_LIMIT, EXPORT_MAX_LIMIT, EXPORT_PAGE_BYTES, ExportPart, ExportQuery,
    ExportedChange, ExportedDocument, MarkInfo, ShardExport,
};
use crate::node::backend::{BackendError, ErrorClass};

pub fn export_shard(
    node: &ClusterNode,
    collection: &str,
    shard: u32,
    query: &ExportQuery,
) -> Result<ShardExport, BackendError> {
    let limit = query.limit.unwrap_or(EXPORT_DEFAULT_LIMIT);
    if !(1..=EXPORT_MAX_LIMIT).contains(&limit) {
        return Err(BackendError::bad_request(
            "invalid_request",
            format!("limit is 1 to {EXPORT_MAX_LIMIT}"),
        ));
    }
    let map = match node.map() {
        map if map.collections.contains_key(collection) => map,
        _ => node.refresh_map()?,
    };
    let placed = map
        .shards_of(collection)
        .into_iter()
        .find(|s| s.shard == shard)
        .ok_or_else(|| {
            BackendError::not_found(
                "shard_not_found",
                format!("the cluster has no shard {shard} of {collection:?}"),
            )
        })?;
    if !node.hosts(placed.group) {
        let replicas: Vec<String> = placed.replicas.iter().map(|n| show_id(*n)).collect();
        return Err(BackendError::new(
            ErrorClass::NotFound,
            "replica_not_here",
            format!(
                "this node holds no replica of shard {shard} of {collection:?}; its replicas are on nodes {}",
                replicas.join(", ")
            ),
        ));
    }
    let engine_shard: Shard = node
        .raft
        .shard(placed.group)
        .map_err(|e| BackendError::new(ErrorClass::Unavailable, "unavailable", e.to_string()))?;
    let limit = limit as usize;
    let mut reply = ShardExport {
        collection: collection.to_string(),
        shard,
        node: show_id(node.id),
        applied: 0,
        root: String::new(),
        mark: None,
        documents: Vec::new(),
        changes: Vec::new(),
        next: None,
    };
    match query.part {
        ExportPart::Documents => {
            let page = engine_shard.export_documents(
                collection,
                query.after.as_deref(),
                limit,
                EXPORT_PAGE_BYTES,
            )?;
            state(&mut reply, &page);
            reply.next = page
                .more
                .then(|| page.items.last().map(|d| d.id.clone()))
                .flatten();
            reply.documents = page
                .items
                .into_iter()
                .map(|d| ExportedDocument {
                    id: d.id,
                    hash: hex::encode(d.hash),
                    document: d.doc,
                })
                .collect();
        }
        ExportPart::Changes => {
            let after = match query.after.as_deref() {
                None => None,
                Some(text) => Some(stratosdb_chain_anchor::hex_hash(text).map_err(|why| {
                    BackendError::bad_request("invalid_request", format!("after: {why}"))
                })?),
            };
            let page = engine_shard.export_mark_changes(after.as_ref(), limit)?;
            state(&mut reply, &page);
            reply.next = page
                .more
                .then(|| page.items.last().map(|c| hex::encode(c.0)))
                .flatten();
            reply.changes = page
                .items
                .into_iter()
                .map(|(key, at_mark)| ExportedChange {
                    key_hash: hex::encode(key),
                    hash: at_mark.map(hex::encode),
                })
                .collect();
        }
    }
    Ok(reply)
}

fn state<T>(reply: &mut ShardExport, page: &ExportPage<T>) {
    reply.applied = page.applied_index;
    reply.root = hex::encode(page.root);
    reply.mark = page.mark.as_ref().map(mark_info);
}

fn mark_info(mark: &AnchorMark) -> MarkInfo {
    MarkInfo {
        epoch: mark.epoch,
        raft_index: mark.raft_index,
        root: hex::encode(mark.root),
    }
}
