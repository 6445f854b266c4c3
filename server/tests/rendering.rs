//! Page rendering: while other routers are being built in the same process, and the
//! security headers every page carries.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Options, TestApp};
use reqwest::StatusCode;

/// Leptos learns the routes by rendering the app once, and while it does, it switches off
/// resource loading for the whole process (a global flag in leptos_server). A page rendered
/// on any thread during that window waited forever for its data. The test suite builds many
/// routers (one per test app) while other tests load pages, so this showed up as rare
/// hanging pages. Here a thread builds routers non-stop while pages are loaded: each load
/// must complete, long before the (shortened) request time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_while_other_routers_are_built() {
    let app = TestApp::spawn_with(Options { request_timeout: Duration::from_secs(10), ..Default::default() }).await;
    let (mut person, _) = app.signed_up("Renderer").await;
    let mut visitor = app.client();

    let stop = Arc::new(AtomicBool::new(false));
    let builder = std::thread::spawn({
        let stop = stop.clone();
        let state = app.state.clone();
        let runtime = tokio::runtime::Handle::current();
        move || {
            let _inside = runtime.enter();
            let mut built = 0u32;
            while !stop.load(Ordering::Relaxed) {
                drop(server::build_router(state.clone()));
                built += 1;
            }
            built
        }
    });

    for _ in 0..10 {
        let signed_in = person.get("/account").await;
        assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
        assert!(signed_in.body.contains("Renderer"), "{}", signed_in.body);
        let signed_out = visitor.get("/account").await;
        assert!(signed_out.status.is_redirection() || signed_out.status == StatusCode::OK, "{}", signed_out.status);
        assert!(!signed_out.body.contains("Renderer"));
    }
    stop.store(true, Ordering::Relaxed);
    assert!(builder.join().unwrap() > 0, "no router was built while the pages loaded");
}

fn page_nonce(reply: &common::Reply) -> String {
    let policy = reply.headers.get("content-security-policy").expect("a CSP").to_str().unwrap().to_string();
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no script nonce in {policy}"))
        .to_string();
    assert!(policy.contains("'strict-dynamic'") && policy.contains("'wasm-unsafe-eval'"), "{policy}");
    assert!(policy.contains("object-src 'none'") && policy.contains("base-uri 'none'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    nonce
}

/// Scripts on a page run only with the response's own nonce: every script Leptos wrote
/// carries it, a new one is drawn for every response, and responses that are not pages
/// allow no script at all.
#[tokio::test]
async fn pages_allow_only_their_own_nonced_scripts() {
    let app = TestApp::spawn().await;
    let (mut person, _) = app.signed_up("Noncer").await;
    let mut visitor = app.client();

    let mut seen = Vec::new();
    for reply in [visitor.get("/login").await, visitor.get("/login").await, person.get("/account").await, visitor.get("/no/such/page").await] {
        assert!(reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND, "{}", reply.status);
        let nonce = page_nonce(&reply);
        assert!(nonce.len() >= 16, "a nonce of 128 bits or more: {nonce}");
        let scripts: Vec<&str> = reply.body.match_indices("<script").map(|(i, _)| &reply.body[i..]).collect();
        assert!(!scripts.is_empty(), "the page has its hydration scripts");
        for script in scripts {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains(&format!("nonce=\"{nonce}\"")), "script without the response's nonce: {tag}");
        }
        for (name, value) in [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"), ("cache-control", "no-store")] {
            assert_eq!(reply.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
        }
        assert!(!seen.contains(&nonce), "nonce reused across responses");
        seen.push(nonce);
    }

    for reply in [person.call("current_user", &[]).await, visitor.get("/healthz").await] {
        assert!(reply.status.is_success(), "{}", reply.status);
        let policy = reply.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(policy.contains("script-src 'none'"), "non-page responses run no script: {policy}");
    }
}
