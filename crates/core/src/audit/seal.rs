//! The sealer: moves recorded events from the inbox into their hash chains.
//!
//! Actions record into `audit_inbox` (see [`super::Audit::record`]); sealing deletes
//! committed inbox rows and appends each to its chain, in id order, in one transaction —
//! an event is in the inbox or in its chain, never both or neither. The server seals
//! every second (`server/src/jobs/audit.rs`), and every read of a chain seals that chain
//! first, so a reader sees every event committed before the read began. Each chain is
//! sealed in transactions of its own: a chain that fails (say, an event dated in a month
//! without a partition) holds up no other.

use diesel::prelude::*;
use diesel::sql_types::{Bytea, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::schema::audit_inbox;

/// A recorded event waiting in the inbox.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = audit_inbox)]
struct Pending {
    id: i64,
    chain_id: Uuid,
    occurred_at: OffsetDateTime,
    workspace_id: Option<Uuid>,
    account_id: Option<Uuid>,
    actor_kind: String,
    actor_id: Option<Uuid>,
    actor_email_pn: Option<Vec<u8>>,
    action: String,
    action_group: String,
    target_kind: String,
    target_id: Option<Uuid>,
    outcome: String,
    request_id: Option<Uuid>,
    network_pn: Option<Vec<u8>>,
    agent_pn: Option<Vec<u8>>,
    pseudonym_epoch: Option<i32>,
    detail: serde_json::Value,
}

/// Events sealed per transaction.
pub const SEAL_BATCH: usize = 1_000;

/// Batches a reader seals before it reads anyway: a larger backlog (a sealer stopped for
/// long) is the background rounds' work, not one request's.
const READER_BATCHES: usize = 10;

/// Whether to wait for a chain another sealer holds (readers, who must see its events) or
/// to skip it (background rounds, which come back a second later).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Busy {
    Wait,
    Skip,
}

/// What a round of sealing did.
#[derive(Debug, Default)]
pub struct SealReport {
    pub sealed: usize,
    /// Chains whose batch failed (rolled back; their events wait in the inbox), and why.
    pub failed: Vec<(Uuid, String)>,
}

/// Seals the committed events of `chain` before a read of it, so the read includes every
/// event committed before it began: waits for a concurrent sealer of the chain rather
/// than skipping it. A failure is logged, not returned: the reader then reads what is
/// chained. Inside an outer transaction the chain's head stays locked until that commits,
/// so callers seal outside one.
pub async fn seal_chain(conn: &mut AsyncPgConnection, chain: Uuid) -> usize {
    let pending = diesel::select(diesel::dsl::exists(audit_inbox::table.filter(audit_inbox::chain_id.eq(chain))))
        .get_result::<bool>(conn)
        .await;
    if !matches!(pending, Ok(true)) {
        return 0;
    }
    let (sealed, failed) = seal_batches(conn, chain, Busy::Wait, READER_BATCHES).await;
    if let Some(e) = failed {
        tracing::error!(%chain, error = %e, "sealing audit events before a read failed; reading what is chained");
    }
    sealed
}

/// Seals every chain's pending events, waiting for chains other sealers hold: what a
/// reader of all chains (checkpoints, pruning) calls first. A chain that fails is
/// reported and the others are still sealed.
pub async fn seal_all(conn: &mut AsyncPgConnection) -> QueryResult<SealReport> {
    let chains = pending_chains(conn).await?;
    Ok(seal_chains(conn, chains, Busy::Wait).await)
}

/// One round of the background sealer: every chain with pending events but those in
/// `held_back` (chains that failed lately) and those another sealer holds, each in
/// batches of its own transaction, so one chain's failure or backlog holds up no other.
pub async fn seal_round(
    conn: &mut AsyncPgConnection,
    held_back: &std::collections::HashSet<Uuid>,
) -> QueryResult<SealReport> {
    let mut chains = pending_chains(conn).await?;
    chains.retain(|c| !held_back.contains(c));
    Ok(seal_chains(conn, chains, Busy::Skip).await)
}

async fn pending_chains(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Uuid>> {
    audit_inbox::table.select(audit_inbox::chain_id).distinct().load(conn).await
}

async fn seal_chains(conn: &mut AsyncPgConnection, chains: Vec<Uuid>, busy: Busy) -> SealReport {
    let mut report = SealReport::default();
    for chain in chains {
        let (sealed, failed) = seal_batches(conn, chain, busy, usize::MAX).await;
        report.sealed += sealed;
        report.failed.extend(failed.map(|e| (chain, e.to_string())));
    }
    report
}

/// Seals `chain` batch after batch, at most `max_batches`, until one is not full, the
/// chain is skipped, or a batch fails (that batch rolled back, the error returned).
async fn seal_batches(
    conn: &mut AsyncPgConnection,
    chain: Uuid,
    busy: Busy,
    max_batches: usize,
) -> (usize, Option<diesel::result::Error>) {
    let mut sealed = 0;
    for _ in 0..max_batches {
        match seal_batch(conn, chain, busy).await {
            Ok(Some(n)) => {
                sealed += n;
                if n < SEAL_BATCH {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return (sealed, Some(e)),
        }
    }
    (sealed, None)
}

/// Seals up to [`SEAL_BATCH`] of `chain`'s committed events, oldest first, in one
/// transaction under the chain head's lock (every sealer takes it before touching the
/// chain's inbox rows, so no two seal the same row). `None`: skipped, another sealer
/// holds the chain.
async fn seal_batch(conn: &mut AsyncPgConnection, chain: Uuid, busy: Busy) -> QueryResult<Option<usize>> {
    use crate::schema::audit_chains;
    // A chain's first event: its head, to lock.
    diesel::insert_into(audit_chains::table)
        .values(audit_chains::chain_id.eq(chain))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    conn.transaction(|c| {
        async move {
            let head = audit_chains::table.find(chain).select(audit_chains::chain_id).for_update();
            let locked: Vec<Uuid> = match busy {
                Busy::Wait => head.load(c).await?,
                Busy::Skip => head.skip_locked().load(c).await?,
            };
            if locked.is_empty() {
                return Ok(None);
            }
            let ids: Vec<i64> = audit_inbox::table
                .filter(audit_inbox::chain_id.eq(chain))
                .order(audit_inbox::id)
                .limit(SEAL_BATCH as i64)
                .select(audit_inbox::id)
                .load(c)
                .await?;
            let mut rows = diesel::delete(
                audit_inbox::table.filter(audit_inbox::chain_id.eq(chain)).filter(audit_inbox::id.eq_any(ids)),
            )
            .returning(Pending::as_returning())
            .get_results(c)
            .await?;
            rows.sort_by_key(|r| r.id);
            for row in &rows {
                append(c, row).await?;
            }
            Ok(Some(rows.len()))
        }
        .scope_boxed()
    })
    .await
}

impl Pending {
    fn fields(&self) -> super::ChainFields<'_> {
        super::ChainFields {
            chain_id: self.chain_id,
            workspace_id: self.workspace_id,
            account_id: self.account_id,
            actor_kind: &self.actor_kind,
            actor_id: self.actor_id,
            actor_email_pn: self.actor_email_pn.as_deref(),
            action: &self.action,
            target_kind: &self.target_kind,
            target_id: self.target_id,
            outcome: &self.outcome,
            request_id: self.request_id,
            network_pn: self.network_pn.as_deref(),
            agent_pn: self.agent_pn.as_deref(),
            pseudonym_epoch: self.pseudonym_epoch,
            detail: &self.detail,
        }
    }
}

/// Appends one event to its chain, whose head the caller has made and locked.
async fn append(c: &mut AsyncPgConnection, row: &Pending) -> QueryResult<()> {
    let rest = super::canonical_rest(&row.fields());
    match (Append { row, rest: &rest }).execute(c).await? {
        1 => Ok(()),
        _ => Err(diesel::result::Error::NotFound),
    }
}

/// The append, as one prepared statement: each value bound once, in order, in `p`.
/// (`diesel::sql_query` is never cached; planning this statement over the partitioned
/// table on every event cost more than the insert itself.)
struct Append<'q> {
    row: &'q Pending,
    /// The canonical encoding of the row's fields but seq and time.
    rest: &'q [u8],
}

impl diesel::query_builder::QueryId for Append<'_> {
    type QueryId = Append<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for Append<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        out.push_sql("WITH p AS (SELECT ");
        out.push_bind_param::<SqlUuid, _>(&self.row.chain_id)?;
        out.push_sql("::uuid AS chain, ");
        out.push_bind_param::<Timestamptz, _>(&self.row.occurred_at)?;
        out.push_sql("::timestamptz AS at, ");
        out.push_bind_param::<Bytea, _>(&self.rest)?;
        out.push_sql(
            "::bytea AS rest), \
             head AS (SELECT c.last_seq + 1 AS seq, greatest(p.at, c.last_at) AS at, c.last_hash AS prev \
                      FROM audit_chains c, p WHERE c.chain_id = p.chain FOR UPDATE OF c), \
             ev AS (SELECT head.seq, head.at, sha256(head.prev || int8send(head.seq) \
                      || int8send((extract(epoch FROM head.at) * 1000000)::bigint) || p.rest) AS hash FROM head, p), \
             moved AS (UPDATE audit_chains c SET last_seq = ev.seq, last_hash = ev.hash, last_at = ev.at \
                      FROM ev, p WHERE c.chain_id = p.chain) \
             INSERT INTO audit_events (chain_id, seq, occurred_at, workspace_id, account_id, actor_kind, actor_id, \
                 actor_email_pn, action, action_group, target_kind, target_id, outcome, request_id, network_pn, \
                 agent_pn, pseudonym_epoch, detail, hash) \
             SELECT p.chain, ev.seq, ev.at, ",
        );
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.row.workspace_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.row.account_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.row.actor_kind)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.row.actor_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Bytea>, _>(&self.row.actor_email_pn)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.row.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.row.action_group)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.row.target_kind)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.row.target_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.row.outcome)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.row.request_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Bytea>, _>(&self.row.network_pn)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Bytea>, _>(&self.row.agent_pn)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Integer>, _>(&self.row.pseudonym_epoch)?;
        out.push_sql(", ");
        out.push_bind_param::<Jsonb, _>(&self.row.detail)?;
        out.push_sql(", ev.hash FROM ev, p");
        Ok(())
    }
}
