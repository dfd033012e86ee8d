//! The task that owns the libp2p swarm, and the tasks that accept inbound
//! streams. Nothing here blocks the raft loop: it talks to the node only
//! through the `Inbox`.

use libp2p::futures::StreamExt as _;
use libp2p::swarm::{ListenError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, Swarm};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::wire::{self, LargeKind};
use super::{Shared, node_id_of};

/// What the transport's handle asks of the swarm task.
pub(crate) enum Command {
    Allow(PeerId),
    Disallow(PeerId),
}

/// Runs the swarm until the handle's command channel closes.
pub(crate) async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut listening: Option<oneshot::Sender<Multiaddr>>,
) {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Allow(peer)) => {
                    swarm.behaviour_mut().members.allow_peer(peer);
                }
                Some(Command::Disallow(peer)) => {
                    // Also closes the peer's open connections.
                    swarm.behaviour_mut().members.disallow_peer(peer);
                }
                None => return,
            },
            event = swarm.select_next_some() => on_event(event, &mut listening),
        }
    }
}

fn on_event(event: SwarmEvent<BehaviourEvent>, listening: &mut Option<oneshot::Sender<Multiaddr>>) {
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

/// Whether `peer` may talk to us; logs a refusal.
fn admit(shared: &Shared, peer: &PeerId, what: &str) -> bool {
    let ok = shared.is_member(peer);
    if !ok {
        tracing::warn!(%peer, what, "dropped a stream from a peer that is not a cluster member");
    }
    ok
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
            match wire::read_large(&mut stream, shared.config.max_large_bytes).await {
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
