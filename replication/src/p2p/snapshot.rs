//! `/stratosdb/snapshot/1`: a member fetches one snapshot chunk per stream.
//!
//! Request: one frame (`len: u32 BE, bytes`) of 24 bytes: `group: u32,
//! index: u64, term: u64, chunk: u32`, big-endian. Answer: one frame whose
//! first byte says what follows: `0` the chunk's bytes, `1` not found (the
//! sender no longer has the snapshot), `2` refused, with a UTF-8 reason.
//! Both sides check lengths before allocating (the request's is fixed, the
//! answer's at most `max_snapshot_chunk_bytes` plus the status byte).
//! Streams from non-members are dropped unanswered, like on every protocol.

use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, Stream};
use tokio::time::Instant;

use super::{SNAPSHOT_PROTOCOL, Shared, node_id_of, wire};
use crate::snapshot::SnapshotKey;
use crate::{NodeId, ReplicationError, Result};

const REQUEST_BYTES: usize = 4 + 8 + 8 + 4;
const FOUND: u8 = 0;
const NOT_FOUND: u8 = 1;
const REFUSED: u8 = 2;

fn encode_request(key: &SnapshotKey, chunk: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_BYTES);
    out.extend(key.group.to_be_bytes());
    out.extend(key.index.to_be_bytes());
    out.extend(key.term.to_be_bytes());
    out.extend(chunk.to_be_bytes());
    out
}

fn decode_request(bytes: &[u8]) -> Option<(SnapshotKey, u32)> {
    let bytes: &[u8; REQUEST_BYTES] = bytes.try_into().ok()?;
    let (group, rest) = bytes.split_first_chunk::<4>()?;
    let (index, rest) = rest.split_first_chunk::<8>()?;
    let (term, rest) = rest.split_first_chunk::<8>()?;
    let chunk: &[u8; 4] = rest.try_into().ok()?;
    Some((
        SnapshotKey {
            group: u32::from_be_bytes(*group),
            index: u64::from_be_bytes(*index),
            term: u64::from_be_bytes(*term),
        },
        u32::from_be_bytes(*chunk),
    ))
}

/// Fetches one chunk from member `peer` (node `to`) within `timeout`.
pub(crate) async fn fetch(
    shared: Arc<Shared>,
    mut control: libp2p_stream::Control,
    to: NodeId,
    peer: PeerId,
    key: SnapshotKey,
    chunk: u32,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let attempt = timeout.min(shared.config.open_timeout);
    let mut stream =
        match tokio::time::timeout(attempt, control.open_stream(peer, SNAPSHOT_PROTOCOL)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(ReplicationError::Unreachable {
                    node: to,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ReplicationError::Unreachable {
                    node: to,
                    reason: format!("no stream within {attempt:?}"),
                });
            }
        };
    let limit = shared.config.max_snapshot_chunk_bytes.saturating_add(1);
    let no_answer = |e: std::io::Error| ReplicationError::NoAnswer {
        node: to,
        reason: e.to_string(),
    };
    let exchange = async {
        wire::write_frame(&mut stream, &encode_request(&key, chunk))
            .await
            .map_err(no_answer)?;
        stream.flush().await.map_err(no_answer)?;
        wire::read_frame(&mut stream, limit)
            .await
            .map_err(no_answer)?
            .ok_or_else(|| ReplicationError::NoAnswer {
                node: to,
                reason: "the stream was closed without an answer".into(),
            })
    };
    let answer = tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| ReplicationError::CallTimeout { node: to, timeout })??;
    match answer.split_first() {
        Some((&FOUND, chunk_bytes)) => Ok(chunk_bytes.to_vec()),
        Some((&NOT_FOUND, _)) => Err(ReplicationError::SnapshotNotFound {
            group: key.group,
            index: key.index,
            term: key.term,
        }),
        Some((&REFUSED, reason)) => Err(ReplicationError::NoAnswer {
            node: to,
            reason: format!("refused: {}", String::from_utf8_lossy(reason)),
        }),
        _ => Err(ReplicationError::Malformed(
            "snapshot chunk answer with an unknown status".into(),
        )),
    }
}

/// Accepts chunk requests; each is answered on a task of its own.
pub(crate) async fn accept(shared: Arc<Shared>, mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((peer, stream)) = incoming.next().await {
        // Dropping the stream resets it: a stranger learns nothing.
        if super::swarm::admit(&shared, &peer, "snapshot") {
            tokio::spawn(answer(shared.clone(), peer, stream));
        }
    }
}

async fn answer(shared: Arc<Shared>, peer: PeerId, mut stream: Stream) {
    let request = match wire::read_frame(&mut stream, REQUEST_BYTES).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "snapshot chunk request refused");
            return;
        }
    };
    let Some((key, chunk)) = decode_request(&request) else {
        tracing::warn!(%peer, bytes = request.len(), "malformed snapshot chunk request");
        return;
    };
    let Some(server) = shared.snapshot_server.read().clone() else {
        tracing::debug!(%peer, "snapshot chunk request before a server was set");
        return;
    };
    let from = node_id_of(&peer);
    let limit = shared.config.max_snapshot_chunk_bytes;
    // Reading the chunk is disk work: keep it off the network workers.
    let served = tokio::task::spawn_blocking(move || server(from, &key, chunk)).await;
    let answer = match served {
        Ok(Ok(bytes)) if bytes.len() <= limit => [&[FOUND][..], &bytes].concat(),
        Ok(Ok(bytes)) => {
            let reason = format!(
                "chunk of {} bytes is over the limit of {limit}",
                bytes.len()
            );
            [&[REFUSED][..], reason.as_bytes()].concat()
        }
        Ok(Err(ReplicationError::SnapshotNotFound { .. })) => vec![NOT_FOUND],
        Ok(Err(e)) => [&[REFUSED][..], e.to_string().as_bytes()].concat(),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "snapshot chunk server failed");
            return;
        }
    };
    let sent = async {
        wire::write_frame(&mut stream, &answer).await?;
        stream.flush().await?;
        stream.close().await
    };
    if let Err(e) = sent.await {
        tracing::debug!(%peer, error = %e, "snapshot chunk not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_odd_sizes_are_refused() {
        let key = SnapshotKey {
            group: 3,
            index: 77,
            term: 2,
        };
        let bytes = encode_request(&key, 9);
        assert_eq!(decode_request(&bytes), Some((key, 9)));
        assert_eq!(decode_request(&bytes[..23]), None);
        assert_eq!(decode_request(&[bytes.clone(), vec![0]].concat()), None);
    }
}
