//! What a node publishes about itself: the [`NodeStatus`] that `/status` serves and every
//! watcher reads (`/metrics`, the dashboard, `client status`, the benches, the tests). It lives
//! beside the readers, not in the node, so that the node and its readers both depend on it and
//! not on each other.

use crate::cluster::node::CoreStatus;

/// Everything `/status` and `/metrics` show.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The core's view.
    #[serde(flatten)]
    pub core: CoreStatus,
    /// Encryption jobs this node completed (`served` counts the request log's entries).
    pub encryptions: u64,
    /// Load-balancing decisions this node made as coordinator.
    pub lb_decisions: u64,
    /// Requests this node took over while no live coordinator assigned them.
    pub takeovers: u64,
    /// Bytes of request payloads held now (see [`crate::node::budget`]).
    pub payload_bytes: u64,
    /// The payload budget, in bytes.
    pub payload_budget_bytes: u64,
    /// Payloads refused so far for want of budget (HTTP uploads answered 503, forwarded
    /// copies not held).
    pub payloads_refused: u64,
    /// Encryptions running now.
    pub in_flight: usize,
    /// Encryptions waiting for a worker.
    pub queued: usize,
    /// Encryption workers.
    pub workers: usize,
    /// Seconds since the process started.
    pub uptime_s: f64,
    /// Times one of this node's links to a member came up again after it had been up and broke
    /// (0 if no link ever broke); absent (0) in the status of older nodes.
    #[serde(default)]
    pub link_reconnects: u64,
}
