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
