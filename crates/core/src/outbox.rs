//! Transactional outbox for e-mail. `enqueue` runs inside the caller's transaction;
//! a background worker delivers due rows and retries failures with backoff.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::schema::outbox_emails;

#[derive(Debug, Clone, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = outbox_emails, check_for_backend(diesel::pg::Pg))]
pub struct OutboxEmail {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: OffsetDateTime,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

pub async fn enqueue(conn: &mut AsyncPgConnection, recipient: &str, subject: &str, body: &str) -> QueryResult<()> {
    diesel::insert_into(outbox_emails::table)
        .values((
            outbox_emails::recipient.eq(recipient),
            outbox_emails::subject.eq(subject),
            outbox_emails::body.eq(body),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Claims up to `limit` due, unsent mails (locked until the caller's transaction ends,
/// skipped by other workers meanwhile).
pub async fn claim_due(conn: &mut AsyncPgConnection, now: OffsetDateTime, limit: i64) -> QueryResult<Vec<OutboxEmail>> {
    outbox_emails::table
        .filter(outbox_emails::sent_at.is_null())
        .filter(outbox_emails::next_attempt_at.le(now))
        .order(outbox_emails::next_attempt_at.asc())
        .limit(limit)
        .for_update()
        .skip_locked()
        .select(OutboxEmail::as_select())
        .load(conn)
        .await
}

pub async fn mark_sent(conn: &mut AsyncPgConnection, id: Uuid, now: OffsetDateTime) -> QueryResult<()> {
    diesel::update(outbox_emails::table.find(id))
        .set((outbox_emails::sent_at.eq(now), outbox_emails::attempts.eq(outbox_emails::attempts + 1), outbox_emails::last_error.eq(None::<String>)))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Exponential backoff: 30 s, 1 min, 2 min, … capped at 1 h.
pub fn backoff(attempts: i32) -> Duration {
    let secs = 30i64.saturating_mul(1i64 << attempts.clamp(0, 7));
    Duration::seconds(secs.min(3600))
}

pub async fn mark_failed(conn: &mut AsyncPgConnection, mail: &OutboxEmail, error: &str, now: OffsetDateTime) -> QueryResult<()> {
    diesel::update(outbox_emails::table.find(mail.id))
        .set((
            outbox_emails::attempts.eq(mail.attempts + 1),
            outbox_emails::next_attempt_at.eq(now + backoff(mail.attempts)),
            outbox_emails::last_error.eq(error.chars().take(500).collect::<String>()),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Newest mails first, for the development mailbox page.
pub async fn recent(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<OutboxEmail>> {
    outbox_emails::table
        .order(outbox_emails::created_at.desc())
        .limit(limit)
        .select(OutboxEmail::as_select())
        .load(conn)
        .await
}
