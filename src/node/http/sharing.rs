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

/// `POST /users/op`: a signed user operation (JSON [`SignedOp`]); 200 once a majority has it.
pub(super) async fn post_user_op(
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
