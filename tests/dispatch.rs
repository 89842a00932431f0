//! Deterministic scenario tests of request dispatch on the simulated cluster: every request
//! sent to all nodes is served exactly once, by load, and survives the loss of its server or
//! of the coordinator.

mod sim;

use std::collections::BTreeMap;

use imgcloud::node::Event;
use sim::Sim;

/// Asserts that every request got exactly one reply.
fn exactly_one_reply_each(sim: &Sim, ids: &[String]) {
    for id in ids {
        let replies = sim.replies_for(id);
        assert_eq!(
            replies.len(),
            1,
            "request {id} got replies from {replies:?}"
        );
    }
}

#[test]
fn each_request_is_served_once_and_logged_everywhere() {
    let mut sim = Sim::settled(1);
    let ids: Vec<String> = (0..60).map(|i| format!("c1-{i}")).collect();
    for id in &ids {
        sim.client_request(id);
        sim.run(5);
    }
    sim.run(2_000);
    exactly_one_reply_each(&sim, &ids);
    assert_eq!(sim.serves.len(), ids.len(), "one encryption per request");
    assert!(sim.converged());
    for node in sim.nodes.values() {
        assert_eq!(node.replicated().served.len(), ids.len());
    }
}

#[test]
fn the_same_request_id_twice_is_encrypted_once() {
    let mut sim = Sim::settled(2);
    sim.client_request("dup-1");
    sim.run(3);
    sim.client_request("dup-1");
    sim.run(500);
    sim.client_request("dup-1");
    sim.run(500);
    assert_eq!(sim.serves.len(), 1, "serves: {:?}", sim.serves);
    assert_eq!(sim.replies_for("dup-1").len(), 1);
}

#[test]
fn a_server_crashing_mid_request_is_replaced_by_a_survivor() {
    for seed in 0..5 {
        let mut sim = Sim::settled(seed);
        sim.service_ms.extend([(1, 200), (2, 200), (3, 200)]);
        let ids: Vec<String> = (0..9).map(|i| format!("s{seed}-{i}")).collect();
        for id in &ids {
            sim.client_request(id);
        }
        sim.run(50);
        // Kill a node that is serving something right now (not the coordinator).
        let coordinator = sim.agreed().unwrap();
        let (_, victim) = sim
            .serves
            .iter()
            .find(|(_, n)| *n != coordinator)
            .cloned()
            .expect("a non-coordinator serves");
        sim.crash(victim);
        sim.run(3_000);
        exactly_one_reply_each(&sim, &ids);
        assert!(
            sim.replies.iter().all(|(_, _, n)| *n != victim),
            "seed {seed}: the dead node replied"
        );
    }
}

#[test]
fn a_coordinator_crashing_mid_dispatch_leaves_every_request_answered_once() {
    for seed in 0..5 {
        let mut sim = Sim::settled(seed);
        let coordinator = sim.agreed().unwrap();
        let ids: Vec<String> = (0..40).map(|i| format!("k{seed}-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            sim.client_request(id);
            sim.run(3);
            if i == 20 {
                sim.crash(coordinator);
            }
        }
        sim.run(3_000);
        exactly_one_reply_each(&sim, &ids);
    }
}

#[test]
fn a_slow_node_receives_clearly_fewer_requests() {
    let mut sim = Sim::settled(4);
    sim.service_ms.insert(3, 200);
    let ids: Vec<String> = (0..300).map(|i| format!("w-{i}")).collect();
    for id in &ids {
        sim.client_request(id);
        sim.run(4);
    }
    sim.run(3_000);
    exactly_one_reply_each(&sim, &ids);
    let mut per_node = BTreeMap::new();
    for (_, _, node) in &sim.replies {
        *per_node.entry(*node).or_insert(0) += 1;
    }
    let (fast, slow) = (
        per_node[&1].min(per_node[&2]),
        per_node.get(&3).copied().unwrap_or(0),
    );
    assert!(
        slow * 3 < fast,
        "slow node served {slow}, fast ones at least {fast}: {per_node:?}"
    );
}

#[test]
fn dispatch_decisions_are_counted_and_logged() {
    let mut sim = Sim::settled(5);
    for i in 0..10 {
        sim.client_request(&format!("d-{i}"));
    }
    sim.run(1_000);
    let decisions = sim
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Dispatched { .. }))
        .count();
    assert_eq!(decisions, 10);
    let coordinator = sim.agreed().unwrap();
    assert_eq!(
        sim.nodes[&coordinator]
            .replicated()
            .counters(coordinator)
            .lb_decisions,
        10
    );
}
