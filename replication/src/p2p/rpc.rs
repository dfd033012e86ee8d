//! `/stratosdb/rpc/2`: request/response between members over long-lived
//! streams that carry many calls at once.
//!
//! A caller keeps one call stream per peer and reuses it: opening a stream per
//! call (libp2p-stream's round trip through the swarm task, yamux's stream
//! handshake and multistream-select's negotiation) cost ~450 us of CPU per
//! forwarded write over the cluster, two thirds of what a whole write to the
//! leader costs; the shared stream, ~145 us (BENCHMARKS.md, "CPU per durable
//! write"). Frames:
//!
//! - request: `id: u64 BE, len: u32 BE, bytes`;
//! - answer: `id: u64 BE, status: u8, len: u32 BE, bytes`; status 0 is an
//!   answer, 1 says there is none (no handler set, the request refused, or
//!   the caller no longer a member): the caller gets `NoAnswer`.
//!
//! Answers come back in any order, matched by id, so calls to one peer run
//! side by side. A request over `rpc_shared_stream_max_bytes` (64 KiB) goes on a
//! stream of its own (same framing, one call), so a large transfer never holds up
//! the small calls behind it. Both sides check a frame's length against
//! `max_rpc_bytes` before allocating; an answer over the caller's limit is
//! read past and that call fails with `MessageTooLarge`. When a call stream
//! fails, every call waiting on it gets `NoAnswer` (its request may have been
//! handled) and the next call opens a new one.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use libp2p::futures::io::{ReadHalf, WriteHalf};
use libp2p::futures::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::{PeerId, Stream};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::{RPC_PROTOCOL, Shared, node_id_of};
use crate::{NodeId, ReplicationError, Result};

/// An answer being made: `None` when the handler failed (the caller gets
/// `NoAnswer`).
pub type RpcFuture = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// Answers incoming calls: caller's node id and request in, answer out
/// (async: a handler that blocks runs itself on the blocking pool, as
/// [`super::P2pTransport::set_rpc_handler`] does).
pub type RpcHandler = Arc<dyn Fn(NodeId, Vec<u8>) -> RpcFuture + Send + Sync>;

/// Calls one inbound stream may have in its handlers at once; the stream's
/// next request waits for a slot (bounds what one peer can start).
const MAX_CALLS_IN_FLIGHT_PER_STREAM: usize = 4096;

const STATUS_ANSWER: u8 = 0;
const STATUS_NONE: u8 = 1;

/// The largest frame the wire can carry, whatever the configuration says.
pub(crate) fn frame_limit(configured: usize) -> usize {
    configured.min(u32::MAX as usize)
}

type AnswerSlot = oneshot::Sender<Result<Vec<u8>>>;

/// One open call stream to a peer: the queue its writer task drains and the
/// calls waiting for their answers.
struct CallStream {
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    /// `None` once the stream failed: no call may wait on it any more.
    waiting: Mutex<Option<HashMap<u64, AnswerSlot>>>,
    next_id: AtomicU64,
}

impl CallStream {
    /// Registers a call and queues its request; `None` if the stream is
    /// closed (nothing was sent: the caller may open another).
    fn start(&self, request: &[u8]) -> Option<(u64, oneshot::Receiver<Result<Vec<u8>>>)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            waiting.as_mut()?.insert(id, tx);
        }
        let mut frame = Vec::with_capacity(12 + request.len());
        frame.extend(id.to_be_bytes());
        frame.extend((request.len() as u32).to_be_bytes());
        frame.extend_from_slice(request);
        if self.outgoing.send(frame).is_err() {
            self.forget(id);
            return None;
        }
        Some((id, rx))
    }

    fn forget(&self, id: u64) {
        if let Some(waiting) = self.waiting.lock().as_mut() {
            waiting.remove(&id);
        }
    }

    fn answer(&self, id: u64, answer: Result<Vec<u8>>) {
        let slot = self.waiting.lock().as_mut().and_then(|w| w.remove(&id));
        // A call that timed out meanwhile no longer waits: drop the answer.
        if let Some(slot) = slot {
            let _ = slot.send(answer);
        }
    }

    fn is_open(&self) -> bool {
        self.waiting.lock().is_some()
    }

    /// Closes the stream for new calls and fails the waiting ones.
    fn fail(&self, to: NodeId, reason: &str) {
        let Some(waiting) = self.waiting.lock().take() else {
            return;
        };
        for (_, slot) in waiting {
            let _ = slot.send(Err(ReplicationError::NoAnswer {
                node: to,
                reason: format!("the call stream failed: {reason}"),
            }));
        }
    }
}

/// A peer's call stream, if one is open; the lock is held while opening one,
/// so concurrent first calls open it once.
type CallStreamSlot = Arc<tokio::sync::Mutex<Option<Arc<CallStream>>>>;

/// The call streams of a transport, one per peer (opened on first use).
#[derive(Default)]
pub(crate) struct CallStreams {
    by_peer: Mutex<HashMap<PeerId, CallStreamSlot>>,
}

impl CallStreams {
    fn slot(&self, peer: PeerId) -> CallStreamSlot {
        self.by_peer.lock().entry(peer).or_default().clone()
    }
}

/// One call: sends the request on the peer's call stream (opening one if
/// needed, retrying until the deadline: a peer that restarted is found
/// again) and waits for the answer.
pub(crate) async fn call(
    shared: Arc<Shared>,
    mut control: libp2p_stream::Control,
    to: NodeId,
    peer: PeerId,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    // The request's size was checked by the transport before it got here.
    let deadline = deadline_after(timeout);
    let timed_out = || ReplicationError::CallTimeout { node: to, timeout };
    let (stream, id, answer) = if request.len() > shared.config.rpc_shared_stream_max_bytes {
        let stream = open_call_stream(&shared, &mut control, to, peer, deadline).await?;
        match stream.start(&request) {
            Some((id, answer)) => (stream, id, answer),
            None => return Err(no_answer(to, "the new call stream closed at once")),
        }
    } else {
        let slot = shared.call_streams.slot(peer);
        // Only opening is retried: once the request is queued on a stream,
        // retrying could run it twice, which is the caller's call.
        let started = tokio::time::timeout_at(deadline, async {
            let mut current = slot.lock().await;
            loop {
                if let Some(stream) = current.as_ref().filter(|s| s.is_open())
                    && let Some((id, answer)) = stream.start(&request)
                {
                    return Ok::<_, ReplicationError>((stream.clone(), id, answer));
                }
                *current = None;
                let stream = open_call_stream(&shared, &mut control, to, peer, deadline).await?;
                *current = Some(stream);
            }
        })
        .await;
        match started {
            Ok(started) => started?,
            // Nothing was sent: the request went nowhere.
            Err(_) => {
                return Err(ReplicationError::Unreachable {
                    node: to,
                    reason: "no call stream by the deadline".into(),
                });
            }
        }
    };
    match tokio::time::timeout_at(deadline, answer).await {
        // Cut off by fault injection while the call ran: the answer is lost
        // (the request may have been handled).
        Ok(Ok(_)) if shared.faults.drops(to) => Err(ReplicationError::NoAnswer {
            node: to,
            reason: "the answer was dropped (fault injection)".into(),
        }),
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(no_answer(to, "the call stream went away")),
        Err(_) => {
            stream.forget(id);
            Err(timed_out())
        }
    }
}

/// Opens a call stream to `peer` and starts its writer and reader tasks.
async fn open_call_stream(
    shared: &Arc<Shared>,
    control: &mut libp2p_stream::Control,
    to: NodeId,
    peer: PeerId,
    deadline: Instant,
) -> Result<Arc<CallStream>> {
    let stream = open(control, shared, to, peer, deadline).await?;
    let (reader, writer) = stream.split();
    let (outgoing, queued) = mpsc::unbounded_channel();
    let call_stream = Arc::new(CallStream {
        outgoing,
        waiting: Mutex::new(Some(HashMap::new())),
        next_id: AtomicU64::new(0),
    });
    let limit = frame_limit(shared.config.max_rpc_bytes);
    // The tasks hold it weakly: once the last caller lets go of it, its queue
    // closes, the writer closes the stream and both tasks end.
    let weak = Arc::downgrade(&call_stream);
    tokio::spawn(write_requests(weak.clone(), to, writer, queued));
    tokio::spawn(read_answers(weak, to, reader, limit));
    Ok(call_stream)
}

/// Writes queued frames, flushing once whatever was queued is out.
async fn write_frames(
    writer: &mut WriteHalf<Stream>,
    queued: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> io::Result<()> {
    while let Some(frame) = queued.recv().await {
        writer.write_all(&frame).await?;
        while let Ok(frame) = queued.try_recv() {
            writer.write_all(&frame).await?;
        }
        writer.flush().await?;
    }
    writer.close().await
}

async fn write_requests(
    stream: Weak<CallStream>,
    to: NodeId,
    mut writer: WriteHalf<Stream>,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    if let Err(e) = write_frames(&mut writer, &mut queued).await
        && let Some(stream) = stream.upgrade()
    {
        stream.fail(to, &format!("sending: {e}"));
    }
}

async fn read_answers(
    stream: Weak<CallStream>,
    to: NodeId,
    mut reader: ReadHalf<Stream>,
    limit: usize,
) {
    let reason = loop {
        let mut head = [0u8; 13];
        if let Err(e) = reader.read_exact(&mut head).await {
            break format!("reading an answer: {e}");
        }
        let id = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
        let status = head[8];
        let len = u32::from_be_bytes(head[9..].try_into().unwrap_or_default()) as usize;
        if len > limit {
            // Read past it: the stream stays usable for the other calls.
            let skipped = libp2p::futures::io::copy(
                (&mut reader).take(len as u64),
                &mut libp2p::futures::io::sink(),
            )
            .await;
            if let Some(stream) = stream.upgrade() {
                stream.answer(
                    id,
                    Err(ReplicationError::MessageTooLarge { size: len, limit }),
                );
            }
            match skipped {
                Ok(n) if n == len as u64 => continue,
                Ok(_) => break "the stream ended inside an answer".to_string(),
                Err(e) => break format!("reading an answer: {e}"),
            }
        }
        let mut answer = vec![0u8; len];
        if let Err(e) = reader.read_exact(&mut answer).await {
            break format!("reading an answer: {e}");
        }
        let answer = match status {
            STATUS_ANSWER => Ok(answer),
            _ => Err(ReplicationError::NoAnswer {
                node: to,
                reason: "no answer (no handler set, request refused, or the peer \
                         no longer counts us as a member)"
                    .into(),
            }),
        };
        match stream.upgrade() {
            Some(stream) => stream.answer(id, answer),
            None => return,
        }
    };
    if let Some(stream) = stream.upgrade() {
        stream.fail(to, &reason);
    }
}

/// Opens a call stream. Only opening is retried.
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

fn no_answer(to: NodeId, reason: &str) -> ReplicationError {
    ReplicationError::NoAnswer {
        node: to,
        reason: reason.into(),
    }
}

/// Accepts call streams; each is served by a task of its own.
pub(crate) async fn accept(shared: Arc<Shared>, mut incoming: super::inbound::Incoming) {
    while let Some((peer, stream)) = incoming.recv().await {
        // Dropping the stream resets it: a stranger learns nothing.
        if super::swarm::admit(&shared, &peer, "rpc") {
            tokio::spawn(serve(shared.clone(), peer, stream));
        }
    }
}

/// Reads the requests of one call stream; each is answered on a task of its
/// own, so a slow handler holds up only its own caller.
async fn serve(shared: Arc<Shared>, peer: PeerId, stream: Stream) {
    let limit = frame_limit(shared.config.max_rpc_bytes);
    let (mut reader, mut writer) = stream.split();
    let (answers, mut queued) = mpsc::unbounded_channel();
    let writing = tokio::spawn(async move {
        if let Err(e) = write_frames(&mut writer, &mut queued).await {
            tracing::debug!(%peer, error = %e, "rpc answers not delivered");
        }
    });
    let slots = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT_PER_STREAM));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (id, request) = match read_request(&mut reader, limit).await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "rpc request refused; closing the call stream");
                break;
            }
        };
        let shared = shared.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let (status, answer) = match answer(&shared, peer, request).await {
                Some(answer) => (STATUS_ANSWER, answer),
                None => (STATUS_NONE, Vec::new()),
            };
            let mut frame = Vec::with_capacity(13 + answer.len());
            frame.extend(id.to_be_bytes());
            frame.push(status);
            frame.extend((answer.len() as u32).to_be_bytes());
            frame.extend(answer);
            let _ = answers.send(frame);
            drop(slot);
        });
    }
    // The writer ends (closing the stream) once the last answer is queued.
    drop(answers);
    let _ = writing.await;
}

/// Reads one request frame; `None` at a clean end of the stream.
async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut head = [0u8; 12];
    match r.read_exact(&mut head).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let id = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(head[8..].try_into().unwrap_or_default()) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request of {len} bytes is over the limit of {limit} bytes"),
        ));
    }
    let mut request = vec![0u8; len];
    r.read_exact(&mut request).await?;
    Ok(Some((id, request)))
}

/// The handler's answer, or `None` (no handler, or no longer a member).
async fn answer(shared: &Shared, peer: PeerId, request: Vec<u8>) -> Option<Vec<u8>> {
    if !shared.is_member(&peer) {
        tracing::warn!(%peer, "dropped a request from a peer no longer a member");
        return None;
    }
    if shared.drops_peer(&peer) {
        return None;
    }
    let Some(handler) = shared.rpc_handler.read().clone() else {
        tracing::debug!(%peer, "rpc request before a handler was set");
        return None;
    };
    let from = node_id_of(&peer);
    match handler(from, request).await {
        // Cut off by fault injection while the handler ran: no answer goes.
        Some(_) if shared.drops_peer(&peer) => None,
        Some(answer) => Some(answer),
        None => {
            tracing::warn!(%peer, "rpc handler failed; no answer");
            None
        }
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
    match tokio::time::timeout(timeout, handler(to, request)).await {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err(ReplicationError::NoAnswer {
            node: to,
            reason: "the handler failed".into(),
        }),
        Err(_) => Err(ReplicationError::CallTimeout { node: to, timeout }),
    }
}
