//! An embedded data folder: its ledger, every document re-hashed from its
//! stored bytes, and the shard root recomputed from them against the leaf of
//! the latest anchored epoch (`docs/chain.md`, "The embedded database's
//! anchors").

use std::ops::Bound;
use std::path::Path;

use stratosdb::embedded_anchor::{LEDGER_DIR, leaf, read_cluster_id};
use stratosdb_chain_anchor::{Hash, LedgerReport};
use stratosdb_engine::proof::EMPTY_ROOT;
use stratosdb_engine::{Engine, EngineConfig, Shard};

use super::Audit;
use super::rehash::Rehash;

pub fn check(audit: &mut Audit, dir: &Path) {
    let cluster = match read_cluster_id(dir) {
        Ok(cluster) => cluster,
        Err(e) => return audit.failed("the folder's cluster id", &e.to_string()),
    };
    let ledger_dir = dir.join(LEDGER_DIR);
    let report = match cluster {
        Some(id) => super::ledger::check(audit, &ledger_dir, Some(&id)),
        None => None,
    };
    let shard = match Engine::open(dir, EngineConfig::default()).and_then(|e| e.shard(0)) {
        Ok(shard) => shard,
        Err(e) => {
            return audit.failed(
                &format!("data folder {}", dir.display()),
                &format!("cannot open it (close the shell that has it open): {e}"),
            );
        }
    };
    let Some((root, documents, rehash)) = rehash_documents(audit, &shard) else {
        return;
    };
    compare_with_anchor(
        audit,
        report.as_ref(),
        cluster.as_ref(),
        root,
        documents,
        &rehash,
    );
}

/// Re-hashes every document from its stored bytes, naming each one whose
/// hash is not the one its record (and so the shard's trie) holds. Returns
/// the root over the re-hashed documents, their number and the re-hash.
fn rehash_documents(audit: &mut Audit, shard: &Shard) -> Option<(Hash, u64, Rehash)> {
    let collections = shard.collections();
    let total: u64 = collections
        .iter()
        .filter_map(|c| shard.collection(c).ok())
        .map(|info| info.count)
        .sum();
    let bar = audit.progress(total, "re-hashing documents");
    let mut rehash = Rehash::default();
    let mut unreadable = false;
    for name in &collections {
        let scan = match shard.scan(name, Bound::Unbounded, Bound::Unbounded, false) {
            Ok(scan) => scan,
            Err(e) => {
                audit.failed(&format!("collection {name}"), &e.to_string());
                unreadable = true;
                continue;
            }
        };
        for item in scan {
            bar.inc(1);
            let (id, doc) = match item {
                Ok(item) => item,
                Err(e) => {
                    bar.suspend(|| audit.failed(&format!("a document of {name}"), &e.to_string()));
                    unreadable = true;
                    continue;
                }
            };
            let recorded = shard
                .get_raw(name, &id)
                .ok()
                .flatten()
                .and_then(|raw| raw.hash().ok());
            rehash.add(name, &id, &doc, recorded);
        }
    }
    bar.finish_and_clear();
    if unreadable {
        audit.failed(
            "the shard root",
            "not recomputed: documents could not be read",
        );
        return None;
    }
    let count = rehash.hashes.len() as u64;
    rehash.report(
        audit,
        &format!("{count} documents in {} collections", collections.len()),
        "",
    );
    Some((Rehash::root(&rehash.hashes), count, rehash))
}

fn compare_with_anchor(
    audit: &mut Audit,
    report: Option<&LedgerReport>,
    cluster: Option<&Hash>,
    root: Hash,
    documents: u64,
    rehash: &Rehash,
) {
    let what = "the shard root recomputed from the documents";
    let latest = report.and_then(|r| {
        r.anchors
            .iter()
            .rfind(|a| Some(&a.payload.cluster_id) == cluster)
    });
    let Some(anchor) = latest else {
        if root == EMPTY_ROOT {
            audit.ok("the folder is empty and has no anchor");
        } else {
            audit.failed(what, "the folder holds documents but no anchor of them");
        }
        return;
    };
    let epoch = anchor.payload.epoch;
    let against = format!("the leaf anchored in epoch {epoch} ({})", anchor.reference);
    if leaf(epoch, root).hash() == anchor.payload.cluster_root {
        return audit.ok(&format!("{what} ({documents} documents) equals {against}"));
    }
    let why = rehash.why_different(
        &against,
        "the documents changed after it (a shell that did not exit cleanly) or were altered on disk together with their hashes",
    );
    audit.failed(what, &why);
}
