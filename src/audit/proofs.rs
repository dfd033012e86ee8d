//! A saved reply with proofs: each row's document and each absent `_id`
//! against the anchors the chain holds (`docs/chain.md`, "Verifiable reads").

use std::path::Path;

use stratosdb::verified::{Policy, audit_proofs};
use stratosdb_chain_anchor::Chain;

use super::Audit;

pub fn check(audit: &mut Audit, file: &Path, chain: Option<&dyn Chain>, require_anchored: bool) {
    let what = format!("proofs {}", file.display());
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return audit.failed(&what, &format!("cannot read it: {e}")),
    };
    if chain.is_none() {
        audit.note(
            "no chain given (--ledger DIR or --chain stratos --rpc URL): anchored proofs cannot be checked",
        );
    }
    let policy = Policy {
        require_anchored,
        ..Policy::default()
    };
    for line in audit_proofs(&text, chain, &policy) {
        match line.verdict {
            Ok(verdict) => audit.ok(&format!("{}: {verdict}", line.item)),
            Err(reason) => audit.failed(&line.item, &reason),
        }
    }
}
