//! `stratosdb account`: an account's key file, its addresses and its balance
//! on a cluster (`docs/traffic.md`). The key never leaves its file: nothing
//! here prints or logs it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use stratosdb::client::Client;
use stratosdb_verifier::traffic::{Address, RequestSigner, wei};

#[derive(clap::Subcommand)]
pub enum AccountCommand {
    /// Creates a new account: a secp256k1 key in a new key file (mode 0600).
    New {
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Prints the account's address in both forms (0x… and st1…).
    Show {
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Prints an account's funds on a cluster.
    Balance {
        /// A node's API, http://HOST:PORT.
        #[arg(long)]
        connect: String,
        /// The account's key file (or give its ADDRESS).
        #[arg(long, conflicts_with = "address")]
        key_file: Option<PathBuf>,
        /// The account's address, 0x… or st1….
        #[arg(required_unless_present = "key_file")]
        address: Option<String>,
    },
    /// Deposits STOS for the account: on a local ledger, a deposit the
    /// account signs; on Stratos, a transfer to the cluster's settlement
    /// address (with --rpc), credited once included.
    Deposit {
        /// A node's API, http://HOST:PORT.
        #[arg(long)]
        connect: String,
        #[arg(long)]
        key_file: PathBuf,
        /// `1.5`, `1.5 STOS`, `42 wei`.
        amount: String,
        /// The Stratos chain's EVM JSON-RPC URL, for a cluster on Stratos
        /// (the transfer is sent there with the key file's account).
        #[arg(long)]
        rpc: Option<String>,
        /// The Stratos chain's EVM chain id.
        #[arg(long, default_value_t = stratosdb_chain_anchor::stratos::STRATOS_CHAIN_ID)]
        chain_id: u64,
    },
    /// Takes unspent STOS back: debited at once, then paid out on the chain
    /// (a ledger entry, or a transfer from the settlement address); waits
    /// until it is paid.
    Withdraw {
        /// A node's API, http://HOST:PORT.
        #[arg(long)]
        connect: String,
        #[arg(long)]
        key_file: PathBuf,
        /// `1.5`, `1.5 STOS`, `42 wei`.
        amount: String,
        /// Give up waiting for the payout after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

pub fn run(command: AccountCommand) -> anyhow::Result<()> {
    match command {
        AccountCommand::New { key_file } => {
            let signer = create_key_file(&key_file)?;
            println!("new account in {}", key_file.display());
            print_addresses(&signer.address());
            Ok(())
        }
        AccountCommand::Show { key_file } => {
            print_addresses(&load_signer(&key_file)?.address());
            Ok(())
        }
        AccountCommand::Balance {
            connect,
            key_file,
            address,
        } => {
            let address = match (key_file, address) {
                (Some(path), _) => load_signer(&path)?.address(),
                (None, Some(text)) => text
                    .parse::<Address>()
                    .map_err(|e| anyhow::anyhow!("{text:?} is not an address: {e}"))?,
                (None, None) => anyhow::bail!("give --key-file F or an ADDRESS"),
            };
            let account = Client::new(&connect)?
                .account(&address)
                .with_context(|| format!("reading the account from {connect}"))?;
            print_addresses(&address);
            let line = |name: &str, amount: u128| {
                println!(
                    "{name:<10} {:>30}  ({amount} wei)",
                    wei::format_stos(amount)
                );
            };
            line("available", account.available);
            line("deposited", account.deposited);
            line("reserved", account.reserved);
            line("spent", account.spent);
            line("withdrawn", account.withdrawn);
            line("earned", account.earned);
            Ok(())
        }
        AccountCommand::Withdraw {
            connect,
            key_file,
            amount,
            timeout,
        } => {
            let signer = load_signer(&key_file)?;
            let amount = wei::parse_amount(&amount)
                .map_err(|e| anyhow::anyhow!("{amount:?} is not an amount: {e}"))?;
            let client = Client::new(&connect)?.signing(signer.clone());
            let reply = client
                .withdraw(amount)
                .with_context(|| format!("withdrawing at {connect}"))?;
            println!(
                "withdrawal {} of {} ({amount} wei) debited; available {} wei; paying out...",
                reply.payout.id,
                wei::format_stos(amount),
                reply.account.available
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            loop {
                let paid = client
                    .payouts(&signer.address())?
                    .into_iter()
                    .find(|p| p.id == reply.payout.id)
                    .and_then(|p| p.reference);
                if let Some(reference) = paid {
                    println!("paid out to {}: {reference}", signer.address());
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "withdrawal {} is debited but not paid out after {timeout} s; \
                         the cluster keeps paying it (see GET /v1/payouts)",
                        reply.payout.id
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        AccountCommand::Deposit {
            connect,
            key_file,
            amount,
            rpc,
            chain_id,
        } => {
            let signer = load_signer(&key_file)?;
            let amount = wei::parse_amount(&amount)
                .map_err(|e| anyhow::anyhow!("{amount:?} is not an amount: {e}"))?;
            let client = Client::new(&connect)?;
            let prices = client
                .prices()
                .with_context(|| format!("reading the cluster's terms from {connect}"))?;
            let reply = match prices.settlement_address {
                None => client
                    .deposit_signed(&signer, amount)
                    .with_context(|| format!("depositing at {connect}"))?,
                Some(to) => {
                    let rpc = rpc.ok_or_else(|| {
                        anyhow::anyhow!(
                            "this cluster holds its STOS at {to} on the Stratos chain: give \
                             --rpc URL (and --chain-id N) to send the deposit there"
                        )
                    })?;
                    let chain = stratosdb_chain_anchor::StratosChain::connect(
                        &stratosdb_chain_anchor::StratosConfig {
                            rpc_url: rpc.clone(),
                            chain_id,
                            key_file: key_file.clone(),
                        },
                    )
                    .with_context(|| format!("connecting to the Stratos chain at {rpc}"))?;
                    use stratosdb_chain_anchor::Chain as _;
                    let reference = chain
                        .transfer(to, amount)
                        .with_context(|| format!("sending {amount} wei to {to}"))?;
                    println!("sent {amount} wei to {to}: {reference}");
                    client
                        .deposit_transfer(&signer.address(), &reference.to_string())
                        .with_context(|| format!("crediting {reference} at {connect}"))?
                }
            };
            println!(
                "deposited {} ({} wei) for {}: {}",
                wei::format_stos(reply.amount),
                reply.amount,
                signer.address(),
                reply.reference
            );
            println!(
                "available {} ({} wei)",
                wei::format_stos(reply.account.available),
                reply.account.available
            );
            Ok(())
        }
    }
}

fn print_addresses(address: &Address) {
    println!("address          {address}");
    println!("stratos address  {}", address.to_stratos());
}

/// Writes a new random key to `path` (which must not exist), mode 0600.
pub fn create_key_file(path: &Path) -> anyhow::Result<RequestSigner> {
    let (secret, signer) = loop {
        let secret: [u8; 32] = rand::random();
        // A random 32 bytes is a valid key but for about 2^-128 of them.
        if let Ok(signer) = RequestSigner::from_bytes(&secret) {
            break (secret, signer);
        }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write the key file {}", path.display()))?;
    Ok(signer)
}

/// Reads a key file: 64 hex digits (an optional `0x`), readable by its
/// owner only.
pub fn load_signer(path: &Path) -> anyhow::Result<RequestSigner> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot read the key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the key file {} can be read by others (mode {:o}): make it private with chmod 600",
                path.display(),
                mode & 0o777
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let digits = text.trim();
    let digits = digits.strip_prefix("0x").unwrap_or(digits);
    let secret: [u8; 32] = hex::decode(digits)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the key file {} does not hold a key (64 hex digits)",
                path.display()
            )
        })?;
    RequestSigner::from_bytes(&secret).map_err(|_| {
        anyhow::anyhow!(
            "the key file {} holds no valid secp256k1 key",
            path.display()
        )
    })
}
