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
    let mut sealed = 0;
    for _ in 0..READER_BATCHES {
        match seal_batch(conn, chain, Busy::Wait).await {
            Ok(Some(n)) => {
                sealed += n;
                if n < SEAL_BATCH {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(%chain, error = %e, "sealing audit events before a read failed; reading what is chained");
                break;
            }
        }
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
        loop {
            match seal_batch(conn, chain, busy).await {
                Ok(Some(n)) => {
                    report.sealed += n;
                    if n < SEAL_BATCH {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    report.failed.push((chain, e.to_string()));
                    break;
                }
            }
        }
    }
    report
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

/// Appends one event to its chain under the chain's row lock (made on the chain's first
/// event).
async fn append(c: &mut AsyncPgConnection, row: &Pending) -> QueryResult<()> {
    let fields = super::ChainFields {
        chain_id: row.chain_id,
        workspace_id: row.workspace_id,
        account_id: row.account_id,
        actor_kind: &row.actor_kind,
        actor_id: row.actor_id,
        actor_email_pn: row.actor_email_pn.as_deref(),
        action: &row.action,
        target_kind: &row.target_kind,
        target_id: row.target_id,
        outcome: &row.outcome,
        request_id: row.request_id,
        network_pn: row.network_pn.as_deref(),
        agent_pn: row.agent_pn.as_deref(),
        pseudonym_epoch: row.pseudonym_epoch,
        detail: &row.detail,
    };
    let rest = super::canonical_rest(&fields);
    for _ in 0..2 {
        let statement = Append {
            chain: row.chain_id,
            at: row.occurred_at,
            rest: &rest,
            workspace: row.workspace_id,
            account: row.account_id,
            actor_kind: &row.actor_kind,
            actor_id: row.actor_id,
            email_pn: row.actor_email_pn.as_deref(),
            action: &row.action,
            group: &row.action_group,
            target_kind: &row.target_kind,
            target_id: row.target_id,
            outcome: &row.outcome,
            request_id: row.request_id,
            network_pn: row.network_pn.as_deref(),
            agent_pn: row.agent_pn.as_deref(),
            epoch: row.pseudonym_epoch,
            detail: &row.detail,
        };
        if statement.execute(c).await? == 1 {
            return Ok(());
        }
        // A chain's first event: make its head, then append.
        diesel::sql_query("INSERT INTO audit_chains (chain_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind::<SqlUuid, _>(row.chain_id)
            .execute(c)
            .await?;
    }
    Err(diesel::result::Error::NotFound)
}

/// The append, as one prepared statement: each value bound once, in order, in `p`.
/// (`diesel::sql_query` is never cached; planning this statement over the partitioned
/// table on every event cost more than the insert itself.)
struct Append<'q> {
    chain: Uuid,
    at: time::OffsetDateTime,
    rest: &'q [u8],
    workspace: Option<Uuid>,
    account: Option<Uuid>,
    actor_kind: &'q str,
    actor_id: Option<Uuid>,
    email_pn: Option<&'q [u8]>,
    action: &'q str,
    group: &'q str,
    target_kind: &'q str,
    target_id: Option<Uuid>,
    outcome: &'q str,
    request_id: Option<Uuid>,
    network_pn: Option<&'q [u8]>,
    agent_pn: Option<&'q [u8]>,
    epoch: Option<i32>,
    detail: &'q serde_json::Value,
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
        out.push_bind_param::<SqlUuid, _>(&self.chain)?;
        out.push_sql("::uuid AS chain, ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
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
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.workspace)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.account)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.actor_kind)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.actor_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Bytea>, _>(&self.email_pn)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.group)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.target_kind)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.target_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.outcome)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<SqlUuid>, _>(&self.request_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Bytea>, _>(&self.network_pn)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Bytea>, _>(&self.agent_pn)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Integer>, _>(&self.epoch)?;
        out.push_sql(", ");
        out.push_bind_param::<Jsonb, _>(self.detail)?;
        out.push_sql(", ev.hash FROM ev, p");
        Ok(())
    }
}
