//! The edge every server-function response leaves through. Server functions return an
//! [`AppError`] and nothing else; here it becomes the response's status and
//! `Retry-After` ([`AppError::status`], [`AppError::retry_after_seconds`]) for callers that
//! read the answer (the hydrated app, scripts), or — for a plain HTML form post, which
//! leptos_axum redirects back to its page — a flash in the session for the pages that
//! show one (`app::ssr::store_flash`).

use app::error::AppError;
use app::ssr::{accepts_html, store_flash, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use leptos::server_fn::error::SERVER_FN_ERROR_HEADER;
use tower_sessions::Session;

use crate::{provide_state, MAX_BODY_BYTES};

/// Answers a server-function path that no server function has (leptos_axum registers the
/// real ones next to the pages; this is the fallback of `/api/…`).
pub async fn unknown(State(state): State<AppState>, req: Request<Body>) -> Response {
    leptos_axum::handle_server_fns_with_context(provide_state(state), req).await.into_response()
}

/// Every request passes here; server-function calls (`POST /api/…`) get their error
/// answered as described above.
pub async fn edge(req: Request<Body>, next: Next) -> Response {
    if req.method() != Method::POST || !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let plain_form = accepts_html(req.headers());
    let form = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
    let session = req.extensions().get::<Session>().cloned();
    // A plain form's fields may be kept for its flash, so its body is read here first (it
    // is small: the body limit applies).
    let (req, submitted) = if plain_form {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(bytes) => bytes,
            // The body-limit layer's error, for a body that grew past it while being read.
            Err(e) if e.to_string().contains("length limit") => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            Err(_) => return (StatusCode::BAD_REQUEST, "The request body could not be read.").into_response(),
        };
        let submitted: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        (Request::from_parts(parts, Body::from(bytes)), submitted)
    } else {
        (req, Vec::new())
    };
    let res = next.run(req).await;
    if !res.headers().contains_key(SERVER_FN_ERROR_HEADER) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(error) = serde_json::from_slice::<AppError>(&bytes) else {
        tracing::error!(form, "server function error that is not an AppError");
        return Response::from_parts(parts, Body::from(bytes));
    };
    let redirected = parts.headers.contains_key(header::LOCATION);
    if plain_form && redirected {
        if let Some(session) = session {
            store_flash(&session, &form, submitted, error).await;
        }
    } else {
        parts.status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(seconds) = error.retry_after_seconds() {
            parts.headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}
