//! Migrations: fresh and existing databases come up to date; a failure applies nothing.

use diesel_async::RunQueryDsl;
use fluxi_core::db;
use fluxi_core::testing::TestDb;

async fn table_exists(db: &TestDb, name: &str) -> bool {
    let mut conn = db.conn().await;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!("to_regclass('public.{name}') IS NOT NULL")))
        .get_result(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn fresh_database_is_migrated_and_a_second_run_is_a_no_op() {
    let db = TestDb::empty().await;
    let applied = db::run_public_migrations(&db.url).await.unwrap();
    assert!(!applied.is_empty());
    assert!(table_exists(&db, "users").await && table_exists(&db, "sessions").await);
    assert!(db::run_public_migrations(&db.url).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_migration_leaves_the_database_as_it_was() {
    // The real migrations plus a broken one, as files on disk.
    let dir = std::env::temp_dir().join(format!("fluxi-mig-{}", uuid::Uuid::new_v4().simple()));
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/public");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            let to = dir.join(entry.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for f in ["up.sql", "down.sql"] {
                std::fs::copy(entry.path().join(f), to.join(f)).unwrap();
            }
        }
    }
    let broken = dir.join("2999-01-01-000000_broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("up.sql"), "CREATE TABLE will_not_exist (id int); SELECT no_such_function();").unwrap();
    std::fs::write(broken.join("down.sql"), "").unwrap();

    let db = TestDb::empty().await;
    let source = diesel_migrations::FileBasedMigrations::from_path(&dir).unwrap();
    let err = db::run_migrations_from(&db.url, source).await.unwrap_err().to_string();
    assert!(err.contains("broken") && err.contains("no_such_function"), "clear message naming the migration: {err}");
    assert!(!table_exists(&db, "users").await, "earlier migrations of the same run were rolled back too");
    assert!(!table_exists(&db, "will_not_exist").await);
    assert!(!table_exists(&db, "__diesel_schema_migrations").await);

    // The embedded set still applies cleanly afterwards.
    db::run_public_migrations(&db.url).await.unwrap();
    assert!(table_exists(&db, "users").await);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn concurrent_runners_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let (a, b) = tokio::join!(db::run_public_migrations(&db.url), db::run_public_migrations(&db.url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_empty() != b.is_empty(), "exactly one runner applied the set: {a:?} / {b:?}");
}

/// The second line of tenant isolation (per-workspace roles) only holds for a login role
/// that is NOINHERIT, not a superuser, without BYPASSRLS and without CREATEROLE (directly
/// or through the provisioning functions' owner), and that can provision workspace roles
/// through those functions: `serve` and `migrate` check this before anything else.
#[tokio::test]
async fn login_roles_that_would_bypass_workspace_roles_are_refused() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let db = TestDb::new().await;
    let mut app = AsyncPgConnection::establish(&db.url).await.unwrap();
    db::check_login_role(&mut app).await.expect("the application role is fine");

    let mut admin = AsyncPgConnection::establish(&db.admin_url).await.unwrap();
    let err = db::check_login_role(&mut admin).await.unwrap_err().to_string();
    assert!(err.contains("is a superuser") && err.contains("has BYPASSRLS") && err.contains("has INHERIT"), "{err}");

    let role = format!("fluxi_loose_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = fluxi_core::testing::password_of(&db.admin_url).replace('\'', "");
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN INHERIT BYPASSRLS CREATEROLE PASSWORD '{password}'"))
        .await
        .unwrap();
    let mut loose = AsyncPgConnection::establish(&fluxi_core::testing::as_login_role(&db.url, &role)).await.unwrap();
    let err = db::check_login_role(&mut loose).await.unwrap_err().to_string();
    assert!(err.contains(&role) && err.contains("has BYPASSRLS") && err.contains("has INHERIT"), "{err}");
    assert!(err.contains("has CREATEROLE"), "{err}");
    // Not the database's owner, so the provisioning functions were not granted to it.
    assert!(err.contains("cannot execute the workspace role provisioning functions"), "{err}");
    assert!(!err.contains("is a superuser") && !err.contains("member of the provisioning"), "{err}");
    drop(loose);

    // A role that could become the functions' owner (which has CREATEROLE) is refused too,
    // even when everything else about it is right.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} NOINHERIT NOBYPASSRLS NOCREATEROLE; \
             GRANT USAGE ON SCHEMA fluxi_provisioning TO {role}; \
             GRANT EXECUTE ON FUNCTION fluxi_provisioning.create_workspace_role(text), \
                 fluxi_provisioning.drop_workspace_role(text) TO {role}"
        ))
        .await
        .unwrap();
    let mut tidy = AsyncPgConnection::establish(&fluxi_core::testing::as_login_role(&db.url, &role)).await.unwrap();
    db::check_login_role(&mut tidy).await.expect("NOINHERIT, NOCREATEROLE, may provision: fine");
    admin.batch_execute(&format!("GRANT fluxi_provisioner TO {role}")).await.unwrap();
    let err = db::check_login_role(&mut tidy).await.unwrap_err().to_string();
    assert!(err.contains("is a member of the provisioning functions' owner"), "{err}");
    drop(tidy);
    admin.batch_execute(&format!("REVOKE fluxi_provisioner FROM {role}; DROP OWNED BY {role}; DROP ROLE {role}")).await.unwrap();

    // Without the administrator's provisioning functions in the database, nothing starts.
    admin.batch_execute("DROP SCHEMA fluxi_provisioning CASCADE").await.unwrap();
    let err = db::check_login_role(&mut app).await.unwrap_err().to_string();
    assert!(err.contains("cannot execute the workspace role provisioning functions"), "{err}");
    assert!(err.contains("migrations/admin/provisioning.sql"), "{err}");
}
