//! Invitations by email: a single-use, high-entropy token (only its hash is stored),
//! with expiry and revocation. The invitation mail is written to the outbox in the same
//! transaction as the invitation.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};

use super::{InvalidInput, Permission, Role, WorkspaceAccess, WorkspaceError};
use crate::accounts::{normalize_email, validate_email};
use crate::outbox;
use crate::rate_limit::{self, RateLimit};
use crate::schema::{invitations, memberships, outbox_emails, users, workspaces};
use crate::tokens::{new_token, token_hash, well_formed};

pub const DEFAULT_TTL: Duration = Duration::days(7);

/// Invitations a workspace may send in any 24 hours (replaced and revoked ones count:
/// each sent a mail). Every invitation mails an address the inviter chose, from our
/// domain; without a cap one admin account — or whoever took it over — could use Fluxi
/// to send mail in bulk.
pub const INVITATIONS_PER_DAY: i64 = 100;

/// Invitation mail across all workspaces and accounts (new accounts and workspaces are
/// free, so the per-workspace cap alone bounds nothing): per recipient — re-inviting one
/// address cannot mail-bomb it —, per client network, and overall, per 24 hours.
pub const INVITATION_MAIL_PER_RECIPIENT: RateLimit = RateLimit::per_day(3);
pub const INVITATION_MAIL_PER_NETWORK: RateLimit = RateLimit::per_day(200);
pub const INVITATION_MAIL_OVERALL: RateLimit = RateLimit::per_day(5_000);

/// How long invitations last and how much invitation mail may go out (the defaults are
/// the constants above; `FLUXI_INVITATION_MAILS_PER_NETWORK_DAY` changes the network's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvitationPolicy {
    pub ttl: Duration,
    pub mail_per_recipient: RateLimit,
    pub mail_per_network: RateLimit,
    pub mail_overall: RateLimit,
}

impl Default for InvitationPolicy {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            mail_per_recipient: INVITATION_MAIL_PER_RECIPIENT,
            mail_per_network: INVITATION_MAIL_PER_NETWORK,
            mail_overall: INVITATION_MAIL_OVERALL,
        }
    }
}

/// The mailbox an address delivers to, for the per-recipient count: `ada+x@example.com`
/// and `ada+y@example.com` reach the same person.
fn mailbox_of(normalized: &str) -> String {
    match normalized.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{domain}", local.split('+').next().unwrap_or(local)),
        None => normalized.to_string(),
    }
}

/// Which invitation-mail limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailLimit {
    Recipient,
    Network,
    Overall,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingInvitation {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub expires_at: OffsetDateTime,
    pub mail: MailDelivery,
}

/// Where an invitation's mail is (from the outbox row that carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailDelivery {
    /// Not sent yet: waiting for the worker, being retried, or (without SMTP) kept in
    /// the outbox.
    Queued,
    Sent,
    /// Given up (refused for good, or too many failed attempts): the person has no link.
    Failed,
    /// Not known: invitations made before they were linked to their mails.
    Unknown,
}

/// Invites `email` with `role` (never owner). Returns the token, for the link; it is
/// also in the mail. A still-pending invitation for the same email is replaced.
// Each argument is a different input of the one action (who, what, when, the link's base).
#[allow(clippy::too_many_arguments)]
pub async fn invite(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    raw_email: &str,
    role: Role,
    now: OffsetDateTime,
    policy: &InvitationPolicy,
    base_url: &str,
) -> Result<String, WorkspaceError> {
    let (ttl, policy) = (policy.ttl, *policy);
    if access.require(Permission::ManageMembers).is_err() {
        return super::refused(conn, audit, access, Action::InvitationSent, Target::None, WorkspaceError::Forbidden)
            .await;
    }
    if role == Role::Owner {
        return Err(InvalidInput::InviteAsOwner.into());
    }
    let email = validate_email(raw_email).map_err(InvalidInput::Email)?;
    let normalized = normalize_email(&email);
    let already: i64 = memberships::table
        .inner_join(users::table)
        .filter(memberships::workspace_id.eq(access.workspace_id()))
        .filter(users::email_normalized.eq(&normalized))
        .count()
        .get_result(conn)
        .await?;
    if already > 0 {
        return Err(InvalidInput::AlreadyMember.into());
    }
    let token = new_token();
    let link = format!("{}/invite/{token}", base_url.trim_end_matches('/'));
    let (ws, inviter, ws_name) = (access.workspace_id(), access.user_id(), access.name().to_string());
    let mfa_note = if access.requires_mfa() {
        "This workspace requires two-factor authentication: you will be asked to set up an authenticator app.\n\n"
    } else {
        ""
    };
    let hash = token_hash(&token);
    conn.transaction::<_, WorkspaceError, _>(|c| {
        async move {
            // The workspace row's lock serializes this workspace's invitations, so that
            // concurrent ones cannot both pass the count below at the limit's edge.
            workspaces::table.find(ws).select(workspaces::id).for_update().first::<Uuid>(c).await?;
            let sent_today: i64 = invitations::table
                .filter(invitations::workspace_id.eq(ws))
                .filter(invitations::created_at.gt(now - Duration::days(1)))
                .count()
                .get_result(c)
                .await?;
            if sent_today >= INVITATIONS_PER_DAY {
                return Err(WorkspaceError::TooManyInvitations);
            }
            // Counted in this transaction: an invitation refused later counts nothing.
            let mut limits = vec![(b"invitation-mail-overall".to_vec(), policy.mail_overall, MailLimit::Overall)];
            if let Some(keys) = audit.keys {
                let pseudonym = |purpose, value: &str| keys.current().pseudonym(purpose, value);
                limits.push((
                    pseudonym("invitation-recipient", &mailbox_of(&normalized)),
                    policy.mail_per_recipient,
                    MailLimit::Recipient,
                ));
                if let Some(network) = &audit.origin.network {
                    limits.push((
                        pseudonym("invitation-network", network),
                        policy.mail_per_network,
                        MailLimit::Network,
                    ));
                }
            }
            for (key, limit, which) in limits {
                if let Err(wait) = rate_limit::take(c, &key, limit, now).await? {
                    return Err(WorkspaceError::InvitationMailLimited { which, wait });
                }
            }
            let replaced: Vec<(Uuid, Option<Uuid>)> = diesel::update(
                invitations::table
                    .filter(invitations::workspace_id.eq(ws))
                    .filter(invitations::email_normalized.eq(&normalized))
                    .filter(invitations::accepted_at.is_null())
                    .filter(invitations::revoked_at.is_null()),
            )
            .set(invitations::revoked_at.eq(now))
            .returning((invitations::id, invitations::mail_id))
            .get_results(c)
            .await?;
            outbox::withdraw_unsent(c, &replaced.iter().filter_map(|(_, m)| *m).collect::<Vec<_>>(), now).await?;
            // The workspace name is free text chosen by the inviter: never in the subject,
            // and quoted in the body as theirs, not ours.
            let body = format!(
                "Someone using Fluxi invited you to join one of their workspaces as {}.\n\
                 The workspace's name, as they wrote it: \u{201c}{ws_name}\u{201d}\n\n\
                 Accept the invitation: {link}\n\n\
                 {mfa_note}The link works once and expires in {} days. If you did not expect this, ignore this mail.\n",
                role.as_str(),
                ttl.whole_days()
            );
            let mail_id = outbox::enqueue(c, &email, "You are invited to a workspace on Fluxi", &body).await?;
            let id: Uuid = diesel::insert_into(invitations::table)
                .values((
                    invitations::workspace_id.eq(ws),
                    invitations::email.eq(&email),
                    invitations::email_normalized.eq(&normalized),
                    invitations::role.eq(role.as_str()),
                    invitations::token_hash.eq(hash),
                    invitations::invited_by.eq(inviter),
                    invitations::created_at.eq(now),
                    invitations::expires_at.eq(now + ttl),
                    invitations::mail_id.eq(mail_id),
                ))
                .returning(invitations::id)
                .get_result(c)
                .await?;
            for (old, _) in replaced {
                let event = Event::workspace(
                    ws,
                    Action::InvitationReplaced,
                    Target::Invitation(old),
                    Outcome::Succeeded,
                    Detail::Role { role },
                );
                audit.record(c, event).await?;
            }
            let event = Event::workspace(
                ws,
                Action::InvitationSent,
                Target::Invitation(id),
                Outcome::Succeeded,
                Detail::Role { role },
            );
            audit.record(c, event).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await?;
    Ok(token)
}

/// Takes a shared connection so it can be pipelined (see `list_members`).
pub async fn list_pending(
    mut conn: &AsyncPgConnection,
    access: &WorkspaceAccess,
    now: OffsetDateTime,
) -> Result<Vec<PendingInvitation>, WorkspaceError> {
    access.require(Permission::ManageMembers)?;
    type Row = (Uuid, String, String, OffsetDateTime, Option<Uuid>, Option<OffsetDateTime>, Option<OffsetDateTime>);
    let rows: Vec<Row> = invitations::table
        .left_join(outbox_emails::table)
        .filter(invitations::workspace_id.eq(access.workspace_id()))
        .filter(invitations::accepted_at.is_null())
        .filter(invitations::revoked_at.is_null())
        .filter(invitations::expires_at.gt(now))
        .select((
            invitations::id,
            invitations::email,
            invitations::role,
            invitations::expires_at,
            invitations::mail_id,
            outbox_emails::sent_at.nullable(),
            outbox_emails::failed_at.nullable(),
        ))
        .order(invitations::created_at.desc())
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, email, role, expires_at, mail_id, sent_at, failed_at)| {
            let mail = match (mail_id, sent_at, failed_at) {
                (None, ..) => MailDelivery::Unknown,
                (Some(_), Some(_), _) => MailDelivery::Sent,
                (Some(_), None, Some(_)) => MailDelivery::Failed,
                (Some(_), None, None) => MailDelivery::Queued,
            };
            Some(PendingInvitation { id, email, role: Role::parse(&role)?, expires_at, mail })
        })
        .collect())
}

/// Revokes a pending invitation of *this* workspace (an id from another workspace is
/// simply not found).
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<(), WorkspaceError> {
    if access.require(Permission::ManageMembers).is_err() {
        let target = Target::Invitation(id);
        return super::refused(conn, audit, access, Action::InvitationRevoked, target, WorkspaceError::Forbidden).await;
    }
    let workspace = access.workspace_id();
    conn.transaction::<_, WorkspaceError, _>(|c| {
        async move {
            let revoked: Option<(Uuid, Option<Uuid>)> = diesel::update(
                invitations::table
                    .filter(invitations::id.eq(id))
                    .filter(invitations::workspace_id.eq(workspace))
                    .filter(invitations::accepted_at.is_null())
                    .filter(invitations::revoked_at.is_null()),
            )
            .set(invitations::revoked_at.eq(now))
            .returning((invitations::id, invitations::mail_id))
            .get_result(c)
            .await
            .optional()?;
            let Some(revoked) = revoked else {
                return Err(InvalidInput::InvitationNotPending.into());
            };
            after_revoking(c, audit, workspace, vec![revoked], now).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Inside the transaction of a change that takes away `member`'s right to manage members
/// (demoted, removed, left): the invitations they sent that are still pending are revoked,
/// their unsent mail withdrawn, each with its event. An invitation carries its inviter's
/// authority, so it must not outlive it.
pub(super) async fn revoke_sent_by(
    c: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    workspace: Uuid,
    member: Uuid,
) -> QueryResult<()> {
    let now = audit.clock.now();
    let revoked: Vec<(Uuid, Option<Uuid>)> = diesel::update(
        invitations::table
            .filter(invitations::workspace_id.eq(workspace))
            .filter(invitations::invited_by.eq(member))
            .filter(invitations::accepted_at.is_null())
            .filter(invitations::revoked_at.is_null()),
    )
    .set(invitations::revoked_at.eq(now))
    .returning((invitations::id, invitations::mail_id))
    .get_results(c)
    .await?;
    after_revoking(c, audit, workspace, revoked, now).await
}

/// Withdraws the unsent mail of just-revoked invitations (`(id, mail)`: a mail still
/// waiting would carry a link that no longer works) and records one event for each.
async fn after_revoking(
    c: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    workspace: Uuid,
    revoked: Vec<(Uuid, Option<Uuid>)>,
    now: OffsetDateTime,
) -> QueryResult<()> {
    let mails: Vec<Uuid> = revoked.iter().filter_map(|(_, mail)| *mail).collect();
    outbox::withdraw_unsent(c, &mails, now).await?;
    for (id, _) in revoked {
        let event = Event::workspace(
            workspace,
            Action::InvitationRevoked,
            Target::Invitation(id),
            Outcome::Succeeded,
            Detail::None,
        );
        audit.record(c, event).await?;
    }
    Ok(())
}

/// Whether the inviter may still manage members here now (an invitation whose inviter
/// was demoted or left, or whose account is gone, no longer admits anyone).
async fn inviter_still_manages(c: &mut AsyncPgConnection, found: &Found) -> QueryResult<bool> {
    let Some(inviter) = found.invited_by else { return Ok(false) };
    let role: Option<String> = memberships::table
        .filter(memberships::workspace_id.eq(found.workspace_id))
        .filter(memberships::user_id.eq(inviter))
        .select(memberships::role)
        .first(c)
        .await
        .optional()?;
    Ok(role.and_then(|r| Role::parse(&r)).is_some_and(|r| super::permissions::allowed(r, Permission::ManageMembers)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InvitationProblem {
    #[error("This invitation link is not valid.")]
    NotFound,
    #[error("This invitation has expired. Ask for a new one.")]
    Expired,
    #[error("This invitation was revoked.")]
    Revoked,
    #[error("This invitation has already been used.")]
    AlreadyUsed,
    #[error("This invitation was sent to a different email address. Sign in with the invited account.")]
    WrongAccount,
    #[error("Confirm your email address first: open the link we mailed you when you signed up, or send a new one from the banner at the top of the page.")]
    EmailNotVerified,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvitationPreview {
    pub workspace_name: String,
    pub role: Role,
    /// The workspace requires two-factor authentication of its members.
    pub requires_mfa: bool,
}

#[derive(Queryable)]
struct Found {
    id: Uuid,
    workspace_id: Uuid,
    slug: String,
    name: String,
    email_normalized: String,
    role: String,
    expires_at: OffsetDateTime,
    accepted_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    require_mfa: bool,
    invited_by: Option<Uuid>,
}

async fn find(conn: &mut AsyncPgConnection, token: &str, lock: bool) -> QueryResult<Option<Found>> {
    let query = invitations::table
        .inner_join(workspaces::table)
        .filter(invitations::token_hash.eq(token_hash(token)))
        .select((
            invitations::id,
            invitations::workspace_id,
            workspaces::slug,
            workspaces::name,
            invitations::email_normalized,
            invitations::role,
            invitations::expires_at,
            invitations::accepted_at,
            invitations::revoked_at,
            workspaces::require_mfa,
            invitations::invited_by,
        ));
    if lock {
        query.for_update().first::<Found>(conn).await.optional()
    } else {
        query.first::<Found>(conn).await.optional()
    }
}

fn state(found: &Found, now: OffsetDateTime) -> Result<Role, InvitationProblem> {
    if found.accepted_at.is_some() {
        Err(InvitationProblem::AlreadyUsed)
    } else if found.revoked_at.is_some() {
        Err(InvitationProblem::Revoked)
    } else if found.expires_at <= now {
        Err(InvitationProblem::Expired)
    } else {
        Role::parse(&found.role).ok_or(InvitationProblem::NotFound)
    }
}

/// What the invitation page shows (workspace and role), if the token is usable.
pub async fn preview(
    conn: &mut AsyncPgConnection,
    token: &str,
    now: OffsetDateTime,
) -> Result<InvitationPreview, InvitationProblem> {
    if !well_formed(token) {
        return Err(InvitationProblem::NotFound);
    }
    let found =
        find(conn, token, false).await.map_err(|_| InvitationProblem::NotFound)?.ok_or(InvitationProblem::NotFound)?;
    let role = state(&found, now)?;
    if !inviter_still_manages(conn, &found).await.map_err(|_| InvitationProblem::NotFound)? {
        return Err(InvitationProblem::Revoked);
    }
    Ok(InvitationPreview { workspace_name: found.name, role, requires_mfa: found.require_mfa })
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Problem(#[from] InvitationProblem),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Accepts an invitation as `user_id` (whose normalized email must match). Single use,
/// even under concurrent accepts: the invitation row is locked while it is checked.
/// Returns the workspace slug.
pub async fn accept(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    token: &str,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<String, AcceptError> {
    if !well_formed(token) {
        return Err(InvitationProblem::NotFound.into());
    }
    let token = token.to_string();
    conn.transaction::<_, AcceptError, _>(|c| {
        async move {
            let found = find(c, &token, true).await?.ok_or(InvitationProblem::NotFound)?;
            let role = state(&found, now)?;
            if !inviter_still_manages(c, &found).await? {
                return Err(InvitationProblem::Revoked.into());
            }
            let (email, verified_at): (String, Option<OffsetDateTime>) =
                users::table.find(user_id).select((users::email_normalized, users::email_verified_at)).first(c).await?;
            if email != found.email_normalized {
                return Err(InvitationProblem::WrongAccount.into());
            }
            // The invitation went to a mailbox: only an account that proved it holds that
            // mailbox may take it (anyone can sign up with an address they do not own).
            if verified_at.is_none() {
                return Err(InvitationProblem::EmailNotVerified.into());
            }
            let joined = diesel::insert_into(memberships::table)
                .values((
                    memberships::workspace_id.eq(found.workspace_id),
                    memberships::user_id.eq(user_id),
                    memberships::role.eq(role.as_str()),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            diesel::update(invitations::table.find(found.id))
                .set((invitations::accepted_at.eq(now), invitations::accepted_by.eq(user_id)))
                .execute(c)
                .await?;
            let event = Event::workspace(
                found.workspace_id,
                Action::InvitationAccepted,
                Target::Invitation(found.id),
                Outcome::Succeeded,
                // Already a member: the invitation is used up, no role was granted.
                if joined == 1 { Detail::Role { role } } else { Detail::None },
            );
            audit.record(c, event).await?;
            Ok(found.slug)
        }
        .scope_boxed()
    })
    .await
}
