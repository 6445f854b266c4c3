//! The capability every workspace operation requires, and the membership check that
//! alone makes one.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{allowed, Permission, Role, WorkspaceError};
use crate::audit::{Action, Audit, Detail, Event, Outcome, Refusal, Target};
use crate::schema::{memberships, mfa_totp, passkeys, workspaces};
use crate::sessions::SignedInWith;
use crate::tenancy::{TenantError, TenantIdent};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceSummary {
    pub slug: String,
    pub name: String,
    pub role: Role,
}

/// Proof that `user_id` is a member of a workspace with `role`, checked against the
/// database for this request. Only [`authorize`] makes one; the
/// tenant query functions require it. Fields are private so it cannot be forged.
#[derive(Debug, Clone)]
pub struct WorkspaceAccess {
    workspace_id: Uuid,
    slug: String,
    name: String,
    schema: TenantIdent,
    db_role: TenantIdent,
    user_id: Uuid,
    role: Role,
    require_mfa: bool,
}

impl WorkspaceAccess {
    /// Whether the workspace requires two-factor authentication of its members.
    pub fn requires_mfa(&self) -> bool {
        self.require_mfa
    }

    pub fn workspace_id(&self) -> Uuid {
        self.workspace_id
    }
    pub fn slug(&self) -> &str {
        &self.slug
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn user_id(&self) -> Uuid {
        self.user_id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub(crate) fn schema(&self) -> &TenantIdent {
        &self.schema
    }
    pub(crate) fn db_role(&self) -> &TenantIdent {
        &self.db_role
    }
    pub fn can(&self, permission: Permission) -> bool {
        allowed(self.role, permission)
    }
    pub fn require(&self, permission: Permission) -> Result<(), WorkspaceError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(WorkspaceError::Forbidden)
        }
    }
}

/// Loads the caller's membership of the workspace with this slug — fresh from the
/// database on every call, so role changes apply to the very next request.
pub async fn authorize(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user_id: Uuid,
    signed_in_with: SignedInWith,
    slug: &str,
) -> Result<WorkspaceAccess, WorkspaceError> {
    type Row = (Uuid, String, String, String, String, String, String, bool, bool);
    let row: Option<Row> = workspaces::table
        .inner_join(memberships::table)
        .filter(workspaces::slug.eq(slug))
        .filter(memberships::user_id.eq(user_id))
        .select((
            workspaces::id,
            workspaces::slug,
            workspaces::name,
            workspaces::schema_name,
            workspaces::role_name,
            workspaces::tenant_version,
            memberships::role,
            workspaces::require_mfa,
            diesel::dsl::exists(
                mfa_totp::table
                    .filter(mfa_totp::user_id.eq(memberships::user_id))
                    .filter(mfa_totp::confirmed_at.is_not_null()),
            )
            .or(diesel::dsl::exists(passkeys::table.filter(passkeys::user_id.eq(memberships::user_id)))),
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((workspace_id, slug, name, schema, db_role, tenant_version, role, require_mfa, has_mfa)) = row else {
        // A signed-in non-member probing an existing workspace is recorded in its trail
        // (its admins see who tries); the answer stays the same "not found".
        let probed: Option<Uuid> =
            workspaces::table.filter(workspaces::slug.eq(slug)).select(workspaces::id).first(conn).await.optional()?;
        if let Some(id) = probed {
            let event = Event::workspace(
                id,
                Action::WorkspaceAccessDenied,
                Target::Workspace(id),
                Outcome::Denied,
                Detail::Refused { reason: Refusal::NotAMember },
            );
            let key = [&id.as_bytes()[..], &user_id.as_bytes()[..]].concat();
            audit.record_unless_repeated(conn, &key, event).await?;
        }
        return Err(WorkspaceError::NotFound);
    };
    // Code that expects the newest tenant tables must not run against an older schema
    // (a failed fleet migration leaves the workspace behind; the others go on serving).
    // Versions are migration names, which sort by date.
    if tenant_version.as_str() < crate::tenancy::migrations::latest_version() {
        return Err(WorkspaceError::Upgrading);
    }
    // The workspace's policy, on every request: a member without a second factor gets
    // nothing of it until they set one up — and a session that was not signed in with it
    // (one that predates the set-up, perhaps a stolen one) nothing either.
    if require_mfa && !(has_mfa && signed_in_with == SignedInWith::SecondFactor) {
        let event = Event::workspace(
            workspace_id,
            Action::WorkspaceAccessDenied,
            Target::Workspace(workspace_id),
            Outcome::Denied,
            Detail::Refused { reason: Refusal::MfaRequired },
        );
        let key = [&b"mfa"[..], &workspace_id.as_bytes()[..], &user_id.as_bytes()[..]].concat();
        audit.record_unless_repeated(conn, &key, event).await?;
        return Err(WorkspaceError::MfaRequired);
    }
    Ok(WorkspaceAccess {
        workspace_id,
        slug,
        name,
        schema: TenantIdent::parse(&schema).ok_or(TenantError::InvalidIdent)?,
        db_role: TenantIdent::parse(&db_role).ok_or(TenantError::InvalidIdent)?,
        user_id,
        role: Role::parse(&role).ok_or(WorkspaceError::NotFound)?,
        require_mfa,
    })
}

pub async fn list_for_user(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Vec<WorkspaceSummary>> {
    let rows: Vec<(String, String, String)> = workspaces::table
        .inner_join(memberships::table)
        .filter(memberships::user_id.eq(user_id))
        .select((workspaces::slug, workspaces::name, memberships::role))
        .order(workspaces::name.asc())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(slug, name, role)| Some(WorkspaceSummary { slug, name, role: Role::parse(&role)? }))
        .collect())
}

/// The id of the workspace with this slug (operators' commands; no membership check).
pub async fn workspace_id_by_slug(conn: &mut AsyncPgConnection, slug: &str) -> QueryResult<Option<Uuid>> {
    workspaces::table.filter(workspaces::slug.eq(slug)).select(workspaces::id).first(conn).await.optional()
}
