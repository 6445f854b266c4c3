//! Tenant migrations: applied inside each workspace schema, as that workspace's role,
//! recorded in the schema's own `schema_migrations` table and summarized in
//! `public.workspaces.tenant_version` so that "nothing pending" costs one query.

use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::stream::{self, StreamExt};
use uuid::Uuid;

use super::{scoped_transaction, TenantError, TenantIdent};
use crate::db::Pool;
use crate::schema::workspaces;

/// Every tenant migration, oldest first: (version, SQL). Versions sort in order.
pub const TENANT_MIGRATIONS: &[(&str, &str)] = &[
    ("2026-11-29-000001_notes", include_str!("../../../../migrations/tenant/2026-11-29-000001_notes/up.sql")),
    (
        "2026-12-06-000001_integrations",
        include_str!("../../../../migrations/tenant/2026-12-06-000001_integrations/up.sql"),
    ),
    ("2026-12-08-000001_assistant", include_str!("../../../../migrations/tenant/2026-12-08-000001_assistant/up.sql")),
];

pub fn latest_version() -> &'static str {
    TENANT_MIGRATIONS.last().map(|(v, _)| *v).unwrap_or("")
}

const VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";

/// Creates a workspace's role and schema (owned by that role) on `conn`, which must be
/// inside the caller's transaction, and applies all tenant migrations to it. Must be the
/// caller's last step: the tenant scope it sets lasts until the outer transaction ends.
pub(crate) async fn provision(conn: &mut AsyncPgConnection, workspace_id: Uuid) -> Result<(), TenantError> {
    let ident = TenantIdent::for_workspace(workspace_id);
    let name = ident.as_str();
    // The login role may not create roles itself (no CREATEROLE: on PostgreSQL 15 that
    // would let it grant itself any predefined role); the administrator's provisioning
    // function creates the role and makes us a member (migrations/admin/provisioning.sql).
    diesel::sql_query("SELECT fluxi_provisioning.create_workspace_role($1)")
        .bind::<Text, _>(name)
        .execute(conn)
        .await?;
    // Identifiers come from TenantIdent (strict pattern); nothing here is user input.
    // A new schema grants nothing to PUBLIC; only its owner role can use it.
    conn.batch_execute(&format!("CREATE SCHEMA {name} AUTHORIZATION {name};")).await?;
    apply_pending_in(conn, &ident, &ident, TENANT_MIGRATIONS).await?;
    Ok(())
}

/// Applies pending tenant migrations to one schema, in a (nested) transaction scoped
/// to it; returns the versions applied.
async fn apply_pending_in(
    conn: &mut AsyncPgConnection,
    schema: &TenantIdent,
    role: &TenantIdent,
    migrations: &'static [(&'static str, &'static str)],
) -> Result<Vec<String>, TenantError> {
    scoped_transaction(conn, schema, role, |c| {
        async move {
            c.batch_execute(VERSION_TABLE).await?;
            let done: Vec<String> = diesel::sql_query("SELECT version FROM schema_migrations")
                .load::<VersionRow>(c)
                .await?
                .into_iter()
                .map(|r| r.version)
                .collect();
            let mut applied = Vec::new();
            for (version, sql) in migrations {
                if done.iter().any(|d| d == version) {
                    continue;
                }
                c.batch_execute(sql).await?;
                diesel::sql_query("INSERT INTO schema_migrations (version) VALUES ($1)")
                    .bind::<Text, _>(*version)
                    .execute(c)
                    .await?;
                applied.push(version.to_string());
            }
            Ok(applied)
        }
        .scope_boxed()
    })
    .await
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    version: String,
}

/// What a fleet run did.
#[derive(Debug, Default)]
pub struct FleetReport {
    /// Workspaces that were behind and are now up to date.
    pub migrated: usize,
    /// Workspaces whose migration failed, with the reason; the others are unaffected.
    pub failed: Vec<(Uuid, String)>,
}

/// Brings every workspace schema up to the newest tenant migration, `concurrency`
/// schemas at a time. Each schema migrates in its own transaction (with a lock timeout),
/// so one failure leaves the others alone and a re-run resumes where it stopped.
/// When nothing is pending this is a single query.
pub async fn migrate_fleet(pool: &Pool, concurrency: usize) -> Result<FleetReport, crate::db::DbError> {
    migrate_fleet_with(pool, concurrency, TENANT_MIGRATIONS).await
}

/// [`migrate_fleet`] with an explicit migration list (benchmarks add a pending one).
pub async fn migrate_fleet_with(
    pool: &Pool,
    concurrency: usize,
    migrations: &'static [(&'static str, &'static str)],
) -> Result<FleetReport, crate::db::DbError> {
    let latest = migrations.last().map(|(v, _)| *v).unwrap_or("");
    let behind: Vec<(Uuid, String, String)> = {
        let mut conn = pool.get().await.map_err(|e| crate::db::DbError::Pool(e.to_string()))?;
        workspaces::table
            .filter(workspaces::tenant_version.lt(latest))
            .select((workspaces::id, workspaces::schema_name, workspaces::role_name))
            .load(&mut conn)
            .await?
    };
    if behind.is_empty() {
        return Ok(FleetReport::default());
    }
    let pool = Arc::new(pool.clone());
    let results: Vec<(Uuid, Result<Outcome, String>)> = stream::iter(behind)
        .map(|(id, schema, role)| {
            let pool = pool.clone();
            async move { (id, migrate_one(&pool, id, &schema, &role, migrations).await) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut report = FleetReport::default();
    for (id, result) in results {
        match result {
            Ok(Outcome::Migrated) => report.migrated += 1,
            Ok(Outcome::Deleted) => {}
            Err(e) => {
                tracing::error!(workspace = %id, error = %e, "tenant migration failed");
                record_failure(&pool, id).await;
                report.failed.push((id, e));
            }
        }
    }
    Ok(report)
}

/// A failed upgrade is an event of the workspace's trail (its admins see why it answers
/// "being upgraded"); if even that cannot be written, the log line above has to do.
async fn record_failure(pool: &Pool, workspace: Uuid) {
    use crate::audit::{Action, Audit, Detail, Event, Outcome, SystemJob, Target};
    let clock = crate::clock::SystemClock;
    let audit = Audit::system(SystemJob::FleetMigrator, &clock);
    let event = Event::workspace(
        workspace,
        Action::WorkspaceMigrationFailed,
        Target::Workspace(workspace),
        Outcome::Failed,
        Detail::None,
    );
    let recorded = match pool.get().await {
        Ok(mut conn) => audit.record(&mut conn, event).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = recorded {
        tracing::error!(workspace = %workspace, error = %e, "could not record a failed tenant migration");
    }
}

/// What became of one workspace in a fleet run.
enum Outcome {
    Migrated,
    /// Deleted after the run listed it: nothing to migrate, and not a failure.
    Deleted,
}

async fn migrate_one(
    pool: &Pool,
    id: Uuid,
    schema: &str,
    role: &str,
    migrations: &'static [(&'static str, &'static str)],
) -> Result<Outcome, String> {
    let (Some(schema), Some(role)) = (TenantIdent::parse(schema), TenantIdent::parse(role)) else {
        return Err(TenantError::InvalidIdent.to_string());
    };
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let latest = migrations.last().map(|(v, _)| *v).unwrap_or("");
    conn.transaction::<_, TenantError, _>(|c| {
        async move {
            c.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
            // Registry first: the scoped part must come last, since its SET LOCALs last
            // until this outer transaction ends. A failure rolls both back. The update
            // also locks the row, so the workspace cannot be deleted under the migration;
            // if it was deleted since the listing, there is nothing left to do.
            let registered = diesel::update(workspaces::table.find(id))
                .set(workspaces::tenant_version.eq(latest))
                .execute(c)
                .await?;
            if registered == 0 {
                return Ok(Outcome::Deleted);
            }
            apply_pending_in(c, &schema, &role, migrations).await?;
            Ok(Outcome::Migrated)
        }
        .scope_boxed()
    })
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenant_migration_folder_is_registered_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/tenant");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("up.sql").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let registered: Vec<String> = TENANT_MIGRATIONS.iter().map(|(v, _)| v.to_string()).collect();
        assert_eq!(registered, on_disk);
    }

    #[test]
    fn tenant_idents_are_strict() {
        let id = Uuid::new_v4();
        let ident = TenantIdent::for_workspace(id);
        assert_eq!(TenantIdent::parse(ident.as_str()), Some(ident));
        for bad in [
            "ws_",
            "public",
            "ws_ABCDEF00000000000000000000000000",
            "ws_0123456789abcdef0123456789abcdef; DROP",
            "x_0123456789abcdef0123456789abcdef",
        ] {
            assert!(TenantIdent::parse(bad).is_none(), "{bad}");
        }
    }
}
