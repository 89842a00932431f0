//! The gallery's page: `/` on the peer's HTTP port, with its script and style. The page loads
//! without the token and shows only how to log in; with `?token=...` (the URL the peer
//! printed) its script calls the peer's local API (`/api/*`) and follows `/api/events`.

use axum::Router;

const HTML: &str = include_str!("assets/gallery.html");
const JS: &str = include_str!("assets/gallery.js");

/// The page's routes (`/`, `/gallery.js`, `/web.css`, `/web.js`), for the peer's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    super::page(HTML, "/gallery.js", JS)
}
