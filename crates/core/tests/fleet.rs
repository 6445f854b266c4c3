//! The fleet runner at the database level.

use std::sync::Arc;

use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use fluxi_core::accounts::{PasswordHasher, PasswordHasherConfig};
use fluxi_core::testing::{TestDb, UserBuilder, WorkspaceBuilder};

/// "Nothing pending" costs one query however many workspaces there are: counted with
/// Diesel's instrumentation on every connection the runner uses.
#[tokio::test]
async fn a_fleet_run_with_nothing_pending_is_one_query() {
    use diesel::connection::InstrumentationEvent;
    use diesel_async::pooled_connection::{deadpool::Pool, AsyncDieselConnectionManager, ManagerConfig};
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let db = TestDb::new().await;
    let hasher = PasswordHasher::new(PasswordHasherConfig::default());
    let owner = UserBuilder::new().create(&db.pool, &hasher).await;
    for i in 0..6 {
        WorkspaceBuilder::new(&format!("Quiet {i}")).create(&db.pool, &owner).await;
    }
    let queries = Arc::new(AtomicUsize::new(0));
    let mut config = ManagerConfig::<diesel_async::AsyncPgConnection>::default();
    let counter = queries.clone();
    config.custom_setup = Box::new(move |url| {
        let counter = counter.clone();
        async move {
            let mut conn = diesel_async::AsyncPgConnection::establish(url).await?;
            conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
                if matches!(event, InstrumentationEvent::StartQuery { .. }) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
            Ok(conn)
        }
        .boxed()
    });
    let pool =
        Pool::builder(AsyncDieselConnectionManager::new_with_config(&db.url, config)).max_size(4).build().unwrap();
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&pool, 4).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (0, 0));
    assert_eq!(AtomicUsize::load(&queries, Ordering::SeqCst), 1, "one query for six workspaces");

    // The counter does see the work when a workspace is behind.
    let mut admin = diesel_async::AsyncPgConnection::establish(&db.admin_url).await.unwrap();
    admin.batch_execute("UPDATE workspaces SET tenant_version = '' WHERE slug LIKE 'quiet-0-%'").await.unwrap();
    queries.store(0, Ordering::SeqCst);
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&pool, 4).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (1, 0));
    assert!(AtomicUsize::load(&queries, Ordering::SeqCst) > 1);
}
