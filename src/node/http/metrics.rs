//! `GET /metrics`: the node's status in the Prometheus text format.

use super::*;

pub(super) async fn get_metrics(State((api, _)): State<AppState>) -> impl IntoResponse {
    let status = api.status.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(&status),
    )
}

/// One metric's samples: extra labels and value.
type Samples = Vec<(String, f64)>;

/// Renders the status in the Prometheus text exposition format.
pub fn metrics_text(status: &NodeStatus) -> String {
    let s = &status.core;
    let node = s.id;
    let flag = |b: bool| f64::from(u8::from(b));
    let one = |v: f64| vec![(String::new(), v)];
    let states = [NodeState::Active, NodeState::Failed, NodeState::Recovering]
        .map(|st| (format!(",state=\"{st}\""), flag(s.state == st)))
        .to_vec();
    let members = s
        .members
        .iter()
        .map(|p| {
            (
                format!(",member=\"{}\"", p.id),
                flag(p.state == NodeState::Active),
            )
        })
        .collect();
    // (name, type, help, samples as (extra labels, value))
    let table: Vec<(&str, &str, &str, Samples)> = vec![
        (
            "epoch",
            "gauge",
            "Current election epoch.",
            one(s.epoch as f64),
        ),
        (
            "is_coordinator",
            "gauge",
            "1 if this node is the coordinator.",
            one(flag(s.coordinator == Some(node))),
        ),
        ("state", "gauge", "1 for the node's current state.", states),
        (
            "load",
            "gauge",
            "Measured load (expected seconds for one more request).",
            one(s.load),
        ),
        (
            "quorum",
            "gauge",
            "1 if the node hears from a majority.",
            one(flag(s.quorum)),
        ),
        (
            "member_up",
            "gauge",
            "1 if the member is alive and Active as this node sees it.",
            members,
        ),
        (
            "served_in_log",
            "gauge",
            "Entries of the request log's window (the commits it still remembers) that name this node.",
            one(s.served as f64),
        ),
        (
            "encryptions_total",
            "counter",
            "Encryption jobs this node completed.",
            one(status.encryptions as f64),
        ),
        (
            "lb_decisions_total",
            "counter",
            "Load-balancing decisions made as coordinator.",
            one(status.lb_decisions as f64),
        ),
        (
            "payload_bytes",
            "gauge",
            "Bytes of request payloads held now (the payload budget's use).",
            one(status.payload_bytes as f64),
        ),
        (
            "payloads_refused_total",
            "counter",
            "Payloads refused for want of budget (uploads answered 503, forwarded copies not held).",
            one(status.payloads_refused as f64),
        ),
        (
            "takeovers_total",
            "counter",
            "Requests taken over while no live coordinator assigned them.",
            one(status.takeovers as f64),
        ),
        (
            "link_reconnects_total",
            "counter",
            "Times a link to another node came up again after it had been up and broke.",
            one(status.link_reconnects as f64),
        ),
        (
            "in_flight",
            "gauge",
            "Encryptions running.",
            one(status.in_flight as f64),
        ),
        (
            "queued",
            "gauge",
            "Encryptions waiting for a worker.",
            one(status.queued as f64),
        ),
        (
            "held_requests",
            "gauge",
            "Requests held until they are known to be served.",
            one(s.held as f64),
        ),
        (
            "request_log_entries",
            "gauge",
            "Entries in the replicated request log's window (bounded by its compaction).",
            one(s.request_log as f64),
        ),
        (
            "elections_total",
            "counter",
            "Elections in the replicated record.",
            one(s.elections as f64),
        ),
        (
            "simulated_failures_total",
            "counter",
            "Simulated failures in the replicated record.",
            one(s.failures as f64),
        ),
        (
            "elections_won_total",
            "counter",
            "Elections this node won.",
            one(s.counters.elections_won as f64),
        ),
        (
            "recoveries_total",
            "counter",
            "Recoveries this node completed.",
            one(s.counters.recoveries as f64),
        ),
        (
            "uptime_seconds",
            "gauge",
            "Seconds since the process started.",
            one(status.uptime_s),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, samples) in table {
        let _ = writeln!(
            out,
            "# HELP imgcloud_{name} {help}\n# TYPE imgcloud_{name} {kind}"
        );
        for (labels, value) in samples {
            let _ = writeln!(out, "imgcloud_{name}{{node=\"{node}\"{labels}}} {value}");
        }
    }
    out
}
