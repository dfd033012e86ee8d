//! What the demo checks on cluster maps: whether the shards of a collection
//! are healed (back to their replica count after a node is lost), and
//! whether every replica of every shard has the same root at the same
//! applied index. Pure functions of `GET /v1/cluster` replies.

use std::collections::BTreeMap;

use stratosdb::api::{ClusterMap, MoveInfo};

/// One shard's state while the cluster heals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHeal {
    pub shard: u32,
    /// Voters on nodes that are up.
    pub live_voters: usize,
    /// Replicas listed on nodes that are down.
    pub on_down_nodes: usize,
    /// Whether every replica reports the same applied index and root.
    pub in_step: bool,
    /// Whether a move of this shard is under way.
    pub moving: bool,
    pub healed: bool,
}

/// The heal state of every shard of `collection`, and the moves under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealProgress {
    pub replicas: u32,
    pub shards: Vec<ShardHeal>,
    pub moves: Vec<MoveInfo>,
}

impl HealProgress {
    /// Healed: for each shard, exactly `replicas` voters, every replica on a
    /// node that is up, no move under way, every replica at the same applied
    /// index and root.
    pub fn healed(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|s| s.healed)
    }

    /// Live voters over all shards, and how many there should be.
    pub fn voters(&self) -> (usize, usize) {
        let live = self.shards.iter().map(|s| s.live_voters).sum();
        (live, self.shards.len() * self.replicas as usize)
    }

    /// One line: the shards' live voter counts and the moves with their progress.
    pub fn summary(&self, name_of: impl Fn(&str) -> String) -> String {
        let counts: Vec<String> = self
            .shards
            .iter()
            .map(|s| format!("{}:{}", s.shard, s.live_voters))
            .collect();
        let (live, wanted) = self.voters();
        let mut line = format!("voters {live}/{wanted} (shard:voters {})", counts.join(" "));
        for m in &self.moves {
            let from = m.from.as_deref().map_or("-".to_string(), &name_of);
            line.push_str(&format!(
                "; shard {} {from}→{} {} {}/{}",
                m.shard,
                name_of(&m.to),
                m.phase,
                m.applied,
                m.target
            ));
            if m.total_bytes > 0 {
                line.push_str(&format!(
                    " ({}/{} KiB)",
                    m.bytes / 1024,
                    m.total_bytes / 1024
                ));
            }
        }
        line
    }
}

/// Where the shards of `collection` stand, from one node's cluster map.
pub fn heal_progress(map: &ClusterMap, collection: &str) -> HealProgress {
    let up: BTreeMap<&str, bool> = map
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.up && n.state != "down"))
        .collect();
    let replicas = map
        .collections
        .iter()
        .find(|c| c.name == collection)
        .map_or(0, |c| c.replicas);
    let moves: Vec<MoveInfo> = map
        .moves
        .iter()
        .filter(|m| m.collection == collection)
        .cloned()
        .collect();
    let shards = map
        .shards
        .iter()
        .filter(|s| s.collection == collection)
        .map(|s| {
            let is_up = |node: &str| up.get(node).copied().unwrap_or(false);
            // A node that does not tell roles (an empty one) has voters only.
            let voter = |role: &str| role.is_empty() || role == "voter";
            // Live: on a node that is up and that answered for its replica.
            let live_voters = s
                .replicas
                .iter()
                .filter(|r| voter(&r.role) && is_up(&r.node) && !r.root.is_empty())
                .count();
            let on_down_nodes = s.replicas.iter().filter(|r| !is_up(&r.node)).count();
            let voters = s.replicas.iter().filter(|r| voter(&r.role)).count();
            let in_step = s.replicas.first().is_some_and(|first| {
                !first.root.is_empty()
                    && s.replicas
                        .iter()
                        .all(|r| r.applied == first.applied && r.root == first.root)
            });
            let moving = moves.iter().any(|m| m.shard == s.shard);
            ShardHeal {
                shard: s.shard,
                live_voters,
                on_down_nodes,
                in_step,
                moving,
                healed: s.replicas.len() == replicas as usize
                    && voters == replicas as usize
                    && live_voters == voters
                    && on_down_nodes == 0
                    && !moving
                    && in_step,
            }
        })
        .collect();
    HealProgress {
        replicas,
        shards,
        moves,
    }
}

/// The leader of each shard of `collection` (`None` while there is none).
pub fn leaders(map: &ClusterMap, collection: &str) -> BTreeMap<u32, Option<String>> {
    map.shards
        .iter()
        .filter(|s| s.collection == collection)
        .map(|s| (s.shard, s.leader.clone()))
        .collect()
}

/// The shards of `collection` a node leads, from its Prometheus text
/// (`stratosdb_raft_is_leader{...,collection="C",shard="N"} 1`): a node's
/// own view, which needs no round trip to the others.
pub fn led_shards(metrics: &str, collection: &str) -> Vec<u32> {
    let wanted = format!("collection=\"{collection}\"");
    metrics
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix("stratosdb_raft_is_leader{")?;
            let (labels, value) = labels.split_once("} ")?;
            if value.trim() != "1" || !labels.split(',').any(|l| l == wanted) {
                return None;
            }
            labels
                .split(',')
                .find_map(|l| l.strip_prefix("shard=\""))
                .and_then(|v| v.trim_end_matches('"').parse().ok())
        })
        .collect()
}

/// One shard in the root check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRoots {
    pub collection: String,
    pub shard: u32,
    /// Each replica's node and what that node reports for it (`None`: the
    /// node did not answer).
    pub replicas: Vec<(String, Option<(u64, String)>)>,
}

impl ShardRoots {
    /// Every replica reported, all at one applied index with one root.
    pub fn agree(&self) -> bool {
        let mut reports = self.replicas.iter().map(|(_, report)| report.as_ref());
        let Some(Some(first)) = reports.next() else {
            return false;
        };
        !first.1.is_empty() && reports.all(|r| r == Some(first))
    }

    /// The applied index and root of the first replica, when reported.
    pub fn first(&self) -> Option<&(u64, String)> {
        self.replicas.first().and_then(|(_, r)| r.as_ref())
    }
}

/// Every shard of every collection in `layout` (one node's map), each
/// replica with what its own node reports (from `reports`, the maps of the
/// live nodes: a node's own replicas are exact in its map).
pub fn root_check(layout: &ClusterMap, reports: &[ClusterMap]) -> Vec<ShardRoots> {
    let mut own: BTreeMap<(&str, u32, &str), (u64, String)> = BTreeMap::new();
    for map in reports {
        for s in &map.shards {
            for r in s.replicas.iter().filter(|r| r.node == map.self_id) {
                own.insert(
                    (s.collection.as_str(), s.shard, r.node.as_str()),
                    (r.applied, r.root.clone()),
                );
            }
        }
    }
    layout
        .shards
        .iter()
        .map(|s| ShardRoots {
            collection: s.collection.clone(),
            shard: s.shard,
            replicas: s
                .replicas
                .iter()
                .map(|r| {
                    let report = own.get(&(s.collection.as_str(), s.shard, r.node.as_str()));
                    (r.node.clone(), report.cloned())
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratosdb::api::{CollectionPlacement, NodeInfo, ReplicaInfo, ShardInfo};

    fn node(id: &str, up: bool) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            p2p: None,
            http: format!("{id}:1"),
            zone: None,
            up,
            state: if up { "active" } else { "down" }.into(),
            node_key: None,
            earnings_account: None,
        }
    }

    fn replica(node: &str, applied: u64, root: &str, role: Option<&str>) -> ReplicaInfo {
        ReplicaInfo {
            node: node.into(),
            applied,
            root: root.into(),
            role: role.unwrap_or_default().into(),
        }
    }

    /// Two shards of three replicas on nodes a, b, c, d (d down).
    fn map(self_id: &str, shard1: Vec<ReplicaInfo>, moves: Vec<MoveInfo>) -> ClusterMap {
        ClusterMap {
            self_id: self_id.into(),
            cluster_id: None,
            nodes: vec![
                node("a", true),
                node("b", true),
                node("c", true),
                node("d", false),
            ],
            collections: vec![CollectionPlacement {
                name: "people".into(),
                shards: 2,
                replicas: 3,
            }],
            shards: vec![
                ShardInfo {
                    collection: "people".into(),
                    shard: 0,
                    leader: Some("a".into()),
                    replicas: vec![
                        replica("a", 7, "r0", None),
                        replica("b", 7, "r0", None),
                        replica("c", 7, "r0", None),
                    ],
                },
                ShardInfo {
                    collection: "people".into(),
                    shard: 1,
                    leader: Some("b".into()),
                    replicas: shard1,
                },
            ],
            moves,
        }
    }

    #[test]
    fn a_shard_with_a_replica_on_a_down_node_is_not_healed() {
        let m = map(
            "a",
            vec![
                replica("a", 9, "r1", None),
                replica("b", 9, "r1", None),
                replica("d", 0, "", None),
            ],
            vec![],
        );
        let progress = heal_progress(&m, "people");
        assert!(!progress.healed());
        assert_eq!(progress.voters(), (5, 6));
        assert_eq!(progress.shards[1].on_down_nodes, 1);
        assert!(progress.shards[0].healed);
    }

    #[test]
    fn a_learner_catching_up_is_a_move_not_a_heal() {
        let catching_up = MoveInfo {
            collection: "people".into(),
            shard: 1,
            from: Some("d".into()),
            to: "c".into(),
            phase: "learner".into(),
            applied: 4,
            target: 9,
            bytes: 0,
            total_bytes: 0,
        };
        let m = map(
            "a",
            vec![
                replica("a", 9, "r1", Some("voter")),
                replica("b", 9, "r1", Some("voter")),
                replica("c", 4, "rx", Some("learner")),
            ],
            vec![catching_up],
        );
        let progress = heal_progress(&m, "people");
        assert!(!progress.healed());
        assert_eq!(progress.shards[1].live_voters, 2);
        assert!(progress.shards[1].moving);
        assert_eq!(
            progress.summary(|id| format!("n-{id}")),
            "voters 5/6 (shard:voters 0:3 1:2); shard 1 n-d→n-c learner 4/9"
        );
    }

    #[test]
    fn three_voters_on_live_nodes_in_step_is_healed() {
        let m = map(
            "a",
            vec![
                replica("a", 9, "r1", Some("voter")),
                replica("b", 9, "r1", Some("voter")),
                replica("c", 9, "r1", Some("voter")),
            ],
            vec![],
        );
        assert!(heal_progress(&m, "people").healed());
        let behind = map(
            "a",
            vec![
                replica("a", 9, "r1", Some("voter")),
                replica("b", 9, "r1", Some("voter")),
                replica("c", 8, "r0", Some("voter")),
            ],
            vec![],
        );
        assert!(!heal_progress(&behind, "people").healed());
    }

    #[test]
    fn leaders_are_read_from_the_metrics() {
        let text = "# TYPE stratosdb_raft_is_leader gauge\n\
            stratosdb_raft_is_leader{group=\"0\",collection=\"\",shard=\"\"} 1\n\
            stratosdb_raft_is_leader{group=\"3\",collection=\"people\",shard=\"2\"} 1\n\
            stratosdb_raft_is_leader{group=\"4\",collection=\"people\",shard=\"3\"} 0\n\
            stratosdb_raft_is_leader{group=\"9\",collection=\"people2\",shard=\"5\"} 1\n\
            stratosdb_raft_term{group=\"3\",collection=\"people\",shard=\"7\"} 1\n";
        assert_eq!(led_shards(text, "people"), vec![2]);
    }

    #[test]
    fn roots_are_taken_from_each_replicas_own_node() {
        let shard1 = || {
            vec![
                replica("a", 9, "r1", None),
                replica("b", 9, "r1", None),
                replica("c", 0, "", None),
            ]
        };
        // a's map shows c's replica as unknown; c's own map is exact.
        let from_a = map("a", shard1(), vec![]);
        let mut from_c = map("c", shard1(), vec![]);
        from_c.shards[1].replicas[2] = replica("c", 9, "r1", None);
        let from_b = map("b", shard1(), vec![]);
        let checked = root_check(&from_a, &[from_a.clone(), from_b.clone(), from_c]);
        assert_eq!(checked.len(), 2);
        assert!(checked.iter().all(ShardRoots::agree), "{checked:?}");
        assert_eq!(checked[1].first(), Some(&(9, "r1".to_string())));

        // Without c's own report, its replica is not vouched for.
        let checked = root_check(&from_a, &[from_a.clone(), from_b]);
        assert!(!checked[1].agree());
        assert_eq!(checked[1].replicas[2], ("c".to_string(), None));
    }
}
