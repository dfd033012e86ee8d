//! A saved reply with proofs: each row's document and each absent `_id`
//! against the anchors the chain holds (`docs/chain.md`, "Verifiable reads").

use std::path::Path;

use stratosdb::verified::{Policy, audit_proofs};
use stratosdb_chain_anchor::{Chain, LedgerKey, LocalLedger};

use super::Audit;

pub fn check(audit: &mut Audit, file: &Path, ledger: Option<&Path>, require_anchored: bool) {
    let what = format!("proofs {}", file.display());
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return audit.failed(&what, &format!("cannot read it: {e}")),
    };
    let chain: Option<LocalLedger> = match ledger {
        None => None,
        // Opening creates a missing ledger: an audit must not.
        Some(dir) if !dir.join(stratosdb_chain_anchor::LOG_FILE).is_file() => {
            return audit.failed(&what, &format!("no ledger in {}", dir.display()));
        }
        // A throwaway key: the audit only reads, it never signs a block.
        Some(dir) => match LocalLedger::open(dir, LedgerKey::from_secret_bytes(rand::random())) {
            Ok(l) => Some(l),
            Err(e) => return audit.failed(&what, &format!("ledger {}: {e}", dir.display())),
        },
    };
    if chain.is_none() {
        audit.note("no chain given (--ledger DIR): anchored proofs cannot be checked");
    }
    let policy = Policy {
        require_anchored,
        ..Policy::default()
    };
    for line in audit_proofs(&text, chain.as_ref().map(|c| c as &dyn Chain), &policy) {
        match line.verdict {
            Ok(verdict) => audit.ok(&format!("{}: {verdict}", line.item)),
            Err(reason) => audit.failed(&line.item, &reason),
        }
    }
}
