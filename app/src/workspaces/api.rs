//! Workspace server functions. Each one authenticates, loads the caller's membership
//! fresh (`ssr::workspace_access`) and checks the permission it needs — in the
//! domain function it calls — before touching anything.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceLink {
    pub slug: String,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteView {
    pub id: String,
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceHome {
    pub slug: String,
    pub name: String,
    pub role: String,
    pub can_write: bool,
    pub can_manage_members: bool,
    pub can_view_audit: bool,
    pub notes: Vec<NoteView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub user_id: String,
    pub display_name: String,
    pub email: String,
    pub role: String,
    pub is_me: bool,
    /// Whether the caller may change this member's role / remove them.
    pub manageable: bool,
    pub has_mfa: bool,
    pub email_verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub role: String,
    pub mail: MailState,
}

/// Where an invitation's mail is, as the pending list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailState {
    Queued,
    Sent,
    /// Given up: the person never got the link; inviting again sends a new one.
    NotDelivered,
    /// Invitations from before mails were tracked: nothing is said.
    Unknown,
}

impl MailState {
    pub fn describe(self) -> Option<&'static str> {
        match self {
            MailState::Queued => Some("mail not sent yet"),
            MailState::Sent => Some("mail sent"),
            MailState::NotDelivered => Some("mail could not be delivered: check the address and invite again"),
            MailState::Unknown => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    pub slug: String,
    pub name: String,
    pub my_role: String,
    pub can_manage: bool,
    pub is_owner: bool,
    /// Whether the signed-in person's step-ups need a code (owners' forms ask for one).
    pub i_have_mfa: bool,
    /// Whether the workspace requires two-factor authentication of its members.
    pub require_mfa: bool,
    /// This session confirmed who it is within the step-up window: no password asked.
    pub step_up_fresh: bool,
    pub members: Vec<MemberView>,
    pub invitations: Vec<InvitationView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationInfo {
    pub workspace_name: String,
    pub role: String,
    pub requires_mfa: bool,
}

#[cfg(feature = "ssr")]
mod imp {
    pub use crate::ssr;
    pub use fluxi_core::accounts::StepUpFor;
    pub use fluxi_core::audit::{Action, Target};
    pub use fluxi_core::workspaces::{self, Permission, Role};

    use crate::error::AppError;

    pub fn parse_uuid(raw: &str) -> Result<uuid::Uuid, AppError> {
        uuid::Uuid::parse_str(raw.trim()).map_err(|_| AppError::BadRequest)
    }

    pub fn parse_role(raw: &str) -> Result<Role, AppError> {
        Role::parse(raw.trim()).ok_or_else(|| AppError::field("role", "Choose a role: admin, member or viewer."))
    }
}

#[server(prefix = "/api", endpoint = "list_workspaces")]
pub async fn list_workspaces() -> Result<Vec<WorkspaceLink>, AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let mut conn = ssr::conn(&state).await?;
    let list = workspaces::list_for_user(&mut conn, user.id).await?;
    Ok(list.into_iter().map(|w| WorkspaceLink { slug: w.slug, name: w.name, role: w.role.as_str().into() }).collect())
}

#[server(prefix = "/api", endpoint = "create_workspace")]
pub async fn create_workspace(name: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    // Checked before a connection is taken: a bad name costs no database work.
    workspaces::validate_workspace_name(&name)?;
    let mut conn = ssr::conn(&state).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let created =
        workspaces::create_workspace(&mut conn, &audit, user.id, &name, state.clock.now(), state.workspaces_per_day)
            .await?;
    leptos_axum::redirect(&format!("/w/{}", created.slug));
    Ok(())
}

#[server(prefix = "/api", endpoint = "workspace_home")]
pub async fn get_workspace_home(slug: String) -> Result<WorkspaceHome, AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (_user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let notes = fluxi_core::tenancy::notes::list_notes(&mut conn, &access).await?;
    Ok(WorkspaceHome {
        slug: access.slug().into(),
        name: access.name().into(),
        role: access.role().as_str().into(),
        can_write: access.can(Permission::Write),
        can_manage_members: access.can(Permission::ManageMembers),
        can_view_audit: access.can(Permission::ViewAudit),
        notes: notes.into_iter().map(|n| NoteView { id: n.id.to_string(), title: n.title, body: n.body }).collect(),
    })
}

#[server(prefix = "/api", endpoint = "create_note")]
pub async fn create_note(slug: String, title: String, body: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (_user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    fluxi_core::tenancy::notes::create_note(&mut conn, &access, &title, &body).await?;
    Ok(())
}

#[server(prefix = "/api", endpoint = "members_page")]
pub async fn get_members_page(slug: String) -> Result<MembersPage, AppError> {
    use imp::*;
    use workspaces::invitations::MailDelivery;
    let state = ssr::state()?;
    let (user, conn, access) = ssr::workspace_access(&state, &slug).await?;
    let can_manage = access.can(Permission::ManageMembers);
    // Both reads go out together on the one connection (pipelined): one round trip.
    let members = workspaces::list_members(&conn, &access);
    let invitations = async {
        if can_manage {
            workspaces::invitations::list_pending(&conn, &access, state.clock.now()).await
        } else {
            Ok(Vec::new())
        }
    };
    let (members, invitations) = tokio::try_join!(members, invitations)?;
    let is_owner = access.can(Permission::ManageOwners);
    let mut conn = conn;
    let i_have_mfa = is_owner && fluxi_core::mfa::has_second_factor(&mut conn, user.id).await?;
    let invitations = invitations
        .into_iter()
        .map(|i| InvitationView {
            id: i.id.to_string(),
            email: i.email,
            role: i.role.as_str().into(),
            mail: match i.mail {
                MailDelivery::Queued => MailState::Queued,
                MailDelivery::Sent => MailState::Sent,
                MailDelivery::Failed => MailState::NotDelivered,
                MailDelivery::Unknown => MailState::Unknown,
            },
        })
        .collect();
    Ok(MembersPage {
        slug: access.slug().into(),
        name: access.name().into(),
        my_role: access.role().as_str().into(),
        can_manage,
        is_owner,
        i_have_mfa,
        require_mfa: access.requires_mfa(),
        step_up_fresh: is_owner && ssr::step_up_fresh(&state, &ssr::session().await?).await?,
        invitations,
        members: members
            .into_iter()
            .map(|m| MemberView {
                manageable: workspaces::may_manage(&access, m.user_id, m.role),
                is_me: m.user_id == user.id,
                user_id: m.user_id.to_string(),
                display_name: m.display_name,
                email: m.email,
                role: m.role.as_str().into(),
                has_mfa: m.has_mfa,
                email_verified: m.email_verified,
            })
            .collect(),
    })
}

#[server(prefix = "/api", endpoint = "invite_member")]
pub async fn invite_member(slug: String, email: String, role: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    workspaces::require(&mut conn, &audit, &access, Permission::ManageMembers, Action::InvitationSent, Target::None)
        .await?;
    let role = parse_role(&role)?;
    let (now, policy) = (state.clock.now(), &state.invitation_policy);
    workspaces::invitations::invite(&mut conn, &audit, &access, &email, role, now, policy, &state.base_url).await?;
    Ok(())
}

#[server(prefix = "/api", endpoint = "revoke_invitation")]
pub async fn revoke_invitation(slug: String, invitation_id: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let id = parse_uuid(&invitation_id)?;
    Ok(workspaces::invitations::revoke(&mut conn, &audit, &access, id, state.clock.now()).await?)
}

#[server(prefix = "/api", endpoint = "change_member_role")]
pub async fn change_member_role(slug: String, user_id: String, role: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let (target, role) = (parse_uuid(&user_id)?, parse_role(&role)?);
    Ok(workspaces::change_role(&mut conn, &audit, &access, target, role).await?)
}

#[server(prefix = "/api", endpoint = "remove_member")]
pub async fn remove_member(slug: String, user_id: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let target = parse_uuid(&user_id)?;
    Ok(workspaces::remove_member(&mut conn, &audit, &access, target).await?)
}

#[server(prefix = "/api", endpoint = "leave_workspace")]
pub async fn leave_workspace(slug: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    workspaces::remove_member(&mut conn, &ssr::audit_as(&state, &origin, &user), &access, user.id).await?;
    leptos_axum::redirect("/workspaces");
    Ok(())
}

/// Step-up: the owner re-enters their password (and a code, with two-factor authentication).
#[server(prefix = "/api", endpoint = "transfer_ownership")]
pub async fn transfer_ownership(
    slug: String,
    user_id: String,
    password: String,
    code: Option<String>,
    recovery_code: Option<String>,
) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let target = parse_uuid(&user_id)?;
    let action = Action::OwnershipTransferred;
    workspaces::require(&mut conn, &audit, &access, Permission::ManageOwners, action, Target::Member(target)).await?;
    drop(conn);
    let purpose = StepUpFor::workspace(access.workspace_id(), action);
    ssr::step_up(&state, &user, &password, code.as_deref(), recovery_code.as_deref(), purpose).await?;
    // The domain function checks the caller's role again, in its transaction.
    let mut conn = ssr::conn(&state).await?;
    Ok(workspaces::transfer_ownership(&mut conn, &audit, &access, target).await?)
}

/// "Require two-factor authentication" (owners, step-up): `required` is `on` or `off`.
#[server(prefix = "/api", endpoint = "set_workspace_mfa")]
pub async fn set_workspace_mfa(
    slug: String,
    required: String,
    password: String,
    code: Option<String>,
) -> Result<(), AppError> {
    use imp::*;
    let required = match required.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(AppError::field("required", "Choose whether two-factor authentication is required.")),
    };
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let action = Action::WorkspaceMfaPolicyChanged;
    let on = Target::Workspace(access.workspace_id());
    workspaces::require(&mut conn, &audit, &access, Permission::ManageOwners, action, on).await?;
    drop(conn);
    let purpose = StepUpFor::workspace(access.workspace_id(), action);
    ssr::step_up(&state, &user, &password, code.as_deref(), None, purpose).await?;
    let mut conn = ssr::conn(&state).await?;
    workspaces::set_mfa_required(&mut conn, &audit, &access, required).await?;
    Ok(())
}

/// Step-up: the owner re-enters their password (and a code, with two-factor authentication).
#[server(prefix = "/api", endpoint = "delete_workspace")]
pub async fn delete_workspace(
    slug: String,
    password: String,
    code: Option<String>,
    recovery_code: Option<String>,
) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let (action, on) = (Action::WorkspaceDeleted, Target::Workspace(access.workspace_id()));
    workspaces::require(&mut conn, &audit, &access, Permission::DeleteWorkspace, action, on).await?;
    drop(conn);
    let purpose = StepUpFor::workspace(access.workspace_id(), action);
    ssr::step_up(&state, &user, &password, code.as_deref(), recovery_code.as_deref(), purpose).await?;
    // The domain function checks the caller's role again, in its transaction.
    let mut conn = ssr::conn(&state).await?;
    workspaces::delete_workspace(&mut conn, &audit, &access).await?;
    leptos_axum::redirect("/workspaces");
    Ok(())
}

#[server(prefix = "/api", endpoint = "invitation_info")]
pub async fn get_invitation_info(token: String) -> Result<InvitationInfo, AppError> {
    use imp::*;
    let state = ssr::state()?;
    let mut conn = ssr::conn(&state).await?;
    let preview = workspaces::invitations::preview(&mut conn, &token, state.clock.now()).await?;
    Ok(InvitationInfo {
        workspace_name: preview.workspace_name,
        role: preview.role.as_str().into(),
        requires_mfa: preview.requires_mfa,
    })
}

#[server(prefix = "/api", endpoint = "accept_invitation")]
pub async fn accept_invitation(token: String) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let mut conn = ssr::conn(&state).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let slug = workspaces::invitations::accept(&mut conn, &audit, &token, user.id, state.clock.now()).await?;
    leptos_axum::redirect(&format!("/w/{slug}"));
    Ok(())
}
