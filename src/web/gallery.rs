//! The gallery's page: `/` on the peer's HTTP port, with its script and style. The page loads
//! without the token and shows only how to log in; with `?token=...` (the URL the peer
//! printed) its script calls the peer's local API (`/api/*`) and follows `/api/events`.

use axum::routing::get;
use axum::Router;

use super::{asset, web_css};

const HTML: &str = include_str!("assets/gallery.html");
const JS: &str = include_str!("assets/gallery.js");

/// The page's routes (`/`, `/gallery.js`, `/web.css`), for the peer's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", HTML) }),
        )
        .route(
            "/gallery.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route("/web.css", get(web_css))
}
