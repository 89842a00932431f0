//! Deterministic scenario tests of the protocol core (election, failures, partitions,
//! recovery) on a simulated network and clock. Every scenario runs with fixed seeds, and the
//! simulator asserts throughout that no epoch ever has two coordinators and that no two nodes
//! act as coordinator at the same time.

mod sim;

use imgcloud::cluster::message::{Message, NodeState};
use imgcloud::cluster::node::Event;
use imgcloud::config::FirstVictim;
use sim::Sim;

/// A started, settled three-node cluster.

#[test]
fn initial_election_picks_the_lowest_load() {
    let mut sim = Sim::new(3, 1);
    sim.loads.extend([(1, 0.90), (2, 0.50), (3, 0.75)]);
    sim.start_all();
    sim.run_until(2_000, |s| s.all_agree())
        .expect("agreement within 2 s");
    assert_eq!(sim.agreed(), Some(2));
    let printed = sim.events.iter().find_map(|(_, _, e)| match e {
        Event::Elected { loads, .. } => Some(loads.clone()),
        _ => None,
    });
    assert_eq!(
        printed,
        Some(vec![(1, Some(0.90)), (2, Some(0.50)), (3, Some(0.75))])
    );
}

#[test]
fn equal_loads_are_broken_by_the_lowest_id() {
    let mut sim = Sim::new(3, 2);
    sim.loads.extend([(1, 0.3), (2, 0.3), (3, 0.3)]);
    sim.start_all();
    sim.run_until(2_000, |s| s.all_agree())
        .expect("agreement within 2 s");
    assert_eq!(sim.agreed(), Some(1));
}

#[test]
fn cold_starts_in_any_order_agree_within_two_seconds_and_keep_it_while_idle() {
    for seed in 0..20 {
        let mut sim = Sim::new(3, seed);
        // Start the three nodes in a seed-dependent order, up to 300 ms apart.
        let mut order = vec![1, 2, 3];
        order.rotate_left((seed % 3) as usize);
        if seed % 2 == 1 {
            order.swap(0, 1);
        }
        let start = sim.now;
        for id in order {
            sim.start(id);
            sim.run(seed * 37 % 300);
        }
        let took = sim.run_until(2_000, |s| s.all_agree());
        assert!(took.is_some(), "seed {seed}: no agreement within 2 s");
        assert!(
            sim.now - start <= 2_600,
            "seed {seed}: took {} ms",
            sim.now - start
        );
        // Settle (a late joiner causes one re-election), then stay idle for 20 s.
        sim.run(3_000);
        let (coordinator, epoch) = (sim.agreed(), sim.max_epoch());
        assert!(
            coordinator.is_some(),
            "seed {seed}: lost agreement while settling"
        );
        sim.run(20_000);
        assert_eq!(
            sim.agreed(),
            coordinator,
            "seed {seed}: coordinator changed while idle"
        );
        assert_eq!(sim.max_epoch(), epoch, "seed {seed}: elections while idle");
    }
}

#[test]
fn coordinator_crash_elects_a_new_one_with_a_higher_epoch() {
    for seed in 0..5 {
        let mut sim = Sim::settled(seed);
        let (old, epoch) = (sim.agreed().unwrap(), sim.max_epoch());
        sim.crash(old);
        let took = sim
            .run_until(1_000, |s| s.agreed().is_some_and(|c| c != old))
            .expect("failover");
        assert!(took <= 300, "seed {seed}: failover took {took} ms");
        assert!(sim.max_epoch() > epoch);
        sim.start(old);
        sim.run_until(3_000, |s| s.all_agree())
            .expect("the restarted node rejoins");
        sim.run(2_000);
        sim.seal_logs();
        assert!(sim.converged(), "seed {seed}: digests differ after restart");
    }
}

#[test]
fn stopped_coordinator_is_replaced_and_catches_up_when_resumed() {
    let mut sim = Sim::settled(3);
    let old = sim.agreed().unwrap();
    sim.stop(old);
    let took = sim
        .run_until(2_000, |s| s.agreed().is_some_and(|c| c != old))
        .expect("failover");
    assert!(took <= 1_500, "failover after a stop took {took} ms");
    sim.run(20_000);
    sim.resume(old);
    sim.run_until(3_000, |s| s.all_agree())
        .expect("the resumed node follows the new coordinator");
    sim.run(2_000);
    sim.seal_logs();
    assert!(sim.converged());
}

#[test]
fn the_first_victim_can_be_the_coordinator_or_a_worker_on_purpose() {
    for seed in 0..4 {
        for first in [FirstVictim::Coordinator, FirstVictim::Worker] {
            let mut sim = Sim::new(3, seed)
                .with_failures(2.0, 2.0)
                .first_victim(first);
            sim.start_all();
            sim.run(15_000);
            let (elector, record) = sim
                .events
                .iter()
                .find_map(|(_, node, e)| match e {
                    Event::VictimElected(r) => Some((*node, *r)),
                    _ => None,
                })
                .expect("a victim was elected");
            // The coordinator elects the victim: for `Coordinator` it elects itself.
            match first {
                FirstVictim::Coordinator => assert_eq!(record.victim, elector, "seed {seed}"),
                _ => assert_ne!(record.victim, elector, "seed {seed}"),
            }
        }
    }
}

#[test]
fn elected_victim_is_silent_then_recovers_with_converged_state() {
    let mut sim = Sim::new(3, 11).with_failures(5.0, 20.0);
    sim.start_all();
    sim.run(60_000);
    let victims: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(t, _, e)| match e {
            Event::VictimElected(r) => Some((*t, *r)),
            _ => None,
        })
        .collect();
    assert!(!victims.is_empty(), "a victim was elected");
    let (_, first) = victims[0];
    let states = sim.transitions(first.victim);
    let failed_at = states
        .iter()
        .position(|s| *s == NodeState::Failed)
        .expect("victim failed");
    assert_eq!(
        &states[failed_at + 1..failed_at + 3],
        &[NodeState::Recovering, NodeState::Active]
    );
    // Never two victims at once: each failure starts after the previous one ended.
    for pair in victims.windows(2) {
        let ((t0, a), (t1, _)) = (pair[0], pair[1]);
        assert!(t1 >= t0 + a.duration_ms, "overlapping victims: {pair:?}");
    }
    // Let the last victim come back, then every digest must agree.
    sim.failures_off();
    sim.run(25_000);
    assert!(sim.all_agree());
    sim.seal_logs();
    assert!(sim.converged(), "digests differ after recovery");
}

#[test]
fn partitioned_minority_never_acts_and_the_majority_goes_on() {
    for seed in 0..5 {
        let mut sim = Sim::settled(seed);
        let old = sim.agreed().unwrap();
        let epoch = sim.max_epoch();
        sim.isolate(old);
        sim.run(20_000);
        let isolated = &sim.nodes[&old];
        assert_ne!(
            isolated.state(),
            NodeState::Active,
            "seed {seed}: the minority node stays Active"
        );
        assert_eq!(isolated.coordinator(), None);
        let majority: Vec<_> = sim.members.iter().copied().filter(|&m| m != old).collect();
        let new = sim.nodes[&majority[0]]
            .coordinator()
            .expect("the majority has a coordinator");
        assert_ne!(new, old);
        assert_eq!(sim.nodes[&majority[1]].coordinator(), Some(new));
        assert!(sim.max_epoch() > epoch);
        sim.heal();
        sim.run_until(3_000, |s| s.all_agree())
            .expect("one coordinator after healing");
        sim.run(2_000);
        sim.seal_logs();
        assert!(sim.converged(), "seed {seed}: digests differ after healing");
    }
}

#[test]
fn a_coordinator_message_from_an_old_epoch_is_ignored() {
    let mut sim = Sim::settled(5);
    let current = sim.agreed().unwrap();
    // Force a second election so that epoch 1 is stale.
    sim.crash(current);
    sim.run_until(1_000, |s| s.agreed().is_some_and(|c| c != current))
        .unwrap();
    let now_coordinator = sim.agreed().unwrap();
    let stale_epoch = 1;
    assert!(sim.max_epoch() > stale_epoch);
    for to in [1, 2, 3] {
        if sim.nodes.contains_key(&to) && to != current {
            sim.inject(
                to,
                current,
                stale_epoch,
                Message::Coordinator {
                    coordinator: current,
                    loads: vec![],
                },
            );
        }
    }
    sim.run(100);
    assert_eq!(sim.agreed(), Some(now_coordinator));
    assert!(sim.events.iter().any(|(_, _, e)| matches!(
        e,
        Event::StaleIgnored {
            epoch: 1,
            kind: "Coordinator",
            ..
        }
    )));
}

#[test]
fn a_flapping_node_does_not_cause_an_election_storm() {
    let mut sim = Sim::settled(6);
    sim.run(3_000);
    let before = sim.elections();
    let flapper = 3;
    for _ in 0..40 {
        sim.isolate(flapper);
        sim.run(250);
        sim.heal();
        sim.run(250);
    }
    let during = sim.elections() - before;
    assert!(
        during <= 2,
        "{during} elections while a node flapped for 20 s"
    );
    sim.run(5_000);
    assert!(sim.all_agree());
    sim.seal_logs();
    assert!(sim.converged());
}

#[test]
fn a_lasting_load_difference_hands_over_once() {
    let mut sim = Sim::settled(8);
    let first = sim.agreed().unwrap();
    let other = if first == 1 { 2 } else { 1 };
    for id in [1, 2, 3] {
        sim.loads.insert(id, 0.5);
    }
    sim.loads.insert(first, 0.9);
    sim.loads.insert(other, 0.1);
    sim.run(15_000);
    assert_eq!(sim.agreed(), Some(other), "the lighter node took over");
    let elections = sim.elections();
    sim.run(15_000);
    assert_eq!(
        sim.elections(),
        elections,
        "no further elections once balanced"
    );
}
