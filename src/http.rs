//! Each node's HTTP API (axum): `GET /status` (JSON) and `GET /metrics` (Prometheus text).
//!
//! The handlers read the latest [`NodeStatus`] that the node loop publishes every tick, so a
//! status request never waits for the protocol core. `/status` answers even while the node is
//! in its simulated failure: it is the operator's window, and it says "Failed".

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::message::NodeState;
use crate::server::NodeStatus;
use crate::Result;

/// The shared state of the handlers.
#[derive(Clone)]
struct Api {
    status: watch::Receiver<NodeStatus>,
}

/// The router, for serving and for tests.
pub fn router(status: watch::Receiver<NodeStatus>) -> Router {
    Router::new()
        .route("/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .with_state(Api { status })
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, status: watch::Receiver<NodeStatus>) -> Result<()> {
    axum::serve(listener, router(status)).await?;
    Ok(())
}

async fn get_status(State(api): State<Api>) -> Json<NodeStatus> {
    Json(api.status.borrow().clone())
}

async fn get_metrics(State(api): State<Api>) -> impl IntoResponse {
    let status = api.status.borrow().clone();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics_text(&status))
}

/// Renders the status in the Prometheus text exposition format.
pub fn metrics_text(status: &NodeStatus) -> String {
    let s = &status.core;
    let node = s.id;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP imgcloud_{name} {help}\n# TYPE imgcloud_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "imgcloud_{name}{{node=\"{node}\"{labels}}} {value}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric("epoch", "gauge", "Current election epoch.", &one(s.epoch as f64));
    metric("is_coordinator", "gauge", "1 if this node is the coordinator.", &one(f64::from(u8::from(s.coordinator == Some(node)))));
    let states = [NodeState::Active, NodeState::Failed, NodeState::Recovering]
        .map(|st| (format!(",state=\"{st}\""), f64::from(u8::from(s.state == st))));
    metric("state", "gauge", "1 for the node's current state.", &states);
    metric("load", "gauge", "Measured load used by elections and dispatch.", &one(s.load));
    metric("quorum", "gauge", "1 if the node hears from a majority.", &one(f64::from(u8::from(s.quorum))));
    let peers: Vec<(String, f64)> = s
        .peers
        .iter()
        .map(|p| (format!(",peer=\"{}\"", p.id), f64::from(u8::from(p.state == NodeState::Active))))
        .collect();
    metric("peer_up", "gauge", "1 if the peer is alive and Active as this node sees it.", &peers);
    metric("elections_total", "counter", "Elections in the replicated record.", &one(s.elections as f64));
    metric("simulated_failures_total", "counter", "Simulated failures in the replicated record.", &one(s.failures as f64));
    metric("elections_won_total", "counter", "Elections this node won.", &one(s.counters.elections_won as f64));
    metric("recoveries_total", "counter", "Recoveries this node completed.", &one(s.counters.recoveries as f64));
    metric("uptime_seconds", "gauge", "Seconds since the process started.", &one(status.uptime_s));
    out
}
