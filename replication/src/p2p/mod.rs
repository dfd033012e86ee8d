//! The libp2p transport: TCP + noise + yamux on loopback or the network.
//!
//! - Identity: an ed25519 key in the node's folder; its PeerId is the node,
//!   and [`node_id_of`] maps it to the crate's [`NodeId`].
//! - `/stratosdb/raft/1`: one long-lived stream per destination, frames of
//!   `len: u32, encoded batch`, so batches to one peer arrive in order.
//! - `/stratosdb/large/1`: one stream per large payload (a raft batch over
//!   the frame limit, or what [`P2pTransport::send_large`] sends), so they
//!   never stall heartbeats.
//! - `/stratosdb/snapshot/1`: one stream per snapshot chunk fetched
//!   ([`Transport::fetch_chunk`]), served by the node's chunk server.
//! - `/stratosdb/rpc/2`: calls ([`P2pTransport::call`]) on one reusable
//!   stream per peer, frames tagged with a call id (`rpc.rs`), answered by
//!   the handler set with [`P2pTransport::set_rpc_handler`].
//! - Membership: only members get a connection (the gate), unless the
//!   founding gate is open ([`P2pTransport::set_founding`]) or we dialed to
//!   discover who listens somewhere ([`P2pTransport::discover`]); connection
//!   limits bound what strangers can cost before the handshake tells us who
//!   they are. Streams from a non-member are always dropped and logged.
//!
//! - Fault injection (tests only): [`P2pTransport::set_dropped`] cuts the
//!   transport off from chosen members, both ways (see `faults.rs`).
//!
//! ```no_run
//! use stratosdb_replication::p2p::{P2pConfig, P2pTransport};
//! let dir = tempfile::tempdir().unwrap();
//! let t = P2pTransport::start(P2pConfig::new(dir.path(), "127.0.0.1:0")).unwrap();
//! println!("{} listens on {}", t.node_id(), t.local_addr());
//! ```

mod behaviour;
mod faults;
mod gate;
mod identity;
mod inbound;
mod peer;
mod rpc;
mod snapshot;
mod swarm;
mod wire;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, StreamProtocol, connection_limits, noise, tcp, yamux};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

pub use faults::FaultSwitch;
pub use identity::{KEY_FILE, ed25519_key_of, load_or_create_key, node_id_of, node_secret_key};
pub use libp2p::PeerId;
pub use rpc::{RpcFuture, RpcHandler};

use crate::codec::{GroupMessage, encode_batch};
use crate::snapshot::SnapshotKey;
use crate::transport::{ChunkServer, Inbox, Transport};
use crate::{NodeId, ReplicationError, Result};
use behaviour::{AddressBook, Addresses, Behaviour};
use gate::{Gate, GateState};
use peer::PeerLink;
use wire::LargeKind;

/// Raft message batches: a long-lived stream per peer.
pub const RAFT_PROTOCOL: StreamProtocol = StreamProtocol::new("/stratosdb/raft/1");
/// Large payloads: one stream each.
pub const LARGE_PROTOCOL: StreamProtocol = StreamProtocol::new("/stratosdb/large/1");
/// Snapshot chunks: one stream per chunk fetched.
pub const SNAPSHOT_PROTOCOL: StreamProtocol = StreamProtocol::new("/stratosdb/snapshot/1");
/// Request/response between members: long-lived streams carrying many calls.
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/stratosdb/rpc/2");

/// Settings of a [`P2pTransport`].
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Where the node key lives (`node.key`); the node's data folder.
    pub dir: PathBuf,
    /// `HOST:PORT` to listen on; port 0 lets the OS choose.
    pub listen: String,
    /// Encoded raft batches queued per peer; when full the oldest is dropped.
    pub raft_queue_batches: usize,
    /// Large payloads queued per peer; when full a new one is refused.
    pub large_queue_payloads: usize,
    /// A raft batch larger than this goes on the large-payload protocol; it
    /// is also the receiver's frame limit.
    pub raft_frame_limit: usize,
    /// Largest payload accepted on the large-payload protocol.
    pub max_large_bytes: usize,
    /// Largest request and largest answer on the rpc protocol (both sides
    /// check before allocating; at most `u32::MAX`, the frame's length field).
    pub max_rpc_bytes: usize,
    /// Largest snapshot chunk served or accepted on the snapshot protocol.
    pub max_snapshot_chunk_bytes: usize,
    /// Bound on fetching one snapshot chunk (opening the stream included).
    pub snapshot_fetch_timeout: Duration,
    /// Requests up to this size share the peer's one call stream; larger
    /// ones get a stream each (`rpc.rs`). 0: every call on its own stream.
    pub rpc_shared_stream_max_bytes: usize,
    /// How long a connection with no open stream is kept.
    pub idle_timeout: Duration,
    /// Bound on opening a stream (dialing included).
    pub open_timeout: Duration,
    /// Reconnection backoff: first wait, doubled up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Connections per peer (2: both sides may dial at once).
    pub max_connections_per_peer: u32,
    /// Inbound connections still in their handshake (strangers included).
    pub max_pending_incoming: u32,
    /// Worker threads of the transport's own tokio runtime.
    pub threads: usize,
}

impl P2pConfig {
    pub fn new(dir: impl AsRef<Path>, listen: impl Into<String>) -> Self {
        P2pConfig {
            dir: dir.as_ref().to_path_buf(),
            listen: listen.into(),
            raft_queue_batches: 1024,
            large_queue_payloads: 4,
            raft_frame_limit: 4 << 20,
            max_large_bytes: 512 << 20,
            max_rpc_bytes: 64 << 20,
            max_snapshot_chunk_bytes: 64 << 20,
            snapshot_fetch_timeout: Duration::from_secs(30),
            rpc_shared_stream_max_bytes: 64 << 10,
            // Raft's own stream keeps a member's connection open; this covers
            // the gaps (a writer backing off, a learner with nothing to say)
            // so a connection is not torn down and re-handshaken every 10 s
            // (libp2p's default), yet a dead one does not linger for long.
            idle_timeout: Duration::from_secs(120),
            open_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_connections_per_peer: 2,
            max_pending_incoming: 32,
            threads: 2,
        }
    }
}

/// What the handle, the swarm task and the stream tasks share.
pub(crate) struct Shared {
    pub config: Arc<P2pConfig>,
    local: PeerId,
    /// Members and the founding gate, shared with the swarm's gate.
    gate: Arc<GateState>,
    addresses: Addresses,
    links: Mutex<HashMap<NodeId, Link>>,
    inbox: RwLock<Option<Inbox>>,
    pub large_handler: RwLock<Option<LargeHandler>>,
    pub rpc_handler: RwLock<Option<RpcHandler>>,
    /// Members cut off by fault injection (tests only; empty otherwise).
    pub faults: FaultSwitch,
    pub snapshot_server: RwLock<Option<ChunkServer>>,
    /// One reusable call stream per peer (`rpc.rs`).
    pub call_streams: rpc::CallStreams,
}

/// A member's outbound queues and the tasks that drain them.
type Link = (Arc<PeerLink>, Vec<tokio::task::AbortHandle>);

/// Receives the payloads of [`P2pTransport::send_large`]: sender and bytes.
pub type LargeHandler = Arc<dyn Fn(NodeId, Vec<u8>) + Send + Sync>;

impl Shared {
    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.gate.is_member(peer)
    }

    /// Whether fault injection drops traffic to and from `peer` now.
    pub fn drops_peer(&self, peer: &PeerId) -> bool {
        self.faults.drops(node_id_of(peer))
    }

    pub fn deliver_raft(&self, peer: &PeerId, bytes: &[u8]) {
        let inbox = self.inbox.read().clone();
        match inbox {
            Some(inbox) => {
                if let Err(e) = inbox.deliver(bytes) {
                    tracing::warn!(%peer, error = %e, "raft batch refused");
                }
            }
            None => tracing::debug!(%peer, "raft batch before an inbox was set"),
        }
    }
}

/// The libp2p [`Transport`]. Owns a tokio runtime; [`P2pTransport::shutdown`]
/// (or dropping it) stops every task and thread.
pub struct P2pTransport {
    shared: Arc<Shared>,
    local_addr: Multiaddr,
    commands: Mutex<Option<mpsc::UnboundedSender<swarm::Command>>>,
    control: libp2p_stream::Control,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl P2pTransport {
    /// Loads (or creates) the node key, starts the runtime and the swarm, and
    /// listens; returns once the listening address is known.
    pub fn start(config: P2pConfig) -> Result<P2pTransport> {
        let key = load_or_create_key(&config.dir)?;
        let local = key.public().to_peer_id();
        let listen = multiaddr_of(&config.listen)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name(format!("p2p-{}", node_id_of(&local)))
            .enable_all()
            .build()
            .map_err(|e| net("cannot start the runtime", e))?;
        let handle = runtime.handle().clone();
        let config = Arc::new(config);
        let addresses: Addresses = Arc::default();
        let gate: Arc<GateState> = Arc::default();
        let (rpc_inbound, rpc_in) = inbound::RpcInbound::new(RPC_PROTOCOL);
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_pending_incoming));
        let behaviour = Behaviour {
            gate: Gate {
                state: gate.clone(),
            },
            limits: connection_limits::Behaviour::new(limits),
            addresses: AddressBook {
                addresses: addresses.clone(),
            },
            streams: libp2p_stream::Behaviour::new(),
            rpc: rpc_inbound,
        };
        let _guard = handle.enter();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| net("tcp/noise/yamux", e))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| net("behaviour", e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
            .build();
        swarm
            .listen_on(listen.clone())
            .map_err(|e| net(&format!("listen on {listen}"), e))?;
        let mut control = swarm.behaviour().streams.new_control();
        let raft_in = control
            .accept(RAFT_PROTOCOL)
            .map_err(|e| net("raft protocol", e))?;
        let large_in = control
            .accept(LARGE_PROTOCOL)
            .map_err(|e| net("large protocol", e))?;
        let snapshot_in = control
            .accept(SNAPSHOT_PROTOCOL)
            .map_err(|e| net("snapshot protocol", e))?;
        let shared = Arc::new(Shared {
            config,
            local,
            gate: gate.clone(),
            addresses,
            links: Mutex::default(),
            inbox: RwLock::default(),
            large_handler: RwLock::default(),
            rpc_handler: RwLock::default(),
            faults: FaultSwitch::default(),
            snapshot_server: RwLock::default(),
            call_streams: rpc::CallStreams::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (listening_tx, listening) = oneshot::channel();
        handle.spawn(swarm::run(swarm, gate, rx, Some(listening_tx)));
        handle.spawn(swarm::accept_raft(shared.clone(), raft_in));
        handle.spawn(swarm::accept_large(shared.clone(), large_in));
        handle.spawn(rpc::accept(shared.clone(), rpc_in));
        handle.spawn(snapshot::accept(shared.clone(), snapshot_in));
        drop(_guard);
        let local_addr = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), listening).await })
            .map_err(|_| ReplicationError::Network("no listening address within 10 s".into()))?
            .map_err(|_| ReplicationError::Network("the swarm stopped while starting".into()))?;
        Ok(P2pTransport {
            shared,
            local_addr,
            commands: Mutex::new(Some(tx)),
            control,
            runtime: Mutex::new(Some(runtime)),
            handle,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.shared.local
    }

    /// This node's id in raft: [`node_id_of`] its PeerId.
    pub fn node_id(&self) -> NodeId {
        node_id_of(&self.shared.local)
    }

    /// The address the transport listens on (the port the OS chose, if 0).
    pub fn local_addr(&self) -> Multiaddr {
        self.local_addr.clone()
    }

    /// The listening address as `HOST:PORT`.
    pub fn local_socket_addr(&self) -> Result<SocketAddr> {
        socket_addr_of(&self.local_addr)
    }

    /// Where batches that arrive are delivered (the node's inbox). Batches
    /// that arrive before this is set are dropped.
    pub fn set_inbox(&self, inbox: Inbox) {
        *self.shared.inbox.write() = Some(inbox);
    }

    /// Where payloads sent with [`P2pTransport::send_large`] are delivered.
    pub fn set_large_handler(&self, handler: impl Fn(NodeId, Vec<u8>) + Send + Sync + 'static) {
        *self.shared.large_handler.write() = Some(Arc::new(handler));
    }

    /// Makes `peer` a member: its connections are accepted and it can be sent
    /// to. Returns its node id; refuses a peer whose node id another member
    /// already has (a hash collision).
    pub fn allow_peer(&self, peer: PeerId) -> Result<NodeId> {
        let id = node_id_of(&peer);
        {
            let mut members = self.shared.gate.members.write();
            match members.get(&id) {
                Some(existing) if *existing == peer => return Ok(id),
                Some(existing) => {
                    return Err(ReplicationError::NodeIdCollision {
                        node: id,
                        peer: peer.to_string(),
                        existing: existing.to_string(),
                    });
                }
                None => {
                    members.insert(id, peer);
                }
            }
        }
        if peer != self.shared.local {
            let link = Arc::new(PeerLink::new(
                peer,
                &self.shared.config,
                self.shared.faults.clone(),
            ));
            let config = self.shared.config.clone();
            let tasks = vec![
                self.handle
                    .spawn(peer::raft_writer(
                        link.clone(),
                        self.control.clone(),
                        config.clone(),
                    ))
                    .abort_handle(),
                self.handle
                    .spawn(peer::large_writer(
                        link.clone(),
                        self.control.clone(),
                        config,
                    ))
                    .abort_handle(),
            ];
            self.shared.links.lock().insert(id, (link, tasks));
        }
        Ok(id)
    }

    /// Removes a member: its connections are closed and nothing more is
    /// accepted from it or sent to it.
    pub fn remove_peer(&self, peer: PeerId) {
        let id = node_id_of(&peer);
        {
            let mut members = self.shared.gate.members.write();
            if members.get(&id) != Some(&peer) {
                return;
            }
            members.remove(&id);
        }
        if let Some((_, tasks)) = self.shared.links.lock().remove(&id) {
            tasks.iter().for_each(|t| t.abort());
        }
        self.shared.addresses.write().remove(&peer);
        self.command(swarm::Command::Disconnect(peer));
    }

    /// The members' PeerIds, by node id.
    pub fn members(&self) -> HashMap<NodeId, PeerId> {
        self.shared.gate.members.read().clone()
    }

    /// Sets where `peer` listens, as `HOST:PORT` strings (replacing what was
    /// known). Dials use these.
    pub fn set_peer_addresses(&self, peer: PeerId, addrs: &[&str]) -> Result<()> {
        let addrs = addrs
            .iter()
            .map(|a| multiaddr_of(a))
            .collect::<Result<Vec<_>>>()?;
        self.shared.addresses.write().insert(peer, addrs);
        Ok(())
    }

    /// Queues a large payload for `to` on its own stream; the receiver's
    /// large-payload handler gets it. Refused when `to` is not a member or
    /// its queue is full (retry later); delivery is best effort.
    pub fn send_large(&self, to: NodeId, payload: Vec<u8>) -> Result<()> {
        self.queue_large(to, LargeKind::Payload, payload)
    }

    fn queue_large(&self, to: NodeId, kind: LargeKind, payload: Vec<u8>) -> Result<()> {
        let link = self.link(to).ok_or(ReplicationError::UnknownNode(to))?;
        if self.shared.faults.drops(to) {
            // Lost on the way, as a cut network would lose it.
            tracing::debug!(to, "large payload dropped by fault injection");
            return Ok(());
        }
        link.large
            .try_push((kind, payload))
            .map_err(|_| ReplicationError::QueueFull(to))
    }

    fn link(&self, to: NodeId) -> Option<Arc<PeerLink>> {
        self.shared.links.lock().get(&to).map(|(l, _)| l.clone())
    }

    /// Batches dropped so far on the way to `to` because its queue was full.
    pub fn dropped(&self, to: NodeId) -> u64 {
        self.link(to).map_or(0, |l| {
            l.raft.dropped.load(std::sync::atomic::Ordering::Relaxed)
                + l.large.dropped.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Test-only fault injection: drops all traffic to and from the members
    /// in `nodes` (raft batches, large payloads, rpc calls both ways),
    /// replacing the previous set; an empty set heals. Set it on both sides
    /// for a two-sided partition.
    pub fn set_dropped(&self, nodes: HashSet<NodeId>) {
        self.shared.faults.set_dropped(nodes);
    }

    /// The members whose traffic fault injection drops now.
    pub fn dropped_peers(&self) -> HashSet<NodeId> {
        self.shared.faults.dropped()
    }

    /// The shared drop set itself (what [`P2pTransport::set_dropped`] sets),
    /// for code that controls faults without holding the transport.
    pub fn fault_switch(&self) -> FaultSwitch {
        self.shared.faults.clone()
    }

    /// Sends `request` to member `to` and waits for its answer (blocking;
    /// callable from any thread, including threads outside a tokio runtime;
    /// inside one, prefer [`P2pTransport::call_async`]). Errors: `UnknownNode`
    /// (not a member), `Unreachable` (no stream by the deadline),
    /// `CallTimeout`, `NoAnswer` (the stream ended without one; the request
    /// may have been handled), `MessageTooLarge` (request or answer over
    /// `max_rpc_bytes`), `Stopped`. The network ones are retryable.
    pub fn call(&self, to: NodeId, request: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        let call = self.prepare_call(to, request, timeout)?;
        // The call runs on the transport's runtime; a std channel waits for
        // it, which works on any thread (tokio's blocking waits panic inside
        // a runtime).
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(call.await);
        });
        // The call bounds itself; the margin only guards against a runtime
        // that stopped under us.
        match rx.recv_timeout(timeout.saturating_add(Duration::from_secs(1))) {
            Ok(answer) => answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(ReplicationError::CallTimeout { node: to, timeout })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ReplicationError::Stopped),
        }
    }

    /// [`P2pTransport::call`], async. The call runs on the transport's own
    /// runtime (whatever runtime awaits it); dropping the future cancels it.
    pub async fn call_async(
        &self,
        to: NodeId,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let call = self.prepare_call(to, request, timeout)?;
        let task = self.handle.spawn(call);
        let _cancel = AbortOnDrop(task.abort_handle());
        task.await.map_err(|_| ReplicationError::Stopped)?
    }

    /// The PeerId of member `node`, if the transport runs and fault
    /// injection does not cut it off: what a call or a fetch checks first.
    fn reachable_member(&self, node: NodeId) -> Result<PeerId> {
        if self.commands.lock().is_none() {
            return Err(ReplicationError::Stopped);
        }
        let peer = *self
            .shared
            .gate
            .members
            .read()
            .get(&node)
            .ok_or(ReplicationError::UnknownNode(node))?;
        if self.shared.faults.drops(node) {
            return Err(ReplicationError::Unreachable {
                node,
                reason: "traffic to this node is dropped (fault injection)".into(),
            });
        }
        Ok(peer)
    }

    /// Checks what can be checked at once and builds the call's future.
    fn prepare_call(
        &self,
        to: NodeId,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<impl Future<Output = Result<Vec<u8>>> + Send + 'static> {
        let peer = self.reachable_member(to)?;
        let limit = rpc::frame_limit(self.shared.config.max_rpc_bytes);
        if request.len() > limit {
            return Err(ReplicationError::MessageTooLarge {
                size: request.len(),
                limit,
            });
        }
        let shared = self.shared.clone();
        // Each call gets its own control: a control opens one stream at a
        // time, so sharing one would queue calls behind each other.
        let control = self.control.clone();
        Ok(async move {
            if peer == shared.local {
                rpc::call_local(shared, to, request, timeout).await
            } else {
                rpc::call(shared, control, to, peer, request, timeout).await
            }
        })
    }

    /// Answers incoming calls: the handler gets the caller's node id and the
    /// request and returns the answer. It may block: it runs on the blocking
    /// pool, one call each, never on the workers that drive the network.
    /// Calls arriving before a handler is set are closed with no answer (the
    /// caller gets `NoAnswer`).
    pub fn set_rpc_handler(
        &self,
        handler: impl Fn(NodeId, Vec<u8>) -> Vec<u8> + Send + Sync + 'static,
    ) {
        let handler = Arc::new(handler);
        self.set_rpc_handler_async(move |from, request| {
            let handler = handler.clone();
            Box::pin(async move {
                match tokio::task::spawn_blocking(move || handler(from, request)).await {
                    Ok(answer) => Some(answer),
                    Err(e) => {
                        tracing::warn!(from, error = %e, "rpc handler failed");
                        None
                    }
                }
            })
        });
    }

    /// [`P2pTransport::set_rpc_handler`] with an async handler, which runs on
    /// the transport's runtime: it must not block (it may hand what blocks to
    /// `tokio::task::spawn_blocking`); `None` sends no answer (`NoAnswer`).
    pub fn set_rpc_handler_async(
        &self,
        handler: impl Fn(NodeId, Vec<u8>) -> rpc::RpcFuture + Send + Sync + 'static,
    ) {
        *self.shared.rpc_handler.write() = Some(Arc::new(handler));
    }

    /// Opens (or closes) the founding gate. While open, connections from
    /// peers that are not members are accepted, so the other founding nodes'
    /// [`P2pTransport::discover`] dials get in; streams and batches from
    /// non-members are still dropped. Closing it closes the connections of
    /// non-members. Default: closed.
    pub fn set_founding(&self, open: bool) {
        let was = self.shared.gate.founding.swap(open, Ordering::AcqRel);
        if was && !open {
            self.command(swarm::Command::DisconnectStrangers);
        }
    }

    /// Dials `addr` (`HOST:PORT`) and returns the PeerId that proved itself
    /// there in the noise handshake, without making it a member. The other
    /// side must have its founding gate open (or already count us as a
    /// member). Retries until `timeout` (the peer may not be up yet); then
    /// `DiscoveryTimeout`. The connection is closed afterwards unless the
    /// peer is a member: the node decides whether to trust the PeerId
    /// (`allow_peer`), and the raft writer dials again.
    pub fn discover(&self, addr: &str, timeout: Duration) -> Result<PeerId> {
        let target = multiaddr_of(addr)?;
        // The swarm will not dial its own listening address, and a founding
        // list may well include us.
        if self.is_own_address(&target) {
            return Ok(self.shared.local);
        }
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let mut pause = self.shared.config.backoff_min;
        let mut last = String::from("no attempt finished");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ReplicationError::DiscoveryTimeout {
                    addr: addr.to_string(),
                    last_error: last,
                });
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            {
                let commands = self.commands.lock();
                let sender = commands.as_ref().ok_or(ReplicationError::Stopped)?;
                sender
                    .send(swarm::Command::Discover(target.clone(), tx))
                    .map_err(|_| ReplicationError::Stopped)?;
            }
            match rx.recv_timeout(remaining) {
                Ok(Ok(peer)) => return Ok(peer),
                Ok(Err(e)) => last = e,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    last = format!("no handshake completed within {timeout:?}");
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(ReplicationError::Stopped);
                }
            }
            tracing::debug!(%addr, error = %last, "discovery dial failed; retrying");
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(self.shared.config.backoff_max);
        }
    }

    fn is_own_address(&self, target: &Multiaddr) -> bool {
        match (socket_addr_of(target), self.local_socket_addr()) {
            (Ok(target), Ok(local)) => {
                target.port() == local.port()
                    && (target.ip() == local.ip()
                        || (local.ip().is_unspecified() && target.ip().is_loopback()))
            }
            _ => false,
        }
    }

    fn command(&self, command: swarm::Command) {
        if let Some(tx) = self.commands.lock().as_ref() {
            let _ = tx.send(command);
        }
    }

    /// Stops the swarm and every task, closes the connections and joins the
    /// runtime's threads. Sending afterwards does nothing. Idempotent.
    pub fn shutdown(&self) {
        self.commands.lock().take();
        for (_, (_, tasks)) in self.shared.links.lock().drain() {
            tasks.iter().for_each(|t| t.abort());
        }
        if let Some(runtime) = self.runtime.lock().take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for P2pTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for P2pTransport {
    /// Never blocks: encodes and queues. A batch over `raft_frame_limit`
    /// goes on the large-payload protocol. (A snapshot message carries only
    /// its descriptor; the chunks are fetched on the snapshot protocol.)
    fn send(&self, to: NodeId, batch: Vec<GroupMessage>) {
        let Some(link) = self.link(to) else {
            tracing::debug!(to, "batch for a node that is not a member dropped");
            return;
        };
        if self.shared.faults.drops(to) {
            return;
        }
        if batch.is_empty() {
            return;
        }
        let bytes = encode_batch(&batch);
        if bytes.len() <= self.shared.config.raft_frame_limit {
            link.raft.push_drop_oldest(bytes);
        } else if link.large.try_push((LargeKind::Raft, bytes)).is_err() {
            tracing::debug!(to, "large batch dropped: queue full");
        }
    }

    /// Blocking, bounded by `snapshot_fetch_timeout`; only from a member.
    fn fetch_chunk(&self, from: NodeId, key: &SnapshotKey, chunk: u32) -> Result<Vec<u8>> {
        let peer = self.reachable_member(from)?;
        let timeout = self.shared.config.snapshot_fetch_timeout;
        let fetch = snapshot::fetch(
            self.shared.clone(),
            self.control.clone(),
            from,
            peer,
            *key,
            chunk,
            timeout,
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fetch.await);
        });
        match rx.recv_timeout(timeout.saturating_add(Duration::from_secs(1))) {
            Ok(answer) => answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(ReplicationError::CallTimeout {
                node: from,
                timeout,
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ReplicationError::Stopped),
        }
    }

    fn serve_snapshots(&self, server: ChunkServer) {
        *self.shared.snapshot_server.write() = Some(server);
    }
}

fn net(what: &str, e: impl std::fmt::Display) -> ReplicationError {
    ReplicationError::Network(format!("{what}: {e}"))
}

/// `HOST:PORT` (an IP literal or a resolvable name) as a TCP multiaddr.
pub fn multiaddr_of(host_port: &str) -> Result<Multiaddr> {
    let bad = |reason: String| ReplicationError::InvalidAddress {
        addr: host_port.to_string(),
        reason,
    };
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    Ok(Multiaddr::empty()
        .with(Protocol::from(addr.ip()))
        .with(Protocol::Tcp(addr.port())))
}

/// The `HOST:PORT` of a `/ip4|ip6/../tcp/..` multiaddr.
pub fn socket_addr_of(addr: &Multiaddr) -> Result<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a.into()),
            Protocol::Ip6(a) => ip = Some(a.into()),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
        _ => Err(ReplicationError::InvalidAddress {
            addr: addr.to_string(),
            reason: "not an IP and TCP address".into(),
        }),
    }
}

/// Aborts a task when its awaiting future is dropped (a cancelled call).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
