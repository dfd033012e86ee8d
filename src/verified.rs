//! Checking a reply with proofs against the chain: what the client's
//! `verify` option, the shell's `\proof on` and `stratosdb audit --proofs`
//! share. Anchors are read from the chain itself, never from the node.

use std::collections::HashMap;
use std::path::Path;

use stratosdb_chain_anchor::{Chain, ChainRef, LedgerKey, LocalLedger, StratosChain};
use stratosdb_engine::Value;
use stratosdb_query::ast::{Query, Statement};
use stratosdb_verifier::{AnchorPayload, ReadProof, Verified, verify_rows};

/// How recent a proven read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Freshness {
    /// Any anchored epoch (or unanchored, unless [`Policy::require_anchored`]).
    #[default]
    Any,
    /// Anchored proofs must be of this epoch or a later one.
    AtLeast(u64),
    /// Anchored proofs must be of the latest epoch the chain holds for the
    /// cluster ([`Chain::latest_anchor`]): a replica serving a document
    /// proved to an older root is refused.
    Latest,
}

/// What a proven reply must satisfy beyond its proofs holding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Refuse unanchored proofs (writes newer than the last anchor are then
    /// unreadable until the next epoch).
    pub require_anchored: bool,
    pub freshness: Freshness,
}

/// A reply with proofs, as the API sends it (`docs/chain.md`) and as
/// `stratosdb audit --proofs` reads it from a file. `sql` (optional) is the
/// statement, which a file needs for its rows to be checked against a
/// projection; without it rows must be whole documents.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProvenReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    pub rows: Vec<Value>,
    pub proofs: Vec<ReadProof>,
    #[serde(default)]
    pub absent: Vec<ReadProof>,
}

/// Why a proven reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A proof or row does not check out: a forged or damaged reply.
    #[error("{0}")]
    Invalid(String),
    /// An unanchored proof where anchored ones are required.
    #[error("{0}")]
    Unanchored(String),
    /// An anchored proof of an epoch older than required.
    #[error("{what} is proved at epoch {epoch}, but epoch {required} is required")]
    Stale {
        what: String,
        epoch: u64,
        required: u64,
    },
    /// The chain could not be read.
    #[error("chain: {0}")]
    Chain(String),
}

/// A chain to read anchors from, for a reader that never writes: the local
/// ledger in `ledger` (which must exist: it is not created, and it is opened
/// with a throwaway key, so no block is ever signed), or the Stratos chain
/// at `stratos` (RPC URL, chain id), read only. `None` if neither is given.
pub fn open_chain_reader(
    ledger: Option<&Path>,
    stratos: Option<(&str, u64)>,
) -> Result<Option<Box<dyn Chain>>, String> {
    if let Some((rpc, chain_id)) = stratos {
        return StratosChain::connect_read_only(rpc, chain_id)
            .map(|c| Some(Box::new(c) as Box<dyn Chain>))
            .map_err(|e| format!("the chain at {rpc}: {e}"));
    }
    let Some(dir) = ledger else { return Ok(None) };
    if !dir.join(stratosdb_chain_anchor::LOG_FILE).is_file() {
        return Err(format!("no ledger in {}", dir.display()));
    }
    LocalLedger::open(dir, LedgerKey::from_secret_bytes(rand::random()))
        .map(|l| Some(Box::new(l) as Box<dyn Chain>))
        .map_err(|e| format!("ledger {}: {e}", dir.display()))
}

/// Reads anchors from a chain once each.
pub struct Anchors<'c> {
    /// `None`: no chain configured; any anchored proof is refused.
    chain: Option<&'c dyn Chain>,
    read: HashMap<String, AnchorPayload>,
    latest: HashMap<[u8; 32], u64>,
}

impl<'c> Anchors<'c> {
    pub fn new(chain: Option<&'c dyn Chain>) -> Anchors<'c> {
        Anchors {
            chain,
            read: HashMap::new(),
            latest: HashMap::new(),
        }
    }

    /// The payload anchored at `reference`, read from the chain.
    pub fn payload(&mut self, reference: &str) -> Result<AnchorPayload, Rejection> {
        if let Some(p) = self.read.get(reference) {
            return Ok(p.clone());
        }
        let parsed: ChainRef = reference
            .parse()
            .map_err(|e| Rejection::Invalid(format!("anchor reference: {e}")))?;
        let chain = self.chain.ok_or_else(|| {
            Rejection::Chain(format!("no chain configured to read {reference} from"))
        })?;
        let record = chain
            .read_anchor(&parsed)
            .map_err(|e| Rejection::Chain(format!("reading {reference}: {e}")))?;
        self.read
            .insert(reference.to_string(), record.payload.clone());
        Ok(record.payload)
    }

    /// The latest epoch the chain holds for a cluster.
    fn latest_epoch(&mut self, cluster_id: &[u8; 32]) -> Result<u64, Rejection> {
        if let Some(e) = self.latest.get(cluster_id) {
            return Ok(*e);
        }
        let chain = self
            .chain
            .ok_or_else(|| Rejection::Chain("no chain configured".into()))?;
        let latest = chain
            .latest_anchor(cluster_id)
            .map_err(|e| Rejection::Chain(format!("the latest anchor: {e}")))?
            .map(|r| r.payload.epoch)
            .ok_or_else(|| Rejection::Chain("the chain holds no anchor of the cluster".into()))?;
        self.latest.insert(*cluster_id, latest);
        Ok(latest)
    }

    /// Verifies one proof under `policy`.
    pub fn check(&mut self, proof: &ReadProof, policy: &Policy) -> Result<Verified, Rejection> {
        let Some(claim) = &proof.anchor else {
            if policy.require_anchored || policy.freshness != Freshness::Any {
                proof
                    .verify_shard()
                    .map_err(|e| Rejection::Invalid(e.to_string()))?;
                return Err(Rejection::Unanchored(format!(
                    "{} is unanchored (proved to the replica's current root only)",
                    proof.describe()
                )));
            }
            return proof
                .verify(None)
                .map_err(|e| Rejection::Invalid(e.to_string()));
        };
        let payload = self.payload(&claim.reference)?;
        let verified = proof
            .verify(Some(&payload))
            .map_err(|e| Rejection::Invalid(e.to_string()))?;
        let required = match policy.freshness {
            Freshness::Any => None,
            Freshness::AtLeast(e) => Some(e),
            Freshness::Latest => Some(self.latest_epoch(&payload.cluster_id)?),
        };
        if let Some(required) = required
            && payload.epoch < required
        {
            return Err(Rejection::Stale {
                what: proof.describe(),
                epoch: payload.epoch,
                required,
            });
        }
        Ok(verified)
    }
}

/// The projection a statement applies to each document (the identity for
/// `SELECT *`, GET and whole-document finds).
pub fn projection_of(sql: Option<&str>) -> Result<Option<Query>, Rejection> {
    let Some(sql) = sql else { return Ok(None) };
    match stratosdb_query::parse_statement(sql) {
        Ok(Statement::Select(q)) => Ok(Some(q)),
        Ok(_) => Err(Rejection::Invalid(format!("{sql:?} is not a SELECT"))),
        Err(e) => Err(Rejection::Invalid(format!("{sql:?}: {e}"))),
    }
}

/// Checks a whole reply: every proof (row documents and absent `_id`s), and
/// that the rows are the projections (by `query`, or whole documents) of the
/// proven documents. The verdict of each row, in order.
pub fn verify_reply(
    reply: &ProvenReply,
    query: Option<&Query>,
    anchors: &mut Anchors<'_>,
    policy: &Policy,
) -> Result<Vec<Verified>, Rejection> {
    let collection = check_rows(reply, query)?;
    let mut verdicts = Vec::with_capacity(reply.proofs.len());
    for proof in &reply.proofs {
        verdicts.push(anchors.check(proof, policy)?);
    }
    for proof in &reply.absent {
        if proof.document.is_some() || proof.collection != collection {
            return Err(Rejection::Invalid(format!(
                "{} is listed as absent but is not a non-inclusion proof of {collection}",
                proof.describe()
            )));
        }
        anchors.check(proof, policy)?;
    }
    Ok(verdicts)
}

/// Checks that the rows are the projections (by `query`, or whole
/// documents) of the documents the proofs prove; the collection they are of.
fn check_rows(reply: &ProvenReply, query: Option<&Query>) -> Result<String, Rejection> {
    let collection = match query {
        Some(q) => q.collection.clone(),
        None => reply
            .proofs
            .iter()
            .chain(&reply.absent)
            .next()
            .map(|p| p.collection.clone())
            .unwrap_or_default(),
    };
    let project = |doc: &Value| -> Result<Value, String> {
        match query {
            Some(q) => stratosdb_query::project_document(q, doc).map_err(|e| e.to_string()),
            None => Ok(doc.clone()),
        }
    };
    verify_rows(&collection, &reply.rows, &reply.proofs, &project)
        .map_err(|e| Rejection::Invalid(e.to_string()))?;
    Ok(collection)
}

/// How a verdict prints: `anchored (epoch N)` or `unanchored (raft index N)`.
pub fn describe_verdict(v: &Verified) -> String {
    match v {
        Verified::Anchored { epoch } => format!("anchored (epoch {epoch})"),
        Verified::Unanchored { raft_index } => format!("unanchored (raft index {raft_index})"),
    }
}

/// One checked item of [`audit_proofs`]: what, and its verdict or failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLine {
    pub item: String,
    pub verdict: Result<String, String>,
}

/// `stratosdb audit --proofs FILE`'s check: a saved reply with proofs (the
/// API's reply, as `curl` or the shell's `\proof` saves it; `sql` in it
/// names the projection of its rows) against anchors read from `chain`.
/// One line per row and per absent `_id`, and one for the rows as a whole;
/// the audit passes when every line does.
pub fn audit_proofs(text: &str, chain: Option<&dyn Chain>, policy: &Policy) -> Vec<AuditLine> {
    let reply: ProvenReply = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return vec![AuditLine {
                item: "the file".into(),
                verdict: Err(format!("not a reply with proofs: {e}")),
            }];
        }
    };
    let mut lines = Vec::new();
    let mut anchors = Anchors::new(chain);
    let rows_check = projection_of(reply.sql.as_deref())
        .and_then(|query| check_rows(&reply, query.as_ref()).map(|_| ()));
    lines.push(AuditLine {
        item: format!("{} rows against their proven documents", reply.rows.len()),
        verdict: rows_check
            .map(|()| "match".to_string())
            .map_err(|e| e.to_string()),
    });
    for (kind, proof) in reply
        .proofs
        .iter()
        .map(|p| ("document", p))
        .chain(reply.absent.iter().map(|p| ("absent", p)))
    {
        let verdict = if kind == "absent" && proof.document.is_some() {
            Err("listed as absent but proves a document".to_string())
        } else {
            anchors
                .check(proof, policy)
                .map(|v| describe_verdict(&v))
                .map_err(|e| e.to_string())
        };
        lines.push(AuditLine {
            item: format!("{kind} {}", proof.describe()),
            verdict,
        });
    }
    lines
}
