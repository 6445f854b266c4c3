//! Keeping the trail: monthly partitions made ahead of time, signed checkpoints of every
//! chain head, and pruning whole months past retention.

use diesel::sql_types::{BigInt, Bytea, Text, Timestamptz, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::{Date, Duration, Month, OffsetDateTime};
use uuid::Uuid;

use super::{Action, Audit, AuditSigner, Detail, Event, Outcome, SystemJob};
use crate::clock::Clock;

/// Default retention of audit events (`FLUXI_AUDIT_RETENTION_DAYS`).
pub const DEFAULT_RETENTION_DAYS: i64 = 365;
/// Platform bounds on retention.
pub const RETENTION_DAYS_RANGE: std::ops::RangeInclusive<i64> = 30..=3660;
/// Months of partitions kept ready ahead of the current one.
pub const MONTHS_AHEAD: i32 = 2;

/// Advisory lock key: one pruner at a time across all server instances.
const PRUNE_LOCK_KEY: i64 = 0x666c_7578_695f_6175; // "fluxi_au"

fn first_of_month(year: i32, month: Month) -> OffsetDateTime {
    Date::from_calendar_date(year, month, 1).expect("the first of a month exists").midnight().assume_utc()
}

fn month_start(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    first_of_month(at.year(), at.month())
}

fn next_month(start: OffsetDateTime) -> OffsetDateTime {
    let year = if start.month() == Month::December { start.year() + 1 } else { start.year() };
    first_of_month(year, start.month().next())
}

/// The partition holding the month that starts at `start`.
fn partition_name(start: OffsetDateTime) -> String {
    format!("audit_events_p{:04}{:02}", start.year(), start.month() as u8)
}

fn parse_partition_name(name: &str) -> Option<OffsetDateTime> {
    let digits = name.strip_prefix("audit_events_p")?;
    if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[..4].parse().ok()?;
    let month = Month::try_from(digits[4..].parse::<u8>().ok()?).ok()?;
    Some(first_of_month(year, month))
}

fn sql_time(at: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02} 00:00:00+00", at.year(), at.month() as u8, at.day())
}

/// Seals every chain's pending events before a job that reads all chains; a chain that
/// cannot be sealed is logged and the job goes on with what is chained.
async fn seal_first(conn: &mut AsyncPgConnection, then: &str) -> diesel::QueryResult<()> {
    for (chain, error) in super::seal_all(conn).await?.failed {
        tracing::error!(%chain, %error, "audit events of this chain could not be sealed; {then}");
    }
    Ok(())
}

/// Makes the monthly partitions from the month of `from` through `MONTHS_AHEAD` months
/// after the month of `until`, where missing. Names and bounds come from dates only.
pub async fn ensure_partitions(
    conn: &mut AsyncPgConnection,
    from: OffsetDateTime,
    until: OffsetDateTime,
) -> diesel::QueryResult<usize> {
    let mut start = month_start(from);
    let mut last = month_start(until);
    for _ in 0..MONTHS_AHEAD {
        last = next_month(last);
    }
    let mut made = 0;
    while start <= last {
        let end = next_month(start);
        let created = diesel::sql_query(format!(
            "DO $$ BEGIN IF to_regclass('public.{name}') IS NULL THEN \
               CREATE TABLE public.{name} PARTITION OF audit_events FOR VALUES FROM ('{from}') TO ('{to}'); \
               END IF; END $$",
            name = partition_name(start),
            from = sql_time(start),
            to = sql_time(end),
        ))
        .execute(conn)
        .await;
        created?;
        made += 1;
        start = end;
    }
    Ok(made)
}

/// A signed statement of every chain head at one moment.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub id: i64,
    pub created_at: OffsetDateTime,
    /// Exactly the signed text: a header, then `chain seq hash` per chain.
    pub body: String,
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The line written to the checkpoint file, for shipping elsewhere.
    pub fn to_json_line(&self) -> String {
        serde_json::json!({
            "checkpoint": self.id,
            "created_at": self.created_at.unix_timestamp(),
            "body": self.body,
            "signature": hex::encode(&self.signature),
        })
        .to_string()
    }

    /// A line of the checkpoint file, read back.
    pub fn from_json_line(line: &str) -> Option<Checkpoint> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(Checkpoint {
            id: v["checkpoint"].as_i64()?,
            created_at: OffsetDateTime::from_unix_timestamp(v["created_at"].as_i64()?).ok()?,
            body: v["body"].as_str()?.to_string(),
            signature: hex::decode(v["signature"].as_str()?).ok()?,
        })
    }

    /// `(chain, seq, hash)` of each head the body names.
    pub fn heads(&self) -> Vec<(Uuid, i64, Vec<u8>)> {
        parse_heads(&self.body)
    }
}

pub(crate) fn parse_heads(body: &str) -> Vec<(Uuid, i64, Vec<u8>)> {
    body.lines()
        .skip_while(|l| !l.is_empty())
        .skip(1)
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let chain = Uuid::parse_str(parts.next()?).ok()?;
            let seq = parts.next()?.parse().ok()?;
            let hash = hex::decode(parts.next()?).ok()?;
            Some((chain, seq, hash))
        })
        .collect()
}

#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = SqlUuid)]
    chain_id: Uuid,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
    #[diesel(sql_type = Bytea)]
    last_hash: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    signed_in: Option<i64>,
}

/// A checkpoint made, and the chains left out of it because they no longer continue
/// from what was signed before (tampered with: `server audit verify` says where).
#[derive(Debug, Clone)]
pub struct CheckpointRun {
    pub checkpoint: Option<Checkpoint>,
    pub refused: Vec<(Uuid, String)>,
}

/// Signs the heads of the chains that moved since their last signed head, and stores
/// the checkpoint (the caller ships it: the checkpoint file or the log). Before a head is
/// signed, the events since the chain's previous signed head (or its anchor, or its
/// start) are recomputed from it: a chain rewritten in the database is never signed.
pub async fn checkpoint(
    conn: &mut AsyncPgConnection,
    signer: &AuditSigner,
    now: OffsetDateTime,
) -> diesel::QueryResult<CheckpointRun> {
    seal_first(conn, "signing what is chained").await?;
    let moved: Vec<Moved> = diesel::sql_query(
        "SELECT c.chain_id, c.last_seq, c.last_hash, h.checkpoint_id AS signed_in FROM audit_chains c \
         LEFT JOIN LATERAL (SELECT seq, checkpoint_id FROM audit_checkpoint_heads \
                            WHERE chain_id = c.chain_id ORDER BY checkpoint_id DESC LIMIT 1) h ON true \
         WHERE c.last_seq > coalesce(h.seq, 0) ORDER BY c.chain_id",
    )
    .load(conn)
    .await?;
    let mut body = format!("fluxi-audit-checkpoint v1\nkey {}\nat {}\n\n", signer.key_id(), super::chain::micros(now));
    let mut refused = Vec::new();
    let mut signed = Vec::new();
    for m in moved {
        match super::verify::continues(conn, signer, m.chain_id, m.signed_in, m.last_seq, &m.last_hash).await? {
            Ok(()) => {
                body.push_str(&format!("{} {} {}\n", m.chain_id, m.last_seq, hex::encode(&m.last_hash)));
                signed.push(m);
            }
            Err(problem) => refused.push((m.chain_id, problem)),
        }
    }
    if signed.is_empty() {
        return Ok(CheckpointRun { checkpoint: None, refused });
    }
    let signature = signer.sign(body.as_bytes()).to_vec();
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let id: Id = diesel::sql_query(
        "INSERT INTO audit_checkpoints (created_at, body, signature) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Text, _>(&body)
    .bind::<Bytea, _>(&signature)
    .get_result(conn)
    .await?;
    for m in &signed {
        diesel::sql_query(
            "INSERT INTO audit_checkpoint_heads (chain_id, checkpoint_id, seq, hash) VALUES ($1, $2, $3, $4)",
        )
        .bind::<SqlUuid, _>(m.chain_id)
        .bind::<BigInt, _>(id.id)
        .bind::<BigInt, _>(m.last_seq)
        .bind::<Bytea, _>(&m.last_hash)
        .execute(conn)
        .await?;
    }
    Ok(CheckpointRun { checkpoint: Some(Checkpoint { id: id.id, created_at: now, body, signature }), refused })
}

/// What one pruning run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Another instance was pruning: this one did nothing.
    pub skipped: bool,
    pub periods: u32,
    pub events: u64,
    pub chains: u64,
    /// Pruning stopped: the rows to be anchored are not a clean stretch of their chain.
    pub refused: Option<String>,
}

#[derive(QueryableByName)]
struct Last {
    #[diesel(sql_type = SqlUuid)]
    chain_id: Uuid,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Bytea)]
    hash: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    events: i64,
    #[diesel(sql_type = BigInt)]
    first_seq: i64,
    #[diesel(sql_type = Timestamptz)]
    newest: OffsetDateTime,
}

/// Why the rows of a month about to be pruned cannot be anchored, if they cannot.
async fn inconsistent(
    c: &mut AsyncPgConnection,
    lasts: &[Last],
    end: OffsetDateTime,
) -> diesel::QueryResult<Option<String>> {
    #[derive(QueryableByName)]
    struct Around {
        #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
        anchor: Option<i64>,
        #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
        next: Option<i64>,
        #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
        head: Option<i64>,
    }
    for last in lasts {
        if last.newest >= end {
            return Ok(Some(format!("an event is dated after the end of its month ({})", last.newest)));
        }
        let around: Around = diesel::sql_query(
            "SELECT (SELECT seq FROM audit_anchors WHERE chain_id = $1) AS anchor, \
                    (SELECT min(seq) FROM audit_events WHERE chain_id = $1 AND occurred_at >= $2) AS next, \
                    (SELECT last_seq FROM audit_chains WHERE chain_id = $1) AS head",
        )
        .bind::<SqlUuid, _>(last.chain_id)
        .bind::<Timestamptz, _>(end)
        .get_result(c)
        .await?;
        if last.first_seq != around.anchor.unwrap_or(0) + 1 {
            return Ok(Some(format!("chain {} does not start at the event after its anchor", last.chain_id)));
        }
        let continues = match around.next {
            Some(next) => next == last.seq + 1,
            None => around.head == Some(last.seq),
        };
        if !continues || last.events != last.seq - last.first_seq + 1 {
            return Ok(Some(format!("chain {} has a gap or extra events around #{}", last.chain_id, last.seq)));
        }
    }
    Ok(None)
}

/// The signed text of an anchor.
pub(crate) fn anchor_message(chain: Uuid, seq: i64, hash: &[u8], pruned_before: OffsetDateTime) -> Vec<u8> {
    format!("fluxi-audit-anchor v1\n{chain} {seq} {} {}\n", hex::encode(hash), super::chain::micros(pruned_before))
        .into_bytes()
}

/// Drops every monthly partition that ends at least `retention` before now, oldest first.
/// For each chain it touched, the last removed event becomes the chain's signed anchor,
/// so what remains still verifies. Exactly one instance prunes at a time (an advisory
/// lock; the others skip), and each run that removed anything is itself an event.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    signer: &AuditSigner,
    clock: &dyn Clock,
    retention: Duration,
) -> diesel::QueryResult<PruneReport> {
    seal_first(conn, "pruning what is chained").await?;
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        async move {
            #[derive(QueryableByName)]
            struct Locked {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                locked: bool,
            }
            let lock: Locked = diesel::sql_query(format!("SELECT pg_try_advisory_xact_lock({PRUNE_LOCK_KEY}) AS locked"))
                .get_result(c)
                .await?;
            if !lock.locked {
                return Ok(PruneReport { skipped: true, ..Default::default() });
            }
            // Dropping a partition waits for writers of the parent table: give up rather
            // than stall them; the next run tries again.
            diesel::sql_query("SET LOCAL lock_timeout = '2s'").execute(c).await?;
            #[derive(QueryableByName)]
            struct Part {
                #[diesel(sql_type = Text)]
                name: String,
            }
            let parts: Vec<Part> = diesel::sql_query(
                "SELECT c.relname::text AS name FROM pg_catalog.pg_inherits i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'public.audit_events'::regclass ORDER BY 1",
            )
            .load(c)
            .await?;
            let cutoff = clock.now() - retention;
            let mut report = PruneReport::default();
            let mut chains = std::collections::HashSet::new();
            for part in parts {
                let Some(start) = parse_partition_name(&part.name) else { continue };
                let end = next_month(start);
                if end > cutoff {
                    continue;
                }
                let lasts: Vec<Last> = diesel::sql_query(format!(
                    // One pass to aggregate (no sort), then each chain's last event by index.
                    "SELECT g.chain_id, g.seq, e.hash, g.events, g.first_seq, g.newest FROM \
                       (SELECT chain_id, max(seq) AS seq, count(*) AS events, min(seq) AS first_seq, \
                               max(occurred_at) AS newest FROM public.{name} GROUP BY chain_id) g \
                     JOIN public.{name} e ON e.chain_id = g.chain_id AND e.seq = g.seq",
                    name = part.name
                ))
                .load(c)
                .await?;
                // An anchor is signed, so it must not be made from rows planted to hide
                // the rest of a chain: the month's rows must lie inside the month, start
                // where the chain's previous anchor ended and end where the rest goes on.
                if let Some(problem) = inconsistent(c, &lasts, end).await? {
                    tracing::error!(partition = %part.name, %problem, "audit pruning refused: the trail looks tampered with");
                    let audit = Audit::system(SystemJob::AuditMaintenance, clock);
                    let event = Event::account(None, Action::AuditPruned, Outcome::Failed, Detail::None);
                    audit.record(c, event).await?;
                    report.refused = Some(problem);
                    break;
                }
                for last in &lasts {
                    let signature = signer.sign(&anchor_message(last.chain_id, last.seq, &last.hash, end));
                    diesel::sql_query(
                        "INSERT INTO audit_anchors (chain_id, seq, hash, pruned_before, signature) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (chain_id) DO UPDATE \
                         SET seq = excluded.seq, hash = excluded.hash, pruned_before = excluded.pruned_before, \
                             signature = excluded.signature WHERE audit_anchors.seq < excluded.seq",
                    )
                    .bind::<SqlUuid, _>(last.chain_id)
                    .bind::<BigInt, _>(last.seq)
                    .bind::<Bytea, _>(&last.hash)
                    .bind::<Timestamptz, _>(end)
                    .bind::<Bytea, _>(signature.as_slice())
                    .execute(c)
                    .await?;
                    report.events += last.events as u64;
                    chains.insert(last.chain_id);
                }
                diesel::sql_query(format!("DROP TABLE public.{}", part.name)).execute(c).await?;
                report.periods += 1;
            }
            report.chains = chains.len() as u64;
            if report.periods > 0 {
                let audit = Audit::system(SystemJob::AuditMaintenance, clock);
                let detail = Detail::Pruned { events: report.events, chains: report.chains, periods: report.periods };
                audit.record(c, Event::account(None, Action::AuditPruned, Outcome::Succeeded, detail)).await?;
            }
            Ok(report)
        }
        .scope_boxed()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_month() {
        let at = time::macros::datetime!(2026-12-31 23:59 UTC);
        let start = month_start(at);
        assert_eq!(partition_name(start), "audit_events_p202612");
        assert_eq!(partition_name(next_month(start)), "audit_events_p202701");
        assert_eq!(parse_partition_name("audit_events_p202701"), Some(next_month(start)));
        assert_eq!(parse_partition_name("audit_events_p2027013"), None);
        assert_eq!(parse_partition_name("audit_events_default"), None);
        assert_eq!(sql_time(start), "2026-12-01 00:00:00+00");
    }
}
