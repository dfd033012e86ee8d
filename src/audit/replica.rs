//! One replica of a running cluster's shard (`--connect URL --shard C/N`):
//! its documents, exported page by page from the replica itself, re-hashed;
//! its root as of its latest anchor mark rebuilt from them (and the keys
//! changed since the mark, with their hashes then) and compared with the
//! leaf of that epoch's anchor, which is read from the chain
//! (`docs/chain.md`, "Auditing a replica").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use stratosdb::api::{AnchorsQuery, ClusterMap, ExportPart, ExportQuery, MarkInfo, ShardExport};
use stratosdb::client::Client;
use stratosdb_chain_anchor::{Chain, ChainRef, Hash, ShardLeaf, cluster_root, hex_hash};
use stratosdb_verifier::leaves::sort_leaves;

use super::Audit;
use super::rehash::Rehash;

/// Exports tried before giving up when the shard's latest mark keeps
/// changing under the export (a new epoch while it runs).
const EXPORT_ATTEMPTS: u32 = 5;
/// How long the audit waits for the epoch of the replica's latest mark to
/// end (anchored, failed or skipped): it may still be being sealed.
const EPOCH_WAIT: Duration = Duration::from_secs(120);

/// What `--shard` names: a collection and a shard number.
fn parse_shard(spec: &str) -> Option<(&str, u32)> {
    let (collection, shard) = spec.rsplit_once('/')?;
    Some((collection, shard.parse().ok()?)).filter(|(c, _)| !c.is_empty())
}

pub fn check(audit: &mut Audit, url: &str, spec: &str, client: Client, chain: Option<&dyn Chain>) {
    let Some((collection, shard)) = parse_shard(spec) else {
        return audit.failed(
            &format!("--shard {spec}"),
            "name a shard as COLLECTION/NUMBER, e.g. users/0",
        );
    };
    let what = format!("shard {collection}/{shard}");
    let map = match client.cluster() {
        Ok(m) => m,
        Err(e) => return audit.failed(&what, &format!("reading the cluster map at {url}: {e}")),
    };
    let (node, replica) = match choose_replica(audit, &map, &client, collection, shard) {
        Ok(chosen) => chosen,
        Err(why) => return audit.failed(&what, &why),
    };
    // An export, and the anchored leaf of its mark's epoch; exported again
    // (a bounded number of times) after the next epoch when that one ended
    // without an anchor (failed or skipped).
    let mut attempts = 0;
    let (export, anchored) = loop {
        attempts += 1;
        let bar = audit.progress(0, "exporting the shard");
        let export = fetch(&replica, collection, shard, &mut |n| bar.set_position(n));
        bar.finish_and_clear();
        let export = match export {
            Ok(e) => e,
            Err(why) => {
                return audit.failed(&what, &format!("exporting it from node {node}: {why}"));
            }
        };
        let Some(epoch) = export.mark.as_ref().map(|m| m.epoch) else {
            break (export, None);
        };
        match anchored_leaf(audit, &client, chain, &map, collection, shard, epoch) {
            Err(LeafError::NotAnchored(why)) if attempts < EXPORT_ATTEMPTS => {
                audit.note(&format!("{why}: exporting again after the next epoch"));
                if let Err(why) = wait_final(&client, epoch + 1) {
                    break (export, Some(Err(why)));
                }
            }
            Err(LeafError::NotAnchored(why) | LeafError::Other(why)) => {
                break (export, Some(Err(why)));
            }
            Ok(found) => break (export, Some(Ok(found))),
        }
    };
    let where_ = format!(" (shard {collection}/{shard} on node {node})");
    let rehash = &export.rehash;
    rehash.report(
        audit,
        &format!(
            "{} documents of {collection}/{shard} exported from node {node}",
            export.documents
        ),
        &where_,
    );
    compare_current(audit, &what, &node, &export);
    let (Some(mark), Some(anchored)) = (export.mark.clone(), anchored) else {
        return audit.failed(
            &what,
            &format!("node {node}'s replica has no anchor mark yet: nothing of it was anchored"),
        );
    };
    // The state at the mark: each changed key's hash then, every other's now.
    let mut at_mark = rehash.hashes.clone();
    for (key, hash) in &export.changes {
        match hash {
            Some(h) => at_mark.insert(*key, *h),
            None => at_mark.remove(key),
        };
    }
    let mark_root = Rehash::root(&at_mark);
    let anchored = match anchored {
        Ok(found) => found,
        Err(why) => {
            return audit.failed(&format!("{what}: the leaf of epoch {}", mark.epoch), &why);
        }
    };
    let (leaf, reference) = anchored;
    let subject = format!(
        "{what} on node {node}: its root as of its mark for epoch {} (raft index {}), rebuilt from {} documents and {} keys changed since",
        mark.epoch,
        mark.raft_index,
        export.documents,
        export.changes.len()
    );
    let against = format!(
        "the leaf anchored in epoch {} at {reference} (raft index {})",
        mark.epoch, leaf.raft_index
    );
    // What the replica itself recorded for the mark (from its trie, built
    // from the recorded hashes) against the anchored leaf.
    let own = format!(
        "{what} on node {node}: its own mark for epoch {} (raft index {}, root {})",
        mark.epoch, mark.raft_index, mark.root
    );
    if leaf.raft_index != mark.raft_index || hex::encode(leaf.root) != mark.root {
        audit.failed(
            &own,
            &format!("is not {against}, root {}", hex::encode(leaf.root)),
        );
    } else {
        audit.ok(&format!("{own} is {against}"));
    }
    if leaf.raft_index != mark.raft_index {
        return;
    }
    if leaf.root == mark_root {
        audit.ok(&format!("{subject}, equals {against}"));
    } else {
        audit.failed(
            &subject,
            &rehash.why_different(
                &against,
                "no document differs from its recorded hash: documents were altered on disk together with their hashes, or the replica's records of the keys changed since the mark are false",
            ),
        );
    }
}

/// The replica audited: the one on the node at the URL if it has one (what
/// the auditor asked for: that node's copy), else the first replica of the
/// map on a node that is up. Its node id and a client of that node.
fn choose_replica(
    audit: &Audit,
    map: &ClusterMap,
    client: &Client,
    collection: &str,
    shard: u32,
) -> Result<(String, Client), String> {
    let info = map
        .shards
        .iter()
        .find(|s| s.collection == collection && s.shard == shard)
        .ok_or_else(|| format!("the cluster map has no shard {shard} of {collection:?}"))?;
    if info.replicas.iter().any(|r| r.node == map.self_id) {
        audit.note(&format!(
            "the replica on node {} (the node at {}, which hosts one)",
            map.self_id,
            client.url()
        ));
        return Ok((map.self_id.clone(), client.clone()));
    }
    for replica in &info.replicas {
        let Some(node) = map.nodes.iter().find(|n| n.id == replica.node && n.up) else {
            continue;
        };
        if let Ok(c) = Client::new(&node.http) {
            audit.note(&format!(
                "the replica on node {} at {} (the node at {} holds none; the map's first replica on a node that is up)",
                node.id,
                c.url(),
                client.url()
            ));
            return Ok((node.id.clone(), c));
        }
    }
    Err("no node that is up holds a replica of it".into())
}

/// A whole export, read under one anchor mark: its documents re-hashed as
/// they came (a page at a time, so the audit holds two hashes a document,
/// not the documents).
struct Export {
    mark: Option<MarkInfo>,
    documents: u64,
    rehash: Rehash,
    /// Key hash → the document hash at the mark (`None`: absent then).
    changes: BTreeMap<Hash, Option<Hash>>,
    /// The replica's applied index and root on each page of documents.
    states: Vec<(u64, String)>,
}

/// Exports the documents, then the keys changed since the mark. Reading the
/// changes after the documents makes the state at the mark exact even while
/// the shard is written to: a key changed after its page was read is among
/// the changes, with its hash at the mark; one changed later was read as it
/// was at the mark. The mark must stay the same throughout (each page is
/// read in one state and says its mark; marks only move forward), or the
/// export starts again.
fn fetch(
    client: &Client,
    collection: &str,
    shard: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<Export, String> {
    for _ in 0..EXPORT_ATTEMPTS {
        let mut export = Export {
            mark: None,
            documents: 0,
            rehash: Rehash::default(),
            changes: BTreeMap::new(),
            states: Vec::new(),
        };
        let mut first = true;
        let mut same_mark = |page: &ShardExport, export: &mut Export| {
            if std::mem::take(&mut first) {
                export.mark = page.mark.clone();
            }
            export.mark == page.mark
        };
        let mut steady = true;
        for part in [ExportPart::Documents, ExportPart::Changes] {
            let mut after = None;
            loop {
                let query = ExportQuery {
                    part,
                    after: after.take(),
                    limit: None,
                };
                let page = client
                    .shard_export(collection, shard, &query)
                    .map_err(|e| e.to_string())?;
                if !same_mark(&page, &mut export) {
                    steady = false;
                    break;
                }
                if part == ExportPart::Documents {
                    export.states.push((page.applied, page.root.clone()));
                }
                for c in &page.changes {
                    let key = hex_hash(&c.key_hash).map_err(|e| format!("a change: {e}"))?;
                    let hash = match &c.hash {
                        Some(h) => Some(hex_hash(h).map_err(|e| format!("a change: {e}"))?),
                        None => None,
                    };
                    export.changes.insert(key, hash);
                }
                for d in &page.documents {
                    let recorded = hex_hash(&d.hash).ok();
                    export.rehash.add(collection, &d.id, &d.document, recorded);
                }
                export.documents += page.documents.len() as u64;
                progress(export.documents);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if !steady {
                break;
            }
        }
        if steady {
            return Ok(export);
        }
    }
    Err(format!(
        "its latest anchor mark changed during each of {EXPORT_ATTEMPTS} exports"
    ))
}

/// The root over the documents as they are now against the root the
/// replica states, when nothing was written during the export.
fn compare_current(audit: &mut Audit, what: &str, node: &str, export: &Export) {
    let rehash = &export.rehash;
    let (Some(first), Some(last)) = (export.states.first(), export.states.last()) else {
        return;
    };
    if first.0 != last.0 {
        audit.note(&format!(
            "{what} was written to during the export (raft index {} to {}): its current root is not compared",
            first.0, last.0
        ));
        return;
    }
    let subject = format!(
        "{what} on node {node}: its current root at raft index {}, recomputed from its documents",
        last.0
    );
    let root = hex::encode(Rehash::root(&rehash.hashes));
    if root == last.1 {
        audit.ok(&format!("{subject}, equals the root the replica states"));
    } else {
        audit.failed(
            &subject,
            &rehash.why_different(
                &format!("the root the replica states, {}", last.1),
                "no document differs from its recorded hash",
            ),
        );
    }
}

/// Why an epoch's leaf is not there to compare with.
enum LeafError {
    /// The epoch ended failed or skipped: its marks were never anchored.
    NotAnchored(String),
    Other(String),
}

/// The record of `epoch` once it is final (anchored, failed or skipped),
/// waiting at most [`EPOCH_WAIT`] (it may still be sealing or submitted).
fn wait_final(client: &Client, epoch: u64) -> Result<stratosdb::api::AnchorInfo, String> {
    let deadline = Instant::now() + EPOCH_WAIT;
    loop {
        let reply = client.anchors(AnchorsQuery {
            limit: None,
            epoch: Some(epoch),
        });
        let record = match reply {
            Ok(reply) => reply.anchors.into_iter().find(|a| a.epoch == epoch),
            // Not started yet.
            Err(e) if e.code() == Some("epoch_not_found") => None,
            Err(e) => return Err(format!("reading epoch {epoch}'s record: {e}")),
        };
        match record {
            Some(r) if matches!(r.status.as_str(), "anchored" | "failed" | "skipped") => {
                return Ok(r);
            }
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "epoch {epoch} did not end within {}s",
                    EPOCH_WAIT.as_secs()
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// The leaf of `collection/shard` in epoch `epoch`, once the epoch is
/// anchored, and the anchor's reference. The leaves come from the node's
/// record of the epoch; with a chain, they must fold into the cluster root
/// the chain holds at the record's reference (of this cluster and epoch,
/// with as many leaves), so a node cannot make one up.
fn anchored_leaf(
    audit: &Audit,
    client: &Client,
    chain: Option<&dyn Chain>,
    map: &ClusterMap,
    collection: &str,
    shard: u32,
    epoch: u64,
) -> Result<(ShardLeaf, String), LeafError> {
    let record = wait_final(client, epoch).map_err(LeafError::Other)?;
    if record.status != "anchored" {
        return Err(LeafError::NotAnchored(format!(
            "epoch {epoch} of the replica's latest mark ended {} ({})",
            record.status,
            record.reason.unwrap_or_default()
        )));
    }
    let other = LeafError::Other;
    let reference = record.reference.ok_or_else(|| {
        other(format!(
            "epoch {epoch} is anchored without a chain reference"
        ))
    })?;
    let mut leaves = Vec::with_capacity(record.leaves.len());
    for l in &record.leaves {
        leaves.push(ShardLeaf {
            collection: l.collection.clone(),
            shard: l.shard,
            raft_index: l.raft_index,
            root: hex_hash(&l.root).map_err(|e| other(format!("a leaf's root: {e}")))?,
        });
    }
    sort_leaves(&mut leaves);
    match chain {
        Some(chain) => check_on_chain(chain, map, &reference, epoch, &leaves).map_err(other)?,
        None => audit.note(&format!(
            "no chain given (--ledger DIR or --chain stratos --rpc URL): the leaf is the node's record of epoch {epoch}, not checked on the chain"
        )),
    }
    let leaf = leaves
        .into_iter()
        .find(|l| l.collection == collection && l.shard == shard)
        .ok_or_else(|| {
            other(format!(
                "epoch {epoch} anchored no leaf of {collection}/{shard}"
            ))
        })?;
    Ok((leaf, reference))
}

fn check_on_chain(
    chain: &dyn Chain,
    map: &ClusterMap,
    reference: &str,
    epoch: u64,
    leaves: &[ShardLeaf],
) -> Result<(), String> {
    let parsed: ChainRef = reference
        .parse()
        .map_err(|e| format!("epoch {epoch}'s reference {reference}: {e}"))?;
    let anchor = chain
        .read_anchor(&parsed)
        .map_err(|e| format!("reading {reference} on the chain: {e}"))?;
    let payload = anchor.payload;
    if map.cluster_id.as_deref() != Some(hex::encode(payload.cluster_id).as_str()) {
        return Err(format!(
            "the anchor at {reference} is of cluster {}, not this cluster",
            hex::encode(payload.cluster_id)
        ));
    }
    if payload.epoch != epoch {
        return Err(format!(
            "the anchor at {reference} is of epoch {}, not {epoch}",
            payload.epoch
        ));
    }
    if payload.leaf_count as usize != leaves.len() || cluster_root(leaves) != payload.cluster_root {
        return Err(format!(
            "the node's {} leaves of epoch {epoch} do not fold into the cluster root anchored at {reference} ({} leaves)",
            leaves.len(),
            payload.leaf_count
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shard_names() {
        assert_eq!(super::parse_shard("users/2"), Some(("users", 2)));
        assert_eq!(super::parse_shard("a/b/0"), Some(("a/b", 0)));
        assert_eq!(super::parse_shard("users"), None);
        assert_eq!(super::parse_shard("/1"), None);
        assert_eq!(super::parse_shard("users/x"), None);
    }
}
