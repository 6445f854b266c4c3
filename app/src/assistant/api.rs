//! Assistant server functions: thin — authenticate, load the caller's membership fresh,
//! and leave every rule (switches, limits, screening, permissions, step-up need) to
//! `fluxi_core::assistant`. The page gets the answer only as the output guard left it.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A piece of an answer's line: text, bold, code, or a link to one of our own pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InlineView {
    Text(String),
    Strong(String),
    Code(String),
    /// Always a path on this site.
    Link {
        text: String,
        path: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockView {
    Paragraph(Vec<InlineView>),
    List(Vec<Vec<InlineView>>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalView {
    pub id: String,
    /// Fixed words, roles and verified addresses only.
    pub summary: String,
    /// The display name it concerns (members write these): shown apart from the summary.
    pub subject_name: Option<String>,
    pub consequences: Vec<String>,
    pub sensitive: bool,
    pub after_flagged: bool,
    /// "pending", "executing", "done", "failed", "dismissed", "cancelled", "expired".
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    /// "question", "answer", "blocked", "notice".
    pub kind: String,
    pub text: Option<String>,
    pub blocks: Vec<BlockView>,
    /// Why it was blocked, or what the person must know besides the answer.
    pub reason: Option<String>,
    /// What the output guard removed, in words.
    pub removed: Vec<String>,
    /// Where flagged text the assistant read came from, in words.
    pub flagged_sources: Vec<String>,
    pub flagged: bool,
    pub proposals: Vec<ProposalView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssistantPage {
    pub slug: String,
    pub name: String,
    pub ready: bool,
    /// Why it cannot be used, when it cannot.
    pub unavailable: Option<String>,
    /// Owners: the workspace's switch, and its position.
    pub can_switch: bool,
    pub on_for_workspace: bool,
    pub has_mfa: bool,
    pub messages: Vec<MessageView>,
    /// Recent alerts, for those who manage members.
    pub alerts: Vec<String>,
}

#[cfg(feature = "ssr")]
mod imp {
    use fluxi_core::assistant::output::{Block, Inline, Removed};
    use fluxi_core::assistant::spotlight::Source;
    use fluxi_core::assistant::{proposals, Message};

    use super::*;

    fn inline(i: &Inline) -> InlineView {
        match i {
            Inline::Text(t) => InlineView::Text(t.clone()),
            Inline::Strong(t) => InlineView::Strong(t.clone()),
            Inline::Code(t) => InlineView::Code(t.clone()),
            Inline::Link { text, path } => InlineView::Link { text: text.clone(), path: path.clone() },
        }
    }

    fn block(b: &Block) -> BlockView {
        match b {
            Block::Paragraph(p) => BlockView::Paragraph(p.iter().map(inline).collect()),
            Block::List(items) => BlockView::List(items.iter().map(|i| i.iter().map(inline).collect()).collect()),
        }
    }

    fn removed_words(r: Removed) -> &'static str {
        match r {
            Removed::Image => "an image",
            Removed::ExternalLink => "a link to another site",
            Removed::SystemPrompt => "the assistant's instructions",
            Removed::Secret => "something that looked like a secret",
            Removed::ForeignIdentifier => "an identifier from outside this workspace",
            Removed::Markup => "markup",
        }
    }

    pub fn source_words(s: Source) -> &'static str {
        match s {
            Source::DisplayName => "a member's name",
            Source::Email => "a member's email address",
            Source::Note => "a note",
            Source::AuditEvent => "the audit log",
            Source::Integration => "an integration",
            Source::Invitation => "an invitation",
            Source::Question => "your message",
            Source::WorkspaceName => "the workspace name",
        }
    }

    pub fn message(m: Message, expired: impl Fn(&proposals::Proposal) -> bool) -> MessageView {
        let kind = match m.kind {
            fluxi_core::assistant::MessageKind::Question => "question",
            fluxi_core::assistant::MessageKind::Answer => "answer",
            fluxi_core::assistant::MessageKind::Blocked => "blocked",
            fluxi_core::assistant::MessageKind::Notice => "notice",
        };
        MessageView {
            id: m.id.to_string(),
            kind: kind.into(),
            text: m.body.text.clone(),
            blocks: m.body.blocks.iter().map(block).collect(),
            reason: m.body.reason.clone(),
            removed: m.body.removed.iter().map(|r| removed_words(*r).to_string()).collect(),
            flagged_sources: m.body.flagged_sources.iter().map(|s| source_words(*s).to_string()).collect(),
            flagged: m.flagged,
            proposals: m
                .proposals
                .iter()
                .map(|p| ProposalView {
                    id: p.id.to_string(),
                    summary: p.summary.clone(),
                    subject_name: p.subject_name.clone(),
                    consequences: p.consequences.clone(),
                    sensitive: p.sensitive,
                    after_flagged: p.after_flagged,
                    status: match p.status {
                        proposals::Status::Pending if expired(p) => "expired",
                        proposals::Status::Pending => "pending",
                        proposals::Status::Executing => "executing",
                        proposals::Status::Done => "done",
                        proposals::Status::Failed => "failed",
                        proposals::Status::Dismissed => "dismissed",
                        proposals::Status::Cancelled => "cancelled",
                    }
                    .into(),
                })
                .collect(),
        }
    }

    pub fn parse_proposal(raw: &str) -> Result<uuid::Uuid, AppError> {
        uuid::Uuid::parse_str(raw.trim()).map_err(|_| AppError::NotFound)
    }
}

#[server(prefix = "/api", endpoint = "assistant_page")]
pub async fn get_assistant_page(slug: String) -> Result<AssistantPage, AppError> {
    use crate::ssr;
    use fluxi_core::assistant::{self, Availability};
    use fluxi_core::workspaces::Permission;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let now = state.clock.now();
    let availability = assistant::availability(&mut conn, &state.assistant, &access).await?;
    let messages = assistant::conversation(&mut conn, &access).await?;
    let alerts = assistant::recent_alerts(&mut conn, &access, now).await?;
    let has_mfa = fluxi_core::mfa::has_second_factor(&mut conn, user.id).await?;
    let limits = state.assistant.limits;
    let expired = |p: &assistant::proposals::Proposal| assistant::proposal_expired(p.created_at, &limits, now);
    let minute = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    Ok(AssistantPage {
        slug: access.slug().into(),
        name: access.name().into(),
        ready: availability == Availability::Ready,
        unavailable: (availability != Availability::Ready).then(|| availability.words().to_string()),
        can_switch: access.can(Permission::ManageOwners),
        on_for_workspace: availability != Availability::OffForWorkspace,
        has_mfa,
        messages: messages.into_iter().map(|m| imp::message(m, expired)).collect(),
        alerts: alerts
            .into_iter()
            .map(|(at, events)| {
                format!(
                    "{}: {events} blocked messages or refused proposals within minutes. Review the audit log.",
                    at.format(&minute).unwrap_or_default()
                )
            })
            .collect(),
    })
}

#[server(prefix = "/api", endpoint = "send_assistant_message")]
pub async fn send_assistant_message(slug: String, message: String) -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let (user, conn, access) = ssr::workspace_access(&state, &slug).await?;
    // The turn takes connections only while it needs them: none while the model answers.
    drop(conn);
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let deps = state.assistant_deps();
    fluxi_core::assistant::turn::ask(
        &state.pool,
        &audit,
        &access,
        &state.assistant,
        &deps,
        &message,
        state.clock.now(),
    )
    .await?;
    Ok(())
}

/// Sensitive proposals need the person's password (and a code, with two-factor
/// authentication) with this very confirmation: an earlier step-up does not carry over to
/// an action the model proposed.
#[server(prefix = "/api", endpoint = "confirm_assistant_proposal")]
pub async fn confirm_assistant_proposal(
    slug: String,
    proposal: String,
    password: Option<String>,
    code: Option<String>,
) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::StepUpFor;
    use fluxi_core::assistant::{self, proposals, Availability};
    use fluxi_core::audit::Action;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let id = imp::parse_proposal(&proposal)?;
    let found = proposals::find(&mut conn, &access, id).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let deps = state.assistant_deps();
    let now = state.clock.now();
    let ready = assistant::availability(&mut conn, &state.assistant, &access).await? == Availability::Ready;
    let mut stepped_up = false;
    if found.sensitive && ready && found.status == proposals::Status::Pending {
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            drop(conn);
            let purpose = StepUpFor::workspace(access.workspace_id(), Action::AssistantProposalExecuted);
            ssr::step_up_now(&state, &user, &password, code.as_deref(), purpose).await?;
            stepped_up = true;
            conn = ssr::conn(&state).await?;
        }
    }
    // Refusals (switched off, decided, expired, no password) are the domain's, and audited.
    proposals::confirm(&mut conn, &audit, &access, &state.assistant, &deps, id, stepped_up, now).await?;
    Ok(())
}

#[server(prefix = "/api", endpoint = "dismiss_assistant_proposal")]
pub async fn dismiss_assistant_proposal(slug: String, proposal: String) -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let id = imp::parse_proposal(&proposal)?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    fluxi_core::assistant::proposals::dismiss(&mut conn, &audit, &access, id, state.clock.now()).await?;
    Ok(())
}

/// The owners' switch: `enabled` is `on` or `off`.
#[server(prefix = "/api", endpoint = "set_assistant")]
pub async fn set_assistant(slug: String, enabled: String) -> Result<(), AppError> {
    use crate::ssr;
    let on = match enabled.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(AppError::field("enabled", "Choose whether the assistant is on.")),
    };
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    fluxi_core::assistant::set_enabled(&mut conn, &audit, &access, on, state.clock.now()).await?;
    Ok(())
}
