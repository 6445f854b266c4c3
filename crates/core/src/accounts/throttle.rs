//! Sign-in throttling per account: after `max_failures` failed sign-ins within `window`,
//! signing in to that account is refused for `block`, whatever the password — so a
//! password cannot be guessed faster than a handful of tries per quarter hour. The same
//! rule, with a higher limit, counts failures per client network across accounts
//! ([`client_sign_in_key`], [`SignInThrottle::per_client_default`]).
//!
//! The rule is pure ([`SignInThrottle::after_failure`], [`SignInThrottle::refused_for`],
//! time passed in); the queries keep the counts in `sign_in_failures`, keyed by a hash of
//! the normalized email. Unknown emails are counted the same way: the answer never says
//! whether an account exists. Every attempt is counted *before* the password is
//! verified ([`reserve_attempts`], under the rows' locks), so however many tries arrive at
//! once, no more than the limit are ever verified; a wrong one may then block
//! ([`conclude_failure`]), a right one gives its reservation back ([`refund_attempt`]) or
//! clears the account's count.

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
    /// How long sign-in stays refused once blocked (default 15 min); with `escalating`,
    /// the longest block.
    pub block: Duration,
    /// Slow down instead of shutting out: the first block lasts a minute, each failure
    /// after it doubles the next (up to `block`). (Between blocks, any count lets one
    /// attempt at a time through.)
    pub escalating: bool,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        Self { max_failures: 5, window: Duration::minutes(15), block: Duration::minutes(15), escalating: false }
    }
}

impl SignInThrottle {
    /// The default limit per client network (see [`crate::client`]), across all accounts:
    /// against password spraying (a few common passwords tried on many accounts, which the
    /// per-account limit never sees). High enough for an office behind one address.
    pub fn per_client_default() -> Self {
        Self { max_failures: 50, ..Self::default() }
    }

    /// The default for an account's failures from browsers and networks it has never
    /// signed in from, across all of them: 10 a day, then one every 1, 2, 4, 8, then 15
    /// minutes. It slows a distributed guesser down to about 100 guesses a day, and never
    /// locks the owner out: on a familiar browser or network this count does not apply,
    /// and elsewhere the wait is at most 15 minutes.
    pub fn elsewhere_default() -> Self {
        Self { max_failures: 10, window: Duration::days(1), block: Duration::minutes(15), escalating: true }
    }

    /// How long the block set by a failure that brings the count to `failures` lasts.
    fn block_for(&self, failures: i32) -> Duration {
        if !self.escalating {
            return self.block;
        }
        let doublings = (failures - self.max_failures).clamp(0, 16) as u32;
        (Duration::minutes(1) * 2_i32.pow(doublings)).min(self.block)
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

    /// The count with one more attempt reserved at `now` (counted before it is checked),
    /// or how long to wait: while blocked, the rest of the block; while the window's
    /// `max_failures` attempts are all counted but some are still being checked,
    /// [`IN_FLIGHT_WAIT`]. A reservation never blocks for longer than that by itself — only
    /// a concluded failure does ([`Self::after_concluded_failure`]) — so a burst of right
    /// passwords is slowed for a moment, never locked out.
    pub fn reserve(&self, state: Option<FailedSignIns>, now: OffsetDateTime) -> Result<FailedSignIns, Duration> {
        if let Some(wait) = self.refused_for(state.as_ref(), now) {
            return Err(wait);
        }
        let current = match state {
            Some(s) if now - s.window_started_at < self.window => s,
            _ => FailedSignIns { failures: 0, window_started_at: now, blocked_until: None },
        };
        // The attempt that reaches the limit, and each one let through after a block has
        // come and gone, holds the door (a provisional block) until it is concluded. Were
        // it never concluded (the server stopped mid-check), the door opens again soon.
        let provisional = Some(now + IN_FLIGHT_WAIT);
        if current.failures >= self.max_failures {
            if current.blocked_until.is_some() {
                return Ok(FailedSignIns { failures: current.failures + 1, blocked_until: provisional, ..current });
            }
            return Err(IN_FLIGHT_WAIT);
        }
        let failures = current.failures + 1;
        let blocked_until = if failures >= self.max_failures { provisional } else { current.blocked_until };
        Ok(FailedSignIns { failures, blocked_until, ..current })
    }

    /// The count once a reserved attempt has turned out wrong: blocked (for
    /// [`Self::block_for`] the count) when the window's count has reached `max_failures`.
    /// A block already in force is only ever lengthened.
    pub fn after_concluded_failure(&self, state: FailedSignIns, now: OffsetDateTime) -> FailedSignIns {
        if state.failures < self.max_failures {
            return state;
        }
        let until = now + self.block_for(state.failures);
        let blocked_until = Some(state.blocked_until.map_or(until, |current| current.max(until)));
        FailedSignIns { blocked_until, ..state }
    }

    /// The count once a reserved attempt is given back: one fewer, and a provisional block
    /// (set by a reservation, see [`Self::reserve`]) lifted, since the attempt holding the
    /// door is done. It stays `Some`, as an expired block, so a count at its limit still
    /// lets one attempt at a time through. A real block (a minute or more) stays.
    pub fn after_refund(state: FailedSignIns, now: OffsetDateTime) -> FailedSignIns {
        let blocked_until =
            state.blocked_until.map(|until| if until <= now + IN_FLIGHT_WAIT { until.min(now) } else { until });
        FailedSignIns { failures: (state.failures - 1).max(0), blocked_until, ..state }
    }
}

/// How long an attempt waits while the limit's worth of attempts are still being checked.
pub const IN_FLIGHT_WAIT: Duration = Duration::seconds(5);

/// The stored key of an account's count: a keyed pseudonym of the email, never the email
/// itself nor a plain hash of it (see `crate::pseudonym`).
pub fn sign_in_key(pseudonyms: &Pseudonymizer, normalized_email: &str) -> Vec<u8> {
    pseudonyms.pseudonym("sign-in", normalized_email)
}

/// The stored key of a client network's count (a different purpose from accounts').
pub fn client_sign_in_key(pseudonyms: &Pseudonymizer, client_network: &str) -> Vec<u8> {
    pseudonyms.pseudonym("sign-in-client", client_network)
}

/// Counts an attempt as a failure *before* it is checked, unless the count is already
/// blocked at `now` (then `Err(wait)`, nothing counted). See [`reserve_attempts`].
pub async fn reserve_attempt(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
) -> QueryResult<Result<(), Duration>> {
    Ok(reserve_attempts(conn, &[(throttle, key)], now).await?.map_err(|(_, wait)| wait))
}

/// Counts one attempt on every count in `counts` before it is checked — all of them or,
/// when any refuses ([`SignInThrottle::reserve`]), none (then `Err` with its index and
/// wait). The rows are locked while they are read and updated, so however many attempts
/// arrive at once, no more than `max_failures` are ever checked. Afterwards a success
/// clears the count ([`clear_failed_sign_ins`]) or gives the reservation back
/// ([`refund_attempt`]); a failure stays counted and may block ([`conclude_failure`]).
pub async fn reserve_attempts(
    conn: &mut AsyncPgConnection,
    counts: &[(&SignInThrottle, &[u8])],
    now: OffsetDateTime,
) -> QueryResult<Result<(), (usize, Duration)>> {
    let counts: Vec<(SignInThrottle, Vec<u8>)> = counts.iter().map(|(t, k)| (**t, k.to_vec())).collect();
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        async move {
            let mut next = Vec::with_capacity(counts.len());
            for (i, (throttle, key)) in counts.iter().enumerate() {
                match throttle.reserve(Some(locked_count(c, key, now).await?), now) {
                    Ok(reserved) => next.push(reserved),
                    Err(wait) => return Ok(Err((i, wait))),
                }
            }
            for ((_, key), next) in counts.iter().zip(next) {
                store_count(c, key, next).await?;
            }
            Ok(Ok(()))
        }
        .scope_boxed()
    })
    .await
}

/// Inside the caller's transaction: reserves one attempt on `key`'s count and keeps its
/// row locked until the transaction ends, for a check cheap enough to run under the lock
/// (a code, not a password). Parallel attempts wait on the lock, so none is checked past
/// the limit and the reservation need not be stored: the caller ends it with
/// [`clear_failed_sign_ins`] on success or [`conclude_locked_failure`] on a wrong answer,
/// or leaves the count as it was. Returns the reserved count, or how long to wait.
pub async fn reserve_locked(
    c: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
) -> QueryResult<Result<FailedSignIns, Duration>> {
    Ok(throttle.reserve(Some(locked_count(c, key, now).await?), now))
}

/// Concludes an attempt reserved by [`reserve_locked`] that turned out wrong.
pub async fn conclude_locked_failure(
    c: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    reserved: FailedSignIns,
    now: OffsetDateTime,
) -> QueryResult<()> {
    store_count(c, key, throttle.after_concluded_failure(reserved, now)).await
}

/// Concludes an attempt reserved by [`reserve_attempts`] that turned out wrong: the
/// count is already there; reaching the limit now blocks it
/// ([`SignInThrottle::after_concluded_failure`]).
pub async fn conclude_failure(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
) -> QueryResult<()> {
    let (throttle, key) = (*throttle, key.to_vec());
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        async move {
            let current = locked_count(c, &key, now).await?;
            let next = throttle.after_concluded_failure(current, now);
            if next != current {
                store_count(c, &key, next).await?;
            }
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// Gives back an attempt reserved by [`reserve_attempts`] that turned out right (on a
/// count a success does not clear, such as the network's) or was never checked
/// ([`SignInThrottle::after_refund`]). A count left with nothing in it is deleted.
pub async fn refund_attempt(conn: &mut AsyncPgConnection, key: &[u8], now: OffsetDateTime) -> QueryResult<()> {
    let key = key.to_vec();
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        async move {
            let next = SignInThrottle::after_refund(locked_count(c, &key, now).await?, now);
            if next.failures == 0 && next.blocked_until.is_none_or(|until| until <= now) {
                clear_failed_sign_ins(c, &key).await
            } else {
                store_count(c, &key, next).await
            }
        }
        .scope_boxed()
    })
    .await
}

/// Counts a failure that was not reserved beforehand (as [`reserve_attempts`] does, but
/// counted even while blocked).
pub async fn record_failed_sign_in(
    conn: &mut AsyncPgConnection,
    throttle: &SignInThrottle,
    key: &[u8],
    now: OffsetDateTime,
) -> QueryResult<FailedSignIns> {
    let (throttle, key) = (*throttle, key.to_vec());
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        async move {
            let next = throttle.after_failure(Some(locked_count(c, &key, now).await?), now);
            store_count(c, &key, next).await?;
            Ok(next)
        }
        .scope_boxed()
    })
    .await
}

/// `key`'s count, its row created if missing and locked until the transaction ends. One
/// statement: an insert that did nothing followed by a read could find the row deleted
/// in between by a concurrent success.
async fn locked_count(c: &mut AsyncPgConnection, key: &[u8], now: OffsetDateTime) -> QueryResult<FailedSignIns> {
    diesel::insert_into(sign_in_failures::table)
        .values((
            sign_in_failures::key.eq(key),
            sign_in_failures::failures.eq(0),
            sign_in_failures::window_started_at.eq(now),
        ))
        .on_conflict(sign_in_failures::key)
        .do_update()
        .set(sign_in_failures::failures.eq(sign_in_failures::failures))
        .returning((sign_in_failures::failures, sign_in_failures::window_started_at, sign_in_failures::blocked_until))
        .get_result(c)
        .await
}

async fn store_count(c: &mut AsyncPgConnection, key: &[u8], next: FailedSignIns) -> QueryResult<()> {
    diesel::update(sign_in_failures::table.find(key))
        .set((
            sign_in_failures::failures.eq(next.failures),
            sign_in_failures::window_started_at.eq(next.window_started_at),
            sign_in_failures::blocked_until.eq(next.blocked_until),
        ))
        .execute(c)
        .await?;
    Ok(())
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
    fn reservations_stop_at_the_limit_and_only_concluded_failures_block() {
        let t = SignInThrottle::default();
        let now = t0();
        let mut state = None;
        for n in 1..=5 {
            let reserved = t.reserve(state, now).expect("within the limit");
            assert_eq!(reserved.failures, n);
            state = Some(reserved);
        }
        // Five in flight: the sixth waits a moment, and nothing is blocked for longer.
        assert_eq!(t.reserve(state, now), Err(IN_FLIGHT_WAIT));
        assert_eq!(state.unwrap().blocked_until, Some(now + IN_FLIGHT_WAIT));
        // Were none of them ever concluded, one attempt at a time goes through again.
        let later = now + IN_FLIGHT_WAIT;
        let one = t.reserve(state, later).expect("the door opens again");
        assert_eq!(t.reserve(Some(one), later), Err(IN_FLIGHT_WAIT));
        // One of them turns out right and is given back: the door opens at once.
        let refunded = SignInThrottle::after_refund(state.unwrap(), now);
        assert_eq!((refunded.failures, t.refused_for(Some(&refunded), now)), (4, None));
        assert!(t.reserve(Some(refunded), now).is_ok());
        // One of them turns out wrong: now the count blocks.
        let concluded = t.after_concluded_failure(state.unwrap(), now);
        assert_eq!(t.refused_for(Some(&concluded), now), Some(t.block));
        assert_eq!(t.reserve(Some(concluded), now + Duration::minutes(1)), Err(Duration::minutes(14)));
        // Below the limit a concluded failure blocks nothing.
        let one = t.reserve(None, now).unwrap();
        assert_eq!(t.after_concluded_failure(one, now), one);
        // The window passes: a fresh series.
        let later = now + t.window + t.block;
        assert_eq!(t.reserve(Some(concluded), later).unwrap().failures, 1);
    }

    #[test]
    fn failures_from_elsewhere_slow_down_one_attempt_at_a_time() {
        let t = SignInThrottle::elsewhere_default();
        let mut now = t0();
        let mut state = None;
        for _ in 0..10 {
            state = Some(t.after_concluded_failure(t.reserve(state, now).unwrap(), now));
        }
        // The tenth blocks for a minute; then one try at a time, each failure doubling.
        let mut expected = Duration::minutes(1);
        for _ in 0..6 {
            assert_eq!(t.refused_for(state.as_ref(), now), Some(expected));
            now += expected;
            let reserved = t.reserve(state, now).expect("one attempt after the block");
            assert_eq!(t.reserve(Some(reserved), now), Err(IN_FLIGHT_WAIT), "only one at a time");
            state = Some(t.after_concluded_failure(reserved, now));
            expected = (expected * 2_i32).min(Duration::minutes(15));
        }
        assert_eq!(t.refused_for(state.as_ref(), now), Some(Duration::minutes(15)), "never longer");
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

    #[test]
    fn a_refund_leaves_a_real_block_in_force() {
        let t = SignInThrottle::default();
        let now = t0();
        let blocked = FailedSignIns { failures: 5, window_started_at: now, blocked_until: Some(now + t.block) };
        let refunded = SignInThrottle::after_refund(blocked, now);
        assert_eq!((refunded.failures, refunded.blocked_until), (4, Some(now + t.block)));
        let empty = FailedSignIns { failures: 0, window_started_at: now, blocked_until: None };
        assert_eq!(SignInThrottle::after_refund(empty, now).failures, 0, "never below zero");
    }
}
