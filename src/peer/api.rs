//! The peer's HTTP port: the user's local API (what the `peer` subcommands call) behind the
//! login token, and the page at `/`.
//!
//! Every `/api/...` route needs the token, as `Authorization: Bearer TOKEN` or `?token=TOKEN`;
//! without it the answer is 401 and nothing private.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::cloud::Cloud;
use crate::sharing::{DirectoryEntry, SharedImage};

/// What the handlers share.
pub(super) struct Peer {
    pub user: String,
    pub token: String,
    pub cloud: Cloud,
}

/// One user as `peer online` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineEntry {
    /// The user.
    pub user: String,
    /// Whether their lease holds.
    pub online: bool,
    /// Where their peer is, while online.
    pub addr: Option<String>,
    /// What they share.
    pub shared: Vec<SharedImage>,
}

impl From<DirectoryEntry> for OnlineEntry {
    fn from(e: DirectoryEntry) -> Self {
        OnlineEntry {
            user: e.user,
            online: e.online,
            addr: e.addr,
            shared: e.shared,
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Serves the port until the task is dropped.
pub(super) async fn serve(listener: TcpListener, peer: Arc<Peer>) -> crate::Result<()> {
    let app = Router::new()
        .route("/", get(page))
        .route("/api/whoami", get(whoami))
        .route("/api/online", get(online))
        .with_state(peer);
    axum::serve(listener, app).await?;
    Ok(())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Whether the request carries the token (compared as digests, in constant time per byte).
fn authorized(peer: &Peer, headers: &HeaderMap, query: &TokenQuery) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(query.token.as_deref()).unwrap_or_default();
    let (a, b) = (Sha256::digest(given), Sha256::digest(&peer.token));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "this needs the peer's login token (the URL the peer printed, or `peer gallery`)",
    )
}

async fn whoami(
    State(peer): State<Arc<Peer>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if !authorized(&peer, &headers, &query) {
        return unauthorized();
    }
    Json(serde_json::json!({ "user": peer.user })).into_response()
}

async fn online(
    State(peer): State<Arc<Peer>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if !authorized(&peer, &headers, &query) {
        return unauthorized();
    }
    match peer.cloud.directory().await {
        Ok(dir) => Json(dir.into_iter().map(OnlineEntry::from).collect::<Vec<_>>()).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn page(State(peer): State<Arc<Peer>>) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{user}'s peer</title></head>\
         <body><h1>{user}'s peer</h1><p>This peer is registered with the cloud. Its API is under \
         <code>/api/</code> (login token required).</p></body></html>",
        user = peer.user
    ))
}
