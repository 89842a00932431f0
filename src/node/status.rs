//! What a node publishes about itself before its first tick (the [`NodeStatus`] type is the
//! watchers' contract, in [`crate::watch`]).

use crate::cluster::message::NodeState;
use crate::cluster::node::CoreStatus;
use crate::ids::NodeId;
use crate::watch::NodeStatus;

pub(crate) fn initial_status(id: NodeId, workers: usize) -> NodeStatus {
    let core = CoreStatus {
        id,
        state: NodeState::Recovering,
        epoch: 0,
        coordinator: None,
        load: 0.0,
        quorum: false,
        members: Vec::new(),
        digest: String::new(),
        elections: 0,
        failures: 0,
        counters: Default::default(),
        held: 0,
        request_log: 0,
        served: 0,
        last_recovery_ms: None,
        awaiting_majority: 0,
    };
    NodeStatus {
        core,
        encryptions: 0,
        lb_decisions: 0,
        takeovers: 0,
        payload_bytes: 0,
        payload_budget_bytes: 0,
        payloads_refused: 0,
        in_flight: 0,
        queued: 0,
        workers,
        uptime_s: 0.0,
        link_reconnects: 0,
    }
}
