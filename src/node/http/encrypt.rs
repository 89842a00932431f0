//! `POST /encrypt`: a multipart upload (image, owner, viewers, optional cover), forwarded to
//! the other nodes and answered with the one reply the cluster agrees on.

use super::*;

/// Reads the multipart form into a request, or the refusal.
pub(super) async fn read_form(
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

pub(super) async fn post_encrypt(
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
