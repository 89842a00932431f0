//! A user's side of the cloud: signed operations and directory reads over each node's HTTP
//! API, trying the nodes in turn so that any one of them being down costs one attempt.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::ClusterConfig;
use crate::sharing::{DirectoryEntry, SignedOp};
use crate::{Error, Result};

/// Longest wait for one node's answer (a node waits at most 3 s for its majority).
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cloud as a user's peer reaches it.
#[derive(Clone, Debug)]
pub struct Cloud {
    nodes: Vec<SocketAddr>,
    http: reqwest::Client,
    next: std::sync::Arc<AtomicUsize>,
}

impl Cloud {
    /// The cloud of `config` (its nodes' HTTP addresses).
    pub fn new(config: &ClusterConfig) -> Self {
        Cloud {
            nodes: config.nodes.iter().map(|n| n.http).collect(),
            http: reqwest::Client::builder()
                .timeout(NODE_TIMEOUT)
                .build()
                .expect("an HTTP client builds"),
            next: Default::default(),
        }
    }

    /// The node addresses, starting with the one that answered last.
    fn order(&self) -> impl Iterator<Item = (usize, SocketAddr)> + '_ {
        let start = self.next.load(Ordering::Relaxed);
        (0..self.nodes.len()).map(move |i| {
            let at = (start + i) % self.nodes.len();
            (at, self.nodes[at])
        })
    }

    /// Sends a signed operation; Ok once a majority of the cloud has recorded it.
    pub async fn submit(&self, op: &SignedOp) -> Result<()> {
        let mut last = String::from("no node answered");
        for (at, node) in self.order() {
            let sent = self
                .http
                .post(format!("http://{node}/users/op"))
                .json(op)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status();
                    let why = error_text(response).await;
                    match status.as_u16() {
                        200 => {
                            self.next.store(at, Ordering::Relaxed);
                            return Ok(());
                        }
                        403 => return Err(Error::Unauthorized(why)),
                        400 => return Err(Error::InvalidInput(why)),
                        _ => last = format!("node at {node}: {why}"),
                    }
                }
                Err(e) => last = format!("node at {node}: {e}"),
            }
        }
        Err(Error::Unavailable(format!(
            "the cloud did not record the request ({last})"
        )))
    }

    /// The directory, as of a moment after this call began (linearizable).
    pub async fn directory(&self) -> Result<Vec<DirectoryEntry>> {
        let mut last = String::from("no node answered");
        for (at, node) in self.order() {
            match self
                .http
                .get(format!("http://{node}/directory"))
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    let dir = response.json().await.map_err(|e| {
                        Error::Protocol(format!("node at {node} sent a bad directory: {e}"))
                    })?;
                    self.next.store(at, Ordering::Relaxed);
                    return Ok(dir);
                }
                Ok(response) => last = format!("node at {node}: {}", error_text(response).await),
                Err(e) => last = format!("node at {node}: {e}"),
            }
        }
        Err(Error::Unavailable(format!(
            "the cloud's directory is not readable now ({last})"
        )))
    }
}

/// The `error` sentence of a JSON error body, or the status line.
async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<serde_json::Value>().await {
        Ok(v) => v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string()),
        Err(_) => status.to_string(),
    }
}
