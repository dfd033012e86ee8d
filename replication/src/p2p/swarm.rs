//! The task that owns the libp2p swarm, and the tasks that accept inbound
//! streams. Nothing here blocks the raft loop: it talks to the node only
//! through the `Inbox`.

use libp2p::futures::StreamExt as _;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, DialError, ListenError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, Swarm};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::gate::GateState;
use super::wire::{self, LargeKind};
use super::{Shared, node_id_of};

/// Where a discovery dial's outcome goes: the PeerId proven, or why not.
pub(crate) type DiscoveryReply = std::sync::mpsc::SyncSender<Result<PeerId, String>>;

/// What the transport's handle asks of the swarm task.
pub(crate) enum Command {
    /// Closes the connections of a peer that stopped being a member.
    Disconnect(PeerId),
    /// Closes the connections of every non-member (the founding gate closed).
    DisconnectStrangers,
    /// Dials an address to learn who answers there.
    Discover(Multiaddr, DiscoveryReply),
}

/// The swarm task's own state.
struct Task {
    gate: Arc<GateState>,
    listening: Option<oneshot::Sender<Multiaddr>>,
    discoveries: HashMap<ConnectionId, DiscoveryReply>,
}

/// Runs the swarm until the handle's command channel closes.
pub(crate) async fn run(
    mut swarm: Swarm<Behaviour>,
    gate: Arc<GateState>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    listening: Option<oneshot::Sender<Multiaddr>>,
) {
    let mut task = Task {
        gate,
        listening,
        discoveries: HashMap::new(),
    };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => task.on_command(&mut swarm, command),
                None => return,
            },
            event = swarm.select_next_some() => task.on_event(&mut swarm, event),
        }
    }
}

impl Task {
    fn on_command(&mut self, swarm: &mut Swarm<Behaviour>, command: Command) {
        match command {
            Command::Disconnect(peer) => {
                let _ = swarm.disconnect_peer_id(peer);
            }
            Command::DisconnectStrangers => {
                let strangers: Vec<PeerId> = swarm
                    .connected_peers()
                    .filter(|p| !self.gate.is_member(p))
                    .copied()
                    .collect();
                for peer in strangers {
                    let _ = swarm.disconnect_peer_id(peer);
                }
            }
            Command::Discover(addr, reply) => {
                // A port of its own: with the listener's port reused, two
                // nodes discovering each other at once would make one TCP
                // connection by simultaneous open, which noise cannot use.
                let opts = DialOpts::unknown_peer_id()
                    .address(addr)
                    .allocate_new_port()
                    .build();
                let id = opts.connection_id();
                // Allowed before the dial starts, so the gate cannot miss it.
                self.gate.discovery.lock().insert(id);
                match swarm.dial(opts) {
                    Ok(()) => {
                        self.discoveries.insert(id, reply);
                    }
                    Err(e) => {
                        self.gate.discovery.lock().remove(&id);
                        let _ = reply.try_send(Err(e.to_string()));
                    }
                }
            }
        }
    }

    fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, event: SwarmEvent<BehaviourEvent>) {
        match &event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(reply) = self.discoveries.remove(connection_id) {
                    let _ = reply.try_send(Ok(*peer_id));
                    // Discovery does not make a member: only members keep a
                    // connection (the node allows the peer, its writer dials).
                    if !self.gate.is_member(peer_id) {
                        swarm.close_connection(*connection_id);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some(reply) = self.discoveries.remove(connection_id) {
                    let found = match (error, peer_id) {
                        // Refused after the handshake (say, by the limits
                        // when already connected): the PeerId is proven.
                        (DialError::Denied { .. }, Some(peer)) => Ok(*peer),
                        (DialError::LocalPeerId { .. }, _) => Ok(*swarm.local_peer_id()),
                        _ => Err(error.to_string()),
                    };
                    let _ = reply.try_send(found);
                }
            }
            _ => {}
        }
        log_event(event, &mut self.listening);
    }
}

fn log_event(
    event: SwarmEvent<BehaviourEvent>,
    listening: &mut Option<oneshot::Sender<Multiaddr>>,
) {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            tracing::debug!(%address, "p2p listening");
            if let Some(tx) = listening.take() {
                let _ = tx.send(address);
            }
        }
        SwarmEvent::IncomingConnectionError {
            error: ListenError::Denied { cause },
            peer_id,
            send_back_addr,
            ..
        } => {
            tracing::warn!(
                peer = ?peer_id,
                from = %send_back_addr,
                reason = %cause,
                "refused a connection: not a cluster member, or over the connection limits"
            );
        }
        SwarmEvent::OutgoingConnectionError {
            peer_id,
            error: DialError::Denied { cause },
            ..
        } => {
            tracing::warn!(
                peer = ?peer_id,
                reason = %cause,
                "refused an outbound connection: not a cluster member, or over the connection limits"
            );
        }
        SwarmEvent::IncomingConnectionError {
            error,
            send_back_addr,
            ..
        } => {
            tracing::debug!(from = %send_back_addr, %error, "inbound connection failed");
        }
        SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
            tracing::debug!(peer = ?peer_id, %error, "dial failed");
        }
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => {
            tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
        }
        SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
            tracing::debug!(peer = %peer_id, cause = ?cause, "connection closed");
        }
        _ => {}
    }
}

/// Whether `peer` may talk to us; logs a refusal. Fault injection's cut
/// peers are refused too (quietly: the test asked for it).
pub(crate) fn admit(shared: &Shared, peer: &PeerId, what: &str) -> bool {
    if !shared.is_member(peer) {
        tracing::warn!(%peer, what, "dropped a stream from a peer that is not a cluster member");
        return false;
    }
    if shared.drops_peer(peer) {
        tracing::debug!(%peer, what, "dropped a stream by fault injection");
        return false;
    }
    true
}

/// Accepts raft streams: one reader task per stream, frames delivered in order.
pub(crate) async fn accept_raft(shared: Arc<Shared>, mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((peer, stream)) = incoming.next().await {
        if admit(&shared, &peer, "raft") {
            tokio::spawn(read_raft(shared.clone(), peer, stream));
        }
    }
}

async fn read_raft(shared: Arc<Shared>, peer: PeerId, mut stream: Stream) {
    let limit = shared.config.raft_frame_limit;
    loop {
        match wire::read_frame(&mut stream, limit).await {
            Ok(Some(frame)) => {
                if !shared.is_member(&peer) {
                    tracing::warn!(%peer, "dropped a batch from a peer no longer a member");
                    return;
                }
                // Cut off by fault injection: the frame is lost, the stream
                // stays (it carries what comes after the heal).
                if shared.drops_peer(&peer) {
                    continue;
                }
                shared.deliver_raft(&peer, &frame);
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "raft stream ended");
                return;
            }
        }
    }
}

/// Accepts large-payload streams, one payload each.
pub(crate) async fn accept_large(
    shared: Arc<Shared>,
    mut incoming: libp2p_stream::IncomingStreams,
) {
    while let Some((peer, mut stream)) = incoming.next().await {
        if !admit(&shared, &peer, "large payload") {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let read = wire::read_large(&mut stream, shared.config.max_large_bytes).await;
            if shared.drops_peer(&peer) {
                return;
            }
            match read {
                Ok((LargeKind::Raft, bytes)) => shared.deliver_raft(&peer, &bytes),
                Ok((LargeKind::Payload, bytes)) => {
                    let handler = shared.large_handler.read().clone();
                    match handler {
                        Some(h) => h(node_id_of(&peer), bytes),
                        None => tracing::debug!(%peer, "large payload with no handler set"),
                    }
                }
                Err(e) => tracing::warn!(%peer, error = %e, "large payload refused"),
            }
        });
    }
}
