//! `stratosdb audit`: checks what the database and its chain hold, prints
//! each item it checked with its verdict (`ok` or `FAILED: reason`), and
//! fails (exit status 1) if any item failed. One module per check:
//!
//! - `ledger`: a local ledger's whole hash chain, signatures and anchors;
//! - `data`: an embedded data folder's documents against its latest anchor;
//! - `proofs`: a saved reply with proofs against the anchors on the chain;
//! - `settlements`: a cluster's settled epochs against their receipts, the
//!   chain and the nodes' keys.

mod data;
mod ledger;
mod proofs;
mod settlements;

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct AuditArgs {
    /// A local ledger folder: its whole hash chain and signatures, and the
    /// anchors on it, by epoch.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// An embedded shell's data folder (closed): its ledger (DIR/ledger),
    /// and its shard root recomputed from its documents against the latest
    /// anchored leaf.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A saved reply with proofs (`"proof": true` on the API, the shell's
    /// `\proof`): every proof against the anchors read from the chain
    /// (`--ledger DIR`), a verdict per document.
    #[arg(long)]
    proofs: Option<PathBuf>,
    /// With --proofs: refuse unanchored proofs.
    #[arg(long, requires = "proofs")]
    require_anchored: bool,
    /// Every settled epoch of the cluster at --connect: rebuilt from the
    /// receipts its nodes serve, its signatures against the nodes' keys, and
    /// its entry on the chain (--ledger DIR).
    #[arg(long, requires = "connect")]
    settlements: bool,
    /// A node's API, http://HOST:PORT (with --settlements).
    #[arg(long)]
    connect: Option<String>,
    /// With --settlements: start at this epoch (the receipts of earlier
    /// ones may be on nodes that are gone).
    #[arg(long, default_value_t = 0, requires = "settlements")]
    from_epoch: u64,
    /// With --settlements on a Stratos cluster: the chain's EVM JSON-RPC URL.
    #[arg(long, conflicts_with = "ledger")]
    rpc: Option<String>,
    /// The Stratos chain's EVM chain id (with --rpc).
    #[arg(long, default_value_t = stratosdb_chain_anchor::stratos::STRATOS_CHAIN_ID)]
    chain_id: u64,
}

/// The verdicts so far.
pub struct Audit {
    failures: usize,
    checked: usize,
}

impl Audit {
    fn ok(&mut self, what: &str) {
        self.checked += 1;
        println!("ok      {what}");
    }

    fn failed(&mut self, what: &str, reason: &str) {
        self.checked += 1;
        self.failures += 1;
        println!("FAILED  {what}: {reason}");
    }

    /// A fact that is neither a pass nor a failure.
    fn note(&self, text: &str) {
        println!("        {text}");
    }

    /// A progress bar on standard error (hidden when it is not a terminal).
    fn progress(&self, total: u64, what: &str) -> ProgressBar {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        bar
    }
}

/// Runs the checks asked for; `Ok(false)` if any failed.
pub fn run(args: AuditArgs) -> anyhow::Result<bool> {
    if args.ledger.is_none() && args.data.is_none() && args.proofs.is_none() && !args.settlements {
        anyhow::bail!(
            "say what to audit: --ledger DIR, --data DIR, --proofs FILE and/or --settlements --connect URL"
        );
    }
    let mut audit = Audit {
        failures: 0,
        checked: 0,
    };
    if let Some(dir) = &args.ledger {
        ledger::check(&mut audit, dir, None);
    }
    if args.settlements
        && let Some(url) = &args.connect
    {
        settlements::check(
            &mut audit,
            url,
            args.from_epoch,
            args.ledger.as_deref(),
            args.rpc.as_deref().map(|rpc| (rpc, args.chain_id)),
        );
    }
    if let Some(dir) = &args.data {
        data::check(&mut audit, dir);
    }
    if let Some(file) = &args.proofs {
        proofs::check(
            &mut audit,
            file,
            args.ledger.as_deref(),
            args.require_anchored,
        );
    }
    if audit.failures == 0 {
        println!("audit passed: {} items checked", audit.checked);
    } else {
        println!(
            "audit FAILED: {} of {} items failed",
            audit.failures, audit.checked
        );
    }
    Ok(audit.failures == 0)
}
