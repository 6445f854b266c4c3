//! Test fixtures: a clean database per test, cloned from a migrated template, and
//! builders for domain objects.
//!
//! Needs `FLUXI_TEST_ADMIN_URL`: a URL of a throwaway cluster's maintenance database
//! with the right to create databases (scripts/test sets it).

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};

use crate::accounts::{self, NewUser, PasswordHasher, User};
use crate::db::{self, Pool};

pub struct TestDb {
    /// Connects as the application role (`fluxi_app`: not a superuser).
    pub url: String,
    /// Connects to the same database as the cluster's superuser (for inspection).
    pub admin_url: String,
    pub name: String,
    pub pool: Pool,
}

pub const APP_ROLE: &str = "fluxi_app";

/// The same URL with the application role as user (same password on test clusters).
pub fn as_app_role(url: &str) -> String {
    as_login_role(url, APP_ROLE)
}

/// The same URL with another user name (and the same password).
pub fn as_login_role(url: &str, role: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once(':') {
            Some((_user, after)) => format!("{scheme}://{role}:{after}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

pub fn password_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(cred, _)| cred.split_once(':'))
        .map(|(_, pw)| pw.to_string())
        .unwrap_or_default()
}

fn admin_url() -> String {
    std::env::var("FLUXI_TEST_ADMIN_URL").expect(
        "FLUXI_TEST_ADMIN_URL must point at a throwaway PostgreSQL cluster (run the tests through scripts/test)",
    )
}

/// Replaces the database name (the last path segment) of a connection URL.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The template's name depends on the migrations, so a changed migration set gets a
/// fresh template instead of a stale one.
fn template_name() -> String {
    let names: Vec<String> = MigrationSource::<Pg>::migrations(&db::PUBLIC_MIGRATIONS)
        .expect("embedded migrations")
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    // Their text too (read from the source tree the tests run in): an edited migration
    // must not reuse a template built from its old version.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/public");
    let texts: Vec<String> =
        names.iter().map(|n| std::fs::read_to_string(dir.join(n).join("up.sql")).unwrap_or_default()).collect();
    let digest =
        Sha256::digest(format!("{}\n{}\n{}", names.join("\n"), texts.join("\n"), db::PROVISIONING_SQL).as_bytes());
    format!("fluxi_tpl_{}", &hex::encode(digest)[..16])
}

impl TestDb {
    /// A new, empty, fully migrated database of its own.
    pub async fn new() -> Self {
        let admin = admin_url();
        let template = template_name();
        let mut conn = AsyncPgConnection::establish(&admin).await.expect("connect to the test cluster");
        // Serialize template creation across test processes and threads.
        diesel::sql_query("SELECT pg_advisory_lock(4242)").execute(&mut conn).await.unwrap();
        let exists: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
            "(SELECT count(*) FROM pg_database WHERE datname = '{template}')"
        )))
        .get_result(&mut conn)
        .await
        .unwrap();
        if exists == 0 {
            let password = password_of(&admin).replace('\'', "");
            diesel::sql_query(format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN \
                 CREATE ROLE {APP_ROLE} LOGIN NOINHERIT NOCREATEROLE NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'; END IF; END $$"
            ))
            .execute(&mut conn)
            .await
            .unwrap();
            // A cluster kept from before the provisioning functions gave the role CREATEROLE.
            diesel::sql_query(format!("ALTER ROLE {APP_ROLE} NOINHERIT NOCREATEROLE NOSUPERUSER NOBYPASSRLS"))
                .execute(&mut conn)
                .await
                .unwrap();
            let building = format!("{template}_building");
            diesel::sql_query(format!("DROP DATABASE IF EXISTS {building}")).execute(&mut conn).await.unwrap();
            diesel::sql_query(format!("CREATE DATABASE {building} OWNER {APP_ROLE}")).execute(&mut conn).await.unwrap();
            own_public_schema(&url_with_database(&admin, &building)).await;
            db::run_public_migrations(&as_app_role(&url_with_database(&admin, &building)))
                .await
                .expect("migrate the template");
            diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {template}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        diesel::sql_query("SELECT pg_advisory_unlock(4242)").execute(&mut conn).await.unwrap();
        let name = format!("fluxi_test_{}", uuid::Uuid::new_v4().simple());
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template} OWNER {APP_ROLE}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let admin_url = url_with_database(&admin, &name);
        let url = as_app_role(&admin_url);
        let pool = db::build_pool(&url, 8).expect("pool");
        Self { url, admin_url, name, pool }
    }

    /// An empty database with no migrations applied, for migration tests.
    pub async fn empty() -> Self {
        let admin = admin_url();
        // The application role exists once a migrated TestDb was made; make sure it does.
        drop(Self::new().await);
        let mut conn = AsyncPgConnection::establish(&admin).await.expect("connect to the test cluster");
        let name = format!("fluxi_test_{}", uuid::Uuid::new_v4().simple());
        diesel::sql_query(format!("CREATE DATABASE {name} OWNER {APP_ROLE}")).execute(&mut conn).await.unwrap();
        let admin_url = url_with_database(&admin, &name);
        // The provisioning script checks and may alter one cluster-wide role, which two
        // sessions must not do at once; the template's lock serializes it (advisory locks
        // are per database: this one is taken in the admin database, like `new`'s).
        diesel::sql_query("SELECT pg_advisory_lock(4242)").execute(&mut conn).await.unwrap();
        own_public_schema(&admin_url).await;
        diesel::sql_query("SELECT pg_advisory_unlock(4242)").execute(&mut conn).await.unwrap();
        let url = as_app_role(&admin_url);
        let pool = db::build_pool(&url, 4).expect("pool");
        Self { url, admin_url, name, pool }
    }

    pub async fn conn(&self) -> db::PooledConn {
        self.pool.get().await.expect("test connection")
    }
}

/// A connection to the test cluster's admin database holding the lock that serializes
/// the provisioning script (it checks and may alter the cluster-wide `fluxi_provisioner`
/// role); released when the connection is dropped. Tests that change that role hold it
/// for as long as their change lasts, so no other test's database set-up sees it.
pub async fn provisioning_lock() -> AsyncPgConnection {
    let mut conn = AsyncPgConnection::establish(&admin_url()).await.expect("connect to the test cluster");
    diesel::sql_query("SELECT pg_advisory_lock(4242)").execute(&mut conn).await.unwrap();
    conn
}

/// Runs the provisioning script as the superuser in `admin_db_url`'s database, as an
/// administrator would (again); the caller holds [`provisioning_lock`].
pub async fn run_provisioning_script(admin_db_url: &str, sql: &str) -> diesel::QueryResult<()> {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = AsyncPgConnection::establish(admin_db_url)
        .await
        .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))?;
    conn.batch_execute(sql).await
}

/// The application role is NOINHERIT, so it does not get the implicit rights of
/// `pg_database_owner` on `public`: give it the schema explicitly; and install the
/// administrator's workspace role provisioning functions (as scripts/lib.sh does).
async fn own_public_schema(admin_db_url: &str) {
    let mut conn = AsyncPgConnection::establish(admin_db_url).await.expect("connect as superuser");
    diesel::sql_query(format!("ALTER SCHEMA public OWNER TO {APP_ROLE}")).execute(&mut conn).await.unwrap();
    run_provisioning_script(admin_db_url, db::PROVISIONING_SQL).await.expect("install the provisioning functions");
}

/// Builds a user with sensible defaults; every field can be overridden.
pub struct UserBuilder {
    display_name: String,
    email: String,
    password: String,
    verified: bool,
}

impl Default for UserBuilder {
    fn default() -> Self {
        let n = uuid::Uuid::new_v4().simple().to_string();
        Self {
            display_name: "Test Person".into(),
            email: format!("person-{}@example.test", &n[..12]),
            password: "correct horse battery staple".into(),
            verified: true,
        }
    }
}

impl UserBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn display_name(mut self, v: &str) -> Self {
        self.display_name = v.into();
        self
    }
    pub fn email(mut self, v: &str) -> Self {
        self.email = v.into();
        self
    }
    pub fn password(mut self, v: &str) -> Self {
        self.password = v.into();
        self
    }
    /// Leaves the email unverified (built accounts have verified theirs by default).
    pub fn unverified(mut self) -> Self {
        self.verified = false;
        self
    }
    pub fn password_str(&self) -> &str {
        &self.password
    }

    pub async fn create(self, pool: &Pool, hasher: &PasswordHasher) -> User {
        let hash = hasher.hash(&self.password).await.expect("hash");
        let mut conn = pool.get().await.expect("conn");
        let user = accounts::create_user(
            &mut conn,
            NewUser {
                email: self.email.trim(),
                email_normalized: &accounts::normalize_email(&self.email),
                display_name: &self.display_name,
                password_hash: &hash,
            },
        )
        .await
        .expect("create user");
        if !self.verified {
            return user;
        }
        use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
        diesel::update(crate::schema::users::table.find(user.id))
            .set(crate::schema::users::email_verified_at.eq(time::OffsetDateTime::now_utc()))
            .returning(User::as_returning())
            .get_result(&mut conn)
            .await
            .expect("verify email")
    }
}

/// Builds a workspace (through the domain's own creation: schema, role, tenant tables)
/// owned by one account, with further members in the roles given. The one place tests add
/// memberships without an invitation.
pub struct WorkspaceBuilder {
    name: String,
    members: Vec<(uuid::Uuid, crate::workspaces::Role)>,
}

impl WorkspaceBuilder {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), members: Vec::new() }
    }

    pub fn member(mut self, user: &User, role: crate::workspaces::Role) -> Self {
        self.members.push((user.id, role));
        self
    }

    /// Creates it, owned by `owner`; returns its slug.
    pub async fn create(self, pool: &Pool, owner: &User) -> String {
        let mut conn = pool.get().await.expect("conn");
        let now = time::OffsetDateTime::now_utc();
        let created =
            crate::workspaces::create_workspace(&mut conn, &audit_as(owner), owner.id, &self.name, now, u32::MAX)
                .await
                .expect("create workspace");
        for (user, role) in self.members {
            add_member(pool, &created.slug, user, role).await;
        }
        created.slug
    }
}

/// Adds `user` to the workspace `slug` with `role`, as an accepted invitation would.
pub async fn add_member(pool: &Pool, slug: &str, user: uuid::Uuid, role: crate::workspaces::Role) {
    use crate::schema::{memberships, workspaces};
    use diesel::{ExpressionMethods, QueryDsl};
    let mut conn = pool.get().await.expect("conn");
    let ws: uuid::Uuid = workspaces::table
        .filter(workspaces::slug.eq(slug))
        .select(workspaces::id)
        .first(&mut conn)
        .await
        .expect("workspace");
    diesel::insert_into(memberships::table)
        .values((memberships::workspace_id.eq(ws), memberships::user_id.eq(user), memberships::role.eq(role.as_str())))
        .execute(&mut conn)
        .await
        .expect("add member");
}

/// Pseudonym keys for tests that call the domain directly (one random key per process).
pub fn test_keys() -> &'static crate::pseudonym::PseudonymKeys {
    static KEYS: std::sync::OnceLock<crate::pseudonym::PseudonymKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| crate::pseudonym::PseudonymKeys::single(crate::pseudonym::Pseudonymizer::random()))
}

/// The audit context of `actor` outside any request (domain calls in tests).
fn audit_of(actor: crate::audit::Actor<'_>) -> crate::audit::Audit<'_> {
    static CLOCK: crate::clock::SystemClock = crate::clock::SystemClock;
    crate::audit::Audit {
        keys: Some(test_keys()),
        clock: &CLOCK,
        origin: &crate::audit::Origin::NONE,
        actor,
        repeats: None,
    }
}

/// `user` acting outside any request.
pub fn audit_as(user: &User) -> crate::audit::Audit<'_> {
    audit_of(crate::audit::Actor::User { id: user.id, email_normalized: &user.email_normalized })
}

/// Nobody in particular acting (domain calls whose actor does not matter to the test).
pub fn audit() -> crate::audit::Audit<'static> {
    audit_of(crate::audit::Actor::Anonymous { email_normalized: None })
}
