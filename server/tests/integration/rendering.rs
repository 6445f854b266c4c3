//! Page rendering: while other routers are being built in the same process, and the
//! security headers every page carries.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, Options, TestApp};
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
    // Everything besides scripts comes from our origin only.
    for directive in ["default-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'"] {
        assert!(policy.contains(directive), "{directive} missing from {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    nonce
}

/// Scripts on a page run only with the response's own nonce: every script Leptos wrote
/// carries it, a new one is drawn for every response, and responses that are not pages
/// allow no script at all.
/// Site assets keep their names across releases, so browsers must revalidate them (a cheap
/// 304 when unchanged) instead of running last release's code against this release's pages;
/// an unknown asset path is a page like any other, never stored.
#[tokio::test]
async fn site_assets_are_revalidated_on_every_use() {
    let app = TestApp::spawn().await;
    let mut visitor = app.client();
    let page = visitor.get("/login").await.body;
    let start = page.find("/pkg/").expect("the page loads its code from /pkg/");
    let path: String = page[start..].chars().take_while(|c| !matches!(c, '"' | '\'' | ' ' | ')')).collect();
    let asset = visitor.get(&path).await;
    assert_eq!(asset.status, StatusCode::OK, "{path}");
    assert_eq!(asset.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-cache"), "{path}");
    let modified = asset.headers.get("last-modified").expect("a validator for the 304").to_str().unwrap().to_string();
    let again = reqwest::Client::new()
        .get(format!("{}{path}", app.base))
        .header("if-modified-since", modified)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-cache"));
    let missing = visitor.get("/pkg/no-such-file.js").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
}

#[tokio::test]
async fn pages_allow_only_their_own_nonced_scripts() {
    let app = TestApp::spawn().await;
    let (mut person, _) = app.signed_up("Noncer").await;
    let mut visitor = app.client();

    let mut seen = Vec::new();
    for reply in [
        visitor.get("/login").await,
        visitor.get("/login").await,
        person.get("/account").await,
        visitor.get("/no/such/page").await,
    ] {
        assert!(reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND, "{}", reply.status);
        let nonce = page_nonce(&reply);
        assert!(nonce.len() >= 16, "a nonce of 128 bits or more: {nonce}");
        let scripts: Vec<&str> = reply.body.match_indices("<script").map(|(i, _)| &reply.body[i..]).collect();
        assert!(!scripts.is_empty(), "the page has its hydration scripts");
        for script in scripts {
            let tag = &script[..script.find('>').unwrap()];
            assert!(tag.contains(&format!("nonce=\"{nonce}\"")), "script without the response's nonce: {tag}");
        }
        for (name, value) in
            [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"), ("cache-control", "no-store")]
        {
            assert_eq!(reply.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
        }
        assert!(!seen.contains(&nonce), "nonce reused across responses");
        seen.push(nonce);
    }

    for reply in [person.call("current_user", &[]).await, visitor.get("/healthz").await] {
        assert!(reply.status.is_success(), "{}", reply.status);
        let policy = reply.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(policy.starts_with("default-src 'none'"), "non-page responses load and run nothing: {policy}");
    }
}

/// Clients that hang up while their page is being rendered: every worker thread of the
/// runtime must still be running afterwards.
///
/// Leptos 0.8 deadlocked a worker thread for good when a page's reactive owner tree was
/// torn down (the request future dropped because the client left) while a `<Suspense>`'s
/// own task was still walking that tree on the other thread (see
/// `server::middleware::render_to_completion`, whose unit tests show deterministically that
/// a hang-up no longer cancels a render). Against the release build, a burst of reset
/// connections reproduced the deadlock in about half of the 15-second runs; this debug-build
/// burst is shorter and rarely hits the window, so it is a smoke check over the real
/// router: 32 connections request the members page and hang up after 0–40 ms, then every
/// worker must park again (a deadlocked one never does) and the page must still be served.
#[test]
fn clients_hanging_up_mid_page_leave_every_worker_running() {
    const WORKERS: usize = 2;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(WORKERS).enable_all().build().unwrap();
    let outcome = runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let app = TestApp::spawn().await;
        let mut owner = app.person("Owner").await;
        let slug = app.workspace(&mut owner, "Hang-ups").await;
        for i in 0..5 {
            let member = app.person(&format!("Member{i}")).await;
            app.add_member(&slug, &member, "member").await;
        }
        let page = format!("/w/{slug}/settings/members");
        assert_eq!(owner.client.get(&page).await.status, StatusCode::OK);
        let cookie = owner.client.session_cookie.clone().expect("signed in");
        let addr = app.base.trim_start_matches("http://").to_string();
        let request =
            format!("GET {page} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}={cookie}\r\n\r\n", common::COOKIE_NAME);

        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        let hang_ups: Vec<_> = (0..32u64)
            .map(|client| {
                let (addr, request) = (addr.clone(), request.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while tokio::time::Instant::now() < until {
                        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                        stream.write_all(request.as_bytes()).await.unwrap();
                        // The point of the test is when the client leaves, not a condition to
                        // wait for: spread the hang-ups over a render (0–40 ms).
                        let after = Duration::from_micros((client * 7_919 + n * 104_729) % 40_000);
                        tokio::time::sleep(after).await;
                        drop(stream);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let Ok(counts) = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(hang_ups)).await
        else {
            return Err("the hanging-up clients did not finish (a worker is stuck)".to_string());
        };
        let total: u64 = counts.into_iter().map(|c| c.unwrap()).sum();
        assert!(total > 100, "only {total} hang-ups were made");

        // A worker parks whenever it runs out of work; one that is deadlocked never does.
        let metrics = tokio::runtime::Handle::current().metrics();
        let parked = |w| metrics.worker_park_count(w);
        let before: Vec<u64> = (0..WORKERS).map(parked).collect();
        let waiting_since = std::time::Instant::now();
        loop {
            let stuck: Vec<usize> = (0..WORKERS).filter(|&w| parked(w) == before[w]).collect();
            if stuck.is_empty() {
                break;
            }
            if waiting_since.elapsed() > Duration::from_secs(20) {
                return Err(format!("worker(s) {stuck:?} never parked again after {total} hang-ups: deadlocked"));
            }
            // Wake the workers with a little work, then give them time to run out of it.
            for _ in 0..WORKERS * 4 {
                tokio::spawn(async {});
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And the page is still served.
        assert_eq!(owner.client.get(&page).await.status, StatusCode::OK);
        Ok(())
    });
    if let Err(problem) = outcome {
        // Dropping a runtime waits for its workers; a deadlocked one would hang the suite.
        runtime.shutdown_background();
        panic!("{problem}");
    }
}

/// RFC 9116: where to report a vulnerability, and until when that is current.
#[tokio::test]
async fn security_txt_names_the_contact_and_an_expiry() {
    let app = TestApp::spawn().await;
    let reply = app.client().get("/.well-known/security.txt").await;
    assert_eq!(reply.status, reqwest::StatusCode::OK);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(reply.body.contains("Contact: mailto:security@example.test\n"), "{}", reply.body);
    let expires = reply.body.lines().find_map(|l| l.strip_prefix("Expires: ")).expect("an Expires field");
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    let now = time::OffsetDateTime::now_utc();
    assert!(expires > now && expires < now + time::Duration::days(366), "{expires}");
    assert!(reply.body.contains(&format!("Canonical: {}/.well-known/security.txt", app.base)));
}
