//! Transactional outbox for e-mail. `enqueue` runs inside the caller's transaction;
//! a background worker delivers due rows and retries failures with backoff, and gives a
//! mail up after `MAX_ATTEMPTS` or at once when the server refuses it for good.
//!
//! Delivery is at least once: a worker claims mails in a short transaction that leases
//! them (`CLAIM_LEASE`: other workers skip them meanwhile) and talks SMTP outside any
//! transaction, holding no connection and no row lock; a worker that dies mid-send
//! leaves its mails to be claimed again when the lease ends.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
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
    /// Given up: never retried again.
    pub failed_at: Option<OffsetDateTime>,
}

/// Attempts before a mail is given up (with the backoff below, ≈ 5 hours of retrying).
pub const MAX_ATTEMPTS: i32 = 12;

/// How long claimed mails stay hidden from other workers while one sends them: longer
/// than a batch of `CLAIM_BATCH` can take against a slow server (10 s per SMTP command).
pub const CLAIM_LEASE: Duration = Duration::minutes(15);

/// Mails claimed at once by a worker.
pub const CLAIM_BATCH: i64 = 10;

pub async fn enqueue(conn: &mut AsyncPgConnection, recipient: &str, subject: &str, body: &str) -> QueryResult<Uuid> {
    diesel::insert_into(outbox_emails::table)
        .values((
            outbox_emails::recipient.eq(recipient),
            outbox_emails::subject.eq(subject),
            outbox_emails::body.eq(body),
        ))
        .returning(outbox_emails::id)
        .get_result(conn)
        .await
}

/// Claims up to `limit` due mails: counts the attempt and leases them (their next attempt
/// moves `CLAIM_LEASE` ahead), in one short transaction that skips rows another worker is
/// claiming. Returns them with the attempt counted.
pub async fn claim_due(conn: &mut AsyncPgConnection, now: OffsetDateTime, limit: i64) -> QueryResult<Vec<OutboxEmail>> {
    conn.transaction(|c| {
        async move {
            let ids: Vec<Uuid> = outbox_emails::table
                .filter(outbox_emails::sent_at.is_null())
                .filter(outbox_emails::failed_at.is_null())
                .filter(outbox_emails::next_attempt_at.le(now))
                .order(outbox_emails::next_attempt_at.asc())
                .limit(limit)
                .for_update()
                .skip_locked()
                .select(outbox_emails::id)
                .load(c)
                .await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            diesel::update(outbox_emails::table.filter(outbox_emails::id.eq_any(ids)))
                .set((
                    outbox_emails::attempts.eq(outbox_emails::attempts + 1),
                    outbox_emails::next_attempt_at.eq(now + CLAIM_LEASE),
                ))
                .returning(OutboxEmail::as_returning())
                .get_results(c)
                .await
        }
        .scope_boxed()
    })
    .await
}

/// What a mail's body becomes once it was delivered. Bodies carry single-use links
/// (invitations: the database keeps only the token's hash), which must not stay readable
/// in the database after they are of no more use to the worker.
pub const BODY_ERASED_AFTER_DELIVERY: &str = "(erased after delivery)";

/// What a mail's body becomes when the mail is given up (see `BODY_ERASED_AFTER_DELIVERY`);
/// to reach the person, act again (for an invitation: invite again, which replaces it).
pub const BODY_ERASED_WHEN_GIVEN_UP: &str = "(erased when the mail was given up)";

/// What the body of a mail withdrawn before it was sent becomes (its invitation was
/// revoked or replaced: the link no longer works, so neither sending nor keeping it helps).
pub const BODY_ERASED_WHEN_WITHDRAWN: &str = "(erased when the mail was withdrawn)";

/// Withdraws the mails among `ids` that are not sent yet: given up, body erased. A worker
/// already sending one of them may still deliver it; its link no longer works.
pub async fn withdraw_unsent(conn: &mut AsyncPgConnection, ids: &[Uuid], now: OffsetDateTime) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(
        outbox_emails::table
            .filter(outbox_emails::id.eq_any(ids))
            .filter(outbox_emails::sent_at.is_null())
            .filter(outbox_emails::failed_at.is_null()),
    )
    .set((
        outbox_emails::failed_at.eq(now),
        outbox_emails::body.eq(BODY_ERASED_WHEN_WITHDRAWN),
        outbox_emails::last_error.eq("withdrawn before it was sent"),
    ))
    .execute(conn)
    .await
}

/// Erases the bodies of delivered or given-up mails that still have theirs: during a
/// rolling deploy, servers of a version from before erasing mark mails without it.
/// Idempotent; run periodically. Returns how many bodies it erased.
pub async fn erase_finished_bodies(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    let sent = diesel::update(
        outbox_emails::table
            .filter(outbox_emails::sent_at.is_not_null())
            .filter(outbox_emails::body.ne(BODY_ERASED_AFTER_DELIVERY)),
    )
    .set(outbox_emails::body.eq(BODY_ERASED_AFTER_DELIVERY))
    .execute(conn)
    .await?;
    let given_up = diesel::update(
        outbox_emails::table
            .filter(outbox_emails::sent_at.is_null())
            .filter(outbox_emails::failed_at.is_not_null())
            .filter(outbox_emails::body.ne_all([BODY_ERASED_WHEN_GIVEN_UP, BODY_ERASED_WHEN_WITHDRAWN])),
    )
    .set(outbox_emails::body.eq(BODY_ERASED_WHEN_GIVEN_UP))
    .execute(conn)
    .await?;
    Ok(sent + given_up)
}

/// Records that a claimed mail went out (even if its lease ran out meanwhile: it was
/// sent), and erases its body.
pub async fn mark_sent(conn: &mut AsyncPgConnection, id: Uuid, now: OffsetDateTime) -> QueryResult<()> {
    diesel::update(outbox_emails::table.find(id).filter(outbox_emails::sent_at.is_null()))
        .set((
            outbox_emails::sent_at.eq(now),
            outbox_emails::last_error.eq(None::<String>),
            outbox_emails::body.eq(BODY_ERASED_AFTER_DELIVERY),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Exponential backoff after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, …
/// capped at 1 h.
pub fn backoff(attempts: i32) -> Duration {
    let secs = 30i64.saturating_mul(1i64 << (attempts - 1).clamp(0, 7));
    Duration::seconds(secs.min(3600))
}

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again later (server unreachable, busy, 4xx).
    Transient,
    /// Will never succeed (the server refused the message or recipient for good, 5xx;
    /// or the address cannot be written in an SMTP envelope).
    Permanent,
}

/// Whether an SMTP refusal is final for this mail. Only refusals of the recipient's
/// mailbox are (RFC 5321: 550 unavailable, 551 not local, 553 name not allowed), and not
/// when the server says it is a policy matter (enhanced status 5.7.x, e.g. relaying
/// denied): those, like authentication failures (530, 535) and every other code, come
/// from our configuration or the server's state, can be fixed, and are retried.
pub fn failure_for_smtp_reply(code: Option<u16>, text: &str) -> Failure {
    match code {
        Some(550 | 551 | 553) if !text.contains("5.7.") => Failure::Permanent,
        _ => Failure::Transient,
    }
}

/// Records a failed attempt of a claimed mail: retried after the backoff, or given up
/// (and its body erased) when the failure is permanent or this was attempt
/// `MAX_ATTEMPTS`. Does nothing when the claim is no longer this worker's (its lease ran
/// out and another worker claimed the mail again, or it was sent or given up meanwhile).
pub async fn mark_failed(
    conn: &mut AsyncPgConnection,
    mail: &OutboxEmail,
    error: &str,
    failure: Failure,
    now: OffsetDateTime,
) -> QueryResult<()> {
    let error: String = error.chars().take(500).collect();
    let update = diesel::update(
        outbox_emails::table
            .find(mail.id)
            .filter(outbox_emails::attempts.eq(mail.attempts))
            .filter(outbox_emails::sent_at.is_null())
            .filter(outbox_emails::failed_at.is_null()),
    );
    if failure == Failure::Permanent || mail.attempts >= MAX_ATTEMPTS {
        use diesel_async::scoped_futures::ScopedFutureExt;
        use diesel_async::AsyncConnection;
        let attempts = mail.attempts;
        conn.transaction::<_, diesel::result::Error, _>(|c| {
            async move {
                let given_up = update
                    .set((
                        outbox_emails::failed_at.eq(now),
                        outbox_emails::last_error.eq(error),
                        outbox_emails::body.eq(BODY_ERASED_WHEN_GIVEN_UP),
                    ))
                    .execute(c)
                    .await?;
                if given_up == 0 {
                    return Ok(());
                }
                // An invitation whose mail is lost: its workspace's admins should know.
                let invitation: Option<(Uuid, Uuid)> = crate::schema::invitations::table
                    .filter(crate::schema::invitations::mail_id.eq(mail.id))
                    .select((crate::schema::invitations::id, crate::schema::invitations::workspace_id))
                    .first(c)
                    .await
                    .optional()?;
                if let Some((id, workspace)) = invitation {
                    use crate::audit::{Action, Audit, Detail, Event, Outcome, SystemJob, Target};
                    let at = crate::clock::At(now);
                    let audit = Audit::system(SystemJob::MailWorker, &at);
                    let detail = Detail::MailGivenUp { attempts: attempts.max(0) as u32 };
                    let event = Event::workspace(
                        workspace,
                        Action::InvitationMailGivenUp,
                        Target::Invitation(id),
                        Outcome::Failed,
                        detail,
                    );
                    audit.record(c, event).await?;
                }
                Ok(())
            }
            .scope_boxed()
        })
        .await?;
    } else {
        update
            .set((outbox_emails::next_attempt_at.eq(now + backoff(mail.attempts)), outbox_emails::last_error.eq(error)))
            .execute(conn)
            .await?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_the_recipient_are_final() {
        assert_eq!(failure_for_smtp_reply(Some(550), "No such user here"), Failure::Permanent);
        assert_eq!(
            failure_for_smtp_reply(Some(550), "5.1.1 <x@example.test>: Recipient address rejected"),
            Failure::Permanent
        );
        assert_eq!(failure_for_smtp_reply(Some(553), "mailbox name not allowed"), Failure::Permanent);
        for (code, text) in [
            (Some(550), "5.7.1 Relaying denied"),
            (Some(535), "5.7.8 Authentication credentials invalid"),
            (Some(530), "Authentication required"),
            (Some(554), "Transaction failed"),
            (Some(421), "Service not available"),
            (None, "connection refused"),
        ] {
            assert_eq!(failure_for_smtp_reply(code, text), Failure::Transient, "{code:?} {text}");
        }
    }

    #[test]
    fn backoff_doubles_from_thirty_seconds_up_to_an_hour() {
        let waits: Vec<i64> = (1..=MAX_ATTEMPTS).map(|n| backoff(n).whole_seconds()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600]);
    }
}
