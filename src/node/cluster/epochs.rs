//! Epochs: every `--anchor-interval` the metadata leader folds the shard
//! roots into one cluster root and anchors it on the chain. It runs in its
//! own thread, because it waits on shard leaders and on the chain.
//!
//! One epoch, each step recorded in group 0 ([`super::anchors`]) before the
//! next is taken, so that whoever leads next resumes it from its record:
//!
//! 1. start epoch `e` (the record, `sealing`);
//! 2. ask every shard's leader to mark its shard for `e` (`Op::AnchorMark`
//!    through its raft group, so every replica records the same raft index
//!    and root), fold the leaves into the cluster root, record them and the
//!    payload (still `sealing`); a shard that cannot be marked within
//!    [`SEAL_WAIT`] makes the epoch `skipped`;
//! 3. [`Chain::prepare`] the submission and record it (`submitted`);
//! 4. [`Chain::send`] it and wait for inclusion; record the reference
//!    (`anchored`), or the chain's refusal (`failed`). A submission the chain
//!    dropped is replaced by one prepared with `replacing` and recorded
//!    before it is sent.
//!
//! A recorded submission is only ever sent again, never prepared afresh, so a
//! leader change cannot put two different anchors of one epoch on the chain.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stratosdb_chain_anchor::{
    AnchorPayload, Chain, ChainError, ShardLeaf, Submission, SubmissionStatus, cluster_root,
};
use stratosdb_engine::{ApplyOutcome, Command, Hash, Op, Shard};
use stratosdb_replication::{GroupId, METADATA_GROUP, ReplicationError, metadata};
use stratosdb_verifier::leaves::sort_leaves;

use super::anchors::{self, EpochRecord, EpochStatus, Read};
use super::node::{ClusterNode, NodeError, failed_reply, reply_error, show_id};
use super::rpc::{RpcReply, RpcRequest};

/// How long an epoch waits for every shard's mark before it is skipped.
pub const SEAL_WAIT: Duration = Duration::from_secs(10);
/// How long one round waits for a sent submission's inclusion (the next
/// round sends it again and waits again).
const INCLUDE_WAIT: Duration = Duration::from_secs(30);
/// How long an unsent epoch may wait for an unreachable chain before it is
/// recorded as failed (a sent one waits as long as it takes: it may still
/// be included).
const UNREACHABLE_BOUND: Duration = Duration::from_secs(60);
/// How long one mark request may take.
const MARK_TIMEOUT: Duration = Duration::from_secs(5);

/// Anchoring's settings: how often, and on which chain.
#[derive(Clone)]
pub struct AnchorConfig {
    pub interval: Duration,
    pub chain: Arc<dyn Chain>,
}

impl std::fmt::Debug for AnchorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorConfig")
            .field("interval", &self.interval)
            .field("chain", &self.chain.info())
            .finish()
    }
}

/// What this node did as the anchoring leader, for `/metrics`.
#[derive(Default)]
pub struct AnchorCounters {
    pub sent: AtomicU64,
    pub anchored: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
}

impl AnchorCounters {
    /// `(status label, count)` in a fixed order.
    pub fn values(&self) -> [(&'static str, u64); 5] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("sent", v(&self.sent)),
            ("anchored", v(&self.anchored)),
            ("dropped", v(&self.dropped)),
            ("failed", v(&self.failed)),
            ("skipped", v(&self.skipped)),
        ]
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What one step of an epoch came to.
enum Step {
    /// Recorded a change: take the next step now.
    Next,
    /// Nothing more to do this round.
    Wait,
    /// The newest epoch is over; the next is due at this time (ms since
    /// the Unix epoch).
    DueAt(u64),
}

/// When the epoch after one that started at `last_start` starts, if it is
/// `now`: on schedule, one interval after the last one's start, so that
/// epochs last the interval however late the loop notices; or now, if the
/// schedule is more than an interval behind (a leader change, an outage),
/// rather than a burst of short epochs to catch up. `None`: not due yet.
fn scheduled_start(last_start: Option<u64>, interval: u64, now: u64) -> Option<u64> {
    let Some(due) = last_start.map(|s| s.saturating_add(interval)) else {
        return Some(now);
    };
    if now < due {
        None
    } else if now - due < interval {
        Some(due)
    } else {
        Some(now)
    }
}

impl ClusterNode {
    /// The anchoring thread's loop (see the module's documentation). While
    /// the newest epoch is over, the leader sleeps until the next is due
    /// (waking every tick to notice a stop or a lost leadership) instead of
    /// reading group 0 every tick, and starts it on schedule.
    pub(super) fn anchor_loop(&self, config: AnchorConfig) {
        let tick =
            (config.interval / 5).clamp(Duration::from_millis(20), Duration::from_millis(200));
        // When the next epoch is due, as this node last read it as leader.
        // Another leader's epochs only move it later, so an outdated value
        // costs one early round, never a late epoch.
        let mut due: Option<u64> = None;
        while !self.is_stopping() {
            let leads = self.raft.status(METADATA_GROUP).is_ok_and(|s| s.is_leader);
            if !leads {
                due = None;
            } else if due.is_none_or(|d| now_ms() >= d) && self.readiness().is_ok() {
                due = match self.anchor_round(&config) {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::info!(error = %e, "anchoring round");
                        None
                    }
                };
            }
            let until_due = due.map_or(tick, |d| {
                Duration::from_millis(d.saturating_sub(now_ms())).max(Duration::from_millis(1))
            });
            std::thread::sleep(tick.min(until_due));
        }
    }

    /// Takes the newest epoch as far as it goes now, or starts the next one
    /// when it is due; when the next one is not due yet, the time it is.
    fn anchor_round(&self, config: &AnchorConfig) -> Result<Option<u64>, NodeError> {
        // Bounded: an epoch has at most a handful of steps.
        for _ in 0..16 {
            if self.is_stopping() {
                return Ok(None);
            }
            self.raft
                .read_index(METADATA_GROUP, MARK_TIMEOUT)
                .wait(MARK_TIMEOUT)?;
            let meta = self.raft.shard(METADATA_GROUP)?;
            let Some(cluster_id) = metadata::read_cluster_id(&meta)? else {
                return Ok(None);
            };
            if !anchors::has_collection(&meta) {
                self.propose_local(METADATA_GROUP, &anchors::create_collection())?;
                continue;
            }
            let last = anchors::newest(&meta, 1)?.into_iter().next();
            let step = match last {
                Some((record, hash)) if !record.status.is_final() => {
                    self.advance(config, cluster_id, record, hash)?
                }
                last => self.start_epoch(config, last.as_ref())?,
            };
            match step {
                Step::Next => {}
                Step::Wait => return Ok(None),
                Step::DueAt(due) => return Ok(Some(due)),
            }
        }
        Ok(None)
    }

    /// Starts the epoch after `last` if the interval has passed since it
    /// started ([`scheduled_start`]).
    fn start_epoch(&self, config: &AnchorConfig, last: Option<&Read>) -> Result<Step, NodeError> {
        let interval = u64::try_from(config.interval.as_millis()).unwrap_or(u64::MAX);
        let last_start = last.map(|(r, _)| r.started_ms);
        let Some(start) = scheduled_start(last_start, interval, now_ms()) else {
            return Ok(Step::DueAt(
                last_start.unwrap_or(0).saturating_add(interval),
            ));
        };
        let epoch = last.map_or(1, |(r, _)| r.epoch + 1);
        let record = EpochRecord::start(epoch, last.map(|(r, _)| r), start);
        self.record(&anchors::start_command(last, &record)?)?;
        tracing::debug!(epoch, "epoch started");
        Ok(Step::Next)
    }

    /// One step of an unfinished epoch.
    fn advance(
        &self,
        config: &AnchorConfig,
        cluster_id: Hash,
        record: EpochRecord,
        hash: Hash,
    ) -> Result<Step, NodeError> {
        let chain = config.chain.as_ref();
        let next = match (&record.payload, &record.submission) {
            (None, _) => self.seal(cluster_id, &record),
            (Some(payload), None) => match chain.prepare(payload, None) {
                Ok(submission) => EpochRecord {
                    status: EpochStatus::Submitted,
                    submission: Some(submission),
                    ..record.clone()
                },
                Err(e) => match self.unsent_failure(&record, e) {
                    Some(failed) => failed,
                    None => return Ok(Step::Wait),
                },
            },
            (Some(payload), Some(submission)) => {
                match self.send(chain, &record, payload, submission)? {
                    Some(next) => next,
                    None => return Ok(Step::Wait),
                }
            }
        };
        self.record(&anchors::update_command(hash, &next)?)?;
        let counters = &self.anchor_counters;
        match next.status {
            EpochStatus::Anchored => {
                counters.anchored.fetch_add(1, Ordering::Relaxed);
                tracing::info!(epoch = next.epoch, reference = ?next.reference, "epoch anchored");
            }
            EpochStatus::Failed => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(epoch = next.epoch, reason = ?next.reason, "epoch failed");
            }
            EpochStatus::Skipped => {
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(epoch = next.epoch, reason = ?next.reason, "epoch skipped");
            }
            EpochStatus::Sealing | EpochStatus::Submitted => {}
        }
        Ok(Step::Next)
    }

    /// A chain error before anything was sent: the epoch fails if the chain
    /// refused, or if it stayed unreachable past [`UNREACHABLE_BOUND`];
    /// `None`: try again next round.
    fn unsent_failure(&self, record: &EpochRecord, e: ChainError) -> Option<EpochRecord> {
        let waited = Duration::from_millis(now_ms().saturating_sub(record.started_ms));
        match e {
            ChainError::Unavailable(_) if waited < UNREACHABLE_BOUND => {
                tracing::info!(epoch = record.epoch, error = %e, "the chain is unreachable; retrying");
                None
            }
            e => Some(record.ended(EpochStatus::Failed, format!("preparing the anchor: {e}"))),
        }
    }

    /// Sends the recorded submission (again: harmless) and waits for it.
    /// `None`: still pending, or the chain unreachable (next round).
    fn send(
        &self,
        chain: &dyn Chain,
        record: &EpochRecord,
        payload: &AnchorPayload,
        submission: &Submission,
    ) -> Result<Option<EpochRecord>, NodeError> {
        match chain.send(submission) {
            Ok(()) => {
                self.anchor_counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e @ ChainError::Unavailable(_)) => {
                tracing::info!(epoch = record.epoch, error = %e, "sending the anchor; retrying");
                return Ok(None);
            }
            Err(e) => {
                return Ok(Some(record.ended(
                    EpochStatus::Failed,
                    format!("the chain refused the anchor: {e}"),
                )));
            }
        }
        let status = match chain.wait_included(submission, INCLUDE_WAIT) {
            Ok(status) => status,
            Err(e) => {
                tracing::info!(epoch = record.epoch, error = %e, "waiting for inclusion");
                return Ok(None);
            }
        };
        Ok(match status {
            SubmissionStatus::Pending => None,
            SubmissionStatus::Included(reference) => Some(EpochRecord {
                status: EpochStatus::Anchored,
                reference: Some(reference),
                ..record.clone()
            }),
            SubmissionStatus::Failed(why) => Some(record.ended(
                EpochStatus::Failed,
                format!("the anchor failed on the chain: {why}"),
            )),
            SubmissionStatus::Dropped => {
                self.anchor_counters.dropped.fetch_add(1, Ordering::Relaxed);
                match chain.prepare(payload, Some(submission)) {
                    // Recorded before it is sent, as the first one was.
                    Ok(replacement) => Some(EpochRecord {
                        submission: Some(replacement),
                        ..record.clone()
                    }),
                    Err(e) => {
                        tracing::info!(epoch = record.epoch, error = %e, "replacing a dropped anchor");
                        None
                    }
                }
            }
        })
    }

    /// Marks every shard for the epoch and seals it, or skips it.
    fn seal(&self, cluster_id: Hash, record: &EpochRecord) -> EpochRecord {
        let map = match self.refresh_map() {
            Ok(map) => map,
            Err(e) => return record.ended(EpochStatus::Skipped, format!("no cluster map: {e}")),
        };
        let shards: Vec<(GroupId, String, u32)> = map
            .shards
            .values()
            .map(|s| (s.group, s.collection.clone(), s.shard))
            .collect();
        let deadline = Instant::now() + SEAL_WAIT;
        let epoch = record.epoch;
        let results: Vec<Result<ShardLeaf, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .iter()
                .map(|(group, collection, shard)| {
                    scope.spawn(move || {
                        self.mark_shard(*group, epoch, deadline)
                            .map(|(raft_index, root)| ShardLeaf {
                                collection: collection.clone(),
                                shard: *shard,
                                raft_index,
                                root,
                            })
                            .map_err(|e| format!("{collection}/{shard}: {e}"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a mark request panicked".into()))
                })
                .collect()
        });
        let mut leaves = Vec::with_capacity(results.len());
        let mut missing = Vec::new();
        for r in results {
            match r {
                Ok(leaf) => leaves.push(leaf),
                Err(why) => missing.push(why),
            }
        }
        if !missing.is_empty() {
            return record.ended(
                EpochStatus::Skipped,
                format!(
                    "{} shard(s) could not be marked within {} s: {}",
                    missing.len(),
                    SEAL_WAIT.as_secs(),
                    missing.join("; ")
                ),
            );
        }
        sort_leaves(&mut leaves);
        let payload = AnchorPayload {
            cluster_id,
            epoch,
            cluster_root: cluster_root(&leaves),
            leaf_count: u32::try_from(leaves.len()).unwrap_or(u32::MAX),
            previous: record.previous,
        };
        EpochRecord {
            leaves,
            payload: Some(payload),
            ..record.clone()
        }
    }

    /// Proposes a change of the epochs' records on this node (the metadata
    /// leader); a conflict means another leader moved the epoch on.
    fn record(&self, command: &Command) -> Result<(), NodeError> {
        self.propose_local(METADATA_GROUP, command).map(|_| ())
    }

    /// `group`'s mark of `epoch` from its leader: `(raft index, root)`.
    fn mark_shard(
        &self,
        group: GroupId,
        epoch: u64,
        deadline: Instant,
    ) -> Result<(u64, Hash), NodeError> {
        let mut hint = None;
        let mut turn = 0usize;
        loop {
            let attempt = self
                .target(group, hint.take(), &mut turn)
                .and_then(|target| {
                    let reply = if target == self.id {
                        self.serve_mark(group, epoch)
                    } else {
                        self.call(target, &RpcRequest::AnchorMark { group, epoch })?
                    };
                    match reply {
                        RpcReply::Mark { raft_index, root } => Ok((raft_index, root)),
                        RpcReply::NotLeader { leader } => {
                            hint = leader.filter(|&l| l != target);
                            Err(NodeError::new("unavailable", "not the leader", true))
                        }
                        other => Err(failed_reply(other)),
                    }
                });
            match attempt {
                // Marking again is harmless: the leader answers the mark
                // it has, so every error is worth another try in time.
                Err(e) if Instant::now() < deadline && !self.is_stopping() => {
                    tracing::debug!(group, epoch, error = %e, "marking a shard");
                    if hint.is_none() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                other => return other,
            }
        }
    }

    /// On a shard's leader: its mark of `epoch`, proposed first if it has
    /// none.
    pub(super) fn serve_mark(&self, group: GroupId, epoch: u64) -> RpcReply {
        let shard = match self.raft.shard(group) {
            Ok(shard) if self.hosts(group) => shard,
            Ok(_) => return RpcReply::error("unavailable", "no replica of the group here", true),
            Err(e) => return reply_error(e.into()),
        };
        match recorded_mark(&shard, epoch) {
            Ok(Some((raft_index, root))) => return RpcReply::Mark { raft_index, root },
            Ok(None) => {}
            Err(e) => return reply_error(e),
        }
        let command = Command {
            ops: vec![Op::AnchorMark { epoch }],
        };
        match self.raft.propose(group, &command).wait(MARK_TIMEOUT) {
            Err(ReplicationError::NotLeader { leader, .. }) => RpcReply::NotLeader { leader },
            Err(e) => RpcReply::error("unavailable", e.to_string(), true),
            Ok(ApplyOutcome::Rejected(e)) => reply_error(e.into()),
            Ok(ApplyOutcome::Applied(_) | ApplyOutcome::AlreadyApplied) => {
                match recorded_mark(&shard, epoch) {
                    Ok(Some((raft_index, root))) => RpcReply::Mark { raft_index, root },
                    Ok(None) => RpcReply::error(
                        "unavailable",
                        format!(
                            "the mark of epoch {epoch} is not on node {}'s replica",
                            show_id(self.id)
                        ),
                        true,
                    ),
                    Err(e) => reply_error(e),
                }
            }
        }
    }
}

/// The shard's mark of `epoch`, if this replica applied one.
fn recorded_mark(shard: &Shard, epoch: u64) -> Result<Option<(u64, Hash)>, NodeError> {
    Ok(shard
        .anchor_mark(epoch)?
        .map(|mark| (mark.raft_index, mark.root)))
}

#[cfg(test)]
mod tests {
    use super::scheduled_start;

    /// Epochs start one interval apart however late the loop looks, unless
    /// the schedule is more than an interval behind.
    #[test]
    fn epochs_start_on_schedule() {
        assert_eq!(scheduled_start(None, 1000, 5_123), Some(5_123));
        assert_eq!(scheduled_start(Some(5_000), 1000, 5_999), None);
        assert_eq!(scheduled_start(Some(5_000), 1000, 6_000), Some(6_000));
        assert_eq!(scheduled_start(Some(5_000), 1000, 6_180), Some(6_000));
        assert_eq!(scheduled_start(Some(5_000), 1000, 6_999), Some(6_000));
        assert_eq!(scheduled_start(Some(5_000), 1000, 7_000), Some(7_000));
        assert_eq!(scheduled_start(Some(5_000), 1000, 60_000), Some(60_000));
        assert_eq!(scheduled_start(Some(u64::MAX - 5), 1000, 10), None);
    }
}
