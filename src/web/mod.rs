//! The two web front ends: each user's gallery (on the peer's HTTP port) and each node's live
//! dashboard (on the node's HTTP port). Both are hand-written HTML, CSS and JavaScript embedded
//! in the binary with `include_str!`: no build step, nothing fetched at run time, no CDN.
//!
//! ```text
//! browser ── GET / ──────────────> gallery.html + gallery.js + web.css + web.js (no token)
//!    │        GET /api/* ?token ─> peer::api (the same JSON API the `peer` CLI calls)
//!    │        GET /api/events ───> server-sent events: the library changed, or a tick
//!    │
//!    └─── GET / on a node ───────> dashboard.html + dashboard.js + web.css + web.js
//!             GET /cluster ──────> this node's /status and every other node's, fetched
//!             GET /directory         server-side with a short timeout (no CORS)
//! ```
//!
//! - [`gallery`]: the gallery's page and assets. Everything private comes from `/api/*`,
//!   which needs the login token the peer printed; the page alone shows nothing private.
//! - [`dashboard`]: the dashboard's page and assets, and the `/cluster` aggregate.
//!
//! Implementation caveats: the dashboard's failure timeline is kept by the page from its polls
//! (a page opened later does not see earlier failures); the gallery re-fetches whole lists on
//! each event rather than applying deltas.

pub mod dashboard;
pub mod gallery;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The style both pages share.
const WEB_CSS: &str = include_str!("assets/web.css");
/// The script both pages share (loaded before each page's own).
const WEB_JS: &str = include_str!("assets/web.js");

/// A page's routes: `/` (its HTML), `script_path` (its script), and the shared `/web.css` and
/// `/web.js`, for the router of the process that serves it.
fn page<S: Clone + Send + Sync + 'static>(
    html: &'static str,
    script_path: &'static str,
    script: &'static str,
) -> Router<S> {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    Router::new()
        .route("/", get(move || async move { asset(HTML, html) }))
        .route(script_path, get(move || async move { asset(JS, script) }))
        .route(
            "/web.css",
            get(|| async { asset("text/css; charset=utf-8", WEB_CSS) }),
        )
        .route("/web.js", get(|| async { asset(JS, WEB_JS) }))
}

/// An embedded asset with its content type (never cached: a new binary serves new assets).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
