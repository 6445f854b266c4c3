//! Changing the password (signed in, after a step-up) and resetting it with a mailed link.
//!
//! A reset must not become the weakest door: the link is single use, works for 30
//! minutes, and is stored only as a hash; asking for one answers the same whether or not
//! the account exists (the mail is prepared off the request, see `queue_reset_link`);
//! with two-factor authentication on, a reset still needs a code; and it signs out every
//! session of the account.

use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use time::{Duration, OffsetDateTime};
use tower_sessions::session::Id;
use uuid::Uuid;

use super::familiar::{self, Familiarity};
use super::links::{self, LinkProblem, LinkPurpose};
use super::{
    find_login_by_email, find_user_by_id, lock_account, normalize_email, update_password_hash, validate_email,
    validate_password, AccountError, PasswordHasher, Place, User,
};
use crate::audit::{Action, Actor, Audit, Detail, Event, Outcome};
use crate::db::Pool;
use crate::notifications::{notify, notify_address, Notice};
use crate::pseudonym::PseudonymKeys;
use crate::rate_limit::{self, RateLimit};

/// How long a reset link works.
pub const RESET_LINK_VALID_FOR: Duration = Duration::minutes(30);
/// Reset mails per account and hour from one client network, and from all together (more
/// are dropped silently: the answer never says). Someone asking in another person's name
/// from one network uses up only that network's share; earlier links keep working.
pub const RESET_MAILS_PER_ACCOUNT_AND_NETWORK: RateLimit = RateLimit::per_hour(3);
pub const RESET_MAILS_PER_ACCOUNT: RateLimit = RateLimit::per_hour(10);
/// Reset requests per client network and hour, and from clients whose network is unknown
/// (together).
pub const RESET_REQUESTS_PER_NETWORK: RateLimit = RateLimit::per_hour(20);
pub const RESET_REQUESTS_OVERALL: RateLimit = RateLimit::per_hour(1_000);

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(transparent)]
    Link(LinkProblem),
    #[error("too many reset requests from this network")]
    NetworkLimited(Duration),
    #[error("reset requests are paused for a while")]
    Paused(Duration),
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<diesel::result::Error> for ResetError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Account(AccountError::Database(e))
    }
}

/// Changes the signed-in `user`'s password (the caller has checked the current one with a
/// step-up): the same rules as sign-up, a new hash, and — when `sign_out_others_but` is
/// given — every other session of the account signed out, with the event and the notice,
/// in one transaction; reset links still out stop working. Returns the account's new
/// `sessions_epoch` when other sessions were signed out (the kept session takes it on).
pub async fn change_password(
    pool: &Pool,
    hasher: &PasswordHasher,
    audit: &Audit<'_>,
    user: &User,
    new_password: &str,
    sign_out_others_but: Option<&Id>,
) -> Result<Option<i32>, AccountError> {
    validate_password(new_password).map_err(|e| AccountError::Invalid(vec![e]))?;
    let hash = hasher.hash(new_password).await?;
    let now = audit.clock.now();
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let epoch = conn
        .transaction::<_, diesel::result::Error, _>(|c| {
            async move {
                update_password_hash(c, user.id, &hash).await?;
                links::withdraw(c, user.id, LinkPurpose::ResetPassword, now).await?;
                let epoch = match sign_out_others_but {
                    Some(keep) => {
                        Some(crate::sessions::revoke_other_sessions(c, audit, user.id, Some(keep), now).await?.1)
                    }
                    None => None,
                };
                let event = Event::account(Some(user.id), Action::PasswordChanged, Outcome::Succeeded, Detail::None);
                audit.record(c, event).await?;
                notify(c, audit, user.id, Notice::PasswordChanged).await?;
                Ok(epoch)
            }
            .scope_boxed()
        })
        .await?;
    Ok(epoch)
}

/// "Send reset link", the part that answers: the email's shape and the network's limit.
/// Whether an account exists is not looked at here; [`queue_reset_link`] does that after
/// the answer has gone.
pub async fn accept_reset_request(
    conn: &mut AsyncPgConnection,
    pseudonyms: &PseudonymKeys,
    email: &str,
    network: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, ResetError> {
    let email = validate_email(email).map_err(|e| AccountError::Invalid(vec![e]))?;
    if let Some(network) = network {
        let key = pseudonyms.current().pseudonym("reset-network", network);
        if let Err(wait) = rate_limit::take(conn, &key, RESET_REQUESTS_PER_NETWORK, now).await? {
            return Err(ResetError::NetworkLimited(wait));
        }
    }
    // Requests whose network is unknown have no network's share: they share this one.
    if network.is_none() {
        if let Err(wait) = rate_limit::take(conn, b"reset-unknown-network", RESET_REQUESTS_OVERALL, now).await? {
            return Err(ResetError::Paused(wait));
        }
    }
    Ok(normalize_email(&email))
}

/// Mails a reset link to the account with this normalized email, if there is one and the
/// limits allow, with its event and the link in one transaction. From a browser or network
/// the account has signed in from, only that place's share counts; from elsewhere, the
/// account's share for everywhere unfamiliar too — so requests in the owner's name from
/// elsewhere cannot use up the owner's own. An unknown address is recorded as a failed
/// request.
pub async fn queue_reset_link(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    pseudonyms: &PseudonymKeys,
    email_normalized: &str,
    place: Place<'_>,
    base_url: &str,
    now: OffsetDateTime,
) -> diesel::QueryResult<()> {
    let network = place.network;
    let Some((user, _, _)) = find_login_by_email(conn, email_normalized).await? else {
        let audit = audit.as_actor(Actor::Anonymous { email_normalized: Some(email_normalized) });
        let detail = Detail::SignInFailure { known_account: false };
        return audit.record(conn, Event::account(None, Action::PasswordResetRequested, Outcome::Failed, detail)).await;
    };
    let keys = pseudonyms.current();
    let network_pn = network.map(|n| familiar::network_pseudonym(keys, n));
    let familiar = familiar::familiarity(conn, Some(user.id), place.device, network_pn.as_deref()).await?;
    let mut limits = vec![(
        keys.pseudonym("reset-account-network", &format!("{email_normalized}\n{}", network.unwrap_or("-"))),
        RESET_MAILS_PER_ACCOUNT_AND_NETWORK,
    )];
    if familiar == Familiarity::Unfamiliar {
        limits.push((keys.pseudonym("reset-account", email_normalized), RESET_MAILS_PER_ACCOUNT));
    }
    let user = &user;
    conn.transaction(|c| {
        async move {
            let audit = audit.as_actor(Actor::Anonymous { email_normalized: Some(&user.email_normalized) });
            // The network's share first: a network already refused must not use up the account's.
            for (key, limit) in &limits {
                if let Err(wait) = rate_limit::take(c, key, *limit, now).await? {
                    let detail = Detail::Throttled { retry_after_seconds: wait.whole_seconds().max(0) as u64 };
                    let event = Event::account(Some(user.id), Action::PasswordResetRequested, Outcome::Denied, detail);
                    return audit.record(c, event).await;
                }
            }
            let token = links::issue(c, user.id, LinkPurpose::ResetPassword, None, RESET_LINK_VALID_FOR, now).await?;
            let link = format!("{}/reset-password/{token}", base_url.trim_end_matches('/'));
            notify_address(c, &audit, &user.email, Notice::PasswordResetRequested, Some(&link)).await?;
            let event = Event::account(Some(user.id), Action::PasswordResetRequested, Outcome::Succeeded, Detail::None);
            audit.record(c, event).await
        }
        .scope_boxed()
    })
    .await
}

/// The account a reset link is for and whether it has two-factor authentication on,
/// without using the link up.
pub async fn reset_link_account(
    conn: &mut AsyncPgConnection,
    token: &str,
    now: OffsetDateTime,
) -> Result<(User, bool), ResetError> {
    let owner = links::inspect(conn, token, LinkPurpose::ResetPassword, now).await?.map_err(ResetError::Link)?.user;
    let user = find_user_by_id(conn, owner).await?.ok_or(ResetError::Link(LinkProblem::Unknown))?;
    let mfa = crate::mfa::is_enabled(conn, owner).await?;
    Ok((user, mfa))
}

/// Sets a new password with the reset link `token` (the caller has checked the second
/// factor when the account has one): the link used up, the hash replaced, every session
/// of the account signed out, the event and the notice — one transaction. A link that
/// does not work changes nothing and is recorded as refused.
pub async fn reset_password(
    pool: &Pool,
    hasher: &PasswordHasher,
    audit: &Audit<'_>,
    token: &str,
    new_password: &str,
    place: Place<'_>,
) -> Result<User, ResetError> {
    validate_password(new_password).map_err(|e| AccountError::Invalid(vec![e]))?;
    let now = audit.clock.now();
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let (user, _) = match reset_link_account(&mut conn, token, now).await {
        Err(ResetError::Link(problem)) => return Err(refused(&mut conn, audit, None, problem).await?),
        other => other?,
    };
    drop(conn);
    let hash = hasher.hash(new_password).await.map_err(AccountError::from)?;
    let mut conn = pool.get().await.map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let user_ref = &user;
    let place_network = place.network.and_then(|n| audit.keys.map(|k| familiar::network_pseudonym(k.current(), n)));
    let place_network = &place_network;
    let outcome = conn
        .transaction::<_, diesel::result::Error, _>(|c| {
            async move {
                let user = user_ref;
                lock_account(c, user.id).await?;
                if let Err(problem) = links::redeem(c, token, LinkPurpose::ResetPassword, Some(user.id), now).await? {
                    return Ok(Err(problem));
                }
                // The other reset links mailed meanwhile stop working too.
                links::withdraw(c, user.id, LinkPurpose::ResetPassword, now).await?;
                update_password_hash(c, user.id, &hash).await?;
                // Whoever held the account may have made their browsers and networks familiar
                // to it; from here only this one is.
                familiar::forget_account(c, user.id).await?;
                familiar::remember(c, user.id, place.device, place_network.as_deref(), now).await?;
                let audit = audit.as_actor(Actor::User { id: user.id, email_normalized: &user.email_normalized });
                // Passkeys added lately may be whoever held the account's; older ones are the owner's.
                let since = now - super::email_change::OWNERS_FACTOR_AGE;
                crate::passkeys::remove_added_since(c, &audit, user.id, since).await?;
                let (_, epoch) = crate::sessions::revoke_other_sessions(c, &audit, user.id, None, now).await?;
                let event =
                    Event::account(Some(user.id), Action::PasswordResetCompleted, Outcome::Succeeded, Detail::None);
                audit.record(c, event).await?;
                notify(c, &audit, user.id, Notice::PasswordReset).await?;
                Ok(Ok(epoch))
            }
            .scope_boxed()
        })
        .await?;
    match outcome {
        Ok(sessions_epoch) => Ok(User { sessions_epoch, ..user }),
        Err(problem) => Err(refused(&mut conn, audit, Some(user.id), problem).await?),
    }
}

/// Records a refused reset link and returns the error to answer with.
async fn refused(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    account: Option<Uuid>,
    problem: LinkProblem,
) -> Result<ResetError, ResetError> {
    let event = Event::account(account, Action::PasswordResetRefused, Outcome::Denied, Detail::Link { problem });
    super::links::record_refusal(conn, audit, event, problem).await?;
    Ok(ResetError::Link(problem))
}
