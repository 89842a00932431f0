//! The peer's HTTP port: the user's local API (what the `peer` subcommands call) behind the
//! login token, and the page at `/`.
//!
//! Every `/api/...` route needs the token, as `Authorization: Bearer TOKEN` or `?token=TOKEN`;
//! without it the answer is 401 and nothing private.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
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

/// Proof that a request carries the login token: a handler that takes it answers only the
/// user (else 401 before the handler runs).
struct LoggedIn;

impl FromRequestParts<Arc<Peer>> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, peer: &Arc<Peer>) -> Result<Self, Response> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let query = Query::<TokenQuery>::try_from_uri(&parts.uri).ok();
        let given = bearer
            .map(str::to_string)
            .or_else(|| query.and_then(|q| q.0.token))
            .unwrap_or_default();
        // Compared as digests, in time independent of where they differ.
        let (a, b) = (Sha256::digest(given), Sha256::digest(&peer.token));
        if a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
        {
            Ok(LoggedIn)
        } else {
            Err(error(
                StatusCode::UNAUTHORIZED,
                "this needs the peer's login token (the URL the peer printed when it started)",
            ))
        }
    }
}

async fn whoami(State(peer): State<Arc<Peer>>, _: LoggedIn) -> Response {
    Json(serde_json::json!({ "user": peer.user })).into_response()
}

async fn online(State(peer): State<Arc<Peer>>, _: LoggedIn) -> Response {
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
