//! Progress of the snapshot transfers of a node, for other threads to read
//! without a round trip through the loop ([`crate::RaftNode::snapshot_transfers`]),
//! and the log lines that report them: one at the start, one every tenth,
//! one at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::SnapshotKey;
use crate::{GroupId, NodeId};

/// Which way a snapshot moves, seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferDirection {
    /// This node fetches it.
    In,
    /// This node serves it.
    Out,
}

/// One snapshot transfer in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotTransfer {
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    pub direction: TransferDirection,
    /// The raft index the snapshot stands at.
    pub index: u64,
    pub chunks_done: u32,
    pub chunks_total: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Seconds since the transfer started.
    pub elapsed_secs: f64,
}

struct Entry {
    key: SnapshotKey,
    transfer: SnapshotTransfer,
    started: Instant,
    /// Bytes a resume kept: not moved by this transfer.
    bytes_at_start: u64,
    last_activity: Instant,
    /// Tenths of the bytes already reported in the log.
    logged_tenths: u64,
}

/// The node's transfers, by (group, peer, direction).
#[derive(Default)]
pub(crate) struct Transfers {
    entries: RwLock<HashMap<(GroupId, NodeId, TransferDirection), Entry>>,
}

fn peer_of(t: &SnapshotTransfer) -> NodeId {
    match t.direction {
        TransferDirection::In => t.from,
        TransferDirection::Out => t.to,
    }
}

fn rate_mib_s(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / (1 << 20) as f64 / since.elapsed().as_secs_f64().max(1e-3)
}

impl Transfers {
    /// Records a transfer that starts (or replaces the group's transfer with
    /// the same peer). `bytes_done`/`chunks_done` are what a resume kept.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &self,
        key: SnapshotKey,
        from: NodeId,
        to: NodeId,
        direction: TransferDirection,
        chunks_total: u32,
        bytes_total: u64,
        chunks_done: u32,
        bytes_done: u64,
    ) {
        let transfer = SnapshotTransfer {
            group: key.group,
            from,
            to,
            direction,
            index: key.index,
            chunks_done,
            chunks_total,
            bytes_done,
            bytes_total,
            elapsed_secs: 0.0,
        };
        tracing::info!(
            group = key.group,
            from,
            to,
            ?direction,
            index = key.index,
            chunks = chunks_total,
            bytes = bytes_total,
            resumed_at_chunk = chunks_done,
            "snapshot transfer started"
        );
        let now = Instant::now();
        let logged_tenths = (bytes_done * 10).checked_div(bytes_total).unwrap_or(0);
        let peer = peer_of(&transfer);
        self.entries.write().insert(
            (key.group, peer, direction),
            Entry {
                key,
                transfer,
                started: now,
                bytes_at_start: bytes_done,
                last_activity: now,
                logged_tenths,
            },
        );
    }

    /// A chunk moved for the transfer of `key` with `peer`: `chunks_done`
    /// and `bytes_done` are how far it is now (they only grow).
    pub fn chunk_done(
        &self,
        key: &SnapshotKey,
        peer: NodeId,
        direction: TransferDirection,
        chunks_done: u32,
        bytes_done: u64,
    ) {
        let mut entries = self.entries.write();
        let Some(e) = entries.get_mut(&(key.group, peer, direction)) else {
            return;
        };
        if e.key != *key {
            return;
        }
        e.last_activity = Instant::now();
        let t = &mut e.transfer;
        t.chunks_done = t.chunks_done.max(chunks_done);
        t.bytes_done = t.bytes_done.max(bytes_done);
        let tenths = (t.bytes_done * 10).checked_div(t.bytes_total).unwrap_or(10);
        if tenths > e.logged_tenths && tenths < 10 {
            e.logged_tenths = tenths;
            tracing::info!(
                group = t.group,
                peer,
                ?direction,
                percent = tenths * 10,
                bytes = t.bytes_done,
                of = t.bytes_total,
                mib_per_s = rate_mib_s(t.bytes_done.saturating_sub(e.bytes_at_start), e.started),
                "snapshot transfer progress"
            );
        }
    }

    /// Ends the transfer with `peer` (whatever snapshot it was).
    pub fn end(&self, group: GroupId, peer: NodeId, direction: TransferDirection, outcome: &str) {
        if let Some(e) = self.entries.write().remove(&(group, peer, direction)) {
            let t = &e.transfer;
            tracing::info!(
                group,
                peer,
                ?direction,
                index = t.index,
                outcome,
                chunks = t.chunks_done,
                bytes = t.bytes_done,
                of = t.bytes_total,
                secs = e.started.elapsed().as_secs_f64(),
                mib_per_s = rate_mib_s(t.bytes_done.saturating_sub(e.bytes_at_start), e.started),
                "snapshot transfer ended"
            );
        }
    }

    /// The snapshot an outgoing transfer to `peer` serves, and how long it
    /// has gone without a chunk fetched.
    pub fn outgoing(&self, group: GroupId, peer: NodeId) -> Option<(SnapshotKey, Duration)> {
        self.entries
            .read()
            .get(&(group, peer, TransferDirection::Out))
            .map(|e| (e.key, e.last_activity.elapsed()))
    }

    pub fn list(&self) -> Vec<SnapshotTransfer> {
        let mut all: Vec<SnapshotTransfer> = self
            .entries
            .read()
            .values()
            .map(|e| SnapshotTransfer {
                elapsed_secs: e.started.elapsed().as_secs_f64(),
                ..e.transfer.clone()
            })
            .collect();
        all.sort_by_key(|t| (t.group, t.from, t.to));
        all
    }
}
