//! Page rendering while other routers are being built in the same process.
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
