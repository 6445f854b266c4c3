//! Integrations: connections to third-party tools through OAuth 2.0, and API keys
//! (docs/integrations.md).
//!
//! - `catalogue`: the providers and what is asked of them.
//! - `provider`: every request to a provider (token endpoint, account lookup, revocation).
//! - `connect`: the authorization-code flow with PKCE and a session-bound state.
//! - this module: the vault. Connections live in the workspace's own schema, one per
//!   person and provider; every secret is sealed by [`crate::secrets`] bound to
//!   (workspace, owner, connection). API keys, listing, use with at most one refresh in
//!   flight per connection (a lease in its row), disconnecting.
//! - `revocations`: tokens of disconnected connections, revoked at the provider now or
//!   by the background job later.

pub mod catalogue;
pub mod connect;
pub mod provider;
pub mod revocations;

use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

pub use catalogue::{Catalogue, Provider, ProviderId, ProviderKind};

use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};
use crate::secrets::{Keyring, OpenError, Purpose, RotationReport, Sealed, VersionCount};
use crate::tenancy::schema::integration_connections as ic;
use crate::tenancy::{self, TenantIdent};
use crate::workspaces::{Permission, WorkspaceAccess, WorkspaceError};

/// The tenant migration that made the connections table.
const TENANT_TABLES: &str = "2026-12-06-000001_integrations";

/// An access token this close to expiry is refreshed before use.
pub const REFRESH_MARGIN: Duration = Duration::seconds(60);
/// How long one refresh may hold its connection's lease.
pub const REFRESH_LEASE: Duration = Duration::seconds(30);
/// Pauses before the retries of a refresh that failed for a passing reason.
const REFRESH_RETRY_PAUSES: [std::time::Duration; 2] =
    [std::time::Duration::from_millis(250), std::time::Duration::from_secs(1)];
/// Last-used times are written at most this often per connection.
pub const LAST_USED_GRANULARITY: Duration = Duration::minutes(5);

/// What the vault needs besides the database: the catalogue, the one HTTP client for
/// providers (no redirects followed, timeouts), and the callback URL.
#[derive(Clone)]
pub struct Integrations {
    catalogue: Arc<Catalogue>,
    http: reqwest::Client,
    redirect_url: url::Url,
    base_url: String,
}

impl Integrations {
    pub fn new(catalogue: Catalogue, base_url: &str) -> Result<Self, IntegrationError> {
        let base_url = base_url.trim_end_matches('/').to_string();
        let redirect_url = url::Url::parse(&format!("{base_url}/integrations/callback"))
            .map_err(|_| IntegrationError::Misconfigured("the base URL is not a URL"))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(10))
            .user_agent("Fluxi integrations")
            .build()
            .map_err(|_| IntegrationError::Misconfigured("the HTTP client could not be built"))?;
        Ok(Self { catalogue: Arc::new(catalogue), http, redirect_url, base_url })
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The origins of the configured OAuth providers' authorization endpoints, each
    /// preceded by a space (for a CSP `form-action` list). Origins of checked URLs hold
    /// no characters that could end a directive.
    pub fn authorization_origins(&self) -> String {
        let mut origins: Vec<String> = self
            .catalogue
            .providers()
            .iter()
            .filter(|p| p.is_configured())
            .filter_map(|p| p.oauth().map(|o| o.authorization_url.origin().ascii_serialization()))
            .collect();
        origins.sort();
        origins.dedup();
        origins.into_iter().map(|o| format!(" {o}")).collect()
    }

    fn provider(&self, id: &str) -> Result<&Provider, IntegrationError> {
        self.catalogue.get(id).ok_or(IntegrationError::UnknownProvider)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("no such provider")]
    UnknownProvider,
    #[error("this provider is not configured by your administrator")]
    NotConfigured,
    #[error("this provider is connected with {0}")]
    WrongKind(&'static str),
    #[error("connection not found")]
    NotFound,
    #[error("that does not look like an API key for this provider")]
    InvalidKey,
    #[error("the connection needs reconnecting")]
    NeedsReconnecting,
    #[error("the provider could not be reached")]
    ProviderUnavailable,
    #[error("too many connection attempts under way")]
    TooManyAttempts,
    /// Requests to providers on someone's behalf are limited (each may hold a database
    /// connection while the provider answers); try again after this long.
    #[error("too many requests to providers")]
    Throttled(Duration),
    #[error("integrations are misconfigured: {0}")]
    Misconfigured(&'static str),
    #[error("a stored secret did not open")]
    Sealed(#[from] OpenError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

impl From<diesel::result::Error> for IntegrationError {
    fn from(e: diesel::result::Error) -> Self {
        IntegrationError::Workspace(WorkspaceError::from(e))
    }
}

/// Whether `user` is a member of `workspace` whose role may hold connections, read with
/// the membership row locked (FOR SHARE) until the caller's transaction ends.
pub(crate) async fn may_hold_connections(c: &mut AsyncPgConnection, workspace: Uuid, user: Uuid) -> QueryResult<bool> {
    use crate::schema::memberships;
    let role: Option<String> = memberships::table
        .filter(memberships::workspace_id.eq(workspace))
        .filter(memberships::user_id.eq(user))
        .select(memberships::role)
        .for_share()
        .first(c)
        .await
        .optional()?;
    Ok(role
        .as_deref()
        .and_then(crate::workspaces::Role::parse)
        .is_some_and(|r| crate::workspaces::allowed(r, Permission::ManageOwnIntegrations)))
}

/// Requests a person may make Fluxi send to providers (connect, check, disconnect).
pub const PROVIDER_CALLS: crate::rate_limit::RateLimit = crate::rate_limit::RateLimit::per_hour(60);

/// Counts one request to a provider on `user`'s behalf against [`PROVIDER_CALLS`].
pub async fn take_provider_call(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    now: OffsetDateTime,
) -> Result<(), IntegrationError> {
    let key = [&b"integration-calls:"[..], user.as_bytes()].concat();
    crate::rate_limit::take(conn, &key, PROVIDER_CALLS, now).await?.map_err(IntegrationError::Throttled)
}

/// Serializes changes to one person's connection to one provider in a workspace (two
/// saves or connects at once would both find no row and both insert).
pub(super) async fn lock_slot(
    c: &mut AsyncPgConnection,
    workspace: Uuid,
    owner: Uuid,
    provider: &str,
) -> QueryResult<()> {
    let key = format!("integration:{workspace}:{owner}:{provider}");
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(key)
        .execute(c)
        .await
        .map(|_| ())
}

/// The binding of every sealed secret of a connection.
fn owner_parts<'a>(workspace: &'a Uuid, owner: &'a Uuid, connection: &'a Uuid) -> [&'a [u8]; 3] {
    [workspace.as_bytes(), owner.as_bytes(), connection.as_bytes()]
}

/// Connection status as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Connected,
    NeedsReconnect,
}

impl Status {
    fn parse(s: &str) -> Status {
        if s == "needs_reconnect" {
            Status::NeedsReconnect
        } else {
            Status::Connected
        }
    }
}

/// A connection as the integrations page shows it: never a token or key.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub id: Uuid,
    pub provider: String,
    pub owner_id: Uuid,
    pub kind: ProviderKind,
    pub status: Status,
    /// The account at the provider ("Connected as …"), opened for display.
    pub account: Option<String>,
    pub key_last4: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub updated_by: Uuid,
    pub last_used_at: Option<OffsetDateTime>,
}

type InfoRow = (
    Uuid,
    String,
    Uuid,
    String,
    String,
    i32,
    Option<Vec<u8>>,
    Option<String>,
    Vec<String>,
    OffsetDateTime,
    OffsetDateTime,
    Uuid,
    Option<OffsetDateTime>,
);

/// Connections the caller may see: their own; every one in the workspace for those who
/// manage its integrations; none for viewers.
pub async fn list_connections(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    keyring: &Keyring,
) -> Result<Vec<ConnectionInfo>, IntegrationError> {
    if !access.can(Permission::ManageOwnIntegrations) {
        return Ok(Vec::new());
    }
    let everyone = access.can(Permission::ManageIntegrations);
    let me = access.user_id();
    let rows: Vec<InfoRow> = tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            let mut q = ic::table
                .select((
                    ic::id,
                    ic::provider,
                    ic::owner_id,
                    ic::kind,
                    ic::status,
                    ic::key_version,
                    ic::account,
                    ic::key_last4,
                    ic::scopes,
                    ic::created_at,
                    ic::updated_at,
                    ic::updated_by,
                    ic::last_used_at,
                ))
                .order((ic::provider, ic::created_at))
                .into_boxed();
            if !everyone {
                q = q.filter(ic::owner_id.eq(me));
            }
            q.load(c).await.map_err(IntegrationError::from)
        }
        .scope_boxed()
    })
    .await?;
    let workspace = access.workspace_id();
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                provider,
                owner_id,
                kind,
                status,
                key_version,
                account,
                key_last4,
                scopes,
                created_at,
                updated_at,
                updated_by,
                last_used_at,
            )| {
                let account = account.and_then(|bytes| {
                    let sealed = Sealed { key_version, bytes };
                    let plain = keyring
                        .open(Purpose::IntegrationAccount, &owner_parts(&workspace, &owner_id, &id), &sealed)
                        .ok()?;
                    String::from_utf8(plain.to_vec()).ok()
                });
                ConnectionInfo {
                    id,
                    provider,
                    owner_id,
                    kind: if kind == "api_key" { ProviderKind::ApiKey } else { ProviderKind::Oauth2 },
                    status: Status::parse(&status),
                    account,
                    key_last4,
                    scopes,
                    created_at,
                    updated_at,
                    updated_by,
                    last_used_at,
                }
            },
        )
        .collect())
}

/// Whether an API key was new or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySaved {
    Saved,
    Replaced,
}

/// Saves (or replaces) the caller's API key for `provider_id`: checked against the
/// provider's format, sealed, recorded. The key never comes back out to a page.
#[allow(clippy::too_many_arguments)]
pub async fn save_api_key(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    keyring: &Keyring,
    integrations: &Integrations,
    provider_id: &str,
    key: &str,
    now: OffsetDateTime,
) -> Result<KeySaved, IntegrationError> {
    access.require(Permission::ManageOwnIntegrations)?;
    let provider = integrations.provider(provider_id)?;
    let format = provider.key_format().ok_or(IntegrationError::WrongKind("OAuth"))?;
    let key = Zeroizing::new(key.trim().to_string());
    if !format.admits(&key) {
        return Err(IntegrationError::InvalidKey);
    }
    let last4: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let (workspace, me) = (access.workspace_id(), access.user_id());
    let pid = provider.id.clone();
    conn.transaction::<_, IntegrationError, _>(|c| {
        async move {
            // Still allowed, read under a lock: a demotion or removal under way is not missed.
            if !may_hold_connections(c, workspace, me).await? {
                return Err(IntegrationError::Workspace(WorkspaceError::Forbidden));
            }
            lock_slot(c, workspace, me, pid.as_str()).await?;
            tenancy::enter_scope(c, access.schema(), access.db_role()).await?;
            let existing: Option<Uuid> = ic::table
                .filter(ic::owner_id.eq(me))
                .filter(ic::provider.eq(pid.as_str()))
                .select(ic::id)
                .for_update()
                .first(c)
                .await
                .optional()?;
            let id = existing.unwrap_or_else(Uuid::new_v4);
            let sealed = keyring.seal(Purpose::IntegrationApiKey, &owner_parts(&workspace, &me, &id), key.as_bytes());
            let outcome = if existing.is_some() {
                diesel::update(ic::table.find(id))
                    .set((
                        ic::api_key.eq(&sealed.bytes),
                        ic::key_version.eq(sealed.key_version),
                        ic::key_last4.eq(&last4),
                        ic::updated_at.eq(now),
                        ic::updated_by.eq(me),
                    ))
                    .execute(c)
                    .await?;
                KeySaved::Replaced
            } else {
                diesel::insert_into(ic::table)
                    .values((
                        ic::id.eq(id),
                        ic::provider.eq(pid.as_str()),
                        ic::owner_id.eq(me),
                        ic::kind.eq("api_key"),
                        ic::key_version.eq(sealed.key_version),
                        ic::api_key.eq(&sealed.bytes),
                        ic::key_last4.eq(&last4),
                        ic::created_at.eq(now),
                        ic::updated_at.eq(now),
                        ic::updated_by.eq(me),
                    ))
                    .execute(c)
                    .await?;
                KeySaved::Saved
            };
            tenancy::leave_scope(c).await?;
            let action = match outcome {
                KeySaved::Saved => Action::IntegrationKeySaved,
                KeySaved::Replaced => Action::IntegrationKeyReplaced,
            };
            let detail = Detail::Integration { provider: pid.clone() };
            audit
                .record(c, Event::workspace(workspace, action, Target::Connection(id), Outcome::Succeeded, detail))
                .await?;
            Ok(outcome)
        }
        .scope_boxed()
    })
    .await
}

/// What disconnecting did at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// An API key: there is nothing to revoke at the provider (the person deletes the key there).
    NotApplicable,
    /// The provider offers no way to revoke: the person removes access there.
    NotOffered,
    /// Waiting for the provider (the background job retries).
    Pending,
    Revoked,
    /// Still failing at the end of the retry period: given up.
    GaveUp,
    /// Not revoked: at this provider that would end the person's whole authorization of
    /// Fluxi, which their connection of the same account elsewhere still uses.
    Shared,
}

/// The outcome of a disconnect, for the page.
#[derive(Debug, Clone)]
pub struct Disconnected {
    pub provider: String,
    pub revocation: Revocation,
    /// Set when the provider's revocation is waiting in the queue.
    pub queued: Option<Uuid>,
}

/// Disconnects (or deletes the API key of) a connection: the caller's own, or anyone's
/// for those who manage the workspace's integrations. Its tokens leave the workspace in
/// this transaction; those the provider can revoke wait in the revocation queue, which
/// the caller then tries at once ([`revocations::attempt`]).
pub async fn disconnect(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    integrations: &Integrations,
    connection_id: Uuid,
    now: OffsetDateTime,
) -> Result<Disconnected, IntegrationError> {
    access.require(Permission::ManageOwnIntegrations)?;
    let everyone = access.can(Permission::ManageIntegrations);
    let (workspace, me) = (access.workspace_id(), access.user_id());
    conn.transaction::<_, IntegrationError, _>(|c| {
        async move {
            tenancy::enter_scope(c, access.schema(), access.db_role()).await?;
            let mut q = ic::table.filter(ic::id.eq(connection_id)).into_boxed();
            if !everyone {
                q = q.filter(ic::owner_id.eq(me));
            }
            let found: Option<RemovedRow> = diesel::delete(ic::table.filter(ic::id.eq_any(q.select(ic::id))))
                .returning(REMOVED_COLUMNS)
                .get_result(c)
                .await
                .optional()?;
            tenancy::leave_scope(c).await?;
            let removed = found.ok_or(IntegrationError::NotFound)?;
            let provider = removed.1.clone();
            let (revocation, queued) = revocations::enqueue_removed(c, integrations, workspace, &removed, now).await?;
            let action =
                if removed.3 == "api_key" { Action::IntegrationKeyDeleted } else { Action::IntegrationDisconnected };
            let detail = match ProviderId::parse(&provider) {
                Some(p) => Detail::Disconnected { provider: p, revocation },
                None => Detail::None,
            };
            let target = Target::Connection(removed.0);
            audit.record(c, Event::workspace(workspace, action, target, Outcome::Succeeded, detail)).await?;
            Ok(Disconnected { provider, revocation, queued })
        }
        .scope_boxed()
    })
    .await
}

/// (id, provider, owner, kind, key_version, access token, refresh token, account)
pub(crate) type RemovedRow = (Uuid, String, Uuid, String, i32, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);
pub(crate) const REMOVED_COLUMNS: (
    ic::id,
    ic::provider,
    ic::owner_id,
    ic::kind,
    ic::key_version,
    ic::access_token,
    ic::refresh_token,
    ic::account,
) = (ic::id, ic::provider, ic::owner_id, ic::kind, ic::key_version, ic::access_token, ic::refresh_token, ic::account);

/// Removes every connection of `owner` (a member leaving, removed or made a viewer), or of
/// everyone (`owner` = `None`: the workspace is being deleted), inside the caller's
/// transaction; their tokens go to the revocation queue for the background job. Returns
/// the events to record, which the caller writes after its other row locks (the audit
/// chain is locked last).
pub(crate) async fn remove_all_in(
    c: &mut AsyncPgConnection,
    workspace: Uuid,
    schema: &TenantIdent,
    owner: Option<Uuid>,
    now: OffsetDateTime,
) -> QueryResult<Vec<Event>> {
    tenancy::enter_scope(c, schema, schema).await?;
    let removed: Vec<RemovedRow> = match owner {
        Some(o) => diesel::delete(ic::table.filter(ic::owner_id.eq(o))).returning(REMOVED_COLUMNS).load(c).await?,
        None => diesel::delete(ic::table).returning(REMOVED_COLUMNS).load(c).await?,
    };
    tenancy::leave_scope(c).await?;
    let mut events = Vec::with_capacity(removed.len());
    for row in &removed {
        let queued = revocations::enqueue_removed_raw(c, workspace, row, now).await?;
        let action = if row.3 == "api_key" { Action::IntegrationKeyDeleted } else { Action::IntegrationDisconnected };
        let revocation = match (row.3.as_str(), queued) {
            ("api_key", _) => Revocation::NotApplicable,
            (_, Some(_)) => Revocation::Pending,
            (_, None) => Revocation::NotOffered,
        };
        let detail =
            ProviderId::parse(&row.1).map_or(Detail::None, |p| Detail::Disconnected { provider: p, revocation });
        events.push(Event::workspace(workspace, action, Target::Connection(row.0), Outcome::Succeeded, detail));
    }
    Ok(events)
}

/// Whether `owner` has a live connection to `provider` reaching `account`, in any
/// workspace they belong to. Inside the caller's transaction (each workspace visited with
/// its role, then left).
pub(crate) async fn connected_elsewhere(
    c: &mut AsyncPgConnection,
    keyring: &Keyring,
    owner: Uuid,
    provider: &str,
    account: Option<&[u8]>,
) -> QueryResult<bool> {
    use crate::schema::{memberships, workspaces};
    let theirs: Vec<(Uuid, String)> = workspaces::table
        .inner_join(memberships::table)
        .filter(memberships::user_id.eq(owner))
        .filter(workspaces::tenant_version.ge(TENANT_TABLES))
        .select((workspaces::id, workspaces::schema_name))
        .load(c)
        .await?;
    for (workspace, schema) in theirs {
        let Some(schema) = TenantIdent::parse(&schema) else { continue };
        tenancy::enter_scope(c, &schema, &schema).await?;
        let rows: Vec<(Uuid, i32, Option<Vec<u8>>)> = ic::table
            .filter(ic::owner_id.eq(owner))
            .filter(ic::provider.eq(provider))
            .filter(ic::status.eq("connected"))
            .select((ic::id, ic::key_version, ic::account))
            .load(c)
            .await?;
        tenancy::leave_scope(c).await?;
        let same = rows.into_iter().any(|(id, key_version, bytes)| {
            bytes.is_some_and(|bytes| {
                keyring
                    .open(
                        Purpose::IntegrationAccount,
                        &owner_parts(&workspace, &owner, &id),
                        &Sealed { key_version, bytes },
                    )
                    .is_ok_and(|plain| account.is_none_or(|a| plain.as_slice() == a))
            })
        });
        if same {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whose connection a refresh works on: the person and workspace, from their membership
/// check (a request) or from the registry (the background refresher).
pub(crate) struct Holder {
    workspace: Uuid,
    slug: String,
    schema: TenantIdent,
    role: TenantIdent,
    owner: Uuid,
}

impl Holder {
    fn of(access: &WorkspaceAccess) -> Self {
        Self {
            workspace: access.workspace_id(),
            slug: access.slug().to_string(),
            schema: access.schema().clone(),
            role: access.db_role().clone(),
            owner: access.user_id(),
        }
    }
}

/// A usable access token of the caller's own OAuth connection, refreshed first when it
/// is about to expire. At most one refresh per connection is in flight across every
/// server instance: the refresher holds a lease in the connection's row (a random token
/// and an end time, both set by the database's clock); the others wait for it to finish
/// and use what it stored.
pub async fn access_token(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    keyring: &Keyring,
    integrations: &Integrations,
    connection_id: Uuid,
    now: OffsetDateTime,
) -> Result<Zeroizing<String>, IntegrationError> {
    access.require(Permission::ManageOwnIntegrations)?;
    let (workspace, me) = (access.workspace_id(), access.user_id());
    // Waits for another refresher at most this many times, 100 ms apart (the lease lasts
    // 30 s; a refresher that died is replaced after that).
    for _ in 0..350 {
        let row = read_for_use(conn, access, connection_id, now).await?;
        let Some(row) = row else { return Err(IntegrationError::NotFound) };
        if row.status == Status::NeedsReconnect {
            return Err(IntegrationError::NeedsReconnecting);
        }
        let fresh = row.expires_at.is_none_or(|at| at - REFRESH_MARGIN > now);
        if fresh {
            let bytes = row.access_token.ok_or(IntegrationError::NeedsReconnecting)?;
            let parts = owner_parts(&workspace, &me, &connection_id);
            let plain = keyring.open(
                Purpose::IntegrationAccessToken,
                &parts,
                &Sealed { key_version: row.key_version, bytes },
            )?;
            return String::from_utf8(plain.to_vec())
                .map(Zeroizing::new)
                .map_err(|_| IntegrationError::Sealed(OpenError::DoesNotOpen));
        }
        if row.lease_free {
            if let Some(token) = refresh(
                conn,
                audit,
                &Holder::of(access),
                keyring,
                integrations,
                connection_id,
                &row.provider,
                now,
                now + REFRESH_MARGIN,
            )
            .await?
            {
                return Ok(token);
            }
            // Another instance took the lease first: wait for it like everyone else.
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(IntegrationError::ProviderUnavailable)
}

/// What "Check connection" found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub provider: String,
    pub account: String,
}

/// Uses the caller's connection once (refreshing it first when due) to ask the provider
/// which account it reaches: "Check connection".
pub async fn check(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    keyring: &Keyring,
    integrations: &Integrations,
    connection_id: Uuid,
    now: OffsetDateTime,
) -> Result<Checked, IntegrationError> {
    let token = access_token(conn, audit, access, keyring, integrations, connection_id, now).await?;
    let provider_id = provider_of(conn, access, connection_id).await?;
    let provider = integrations.provider(&provider_id)?;
    let account = provider::account_name(integrations, provider, &token).await.map_err(|failure| match failure {
        provider::Failure::Refused => IntegrationError::NeedsReconnecting,
        provider::Failure::Unavailable => IntegrationError::ProviderUnavailable,
    })?;
    Ok(Checked { provider: provider_id, account })
}

/// The provider of one of the caller's own connections.
pub async fn provider_of(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    connection_id: Uuid,
) -> Result<String, IntegrationError> {
    let me = access.user_id();
    tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            ic::table
                .filter(ic::id.eq(connection_id))
                .filter(ic::owner_id.eq(me))
                .select(ic::provider)
                .first(c)
                .await
                .optional()?
                .ok_or(IntegrationError::NotFound)
        }
        .scope_boxed()
    })
    .await
}

struct UseRow {
    provider: String,
    status: Status,
    key_version: i32,
    access_token: Option<Vec<u8>>,
    expires_at: Option<OffsetDateTime>,
    lease_free: bool,
}

/// A refresh lease that has not run out (by the database's clock).
fn lease_held() -> diesel::dsl::And<
    diesel::dsl::IsNotNull<ic::refresh_lease_until>,
    diesel::dsl::Gt<ic::refresh_lease_until, diesel::dsl::now>,
> {
    ic::refresh_lease_until.is_not_null().and(ic::refresh_lease_until.gt(diesel::dsl::now))
}

/// Reads the caller's connection for use, and notes the use (coalesced: a write at most
/// every [`LAST_USED_GRANULARITY`]).
async fn read_for_use(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    connection_id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<UseRow>, IntegrationError> {
    let me = access.user_id();
    type Row = (String, String, String, i32, Option<Vec<u8>>, Option<OffsetDateTime>, Option<bool>);
    let row: Option<Row> = tenancy::scoped_transaction(conn, access.schema(), access.db_role(), |c| {
        async move {
            diesel::update(
                ic::table
                    .filter(ic::id.eq(connection_id))
                    .filter(ic::owner_id.eq(me))
                    .filter(ic::last_used_at.is_null().or(ic::last_used_at.lt(now - LAST_USED_GRANULARITY))),
            )
            .set(ic::last_used_at.eq(now))
            .execute(c)
            .await?;
            ic::table
                .filter(ic::id.eq(connection_id))
                .filter(ic::owner_id.eq(me))
                .select((
                    ic::provider,
                    ic::kind,
                    ic::status,
                    ic::key_version,
                    ic::access_token,
                    ic::access_expires_at,
                    lease_held(),
                ))
                .first(c)
                .await
                .optional()
                .map_err(IntegrationError::from)
        }
        .scope_boxed()
    })
    .await?;
    Ok(match row {
        None => None,
        Some((_, kind, ..)) if kind != "oauth2" => return Err(IntegrationError::WrongKind("an API key")),
        Some((provider, _, status, key_version, access_token, expires_at, held)) => Some(UseRow {
            provider,
            status: Status::parse(&status),
            key_version,
            access_token,
            expires_at,
            lease_free: held != Some(true),
        }),
    })
}

/// What the refresher read when it took the lease.
type Leased = (i32, Option<Vec<u8>>, Option<Vec<u8>>, Vec<String>);

/// Takes the refresh lease and redeems the refresh token once. `Ok(None)`: another
/// refresher holds the lease. Whatever happens, the lease is released at the end.
#[allow(clippy::too_many_arguments)]
async fn refresh(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    holder: &Holder,
    keyring: &Keyring,
    integrations: &Integrations,
    connection_id: Uuid,
    provider_id: &str,
    now: OffsetDateTime,
    due_before: OffsetDateTime,
) -> Result<Option<Zeroizing<String>>, IntegrationError> {
    let me = holder.owner;
    let lease = Uuid::new_v4();
    let taken: Option<Leased> = tenancy::scoped_transaction(conn, &holder.schema, &holder.role, |c| {
        async move {
            diesel::update(
                ic::table
                    .filter(ic::id.eq(connection_id))
                    .filter(ic::owner_id.eq(me))
                    .filter(ic::status.eq("connected"))
                    // Still due: a waiter must not refresh again what was just refreshed.
                    .filter(ic::access_expires_at.is_null().or(ic::access_expires_at.le(due_before)))
                    .filter(diesel::dsl::not(lease_held())),
            )
            .set((
                ic::refresh_lease.eq(lease),
                ic::refresh_lease_until.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                >("now() + ")
                .bind::<diesel::sql_types::Integer, _>(REFRESH_LEASE.whole_seconds() as i32)
                .sql(" * interval '1 second'")),
            ))
            .returning((ic::key_version, ic::refresh_token, ic::account, ic::scopes))
            .get_result(c)
            .await
            .optional()
            .map_err(IntegrationError::from)
        }
        .scope_boxed()
    })
    .await?;
    let Some(leased) = taken else { return Ok(None) };
    let outcome =
        refresh_holding(conn, audit, holder, keyring, integrations, connection_id, provider_id, lease, leased, now)
            .await;
    // Released on every path (the success and refusal paths already did; this matches
    // nothing then), so waiters never wait out a lease nobody uses.
    tenancy::scoped_transaction(conn, &holder.schema, &holder.role, |c| {
        async move {
            diesel::update(ic::table.filter(ic::id.eq(connection_id)).filter(ic::refresh_lease.eq(lease)))
                .set((ic::refresh_lease.eq(None::<Uuid>), ic::refresh_lease_until.eq(None::<OffsetDateTime>)))
                .execute(c)
                .await
                .map_err(IntegrationError::from)
        }
        .scope_boxed()
    })
    .await?;
    outcome.map(Some)
}

#[allow(clippy::too_many_arguments)]
async fn refresh_holding(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    holder: &Holder,
    keyring: &Keyring,
    integrations: &Integrations,
    connection_id: Uuid,
    provider_id: &str,
    lease: Uuid,
    (key_version, refresh_sealed, account_sealed, granted): Leased,
    now: OffsetDateTime,
) -> Result<Zeroizing<String>, IntegrationError> {
    let (workspace, me) = (holder.workspace, holder.owner);
    let parts = owner_parts(&workspace, &me, &connection_id);
    let provider = integrations.provider(provider_id)?;
    let open = |purpose, bytes: Vec<u8>| -> Result<Zeroizing<String>, IntegrationError> {
        let plain = keyring.open(purpose, &parts, &Sealed { key_version, bytes })?;
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| IntegrationError::Sealed(OpenError::DoesNotOpen))
    };
    let old_refresh = refresh_sealed.map(|b| open(Purpose::IntegrationRefreshToken, b)).transpose()?;
    let account = account_sealed.map(|b| open(Purpose::IntegrationAccount, b)).transpose()?;
    let outcome = match &old_refresh {
        None => Err(provider::Failure::Refused),
        // A transient failure (timeout, 5xx) is tried twice more, 250 ms then 1 s later,
        // while the lease is held: a refresh token is only ever redeemed by its holder.
        Some(token) => {
            let started = std::time::Instant::now();
            let mut outcome = provider::refresh(integrations, provider, token).await;
            for pause in REFRESH_RETRY_PAUSES {
                // Never past half the lease: another refresher must not find it run out
                // while this one may still redeem the token.
                let late = started.elapsed() + pause > std::time::Duration::from_secs(15);
                if late || outcome.is_ok() || outcome.as_ref().err() == Some(&provider::Failure::Refused) {
                    break;
                }
                tokio::time::sleep(pause).await;
                outcome = provider::refresh(integrations, provider, token).await;
            }
            outcome
        }
    };
    let tokens = match outcome {
        Err(provider::Failure::Refused) => {
            mark_needs_reconnecting(conn, audit, holder, integrations, connection_id, &provider.id, lease).await?;
            return Err(IntegrationError::NeedsReconnecting);
        }
        Err(provider::Failure::Unavailable) => return Err(IntegrationError::ProviderUnavailable),
        Ok(tokens) => tokens,
    };
    // A refresh may narrow what was granted, never widen it.
    if tokens.scopes.as_ref().is_some_and(|s| s.iter().any(|g| !granted.contains(g))) {
        revocations::enqueue_tokens(
            conn,
            workspace,
            me,
            connection_id,
            provider,
            keyring,
            &tokens,
            account.as_deref().map(|a| a.as_str()),
            now,
        )
        .await?;
        mark_needs_reconnecting(conn, audit, holder, integrations, connection_id, &provider.id, lease).await?;
        return Err(IntegrationError::NeedsReconnecting);
    }
    // Every secret of the row is sealed again under the current key, so the row keeps one
    // key version even when it was sealed under an older one.
    let seal = |purpose, plain: &str| keyring.seal(purpose, &parts, plain.as_bytes()).bytes;
    let access_sealed = seal(Purpose::IntegrationAccessToken, &tokens.access_token);
    let refresh_kept = tokens.refresh_token.as_ref().or(old_refresh.as_ref());
    let refresh_sealed = refresh_kept.map(|r| seal(Purpose::IntegrationRefreshToken, r));
    let account_sealed = account.as_ref().map(|a| seal(Purpose::IntegrationAccount, a));
    let scopes = tokens.scopes.clone().unwrap_or(granted);
    let expires_at = tokens.expires_in.map(|d| now + d);
    let current = keyring.current_version();
    let stored = tenancy::scoped_transaction(conn, &holder.schema, &holder.role, |c| {
        async move {
            let n = diesel::update(ic::table.filter(ic::id.eq(connection_id)).filter(ic::refresh_lease.eq(lease)))
                .set((
                    ic::key_version.eq(current),
                    ic::access_token.eq(access_sealed),
                    ic::refresh_token.eq(refresh_sealed),
                    ic::account.eq(account_sealed),
                    ic::scopes.eq(scopes),
                    ic::access_expires_at.eq(expires_at),
                    ic::refresh_lease.eq(None::<Uuid>),
                    ic::refresh_lease_until.eq(None::<OffsetDateTime>),
                ))
                .execute(c)
                .await?;
            Ok::<_, IntegrationError>(n == 1)
        }
        .scope_boxed()
    })
    .await?;
    if !stored {
        // Disconnected (or the lease ran out) while the provider answered: the new tokens
        // must not live on at the provider either.
        revocations::enqueue_tokens(
            conn,
            workspace,
            me,
            connection_id,
            provider,
            keyring,
            &tokens,
            account.as_deref().map(|a| a.as_str()),
            now,
        )
        .await?;
        return Err(IntegrationError::NotFound);
    }
    Ok(tokens.access_token)
}

/// The provider refused the refresh token (revoked there, expired): the connection's
/// tokens are dropped, it shows "Needs reconnecting", its owner is mailed, and the trail
/// records it — one transaction. Only by the holder of the refresh lease.
async fn mark_needs_reconnecting(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    holder: &Holder,
    integrations: &Integrations,
    connection_id: Uuid,
    provider: &ProviderId,
    lease: Uuid,
) -> Result<(), IntegrationError> {
    let (workspace, me) = (holder.workspace, holder.owner);
    let link = format!("{}/w/{}/integrations", integrations.base_url, holder.slug);
    conn.transaction::<_, IntegrationError, _>(|c| {
        async move {
            tenancy::enter_scope(c, &holder.schema, &holder.role).await?;
            let n = diesel::update(
                ic::table
                    .filter(ic::id.eq(connection_id))
                    .filter(ic::status.eq("connected"))
                    .filter(ic::refresh_lease.eq(lease)),
            )
            .set((
                ic::status.eq("needs_reconnect"),
                ic::access_token.eq(None::<Vec<u8>>),
                ic::refresh_token.eq(None::<Vec<u8>>),
                ic::access_expires_at.eq(None::<OffsetDateTime>),
                ic::refresh_lease.eq(None::<Uuid>),
                ic::refresh_lease_until.eq(None::<OffsetDateTime>),
            ))
            .execute(c)
            .await?;
            tenancy::leave_scope(c).await?;
            if n == 1 {
                let detail = Detail::Integration { provider: provider.clone() };
                let event = Event::workspace(
                    workspace,
                    Action::IntegrationRefreshFailed,
                    Target::Connection(connection_id),
                    Outcome::Failed,
                    detail,
                );
                audit.record(c, event).await?;
                let email: String =
                    crate::schema::users::table.find(me).select(crate::schema::users::email).first(c).await?;
                crate::notifications::notify_address(
                    c,
                    audit,
                    &email,
                    crate::notifications::Notice::IntegrationNeedsReconnecting,
                    Some(&link),
                )
                .await?;
            }
            Ok(())
        }
        .scope_boxed()
    })
    .await
}

/// The background refresher takes connections whose access token expires within this.
pub const REFRESH_AHEAD: Duration = Duration::minutes(5);
/// ... if they were used within this long (nobody's idle grant is redeemed forever).
pub const IN_USE: Duration = Duration::days(7);

/// The background refresher's pass: refreshes, ahead of expiry, the access tokens of
/// connections in use, through the same lease as a request's refresh (so a request and
/// the job never both redeem one refresh token). Returns how many were refreshed. A
/// connection that fails is left for its next use (or marked "Needs reconnecting").
pub async fn refresh_due(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    integrations: &Integrations,
    now: OffsetDateTime,
) -> Result<usize, IntegrationError> {
    use crate::schema::workspaces;
    let registry: Vec<(Uuid, String, String, String)> = workspaces::table
        .filter(workspaces::tenant_version.ge(TENANT_TABLES))
        .select((workspaces::id, workspaces::slug, workspaces::schema_name, workspaces::role_name))
        .load(conn)
        .await?;
    let mut refreshed = 0;
    for (workspace, slug, schema, role) in registry {
        let (Some(schema), Some(role)) = (TenantIdent::parse(&schema), TenantIdent::parse(&role)) else { continue };
        let due: Vec<(Uuid, Uuid, String)> = tenancy::scoped_transaction(conn, &schema, &role, |c| {
            async move {
                ic::table
                    .filter(ic::kind.eq("oauth2"))
                    .filter(ic::status.eq("connected"))
                    .filter(ic::refresh_token.is_not_null())
                    .filter(ic::access_expires_at.lt(now + REFRESH_AHEAD))
                    .filter(ic::last_used_at.gt(now - IN_USE))
                    .filter(diesel::dsl::not(lease_held()))
                    .select((ic::id, ic::owner_id, ic::provider))
                    .limit(100)
                    .load(c)
                    .await
            }
            .scope_boxed()
        })
        .await?;
        for (id, owner, provider) in due {
            let holder = Holder { workspace, slug: slug.clone(), schema: schema.clone(), role: role.clone(), owner };
            match refresh(conn, audit, &holder, keyring, integrations, id, &provider, now, now + REFRESH_AHEAD).await {
                Ok(Some(_)) => refreshed += 1,
                Ok(None) => {}
                Err(e) => tracing::info!(error = %e, "a connection was not refreshed ahead of expiry"),
            }
        }
    }
    Ok(refreshed)
}

/// Sealed secrets per key version over every workspace's connections and the revocation
/// queue.
pub(crate) async fn sealed_counts(conn: &mut AsyncPgConnection) -> QueryResult<Vec<VersionCount>> {
    let mut by_version = std::collections::BTreeMap::<i32, i64>::new();
    for schema in tenancy::schemas_from(conn, TENANT_TABLES).await? {
        let rows: Vec<(i32, i64)> = tenancy::scoped_transaction(conn, &schema, &schema, |c| {
            async move {
                ic::table.group_by(ic::key_version).select((ic::key_version, diesel::dsl::count_star())).load(c).await
            }
            .scope_boxed()
        })
        .await?;
        for (v, n) in rows {
            *by_version.entry(v).or_default() += n;
        }
    }
    let mut out: Vec<VersionCount> = by_version
        .into_iter()
        .map(|(v, n)| VersionCount { kind: "integration connections", key_version: v, count: n, rotatable: true })
        .collect();
    out.extend(revocations::sealed_counts(conn).await?);
    Ok(out)
}

/// Re-seals every connection (all of a row's secrets at once) and every queued
/// revocation not on the current key version, `batch` rows per transaction.
pub(crate) async fn reseal_all(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    batch: i64,
) -> QueryResult<RotationReport> {
    let mut report = RotationReport::default();
    for (workspace, schema) in tenancy::workspace_schemas_from(conn, TENANT_TABLES).await? {
        let mut failed: Vec<Uuid> = Vec::new();
        loop {
            let excluded = failed.clone();
            let (resealed, newly_failed) = tenancy::scoped_transaction(conn, &schema, &schema, |c| {
                async move { reseal_batch(c, keyring, workspace, &excluded, batch).await }.scope_boxed()
            })
            .await?;
            report.resealed += resealed;
            report.failed += newly_failed.len() as u64;
            if resealed == 0 && newly_failed.is_empty() {
                break;
            }
            failed.extend(newly_failed);
        }
    }
    let queued = revocations::reseal_all(conn, keyring, batch).await?;
    report.resealed += queued.resealed;
    report.failed += queued.failed;
    Ok(report)
}

type SealedRow = (Uuid, Uuid, i32, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

async fn reseal_batch(
    c: &mut AsyncPgConnection,
    keyring: &Keyring,
    workspace: Uuid,
    excluded: &[Uuid],
    batch: i64,
) -> QueryResult<(u64, Vec<Uuid>)> {
    let current = keyring.current_version();
    let rows: Vec<SealedRow> = ic::table
        .filter(ic::key_version.ne(current))
        .filter(ic::id.ne_all(excluded))
        .select((ic::id, ic::owner_id, ic::key_version, ic::account, ic::access_token, ic::refresh_token, ic::api_key))
        .order(ic::id)
        .limit(batch)
        .for_update()
        .skip_locked()
        .load(c)
        .await?;
    let (mut resealed, mut failed) = (0u64, Vec::new());
    for (id, owner, version, account, access_token, refresh_token, api_key) in rows {
        let parts = owner_parts(&workspace, &owner, &id);
        let reseal = |purpose: Purpose, bytes: Option<Vec<u8>>| -> Result<Option<Vec<u8>>, OpenError> {
            bytes
                .map(|b| keyring.reseal(purpose, &parts, &Sealed { key_version: version, bytes: b }).map(|s| s.bytes))
                .transpose()
        };
        let moved = (|| {
            Ok::<_, OpenError>((
                reseal(Purpose::IntegrationAccount, account)?,
                reseal(Purpose::IntegrationAccessToken, access_token)?,
                reseal(Purpose::IntegrationRefreshToken, refresh_token)?,
                reseal(Purpose::IntegrationApiKey, api_key)?,
            ))
        })();
        match moved {
            Ok((account, access_token, refresh_token, api_key)) => {
                diesel::update(ic::table.find(id))
                    .set((
                        ic::key_version.eq(current),
                        ic::account.eq(account),
                        ic::access_token.eq(access_token),
                        ic::refresh_token.eq(refresh_token),
                        ic::api_key.eq(api_key),
                    ))
                    .execute(c)
                    .await?;
                resealed += 1;
            }
            Err(e) => {
                tracing::warn!(key_version = version, error = %e, "an integration's secrets could not be re-sealed");
                failed.push(id);
            }
        }
    }
    Ok((resealed, failed))
}
