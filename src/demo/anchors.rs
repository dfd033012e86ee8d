//! The demo's chain steps: the epochs anchored on the nodes' shared local
//! ledger, reads verified against those anchors by the Rust client, and the
//! audit of the ledger (the demo's own binary, `audit --ledger DIR`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use stratosdb::api::{AnchorsQuery, AnchorsReply, Consistency};
use stratosdb::client::{Client, ClientError};
use stratosdb::verified::{Policy, describe_verdict};
use stratosdb_chain_anchor::{LOG_FILE, LedgerKey, LocalLedger};
use stratosdb_engine::Value;
use stratosdb_query::StatementResult;
use stratosdb_verifier::Verified;

use super::nodes::LocalCluster;
use super::people::{self, COLLECTION};
use super::{POLL, print_result, print_rows};

/// Longest wait for an anchored epoch that covers the loaded data (the
/// nodes anchor every second; an epoch can be skipped while a shard has no
/// quorum).
const ANCHOR_TIMEOUT: Duration = Duration::from_secs(45);

/// Longest wait for the verified reads to find the newest epoch anchored.
const ANCHORED_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// How often the newest epoch is looked at while waiting for it.
const ANCHOR_POLL: Duration = Duration::from_millis(50);

/// How many of the newest epochs are printed.
const EPOCHS_SHOWN: u64 = 4;

/// Waits until an epoch is anchored whose leaf of every shard of the
/// collection was marked at or after `applied` (shard → applied index once
/// the data was loaded), so it commits to all of it; prints the newest
/// epochs and returns the covering epoch.
pub fn wait_for_anchor(
    cluster: &LocalCluster,
    client: &Client,
    applied: &BTreeMap<u32, u64>,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + ANCHOR_TIMEOUT;
    let query = AnchorsQuery {
        limit: Some(EPOCHS_SHOWN),
        epoch: None,
    };
    let (epoch, reply) = loop {
        let reply = client.anchors(query);
        if let Ok(reply) = &reply
            && let Some(epoch) = covering_epoch(reply, applied)
        {
            break (epoch, reply.clone());
        }
        if let Some(crash) = cluster.crashed(None) {
            bail!("{crash}");
        }
        if Instant::now() >= deadline {
            bail!(
                "no anchored epoch covered the loaded data within {ANCHOR_TIMEOUT:?} (shard:applied {applied:?}; last GET /v1/anchors from {}: {reply:?})",
                client.url()
            );
        }
        std::thread::sleep(POLL);
    };
    println!(
        "GET /v1/anchors?limit={EPOCHS_SHOWN}   -- through {}",
        client.url()
    );
    print_anchors(&reply)?;
    println!(
        "epoch {epoch} is anchored and covers the loaded data: every shard's leaf marked after the load"
    );
    Ok(epoch)
}

/// The newest anchored epoch whose leaves of the collection cover every
/// shard of `applied` at or after its index.
fn covering_epoch(reply: &AnchorsReply, applied: &BTreeMap<u32, u64>) -> Option<u64> {
    reply
        .anchors
        .iter()
        .filter(|a| a.status == "anchored")
        .find(|a| {
            applied.iter().all(|(shard, index)| {
                a.leaves.iter().any(|l| {
                    l.collection == COLLECTION && l.shard == *shard && l.raft_index >= *index
                })
            })
        })
        .map(|a| a.epoch)
}

/// The shell's `\anchors` rows, the hashes cut to 20 characters to fit a
/// terminal (the audit at the end prints them whole).
fn print_anchors(reply: &AnchorsReply) -> anyhow::Result<()> {
    println!("{}", crate::shell::anchors::heading(reply));
    let mut result = crate::shell::anchors::rows(reply);
    if let StatementResult::Rows { rows, .. } = &mut result {
        for row in rows {
            if let Value::Object(row) = row {
                for column in ["cluster_root", "reference"] {
                    if let Some(Value::String(text)) = row.get_mut(column)
                        && let Some((cut, _)) = text.char_indices().nth(20)
                    {
                        text.truncate(cut);
                        text.push('…');
                    }
                }
            }
        }
    }
    print_result(&result)
}

/// Reads through a client that verifies every reply against the anchors it
/// reads from the ledger itself: a few documents by `_id` (through
/// `lookup_url`), a SELECT with a WHERE as a follower read (through
/// `follower_url`), and one absent `_id`. Any reply that does not verify
/// fails the demo.
pub fn verified_reads(
    ledger: &Path,
    lookup_url: &str,
    follower_url: &str,
    documents: usize,
) -> anyhow::Result<()> {
    let chain = open_ledger(ledger)?;
    let policy = Policy::default();
    let lookup = Client::new(lookup_url)?.with_verifier(chain.clone(), policy);
    let follower = Client::new(follower_url)?.with_verifier(chain, policy);
    println!(
        "a client verifying every read against the anchors on {} (never the node's word)",
        ledger.display()
    );

    let mut ids: Vec<usize> = vec![0, 42, documents - 1];
    ids.retain(|&i| i < documents);
    ids.dedup();
    let ids: Vec<String> = ids.into_iter().map(people::id_of).collect();
    let filter = format!(
        "SELECT _id, name, age FROM {COLLECTION} WHERE age >= 60 AND address.country = 'FR' \
         ORDER BY age DESC LIMIT 5"
    );
    // A replica proves a document to its latest anchor mark, which is the
    // epoch under way while it is sealed and sent: read while the newest
    // epoch is anchored, so that the rows verify anchored. Rows read while
    // one anchored epoch stayed the newest are final as they verified;
    // past the bound, too.
    let deadline = Instant::now() + ANCHORED_READ_TIMEOUT;
    let reads = loop {
        let late = Instant::now() >= deadline;
        let before = newest_anchored(&lookup);
        if before.is_some() || late {
            let reads = read_round(&lookup, &follower, &ids, &filter)?;
            if reads.anchored || late || newest_anchored(&lookup) == before {
                break reads;
            }
        }
        std::thread::sleep(ANCHOR_POLL);
    };
    println!("\nby _id, through {}:", lookup.url());
    print_rows(&["_id", "name", "age", "verified"], reads.by_id)?;
    println!("\n{filter};   -- consistency: follower, through {follower_url}");
    print_rows(&["_id", "name", "age", "verified"], reads.filtered)?;
    if !reads.anchored {
        println!(
            "(unanchored: proved to the root their replica states at that raft index, not yet to an anchored epoch)"
        );
    }

    let absent = people::id_of(documents);
    match lookup.get_verified(COLLECTION, &absent, Consistency::Linearizable) {
        Err(e) if e.code() == Some("document_not_found") => {
            println!("{absent}: verified absent (its non-inclusion proof holds)")
        }
        Err(e) => return Err(verification_failed(&absent, e)),
        Ok(doc) => bail!(
            "{absent} was never loaded but {} returned it: {}",
            lookup.url(),
            doc.to_json_string()
        ),
    }
    Ok(())
}

/// The newest epoch, if it is anchored.
fn newest_anchored(client: &Client) -> Option<u64> {
    let newest = AnchorsQuery {
        limit: Some(1),
        epoch: None,
    };
    let reply = client.anchors(newest).ok()?;
    let epoch = reply.anchors.first()?;
    (epoch.status == "anchored").then_some(epoch.epoch)
}

/// The ledger the nodes anchor on, opened to read it (a throwaway key: the
/// client never signs a block).
fn open_ledger(dir: &Path) -> anyhow::Result<Arc<LocalLedger>> {
    // Opening creates a missing ledger: the demo must not.
    if !dir.join(LOG_FILE).is_file() {
        bail!("the nodes' ledger {} has no log", dir.display());
    }
    let ledger = LocalLedger::open(dir, LedgerKey::from_secret_bytes(rand::random()))
        .with_context(|| format!("opening the ledger in {}", dir.display()))?;
    Ok(Arc::new(ledger))
}

/// One round of the verified reads.
struct Reads {
    by_id: Vec<serde_json::Value>,
    filtered: Vec<serde_json::Value>,
    /// Every row verified anchored.
    anchored: bool,
}

/// The documents `ids` by `_id` through `lookup` and `filter` as a follower
/// read through `follower`, each row with its verdict.
fn read_round(
    lookup: &Client,
    follower: &Client,
    ids: &[String],
    filter: &str,
) -> anyhow::Result<Reads> {
    let mut by_id = Vec::new();
    let mut anchored = true;
    for id in ids {
        let sql = format!("SELECT _id, name, age FROM {COLLECTION} WHERE _id = '{id}'");
        let (rows, all) = verified_rows(lookup, &sql, Consistency::Linearizable)?;
        by_id.extend(rows);
        anchored &= all;
    }
    let (filtered, all) = verified_rows(follower, filter, Consistency::Follower)?;
    Ok(Reads {
        by_id,
        filtered,
        anchored: anchored && all,
    })
}

/// Runs a verified SELECT; its rows, each with its verdict, and whether
/// every row verified anchored. A reply without rows fails (there would be
/// nothing verified to show).
fn verified_rows(
    client: &Client,
    sql: &str,
    consistency: Consistency,
) -> anyhow::Result<(Vec<serde_json::Value>, bool)> {
    let (reply, verdicts) = client
        .sql_verified(sql, consistency)
        .map_err(|e| verification_failed(sql, e))?;
    if reply.rows.is_empty() {
        bail!("{sql} on {} returned no rows to verify", client.url());
    }
    let field = |row: &Value, name: &str| {
        row.as_object()
            .and_then(|o| o.get(name))
            .map_or(serde_json::Value::Null, Value::to_json)
    };
    let anchored = verdicts
        .iter()
        .all(|v| matches!(v, Verified::Anchored { .. }));
    let rows = reply
        .rows
        .iter()
        .zip(&verdicts)
        .map(|(row, verdict)| {
            json!({
                "_id": field(row, "_id"),
                "name": field(row, "name"),
                "age": field(row, "age"),
                "verified": describe_verdict(verdict),
            })
        })
        .collect();
    Ok((rows, anchored))
}

fn verification_failed(what: &str, e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Rejected { .. } => anyhow::anyhow!("verification failed: {what}: {e}"),
        other => anyhow::Error::new(other).context(format!("verified read {what}")),
    }
}

/// Runs `stratosdb audit --ledger DIR` (this binary) on the shared ledger and
/// prints its verdicts, the per-epoch lines shortened to the first and last;
/// fails if the audit does.
pub fn audit(ledger: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    println!("stratosdb audit --ledger {}", ledger.display());
    let output = std::process::Command::new(exe)
        .arg("audit")
        .arg("--ledger")
        .arg(ledger)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running `stratosdb audit --ledger`")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (epochs, others): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.starts_with("ok      epoch "));
    for line in others.iter().filter(|l| !l.starts_with("audit ")) {
        println!("{line}");
    }
    if let [first, .., last] = epochs.as_slice() {
        println!("{first}");
        if epochs.len() > 2 {
            println!("        … {} more epochs, each ok", epochs.len() - 2);
        }
        println!("{last}");
    } else {
        epochs.iter().for_each(|l| println!("{l}"));
    }
    let verdict = others
        .iter()
        .find(|l| l.starts_with("audit "))
        .copied()
        .unwrap_or("audit: no verdict");
    println!("{verdict}");
    if !output.status.success() {
        bail!(
            "the audit of the ledger {} failed ({}): {verdict}{}",
            ledger.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if epochs.is_empty() {
        bail!("the audit of {} found no anchored epoch", ledger.display());
    }
    Ok(())
}
