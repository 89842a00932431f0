//! The peer's HTTP port: the user's local API (what the `peer` subcommands and the gallery
//! call) behind the login token, and the gallery at `/` ([`crate::web::gallery`]).
//!
//! The gallery's extra routes are API routes like the others: `GET /api/events` (server-sent
//! events: `library` on every library save, `tick` every [`TICK`] for the online list),
//! `GET /api/file?kind=...` (an image from the folder by kind and id, never by path) and
//! `POST /api/upload?name=NAME` (a photo's bytes, shared as `POST /api/share` shares a path).
//!
//! Every `/api/...` route needs the token, as `Authorization: Bearer TOKEN` or `?token=TOKEN`;
//! without it the answer is 401 and nothing private. `POST /p2p` is for other peers: each
//! message is signed by its sender ([`super::p2p`]).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::actions::{Peer, ShareArgs};
use super::p2p::{Msg, SignedMsg, MAX_MESSAGE_BYTES};
use crate::sharing::{Change, DirectoryEntry, SharedImage};
use crate::Error;

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
        .route("/api/whoami", get(whoami))
        .route("/api/online", get(online))
        .route("/api/share", post(share))
        .route("/api/previews", post(previews))
        .route("/api/request", post(request))
        .route("/api/requests", get(requests))
        .route("/api/approve", post(approve))
        .route("/api/deny", post(deny))
        .route("/api/images", get(images))
        .route("/api/receipts", get(receipts))
        .route("/api/view", post(view))
        .route("/api/allow", post(allow))
        .route("/api/quota", post(quota))
        .route("/api/revoke", post(revoke))
        .route("/api/rebuild", post(rebuild))
        .route("/api/events", get(events))
        .route("/api/file", get(file))
        .route("/api/upload", post(upload))
        .route("/p2p", post(p2p))
        .merge(crate::web::gallery::routes());
    let app = crate::node::http::limit_bodies(app, MAX_MESSAGE_BYTES).with_state(peer);
    axum::serve(listener, app).await?;
    Ok(())
}

/// A result as the local API answers it: JSON, or a JSON error with its status.
fn json<T: Serialize>(result: crate::Result<T>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => error_of(e),
    }
}

/// The status and JSON error of a library error.
fn error_of(e: Error) -> Response {
    let status = match &e {
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Unavailable(_) | Error::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Io(_) | Error::Config(_) | Error::Storage(_) | Error::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Error::Protocol(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    let message = match e {
        Error::Unauthorized(why) | Error::Unavailable(why) | Error::InvalidInput(why) => why,
        e => e.to_string(),
    };
    error(status, message)
}

/// A JSON body, or a 400 that says what was expected.
type Body<T> = std::result::Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(body: Body<T>) -> crate::Result<T> {
    body.map(|Json(b)| b)
        .map_err(|e| Error::InvalidInput(e.body_text()))
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
    let dir = peer.cloud.directory().await;
    json(dir.map(|d| d.into_iter().map(OnlineEntry::from).collect::<Vec<_>>()))
}

async fn share(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<ShareArgs>) -> Response {
    json(match body(args) {
        Ok(args) => peer.share(args).await,
        Err(e) => Err(e),
    })
}

#[derive(Deserialize)]
struct PreviewsArgs {
    owner: String,
    out: Option<PathBuf>,
}

async fn previews(
    State(peer): State<Arc<Peer>>,
    _: LoggedIn,
    args: Body<PreviewsArgs>,
) -> Response {
    json(match body(args) {
        Ok(a) => peer.previews(&a.owner, a.out).await,
        Err(e) => Err(e),
    })
}

#[derive(Deserialize)]
struct RequestArgs {
    owner: String,
    image: String,
    views: u32,
}

async fn request(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<RequestArgs>) -> Response {
    json(match body(args) {
        Ok(a) => peer.request(&a.owner, &a.image, a.views).await,
        Err(e) => Err(e),
    })
}

async fn requests(State(peer): State<Arc<Peer>>, _: LoggedIn) -> Response {
    Json(peer.requests()).into_response()
}

#[derive(Deserialize)]
struct DecideArgs {
    id: String,
    views: Option<u32>,
}

async fn approve(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<DecideArgs>) -> Response {
    json(match body(args) {
        Ok(a) => peer.approve(&a.id, a.views).await,
        Err(e) => Err(e),
    })
}

async fn deny(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<DecideArgs>) -> Response {
    json(match body(args) {
        Ok(a) => peer.deny(&a.id).await,
        Err(e) => Err(e),
    })
}

async fn images(State(peer): State<Arc<Peer>>, _: LoggedIn) -> Response {
    Json(peer.images()).into_response()
}

async fn receipts(State(peer): State<Arc<Peer>>, _: LoggedIn) -> Response {
    json(peer.receipts().await)
}

/// The body of `allow`, `quota` and `revoke` (`views` unused by `revoke`).
#[derive(Deserialize)]
struct ChangeArgs {
    image: String,
    viewer: String,
    #[serde(default)]
    views: u32,
}

async fn change(peer: &Peer, args: Body<ChangeArgs>, change: fn(u32) -> Change) -> Response {
    json(match body(args) {
        Ok(a) => peer.change(&a.image, &a.viewer, change(a.views)).await,
        Err(e) => Err(e),
    })
}

async fn allow(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<ChangeArgs>) -> Response {
    change(&peer, args, Change::Add).await
}

async fn quota(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<ChangeArgs>) -> Response {
    change(&peer, args, Change::Set).await
}

async fn revoke(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<ChangeArgs>) -> Response {
    change(&peer, args, |_| Change::Revoke).await
}

async fn rebuild(State(peer): State<Arc<Peer>>, _: LoggedIn) -> Response {
    json(peer.rebuild().await)
}

#[derive(Deserialize)]
struct ViewArgs {
    image: String,
    out: Option<PathBuf>,
}

async fn view(State(peer): State<Arc<Peer>>, _: LoggedIn, args: Body<ViewArgs>) -> Response {
    json(match body(args) {
        Ok(a) => peer.view(&a.image, a.out).await,
        Err(e) => Err(e),
    })
}

/// `POST /p2p`: a signed message from another peer (postcard [`SignedMsg`]); the answer is
/// postcard too, or a JSON error.
async fn p2p(State(peer): State<Arc<Peer>>, bytes: axum::body::Bytes) -> Response {
    let envelope: SignedMsg = match postcard::from_bytes(&bytes) {
        Ok(envelope) => envelope,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected a signed peer message (postcard): {e}"),
            )
        }
    };
    if let Err(e) = peer.inbox.accept(&envelope, &peer.directory).await {
        return error_of(e);
    }
    let from = envelope.from.as_str();
    let answer = match envelope.msg {
        Msg::Previews => peer.own_previews().map(|p| postcard::to_stdvec(&p)),
        Msg::Request { id, image, views } => peer
            .take_request(from, &id, &image, views)
            .map(|a| postcard::to_stdvec(&a)),
        Msg::Copy {
            request,
            image,
            name,
            views_left,
            version,
            copy,
        } => match peer
            .directory
            .shared(from, &image)
            .await
            .map(|found| found.is_some_and(|s| s.id == image))
        {
            // Only an image's owner sends copies of it: anyone else's would replace the
            // viewer's copy with whatever they liked.
            Ok(false) => Err(Error::Unauthorized(format!(
                "{from} shares no image {image}: a copy comes from the image's owner"
            ))),
            Err(e) => Err(e),
            Ok(true) => peer.take_copy(
                from,
                request.as_deref(),
                &image,
                &name,
                views_left,
                version,
                &copy,
            ),
        }
        .map(|()| postcard::to_stdvec(&())),
        Msg::Denied { request } => peer
            .take_denied(from, &request)
            .map(|()| postcard::to_stdvec(&())),
    };
    match answer {
        Ok(Ok(bytes)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error_of(e),
    }
}

/// How often `/api/events` sends a `tick` (the page re-reads who is online).
pub const TICK: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /api/events`: `library` each time the library is saved, `tick` every [`TICK`].
async fn events(State(peer): State<Arc<Peer>>, _: LoggedIn) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let changes = peer.library.changes();
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((changes, every), |(mut changes, mut every)| async {
        let event = tokio::select! {
            changed = changes.changed() => match changed {
                Ok(()) => Event::default().event("library").data(changes.borrow_and_update().to_string()),
                Err(_) => return None,
            },
            _ = every.tick() => Event::default().event("tick").data(""),
        };
        Some((Ok::<_, std::convert::Infallible>(event), (changes, every)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
struct FileArgs {
    /// `preview` (an own image's, by `id`), `peer-preview` (a file that `previews` saved from
    /// `owner`) or `view` (a file that `view` wrote).
    kind: String,
    id: Option<String>,
    owner: Option<String>,
    file: Option<String>,
}

/// `GET /api/file`: an image from the folder, named by kind and id or file name (a plain
/// name inside the folder that kind means, never a path).
async fn file(
    State(peer): State<Arc<Peer>>,
    _: LoggedIn,
    Query(args): Query<FileArgs>,
) -> Response {
    let lib = &peer.library;
    let plain = |name: &Option<String>, what: &str| match name {
        Some(n) if !n.is_empty() && super::library::file_safe(n) == *n => Ok(n.clone()),
        _ => Err(format!("give {what} as a plain file name")),
    };
    let path = match args.kind.as_str() {
        "preview" => {
            let id = args.id.unwrap_or_default();
            match lib.records().own.iter().any(|o| o.id == id) {
                true => Ok(lib.preview_file(&id)),
                false => Err(format!("no own image {id:?}")),
            }
        }
        "peer-preview" => plain(&args.owner, "owner").and_then(|owner| {
            plain(&args.file, "file").map(|f| lib.root().join("previews").join(owner).join(f))
        }),
        "view" => plain(&args.file, "file").map(|f| lib.root().join("views").join(f)),
        "copy-preview" => {
            let id = args.id.unwrap_or_default();
            match lib.records().copies.into_iter().find(|c| c.id == id) {
                Some(copy) => copy_preview(&peer, &copy.owner, &id).await,
                None => Err(format!("no copy {id:?}")),
            }
        }
        other => Err(format!(
            "unknown kind {other:?} (expected preview, peer-preview, copy-preview or view)"
        )),
    };
    let path = match path {
        Ok(path) => path,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(_) => return error(StatusCode::NOT_FOUND, "no such file in the folder"),
    };
    let kind = match crate::codec::stego::image_extension(&bytes) {
        Some("jpg") => "image/jpeg".to_string(),
        Some(ext) => format!("image/{ext}"),
        None => "application/octet-stream".to_string(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response()
}

/// The preview of a received copy: the owner's preview as `previews` saved it, fetched
/// from the owner's peer now if it was never saved (a copy that came by mail or a rebuild).
async fn copy_preview(peer: &Peer, owner: &str, id: &str) -> Result<PathBuf, String> {
    if let Some(path) = peer.library.peer_preview(owner, id) {
        return Ok(path);
    }
    if let Err(e) = peer.previews(owner, None).await {
        return Err(format!(
            "no preview of this copy here, and {owner}'s peer did not give one: {e}"
        ));
    }
    peer.library
        .peer_preview(owner, id)
        .ok_or_else(|| format!("{owner} no longer previews this image"))
}

#[derive(Deserialize)]
struct UploadArgs {
    name: Option<String>,
}

/// `POST /api/upload?name=NAME`: the photo's bytes as the body; shared like `POST /api/share`.
async fn upload(
    State(peer): State<Arc<Peer>>,
    _: LoggedIn,
    Query(args): Query<UploadArgs>,
    bytes: axum::body::Bytes,
) -> Response {
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be the photo's bytes",
        );
    }
    let dir = peer.library.root().join("uploads");
    let path = dir.join(format!("{}.upload", hex::encode(rand::random::<[u8; 8]>())));
    let written = tokio::fs::create_dir_all(&dir)
        .await
        .and(tokio::fs::write(&path, &bytes).await);
    if let Err(e) = written {
        return error_of(e.into());
    }
    let name = args.name.filter(|n| !n.trim().is_empty());
    let shared = peer
        .share(ShareArgs {
            path: path.clone(),
            name: Some(name.unwrap_or_else(|| "photo".into())),
            cover: None,
        })
        .await;
    let _ = tokio::fs::remove_file(&path).await;
    json(shared)
}
