//! Actions the model proposed. A proposal is checked against the person's permissions
//! before it is shown (one they may not carry out is refused, never offered), states
//! exactly what confirming will do, and is carried out — once — by the same domain
//! functions the pages call, under the person's own role, after they confirm (and, when
//! sensitive, confirm who they are).

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::tools::{Call, Tool, ToolRefusal};
use super::{take_limit, AssistantConfig, AssistantError, LimitKind};
use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};
use crate::integrations::{revocations, Integrations};
use crate::secrets::Keyring;
use crate::tenancy;
use crate::tenancy::schema::assistant_proposals as ap;
use crate::workspaces::invitations::InvitationPolicy;
use crate::workspaces::{self, Permission, Role, WorkspaceAccess};

/// What carrying out a proposal needs besides the database.
pub struct ActionDeps<'a> {
    pub integrations: &'a Integrations,
    pub keyring: &'a Keyring,
    pub invitation_policy: &'a InvitationPolicy,
    pub base_url: &'a str,
}

/// A proposal as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: Uuid,
    pub message_id: Uuid,
    pub tool: Tool,
    /// Exactly what confirming does, in words.
    pub summary: String,
    /// Needs a fresh step-up.
    pub sensitive: bool,
    /// The model had read flagged content before proposing it.
    pub after_flagged: bool,
    pub status: Status,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Executing,
    Done,
    Failed,
    Dismissed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Executing => "executing",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Dismissed => "dismissed",
        }
    }
    fn parse(s: &str) -> Option<Status> {
        [Status::Pending, Status::Executing, Status::Done, Status::Failed, Status::Dismissed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A proposal's action with what it was checked against, stored as its arguments: at
/// confirmation, the workspace must still be as it was when the person read the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum Planned {
    InviteMember { email: String, role: Role },
    ChangeRole { member_id: Uuid, from: Role, to: Role },
    RemoveMember { member_id: Uuid, role: Role },
    DisconnectIntegration { connection_id: Uuid },
}

impl Planned {
    pub fn tool(&self) -> Tool {
        match self {
            Planned::InviteMember { .. } => Tool::InviteMember,
            Planned::ChangeRole { .. } => Tool::ChangeRole,
            Planned::RemoveMember { .. } => Tool::RemoveMember,
            Planned::DisconnectIntegration { .. } => Tool::DisconnectIntegration,
        }
    }
    fn target(&self) -> Target {
        match self {
            Planned::InviteMember { .. } => Target::None,
            Planned::ChangeRole { member_id, .. } | Planned::RemoveMember { member_id, .. } => {
                Target::Member(*member_id)
            }
            Planned::DisconnectIntegration { connection_id } => Target::Connection(*connection_id),
        }
    }
}

/// A checked proposal, before it is stored.
#[derive(Debug, Clone)]
pub struct Draft {
    pub planned: Planned,
    pub summary: String,
    pub sensitive: bool,
}

/// Checks an action call against the workspace and the person's permissions, as the
/// page's own checks would, and words it. Read under the caller's connection.
pub(crate) async fn draft(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    deps: &ActionDeps<'_>,
    call: &Call,
) -> Result<Draft, ToolRefusal> {
    let ws = quoted(access.name());
    match call {
        Call::InviteMember { email, role } => {
            if !access.can(Permission::ManageMembers) {
                return Err(ToolRefusal::NotPermitted);
            }
            let email = crate::accounts::validate_email(email).map_err(|_| ToolRefusal::BadArguments)?;
            let role = Role::from(*role);
            Ok(Draft {
                summary: format!("Invite {email} to {ws} as {}", role.as_str()),
                sensitive: role == Role::Admin,
                planned: Planned::InviteMember { email, role },
            })
        }
        Call::ChangeRole { member_id, role } => {
            let member = member(conn, access, *member_id).await?;
            if !workspaces::may_manage(access, member.user_id, member.role) {
                return Err(ToolRefusal::NotPermitted);
            }
            let to = Role::from(*role);
            if to == member.role {
                return Err(ToolRefusal::NotPossible);
            }
            Ok(Draft {
                summary: format!(
                    "Change the role of {} ({}) from {} to {}",
                    quoted(&member.display_name),
                    member.email,
                    member.role.as_str(),
                    to.as_str()
                ),
                sensitive: to == Role::Admin || member.role == Role::Admin,
                planned: Planned::ChangeRole { member_id: member.user_id, from: member.role, to },
            })
        }
        Call::RemoveMember { member_id } => {
            if *member_id == access.user_id() {
                return Err(ToolRefusal::NotPossible);
            }
            let member = member(conn, access, *member_id).await?;
            if !workspaces::may_manage(access, member.user_id, member.role) {
                return Err(ToolRefusal::NotPermitted);
            }
            Ok(Draft {
                summary: format!(
                    "Remove {} ({}, {}) from {ws}",
                    quoted(&member.display_name),
                    member.email,
                    member.role.as_str()
                ),
                sensitive: true,
                planned: Planned::RemoveMember { member_id: member.user_id, role: member.role },
            })
        }
        Call::DisconnectIntegration { connection_id } => {
            if !access.can(Permission::ManageOwnIntegrations) {
                return Err(ToolRefusal::NotPermitted);
            }
            // Those the person may see are those they may disconnect.
            let visible = crate::integrations::list_connections(conn, access, deps.keyring)
                .await
                .map_err(|_| ToolRefusal::NotFound)?;
            let c = visible.into_iter().find(|c| c.id == *connection_id).ok_or(ToolRefusal::NotFound)?;
            let provider =
                deps.integrations.catalogue().get(&c.provider).map_or(c.provider.clone(), |p| p.name.clone());
            let whose = if c.owner_id == access.user_id() { "your".to_string() } else { "a member's".to_string() };
            Ok(Draft {
                summary: format!("Disconnect {whose} {provider} integration and revoke its access"),
                sensitive: c.owner_id != access.user_id(),
                planned: Planned::DisconnectIntegration { connection_id: c.id },
            })
        }
        Call::ListMembers | Call::ListNotes | Call::ListMyIntegrations | Call::RecentAuditEvents { .. } => {
            Err(ToolRefusal::UnknownTool)
        }
    }
}

/// Text the workspace's people wrote, quoted so it reads as a name, not as instructions.
fn quoted(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(80).collect();
    format!("“{clean}”")
}

async fn member(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    id: Uuid,
) -> Result<workspaces::Member, ToolRefusal> {
    let members = workspaces::list_members(conn, access).await.map_err(|_| ToolRefusal::NotFound)?;
    members.into_iter().find(|m| m.user_id == id).ok_or(ToolRefusal::NotFound)
}

/// Stores a checked proposal (inside the turn's transaction, in the tenant scope).
pub(crate) async fn insert(
    c: &mut AsyncPgConnection,
    owner: Uuid,
    message_id: Uuid,
    draft: &Draft,
    after_flagged: bool,
    now: OffsetDateTime,
) -> QueryResult<Uuid> {
    let id = Uuid::new_v4();
    diesel::insert_into(ap::table)
        .values((
            ap::id.eq(id),
            ap::owner_id.eq(owner),
            ap::message_id.eq(message_id),
            ap::tool.eq(draft.planned.tool().name()),
            ap::arguments.eq(serde_json::to_value(&draft.planned).unwrap_or_default()),
            ap::summary.eq(&draft.summary),
            ap::sensitive.eq(draft.sensitive),
            ap::after_flagged.eq(after_flagged),
            ap::created_at.eq(now),
        ))
        .execute(c)
        .await?;
    Ok(id)
}

type Row = (Uuid, Uuid, String, serde_json::Value, String, bool, bool, String, OffsetDateTime);

fn columns() -> (
    ap::id,
    ap::message_id,
    ap::tool,
    ap::arguments,
    ap::summary,
    ap::sensitive,
    ap::after_flagged,
    ap::status,
    ap::created_at,
) {
    (
        ap::id,
        ap::message_id,
        ap::tool,
        ap::arguments,
        ap::summary,
        ap::sensitive,
        ap::after_flagged,
        ap::status,
        ap::created_at,
    )
}

fn from_row(r: Row) -> Option<(Proposal, serde_json::Value)> {
    let (id, message_id, tool, arguments, summary, sensitive, after_flagged, status, created_at) = r;
    Some((
        Proposal {
            id,
            message_id,
            tool: Tool::parse(&tool)?,
            summary,
            sensitive,
            after_flagged,
            status: Status::parse(&status)?,
            created_at,
        },
        arguments,
    ))
}

/// The proposals of these messages (in the tenant scope).
pub(crate) async fn load_for(c: &mut AsyncPgConnection, owner: Uuid, messages: &[Uuid]) -> QueryResult<Vec<Proposal>> {
    let rows: Vec<Row> = ap::table
        .filter(ap::owner_id.eq(owner))
        .filter(ap::message_id.eq_any(messages))
        .order((ap::created_at.asc(), ap::id.asc()))
        .select(columns())
        .load(c)
        .await?;
    Ok(rows.into_iter().filter_map(from_row).map(|(p, _)| p).collect())
}

/// One of the person's own proposals.
pub async fn find(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    id: Uuid,
) -> Result<Proposal, AssistantError> {
    let me = access.user_id();
    let row: Option<Row> = tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move { ap::table.find(id).filter(ap::owner_id.eq(me)).select(columns()).first(c).await.optional() }
            .scope_boxed()
    })
    .await?;
    row.and_then(from_row).map(|(p, _)| p).ok_or(AssistantError::ProposalNotFound)
}

fn detail(p: &Proposal, refusal: Option<ToolRefusal>) -> Detail {
    Detail::AssistantTool { tool: Some(p.tool), refusal, sensitive: p.sensitive, after_flagged: p.after_flagged }
}

/// Carries out one of the person's pending proposals. `stepped_up`: the person confirmed
/// who they are within the step-up window (required for sensitive proposals). The kill
/// switches and the execution limits apply; the proposal is claimed before anything is
/// done, so it runs at most once however many confirmations arrive.
// Each argument is a separate input of the one action (who, which, with what, when).
#[allow(clippy::too_many_arguments)]
pub async fn confirm(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    config: &AssistantConfig,
    deps: &ActionDeps<'_>,
    id: Uuid,
    stepped_up: bool,
    now: OffsetDateTime,
) -> Result<Proposal, AssistantError> {
    super::require_ready(conn, config, access).await?;
    let proposal = find(conn, access, id).await?;
    if proposal.status != Status::Pending {
        return Err(AssistantError::ProposalDecided);
    }
    if super::proposal_expired(proposal.created_at, &config.limits, now) {
        return Err(AssistantError::ProposalExpired);
    }
    if proposal.sensitive && !stepped_up {
        return Err(AssistantError::StepUpRequired);
    }
    let limits = &config.limits;
    take_limit(conn, audit, access, LimitKind::PersonExecutions, limits.person_executions, now).await?;
    take_limit(conn, audit, access, LimitKind::WorkspaceExecutions, limits.workspace_executions, now).await?;
    // Claimed: from here on, no other confirmation of it can start.
    let me = access.user_id();
    let arguments: Option<serde_json::Value> =
        tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
            async move {
                diesel::update(ap::table.find(id).filter(ap::owner_id.eq(me)).filter(ap::status.eq("pending")))
                    .set((ap::status.eq("executing"), ap::decided_at.eq(now)))
                    .returning(ap::arguments)
                    .get_result(c)
                    .await
                    .optional()
            }
            .scope_boxed()
        })
        .await?;
    let planned: Planned =
        arguments.and_then(|a| serde_json::from_value(a).ok()).ok_or(AssistantError::ProposalDecided)?;
    let result = execute(conn, audit, access, deps, &planned, now).await;
    let (status, action, refusal) = match &result {
        Ok(()) => (Status::Done, Action::AssistantProposalExecuted, None),
        Err(AssistantError::ProposalOutdated) => {
            (Status::Failed, Action::AssistantProposalFailed, Some(ToolRefusal::NotPossible))
        }
        Err(AssistantError::Workspace(workspaces::WorkspaceError::Forbidden)) => {
            (Status::Failed, Action::AssistantProposalFailed, Some(ToolRefusal::NotPermitted))
        }
        Err(_) => (Status::Failed, Action::AssistantProposalFailed, None),
    };
    let done = Proposal { status, ..proposal };
    let event_detail = detail(&done, refusal);
    let on = planned.target();
    conn.transaction::<_, AssistantError, _>(|c| {
        async move {
            tenancy::enter_scope(c, access.schema(), access.db_role()).await?;
            diesel::update(ap::table.find(id)).set(ap::status.eq(status.as_str())).execute(c).await?;
            tenancy::leave_scope(c).await?;
            let outcome = if status == Status::Done { Outcome::Succeeded } else { Outcome::Failed };
            audit.record(c, Event::workspace(access.workspace_id(), action, on, outcome, event_detail)).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await?;
    result.map(|()| done)
}

/// The action itself, by the pages' own domain functions (each checks the caller's role
/// again in its transaction and records its own event).
async fn execute(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    deps: &ActionDeps<'_>,
    planned: &Planned,
    now: OffsetDateTime,
) -> Result<(), AssistantError> {
    match planned {
        Planned::InviteMember { email, role } => {
            workspaces::invitations::invite(
                conn,
                audit,
                access,
                email,
                *role,
                now,
                deps.invitation_policy,
                deps.base_url,
            )
            .await?;
        }
        Planned::ChangeRole { member_id, from, to } => {
            still_holds(conn, access, *member_id, *from).await?;
            workspaces::change_role(conn, audit, access, *member_id, *to).await?;
        }
        Planned::RemoveMember { member_id, role } => {
            still_holds(conn, access, *member_id, *role).await?;
            workspaces::remove_member(conn, audit, access, *member_id).await?;
        }
        Planned::DisconnectIntegration { connection_id } => {
            let done =
                crate::integrations::disconnect(conn, audit, access, deps.integrations, *connection_id, now).await?;
            if let Some(queued) = done.queued {
                // Revoked now when the provider answers; otherwise the job retries.
                if crate::integrations::take_provider_call(conn, access.user_id(), now).await.is_ok() {
                    let _ = revocations::attempt(conn, audit, deps.keyring, deps.integrations, queued, now).await;
                }
            }
        }
    }
    Ok(())
}

/// The member still holds the role the card named: otherwise the person confirmed
/// something other than what would happen.
async fn still_holds(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    member: Uuid,
    role: Role,
) -> Result<(), AssistantError> {
    let members = workspaces::list_members(conn, access).await?;
    match members.into_iter().find(|m| m.user_id == member) {
        Some(m) if m.role == role => Ok(()),
        _ => Err(AssistantError::ProposalOutdated),
    }
}

/// Dismisses one of the person's pending proposals.
pub async fn dismiss(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<(), AssistantError> {
    let proposal = find(conn, access, id).await?;
    let me = access.user_id();
    let event_detail = detail(&proposal, None);
    conn.transaction::<_, AssistantError, _>(|c| {
        async move {
            tenancy::enter_scope(c, access.schema(), access.db_role()).await?;
            let n = diesel::update(ap::table.find(id).filter(ap::owner_id.eq(me)).filter(ap::status.eq("pending")))
                .set((ap::status.eq("dismissed"), ap::decided_at.eq(now)))
                .execute(c)
                .await?;
            tenancy::leave_scope(c).await?;
            if n == 0 {
                return Err(AssistantError::ProposalDecided);
            }
            let on = Target::None;
            let event = Event::workspace(
                access.workspace_id(),
                Action::AssistantProposalDismissed,
                on,
                Outcome::Succeeded,
                event_detail,
            );
            audit.record(c, event).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}
