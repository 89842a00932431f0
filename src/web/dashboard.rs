//! The dashboard's page: `/` on each node's HTTP port, with its script and style, and the
//! `/cluster` aggregate it polls: this node's status beside every other node's, fetched here
//! over HTTP with a short timeout, so the page talks to one origin only.

use std::time::Duration;

use axum::Router;
use serde::Serialize;
use serde_json::Value;

use crate::config::NodeAddr;
use crate::ids::NodeId;
use crate::watch::node_status;

const HTML: &str = include_str!("assets/dashboard.html");
const JS: &str = include_str!("assets/dashboard.js");

/// How long `/cluster` waits for another node's `/status`.
pub const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_millis(400);

/// The page's routes (`/`, `/dashboard.js`, `/web.css`, `/web.js`), for the node's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    super::page(HTML, "/dashboard.js", JS)
}

/// One node as `/cluster` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    /// The node.
    pub id: NodeId,
    /// Its HTTP address.
    pub http: String,
    /// Its `/status`, when it answered in time.
    pub status: Option<Value>,
    /// Why there is no status.
    pub error: Option<String>,
}

/// `GET /cluster`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// The node that answered.
    pub from: NodeId,
    /// Every node of the configuration, in id order.
    pub nodes: Vec<NodeReport>,
}

/// Every node's status: `own` for node `me`, the others asked over HTTP at once (each within
/// [`MEMBER_STATUS_TIMEOUT`]).
pub async fn gather(
    client: &reqwest::Client,
    nodes: &[NodeAddr],
    me: NodeId,
    own: Value,
) -> ClusterReport {
    let asks = nodes.iter().map(|node| {
        let own = (node.id == me).then(|| own.clone());
        async move {
            let (status, error) = match own {
                Some(own) => (Some(own), None),
                None => match node_status(client, node, MEMBER_STATUS_TIMEOUT).await {
                    Ok(status) => (Some(status), None),
                    Err(why) => (None, Some(why)),
                },
            };
            NodeReport {
                id: node.id,
                http: node.http.to_string(),
                status,
                error,
            }
        }
    });
    ClusterReport {
        from: me,
        nodes: futures::future::join_all(asks).await,
    }
}
