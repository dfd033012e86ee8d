//! Follow the workload: a shard's leader hands its leadership to the
//! replica whose node sends it most of the shard's requests.
//!
//! A request that reaches a follower's node costs the cluster a hop to the
//! leader and back (raft forwards a write to the leader, a linearizable read
//! asks it for a read index); when most of a shard's requests enter through
//! one node, leading the shard there saves that hop for all of them, as
//! CockroachDB's "follow the workload" lease placement does. The leader counts
//! where its group's requests come from over windows of [`WINDOW`]; after a
//! window in which one other node sent at least [`MOVE_SHARE`] of at least
//! [`MIN_REQUESTS`], it hands leadership to that node, at most once per
//! [`COOLDOWN`]. Spread requests move nothing.
//!
//! The balancer of leaders (the node's heal loop) would move such a
//! leadership away again; it asks with [`Origins::serves_own_load`] first: a
//! leader whose own node sent at least half of a window's requests keeps
//! the group for [`KEEP`] after that window, so a pause in the load does not
//! send the leadership away only to have it come back when the load resumes
//! (each hand-over costs the requests in flight a retry).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::NodeId;

/// How long the requests of one decision are counted.
pub const WINDOW: Duration = Duration::from_secs(2);
/// Fewest requests in a window for any decision (a trickle moves nothing).
pub const MIN_REQUESTS: u64 = 200;
/// The share of a window's requests one other node must send, in percent.
pub const MOVE_SHARE: u64 = 75;
/// The least time between two hand-overs of one group by this node.
pub const COOLDOWN: Duration = Duration::from_secs(10);
/// How long a leader keeps a group from the balancer after the last window
/// in which its own node sent most of the group's requests.
pub const KEEP: Duration = Duration::from_secs(30);

/// Where a leader's requests came from: the current window's counts and
/// the verdict on the last complete one.
#[derive(Debug)]
pub struct Origins {
    started: Instant,
    counts: HashMap<NodeId, u64>,
    /// Until when the leader keeps the group from the balancer.
    keep_until: Option<Instant>,
    last_move: Option<Instant>,
}

impl Origins {
    pub fn new(now: Instant) -> Origins {
        Origins {
            started: now,
            counts: HashMap::new(),
            keep_until: None,
            last_move: None,
        }
    }

    /// Counts `requests` that entered the cluster at node `from`.
    pub fn note(&mut self, from: NodeId, requests: u64) {
        *self.counts.entry(from).or_default() += requests;
    }

    /// Forgets the counts (this replica just became leader: what it saw as
    /// a follower says nothing about the leader's load).
    pub fn restart(&mut self, now: Instant) {
        self.started = now;
        self.counts.clear();
        self.keep_until = None;
    }

    /// Closes the window once it is [`WINDOW`] old and answers the node to
    /// hand leadership to, if one other node sent most of its requests and
    /// the last hand-over is [`COOLDOWN`] old. `me`: this node.
    pub fn decide(&mut self, me: NodeId, now: Instant) -> Option<NodeId> {
        if now.duration_since(self.started) < WINDOW {
            return None;
        }
        let total: u64 = self.counts.values().sum();
        let own_load = self.own_load_so_far(me);
        let top = self
            .counts
            .iter()
            .filter(|(node, _)| **node != me)
            .max_by_key(|(node, count)| (**count, std::cmp::Reverse(**node)))
            .map(|(&node, &count)| (node, count));
        self.started = now;
        self.counts.clear();
        if own_load {
            self.keep_until = Some(now + KEEP);
        }
        let cooled = self
            .last_move
            .is_none_or(|at| now.duration_since(at) >= COOLDOWN);
        let (node, count) = top?;
        (total >= MIN_REQUESTS && count * 100 >= total * MOVE_SHARE && cooled).then_some(node)
    }

    /// The leadership was handed over at `now`: none again before [`COOLDOWN`].
    pub fn handed_over(&mut self, now: Instant) {
        self.last_move = Some(now);
    }

    /// Whether this node (`me`) itself sent at least half of a window's
    /// requests (and enough of them to count) within the last [`KEEP`], or
    /// has so far in the current window: leadership serves its own load
    /// here, and balancing it away would cost that load a hop. The current
    /// window counts so that a leadership just handed over here for its
    /// load is not balanced away before its first window closes (which
    /// sent leaderships back and forth under load).
    pub fn serves_own_load(&self, me: NodeId, now: Instant) -> bool {
        self.keep_until.is_some_and(|until| now < until) || self.own_load_so_far(me)
    }

    /// Whether the current window has enough requests to count, at least
    /// half of them from `me`.
    fn own_load_so_far(&self, me: NodeId) -> bool {
        let total: u64 = self.counts.values().sum();
        let own = self.counts.get(&me).copied().unwrap_or(0);
        total >= MIN_REQUESTS && own * 2 >= total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;

    #[test]
    fn a_node_sending_most_requests_gets_the_leadership_once_per_cooldown() {
        let t0 = Instant::now();
        let mut origins = Origins::new(t0);
        origins.note(2, 900);
        origins.note(ME, 100);
        assert_eq!(origins.decide(ME, t0 + WINDOW / 2), None, "window not over");
        assert_eq!(origins.decide(ME, t0 + WINDOW), Some(2));
        // Not handed over (the node lagged): asked again after the next window.
        origins.note(2, 1000);
        assert_eq!(origins.decide(ME, t0 + 2 * WINDOW), Some(2));
        origins.handed_over(t0 + 2 * WINDOW);
        // The same again within the cooldown: nothing.
        origins.note(2, 1000);
        assert_eq!(origins.decide(ME, t0 + 3 * WINDOW), None);
        origins.note(2, 1000);
        assert_eq!(origins.decide(ME, t0 + 2 * WINDOW + COOLDOWN), Some(2));
    }

    #[test]
    fn spread_or_scarce_requests_move_nothing() {
        let t0 = Instant::now();
        let mut origins = Origins::new(t0);
        // 70% from one node: under the share.
        origins.note(2, 700);
        origins.note(3, 300);
        assert_eq!(origins.decide(ME, t0 + WINDOW), None);
        // All from one node, but a trickle.
        origins.note(2, MIN_REQUESTS - 1);
        assert_eq!(origins.decide(ME, t0 + 2 * WINDOW), None);
        // The leader's own load, however large.
        origins.note(ME, 10_000);
        assert_eq!(origins.decide(ME, t0 + 3 * WINDOW), None);
    }

    #[test]
    fn a_leader_serving_its_own_load_keeps_it_for_a_while() {
        let t0 = Instant::now();
        let mut origins = Origins::new(t0);
        assert!(!origins.serves_own_load(ME, t0), "no window closed yet");
        // Too few, or less than half its own: not kept.
        origins.note(ME, 10);
        origins.decide(ME, t0 + WINDOW);
        assert!(
            !origins.serves_own_load(ME, t0 + WINDOW),
            "too few to count"
        );
        origins.note(ME, 499);
        origins.note(2, 501);
        origins.decide(ME, t0 + 2 * WINDOW);
        assert!(!origins.serves_own_load(ME, t0 + 2 * WINDOW));
        // Half its own: kept through a pause, until KEEP after that window.
        origins.note(ME, 500);
        origins.note(2, 500);
        let busy = t0 + 3 * WINDOW;
        origins.decide(ME, busy);
        assert!(origins.serves_own_load(ME, busy));
        origins.decide(ME, busy + WINDOW);
        assert!(origins.serves_own_load(ME, busy + KEEP - WINDOW), "a pause");
        assert!(!origins.serves_own_load(ME, busy + KEEP));
        origins.note(ME, 1000);
        origins.decide(ME, busy + KEEP);
        origins.restart(busy + KEEP);
        assert!(
            !origins.serves_own_load(ME, busy + KEEP),
            "forgotten on a new leadership"
        );
    }

    #[test]
    fn a_new_leader_already_serving_its_own_load_is_kept_before_its_first_window_closes() {
        let t0 = Instant::now();
        let mut origins = Origins::new(t0);
        origins.restart(t0);
        let early = t0 + WINDOW / 4;
        origins.note(ME, MIN_REQUESTS / 2);
        assert!(!origins.serves_own_load(ME, early), "too few yet");
        origins.note(2, MIN_REQUESTS / 2);
        assert!(origins.serves_own_load(ME, early), "half its own, enough");
        origins.note(2, 1);
        assert!(!origins.serves_own_load(ME, early), "under half");
    }
}
