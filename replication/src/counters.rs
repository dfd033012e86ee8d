//! What a node's loop publishes for other threads without a round trip
//! through it: totals since the process started (for the metrics), and each
//! group's last known leader (for routing), and the snapshot transfers in
//! progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::RwLock;

use crate::snapshot::Transfers;
use crate::{GroupId, NodeId};

#[derive(Default)]
pub struct Counters {
    /// Each group's leader as its replica here last saw it (0: none known).
    pub leaders: RwLock<HashMap<GroupId, NodeId>>,
    /// Commands proposed by this node as leader.
    pub proposals: AtomicU64,
    /// Times a group on this node saw its leader change.
    pub leader_changes: AtomicU64,
    /// Leaderships this node handed to the node sending most of a group's
    /// requests (`locality.rs`).
    pub workload_hand_overs: AtomicU64,
    /// Bytes of snapshot chunks this node served to lagging replicas.
    pub snapshot_bytes_sent: AtomicU64,
    /// Bytes of snapshot chunks this node fetched (and verified).
    pub snapshot_bytes_received: AtomicU64,
    /// Snapshots this node installed.
    pub snapshots_installed: AtomicU64,
    /// Snapshot transfers in progress, both ways.
    pub transfers: Transfers,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub proposals: u64,
    pub leader_changes: u64,
    pub workload_hand_overs: u64,
    pub snapshot_bytes_sent: u64,
    pub snapshot_bytes_received: u64,
    pub snapshots_installed: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        CounterValues {
            proposals: self.proposals.load(Relaxed),
            leader_changes: self.leader_changes.load(Relaxed),
            workload_hand_overs: self.workload_hand_overs.load(Relaxed),
            snapshot_bytes_sent: self.snapshot_bytes_sent.load(Relaxed),
            snapshot_bytes_received: self.snapshot_bytes_received.load(Relaxed),
            snapshots_installed: self.snapshots_installed.load(Relaxed),
        }
    }
}
