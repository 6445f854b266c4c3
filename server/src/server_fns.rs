//! The edge every server-function response leaves through. Server functions return an
//! [`AppError`] and nothing else; here it becomes the response's status and
//! `Retry-After` ([`AppError::status`], [`AppError::retry_after_seconds`]) for callers that
//! read the answer (the hydrated app, scripts), or — for a plain HTML form post, which
//! leptos_axum redirects back to its page — a flash in the session for the pages that
//! show one (`app::ssr::store_flash`).

use app::error::{AppError, FieldError};
use app::ssr::{accepts_html, flash_cookie, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use leptos::server_fn::error::SERVER_FN_ERROR_HEADER;

use crate::{provide_state, MAX_BODY_BYTES};

/// Answers a server-function path that no server function has (leptos_axum registers the
/// real ones next to the pages; this is the fallback of `/api/…`).
pub async fn unknown(State(state): State<AppState>, req: Request<Body>) -> Response {
    leptos_axum::handle_server_fns_with_context(provide_state(state), req).await.into_response()
}

/// Every request passes here; server-function calls (`POST /api/…`) get their error
/// answered as described above.
pub async fn edge(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    if req.method() != Method::POST || !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let plain_form = accepts_html(req.headers());
    let form = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
    // The fields are read here first (they are small: the body limit applies): a plain
    // form's may be kept for its flash, and no field of any form may carry control or
    // disguising characters.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        // The body-limit layer's error, for a body that grew past it while being read.
        Err(e) if e.to_string().contains("length limit") => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Err(_) => return (StatusCode::BAD_REQUEST, "The request body could not be read.").into_response(),
    };
    let mut submitted: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let req = Request::from_parts(parts, Body::from(bytes));
    let res = match refused_characters(&submitted) {
        Some(error) => {
            // Not shown back either.
            submitted.retain(|(name, value)| !has_disallowed(name, value));
            refusal(&req, plain_form, &error)
        }
        None => next.run(req).await,
    };
    let submitted = if plain_form { submitted } else { Vec::new() };
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
        if let Some(cookie) = flash_cookie(state.pseudonyms.current(), &form, submitted, error, state.clock.now()) {
            parts.headers.append(header::SET_COOKIE, cookie);
        }
    } else {
        parts.status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Some(seconds) = error.retry_after_seconds() {
            parts.headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Fields whose value may span lines (the rest are single-line inputs).
const MULTI_LINE_FIELDS: &[&str] = &["body"];

/// Passwords are exempt: they are only ever hashed, never shown or stored, and an
/// existing password with such a character must keep working.
fn has_disallowed(name: &str, value: &str) -> bool {
    !name.contains("password") && fluxi_core::text::disallowed_char(value, MULTI_LINE_FIELDS.contains(&name)).is_some()
}

/// The error for fields holding characters no field accepts
/// ([`fluxi_core::text::disallowed_char`]), if any do.
fn refused_characters(submitted: &[(String, String)]) -> Option<AppError> {
    let errors: Vec<FieldError> = submitted
        .iter()
        .filter(|(name, value)| has_disallowed(name, value))
        .map(|(name, _)| FieldError {
            field: field_name_to_show(name),
            message: "Remove the control or invisible characters (such as zero-width spaces or text-direction marks) \
                      from this field."
                .into(),
        })
        .collect();
    (!errors.is_empty()).then_some(AppError::Invalid(errors))
}

/// A submitted field's name as an error may name it: our fields are short snake_case
/// names; anything else (a client's garbage) is not echoed back.
fn field_name_to_show(name: &str) -> String {
    let ours = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ours {
        name.to_string()
    } else {
        "request".to_string()
    }
}

/// The response a server function gives for `error`, without running it: back to the
/// form's page for a plain form post (as leptos_axum does), else the error itself.
fn refusal(req: &Request<Body>, plain_form: bool, error: &AppError) -> Response {
    let body = serde_json::to_string(error).unwrap_or_default();
    let mut res =
        (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(path) = HeaderValue::from_str(req.uri().path()) {
        res.headers_mut().insert(SERVER_FN_ERROR_HEADER, path);
    }
    let referer = req.headers().get(header::REFERER).cloned();
    if let (true, Some(referer)) = (plain_form, referer) {
        *res.status_mut() = StatusCode::FOUND;
        res.headers_mut().insert(header::LOCATION, referer);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_field_names_like_ours_are_echoed() {
        assert_eq!(field_name_to_show("display_name"), "display_name");
        for garbage in ["", "Email\u{0}", "<script>", "a b", &"x".repeat(65)] {
            assert_eq!(field_name_to_show(garbage), "request", "{garbage:?}");
        }
    }
}
