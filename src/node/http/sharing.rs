//! The phase-2 routes users' peers call: the directory, signed user operations, and the
//! sharing desk's share, grant, query and view (postcard bodies, postcard answers).

use super::*;

/// The status code and JSON error for a store failure.
pub(super) fn store_error(e: crate::Error) -> Response {
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
pub(super) async fn get_directory(State((api, _)): State<AppState>) -> Response {
    let read = api
        .store
        .read(|state| state.directory(crate::sharing::unix_millis()));
    match read.await {
        Ok(directory) => Json(directory).into_response(),
        Err(e) => store_error(e),
    }
}

/// The query of `POST /users/op`.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct OpParams {
    /// With a registration: after recording it, try to reach the registered address and say
    /// whether that worked (`reachable`).
    #[serde(default)]
    probe: bool,
}

/// `POST /users/op`: a signed user operation (JSON [`SignedOp`]); 200 once a majority has it.
/// With `?probe=true` and a registration, the answer also says whether this node reached the
/// registered address (a TCP connection within [`PROBE_WAIT`]): only after the operation was
/// recorded, so only a user's own signed address is ever tried.
///
/// [`PROBE_WAIT`]: crate::sharing::directory::PROBE_WAIT
pub(super) async fn post_user_op(
    State((api, _)): State<AppState>,
    params: std::result::Result<
        axum::extract::Query<OpParams>,
        axum::extract::rejection::QueryRejection,
    >,
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
    let params = match params {
        Ok(axum::extract::Query(params)) => params,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let probe = match (&op.op, params.probe) {
        (crate::sharing::UserOp::Register { addr, .. }, true) => Some(addr.clone()),
        _ => None,
    };
    if let Err(e) = api
        .store
        .write(op, None)
        .await
        .and_then(|r| r.into_result())
    {
        return store_error(e);
    }
    match probe {
        None => Json(serde_json::json!({ "ok": true })).into_response(),
        Some(addr) => Json(serde_json::json!({
            "ok": true,
            "reachable": reachable(&addr).await,
            "node": api.node,
        }))
        .into_response(),
    }
}

/// Whether this node opens a TCP connection to `addr` within [`PROBE_WAIT`] (an address that
/// does not parse is not reachable).
async fn reachable(addr: &str) -> bool {
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            crate::sharing::directory::PROBE_WAIT,
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

/// Decodes a sharing request body (postcard [`WithFile`]).
pub(super) fn with_file(body: &[u8]) -> Result<WithFile> {
    postcard::from_bytes(body).map_err(|e| {
        crate::Error::InvalidInput(format!(
            "expected a signed operation with its file (postcard): {e}"
        ))
    })
}

/// A sharing answer as a postcard body, or the error as JSON.
pub(super) fn postcard_answer<T: serde::Serialize>(answer: Result<T>) -> Response {
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
pub(super) async fn post_share(
    State((api, _)): State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    let request = with_file(&body);
    postcard_answer(match request {
        Ok(request) => api.desk.share(request).await,
        Err(e) => Err(e),
    })
}

/// `POST /grant`: an owner changes a viewer's views; the answer carries the viewer's copy.
pub(super) async fn post_grant(
    State((api, _)): State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    let request = with_file(&body);
    postcard_answer(match request {
        Ok(request) => api.desk.grant(request).await,
        Err(e) => Err(e),
    })
}

/// `POST /query`: a user's signed question about their own records (postcard both ways).
pub(super) async fn post_query(
    State((api, _)): State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    let query = postcard::from_bytes(&body)
        .map_err(|e| crate::Error::InvalidInput(format!("not a query: {e}")));
    postcard_answer(match query {
        Ok(query) => api.desk.query(query).await,
        Err(e) => Err(e),
    })
}

/// `POST /view`: spends one view of a copy through the ledger.
pub(super) async fn post_view(
    State((api, _)): State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    let request = with_file(&body);
    postcard_answer(match request {
        Ok(request) => api.desk.view(request).await,
        Err(e) => Err(e),
    })
}
