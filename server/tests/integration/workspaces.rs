//! Creating workspaces: the daily limit per account.

use crate::common::{self, TestApp, PASSWORD};
use app::error::AppError;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fluxi_core::clock::Clock;
use fluxi_core::schema::workspaces;
use reqwest::StatusCode;
use time::Duration;

/// Each workspace is a schema, a database role and tables: an account may create
/// `workspaces_per_day` in any 24 hours, and no more, even when creations race.
#[tokio::test]
async fn an_account_can_create_only_so_many_workspaces_a_day() {
    use fluxi_core::schema::workspace_creations;
    let app = TestApp::spawn_with(common::Options { workspaces_per_day: 3, pool_size: 16, ..Default::default() }).await;
    let mut owner = app.person("Owner").await;
    let one = app.workspace(&mut owner, "One").await;
    app.workspace(&mut owner, "Two").await;
    // The last two race: exactly one gets through.
    let mut racers = Vec::new();
    for name in ["Three A", "Three B"] {
        let mut c = app.client();
        c.session_cookie = owner.client.session_cookie.clone();
        racers.push(tokio::spawn(async move { c.call("create_workspace", &[("name", name)]).await }));
    }
    let mut replies = Vec::new();
    for r in racers {
        replies.push(r.await.unwrap());
    }
    assert_eq!(
        replies.iter().filter(|r| r.status == StatusCode::OK).count(),
        1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let refused = replies.iter().find(|r| r.status != StatusCode::OK).unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        refused.error(),
        AppError::TooMany {
            message: "You have created 3 workspaces in the last 24 hours, the most allowed. Try again tomorrow.".into(),
            retry_after_seconds: None,
        }
    );
    let mut conn = app.db.conn().await;
    assert_eq!(
        workspaces::table.count().get_result::<i64>(&mut conn).await.unwrap(),
        3,
        "the refused one made nothing"
    );
    let schemas: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ws\\_%')",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(schemas, 3);

    // Deleting one gives nothing back.
    let res = owner.client.call("delete_workspace", &[("slug", &one), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(owner.client.call("create_workspace", &[("name", "Four")]).await.status, StatusCode::TOO_MANY_REQUESTS);

    // Another account has its own allowance.
    let mut other = app.person("Other").await;
    app.workspace(&mut other, "Theirs").await;

    // A day later the allowance is back (after signing in again: the session has expired),
    // and the periodic clean-up forgets the old creations.
    app.clock.advance(Duration::hours(24) + Duration::minutes(1));
    let res = owner.client.call("login", &[("email", &owner.user.email), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let removed = fluxi_core::workspaces::delete_old_workspace_creations(&mut conn, app.clock.now()).await.unwrap();
    assert_eq!(removed, 4);
    app.workspace(&mut owner, "Four").await;
    assert_eq!(workspace_creations::table.count().get_result::<i64>(&mut conn).await.unwrap(), 1);
}
