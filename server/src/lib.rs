//! The Fluxi HTTP server: configuration, router, middleware, the server-function edge
//! and background jobs.
//! `main.rs` is only the command line around it; integration tests build the same
//! router through [`build_router`].

pub mod audit_export;
pub mod config;
pub mod dev;
pub mod integrations_callback;
pub mod jobs;
pub mod listen;
pub mod middleware;
pub mod server_fns;

use app::ssr::AppState;
use app::{shell, App};
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fluxi_core::db;
use fluxi_core::sessions::DieselSessionStore;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

/// Session cookie name. The `__Host-` prefix makes browsers insist on Secure, Path=/
/// and no Domain, so no sibling subdomain can set or shadow it.
pub const SESSION_COOKIE: &str = "__Host-fluxi_session";

/// Page renders (and server functions) running at once, abandoned ones included; beyond
/// this, "busy, try again" (503). Far above what two cores get through in a request time
/// limit at normal speed, low enough that clients who hang up cannot pile up work.
pub const MAX_RENDERS_IN_FLIGHT: usize = 512;

/// Largest request body accepted. Every form we have fits in a fraction of this.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Context for each request: the shared state and a fresh per-request cache.
pub(crate) fn provide_state(state: AppState) -> impl Fn() + Clone + Send + Sync + 'static {
    move || {
        provide_context(state.clone());
        provide_context(app::ssr::RequestCache::default());
    }
}

/// Renders the app for any path no route or file matched, so people get the styled
/// "Page not found" page with a 404 status.
async fn not_found(State(state): State<AppState>, req: Request<Body>) -> Response {
    let options = state.leptos_options.clone();
    // Rendered whole before sending, like the pages (see `middleware::render_to_completion`).
    let handler = leptos_axum::render_app_async_with_context(provide_state(state), move || shell(options.clone()));
    let mut res = handler(req).await;
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match db::ping(&state.pool).await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// The page routes, learned once per process.
///
/// Leptos learns them by rendering the app, and while it does, it switches resource loading
/// off for the whole process (`SuppressResourceLoad`, a global flag in leptos_server 0.8).
/// A page rendered on any thread in that window waits forever for its data. Generating the
/// list once, before the first router exists, means no page can ever be rendered during
/// generation, however many routers are built (the test suite builds one per test).
fn page_routes() -> Vec<leptos_axum::AxumRouteListing> {
    static ROUTES: std::sync::OnceLock<Vec<leptos_axum::AxumRouteListing>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(App)).clone()
}

/// The text of `/.well-known/security.txt` (RFC 9116): where to report a vulnerability,
/// until when this is current, and where the file lives.
pub fn security_txt(base_url: &str, contact: &str, expires: time::OffsetDateTime) -> String {
    let expires = expires
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    let base = base_url.trim_end_matches('/');
    format!(
        "Contact: {contact}\nExpires: {expires}\nPreferred-Languages: en\nCanonical: {base}/.well-known/security.txt\n"
    )
}

async fn security_txt_file(State(state): State<AppState>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], state.security_txt.clone()).into_response()
}

/// The complete application router with every layer, ready to serve.
pub fn build_router(state: AppState) -> Router {
    let routes = page_routes();
    let site_root = state.leptos_options.site_root.to_string();
    let store = DieselSessionStore::new(state.pool.clone(), state.clock.clone(), state.session_policy);
    let sessions = SessionManagerLayer::new(store)
        .with_name(SESSION_COOKIE)
        .with_secure(true)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_path("/")
        .with_expiry(Expiry::OnSessionEnd);

    // Pages render to the end even when their client hangs up (see
    // `middleware::render_to_completion`: otherwise a worker thread can deadlock). The
    // request time limit answers the client first; a render still running after four of
    // them is stuck and dropped.
    let render_limit = state.request_timeout * 4;
    let renders = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_RENDERS_IN_FLIGHT));
    let render_to_completion = axum::middleware::from_fn(move |req, next| {
        middleware::render_to_completion(renders.clone(), render_limit, req, next)
    });

    let static_files = ServeDir::new(site_root)
        .precompressed_br()
        .precompressed_gzip()
        .not_found_service(axum::routing::any(not_found).with_state(state.clone()).layer(render_to_completion.clone()));

    let leptos_state = state.clone();
    let pages = Router::new()
        .leptos_routes_with_context(&state, routes, provide_state(leptos_state.clone()), move || {
            shell(leptos_state.leptos_options.clone())
        })
        .route_layer(render_to_completion);
    let mut router = Router::new();
    if state.dev_mailbox {
        router = router.route("/dev/mailbox", get(dev::mailbox));
    }
    router
        .route("/healthz", get(healthz))
        .route("/.well-known/security.txt", get(security_txt_file))
        .route("/readyz", get(readyz))
        .route("/api/{*fn_name}", post(server_fns::unknown))
        .route("/w/{slug}/audit/{file}", get(audit_export::export))
        .route("/integrations/callback", get(integrations_callback::callback))
        .merge(pages)
        .fallback_service(static_files)
        // (Pages and server functions get theirs inside `render_to_completion`.)
        .layer(axum::middleware::from_fn(middleware::own_reactive_owner))
        .layer(axum::middleware::from_fn_with_state(state.clone(), server_fns::edge))
        .layer(sessions)
        .layer(axum::middleware::map_response(middleware::secure_session_removal))
        // No request holds a connection forever: one that is stuck (on a database that
        // stopped answering, or a page render that never finishes) is answered "503, try
        // again" instead (inside the security headers, so the 503 carries them too).
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, state.request_timeout))
        .layer(axum::middleware::from_fn(middleware::same_origin_writes))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(middleware::explain_payload_too_large))
        // Outside the body limit, so its 413 carries them too.
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(CompressionLayer::new())
        .with_state(state)
}
