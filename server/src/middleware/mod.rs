//! Tower/axum layers: cross-site write protection, security headers, error shaping.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

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

/// Gives each request an id of ours (whatever the client sent is ignored): it is stored
/// with the request's audit events and returned in `X-Request-Id`.
pub async fn request_id(mut req: Request<Body>, next: Next) -> Response {
    let id = uuid::Uuid::new_v4();
    req.extensions_mut().insert(app::ssr::RequestId(id));
    let mut res = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        res.headers_mut().insert("x-request-id", value);
    }
    res
}

/// Headers every response carries. Pages are never cached: they may show personal data;
/// site assets are revalidated on every use.
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
    // (`app::ssr::set_page_csp`); everything else may run no script at all.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        set(
            h,
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'self'",
        );
    }
    // The site's JS, WASM and CSS keep their names from one release to the next, so a
    // browser must check with us before reusing its copy (a 304 when unchanged): code cached
    // across a deploy would misread the new pages' hydration data.
    let asset_found = is_asset && (res.status().is_success() || res.status() == axum::http::StatusCode::NOT_MODIFIED);
    let h = res.headers_mut();
    set(h, "cache-control", if asset_found { "no-cache" } else { "no-store" });
    h.remove(header::SERVER);
    res
}

/// Runs the rest of the request (a page render, or a server function: Leptos registers
/// both on the page router) in a task of its own, response body included, so that it
/// always finishes — even when the client hangs up: dropping the request then only drops
/// this task's handle.
///
/// Why: Leptos 0.8 deadlocks a worker thread for good when a page's reactive owner tree is
/// torn down on one thread while a `<Suspense>` is still walking that tree on another (it
/// checks its children for pending loads in a task of its own). reactive_graph 0.2's
/// `with_context` keeps a read lock on the current owner while it drops its reference to
/// an ancestor; if that was the last one, the ancestor's cleanup waits for the write lock
/// of the very owner this thread is reading. Dropping the request future (or its response
/// body) mid-render is what tears the tree down early, so without this a client that hung
/// up at the wrong moment stopped one of the server's worker threads (reproduced with a
/// burst of reset connections; see `clients_hanging_up_mid_page_leave_every_worker_running`
/// in server/tests/integration/rendering.rs, and docs/known-issues.md). Here the tree is torn down, at
/// the end of the body, only after every `<Suspense>` has resolved.
///
/// The task polls the request under a reactive owner of its own (see
/// `own_reactive_owner`).
///
/// Two limits keep abandoned work bounded: at most `renders.available_permits()` run at
/// once (more get "busy, try again", like a full database pool), and one that is still
/// running after `limit` (several request time limits: something is stuck) is dropped and
/// logged.
pub async fn render_to_completion(
    renders: Arc<Semaphore>,
    limit: Duration,
    req: Request<Body>,
    next: Next,
) -> Response {
    let Ok(permit) = renders.try_acquire_owned() else {
        // At most one line per second, however many requests are refused: a flood of
        // hang-ups must not flood the log too.
        static LAST_LOGGED_SECOND: AtomicU64 = AtomicU64::new(0);
        let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if LAST_LOGGED_SECOND.swap(second, Ordering::Relaxed) != second {
            tracing::warn!("too many page renders in flight: answering 503");
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "The server is busy. Please try again in a moment.").into_response();
    };
    let render = tokio::spawn(async move {
        let _permit = permit;
        let work = async {
            let (parts, body) = next.run(req).await.into_parts();
            // Pages are rendered whole before they are sent (SSR mode Async), so buffering
            // costs one copy; it keeps the end of the render, and the owner's cleanup, in
            // this task too.
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
                Err(e) => {
                    tracing::error!(error = %e, "page body failed");
                    (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side.").into_response()
                }
            }
        };
        match tokio::time::timeout(limit, under_own_owner(work)).await {
            Ok(res) => res,
            Err(_) => {
                tracing::error!(
                    limit_seconds = limit.as_secs(),
                    "page render abandoned: still running after the limit"
                );
                (StatusCode::SERVICE_UNAVAILABLE, "The page took too long. Please try again.").into_response()
            }
        }
    });
    match render.await {
        Ok(res) => res,
        Err(e) => {
            // A panic while rendering: the task caught it; answer without details.
            tracing::error!(panic = e.is_panic(), "page render failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side.").into_response()
        }
    }
}

/// Runs a request under an empty reactive owner of its own.
///
/// Leptos keeps the current reactive owner in a thread-local: a page render makes its root
/// owner current (`Owner::new_root`) and leaves it so while the render is in flight, and a
/// server function's owner becomes a child of whatever is current. Any other request polled
/// on that thread meanwhile would find that render's contexts, the per-request memo of the
/// signed-in person among them, and act as someone else (tested by
/// `a_plain_handler_never_sees_the_person_of_a_page_rendered_meanwhile`). Under this owner,
/// `use_context` finds only what the request itself provided.
///
/// Page renders and server functions get theirs inside `render_to_completion`'s task,
/// where they are polled.
pub async fn own_reactive_owner(req: Request<Body>, next: Next) -> Response {
    under_own_owner(next.run(req)).await
}

/// `work`, polled under a new, empty root owner (made current at every poll).
fn under_own_owner<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    use leptos::reactive::computed::ScopedFuture;
    use leptos::reactive::owner::Owner;
    let owner = Owner::new_root(None);
    owner.with(|| ScopedFuture::new_untracked(work))
}

/// tower-sessions removes the session cookie with only its name and path, and browsers
/// ignore a `__Host-` cookie without `Secure`: the emptied cookie must carry the same
/// attributes as the one it replaces, or the browser keeps the old one.
pub async fn secure_session_removal(mut res: Response) -> Response {
    let prefix = format!("{}=", crate::SESSION_COOKIE);
    let fixed: Vec<HeaderValue> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| match v.to_str() {
            Ok(text) if text.starts_with(&prefix) && !text.to_ascii_lowercase().contains("; secure") => {
                HeaderValue::from_str(&format!("{text}; Secure; HttpOnly; SameSite=Lax")).unwrap_or_else(|_| v.clone())
            }
            _ => v.clone(),
        })
        .collect();
    let headers = res.headers_mut();
    headers.remove(header::SET_COOKIE);
    for v in fixed {
        headers.append(header::SET_COOKIE, v);
    }
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

#[cfg(test)]
mod tests {
    use super::render_to_completion;
    use axum::middleware::{from_fn, Next};
    use axum::routing::get;
    use axum::Router;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::Notify;

    /// Sets its flag when dropped before being disarmed: "this future was cancelled".
    struct CancelFlag(Arc<AtomicBool>, bool);
    impl Drop for CancelFlag {
        fn drop(&mut self) {
            if !self.1 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }

    #[derive(Default)]
    struct Probe {
        started: Notify,
        release: Notify,
        request_cancelled: Arc<AtomicBool>,
        handler_cancelled: Arc<AtomicBool>,
        handler_finished: AtomicBool,
    }

    async fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let since = std::time::Instant::now();
        while !condition() {
            assert!(since.elapsed() < Duration::from_secs(10), "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Serves a handler that waits to be released (with or without `render_to_completion`
    /// around it), sends it a request, hangs up while it waits, releases it once the server
    /// has dropped the request, and returns what was observed.
    async fn hang_up_on_a_slow_handler(with_layer: bool) -> Arc<Probe> {
        let probe = Arc::new(Probe::default());
        let handler = {
            let probe = probe.clone();
            move || async move {
                let mut cancelled = CancelFlag(probe.handler_cancelled.clone(), false);
                probe.started.notify_one();
                probe.release.notified().await;
                probe.handler_finished.store(true, Ordering::SeqCst);
                cancelled.1 = true;
                "done"
            }
        };
        let mut router = Router::new().route("/page", get(handler));
        if with_layer {
            let renders = Arc::new(tokio::sync::Semaphore::new(8));
            router = router.route_layer(from_fn(move |req, next| {
                render_to_completion(renders.clone(), Duration::from_secs(30), req, next)
            }));
        }
        // Outermost, like the server's own layers: sees the request dropped when the client leaves.
        let request_cancelled = probe.request_cancelled.clone();
        let router = router.layer(from_fn(move |req, next: Next| {
            let flag = request_cancelled.clone();
            async move {
                let mut cancelled = CancelFlag(flag, false);
                let res = next.run(req).await;
                cancelled.1 = true;
                res
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET /page HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        probe.started.notified().await;
        drop(stream);
        wait_until("the server dropped the request", || probe.request_cancelled.load(Ordering::SeqCst)).await;
        probe.release.notify_one();
        probe
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_render_goes_on_after_its_client_hangs_up() {
        let probe = hang_up_on_a_slow_handler(true).await;
        wait_until("the handler finished", || probe.handler_finished.load(Ordering::SeqCst)).await;
        assert!(!probe.handler_cancelled.load(Ordering::SeqCst));
    }

    /// Abandoned renders cannot pile up: beyond the limit, requests are answered "busy" at
    /// once; when a render finishes its slot is free again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renders_beyond_the_limit_are_answered_busy() {
        let probe = Arc::new(Probe::default());
        let handler = {
            let probe = probe.clone();
            move || async move {
                probe.started.notify_one();
                probe.release.notified().await;
                "done"
            }
        };
        let renders = Arc::new(tokio::sync::Semaphore::new(1));
        let router = Router::new().route("/page", get(handler)).route_layer(from_fn(move |req, next| {
            render_to_completion(renders.clone(), Duration::from_secs(30), req, next)
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/page", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let http = reqwest::Client::new();
        let first = tokio::spawn(http.get(&url).send());
        probe.started.notified().await;
        let busy = http.get(&url).send().await.unwrap();
        assert_eq!(busy.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.text().await.unwrap().contains("busy"));
        probe.release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().text().await.unwrap(), "done");
        let again = tokio::spawn(http.get(&url).send());
        probe.started.notified().await;
        probe.release.notify_one();
        assert_eq!(again.await.unwrap().unwrap().status(), reqwest::StatusCode::OK);
    }

    /// The control: without the layer, the handler is cancelled with the request (which
    /// is what tore a page's reactive tree down mid-render).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_it_the_handler_is_cancelled_with_the_request() {
        let probe = hang_up_on_a_slow_handler(false).await;
        wait_until("the handler was cancelled", || probe.handler_cancelled.load(Ordering::SeqCst)).await;
        assert!(!probe.handler_finished.load(Ordering::SeqCst));
    }

    /// A context provided by some other request's owner, left current on this thread.
    #[derive(Clone)]
    struct Foreign;

    /// Whether a handler sees a foreign owner that another task made current on its
    /// thread between two of its polls (as a page render in flight does).
    async fn sees_foreign_context(router: Router<()>) -> bool {
        use tower::ServiceExt;
        let req = axum::http::Request::builder().uri("/").body(axum::body::Body::empty()).unwrap();
        let res = router.oneshot(req).await.unwrap();
        let body = axum::body::to_bytes(res.into_body(), 64).await.unwrap();
        body.as_ref() == b"true"
    }

    async fn looks_for_a_foreign_context() -> String {
        use leptos::prelude::{provide_context, use_context};
        use leptos::reactive::owner::Owner;
        let (set, was_set) = tokio::sync::oneshot::channel();
        let (done, until_done) = tokio::sync::oneshot::channel::<()>();
        // `#[tokio::test]` has one thread: this task runs on the handler's.
        tokio::spawn(async move {
            let foreign = Owner::new_root(None);
            foreign.with(|| provide_context(Foreign));
            let _ = set.send(());
            let _ = until_done.await;
            drop(foreign);
        });
        was_set.await.unwrap();
        let seen = use_context::<Foreign>().is_some();
        let _ = done.send(());
        seen.to_string()
    }

    #[tokio::test]
    async fn a_request_under_its_own_owner_sees_no_other_requests_contexts() {
        let bare = Router::new().route("/", get(looks_for_a_foreign_context));
        assert!(sees_foreign_context(bare.clone()).await, "without an owner of its own it is seen (the test can fail)");
        let plain = bare.clone().layer(from_fn(super::own_reactive_owner));
        assert!(!sees_foreign_context(plain).await, "a plain route");
        let renders = Arc::new(tokio::sync::Semaphore::new(8));
        let page = bare.route_layer(from_fn(move |req, next: Next| {
            render_to_completion(renders.clone(), Duration::from_secs(10), req, next)
        }));
        assert!(!sees_foreign_context(page).await, "a page or server function, in its own task");
    }
}
