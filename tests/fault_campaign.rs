//! Fault campaigns over real `stratosdb node` processes (3 and 5 nodes):
//! clients write, conditionally update and read a few keys through random
//! nodes while a nemesis SIGKILLs and restarts nodes, pauses them and
//! partitions them; afterwards every key's history must be linearizable,
//! the replicas converged and every shard at its replica count. See
//! `tests/common/faults.rs` for the harness, `docs/testing.md` for running
//! them longer (`STRATOSDB_SOAK_SECONDS`) or again with one seed
//! (`STRATOSDB_CAMPAIGN_SEED`).

mod common;

use std::time::Duration;

use common::cluster::{Api, TestCluster, retry_until, until_answered};
use common::faults::{CampaignConfig, heal_all, partition, run_campaign};
use common::linearizability::Call;
use serde_json::json;

/// Default length of each campaign (CI); the soak variable overrides it.
const DEFAULT_SECONDS: u64 = 60;

fn campaign(nodes: usize) {
    let config = CampaignConfig::new(nodes, DEFAULT_SECONDS);
    let report = run_campaign(config.clone());
    // A campaign that did nothing would prove nothing.
    let acknowledged_writes = report
        .history
        .iter()
        .filter(|o| o.call != Call::Read && o.completed.is_some())
        .count();
    assert!(
        acknowledged_writes > 0,
        "no write was acknowledged in the whole campaign\n{}",
        report.summary(&config)
    );
    assert!(
        !report.nemesis.is_empty(),
        "the nemesis did nothing\n{}",
        report.summary(&config)
    );
}

#[test]
fn campaign_on_three_nodes_keeps_histories_linearizable() {
    campaign(3);
}

#[test]
fn campaign_on_five_nodes_keeps_histories_linearizable() {
    campaign(5);
}

/// The admin route exists only with `--fault-injection`; with it, a node
/// cut off from both others cannot serve a linearizable read, the other two
/// go on, and after the heal the cut node catches up.
#[test]
fn fault_injection_cuts_a_node_off_and_heals() {
    {
        let cluster = TestCluster::start(1);
        let api = cluster.api(0);
        for (method, body) in [("GET", None), ("POST", Some(&br#"{"drop": []}"#[..]))] {
            let reply = api.call(method, "/v1/admin/faults", body).unwrap();
            assert_eq!(reply.status, 404, "{method} without the flag: {reply}");
            assert_eq!(reply.code().as_deref(), Some("no_route"), "{reply}");
        }
    }
    let mut cluster = TestCluster::start_with(3, &["--fault-injection"]);
    assert!(cluster.faults(0).unwrap().is_empty());
    let reply = cluster
        .api(0)
        .call("POST", "/v1/admin/faults", Some(br#"{"drop": ["nope"]}"#))
        .unwrap();
    assert_eq!(reply.status, 400, "{reply}");
    assert_eq!(reply.code().as_deref(), Some("invalid_node_id"), "{reply}");

    let create = "CREATE COLLECTION iso WITH (shards = 1, replicas = 3)";
    let reply = until_answered(Duration::from_secs(60), create, || {
        cluster.api(1).sql(create)
    });
    assert!(reply.ok(), "{reply}");
    let put = |node: usize, v: &str| {
        let api = cluster.api(node);
        let reply = until_answered(Duration::from_secs(60), "PUT iso/k", || {
            api.put("iso", "k", &json!({ "v": v }))
        });
        assert!(reply.ok(), "PUT through node {node}: {reply}");
    };
    put(1, "before");

    partition(&cluster, &[vec![0], vec![1, 2]]).unwrap();
    let mut cut = vec![cluster.id(1).to_string(), cluster.id(2).to_string()];
    cut.sort();
    assert_eq!(cluster.faults(0).unwrap(), cut);
    assert_eq!(cluster.faults(1).unwrap(), vec![cluster.id(0).to_string()]);
    // Alone, node 0 has no quorum: no linearizable read through it.
    let lonely = Api::with_timeout(cluster.url(0), Duration::from_secs(30));
    let reply = lonely.get("iso", "k", false).expect("node 0 answers");
    assert_eq!(reply.status, 503, "a read through a cut-off node: {reply}");
    // The majority goes on.
    put(1, "during");

    heal_all(&mut cluster);
    assert!(cluster.faults(0).unwrap().is_empty());
    retry_until(
        Duration::from_secs(60),
        "node 0 to catch up",
        || match lonely.get("iso", "k", false) {
            Ok(r) if r.status == 200 && r.json()["v"] == "during" => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(e),
        },
    );
    cluster.wait_converged(Duration::from_secs(60));
}
