//! Reading the trail: who may, the viewer's filters, keyset pages, the daily chart.
//!
//! Every read goes through an [`AuditReader`], made only from a workspace access that may
//! `ViewAudit`, or for one's own account: the chain (and, for accounts, the account) is
//! fixed by it, so no filter can reach another workspace's rows.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::{Action, ActionGroup, FilterUsed, Outcome, ACCOUNT_CHAIN, EMAIL_PURPOSE, NETWORK_PURPOSE};
use crate::pseudonym::PseudonymKeys;
use crate::schema::users;
use crate::workspaces::{Permission, WorkspaceAccess, WorkspaceError};

/// Partitioned by month (the partitions are left out of `crate::schema`). (chain_id,
/// seq) is unique by construction: the sealer appends under the chain's row lock.
pub use crate::schema::audit_events;

/// Events per page.
pub const PAGE_SIZE: i64 = 50;
/// The longest date window a filter or export may span.
pub const MAX_WINDOW_DAYS: i64 = 3 * 366;
/// Days the chart shows.
pub const CHART_DAYS: i64 = 30;

/// The right to read one chain (and, for an account, only its own events).
#[derive(Debug, Clone)]
pub struct AuditReader {
    chain: Uuid,
    account: Option<Uuid>,
    workspace: Option<Uuid>,
}

impl AuditReader {
    /// A workspace's owners and admins read its trail; everyone else is refused.
    pub fn for_workspace(access: &WorkspaceAccess) -> Result<Self, WorkspaceError> {
        access.require(Permission::ViewAudit)?;
        Ok(Self { chain: access.workspace_id(), account: None, workspace: Some(access.workspace_id()) })
    }

    /// A person reads their own account-level events.
    pub fn for_account(user_id: Uuid) -> Self {
        Self { chain: ACCOUNT_CHAIN, account: Some(user_id), workspace: None }
    }

    pub fn chain(&self) -> Uuid {
        self.chain
    }
    pub fn workspace(&self) -> Option<Uuid> {
        self.workspace
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionFilter {
    One(Action),
    Group(ActionGroup),
}

impl ActionFilter {
    /// `group:<name>` or an action's name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.strip_prefix("group:") {
            Some(group) => ActionGroup::parse(group).map(Self::Group),
            None => Action::parse(raw).map(Self::One),
        }
    }
    pub fn as_param(self) -> String {
        match self {
            Self::One(a) => a.name().to_string(),
            Self::Group(g) => format!("group:{}", g.name()),
        }
    }
}

/// What the "Actor" box resolved to. Emails and addresses become pseudonyms in every
/// epoch whose key the server holds; names become the accounts that have them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorFilter {
    Accounts(Vec<Uuid>),
    EmailPseudonyms(Vec<Vec<u8>>),
    NetworkPseudonyms(Vec<Vec<u8>>),
}

/// A parsed, validated filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub action: Option<ActionFilter>,
    pub actor: Option<ActorFilter>,
    /// Inclusive start and exclusive end.
    pub from: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub outcome: Option<Outcome>,
}

impl Filter {
    pub fn used(&self) -> FilterUsed {
        FilterUsed {
            action: self.action.is_some(),
            actor: self.actor.is_some(),
            dates: self.from.is_some() || self.until.is_some(),
            outcome: self.outcome.is_some(),
        }
    }
}

/// Why a filter or cursor was refused; each message is user-facing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("Choose an action from the list.")]
    UnknownAction,
    #[error("Choose an outcome from the list.")]
    UnknownOutcome,
    #[error("Enter dates as YYYY-MM-DD.")]
    BadDate,
    #[error("That date is out of range.")]
    DateOutOfRange,
    #[error("\"From\" must not be after \"To\".")]
    DatesReversed,
    #[error("Choose a window of at most three years.")]
    WindowTooLong,
    #[error("The actor filter is too long.")]
    ActorTooLong,
    #[error("The actor filter cannot contain control characters.")]
    ActorInvalid,
    #[error("This page link is not valid. Start again from the newest events.")]
    BadCursor,
}

/// The form's raw values.
#[derive(Debug, Clone, Default)]
pub struct RawFilter<'a> {
    pub action: &'a str,
    pub actor: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub outcome: &'a str,
}

fn parse_day(raw: &str) -> Result<Option<time::Date>, FilterError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(raw, &format).map_err(|_| FilterError::BadDate)?;
    if day.year() < 2000 || day.year() > 9000 {
        return Err(FilterError::DateOutOfRange);
    }
    Ok(Some(day))
}

/// Parses and resolves the viewer's form. Dates are whole UTC days, "To" inclusive.
pub async fn parse_filter(
    conn: &mut AsyncPgConnection,
    keys: &PseudonymKeys,
    raw: &RawFilter<'_>,
) -> Result<Result<Filter, FilterError>, diesel::result::Error> {
    let action = match raw.action.trim() {
        "" => None,
        a => match ActionFilter::parse(a) {
            Some(a) => Some(a),
            None => return Ok(Err(FilterError::UnknownAction)),
        },
    };
    let outcome = match raw.outcome.trim() {
        "" => None,
        o => match Outcome::parse(o) {
            Some(o) => Some(o),
            None => return Ok(Err(FilterError::UnknownOutcome)),
        },
    };
    let (from, to) = match (parse_day(raw.from), parse_day(raw.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
    };
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Ok(Err(FilterError::DatesReversed));
        }
        if (t - f).whole_days() > MAX_WINDOW_DAYS {
            return Ok(Err(FilterError::WindowTooLong));
        }
    }
    let actor = raw.actor.trim();
    if actor.chars().count() > 254 {
        return Ok(Err(FilterError::ActorTooLong));
    }
    if actor.chars().any(char::is_control) {
        return Ok(Err(FilterError::ActorInvalid));
    }
    let actor = if actor.is_empty() { None } else { Some(resolve_actor(conn, keys, actor).await?) };
    Ok(Ok(Filter {
        action,
        actor,
        from: from.map(|d| d.midnight().assume_utc()),
        until: to.map(|d| d.midnight().assume_utc() + Duration::days(1)),
        outcome,
    }))
}

async fn resolve_actor(conn: &mut AsyncPgConnection, keys: &PseudonymKeys, text: &str) -> QueryResult<ActorFilter> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        let network = crate::client::client_network(ip);
        return Ok(ActorFilter::NetworkPseudonyms(
            keys.in_every_epoch(NETWORK_PURPOSE, &network).into_iter().map(|(_, p)| p).collect(),
        ));
    }
    if text.contains('@') {
        let normalized = crate::accounts::normalize_email(text);
        return Ok(ActorFilter::EmailPseudonyms(
            keys.in_every_epoch(EMAIL_PURPOSE, &normalized).into_iter().map(|(_, p)| p).collect(),
        ));
    }
    let ids: Vec<Uuid> = users::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(display_name) = lower(").bind::<Text, _>(text).sql(")"),
        )
        .select(users::id)
        .limit(100)
        .load(conn)
        .await?;
    Ok(ActorFilter::Accounts(ids))
}

/// Where a page starts: the newest events, or before/after an event's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Newest,
    Before(i64),
    After(i64),
}

impl Cursor {
    /// `before=N` / `after=N` from the address; anything else that is not empty is refused.
    pub fn parse(before: &str, after: &str) -> Result<Self, FilterError> {
        let num = |s: &str| s.trim().parse::<i64>().ok().filter(|n| *n > 0).ok_or(FilterError::BadCursor);
        match (before.trim(), after.trim()) {
            ("", "") => Ok(Cursor::Newest),
            (b, "") => Ok(Cursor::Before(num(b)?)),
            ("", a) => Ok(Cursor::After(num(a)?)),
            _ => Err(FilterError::BadCursor),
        }
    }
}

/// One stored event, as read.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct StoredEvent {
    pub chain_id: Uuid,
    pub seq: i64,
    pub occurred_at: OffsetDateTime,
    pub workspace_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub actor_kind: String,
    pub actor_id: Option<Uuid>,
    pub actor_email_pn: Option<Vec<u8>>,
    pub action: String,
    pub action_group: String,
    pub target_kind: String,
    pub target_id: Option<Uuid>,
    pub outcome: String,
    pub request_id: Option<Uuid>,
    pub network_pn: Option<Vec<u8>>,
    pub agent_pn: Option<Vec<u8>>,
    pub pseudonym_epoch: Option<i32>,
    pub detail: serde_json::Value,
    pub hash: Vec<u8>,
}

impl StoredEvent {
    pub fn fields(&self) -> super::ChainFields<'_> {
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

    /// The first hex digits of a pseudonym: enough to tell entries apart on a page.
    pub fn short(pseudonym: &Option<Vec<u8>>) -> Option<String> {
        pseudonym.as_ref().map(|p| hex::encode(&p[..p.len().min(4)]))
    }
}

/// A page of events, newest first, with whether older and newer ones exist.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// Current display names of the actors on this page that still have an account.
    pub names: std::collections::HashMap<Uuid, String>,
    pub older: Option<i64>,
    pub newer: Option<i64>,
}

type Boxed<'a> = audit_events::BoxedQuery<'a, diesel::pg::Pg>;

/// The chain-and-filter part every read shares. Date bounds become seq bounds first (see
/// [`seq_bounds`]), so each query is one index range on (chain, [column,] seq).
fn filtered<'a>(reader: &AuditReader, filter: &'a Filter, bounds: (i64, i64)) -> Boxed<'a> {
    let mut q = audit_events::table.filter(audit_events::chain_id.eq(reader.chain)).into_boxed();
    if let Some(account) = reader.account {
        q = q.filter(audit_events::account_id.eq(account));
    }
    q = q.filter(audit_events::seq.between(bounds.0, bounds.1));
    match filter.action {
        Some(ActionFilter::One(a)) => q = q.filter(audit_events::action.eq(a.name())),
        Some(ActionFilter::Group(g)) => q = q.filter(audit_events::action_group.eq(g.name())),
        None => {}
    }
    match &filter.actor {
        Some(ActorFilter::Accounts(ids)) => q = q.filter(audit_events::actor_id.eq_any(ids.clone())),
        Some(ActorFilter::EmailPseudonyms(ps)) => q = q.filter(audit_events::actor_email_pn.eq_any(ps.clone())),
        Some(ActorFilter::NetworkPseudonyms(ps)) => q = q.filter(audit_events::network_pn.eq_any(ps.clone())),
        None => {}
    }
    if let Some(o) = filter.outcome {
        q = q.filter(audit_events::outcome.eq(o.name()));
    }
    q
}

/// The seq range of the filter's dates (a chain's times never go back, see the writer):
/// `(1, i64::MAX)` without dates; an empty range when nothing falls in them.
pub async fn seq_bounds(
    conn: &mut AsyncPgConnection,
    reader: &AuditReader,
    filter: &Filter,
) -> QueryResult<(i64, i64)> {
    let mut low = 1;
    let mut high = i64::MAX;
    if let Some(from) = filter.from {
        let first: Option<i64> = audit_events::table
            .filter(audit_events::chain_id.eq(reader.chain))
            .filter(audit_events::occurred_at.ge(from))
            .order((audit_events::occurred_at.asc(), audit_events::seq.asc()))
            .select(audit_events::seq)
            .first(conn)
            .await
            .optional()?;
        low = first.unwrap_or(i64::MAX);
    }
    if let Some(until) = filter.until {
        let last: Option<i64> = audit_events::table
            .filter(audit_events::chain_id.eq(reader.chain))
            .filter(audit_events::occurred_at.lt(until))
            .order((audit_events::occurred_at.desc(), audit_events::seq.desc()))
            .select(audit_events::seq)
            .first(conn)
            .await
            .optional()?;
        high = last.unwrap_or(0);
    }
    Ok((low, high))
}

/// One page for the viewer. Stable while events arrive: positions never change, and a
/// page is "older than N" or "newer than N".
pub async fn page(
    conn: &mut AsyncPgConnection,
    reader: &AuditReader,
    filter: &Filter,
    cursor: Cursor,
) -> QueryResult<Page> {
    super::seal_chain(conn, reader.chain).await;
    let bounds = seq_bounds(conn, reader, filter).await?;
    let mut events: Vec<StoredEvent> = match cursor {
        Cursor::Newest => {
            filtered(reader, filter, bounds)
                .order(audit_events::seq.desc())
                .limit(PAGE_SIZE + 1)
                .select(StoredEvent::as_select())
                .load(conn)
                .await?
        }
        Cursor::Before(seq) => {
            filtered(reader, filter, bounds)
                .filter(audit_events::seq.lt(seq))
                .order(audit_events::seq.desc())
                .limit(PAGE_SIZE + 1)
                .select(StoredEvent::as_select())
                .load(conn)
                .await?
        }
        Cursor::After(seq) => {
            let mut rows: Vec<StoredEvent> = filtered(reader, filter, bounds)
                .filter(audit_events::seq.gt(seq))
                .order(audit_events::seq.asc())
                .limit(PAGE_SIZE + 1)
                .select(StoredEvent::as_select())
                .load(conn)
                .await?;
            rows.reverse();
            rows
        }
    };
    let more = events.len() as i64 > PAGE_SIZE;
    let (older, newer);
    match cursor {
        Cursor::Newest | Cursor::Before(_) => {
            events.truncate(PAGE_SIZE as usize);
            older = if more { events.last().map(|e| e.seq) } else { None };
            newer = match cursor {
                Cursor::Before(_) => <[StoredEvent]>::first(&events).map(|e| e.seq),
                _ => None,
            };
        }
        Cursor::After(_) => {
            if more {
                events.remove(0);
            }
            newer = if more { <[StoredEvent]>::first(&events).map(|e| e.seq) } else { None };
            older = events.last().map(|e| e.seq);
        }
    }
    let names = names_of(conn, &events).await?;
    Ok(Page { events, names, older, newer })
}

/// One event by position, within the reader's scope (what is chained: the viewer seals
/// through [`page`] first).
pub async fn event(
    conn: &mut AsyncPgConnection,
    reader: &AuditReader,
    seq: i64,
) -> QueryResult<Option<(StoredEvent, Option<String>)>> {
    let mut q = audit_events::table
        .filter(audit_events::chain_id.eq(reader.chain))
        .filter(audit_events::seq.eq(seq))
        .into_boxed();
    if let Some(account) = reader.account {
        q = q.filter(audit_events::account_id.eq(account));
    }
    let Some(event) = q.select(StoredEvent::as_select()).first(conn).await.optional()? else {
        return Ok(None);
    };
    let name = names_of(conn, std::slice::from_ref(&event)).await?.remove(&event.actor_id.unwrap_or_default());
    Ok(Some((event, name)))
}

async fn names_of(
    conn: &mut AsyncPgConnection,
    events: &[StoredEvent],
) -> QueryResult<std::collections::HashMap<Uuid, String>> {
    names_for(conn, events.iter().filter_map(|e| e.actor_id).collect()).await
}

/// Current display names of these accounts (those that still exist).
pub async fn names_for(
    conn: &mut AsyncPgConnection,
    mut ids: Vec<Uuid>,
) -> QueryResult<std::collections::HashMap<Uuid, String>> {
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(Uuid, String)> =
        users::table.filter(users::id.eq_any(ids)).select((users::id, users::display_name)).load(conn).await?;
    Ok(rows.into_iter().collect())
}

/// Events per UTC day and outcome for the filter, over the [`CHART_DAYS`] days that end
/// with the filter's "To" (or today).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    pub day: time::Date,
    pub succeeded: i64,
    pub denied: i64,
    pub failed: i64,
}

#[derive(QueryableByName)]
struct DayRow {
    #[diesel(sql_type = Timestamptz)]
    day: OffsetDateTime,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Events per day and outcome for the chart (what is chained: the viewer seals through
/// [`page`] first).
pub async fn daily_counts(
    conn: &mut AsyncPgConnection,
    reader: &AuditReader,
    filter: &Filter,
    now: OffsetDateTime,
) -> QueryResult<Vec<DayCount>> {
    let end = filter.until.unwrap_or_else(|| now.date().next_day().unwrap_or(now.date()).midnight().assume_utc());
    let start = end - Duration::days(CHART_DAYS);
    let start = filter.from.map_or(start, |f| f.max(start));
    let windowed = Filter { from: Some(start), until: Some(end), ..filter.clone() };
    let bounds = seq_bounds(conn, reader, &windowed).await?;
    let mut days: Vec<DayCount> = (0..CHART_DAYS)
        .rev()
        .map(|back| (end - Duration::days(back + 1)).date())
        .map(|day| DayCount { day, succeeded: 0, denied: 0, failed: 0 })
        .collect();
    if bounds.0 > bounds.1 {
        return Ok(days);
    }
    // The filter as SQL with every value bound; an absent filter binds NULL.
    let (action, group) = match windowed.action {
        Some(ActionFilter::One(a)) => (Some(a.name()), None),
        Some(ActionFilter::Group(g)) => (None, Some(g.name())),
        None => (None, None),
    };
    let (accounts, emails, networks) = match &windowed.actor {
        Some(ActorFilter::Accounts(ids)) => (Some(ids.clone()), None, None),
        Some(ActorFilter::EmailPseudonyms(ps)) => (None, Some(ps.clone()), None),
        Some(ActorFilter::NetworkPseudonyms(ps)) => (None, None, Some(ps.clone())),
        None => (None, None, None),
    };
    use diesel::sql_types::{Array, Bytea, Nullable, Uuid as SqlUuid};
    let rows: Vec<DayRow> = diesel::sql_query(
        "SELECT date_trunc('day', occurred_at, 'UTC') AS day, outcome, count(*) AS n FROM audit_events \
         WHERE chain_id = $1 AND seq BETWEEN $2 AND $3 AND ($4::uuid IS NULL OR account_id = $4) \
           AND ($5::text IS NULL OR action = $5) AND ($6::text IS NULL OR action_group = $6) \
           AND ($7::uuid[] IS NULL OR actor_id = ANY($7)) AND ($8::bytea[] IS NULL OR actor_email_pn = ANY($8)) \
           AND ($9::bytea[] IS NULL OR network_pn = ANY($9)) AND ($10::text IS NULL OR outcome = $10) \
         GROUP BY 1, 2",
    )
    .bind::<SqlUuid, _>(reader.chain)
    .bind::<BigInt, _>(bounds.0)
    .bind::<BigInt, _>(bounds.1)
    .bind::<Nullable<SqlUuid>, _>(reader.account)
    .bind::<Nullable<Text>, _>(action)
    .bind::<Nullable<Text>, _>(group)
    .bind::<Nullable<Array<SqlUuid>>, _>(accounts)
    .bind::<Nullable<Array<Bytea>>, _>(emails)
    .bind::<Nullable<Array<Bytea>>, _>(networks)
    .bind::<Nullable<Text>, _>(windowed.outcome.map(Outcome::name))
    .load(conn)
    .await?;
    for row in rows {
        if let Some(d) = days.iter_mut().find(|d| d.day == row.day.to_offset(time::UtcOffset::UTC).date()) {
            match row.outcome.as_str() {
                "succeeded" => d.succeeded += row.n,
                "denied" => d.denied += row.n,
                _ => d.failed += row.n,
            }
        }
    }
    Ok(days)
}

/// Events in seq order from `after` (exclusive), at most `limit`: the export's batches.
pub async fn batch(
    conn: &mut AsyncPgConnection,
    reader: &AuditReader,
    filter: &Filter,
    bounds: (i64, i64),
    after: i64,
    limit: i64,
) -> QueryResult<Vec<StoredEvent>> {
    filtered(reader, filter, bounds)
        .filter(audit_events::seq.gt(after))
        .order(audit_events::seq.asc())
        .limit(limit)
        .select(StoredEvent::as_select())
        .load(conn)
        .await
}

/// The position of the chain's newest event (0 when empty).
pub async fn head(conn: &mut AsyncPgConnection, reader: &AuditReader) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Head {
        #[diesel(sql_type = BigInt)]
        last_seq: i64,
    }
    super::seal_chain(conn, reader.chain).await;
    let head: Option<Head> = diesel::sql_query("SELECT last_seq FROM audit_chains WHERE chain_id = $1")
        .bind::<diesel::sql_types::Uuid, _>(reader.chain)
        .get_result(conn)
        .await
        .optional()?;
    Ok(head.map_or(0, |h| h.last_seq))
}
