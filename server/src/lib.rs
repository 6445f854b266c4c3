//! The Fluxi HTTP server: configuration, router, middleware and background jobs.
//! `main.rs` is only the command line around it; integration tests build the same
//! router through [`build_router`].

pub mod config;
pub mod mail;
pub mod middleware;

use std::time::Duration;

use app::server::AppState;
use app::{shell, App};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fluxi_core::clock::SharedClock;
use fluxi_core::db::{self, Pool};
use fluxi_core::sessions::{delete_expired_sessions, DieselSessionStore};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::services::ServeDir;
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
fn provide_state(state: AppState) -> impl Fn() + Clone + Send + Sync + 'static {
    move || {
        provide_context(state.clone());
        provide_context(app::server::RequestCache::default());
    }
}

async fn server_fn_handler(State(state): State<AppState>, req: Request<Body>) -> impl IntoResponse {
    leptos_axum::handle_server_fns_with_context(provide_state(state), req).await
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

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Development only: the newest outgoing mails, so invitations can be followed without
/// an SMTP server. Not routed at all in production or when mail is delivered over SMTP
/// (`Config::dev_mailbox`), and even then shown only to a browser on this machine: the
/// page lists invitation links, which let whoever reads them join a workspace.
async fn dev_mailbox(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !is_local_request(peer.ip(), &headers) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(mut conn) = state.pool.get().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response();
    };
    let mails = match fluxi_core::outbox::recent(&mut conn, 50).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "dev mailbox query failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "could not read the outbox").into_response();
        }
    };
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Development mailbox</title></head>\
         <body><h1>Development mailbox</h1><p>Mails Fluxi wrote to its outbox (newest first).</p>",
    );
    for m in mails {
        html.push_str(&format!(
            "<article><h2>{}</h2><p>To: {}</p><pre>{}</pre></article>",
            escape_html(&m.subject),
            escape_html(&m.recipient),
            escape_html(&m.body)
        ));
    }
    html.push_str("</body></html>");
    axum::response::Html(html).into_response()
}

/// A request made on this machine, not relayed: a loopback peer, no proxy headers (a
/// reverse proxy on the same host connects from loopback too, and usually says whom it
/// relays), and a loopback host name (a web page that rebinds its own domain name to
/// 127.0.0.1 still sends that domain as `Host`).
fn is_local_request(peer: std::net::IpAddr, headers: &axum::http::HeaderMap) -> bool {
    let relayed = ["x-forwarded-for", "forwarded", "x-real-ip", "via"].iter().any(|h| headers.contains_key(*h));
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let host_name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let local_host = matches!(host_name.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "[::1]");
    peer.to_canonical().is_loopback() && !relayed && local_host
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
        router = router.route("/dev/mailbox", get(dev_mailbox));
    }
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/{*fn_name}", post(server_fn_handler))
        .merge(pages)
        .fallback_service(static_files)
        .layer(sessions)
        // No request holds a connection forever: one that is stuck (on a database that
        // stopped answering, or a page render that never finishes) is answered "503, try
        // again" instead (inside the security headers, so the 503 carries them too).
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, state.request_timeout))
        .layer(axum::middleware::from_fn(middleware::same_origin_writes))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(middleware::explain_payload_too_large))
        .layer(CompressionLayer::new())
        .with_state(state)
}

/// Brings lagging workspace schemas up to date in the background, every `every`: one
/// whose migration failed at start-up (a lock wait, say) answers 503 only until the next
/// round, and one created by an instance of an older version during a rolling deploy is
/// caught up too. When nothing is pending a round is one query.
pub fn spawn_fleet_catch_up(pool: Pool, concurrency: usize, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await; // the first tick is immediate; start-up has just migrated
        loop {
            tick.tick().await;
            match fluxi_core::tenancy::migrations::migrate_fleet(&pool, concurrency).await {
                Ok(report) => {
                    if report.migrated > 0 {
                        tracing::info!(migrated = report.migrated, "lagging workspace schemas migrated");
                    }
                    if !report.failed.is_empty() {
                        // Each failure was logged with its reason by the runner.
                        tracing::error!(failed = report.failed.len(), "workspace schemas still behind; they answer 503 until migrated");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "fleet catch-up round failed"),
            }
        }
    })
}

/// Deletes expired sessions and sign-in failure counts that no longer matter, and erases
/// the bodies of finished mails that still have them, every `every`, in the background.
pub fn spawn_session_cleanup(
    pool: Pool,
    clock: SharedClock,
    throttle: fluxi_core::accounts::SignInThrottle,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = clock.now();
            cleaned("expired sessions removed", "expired-session cleanup failed", delete_expired_sessions(&pool, now).await);
            let mut conn = match pool.get().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "cleanup round cut short: no database connection");
                    continue;
                }
            };
            cleaned(
                "stale sign-in failure counts removed",
                "sign-in failure cleanup failed",
                fluxi_core::accounts::delete_stale_sign_in_failures(&mut conn, &throttle, now).await,
            );
            cleaned(
                "old workspace creations forgotten",
                "workspace creation log cleanup failed",
                fluxi_core::workspaces::delete_old_workspace_creations(&mut conn, now).await,
            );
            cleaned(
                "bodies of finished mails erased (marked by an older server version)",
                "outbox body cleanup failed",
                fluxi_core::outbox::erase_finished_bodies(&mut conn).await,
            );
        }
    })
}

/// Logs one clean-up step's outcome: how many rows it handled (when any), or why it failed
/// (the next round tries again).
fn cleaned(done: &str, failed: &str, outcome: Result<usize, impl std::fmt::Display>) {
    match outcome {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "{done}"),
        Err(e) => tracing::warn!(error = %e, "{failed}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unrelayed_loopback_requests_are_local() {
        let with_host = |host: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::HOST, host.parse().unwrap());
            h
        };
        let local = with_host("127.0.0.1:3000");
        for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(is_local_request(peer.parse().unwrap(), &local), "{peer}");
        }
        for host in ["localhost", "localhost:3000", "LOCALHOST:3000", "[::1]:3000", "127.0.0.1"] {
            assert!(is_local_request("127.0.0.1".parse().unwrap(), &with_host(host)), "{host}");
        }
        for peer in ["192.0.2.10", "10.0.0.1", "2001:db8::1"] {
            assert!(!is_local_request(peer.parse().unwrap(), &local), "{peer}");
        }
        for header in ["x-forwarded-for", "forwarded", "x-real-ip", "via"] {
            let mut relayed = with_host("127.0.0.1:3000");
            relayed.insert(header, "203.0.113.5".parse().unwrap());
            assert!(!is_local_request("127.0.0.1".parse().unwrap(), &relayed), "{header}");
        }
        // DNS rebinding: a page at evil.example whose name now points at 127.0.0.1.
        for host in ["evil.example", "evil.example:3000", "127.0.0.1.evil.example", ""] {
            assert!(!is_local_request("127.0.0.1".parse().unwrap(), &with_host(host)), "{host:?}");
        }
        assert!(!is_local_request("127.0.0.1".parse().unwrap(), &axum::http::HeaderMap::new()), "no Host");
    }
}
