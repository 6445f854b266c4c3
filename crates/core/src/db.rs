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
use diesel_async::{AsyncPgConnection, RunQueryDsl};
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
    #[error("{0}")]
    Config(String),
    #[error("unsafe database role: {0}")]
    LoginRole(String),
}

/// How to reach PostgreSQL, read from `DATABASE_URL`. The URL may carry libpq's
/// `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and `sslrootcert`
/// (a PEM file of the certificate authorities to trust; without it, or with `system`, the
/// Mozilla roots). Whenever TLS is used, the server's certificate chain and host name are
/// verified: `require` and `verify-ca` mean `verify-full` here, because TLS that accepts
/// any certificate does not stop someone in the middle.
#[derive(Clone)]
pub struct DbTarget {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the password.
        f.debug_struct("DbTarget").field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

/// The TLS a database URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbTls {
    /// No `sslmode`, or `disable`.
    Off,
    /// `prefer`: TLS when the server offers it — which someone in the middle can refuse.
    IfOffered,
    /// `require`, `verify-ca` or `verify-full`: TLS, verified, or no connection.
    Required,
}

impl DbTls {
    /// The mode tokio-postgres is given for it.
    pub fn ssl_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            DbTls::Off => tokio_postgres::config::SslMode::Disable,
            DbTls::IfOffered => tokio_postgres::config::SslMode::Prefer,
            DbTls::Required => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// A database URL read once, as tokio-postgres reads it, with the TLS settings it asks for.
pub struct DbSettings {
    pub tls: DbTls,
    pub root_file: Option<String>,
    /// Hosts, ports, credentials and parameters; its `ssl_mode` is set from `tls`.
    pub config: tokio_postgres::Config,
}

impl DbTarget {
    pub fn parse(database_url: &str) -> Result<DbTarget, DbError> {
        let bad = |what: &str| DbError::Config(format!("DATABASE_URL: {what}"));
        let DbSettings { tls, root_file, config } = read_database_url(database_url).map_err(|e| bad(&e))?;
        let tls = match tls {
            DbTls::Off => None,
            DbTls::IfOffered | DbTls::Required => {
                let mut roots = rustls::RootCertStore::empty();
                match root_file.as_deref() {
                    Some(path) if path != "system" => {
                        use rustls::pki_types::pem::PemObject;
                        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| bad(&format!("cannot read sslrootcert {path}: {e}")))?;
                        let (added, _) = roots.add_parsable_certificates(certs);
                        if added == 0 {
                            return Err(bad(&format!("sslrootcert {path} holds no usable certificate")));
                        }
                    }
                    _ => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| bad(&e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(config))
            }
        };
        Ok(DbTarget { config, tls })
    }

    /// One connection, over TLS when the URL asks for it.
    pub async fn connect(&self) -> diesel::ConnectionResult<AsyncPgConnection> {
        let failed = |e: tokio_postgres::Error| diesel::ConnectionError::BadConnection(with_causes(&e));
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

/// An error and its causes ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer"): the cause is what an operator needs.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Reads a database URL (or key=value string) as tokio-postgres does, taking out what it
/// does not know (`sslmode=verify-*`, `sslrootcert`) without re-encoding anything else,
/// and sets the TLS mode in the result from what was asked. Whatever the spelling, the
/// mode tokio-postgres then uses is the one returned here.
pub fn read_database_url(database_url: &str) -> Result<DbSettings, String> {
    let invalid = |e: tokio_postgres::Error| format!("not a valid connection string ({e})");
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        // key=value: a leading default that a later `sslmode` overrides, as tokio-postgres reads it.
        let config: tokio_postgres::Config = format!("sslmode=disable {database_url}").parse().map_err(invalid)?;
        let tls = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => DbTls::Required,
            tokio_postgres::config::SslMode::Prefer => DbTls::IfOffered,
            _ => DbTls::Off,
        };
        return Ok(DbSettings { tls, root_file: None, config });
    }
    // tokio-postgres: credentials up to the first `@`, then host and path up to the
    // first `?`; parameters are `key=value` pairs, the key up to the next `=`, the value
    // up to the next `&`, both percent-decoded.
    let after_credentials = database_url.find('@').map_or(0, |at| at + 1);
    let (head, query) = match database_url[after_credentials..].find('?') {
        Some(q) => database_url.split_at(after_credentials + q + 1),
        None => (database_url, ""),
    };
    let decode = |raw: &str| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| "a parameter is not valid UTF-8".to_string())
    };
    let (mut tls, mut root_file, mut kept) = (DbTls::Off, None, Vec::new());
    let mut rest = query;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { return Err("a parameter has no value".into()) };
        let (raw_key, after) = (&rest[..eq], &rest[eq + 1..]);
        let (raw_value, next) = match after.find('&') {
            Some(amp) => (&after[..amp], &after[amp + 1..]),
            None => (after, ""),
        };
        match &*decode(raw_key)? {
            "sslmode" => {
                tls = match &*decode(raw_value)? {
                    "disable" => DbTls::Off,
                    "prefer" => DbTls::IfOffered,
                    "require" | "verify-ca" | "verify-full" => DbTls::Required,
                    _ => return Err("sslmode must be disable, prefer, require, verify-ca or verify-full".into()),
                }
            }
            "sslrootcert" => root_file = Some(decode(raw_value)?),
            _ => kept.push(&rest[..eq + 1 + raw_value.len()]),
        }
        rest = next;
    }
    if root_file.is_some() && tls == DbTls::Off {
        return Err("sslrootcert needs TLS: add sslmode=verify-full".into());
    }
    let head = if kept.is_empty() { head.trim_end_matches('?') } else { head };
    let mut config: tokio_postgres::Config = format!("{head}{}", kept.join("&")).parse().map_err(invalid)?;
    config.ssl_mode(tls.ssl_mode());
    Ok(DbSettings { tls, root_file, config })
}

/// One pool for the whole process.
///
/// Recycling is `Fast`: a connection handed out again is checked for a leftover open
/// transaction and for a closed socket (a server restart or a killed backend closes it),
/// but not with a `SELECT 1` round trip, which cost a third of the round trips of a
/// typical page. A connection whose socket dies silently (no FIN, e.g. a network cut)
/// fails the query that uses it and is then dropped by the pool.
pub fn build_pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let target = DbTarget::parse(database_url)?;
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |_| {
        let target = target.clone();
        Box::pin(async move { target.connect().await })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    DeadPool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// One connection outside the pool (migrations, checks), with the pool's TLS rules.
pub async fn connect(database_url: &str) -> Result<AsyncPgConnection, DbError> {
    Ok(DbTarget::parse(database_url)?.connect().await?)
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
    let conn = connect(database_url).await?;
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

/// Per-workspace roles stop a query that forgot its scope, not an SQL injection (the login
/// role may assume every workspace role). What stops injection is that no SQL text is
/// ever built from input: queries are Diesel's, values are bound parameters. This guard
/// finds every place that formats SQL text and checks it against the reviewed list, so a
/// new one cannot slip in without review.
#[cfg(test)]
mod sql_text {
    use std::path::{Path, PathBuf};

    /// Each place that formats SQL text, with the values it interpolates and why they
    /// cannot carry input.
    const REVIEWED: &[(&str, &str)] = &[
        // TenantIdent::for_workspace: "ws_" + a UUID's hex digits.
        ("crates/core/src/tenancy/migrations.rs", "name name"),
        ("crates/core/src/workspaces/lifecycle.rs", "name name"),
        // Audit partitions: names and bounds computed from a month, or read back from
        // pg_inherits and accepted only when parse_partition_name parses them.
        ("crates/core/src/audit/maintenance.rs", "name=partition_name(start) from=sql_time(start) to=sql_time(end)"),
        ("crates/core/src/audit/maintenance.rs", "name=part.name"),
        ("crates/core/src/audit/maintenance.rs", "part.name"),
        // Constants.
        ("crates/core/src/audit/maintenance.rs", "PRUNE_LOCK_KEY"),
        ("crates/core/src/db.rs", "MIGRATION_LOCK_KEY"),
    ];

    /// Source files of the crates that talk to the database (test fixtures excluded).
    fn sources() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        let mut dirs: Vec<PathBuf> =
            ["crates/core/src", "server/src", "app/src"].iter().map(|d| root.join(d)).collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("testing.rs") {
                    files.push(path);
                }
            }
        }
        files
    }

    /// The placeholders (`{x}`, or named arguments' names) of each `format!` whose result
    /// goes straight into `sql_query`, `batch_execute` or `dsl::sql`.
    fn formatted_sql(text: &str) -> Vec<String> {
        let compact: String = text.split_whitespace().collect();
        let mut found = Vec::new();
        for (at, _) in compact.match_indices("format!(") {
            let before = &compact[..at];
            if !["sql_query(", "batch_execute(&", "batch_execute(", ">(&", "sql_query(&"]
                .iter()
                .any(|p| before.ends_with(p))
            {
                continue;
            }
            let rest = &compact[at + "format!(".len()..];
            // The arguments up to the matching parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let call = &rest[..end];
            // What is interpolated: the arguments after the literal (`name=expr` or
            // `expr`), or else the literal's inline `{x}` placeholders.
            let literal_end = call.rfind('"').unwrap_or(0);
            let mut names: Vec<String> =
                call[literal_end..].split(',').skip(1).filter(|a| !a.is_empty()).map(str::to_string).collect();
            if names.is_empty() {
                let mut literal = &call[..literal_end];
                while let Some(open) = literal.find('{') {
                    let close = literal[open..].find('}').map_or(literal.len(), |c| open + c);
                    names.push(literal[open + 1..close].to_string());
                    literal = &literal[(close + 1).min(literal.len())..];
                }
            }
            found.push(names.join(" "));
        }
        found
    }

    #[test]
    fn sql_text_is_formatted_only_where_reviewed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
        let mut found = Vec::new();
        for file in sources() {
            let text = std::fs::read_to_string(&file).unwrap();
            // This module's own examples are not queries.
            let text = text.split("mod sql_text {").next().unwrap_or_default();
            let relative = file.canonicalize().unwrap().strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            found.extend(formatted_sql(text).into_iter().map(|names| (relative.clone(), names)));
        }
        found.sort();
        let mut reviewed: Vec<(String, String)> =
            REVIEWED.iter().map(|(f, n)| (f.to_string(), n.to_string())).collect();
        reviewed.sort();
        assert_eq!(found, reviewed, "SQL text built with format!: bind values instead, or review and list it here");
    }

    #[test]
    fn the_guard_sees_formatted_sql() {
        let source = r#"
            conn.batch_execute(&format!("DROP SCHEMA {name};")).await?;
            diesel::sql_query(
                format!("SELECT {a} FROM t WHERE x = '{b}'")
            );
            let ok = format!("not SQL {x}");
            diesel::sql_query(format!("X {y} {z}", y = 1, z = 2));
        "#;
        assert_eq!(formatted_sql(source), vec!["name", "a b", "y=1 z=2"]);
    }
}

#[cfg(test)]
mod database_url {
    use super::{read_database_url, DbTls};
    use tokio_postgres::config::SslMode;

    #[test]
    fn tls_parameters_are_taken_out_and_everything_else_is_read_unchanged() {
        let read = read_database_url(
            "postgres://app:p%20w@db.internal:6432/fluxi?options=-c%20statement_timeout%3D5s&sslmode=verify-full\
             &application_name=Fluxi%20web&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!((read.tls, read.root_file.as_deref()), (DbTls::Required, Some("/etc/ca.pem")));
        assert_eq!(read.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(read.config.get_password(), Some(&b"p w"[..]));
        assert_eq!(read.config.get_options(), Some("-c statement_timeout=5s"));
        assert_eq!(read.config.get_application_name(), Some("Fluxi web"));
        assert_eq!(read.config.get_ports(), [6432]);
    }

    #[test]
    fn the_mode_used_is_the_mode_read_whatever_the_spelling() {
        for (url, tls) in [
            ("postgres://app@localhost/fluxi", DbTls::Off),
            ("postgres://app@db/fluxi?sslmode=require&sslmode=disable", DbTls::Off),
            ("postgres://app@db/fluxi?sslmode=disable&sslm%6Fde=verify-ca", DbTls::Required),
            ("postgres://app@db/fluxi?sslmode=prefer", DbTls::IfOffered),
            ("postgresql://app@db/fluxi?sslmode=verify-full", DbTls::Required),
            ("host=db user=app", DbTls::Off),
            ("host=db user=app sslmode = require", DbTls::Required),
            ("host=db user=app sslmode=require sslmode=disable", DbTls::Off),
            ("host=db application_name=sslmode user=app", DbTls::Off),
        ] {
            let read = read_database_url(url).unwrap();
            assert_eq!((read.tls, read.config.get_ssl_mode()), (tls, tls.ssl_mode()), "{url}");
        }
    }

    #[test]
    fn contradictions_and_unknown_modes_are_refused() {
        for url in [
            "postgres://app@db/fluxi?sslrootcert=/etc/ca.pem",
            "postgres://app@db/fluxi?sslmode=disable&sslrootcert=/etc/ca.pem",
            "postgres://app@db/fluxi?sslmode=allow",
            "postgres://app@db/fluxi?sslmode",
            "host=db sslrootcert=/etc/ca.pem sslmode=require",
            "postgres://app@db/fluxi?sslmode=require#x",
        ] {
            assert!(read_database_url(url).is_err(), "{url}");
        }
    }
}
