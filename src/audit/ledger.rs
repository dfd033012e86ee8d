//! The local ledger: every record, hash link, timestamp and signature, then
//! the anchors on it by epoch.

use std::path::Path;

use stratosdb_chain_anchor::{Hash, LedgerReport, verify_ledger};

use super::Audit;

/// Checks the ledger in `dir` and lists its anchors (only those of
/// `cluster`, if given). `None` if it could not be read at all.
pub fn check(audit: &mut Audit, dir: &Path, cluster: Option<&Hash>) -> Option<LedgerReport> {
    let what = format!("ledger {}", dir.display());
    let bar = audit.progress(0, "checking the ledger (bytes)");
    let result = verify_ledger(dir, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            audit.failed(&what, &e.to_string());
            return None;
        }
    };
    let signers = report.signers.len();
    match &report.broken {
        None => audit.ok(&format!(
            "{what}: {} blocks, their records, hash chain, timestamps and signatures ({signers} signing key{})",
            report.blocks,
            if signers == 1 { "" } else { "s" }
        )),
        Some(e) => audit.failed(
            &what,
            &format!("{e} (the {} blocks before it check out)", report.blocks),
        ),
    }
    if report.torn_bytes > 0 {
        audit.note(&format!(
            "{} bytes at the end are an append cut short by a crash (never acknowledged; the next append removes them)",
            report.torn_bytes
        ));
    }
    for (height, problem) in &report.anchor_problems {
        audit.failed(&format!("anchor in ledger block {height}"), problem);
    }
    for anchor in &report.anchors {
        let p = &anchor.payload;
        if cluster.is_some_and(|c| c != &p.cluster_id) {
            continue;
        }
        audit.ok(&format!(
            "epoch {} of cluster {}: cluster root {}, {} leaves, at {}",
            p.epoch,
            &hex::encode(p.cluster_id)[..16],
            hex::encode(p.cluster_root),
            p.leaf_count,
            anchor.reference
        ));
    }
    Some(report)
}
