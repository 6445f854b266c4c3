//! The sealer: moves recorded events from the inbox into their hash chains.
//!
//! Actions record into `audit_inbox` (see [`super::Audit::record`]); sealing deletes
//! committed inbox rows and appends each to its chain, in the order recorded, in one
//! transaction — an event is in the inbox or in its chain, never both or neither. The
//! server seals every second (`server/src/jobs/audit.rs`), and every read of a chain seals
//! that chain first, so a reader sees every event committed before the read began.

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

/// Events sealed per transaction by the background round.
pub const SEAL_ROUND_LIMIT: usize = 1_000;

/// Seals every committed event of `chain`. Waits for a concurrent sealer of the same rows
/// rather than skipping them, so what the caller reads next includes them.
pub async fn seal_chain(conn: &mut AsyncPgConnection, chain: Uuid) -> QueryResult<usize> {
    let pending: bool = diesel::select(diesel::dsl::exists(audit_inbox::table.filter(audit_inbox::chain_id.eq(chain))))
        .get_result(conn)
        .await?;
    if !pending {
        return Ok(0);
    }
    conn.transaction(|c| {
        async move {
            let rows = diesel::delete(audit_inbox::table.filter(audit_inbox::chain_id.eq(chain)))
                .returning(Pending::as_returning())
                .get_results(c)
                .await?;
            append_all(c, rows).await
        }
        .scope_boxed()
    })
    .await
}

/// Seals every chain's pending events: what a reader of several chains (checkpoints,
/// pruning) calls first.
pub async fn seal_all(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    let chains: Vec<Uuid> = audit_inbox::table.select(audit_inbox::chain_id).distinct().load(conn).await?;
    let mut sealed = 0;
    for chain in chains {
        sealed += seal_chain(conn, chain).await?;
    }
    Ok(sealed)
}

/// One round of the background sealer: up to [`SEAL_ROUND_LIMIT`] committed events of any
/// chains, skipping rows another sealer holds. Returns how many it sealed.
pub async fn seal_round(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
    conn.transaction(|c| {
        async move {
            let keys: Vec<(Uuid, i64)> = audit_inbox::table
                .select((audit_inbox::chain_id, audit_inbox::id))
                .order(audit_inbox::id)
                .limit(SEAL_ROUND_LIMIT as i64)
                .for_update()
                .skip_locked()
                .load(c)
                .await?;
            if keys.is_empty() {
                return Ok(0);
            }
            let ids: Vec<i64> = keys.iter().map(|k| k.1).collect();
            let rows = diesel::delete(audit_inbox::table.filter(audit_inbox::id.eq_any(ids)))
                .returning(Pending::as_returning())
                .get_results(c)
                .await?;
            append_all(c, rows).await
        }
        .scope_boxed()
    })
    .await
}

/// Appends `rows` to their chains in the order they were recorded. A row whose month has
/// no partition yet (a clock far ahead) gets one made, once.
async fn append_all(c: &mut AsyncPgConnection, mut rows: Vec<Pending>) -> QueryResult<usize> {
    rows.sort_by_key(|r| (r.chain_id, r.id));
    if let (Some(from), Some(until)) =
        (rows.iter().map(|r| r.occurred_at).min(), rows.iter().map(|r| r.occurred_at).max())
    {
        if !partitions_cover(c, from, until).await? {
            super::maintenance::ensure_partitions(c, from, until).await?;
        }
    }
    for row in &rows {
        append(c, row).await?;
    }
    Ok(rows.len())
}

/// Whether `audit_events` has partitions for the months of `from` and `until`.
async fn partitions_cover(c: &mut AsyncPgConnection, from: OffsetDateTime, until: OffsetDateTime) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Covered {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        covered: bool,
    }
    let names = [super::maintenance::partition_name_at(from), super::maintenance::partition_name_at(until)];
    let row: Covered = diesel::sql_query(
        "SELECT to_regclass('public.' || $1) IS NOT NULL AND to_regclass('public.' || $2) IS NOT NULL AS covered",
    )
    .bind::<Text, _>(&names[0])
    .bind::<Text, _>(&names[1])
    .get_result(c)
    .await?;
    Ok(row.covered)
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
