//! Placement: which live nodes hold the replicas of a new collection's
//! shards.
//!
//! The rules, in order of strength:
//! 1. never two replicas of one shard on one node, and only live nodes;
//! 2. balance: every replica goes to a live node with the fewest replicas
//!    (existing placements count), so if the per-node counts differed by at
//!    most one before, they still do after;
//! 3. zones: among equally loaded nodes, one in a zone this shard does not
//!    use yet wins, then the zone holding fewer replicas, then the lower id.
//!
//! Balance wins over zones: with one node in zone `a` and five in zone `b`,
//! the `a` node does not get a replica of every shard. On a cluster whose
//! nodes all hold the same count (a fresh one, for instance), a shard's
//! replicas span `min(replicas, zones)` zones.
//!
//! The result is a function of the inputs alone (no randomness, ties broken
//! by node id), so every replica of the metadata group computes the same.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster_map::{ClusterMap, NodeInfo, ShardInfo};
use crate::{GroupId, NodeId};

/// Shards of a collection created without `shards = N`.
pub const DEFAULT_SHARDS: u32 = 4;
/// The replica count of a collection created without `replicas = N` is
/// `min(DEFAULT_REPLICAS, live nodes)`.
pub const DEFAULT_REPLICAS: u32 = 3;

/// Why a collection could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{replicas} replicas asked for, but only {live} nodes are live")]
    NotEnoughNodes { live: usize, replicas: u32 },
    #[error("a collection needs at least one shard")]
    NoShards,
    #[error("a shard needs at least one replica")]
    NoReplicas,
    #[error("no group ids are left after {next}")]
    GroupsExhausted { next: GroupId },
}

impl PlacementError {
    /// A stable, greppable code for the error kind.
    pub fn code(&self) -> &'static str {
        match self {
            PlacementError::NotEnoughNodes { .. } => "not_enough_nodes",
            PlacementError::NoShards => "no_shards",
            PlacementError::NoReplicas => "no_replicas",
            PlacementError::GroupsExhausted { .. } => "groups_exhausted",
        }
    }
}

/// `min(DEFAULT_REPLICAS, live nodes)`.
pub fn default_replicas(nodes: &[NodeInfo]) -> u32 {
    let live = nodes.iter().filter(|n| n.up).count();
    DEFAULT_REPLICAS.min(u32::try_from(live).unwrap_or(u32::MAX))
}

/// Places `shards` shards of `collection`, `replicas` replicas each, on the
/// live `nodes`; `existing` are the placements already made (they count for
/// balance) and the shards get groups `first_group, first_group + 1, ...`.
///
/// ```
/// use stratosdb_replication::{NodeInfo, placement::place};
/// let nodes: Vec<NodeInfo> = (1..=3)
///     .map(|id| NodeInfo::new(id, format!("peer{id}"), String::new(), String::new()))
///     .collect();
/// let shards = place(&nodes, &[], 1, "users", 4, 3).unwrap();
/// assert_eq!(shards.len(), 4);
/// assert!(shards.iter().all(|s| s.replicas.len() == 3));
/// ```
pub fn place(
    nodes: &[NodeInfo],
    existing: &[ShardInfo],
    first_group: GroupId,
    collection: &str,
    shards: u32,
    replicas: u32,
) -> Result<Vec<ShardInfo>, PlacementError> {
    if shards == 0 {
        return Err(PlacementError::NoShards);
    }
    if replicas == 0 {
        return Err(PlacementError::NoReplicas);
    }
    let mut live: Vec<&NodeInfo> = nodes.iter().filter(|n| n.up).collect();
    live.sort_by_key(|n| n.id);
    live.dedup_by_key(|n| n.id);
    let not_enough = PlacementError::NotEnoughNodes {
        live: live.len(),
        replicas,
    };
    if live.len() < replicas as usize {
        return Err(not_enough);
    }
    let mut load: BTreeMap<NodeId, u64> = live.iter().map(|n| (n.id, 0)).collect();
    let mut zone_load: BTreeMap<&str, u64> = BTreeMap::new();
    let zone_of: BTreeMap<NodeId, Option<&str>> =
        live.iter().map(|n| (n.id, n.zone.as_deref())).collect();
    for replica in existing.iter().flat_map(|s| &s.replicas) {
        add_load(replica, &mut load, &mut zone_load, &zone_of);
    }

    let mut placed = Vec::with_capacity(shards as usize);
    for shard in 0..shards {
        let group = first_group
            .checked_add(shard)
            .ok_or(PlacementError::GroupsExhausted { next: first_group })?;
        let mut chosen: Vec<NodeId> = Vec::with_capacity(replicas as usize);
        let mut used_zones: BTreeSet<&str> = BTreeSet::new();
        for _ in 0..replicas {
            let best = live
                .iter()
                .filter(|n| !chosen.contains(&n.id))
                .min_by_key(|n| {
                    let zone = n.zone.as_deref();
                    let zone_used = zone.is_some_and(|z| used_zones.contains(z));
                    let in_zone = zone.and_then(|z| zone_load.get(z).copied()).unwrap_or(0);
                    (load.get(&n.id).copied(), zone_used, in_zone, n.id)
                })
                .ok_or_else(|| not_enough.clone())?;
            chosen.push(best.id);
            if let Some(z) = best.zone.as_deref() {
                used_zones.insert(z);
            }
            add_load(&best.id, &mut load, &mut zone_load, &zone_of);
        }
        placed.push(ShardInfo {
            collection: collection.to_owned(),
            shard,
            group,
            replicas: chosen,
            leader: None,
            moves: Vec::new(),
        });
    }
    Ok(placed)
}

fn add_load<'a>(
    node: &NodeId,
    load: &mut BTreeMap<NodeId, u64>,
    zone_load: &mut BTreeMap<&'a str, u64>,
    zone_of: &BTreeMap<NodeId, Option<&'a str>>,
) {
    // Replicas on nodes that are down or gone do not count.
    if let Some(count) = load.get_mut(node) {
        *count += 1;
    }
    if let Some(Some(zone)) = zone_of.get(node) {
        *zone_load.entry(zone).or_default() += 1;
    }
}

/// Bounds on the replica moves [`plan_moves`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveLimits {
    /// Moves in flight that involve one node (as source or target).
    pub per_node: usize,
    /// Moves in flight in the whole cluster.
    pub total: usize,
}

impl Default for MoveLimits {
    fn default() -> Self {
        MoveLimits {
            per_node: 2,
            total: 8,
        }
    }
}

/// A move [`plan_moves`] asks for: a replica of `group` to `to`, from
/// `from` (none: a missing replica is added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedMove {
    pub group: GroupId,
    pub from: Option<NodeId>,
    pub to: NodeId,
}

/// The replica moves to start now, given the map (with the moves already
/// in flight): first repairs (a replica on a node that is down, draining or
/// gone, or a shard with fewer replicas than its collection asks for), then,
/// only once nothing needs repair and nothing moves, rebalancing (from the
/// most to the least loaded live node, until every live node is within one
/// replica of the others). One move per shard at a time, never two replicas
/// on a node, within `limits`. The targets follow [`place`]'s rules: fewest
/// replicas first, then a zone the shard does not use yet.
pub fn plan_moves(map: &ClusterMap, limits: MoveLimits) -> Vec<PlannedMove> {
    let live: Vec<&NodeInfo> = map.nodes.values().filter(|n| map.is_live(n.id)).collect();
    let mut load: BTreeMap<NodeId, usize> = live.iter().map(|n| (n.id, 0)).collect();
    let mut busy: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut in_flight = 0;
    for shard in map.shards.values() {
        for &r in shard
            .replicas
            .iter()
            .chain(shard.moves.iter().map(|m| &m.to))
        {
            if let Some(l) = load.get_mut(&r) {
                *l += 1;
            }
        }
        for m in &shard.moves {
            in_flight += 1;
            for n in m.from.into_iter().chain([m.to]) {
                *busy.entry(n).or_default() += 1;
            }
        }
    }
    let zone_of = |id: NodeId| map.nodes.get(&id).and_then(|n| n.zone.clone());
    let mut planned: Vec<PlannedMove> = Vec::new();
    let free = |n: NodeId, busy: &BTreeMap<NodeId, usize>| {
        busy.get(&n).copied().unwrap_or(0) < limits.per_node
    };
    let take = |m: PlannedMove,
                planned: &mut Vec<PlannedMove>,
                load: &mut BTreeMap<NodeId, usize>,
                busy: &mut BTreeMap<NodeId, usize>| {
        if let Some(l) = load.get_mut(&m.to) {
            *l += 1;
        }
        if let Some(f) = m.from
            && let Some(l) = load.get_mut(&f)
        {
            *l = l.saturating_sub(1);
        }
        for n in m.from.into_iter().chain([m.to]) {
            *busy.entry(n).or_default() += 1;
        }
        planned.push(m);
    };

    // Repairs.
    let mut needs_repair = false;
    for shard in map.shards.values() {
        if !shard.moves.is_empty() {
            continue;
        }
        let wanted = map
            .collections
            .get(&shard.collection)
            .map_or(shard.replicas.len(), |c| c.replicas as usize);
        let from = match shard.replicas.iter().find(|&&r| !map.is_live(r)) {
            Some(&dead) => Some(dead),
            None if shard.replicas.len() < wanted => None,
            None => continue,
        };
        needs_repair = true;
        if in_flight + planned.len() >= limits.total || from.is_some_and(|f| !free(f, &busy)) {
            continue;
        }
        let used_zones: BTreeSet<String> = shard
            .replicas
            .iter()
            .filter(|&&r| Some(r) != from)
            .filter_map(|&r| zone_of(r))
            .collect();
        let target = live
            .iter()
            .filter(|n| !shard.placed_on(n.id) && free(n.id, &busy))
            .min_by_key(|n| {
                let zone_used = n.zone.as_ref().is_some_and(|z| used_zones.contains(z));
                (load.get(&n.id).copied(), zone_used, n.id)
            });
        if let Some(t) = target {
            let m = PlannedMove {
                group: shard.group,
                from,
                to: t.id,
            };
            take(m, &mut planned, &mut load, &mut busy);
        }
    }
    if needs_repair || in_flight > 0 || live.len() < 2 {
        return planned;
    }

    // Rebalancing: the most loaded node gives one replica to the least
    // loaded one that does not hold that shard, while they differ by more
    // than one.
    let mut moved: BTreeSet<GroupId> = BTreeSet::new();
    while planned.len() < limits.total {
        let by_load = |a: &(&NodeId, &usize)| (*a.1, *a.0);
        let Some((&most, &high)) = load.iter().max_by_key(by_load) else {
            break;
        };
        let mut step = None;
        let mut targets: Vec<(NodeId, usize)> = load.iter().map(|(&n, &l)| (n, l)).collect();
        targets.sort_by_key(|&(n, l)| (l, n));
        'search: for (least, low) in targets {
            if high <= low + 1 {
                break;
            }
            if !free(most, &busy) || !free(least, &busy) {
                continue;
            }
            // Shards `most` leads first: their leadership moves with them,
            // so a new node gets leaders too.
            let mut candidates: Vec<&ShardInfo> = map.shards.values().collect();
            candidates.sort_by_key(|s| (s.leader != Some(most), s.group));
            for shard in candidates {
                if shard.replicas.contains(&most)
                    && !shard.placed_on(least)
                    && shard.moves.is_empty()
                    && !moved.contains(&shard.group)
                {
                    step = Some(PlannedMove {
                        group: shard.group,
                        from: Some(most),
                        to: least,
                    });
                    break 'search;
                }
            }
        }
        let Some(m) = step else {
            break;
        };
        moved.insert(m.group);
        take(m, &mut planned, &mut load, &mut busy);
    }
    planned
}

/// A count of 0 for every live node.
fn live_zeroes(map: &ClusterMap) -> BTreeMap<NodeId, usize> {
    map.nodes
        .keys()
        .filter(|&&n| map.is_live(n))
        .map(|&n| (n, 0))
        .collect()
}

/// A leadership hand-over [`plan_leader_moves`] asks for: the leader of
/// `group` on `from` hands over to its replica on `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderMove {
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
}

/// Leadership hand-overs that balance the shard leaders across the live
/// nodes, from the map's leader hints: while a live node leads more than
/// `ceil(groups / live nodes) + 1` shards, one of its shards (with no
/// replica move in flight, not in `skip`) goes to a live replica that leads
/// fewer than `ceil(groups / live nodes)`, the one leading fewest first (then
/// the lower id). At most `max` hand-overs; each takes the count of its
/// source down and its target up, so no node is pushed over the bound.
///
/// ```
/// use stratosdb_replication::{ClusterMap, MapCommand, NodeInfo, placement::plan_leader_moves};
/// let mut map = ClusterMap::new();
/// for id in 1..=3 {
///     map.apply(&MapCommand::AddNode(NodeInfo::new(id, format!("p{id}"), String::new(), String::new()))).unwrap();
/// }
/// map.apply(&MapCommand::CreateCollection { name: "c".into(), shards: Some(6), replicas: Some(3) }).unwrap();
/// let groups: Vec<_> = map.shards.keys().copied().collect();
/// for g in groups {
///     map.apply(&MapCommand::SetLeader { group: g, leader: Some(1) }).unwrap();
/// }
/// // Node 1 leads 6 of 6, over ceil(6 / 3) + 1 = 3: it hands over 3.
/// let moves = plan_leader_moves(&map, 10, |_| false);
/// assert_eq!(moves.len(), 3);
/// assert!(moves.iter().all(|m| m.from == 1 && m.to != 1));
/// ```
pub fn plan_leader_moves(
    map: &ClusterMap,
    max: usize,
    skip: impl Fn(GroupId) -> bool,
) -> Vec<LeaderMove> {
    let mut led = live_zeroes(map);
    if led.is_empty() {
        return Vec::new();
    }
    let mut leader_of: BTreeMap<GroupId, NodeId> = BTreeMap::new();
    for shard in map.shards.values() {
        if let Some(l) = shard.leader
            && let Some(count) = led.get_mut(&l)
        {
            *count += 1;
            leader_of.insert(shard.group, l);
        }
    }
    let groups = leader_of.len();
    let fair = groups.div_ceil(led.len());
    let bound = fair + 1;
    let mut planned = Vec::new();
    while planned.len() < max {
        // The most loaded node (the lower id on a tie).
        let Some((&from, &count)) = led.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        else {
            break;
        };
        if count <= bound {
            break;
        }
        let mut best: Option<(usize, NodeId, GroupId)> = None;
        for (&group, _) in leader_of.iter().filter(|&(_, &l)| l == from) {
            let Some(shard) = map.shards.get(&group) else {
                continue;
            };
            if !shard.moves.is_empty() || skip(group) {
                continue;
            }
            for &to in &shard.replicas {
                let Some(&n) = led.get(&to) else { continue };
                if to != from && n < fair && best.is_none_or(|b| (n, to) < (b.0, b.1)) {
                    best = Some((n, to, group));
                }
            }
        }
        let Some((_, to, group)) = best else { break };
        *led.entry(from).or_default() -= 1;
        *led.entry(to).or_default() += 1;
        leader_of.insert(group, to);
        planned.push(LeaderMove { group, from, to });
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, zone: Option<&str>) -> NodeInfo {
        let mut n = NodeInfo::new(id, format!("p{id}"), String::new(), String::new());
        n.zone = zone.map(str::to_owned);
        n
    }

    #[test]
    fn too_few_live_nodes_is_a_typed_error() {
        let mut nodes = vec![node(1, None), node(2, None), node(3, None)];
        nodes[2].up = false;
        assert_eq!(
            place(&nodes, &[], 1, "c", 4, 3),
            Err(PlacementError::NotEnoughNodes {
                live: 2,
                replicas: 3
            })
        );
        assert_eq!(
            place(&nodes, &[], 1, "c", 0, 1),
            Err(PlacementError::NoShards)
        );
        assert_eq!(
            place(&nodes, &[], 1, "c", 1, 0),
            Err(PlacementError::NoReplicas)
        );
        assert_eq!(default_replicas(&nodes), 2);
    }

    #[test]
    fn a_fresh_shard_spans_the_zones() {
        let nodes = vec![
            node(1, Some("a")),
            node(2, Some("a")),
            node(3, Some("b")),
            node(4, Some("b")),
            node(5, Some("c")),
        ];
        let placed = place(&nodes, &[], 7, "c", 2, 3).unwrap();
        assert_eq!(placed[0].replicas, vec![1, 3, 5]);
        assert_eq!(placed[0].group, 7);
        assert_eq!(placed[1].group, 8);
        // The loaded nodes wait; 2 and 4 come first.
        assert_eq!(&placed[1].replicas[..2], &[2, 4]);
    }

    fn cluster(nodes: &[(NodeId, Option<&str>)], shards: u32, replicas: u32) -> ClusterMap {
        use crate::MapCommand;
        let mut map = ClusterMap::new();
        for &(id, zone) in nodes {
            map.apply(&MapCommand::AddNode(node(id, zone))).unwrap();
        }
        map.apply(&MapCommand::CreateCollection {
            name: "c".into(),
            shards: Some(shards),
            replicas: Some(replicas),
        })
        .unwrap();
        map
    }

    /// Starts and finishes every planned move until none is left; the
    /// moves, in order.
    fn settle(map: &mut ClusterMap) -> Vec<PlannedMove> {
        use crate::MapCommand;
        let mut all = Vec::new();
        for _ in 0..100 {
            let planned = plan_moves(map, MoveLimits::default());
            if planned.is_empty() {
                return all;
            }
            for m in &planned {
                map.apply(&MapCommand::StartMove {
                    group: m.group,
                    from: m.from,
                    to: m.to,
                })
                .unwrap();
                assert_no_doubles(map);
            }
            for m in &planned {
                map.apply(&MapCommand::FinishMove {
                    group: m.group,
                    to: m.to,
                })
                .unwrap();
            }
            all.extend(planned);
        }
        panic!("the moves never settle");
    }

    fn assert_no_doubles(map: &ClusterMap) {
        for s in map.shards.values() {
            let mut placed: Vec<NodeId> = s.replicas.clone();
            placed.extend(s.moves.iter().map(|m| m.to));
            let distinct: BTreeSet<NodeId> = placed.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                placed.len(),
                "two replicas on one node: {s:?}"
            );
        }
    }

    fn loads(map: &ClusterMap) -> BTreeMap<NodeId, usize> {
        let mut out = live_zeroes(map);
        for s in map.shards.values() {
            for r in &s.replicas {
                *out.entry(*r).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn a_down_nodes_replicas_move_to_live_nodes_that_lack_the_shard() {
        use crate::MapCommand;
        let mut map = cluster(&[(1, None), (2, None), (3, None), (4, None)], 8, 3);
        assert!(plan_moves(&map, MoveLimits::default()).is_empty());
        map.apply(&MapCommand::MarkNode { id: 4, up: false })
            .unwrap();
        let on_4 = map
            .shards
            .values()
            .filter(|s| s.replicas.contains(&4))
            .count();
        let moves = settle(&mut map);
        assert_eq!(moves.len(), on_4);
        assert!(moves.iter().all(|m| m.from == Some(4) && m.to != 4));
        for s in map.shards.values() {
            assert_eq!(s.replicas.len(), 3);
            assert!(!s.replicas.contains(&4));
        }
        // 24 replicas on 3 live nodes: 8 each.
        assert!(loads(&map).values().all(|&l| l == 8), "{:?}", loads(&map));
    }

    #[test]
    fn moves_respect_the_limits_and_one_move_per_shard() {
        use crate::MapCommand;
        let mut map = cluster(&[(1, None), (2, None), (3, None), (4, None)], 16, 3);
        map.apply(&MapCommand::MarkNode { id: 1, up: false })
            .unwrap();
        let limits = MoveLimits {
            per_node: 1,
            total: 2,
        };
        let planned = plan_moves(&map, limits);
        // Node 1 is the source of every repair: one at a time.
        assert_eq!(planned.len(), 1);
        let groups: BTreeSet<GroupId> = planned.iter().map(|m| m.group).collect();
        assert_eq!(groups.len(), planned.len());
    }

    #[test]
    fn repairs_prefer_a_zone_the_shard_lacks() {
        use crate::MapCommand;
        let mut map = cluster(
            &[
                (1, Some("a")),
                (2, Some("b")),
                (3, Some("c")),
                (4, Some("a")),
                (5, Some("c")),
            ],
            1,
            3,
        );
        let shard = map.shards.values().next().unwrap().clone();
        assert_eq!(shard.replicas, vec![1, 2, 3]);
        map.apply(&MapCommand::MarkNode { id: 2, up: false })
            .unwrap();
        let planned = plan_moves(&map, MoveLimits::default());
        // 4 (zone a) and 5 (zone c) are equally loaded: neither brings zone
        // b back, so the lower id wins; with a zone-b node it would win.
        assert_eq!(planned.len(), 1);
        map.apply(&MapCommand::AddNode(node(6, Some("b")))).unwrap();
        let planned = plan_moves(&map, MoveLimits::default());
        assert_eq!(planned[0].to, 6);
        assert_eq!(planned[0].from, Some(2));
    }

    #[test]
    fn a_new_node_is_filled_to_within_one_of_the_others() {
        use crate::MapCommand;
        let mut map = cluster(&[(1, None), (2, None), (3, None)], 8, 3);
        for g in map.shards.keys().copied().collect::<Vec<_>>() {
            let first = map.shards[&g].replicas[0];
            map.apply(&MapCommand::SetLeader {
                group: g,
                leader: Some(first),
            })
            .unwrap();
        }
        map.apply(&MapCommand::AddNode(node(4, None))).unwrap();
        let moves = settle(&mut map);
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|m| m.to == 4));
        let l = loads(&map);
        let (lo, hi) = (l.values().min().unwrap(), l.values().max().unwrap());
        assert!(hi - lo <= 1, "{l:?}");
        // Rebalancing moves replicas; it never adds one.
        assert!(moves.iter().all(|m| m.from.is_some()));
        assert_no_doubles(&map);
        // Draining a node empties it, and then it may be removed.
        map.apply(&MapCommand::DrainNode { id: 2 }).unwrap();
        assert_eq!(
            map.apply(&MapCommand::RemoveNode { id: 2 })
                .unwrap_err()
                .code(),
            "node_in_use"
        );
        settle(&mut map);
        assert!(map.shards.values().all(|s| !s.replicas.contains(&2)));
        assert_eq!(map.apply(&MapCommand::RemoveNode { id: 2 }), Ok(true));
        assert!(map.removed.contains(&2) && !map.nodes.contains_key(&2));
    }

    #[test]
    fn leaders_spread_until_none_leads_more_than_one_over_fair() {
        use crate::MapCommand;
        // Four nodes, 8 shards of 3 replicas, every leader on node 1.
        let mut map = cluster(&[(1, None), (2, None), (3, None), (4, None)], 8, 3);
        let groups: Vec<GroupId> = map.shards.keys().copied().collect();
        for &g in &groups {
            let first = map.shards[&g].replicas[0];
            // Node 1 leads what it holds, the others go to their first replica.
            let leader = if map.shards[&g].replicas.contains(&1) {
                1
            } else {
                first
            };
            map.apply(&MapCommand::SetLeader {
                group: g,
                leader: Some(leader),
            })
            .unwrap();
        }
        let led = |map: &ClusterMap, n: NodeId| {
            map.shards.values().filter(|s| s.leader == Some(n)).count()
        };
        assert!(led(&map, 1) > 3, "node 1 leads {}", led(&map, 1));
        // One hand-over per round, rounds until none is planned.
        for _ in 0..20 {
            let moves = plan_leader_moves(&map, 1, |_| false);
            let Some(m) = moves.first() else { break };
            assert_eq!(moves.len(), 1);
            assert!(map.shards[&m.group].replicas.contains(&m.to));
            map.apply(&MapCommand::SetLeader {
                group: m.group,
                leader: Some(m.to),
            })
            .unwrap();
        }
        // ceil(8 / 4) + 1 = 3 at most on any node.
        for n in 1..=4 {
            assert!(led(&map, n) <= 3, "node {n} leads {}", led(&map, n));
        }
        // A shard with a move in flight, or skipped, does not move.
        let mut all_on_1 = cluster(&[(1, None), (2, None), (3, None)], 6, 3);
        for &g in all_on_1.shards.keys().copied().collect::<Vec<_>>().iter() {
            all_on_1
                .apply(&MapCommand::SetLeader {
                    group: g,
                    leader: Some(1),
                })
                .unwrap();
        }
        assert!(plan_leader_moves(&all_on_1, 10, |_| true).is_empty());
        // A node that is down leads nothing that counts, and gets nothing.
        all_on_1
            .apply(&MapCommand::MarkNode { id: 3, up: false })
            .unwrap();
        let moves = plan_leader_moves(&all_on_1, 10, |_| false);
        assert!(!moves.is_empty() && moves.iter().all(|m| m.to == 2));
    }
}
