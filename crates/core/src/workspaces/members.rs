//! Members of a workspace: listing, role changes, removal and ownership transfer, and
//! the locks that keep each consistent with concurrent changes.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{allowed, audited, refused, InvalidInput, Permission, Role, WorkspaceAccess, WorkspaceError};
use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};
use crate::schema::{memberships, mfa_totp, passkeys, users, workspaces};

/// Whether the caller of `access` may change the role of, or remove, the member `target`
/// who holds `target_role`: never themselves (leaving is separate), only with
/// `ManageMembers`, and owners only by owners. The write functions below enforce the same
/// rule on the rows they lock; this is what pages show.
pub fn may_manage(access: &WorkspaceAccess, target: Uuid, target_role: Role) -> bool {
    target != access.user_id()
        && access.can(Permission::ManageMembers)
        && (target_role != Role::Owner || access.can(Permission::ManageOwners))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub user_id: Uuid,
    pub display_name: String,
    pub email: String,
    pub role: Role,
    /// Has two-factor authentication on.
    pub has_mfa: bool,
    /// Has verified their email address.
    pub email_verified: bool,
}

/// Takes a shared connection so it can be pipelined with other reads (diesel-async sends
/// queries polled concurrently on one connection without waiting for each answer).
pub async fn list_members(
    mut conn: &AsyncPgConnection,
    access: &WorkspaceAccess,
) -> Result<Vec<Member>, WorkspaceError> {
    access.require(Permission::Read)?;
    let rows: Vec<(Uuid, String, String, String, bool, bool)> = memberships::table
        .inner_join(users::table)
        .filter(memberships::workspace_id.eq(access.workspace_id()))
        .select((
            users::id,
            users::display_name,
            users::email,
            memberships::role,
            diesel::dsl::exists(
                mfa_totp::table.filter(mfa_totp::user_id.eq(users::id)).filter(mfa_totp::confirmed_at.is_not_null()),
            )
            .or(diesel::dsl::exists(passkeys::table.filter(passkeys::user_id.eq(users::id)))),
            users::email_verified_at.is_not_null(),
        ))
        .order((users::display_name.asc(), users::id.asc()))
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(user_id, display_name, email, role, has_mfa, email_verified)| {
            Some(Member { user_id, display_name, email, role: Role::parse(&role)?, has_mfa, email_verified })
        })
        .collect())
}

/// Changes a member's role. Admins manage admins, members and viewers; only owners may
/// touch owners or make someone an owner. The database keeps at least one owner.
pub async fn change_role(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    target: Uuid,
    new_role: Role,
) -> Result<(), WorkspaceError> {
    change_role_from(conn, audit, access, target, None, new_role).await
}

/// [`change_role`], only while the member still holds `expected` (checked under the
/// lock): for a change confirmed as "from this role to that one".
pub async fn change_role_from(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    target: Uuid,
    expected: Option<Role>,
    new_role: Role,
) -> Result<(), WorkspaceError> {
    let (action, on) = (Action::RoleChanged, Target::Member(target));
    if access.require(Permission::ManageMembers).is_err() {
        return refused(conn, audit, access, action, on, WorkspaceError::Forbidden).await;
    }
    let result = conn
        .transaction::<_, WorkspaceError, _>(|c| {
            async move {
                let (caller, current) = lock_roles(c, access, Permission::ManageMembers, Some(target)).await?;
                let current = current.ok_or(WorkspaceError::NoSuchMember)?;
                if expected.is_some_and(|e| e != current) {
                    return Err(WorkspaceError::RoleChangedMeanwhile);
                }
                if (current == Role::Owner || new_role == Role::Owner) && !allowed(caller, Permission::ManageOwners) {
                    return Err(WorkspaceError::Forbidden);
                }
                let update = diesel::update(
                    memberships::table
                        .filter(memberships::workspace_id.eq(access.workspace_id()))
                        .filter(memberships::user_id.eq(target)),
                )
                .set(memberships::role.eq(new_role.as_str()));
                let detail = Detail::RoleChange { from: current, to: new_role };
                let event = Event::workspace(access.workspace_id(), action, on, Outcome::Succeeded, detail);
                audit.record_behind(c, update.execute(&mut &*c), event).await?;
                // A role that may not hold integrations (viewer) keeps none: they could
                // neither see nor disconnect them any more.
                let removed = if allowed(new_role, Permission::ManageOwnIntegrations) {
                    Vec::new()
                } else {
                    let (workspace, schema) = (access.workspace_id(), access.schema());
                    crate::integrations::remove_all_in(c, workspace, schema, Some(target), audit.clock.now()).await?
                };
                for event in removed {
                    audit.record(c, event).await?;
                }
                if allowed(current, Permission::ManageMembers) && !allowed(new_role, Permission::ManageMembers) {
                    super::invitations::revoke_sent_by(c, audit, access.workspace_id(), target).await?;
                }
                Ok(())
            }
            .scope_boxed()
        })
        .await;
    audited(conn, audit, access, action, on, result).await
}

/// Removes a member (admins: non-owners only). Leaving is `remove_member` on oneself,
/// which every role may do — except the last owner.
pub async fn remove_member(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    target: Uuid,
) -> Result<(), WorkspaceError> {
    remove_member_holding(conn, audit, access, target, None).await
}

/// [`remove_member`], only while the member still holds `expected` (checked under the lock).
pub async fn remove_member_holding(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    target: Uuid,
    expected: Option<Role>,
) -> Result<(), WorkspaceError> {
    let leaving = target == access.user_id();
    let action = if leaving { Action::MemberLeft } else { Action::MemberRemoved };
    let on = Target::Member(target);
    if !leaving && access.require(Permission::ManageMembers).is_err() {
        return refused(conn, audit, access, action, on, WorkspaceError::Forbidden).await;
    }
    let result = conn
        .transaction::<_, WorkspaceError, _>(|c| {
            async move {
                if leaving {
                    lock_workspace(c, access.workspace_id()).await?;
                } else {
                    let (caller, current) = lock_roles(c, access, Permission::ManageMembers, Some(target)).await?;
                    let current = current.ok_or(WorkspaceError::NoSuchMember)?;
                    if expected.is_some_and(|e| e != current) {
                        return Err(WorkspaceError::RoleChangedMeanwhile);
                    }
                    if current == Role::Owner && !allowed(caller, Permission::ManageOwners) {
                        return Err(WorkspaceError::Forbidden);
                    }
                }
                let n = diesel::delete(
                    memberships::table
                        .filter(memberships::workspace_id.eq(access.workspace_id()))
                        .filter(memberships::user_id.eq(target)),
                )
                .execute(c)
                .await?;
                if n == 0 {
                    return Err(WorkspaceError::NoSuchMember);
                }
                // Their connections leave with them (revoked at the providers by the job).
                let (workspace, schema) = (access.workspace_id(), access.schema());
                let removed =
                    crate::integrations::remove_all_in(c, workspace, schema, Some(target), audit.clock.now()).await?;
                audit
                    .record(c, Event::workspace(access.workspace_id(), action, on, Outcome::Succeeded, Detail::None))
                    .await?;
                for event in removed {
                    audit.record(c, event).await?;
                }
                super::invitations::revoke_sent_by(c, audit, access.workspace_id(), target).await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await;
    audited(conn, audit, access, action, on, result).await
}

/// Inside a transaction: locks the workspace's registry row (see [`lock_roles`]).
pub(super) async fn lock_workspace(c: &mut AsyncPgConnection, workspace_id: Uuid) -> Result<(), WorkspaceError> {
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
pub(super) async fn lock_roles(
    c: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    permission: Permission,
    target: Option<Uuid>,
) -> Result<(Role, Option<Role>), WorkspaceError> {
    lock_workspace(c, access.workspace_id()).await?;
    let ids: Vec<Uuid> = std::iter::once(access.user_id()).chain(target).collect();
    let rows: Vec<(Uuid, String)> = memberships::table
        .filter(memberships::workspace_id.eq(access.workspace_id()))
        .filter(memberships::user_id.eq_any(&ids))
        .select((memberships::user_id, memberships::role))
        .order(memberships::user_id)
        .for_update()
        .load(c)
        .await?;
    let role_of = |id: Uuid| rows.iter().find(|(user, _)| *user == id).and_then(|(_, role)| Role::parse(role));
    let caller = role_of(access.user_id()).ok_or(WorkspaceError::NotFound)?;
    if !allowed(caller, permission) {
        return Err(WorkspaceError::Forbidden);
    }
    Ok((caller, target.and_then(role_of)))
}

/// Makes `target` an owner and the calling owner an admin, atomically. The caller's
/// role is checked again in the transaction (the caller does the step-up check first).
pub async fn transfer_ownership(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    target: Uuid,
) -> Result<(), WorkspaceError> {
    let (action, on) = (Action::OwnershipTransferred, Target::Member(target));
    if access.require(Permission::ManageOwners).is_err() {
        return refused(conn, audit, access, action, on, WorkspaceError::Forbidden).await;
    }
    if target == access.user_id() {
        return Err(InvalidInput::TransferToSelf.into());
    }
    let (ws, me) = (access.workspace_id(), access.user_id());
    let result = conn
        .transaction::<_, WorkspaceError, _>(|c| {
            async move {
                let (_, target_role) = lock_roles(c, access, Permission::ManageOwners, Some(target)).await?;
                target_role.ok_or(WorkspaceError::NoSuchMember)?;
                for (user, role) in [(target, Role::Owner), (me, Role::Admin)] {
                    diesel::update(
                        memberships::table
                            .filter(memberships::workspace_id.eq(ws))
                            .filter(memberships::user_id.eq(user)),
                    )
                    .set(memberships::role.eq(role.as_str()))
                    .execute(c)
                    .await?;
                }
                audit.record(c, Event::workspace(ws, action, on, Outcome::Succeeded, Detail::None)).await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await;
    audited(conn, audit, access, action, on, result).await
}
