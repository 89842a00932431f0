//! Each node's HTTP API (axum): `POST /encrypt`, `GET /status` (JSON), `GET /metrics`
//! (Prometheus text), `GET /cluster` (every node's status, for the dashboard at `/`).
//!
//! `/status` and `/metrics` read the latest [`NodeStatus`] that the node loop publishes every
//! tick, so they never wait for the protocol core; `/status` answers even while the node is in
//! its simulated failure (it is the operator's window, and says "Failed"). `POST /encrypt`
//! hands the request to the node loop, which forwards it to the peers so that the cluster,
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

use crate::codec::metadata::Viewer;
use crate::ids::NodeId;
use crate::node::budget::Budget;
use crate::node::desk::Desk;
use crate::node::shell::Input;
use crate::node::slots::Bounded;
use crate::node::status::NodeStatus;
use crate::sharing::wire::WithFile;
use crate::sharing::SignedOp;
use crate::store::Store;
use crate::wire::message::NodeState;
use crate::wire::request::{EncryptRequest, Outcome, Refusal};
use crate::Result;
use futures::StreamExt;

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

/// The status code and JSON error for a store failure.
fn store_error(e: crate::Error) -> Response {
    let status = match &e {
        crate::Error::Unauthorized(_) => StatusCode::FORBIDDEN,
        crate::Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    match e {
        crate::Error::Unauthorized(why) => error(status, why),
        e => error(status, e.to_string()),
    }
}

/// `GET /directory`: every user, linearizable from any node.
async fn get_directory(State((api, _)): State<AppState>) -> Response {
    let read = api
        .store
        .read(|state| state.directory(crate::sharing::unix_millis()));
    match read.await {
        Ok(directory) => Json(directory).into_response(),
        Err(e) => store_error(e),
    }
}

/// `POST /users/op`: a signed user operation (JSON [`SignedOp`]); 200 once a majority has it.
async fn post_user_op(
    State((api, _)): State<AppState>,
    op: std::result::Result<Json<SignedOp>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(op) = match op {
        Ok(op) => op,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected a signed operation: {}", e.body_text()),
            )
        }
    };
    match api
        .store
        .write(op, None)
        .await
        .and_then(|r| r.into_result())
    {
        Ok(_) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => store_error(e),
    }
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

/// Decodes a sharing request body (postcard [`WithFile`]).
fn with_file(body: &[u8]) -> Result<WithFile> {
    postcard::from_bytes(body).map_err(|e| {
        crate::Error::InvalidInput(format!(
            "expected a signed operation with its file (postcard): {e}"
        ))
    })
}

/// A sharing answer as a postcard body, or the error as JSON.
fn postcard_answer<T: serde::Serialize>(answer: Result<T>) -> Response {
    match answer {
        Ok(answer) => match postcard::to_stdvec(&answer) {
            Ok(bytes) => {
                ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Err(e) => store_error(e),
    }
}

/// `POST /share`: lists a user's encrypted image in the ledger and the directory.
async fn post_share(State((api, _)): State<AppState>, body: axum::body::Bytes) -> Response {
    let request = with_file(&body);
    postcard_answer(match request {
        Ok(request) => api.desk.share(request).await,
        Err(e) => Err(e),
    })
}

/// `POST /grant`: an owner changes a viewer's views; the answer carries the viewer's copy.
async fn post_grant(State((api, _)): State<AppState>, body: axum::body::Bytes) -> Response {
    let request = with_file(&body);
    postcard_answer(match request {
        Ok(request) => api.desk.grant(request).await,
        Err(e) => Err(e),
    })
}

/// `POST /query`: a user's signed question about their own records (postcard both ways).
async fn post_query(State((api, _)): State<AppState>, body: axum::body::Bytes) -> Response {
    let query = postcard::from_bytes(&body)
        .map_err(|e| crate::Error::InvalidInput(format!("not a query: {e}")));
    postcard_answer(match query {
        Ok(query) => api.desk.query(query).await,
        Err(e) => Err(e),
    })
}

/// `POST /view`: spends one view of a copy through the ledger.
async fn post_view(State((api, _)): State<AppState>, body: axum::body::Bytes) -> Response {
    let request = with_file(&body);
    postcard_answer(match request {
        Ok(request) => api.desk.view(request).await,
        Err(e) => Err(e),
    })
}

async fn get_metrics(State((api, _)): State<AppState>) -> impl IntoResponse {
    let status = api.status.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(&status),
    )
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

/// Reads the multipart form into a request, or the refusal.
async fn read_form(
    id: String,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<EncryptRequest, Refuse> {
    let mut form = multipart.map_err(|e| {
        refuse(
            e.status(),
            format!("expected a multipart/form-data body: {}", e.body_text()),
        )
    })?;
    let (mut secret, mut cover, mut owner, mut viewers) = (None, None, None, Vec::new());
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err(refuse(
                    e.status(),
                    format!("cannot read the form: {}", e.body_text()),
                ))
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|e| {
            refuse(
                e.status(),
                format!("cannot read field {name}: {}", e.body_text()),
            )
        })?;
        let text = || {
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    format!("field {name} must be text"),
                )
            })
        };
        match name.as_str() {
            "image" => secret = Some(bytes.to_vec()),
            "cover" => cover = Some(bytes.to_vec()),
            "owner" => owner = Some(text()?),
            "viewer" => {
                let viewer: Viewer = text()?
                    .parse()
                    .map_err(|e: crate::Error| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
                viewers.push(viewer);
            }
            other => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("unknown field \"{other}\" (expected image, cover, owner, viewer)"),
                ))
            }
        }
    }
    let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            "missing field \"image\" (the image to hide)",
        )
    })?;
    let owner = owner
        .filter(|o| !o.trim().is_empty())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "missing field \"owner\""))?;
    Ok(EncryptRequest {
        id,
        secret,
        cover: cover.filter(|c| !c.is_empty()),
        owner,
        viewers,
        resent_after: Vec::new(),
    })
}

async fn post_encrypt(
    State((api, counter)): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    if let Some(length) = declared_length(&headers).filter(|&l| l > MAX_UPLOAD_BYTES as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body declares {length} bytes; the limit is {MAX_UPLOAD_BYTES} bytes"),
        );
    }
    let id = format!(
        "h{}-{:08x}-{}",
        api.node,
        rand::random::<u32>(),
        counter.fetch_add(1, Ordering::Relaxed)
    );
    let request = match tokio::time::timeout(BODY_DEADLINE, read_form(id, multipart)).await {
        Ok(Ok(request)) => request,
        Ok(Err((status, message))) => return error(status, message),
        Err(_) => {
            let message = format!(
                "the request body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            );
            return error(StatusCode::REQUEST_TIMEOUT, message);
        }
    };
    let (tx, rx) = oneshot::channel();
    if api
        .inputs
        .send(Input::HttpRequest(request, tx))
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    match tokio::time::timeout(ENCRYPT_DEADLINE, rx).await {
        Ok(Ok(reply)) => match reply.outcome {
            Outcome::Encrypted(png) => (
                [
                    (header::CONTENT_TYPE, "image/png".to_string()),
                    (
                        header::HeaderName::from_static("x-served-by"),
                        reply.served_by.to_string(),
                    ),
                ],
                png,
            )
                .into_response(),
            Outcome::Refused { kind, message } => error(refusal_status(kind), message),
        },
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node dropped the request (it failed or lost its majority)",
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer from the cluster within {} s",
                ENCRYPT_DEADLINE.as_secs()
            ),
        ),
    }
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
    let peers = s
        .peers
        .iter()
        .map(|p| {
            (
                format!(",peer=\"{}\"", p.id),
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
            "peer_up",
            "gauge",
            "1 if the peer is alive and Active as this node sees it.",
            peers,
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
            "peer_link_reconnects_total",
            "counter",
            "Times a link to another node came up again after it had been up and broke.",
            one(status.peer_link_reconnects as f64),
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
