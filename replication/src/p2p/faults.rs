//! Test-only fault injection: a set of peers the transport cuts itself off
//! from.
//!
//! Processes on one loopback interface cannot be partitioned by the network,
//! so the transport does it to itself: with a node in the drop set, every
//! raft batch, large payload and rpc call to it is dropped (calls fail at
//! once as `Unreachable`), and everything that arrives from it (raft frames,
//! large payloads, rpc streams) is dropped too. Setting the same set on both
//! sides makes a two-sided partition. The set is empty unless a test fills
//! it; a node only exposes it with `stratosdb node --fault-injection`.
//!
//! Every path that moves bytes between members must ask
//! [`FaultSwitch::drops`] before sending and on delivery (new protocols too).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::NodeId;

/// The shared set of peers cut off; cheap to clone (one set behind an `Arc`).
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Whether the set is non-empty: the common case (no faults) costs one
    /// atomic load per message instead of a lock.
    any: AtomicBool,
    dropped: RwLock<HashSet<NodeId>>,
}

impl FaultSwitch {
    /// Replaces the set of peers whose traffic is dropped (empty: heals).
    pub fn set_dropped(&self, nodes: HashSet<NodeId>) {
        let mut dropped = self.inner.dropped.write();
        self.inner.any.store(!nodes.is_empty(), Ordering::Release);
        *dropped = nodes;
    }

    /// The peers whose traffic is dropped now.
    pub fn dropped(&self) -> HashSet<NodeId> {
        self.inner.dropped.read().clone()
    }

    /// Whether traffic to and from `node` is dropped now.
    pub fn drops(&self, node: NodeId) -> bool {
        self.inner.any.load(Ordering::Acquire) && self.inner.dropped.read().contains(&node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_replaced_and_healed() {
        let switch = FaultSwitch::default();
        assert!(!switch.drops(1));
        switch.set_dropped(HashSet::from([1, 2]));
        let shared = switch.clone();
        assert!(shared.drops(1) && shared.drops(2) && !shared.drops(3));
        switch.set_dropped(HashSet::from([3]));
        assert!(!shared.drops(1) && shared.drops(3));
        assert_eq!(shared.dropped(), HashSet::from([3]));
        switch.set_dropped(HashSet::new());
        assert!(!shared.drops(3));
        assert!(shared.dropped().is_empty());
    }
}
