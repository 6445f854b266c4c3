//! Sign-up, without ever telling a visitor whether an address has an account.
//!
//! 1. [`accept_sign_up`], in the request: every field validated, the network's and the
//!    overall count taken, the password hashed — the same work whatever the address.
//!    The answer is always "check your email".
//! 2. [`queue_sign_up`], after the answer has gone: an address without an account gets a
//!    link to finish (a row of `pending_sign_ups`); an address that has one gets a notice
//!    that someone tried, and the account's owner sees the attempt in their activity.
//! 3. [`confirm_sign_up`]: the link opened and the sign-up's password given again create
//!    the account, with its address verified, and sign the person in.
//!
//! Nobody can create an account at an address they cannot read, and whoever reads the
//! address cannot finish someone else's sign-up without that person's password (else an
//! impostor could sign up with a stranger's address and have the stranger confirm it).
//! A pending sign-up reserves nothing: several may wait for one address, the first
//! confirmed wins.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::familiar::{self, DeviceId};
use super::links::{self, LinkProblem};
use super::{
    normalize_email, validate_display_name, validate_email, validate_password, AccountError, NewUser, PasswordHasher,
    Place, User, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS,
};
use crate::audit::{Action, Actor, Audit, Detail, Event, Outcome};
use crate::db::Pool;
use crate::notifications::{notify_address, Notice};
use crate::pseudonym::PseudonymKeys;
use crate::rate_limit::{self, RateLimit};
use crate::schema::{pending_sign_ups, users};
use crate::tokens::{new_token, token_hash, well_formed};
use percent_encoding::NON_ALPHANUMERIC;

/// The key of the overall sign-up count.
const SIGN_UPS_OVERALL_KEY: &[u8] = b"sign-ups-overall";

/// How long the link that finishes a sign-up works.
pub const SIGN_UP_LINK_VALID_FOR: Duration = Duration::hours(24);

/// Sign-up mails (a link, or the "someone tried" notice) per address and client network,
/// and per address from everywhere, per hour: signing up again and again with one address
/// must not fill its mailbox, and someone doing it from one network must not use up the
/// mails of the address's owner signing up from theirs.
pub const SIGN_UP_MAILS_PER_ADDRESS_AND_NETWORK: RateLimit = RateLimit::per_hour(3);
pub const SIGN_UP_MAILS_PER_ADDRESS: RateLimit = RateLimit::per_hour(10);

/// Passwords that may be tried with one link. Each try is counted before the password is
/// checked, so parallel tries cannot exceed it.
pub const SIGN_UP_PASSWORD_TRIES: i32 = 5;

/// How many accounts may be created, per client network and overall: each costs a
/// password hash (the most expensive thing we do) and a row, and accounts are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignUpLimits {
    /// `FLUXI_SIGNUPS_PER_NETWORK_HOUR` (default 20: an office onboarding together).
    pub per_network: RateLimit,
    /// `FLUXI_SIGNUPS_PER_HOUR` (default 1,000).
    pub overall: RateLimit,
}

impl Default for SignUpLimits {
    fn default() -> Self {
        Self { per_network: RateLimit::per_hour(20), overall: RateLimit::per_hour(1_000) }
    }
}

/// Where a sign-up comes from, and the limits it counts against.
pub struct SignUpFrom<'a> {
    pub limits: &'a SignUpLimits,
    pub pseudonyms: &'a PseudonymKeys,
    /// `None` when the server could not tell; then only the overall limit applies.
    pub client_network: Option<&'a str>,
    pub now: OffsetDateTime,
}

/// A sign-up whose fields are valid and whose password is hashed, for [`queue_sign_up`].
/// Its `Debug` leaves the hash out.
pub struct AcceptedSignUp {
    pub email: String,
    pub email_normalized: String,
    pub display_name: String,
    password_hash: String,
}

impl std::fmt::Debug for AcceptedSignUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptedSignUp").finish_non_exhaustive()
    }
}

/// Checks a sign-up form (all field errors at once), counts it against its network's and
/// the overall limit, and hashes the password (on the new-password permits, so that
/// sign-ups cannot crowd out sign-ins). Nothing here depends on whether the address has
/// an account.
pub async fn accept_sign_up(
    pool: &Pool,
    hasher: &PasswordHasher,
    from: SignUpFrom<'_>,
    display_name: &str,
    email: &str,
    password: &str,
) -> Result<AcceptedSignUp, AccountError> {
    let mut invalid = Vec::new();
    let name = validate_display_name(display_name).map_err(|e| invalid.push(e)).ok();
    let email = validate_email(email).map_err(|e| invalid.push(e)).ok();
    let _ = validate_password(password).map_err(|e| invalid.push(e));
    let (Some(display_name), Some(email), true) = (name, email, invalid.is_empty()) else {
        return Err(AccountError::Invalid(invalid));
    };
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let network_key = from.client_network.map(|n| from.pseudonyms.current().pseudonym("sign-up-network", n));
    // The network's count first: a network already refused must not use up the overall count.
    let mut limits: Vec<_> = network_key.map(|key| (key, from.limits.per_network, false)).into_iter().collect();
    limits.push((SIGN_UPS_OVERALL_KEY.to_vec(), from.limits.overall, true));
    let mut taken = Vec::new();
    for (key, limit, overall) in limits {
        let result = rate_limit::take(&mut conn, &key, limit, from.now).await?;
        taken.push(key);
        if let Err(wait) = result {
            for key in &taken {
                rate_limit::give_back(&mut conn, key).await?;
            }
            return Err(AccountError::SignUpsThrottled { wait, overall });
        }
    }
    drop(conn);
    match hasher.hash(password).await {
        Ok(password_hash) => {
            Ok(AcceptedSignUp { email_normalized: normalize_email(&email), email, display_name, password_hash })
        }
        Err(e) => {
            // Nothing was accepted: the sign-up does not count.
            if let Ok(mut conn) = pool.get().await {
                for key in &taken {
                    rate_limit::give_back(&mut conn, key).await?;
                }
            }
            Err(e.into())
        }
    }
}

/// Mails the address of an accepted sign-up: the link that finishes it (carrying `next`,
/// which must already be a checked same-site path, so that nothing of it is stored), or —
/// when the address belongs to an account, or is held for one's undo link — a notice
/// that someone tried, recorded on that account. Capped per address and network and per
/// address ([`SIGN_UP_MAILS_PER_ADDRESS_AND_NETWORK`], [`SIGN_UP_MAILS_PER_ADDRESS`]);
/// beyond that nothing is mailed and the refusal is recorded.
pub async fn queue_sign_up(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    pseudonyms: &PseudonymKeys,
    accepted: &AcceptedSignUp,
    next: Option<&str>,
    base_url: &str,
    now: OffsetDateTime,
) -> QueryResult<()> {
    let keys = pseudonyms.current();
    let network = audit.origin.network.as_deref().unwrap_or("-");
    // The network's share first: a network already refused must not use up the address's.
    let limits = [
        (
            keys.pseudonym("sign-up-address-network", &format!("{}\n{network}", accepted.email_normalized)),
            SIGN_UP_MAILS_PER_ADDRESS_AND_NETWORK,
        ),
        (keys.pseudonym("sign-up-address", &accepted.email_normalized), SIGN_UP_MAILS_PER_ADDRESS),
    ];
    let base_url = base_url.trim_end_matches('/');
    let next = next.map(|n| format!("?next={}", percent_encoding::utf8_percent_encode(n, NON_ALPHANUMERIC)));
    conn.transaction(|c| {
        async move {
            let audit = audit.as_actor(Actor::Anonymous { email_normalized: Some(&accepted.email_normalized) });
            let owner: Option<(Uuid, String)> = users::table
                .filter(users::email_normalized.eq(&accepted.email_normalized))
                .select((users::id, users::email))
                .first(c)
                .await
                .optional()?;
            let holder = match owner {
                Some(_) => None,
                None => links::address_holder(c, &accepted.email_normalized, None, now).await?,
            };
            let in_use_by = owner.as_ref().map(|(id, _)| *id).or(holder);
            for (key, limit) in &limits {
                if let Err(wait) = rate_limit::take(c, key, *limit, now).await? {
                    let detail = Detail::Throttled { retry_after_seconds: wait.whole_seconds().max(0) as u64 };
                    let event = Event::account(in_use_by, Action::SignUpRequested, Outcome::Denied, detail);
                    return audit.record(c, event).await;
                }
            }
            if let Some(account) = in_use_by {
                // A held address goes to the address itself: its mailbox is the holder's.
                let to = owner.as_ref().map_or(accepted.email.as_str(), |(_, email)| email.as_str());
                let sign_in = format!("{base_url}/login");
                notify_address(c, &audit, to, Notice::SignUpAddressInUse, Some(&sign_in)).await?;
                let event = Event::account(Some(account), Action::SignUpAddressInUse, Outcome::Denied, Detail::None);
                return audit.record(c, event).await;
            }
            let token = new_token();
            diesel::insert_into(pending_sign_ups::table)
                .values((
                    pending_sign_ups::token_hash.eq(token_hash(&token)),
                    pending_sign_ups::email.eq(&accepted.email),
                    pending_sign_ups::email_normalized.eq(&accepted.email_normalized),
                    pending_sign_ups::display_name.eq(&accepted.display_name),
                    pending_sign_ups::password_hash.eq(&accepted.password_hash),
                    pending_sign_ups::created_at.eq(now),
                    pending_sign_ups::expires_at.eq(now + SIGN_UP_LINK_VALID_FOR),
                ))
                .execute(c)
                .await?;
            let link = format!("{base_url}/confirm-sign-up/{token}{}", next.as_deref().unwrap_or_default());
            notify_address(c, &audit, &accepted.email, Notice::SignUpLink, Some(&link)).await?;
            audit.record(c, Event::account(None, Action::SignUpRequested, Outcome::Succeeded, Detail::None)).await
        }
        .scope_boxed()
    })
    .await
}

/// What a sign-up link would create: the address (shown on the page that asks for the
/// password; whoever holds the link reads that mailbox).
pub async fn sign_up_link(
    conn: &mut AsyncPgConnection,
    token: &str,
    now: OffsetDateTime,
) -> QueryResult<Result<String, LinkProblem>> {
    if !well_formed(token) {
        return Ok(Err(LinkProblem::Unknown));
    }
    let found: Option<(String, OffsetDateTime, i32)> = pending_sign_ups::table
        .find(token_hash(token))
        .select((pending_sign_ups::email, pending_sign_ups::expires_at, pending_sign_ups::password_attempts))
        .first(conn)
        .await
        .optional()?;
    Ok(match found {
        None => Err(LinkProblem::Unknown),
        Some((_, expires_at, _)) if expires_at <= now => Err(LinkProblem::Expired),
        Some((_, _, attempts)) if attempts >= SIGN_UP_PASSWORD_TRIES => Err(LinkProblem::TooManyTries),
        Some((email, _, _)) => Ok(email),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfirmSignUpError {
    #[error(transparent)]
    Link(LinkProblem),
    #[error("This is not the password you chose when signing up.")]
    WrongPassword,
    /// Another sign-up for the address was confirmed first (or it became held).
    #[error("An account with this address exists already. Sign in instead.")]
    AddressInUse,
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<diesel::result::Error> for ConfirmSignUpError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Account(AccountError::Database(e))
    }
}

/// Finishes a sign-up: the link's password try counted first (atomically, so parallel
/// tries cannot pass [`SIGN_UP_PASSWORD_TRIES`]), the password checked against the one
/// chosen at sign-up (on the sign-up hashing permits), then — in one transaction — the pending row taken, the account
/// created with its address verified, `account.signed_up` recorded and `place` remembered
/// as familiar, all at the audit clock's now. Refusals are recorded
/// (`account.sign_up_refused`) and change nothing else.
pub async fn confirm_sign_up(
    pool: &Pool,
    hasher: &PasswordHasher,
    audit: &Audit<'_>,
    token: &str,
    password: &str,
    place: Place<'_>,
    pseudonyms: &PseudonymKeys,
) -> Result<User, ConfirmSignUpError> {
    let now = audit.clock.now();
    // No sign-up could have chosen these: refused before a try is counted.
    let length = password.chars().count();
    if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&length) {
        return Err(ConfirmSignUpError::WrongPassword);
    }
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    if !well_formed(token) {
        return Err(refused(&mut conn, audit, None, LinkProblem::Unknown).await?);
    }
    let hash = token_hash(token);
    let tried: Option<(String, String)> = diesel::update(
        pending_sign_ups::table
            .find(&hash)
            .filter(pending_sign_ups::expires_at.gt(now))
            .filter(pending_sign_ups::password_attempts.lt(SIGN_UP_PASSWORD_TRIES)),
    )
    .set(pending_sign_ups::password_attempts.eq(pending_sign_ups::password_attempts + 1))
    .returning((pending_sign_ups::email_normalized, pending_sign_ups::password_hash))
    .get_result(&mut conn)
    .await
    .optional()?;
    let Some((email_normalized, stored)) = tried else {
        let problem = sign_up_link(&mut conn, token, now).await?.err().unwrap_or(LinkProblem::Used);
        return Err(refused(&mut conn, audit, None, problem).await?);
    };
    drop(conn);
    let checked = hasher.verify_sign_up(password, &stored).await;
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let right = match checked {
        Ok(right) => right,
        Err(e) => {
            // Not checked (no hashing permit in time): the try does not count.
            diesel::update(pending_sign_ups::table.find(&hash))
                .set(pending_sign_ups::password_attempts.eq(pending_sign_ups::password_attempts - 1))
                .execute(&mut conn)
                .await?;
            return Err(AccountError::from(e).into());
        }
    };
    if !right {
        let audit = audit.as_actor(Actor::Anonymous { email_normalized: Some(&email_normalized) });
        let event = Event::account(None, Action::SignUpRefused, Outcome::Denied, Detail::WrongPassword);
        audit.record(&mut conn, event).await?;
        return Err(ConfirmSignUpError::WrongPassword);
    }
    let network_pn = place.network.map(|n| familiar::network_pseudonym(pseudonyms.current(), n));
    let device: Option<&DeviceId> = place.device;
    let outcome = conn
        .transaction::<_, ConfirmSignUpError, _>(|c| {
            async move {
                // One confirmation per address at a time: two sign-ups for one address
                // confirmed at once would otherwise each wait for the other's rows.
                diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended('sign-up:' || $1, 0))")
                    .bind::<diesel::sql_types::Text, _>(&email_normalized)
                    .execute(c)
                    .await?;
                type Pending = (String, String, String, String);
                let taken: Option<Pending> = diesel::delete(pending_sign_ups::table.find(&hash))
                    .returning((
                        pending_sign_ups::email,
                        pending_sign_ups::email_normalized,
                        pending_sign_ups::display_name,
                        pending_sign_ups::password_hash,
                    ))
                    .get_result(c)
                    .await
                    .optional()?;
                // Confirmed by a parallel request with the same link.
                let Some((email, email_normalized, display_name, password_hash)) = taken else {
                    return Ok(Err(refused(c, audit, None, LinkProblem::Used).await?));
                };
                let new = NewUser {
                    email: &email,
                    email_normalized: &email_normalized,
                    display_name: &display_name,
                    password_hash: &password_hash,
                };
                // Taken meanwhile (another sign-up confirmed first, even at this instant):
                // the insert does nothing rather than fail, so the refusal can be recorded.
                let user: Option<User> = match links::address_held(c, &email_normalized, None, now).await? {
                    true => None,
                    false => diesel::insert_into(users::table)
                        .values((&new, users::email_verified_at.eq(now)))
                        .on_conflict(users::email_normalized)
                        .do_nothing()
                        .returning(User::as_returning())
                        .get_result(c)
                        .await
                        .optional()?,
                };
                let Some(user) = user else {
                    let audit = audit.as_actor(Actor::Anonymous { email_normalized: Some(&email_normalized) });
                    let event = Event::account(None, Action::SignUpRefused, Outcome::Denied, Detail::AddressInUse);
                    audit.record(c, event).await?;
                    return Ok(Err(ConfirmSignUpError::AddressInUse));
                };
                // Other sign-ups waiting for this address stay: each says "exists already"
                // when tried (and is removed then), or expires.
                let actor = Actor::User { id: user.id, email_normalized: &user.email_normalized };
                let event = Event::account(Some(user.id), Action::SignedUp, Outcome::Succeeded, Detail::None);
                audit.as_actor(actor).record(c, event).await?;
                familiar::remember(c, user.id, device, network_pn.as_deref(), now).await?;
                Ok(Ok(user))
            }
            .scope_boxed()
        })
        .await?;
    outcome
}

/// Records a sign-up link that did nothing and returns the error to answer with.
async fn refused(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    email_normalized: Option<&str>,
    problem: LinkProblem,
) -> QueryResult<ConfirmSignUpError> {
    let audit = audit.as_actor(Actor::Anonymous { email_normalized });
    let event = Event::account(None, Action::SignUpRefused, Outcome::Denied, Detail::Link { problem });
    super::links::record_refusal(conn, &audit, event, problem).await?;
    Ok(ConfirmSignUpError::Link(problem))
}

/// Deletes sign-ups whose link expired before `before` (the clean-up job): their address
/// and password hash are kept no longer than needed.
pub async fn delete_expired_sign_ups(conn: &mut AsyncPgConnection, before: OffsetDateTime) -> QueryResult<usize> {
    diesel::delete(pending_sign_ups::table.filter(pending_sign_ups::expires_at.lt(before))).execute(conn).await
}
