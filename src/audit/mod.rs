//! `stratosdb audit`: checks what the database and its chain hold, prints
//! each item it checked with its verdict (`ok` or `FAILED: reason`), and
//! fails (exit status 1) if any item failed. One module per check:
//!
//! - `ledger`: a local ledger's whole hash chain, signatures and anchors;
//! - `data`: an embedded data folder's documents against its latest anchor;
//! - `replica`: one replica of a running cluster's shard against the leaf
//!   anchored for its latest mark;
//! - `rehash`: documents re-hashed from their bytes (`data` and `replica`);
//! - `proofs`: a saved reply with proofs against the anchors on the chain;
//! - `settlements`: a cluster's settled epochs against their receipts, the
//!   chain and the nodes' keys.

mod data;
mod ledger;
mod proofs;
mod rehash;
mod replica;
mod settlements;

use std::path::{Path, PathBuf};

use stratosdb::verified::open_chain_reader;
use stratosdb_chain_anchor::Chain;

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
    /// A node's API, http://HOST:PORT (with --settlements or --shard).
    #[arg(long)]
    connect: Option<String>,
    /// With --connect: the shard COLLECTION/NUMBER (e.g. users/0) of the
    /// replica on the node at --connect (or, if it holds none, of the first
    /// replica that is up): its root, recomputed from its documents, against
    /// the leaf anchored for its latest mark, read from the chain.
    #[arg(long, requires = "connect")]
    shard: Option<String>,
    /// With --shard or --settlements: the paying account's key file; the
    /// requests are signed with it (a cluster without --dev refuses
    /// unsigned ones).
    #[arg(long, requires = "connect")]
    key_file: Option<PathBuf>,
    /// Where anchors are read from: `local` (the ledger at --ledger DIR) or
    /// `stratos` (--rpc URL, --chain-id N). By default, the one whose
    /// option is given.
    #[arg(long, value_parser = ["local", "stratos"])]
    chain: Option<String>,
    /// With --settlements: start at this epoch (the receipts of earlier
    /// ones may be on nodes that are gone).
    #[arg(long, default_value_t = 0, requires = "settlements")]
    from_epoch: u64,
    /// The Stratos chain's EVM JSON-RPC URL (anchors and settlements are
    /// read from it).
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

/// The chain anchors are read from (`None`: none given); the audit only
/// reads.
fn open_chain(args: &AuditArgs) -> Result<Option<Box<dyn Chain>>, String> {
    let kind = match (&args.chain, &args.ledger, &args.rpc) {
        (Some(kind), _, _) => kind.as_str(),
        (None, _, Some(_)) => "stratos",
        (None, Some(_), None) => "local",
        (None, None, None) => return Ok(None),
    };
    if kind == "stratos" {
        let rpc = args
            .rpc
            .as_deref()
            .ok_or("--chain stratos needs --rpc URL (and --chain-id N)")?;
        return open_chain_reader(None, Some((rpc, args.chain_id)));
    }
    let dir = args
        .ledger
        .as_deref()
        .ok_or("--chain local needs --ledger DIR")?;
    open_chain_reader(Some(dir), None)
}

/// A client of the node at `url`, signing with `--key-file` if given.
fn client(url: &str, key_file: Option<&Path>) -> anyhow::Result<stratosdb::client::Client> {
    let mut client = stratosdb::client::Client::new(url)?;
    if let Some(path) = key_file {
        client = client.signing(crate::account_cmd::load_signer(path)?);
    }
    Ok(client)
}

/// Runs the checks asked for; `Ok(false)` if any failed.
pub fn run(args: AuditArgs) -> anyhow::Result<bool> {
    if args.ledger.is_none()
        && args.data.is_none()
        && args.proofs.is_none()
        && !args.settlements
        && args.shard.is_none()
    {
        anyhow::bail!(
            "say what to audit: --ledger DIR, --data DIR, --proofs FILE, --connect URL --shard C/N and/or --settlements --connect URL"
        );
    }
    let mut audit = Audit {
        failures: 0,
        checked: 0,
    };
    if let Some(dir) = &args.ledger {
        ledger::check(&mut audit, dir, None);
    }
    let chain = match open_chain(&args) {
        Ok(chain) => chain,
        Err(why) => {
            audit.failed("the chain", &why);
            None
        }
    };
    let chain = chain.as_deref();
    if let Some(url) = &args.connect {
        let client = client(url, args.key_file.as_deref())?;
        if let Some(spec) = &args.shard {
            replica::check(&mut audit, url, spec, client.clone(), chain);
        }
        if args.settlements {
            settlements::check(&mut audit, url, client, args.from_epoch, chain);
        }
    }
    if let Some(dir) = &args.data {
        data::check(&mut audit, dir);
    }
    if let Some(file) = &args.proofs {
        proofs::check(&mut audit, file, chain, args.require_anchored);
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
