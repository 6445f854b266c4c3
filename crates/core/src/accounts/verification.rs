//! Email verification: proof that an account receives mail at its address. Sign-up mails a
//! single-use link (24 hours); the person opens it while signed in to that account and
//! confirms. Until then the account works but cannot accept invitations — an invitation
//! is addressed to a mailbox, and only a verified account has shown it holds it.
//!
//! The link only works for the account signed in: someone who signs up with another
//! person's address cannot get it verified by that person clicking a mail they did not
//! expect (they would have to sign in as the impostor's account). The mail names nothing
//! the sign-up typed (no display name), so it cannot carry a stranger's message.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::links::{self, LinkProblem, LinkPurpose};
use super::User;
use crate::audit::{Action, Audit, Detail, Event, Outcome};
use crate::outbox;
use crate::rate_limit::{self, RateLimit};
use crate::schema::users;

/// How long a verification link works.
pub const VERIFY_LINK_VALID_FOR: Duration = Duration::hours(24);

/// "Send a new link": at most this many mails per account and hour (each one lands in
/// someone's mailbox, and the address may not be the requester's own).
pub const VERIFICATION_RESENDS: RateLimit = RateLimit::per_hour(3);

#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    #[error("Your email address is already verified.")]
    AlreadyVerified,
    #[error("Several verification mails were sent in the last hour.")]
    TooManyMails(Duration),
    #[error(transparent)]
    Link(LinkProblem),
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Queues the verification mail of `user` (in the caller's transaction: the mail exists
/// exactly when the action that asked for it committed), with its event.
pub async fn send_verification_mail(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: &User,
    base_url: &str,
    now: OffsetDateTime,
) -> QueryResult<()> {
    let token = links::issue(conn, user.id, LinkPurpose::VerifyEmail, None, VERIFY_LINK_VALID_FOR, now).await?;
    let link = format!("{}/verify-email/{token}", base_url.trim_end_matches('/'));
    let body = format!(
        "Confirm that this address belongs to your Fluxi account by opening this link \
         while signed in:\n\n{link}\n\n\
         The link works once, for 24 hours. Until you confirm, you cannot accept \
         invitations to workspaces.\n\n\
         If you did not create a Fluxi account, ignore this mail: the address stays \
         unconfirmed and nobody can use it to join a workspace.\n"
    );
    outbox::enqueue(conn, &user.email, "Confirm your email address for Fluxi", &body).await?;
    let event = Event::account(Some(user.id), Action::EmailVerificationSent, Outcome::Succeeded, Detail::None);
    audit.record(conn, event).await
}

/// "Send a new link": a new verification mail (the older link stops working), limited
/// per account.
pub async fn resend_verification_mail(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: &User,
    base_url: &str,
    now: OffsetDateTime,
) -> Result<(), VerificationError> {
    conn.transaction::<_, VerificationError, _>(|c| {
        async move {
            if is_verified(c, user.id).await? {
                return Err(VerificationError::AlreadyVerified);
            }
            let key = [b"verify-resend:".as_slice(), user.id.as_bytes()].concat();
            if let Err(wait) = rate_limit::take(c, &key, VERIFICATION_RESENDS, now).await? {
                return Err(VerificationError::TooManyMails(wait));
            }
            send_verification_mail(c, audit, user, base_url, now).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Whether the account's email is verified (read fresh, not from the session's copy).
pub async fn is_verified(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<bool> {
    let at: Option<Option<OffsetDateTime>> =
        users::table.find(user).select(users::email_verified_at).first(conn).await.optional()?;
    Ok(matches!(at, Some(Some(_))))
}

/// Whether `token` is a verification link of `user` that still works (the page that asks
/// before the click that verifies). Opening another account's link is recorded as
/// refused: someone may be steering this person to confirm an address for them.
pub async fn check_verification_link(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    token: &str,
    now: OffsetDateTime,
) -> Result<(), VerificationError> {
    if is_verified(conn, user).await? {
        return Err(VerificationError::AlreadyVerified);
    }
    match links::inspect(conn, token, LinkPurpose::VerifyEmail, now).await? {
        Ok(link) if link.user == user => Ok(()),
        Ok(_) => Err(refused(conn, audit, user, LinkProblem::OtherAccount).await?),
        Err(problem) => Err(VerificationError::Link(problem)),
    }
}

/// Verifies `user`'s email with the link `token`: used up in the same transaction that
/// marks the account verified and records `account.email_verified`. A link that does not
/// work (forged, expired, used, replaced, another account's) changes nothing and is
/// recorded as refused, on the account that tried it.
pub async fn verify_email(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    token: &str,
    now: OffsetDateTime,
) -> Result<(), VerificationError> {
    let token = token.to_string();
    let outcome = conn
        .transaction::<_, VerificationError, _>(|c| {
            async move {
                super::lock_account(c, user).await?;
                if is_verified(c, user).await? {
                    return Ok(Err(VerificationError::AlreadyVerified));
                }
                match links::redeem(c, &token, LinkPurpose::VerifyEmail, Some(user), now).await? {
                    Ok(_) => {
                        diesel::update(users::table.find(user))
                            .set(users::email_verified_at.eq(now))
                            .execute(c)
                            .await?;
                        let event = Event::account(Some(user), Action::EmailVerified, Outcome::Succeeded, Detail::None);
                        audit.record(c, event).await?;
                        Ok(Ok(()))
                    }
                    // The refusal is recorded, and committed: the error goes back afterwards.
                    Err(problem) => Ok(Err(refused(c, audit, user, problem).await?)),
                }
            }
            .scope_boxed()
        })
        .await?;
    outcome
}

/// Records a verification link refused to `user` and returns the error to answer with.
async fn refused(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    problem: LinkProblem,
) -> QueryResult<VerificationError> {
    let event = Event::account(Some(user), Action::EmailVerificationRefused, Outcome::Denied, Detail::Link { problem });
    audit.record(conn, event).await?;
    Ok(VerificationError::Link(problem))
}
