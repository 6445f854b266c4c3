//! Workspace server functions. Each one authenticates, loads the caller's membership
//! fresh (`server::workspace_access`) and checks the permission it needs — in the
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
    pub members: Vec<MemberView>,
    pub invitations: Vec<InvitationView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationInfo {
    pub workspace_name: String,
    pub role: String,
}

#[cfg(feature = "ssr")]
mod imp {
    pub use crate::server::{self, with_status, workspace_error};
    pub use fluxi_core::workspaces::{self, Permission, Role};

    pub fn parse_uuid(raw: &str) -> Result<uuid::Uuid, crate::error::AppError> {
        uuid::Uuid::parse_str(raw.trim()).map_err(|_| with_status(crate::error::AppError::BadRequest))
    }

    pub fn parse_role(raw: &str) -> Result<Role, crate::error::AppError> {
        Role::parse(raw.trim())
            .ok_or_else(|| with_status(crate::error::AppError::field("role", "Choose a role: admin, member or viewer.")))
    }

    pub fn fail(e: workspaces::WorkspaceError) -> crate::error::AppError {
        with_status(workspace_error(e))
    }
}

#[server(prefix = "/api", endpoint = "list_workspaces")]
pub async fn list_workspaces() -> Result<Vec<WorkspaceLink>, AppError> {
    use imp::*;
    let state = server::state()?;
    let user = server::require_user(&state).await.map_err(with_status)?;
    let mut conn = server::conn(&state).await?;
    let list = workspaces::list_for_user(&mut conn, user.id).await.map_err(server::internal)?;
    Ok(list
        .into_iter()
        .map(|w| WorkspaceLink { slug: w.slug, name: w.name, role: w.role.as_str().into() })
        .collect())
}

#[server(prefix = "/api", endpoint = "create_workspace")]
pub async fn create_workspace(name: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let user = server::require_user(&state).await.map_err(with_status)?;
    if let Err(workspaces::WorkspaceError::Invalid(msg)) = workspaces::validate_workspace_name(&name) {
        return Err(with_status(AppError::field("name", msg)));
    }
    let mut conn = server::conn(&state).await?;
    let created = workspaces::create_workspace(&mut conn, user.id, &name, state.clock.now(), state.workspaces_per_day)
        .await
        .map_err(fail)?;
    leptos_axum::redirect(&format!("/w/{}", created.slug));
    Ok(())
}

#[server(prefix = "/api", endpoint = "workspace_home")]
pub async fn get_workspace_home(slug: String) -> Result<WorkspaceHome, AppError> {
    use imp::*;
    let state = server::state()?;
    let (_user, mut conn, access) = server::workspace_access(&state, &slug).await?;
    let notes = fluxi_core::tenancy::notes::list_notes(&mut conn, &access).await.map_err(server::internal)?;
    Ok(WorkspaceHome {
        slug: access.slug().into(),
        name: access.name().into(),
        role: access.role().as_str().into(),
        can_write: access.can(Permission::Write),
        can_manage_members: access.can(Permission::ManageMembers),
        notes: notes
            .into_iter()
            .map(|n| NoteView { id: n.id.to_string(), title: n.title, body: n.body })
            .collect(),
    })
}

#[server(prefix = "/api", endpoint = "create_note")]
pub async fn create_note(slug: String, title: String, body: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (_user, mut conn, access) = server::workspace_access(&state, &slug).await?;
    access.require(Permission::Write).map_err(fail)?;
    let title = title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(with_status(AppError::field("title", "Enter a title of at most 200 characters.")));
    }
    if body.chars().count() > 10_000 {
        return Err(with_status(AppError::field("body", "The note must be at most 10,000 characters.")));
    }
    fluxi_core::tenancy::notes::create_note(&mut conn, &access, title, &body).await.map_err(server::internal)?;
    Ok(())
}

#[server(prefix = "/api", endpoint = "members_page")]
pub async fn get_members_page(slug: String) -> Result<MembersPage, AppError> {
    use imp::*;
    let state = server::state()?;
    let (user, conn, access) = server::workspace_access(&state, &slug).await?;
    let can_manage = access.can(Permission::ManageMembers);
    let is_owner = access.can(Permission::ManageOwners);
    // Both reads go out together on the one connection (pipelined): one round trip.
    let members = workspaces::list_members(&conn, &access);
    let invitations = async {
        if can_manage {
            workspaces::invitations::list_pending(&conn, &access, state.clock.now()).await
        } else {
            Ok(Vec::new())
        }
    };
    let (members, invitations) = tokio::try_join!(members, invitations).map_err(fail)?;
    let invitations = invitations
        .into_iter()
        .map(|i| InvitationView {
            id: i.id.to_string(),
            email: i.email,
            role: i.role.as_str().into(),
            mail: match i.mail {
                workspaces::invitations::MailDelivery::Queued => MailState::Queued,
                workspaces::invitations::MailDelivery::Sent => MailState::Sent,
                workspaces::invitations::MailDelivery::Failed => MailState::NotDelivered,
                workspaces::invitations::MailDelivery::Unknown => MailState::Unknown,
            },
        })
        .collect();
    Ok(MembersPage {
        slug: access.slug().into(),
        name: access.name().into(),
        my_role: access.role().as_str().into(),
        can_manage,
        is_owner,
        invitations,
        members: members
            .into_iter()
            .map(|m| MemberView {
                manageable: m.user_id != user.id && can_manage && (m.role != Role::Owner || is_owner),
                is_me: m.user_id == user.id,
                user_id: m.user_id.to_string(),
                display_name: m.display_name,
                email: m.email,
                role: m.role.as_str().into(),
            })
            .collect(),
    })
}

#[server(prefix = "/api", endpoint = "invite_member")]
pub async fn invite_member(slug: String, email: String, role: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (_user, mut conn, access) = server::workspace_access(&state, &slug).await?;
    access.require(Permission::ManageMembers).map_err(fail)?;
    let role = parse_role(&role)?;
    if role == Role::Owner {
        return Err(with_status(AppError::field("role", "Invite as admin, member or viewer; ownership is transferred separately.")));
    }
    let now = state.clock.now();
    workspaces::invitations::invite(&mut conn, &access, &email, role, now, workspaces::invitations::DEFAULT_TTL, &state.base_url)
        .await
        .map_err(|e| match e {
            workspaces::WorkspaceError::Invalid(msg) => with_status(AppError::field("email", msg)),
            other => fail(other),
        })?;
    Ok(())
}

#[server(prefix = "/api", endpoint = "revoke_invitation")]
pub async fn revoke_invitation(slug: String, invitation_id: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (_user, mut conn, access) = server::workspace_access(&state, &slug).await?;
    access.require(Permission::ManageMembers).map_err(fail)?;
    let id = parse_uuid(&invitation_id)?;
    workspaces::invitations::revoke(&mut conn, &access, id, state.clock.now()).await.map_err(fail)
}

#[server(prefix = "/api", endpoint = "change_member_role")]
pub async fn change_member_role(slug: String, user_id: String, role: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (_user, mut conn, access) = server::workspace_access(&state, &slug).await?;
    access.require(Permission::ManageMembers).map_err(fail)?;
    let (target, role) = (parse_uuid(&user_id)?, parse_role(&role)?);
    workspaces::change_role(&mut conn, &access, target, role).await.map_err(fail)
}

#[server(prefix = "/api", endpoint = "remove_member")]
pub async fn remove_member(slug: String, user_id: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (_user, mut conn, access) = server::workspace_access(&state, &slug).await?;
    access.require(Permission::ManageMembers).map_err(fail)?;
    let target = parse_uuid(&user_id)?;
    workspaces::remove_member(&mut conn, &access, target).await.map_err(fail)
}

#[server(prefix = "/api", endpoint = "leave_workspace")]
pub async fn leave_workspace(slug: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (user, mut conn, access) = server::workspace_access(&state, &slug).await?;
    workspaces::remove_member(&mut conn, &access, user.id).await.map_err(fail)?;
    leptos_axum::redirect("/workspaces");
    Ok(())
}

/// Step-up: the owner re-enters their password.
#[server(prefix = "/api", endpoint = "transfer_ownership")]
pub async fn transfer_ownership(slug: String, user_id: String, password: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (user, conn, access) = server::workspace_access(&state, &slug).await?;
    access.require(Permission::ManageOwners).map_err(fail)?;
    let target = parse_uuid(&user_id)?;
    drop(conn);
    server::step_up(&state, &user, &password).await?;
    // The domain function checks the caller's role again, in its transaction.
    let mut conn = server::conn(&state).await?;
    workspaces::transfer_ownership(&mut conn, &access, target).await.map_err(fail)
}

/// Step-up: the owner re-enters their password.
#[server(prefix = "/api", endpoint = "delete_workspace")]
pub async fn delete_workspace(slug: String, password: String) -> Result<(), AppError> {
    use imp::*;
    let state = server::state()?;
    let (user, conn, access) = server::workspace_access(&state, &slug).await?;
    access.require(Permission::DeleteWorkspace).map_err(fail)?;
    drop(conn);
    server::step_up(&state, &user, &password).await?;
    // The domain function checks the caller's role again, in its transaction.
    let mut conn = server::conn(&state).await?;
    workspaces::delete_workspace(&mut conn, &access).await.map_err(fail)?;
    leptos_axum::redirect("/workspaces");
    Ok(())
}

#[server(prefix = "/api", endpoint = "invitation_info")]
pub async fn get_invitation_info(token: String) -> Result<InvitationInfo, AppError> {
    use imp::*;
    let state = server::state()?;
    if token.len() > 128 {
        return Err(with_status(AppError::Rejected("This invitation link is not valid.".into())));
    }
    let mut conn = server::conn(&state).await?;
    let preview = workspaces::invitations::preview(&mut conn, &token, state.clock.now())
        .await
        .map_err(|p| with_status(AppError::Rejected(p.to_string())))?;
    Ok(InvitationInfo { workspace_name: preview.workspace_name, role: preview.role.as_str().into() })
}

#[server(prefix = "/api", endpoint = "accept_invitation")]
pub async fn accept_invitation(token: String) -> Result<(), AppError> {
    use imp::*;
    use workspaces::invitations::AcceptError;
    let state = server::state()?;
    let user = server::require_user(&state).await.map_err(with_status)?;
    if token.len() > 128 {
        return Err(with_status(AppError::Rejected("This invitation link is not valid.".into())));
    }
    let mut conn = server::conn(&state).await?;
    let slug = workspaces::invitations::accept(&mut conn, &token, user.id, state.clock.now())
        .await
        .map_err(|e| match e {
            AcceptError::Problem(p) => with_status(AppError::Rejected(p.to_string())),
            AcceptError::Database(e) => server::internal(e),
        })?;
    leptos_axum::redirect(&format!("/w/{slug}"));
    Ok(())
}
