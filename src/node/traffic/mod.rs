//! Proof of Traffic on a node (`docs/traffic.md`): who pays for a request
//! ([`auth`]), what it costs and the signed receipt that says so
//! ([`meter`], [`receipts`]), the funds behind it ([`accounts`]: the
//! traffic ledger in group 0) and the endpoints that show and fund accounts
//! ([`endpoints`]).
//!
//! A node serves a payer out of a *hold*: wei of the payer's balance that the
//! metadata group has reserved for this node in the current epoch. The hold
//! lives in memory; taking from it costs a lock, and only an exhausted hold
//! costs a Raft proposal to group 0. A node that restarts forgets its holds:
//! what it had left stays reserved until its epoch is settled, so a restart
//! can never make a node serve more than was reserved for it.

pub mod accounts;
pub mod auth;
pub mod batch;
pub mod endpoints;
mod gather;
pub mod meter;
pub mod payouts;
pub mod receipts;
pub mod recover;
pub mod settle;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use stratosdb_chain_anchor::Chain;
use stratosdb_engine::Command;
use stratosdb_replication::METADATA_GROUP;
use stratosdb_verifier::traffic::{Address, Prices, wei};

use super::backend::{BackendError, ErrorClass};
use super::cluster::{ClusterNode, NodeError};
use accounts::{AccountState, LedgerError};
use receipts::ReceiptLog;

/// The account unsigned requests are billed to on a `--dev` cluster: an
/// address no key is known for (`0x…dE00`), funded at bootstrap.
pub const DEV_ACCOUNT: Address = Address([
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xde, 0x00,
]);
/// `--dev-funds`' default: a million STOS.
pub const DEFAULT_DEV_FUNDS: u128 = 1_000_000 * wei::WEI_PER_STOS;
/// Default prices: 10^12 wei (a millionth of a STOS) per KiB served, 10^11
/// per document.
pub const DEFAULT_PRICES: Prices = Prices {
    wei_per_kib: 1_000_000_000_000,
    wei_per_document: 100_000_000_000,
};
/// How many times a change of an account is tried against concurrent ones.
const ACCOUNT_RETRIES: usize = 50;
/// How often the node looks at group 0 for the current epoch.
const EPOCH_POLL: Duration = Duration::from_millis(250);

/// The traffic settings of a node.
#[derive(Clone)]
pub struct TrafficConfig {
    /// A development cluster: unsigned requests are billed to [`DEV_ACCOUNT`].
    pub dev: bool,
    /// How far a request's timestamp may be from this node's clock.
    pub window: Duration,
    /// The chain deposits are recorded on and read from.
    pub chain: Arc<dyn Chain>,
}

/// Who pays for a request, and the hash that names it in receipts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payer {
    pub address: Address,
    pub request_hash: [u8; 32],
}

/// A node's hold for one payer.
struct Hold {
    epoch: u64,
    left: u128,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("dev", &self.config.dev)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

pub struct Traffic {
    node: Arc<ClusterNode>,
    config: TrafficConfig,
    receipts: Arc<ReceiptLog>,
    replay: auth::ReplayMemory,
    /// Signature checks: batched for payers whose keys are known.
    signatures: batch::SignatureChecker,
    holds: Mutex<HashMap<Address, Hold>>,
    /// One reservation at a time on this node (they would race on the same
    /// account documents anyway).
    reserving: Mutex<()>,
    epoch: AtomicU64,
    cluster_id: RwLock<Option<[u8; 32]>>,
    prices: RwLock<Option<Prices>>,
    stopped: AtomicBool,
}

impl Traffic {
    /// The traffic service of `node`; receipts are signed with the node key
    /// (`DATA/p2p/node.key`) and kept in `DATA/receipts`.
    pub fn start(
        node: Arc<ClusterNode>,
        data: &Path,
        config: TrafficConfig,
    ) -> Result<Arc<Traffic>, BackendError> {
        let secret = stratosdb_replication::p2p::node_secret_key(&data.join("p2p"))
            .map_err(|e| BackendError::internal(format!("reading the node key: {e}")))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        let receipts = ReceiptLog::open(&data.join("receipts"), key)
            .map_err(|e| BackendError::internal(e.to_string()))?;
        let traffic = Arc::new(Traffic {
            node,
            replay: auth::ReplayMemory::new(config.window),
            signatures: batch::SignatureChecker::default(),
            config,
            receipts,
            holds: Mutex::new(HashMap::new()),
            reserving: Mutex::new(()),
            epoch: AtomicU64::new(0),
            cluster_id: RwLock::new(None),
            prices: RwLock::new(None),
            stopped: AtomicBool::new(false),
        });
        let watcher = Arc::downgrade(&traffic);
        std::thread::Builder::new()
            .name("traffic-epoch".into())
            .spawn(move || {
                while let Some(t) = watcher.upgrade() {
                    if t.stopped.load(Ordering::Acquire) {
                        return;
                    }
                    t.epoch.store(t.node.current_epoch(), Ordering::Release);
                    t.replay.forget_expired();
                    drop(t);
                    std::thread::sleep(EPOCH_POLL);
                }
            })
            .map_err(|e| BackendError::internal(format!("cannot start a thread: {e}")))?;
        let server = Arc::downgrade(&traffic);
        traffic
            .node
            .set_extension(Arc::new(move |from, bytes| match server.upgrade() {
                Some(t) => t.serve_settlement(from, bytes),
                None => Err(NodeError::unavailable("the node is stopping")),
            }));
        let settler = traffic.clone();
        std::thread::Builder::new()
            .name("traffic-settle".into())
            .spawn(move || settler.settle_loop())
            .map_err(|e| BackendError::internal(format!("cannot start a thread: {e}")))?;
        Ok(traffic)
    }

    /// Stops the background thread and syncs the receipts.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Err(e) = self.receipts.sync() {
            tracing::error!(error = %e, "syncing the receipt log");
        }
    }

    /// The command the metadata leader proposes once, at founding.
    pub fn bootstrap_command(prices: &Prices, dev_funds: Option<u128>) -> Command {
        accounts::bootstrap(prices, dev_funds.map(|funds| (DEV_ACCOUNT, funds)))
    }

    pub fn receipts(&self) -> &ReceiptLog {
        &self.receipts
    }

    /// The epoch requests are served in: the newest started, or the one
    /// after the last that a settlement closed on this node.
    pub fn epoch(&self) -> u64 {
        self.epoch
            .load(Ordering::Acquire)
            .max(self.receipts.floor())
    }

    /// The cluster id (once the metadata group has recorded it).
    pub fn cluster_id(&self) -> Result<[u8; 32], BackendError> {
        if let Some(id) = *self.cluster_id.read() {
            return Ok(id);
        }
        let id = self
            .node
            .cluster_id()
            .map_err(node_error)?
            .ok_or_else(not_ready)?;
        *self.cluster_id.write() = Some(id);
        Ok(id)
    }

    /// The cluster's prices (fixed at founding, so cached once read).
    pub fn prices(&self) -> Result<Prices, BackendError> {
        if let Some(p) = *self.prices.read() {
            return Ok(p);
        }
        let meta = self.node.metadata(false).map_err(node_error)?;
        let prices = accounts::read_prices(&meta)
            .map_err(ledger_error)?
            .ok_or_else(not_ready)?;
        *self.prices.write() = Some(prices);
        Ok(prices)
    }

    /// An account as group 0 has it, read at a read index.
    pub fn account(&self, address: &Address) -> Result<AccountState, BackendError> {
        let meta = self.node.metadata(true).map_err(node_error)?;
        Ok(accounts::read_account(&meta, address)
            .map_err(ledger_error)?
            .state)
    }

    /// Takes `fee` wei from this node's hold for `payer` in `epoch`,
    /// reserving more in group 0 when the hold is short. Refused with 402
    /// when the payer's balance cannot cover it.
    pub fn take(&self, payer: &Address, epoch: u64, fee: u128) -> Result<(), BackendError> {
        if fee == 0 || self.take_held(payer, epoch, fee) {
            return Ok(());
        }
        let _one = self.reserving.lock();
        // Another request may have reserved while this one waited.
        if self.take_held(payer, epoch, fee) {
            return Ok(());
        }
        // A hold of an earlier epoch is returned in the same change: what
        // is left of it was not used (it stays reserved if the change fails).
        let earlier = {
            let mut holds = self.holds.lock();
            match holds.get(payer) {
                Some(h) if h.epoch != epoch => holds.remove(payer).map(|h| (h.epoch, h.left)),
                _ => None,
            }
        };
        let granted = self.reserve(payer, epoch, fee, earlier)?;
        let mut holds = self.holds.lock();
        let hold = holds.entry(*payer).or_insert(Hold { epoch, left: 0 });
        if hold.epoch != epoch {
            *hold = Hold { epoch, left: 0 };
        }
        hold.left = hold.left.saturating_add(granted - fee);
        Ok(())
    }

    /// Gives `amount` taken by [`Traffic::take`] back to the hold (a request
    /// that was not served after all).
    pub fn give_back(&self, payer: &Address, epoch: u64, amount: u128) {
        if amount == 0 {
            return;
        }
        let mut holds = self.holds.lock();
        if let Some(hold) = holds.get_mut(payer)
            && hold.epoch == epoch
        {
            hold.left = hold.left.saturating_add(amount);
        }
    }

    /// Takes `fee` from the hold if it covers it (no proposal, no wait).
    pub fn take_held(&self, payer: &Address, epoch: u64, fee: u128) -> bool {
        let mut holds = self.holds.lock();
        match holds.get_mut(payer) {
            Some(hold) if hold.epoch == epoch && hold.left >= fee => {
                hold.left -= fee;
                true
            }
            _ => false,
        }
    }

    /// Reserves at least `fee` for this node in group 0 (an eighth of what
    /// is available, so a busy payer costs few proposals while other nodes
    /// can still reserve); returns the amount reserved.
    fn reserve(
        &self,
        payer: &Address,
        epoch: u64,
        fee: u128,
        earlier: Option<(u64, u128)>,
    ) -> Result<u128, BackendError> {
        let node = self.node.id;
        self.change_account(
            payer,
            |_, read| {
                let mut next = read.clone();
                if let Some((old_epoch, left)) = earlier {
                    next.release(node, old_epoch, left);
                }
                let available = next.available();
                if available < fee {
                    return Err(self.unfunded(payer, &next, fee));
                }
                let grant = (available / 8).clamp(fee, available);
                next.reserve(node, epoch, grant);
                Ok((next, Vec::new(), grant))
            },
            || BackendError::internal("a reservation inserts nothing"),
        )
    }

    /// Credits a deposit read from the chain, once: a second credit of the
    /// same `key` is refused with 409 `deposit_credited`.
    pub fn credit(
        &self,
        record: &stratosdb_chain_anchor::DepositRecord,
        key: &str,
    ) -> Result<AccountState, BackendError> {
        let credited = || {
            BackendError::new(
                ErrorClass::Conflict,
                "deposit_credited",
                format!("the deposit {} was credited already", record.reference),
            )
        };
        self.change_account(
            &record.account,
            |meta, read| {
                if accounts::is_credited(meta, key).map_err(ledger_error)? {
                    return Err(credited());
                }
                let mut next = read.clone();
                next.deposited = next.deposited.saturating_add(record.amount);
                Ok((next.clone(), vec![accounts::mark_credited(key)], next))
            },
            credited,
        )
    }

    /// Changes `address`'s account in group 0 against concurrent changes:
    /// `change` gets the replica and the account as read, and returns the
    /// next state, operations that apply with it (in one command) and a
    /// result. Another change applied between the read and the proposal
    /// makes it read again; an insert among the operations that finds its
    /// document there already is `duplicate()`.
    fn change_account<R>(
        &self,
        address: &Address,
        mut change: impl FnMut(
            &stratosdb_engine::Shard,
            &AccountState,
        )
            -> Result<(AccountState, Vec<stratosdb_engine::Op>, R), BackendError>,
        duplicate: impl Fn() -> BackendError,
    ) -> Result<R, BackendError> {
        for _ in 0..ACCOUNT_RETRIES {
            let meta = self.node.metadata(true).map_err(node_error)?;
            let read = accounts::read_account(&meta, address).map_err(ledger_error)?;
            let (next, mut ops, result) = change(&meta, &read.state)?;
            ops.extend(accounts::write_account(address, &read, &next));
            match self.node.propose(METADATA_GROUP, &Command { ops }) {
                Ok(_) => return Ok(result),
                Err(e) if e.code == "write_conflict" => continue,
                Err(e) if e.code == "duplicate_id" => return Err(duplicate()),
                Err(e) => return Err(node_error(e)),
            }
        }
        Err(BackendError::new(
            ErrorClass::Unavailable,
            "contention",
            format!("the account {address} is changed by too many nodes at once; retry"),
        ))
    }

    /// The 402: the balance, the fee and how to deposit.
    fn unfunded(&self, payer: &Address, state: &AccountState, fee: u128) -> BackendError {
        BackendError::new(
            ErrorClass::PaymentRequired,
            "insufficient_funds",
            format!(
                "the account {payer} cannot pay for this request: it costs at least {} wei \
                 ({}) and the account has {} wei available ({} deposited, {} reserved \
                 by nodes for traffic not yet settled); deposit more with \
                 `stratosdb account deposit --connect URL --key-file F AMOUNT`",
                fee,
                wei::format_stos(fee),
                state.available(),
                state.deposited,
                state.reserved()
            ),
        )
    }
}

/// Runs a call that may wait (a proposal, the chain, a file) on tokio's
/// blocking pool.
async fn blocking<T: Send + 'static>(
    traffic: &Arc<Traffic>,
    call: impl FnOnce(&Traffic) -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    let t = traffic.clone();
    tokio::task::spawn_blocking(move || call(&t))
        .await
        .map_err(|e| BackendError::internal(format!("the request's task failed: {e}")))?
}

fn node_error(e: NodeError) -> BackendError {
    BackendError::new(
        super::backend::class_of_code(&e.code),
        &e.code,
        e.message.clone(),
    )
}

fn ledger_error(e: LedgerError) -> BackendError {
    BackendError::internal(e.to_string())
}

fn not_ready() -> BackendError {
    BackendError::new(
        ErrorClass::Unavailable,
        "not_ready",
        "the cluster is still being founded (no cluster id or prices yet); retry shortly",
    )
}
