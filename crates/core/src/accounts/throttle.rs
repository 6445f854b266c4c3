//! Sign-in throttling per account: after `max_failures` failed sign-ins within `window`,
//! signing in to that account is refused for `block`, whatever the password — so a
//! password cannot be guessed faster than a handful of tries per quarter hour. The same
//! rule, with a higher limit, counts failures per client network across accounts
//! ([`client_sign_in_key`], [`SignInThrottle::per_client_default`]).
//!
//! The rule is pure ([`SignInThrottle::after_failure`], [`SignInThrottle::refused_for`],
//! time passed in); the queries keep the counts in `sign_in_failures`, keyed by a hash of
//! the normalized email. Unknown emails are counted the same way: the answer never says
//! whether an account exists. A refusal is decided before the password is verified; a
//! burst of parallel tries can still get as many verifications as are under way when the
//! limit is reached (bounded by the hashing permits and their wait).

use crate::pseudonym::Pseudonymizer;
use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};

use crate::schema::sign_in_failures;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInThrottle {
    /// Failures within `window` that block the account's sign-in (default 5).
    pub max_failures: i32,
    /// How long failures are remembered, from the first of a series (default 15 min).
    pub window: Duration,
    /// How long sign-in stays refused once blocked (default 15 min).
    pub block: Duration,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self { max_failures: 5, window: Duration::minutes(15), block: Duration::minutes(15) }
    }
}

impl SignInThrottle {
    /// The default limit per client network (see [`crate::client`]), across all accounts:
    /// against password spraying (a few common passwords tried on many accounts, which the
    /// per-account limit never sees). High enough for an office behind one address.
    pub fn per_client_default() -> Self {
        Self { max_failures: 50, ..Self::default() }
    }
}

/// An account's recent failed sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct FailedSignIns {
    pub failures: i32,
    pub window_started_at: OffsetDateTime,
    pub blocked_until: Option<OffsetDateTime>,
}

impl SignInThrottle {
    /// How much longer sign-in is refused at `now`, if it is.
    pub fn refused_for(&self, state: Option<&FailedSignIns>, now: OffsetDateTime) -> Option<Duration> {
        state?.blocked_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// The count after one more failure at `now`: a series older than `window` starts
    /// over; reaching `max_failures` blocks until `now + block`.
    pub fn after_failure(&self, state: Option<FailedSignIns>, now: OffsetDateTime) -> FailedSignIns {
        let current = match state {
            Some(s) if now - s.window_started_at < self.window => s,
            _ => FailedSignIns { failures: 0, window_started_at: now, blocked_until: None },
        };
        let failures = current.failures.saturating_add(1);
        let blocked_until = if failures >= self.max_failures { Some(now + self.block) } else { current.blocked_until };
        FailedSignIns { failures, window_started_at: current.window_started_at, blocked_until }
    }
}

/// The stored key of an account's count: a keyed pseudonym of the email, never the email
/// itself nor a plain hash of it (see `crate::pseudonym`).
pub fn sign_in_key(pseudonyms: &Pseudonymizer, normalized_email: &str) -> Vec<u8> {
    pseudonyms.pseudonym("sign-in", normalized_email)
}

/// The stored key of a client network's count (a different purpose from accounts').
pub fn client_sign_in_key(pseudonyms: &Pseudonymizer, client_network: &str) -> Vec<u8> {
    pseudonyms.pseudonym("sign-in-client", client_network)
}

/// How much longer sign-in to the account with this key is refused, if it is.
pub async fn sign_in_refused_for(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
) -> QueryResult<Option<Duration>> {
    let state: Option<FailedSignIns> = sign_in_failures::table
        .find(key)
        .select((sign_in_failures::failures, sign_in_failures::window_started_at, sign_in_failures::blocked_until))
        .first(conn)
        .await
        .optional()?;
    Ok(throttle.refused_for(state.as_ref(), now))
}

/// Counts a failed sign-in. The row is locked while it is updated, so concurrent
/// failures are all counted.
pub async fn record_failed_sign_in(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
) -> QueryResult<FailedSignIns> {
    Ok(count_failure(conn, throttle, key, now, false).await?.unwrap_or_else(|(current, _)| current))
}

/// Counts an attempt as a failure *before* it is checked, unless the count is already
/// blocked at `now` (then `Err(wait)`, nothing counted). The row is locked while it is
/// read and updated, so however many attempts arrive at once, no more than
/// `max_failures` get through before the block: a success clears the count afterwards
/// ([`clear_failed_sign_ins`]).
pub async fn reserve_attempt(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
) -> QueryResult<Result<FailedSignIns, Duration>> {
    Ok(count_failure(conn, throttle, key, now, true).await?.map_err(|(_, wait)| wait))
}

/// One more failure on `key`'s count, under the row's lock; with `unless_blocked`, a
/// count blocked at `now` is left as it is (`Err` with its state and the wait).
async fn count_failure(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
    unless_blocked: bool,
) -> QueryResult<Result<FailedSignIns, (FailedSignIns, Duration)>> {
    let (throttle, key) = (*throttle, key.to_vec());
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        async move {
            diesel::insert_into(sign_in_failures::table)
                .values((
                    sign_in_failures::key.eq(&key),
                    sign_in_failures::failures.eq(0),
                    sign_in_failures::window_started_at.eq(now),
                ))
                .on_conflict_do_nothing()
                .execute(c)
                .await?;
            let current: FailedSignIns = sign_in_failures::table
                .find(&key)
                .select((
                    sign_in_failures::failures,
                    sign_in_failures::window_started_at,
                    sign_in_failures::blocked_until,
                ))
                .for_update()
                .first(c)
                .await?;
            if unless_blocked {
                if let Some(wait) = throttle.refused_for(Some(&current), now) {
                    return Ok(Err((current, wait)));
                }
            }
            let next = throttle.after_failure(Some(current), now);
            diesel::update(sign_in_failures::table.find(&key))
                .set((
                    sign_in_failures::failures.eq(next.failures),
                    sign_in_failures::window_started_at.eq(next.window_started_at),
                    sign_in_failures::blocked_until.eq(next.blocked_until),
                ))
                .execute(c)
                .await?;
            Ok(Ok(next))
        }
        .scope_boxed()
    })
    .await
}

/// A successful sign-in forgets the account's failures.
pub async fn clear_failed_sign_ins(conn: &mut AsyncPgConnection, key: &[u8]) -> QueryResult<()> {
    diesel::delete(sign_in_failures::table.find(key)).execute(conn).await?;
    Ok(())
}

/// Deletes counts that no longer matter at `now` (series over, no block in force); run
/// periodically with the session cleanup.
pub async fn delete_stale_sign_in_failures(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    now: OffsetDateTime,
) -> QueryResult<usize> {
    diesel::delete(
        sign_in_failures::table
            .filter(sign_in_failures::window_started_at.le(now - throttle.window))
            .filter(sign_in_failures::blocked_until.is_null().or(sign_in_failures::blocked_until.le(now))),
    )
    .execute(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_796_040_000).unwrap()
    }

    fn fail_n(throttle: &SignInThrottle, n: i32, every: Duration) -> (FailedSignIns, OffsetDateTime) {
        let (mut state, mut now) = (None, t0());
        for i in 0..n {
            now = t0() + every * i;
            state = Some(throttle.after_failure(state, now));
        }
        (state.unwrap(), now)
    }

    #[test]
    fn the_fifth_failure_within_the_window_blocks_for_the_block_time() {
        let t = SignInThrottle::default();
        let (four, now) = fail_n(&t, 4, Duration::minutes(1));
        assert_eq!(four.failures, 4);
        assert_eq!(t.refused_for(Some(&four), now), None);
        let five = t.after_failure(Some(four), now + Duration::minutes(1));
        assert_eq!(five.blocked_until, Some(now + Duration::minutes(16)));
        assert_eq!(t.refused_for(Some(&five), now + Duration::minutes(2)), Some(Duration::minutes(14)));
        assert_eq!(t.refused_for(Some(&five), now + Duration::minutes(16)), None, "the block ends");
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_block() {
        let t = SignInThrottle::default();
        let (state, now) = fail_n(&t, 50, Duration::minutes(4));
        assert!(state.failures < t.max_failures, "{state:?}");
        assert_eq!(t.refused_for(Some(&state), now), None);
    }

    #[test]
    fn a_failure_right_after_a_block_within_the_window_blocks_again() {
        let t = SignInThrottle { block: Duration::minutes(5), ..SignInThrottle::default() };
        let (blocked, now) = fail_n(&t, 5, Duration::seconds(10));
        let later = now + Duration::minutes(6);
        assert_eq!(t.refused_for(Some(&blocked), later), None);
        let again = t.after_failure(Some(blocked), later);
        assert_eq!(t.refused_for(Some(&again), later), Some(Duration::minutes(5)));
    }

    #[test]
    fn the_key_is_not_the_email() {
        let p = Pseudonymizer::random();
        let key = sign_in_key(&p, "ada@example.test");
        assert_eq!(key.len(), 32);
        assert!(!String::from_utf8_lossy(&key).contains("ada"));
        assert_eq!(key, sign_in_key(&p, "ada@example.test"));
        assert_ne!(key, sign_in_key(&p, "bob@example.test"));
        assert_ne!(client_sign_in_key(&p, "ada@example.test"), key, "client keys live apart from account keys");
    }
}
