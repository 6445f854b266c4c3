//! The connection pool recycles connections without a test query (`RecyclingMethod::Fast`);
//! these tests show that it still gets rid of connections the database has closed.
use crate::common::{self, Options, TestApp};
use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use reqwest::StatusCode;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Terminates every backend of the application role on the test database; returns how many.
async fn terminate_app_connections(app: &TestApp) -> i64 {
    let mut admin = AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    let killed: Count = diesel::sql_query(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND usename = 'fluxi_app'",
    )
    .get_result(&mut admin)
    .await
    .unwrap();
    killed.n
}

#[tokio::test]
async fn pages_keep_working_after_the_database_closes_every_connection() {
    let app = TestApp::spawn_with(Options { pool_size: 3, ..Default::default() }).await;
    let (mut person, _) = app.signed_up("Pooled").await;
    // Fill the pool: concurrent page loads check out all three connections.
    let loads: Vec<_> = (0..6)
        .map(|_| {
            let mut c = common::Client::new(&app.base);
            c.session_cookie = person.session_cookie.clone();
            tokio::spawn(async move { c.get("/account").await.status })
        })
        .collect();
    for l in loads {
        assert_eq!(l.await.unwrap(), StatusCode::OK);
    }
    assert!(terminate_app_connections(&app).await >= 1, "the pool held no connection to kill");

    // The database has closed every pooled connection (as a restart or an administrator
    // would). The pool notices closed sockets when handing connections out, so pages come
    // back without restarting the server. A connection whose close was not yet read may
    // fail one request, with a plain error page; at most one per pooled connection.
    let mut failures = 0;
    let mut ok_in_a_row = 0;
    for _ in 0..50 {
        let r = person.get("/account").await;
        if r.status == StatusCode::OK {
            assert!(r.body.contains("Pooled"), "account page without the account: {}", r.body);
            ok_in_a_row += 1;
            if ok_in_a_row == 10 {
                break;
            }
        } else {
            assert!(!r.body.contains("terminat"), "database internals leaked: {}", r.body);
            failures += 1;
            ok_in_a_row = 0;
        }
    }
    assert_eq!(ok_in_a_row, 10, "pages did not recover ({failures} failures)");
    assert!(failures <= 3, "{failures} failed requests for 3 dead connections");
    assert_eq!(person.get("/readyz").await.status, StatusCode::OK);
}

/// A request that takes longer than the configured limit is answered "503, try again"
/// rather than holding its connection (and the client) forever. A zero limit makes every
/// request that has to wait for anything (here: password hashing) exceed it.
#[tokio::test]
async fn requests_over_the_time_limit_get_a_clear_503() {
    let app = TestApp::spawn_with(Options { request_timeout: std::time::Duration::ZERO, ..Default::default() }).await;
    let mut c = app.client();
    let reply = c
        .call(
            "signup",
            &[("display_name", "Slow"), ("email", "slow@example.test"), ("password", "correct horse battery staple")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert!(!reply.body.contains("panicked") && !reply.body.contains("Elapsed"), "{}", reply.body);
    assert!(reply.headers.contains_key("content-security-policy"), "the 503 carries the security headers");

    let normal = TestApp::spawn().await;
    let mut c = normal.client();
    let reply = c
        .call(
            "signup",
            &[("display_name", "Quick"), ("email", "quick@example.test"), ("password", "correct horse battery staple")],
        )
        .await;
    assert!(reply.status.is_success() || reply.status.is_redirection(), "{} {}", reply.status, reply.body);
}
