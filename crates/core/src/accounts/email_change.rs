//! Changing the account's email address. Asking needs a step-up (the caller checks it);
//! the new address gets a link that makes it the account's (opened while signed in, like
//! verification); until then the old address stays. The old address gets a notice with a
//! link that, for 7 days, undoes the change — also one already confirmed — signs out every
//! session and asks for a new password: the way back for someone whose account was taken
//! over and moved to another mailbox.
//!
//! The old address stays held for its account while that link works: nobody else can sign
//! up with it or move to it meanwhile, so the way back cannot be blocked. Only a confirmed
//! address gets that link (and the hold): an address nobody confirmed may be a stranger's.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::familiar;
use super::links::{self, Link, LinkProblem, LinkPurpose};
use super::{find_user_by_id, lock_account, normalize_email, update_password_hash, validate_email, AccountError};
use super::{validate_password, PasswordHasher, Place, User};
use crate::audit::{Action, Actor, Audit, Detail, Event, Outcome};
use crate::db::Pool;
use crate::notifications::{notify_address, Notice};
use crate::outbox;
use crate::rate_limit::{self, RateLimit};
use crate::schema::{mfa_recovery_codes, mfa_totp, users};

/// How long the link to the new address works.
pub const CHANGE_LINK_VALID_FOR: Duration = Duration::hours(24);
/// How long the link to the old address undoes the change.
pub const REVERT_LINK_VALID_FOR: Duration = Duration::days(7);
/// Change requests per account and hour: each mails an address the requester chose.
pub const EMAIL_CHANGES: RateLimit = RateLimit::per_hour(3);
/// A second factor counts as the owner's at the undo only if it was set up this long
/// before the change was asked for. An intruder holding the password can set one up just
/// before asking (the owner is mailed about it, but may not act at once); one set up in
/// that window, or after the request, is not asked for, and the undo removes it.
pub const OWNERS_FACTOR_AGE: Duration = Duration::days(7);

#[derive(Debug, thiserror::Error)]
pub enum EmailChangeError {
    #[error("That is already your email address.")]
    SameAddress,
    #[error("Several changes of address were asked for in the last hour.")]
    TooManyRequests(Duration),
    /// The new address belongs to another account now (or is held for one).
    #[error("Another account uses that address now, so it cannot become yours.")]
    AddressTaken,
    /// Every session of the account was signed out while this request waited (an undo, a
    /// reset, "sign out all other sessions"): the session asking is no longer signed in.
    #[error("This session was signed out.")]
    SignedOut,
    #[error(transparent)]
    Link(LinkProblem),
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<diesel::result::Error> for EmailChangeError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Account(AccountError::Database(e))
    }
}

/// Whether an account other than `except` has this address, or may take it back.
async fn address_in_use(
    conn: &mut AsyncPgConnection,
    address_normalized: &str,
    except: Uuid,
    now: OffsetDateTime,
) -> QueryResult<bool> {
    let owned: bool = diesel::select(diesel::dsl::exists(
        users::table.filter(users::email_normalized.eq(address_normalized)).filter(users::id.ne(except)),
    ))
    .get_result(conn)
    .await?;
    Ok(owned || links::address_held(conn, address_normalized, Some(except), now).await?)
}

/// "Change email address" (after a step-up): a link to the new address, and the notice with
/// the undo link to the current one, with the event, in one transaction. When another
/// account uses the new address, its mailbox is told so instead of getting a link, and the
/// answer here is the same: the form does not tell who has an account.
pub async fn request_email_change(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: &User,
    new_email: &str,
    base_url: &str,
) -> Result<(), EmailChangeError> {
    let new_email = validate_email(new_email).map_err(|e| AccountError::Invalid(vec![e]))?;
    let new_normalized = normalize_email(&new_email);
    if new_normalized == user.email_normalized {
        return Err(EmailChangeError::SameAddress);
    }
    let now = audit.clock.now();
    let base = base_url.trim_end_matches('/');
    let (new_email, new_normalized) = (&new_email, &new_normalized);
    conn.transaction::<_, EmailChangeError, _>(|c| {
        async move {
            lock_account(c, user.id).await?;
            let (current, verified, epoch): (String, Option<OffsetDateTime>, i32) = users::table
                .find(user.id)
                .select((users::email, users::email_verified_at, users::sessions_epoch))
                .first(c)
                .await?;
            // `user` is the account as this request's session found it: an undo that
            // committed since (it signs out every session) must win over the intruder.
            if epoch != user.sessions_epoch {
                return Err(EmailChangeError::SignedOut);
            }
            let key = [b"email-change:".as_slice(), user.id.as_bytes()].concat();
            if let Err(wait) = rate_limit::take(c, &key, EMAIL_CHANGES, now).await? {
                return Err(EmailChangeError::TooManyRequests(wait));
            }
            if address_in_use(c, new_normalized, user.id, now).await? {
                // Only the earlier pending change is dropped: this one cannot be confirmed.
                links::withdraw(c, user.id, LinkPurpose::ChangeEmail, now).await?;
                let body = "Someone asked to move a Fluxi account to this address, but this address \
                            already belongs to a Fluxi account, so nothing changed.\n\n\
                            If you did not ask for this, ignore this mail.\n";
                outbox::enqueue(c, new_email, "Your address was not moved to another Fluxi account", body).await?;
            } else {
                let token =
                    links::issue(c, user.id, LinkPurpose::ChangeEmail, Some(new_email), CHANGE_LINK_VALID_FOR, now)
                        .await?;
                let body = format!(
                    "To make this the email address of your Fluxi account, open this link while \
                     signed in to the account:\n\n{base}/confirm-email/{token}\n\n\
                     The link works once, for 24 hours. Until then the account keeps its current \
                     address.\n\nIf you did not ask for this, ignore this mail: nothing changes.\n"
                );
                outbox::enqueue(c, new_email, "Confirm your new email address for Fluxi", &body).await?;
            }
            // An unconfirmed address may be a stranger's (a typo at sign-up): it gets no way
            // into the account, and is not held for it.
            if verified.is_some() {
                let revert =
                    links::issue(c, user.id, LinkPurpose::RevertEmail, Some(&current), REVERT_LINK_VALID_FOR, now)
                        .await?;
                let link = format!("{base}/revert-email/{revert}");
                notify_address(c, audit, &current, Notice::EmailChangeRequested, Some(&link)).await?;
            }
            let event = Event::account(Some(user.id), Action::EmailChangeRequested, Outcome::Succeeded, Detail::None);
            audit.record(c, event).await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// The new address a change link of `user` would confirm, without using it (the page that
/// asks before the click that confirms). Another account's link is recorded as refused.
pub async fn change_link_address(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    token: &str,
    now: OffsetDateTime,
) -> Result<String, EmailChangeError> {
    match links::inspect(conn, token, LinkPurpose::ChangeEmail, now).await? {
        Ok(Link { user: owner, address: Some(address), .. }) if owner == user => Ok(address),
        Ok(_) => Err(refused(conn, audit, Some(user), LinkProblem::OtherAccount).await?),
        Err(problem) => Err(EmailChangeError::Link(problem)),
    }
}

/// Makes the address of `user`'s change link `token` the account's, confirmed: the link
/// used up, the address replaced, the verification and reset links mailed to the old
/// address voided (the undo link is the old mailbox's way back), with the event, in one
/// transaction. Returns the account as it now is.
pub async fn confirm_email_change(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    user: Uuid,
    token: &str,
) -> Result<User, EmailChangeError> {
    let now = audit.clock.now();
    let outcome = conn
        .transaction::<_, EmailChangeError, _>(|c| {
            async move {
                lock_account(c, user).await?;
                // Checked before the link is used: a link that cannot work now is kept for
                // the day the other account lets the address go.
                if let Ok(Link { user: owner, address: Some(address), .. }) =
                    links::inspect(c, token, LinkPurpose::ChangeEmail, now).await?
                {
                    if owner == user && address_in_use(c, &normalize_email(&address), user, now).await? {
                        return Ok(Err(EmailChangeError::AddressTaken));
                    }
                }
                let address = match links::redeem(c, token, LinkPurpose::ChangeEmail, Some(user), now).await? {
                    Ok(Link { address: Some(address), .. }) => address,
                    Ok(_) => return Ok(Err(refused(c, audit, Some(user), LinkProblem::Unknown).await?)),
                    Err(problem) => return Ok(Err(refused(c, audit, Some(user), problem).await?)),
                };
                if let Err(e) = set_address(c, user, &address, now).await {
                    return Err(taken_or(e));
                }
                links::withdraw(c, user, LinkPurpose::VerifyEmail, now).await?;
                links::withdraw(c, user, LinkPurpose::ResetPassword, now).await?;
                let event = Event::account(Some(user), Action::EmailChanged, Outcome::Succeeded, Detail::None);
                audit.record(c, event).await?;
                Ok(Ok(find_user_by_id(c, user).await?.ok_or(diesel::result::Error::NotFound)?))
            }
            .scope_boxed()
        })
        .await?;
    outcome
}

/// An address taken by another account at the same instant (the unique index), or `e`.
fn taken_or(e: diesel::result::Error) -> EmailChangeError {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => EmailChangeError::AddressTaken,
        e => e.into(),
    }
}

/// The address `user` confirmed at `now` (a link to it was opened by the signed-in owner).
async fn set_address(conn: &mut AsyncPgConnection, user: Uuid, address: &str, now: OffsetDateTime) -> QueryResult<()> {
    diesel::update(users::table.find(user))
        .set((
            users::email.eq(address),
            users::email_normalized.eq(normalize_email(address)),
            users::email_verified_at.eq(now),
            users::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// What an undo link asks for: the account, and whether a code is needed — when the
/// account's authenticator was set up well before the change was asked for
/// ([`OWNERS_FACTOR_AGE`]), it is the owner's, and asking for it keeps someone who only
/// reads the old mailbox out. One set up later may be the intruder's; the undo removes it
/// instead.
pub async fn revert_link_account(
    conn: &mut AsyncPgConnection,
    token: &str,
    now: OffsetDateTime,
) -> Result<(User, bool), EmailChangeError> {
    let link = links::inspect(conn, token, LinkPurpose::RevertEmail, now).await?.map_err(EmailChangeError::Link)?;
    let user = find_user_by_id(conn, link.user).await?.ok_or(EmailChangeError::Link(LinkProblem::Unknown))?;
    let confirmed: Option<Option<OffsetDateTime>> =
        mfa_totp::table.find(link.user).select(mfa_totp::confirmed_at).first(conn).await.optional()?;
    let owners_factor = matches!(confirmed, Some(Some(at)) if at <= link.created_at - OWNERS_FACTOR_AGE);
    Ok((user, owners_factor))
}

/// Undoes an email change with the link mailed to the old address (the caller has checked
/// the code [`revert_link_account`] asks for): the old address back, confirmed; pending
/// changes and links voided (but not undo links older than this one: an intruder's own
/// later change cannot void the owner's way back); a new password; second factors that
/// are not the owner's (see [`revert_link_account`]) removed; every session signed out and the account's familiar places forgotten but this
/// one; the event and a notice — one transaction. Returns the account, to sign in here.
pub async fn revert_email_change(
    pool: &Pool,
    hasher: &PasswordHasher,
    audit: &Audit<'_>,
    token: &str,
    new_password: &str,
    place: Place<'_>,
) -> Result<User, EmailChangeError> {
    validate_password(new_password).map_err(|e| AccountError::Invalid(vec![e]))?;
    let now = audit.clock.now();
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let (user, _) = match revert_link_account(&mut conn, token, now).await {
        Err(EmailChangeError::Link(problem)) => return Err(refused(&mut conn, audit, None, problem).await?),
        other => other?,
    };
    drop(conn);
    let hash = hasher.hash(new_password).await.map_err(AccountError::from)?;
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let place_network = place.network.and_then(|n| audit.keys.map(|k| familiar::network_pseudonym(k.current(), n)));
    let (user_id, place_network) = (user.id, &place_network);
    let outcome = conn
        .transaction::<_, EmailChangeError, _>(|c| {
            async move {
                lock_account(c, user_id).await?;
                let link = match links::redeem(c, token, LinkPurpose::RevertEmail, Some(user_id), now).await? {
                    Ok(link) => link,
                    Err(problem) => return Ok(Err(problem)),
                };
                let Some(address) = link.address else { return Ok(Err(LinkProblem::Unknown)) };
                // Held for this account since the request: no one else can have taken it.
                if let Err(e) = set_address(c, user_id, &address, now).await {
                    return Err(taken_or(e));
                }
                for purpose in [LinkPurpose::ChangeEmail, LinkPurpose::ResetPassword, LinkPurpose::VerifyEmail] {
                    links::withdraw(c, user_id, purpose, now).await?;
                }
                links::withdraw_since(c, user_id, LinkPurpose::RevertEmail, link.created_at, now).await?;
                update_password_hash(c, user_id, &hash).await?;
                let trusted_before = link.created_at - OWNERS_FACTOR_AGE;
                let removed = diesel::delete(
                    mfa_totp::table
                        .filter(mfa_totp::user_id.eq(user_id))
                        .filter(mfa_totp::confirmed_at.is_null().or(mfa_totp::confirmed_at.gt(trusted_before))),
                )
                .execute(c)
                .await?;
                let codes = mfa_recovery_codes::table.filter(mfa_recovery_codes::user_id.eq(user_id));
                if removed > 0 {
                    diesel::delete(codes).execute(c).await?;
                } else {
                    diesel::delete(codes.filter(mfa_recovery_codes::created_at.gt(trusted_before))).execute(c).await?;
                }
                familiar::forget_account(c, user_id).await?;
                familiar::remember(c, user_id, place.device, place_network.as_deref(), now).await?;
                let user = find_user_by_id(c, user_id).await?.ok_or(diesel::result::Error::NotFound)?;
                let audit = audit.as_actor(Actor::User { id: user.id, email_normalized: &user.email_normalized });
                crate::passkeys::remove_added_since(c, &audit, user.id, trusted_before).await?;
                let (_, epoch) = crate::sessions::revoke_other_sessions(c, &audit, user.id, None, now).await?;
                let event =
                    Event::account(Some(user.id), Action::EmailChangeReverted, Outcome::Succeeded, Detail::None);
                audit.record(c, event).await?;
                notify_address(c, &audit, &user.email, Notice::EmailChangeReverted, None).await?;
                Ok(Ok(User { sessions_epoch: epoch, ..user }))
            }
            .scope_boxed()
        })
        .await?;
    match outcome {
        Ok(user) => Ok(user),
        Err(problem) => Err(refused(&mut conn, audit, Some(user.id), problem).await?),
    }
}

/// Records a refused email-change link and returns the error to answer with.
async fn refused(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    account: Option<Uuid>,
    problem: LinkProblem,
) -> Result<EmailChangeError, EmailChangeError> {
    let event = Event::account(account, Action::EmailChangeRefused, Outcome::Denied, Detail::Link { problem });
    super::links::record_refusal(conn, audit, event, problem).await?;
    Ok(EmailChangeError::Link(problem))
}
