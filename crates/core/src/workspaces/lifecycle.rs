//! Creating and deleting workspaces: registry row, owner membership, schema and
//! database role together, and the daily limit on creations.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};

use super::members::lock_roles;
use super::{InvalidInput, Permission, Role, WorkspaceAccess, WorkspaceError, WorkspaceSummary};
use crate::schema::{memberships, users, workspace_creations, workspaces};
use crate::tenancy::TenantIdent;

pub const WORKSPACE_NAME_MAX_CHARS: usize = 80;

/// Validates a workspace name: trimmed, 1–80 characters, no control characters.
pub fn validate_workspace_name(raw: &str) -> Result<String, InvalidInput> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(InvalidInput::NameMissing);
    }
    if name.chars().count() > WORKSPACE_NAME_MAX_CHARS {
        return Err(InvalidInput::NameTooLong);
    }
    if crate::text::disallowed_char(name, false).is_some() {
        return Err(InvalidInput::NameInvalid);
    }
    Ok(crate::text::nfc(name))
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
    audit: &Audit<'_>,
    creator: Uuid,
    raw_name: &str,
    now: time::OffsetDateTime,
    per_day: u32,
) -> Result<WorkspaceSummary, WorkspaceError> {
    let name = validate_workspace_name(raw_name)?;
    let base = slugify(&name);
    // Always a random suffix: a slug that came out as the bare name only when it was free
    // would tell anyone creating a workspace which names others already use.
    for _ in 0..5 {
        let slug = format!("{base}-{}", &Uuid::new_v4().simple().to_string()[..8]);
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
                    let event = Event::workspace(
                        id,
                        Action::WorkspaceCreated,
                        Target::Workspace(id),
                        Outcome::Succeeded,
                        Detail::None,
                    );
                    audit.record(c, event).await?;
                    // Last: it leaves the transaction scoped to the new workspace's role.
                    crate::tenancy::migrations::provision(c, id).await?;
                    Ok(WorkspaceSummary { slug, name, role: Role::Owner })
                }
                .scope_boxed()
            })
            .await;
        match result {
            Err(WorkspaceError::Database(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {
                continue
            }
            other => return other,
        }
    }
    Err(InvalidInput::NoFreeAddress.into())
}

/// Deletes the workspace with everything in it: registry row (memberships and
/// invitations cascade), its schema and tables, and its database role — in one
/// transaction. Owners only (checked again in the transaction); the caller does the
/// step-up check first.
pub async fn delete_workspace(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
) -> Result<(), WorkspaceError> {
    use diesel_async::SimpleAsyncConnection;
    let (action, on) = (Action::WorkspaceDeleted, Target::Workspace(access.workspace_id()));
    if access.require(Permission::DeleteWorkspace).is_err() {
        return super::refused(conn, audit, access, action, on, WorkspaceError::Forbidden).await;
    }
    let (id, ident) = (access.workspace_id(), access.schema().clone());
    let result = conn
        .transaction::<_, WorkspaceError, _>(|c| {
            async move {
                lock_roles(c, access, Permission::DeleteWorkspace, None).await?;
                diesel::delete(workspaces::table.find(id)).execute(c).await?;
                // Identifiers come from TenantIdent (strict pattern). The schema's owner drops
                // it; then the (now empty-handed) role itself is dropped, by the
                // administrator's provisioning function (the login role has no CREATEROLE).
                // Its connections' tokens move to the revocation queue first: the
                // providers must still be told after the schema is gone.
                let removed = crate::integrations::remove_all_in(c, id, &ident, None, audit.clock.now()).await?;
                let name = ident.as_str();
                c.batch_execute(&format!("SET LOCAL ROLE {name}; DROP SCHEMA {name} CASCADE; RESET ROLE;")).await?;
                diesel::sql_query("SELECT fluxi_provisioning.drop_workspace_role($1)")
                    .bind::<diesel::sql_types::Text, _>(name)
                    .execute(c)
                    .await?;
                // The workspace's trail outlives it; the deletion also goes to the
                // deleting owner's own activity, since nobody can open this workspace's
                // log any more.
                for event in removed {
                    audit.record(c, event).await?;
                }
                audit.record(c, Event::workspace(id, action, on, Outcome::Succeeded, Detail::None)).await?;
                let mut mine = Event::account(Some(access.user_id()), action, Outcome::Succeeded, Detail::None);
                (mine.workspace, mine.target) = (Some(id), on);
                audit.record(c, mine).await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await;
    super::audited(conn, audit, access, action, on, result).await
}

/// Owners require (or stop requiring) two-factor authentication of every member. An
/// owner without it cannot require it (they would lock themselves out). The caller has
/// checked a step-up.
pub async fn set_mfa_required(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    required: bool,
) -> Result<(), WorkspaceError> {
    let (action, on) = (Action::WorkspaceMfaPolicyChanged, Target::Workspace(access.workspace_id()));
    if access.require(Permission::ManageOwners).is_err() {
        return super::refused(conn, audit, access, action, on, WorkspaceError::Forbidden).await;
    }
    if required && !crate::mfa::has_second_factor(conn, access.user_id()).await? {
        return Err(WorkspaceError::OwnerWithoutMfa);
    }
    let id = access.workspace_id();
    let result = conn
        .transaction::<_, WorkspaceError, _>(|c| {
            async move {
                lock_roles(c, access, Permission::ManageOwners, None).await?;
                diesel::update(workspaces::table.find(id)).set(workspaces::require_mfa.eq(required)).execute(c).await?;
                let detail = Detail::MfaPolicy { required };
                audit.record(c, Event::workspace(id, action, on, Outcome::Succeeded, detail)).await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await;
    super::audited(conn, audit, access, action, on, result).await
}

/// Forgets workspace creations older than the daily cap's window (periodic clean-up).
pub async fn delete_old_workspace_creations(
    conn: &mut AsyncPgConnection,
    now: time::OffsetDateTime,
) -> QueryResult<usize> {
    diesel::delete(workspace_creations::table.filter(workspace_creations::created_at.le(now - time::Duration::days(1))))
        .execute(conn)
        .await
}
