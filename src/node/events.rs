//! The events an operator reads on a node's standard output: elections, failures,
//! recoveries, each printed the way the course's logs show them.

use tracing::{info, warn};

use crate::cluster::message::NodeState;
use crate::cluster::node::Event;
use crate::ids::NodeId;

/// Prints an event the way an operator reads it.
pub fn report(id: NodeId, event: &Event) {
    match event {
        Event::Elected {
            epoch,
            coordinator,
            loads,
        } => {
            println!("{}", election_block(*epoch, *coordinator, loads));
            info!(
                node = id,
                epoch, coordinator, "[Node {id}] coordinator is node {coordinator} (epoch {epoch})"
            );
        }
        Event::StateChanged { to, reason } => {
            let name = match to {
                NodeState::Active => "ACTIVE",
                NodeState::Failed => "FAILED",
                NodeState::Recovering => "RECOVERING",
            };
            println!("[Node {id}] *** Entering {name} state *** ({reason})");
            info!(node = id, state = %to, reason = %reason, "state change");
        }
        Event::Adopted { epoch, coordinator } => {
            info!(node = id, epoch, coordinator, "[Node {id}] following coordinator {coordinator} (epoch {epoch}, learned from a member)")
        }
        Event::CoordinatorLost { reason } => {
            info!(node = id, "[Node {id}] no coordinator: {reason}")
        }
        Event::ElectionStarted { epoch, reason } => {
            info!(
                node = id,
                epoch, "[Node {id}] starting election for epoch {epoch}: {reason}"
            )
        }
        Event::VictimElected(r) => println!(
            "[Node {id}] elected node {} to fail for {:.1} s (failure {}.{})",
            r.victim,
            r.duration_ms as f64 / 1000.0,
            r.epoch,
            r.seq
        ),
        Event::Dispatched {
            assignment: a,
            loads,
        } => {
            let loads: Vec<String> = loads.iter().map(|(n, l)| format!("{n}={l:.2}")).collect();
            let again = if a.attempt > 1 {
                format!(" (attempt {})", a.attempt)
            } else {
                String::new()
            };
            info!(target: "imgcloud::lb", node = id, "[LB] req {} -> node {}{again} (loads: {})", a.id, a.server, loads.join(" "));
        }
        Event::ResultDropped {
            id: request,
            reason,
        } => {
            warn!(node = id, request = %request, "[Node {id}] dropped the result of {request} unanswered: {reason}")
        }
        Event::StaleIgnored { from, epoch, kind } => {
            warn!(
                node = id,
                from, epoch, "[Node {id}] ignored a stale {kind} from node {from} (epoch {epoch})"
            )
        }
    }
}

/// The election result block of the specification.
pub fn election_block(epoch: u64, coordinator: NodeId, loads: &[(NodeId, Option<f64>)]) -> String {
    let mut rows: Vec<(NodeId, Option<f64>)> = loads.to_vec();
    rows.sort_by(|a, b| {
        let key = |r: &(NodeId, Option<f64>)| (r.0 != coordinator, r.1.unwrap_or(f64::INFINITY));
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    let fmt = |l: Option<f64>| l.map_or("unreachable".to_string(), |l| format!("{l:.2}"));
    let winner_load = loads.iter().find(|r| r.0 == coordinator).and_then(|r| r.1);
    let mut out = format!(
        "=== ELECTION RESULT (epoch {epoch}) ===\nCoordinator: Node {coordinator} (load: {})",
        fmt(winner_load)
    );
    for (node, load) in rows {
        let tag = if node == coordinator {
            " [COORDINATOR]"
        } else {
            ""
        };
        out.push_str(&format!("\n  Node {node}: {}{tag}", fmt(load)));
    }
    out
}
