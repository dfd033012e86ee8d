//! What nodes ask each other over libp2p's `/stratosdb/rpc/2` (members
//! only): the forwarding of a request to the replica that can serve it.
//! bincode 2 on both ways; a request or reply that does not decode is
//! answered (or treated) as a `malformed` error.

use bincode::{Decode, Encode};
use stratosdb_engine::CollectionInfo;
use stratosdb_replication::GroupId;

/// Largest RPC message decoded (the transport bounds frames as well).
const MAX_RPC_BYTES: usize = 64 << 20;

#[derive(Debug, Encode, Decode)]
pub enum RpcRequest {
    /// Propose an engine command (encoded) to `group`; the receiver must lead it.
    Propose { group: GroupId, command: Vec<u8> },
    /// Run an encoded shard plan on the receiver's replica of `group`, after a
    /// read index when `linearizable`.
    Partial {
        group: GroupId,
        plan: Vec<u8>,
        linearizable: bool,
    },
    /// A collection's catalog in the receiver's replica of `group`.
    Catalog { group: GroupId, collection: String },
    /// The receiver's replicas of these groups: applied index, root, leader.
    Status { groups: Vec<GroupId> },
    /// An encoded `MapCommand`; the receiver must lead the metadata group.
    ChangeMap { command: Vec<u8> },
    /// Mark `group`'s shard for `epoch` (`Op::AnchorMark`) through its raft
    /// group, unless it is marked already; the receiver must lead it.
    AnchorMark { group: GroupId, epoch: u64 },
    /// As `Partial`, with proofs of what the receiver's replica returns
    /// (`shard` is the shard's number, which the proofs name).
    PartialProven {
        group: GroupId,
        shard: u32,
        plan: Vec<u8>,
        linearizable: bool,
    },
    /// A request of a service built on the cluster (Proof of Traffic's
    /// settlement), encoded by that service; see
    /// [`super::ClusterNode::set_extension`].
    Extension(Vec<u8>),
    /// Hand the leadership of `group` to its voter on `to` (the metadata
    /// leader balancing the shard leaders); the receiver must lead it.
    TransferLeader { group: GroupId, to: u64 },
}

/// One replica's state, for `GET /v1/cluster`.
#[derive(Clone, Debug, Encode, Decode)]
pub struct ReplicaStatus {
    pub group: GroupId,
    pub applied: u64,
    pub root: [u8; 32],
    pub leader: Option<u64>,
    /// The group's voters and learners as this replica knows them.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Snapshot transfers of the group in progress on this node.
    pub transfers: Vec<TransferProgress>,
}

/// A snapshot transfer in progress, as the node at one end sees it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TransferProgress {
    /// The node at the other end.
    pub peer: u64,
    /// Fetched by this node (else served by it).
    pub incoming: bool,
    pub bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Encode, Decode)]
pub enum RpcReply {
    /// The command applied: each operation's `_id`, documents affected,
    /// and whether it created its document.
    Applied(Vec<(Option<String>, u64, bool)>),
    Partial {
        partial: Vec<u8>,
        applied: u64,
    },
    Catalog(CollectionInfo),
    Status(Vec<ReplicaStatus>),
    MapChanged,
    /// The receiver does not lead the group (nothing was done); a hint.
    NotLeader {
        leader: Option<u64>,
    },
    /// A failure with its stable code. `retry`: nothing was done and the
    /// same request may succeed later or elsewhere.
    Error {
        code: String,
        message: String,
        retry: bool,
    },
    /// A shard's anchor mark: the raft index it applied at, the root there.
    Mark {
        raft_index: u64,
        root: [u8; 32],
    },
    /// A proven partial: the encoded partial and the proofs' JSON.
    PartialProven {
        partial: Vec<u8>,
        proofs: Vec<u8>,
    },
    /// The extension's reply, encoded by it.
    Extension(Vec<u8>),
    /// Raft started handing the leadership over (it completes, or is
    /// abandoned after an election timeout, on its own).
    LeaderTransferring,
}

impl RpcReply {
    pub fn error(code: &str, message: impl Into<String>, retry: bool) -> RpcReply {
        RpcReply::Error {
            code: code.into(),
            message: message.into(),
            retry,
        }
    }
}

pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    // Encoding owned data into a Vec cannot fail.
    bincode::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, String> {
    let config = bincode::config::standard().with_limit::<MAX_RPC_BYTES>();
    let (value, used) =
        bincode::decode_from_slice(bytes, config).map_err(|e| format!("malformed rpc: {e}"))?;
    if used != bytes.len() {
        return Err(format!(
            "malformed rpc: {} trailing bytes",
            bytes.len() - used
        ));
    }
    Ok(value)
}
