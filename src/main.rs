//! `stratosdb`: the command-line entry point: the SQL-like shell (embedded,
//! or `--connect` to a node), a node serving the HTTP/JSON API, and the
//! cluster map, `demo`, a cluster on loopback shown end to end, and `audit`,
//! which checks a local ledger and an embedded data folder.

mod account_cmd;
mod audit;
mod demo;
mod node_cmd;
mod shell;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, not glibc's malloc: allocation was ~10% of a node's CPU under
/// writes (BENCHMARKS.md, "CPU per durable write").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stratosdb",
    version,
    about = "A decentralized NoSQL document database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A cluster of 4 nodes on loopback, end to end: load, query, lose a
    /// node, heal, check the roots.
    Demo(demo::DemoArgs),
    /// The SQL-like shell on an embedded database folder, or on a node (--connect).
    Shell(ShellArgs),
    /// One node: serves the HTTP/JSON API on its data folder.
    Node(Box<node_cmd::NodeArgs>),
    /// The cluster: `cluster status --connect URL` prints the cluster map.
    #[command(subcommand)]
    Cluster(node_cmd::ClusterCommand),
    /// STOS accounts: `account new|show|balance` (keys in key files).
    #[command(subcommand)]
    Account(account_cmd::AccountCommand),
    /// Checks a local ledger (--ledger DIR) or an embedded data folder
    /// (--data DIR); prints a verdict per item, fails if any item failed.
    Audit(audit::AuditArgs),
}

#[derive(clap::Args)]
pub struct ShellArgs {
    /// The database folder (created if absent).
    #[arg(long, default_value = "./stratosdb-data")]
    data: PathBuf,
    /// Run against the node at http://HOST:PORT instead of a data folder.
    #[arg(long, conflicts_with = "data")]
    connect: Option<String>,
    /// With --connect: the paying account's key file; every request is
    /// signed with it (a cluster without --dev refuses unsigned requests).
    #[arg(long, requires = "connect")]
    key_file: Option<PathBuf>,
    /// With --connect: keep every receipt (checked) in this file, one JSON
    /// per line.
    #[arg(long, requires = "connect")]
    receipts: Option<PathBuf>,
    /// With --connect: `\proof on` reads the anchors of proofs from this
    /// local ledger (the cluster's `--ledger`); without a chain, anchored
    /// proofs cannot be checked and are refused.
    #[arg(long, requires = "connect")]
    ledger: Option<PathBuf>,
    /// With --connect: `\proof on` reads anchors from the Stratos chain at
    /// this EVM JSON-RPC URL.
    #[arg(long, requires = "connect", conflicts_with = "ledger")]
    rpc: Option<String>,
    /// The Stratos chain's EVM chain id (with --rpc).
    #[arg(long, default_value_t = stratosdb_chain_anchor::stratos::STRATOS_CHAIN_ID)]
    chain_id: u64,
    /// Run these `;`-separated statements and exit.
    #[arg(short = 'c', long = "command")]
    command: Option<String>,
    /// How results are printed.
    #[arg(long, value_enum, default_value_t = shell::Format::Table)]
    format: shell::Format,
    /// Megabytes of sled's page cache, which is most of the shell's memory;
    /// lower it to keep the shell small (the default is the engine's).
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// How often an embedded folder anchors its root on its local ledger
    /// when something changed (`10s`, `500ms`, `1m`; `0` anchors only at exit).
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    anchor_interval: std::time::Duration,
}

/// `10s`, `500ms`, `2m`, or plain seconds.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s, 500ms or 1m"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("{text:?}: the unit is ms, s or m")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args).map(|()| true),
        Command::Shell(args) => shell::run(args),
        Command::Node(args) => node_cmd::run(*args).map(|()| true),
        Command::Cluster(command) => node_cmd::cluster(command).map(|()| true),
        Command::Audit(args) => audit::run(args),
        Command::Account(command) => account_cmd::run(command).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
