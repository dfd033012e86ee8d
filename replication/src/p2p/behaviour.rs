//! The swarm's behaviour: membership (the gate), connection limits, the
//! address book dials use, and libp2p-stream for our protocols.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, connection_limits};
use parking_lot::RwLock;

/// The addresses of the members, shared with the transport's handle.
pub(crate) type Addresses = Arc<RwLock<HashMap<PeerId, Vec<Multiaddr>>>>;

/// Answers "where is this peer?" when the swarm dials a PeerId (libp2p-stream
/// dials by PeerId alone when a stream is opened to a peer not connected).
pub(crate) struct AddressBook {
    pub addresses: Addresses,
}

impl NetworkBehaviour for AddressBook {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer
            .and_then(|p| self.addresses.read().get(&p).cloned())
            .unwrap_or_default())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

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

/// Order matters: the gate and the limits refuse a connection before the
/// others see it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub gate: super::gate::Gate,
    pub limits: connection_limits::Behaviour,
    pub addresses: AddressBook,
    pub streams: libp2p_stream::Behaviour,
    pub rpc: super::inbound::RpcInbound,
}
