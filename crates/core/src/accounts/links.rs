//! Single-use links mailed to an account (`account_links`): issued with a purpose and a
//! lifetime, used at most once — also when two requests present the same token at the
//! same instant, because using one is a single conditional update.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::schema::account_links;
use crate::tokens::{new_token, token_hash, well_formed};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    VerifyEmail,
    ResetPassword,
    /// Sent to a new address: confirms that it becomes the account's.
    ChangeEmail,
    /// Sent to the old address when a change is asked for: undoes it.
    RevertEmail,
}

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::VerifyEmail => "verify_email",
            LinkPurpose::ResetPassword => "reset_password",
            LinkPurpose::ChangeEmail => "change_email",
            LinkPurpose::RevertEmail => "revert_email",
        }
    }
}

/// Why a link does nothing. Also an audit detail, so it holds no text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum LinkProblem {
    /// Not a token we issued for this purpose (forged, truncated, mistyped).
    #[error("This link is not valid. Check that you copied all of it.")]
    Unknown,
    #[error("This link has expired.")]
    Expired,
    #[error("This link has already been used.")]
    Used,
    /// Issued to another account than the one signed in.
    #[error("This link is for another account. Sign out, then sign in as that account and open the link again.")]
    OtherAccount,
    /// Given a wrong password too many times (a sign-up link).
    #[error("A wrong password was given with this link too many times. Sign up again to get a new link.")]
    TooManyTries,
    /// A newer link of the same kind, or a password change, replaced it.
    #[error("This link was replaced by a newer one or by a password change. Use the most recent mail.")]
    Replaced,
}

/// A link that works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub user: Uuid,
    /// The address an email-change link is about (the new one, or the old one to return to).
    pub address: Option<String>,
    pub created_at: OffsetDateTime,
}

/// Issues a link token for `user` (returned for the mail; only its hash is stored);
/// `address` for the email-change purposes. Verification and email-change links replace
/// the earlier ones (only the newest mail counts); reset and revert links do not, so that
/// someone acting in another person's name cannot void the link that person holds.
pub async fn issue(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    purpose: LinkPurpose,
    address: Option<&str>,
    valid_for: Duration,
    now: OffsetDateTime,
) -> QueryResult<String> {
    // One issue at a time per account: two at once would each miss the other's new link.
    super::lock_account(conn, user).await?;
    if matches!(purpose, LinkPurpose::VerifyEmail | LinkPurpose::ChangeEmail) {
        withdraw(conn, user, purpose, now).await?;
    }
    let token = new_token();
    diesel::insert_into(account_links::table)
        .values((
            account_links::token_hash.eq(token_hash(&token)),
            account_links::user_id.eq(user),
            account_links::purpose.eq(purpose.as_str()),
            account_links::created_at.eq(now),
            account_links::expires_at.eq(now + valid_for),
            account_links::address.eq(address),
            account_links::address_normalized.eq(address.map(super::normalize_email)),
        ))
        .execute(conn)
        .await?;
    Ok(token)
}

/// Whether `address_normalized` is held by a revert link of another account than
/// `except`: that account may take its address back, so nobody else may take it meanwhile.
pub async fn address_held(
    conn: &mut AsyncPgConnection,
    address_normalized: &str,
    except: Option<Uuid>,
    now: OffsetDateTime,
) -> QueryResult<bool> {
    Ok(address_holder(conn, address_normalized, except, now).await?.is_some())
}

/// The account (other than `except`) whose revert link holds `address_normalized`, if any.
pub async fn address_holder(
    conn: &mut AsyncPgConnection,
    address_normalized: &str,
    except: Option<Uuid>,
    now: OffsetDateTime,
) -> QueryResult<Option<Uuid>> {
    let mut query = account_links::table
        .filter(account_links::address_normalized.eq(address_normalized))
        .filter(account_links::purpose.eq(LinkPurpose::RevertEmail.as_str()))
        .filter(account_links::used_at.is_null())
        .filter(account_links::replaced_at.is_null())
        .filter(account_links::expires_at.gt(now))
        .into_boxed();
    if let Some(except) = except {
        query = query.filter(account_links::user_id.ne(except));
    }
    query.select(account_links::user_id).first(conn).await.optional()
}

/// Stops `user`'s unused links of `purpose` from working (marked replaced): a password
/// change makes reset links already mailed useless.
pub async fn withdraw(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    purpose: LinkPurpose,
    now: OffsetDateTime,
) -> QueryResult<usize> {
    withdraw_since(conn, user, purpose, OffsetDateTime::UNIX_EPOCH, now).await
}

/// Stops `user`'s unused links of `purpose` issued at or after `since` from working.
pub async fn withdraw_since(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    purpose: LinkPurpose,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> QueryResult<usize> {
    diesel::update(
        account_links::table
            .filter(account_links::user_id.eq(user))
            .filter(account_links::purpose.eq(purpose.as_str()))
            .filter(account_links::created_at.ge(since))
            .filter(account_links::used_at.is_null())
            .filter(account_links::replaced_at.is_null()),
    )
    .set(account_links::replaced_at.eq(now))
    .execute(conn)
    .await
}

/// A usable link, without using it up (the page that asks "Verify?" before the click
/// that does).
pub async fn inspect(
    conn: &mut AsyncPgConnection,
    token: &str,
    purpose: LinkPurpose,
    now: OffsetDateTime,
) -> QueryResult<Result<Link, LinkProblem>> {
    if !well_formed(token) {
        return Ok(Err(LinkProblem::Unknown));
    }
    type Found = (Uuid, Option<String>, OffsetDateTime, OffsetDateTime, Option<OffsetDateTime>, Option<OffsetDateTime>);
    let found: Option<Found> = account_links::table
        .filter(account_links::token_hash.eq(token_hash(token)))
        .filter(account_links::purpose.eq(purpose.as_str()))
        .select((
            account_links::user_id,
            account_links::address,
            account_links::created_at,
            account_links::expires_at,
            account_links::used_at,
            account_links::replaced_at,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(match found {
        None => Err(LinkProblem::Unknown),
        Some((_, _, _, _, Some(_), _)) => Err(LinkProblem::Used),
        Some((_, _, _, _, None, Some(_))) => Err(LinkProblem::Replaced),
        Some((_, _, _, expires_at, None, None)) if expires_at <= now => Err(LinkProblem::Expired),
        Some((user, address, created_at, _, None, None)) => Ok(Link { user, address, created_at }),
    })
}

/// Uses the link `token` for `purpose`, if it is `user`'s (when given) and still good.
/// A link of another account is not used up.
pub async fn redeem(
    conn: &mut AsyncPgConnection,
    token: &str,
    purpose: LinkPurpose,
    user: Option<Uuid>,
    now: OffsetDateTime,
) -> QueryResult<Result<Link, LinkProblem>> {
    if !well_formed(token) {
        return Ok(Err(LinkProblem::Unknown));
    }
    let mut query = diesel::update(account_links::table)
        .filter(account_links::token_hash.eq(token_hash(token)))
        .filter(account_links::purpose.eq(purpose.as_str()))
        .filter(account_links::used_at.is_null())
        .filter(account_links::replaced_at.is_null())
        .filter(account_links::expires_at.gt(now))
        .into_boxed();
    if let Some(user) = user {
        query = query.filter(account_links::user_id.eq(user));
    }
    let used: Option<(Uuid, Option<String>, OffsetDateTime)> = query
        .set(account_links::used_at.eq(now))
        .returning((account_links::user_id, account_links::address, account_links::created_at))
        .get_result(conn)
        .await
        .optional()?;
    if let Some((user, address, created_at)) = used {
        return Ok(Ok(Link { user, address, created_at }));
    }
    // Not used: say why.
    Ok(match inspect(conn, token, purpose, now).await? {
        Ok(link) if Some(link.user) != user => Err(LinkProblem::OtherAccount),
        Ok(_) => Err(LinkProblem::Used),
        Err(problem) => Err(problem),
    })
}

/// Deletes links that expired before `before` (the clean-up job; a week's grace keeps
/// "expired" answers for a while rather than "not valid").
pub async fn delete_expired(conn: &mut AsyncPgConnection, before: OffsetDateTime) -> QueryResult<usize> {
    diesel::delete(account_links::table.filter(account_links::expires_at.lt(before))).execute(conn).await
}

/// Records a mailed link that did nothing (`event`, refused for `problem`). Tokens we never
/// issued are recorded once per action, client network and repeat window: anyone can send
/// them as fast as they like, and each would otherwise be an event to keep and chain.
pub(crate) async fn record_refusal(
    conn: &mut AsyncPgConnection,
    audit: &crate::audit::Audit<'_>,
    event: crate::audit::Event,
    problem: LinkProblem,
) -> QueryResult<()> {
    if problem != LinkProblem::Unknown {
        return audit.record(conn, event).await;
    }
    let network = audit.origin.network.as_deref().unwrap_or("-");
    let key = format!("unknown-link\n{}\n{network}", event.action.name());
    audit.record_unless_repeated(conn, key.as_bytes(), event).await
}
