//! Settlement per epoch (`docs/traffic.md`, "Settlement"). The metadata
//! leader settles each epoch once the cluster has moved past it:
//!
//! 1. it asks every node to *close* the epoch (no receipt is issued in it
//!    any more) and to report its volume, built from its receipts of the
//!    epoch; the merged [`VolumeReport`] is recorded in group 0 (`signing`):
//!    from then on it is the epoch's report, whoever leads;
//! 2. every node checks its own part of the report against its receipt log
//!    and signs the report's hash; with two thirds of the nodes' signatures
//!    the record moves to `recording`;
//! 3. the report's hash and the signatures go on the chain (once per epoch:
//!    the chain refuses a second, different entry), the reference is
//!    recorded (`recorded`);
//! 4. one group-0 command debits every payer, credits every serving node and
//!    returns the epoch's reservations, guarded by the record's hash, so it
//!    applies exactly once (`settled`).
//!
//! Each step is recorded before the next is taken, so a new leader resumes
//! where the last one stopped. A node that does not report (waited for
//! [`COLLECT_GRACE`] unless the cluster map has it down) is settled as
//! having served nothing that epoch; a
//! report that cannot gather two thirds within [`SIGN_GIVE_UP`] is `failed`
//! (nobody is charged, the reservations are returned).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stratosdb_chain_anchor::{ChainError, SubmissionStatus};
use stratosdb_engine::{Command, Hash, Op, Shard, Value};
use stratosdb_replication::{METADATA_GROUP, NodeId};
use stratosdb_verifier::traffic::{
    Address, ReportSignature, SettlementEntry, VolumeReport, keccak256,
};

use super::Traffic;
use super::accounts::{self, TRAFFIC_COLLECTION};
use super::receipts::ReceiptLogError;
use crate::node::backend::BackendError;
use crate::node::cluster::{NodeError, node_key_of, show_id};

/// How often the settling leader looks for work.
pub const SETTLE_POLL: Duration = Duration::from_millis(500);
/// How long a node has to close an epoch and report its volume.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the leader waits for a node that does not answer before it
/// settles the epoch without it.
pub const COLLECT_GRACE: Duration = Duration::from_secs(30);
/// How long a report may wait for two thirds of the signatures.
pub const SIGN_GIVE_UP: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettlementStatus {
    Signing,
    Recording,
    Recorded,
    Settled,
    Failed,
}

/// An epoch's settlement as group 0 records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementRecord {
    pub epoch: u64,
    pub status: SettlementStatus,
    pub report: VolumeReport,
    #[serde(with = "stratosdb_verifier::hex_serde::hash")]
    pub report_hash: Hash,
    /// The node keys of the cluster when the report was made: two thirds of
    /// them must sign.
    #[serde(with = "stratosdb_verifier::hex_serde::hash_list")]
    pub members: Vec<[u8; 32]>,
    /// The nodes that did not report (ids), settled as serving nothing.
    pub absent: Vec<String>,
    pub signatures: Vec<ReportSignature>,
    /// The chain submissions prepared, the newest last: each is recorded
    /// before it is sent, and every one is looked for before another is
    /// made, so a new leader never puts a second settlement on the chain.
    #[serde(default)]
    pub submissions: Vec<serde_json::Value>,
    /// The chain's reference of the recorded settlement.
    pub reference: Option<String>,
    pub started_ms: u64,
    /// Why it failed, when it did.
    #[serde(default)]
    pub reason: Option<String>,
}

impl SettlementRecord {
    pub fn entry(&self) -> SettlementEntry {
        SettlementEntry {
            cluster_id: self.report.cluster_id,
            epoch: self.epoch,
            report_hash: self.report_hash,
            signatures: self.signatures.clone(),
        }
    }
}

/// The account a node's earnings are credited to: the last 20 bytes of
/// keccak256 of its ed25519 key (`docs/traffic.md`).
pub fn earnings_account(node_key: &[u8; 32]) -> Address {
    let digest = keccak256(node_key);
    let mut a = [0u8; 20];
    a.copy_from_slice(&digest[12..]);
    Address(a)
}

/// The requests nodes send each other for settlement.
#[derive(Serialize, Deserialize)]
enum SettleRequest {
    Close { epoch: u64 },
    Sign { report: VolumeReport },
}

#[derive(Serialize, Deserialize)]
enum SettleReply {
    Volume(VolumeReport),
    Signed(ReportSignature),
    Refused(String),
}

fn record_id(epoch: u64) -> String {
    format!("settlement:{epoch:020}")
}

fn record_doc(record: &SettlementRecord) -> Value {
    accounts::json_doc(record_id(record.epoch), "record", record)
}

type ReadRecord = (SettlementRecord, Hash);

/// Up to `limit` settlement records from epoch `from` on, in epoch order.
pub fn list(shard: &Shard, from: u64, limit: usize) -> Result<Vec<SettlementRecord>, NodeError> {
    accounts::scan_prefix(shard, "settlement:", &record_id(from), false, limit)?
        .iter()
        .map(|(_, doc)| Ok(accounts::from_json_doc(doc, "record")?.0))
        .collect()
}

fn newest(shard: &Shard) -> Result<Option<ReadRecord>, NodeError> {
    let last = accounts::scan_prefix(shard, "settlement:", "settlement:", true, 1)?;
    Ok(last
        .first()
        .map(|(_, doc)| accounts::from_json_doc(doc, "record"))
        .transpose()?)
}

/// Accounts a settlement changes: as read, and as they will be.
type Changes = BTreeMap<Address, (accounts::ReadAccount, accounts::AccountState)>;

/// The next state of `address` in `changes`, read first if it is not there.
fn account_mut<'a>(
    changes: &'a mut Changes,
    meta: &Shard,
    address: Address,
) -> Result<&'a mut accounts::AccountState, NodeError> {
    Ok(match changes.entry(address) {
        std::collections::btree_map::Entry::Occupied(o) => &mut o.into_mut().1,
        std::collections::btree_map::Entry::Vacant(v) => {
            let read = accounts::read_account(meta, &address)?;
            let next = read.state.clone();
            &mut v.insert((read, next)).1
        }
    })
}

fn now_ms() -> u64 {
    super::auth::now_ms()
}

fn be(e: BackendError) -> NodeError {
    NodeError::new(&e.code, e.message, false)
}

impl Traffic {
    /// Serves another node's settlement request.
    pub(super) fn serve_settlement(
        &self,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<Vec<u8>, NodeError> {
        let request: SettleRequest = serde_json::from_slice(bytes)
            .map_err(|e| NodeError::new("malformed", format!("settlement request: {e}"), false))?;
        let reply = match request {
            SettleRequest::Close { epoch } => {
                let cluster = self.cluster_id().map_err(be)?;
                match self.receipts.close_volume(epoch, cluster) {
                    Ok(part) => SettleReply::Volume(part),
                    Err(e @ ReceiptLogError::Volume(_)) => SettleReply::Refused(e.to_string()),
                    Err(e) => return Err(NodeError::new("internal", e.to_string(), false)),
                }
            }
            SettleRequest::Sign { report } => match self.check_report(&report) {
                Ok(()) => SettleReply::Signed(self.receipts.sign_report(&report.hash())),
                Err(why) => {
                    tracing::warn!(from = %show_id(from), epoch = report.epoch, %why, "refusing to sign a settlement");
                    SettleReply::Refused(why)
                }
            },
        };
        Ok(serde_json::to_vec(&reply).unwrap_or_default())
    }

    /// A node signs a report only if it holds together and its own part is
    /// exactly what its receipt log says.
    fn check_report(&self, report: &VolumeReport) -> Result<(), String> {
        report.check().map_err(|e| e.to_string())?;
        let cluster = self.cluster_id().map_err(|e| e.message)?;
        if report.cluster_id != cluster {
            return Err("the report is of another cluster".into());
        }
        let key = self.receipts.node_key();
        let mine = self
            .receipts
            .close_volume(report.epoch, cluster)
            .map_err(|e| e.to_string())?;
        let listed = report.node_volumes.iter().find(|n| n.node_key == key);
        if listed != mine.node_volumes.first() {
            return Err(format!(
                "this node's volume in the report is {listed:?}, its receipts say {:?}",
                mine.node_volumes.first()
            ));
        }
        Ok(())
    }

    /// The settling leader's loop (every node runs it; only the metadata
    /// leader acts).
    pub(super) fn settle_loop(self: &std::sync::Arc<Self>) {
        let mut signing_since: Option<(u64, Instant)> = None;
        let mut progressed = false;
        while !self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            // Steps that made progress are followed at once (an epoch is
            // four steps); otherwise the loop waits.
            if !progressed {
                std::thread::sleep(SETTLE_POLL);
            }
            progressed = false;
            let leads = self
                .node
                .raft
                .status(METADATA_GROUP)
                .is_ok_and(|s| s.is_leader);
            if !leads {
                continue;
            }
            if let Err(e) = self.payout_round() {
                tracing::debug!(error = %e, "payout round");
            }
            let before = self.newest_step();
            if let Err(e) = self.settle_round(&mut signing_since) {
                tracing::debug!(error = %e, "settlement round");
                continue;
            }
            progressed = self.newest_step() != before;
        }
    }

    /// Where settlement stands, as this replica has it: the newest record's
    /// epoch, status and submissions.
    fn newest_step(&self) -> Option<(u64, SettlementStatus, usize)> {
        let meta = self.node.metadata(false).ok()?;
        newest(&meta)
            .ok()
            .flatten()
            .map(|(r, _)| (r.epoch, r.status, r.submissions.len()))
    }

    fn settle_round(&self, signing_since: &mut Option<(u64, Instant)>) -> Result<(), NodeError> {
        let meta = self.node.metadata(true)?;
        match newest(&meta)? {
            Some((record, hash))
                if !matches!(
                    record.status,
                    SettlementStatus::Settled | SettlementStatus::Failed
                ) =>
            {
                self.advance(record, hash, signing_since)
            }
            last => {
                let epoch = last.map_or(0, |(r, _)| r.epoch + 1);
                if self.node.current_epoch() <= epoch {
                    return Ok(());
                }
                let since = match signing_since {
                    Some((e, at)) if *e == epoch => *at,
                    _ => {
                        *signing_since = Some((epoch, Instant::now()));
                        Instant::now()
                    }
                };
                self.start_settlement(epoch, since.elapsed() > COLLECT_GRACE)
            }
        }
    }

    /// The cluster's nodes: id, key, and whether the map has them up.
    fn members(&self) -> Vec<(NodeId, [u8; 32], bool)> {
        let map = self.node.map();
        map.nodes
            .values()
            .filter(|n| !map.removed.contains(&n.id))
            .filter_map(|n| Some((n.id, node_key_of(&n.peer_id)?, n.up)))
            .collect()
    }

    fn ask(&self, to: NodeId, request: &SettleRequest) -> Result<SettleReply, NodeError> {
        let bytes = serde_json::to_vec(request).unwrap_or_default();
        let reply = self.node.call_extension(to, bytes, COLLECT_TIMEOUT)?;
        serde_json::from_slice(&reply)
            .map_err(|e| NodeError::new("malformed", format!("settlement reply: {e}"), false))
    }

    /// Asks every member the map has up, all at once; a member the map has
    /// down is not asked (its answer is an error).
    fn ask_all(
        &self,
        members: &[(NodeId, [u8; 32], bool)],
        request: &SettleRequest,
    ) -> Vec<Result<SettleReply, NodeError>> {
        std::thread::scope(|scope| {
            let asks: Vec<_> = members
                .iter()
                .map(|&(id, _, up)| {
                    scope.spawn(move || {
                        if up {
                            self.ask(id, request)
                        } else {
                            Err(NodeError::unavailable("the node is down"))
                        }
                    })
                })
                .collect();
            asks.into_iter()
                .map(|a| {
                    a.join().unwrap_or_else(|_| {
                        Err(NodeError::unavailable("a settlement call panicked"))
                    })
                })
                .collect()
        })
    }

    /// Step 1: close the epoch everywhere, merge the volumes, record the
    /// report. Until `without_absent`, a node that does not answer makes it
    /// wait (its receipts would be lost to the settlement).
    fn start_settlement(&self, epoch: u64, without_absent: bool) -> Result<(), NodeError> {
        let cluster = self.cluster_id().map_err(be)?;
        let members = self.members();
        let mut parts = Vec::new();
        let mut absent = Vec::new();
        // Nodes the cluster has declared down are not waited for.
        let mut waited = Vec::new();
        let answers = self.ask_all(&members, &SettleRequest::Close { epoch });
        for ((id, _, up), answer) in members.iter().zip(answers) {
            match answer {
                Ok(SettleReply::Volume(part)) => parts.push(part),
                Ok(SettleReply::Refused(why)) => {
                    tracing::warn!(node = %show_id(*id), epoch, %why, "a node's volume was refused");
                    absent.push(show_id(*id));
                }
                Ok(SettleReply::Signed(_)) | Err(_) => {
                    absent.push(show_id(*id));
                    if *up {
                        waited.push(show_id(*id));
                    }
                }
            }
        }
        if !waited.is_empty() && !without_absent {
            return Err(NodeError::unavailable(format!(
                "waiting for node(s) {} to report their volume of epoch {epoch}",
                waited.join(", ")
            )));
        }
        let report = VolumeReport::merge(cluster, epoch, &parts)
            .map_err(|e| NodeError::new("internal", e.to_string(), false))?;
        // An epoch without traffic has nothing to sign or record: it is
        // settled at once (its reservations returned).
        let empty = report.node_volumes.is_empty();
        let mut record = SettlementRecord {
            epoch,
            status: SettlementStatus::Signing,
            report_hash: report.hash(),
            report,
            members: members.iter().map(|(_, k, _)| *k).collect(),
            absent,
            signatures: Vec::new(),
            submissions: Vec::new(),
            reference: None,
            started_ms: now_ms(),
            reason: None,
        };
        let mut returns = Vec::new();
        if empty {
            record.status = SettlementStatus::Settled;
            returns = self.settle_accounts(&record, false)?;
        }
        // An insert: if another leader recorded this epoch's report first,
        // this one is refused and theirs stands.
        let mut ops = vec![Op::Insert {
            collection: TRAFFIC_COLLECTION.into(),
            doc: record_doc(&record),
        }];
        ops.append(&mut returns);
        let command = Command { ops };
        self.node.propose(METADATA_GROUP, &command).map(|_| ())
    }

    fn update(
        &self,
        read: Hash,
        record: &SettlementRecord,
        mut more: Vec<Op>,
    ) -> Result<(), NodeError> {
        let mut ops = vec![
            Op::Expect {
                collection: TRAFFIC_COLLECTION.into(),
                id: record_id(record.epoch),
                doc_hash: Some(read),
            },
            Op::Upsert {
                collection: TRAFFIC_COLLECTION.into(),
                doc: record_doc(record),
            },
        ];
        ops.append(&mut more);
        self.node
            .propose(METADATA_GROUP, &Command { ops })
            .map(|_| ())
    }

    fn advance(
        &self,
        mut record: SettlementRecord,
        read: Hash,
        signing_since: &mut Option<(u64, Instant)>,
    ) -> Result<(), NodeError> {
        match record.status {
            SettlementStatus::Signing => {
                let since = match signing_since {
                    Some((e, at)) if *e == record.epoch => *at,
                    _ => {
                        *signing_since = Some((record.epoch, Instant::now()));
                        Instant::now()
                    }
                };
                let hash = record.report_hash;
                let mut signatures = Vec::new();
                let signers: Vec<_> = self
                    .members()
                    .into_iter()
                    .filter(|(_, key, _)| record.members.contains(key))
                    .collect();
                let request = SettleRequest::Sign {
                    report: record.report.clone(),
                };
                for ((_, key, _), answer) in signers.iter().zip(self.ask_all(&signers, &request)) {
                    if let Ok(SettleReply::Signed(s)) = answer
                        && s.node_key == *key
                    {
                        signatures.push(s);
                    }
                }
                signatures.sort_by_key(|a| a.node_key);
                let entry = SettlementEntry {
                    cluster_id: record.report.cluster_id,
                    epoch: record.epoch,
                    report_hash: hash,
                    signatures,
                };
                match entry.verify(&record.members) {
                    Ok(()) => {
                        record.signatures = entry.signatures;
                        record.status = SettlementStatus::Recording;
                        self.update(read, &record, Vec::new())
                    }
                    Err(e) if since.elapsed() > SIGN_GIVE_UP => {
                        record.status = SettlementStatus::Failed;
                        record.reason = Some(e.to_string());
                        tracing::error!(epoch = record.epoch, error = %e, "settlement failed");
                        let returns = self.settle_accounts(&record, false)?;
                        self.update(read, &record, returns)
                    }
                    Err(e) => Err(NodeError::unavailable(e.to_string())),
                }
            }
            SettlementStatus::Recording => {
                let chain = &self.config.chain;
                let entry = record.entry();
                let unavailable = |e: ChainError| {
                    NodeError::unavailable(format!("recording the settlement: {e}"))
                };
                let Some(latest) = record.submissions.last().cloned() else {
                    // Prepared and recorded first; sent on the next round.
                    let detail = chain
                        .prepare_settlement(&entry, None)
                        .map_err(unavailable)?;
                    record.submissions.push(detail);
                    return self.update(read, &record, Vec::new());
                };
                let mut latest_status = SubmissionStatus::Dropped;
                for (i, detail) in record.submissions.iter().enumerate().rev() {
                    let status = chain
                        .settlement_status(&entry, detail)
                        .map_err(unavailable)?;
                    if let SubmissionStatus::Included(reference) = status {
                        record.reference = Some(reference.to_string());
                        record.status = SettlementStatus::Recorded;
                        return self.update(read, &record, Vec::new());
                    }
                    if i + 1 == record.submissions.len() {
                        latest_status = status;
                    }
                }
                let why = match latest_status {
                    SubmissionStatus::Pending | SubmissionStatus::Included(_) => return Ok(()),
                    SubmissionStatus::Dropped => match chain.send_settlement(&entry, &latest) {
                        Ok(()) => return Ok(()),
                        Err(ChainError::Refused(why)) => why,
                        Err(e) => return Err(unavailable(e)),
                    },
                    SubmissionStatus::Failed(why) => why,
                };
                // None of them is on the chain and the latest cannot be:
                // a replacement, recorded before it is sent.
                tracing::warn!(epoch = record.epoch, %why, "replacing a settlement submission");
                let detail = chain
                    .prepare_settlement(&entry, Some(&latest))
                    .map_err(unavailable)?;
                record.submissions.push(detail);
                self.update(read, &record, Vec::new())
            }
            SettlementStatus::Recorded => {
                let moves = self.settle_accounts(&record, true)?;
                record.status = SettlementStatus::Settled;
                let result = self.update(read, &record, moves);
                if result.is_ok() {
                    tracing::info!(
                        epoch = record.epoch,
                        fees = %record.report.total_fee,
                        payers = record.report.wallet_volumes.len(),
                        "epoch settled"
                    );
                }
                result
            }
            SettlementStatus::Settled | SettlementStatus::Failed => Ok(()),
        }
    }

    /// The account changes of a settlement: payers debited their fees and
    /// nodes credited theirs (`charge`), and every reservation of the epoch
    /// or before returned.
    fn settle_accounts(
        &self,
        record: &SettlementRecord,
        charge: bool,
    ) -> Result<Vec<Op>, NodeError> {
        let meta = self.node.metadata(true)?;
        let mut changes = Changes::new();
        for (address, read) in accounts::with_reservations(&meta, record.epoch)? {
            let mut next = read.state.clone();
            next.reservations.retain(|r| r.epoch > record.epoch);
            changes.insert(address, (read, next));
        }
        if charge {
            for w in &record.report.wallet_volumes {
                let next = account_mut(&mut changes, &meta, w.payer)?;
                next.spent = next.spent.saturating_add(w.fee);
            }
            for n in &record.report.node_volumes {
                let next = account_mut(&mut changes, &meta, earnings_account(&n.node_key))?;
                next.earned = next.earned.saturating_add(n.fee);
            }
        }
        Ok(changes
            .iter()
            .flat_map(|(address, (read, next))| accounts::write_account(address, read, next))
            .collect())
    }
}
