//! Who may hold a connection: members always; anyone while the founding gate
//! is open; and the peer at the other end of a dial made by `discover` (we
//! cannot know its PeerId before the handshake, that is the point).
//!
//! It replaces libp2p's allow list, which refuses non-members both ways and
//! so can neither let a founding peer's discovery dial in nor our own out.
//! The state is shared through an `Arc`, so `allow_peer`, `remove_peer` and
//! `set_founding` take effect at once, without a round trip to the swarm task.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use parking_lot::{Mutex, RwLock};

use super::identity::node_id_of;
use crate::NodeId;

/// The gate's state, shared by the swarm's behaviour and the transport.
#[derive(Default)]
pub(crate) struct GateState {
    /// The members, by node id (the transport's member table).
    pub members: RwLock<HashMap<NodeId, PeerId>>,
    /// While set, connections of non-members are accepted (not their streams).
    pub founding: AtomicBool,
    /// Outbound connections dialed by `discover`, allowed whoever answers.
    pub discovery: Mutex<HashSet<ConnectionId>>,
}

impl GateState {
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.members.read().get(&node_id_of(peer)) == Some(peer)
    }

    pub fn is_founding(&self) -> bool {
        self.founding.load(Ordering::Acquire)
    }
}

/// Why the gate refused a connection (shown in the swarm's warning).
#[derive(Debug, thiserror::Error)]
#[error("peer {peer} is not a cluster member and the founding gate is closed")]
pub(crate) struct NotAMember {
    pub peer: PeerId,
}

/// The behaviour: decides on established connections, nothing else.
pub(crate) struct Gate {
    pub state: Arc<GateState>,
}

impl Gate {
    fn admit(&self, peer: PeerId, discovery: bool) -> Result<(), ConnectionDenied> {
        if discovery || self.state.is_founding() || self.state.is_member(&peer) {
            Ok(())
        } else {
            Err(ConnectionDenied::new(NotAMember { peer }))
        }
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer, false)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let discovery = self.state.discovery.lock().contains(&connection);
        self.admit(peer, discovery)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // A discovery dial's permission ends with its connection.
        let done = match event {
            FromSwarm::DialFailure(f) => Some(f.connection_id),
            FromSwarm::ConnectionClosed(c) => Some(c.connection_id),
            _ => None,
        };
        if let Some(id) = done {
            self.state.discovery.lock().remove(&id);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
