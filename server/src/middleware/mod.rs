//! Tower/axum layers: cross-site write protection, security headers, error shaping.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Refuses state-changing requests sent by another site. Server functions are plain
/// form posts, which any page on the web can make a browser send; the browser's Fetch
/// Metadata (`Sec-Fetch-Site`) or, failing that, `Origin` tells us who sent it.
/// Requests without either header do not come from a browser, so they cannot carry a
/// victim's cookies by accident.
pub async fn same_origin_writes(req: Request<Body>, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let allowed = if let Some(site) = headers.get("sec-fetch-site") {
        matches!(site.as_bytes(), b"same-origin" | b"none")
    } else if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        !host.is_empty() && origin_host == host
    } else {
        true
    };
    if allowed {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "Cross-site request refused.").into_response()
    }
}

/// Headers every response carries. Pages are never cached: they may show personal data.
pub async fn security_headers(req: Request<Body>, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/pkg/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "strict-transport-security", "max-age=63072000; includeSubDomains");
    // Pages set their own policy, with the response's script nonce
    // (`app::server::set_page_csp`); everything else may run no script at all.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        set(
            h,
            "content-security-policy",
            "script-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        );
    }
    if !is_asset {
        set(h, "cache-control", "no-store");
    }
    h.remove(header::SERVER);
    res
}

/// The body-limit layer answers oversized requests with an empty 413; say what happened.
pub async fn explain_payload_too_large(res: Response) -> Response {
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "The submitted data is too large. Forms accept at most 16 KiB.",
        )
            .into_response();
    }
    res
}
