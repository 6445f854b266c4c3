//! Workspaces: registry, membership checks, roles, member management, invitations.

pub mod invitations;
pub mod permissions;

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use permissions::{allowed, Permission, Role};

use crate::schema::{memberships, users, workspace_creations, workspaces};
use crate::tenancy::{TenantError, TenantIdent};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The workspace does not exist *or* the caller is not a member: deliberately the
    /// same error, so ids and slugs cannot be probed.
    #[error("workspace not found")]
    NotFound,
    /// The caller is a member, but the workspace's schema is behind the newest tenant
    /// migration (its fleet migration failed or is running).
    #[error("workspace schema is behind the running version")]
    Upgrading,
    #[error("your role does not allow this")]
    Forbidden,
    #[error("a workspace must keep at least one owner")]
    LastOwner,
    #[error("that person is not a member of this workspace")]
    NoSuchMember,
    #[error("{0}")]
    Invalid(String),
    #[error("too many invitations from this workspace in the last 24 hours")]
    TooManyInvitations,
    /// The caller created this many workspaces in the last 24 hours already.
    #[error("too many workspaces created in the last 24 hours (limit {0})")]
    TooManyWorkspaces(u32),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Database(DieselError),
}

impl From<DieselError> for WorkspaceError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info)
                if info.constraint_name() == Some("workspace_keeps_an_owner")
                    || info.message().contains("at least one owner") =>
            {
                WorkspaceError::LastOwner
            }
            _ => WorkspaceError::Database(e),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceSummary {
    pub slug: String,
    pub name: String,
    pub role: Role,
}

/// Proof that `user_id` is a member of a workspace with `role`, checked against the
/// database for this request. Only [`authorize`] (and workspace creation) make one; the
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
}

impl WorkspaceAccess {
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
pub async fn authorize(conn: &mut AsyncPgConnection, user_id: Uuid, slug: &str) -> Result<WorkspaceAccess, WorkspaceError> {
    let row: Option<(Uuid, String, String, String, String, String, String)> = workspaces::table
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
        ))
        .first(conn)
        .await
        .optional()?;
    let (workspace_id, slug, name, schema, db_role, tenant_version, role) = row.ok_or(WorkspaceError::NotFound)?;
    // Code that expects the newest tenant tables must not run against an older schema
    // (a failed fleet migration leaves the workspace behind; the others go on serving).
    // Versions are migration names, which sort by date.
    if tenant_version.as_str() < crate::tenancy::migrations::latest_version() {
        return Err(WorkspaceError::Upgrading);
    }
    Ok(WorkspaceAccess {
        workspace_id,
        slug,
        name,
        schema: TenantIdent::parse(&schema).ok_or(TenantError::InvalidIdent)?,
        db_role: TenantIdent::parse(&db_role).ok_or(TenantError::InvalidIdent)?,
        user_id,
        role: Role::parse(&role).ok_or(WorkspaceError::NotFound)?,
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

/// Validates a workspace name: trimmed, 1–80 characters, no control characters.
pub fn validate_workspace_name(raw: &str) -> Result<String, WorkspaceError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(WorkspaceError::Invalid("Enter a workspace name.".into()));
    }
    if name.chars().count() > 80 {
        return Err(WorkspaceError::Invalid("Workspace name must be at most 80 characters.".into()));
    }
    if name.chars().any(char::is_control) {
        return Err(WorkspaceError::Invalid("Workspace name cannot contain control characters.".into()));
    }
    Ok(name.to_string())
}

/// A URL slug from a name: lowercase ASCII letters and digits, dashes between words.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(|c| c.to_lowercase()) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_matches('-').to_string();
    if slug.is_empty() {
        "workspace".into()
    } else {
        slug
    }
}

/// Workspaces one account may create in any 24 hours, by default
/// (`FLUXI_WORKSPACES_PER_DAY`). Each creation makes a schema, a database role and tables;
/// without a limit, one account (or a script signing up many) could slow the database
/// down for every tenant. Deleted workspaces still count.
pub const DEFAULT_WORKSPACES_PER_DAY: u32 = 10;

/// Creates a workspace owned by `creator`: registry row, owner membership, role and
/// schema with every tenant migration — all in one transaction, so a failure leaves
/// nothing behind. Refused once `creator` has created `per_day` workspaces in the 24
/// hours before `now`.
pub async fn create_workspace(
    conn: &mut AsyncPgConnection,
    creator: Uuid,
    raw_name: &str,
    now: time::OffsetDateTime,
    per_day: u32,
) -> Result<WorkspaceSummary, WorkspaceError> {
    let name = validate_workspace_name(raw_name)?;
    let base = slugify(&name);
    for attempt in 0..5 {
        let slug = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}-{}", &Uuid::new_v4().simple().to_string()[..6])
        };
        let id = Uuid::new_v4();
        let ident = TenantIdent::for_workspace(id);
        let name = name.clone();
        let result = conn
            .transaction::<_, WorkspaceError, _>(|c| {
                async move {
                    // The account's row lock serializes its creations, so that concurrent
                    // ones cannot both pass the count at the limit's edge.
                    users::table.find(creator).select(users::id).for_no_key_update().first::<Uuid>(c).await?;
                    let created_today: i64 = workspace_creations::table
                        .filter(workspace_creations::user_id.eq(creator))
                        .filter(workspace_creations::created_at.gt(now - time::Duration::days(1)))
                        .count()
                        .get_result(c)
                        .await?;
                    if created_today >= i64::from(per_day) {
                        return Err(WorkspaceError::TooManyWorkspaces(per_day));
                    }
                    diesel::insert_into(workspace_creations::table)
                        .values((workspace_creations::user_id.eq(creator), workspace_creations::created_at.eq(now)))
                        .execute(c)
                        .await?;
                    diesel::insert_into(workspaces::table)
                        .values((
                            workspaces::id.eq(id),
                            workspaces::slug.eq(&slug),
                            workspaces::name.eq(&name),
                            workspaces::schema_name.eq(ident.as_str()),
                            workspaces::role_name.eq(ident.as_str()),
                            workspaces::tenant_version.eq(crate::tenancy::migrations::latest_version()),
                            workspaces::created_at.eq(now),
                        ))
                        .execute(c)
                        .await?;
                    diesel::insert_into(memberships::table)
                        .values((
                            memberships::workspace_id.eq(id),
                            memberships::user_id.eq(creator),
                            memberships::role.eq(Role::Owner.as_str()),
                        ))
                        .execute(c)
                        .await?;
                    crate::tenancy::migrations::provision(c, id).await?;
                    Ok(WorkspaceSummary { slug, name, role: Role::Owner })
                }
                .scope_boxed()
            })
            .await;
        match result {
            Err(WorkspaceError::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => continue,
            other => return other,
        }
    }
    Err(WorkspaceError::Invalid("Could not find a free address for this workspace; try another name.".into()))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub user_id: Uuid,
    pub display_name: String,
    pub email: String,
    pub role: Role,
}

/// Takes a shared connection so it can be pipelined with other reads (diesel-async sends
/// queries polled concurrently on one connection without waiting for each answer).
pub async fn list_members(mut conn: &AsyncPgConnection, access: &WorkspaceAccess) -> Result<Vec<Member>, WorkspaceError> {
    access.require(Permission::Read)?;
    let rows: Vec<(Uuid, String, String, String)> = memberships::table
        .inner_join(users::table)
        .filter(memberships::workspace_id.eq(access.workspace_id))
        .select((users::id, users::display_name, users::email, memberships::role))
        .order((users::display_name.asc(), users::id.asc()))
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(user_id, display_name, email, role)| {
            Some(Member { user_id, display_name, email, role: Role::parse(&role)? })
        })
        .collect())
}

/// Changes a member's role. Admins manage admins, members and viewers; only owners may
/// touch owners or make someone an owner. The database keeps at least one owner.
pub async fn change_role(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    target: Uuid,
    new_role: Role,
) -> Result<(), WorkspaceError> {
    access.require(Permission::ManageMembers)?;
    conn.transaction::<_, WorkspaceError, _>(|c| {
        async move {
            let (caller, current) = lock_roles(c, access, Permission::ManageMembers, Some(target)).await?;
            let current = current.ok_or(WorkspaceError::NoSuchMember)?;
            if (current == Role::Owner || new_role == Role::Owner) && !allowed(caller, Permission::ManageOwners) {
                return Err(WorkspaceError::Forbidden);
            }
            diesel::update(
                memberships::table
                    .filter(memberships::workspace_id.eq(access.workspace_id))
                    .filter(memberships::user_id.eq(target)),
            )
            .set(memberships::role.eq(new_role.as_str()))
            .execute(c)
            .await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Removes a member (admins: non-owners only). Leaving is `remove_member` on oneself,
/// which every role may do — except the last owner.
pub async fn remove_member(conn: &mut AsyncPgConnection, access: &WorkspaceAccess, target: Uuid) -> Result<(), WorkspaceError> {
    let leaving = target == access.user_id;
    if !leaving {
        access.require(Permission::ManageMembers)?;
    }
    conn.transaction::<_, WorkspaceError, _>(|c| {
        async move {
            if leaving {
                lock_workspace(c, access.workspace_id).await?;
            } else {
                let (caller, current) = lock_roles(c, access, Permission::ManageMembers, Some(target)).await?;
                let current = current.ok_or(WorkspaceError::NoSuchMember)?;
                if current == Role::Owner && !allowed(caller, Permission::ManageOwners) {
                    return Err(WorkspaceError::Forbidden);
                }
            }
            let n = diesel::delete(
                memberships::table
                    .filter(memberships::workspace_id.eq(access.workspace_id))
                    .filter(memberships::user_id.eq(target)),
            )
            .execute(c)
            .await?;
            if n == 0 {
                return Err(WorkspaceError::NoSuchMember);
            }
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Inside a transaction: locks the workspace's registry row (see [`lock_roles`]).
async fn lock_workspace(c: &mut AsyncPgConnection, workspace_id: Uuid) -> Result<(), WorkspaceError> {
    workspaces::table
        .find(workspace_id)
        .select(workspaces::id)
        .for_update()
        .first::<Uuid>(c)
        .await
        .optional()?
        .map(|_| ())
        .ok_or(WorkspaceError::NotFound)
}

/// Inside a transaction: the caller's and (optionally) the target's roles as they are
/// now, both membership rows locked until the transaction ends, and the caller required to
/// still hold `permission`. `access` was checked when the request began: a demotion or
/// removal since then must count (the owner-only actions even run after a password check
/// that takes a while), and the target's role must not change between the check and the
/// write. A target without a membership is `None`.
///
/// Lock order, the same in every membership change: the workspace row first, then the
/// membership rows in user-id order. The at-least-one-owner trigger and a workspace's
/// deletion (whose cascade locks every membership) both need the workspace row, so taking
/// it first means two such transactions wait for each other instead of deadlocking.
async fn lock_roles(
    c: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    permission: Permission,
    target: Option<Uuid>,
) -> Result<(Role, Option<Role>), WorkspaceError> {
    lock_workspace(c, access.workspace_id).await?;
    let ids: Vec<Uuid> = std::iter::once(access.user_id).chain(target).collect();
    let rows: Vec<(Uuid, String)> = memberships::table
        .filter(memberships::workspace_id.eq(access.workspace_id))
        .filter(memberships::user_id.eq_any(&ids))
        .select((memberships::user_id, memberships::role))
        .order(memberships::user_id)
        .for_update()
        .load(c)
        .await?;
    let role_of = |id: Uuid| rows.iter().find(|(user, _)| *user == id).and_then(|(_, role)| Role::parse(role));
    let caller = role_of(access.user_id).ok_or(WorkspaceError::NotFound)?;
    if !allowed(caller, permission) {
        return Err(WorkspaceError::Forbidden);
    }
    Ok((caller, target.and_then(role_of)))
}

/// Makes `target` an owner and the calling owner an admin, atomically. The caller's
/// role is checked again in the transaction (the caller does the step-up check first).
pub async fn transfer_ownership(conn: &mut AsyncPgConnection, access: &WorkspaceAccess, target: Uuid) -> Result<(), WorkspaceError> {
    access.require(Permission::ManageOwners)?;
    if target == access.user_id {
        return Err(WorkspaceError::Invalid("You already own this workspace.".into()));
    }
    let (ws, me) = (access.workspace_id, access.user_id);
    conn.transaction::<_, WorkspaceError, _>(|c| {
        async move {
            let (_, target_role) = lock_roles(c, access, Permission::ManageOwners, Some(target)).await?;
            target_role.ok_or(WorkspaceError::NoSuchMember)?;
            for (user, role) in [(target, Role::Owner), (me, Role::Admin)] {
                diesel::update(memberships::table.filter(memberships::workspace_id.eq(ws)).filter(memberships::user_id.eq(user)))
                    .set(memberships::role.eq(role.as_str()))
                    .execute(c)
                    .await?;
            }
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Deletes the workspace with everything in it: registry row (memberships and
/// invitations cascade), its schema and tables, and its database role — in one
/// transaction. Owners only (checked again in the transaction); the caller does the
/// step-up check first.
pub async fn delete_workspace(conn: &mut AsyncPgConnection, access: &WorkspaceAccess) -> Result<(), WorkspaceError> {
    use diesel_async::SimpleAsyncConnection;
    access.require(Permission::DeleteWorkspace)?;
    let (id, ident) = (access.workspace_id, access.schema.clone());
    conn.transaction::<_, WorkspaceError, _>(|c| {
        async move {
            lock_roles(c, access, Permission::DeleteWorkspace, None).await?;
            diesel::delete(workspaces::table.find(id)).execute(c).await?;
            // Identifiers come from TenantIdent (strict pattern). The schema's owner drops
            // it; then the (now empty-handed) role itself is dropped, by the
            // administrator's provisioning function (the login role has no CREATEROLE).
            let name = ident.as_str();
            c.batch_execute(&format!("SET LOCAL ROLE {name}; DROP SCHEMA {name} CASCADE; RESET ROLE;")).await?;
            diesel::sql_query("SELECT fluxi_provisioning.drop_workspace_role($1)")
                .bind::<diesel::sql_types::Text, _>(name)
                .execute(c)
                .await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Forgets workspace creations older than the daily cap's window (periodic clean-up).
pub async fn delete_old_workspace_creations(conn: &mut AsyncPgConnection, now: time::OffsetDateTime) -> QueryResult<usize> {
    diesel::delete(workspace_creations::table.filter(workspace_creations::created_at.le(now - time::Duration::days(1))))
        .execute(conn)
        .await
}
