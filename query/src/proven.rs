//! Reads with proofs: each returned document with its proof to its shard
//! root, taken on the replica that served it, atomically with the read.
//!
//! A proven query runs its shard part for whole documents (whatever the
//! projection), each shard proves the documents it returns (and the `_id`s a
//! lookup did not find) under one root, the coordinator merges as usual and
//! only then projects, so every row is the projection of a proven document
//! that a client can recompute (`docs/chain.md`, "Verifiable reads").

use std::collections::HashMap;

use stratosdb_engine::proof::canonical_json;
use stratosdb_engine::{AnchorMark, KvStore, Shard, Value};
use stratosdb_verifier::{AnchorProof, ReadProof, ShardLeaf};

use crate::ast::{Projection, Query};
use crate::error::{QueryError, Result};
use crate::eval::Ctx;
use crate::exec::{Partial, Rows, execute_on_shard, merge, project};
use crate::plan::{AccessPath, ShardOutput, ShardPlan};
use crate::sharded::{ReadConsistency, ShardRead, ShardedDatabase, ShardedStore};

/// Attempts of a proven shard read before giving up: a write between the
/// read and the proof makes them disagree, and the read is run again.
pub const MAX_PROOF_ATTEMPTS: u32 = 16;

/// A query's rows with their proofs.
#[derive(Clone, Debug, PartialEq)]
pub struct ProvenRows {
    pub rows: Rows,
    /// One per row, in row order: the proof of the document the row comes from.
    pub proofs: Vec<ReadProof>,
    /// Non-inclusion proofs of the `_id`s a lookup by `_id` did not find.
    pub absent: Vec<ReadProof>,
    pub reads: Vec<ShardRead>,
}

/// Why a statement cannot be proven, or `None` when it can: a row of an
/// aggregate, a group or a DISTINCT is not one document.
pub fn proof_unsupported(query: &Query) -> Option<&'static str> {
    if query.is_aggregate() || !query.group_by.is_empty() {
        Some("a row of an aggregate or GROUP BY is not a stored document")
    } else if query.distinct {
        Some("a DISTINCT row may stand for several documents")
    } else {
        None
    }
}

/// What a node knows of anchored epochs: the anchor proof of a shard leaf
/// at an epoch (cluster root, chain reference, leaf proof from the recorded
/// leaves), or `None` when that epoch is not anchored with exactly this leaf.
pub trait AnchorLookup: Sync {
    fn anchor_of(&self, leaf: &ShardLeaf, epoch: u64) -> Option<AnchorProof>;

    /// The leaf an anchor mark of shard `shard` of `collection` stands for:
    /// a cluster's, `(collection, shard, the mark's raft index, its root)`
    /// (the default); an embedded database's names no collection and the
    /// epoch as its index (`docs/chain.md`).
    fn leaf_of(&self, collection: &str, shard: u32, mark: &AnchorMark) -> ShardLeaf {
        ShardLeaf {
            collection: collection.to_string(),
            shard,
            raft_index: mark.raft_index,
            root: mark.root,
        }
    }
}

/// No anchors known: every proof is unanchored.
pub struct NoAnchors;

impl AnchorLookup for NoAnchors {
    fn anchor_of(&self, _leaf: &ShardLeaf, _epoch: u64) -> Option<AnchorProof> {
        None
    }
}

/// Replaces each unanchored proof whose document is unchanged since the
/// shard's latest anchor mark, and whose mark `anchors` knows as anchored,
/// by the proof to the mark's root with its anchor proof. Those left
/// unanchored (the latest mark's epoch is often still being sealed or
/// submitted) are tried against the mark before it the same way.
fn anchor_proofs<K: KvStore>(
    shard: &Shard<K>,
    proofs: &mut [ReadProof],
    anchors: &dyn AnchorLookup,
) -> Result<()> {
    let Some(first) = proofs.first() else {
        return Ok(());
    };
    let collection = first.collection.clone();
    for previous in [false, true] {
        let pending: Vec<&mut ReadProof> =
            proofs.iter_mut().filter(|p| p.anchor.is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let ids: Vec<&str> = pending.iter().map(|p| p.id.as_str()).collect();
        let anchored = match previous {
            false => shard.prove_anchored_many(&collection, &ids)?,
            true => shard.prove_anchored_previous_many(&collection, &ids)?,
        };
        anchor_against_mark(&collection, pending, anchored, anchors);
    }
    Ok(())
}

/// [`anchor_proofs`] against one mark: `anchored` are the proofs to it of
/// `proofs`' ids, in order.
fn anchor_against_mark(
    collection: &str,
    proofs: Vec<&mut ReadProof>,
    anchored: Vec<Option<stratosdb_engine::AnchoredProof>>,
    anchors: &dyn AnchorLookup,
) {
    // Every proof of the page is against the one mark: look its anchor up
    // once (a lookup reads and decodes the epoch's record).
    let mut lookup: Option<(ShardLeaf, u64, Option<AnchorProof>)> = None;
    for (p, a) in proofs.into_iter().zip(anchored) {
        let Some(a) = a else { continue };
        // The document read must be the one as of the mark.
        let same = match (&a.doc, &p.document) {
            (Some(x), Some(y)) => canonical_json(x) == canonical_json(y),
            (None, None) => true,
            _ => false,
        };
        let leaf = anchors.leaf_of(collection, p.shard, &a.mark);
        let known = match &lookup {
            Some((l, epoch, anchor)) if *l == leaf && *epoch == a.mark.epoch => anchor.clone(),
            _ => {
                let anchor = anchors.anchor_of(&leaf, a.mark.epoch);
                lookup = Some((leaf.clone(), a.mark.epoch, anchor.clone()));
                anchor
            }
        };
        if let (true, Some(anchor)) = (same, known) {
            p.raft_index = leaf.raft_index;
            p.shard_root = a.mark.root;
            p.proof = a.proof;
            p.anchor = Some(anchor);
            p.leaf_collection = (leaf.collection != collection).then(|| leaf.collection.clone());
        }
    }
}

/// The projection of one document, as the query's rows are made.
pub fn project_document(query: &Query, doc: &Value) -> Result<Value> {
    match &query.projection {
        Projection::All => Ok(doc.clone()),
        Projection::Items(items) => project(items, Ctx::doc(doc)),
    }
}

/// Runs a shard plan (whose output must be whole documents) on `shard` and
/// proves what it returns: the documents, and the looked-up `_id`s absent.
/// All proofs are to one root at one raft index; the documents are the ones
/// the proofs prove (a write in between makes the read run again).
/// With `anchors`, a document unchanged since the shard's latest anchored
/// mark is proved to that mark's root and on to the epoch's cluster root.
pub fn execute_proven<K: KvStore>(
    shard: &Shard<K>,
    shard_number: u32,
    plan: &ShardPlan,
    anchors: &dyn AnchorLookup,
) -> Result<(Partial, Vec<ReadProof>)> {
    if plan.output != ShardOutput::Documents {
        return Err(QueryError::Invalid(
            "a proven shard read returns whole documents".into(),
        ));
    }
    for _ in 0..MAX_PROOF_ATTEMPTS {
        let partial = execute_on_shard(shard, plan)?;
        let Partial::Rows(rows) = &partial else {
            return Err(QueryError::Invalid("a proven read has no groups".into()));
        };
        let mut ids: Vec<String> = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(document_id(&row.row)?.to_string());
        }
        let found = ids.len();
        if let AccessPath::IdLookup { ids: wanted, .. } = &plan.access {
            let missing: Vec<String> = wanted
                .iter()
                .filter(|w| !ids.contains(w))
                .cloned()
                .collect();
            ids.extend(missing);
        }
        let (raft_index, root, proven) = shard.prove_many(&plan.collection, &ids)?;
        let agree = rows.iter().zip(&proven).all(|(row, (_, doc))| {
            doc.as_ref()
                .is_some_and(|d| canonical_json(d) == canonical_json(&row.row))
        });
        if !agree {
            continue;
        }
        let mut proofs = Vec::with_capacity(ids.len());
        for (i, (id, (proof, doc))) in ids.into_iter().zip(proven).enumerate() {
            // A looked-up `_id` that exists but the filter left out proves nothing.
            if i >= found && doc.is_some() {
                continue;
            }
            proofs.push(ReadProof {
                collection: plan.collection.clone(),
                shard: shard_number,
                id,
                raft_index,
                shard_root: root,
                proof,
                document: doc,
                anchor: None,
                leaf_collection: None,
            });
        }
        anchor_proofs(shard, &mut proofs, anchors)?;
        return Ok((partial, proofs));
    }
    Err(QueryError::Contention {
        attempts: MAX_PROOF_ATTEMPTS,
        last: format!(
            "shard {shard_number} of {} changed under every proven read",
            plan.collection
        ),
    })
}

fn document_id(doc: &Value) -> Result<&str> {
    doc.as_object()
        .and_then(|o| o.get("_id"))
        .and_then(Value::as_str)
        .ok_or_else(|| QueryError::Invalid("a stored document without a string _id".into()))
}

impl<S: ShardedStore> ShardedDatabase<S> {
    /// Plans and runs a query with proofs (see the module's documentation).
    /// Aggregates, GROUP BY and DISTINCT are refused with `proof_unsupported`.
    pub fn query_proven(&self, query: &Query, consistency: ReadConsistency) -> Result<ProvenRows> {
        if let Some(why) = proof_unsupported(query) {
            return Err(QueryError::ProofUnsupported(why.into()));
        }
        let plan = self.plan(query)?;
        let mut doc_plan = plan.clone();
        doc_plan.shard.output = ShardOutput::Documents;
        doc_plan.merge.columns = None;
        let targets = self.targets(&doc_plan.shard)?;
        let answers = crate::sharded::each(targets, |(shard, p)| {
            self.store()
                .execute_partial_proven(shard, &p, consistency)
                .map(|(partial, proofs)| (shard, partial, proofs))
        });
        let mut partials = Vec::with_capacity(answers.len());
        let mut reads = Vec::with_capacity(answers.len());
        let mut by_id: HashMap<String, ReadProof> = HashMap::new();
        let mut absent = Vec::new();
        for answer in answers {
            let (shard, partial, proofs) = answer?;
            let applied = proofs.iter().map(|p| p.raft_index).max().unwrap_or(0);
            reads.push(ShardRead {
                collection: query.collection.clone(),
                shard,
                applied,
            });
            partials.push(partial);
            for mut p in proofs {
                p.shard = shard;
                if p.document.is_some() {
                    by_id.insert(p.id.clone(), p);
                } else {
                    absent.push(p);
                }
            }
        }
        let docs = merge(&doc_plan, partials)?;
        let mut rows = Vec::with_capacity(docs.rows.len());
        let mut proofs = Vec::with_capacity(docs.rows.len());
        for doc in &docs.rows {
            let id = document_id(doc)?;
            let proof = by_id.get(id).cloned().ok_or_else(|| {
                QueryError::Malformed(format!("shard answered _id {id:?} without its proof"))
            })?;
            rows.push(project_document(query, doc)?);
            proofs.push(proof);
        }
        absent.sort_by(|a, b| a.id.cmp(&b.id));
        let columns = plan.merge.columns.clone().unwrap_or(docs.columns);
        Ok(ProvenRows {
            rows: Rows { columns, rows },
            proofs,
            absent,
            reads,
        })
    }
}
