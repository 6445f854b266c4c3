//! The one writer of audit events.

use diesel::sql_types::{Bytea, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Actor, Event, AGENT_PURPOSE, EMAIL_PURPOSE, NETWORK_PURPOSE};
use crate::clock::Clock;
use crate::pseudonym::PseudonymKeys;

/// The chain of account-level events (no workspace).
pub const ACCOUNT_CHAIN: Uuid = Uuid::nil();

/// Longest user agent pseudonymized (longer ones are cut): bounds the work a client can
/// cause, and no real browser sends more.
const AGENT_MAX_BYTES: usize = 512;

/// Where a request came from, in clear; the writer stores only pseudonyms of it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<Uuid>,
    /// The client network (`crate::client::client_network`).
    pub network: Option<String>,
    pub user_agent: Option<String>,
}

impl Origin {
    /// No request: background jobs, and domain calls outside one.
    pub const NONE: Origin = Origin { request_id: None, network: None, user_agent: None };
}

/// Everything the writer needs besides the event: the keys, the clock, where the request
/// came from and who is acting.
#[derive(Clone, Copy)]
pub struct Audit<'a> {
    /// `None` only for system jobs, whose events carry no personal identifier.
    pub keys: Option<&'a PseudonymKeys>,
    pub clock: &'a dyn Clock,
    pub origin: &'a Origin,
    pub actor: Actor<'a>,
    /// Keeps repeated refusals from writing an event each (see [`RepeatFilter`]); `None`
    /// records every one.
    pub repeats: Option<&'a RepeatFilter>,
}

/// Refusals that cost an attacker nothing (a throttled sign-in, a non-member's request
/// for a workspace) are recorded once per key and window per server, not once per
/// request: otherwise a loop of such requests writes without limit into a chain whose
/// head every other writer of that chain waits for. Memory is bounded.
#[derive(Debug)]
pub struct RepeatFilter {
    window: time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<Vec<u8>, time::OffsetDateTime>>,
}

/// Keys remembered at most; beyond, the oldest half is forgotten.
const REPEAT_KEYS: usize = 100_000;

impl RepeatFilter {
    pub fn new(window: time::Duration) -> Self {
        Self { window, seen: Default::default() }
    }

    /// Whether an event for `key` at `now` is the first of its window (and remember it).
    pub fn is_first(&self, key: &[u8], now: time::OffsetDateTime) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(key).is_some_and(|at| now - *at < self.window) {
            return false;
        }
        if seen.len() >= REPEAT_KEYS {
            let window = self.window;
            seen.retain(|_, at| now - *at < window);
            if seen.len() >= REPEAT_KEYS / 2 {
                seen.clear();
            }
        }
        seen.insert(key.to_vec(), now);
        true
    }
}

impl Default for RepeatFilter {
    fn default() -> Self {
        Self::new(time::Duration::minutes(1))
    }
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

impl<'a> Audit<'a> {
    /// The same context with another actor (a sign-in learns who it is only at the end).
    /// A background job acting on its own: no request, no pseudonyms.
    pub fn system(job: super::SystemJob, clock: &'a dyn Clock) -> Audit<'a> {
        Audit { keys: None, clock, origin: &Origin::NONE, actor: Actor::System(job), repeats: None }
    }

    pub fn as_actor<'b>(&self, actor: Actor<'b>) -> Audit<'b>
    where
        'a: 'b,
    {
        Audit { keys: self.keys, clock: self.clock, origin: self.origin, actor, repeats: self.repeats }
    }

    /// [`Audit::record`], unless an event with this `key` was recorded within the
    /// repeat filter's window.
    pub async fn record_unless_repeated(
        &self,
        conn: &mut AsyncPgConnection,
        key: &[u8],
        event: Event,
    ) -> diesel::QueryResult<()> {
        if let Some(filter) = self.repeats {
            if !filter.is_first(key, self.clock.now()) {
                return Ok(());
            }
        }
        self.record(conn, event).await
    }

    /// Appends `event` to its chain, in one statement on `conn`: inside the caller's
    /// transaction it commits or rolls back with the action. The chain's row stays locked
    /// until then, so callers record last, after their own locks (lock order: workspace
    /// row, memberships, then the chain).
    pub async fn record(&self, conn: &mut AsyncPgConnection, event: Event) -> diesel::QueryResult<()> {
        let (actor_id, email) = match self.actor {
            Actor::User { id, email_normalized } => (Some(id), Some(email_normalized)),
            Actor::Anonymous { email_normalized } => (None, email_normalized),
            Actor::System(_) => (None, None),
        };
        let keys = self.keys.map(|k| (k.current_epoch(), k.current()));
        let pseudonym = |purpose: &str, value: Option<&str>| Some(keys?.1.pseudonym(purpose, value?));
        let email_pn = pseudonym(EMAIL_PURPOSE, email);
        let network_pn = pseudonym(NETWORK_PURPOSE, self.origin.network.as_deref());
        let agent_pn = pseudonym(AGENT_PURPOSE, self.origin.user_agent.as_deref().map(truncate));
        let epoch = keys.filter(|_| email_pn.is_some() || network_pn.is_some() || agent_pn.is_some()).map(|k| k.0);
        let detail =
            serde_json::to_value(&event.detail).map_err(|e| diesel::result::Error::SerializationError(e.into()))?;
        let fields = super::ChainFields {
            chain_id: event.chain,
            workspace_id: event.workspace,
            account_id: event.account,
            actor_kind: self.actor.kind(),
            actor_id,
            actor_email_pn: email_pn.as_deref(),
            action: event.action.name(),
            target_kind: event.target.kind(),
            target_id: event.target.id(),
            outcome: event.outcome.name(),
            request_id: self.origin.request_id,
            network_pn: network_pn.as_deref(),
            agent_pn: agent_pn.as_deref(),
            pseudonym_epoch: epoch,
            detail: &detail,
        };
        let rest = super::canonical_rest(&fields);
        for _ in 0..2 {
            let append = Append {
                chain: event.chain,
                at: self.clock.now(),
                rest: &rest,
                workspace: event.workspace,
                account: event.account,
                actor_kind: fields.actor_kind,
                actor_id,
                email_pn: email_pn.as_deref(),
                action: fields.action,
                group: event.action.group().name(),
                target_kind: fields.target_kind,
                target_id: fields.target_id,
                outcome: fields.outcome,
                request_id: self.origin.request_id,
                network_pn: network_pn.as_deref(),
                agent_pn: agent_pn.as_deref(),
                epoch,
                detail: &detail,
            };
            let appended = append.execute(conn).await?;
            if appended == 1 {
                return Ok(());
            }
            // A chain's first event: make its head, then append.
            diesel::sql_query("INSERT INTO audit_chains (chain_id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind::<SqlUuid, _>(event.chain)
                .execute(conn)
                .await?;
        }
        Err(diesel::result::Error::NotFound)
    }
}

fn truncate(agent: &str) -> &str {
    if agent.len() <= AGENT_MAX_BYTES {
        return agent;
    }
    let mut end = AGENT_MAX_BYTES;
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    &agent[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_pass_once_per_window_and_memory_stays_bounded() {
        let f = RepeatFilter::new(time::Duration::minutes(1));
        let t = time::OffsetDateTime::UNIX_EPOCH;
        assert!(f.is_first(b"a", t));
        assert!(!f.is_first(b"a", t + time::Duration::seconds(59)));
        assert!(f.is_first(b"b", t));
        assert!(f.is_first(b"a", t + time::Duration::seconds(61)));
        for i in 0..(REPEAT_KEYS as u32 + 10) {
            f.is_first(&i.to_le_bytes(), t);
        }
        assert!(f.seen.lock().unwrap().len() <= REPEAT_KEYS);
    }

    #[test]
    fn long_user_agents_are_cut_at_a_character_boundary() {
        let agent = "é".repeat(400);
        let cut = truncate(&agent);
        assert!(cut.len() <= AGENT_MAX_BYTES && agent.starts_with(cut));
    }
}
