//! Connection pool and embedded migrations.
//!
//! Migrations come in two sets: `migrations/public` (global tables, applied once per
//! database) and `migrations/tenant` (tables each workspace schema gets; applied by the
//! workspace feature). Both are embedded in the binary.

use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool as DeadPool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub type Pool = DeadPool<AsyncPgConnection>;
pub type PooledConn = Object<AsyncPgConnection>;

pub const PUBLIC_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/public");

/// Advisory lock key serializing concurrent migration runs (e.g. two servers starting).
const MIGRATION_LOCK_KEY: i64 = 0x666c_7578_695f_6d67; // "fluxi_mg"

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("could not build the database pool: {0}")]
    Pool(String),
    #[error("could not connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),
    #[error("migration failed, nothing was applied: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("unsafe database role: {0}")]
    LoginRole(String),
}

/// One pool for the whole process.
///
/// Recycling is `Fast`: a connection handed out again is checked for a leftover open
/// transaction and for a closed socket (a server restart or a killed backend closes it),
/// but not with a `SELECT 1` round trip, which cost a third of the round trips of a
/// typical page. A connection whose socket dies silently (no FIN, e.g. a network cut)
/// fails the query that uses it and is then dropped by the pool.
pub fn build_pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    DeadPool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Applies the pending `public` migrations.
pub async fn run_public_migrations(database_url: &str) -> Result<Vec<String>, DbError> {
    run_migrations_from(database_url, PUBLIC_MIGRATIONS).await
}

#[derive(Debug, thiserror::Error)]
enum MigrateInner {
    #[error("{0}")]
    Diesel(#[from] diesel::result::Error),
    #[error("{0}")]
    Migration(String),
}

/// Applies all pending migrations of `source` in a single transaction: either every
/// pending migration is applied, or (on any failure) none is and the database is left
/// exactly as it was. A transaction-scoped advisory lock serializes concurrent runners.
pub async fn run_migrations_from<S>(database_url: &str, source: S) -> Result<Vec<String>, DbError>
where
    S: MigrationSource<Pg> + Send + 'static,
{
    let conn = AsyncPgConnection::establish(database_url).await?;
    let mut wrapper: AsyncConnectionWrapper<AsyncPgConnection> = AsyncConnectionWrapper::from(conn);
    tokio::task::spawn_blocking(move || {
        Connection::transaction::<_, MigrateInner, _>(&mut wrapper, |c| {
            diesel::RunQueryDsl::execute(
                diesel::sql_query(format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")),
                c,
            )?;
            let pending = c.pending_migrations(source).map_err(|e| MigrateInner::Migration(e.to_string()))?;
            let mut applied = Vec::with_capacity(pending.len());
            for migration in pending {
                let name = migration.name().to_string();
                c.run_migration(&migration).map_err(|e| MigrateInner::Migration(format!("{name}: {e}")))?;
                applied.push(name);
            }
            Ok(applied)
        })
    })
    .await
    .map_err(|e| DbError::Migration(format!("migration task failed: {e}")))?
    .map_err(|e| DbError::Migration(e.to_string()))
}

/// Cheap readiness probe: one round trip through the pool.
pub async fn ping(pool: &Pool) -> Result<(), DbError> {
    let mut conn = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct LoginRole {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    superuser: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    bypass_rls: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    inherit: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    create_role: bool,
    /// Both provisioning functions exist and this role may execute them.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    provisioning: bool,
    /// Roles this one may `SET ROLE` to besides workspace roles (NULL for a superuser,
    /// which may become any role anyway).
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    other_roles: Option<String>,
}

/// The administrator's part of the schema, run as a superuser in each application
/// database (docs/operations.md, "Database roles"); the test harness installs it the same way.
pub const PROVISIONING_SQL: &str = include_str!("../../../migrations/admin/provisioning.sql");

/// Refuses to run as a login role that would quietly switch off the per-workspace
/// database roles, the second line of tenant isolation (docs/tenancy.md, "Schema per
/// workspace"): a superuser or a role that bypasses row security reads every schema anyway,
/// a role with INHERIT gets the rights of every workspace role it is a member of
/// without `SET ROLE`, on PostgreSQL 15 a role with CREATEROLE can grant itself
/// `pg_read_all_data` or `pg_execute_server_program`, and a member of any role but the
/// workspace roles can `SET ROLE` to it.
/// Also requires the provisioning functions that create and drop workspace roles instead.
/// Checked once at start-up, for `serve` and `migrate`.
pub async fn check_login_role(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    let role: LoginRole = diesel::sql_query(
        // Looked up in the catalogs by name (not `to_regprocedure`, which raises an error
        // without USAGE on the schema): both functions, taking one `text` (oid 25).
        // Qualified with pg_catalog: the role being checked owns `public`.
        "WITH fns AS (SELECT p.oid, n.oid AS schema FROM pg_catalog.pg_proc p \
                      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                      WHERE n.nspname = 'fluxi_provisioning' \
                        AND p.proname IN ('create_workspace_role', 'drop_workspace_role') \
                        AND p.proargtypes = '25'::pg_catalog.oidvector) \
         SELECT r.rolname::text AS name, r.rolsuper AS superuser, r.rolbypassrls AS bypass_rls, \
                r.rolinherit AS inherit, r.rolcreaterole AS create_role, \
                (SELECT count(*) = 2 AND pg_catalog.bool_and(pg_catalog.has_function_privilege(oid, 'EXECUTE') \
                     AND pg_catalog.has_schema_privilege(schema, 'USAGE')) FROM fns) AS provisioning, \
                CASE WHEN r.rolsuper THEN NULL ELSE \
                  (SELECT pg_catalog.string_agg(m.rolname::text, ', ' ORDER BY m.rolname) FROM pg_catalog.pg_roles m \
                   WHERE m.oid <> r.oid AND m.rolname <> 'pg_database_owner' \
                     AND pg_catalog.pg_has_role(r.oid, m.oid, 'MEMBER') \
                     AND NOT (m.rolname ~ '^ws_[0-9a-f]{32}$' AND NOT m.rolcanlogin AND NOT m.rolsuper \
                              AND NOT m.rolcreaterole AND NOT m.rolcreatedb AND NOT m.rolbypassrls \
                              AND NOT m.rolreplication)) \
                END AS other_roles \
         FROM pg_catalog.pg_roles r WHERE r.rolname = session_user",
    )
    .get_result(conn)
    .await?;
    let mut wrong = Vec::new();
    if role.superuser {
        wrong.push("is a superuser");
    }
    if role.bypass_rls {
        wrong.push("has BYPASSRLS");
    }
    if role.inherit {
        wrong.push("has INHERIT (it must be NOINHERIT)");
    }
    if role.create_role {
        wrong.push("has CREATEROLE (it must be NOCREATEROLE: workspace roles are made by the provisioning functions)");
    }
    let other_roles;
    if let Some(roles) = &role.other_roles {
        // Left over from the days of CREATEROLE, or granted by someone: each of these
        // is a `SET ROLE` away (pg_read_all_data, the provisioner, …).
        other_roles = format!("may become roles other than workspace roles ({roles}; revoke them)");
        wrong.push(&other_roles);
    }
    if !role.provisioning {
        wrong.push(
            "cannot execute the workspace role provisioning functions (a superuser must run \
             migrations/admin/provisioning.sql in this database, owned by this role)",
        );
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(DbError::LoginRole(format!(
            "the database login role {:?} {}; connect as a role like the one scripts/lib.sh creates \
             (LOGIN NOINHERIT NOCREATEROLE NOSUPERUSER NOBYPASSRLS, owner of the database)",
            role.name,
            wrong.join(", ")
        )))
    }
}
