//! `server audit verify`: recomputes chains and checks them against the signed anchors and
//! checkpoints, naming the first event that was edited, deleted, inserted or reordered.

use diesel::prelude::*;
use diesel::sql_types::{Bytea, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use uuid::Uuid;

use super::chain::{canonical_rest, event_hash, micros, GENESIS_HASH};
use super::maintenance::{anchor_message, parse_heads, Checkpoint};
use super::query::{audit_events, StoredEvent};
use super::AuditSigner;

/// Events read per query while walking a chain.
const BATCH: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub chain: Uuid,
    /// Events walked.
    pub events: u64,
    /// Position of the last event walked.
    pub last_seq: i64,
    /// The first problem found, in words; `None` when the chain is intact.
    pub problem: Option<String>,
    /// When the newest signed checkpoint that the chain matches was made.
    pub verified_through: Option<OffsetDateTime>,
    /// Events recorded but not yet sealed into the chain (in the inbox, not checked):
    /// verification only reads, so it can run on a replica or a restored copy.
    pub pending: i64,
}

#[derive(QueryableByName)]
struct CheckpointRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    created_at: OffsetDateTime,
    #[diesel(sql_type = Text)]
    body: String,
    #[diesel(sql_type = Bytea)]
    signature: Vec<u8>,
}

/// What the signed checkpoints say about one chain: `(checkpoint id, made at, seq, hash)`,
/// or the first checkpoint whose signature does not verify.
async fn vouched(
    conn: &mut AsyncPgConnection,
    signer: &AuditSigner,
    chain: Uuid,
    shipped: &[Checkpoint],
) -> QueryResult<Result<Vec<(i64, OffsetDateTime, i64, Vec<u8>)>, String>> {
    let mut rows: Vec<CheckpointRow> =
        diesel::sql_query("SELECT id, created_at, body, signature FROM audit_checkpoints ORDER BY id")
            .load(conn)
            .await?;
    // The copies shipped out of the database count too: deleting a checkpoint from the
    // database does not make what it vouched for go away.
    rows.extend(shipped.iter().map(|c| CheckpointRow {
        id: c.id,
        created_at: c.created_at,
        body: c.body.clone(),
        signature: c.signature.clone(),
    }));
    let mut out = Vec::new();
    for row in rows {
        if !signer.verify(row.body.as_bytes(), &row.signature) {
            return Ok(Err(format!("checkpoint #{} is not signed by this server's key (forged or altered)", row.id)));
        }
        for (c, seq, hash) in parse_heads(&row.body) {
            if c == chain {
                out.push((row.id, row.created_at, seq, hash));
            }
        }
    }
    Ok(Ok(out))
}

#[derive(QueryableByName)]
struct AnchorRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
    #[diesel(sql_type = Bytea)]
    hash: Vec<u8>,
    #[diesel(sql_type = Timestamptz)]
    pruned_before: OffsetDateTime,
    #[diesel(sql_type = Bytea)]
    signature: Vec<u8>,
}

#[derive(QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_seq: i64,
}

fn describe(e: &StoredEvent) -> String {
    format!("event #{} ({}, {})", e.seq, e.action, e.occurred_at)
}

/// Walks one chain from its anchor (or its start) to its head.
pub async fn verify_chain(conn: &mut AsyncPgConnection, signer: &AuditSigner, chain: Uuid) -> QueryResult<ChainReport> {
    verify_chain_with(conn, signer, chain, &[]).await
}

/// [`verify_chain`], also against checkpoints shipped out of the database (the
/// checkpoint file).
pub async fn verify_chain_with(
    conn: &mut AsyncPgConnection,
    signer: &AuditSigner,
    chain: Uuid,
    shipped: &[Checkpoint],
) -> QueryResult<ChainReport> {
    use crate::schema::audit_inbox;
    let pending = audit_inbox::table.filter(audit_inbox::chain_id.eq(chain)).count().get_result(conn).await?;
    let mut report = ChainReport { chain, events: 0, last_seq: 0, problem: None, verified_through: None, pending };
    let anchor: Option<AnchorRow> =
        diesel::sql_query("SELECT seq, hash, pruned_before, signature FROM audit_anchors WHERE chain_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(chain)
            .get_result(conn)
            .await
            .optional()?;
    let (mut prev, mut expected) = (GENESIS_HASH.to_vec(), 1i64);
    if let Some(a) = &anchor {
        if !signer.verify(&anchor_message(chain, a.seq, &a.hash, a.pruned_before), &a.signature) {
            report.problem = Some(format!("the pruning anchor at event #{} is not signed by this server's key", a.seq));
            return Ok(report);
        }
        prev = a.hash.clone();
        expected = a.seq + 1;
        report.last_seq = a.seq;
    }
    let checkpoints = match vouched(conn, signer, chain, shipped).await? {
        Ok(c) => c,
        Err(problem) => {
            report.problem = Some(problem);
            return Ok(report);
        }
    };
    // A forged copy of an event (same position) is found here, wherever it lies: the walk
    // below reads each position once.
    #[derive(QueryableByName)]
    struct Twice {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        seq: i64,
    }
    let twice: Option<Twice> = diesel::sql_query(
        "SELECT seq FROM audit_events WHERE chain_id = $1 GROUP BY seq HAVING count(*) > 1 ORDER BY seq LIMIT 1",
    )
    .bind::<diesel::sql_types::Uuid, _>(chain)
    .get_result(conn)
    .await
    .optional()?;
    if let Some(t) = twice {
        report.problem = Some(format!("event #{} appears twice (an event was inserted)", t.seq));
        return Ok(report);
    }
    let mut last_at: Option<OffsetDateTime> = None;
    let mut after = expected - 1;
    'walk: loop {
        let batch: Vec<StoredEvent> = audit_events::table
            .filter(audit_events::chain_id.eq(chain))
            .filter(audit_events::seq.gt(after))
            .order(audit_events::seq.asc())
            .limit(BATCH)
            .select(StoredEvent::as_select())
            .load(conn)
            .await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in &batch {
            if e.seq > expected {
                report.problem =
                    Some(format!("event #{expected} is missing (deleted); the chain goes on at #{}", e.seq));
                break 'walk;
            }
            if e.seq < expected {
                report.problem = Some(format!("{} appears twice (an event was inserted)", describe(e)));
                break 'walk;
            }
            let hash = event_hash(&prev, e.seq, micros(e.occurred_at), &canonical_rest(&e.fields()));
            if hash.as_slice() != e.hash.as_slice() {
                report.problem = Some(format!(
                    "{} does not follow from the event before it: it was edited, inserted or moved",
                    describe(e)
                ));
                break 'walk;
            }
            if last_at.is_some_and(|t| e.occurred_at < t) {
                report.problem = Some(format!("{} is older than the event before it (reordered)", describe(e)));
                break 'walk;
            }
            for (id, _, _, signed) in checkpoints.iter().filter(|(_, _, seq, _)| *seq == e.seq) {
                if signed != &e.hash {
                    report.problem = Some(format!(
                        "{} differs from signed checkpoint #{id}: the chain was rewritten after it",
                        describe(e)
                    ));
                    break 'walk;
                }
            }
            last_at = Some(e.occurred_at);
            prev = e.hash.clone();
            expected += 1;
            report.events += 1;
            report.last_seq = e.seq;
        }
    }
    if report.problem.is_none() {
        if let Some((id, _, seq, _)) = checkpoints.iter().find(|(_, _, seq, _)| *seq > report.last_seq) {
            report.problem = Some(format!(
                "events after #{} are missing: signed checkpoint #{id} vouches for events up to #{seq}",
                report.last_seq
            ));
        }
    }
    if report.problem.is_none() {
        let head: Option<HeadRow> = diesel::sql_query("SELECT last_seq FROM audit_chains WHERE chain_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(chain)
            .get_result(conn)
            .await
            .optional()?;
        if let Some(head) = head.filter(|h| h.last_seq > report.last_seq) {
            report.problem = Some(format!(
                "events after #{} are missing: the chain's head is at #{}",
                report.last_seq, head.last_seq
            ));
        }
    }
    if report.problem.is_none() {
        report.verified_through = checkpoints
            .iter()
            .filter(|(_, _, seq, _)| *seq <= report.last_seq && anchor.as_ref().is_none_or(|a| *seq > a.seq))
            .map(|(_, at, _, _)| *at)
            .max();
    }
    Ok(report)
}

/// Every chain, or one workspace's.
pub async fn verify(
    conn: &mut AsyncPgConnection,
    signer: &AuditSigner,
    only: Option<Uuid>,
    shipped: &[Checkpoint],
) -> QueryResult<Vec<ChainReport>> {
    let chains: Vec<Uuid> = match only {
        Some(chain) => vec![chain],
        None => {
            #[derive(QueryableByName)]
            struct C {
                #[diesel(sql_type = diesel::sql_types::Uuid)]
                chain_id: Uuid,
            }
            let rows: Vec<C> =
                diesel::sql_query("SELECT chain_id FROM audit_chains ORDER BY chain_id").load(conn).await?;
            rows.into_iter().map(|c| c.chain_id).collect()
        }
    };
    let mut reports = Vec::with_capacity(chains.len());
    for chain in chains {
        reports.push(verify_chain_with(conn, signer, chain, shipped).await?);
    }
    Ok(reports)
}

/// What the viewer shows above the table: cheap enough for every page view. The newest
/// signed checkpoint of the chain must verify and the event it names must still have the
/// signed hash; the full walk is `server audit verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    VerifiedThrough(OffsetDateTime),
    NotYetCheckpointed,
    Problem(String),
}

pub async fn status(conn: &mut AsyncPgConnection, signer: &AuditSigner, chain: Uuid) -> QueryResult<ChainStatus> {
    let newest: Option<CheckpointRow> = diesel::sql_query(
        "SELECT c.id, c.created_at, c.body, c.signature FROM audit_checkpoint_heads h \
         JOIN audit_checkpoints c ON c.id = h.checkpoint_id WHERE h.chain_id = $1 \
         ORDER BY h.checkpoint_id DESC LIMIT 1",
    )
    .bind::<diesel::sql_types::Uuid, _>(chain)
    .get_result(conn)
    .await
    .optional()?;
    let Some(row) = newest else { return Ok(ChainStatus::NotYetCheckpointed) };
    if !signer.verify(row.body.as_bytes(), &row.signature) {
        return Ok(ChainStatus::Problem(format!("checkpoint #{} is not signed by this server's key", row.id)));
    }
    let Some((_, seq, hash)) = parse_heads(&row.body).into_iter().find(|(c, _, _)| *c == chain) else {
        return Ok(ChainStatus::NotYetCheckpointed);
    };
    let stored: Option<Vec<u8>> = audit_events::table
        .filter(audit_events::chain_id.eq(chain))
        .filter(audit_events::seq.eq(seq))
        .select(audit_events::hash)
        .first(conn)
        .await
        .optional()?;
    // The time the checkpoint's signed text states, not the unsigned column beside it.
    let signed_at = row
        .body
        .lines()
        .find_map(|l| l.strip_prefix("at "))
        .and_then(|m| m.parse::<i128>().ok())
        .and_then(|micros| OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).ok())
        .unwrap_or(row.created_at);
    Ok(match stored {
        Some(h) if h == hash => ChainStatus::VerifiedThrough(signed_at),
        Some(_) => ChainStatus::Problem(format!("event #{seq} differs from the signed checkpoint")),
        None => {
            let anchored: Option<AnchorRow> =
                diesel::sql_query("SELECT seq, hash, pruned_before, signature FROM audit_anchors WHERE chain_id = $1")
                    .bind::<diesel::sql_types::Uuid, _>(chain)
                    .get_result(conn)
                    .await
                    .optional()?;
            match anchored {
                // Pruned since: the checkpoint speaks of events that are gone by design.
                Some(a) if a.seq >= seq => ChainStatus::NotYetCheckpointed,
                _ => ChainStatus::Problem(format!("event #{seq}, vouched for by a signed checkpoint, is missing")),
            }
        }
    })
}

/// Whether the chain runs on, event by event, from its last signed head (in checkpoint
/// `signed_in`), else its anchor, else its start, to `head_seq` with `head_hash`. The
/// checkpoint job asks before signing a head.
pub(crate) async fn continues(
    conn: &mut AsyncPgConnection,
    signer: &AuditSigner,
    chain: Uuid,
    signed_in: Option<i64>,
    head_seq: i64,
    head_hash: &[u8],
) -> QueryResult<Result<(), String>> {
    let (mut seq, mut prev) = (0i64, GENESIS_HASH.to_vec());
    if let Some(id) = signed_in {
        let row: CheckpointRow =
            diesel::sql_query("SELECT id, created_at, body, signature FROM audit_checkpoints WHERE id = $1")
                .bind::<diesel::sql_types::BigInt, _>(id)
                .get_result(conn)
                .await?;
        if !signer.verify(row.body.as_bytes(), &row.signature) {
            return Ok(Err(format!("checkpoint #{id} is not signed by this server's key")));
        }
        match parse_heads(&row.body).into_iter().find(|(c, _, _)| *c == chain) {
            Some((_, s, h)) => (seq, prev) = (s, h),
            None => return Ok(Err(format!("checkpoint #{id} does not name this chain"))),
        }
    }
    // No signed head, or pruned past it: the anchor is where the chain goes on.
    if let Some(a) =
        diesel::sql_query("SELECT seq, hash, pruned_before, signature FROM audit_anchors WHERE chain_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(chain)
            .get_result::<AnchorRow>(conn)
            .await
            .optional()?
    {
        if a.seq > seq {
            if !signer.verify(&anchor_message(chain, a.seq, &a.hash, a.pruned_before), &a.signature) {
                return Ok(Err("its pruning anchor is not signed by this server's key".into()));
            }
            (seq, prev) = (a.seq, a.hash);
        }
    }
    let mut last_at: Option<OffsetDateTime> = None;
    while seq < head_seq {
        let batch: Vec<StoredEvent> = audit_events::table
            .filter(audit_events::chain_id.eq(chain))
            .filter(audit_events::seq.gt(seq))
            .filter(audit_events::seq.le(head_seq))
            .order(audit_events::seq.asc())
            .limit(BATCH)
            .select(StoredEvent::as_select())
            .load(conn)
            .await?;
        if batch.is_empty() {
            return Ok(Err(format!("event #{} is missing", seq + 1)));
        }
        for e in &batch {
            if e.seq != seq + 1 {
                return Ok(Err(format!("event #{} is missing or appears twice", seq + 1)));
            }
            let hash = event_hash(&prev, e.seq, micros(e.occurred_at), &canonical_rest(&e.fields()));
            if hash.as_slice() != e.hash.as_slice() || last_at.is_some_and(|t| e.occurred_at < t) {
                return Ok(Err(format!("{} does not follow from the event before it", describe(e))));
            }
            (seq, prev, last_at) = (e.seq, e.hash.clone(), Some(e.occurred_at));
        }
    }
    if prev.as_slice() != head_hash {
        return Ok(Err("the chain's head does not match its last event".into()));
    }
    Ok(Ok(()))
}
