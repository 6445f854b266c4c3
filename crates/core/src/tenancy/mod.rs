//! Schema-per-workspace tenancy.
//!
//! Every workspace has its own PostgreSQL schema and its own NOLOGIN role that alone has
//! rights on that schema. Tenant tables are reachable only through the functions of this
//! module's submodules (e.g. [`notes`]), and each of them requires a
//! [`crate::workspaces::WorkspaceAccess`] — a capability only
//! [`crate::workspaces::authorize`] creates, after the membership check — and runs in a
//! transaction scoped with `set_config('search_path', …, true)` and the workspace role
//! assumed (`SET LOCAL ROLE`, as `set_config('role', …, true)`), both undone at COMMIT or
//! ROLLBACK, so a pooled connection never carries one tenant's
//! scope into its next use.
//!
//! The tenant tables' Diesel definitions are private to this module, so a tenant query
//! outside a tenant transaction does not compile:
//!
//! ```compile_fail
//! use fluxi_core::tenancy::schema::notes; // private: tenant tables are not reachable
//! ```
//!
//! and the capability the tenant functions require cannot be made up, only obtained from
//! the membership check (its fields are private):
//!
//! ```compile_fail
//! use fluxi_core::tenancy::TenantIdent;
//! use fluxi_core::workspaces::{Role, WorkspaceAccess};
//! let ident = TenantIdent::for_workspace(uuid::Uuid::nil());
//! let forged = WorkspaceAccess {
//!     workspace_id: uuid::Uuid::nil(),
//!     slug: "a".into(),
//!     name: "A".into(),
//!     schema: ident.clone(),
//!     db_role: ident,
//!     user_id: uuid::Uuid::nil(),
//!     role: Role::Owner,
//! };
//! ```
//!
//! (The compiling counterpart, for comparison: the same names are public.)
//!
//! ```
//! use fluxi_core::tenancy::TenantIdent;
//! use fluxi_core::workspaces::{Role, WorkspaceAccess};
//! let _ = (TenantIdent::for_workspace(uuid::Uuid::nil()), Role::Owner, std::mem::size_of::<WorkspaceAccess>());
//! ```

pub mod migrations;
pub mod notes;
pub(crate) mod schema;

use diesel::sql_types::Text;
use diesel_async::scoped_futures::{ScopedBoxFuture, ScopedFutureExt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// A schema or role name generated from a workspace id: `ws_` + 32 lowercase hex digits.
/// Only values of this exact shape are ever put into SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantIdent(String);

impl TenantIdent {
    pub fn for_workspace(id: Uuid) -> Self {
        Self(format!("ws_{}", id.simple()))
    }

    /// Accepts only the strict pattern `^ws_[0-9a-f]{32}$`.
    pub fn parse(raw: &str) -> Option<Self> {
        let hex = raw.strip_prefix("ws_")?;
        let ok = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("the workspace registry holds an invalid schema or role name")]
    InvalidIdent,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Scopes one transaction to a workspace: its schema only on the search path, its role
/// assumed. Everything the callback does happens inside that transaction. Nested in an
/// outer transaction it becomes a savepoint, and the scope then lasts until the *outer*
/// transaction ends (SET LOCAL semantics): callers nest it only as their last step.
pub(crate) async fn scoped_transaction<'a, R, E, F>(
    conn: &mut AsyncPgConnection,
    schema: &TenantIdent,
    role: &TenantIdent,
    callback: F,
) -> Result<R, E>
where
    F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> ScopedBoxFuture<'a, 'r, Result<R, E>> + Send + 'a,
    E: From<diesel::result::Error> + Send + 'a,
    R: Send + 'a,
{
    let (schema, role) = (schema.as_str().to_string(), role.as_str().to_string());
    conn.transaction(move |c| {
        async move {
            // One statement for both settings, values bound (nothing formatted into SQL).
            // `set_config('role', …, true)` is `SET LOCAL ROLE`: the same membership check,
            // reverted at the end of the transaction.
            diesel::sql_query("SELECT set_config('search_path', $1, true), set_config('role', $2, true)")
                .bind::<Text, _>(schema)
                .bind::<Text, _>(role)
                .execute(c)
                .await?;
            callback(c).await
        }
        .scope_boxed()
    })
    .await
}

/// Scopes the rest of the caller's transaction to a workspace (as [`scoped_transaction`]
/// does) until [`leave_scope`]: for an action that changes tenant rows and then writes
/// shared tables (the audit trail, a queue) in the same transaction.
pub(crate) async fn enter_scope(
    conn: &mut AsyncPgConnection,
    schema: &TenantIdent,
    role: &TenantIdent,
) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT set_config('search_path', $1, true), set_config('role', $2, true)")
        .bind::<Text, _>(schema.as_str())
        .bind::<Text, _>(role.as_str())
        .execute(conn)
        .await
        .map(|_| ())
}

/// Back to the login role and its search path, still inside the transaction.
pub(crate) async fn leave_scope(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute("RESET ROLE; RESET search_path;").await
}

/// Every workspace whose schema has tenant migration `version` (or a later one), with its
/// schema (operators' passes over all tenants; one the fleet migration has not reached is
/// left out, as its tables are not there yet).
pub(crate) async fn workspace_schemas_from(
    conn: &mut AsyncPgConnection,
    version: &str,
) -> diesel::QueryResult<Vec<(Uuid, TenantIdent)>> {
    use crate::schema::workspaces;
    use diesel::{ExpressionMethods, QueryDsl};
    let rows: Vec<(Uuid, String)> = workspaces::table
        .filter(workspaces::tenant_version.ge(version))
        .select((workspaces::id, workspaces::schema_name))
        .order(workspaces::id)
        .load(conn)
        .await?;
    Ok(rows.into_iter().filter_map(|(id, s)| Some((id, TenantIdent::parse(&s)?))).collect())
}

pub(crate) async fn schemas_from(conn: &mut AsyncPgConnection, version: &str) -> diesel::QueryResult<Vec<TenantIdent>> {
    Ok(workspace_schemas_from(conn, version).await?.into_iter().map(|(_, s)| s).collect())
}
