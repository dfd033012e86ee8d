//! Verifiable reads: the proof bundle a node returns beside each document it
//! serves, and the checks a client that trusts only the chain runs on it.
//!
//! A [`ReadProof`] carries the whole stored document, its proof to the shard
//! root at a raft index (`docs/merkle.md`), and, when the shard was anchored
//! since the document last changed, the shard leaf's proof to the anchored
//! cluster root of an epoch ([`AnchorProof`]). Without that it is
//! *unanchored*: it proves the document against the replica's current root,
//! which nothing outside the replica vouches for.
//!
//! The order of the checks ([`ReadProof::verify`]):
//! 1. the bundle is self-consistent: the proof names the bundle's collection
//!    and `_id`, the document's `_id` is that `_id`;
//! 2. document → shard root (inclusion), or the `_id`'s absence (non-inclusion);
//! 3. shard leaf (collection, shard, raft index, shard root) → cluster root
//!    ([`LeafProof::verify_anchored`]);
//! 4. that cluster root, epoch and leaf count are those of the anchor the
//!    caller read from the chain itself, never from the node.
//!
//! [`verify_rows`] then ties a reply's rows to the proven documents.

use serde::{Deserialize, Serialize};
use stratosdb_proof::{Proof, Value, canonical_json};

use crate::{AnchorPayload, Hash, LeafProof, ShardLeaf, VerifyError};

/// The proof that ties one served document (or one absent `_id`) to a shard
/// root and, when anchored, to an epoch's cluster root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadProof {
    pub collection: String,
    pub shard: u32,
    pub id: String,
    /// The raft index the shard root is the root at.
    pub raft_index: u64,
    #[serde(with = "crate::hex_serde::hash")]
    pub shard_root: Hash,
    /// Inclusion of `document`, or non-inclusion of `id` (`document` null).
    pub proof: Proof,
    /// The whole stored document, `_id` included (a row may be a projection of it).
    pub document: Option<Value>,
    /// The shard leaf's proof to an anchored cluster root; `None`: unanchored.
    pub anchor: Option<AnchorProof>,
    /// The collection the shard's leaf names, when it is not `collection`:
    /// an embedded database's one shard holds every collection, and its
    /// leaf names none (`""`). Absent (the cluster's case): `collection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_collection: Option<String>,
}

/// Where a shard root was anchored: the epoch, the cluster root the node
/// claims for it, where the anchor is on the chain, and the leaf's proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorProof {
    pub epoch: u64,
    #[serde(with = "crate::hex_serde::hash")]
    pub cluster_root: Hash,
    /// The chain reference (`ledger:HEIGHT:HASH` or `evm:CHAINID:0xTX`) the
    /// client reads the anchor from.
    pub reference: String,
    pub leaf_proof: LeafProof,
}

/// What a verified proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Under the cluster root anchored at this epoch.
    Anchored { epoch: u64 },
    /// Under the replica's root at `raft_index` only.
    Unanchored { raft_index: u64 },
}

impl ReadProof {
    /// The shard leaf this proof claims: what an anchor committed to.
    pub fn leaf(&self) -> ShardLeaf {
        ShardLeaf {
            collection: self
                .leaf_collection
                .clone()
                .unwrap_or_else(|| self.collection.clone()),
            shard: self.shard,
            raft_index: self.raft_index,
            root: self.shard_root,
        }
    }

    /// Steps 1 and 2: the bundle is consistent and its document (or the
    /// absence of its `_id`) is under `shard_root`. Says nothing about
    /// whether that root is genuine.
    pub fn verify_shard(&self) -> Result<(), VerifyError> {
        let bad = |why: String| Err(VerifyError::ReadProof(why));
        let (pc, pid) = match &self.proof {
            Proof::Inclusion(p) => (&p.collection, &p.id),
            Proof::NonInclusion(p) => (&p.collection, &p.id),
        };
        if *pc != self.collection || *pid != self.id {
            return bad(format!(
                "the proof is for {pc}/{pid}, the bundle for {}/{}",
                self.collection, self.id
            ));
        }
        if let Some(doc) = &self.document {
            let id = doc
                .as_object()
                .and_then(|o| o.get("_id"))
                .and_then(Value::as_str);
            if id != Some(self.id.as_str()) {
                return bad(format!("the document's _id is not {:?}", self.id));
            }
        }
        self.proof
            .verify(&self.shard_root, self.document.as_ref())?;
        Ok(())
    }

    /// All four steps against `anchor`, the payload the caller read from the
    /// chain at `self.anchor.reference`; an unanchored proof is refused.
    ///
    /// ```
    /// use stratosdb_verifier::read_proof::{AnchorProof, ReadProof};
    /// use stratosdb_verifier::proof::{hash, InclusionProof, Proof, Value};
    /// use stratosdb_verifier::{cluster_root, AnchorPayload, LeafProof, ShardLeaf};
    /// let doc = Value::from_json_str(r#"{"_id":"a","n":1}"#).unwrap();
    /// let shard_root = hash::leaf_hash(&hash::key_hash("c", "a"), &hash::doc_hash(&doc));
    /// let leaves = vec![ShardLeaf { collection: "c".into(), shard: 0, raft_index: 7, root: shard_root }];
    /// let anchor = AnchorPayload { cluster_id: [1; 32], epoch: 2, cluster_root: cluster_root(&leaves), leaf_count: 1, previous: [0; 32] };
    /// let bundle = ReadProof {
    ///     collection: "c".into(), shard: 0, id: "a".into(), raft_index: 7, shard_root,
    ///     proof: Proof::Inclusion(InclusionProof { collection: "c".into(), id: "a".into(), levels: vec![] }),
    ///     document: Some(doc),
    ///     anchor: Some(AnchorProof { epoch: 2, cluster_root: anchor.cluster_root, reference: "ledger:2:00".into(), leaf_proof: LeafProof::new(&leaves, 0).unwrap() }),
    ///     leaf_collection: None,
    /// };
    /// bundle.verify_anchored(&anchor).unwrap();
    /// ```
    pub fn verify_anchored(&self, anchor: &AnchorPayload) -> Result<(), VerifyError> {
        let Some(claim) = &self.anchor else {
            return Err(VerifyError::Unanchored(self.describe()));
        };
        if claim.epoch != anchor.epoch {
            return Err(VerifyError::ReadProof(format!(
                "{} claims epoch {}, the chain's anchor is epoch {}",
                self.describe(),
                claim.epoch,
                anchor.epoch
            )));
        }
        if claim.cluster_root != anchor.cluster_root {
            return Err(VerifyError::ReadProof(format!(
                "{} claims cluster root {} for epoch {}, the chain holds {}",
                self.describe(),
                hex::encode(claim.cluster_root),
                anchor.epoch,
                hex::encode(anchor.cluster_root)
            )));
        }
        self.verify_shard()?;
        claim.leaf_proof.verify_anchored(&self.leaf(), anchor)
    }

    /// Verifies an anchored proof against `anchor` (which must be given), or an
    /// unanchored one with steps 1–2 only (`anchor` must be `None`).
    pub fn verify(&self, anchor: Option<&AnchorPayload>) -> Result<Verified, VerifyError> {
        match (&self.anchor, anchor) {
            (Some(claim), Some(payload)) => {
                self.verify_anchored(payload)?;
                Ok(Verified::Anchored { epoch: claim.epoch })
            }
            (None, None) => {
                self.verify_shard()?;
                Ok(Verified::Unanchored {
                    raft_index: self.raft_index,
                })
            }
            (Some(_), None) => Err(VerifyError::ReadProof(format!(
                "{} is anchored: verify it against the chain's anchor",
                self.describe()
            ))),
            (None, Some(_)) => Err(VerifyError::Unanchored(self.describe())),
        }
    }

    /// `collection/shard/_id at raft index N`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} _id {:?} at raft index {}",
            self.collection, self.shard, self.id, self.raft_index
        )
    }
}

/// Checks that a reply's rows are what its proofs prove: as many rows as
/// proofs, each an inclusion proof of `collection` whose document, passed
/// through `project` (the query's projection; the identity for whole
/// documents), equals the row in canonical form. Proofs themselves are
/// verified by [`ReadProof::verify`].
pub fn verify_rows(
    collection: &str,
    rows: &[Value],
    proofs: &[ReadProof],
    project: &dyn Fn(&Value) -> Result<Value, String>,
) -> Result<(), VerifyError> {
    if rows.len() != proofs.len() {
        return Err(VerifyError::ReadProof(format!(
            "{} rows but {} proofs",
            rows.len(),
            proofs.len()
        )));
    }
    for (i, (row, proof)) in rows.iter().zip(proofs).enumerate() {
        if proof.collection != collection {
            return Err(VerifyError::ReadProof(format!(
                "row {i}: a proof for collection {:?}, the query read {collection:?}",
                proof.collection
            )));
        }
        let Some(doc) = &proof.document else {
            return Err(VerifyError::ReadProof(format!(
                "row {i}: its proof proves no document"
            )));
        };
        let projected =
            project(doc).map_err(|e| VerifyError::ReadProof(format!("row {i}: {e}")))?;
        if canonical_json(&projected) != canonical_json(row) {
            return Err(VerifyError::ReadProof(format!(
                "row {i} is not the projection of the proven document {}",
                proof.describe()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
