//! Fixed-window rate limits for actions that cost us (or someone else) something each
//! time: creating an account, sending invitation mail. One atomic statement per use, so
//! a burst of concurrent requests cannot slip past the limit; counts live in PostgreSQL,
//! so every server instance shares them.
//!
//! Failed sign-ins have their own, richer rule (`crate::accounts::throttle`).

use diesel::prelude::*;
use diesel::sql_types::{Bytea, Integer, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};

use crate::schema::rate_limits;

/// At most `max` uses per `window` (counted from the first use of a window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: i32,
    pub window: Duration,
}

impl RateLimit {
    pub const fn per_hour(max: i32) -> Self {
        Self { max, window: Duration::hours(1) }
    }

    pub const fn per_day(max: i32) -> Self {
        Self { max, window: Duration::days(1) }
    }
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = Integer)]
    count: i32,
    #[diesel(sql_type = Timestamptz)]
    window_ends_at: OffsetDateTime,
}

/// Counts one use of `key` at `now`: `Ok(())` while within `limit`, else `Err(wait)` until
/// the window ends. A refused use is counted too (it does not extend the window).
pub async fn take(
    conn: &mut AsyncPgConnection,
    key: &[u8],
    limit: RateLimit,
    now: OffsetDateTime,
) -> QueryResult<Result<(), Duration>> {
    let counted: Counted = diesel::sql_query(
        "INSERT INTO rate_limits (key, window_ends_at, count) VALUES ($1, $2 + $3 * interval '1 second', 1) \
         ON CONFLICT (key) DO UPDATE SET \
           count = CASE WHEN rate_limits.window_ends_at <= $2 THEN 1 ELSE rate_limits.count + 1 END, \
           window_ends_at = CASE WHEN rate_limits.window_ends_at <= $2 THEN EXCLUDED.window_ends_at \
                            ELSE rate_limits.window_ends_at END \
         RETURNING count, window_ends_at",
    )
    .bind::<Bytea, _>(key)
    .bind::<Timestamptz, _>(now)
    .bind::<Integer, _>(limit.window.whole_seconds() as i32)
    .get_result(conn)
    .await?;
    Ok(if counted.count > limit.max { Err(counted.window_ends_at - now) } else { Ok(()) })
}

/// Gives back one use of `key` (the action it was taken for did not happen after all).
pub async fn give_back(conn: &mut AsyncPgConnection, key: &[u8]) -> QueryResult<()> {
    diesel::update(rate_limits::table.find(key).filter(rate_limits::count.gt(0)))
        .set(rate_limits::count.eq(rate_limits::count - 1))
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes counters whose window is over; run periodically with the session cleanup.
pub async fn delete_finished(conn: &mut AsyncPgConnection, now: OffsetDateTime) -> QueryResult<usize> {
    diesel::delete(rate_limits::table.filter(rate_limits::window_ends_at.le(now))).execute(conn).await
}

/// Reserves `amount` units of a budget under `key` (a daily token budget): granted only
/// if the window's total stays within `limit.max`, in one statement, so concurrent
/// reservations cannot together exceed it. A refused reservation counts nothing.
/// `Err(wait)` is the time until the window ends.
pub async fn reserve(
    conn: &mut AsyncPgConnection,
    key: &[u8],
    amount: i32,
    limit: RateLimit,
    now: OffsetDateTime,
) -> QueryResult<Result<(), Duration>> {
    if amount > limit.max {
        return Ok(Err(limit.window));
    }
    let granted: Option<Counted> = diesel::sql_query(
        "INSERT INTO rate_limits AS r (key, window_ends_at, count) VALUES ($1, $2 + $3 * interval '1 second', $4) \
         ON CONFLICT (key) DO UPDATE SET \
           count = CASE WHEN r.window_ends_at <= $2 THEN $4 ELSE r.count + $4 END, \
           window_ends_at = CASE WHEN r.window_ends_at <= $2 THEN EXCLUDED.window_ends_at ELSE r.window_ends_at END \
         WHERE r.window_ends_at <= $2 OR r.count + $4 <= $5 \
         RETURNING count, window_ends_at",
    )
    .bind::<Bytea, _>(key)
    .bind::<Timestamptz, _>(now)
    .bind::<Integer, _>(limit.window.whole_seconds() as i32)
    .bind::<Integer, _>(amount)
    .bind::<Integer, _>(limit.max)
    .get_result(conn)
    .await
    .optional()?;
    if granted.is_some() {
        return Ok(Ok(()));
    }
    let ends: OffsetDateTime =
        rate_limits::table.find(key).select(rate_limits::window_ends_at).first(conn).await.optional()?.unwrap_or(now);
    Ok(Err((ends - now).max(Duration::seconds(1))))
}

/// Returns `amount` units reserved with [`reserve`] that were not used after all.
pub async fn release(conn: &mut AsyncPgConnection, key: &[u8], amount: i32) -> QueryResult<()> {
    diesel::sql_query("UPDATE rate_limits SET count = GREATEST(count - $2, 0) WHERE key = $1")
        .bind::<Bytea, _>(key)
        .bind::<Integer, _>(amount)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds `amount` to the counter of `key` within `limit.window` (never refused): returns
/// the window's total before and after, in one statement, so exactly one of several
/// concurrent callers sees a threshold crossed.
pub async fn add(
    conn: &mut AsyncPgConnection,
    key: &[u8],
    amount: i32,
    limit: RateLimit,
    now: OffsetDateTime,
) -> QueryResult<(i32, i32)> {
    let counted: Counted = diesel::sql_query(
        "INSERT INTO rate_limits AS r (key, window_ends_at, count) VALUES ($1, $2 + $3 * interval '1 second', $4) \
         ON CONFLICT (key) DO UPDATE SET \
           count = CASE WHEN r.window_ends_at <= $2 THEN $4 ELSE r.count + $4 END, \
           window_ends_at = CASE WHEN r.window_ends_at <= $2 THEN EXCLUDED.window_ends_at ELSE r.window_ends_at END \
         RETURNING count, window_ends_at",
    )
    .bind::<Bytea, _>(key)
    .bind::<Timestamptz, _>(now)
    .bind::<Integer, _>(limit.window.whole_seconds() as i32)
    .bind::<Integer, _>(amount)
    .get_result(conn)
    .await?;
    Ok((counted.count - amount, counted.count))
}
