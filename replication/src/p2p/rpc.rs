//! `/stratosdb/rpc/1`: request/response between members, one stream per
//! call (yamux multiplexes them, so calls to one peer run side by side). The
//! caller writes one frame `len: u32 BE, bytes`, the answerer one frame back
//! and closes. Both sides check a frame's length against `max_rpc_bytes`
//! before allocating. An answerer with no handler (or that refuses the
//! request) closes the stream with no frame: the caller gets `NoAnswer`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::{PeerId, Stream};
use tokio::time::Instant;

use super::wire;
use super::{RPC_PROTOCOL, Shared, node_id_of};
use crate::{NodeId, ReplicationError, Result};

/// Answers incoming calls: caller's node id and request in, answer out.
pub type RpcHandler = Arc<dyn Fn(NodeId, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// The largest frame the wire can carry, whatever the configuration says.
pub(crate) fn frame_limit(configured: usize) -> usize {
    configured.min(u32::MAX as usize)
}

/// One call: opens a stream (dialing if needed, retrying until the deadline:
/// a peer that restarted is found again), sends the request, reads the answer.
pub(crate) async fn call(
    shared: Arc<Shared>,
    mut control: libp2p_stream::Control,
    to: NodeId,
    peer: PeerId,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    // The request's size was checked by the transport before it got here.
    let limit = frame_limit(shared.config.max_rpc_bytes);
    let deadline = deadline_after(timeout);
    let mut stream = open(&mut control, &shared, to, peer, deadline).await?;
    let exchange = async {
        wire::write_frame(&mut stream, &request)
            .await
            .map_err(|e| no_answer(to, "sending the request", e))?;
        stream
            .flush()
            .await
            .map_err(|e| no_answer(to, "sending the request", e))?;
        read_answer(&mut stream, to, limit).await
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        // Cut off by fault injection while the call ran: the answer is lost
        // (the request may have been handled).
        Ok(Ok(_)) if shared.faults.drops(to) => Err(ReplicationError::NoAnswer {
            node: to,
            reason: "the answer was dropped (fault injection)".into(),
        }),
        Ok(answer) => answer,
        Err(_) => Err(ReplicationError::CallTimeout { node: to, timeout }),
    }
}

/// Opens the call's stream. Only opening is retried: once a byte of the
/// request is out, retrying could run it twice, which is the caller's call.
async fn open(
    control: &mut libp2p_stream::Control,
    shared: &Shared,
    to: NodeId,
    peer: PeerId,
    deadline: Instant,
) -> Result<Stream> {
    let mut pause = shared.config.backoff_min;
    let mut last = String::from("no connection");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ReplicationError::Unreachable {
                node: to,
                reason: last,
            });
        }
        // Each attempt is bounded: an open waiting on a dial that never
        // started (or a dead connection) must not eat the whole budget.
        let attempt = (deadline - now).min(shared.config.open_timeout);
        match tokio::time::timeout(attempt, control.open_stream(peer, RPC_PROTOCOL)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no stream within {attempt:?}"),
        }
        tracing::debug!(node = to, reason = %last, "rpc stream not opened; retrying");
        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
        pause = (pause * 2).min(shared.config.backoff_max);
    }
}

/// `now + timeout`, without overflowing on an "infinite" timeout.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

fn no_answer(to: NodeId, what: &str, e: io::Error) -> ReplicationError {
    ReplicationError::NoAnswer {
        node: to,
        reason: format!("{what}: {e}"),
    }
}

/// Reads the answer frame, refusing one over `limit` before allocating.
async fn read_answer(stream: &mut Stream, to: NodeId, limit: usize) -> Result<Vec<u8>> {
    let mut head = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut head).await {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            ReplicationError::NoAnswer {
                node: to,
                reason: "the stream was closed without an answer (no handler set, \
                         request refused, or the peer went away)"
                    .into(),
            }
        } else {
            no_answer(to, "reading the answer", e)
        });
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > limit {
        return Err(ReplicationError::MessageTooLarge { size: len, limit });
    }
    let mut answer = vec![0u8; len];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|e| no_answer(to, "reading the answer", e))?;
    Ok(answer)
}

/// Accepts calls; each is answered on a task of its own, so a slow handler
/// holds up only its own caller.
pub(crate) async fn accept(shared: Arc<Shared>, mut incoming: super::inbound::Incoming) {
    while let Some((peer, stream)) = incoming.recv().await {
        // Dropping the stream resets it: a stranger learns nothing.
        if super::swarm::admit(&shared, &peer, "rpc") {
            tokio::spawn(answer(shared.clone(), peer, stream));
        }
    }
}

async fn answer(shared: Arc<Shared>, peer: PeerId, mut stream: Stream) {
    let limit = frame_limit(shared.config.max_rpc_bytes);
    let request = match wire::read_frame(&mut stream, limit).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "rpc request refused");
            return;
        }
    };
    if !shared.is_member(&peer) {
        tracing::warn!(%peer, "dropped a request from a peer no longer a member");
        return;
    }
    if shared.drops_peer(&peer) {
        return;
    }
    let Some(handler) = shared.rpc_handler.read().clone() else {
        tracing::debug!(%peer, "rpc request before a handler was set");
        let _ = stream.close().await;
        return;
    };
    let from = node_id_of(&peer);
    // The handler may block (disk, raft waits): keep it off the workers that
    // drive the swarm and the raft streams.
    let answer = match tokio::task::spawn_blocking(move || handler(from, request)).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "rpc handler failed; no answer");
            return;
        }
    };
    if shared.drops_peer(&peer) {
        return;
    }
    let sent = async {
        wire::write_frame(&mut stream, &answer).await?;
        stream.flush().await?;
        stream.close().await
    };
    if let Err(e) = sent.await {
        tracing::debug!(%peer, bytes = answer.len(), error = %e, "rpc answer not delivered");
    }
}

/// A call to ourselves: the handler, without the network.
pub(crate) async fn call_local(
    shared: Arc<Shared>,
    to: NodeId,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let Some(handler) = shared.rpc_handler.read().clone() else {
        return Err(ReplicationError::NoAnswer {
            node: to,
            reason: "no rpc handler is set".into(),
        });
    };
    let task = tokio::task::spawn_blocking(move || handler(to, request));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(ReplicationError::NoAnswer {
            node: to,
            reason: format!("the handler failed: {e}"),
        }),
        Err(_) => Err(ReplicationError::CallTimeout { node: to, timeout }),
    }
}
