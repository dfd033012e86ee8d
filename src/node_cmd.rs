//! `stratosdb node` and `stratosdb cluster status|remove-node`: the
//! command-line edge of the node (flags, the data folder, signals) and of
//! the cluster map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use stratosdb::client::Client;
use stratosdb::node::cluster::{AnchorConfig, Bootstrap, ClusterBackend, ClusterConfig, show_id};
use stratosdb::node::traffic::{self, Traffic, TrafficConfig};
use stratosdb::node::{self, ApiConfig};
use stratosdb_engine::EngineConfig;
use stratosdb_verifier::traffic::Prices;

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
    /// Marks a development cluster: unsigned requests are served, billed to
    /// the dev account (0x…dE00).
    #[arg(long)]
    dev: bool,
    /// What the dev account is funded with when the cluster is founded
    /// (with --dev): `1000000`, `2.5 STOS`, `42 wei`.
    #[arg(long, requires = "dev", value_parser = parse_amount)]
    dev_funds: Option<u128>,
    /// The price of a KiB served, set when the cluster is founded (later
    /// nodes read it from the cluster): `0.000001`, `1000000000000 wei`.
    #[arg(long, value_parser = parse_amount)]
    price_per_kib: Option<u128>,
    /// The price of a document read or written, set when the cluster is
    /// founded.
    #[arg(long, value_parser = parse_amount)]
    price_per_document: Option<u128>,
    /// How far a signed request's timestamp may be from the node's clock:
    /// 30s, 2m.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    request_window: std::time::Duration,
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
    /// How long a member may not answer before it is marked down and its
    /// replicas are rebuilt elsewhere: 500ms, 5s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    down_after: std::time::Duration,
    /// How often the cluster anchors an epoch on the chain: 500ms, 10s, 2m,
    /// or `off`.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    anchor_interval: Interval,
    /// Whether a shard's leadership moves to the node where most of the
    /// shard's requests arrive, which saves them a hop: `on` or `off`.
    #[arg(long, default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    follow_workload: bool,
    /// The chain the anchors go to.
    #[arg(long, value_enum, default_value_t = ChainKind::Local)]
    chain: ChainKind,
    /// The local ledger's folder (default DATA/ledger; nodes may share one).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// The Stratos chain's EVM JSON-RPC URL (with --chain stratos).
    #[arg(long)]
    rpc: Option<String>,
    /// The Stratos chain's EVM chain id (2048 on mainnet).
    #[arg(long)]
    chain_id: Option<u64>,
    /// The file with the key that signs anchor transactions (--chain stratos).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

/// Which chain `--chain` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChainKind {
    /// The embedded local ledger (a folder).
    Local,
    /// The Stratos chain over EVM JSON-RPC.
    Stratos,
}

/// An amount of STOS: `1.5`, `1.5 STOS`, `42 wei`.
fn parse_amount(text: &str) -> Result<u128, String> {
    stratosdb_verifier::traffic::wei::parse_amount(text).map_err(|e| e.to_string())
}

/// `--anchor-interval`: a duration, or `None` for `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interval(Option<std::time::Duration>);

fn parse_interval(text: &str) -> Result<Interval, String> {
    if text.trim() == "off" {
        return Ok(Interval(None));
    }
    parse_duration(text).map(|d| Interval(Some(d)))
}

/// `on` or `off`.
fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?}: say on or off")),
    }
}

/// `500ms`, `5s`, `2m`: a whole number and a unit.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s or m)"))?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    if millis == 0 {
        return Err("the duration must be above zero".into());
    }
    Ok(std::time::Duration::from_millis(millis))
}

/// Runs a node until Ctrl-C or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    init_logging();
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
    // The chain takes anchors and holds deposits: opened even with
    // anchoring off.
    let chain = open_chain(&args)?;
    let anchor = args.anchor_interval.0.map(|interval| AnchorConfig {
        interval,
        chain: chain.clone(),
    });
    let prices = Prices {
        wei_per_kib: args
            .price_per_kib
            .unwrap_or(traffic::DEFAULT_PRICES.wei_per_kib),
        wei_per_document: args
            .price_per_document
            .unwrap_or(traffic::DEFAULT_PRICES.wei_per_document),
    };
    let dev_funds = args
        .dev
        .then(|| args.dev_funds.unwrap_or(traffic::DEFAULT_DEV_FUNDS));
    let bootstrap = Bootstrap {
        collection: traffic::accounts::TRAFFIC_COLLECTION.to_string(),
        command: Traffic::bootstrap_command(&prices, dev_funds),
    };
    let traffic_config = TrafficConfig {
        dev: args.dev,
        window: args.request_window,
        chain,
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
            down_after: args.down_after,
            anchor,
            bootstrap: Some(bootstrap),
            follow_workload: args.follow_workload,
        };
        let backend = tokio::task::spawn_blocking(move || ClusterBackend::start(config))
            .await
            .context("starting the node")?
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot start the node in {}", args.data.display()))?;
        let node = backend.node().clone();
        let data = args.data.clone();
        let started = node.clone();
        let traffic =
            tokio::task::spawn_blocking(move || Traffic::start(started, &data, traffic_config))
                .await
                .context("starting the node")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
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
            traffic: Some(traffic.clone()),
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
        traffic.stop();
        if let Ok(why) = stop_rx.await {
            anyhow::bail!("stratosdb node {id} cannot serve: {why}");
        }
        eprintln!("stratosdb node {id} stopped; data flushed");
        Ok(())
    })
}

/// The chain `--chain` names, opened.
fn open_chain(args: &NodeArgs) -> anyhow::Result<Arc<dyn stratosdb_chain_anchor::Chain>> {
    match args.chain {
        ChainKind::Local => {
            let folder = args
                .ledger
                .clone()
                .unwrap_or_else(|| args.data.join("ledger"));
            let secret = stratosdb_replication::p2p::node_secret_key(&args.data.join("p2p"))
                .context("reading the node's key")?;
            let key = stratosdb_chain_anchor::LedgerKey::from_secret_bytes(secret);
            let ledger = stratosdb_chain_anchor::LocalLedger::open(&folder, key)
                .with_context(|| format!("opening the ledger in {}", folder.display()))?;
            Ok(Arc::new(ledger))
        }
        ChainKind::Stratos => {
            let missing = |flag: &str| anyhow::anyhow!("--chain stratos needs {flag}");
            let config = stratosdb_chain_anchor::StratosConfig {
                rpc_url: args.rpc.clone().ok_or_else(|| missing("--rpc URL"))?,
                chain_id: args.chain_id.ok_or_else(|| missing("--chain-id N"))?,
                key_file: args
                    .key_file
                    .clone()
                    .ok_or_else(|| missing("--key-file F"))?,
            };
            let chain =
                stratosdb_chain_anchor::StratosChain::connect(&config).with_context(|| {
                    format!("connecting to the Stratos chain at {}", config.rpc_url)
                })?;
            Ok(Arc::new(chain))
        }
    }
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
    /// Drains a node (its replicas move to the others) and removes it from
    /// the cluster; waits until it is gone, printing progress.
    RemoveNode {
        /// The node's id, as `cluster status` shows it.
        id: String,
        /// A node's API, http://HOST:PORT (not the node being removed).
        #[arg(long)]
        connect: String,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

pub fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { connect } => status(&connect),
        ClusterCommand::RemoveNode {
            id,
            connect,
            timeout,
        } => remove_node(&id, &connect, std::time::Duration::from_secs(timeout)),
    }
}

fn remove_node(id: &str, connect: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    let client = Client::new(connect)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let reply = client
            .remove_node(id)
            .with_context(|| format!("asking {connect} to remove node {id}"))?;
        if reply.state == "removed" {
            println!("node {} removed from the cluster", reply.node);
            return Ok(());
        }
        let moving = client.cluster().map(|m| m.moves).unwrap_or_default();
        let mut line = format!(
            "node {} {}: {} replica(s) left",
            reply.node, reply.state, reply.replicas
        );
        for m in moving
            .iter()
            .filter(|m| m.from.as_deref() == Some(&reply.node))
        {
            line.push_str(&format!(
                "; {}/{} -> {} {} {}/{}",
                m.collection, m.shard, m.to, m.phase, m.applied, m.target
            ));
        }
        if line != last {
            println!("{line}");
            last = line;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("node {id} was not removed within {timeout:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn status(connect: &str) -> anyhow::Result<()> {
    let client = Client::new(connect)?;
    let map = client
        .cluster()
        .with_context(|| format!("asking {connect} for the cluster map"))?;
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_string());
    let mut nodes = table(&["node", "http", "p2p", "zone", "up", "state"]);
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
            n.state.clone(),
        ]);
    }
    println!("{nodes}");
    let mut shards = table(&[
        "collection",
        "shard",
        "leader",
        "replica",
        "role",
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
                r.role.clone(),
                r.applied.to_string(),
                r.root.clone(),
            ]);
        }
    }
    println!("{shards}");
    if !map.moves.is_empty() {
        let mut moves = table(&["collection", "shard", "from", "to", "phase", "progress"]);
        for m in &map.moves {
            moves.add_row(vec![
                m.collection.clone(),
                m.shard.to_string(),
                dash(&m.from),
                m.to.clone(),
                m.phase.clone(),
                move_progress(m),
            ]);
        }
        println!("{moves}");
    }
    let n = map.collections.len();
    let moving = match map.moves.len() {
        0 => String::new(),
        1 => ", 1 move in progress".to_string(),
        m => format!(", {m} moves in progress"),
    };
    println!(
        "({} node{}, {n} collection{}{moving})",
        map.nodes.len(),
        if map.nodes.len() == 1 { "" } else { "s" },
        if n == 1 { "" } else { "s" },
    );
    Ok(())
}

/// A move's progress: the new replica's applied index over the leader's,
/// and the bytes of its snapshot while one is in flight.
fn move_progress(m: &stratosdb::api::MoveInfo) -> String {
    let indexes = format!("{}/{}", m.applied, m.target);
    if m.total_bytes == 0 {
        return indexes;
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "{indexes}, snapshot {:.1}/{:.1} MiB",
        mib(m.bytes),
        mib(m.total_bytes)
    )
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

#[cfg(test)]
mod tests {
    use super::{move_progress, parse_duration};
    use std::time::Duration;

    #[test]
    fn anchor_interval_takes_a_duration_or_off() {
        use super::{Interval, parse_interval};
        assert_eq!(parse_interval("off"), Ok(Interval(None)));
        assert_eq!(
            parse_interval("500ms"),
            Ok(Interval(Some(Duration::from_millis(500))))
        );
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("never").is_err());
    }

    #[test]
    fn down_after_takes_ms_s_and_m() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "5",
            "s",
            "5h",
            "0s",
            "-1s",
            "1.5s",
            "99999999999999999999m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_move_shows_its_snapshot_bytes_while_one_is_in_flight() {
        let mut m = stratosdb::api::MoveInfo {
            collection: "c".into(),
            shard: 1,
            from: None,
            to: "n".into(),
            phase: "learner".into(),
            applied: 0,
            target: 12,
            bytes: 0,
            total_bytes: 0,
        };
        assert_eq!(move_progress(&m), "0/12");
        m.bytes = 3 << 20;
        m.total_bytes = 10 << 20;
        assert_eq!(move_progress(&m), "0/12, snapshot 3.0/10.0 MiB");
    }
}
