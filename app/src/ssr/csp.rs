//! The Content-Security-Policy of server-rendered pages.

use axum::http::{header, HeaderValue};
use leptos::prelude::*;
use leptos_axum::ResponseOptions;

/// Content-Security-Policy of a server-rendered page. Scripts run only if they carry this
/// response's nonce — Leptos puts it on its hydration and resource scripts — or are
/// loaded by such a script (`'strict-dynamic'`: the app's JavaScript module);
/// `'wasm-unsafe-eval'` lets that module compile the app's WebAssembly. An injected
/// `<script>` or event-handler attribute does not run. Everything else comes from our own
/// origin only (`default-src 'self'`): no inline style, no outside images, fonts or
/// connections. Other responses get the stricter
/// default of `server::middleware::security_headers` (no scripts at all).
pub fn set_page_csp() {
    let (Some(nonce), Some(res)) = (leptos::nonce::use_nonce(), use_context::<ResponseOptions>()) else {
        return;
    };
    // A plain "Connect" form post is answered with a redirect to the provider, which
    // `form-action` also governs: the configured providers' authorization origins.
    let providers = super::state().map(|s| s.integrations.authorization_origins()).unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'nonce-{nonce}' 'strict-dynamic' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'self'{providers}"
    );
    // The nonce is base64, always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&policy) {
        res.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}
