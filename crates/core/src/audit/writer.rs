//! The one writer of audit events.

use diesel::ExpressionMethods;
use diesel_async::{AsyncConnectionCore, AsyncPgConnection, RunQueryDsl};
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

    /// Runs `statement`, one of the action's (on a shared borrow of `conn`), and records
    /// `event` behind it in the same round trip once both statements are prepared on this
    /// connection: PostgreSQL runs them in that order, in the caller's transaction, and the
    /// action waits for no extra answer. If `statement` fails, so does the record (the
    /// transaction is aborted) and `statement`'s error is returned.
    pub async fn record_behind<T>(
        &self,
        conn: &AsyncPgConnection,
        statement: impl std::future::Future<Output = diesel::QueryResult<T>>,
        event: Event,
    ) -> diesel::QueryResult<T> {
        let mut shared = conn;
        let (value, ()) = futures_util::try_join!(statement, self.record(&mut shared, event))?;
        Ok(value)
    }

    /// Records `event` in one statement on `conn`: inside the caller's transaction it
    /// commits or rolls back with the action. The event goes to the inbox, not yet to its
    /// chain: no chain lock is taken, so audited actions of one workspace (or every
    /// sign-in, on the account chain) never queue behind each other; the sealer
    /// (`seal.rs`) chains it after the commit, and before any read of its chain. On a
    /// shared connection (`&AsyncPgConnection`) it can be pipelined behind another
    /// statement ([`Audit::record_behind`]).
    pub async fn record<C>(&self, conn: &mut C, event: Event) -> diesel::QueryResult<()>
    where
        C: AsyncConnectionCore<Backend = diesel::pg::Pg> + Send,
    {
        use crate::schema::audit_inbox::dsl as inbox;
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
        diesel::insert_into(inbox::audit_inbox)
            .values((
                inbox::chain_id.eq(event.chain),
                inbox::occurred_at.eq(self.clock.now()),
                inbox::workspace_id.eq(event.workspace),
                inbox::account_id.eq(event.account),
                inbox::actor_kind.eq(self.actor.kind()),
                inbox::actor_id.eq(actor_id),
                inbox::actor_email_pn.eq(email_pn),
                inbox::action.eq(event.action.name()),
                inbox::action_group.eq(event.action.group().name()),
                inbox::target_kind.eq(event.target.kind()),
                inbox::target_id.eq(event.target.id()),
                inbox::outcome.eq(event.outcome.name()),
                inbox::request_id.eq(self.origin.request_id),
                inbox::network_pn.eq(network_pn),
                inbox::agent_pn.eq(agent_pn),
                inbox::pseudonym_epoch.eq(epoch),
                inbox::detail.eq(detail),
            ))
            .execute(conn)
            .await?;
        Ok(())
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
