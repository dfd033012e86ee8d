//! `stratosdb node` and `stratosdb cluster status`: the command-line edge of
//! the node (flags, the data folder, signals) and of the cluster map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use stratosdb::client::Client;
use stratosdb::node::cluster::{ClusterBackend, ClusterConfig, show_id};
use stratosdb::node::{self, ApiConfig};
use stratosdb_engine::EngineConfig;

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The node's data folder (created if absent).
    #[arg(long)]
    data: PathBuf,
    /// Where the HTTP/JSON API listens, HOST:PORT (port 0: any free port;
    /// the first line of stdout tells which).
    #[arg(long)]
    http: String,
    /// Where the node talks to its peers, HOST:PORT.
    #[arg(long)]
    p2p: Option<String>,
    /// The founding members' p2p addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Join the cluster of the node at HOST:PORT (with --token).
    #[arg(long, requires = "token")]
    join: Option<String>,
    /// The cluster's join token (printed at bootstrap).
    #[arg(long)]
    token: Option<String>,
    /// The node's zone (replicas of a shard are spread over zones).
    #[arg(long)]
    zone: Option<String>,
    /// Marks a development cluster.
    #[arg(long)]
    dev: bool,
    /// Largest request body the API accepts, in bytes.
    #[arg(long, default_value_t = node::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Megabytes of sled's page cache.
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// FOR TESTS ONLY, never in production: enables `POST /v1/admin/faults`,
    /// with which anyone who reaches the API can cut this node off from
    /// chosen peers (to partition processes on one machine).
    #[arg(long)]
    fault_injection: bool,
}

/// Runs a node until Ctrl-C or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    init_logging();
    let _ = args.dev;
    let engine = EngineConfig {
        cache_bytes: args.cache_mb.saturating_mul(1 << 20),
        ..EngineConfig::default()
    };
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create the data folder {}", args.data.display()))?;
    let join = match (&args.join, &args.token) {
        (Some(at), Some(token)) => Some((at.clone(), token.clone())),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.http)
            .await
            .with_context(|| format!("cannot listen on {}", args.http))?;
        let address: SocketAddr = listener.local_addr()?;
        let config = ClusterConfig {
            data: args.data.clone(),
            p2p: args
                .p2p
                .clone()
                .unwrap_or_else(|| "127.0.0.1:0".to_string()),
            http: address.to_string(),
            peers: args.peers.clone(),
            join,
            zone: args.zone.clone(),
            engine,
        };
        let backend = tokio::task::spawn_blocking(move || ClusterBackend::start(config))
            .await
            .context("starting the node")?
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot start the node in {}", args.data.display()))?;
        let node = backend.node().clone();
        let id = show_id(node.id);
        // The first line of stdout: tests and scripts read the address here.
        println!("stratosdb node {id} listening on http://{address}");
        node.announced();
        eprintln!(
            "p2p {} (PeerId {}); data in {}",
            node.p2p_address(),
            node.transport.peer_id(),
            args.data.display()
        );
        if args.fault_injection {
            tracing::warn!(
                "--fault-injection is on: POST /v1/admin/faults can cut this node off from \
                 its peers; this is for tests only, never run it in production"
            );
        }
        let api = ApiConfig {
            body_limit: args.body_limit,
            faults: args.fault_injection.then(|| node.transport.fault_switch()),
        };
        let watched = node.clone();
        let failed = async move {
            loop {
                if let Some(why) = watched.failure() {
                    return why;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<String>();
        let stop = async move {
            tokio::select! {
                _ = stop_signal() => {}
                why = failed => { let _ = stop_tx.send(why); }
            }
        };
        node::serve(listener, Arc::new(backend), &api, stop).await?;
        if let Ok(why) = stop_rx.await {
            anyhow::bail!("stratosdb node {id} cannot serve: {why}");
        }
        eprintln!("stratosdb node {id} stopped; data flushed");
        Ok(())
    })
}

/// Logs to stderr; `RUST_LOG` chooses what (default: warnings and errors).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Prints the cluster map: nodes, collections, shards and their replicas.
    Status {
        /// A node's API, http://HOST:PORT.
        #[arg(long)]
        connect: String,
    },
}

pub fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status { connect } = command;
    let client = Client::new(&connect)?;
    let map = client
        .cluster()
        .with_context(|| format!("asking {connect} for the cluster map"))?;
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_string());
    let mut nodes = table(&["node", "http", "p2p", "zone", "up"]);
    for n in &map.nodes {
        let mut id = n.id.clone();
        if n.id == map.self_id {
            id.push_str(" (self)");
        }
        nodes.add_row(vec![
            id,
            n.http.clone(),
            dash(&n.p2p),
            dash(&n.zone),
            if n.up { "yes" } else { "no" }.to_string(),
        ]);
    }
    println!("{nodes}");
    let mut shards = table(&[
        "collection",
        "shard",
        "leader",
        "replica",
        "applied",
        "root",
    ]);
    for s in &map.shards {
        for r in &s.replicas {
            shards.add_row(vec![
                s.collection.clone(),
                s.shard.to_string(),
                dash(&s.leader),
                r.node.clone(),
                r.applied.to_string(),
                r.root.clone(),
            ]);
        }
    }
    println!("{shards}");
    let n = map.collections.len();
    println!(
        "({} node{}, {n} collection{})",
        map.nodes.len(),
        if map.nodes.len() == 1 { "" } else { "s" },
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}
