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
use crate::workspaces::{self, allowed, Permission, Role, WorkspaceAccess};

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
    /// Exactly what confirming does, in fixed words and verified addresses.
    pub summary: String,
    /// The display name of whom it concerns: text members write, shown apart.
    pub subject_name: Option<String>,
    /// Side effects, in words.
    pub consequences: Vec<String>,
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
    /// The assistant was turned off before anyone decided.
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Executing => "executing",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Dismissed => "dismissed",
            Status::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> Option<Status> {
        [Status::Pending, Status::Executing, Status::Done, Status::Failed, Status::Dismissed, Status::Cancelled]
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
    pub fn target(&self) -> Target {
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
    pub subject_name: Option<String>,
    pub consequences: Vec<String>,
    pub sensitive: bool,
    /// Something in it looks planted (a name the screen flags, a look-alike address):
    /// the card says to check it.
    pub suspicious: bool,
}

/// Checks an action call against the workspace and the person's permissions, as the
/// page's own checks would, and words it. The summary holds only fixed words, roles and
/// verified addresses, so nothing a member wrote can reword it; a display name is kept
/// apart (`subject_name`).
pub(crate) async fn draft(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    deps: &ActionDeps<'_>,
    call: &Call,
) -> Result<Draft, ToolRefusal> {
    match call {
        Call::InviteMember { email, role } => {
            if !access.can(Permission::ManageMembers) {
                return Err(ToolRefusal::NotPermitted);
            }
            let email = crate::accounts::validate_email(email).map_err(|_| ToolRefusal::BadArguments)?;
            let role = Role::from(*role);
            let lookalike = planted_address(&email);
            let mut consequences = Vec::new();
            if lookalike {
                consequences.push(
                    "The address contains letters from outside the Latin alphabet: check it letter by letter.".into(),
                );
            }
            if role == Role::Admin {
                consequences.push("Admins manage members and integrations and read the audit log.".into());
            }
            Ok(Draft {
                summary: format!("Invite {email} to this workspace as {}", role.as_str()),
                subject_name: None,
                consequences,
                sensitive: role == Role::Admin,
                suspicious: lookalike,
                planned: Planned::InviteMember { email, role },
            })
        }
        Call::ChangeRole { member_id, role } => {
            let member = member(conn, access, *member_id).await?;
            if !workspaces::may_manage(access, member.user_id, member.role) {
                return Err(ToolRefusal::NotPermitted);
            }
            let (from, to) = (member.role, Role::from(*role));
            if to == from {
                return Err(ToolRefusal::NotPossible);
            }
            let mut consequences = Vec::new();
            if !allowed(to, Permission::ManageOwnIntegrations) {
                consequences.push("Their integrations in this workspace are disconnected.".into());
            }
            if allowed(from, Permission::ManageMembers) && !allowed(to, Permission::ManageMembers) {
                consequences.push("Invitations they sent and that are still pending are revoked.".into());
            }
            Ok(Draft {
                summary: format!("Change the role of {} from {} to {}", member.email, from.as_str(), to.as_str()),
                suspicious: planted(&member.display_name) || planted_address(&member.email),
                subject_name: Some(member.display_name),
                consequences,
                sensitive: to == Role::Admin || matches!(from, Role::Owner | Role::Admin),
                planned: Planned::ChangeRole { member_id: member.user_id, from, to },
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
            let mut consequences = vec!["Their integrations in this workspace are disconnected.".to_string()];
            if allowed(member.role, Permission::ManageMembers) {
                consequences.push("Invitations they sent and that are still pending are revoked.".into());
            }
            Ok(Draft {
                summary: format!("Remove {} ({}) from this workspace", member.email, member.role.as_str()),
                suspicious: planted(&member.display_name) || planted_address(&member.email),
                subject_name: Some(member.display_name),
                consequences,
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
            let mine = c.owner_id == access.user_id();
            let whose = if mine {
                "your".to_string()
            } else {
                let owner = member(conn, access, c.owner_id)
                    .await
                    .map(|m| m.email)
                    .unwrap_or_else(|_| "a former member".into());
                format!("{owner}'s")
            };
            Ok(Draft {
                summary: format!("Disconnect {whose} {provider} integration"),
                subject_name: None,
                consequences: vec![format!("Fluxi deletes its access and revokes it at {provider}.")],
                sensitive: !mine,
                suspicious: false,
                planned: Planned::DisconnectIntegration { connection_id: c.id },
            })
        }
        Call::ListMembers | Call::ListNotes | Call::ListMyIntegrations | Call::RecentAuditEvents { .. } => {
            Err(ToolRefusal::UnknownTool)
        }
    }
}

/// An address that reads like instructions, or that mixes in letters from outside the
/// Latin alphabet (a look-alike of a colleague's).
fn planted_address(email: &str) -> bool {
    !email.is_ascii()
        || super::screen::screen_content(&super::turn::as_words(email)).decision != super::screen::Decision::Allow
}

/// A display name that reads like instructions or names a tool.
fn planted(name: &str) -> bool {
    super::screen::screen_content(name).decision != super::screen::Decision::Allow
        || name.chars().any(|c| matches!(c, '“' | '”' | '"' | '(' | ')' | '[' | ']'))
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
            ap::subject_name.eq(&draft.subject_name),
            ap::consequences.eq(&draft.consequences),
            ap::sensitive.eq(draft.sensitive),
            ap::after_flagged.eq(after_flagged),
            ap::created_at.eq(now),
        ))
        .execute(c)
        .await?;
    Ok(id)
}

type Row =
    (Uuid, Uuid, String, serde_json::Value, (String, Option<String>, Vec<String>), bool, bool, String, OffsetDateTime);

#[allow(clippy::type_complexity)]
fn columns() -> (
    ap::id,
    ap::message_id,
    ap::tool,
    ap::arguments,
    (ap::summary, ap::subject_name, ap::consequences),
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
        (ap::summary, ap::subject_name, ap::consequences),
        ap::sensitive,
        ap::after_flagged,
        ap::status,
        ap::created_at,
    )
}

fn from_row(r: Row) -> Option<(Proposal, serde_json::Value)> {
    let (
        id,
        message_id,
        tool,
        arguments,
        (summary, subject_name, consequences),
        sensitive,
        after_flagged,
        status,
        created_at,
    ) = r;
    Some((
        Proposal {
            id,
            message_id,
            tool: Tool::parse(&tool)?,
            summary,
            subject_name,
            consequences,
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
        .order(ap::seq.asc())
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
    Detail::AssistantTool {
        tool: Some(p.tool),
        refusal,
        sensitive: p.sensitive,
        after_flagged: p.after_flagged,
        proposal: Some(p.id),
    }
}

/// Why a confirmation was refused before anything was done, for the trail.
fn refusal_of(e: &AssistantError) -> Option<ToolRefusal> {
    match e {
        AssistantError::StepUpRequired => Some(ToolRefusal::NotPermitted),
        AssistantError::ProposalExpired | AssistantError::ProposalDecided | AssistantError::Unavailable(_) => {
            Some(ToolRefusal::NotPossible)
        }
        AssistantError::Limited { .. } => Some(ToolRefusal::RateLimited),
        _ => None,
    }
}

/// Carries out one of the person's pending proposals. `stepped_up`: the person confirmed
/// who they are for this confirmation (required for sensitive proposals). The kill
/// switches and the execution limits apply; the proposal is claimed before anything is
/// done, so it runs at most once however many confirmations arrive. A refusal is audited.
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
    let proposal = find(conn, access, id).await?;
    let checked = async {
        let switched_at = super::require_ready(conn, config, access).await?;
        if proposal.status != Status::Pending {
            return Err(AssistantError::ProposalDecided);
        }
        if super::proposal_expired(proposal.created_at, &config.limits, now) {
            return Err(AssistantError::ProposalExpired);
        }
        // Made before a switch last changed (or during the change): what the switch
        // cancelled, or a turn that overlapped it, is never carried out.
        if switched_at.is_some_and(|at| proposal.created_at <= at) {
            return Err(AssistantError::ProposalDecided);
        }
        if proposal.sensitive && !stepped_up {
            return Err(AssistantError::StepUpRequired);
        }
        let limits = &config.limits;
        take_limit(conn, audit, access, LimitKind::PersonExecutions, limits.person_executions, now).await?;
        take_limit(conn, audit, access, LimitKind::WorkspaceExecutions, limits.workspace_executions, now).await
    }
    .await;
    if let Err(e) = checked {
        if let Some(why) = refusal_of(&e) {
            let event = Event::workspace(
                access.workspace_id(),
                Action::AssistantConfirmRefused,
                Target::None,
                Outcome::Denied,
                detail(&proposal, Some(why)),
            );
            audit.record(conn, event).await?;
        }
        return Err(e);
    }
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
/// again in its transaction and records its own event); a member's role must still be
/// the one the card named, checked under the domain function's lock.
async fn execute(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    deps: &ActionDeps<'_>,
    planned: &Planned,
    now: OffsetDateTime,
) -> Result<(), AssistantError> {
    let outdated = |e: workspaces::WorkspaceError| match e {
        workspaces::WorkspaceError::RoleChangedMeanwhile | workspaces::WorkspaceError::NoSuchMember => {
            AssistantError::ProposalOutdated
        }
        e => e.into(),
    };
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
            workspaces::change_role_from(conn, audit, access, *member_id, Some(*from), *to).await.map_err(outdated)?;
        }
        Planned::RemoveMember { member_id, role } => {
            workspaces::remove_member_holding(conn, audit, access, *member_id, Some(*role)).await.map_err(outdated)?;
        }
        Planned::DisconnectIntegration { connection_id } => {
            let done = crate::integrations::disconnect(conn, audit, access, deps.integrations, *connection_id, now)
                .await
                .map_err(|e| match e {
                    crate::integrations::IntegrationError::NotFound => AssistantError::ProposalOutdated,
                    e => e.into(),
                })?;
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
