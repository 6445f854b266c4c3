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
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/public");
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
    assert!(!err.contains("is a superuser") && !err.contains("may become"), "{err}");
    drop(loose);

    // A role that may become another role (left over from the days of CREATEROLE, say) is
    // refused too, even when everything else about it is right; workspace roles are fine.
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
    let workspace_role = fluxi_core::tenancy::TenantIdent::for_workspace(uuid::Uuid::new_v4());
    let workspace_role = workspace_role.as_str();
    admin
        .batch_execute(&format!("CREATE ROLE {workspace_role} NOLOGIN NOINHERIT; GRANT {workspace_role} TO {role}"))
        .await
        .unwrap();
    db::check_login_role(&mut tidy).await.expect("a member of workspace roles: fine");
    admin.batch_execute(&format!("GRANT pg_read_all_data, pg_execute_server_program TO {role}")).await.unwrap();
    let err = db::check_login_role(&mut tidy).await.unwrap_err().to_string();
    assert!(
        err.contains("may become roles other than workspace roles (pg_execute_server_program, pg_read_all_data;"),
        "{err}"
    );
    assert!(!err.contains(workspace_role), "{err}");
    // A workspace-named role with powers of its own is no workspace role.
    admin
        .batch_execute(&format!(
            "REVOKE pg_read_all_data, pg_execute_server_program FROM {role}; ALTER ROLE {workspace_role} CREATEROLE"
        ))
        .await
        .unwrap();
    let err = db::check_login_role(&mut tidy).await.unwrap_err().to_string();
    assert!(err.contains(&format!("may become roles other than workspace roles ({workspace_role};")), "{err}");
    drop(tidy);
    admin.batch_execute(&format!("DROP ROLE {workspace_role}; DROP OWNED BY {role}; DROP ROLE {role}")).await.unwrap();

    // Without the administrator's provisioning functions in the database, nothing starts.
    admin.batch_execute("DROP SCHEMA fluxi_provisioning CASCADE").await.unwrap();
    let err = db::check_login_role(&mut app).await.unwrap_err().to_string();
    assert!(err.contains("cannot execute the workspace role provisioning functions"), "{err}");
    assert!(err.contains("migrations/admin/provisioning.sql"), "{err}");
}

/// The provisioning script runs as a superuser inside a database whose `public` schema the
/// application role owns (and whose default search path it may set, as database owner):
/// a hostile application role must not get its own code run by the administrator.
#[tokio::test]
async fn rerunning_the_provisioning_script_runs_none_of_the_application_roles_code() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    use fluxi_core::testing::{provisioning_lock, run_provisioning_script};
    let db = TestDb::new().await;
    let mut app = AsyncPgConnection::establish(&db.url).await.unwrap();
    // What an SQL injection could leave behind: better-matching overloads of functions and
    // operators the script might call, which note who ran them, first on the path.
    app.batch_execute(&format!(
        r#"CREATE TABLE public.ran_as (who text);
           GRANT INSERT ON public.ran_as TO PUBLIC;
           CREATE FUNCTION public.format(text, name) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.ran_as VALUES (current_user); RETURN pg_catalog.format($1, $2); END $$;
           CREATE FUNCTION public.string_agg(name, text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.ran_as VALUES (current_user); RETURN $1::text; END $$;
           CREATE FUNCTION public.pg_get_userbyid(oid) RETURNS name LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.ran_as VALUES (current_user); RETURN pg_catalog.pg_get_userbyid($1); END $$;
           GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO PUBLIC;
           ALTER DATABASE {} SET search_path = public, pg_catalog;"#,
        db.name
    ))
    .await
    .unwrap();
    async fn ran_as(conn: &mut AsyncPgConnection) -> i64 {
        diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("(SELECT count(*) FROM public.ran_as)"))
            .get_result(conn)
            .await
            .unwrap()
    }
    // The trap works: a superuser's unqualified call in this database runs the role's code.
    let mut admin = AsyncPgConnection::establish(&db.admin_url).await.unwrap();
    admin.batch_execute("SELECT format('%I', 'x'::name)").await.unwrap();
    assert_eq!(ran_as(&mut app).await, 1, "the trap caught the administrator's unqualified call");

    let lock = provisioning_lock().await;
    run_provisioning_script(&db.admin_url, db::PROVISIONING_SQL).await.expect("the script runs");
    drop(lock);
    assert_eq!(ran_as(&mut app).await, 1, "the provisioning script called the application role's functions");
    db::check_login_role(&mut app).await.expect("still a safe login role");
}

/// A member of `fluxi_provisioner` (which has CREATEROLE) was not made by the script; it
/// refuses to go on rather than trusting that role again.
#[tokio::test]
async fn the_provisioning_script_refuses_a_provisioner_with_members() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    use fluxi_core::testing::{provisioning_lock, run_provisioning_script};
    let db = TestDb::new().await;
    let lock = provisioning_lock().await;
    let mut admin = AsyncPgConnection::establish(&db.admin_url).await.unwrap();
    let role = format!("fluxi_sneaky_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    admin.batch_execute(&format!("CREATE ROLE {role} NOLOGIN; GRANT fluxi_provisioner TO {role}")).await.unwrap();
    let result = run_provisioning_script(&db.admin_url, db::PROVISIONING_SQL).await;
    admin.batch_execute(&format!("REVOKE fluxi_provisioner FROM {role}; DROP ROLE {role}")).await.unwrap();
    drop(lock);
    let err = result.unwrap_err().to_string();
    assert!(err.contains(&format!("roles {role} are members of fluxi_provisioner")), "{err}");
}

/// Mails delivered or given up before bodies were erased on delivery still held their
/// single-use invitation links: the migration that links invitations to their mails
/// erases those bodies, and leaves mails still waiting to be sent alone.
#[tokio::test]
async fn upgrading_erases_the_bodies_of_mails_already_delivered_or_given_up() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    const LINKING: &str = "2026-12-01-000004_invitation_mail";
    // Every migration before the one under test, as files on disk.
    let dir = std::env::temp_dir().join(format!("fluxi-mig-{}", uuid::Uuid::new_v4().simple()));
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/public");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() && entry.file_name().to_str().unwrap() < LINKING {
            let to = dir.join(entry.file_name());
            std::fs::create_dir_all(&to).unwrap();
            for f in ["up.sql", "down.sql"] {
                std::fs::copy(entry.path().join(f), to.join(f)).unwrap();
            }
        }
    }
    let db = TestDb::empty().await;
    let before = diesel_migrations::FileBasedMigrations::from_path(&dir).unwrap();
    db::run_migrations_from(&db.url, before).await.unwrap();
    std::fs::remove_dir_all(dir).ok();

    let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
    conn.batch_execute(
        "INSERT INTO outbox_emails (recipient, subject, body, sent_at, failed_at) VALUES \
           ('sent@example.test', 'Invitation', 'link: /invite/aaaa', now(), NULL), \
           ('bounced@example.test', 'Invitation', 'link: /invite/bbbb', NULL, now()), \
           ('waiting@example.test', 'Invitation', 'link: /invite/cccc', NULL, NULL)",
    )
    .await
    .unwrap();
    let applied = db::run_public_migrations(&db.url).await.unwrap();
    assert!(matches!(applied.as_slice(), [first, ..] if first == LINKING), "{applied:?}");

    let bodies: Vec<(String, String)> =
        diesel::sql_query("SELECT recipient AS a, body AS b FROM outbox_emails ORDER BY recipient")
            .load::<Pair>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.a, p.b))
            .collect();
    assert_eq!(
        bodies,
        vec![
            ("bounced@example.test".to_string(), fluxi_core::outbox::BODY_ERASED_WHEN_GIVEN_UP.to_string()),
            ("sent@example.test".to_string(), fluxi_core::outbox::BODY_ERASED_AFTER_DELIVERY.to_string()),
            ("waiting@example.test".to_string(), "link: /invite/cccc".to_string()),
        ]
    );
}

#[derive(diesel::QueryableByName)]
struct Pair {
    #[diesel(sql_type = diesel::sql_types::Text)]
    a: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    b: String,
}
