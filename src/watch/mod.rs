//! Watching the cluster from outside: every node's `/status`, read once or polled.
//!
//! Every reader of the nodes' state goes through here: `client status`, the demo, the stress
//! trials, the chaos scenarios and the dashboard's `/cluster` aggregate.
//!
//! - [`node_status`] reads one node's `/status` within a timeout and says why when it cannot.
//! - [`cluster_status`] reads every node's at once; [`wait_for_agreement`] and
//!   [`wait_converged`] poll it until the cluster is in the state they wait for, or give up.
//! - [`ClusterWatch`] polls every node on its own (a stopped node slows no other) until it is
//!   finished, and records what the runs judge: the coordinators named in each epoch, each
//!   node's latest status, and the windows in which a node was not Active.
//!
//! Implementation caveats: a poll sees the cluster only every [`ClusterWatch`] interval, so a
//! failure shorter than that may go unseen; a node that does not answer counts as not Active.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::warn;

use crate::cluster::message::NodeState;
use crate::config::NodeAddr;
use crate::ids::NodeId;
use crate::{Error, Result};

mod status;
pub use status::NodeStatus;

/// How long [`cluster_status`] and [`ClusterWatch`] wait for one node's `/status`.
pub const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// How often [`wait_for_agreement`] and [`wait_converged`] read the cluster.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// An HTTP client for reading statuses (no timeout of its own: each read sets one).
pub fn status_client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap_or_default()
}

/// Node `node`'s `/status` as `T`, read within `limit`; or why not, in a few words ("no answer
/// within 400 ms", "answered 503 Service Unavailable", "sent a bad status: ...").
pub async fn node_status<T: DeserializeOwned>(
    http: &reqwest::Client,
    node: &NodeAddr,
    limit: Duration,
) -> std::result::Result<T, String> {
    let url = format!("http://{}/status", node.http);
    let answer = http
        .get(url)
        .timeout(limit)
        .send()
        .await
        .map_err(|e| match e.is_timeout() {
            true => format!("no answer within {} ms", limit.as_millis()),
            false => "does not answer".to_string(),
        })?;
    if !answer.status().is_success() {
        return Err(format!("answered {}", answer.status()));
    }
    answer
        .json()
        .await
        .map_err(|e| format!("sent a bad status: {e}"))
}

/// Every node's `/status` (or why it could not be read), in node order, read at once.
pub async fn cluster_status(nodes: &[NodeAddr]) -> Vec<(NodeAddr, Result<NodeStatus>)> {
    let http = status_client();
    let reads = nodes.iter().map(|node| {
        let http = &http;
        async move {
            let status = node_status(http, node, READ_TIMEOUT).await.map_err(|why| {
                Error::Unavailable(format!("node {} at {}: {why}", node.id, node.http))
            });
            (node.clone(), status)
        }
    });
    futures::future::join_all(reads).await
}

/// Waits until every node is Active and names the same coordinator in the same epoch;
/// returns them, or None if `limit` passes first.
pub async fn wait_for_agreement(nodes: &[NodeAddr], limit: Duration) -> Option<(u32, u64)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let views: Vec<Option<(u32, u64)>> = cluster_status(nodes)
            .await
            .into_iter()
            .map(|(_, s)| {
                s.ok()
                    .filter(|s| s.core.state == NodeState::Active)
                    .and_then(|s| Some((s.core.coordinator?, s.core.epoch)))
            })
            .collect();
        if let Some(Some(first)) = views.first() {
            if views.iter().all(|v| v.as_ref() == Some(first)) {
                return Some(*first);
            }
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    None
}

/// Waits until every node answers, is Active, and all digests are equal; false if `limit`
/// passes first.
pub async fn wait_converged(nodes: &[NodeAddr], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let digests: Option<BTreeSet<String>> = cluster_status(nodes)
            .await
            .into_iter()
            .map(|(_, s)| {
                s.ok()
                    .filter(|s| s.core.state == NodeState::Active && !s.core.digest.is_empty())
                    .map(|s| s.core.digest)
            })
            .collect();
        if digests.is_some_and(|d| d.len() == 1) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// When a node was first seen not Active.
#[derive(Clone, Copy, Debug)]
struct Down {
    /// Seconds since the watch started (0 if it was down at its first poll).
    since: f64,
    /// Whether that was after the node's first poll: the failure began while the watch ran.
    began_inside: bool,
    /// The node was the coordinator the Active nodes named last.
    coordinator: bool,
}

/// What the polls have recorded so far.
#[derive(Default)]
struct Seen {
    /// The coordinators the Active nodes named, per epoch.
    per_epoch: BTreeMap<u64, BTreeSet<NodeId>>,
    /// Each node's latest status, while it answers.
    latest: BTreeMap<NodeId, NodeStatus>,
    /// The coordinator the Active nodes named last, at the highest epoch seen.
    named: Option<(u64, NodeId)>,
    /// Nodes not Active now.
    down: BTreeMap<NodeId, Down>,
    /// Failure windows that are over.
    windows: Vec<FailureWindow>,
}

impl Seen {
    /// Records node `id`'s poll at `now` seconds: its status, or None if it did not answer.
    /// Returns whether a failure that began while the watch ran is now over.
    fn record(&mut self, id: NodeId, status: Option<NodeStatus>, now: f64, first: bool) -> bool {
        let state = status.as_ref().map_or(NodeState::Failed, |s| s.core.state);
        if let Some(s) = &status {
            if let (NodeState::Active, Some(c)) = (s.core.state, s.core.coordinator) {
                self.per_epoch.entry(s.core.epoch).or_default().insert(c);
                if self.named.is_none_or(|(epoch, _)| s.core.epoch >= epoch) {
                    self.named = Some((s.core.epoch, c));
                }
            }
        }
        match status {
            Some(s) => self.latest.insert(id, s),
            None => self.latest.remove(&id),
        };
        match (state, self.down.get(&id).copied()) {
            (NodeState::Active, Some(d)) => {
                self.down.remove(&id);
                self.windows.push(FailureWindow {
                    node: id,
                    start_s: d.since,
                    end_s: now,
                    coordinator: d.coordinator,
                });
                d.began_inside
            }
            (NodeState::Active, None) | (_, Some(_)) => false,
            (_, None) => {
                // Down at its first poll: down since before the watch, so since 0.
                let down = Down {
                    since: if first { 0.0 } else { now },
                    began_inside: !first,
                    coordinator: self.named.is_some_and(|(_, c)| c == id),
                };
                self.down.insert(id, down);
                false
            }
        }
    }
}

/// Polls every node's `/status` in the background, each node on its own every `every`.
pub struct ClusterWatch {
    start: Instant,
    seen: Arc<Mutex<Seen>>,
    passed: watch::Receiver<usize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ClusterWatch {
    /// Starts polling; times are seconds since `start`.
    pub fn start(nodes: &[NodeAddr], start: Instant, every: Duration) -> ClusterWatch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (passed_tx, passed) = watch::channel(0usize);
        let passed_tx = Arc::new(passed_tx);
        let http = status_client();
        let tasks = nodes
            .iter()
            .map(|node| {
                let (seen, passed_tx, http) =
                    (Arc::clone(&seen), Arc::clone(&passed_tx), http.clone());
                let node = node.clone();
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for round in 0u64.. {
                        ticker.tick().await;
                        let status = node_status(&http, &node, READ_TIMEOUT).await.ok();
                        let now = start.elapsed().as_secs_f64();
                        let Ok(mut seen) = seen.lock() else { return };
                        if seen.record(node.id, status, now, round == 0) {
                            passed_tx.send_modify(|n| *n += 1);
                        }
                    }
                })
            })
            .collect();
        ClusterWatch {
            start,
            seen,
            passed,
            tasks,
        }
    }

    /// The latest status of every node that answered its last poll.
    pub fn latest(&self) -> BTreeMap<NodeId, NodeStatus> {
        self.seen
            .lock()
            .map(|s| s.latest.clone())
            .unwrap_or_default()
    }

    /// The coordinator now, as the Active nodes polled last name it (highest epoch).
    pub fn coordinator(&self) -> Option<NodeId> {
        self.latest()
            .values()
            .filter(|s| s.core.state == NodeState::Active)
            .max_by_key(|s| s.core.epoch)
            .and_then(|s| s.core.coordinator)
    }

    /// Counts the failures that began after a node's first poll and are over (the node Active
    /// again): they came and went while the watch ran.
    pub fn passed_failures(&self) -> watch::Receiver<usize> {
        self.passed.clone()
    }

    /// Stops polling; returns what was seen.
    pub fn finish(self) -> Watched {
        for task in &self.tasks {
            task.abort();
        }
        let now = self.start.elapsed().as_secs_f64();
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        let mut windows = seen.windows;
        // Windows still open end now.
        windows.extend(seen.down.iter().map(|(&node, d)| FailureWindow {
            node,
            start_s: d.since,
            end_s: now,
            coordinator: d.coordinator,
        }));
        windows.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        for (epoch, coordinators) in seen.per_epoch.iter().filter(|(_, c)| c.len() > 1) {
            warn!(epoch, ?coordinators, "two coordinators in one epoch");
        }
        Watched {
            max_coordinators_per_epoch: seen
                .per_epoch
                .values()
                .map(BTreeSet::len)
                .max()
                .unwrap_or(0),
            windows,
        }
    }
}

/// A period during which a node was not Active (failed, recovering or not answering).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureWindow {
    /// The node that was failed.
    pub node: NodeId,
    /// When the failure was injected, in seconds since the run started.
    pub start_s: f64,
    /// When the node was brought back (or the run ended), in seconds since the run started.
    pub end_s: f64,
    /// Whether the node was the coordinator when it failed (absent, false, in older reports).
    #[serde(default)]
    pub coordinator: bool,
}

/// What a [`ClusterWatch`] saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Watched {
    /// The most coordinators the Active nodes named in one epoch (0: no Active node seen).
    pub max_coordinators_per_epoch: usize,
    /// When nodes were not Active, in seconds since the start, in order of their start.
    pub windows: Vec<FailureWindow>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::status::initial_status;

    fn status(state: NodeState, epoch: u64, coordinator: Option<NodeId>) -> NodeStatus {
        let mut s = initial_status(1, 1);
        s.core.state = state;
        s.core.epoch = epoch;
        s.core.coordinator = coordinator;
        s
    }

    #[test]
    fn a_failure_inside_the_watch_opens_and_closes_a_window() {
        let mut seen = Seen::default();
        assert!(!seen.record(1, Some(status(NodeState::Active, 1, Some(1))), 0.1, true));
        assert!(!seen.record(2, Some(status(NodeState::Active, 1, Some(1))), 0.1, true));
        // The coordinator stops answering, then comes back.
        assert!(!seen.record(1, None, 1.0, false));
        assert!(!seen.record(2, Some(status(NodeState::Active, 2, Some(2))), 1.5, false));
        assert!(seen.record(1, Some(status(NodeState::Active, 2, Some(2))), 3.0, false));
        assert_eq!(
            seen.windows,
            vec![FailureWindow {
                node: 1,
                start_s: 1.0,
                end_s: 3.0,
                coordinator: true,
            }]
        );
        assert_eq!(seen.per_epoch[&1], BTreeSet::from([1]));
        assert_eq!(seen.per_epoch[&2], BTreeSet::from([2]));
    }

    #[test]
    fn a_node_down_at_its_first_poll_is_down_since_zero_and_not_a_passed_failure() {
        let mut seen = Seen::default();
        assert!(!seen.record(3, Some(status(NodeState::Recovering, 4, None)), 0.2, true));
        assert!(!seen.record(3, Some(status(NodeState::Active, 4, Some(1))), 2.0, false));
        assert_eq!(seen.windows[0].start_s, 0.0);
        assert!(!seen.windows[0].coordinator);
    }

    #[test]
    fn two_coordinators_in_one_epoch_are_counted() {
        let mut seen = Seen::default();
        seen.record(1, Some(status(NodeState::Active, 5, Some(1))), 0.1, true);
        seen.record(2, Some(status(NodeState::Active, 5, Some(2))), 0.1, true);
        assert_eq!(seen.per_epoch[&5].len(), 2);
    }
}
