//! `stratosdb`: the command-line entry point. Today it runs the SQL-like shell
//! on the embedded database; the cluster commands (`node`, `demo`, `audit`)
//! arrive with replication and chain anchoring.

mod shell;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// The SQL-like shell on an embedded database folder.
    Shell(ShellArgs),
}

#[derive(clap::Args)]
pub struct ShellArgs {
    /// The database folder (created if absent).
    #[arg(long, default_value = "./stratosdb-data")]
    data: PathBuf,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Shell(args) => shell::run(args),
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
