//! Workspaces: registry, membership checks, roles, member management, invitations.
//!
//! - `access`: the [`WorkspaceAccess`] capability and [`authorize`], the membership check
//!   every workspace operation starts from.
//! - `lifecycle`: creating (with the daily limit) and deleting workspaces.
//! - `members`: listing members, role changes, removal, ownership transfer, and the
//!   locks that keep them consistent.
//! - [`invitations`]: invitations by email.
//! - [`permissions`]: roles and the one permission table.

mod access;
pub mod invitations;
mod lifecycle;
mod members;
pub mod permissions;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

pub use access::{authorize, list_for_user, workspace_id_by_slug, WorkspaceAccess, WorkspaceSummary};
pub use lifecycle::{
    create_workspace, delete_old_workspace_creations, delete_workspace, set_mfa_required, slugify,
    validate_workspace_name, DEFAULT_WORKSPACES_PER_DAY, WORKSPACE_NAME_MAX_CHARS,
};
pub use members::{
    change_role, change_role_from, list_members, may_manage, remove_member, remove_member_holding, transfer_ownership,
    Member,
};

pub use permissions::{allowed, Permission, Role};

use crate::accounts::InputError;
use crate::audit::{Action, Audit, Detail, Event, Outcome, Refusal, Target};
use crate::tenancy::TenantError;

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
    /// The member's role is no longer the one the caller confirmed a change from.
    #[error("that member's role changed in the meantime")]
    RoleChangedMeanwhile,
    /// The workspace requires two-factor authentication and the caller has none.
    #[error("this workspace requires two-factor authentication")]
    MfaRequired,
    /// Only an owner with two-factor authentication may require it of everyone.
    #[error("turn on two-factor authentication for yourself first")]
    OwnerWithoutMfa,
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("too many invitations from this workspace in the last 24 hours")]
    TooManyInvitations,
    /// An invitation-mail limit across workspaces was reached (see
    /// [`invitations::INVITATION_MAIL_PER_RECIPIENT`]).
    #[error("invitation mail limit reached")]
    InvitationMailLimited { which: invitations::MailLimit, wait: time::Duration },
    /// The caller created this many workspaces in the last 24 hours already.
    #[error("too many workspaces created in the last 24 hours (limit {0})")]
    TooManyWorkspaces(u32),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Database(DieselError),
}

/// Input a workspace operation refuses. Each message is user-facing; [`InvalidInput::field`]
/// names the form field it belongs next to, or none when it concerns the request as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("Enter a workspace name.")]
    NameMissing,
    #[error("Workspace name must be at most {WORKSPACE_NAME_MAX_CHARS} characters.")]
    NameTooLong,
    #[error("Workspace name cannot contain control characters.")]
    NameInvalid,
    #[error("Could not find a free address for this workspace; try another name.")]
    NoFreeAddress,
    #[error("{0}")]
    Email(InputError),
    #[error("That person is already a member of this workspace.")]
    AlreadyMember,
    #[error("Invite as admin, member or viewer; ownership is transferred separately.")]
    InviteAsOwner,
    #[error("You already own this workspace.")]
    TransferToSelf,
    #[error("That invitation is no longer pending.")]
    InvitationNotPending,
    #[error("Enter a title of at most {} characters.", crate::tenancy::notes::TITLE_MAX_CHARS)]
    NoteTitle,
    #[error("The note must be at most 10,000 characters.")]
    NoteBodyTooLong,
}

impl InvalidInput {
    /// The form field this error belongs next to; `None` for a refusal of the whole request.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::NameMissing | Self::NameTooLong | Self::NameInvalid => Some("name"),
            Self::Email(_) | Self::AlreadyMember => Some("email"),
            Self::InviteAsOwner => Some("role"),
            Self::NoteTitle => Some("title"),
            Self::NoteBodyTooLong => Some("body"),
            Self::NoFreeAddress | Self::TransferToSelf | Self::InvitationNotPending => None,
        }
    }
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

/// The caller's role must allow `permission` for `action`; a refusal is recorded (a
/// denial is an event too) and returned.
pub async fn require(
    conn: &mut diesel_async::AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    permission: Permission,
    action: Action,
    target: Target,
) -> Result<(), WorkspaceError> {
    if access.can(permission) {
        return Ok(());
    }
    refused(conn, audit, access, action, target, WorkspaceError::Forbidden).await
}

/// Records `error` as a denied `action` and returns it.
pub(crate) async fn refused<T>(
    conn: &mut diesel_async::AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    action: Action,
    target: Target,
    error: WorkspaceError,
) -> Result<T, WorkspaceError> {
    audited(conn, audit, access, action, target, Err(error)).await
}

/// After an action's transaction: a refusal by role or by the owner rule rolled the
/// action back, and is recorded on its own.
pub(crate) async fn audited<T>(
    conn: &mut diesel_async::AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    action: Action,
    target: Target,
    result: Result<T, WorkspaceError>,
) -> Result<T, WorkspaceError> {
    let reason = match &result {
        Err(WorkspaceError::Forbidden) => Refusal::Role,
        Err(WorkspaceError::LastOwner) => Refusal::LastOwner,
        _ => return result,
    };
    let event = Event::workspace(access.workspace_id(), action, target, Outcome::Denied, Detail::Refused { reason });
    audit.record(conn, event).await?;
    result
}
