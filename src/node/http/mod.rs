//! Each node's HTTP API (axum): `POST /encrypt`, `GET /status` (JSON), `GET /metrics`
//! (Prometheus text), `GET /cluster` (every node's status, for the dashboard at `/`).
//!
//! `/status` and `/metrics` read the latest [`NodeStatus`] that the node loop publishes every
//! tick, so they never wait for the protocol core; `/status` answers even while the node is in
//! its simulated failure (it is the operator's window, and says "Failed"). `POST /encrypt`
//! hands the request to the node loop, which forwards it to the members so that the cluster,
//! not this node, decides who serves it, and waits for the answer. A node that cannot finish
//! it answers 503 with a JSON error at once: when it is not Active with a coordinator as the
//! request arrives, and when it loses its majority (or fails) while the request waits, since
//! neither its own claim nor the winner's forwarded reply can then reach it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::message::NodeState;
use crate::codec::metadata::Viewer;
use crate::ids::NodeId;
use crate::node::budget::Budget;
use crate::node::desk::Desk;
use crate::node::shell::Input;
use crate::node::slots::Bounded;
use crate::sharing::bodies::WithFile;
use crate::sharing::SignedOp;
use crate::store::Store;
use crate::watch::NodeStatus;
use crate::wire::request::{EncryptRequest, Outcome, Refusal};
use crate::Result;
use futures::StreamExt;

mod encrypt;
mod metrics;
mod sharing;

use encrypt::post_encrypt;
use metrics::get_metrics;
pub use metrics::metrics_text;
use sharing::{get_directory, post_grant, post_query, post_share, post_user_op, post_view};

/// The largest `POST /encrypt` body accepted.
pub const MAX_UPLOAD_BYTES: usize = 32 * 1024 * 1024;
/// The largest `POST /share`, `/grant` or `/view` body accepted (an image and its cover).
pub const MAX_SHARING_BYTES: usize = 128 * 1024 * 1024;
/// How long `POST /encrypt` waits for the whole request body.
pub const BODY_DEADLINE: Duration = Duration::from_secs(20);
/// How long `POST /encrypt` waits for the cluster's answer.
pub const ENCRYPT_DEADLINE: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Api {
    /// This node.
    pub node: NodeId,
    /// The byte budget an upload takes its share of until it is answered.
    pub budget: Budget,
    /// The latest status.
    pub status: watch::Receiver<NodeStatus>,
    /// The node loop.
    pub inputs: mpsc::Sender<Input>,
    /// The consensus store (directory, accounts, ledger).
    pub store: Store,
    /// The sharing desk (share, grant, view).
    pub desk: Desk,
    /// Every node of the configuration (for `/cluster`).
    pub nodes: Vec<crate::config::NodeAddr>,
    /// Asks the other nodes for their `/status` (for `/cluster`).
    pub client: reqwest::Client,
}

/// Serves the API on `listener` until the task is dropped.
pub(crate) async fn serve(listener: Bounded, api: Api) -> Result<()> {
    let counter = Arc::new(AtomicU64::new(0));
    let app = limit_bodies(
        Router::new()
            .route("/status", get(get_status))
            .route("/cluster", get(get_cluster))
            .route("/metrics", get(get_metrics))
            .route(
                "/encrypt",
                post(post_encrypt).layer(axum::middleware::from_fn_with_state(
                    (api.budget.clone(), api.node),
                    within_budget,
                )),
            )
            .route("/directory", get(get_directory))
            .route("/users/op", post(post_user_op))
            .route("/query", post(post_query)),
        MAX_UPLOAD_BYTES,
    )
    .merge(limit_bodies(
        Router::new()
            .route("/share", post(post_share))
            .route("/grant", post(post_grant))
            .route("/view", post(post_view)),
        MAX_SHARING_BYTES,
    ))
    .merge(crate::web::dashboard::routes())
    .with_state((api, counter));
    axum::serve(listener, app).await?;
    Ok(())
}

type AppState = (Api, Arc<AtomicU64>);

async fn get_status(State((api, _)): State<AppState>) -> Response {
    Json(status_json(&api)).into_response()
}

/// This node's status as `/status` answers it: the node's, with the store's under `store`
/// and the sharing desk's view counts under `desk`.
fn status_json(api: &Api) -> serde_json::Value {
    let status = api.status.borrow().clone();
    let mut json = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        let store = serde_json::to_value(api.store.status()).unwrap_or_default();
        map.insert("store".into(), store);
        let desk = serde_json::to_value(api.desk.counts()).unwrap_or_default();
        map.insert("desk".into(), desk);
    }
    json
}

/// `GET /cluster`: every node's `/status` as this node gets them (the dashboard's one source).
async fn get_cluster(State((api, _)): State<AppState>) -> Response {
    let own = status_json(&api);
    Json(crate::web::dashboard::gather(&api.client, &api.nodes, api.node, own).await)
        .into_response()
}

/// `router` with bodies limited to `limit` bytes: refused (413) before any of them is read
/// when their `Content-Length` says they are larger, cut off at the limit otherwise.
pub(crate) fn limit_bodies<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limit: usize,
) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            refuse_oversized,
        ))
}

/// The body's length as its `Content-Length` declares it, if it does.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Refuses (413) a request whose `Content-Length` is over `limit` before reading any of it
/// (a body without one is cut off by `DefaultBodyLimit` once it passes the limit).
async fn refuse_oversized(
    State(limit): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match declared_length(request.headers()) {
        Some(len) if len > limit as u64 => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {len} bytes; at most {limit} are accepted"),
        ),
        _ => next.run(request).await,
    }
}

/// Gives an upload its share of the node's payload budget before any of it is read, held
/// until the upload is answered (a body without a length reserves the most it may be). Without
/// room, answers 503 with `Retry-After` at once: the body is not looked at, only read to its
/// end and thrown away so that the client can read the answer (unless the client asked
/// `Expect: 100-continue` and waits for leave to send it, as curl does for large bodies).
async fn within_budget(
    State((budget, node)): State<(Budget, NodeId)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = declared_length(request.headers()).map(|l| l.min(MAX_UPLOAD_BYTES as u64));
    let reserved = declared.map_or(MAX_UPLOAD_BYTES, |l| l as usize);
    if let Some(share) = budget.try_take(reserved) {
        let response = next.run(request).await;
        drop(share);
        return response;
    }
    let mut busy = error(StatusCode::SERVICE_UNAVAILABLE, budget.busy(node, reserved));
    busy.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    let waits_for_leave = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits_for_leave {
        let mut body = request.into_body().into_data_stream();
        let drained = async { while let Some(Ok(_)) = body.next().await {} };
        let _ = tokio::time::timeout(BODY_DEADLINE, drained).await;
    }
    busy
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn refusal_status(kind: Refusal) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A refusal before the request reaches the cluster: status and sentence.
type Refuse = (StatusCode, String);

fn refuse(status: StatusCode, message: impl Into<String>) -> Refuse {
    (status, message.into())
}
