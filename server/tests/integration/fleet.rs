//! The fleet runner: tenant migrations on every workspace schema, failures isolated.

use crate::common::TestApp;
use app::error::AppError;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use fluxi_core::schema::workspaces;
use reqwest::StatusCode;

#[tokio::test]
async fn the_fleet_runner_migrates_every_schema_and_isolates_failures() {
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let mut slugs = Vec::new();
    for i in 0..4 {
        slugs.push(app.workspace(&mut owner, &format!("Fleet {i}")).await);
    }
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (0, 0), "new workspaces are born up to date");

    // Pretend every schema is behind (undo its migrations as the superuser) and break
    // one of them so that its migration fails.
    let mut admin = diesel_async::AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    let schemas: Vec<(uuid::Uuid, String)> = {
        let mut conn = app.db.conn().await;
        workspaces::table
            .select((workspaces::id, workspaces::schema_name))
            .order(workspaces::slug)
            .load(&mut conn)
            .await
            .unwrap()
    };
    for (i, (_, schema)) in schemas.iter().enumerate() {
        // Every tenant migration undone.
        let undo = format!(
            "DROP TABLE {schema}.notes; DROP TABLE {schema}.integration_connections; DROP TABLE {schema}.assistant_proposals, {schema}.assistant_messages, {schema}.assistant_alerts, {schema}.assistant_settings; DELETE FROM {schema}.schema_migrations;"
        );
        let sql = if i == 0 {
            // Broken: the table is gone but an unrelated object holds its name.
            format!("{undo} CREATE VIEW {schema}.notes AS SELECT 1 AS x;")
        } else {
            undo
        };
        admin.batch_execute(&sql).await.unwrap();
    }
    admin.batch_execute("UPDATE workspaces SET tenant_version = ''").await.unwrap();

    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!(report.migrated, 3);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, schemas[0].0);
    // Its admins can see why it answers "being upgraded": the failure is in its trail.
    let failed = crate::common::recorded(&app, fluxi_core::audit::Action::WorkspaceMigrationFailed).await;
    assert_eq!(failed.iter().map(|e| e.chain_id).collect::<Vec<_>>(), vec![schemas[0].0]);
    assert_eq!((failed[0].outcome.as_str(), failed[0].actor_kind.as_str()), ("failed", "system:fleet_migrator"));
    // The healthy ones work again; the broken one is still marked behind, so a rerun
    // (after repair) resumes with it alone.
    for slug in &slugs {
        let res = owner.client.call("workspace_home", &[("slug", slug)]).await;
        let broken = slug
            == &{
                let mut conn = app.db.conn().await;
                workspaces::table
                    .filter(workspaces::id.eq(schemas[0].0))
                    .select(workspaces::slug)
                    .first::<String>(&mut conn)
                    .await
                    .unwrap()
            };
        if broken {
            // Behind the running version: its members are told it is being upgraded (its
            // page too); anyone else still gets "not found".
            assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{slug}: {}", res.body);
            assert_eq!(res.error(), AppError::Upgrading);
            let page = owner.client.get(&format!("/w/{slug}")).await;
            assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(page.body.contains("This workspace is being upgraded."), "{}", page.body);
            let mut stranger = app.person("Stranger").await;
            assert_eq!(stranger.client.call("workspace_home", &[("slug", slug)]).await.status, StatusCode::NOT_FOUND);
        } else {
            assert_eq!(res.status, StatusCode::OK, "{slug}: {}", res.body);
        }
    }
    admin.batch_execute(&format!("DROP VIEW {}.notes", schemas[0].1)).await.unwrap();
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (1, 0));
    let report = fluxi_core::tenancy::migrations::migrate_fleet(&app.db.pool, 2).await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (0, 0), "nothing pending");
}

/// A workspace deleted after the fleet runner listed it is not a failure: the runner
/// waits for the deletion (its registry update takes the row lock) and then skips it.
#[tokio::test]
async fn a_workspace_deleted_during_a_fleet_run_is_skipped_not_failed() {
    use diesel::sql_types::Bool;
    let app = TestApp::spawn().await;
    let mut owner = app.person("Owner").await;
    let slug = app.workspace(&mut owner, "Going away").await;
    let kept = app.workspace(&mut owner, "Staying").await;
    let mut admin = diesel_async::AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    admin.batch_execute("UPDATE workspaces SET tenant_version = ''").await.unwrap();
    let (id, schema): (uuid::Uuid, String) = {
        let mut conn = app.db.conn().await;
        workspaces::table
            .filter(workspaces::slug.eq(&slug))
            .select((workspaces::id, workspaces::schema_name))
            .first(&mut conn)
            .await
            .unwrap()
    };
    // The deletion holds the row while the runner starts.
    admin.batch_execute(&format!("BEGIN; SELECT 1 FROM workspaces WHERE id = '{id}' FOR UPDATE")).await.unwrap();
    let pool = app.db.pool.clone();
    let run = tokio::spawn(async move { fluxi_core::tenancy::migrations::migrate_fleet(&pool, 2).await.unwrap() });
    let waiting =
        "EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database())";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !diesel::select(diesel::dsl::sql::<Bool>(waiting)).get_result::<bool>(&mut admin).await.unwrap() {
        assert!(!run.is_finished(), "the runner did not wait for the row");
        assert!(std::time::Instant::now() < deadline, "the runner never waited for the row");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    admin
        .batch_execute(&format!("DELETE FROM workspaces WHERE id = '{id}'; DROP SCHEMA {schema} CASCADE; COMMIT"))
        .await
        .unwrap();
    let report = run.await.unwrap();
    assert_eq!((report.migrated, report.failed.len()), (1, 0), "{:?}", report.failed);
    assert_eq!(owner.client.call("workspace_home", &[("slug", &kept)]).await.status, StatusCode::OK);
}
