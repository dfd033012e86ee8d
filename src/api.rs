//! The HTTP/JSON API's wire types, shared by the node (which serves them) and
//! the client (which reads them). The paths, fields and status codes are a
//! contract: tests and users rely on them (see the README's "HTTP API").

use serde::{Deserialize, Serialize};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (the default).
    #[default]
    Linearizable,
    /// Any replica's state, possibly behind the leader's; on a single node it
    /// is the node's own state, which is also linearizable.
    Follower,
}

/// `POST /v1/sql`'s body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SqlRequest {
    pub sql: String,
    #[serde(default)]
    pub consistency: Consistency,
    /// Ask for `columns` (row results) and `message` (DDL) in the reply too:
    /// what the shell needs to print a result as the embedded shell does.
    /// Off by default, so that the reply is `{"rows", "affected"}` alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detail: bool,
    /// Ask for proofs: `proofs` (one per row) and `absent` in the reply
    /// (a SELECT without aggregates, GROUP BY or DISTINCT only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proof: bool,
}

/// `GET /v1/cluster`'s reply: the cluster map as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The answering node's id.
    #[serde(rename = "self")]
    pub self_id: String,
    pub nodes: Vec<NodeInfo>,
    pub collections: Vec<CollectionPlacement>,
    pub shards: Vec<ShardInfo>,
    /// Replica moves in progress (self-healing, rebalancing, draining).
    #[serde(default)]
    pub moves: Vec<MoveInfo>,
    /// The cluster's id (64 hex digits), which its chain anchors carry;
    /// `null` until the metadata group has recorded it.
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// One replica move: a new replica on `to` is built (`learner`), made a
/// voter (`promoting`), then the one on `from` removed (`removing`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveInfo {
    pub collection: String,
    pub shard: u32,
    /// The node giving up its replica (`null`: a replica is added).
    pub from: Option<String>,
    pub to: String,
    /// `learner`, `promoting` or `removing`.
    pub phase: String,
    /// The new replica's applied index.
    pub applied: u64,
    /// The leader's applied index.
    pub target: u64,
    /// Bytes of the snapshot that builds the new replica moved so far, and
    /// its size (both 0 when no transfer is in flight).
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub total_bytes: u64,
}

/// `POST /v1/cluster/remove-node`'s body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveNodeRequest {
    /// The node's id (16 hex digits, as `GET /v1/cluster` shows it).
    pub node: String,
}

/// `POST /v1/cluster/remove-node`'s reply: where the removal stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveNodeReply {
    pub node: String,
    /// `draining` (replicas still on it) or `removed` (gone from the map).
    pub state: String,
    /// Replicas still placed on the node.
    pub replicas: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// The peer-to-peer address (`null` for a node without one).
    pub p2p: Option<String>,
    /// The HTTP API's address, `HOST:PORT`.
    pub http: String,
    /// The node's zone (`null` when none was given).
    pub zone: Option<String>,
    pub up: bool,
    /// `active`, `down` or `draining`.
    #[serde(default)]
    pub state: String,
    /// The node's ed25519 key (hex): it signs the node's receipts and its
    /// settlement signatures.
    #[serde(default)]
    pub node_key: Option<String>,
    /// The account the node's settled earnings are credited to.
    #[serde(default)]
    pub earnings_account: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionPlacement {
    pub name: String,
    pub shards: u32,
    pub replicas: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub collection: String,
    pub shard: u32,
    /// The leader's node id, `null` while there is none.
    pub leader: Option<String>,
    pub replicas: Vec<ReplicaInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub node: String,
    /// The raft index the replica has applied (exact for the answering
    /// node's own replicas).
    pub applied: u64,
    /// The replica's Merkle root at `applied`, 64 hex digits.
    pub root: String,
    /// `voter` or `learner` (a replica being built by a move).
    #[serde(default)]
    pub role: String,
}

/// `POST /v1/cluster/join`'s body: a new node asks a member to admit it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The cluster's join token (printed at bootstrap).
    pub token: String,
    /// The new node's libp2p PeerId.
    pub peer_id: String,
    /// Its p2p address, `HOST:PORT`.
    pub p2p: String,
    /// Its HTTP API's address, `HOST:PORT`.
    pub http: String,
    #[serde(default)]
    pub zone: Option<String>,
}

/// `POST /v1/cluster/join`'s reply: the members to connect to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_id: String,
    pub p2p: String,
}

/// `GET /v1/anchors`'s reply: the cluster's epochs, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorsReply {
    /// The cluster's id (64 hex digits; `null` before it is recorded).
    pub cluster_id: Option<String>,
    /// The chain this node anchors on (`null` with `--anchor-interval off`).
    pub chain: Option<ChainBody>,
    pub anchors: Vec<AnchorInfo>,
}

/// Which chain: `kind` `local` or `stratos`, its EVM chain id, and where
/// it is (the ledger's folder or the RPC URL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBody {
    pub kind: String,
    pub chain_id: Option<u64>,
    pub location: String,
}

/// One epoch's anchor as recorded in the metadata group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorInfo {
    pub epoch: u64,
    /// `sealing`, `submitted`, `anchored`, `failed` or `skipped`.
    pub status: String,
    /// 64 hex digits, once the epoch is sealed.
    pub cluster_root: Option<String>,
    /// The chain reference in its text form (`ledger:HEIGHT:HASH`,
    /// `evm:CHAINID:0xHASH`), once anchored.
    pub reference: Option<String>,
    /// The hash of the last anchored epoch's reference that this epoch's
    /// payload names (64 hex digits; zeros for the first).
    pub previous: String,
    /// Why the epoch failed or was skipped.
    pub reason: Option<String>,
    pub leaves: Vec<LeafInfo>,
}

/// One shard's leaf of an epoch: its root at its anchor mark's raft index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafInfo {
    pub collection: String,
    pub shard: u32,
    pub raft_index: u64,
    /// 64 hex digits.
    pub root: String,
}

/// `GET /v1/anchors`'s query: `?limit=N` (newest first) or `?epoch=E`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorsQuery {
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// The body of every error reply: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code (`syntax_error`, `collection_not_found`, ...).
    pub code: String,
    pub message: String,
}

/// Documents per page of a shard export when `limit` is not given.
pub const EXPORT_DEFAULT_LIMIT: u64 = 1_000;
/// The most documents (or changes) a page of a shard export holds.
pub const EXPORT_MAX_LIMIT: u64 = 10_000;
/// A page of a shard export stops once its documents' stored records pass
/// this many bytes (it holds at least one document).
pub const EXPORT_PAGE_BYTES: usize = 4 << 20;

/// Which part of a shard a page of its export holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportPart {
    /// The documents, in `_id` order.
    #[default]
    Documents,
    /// The keys changed since the shard's latest anchor mark, with their
    /// document hashes at the mark, in key-hash order.
    Changes,
}

/// `GET /v1/collections/{c}/shards/{n}/export`'s query: `?part=documents`
/// (the default) or `changes`, `after` (the `next` of the page before: an
/// `_id`, or a key hash in hex), `limit` (1000 by default, at most 10000).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    #[serde(default)]
    pub part: ExportPart,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
}

/// A shard's anchor mark: the epoch, the raft index of the mark's entry and
/// the shard's root as of it (64 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkInfo {
    pub epoch: u64,
    pub raft_index: u64,
    pub root: String,
}

/// One page of a shard export, read from the answering node's own replica
/// in one consistent state: `applied` and `root` (64 hex digits) are the
/// replica's raft index and root as of the page, `mark` its latest anchor
/// mark. `next` is the `after` of the part's next page (`null`: the part
/// is done).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardExport {
    pub collection: String,
    pub shard: u32,
    /// The node whose replica answered.
    pub node: String,
    pub applied: u64,
    pub root: String,
    pub mark: Option<MarkInfo>,
    #[serde(default)]
    pub documents: Vec<ExportedDocument>,
    #[serde(default)]
    pub changes: Vec<ExportedChange>,
    pub next: Option<String>,
}

/// A stored document: `_id`, the hash its record holds (64 hex digits; the
/// shard's trie is built from it) and the document as its bytes decode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedDocument {
    #[serde(rename = "_id")]
    pub id: String,
    pub hash: String,
    pub document: stratosdb_engine::Value,
}

/// A key changed since the latest anchor mark: its key hash and its
/// document hash at the mark (`null`: the key was absent then).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedChange {
    pub key_hash: String,
    pub hash: Option<String>,
}
