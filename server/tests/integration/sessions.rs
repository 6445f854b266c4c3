//! Session storage and lifetime rules.

use crate::common::{Options, TestApp, COOKIE_NAME, PASSWORD};
use app::error::AppError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::accounts::PasswordHasherConfig;
use fluxi_core::schema::sessions;
use fluxi_core::sessions::delete_expired_sessions;
use reqwest::StatusCode;
use sha2::Digest;
use time::Duration;

async fn stored_rows(app: &TestApp) -> Vec<(Vec<u8>, serde_json::Value)> {
    let mut conn = app.db.conn().await;
    sessions::table.select((sessions::id_hash, sessions::data)).load(&mut conn).await.unwrap()
}

/// The cookie value is tower-sessions' base64 of the 128-bit id.
fn cookie_id_bytes(cookie: &str) -> Vec<u8> {
    let id: tower_sessions::session::Id = cookie.parse().expect("session id cookie");
    id.0.to_le_bytes().to_vec()
}

#[tokio::test]
async fn cookie_has_host_prefix_and_safe_attributes() {
    let app = TestApp::spawn().await;
    let mut c = app.client();
    let res = c.call("signup", &[("display_name", "C"), ("email", "c@example.test"), ("password", PASSWORD)]).await;
    assert!(res.set_cookies().iter().all(|s| !s.starts_with(COOKIE_NAME)), "the form signs nobody in");
    let res = crate::common::finish_sign_up(&app, &mut c, "c@example.test", PASSWORD).await;
    let cookie = res.set_cookies().into_iter().find(|s| s.starts_with(COOKIE_NAME)).expect("session cookie set");
    let lower = cookie.to_ascii_lowercase();
    assert!(cookie.starts_with("__Host-"));
    for attr in ["; secure", "; httponly", "; samesite=lax", "; path=/"] {
        assert!(lower.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!lower.contains("domain="), "{cookie}");
}

#[tokio::test]
async fn the_table_never_holds_the_cookie_value() {
    let app = TestApp::spawn().await;
    let (c, _) = app.signed_up("Stored").await;
    let cookie = c.session_cookie.clone().unwrap();
    let rows = stored_rows(&app).await;
    assert_eq!(rows.len(), 1);
    let (id_hash, data) = &rows[0];
    let id_bytes = cookie_id_bytes(&cookie);
    assert_eq!(id_hash, &sha2::Sha256::digest(&id_bytes).to_vec(), "key is SHA-256 of the id");
    assert_ne!(id_hash, &id_bytes);
    let dump = format!("{data} {}", hex::encode(id_hash));
    assert!(!dump.contains(&cookie));
    assert!(!dump.contains(&hex::encode(&id_bytes)));
}

/// A request that loaded its session before the person signed out elsewhere must not
/// write the session back when it finishes: saving updates, never inserts.
#[tokio::test]
async fn a_session_deleted_mid_request_stays_deleted() {
    use tower_sessions::SessionStore;
    let app = TestApp::spawn().await;
    let (mut c, _) = app.signed_up("Racing").await;
    let cookie = c.session_cookie.clone().unwrap();
    let store = fluxi_core::sessions::DieselSessionStore::new(
        app.state.pool.clone(),
        app.state.clock.clone(),
        app.state.session_policy,
    );
    let id: tower_sessions::session::Id = cookie.parse().unwrap();
    // A slow request has loaded the session...
    let mut loaded = SessionStore::load(&store, &id).await.unwrap().expect("the session");
    // ...the person signs out meanwhile...
    let res = c.call("logout", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert!(stored_rows(&app).await.is_empty());
    // ...and the slow request finishes, saving what it changed.
    loaded.data.insert("touched".into(), serde_json::json!(true));
    SessionStore::save(&store, &loaded).await.unwrap();
    assert!(stored_rows(&app).await.is_empty(), "the deleted session came back");
    let mut old = app.client();
    old.session_cookie = Some(cookie);
    assert_eq!(old.call("current_user", &[]).await.body, "null");
}

/// The store reads the account row in the same statement as the session; that copy is
/// this request's alone: always current, and never written into the session row.
#[tokio::test]
async fn the_account_is_read_fresh_with_the_session_and_never_stored_in_it() {
    use fluxi_core::schema::users;
    let app = TestApp::spawn().await;
    let (mut c, email) = app.signed_up("Fresh").await;
    assert!(c.get("/account").await.body.contains("Fresh"));
    {
        let mut conn = app.db.conn().await;
        diesel::update(users::table.filter(users::email.eq(&email)))
            .set(users::display_name.eq("Renamed Person"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let page = c.get("/account").await;
    assert!(page.body.contains("Renamed Person"), "the next request shows the current account row");
    // Past the touch interval the request rewrites the session row (last seen): the
    // account row it was loaded with must not be written along.
    let auth_before = stored_rows(&app).await[0].1["auth"].clone();
    app.clock.advance(Duration::minutes(5));
    assert!(c.get("/account").await.body.contains("Renamed Person"));
    let rows = stored_rows(&app).await;
    assert_eq!(rows.len(), 1);
    let data = rows[0].1.as_object().expect("session data is an object");
    assert_ne!(data["auth"], auth_before, "the row was rewritten");
    assert!(!data.contains_key(fluxi_core::sessions::SIGNED_IN_USER_KEY), "{data:?}");
    let dump = rows[0].1.to_string();
    assert!(!dump.contains("Renamed Person") && !dump.contains(&email), "{dump}");
}

#[tokio::test]
async fn a_deleted_account_is_signed_out_on_its_next_request() {
    use fluxi_core::schema::users;
    let app = TestApp::spawn().await;
    let (mut c, email) = app.signed_up("Deleted").await;
    assert_eq!(c.get("/account").await.status, StatusCode::OK);
    let mut conn = app.db.conn().await;
    diesel::delete(users::table.filter(users::email.eq(&email))).execute(&mut conn).await.unwrap();
    let res = c.get("/account").await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(res.location(), Some("/login?next=%2Faccount"));
}

#[tokio::test]
async fn session_id_is_cycled_at_sign_in() {
    let app = TestApp::spawn().await;
    let (_, email) = app.signed_up("Cycle").await;
    let (_, other) = app.signed_up("Planter").await;
    let mut c = app.client();
    // A browser that already holds a session (here another account's: what an attacker
    // could plant, since failed sign-ins no longer make anonymous ones)...
    let res = c.call("login", &[("email", &other), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK);
    let before = c.session_cookie.clone().expect("a session");
    // ...must not keep using it when it signs in (session fixation).
    let res = c.call("login", &[("email", &email), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK);
    let after = c.session_cookie.clone().unwrap();
    assert_ne!(before, after);
    let mut planted = app.client();
    planted.session_cookie = Some(before);
    assert_eq!(planted.get("/account").await.status, StatusCode::FOUND, "the pre-login id is not signed in");
}

#[tokio::test]
async fn idle_timeout_signs_out() {
    let app = TestApp::spawn().await;
    let (mut c, _) = app.signed_up("Idle").await;
    // Activity every 20 minutes keeps the session alive (30-minute idle limit)...
    for _ in 0..3 {
        app.clock.advance(Duration::minutes(20));
        assert_eq!(c.get("/account").await.status, StatusCode::OK);
    }
    // ...31 quiet minutes end it.
    app.clock.advance(Duration::minutes(31));
    let res = c.get("/account").await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert_eq!(res.location(), Some("/login?next=%2Faccount"));
}

#[tokio::test]
async fn absolute_timeout_signs_out_despite_activity() {
    let app = TestApp::spawn().await;
    let (mut c, _) = app.signed_up("Absolute").await;
    let mut elapsed = Duration::ZERO;
    while elapsed + Duration::minutes(25) < Duration::hours(12) {
        app.clock.advance(Duration::minutes(25));
        elapsed += Duration::minutes(25);
        assert_eq!(c.get("/account").await.status, StatusCode::OK, "after {elapsed}");
    }
    app.clock.advance(Duration::hours(12) - elapsed);
    assert_eq!(c.get("/account").await.status, StatusCode::FOUND);
    // The dead row is no longer loadable, and the background cleanup removes it.
    assert_eq!(delete_expired_sessions(&app.db.pool, app.clock.now()).await.unwrap(), 1);
    assert!(stored_rows(&app).await.is_empty());
}

#[tokio::test]
async fn configured_timeouts_are_used() {
    let app = TestApp::spawn_with(Options {
        policy: fluxi_core::sessions::SessionPolicy { idle_timeout: Duration::minutes(5), ..Default::default() },
        ..Default::default()
    })
    .await;
    let (mut c, _) = app.signed_up("Short").await;
    app.clock.advance(Duration::minutes(4));
    assert_eq!(c.get("/account").await.status, StatusCode::OK);
    app.clock.advance(Duration::minutes(6));
    assert_eq!(c.get("/account").await.status, StatusCode::FOUND);
}

#[tokio::test]
async fn expired_sessions_are_deleted_by_the_cleanup() {
    let app = TestApp::spawn().await;
    let (_a, _) = app.signed_up("A").await;
    app.clock.advance(Duration::minutes(20));
    let (_b, _) = app.signed_up("B").await;
    app.clock.advance(Duration::minutes(15));
    // A has been idle for 35 minutes, B for 15.
    let deleted = delete_expired_sessions(&app.db.pool, app.clock.now()).await.unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(stored_rows(&app).await.len(), 1);
}

use fluxi_core::clock::Clock;

#[tokio::test]
async fn forged_and_malformed_cookies_are_just_signed_out() {
    let app = TestApp::spawn().await;
    let (real, _) = app.signed_up("Real").await;
    let real_cookie = real.session_cookie.unwrap();
    for forged in [
        "garbage".to_string(),
        "".to_string(),
        "A".repeat(5000),
        // A well-formed id that was never issued.
        tower_sessions::session::Id::default().to_string(),
        // The real one with a character changed.
        format!("{}{}", &real_cookie[..real_cookie.len() - 2], if real_cookie.ends_with('A') { "BB" } else { "AA" }),
    ] {
        let mut c = app.client();
        c.session_cookie = Some(forged.clone());
        let res = c.get("/account").await;
        assert_eq!(res.status, StatusCode::FOUND, "{forged}");
        let res = c.call("current_user", &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{forged}: {}", res.body);
        assert_eq!(res.body, "null");
    }
}

#[tokio::test]
async fn sign_in_bursts_wait_for_a_permit_or_get_a_clear_busy_reply() {
    // One hashing permit and a short wait: a burst of 12 sign-ins mostly gets "busy".
    let app = TestApp::spawn_with(Options {
        hasher: PasswordHasherConfig { permits: 1, max_wait: std::time::Duration::from_millis(30) },
        pool_size: 16,
        ..Default::default()
    })
    .await;
    let (_, email) = app.signed_up("Burst").await;
    let burst = (0..12).map(|_| {
        let mut c = app.client();
        let email = email.clone();
        async move { c.call("login", &[("email", &email), ("password", PASSWORD)]).await }
    });
    let replies = futures::future::join_all(burst).await;
    let busy: Vec<_> = replies.iter().filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert!(replies.iter().any(|r| r.status == StatusCode::OK));
    assert!(!busy.is_empty(), "with 1 permit and a 30 ms wait some must be refused");
    for r in busy {
        assert_eq!(r.error(), AppError::Busy);
        assert!(r.headers.contains_key("retry-after"));
    }
}

#[tokio::test]
async fn other_requests_are_served_while_sign_ins_hash() {
    // Two permits, generous wait: 16 sign-ins queue for the hashers (several hundred ms
    // of CPU in all). Meanwhile the signed-in account page and the health check must be
    // answered *before* the burst is over: hashing never occupies the async workers.
    // (Sixteen different emails: one account lets only five attempts be checked at once.)
    let app = TestApp::spawn_with(Options {
        hasher: PasswordHasherConfig { permits: 2, max_wait: std::time::Duration::from_secs(30) },
        pool_size: 24,
        ..Default::default()
    })
    .await;
    let (mut reader, email) = app.signed_up("Reader").await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let burst: Vec<_> = (0..16)
        .map(|i| {
            let mut c = app.client();
            let (email, done) = (format!("burst{i}-{email}"), done.clone());
            tokio::spawn(async move {
                let r = c.call("login", &[("email", &email), ("password", PASSWORD)]).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                r.status
            })
        })
        .collect();
    // Wait until the burst is demonstrably under way (the first sign-in finished).
    while std::sync::atomic::AtomicUsize::load(&done, std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for _ in 0..5 {
        assert_eq!(reader.get("/account").await.status, StatusCode::OK);
        assert_eq!(reader.get("/healthz").await.status, StatusCode::OK);
    }
    let finished_when_reads_done = std::sync::atomic::AtomicUsize::load(&done, std::sync::atomic::Ordering::SeqCst);
    for h in burst {
        assert_eq!(h.await.unwrap(), StatusCode::UNAUTHORIZED, "no such account, checked all the same");
    }
    assert!(
        finished_when_reads_done < 16,
        "reads had to wait for the whole burst ({finished_when_reads_done}/16 done)"
    );
}

/// The background clean-up task runs each of its steps every round: here an expired
/// session disappears and a delivered mail that still has its body (as an older server
/// version left it) is overwritten, without anyone asking.
#[tokio::test]
async fn the_cleanup_task_removes_expired_sessions_and_erases_finished_mail_bodies() {
    use diesel_async::SimpleAsyncConnection;
    use fluxi_core::schema::outbox_emails;
    let app = TestApp::spawn().await;
    let mut conn = app.db.conn().await;
    conn.batch_execute(
        "INSERT INTO sessions (id_hash, data, expires_at) VALUES (decode(repeat('ab', 32), 'hex'), '{}', now() - interval '1 day'); \
         INSERT INTO outbox_emails (recipient, subject, body, sent_at) \
             VALUES ('old@example.test', 'Invitation', 'link: /invite/0123', now())",
    )
    .await
    .unwrap();
    let clock: fluxi_core::clock::SharedClock = std::sync::Arc::new(app.clock.clone());
    let task = server::jobs::session_cleanup::spawn(
        app.db.pool.clone(),
        clock,
        fluxi_core::accounts::SignInThrottle::default(),
        std::time::Duration::from_millis(50),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let sessions_left: i64 = sessions::table.count().get_result(&mut conn).await.unwrap();
        let body: String = outbox_emails::table.select(outbox_emails::body).first(&mut conn).await.unwrap();
        if sessions_left == 0 && body == fluxi_core::outbox::BODY_ERASED_AFTER_DELIVERY {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not cleaned up: {sessions_left} sessions, body {body:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    task.abort();
}

/// A handler outside the app's pages (the audit export, the OAuth callback) reads who is
/// signed in from its own request, even while another person's page is being rendered on
/// the same thread: the renderer's reactive owner lingers in a thread-local, and its
/// per-request memo of the signed-in user must never answer for another request. (One
/// thread: `#[tokio::test]` runs the server and every request on the test's own.)
#[tokio::test]
async fn a_plain_handler_never_sees_the_person_of_a_page_rendered_meanwhile() {
    use diesel::sql_types::BigInt;
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use fluxi_core::schema::workspaces;
    #[derive(QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let rendered = app.workspace(&mut owner, "Rendered").await;
    let exported = app.workspace(&mut owner, "Exported").await;
    let mut outsider = app.person("Outsider").await;
    let export_path = format!("/w/{exported}/audit/export.jsonl");
    assert_eq!(outsider.client.get(&export_path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(owner.client.get(&export_path).await.status, StatusCode::OK);

    // The owner's page of one workspace has loaded who they are, then waits for its notes.
    let schema: String = {
        let mut conn = app.db.conn().await;
        workspaces::table
            .filter(workspaces::slug.eq(&rendered))
            .select(workspaces::schema_name)
            .first(&mut conn)
            .await
            .unwrap()
    };
    let mut admin = diesel_async::AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    admin.batch_execute(&format!("BEGIN; LOCK TABLE {schema}.notes IN ACCESS EXCLUSIVE MODE")).await.unwrap();
    let page = {
        let (mut client, rendered) = (owner.client, rendered.clone());
        tokio::spawn(async move { client.get(&format!("/w/{rendered}")).await.status })
    };
    let waiting =
        format!("SELECT count(*) AS n FROM pg_locks WHERE NOT granted AND relation = '{schema}.notes'::regclass");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while diesel::sql_query(&waiting).get_result::<Waiting>(&mut admin).await.unwrap().n == 0 {
        assert!(!page.is_finished(), "the page did not wait for its notes");
        assert!(std::time::Instant::now() < deadline, "the page never reached its notes");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Meanwhile the outsider asks for the export of the owner's other workspace.
    let export = outsider.client.get(&export_path).await;
    let home = outsider.client.call("workspace_home", &[("slug", &exported)]).await;
    assert!(!page.is_finished(), "the page was still being rendered");
    admin.batch_execute("COMMIT").await.unwrap();
    assert_eq!(page.await.unwrap(), StatusCode::OK);
    assert_eq!(export.status, StatusCode::NOT_FOUND, "the outsider was served as the owner");
    assert_eq!(home.status, StatusCode::NOT_FOUND, "a server function too");
}
