//! A user's side of the cloud: signed operations and directory reads over each node's HTTP
//! API, trying the nodes in turn so that any one of them being down costs one attempt.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::ClusterConfig;
use crate::sharing::bodies::{Answer, GrantAnswer, SharedAnswer, ViewAnswer, WithFile};
use crate::sharing::Credential;
use crate::sharing::{DirectoryEntry, Query, SignedOp};
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

/// A node's answer to a registration ([`Cloud::register`]).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Registered {
    /// With a probe: whether the node reached the registered address.
    #[serde(default)]
    pub reachable: Option<bool>,
    /// The node that answered.
    #[serde(default)]
    pub node: Option<crate::ids::NodeId>,
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
        self.record(op, "users/op").await.map(|_| ())
    }

    /// Sends a signed registration; with `probe`, the node that records it also tries to
    /// reach the registered address and says whether it did.
    pub async fn register(&self, op: &SignedOp, probe: bool) -> Result<Registered> {
        let path = if probe {
            "users/op?probe=true"
        } else {
            "users/op"
        };
        let response = self.record(op, path).await?;
        response.json().await.map_err(|e| {
            Error::Protocol(format!("a node sent a bad answer to a registration: {e}"))
        })
    }

    async fn record(&self, op: &SignedOp, path: &str) -> Result<reqwest::Response> {
        self.call("record the request", |http, node| {
            http.post(format!("http://{node}/{path}")).json(op)
        })
        .await
    }

    /// The directory, as of a moment after this call began (linearizable).
    pub async fn directory(&self) -> Result<Vec<DirectoryEntry>> {
        let response = self
            .call("read the directory", |http, node| {
                http.get(format!("http://{node}/directory"))
            })
            .await?;
        response
            .json()
            .await
            .map_err(|e| Error::Protocol(format!("a node sent a bad directory: {e}")))
    }

    /// `POST /share`: lists an encrypted image in the ledger.
    pub async fn share(&self, request: &WithFile) -> Result<SharedAnswer> {
        self.post_file("share", request).await
    }

    /// `POST /grant`: changes a viewer's views; the answer carries the viewer's copy.
    pub async fn grant(&self, request: &WithFile) -> Result<GrantAnswer> {
        self.post_file("grant", request).await
    }

    /// `POST /view`: spends one view (the same signed request may be retried: it is
    /// counted once); the image, opened with `credential` (the cloud seals it to the signer).
    pub async fn view(&self, request: &WithFile, credential: &Credential) -> Result<ViewAnswer> {
        let mut answer: ViewAnswer = self.post_file("view", request).await?;
        answer.image = credential.open_sealed(&answer.image)?;
        Ok(answer)
    }

    /// `POST /query`: a signed question about the user's own records.
    pub async fn query(&self, query: &Query) -> Result<Answer> {
        let body = bytes::Bytes::from(postcard::to_stdvec(query).expect("a query serializes"));
        let response = self
            .call("answer the question", |http, node| {
                http.post(format!("http://{node}/query"))
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        postcard_answer(response, "a node").await
    }

    async fn post_file<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        request: &WithFile,
    ) -> Result<T> {
        let body = bytes::Bytes::from(postcard::to_stdvec(request).expect("a request serializes"));
        let response = self
            .call(&format!("take the {path} request"), |http, node| {
                http.post(format!("http://{node}/{path}"))
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        postcard_answer(response, "a node").await
    }

    /// Sends a request to the nodes in turn until one answers it (200, or a refusal of the
    /// request itself: 400, 403, 404, 413); "unavailable" and unreachable nodes move on.
    async fn call(
        &self,
        what: &str,
        request: impl Fn(&reqwest::Client, SocketAddr) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut last = String::from("no node answered");
        for (at, node) in self.order() {
            match request(&self.http, node).send().await {
                Ok(response) if response.status().is_success() => {
                    self.next.store(at, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let why = error_text(response).await;
                    if matches!(status, 400..=499) {
                        return Err(super::status_error(status, why));
                    }
                    last = format!("node at {node}: {why}");
                }
                Err(e) => last = format!("node at {node}: {e}"),
            }
        }
        Err(Error::Unavailable(format!(
            "the cloud could not {what} ({last})"
        )))
    }
}

/// A successful answer's postcard body, decoded; `who` names the sender in errors.
pub(super) async fn postcard_answer<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    who: &str,
) -> Result<T> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Error::Unavailable(format!("{who} broke off its answer: {e}")))?;
    postcard::from_bytes(&bytes)
        .map_err(|e| Error::Protocol(format!("{who} sent a bad answer: {e}")))
}

/// The `error` sentence of a JSON error body, or the status line.
pub(super) async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<serde_json::Value>().await {
        Ok(v) => v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string()),
        Err(_) => status.to_string(),
    }
}
