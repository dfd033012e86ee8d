//! `stratosdb demo`: a cluster of real `stratosdb node` processes on
//! loopback, shown end to end in one command: found it, load a generated
//! data set, query it, SIGKILL the node that leads the most shards, watch
//! new leaders and re-replication, check that nothing acknowledged was lost
//! and that every replica of every shard has the same root at the same
//! applied index, then stop everything (or, with `--keep`, leave it running).
//! The nodes anchor an epoch every second on one shared local ledger: the
//! demo shows the anchors, reads verified against them, and audits the
//! ledger; then an account deposits, pays for queries (a signed receipt per
//! reply), and the demo waits for the settlement of those epochs and audits
//! it.
//!
//! The steps talk to the nodes only through the HTTP API (the Rust client),
//! as an application would.

mod anchors;
mod checks;
mod nodes;
mod people;
mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value as Json, json};
use stratosdb::api::{ClusterMap, Consistency};
use stratosdb::client::{Client, ClientError};
use stratosdb_engine::Value;
use stratosdb_query::StatementResult;

use checks::{HealProgress, heal_progress, leaders, root_check};
use nodes::{DemoFolder, LocalCluster};
use people::COLLECTION;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the nodes keep their data and logs (an absent or empty
    /// folder); by default a temporary folder, removed at the end.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Leave the cluster running at the end and print how to reach it.
    #[arg(long)]
    keep: bool,
    /// How many nodes to start (one is killed; 3 replicas need 3 left).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(4..=9))]
    nodes: u32,
    /// Skip losing a node (no kill, no heal): with --keep, a loaded cluster
    /// to try the shell on.
    #[arg(long)]
    no_kill: bool,
    /// How many documents to load.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    documents: u64,
}

const SHARDS: u32 = 8;
const REPLICAS: u32 = 3;

/// Documents per INSERT statement.
const BATCH: usize = 250;

/// How long a node stays unreachable before it is declared down and its
/// replicas are moved (the nodes' `--down-after`).
const DOWN_AFTER: &str = "3s";

/// Longest wait for shard leaders (after the collection is created, and
/// after the kill).
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for the shards to be back to their replica count.
const HEAL_TIMEOUT: Duration = Duration::from_secs(75);

/// Longest wait for the replicas' roots to agree (applies in flight).
const ROOTS_TIMEOUT: Duration = Duration::from_secs(30);

/// How many loaded documents are read back and compared after the kill.
const SPOT_CHECKS: usize = 25;

const POLL: Duration = Duration::from_millis(200);

/// The nodes' `--anchor-interval`.
const ANCHOR_INTERVAL: &str = "1s";

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let folder = DemoFolder::prepare(args.data.as_deref())?;
    match run_in(&args, &folder, started) {
        Ok(()) => Ok(()),
        Err(_) if nodes::interrupted() => {
            // The signal thread is stopping the nodes and ends the process.
            loop {
                std::thread::park();
            }
        }
        Err(e) => Err(e.context(format!(
            "the demo failed; the nodes were stopped; their logs are in {}",
            folder.path.display()
        ))),
    }
}

fn run_in(args: &DemoArgs, folder: &DemoFolder, started: Instant) -> anyhow::Result<()> {
    let count = args.nodes as usize;
    let documents = args.documents as usize;

    step(&format!("1. Starting {count} nodes"));
    let ledger = folder.path.join("ledger");
    // A development cluster: the demo's requests are unsigned, billed to
    // the dev account.
    let mut extra: Vec<String> = vec!["--cache-mb".into(), "64".into(), "--dev".into()];
    // One ledger for all the nodes, an epoch a second (README, "Epochs and anchors").
    extra.extend([
        "--ledger".into(),
        ledger.display().to_string(),
        "--anchor-interval".into(),
        ANCHOR_INTERVAL.into(),
    ]);
    let heals = nodes_take_down_after()?;
    if heals {
        extra.extend(["--down-after".into(), DOWN_AFTER.into()]);
    } else {
        println!("note: this build's nodes have no --down-after: lost replicas are not replaced");
    }
    let cluster = LocalCluster::start(folder, count, &extra)?;
    let names: BTreeMap<String, String> = cluster
        .list()
        .into_iter()
        .map(|(name, id, _, _)| (id, name))
        .collect();
    let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    for (name, id, url, pid) in cluster.list() {
        println!("started {name}  id {id}  pid {pid}  {url}");
    }
    println!(
        "data and logs in {} (nodeN/, nodeN.log)",
        folder.path.display()
    );
    let first = Client::new(&cluster.list()[0].2)?;

    step(&format!(
        "2. Creating collection {COLLECTION}: {SHARDS} shards × {REPLICAS} replicas"
    ));
    let create =
        format!("CREATE COLLECTION {COLLECTION} WITH (shards = {SHARDS}, replicas = {REPLICAS})");
    println!("{create};");
    first
        .sql(&create)
        .with_context(|| format!("{create} on {}", first.url()))?;
    let map = wait_for_leaders(&cluster, &first)?;
    print_placement(&map, &name_of);

    step(&format!("3. Loading {documents} people"));
    let people = people::people(documents);
    load(&cluster, &people)?;

    step("4. Queries");
    run_queries(&cluster, &first)?;
    let roots = wait_for_roots(&cluster)?;
    println!(
        "roots agree before the kill: {} shards, every replica at the same applied index",
        roots.len()
    );

    step("5. Anchors on the local ledger, and verified reads");
    let applied = roots
        .iter()
        .filter(|s| s.collection == COLLECTION)
        .filter_map(|s| s.first().map(|(index, _)| (s.shard, *index)))
        .collect();
    anchors::wait_for_anchor(&cluster, &first, &applied)?;
    let urls = cluster.running_urls();
    let follower_url = urls.get(1).unwrap_or(&urls[0]);
    anchors::verified_reads(&ledger, first.url(), follower_url, documents)?;

    if !args.no_kill {
        lose_a_node(&cluster, &first, &people, heals, &name_of)?;
    }

    step("9. Checking the roots of every replica");
    let roots = wait_for_roots(&cluster)?;
    print_rows(
        &["collection", "shard", "replicas", "applied", "root", "ok"],
        roots
            .iter()
            .map(|s| {
                let (applied, root) = s.first().cloned().unwrap_or_default();
                let replicas: Vec<String> = s.replicas.iter().map(|(n, _)| name_of(n)).collect();
                json!({
                    "collection": s.collection,
                    "shard": s.shard,
                    "replicas": replicas.join(" "),
                    "applied": applied,
                    "root": format!("{}…", &root[..root.len().min(16)]),
                    "ok": if s.agree() { "yes" } else { "NO" },
                })
            })
            .collect(),
    )?;
    let replicas: usize = roots.iter().map(|s| s.replicas.len()).sum();
    println!(
        "roots equal: {} shards, {replicas} replicas, each shard's replicas at one applied index with one root",
        roots.len()
    );

    step("10. Auditing the ledger");
    anchors::audit(&ledger)?;

    step("11. Paying for traffic: receipts, a settlement and its audit");
    traffic::pay_and_settle(&cluster.running_urls()[0], &ledger)?;

    step("12. Done");
    if args.keep {
        print_keep(&cluster, folder);
        cluster.keep();
        return Ok(());
    }
    let stopped = cluster.stop_all();
    let stopped: Vec<String> = stopped
        .iter()
        .map(|(name, pid)| format!("{name} (pid {pid})"))
        .collect();
    println!("stopped {}", stopped.join(", "));
    folder.remove_if_temporary();
    println!(
        "demo finished in {:.0} s",
        started.elapsed().as_secs_f64().ceil()
    );
    Ok(())
}

/// Steps 6 to 8: SIGKILL the node that leads the most shards, wait for new
/// leaders, check the documents, wait for the shards to heal.
fn lose_a_node(
    cluster: &LocalCluster,
    first: &Client,
    people: &[Json],
    heals: bool,
    name_of: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    step("6. Killing the node that leads the most shards");
    let map = first.cluster().context("reading the cluster map")?;
    let before = leaders(&map, COLLECTION);
    let victim = most_leaderships(&before).context("no shard has a leader")?;
    let led: Vec<u32> = before
        .iter()
        .filter(|(_, l)| l.as_deref() == Some(victim.as_str()))
        .map(|(s, _)| *s)
        .collect();
    let pid = cluster.kill(&victim)?;
    let killed_at = Instant::now();
    println!(
        "killed {} (node id {victim}, pid {pid}) with SIGKILL; it led {} of {SHARDS} shards: {led:?}",
        name_of(&victim),
        led.len()
    );
    let survivor = Client::new(&cluster.running_urls()[0])?;
    let after = wait_for_new_leaders(cluster, &led, &victim)?;
    println!(
        "new leaders for the {} shards in {:.1} s:",
        led.len(),
        killed_at.elapsed().as_secs_f64()
    );
    print_rows(
        &["shard", "old leader", "new leader"],
        led.iter()
            .map(|s| {
                let new = after.get(s).cloned().unwrap_or_default();
                json!({"shard": s, "old leader": name_of(&victim), "new leader": name_of(&new)})
            })
            .collect(),
    )?;

    step("7. Nothing acknowledged was lost");
    check_documents(cluster, people)?;

    step(&format!(
        "8. Re-replicating the shards back to {REPLICAS} replicas"
    ));
    if heals {
        println!(
            "{} is declared down after {DOWN_AFTER} without answering; its replicas are then rebuilt on the other nodes",
            name_of(&victim)
        );
    }
    let (healed_in, map) = wait_for_heal(cluster, &survivor, &victim, killed_at, heals, name_of)?;
    println!(
        "healed: every shard of {COLLECTION} has {REPLICAS} voters on live nodes, {:.1} s after the kill",
        healed_in.as_secs_f64()
    );
    print_placement(&map, name_of);
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// Whether the nodes of this build take `--down-after` (they re-replicate).
fn nodes_take_down_after() -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let help = std::process::Command::new(exe)
        .args(["node", "--help"])
        .output()
        .context("running `stratosdb node --help`")?;
    Ok(String::from_utf8_lossy(&help.stdout).contains("--down-after"))
}

/// Polls every running node's metrics until each of `shards` has a leader
/// among them (the node that says it leads); shard → leader id.
fn wait_for_new_leaders(
    cluster: &LocalCluster,
    shards: &[u32],
    victim: &str,
) -> anyhow::Result<BTreeMap<u32, String>> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let ids: BTreeMap<String, String> = cluster
        .list()
        .into_iter()
        .map(|(_, id, url, _)| (url, id))
        .collect();
    loop {
        let mut found = BTreeMap::new();
        for url in cluster.running_urls() {
            let Ok(text) = Client::new(&url).and_then(|c| c.metrics()) else {
                continue;
            };
            for shard in checks::led_shards(&text, COLLECTION) {
                found.insert(shard, ids.get(&url).cloned().unwrap_or_default());
            }
        }
        if shards.iter().all(|s| found.contains_key(s)) {
            return Ok(found);
        }
        if let Some(crash) = cluster.crashed(Some(victim)) {
            bail!("{crash}");
        }
        if Instant::now() >= deadline {
            let missing: Vec<&u32> = shards.iter().filter(|s| !found.contains_key(s)).collect();
            bail!("shards {missing:?} had no new leader within {LEADER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `client`'s cluster map until every shard of the collection has a
/// leader; that map.
fn wait_for_leaders(cluster: &LocalCluster, client: &Client) -> anyhow::Result<ClusterMap> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let map = client.cluster();
        if let Ok(map) = &map {
            let shards = leaders(map, COLLECTION);
            let elected = shards.len() == SHARDS as usize && shards.values().all(Option::is_some);
            if elected {
                return Ok(map.clone());
            }
        }
        if let Some(crash) = cluster.crashed(None) {
            bail!("{crash}");
        }
        if Instant::now() >= deadline {
            bail!(
                "the shards of {COLLECTION} had no leader on every shard within {LEADER_TIMEOUT:?} (last map from {}: {map:?})",
                client.url()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn print_placement(map: &ClusterMap, name_of: &dyn Fn(&str) -> String) {
    let rows = map
        .shards
        .iter()
        .filter(|s| s.collection == COLLECTION)
        .map(|s| {
            let replicas: Vec<String> = s.replicas.iter().map(|r| name_of(&r.node)).collect();
            json!({
                "shard": s.shard,
                "leader": name_of(s.leader.as_deref().unwrap_or("")),
                "replicas": replicas.join(" "),
            })
        })
        .collect();
    let _ = print_rows(&["shard", "leader", "replicas"], rows);
}

/// Loads the documents with multi-row INSERTs, spread over the nodes.
fn load(cluster: &LocalCluster, people: &[Json]) -> anyhow::Result<()> {
    let clients = cluster
        .running_urls()
        .iter()
        .map(|url| Client::new(url))
        .collect::<Result<Vec<_>, _>>()?;
    let bar = progress_bar(
        people.len() as u64,
        "{bar:40} {pos}/{len} documents  {per_sec}  eta {eta}",
    );
    let started = Instant::now();
    let mut loaded = 0usize;
    for (i, batch) in people.chunks(BATCH).enumerate() {
        let client = &clients[i % clients.len()];
        let insert = people::insert_statement(batch);
        let reply = client.sql(&insert).with_context(|| {
            format!(
                "loading documents {} to {} through {}",
                loaded,
                loaded + batch.len() - 1,
                client.url()
            )
        })?;
        if reply.affected != batch.len() as u64 {
            bail!(
                "an INSERT of {} documents through {} says it wrote {}",
                batch.len(),
                client.url(),
                reply.affected
            );
        }
        let quarter_before = loaded * 4 / people.len();
        loaded += batch.len();
        match &bar {
            Some(bar) => bar.set_position(loaded as u64),
            None if loaded * 4 / people.len() > quarter_before || loaded == people.len() => {
                println!("  {loaded}/{} documents", people.len());
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "loaded {loaded} documents into {COLLECTION} in {seconds:.1} s ({:.0} documents/s, {BATCH} per INSERT)",
        loaded as f64 / seconds.max(0.001)
    );
    Ok(())
}

/// A progress bar on a terminal; `None` when stderr is not one (the
/// callers print a line now and then instead).
fn progress_bar(len: u64, template: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}

fn run_queries(cluster: &LocalCluster, client: &Client) -> anyhow::Result<()> {
    let point = format!(
        "SELECT * FROM {COLLECTION} WHERE _id = '{}'",
        people::id_of(42)
    );
    let filter = format!(
        "SELECT _id, name, age, address.city AS city, plan.name AS plan FROM {COLLECTION} \
         WHERE age >= 30 AND address.country = 'FR' ORDER BY age DESC LIMIT 5"
    );
    let group = format!(
        "SELECT address.city AS city, COUNT(*) AS people, ROUND(AVG(age), 1) AS avg_age, \
         MAX(score) AS best FROM {COLLECTION} GROUP BY address.city ORDER BY people DESC"
    );
    for sql in [&point, &filter, &group] {
        println!("\n{sql};");
        let reply = client
            .sql(sql)
            .with_context(|| format!("{sql} on {}", client.url()))?;
        print_result(&reply.into_statement_result())?;
    }

    // A follower read through another node: served by any replica, without
    // asking the leaders; the reply tells how far each replica had applied.
    let urls = cluster.running_urls();
    let url = urls.get(1).unwrap_or(&urls[0]);
    let count = format!(
        "SELECT COUNT(*) AS people, MIN(age) AS youngest, MAX(age) AS oldest FROM {COLLECTION}"
    );
    println!("\n{count};   -- consistency: follower, through {url}");
    let (result, applied) = follower_read(url, &count)?;
    print_result(&result)?;
    let applied: Vec<String> = applied
        .iter()
        .map(|(shard, index)| format!("{shard}:{index}"))
        .collect();
    println!(
        "served by replicas at applied index (shard:index) {}",
        applied.join(" ")
    );
    Ok(())
}

/// `POST /v1/sql` with `"consistency": "follower"`: the result and the
/// applied index of the replica that served each shard.
fn follower_read(url: &str, sql: &str) -> anyhow::Result<(StatementResult, Vec<(u32, u64)>)> {
    #[derive(serde::Deserialize)]
    struct Applied {
        shard: u32,
        index: u64,
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        rows: Vec<Value>,
        #[serde(default)]
        columns: Vec<String>,
        #[serde(default)]
        applied: Vec<Applied>,
    }
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let body = json!({"sql": sql, "consistency": Consistency::Follower, "detail": true});
    let text = agent
        .post(&format!("{url}/v1/sql"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| format!("follower read on {url}"))?;
    let reply: Reply = serde_json::from_str(&text)
        .with_context(|| format!("follower read on {url}: unexpected reply {text}"))?;
    let result = StatementResult::Rows {
        columns: reply.columns,
        rows: reply.rows,
    };
    let applied = reply.applied.iter().map(|a| (a.shard, a.index)).collect();
    Ok((result, applied))
}

fn print_result(result: &StatementResult) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    crate::shell::print_result(&mut out, crate::shell::Format::Table, result)
        .context("writing to stdout")
}

/// Prints rows (JSON objects keyed by the columns) as the shell's table.
fn print_rows(columns: &[&str], rows: Vec<Json>) -> anyhow::Result<()> {
    let rows = rows
        .into_iter()
        .map(Value::from_json)
        .collect::<Result<Vec<_>, _>>()
        .context("a table row")?;
    print_result(&StatementResult::Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    })
}

/// The node leading the most shards (the first such in shard order).
fn most_leaderships(leaders: &BTreeMap<u32, Option<String>>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for leader in leaders.values().flatten() {
        *counts.entry(leader).or_default() += 1;
    }
    let most = counts.values().copied().max()?;
    leaders
        .values()
        .flatten()
        .find(|l| counts.get(l.as_str()) == Some(&most))
        .cloned()
}

/// After the kill, every loaded document is still there: the count, every
/// `_id`, and a sample read back whole and compared with what was loaded.
fn check_documents(cluster: &LocalCluster, people: &[Json]) -> anyhow::Result<()> {
    let clients = cluster
        .running_urls()
        .iter()
        .map(|url| Client::new(url))
        .collect::<Result<Vec<_>, _>>()?;
    let client = &clients[0];
    let count_sql = format!("SELECT COUNT(*) AS n FROM {COLLECTION}");
    let reply = retry_unavailable(|| client.sql(&count_sql))
        .with_context(|| format!("{count_sql} on {}", client.url()))?;
    let count = reply
        .rows
        .first()
        .and_then(|r| r.as_object())
        .and_then(|o| o.get("n"))
        .cloned();
    if count != Some(Value::Int(people.len() as i64)) {
        bail!(
            "documents were lost: {count_sql} gives {count:?}, {} were loaded",
            people.len()
        );
    }
    let ids_sql = format!("SELECT _id FROM {COLLECTION}");
    let reply = retry_unavailable(|| client.sql(&ids_sql))
        .with_context(|| format!("{ids_sql} on {}", client.url()))?;
    let found: BTreeSet<String> = reply
        .rows
        .iter()
        .filter_map(|r| match r.as_object().and_then(|o| o.get("_id")) {
            Some(Value::String(id)) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let missing: Vec<String> = (0..people.len())
        .map(people::id_of)
        .filter(|id| !found.contains(id))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} loaded documents are missing, first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let step = (people.len() / SPOT_CHECKS).max(1);
    let mut checked = 0;
    for (n, expected) in people.iter().step_by(step).take(SPOT_CHECKS).enumerate() {
        let id = expected["_id"].as_str().unwrap_or_default();
        let client = &clients[n % clients.len()];
        let got = retry_unavailable(|| client.get(COLLECTION, id))
            .with_context(|| format!("reading {id} through {}", client.url()))?;
        let expected = Value::from_json(expected.clone()).context("a generated document")?;
        if got != expected {
            bail!(
                "document {id} read through {} differs from what was loaded:\n  read   {}\n  loaded {}",
                client.url(),
                got.to_json_string(),
                expected.to_json_string()
            );
        }
        checked += 1;
    }
    println!(
        "all {} documents are there: COUNT(*) = {}, every _id listed, {checked} read back whole and identical",
        people.len(),
        people.len()
    );
    Ok(())
}

/// Runs a read again while the cluster answers "try again" (503, or no
/// answer), for at most [`LEADER_TIMEOUT`].
fn retry_unavailable<T>(
    mut read: impl FnMut() -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match read() {
            Err(e)
                if (e.status() == Some(503) || e.status().is_none())
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(POLL)
            }
            other => return other,
        }
    }
}

/// Waits until the collection's shards are healed, showing the replica
/// counts and the moves; how long after the kill, and the healed map.
fn wait_for_heal(
    cluster: &LocalCluster,
    client: &Client,
    victim: &str,
    killed_at: Instant,
    heals: bool,
    name_of: &dyn Fn(&str) -> String,
) -> anyhow::Result<(Duration, ClusterMap)> {
    let since = killed_at;
    let bar = progress_bar(
        (SHARDS * REPLICAS) as u64,
        "{spinner} {elapsed} {bar:24} {pos}/{len} voters  {wide_msg}",
    );
    if let Some(bar) = &bar {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let deadline = Instant::now() + HEAL_TIMEOUT;
    let mut shown = String::new();
    let mut last: Option<HealProgress> = None;
    let outcome = loop {
        if let Ok(map) = client.cluster() {
            let progress = heal_progress(&map, COLLECTION);
            let summary = progress.summary(name_of);
            match &bar {
                Some(bar) => {
                    bar.set_position(progress.voters().0 as u64);
                    bar.set_message(summary);
                }
                None if summary != shown => {
                    println!("  {:>5.1} s  {summary}", since.elapsed().as_secs_f64());
                    shown = summary;
                }
                None => {}
            }
            let healed = progress.healed();
            last = Some(progress);
            if healed {
                break Ok((since.elapsed(), map));
            }
        }
        if let Some(crash) = cluster.crashed(Some(victim)) {
            break Err(anyhow::anyhow!("{crash}"));
        }
        if Instant::now() >= deadline {
            let state = last.map_or("no cluster map".to_string(), |p| p.summary(name_of));
            let why = if heals {
                "the nodes did not move the lost replicas"
            } else {
                "this build's nodes do not re-replicate (no --down-after)"
            };
            break Err(anyhow::anyhow!(
                "the shards were not back to {REPLICAS} replicas within {HEAL_TIMEOUT:?}: {why}; last state: {state}"
            ));
        }
        std::thread::sleep(POLL);
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    outcome
}

/// Asks every running node for its own replicas' applied index and root
/// until every shard's replicas agree (at most [`ROOTS_TIMEOUT`]).
fn wait_for_roots(cluster: &LocalCluster) -> anyhow::Result<Vec<checks::ShardRoots>> {
    let deadline = Instant::now() + ROOTS_TIMEOUT;
    loop {
        let clients = cluster
            .running_urls()
            .iter()
            .map(|url| Client::new(url))
            .collect::<Result<Vec<_>, _>>()?;
        // All at once: a node's answer may wait (1 s at most) for a member
        // that does not answer.
        let maps: Vec<ClusterMap> = std::thread::scope(|scope| {
            let asks: Vec<_> = clients
                .iter()
                .map(|c| scope.spawn(move || c.cluster().ok()))
                .collect();
            asks.into_iter()
                .filter_map(|ask| ask.join().ok().flatten())
                .collect()
        });
        let checked = match maps.first() {
            Some(layout) => root_check(layout, &maps),
            None => Vec::new(),
        };
        if !checked.is_empty() && checked.iter().all(checks::ShardRoots::agree) {
            return Ok(checked);
        }
        if Instant::now() >= deadline {
            let differ: Vec<String> = checked
                .iter()
                .filter(|s| !s.agree())
                .map(|s| format!("{}/{}: {:?}", s.collection, s.shard, s.replicas))
                .collect();
            bail!(
                "the replicas' roots did not agree within {ROOTS_TIMEOUT:?}: {}",
                differ.join("; ")
            );
        }
        std::thread::sleep(POLL);
    }
}

fn print_keep(cluster: &LocalCluster, folder: &DemoFolder) {
    let running = cluster.running_urls();
    let mut pids = Vec::new();
    println!("The cluster keeps running (--keep):");
    for (name, id, url, pid) in cluster.list() {
        if running.contains(&url) {
            println!("  {name}  id {id}  pid {pid}  {url}");
            pids.push(pid.to_string());
        }
    }
    let url = running.first().cloned().unwrap_or_default();
    println!("Connect the shell:   cargo run --release -- shell --connect {url}");
    println!("Cluster map:         cargo run --release -- cluster status --connect {url}");
    println!("Stop it:             kill {}", pids.join(" "));
    println!(
        "Audit the ledger:    cargo run --release -- audit --ledger {}",
        folder.path.join("ledger").display()
    );
    println!("Data and logs:       {}", folder.path.display());
}
