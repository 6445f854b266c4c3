//! The workspace assistant and the guard layer every AI feature goes through
//! (docs/assistant.md).
//!
//! Designed for a model that obeys whoever wrote anything in its context: whatever it
//! says, nothing happens that the person asking could not do themselves (tools run under
//! their permissions; actions are only proposed), nothing sensitive happens without their
//! explicit confirmation of exactly what will happen (and a fresh step-up for the most
//! sensitive), and nothing leaves through what it says (the output guard). Detection —
//! the input screen, flagged content — is a signal on top, never the guarantee.
//!
//! - `provider`: the two wire formats behind one client.
//! - `screen`: the input screen; `spotlight`: untrusted data marked as data;
//!   `output`: the answer made safe to show; `tools`: the closed tool list.
//! - `turn`: one question, through the guards, the model and its tools.
//! - `proposals`: what the model proposed, confirmed or dismissed by the person.

pub mod output;
pub mod proposals;
pub mod provider;
pub mod screen;
pub mod spotlight;
pub mod tools;
pub mod turn;

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};
use crate::integrations::IntegrationError;
use crate::rate_limit::{self, RateLimit};
use crate::tenancy::schema::{assistant_alerts, assistant_messages, assistant_settings};
use crate::tenancy::{self};
use crate::workspaces::{Permission, Role, WorkspaceAccess, WorkspaceError};

pub use provider::{ModelClient, ModelConfig, ModelError, WireFormat};

/// Longest message a person may send.
pub const MESSAGE_MAX_CHARS: usize = 4_000;

/// How often the assistant may be used, and how much it may cost.
#[derive(Debug, Clone, Copy)]
pub struct AssistantLimits {
    pub person_messages: RateLimit,
    pub workspace_messages: RateLimit,
    /// Action proposals per person: tighter than messages.
    pub person_proposals: RateLimit,
    /// Confirmed actions per person and per workspace.
    pub person_executions: RateLimit,
    pub workspace_executions: RateLimit,
    /// Model tokens (asked for and answered) per workspace and day.
    pub daily_tokens: i32,
    /// Blocked messages or refused proposals in `alert_window` that raise an alert.
    pub alert_after: i32,
    pub alert_window: Duration,
    /// Model calls one question may take (tool results go back to the model).
    pub max_rounds: usize,
    /// How long a proposal may be confirmed.
    pub proposal_ttl: Duration,
}

impl Default for AssistantLimits {
    fn default() -> Self {
        Self {
            person_messages: RateLimit { max: 30, window: Duration::minutes(10) },
            workspace_messages: RateLimit::per_hour(600),
            person_proposals: RateLimit::per_hour(20),
            person_executions: RateLimit::per_hour(20),
            workspace_executions: RateLimit::per_hour(100),
            daily_tokens: 2_000_000,
            alert_after: 5,
            alert_window: Duration::minutes(10),
            max_rounds: 4,
            proposal_ttl: Duration::minutes(15),
        }
    }
}

/// The deployment's assistant: its model (none when not configured), the operators'
/// switch and the limits.
#[derive(Debug, Clone)]
pub struct AssistantConfig {
    pub model: Option<ModelClient>,
    /// `FLUXI_ASSISTANT=off`: the deployment's kill switch.
    pub enabled: bool,
    pub limits: AssistantLimits,
}

impl AssistantConfig {
    pub fn not_configured() -> Self {
        Self { model: None, enabled: true, limits: AssistantLimits::default() }
    }
}

/// Whether the assistant can be used in a workspace, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Ready,
    /// No model is configured for this deployment.
    NotConfigured,
    /// Turned off for the whole deployment.
    OffForDeployment,
    /// Turned off by the workspace's owners.
    OffForWorkspace,
}

impl Availability {
    pub fn words(self) -> &'static str {
        match self {
            Availability::Ready => "The assistant is on.",
            Availability::NotConfigured => "The assistant is not set up on this server: no AI provider is configured.",
            Availability::OffForDeployment => "The assistant is turned off for this server by its operators.",
            Availability::OffForWorkspace => "The assistant is turned off for this workspace by its owners.",
        }
    }
}

/// Which limit refused a use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    PersonMessages,
    WorkspaceMessages,
    DailyTokens,
    PersonExecutions,
    WorkspaceExecutions,
}

#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error("{}", .0.words())]
    Unavailable(Availability),
    #[error("Type a message.")]
    EmptyMessage,
    #[error("Messages can be at most 4,000 characters.")]
    MessageTooLong,
    #[error("assistant limit reached")]
    Limited { which: LimitKind, wait: Duration },
    #[error("That proposal was not found.")]
    ProposalNotFound,
    #[error("That proposal was already confirmed or dismissed.")]
    ProposalDecided,
    #[error("That proposal has expired. Ask the assistant again.")]
    ProposalExpired,
    #[error("That proposal no longer matches the workspace (it changed since). Ask the assistant again.")]
    ProposalOutdated,
    /// A sensitive proposal: confirm who you are first.
    #[error("Confirm it is you to carry out this action.")]
    StepUpRequired,
    #[error("The server is busy right now. Please try again in a moment.")]
    Busy,
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Integration(#[from] IntegrationError),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl From<crate::tenancy::TenantError> for AssistantError {
    fn from(e: crate::tenancy::TenantError) -> Self {
        AssistantError::Workspace(e.into())
    }
}

/// Whether the assistant may be used in `access`'s workspace now.
pub async fn availability(
    conn: &mut AsyncPgConnection,
    config: &AssistantConfig,
    access: &WorkspaceAccess,
) -> Result<Availability, AssistantError> {
    Ok(switches(conn, config, access).await?.0)
}

/// Whether the assistant may be used, and when either switch (the deployment's, the
/// workspace's) last changed: both rows read once.
async fn switches(
    conn: &mut AsyncPgConnection,
    config: &AssistantConfig,
    access: &WorkspaceAccess,
) -> Result<(Availability, Option<OffsetDateTime>), AssistantError> {
    use crate::schema::assistant_deployment as d;
    if config.model.is_none() {
        return Ok((Availability::NotConfigured, None));
    }
    let deployment: Option<(bool, OffsetDateTime)> =
        d::table.select((d::enabled, d::changed_at)).first(conn).await.optional()?;
    let workspace: Option<(bool, OffsetDateTime)> =
        tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
            async move {
                assistant_settings::table
                    .select((assistant_settings::enabled, assistant_settings::changed_at))
                    .first(c)
                    .await
                    .optional()
            }
            .scope_boxed()
        })
        .await?;
    let availability = if !config.enabled || deployment.is_some_and(|(on, _)| !on) {
        Availability::OffForDeployment
    } else if workspace.is_some_and(|(on, _)| !on) {
        Availability::OffForWorkspace
    } else {
        Availability::Ready
    };
    Ok((availability, deployment.map(|d| d.1).max(workspace.map(|w| w.1))))
}

/// Refuses unless the assistant may be used; returns when a switch last changed.
pub(crate) async fn require_ready(
    conn: &mut AsyncPgConnection,
    config: &AssistantConfig,
    access: &WorkspaceAccess,
) -> Result<Option<OffsetDateTime>, AssistantError> {
    match switches(conn, config, access).await? {
        (Availability::Ready, switched_at) => Ok(switched_at),
        (other, _) => Err(AssistantError::Unavailable(other)),
    }
}

/// The owners' switch: on at once for everyone in the workspace, off at once (a question
/// under way stops at its next step; pending proposals are cancelled).
pub async fn set_enabled(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    enabled: bool,
    now: OffsetDateTime,
) -> Result<(), AssistantError> {
    let action = if enabled { Action::AssistantEnabled } else { Action::AssistantDisabled };
    crate::workspaces::require(conn, audit, access, Permission::ManageOwners, action, Target::None).await?;
    let me = access.user_id();
    conn.transaction::<_, AssistantError, _>(|c| {
        async move {
            tenancy::enter_scope(c, access.schema(), access.db_role()).await?;
            // Off means nothing proposed before can be confirmed later either.
            if !enabled {
                use crate::tenancy::schema::assistant_proposals as ap;
                diesel::update(ap::table.filter(ap::status.eq("pending")))
                    .set((ap::status.eq("cancelled"), ap::decided_at.eq(now)))
                    .execute(c)
                    .await?;
            }
            diesel::insert_into(assistant_settings::table)
                .values((
                    assistant_settings::enabled.eq(enabled),
                    assistant_settings::changed_by.eq(me),
                    assistant_settings::changed_at.eq(now),
                ))
                .on_conflict(assistant_settings::singleton)
                .do_update()
                .set((
                    assistant_settings::enabled.eq(enabled),
                    assistant_settings::changed_by.eq(me),
                    assistant_settings::changed_at.eq(now),
                ))
                .execute(c)
                .await?;
            tenancy::leave_scope(c).await?;
            let event = Event::workspace(access.workspace_id(), action, Target::None, Outcome::Succeeded, Detail::None);
            audit.record(c, event).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// The deployment's switch (`server assistant off|on`): every instance reads it at every
/// step, so off stops questions under way and confirmations everywhere at once; pending
/// proposals of every workspace are cancelled. Recorded in the account-level trail.
pub async fn set_deployment_enabled(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    enabled: bool,
    now: OffsetDateTime,
) -> Result<(), AssistantError> {
    use crate::schema::assistant_deployment as d;
    conn.transaction::<_, AssistantError, _>(|c| {
        async move {
            diesel::insert_into(d::table)
                .values((d::enabled.eq(enabled), d::changed_at.eq(now)))
                .on_conflict(d::singleton)
                .do_update()
                .set((d::enabled.eq(enabled), d::changed_at.eq(now)))
                .execute(c)
                .await?;
            let action = if enabled { Action::AssistantEnabled } else { Action::AssistantDisabled };
            audit.record(c, Event::account(None, action, Outcome::Succeeded, Detail::None)).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await?;
    if !enabled {
        // Each workspace in its own transaction: one broken schema does not keep the
        // others' proposals confirmable.
        for (_, schema) in tenancy::workspace_schemas_from(conn, TENANT_TABLES).await? {
            let _ = tenancy::scoped_transaction(conn, &schema, &schema, |c| {
                async move {
                    use crate::tenancy::schema::assistant_proposals as ap;
                    diesel::update(ap::table.filter(ap::status.eq("pending")))
                        .set((ap::status.eq("cancelled"), ap::decided_at.eq(now)))
                        .execute(c)
                        .await
                }
                .scope_boxed()
            })
            .await;
        }
    }
    Ok(())
}

/// The tenant migration that made the assistant's tables.
const TENANT_TABLES: &str = "2026-12-08-000001_assistant";

/// One entry of a person's conversation, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: Uuid,
    pub kind: MessageKind,
    pub body: MessageBody,
    pub flagged: bool,
    pub created_at: OffsetDateTime,
    pub proposals: Vec<proposals::Proposal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Question,
    Answer,
    /// A question the input screen stopped: never sent to the model.
    Blocked,
    /// Something the person must know that the model did not say (a refusal, a failure).
    Notice,
}

impl MessageKind {
    fn as_str(self) -> &'static str {
        match self {
            MessageKind::Question => "question",
            MessageKind::Answer => "answer",
            MessageKind::Blocked => "blocked",
            MessageKind::Notice => "notice",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [MessageKind::Question, MessageKind::Answer, MessageKind::Blocked, MessageKind::Notice]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MessageBody {
    /// The person's words (questions), or plain notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An answer after the output guard.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<output::Block>,
    /// What the output guard removed from the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<output::Removed>,
    /// Why a question was blocked, or a notice's reason, in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Flagged content the model read for this answer: where it came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flagged_sources: Vec<spotlight::Source>,
}

/// Messages shown at most on the page.
pub const CONVERSATION_SHOWN: i64 = 40;

/// The person's own conversation in this workspace, oldest first, with its proposals.
pub async fn conversation(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
) -> Result<Vec<Message>, AssistantError> {
    access.require(Permission::Read)?;
    let me = access.user_id();
    let (rows, props) = tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            let rows: Vec<(Uuid, String, serde_json::Value, bool, OffsetDateTime)> = assistant_messages::table
                .filter(assistant_messages::owner_id.eq(me))
                .order(assistant_messages::seq.desc())
                .limit(CONVERSATION_SHOWN)
                .select((
                    assistant_messages::id,
                    assistant_messages::kind,
                    assistant_messages::body,
                    assistant_messages::flagged,
                    assistant_messages::created_at,
                ))
                .load(c)
                .await?;
            let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
            let props = proposals::load_for(c, me, &ids).await?;
            Ok::<_, diesel::result::Error>((rows, props))
        }
        .scope_boxed()
    })
    .await?;
    let mut out: Vec<Message> = rows
        .into_iter()
        .filter_map(|(id, kind, body, flagged, created_at)| {
            Some(Message {
                id,
                kind: MessageKind::parse(&kind)?,
                body: serde_json::from_value(body).unwrap_or_default(),
                flagged,
                created_at,
                proposals: props.iter().filter(|p| p.message_id == id).cloned().collect(),
            })
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// Recent alerts (bursts of blocked messages or refused proposals), for those who manage
/// the workspace's members.
pub async fn recent_alerts(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    now: OffsetDateTime,
) -> Result<Vec<(OffsetDateTime, i32)>, AssistantError> {
    if !access.can(Permission::ManageMembers) {
        return Ok(Vec::new());
    }
    let since = now - Duration::days(7);
    Ok(tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            assistant_alerts::table
                .filter(assistant_alerts::created_at.ge(since))
                .order(assistant_alerts::created_at.desc())
                .limit(5)
                .select((assistant_alerts::created_at, assistant_alerts::events))
                .load(c)
                .await
        }
        .scope_boxed()
    })
    .await?)
}

/// Counts one suspicious event (a blocked message, a refused proposal) in the workspace;
/// the `alert_after`-th within the window raises an alert once: a row the page shows the
/// admins, an audit event, and a mail to each owner and admin. Runs in the caller's
/// transaction (outside any tenant scope).
pub(crate) async fn count_suspicious(
    c: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    limits: &AssistantLimits,
    events: i32,
    now: OffsetDateTime,
) -> Result<(), AssistantError> {
    let key = key("alert", access.workspace_id(), None);
    let window = RateLimit { max: limits.alert_after, window: limits.alert_window };
    let (before, after) = rate_limit::add(c, &key, events, window, now).await?;
    if !(before < limits.alert_after && after >= limits.alert_after) {
        return Ok(());
    }
    tenancy::enter_scope(c, access.schema(), access.db_role()).await?;
    diesel::insert_into(assistant_alerts::table)
        .values((
            assistant_alerts::id.eq(Uuid::new_v4()),
            assistant_alerts::events.eq(after),
            assistant_alerts::created_at.eq(now),
        ))
        .execute(c)
        .await?;
    tenancy::leave_scope(c).await?;
    let detail = Detail::AssistantAlert { events: after as u32 };
    let event =
        Event::workspace(access.workspace_id(), Action::AssistantAlertRaised, Target::None, Outcome::Denied, detail);
    audit.record(c, event).await?;
    use crate::schema::{memberships, users};
    let admins: Vec<String> = memberships::table
        .inner_join(users::table)
        .filter(memberships::workspace_id.eq(access.workspace_id()))
        .filter(memberships::role.eq_any([Role::Owner.as_str(), Role::Admin.as_str()]))
        .select(users::email)
        .load(c)
        .await?;
    let subject = "Fluxi assistant: unusual activity in your workspace";
    let body = format!(
        "In the workspace \"{}\", the assistant blocked messages or refused proposed actions {} times in the last {} minutes.\n\n\
         This can mean someone is trying to make the assistant act against the workspace, for example through text planted in names or notes. \
         Nothing was carried out without the confirmation of the person asking.\n\n\
         Review the audit log (Assistant events) and, if needed, turn the assistant off on its page: /w/{}/assistant\n",
        access.name(),
        after,
        limits.alert_window.whole_minutes(),
        access.slug()
    );
    for to in admins {
        crate::outbox::enqueue(c, &to, subject, &body).await?;
    }
    Ok(())
}

/// A counter's key: what it counts, for which workspace (and person).
pub(crate) fn key(what: &str, workspace: Uuid, person: Option<Uuid>) -> Vec<u8> {
    let mut k = format!("assistant:{what}:{workspace}").into_bytes();
    if let Some(p) = person {
        k.extend_from_slice(format!(":{p}").as_bytes());
    }
    k
}

/// Takes one use of a limit; a refusal is recorded.
pub(crate) async fn take_limit(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    which: LimitKind,
    limit: RateLimit,
    now: OffsetDateTime,
) -> Result<(), AssistantError> {
    let (what, person) = match which {
        LimitKind::PersonMessages => ("messages", Some(access.user_id())),
        LimitKind::WorkspaceMessages => ("messages", None),
        LimitKind::PersonExecutions => ("executions", Some(access.user_id())),
        LimitKind::WorkspaceExecutions => ("executions", None),
        LimitKind::DailyTokens => ("tokens", None),
    };
    match rate_limit::take(conn, &key(what, access.workspace_id(), person), limit, now).await? {
        Ok(()) => Ok(()),
        Err(wait) => Err(limited(conn, audit, access, which, wait).await),
    }
}

pub(crate) async fn limited(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    which: LimitKind,
    wait: Duration,
) -> AssistantError {
    let detail = Detail::AssistantLimit { limit: which, retry_after_seconds: wait.whole_seconds().max(1) as u64 };
    let event =
        Event::workspace(access.workspace_id(), Action::AssistantRateLimited, Target::None, Outcome::Denied, detail);
    if let Err(e) = audit.record(conn, event).await {
        return e.into();
    }
    AssistantError::Limited { which, wait }
}

/// A proposal nobody decided on within its time can no longer be confirmed.
pub fn proposal_expired(created_at: OffsetDateTime, limits: &AssistantLimits, now: OffsetDateTime) -> bool {
    now - created_at > limits.proposal_ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_bodies_round_trip_and_old_shapes_default() {
        let body = MessageBody { text: Some("hi".into()), ..Default::default() };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v, serde_json::json!({"text": "hi"}));
        assert_eq!(serde_json::from_value::<MessageBody>(serde_json::json!({})).unwrap(), MessageBody::default());
    }

    #[test]
    fn keys_separate_people_and_workspaces() {
        let (w, p) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(key("messages", w, Some(p)), key("messages", w, None));
        assert_ne!(key("messages", w, None), key("executions", w, None));
    }
}
