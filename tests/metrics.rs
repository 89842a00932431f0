//! `/metrics` with real `cloud-node` processes: `imgcloud_link_reconnects_total` stays 0
//! while no link breaks, and counts the links that broke and came back when a node is killed
//! and restarted.

mod support;

use std::time::{Duration, Instant};

use support::{poll, Cluster};

/// The metric under test.
const RECONNECTS: &str = "imgcloud_link_reconnects_total";

/// Node `id`'s re-connection count as `/metrics` shows it; None if the node does not answer.
/// Panics if it answers without the metric.
fn reconnects(cluster: &Cluster, id: u32) -> Option<u64> {
    let http = cluster.config.node(id).unwrap().http;
    let text = support::http_get(http, "/metrics")?;
    let prefix = format!("{RECONNECTS}{{node=\"{id}\"}} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| {
            panic!(
                "node {id}'s /metrics has no {prefix:?} (src/http.rs's metrics_text must list \
                 NodeStatus::link_reconnects):\n{text}"
            )
        });
    assert!(
        text.contains(&format!("# TYPE {RECONNECTS} counter")),
        "{text}"
    );
    Some(line[prefix.len()..].trim().parse().expect("a number"))
}

#[test]
fn a_quiet_cluster_counts_no_link_reconnection() {
    let cluster = Cluster::start(3, &[]);
    cluster
        .wait_agreed(Duration::from_secs(5))
        .expect("initial agreement");
    // Watch for a while: the links came up once and never broke, so every count stays 0.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        for id in 1..=3 {
            let n = poll(Duration::from_secs(2), || reconnects(&cluster, id));
            assert_eq!(n, Some(0), "node {id} on a quiet cluster");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_and_restarted_node_counts_one_reconnection_at_each_member() {
    let mut cluster = Cluster::start(3, &[]);
    cluster
        .wait_agreed(Duration::from_secs(5))
        .expect("initial agreement");
    for id in 1..=3 {
        assert_eq!(
            reconnects(&cluster, id),
            Some(0),
            "node {id} before the kill"
        );
    }
    cluster.kill(3);
    cluster.spawn(3);
    // Nodes 1 and 2 each had a link up to node 3; each broke and came back once.
    for id in [1, 2] {
        let n = poll(Duration::from_secs(10), || {
            reconnects(&cluster, id).filter(|&n| n > 0)
        });
        assert_eq!(
            n,
            Some(1),
            "node {id} after node 3 restarted:\n{}",
            cluster.log(id)
        );
    }
    cluster
        .wait_settled(Duration::from_secs(10))
        .expect("the cluster settles after the restart");
    // The new process's links came up once each: nothing to count.
    assert_eq!(reconnects(&cluster, 3), Some(0), "the restarted node");
}
