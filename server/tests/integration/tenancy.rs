//! Tenant isolation: schema per workspace, per-workspace database roles, scoped
//! transactions that never leak into pooled connections, cross-tenant attempts.

use crate::common::{self, TestApp, PASSWORD};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use fluxi_core::clock::Clock;
use fluxi_core::schema::{invitations, memberships, workspaces};
use fluxi_core::tenancy::notes;
use reqwest::StatusCode;

#[derive(QueryableByName, Debug)]
struct Scope {
    #[diesel(sql_type = Text)]
    search_path: String,
    #[diesel(sql_type = Text)]
    current_user: String,
}

async fn scope_of(conn: &mut AsyncPgConnection) -> Scope {
    diesel::sql_query("SELECT current_setting('search_path') AS search_path, current_user::text AS current_user")
        .get_result(conn)
        .await
        .unwrap()
}

async fn schema_of(app: &TestApp, slug: &str) -> String {
    let mut conn = app.db.conn().await;
    workspaces::table.filter(workspaces::slug.eq(slug)).select(workspaces::schema_name).first(&mut conn).await.unwrap()
}

#[tokio::test]
async fn creating_a_workspace_makes_its_schema_and_role_in_one_go() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Analytical Engines").await;
    // The name, then a random suffix, whether or not the name is taken: a slug does not
    // tell whether another workspace has that name.
    let suffix = slug.strip_prefix("analytical-engines-").expect("the name first");
    assert!(suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()), "{slug}");
    let schema = schema_of(&app, &slug).await;
    assert!(fluxi_core::tenancy::TenantIdent::parse(&schema).is_some());
    let mut admin = AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    let owner: String = diesel::sql_query(format!(
        "SELECT tableowner AS search_path, current_user::text AS current_user FROM pg_tables WHERE schemaname = '{schema}' AND tablename = 'notes'"
    ))
    .get_result::<Scope>(&mut admin)
    .await
    .unwrap()
    .search_path;
    assert_eq!(owner, schema, "tenant tables belong to the workspace's own role, not the application role");
    // The same name again gets a different slug.
    let again = app.workspace(&mut ada, "Analytical Engines").await;
    assert_ne!(again, slug);
    assert_eq!(again.len(), slug.len(), "the same shape either way");
    // Bad names are refused with a field error and create nothing.
    let res = ada.client.call("create_workspace", &[("name", "   ")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut conn = app.db.conn().await;
    let n: i64 = workspaces::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_failed_creation_leaves_no_schema_role_or_row() {
    let app = TestApp::spawn().await;
    let ada = app.person("Ada").await;
    // The owner membership fails (unknown user) after the registry row was inserted in
    // the same transaction: nothing of the workspace may remain.
    let mut conn = app.db.conn().await;
    let missing_user = uuid::Uuid::new_v4();
    let err = fluxi_core::workspaces::create_workspace(
        &mut conn,
        &fluxi_core::testing::audit(),
        missing_user,
        "Doomed",
        app.clock.now(),
        10,
    )
    .await;
    assert!(err.is_err());
    let n: i64 = workspaces::table.count().get_result(&mut conn).await.unwrap();
    assert_eq!(n, 0);
    let mut admin = AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    let schemas: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ws\\_%')",
    ))
    .get_result(&mut admin)
    .await
    .unwrap();
    assert_eq!(schemas, 0);
    drop(ada);
}

/// The last step of creating a workspace fails (its tenant migrations, after the registry
/// row, the owner's membership, the role and the schema were made in the same
/// transaction): none of them may remain. The failure is injected by an event trigger.
#[tokio::test]
async fn a_creation_failing_in_its_tenant_migrations_leaves_no_schema_role_or_row() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let mut admin = AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    admin
        .batch_execute(
            r"CREATE FUNCTION fail_tenant_tables() RETURNS event_trigger LANGUAGE plpgsql AS $$
              DECLARE cmd record;
              BEGIN
                  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
                      IF cmd.schema_name LIKE 'ws\_%' AND cmd.object_identity LIKE '%.notes' THEN
                          RAISE EXCEPTION 'injected failure in schema %', cmd.schema_name;
                      END IF;
                  END LOOP;
              END $$;
              CREATE EVENT TRIGGER fail_tenant_tables ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
                  EXECUTE FUNCTION fail_tenant_tables();",
        )
        .await
        .unwrap();
    let mut conn = app.db.conn().await;
    let err = fluxi_core::workspaces::create_workspace(
        &mut conn,
        &fluxi_core::testing::audit(),
        ada.user.id,
        "Doomed",
        app.clock.now(),
        10,
    )
    .await
    .unwrap_err()
    .to_string();
    let at = err.find("injected failure in schema ws_").unwrap_or_else(|| panic!("the injected failure: {err}"));
    let ident: String = err[at + "injected failure in schema ".len()..].chars().take(35).collect();
    assert!(ident.len() == 35 && ident[3..].chars().all(|c| c.is_ascii_hexdigit()), "{ident}");

    let count = |sql: String| diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&sql));
    let left: i64 = count(format!(
        "(SELECT count(*) FROM pg_namespace WHERE nspname = '{ident}') + (SELECT count(*) FROM pg_roles WHERE rolname = '{ident}') \
         + (SELECT count(*) FROM workspaces) + (SELECT count(*) FROM memberships)"
    ))
    .get_result(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, 0, "schema, role, registry row or membership of {ident} left behind");

    // Through the server function: a plain error, without the database's words.
    let res = ada.client.call("create_workspace", &[("name", "Doomed")]).await;
    assert!(res.status.is_server_error(), "{}", res.status);
    assert!(!res.body.contains("injected") && !res.body.contains("ws_"), "{}", res.body);

    // The injected failure was the only obstacle.
    admin.batch_execute("DROP EVENT TRIGGER fail_tenant_tables").await.unwrap();
    assert!(app.workspace(&mut ada, "Doomed").await.starts_with("doomed-"));
}

#[tokio::test]
async fn the_application_role_cannot_read_a_workspace_schema_without_its_role() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let mut bob = app.person("Bob").await;
    let a = app.workspace(&mut ada, "A").await;
    let b = app.workspace(&mut bob, "B").await;
    let (sa, sb) = (schema_of(&app, &a).await, schema_of(&app, &b).await);
    let access_a = app.access(&a, &ada).await;
    let mut conn = app.db.conn().await;
    notes::create_note(&mut conn, &access_a, "secret of A", "").await.unwrap();

    // The application's login role: no superuser, no rights on tenant tables by itself.
    let is_super: bool =
        diesel::dsl::select(diesel::dsl::sql::<Bool>("(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"))
            .get_result(&mut conn)
            .await
            .unwrap();
    assert!(!is_super);
    let denied = diesel::sql_query(format!("SELECT title FROM {sa}.notes")).execute(&mut conn).await;
    assert!(denied.unwrap_err().to_string().contains("permission denied"));

    // With B's role assumed, A's schema is still out of reach.
    let (sa2, sb2) = (sa.clone(), sb.clone());
    let res = conn
        .transaction::<_, diesel::result::Error, _>(|c| {
            Box::pin(async move {
                c.batch_execute(&format!("SET LOCAL ROLE {sb2}")).await?;
                diesel::sql_query(format!("SELECT title FROM {sa2}.notes")).execute(c).await
            })
        })
        .await;
    assert!(res.unwrap_err().to_string().contains("permission denied"));

    // With A's own role it works (this is what the tenant functions do).
    let n = conn
        .transaction::<_, diesel::result::Error, _>(|c| {
            Box::pin(async move {
                c.batch_execute(&format!("SET LOCAL ROLE {sa}")).await?;
                diesel::sql_query(format!("SELECT title FROM {sa}.notes")).execute(c).await
            })
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// The application's login role has no CREATEROLE: on PostgreSQL 15 that would let it
/// (say, through an SQL injection) grant itself `pg_read_all_data` (every workspace's
/// data) or `pg_execute_server_program` (shell commands on the database host). It makes
/// workspace roles only through the administrator's provisioning functions, which take
/// nothing but workspace role names.
#[tokio::test]
async fn the_application_role_can_only_make_workspace_roles_through_the_provisioning_functions() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "A").await;
    let schema = schema_of(&app, &slug).await;
    let mut conn = AsyncPgConnection::establish(&app.db.url).await.unwrap();
    async fn refused(conn: &mut AsyncPgConnection, sql: &str) -> String {
        match conn.batch_execute(sql).await {
            Ok(()) => panic!("the application role may run {sql:?}"),
            Err(e) => e.to_string(),
        }
    }
    for sql in [
        "GRANT pg_read_all_data TO CURRENT_USER",
        "GRANT pg_execute_server_program TO CURRENT_USER",
        "GRANT pg_write_all_data TO CURRENT_USER",
        "SET ROLE fluxi_provisioner",
        "CREATE ROLE intruder LOGIN PASSWORD 'x'",
        "ALTER ROLE CURRENT_USER CREATEROLE",
    ] {
        let err = refused(&mut conn, sql).await;
        assert!(err.contains("permission denied") || err.contains("must have admin option"), "{sql}: {err}");
    }
    // Its own workspace role cannot be handed to anyone else either.
    let err = refused(&mut conn, &format!("GRANT {schema} TO fluxi_provisioner")).await;
    assert!(err.contains("permission denied") || err.contains("must have admin option"), "{err}");
    // The functions cannot be replaced with others running as their owner.
    let err = refused(
        &mut conn,
        "CREATE OR REPLACE FUNCTION fluxi_provisioning.create_workspace_role(name text) RETURNS void \
         LANGUAGE sql AS 'SELECT 1'",
    )
    .await;
    assert!(err.contains("permission denied") || err.contains("must be owner"), "{err}");
    // And they take nothing but workspace role names.
    for name in [
        "fluxi",
        "fluxi_app",
        "pg_read_all_data",
        "ws_0123",
        "WS_0123456789ABCDEF0123456789ABCDEF",
        "ws_x\"; DROP ROLE fluxi; --",
    ] {
        for function in ["create_workspace_role", "drop_workspace_role"] {
            let err = diesel::sql_query(format!("SELECT fluxi_provisioning.{function}($1)"))
                .bind::<Text, _>(name)
                .execute(&mut conn)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a workspace role name"), "{function}({name:?}): {err}");
        }
    }
    let unknown = fluxi_core::tenancy::TenantIdent::for_workspace(uuid::Uuid::new_v4());
    let err = diesel::sql_query("SELECT fluxi_provisioning.drop_workspace_role($1)")
        .bind::<Text, _>(unknown.as_str())
        .execute(&mut conn)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no workspace role"), "{err}");
    // A role that still owns its schema is not dropped; the workspace goes on working.
    let err = diesel::sql_query("SELECT fluxi_provisioning.drop_workspace_role($1)")
        .bind::<Text, _>(&schema)
        .execute(&mut conn)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be dropped"), "{err}");
    let access = app.access(&slug, &ada).await;
    let mut pooled = app.db.conn().await;
    notes::create_note(&mut pooled, &access, "still here", "").await.unwrap();
}

#[tokio::test]
async fn pooled_connections_never_leak_a_tenant_scope() {
    // Two connections, thousands of interleaved operations on two workspaces, including
    // failing statements, rolled-back savepoints and cancelled futures.
    let app = TestApp::spawn_with(common::Options { pool_size: 2, ..Default::default() }).await;
    let mut ada = app.person("Ada").await;
    let mut bob = app.person("Bob").await;
    let a = app.workspace(&mut ada, "A").await;
    let b = app.workspace(&mut bob, "B").await;
    let (access_a, access_b) = (app.access(&a, &ada).await, app.access(&b, &bob).await);
    {
        let mut conn = app.db.conn().await;
        for i in 0..3 {
            notes::create_note(&mut conn, &access_a, &format!("A{i}"), "").await.unwrap();
            notes::create_note(&mut conn, &access_b, &format!("B{i}"), "").await.unwrap();
        }
    }
    let default_scope = {
        let mut conn = app.db.conn().await;
        scope_of(&mut conn).await
    };
    assert_eq!(default_scope.current_user, "fluxi_app");

    let pool = app.db.pool.clone();
    let tasks = (0..8).map(|worker| {
        let (pool, access_a, access_b) = (pool.clone(), access_a.clone(), access_b.clone());
        let default_path = default_scope.search_path.clone();
        tokio::spawn(async move {
            for i in 0..250usize {
                let (access, prefix) = if (i + worker) % 2 == 0 { (&access_a, "A") } else { (&access_b, "B") };
                let mut conn = pool.get().await.unwrap();
                match i % 5 {
                    0 | 1 => {
                        let list = notes::list_notes(&mut conn, access).await.unwrap();
                        assert!(list.iter().all(|n| n.title.starts_with(prefix)), "{prefix} saw {:?}", list);
                    }
                    2 => {
                        // A failing statement (CHECK violation) inside the scoped transaction.
                        assert!(notes::create_note(&mut conn, access, "", "").await.is_err());
                    }
                    3 => {
                        // A failed (rolled-back) savepoint for one tenant followed by a read for
                        // the other inside the same outer transaction, then rollback.
                        let (first, second) =
                            if prefix == "A" { (&access_a, &access_b) } else { (&access_b, &access_a) };
                        let (first, second) = (first.clone(), second.clone());
                        let r = conn
                            .transaction::<(), diesel::result::Error, _>(|c| {
                                Box::pin(async move {
                                    assert!(notes::create_note(c, &first, "", "").await.is_err());
                                    let other = notes::list_notes(c, &second).await.unwrap();
                                    let want = if second.slug().starts_with("a-") { "A" } else { "B" };
                                    assert!(other.iter().all(|n| n.title.starts_with(want)));
                                    Err(diesel::result::Error::RollbackTransaction)
                                })
                            })
                            .await;
                        assert!(r.is_err());
                    }
                    _ => {
                        // A cancelled future: dropped while the scoped transaction may be open.
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_micros(50),
                            notes::list_notes(&mut conn, access),
                        )
                        .await;
                    }
                }
                drop(conn);
                let mut conn = pool.get().await.unwrap();
                let scope = scope_of(&mut conn).await;
                assert_eq!(scope.search_path, default_path, "search_path leaked");
                assert_eq!(scope.current_user, "fluxi_app", "role leaked");
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
}

#[tokio::test]
async fn members_of_one_workspace_cannot_touch_another() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let mut bob = app.person("Bob").await;
    let carol = app.person("Carol").await;
    let a = app.workspace(&mut ada, "Ada's").await;
    let b = app.workspace(&mut bob, "Bob's").await;
    app.add_member(&b, &carol, "member").await;
    let access_b = app.access(&b, &bob).await;
    {
        let mut conn = app.db.conn().await;
        notes::create_note(&mut conn, &access_b, "B's plans", "confidential").await.unwrap();
    }
    let inv =
        bob.client.call("invite_member", &[("slug", &b), ("email", "dave@example.test"), ("role", "viewer")]).await;
    assert_eq!(inv.status, StatusCode::OK, "{}", inv.body);
    let b_invitation: uuid::Uuid = {
        let mut conn = app.db.conn().await;
        invitations::table.select(invitations::id).first(&mut conn).await.unwrap()
    };
    let carol_id = carol.user.id.to_string();
    let bob_id = bob.user.id.to_string();
    let inv_id = b_invitation.to_string();

    // Every workspace function on B's slug answers "not found", exactly like a slug
    // that does not exist.
    let calls: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("workspace_home", vec![("slug", &b)]),
        ("members_page", vec![("slug", &b)]),
        ("create_note", vec![("slug", &b), ("title", "x"), ("body", "")]),
        ("invite_member", vec![("slug", &b), ("email", "eve@example.test"), ("role", "admin")]),
        ("revoke_invitation", vec![("slug", &b), ("invitation_id", &inv_id)]),
        ("change_member_role", vec![("slug", &b), ("user_id", &carol_id), ("role", "viewer")]),
        ("remove_member", vec![("slug", &b), ("user_id", &carol_id)]),
        ("leave_workspace", vec![("slug", &b)]),
        ("transfer_ownership", vec![("slug", &b), ("user_id", &bob_id), ("password", PASSWORD)]),
        ("delete_workspace", vec![("slug", &b), ("password", PASSWORD)]),
    ];
    for (name, args) in &calls {
        let res = ada.client.call(name, args).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{name}: {}", res.body);
        let mut nowhere = args.clone();
        nowhere[0] = ("slug", "no-such-workspace");
        let missing = ada.client.call(name, &nowhere).await;
        assert_eq!(
            (missing.status, missing.body),
            (res.status, res.body),
            "{name}: must look like a missing workspace"
        );
    }
    // Guessing ids through her own workspace does not reach B's rows either.
    let res = ada.client.call("revoke_invitation", &[("slug", &a), ("invitation_id", &inv_id)]).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    let res = ada.client.call("change_member_role", &[("slug", &a), ("user_id", &carol_id), ("role", "viewer")]).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    let res = ada.client.call("remove_member", &[("slug", &a), ("user_id", &bob_id)]).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    // Pages by URL.
    for path in [format!("/w/{b}"), format!("/w/{b}/settings/members")] {
        let page = ada.client.get(&path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            !page.body.contains("B&#x27;s plans") && !page.body.contains("B's plans") && !page.body.contains("Carol")
        );
    }
    // Nothing changed in B.
    let mut conn = app.db.conn().await;
    let carol_role: String = memberships::table
        .filter(memberships::user_id.eq(carol.user.id))
        .select(memberships::role)
        .first(&mut conn)
        .await
        .unwrap();
    assert_eq!(carol_role, "member");
    let pending: i64 =
        invitations::table.filter(invitations::revoked_at.is_null()).count().get_result(&mut conn).await.unwrap();
    assert_eq!(pending, 1);
    let b_notes = notes::list_notes(&mut conn, &access_b).await.unwrap();
    assert_eq!(b_notes.len(), 1);
    // And Ada's own home shows none of B's notes.
    let home = ada.client.call("workspace_home", &[("slug", &a)]).await;
    assert!(!home.body.contains("B's plans"));
}

#[tokio::test]
async fn deleting_a_workspace_removes_its_schema_role_and_rows_and_needs_the_password() {
    let app = TestApp::spawn().await;
    let mut ada = app.person("Ada").await;
    let slug = app.workspace(&mut ada, "Short lived").await;
    let keep = app.workspace(&mut ada, "Kept").await;
    let schema = schema_of(&app, &slug).await;
    let wrong = ada.client.call("delete_workspace", &[("slug", &slug), ("password", "not my password")]).await;
    assert!(wrong.error().message_for("password").is_some());
    let res = ada.client.call("delete_workspace", &[("slug", &slug), ("password", PASSWORD)]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    assert_eq!(res.location(), Some("/workspaces"));
    let mut admin = AsyncPgConnection::establish(&app.db.admin_url).await.unwrap();
    let leftovers: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "((SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}') + (SELECT count(*) FROM pg_roles WHERE rolname = '{schema}'))"
    )))
    .get_result(&mut admin)
    .await
    .unwrap();
    assert_eq!(leftovers, 0, "schema and role are gone");
    assert_eq!(ada.client.call("workspace_home", &[("slug", &slug)]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(ada.client.call("workspace_home", &[("slug", &keep)]).await.status, StatusCode::OK);
}
