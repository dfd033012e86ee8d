//! Inbound `/stratosdb/rpc/2` call streams, through a queue that holds many.
//!
//! libp2p-stream hands inbound streams over through a channel with room for
//! one: a second stream negotiated before the accepting task has run is
//! dropped. Raft and large streams are few and far between, but concurrent
//! calls arrive one round trip apart, and a busy machine misses that (a
//! dropped call looks like a peer that went away). So this behaviour answers
//! the rpc protocol itself and queues streams, up to `RPC_BACKLOG`. Outbound
//! rpc streams still go through libp2p-stream's `Control`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc;

/// Inbound calls waiting for the accepting task; beyond this they are
/// dropped (and logged), which bounds what one peer can queue.
pub(crate) const RPC_BACKLOG: usize = 4096;

pub(crate) type Incoming = mpsc::Receiver<(PeerId, Stream)>;

pub(crate) struct RpcInbound {
    protocol: StreamProtocol,
    tx: mpsc::Sender<(PeerId, Stream)>,
}

impl RpcInbound {
    pub fn new(protocol: StreamProtocol) -> (RpcInbound, Incoming) {
        let (tx, rx) = mpsc::channel(RPC_BACKLOG);
        (RpcInbound { protocol, tx }, rx)
    }

    fn handler(&self, peer: PeerId) -> Handler {
        Handler {
            peer,
            protocol: self.protocol.clone(),
            tx: self.tx.clone(),
        }
    }
}

impl NetworkBehaviour for RpcInbound {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer))
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

/// Per connection: accepts rpc streams and queues them with the peer's id.
pub(crate) struct Handler {
    peer: PeerId,
    protocol: StreamProtocol,
    tx: mpsc::Sender<(PeerId, Stream)>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, Infallible, Infallible>> {
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, e: Infallible) {
        match e {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, DeniedUpgrade, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
            && let Err(e) = self.tx.try_send((self.peer, stream))
        {
            // Dropping the stream resets it: the caller gets `NoAnswer`.
            tracing::warn!(peer = %self.peer, error = %e, "rpc call dropped: too many waiting");
        }
    }
}
