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
