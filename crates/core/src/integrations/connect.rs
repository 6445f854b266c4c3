//! Connecting with OAuth 2.0: the authorization-code flow (RFC 6749) with PKCE S256
//! (RFC 7636), as RFC 9700 recommends. The `state` is 256 random bits, stored only as a
//! hash, bound to the session, person and workspace that started it, single use (deleted
//! by the callback whatever happens next), and valid for [`STATE_LIFETIME`]. The PKCE
//! verifier waits sealed beside it. Nothing is stored for a refused callback.

use diesel::prelude::*;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::provider::{self, Failure};
use super::{owner_parts, revocations, IntegrationError, Integrations, ProviderId, RemovedRow, REMOVED_COLUMNS};
use crate::audit::{Action, Audit, Detail, Event, Outcome, Target};
use crate::schema::{integration_authorizations as ia, workspaces};
use crate::secrets::{Keyring, Purpose, Sealed};
use crate::sessions::SignedInWith;
use crate::tenancy::{self, schema::integration_connections as ic};
use crate::workspaces::{authorize, Permission, WorkspaceAccess};

pub const STATE_LIFETIME: Duration = Duration::minutes(10);
/// Connection attempts one person may have under way at once (each stores a row).
pub const MAX_ATTEMPTS_UNDER_WAY: i64 = 20;

/// Starts connecting the caller to `provider_id`: returns the provider's authorization
/// URL to send the browser to. `session_binding` identifies the browser session (its
/// hash is stored; the callback must come from the same one).
pub async fn start(
    conn: &mut AsyncPgConnection,
    access: &WorkspaceAccess,
    keyring: &Keyring,
    integrations: &Integrations,
    provider_id: &str,
    session_binding: &[u8],
    now: OffsetDateTime,
) -> Result<url::Url, IntegrationError> {
    access.require(Permission::ManageOwnIntegrations)?;
    let provider = integrations.provider(provider_id)?;
    if provider.oauth().is_none() {
        return Err(IntegrationError::WrongKind("an API key"));
    }
    if !provider.is_configured() {
        return Err(IntegrationError::NotConfigured);
    }
    let state = crate::tokens::new_token();
    let state_hash = crate::tokens::token_hash(&state);
    let (url, verifier) = provider::authorization_url(integrations, provider, &state)?;
    let verifier = verifier.unwrap_or_default();
    let sealed = keyring.seal(Purpose::PkceVerifier, &[&state_hash], verifier.as_bytes());
    let scopes: Vec<Option<String>> = provider.scopes.iter().map(|s| Some(s.name.clone())).collect();
    diesel::delete(ia::table.filter(ia::expires_at.lt(now))).execute(conn).await?;
    let (user, workspace) = (access.user_id(), access.workspace_id());
    let session_hash = crate::tokens::token_hash(&hex::encode(session_binding));
    let provider_id = provider.id.as_str();
    conn.transaction::<_, IntegrationError, _>(|c| {
        async move {
            // One person's starts one at a time, so the count below cannot be outrun.
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind::<diesel::sql_types::Text, _>(format!("integration-attempts:{user}"))
                .execute(c)
                .await?;
            let under_way: i64 = ia::table.filter(ia::user_id.eq(user)).count().get_result(c).await?;
            if under_way >= MAX_ATTEMPTS_UNDER_WAY {
                return Err(IntegrationError::TooManyAttempts);
            }
            diesel::insert_into(ia::table)
                .values((
                    ia::state_hash.eq(&state_hash),
                    ia::session_hash.eq(session_hash),
                    ia::user_id.eq(user),
                    ia::workspace_id.eq(workspace),
                    ia::provider.eq(provider_id),
                    ia::scopes.eq(&scopes),
                    ia::key_version.eq(sealed.key_version),
                    ia::pkce_verifier.eq(&sealed.bytes),
                    ia::expires_at.eq(now + STATE_LIFETIME),
                ))
                .execute(c)
                .await?;
            Ok(())
        }
        .scope_boxed()
    })
    .await?;
    Ok(url)
}

/// What the provider sent back to the callback.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
}

/// Why a callback was refused (recorded, and told to the person in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectRefusal {
    /// No such state: made up, or already used.
    UnknownState,
    Expired,
    /// Started in another session or by another person.
    OtherSession,
    /// The caller may no longer connect integrations here.
    NotAllowed,
    /// The provider reported an error (the person declined, or the request was refused).
    ProviderDenied,
    /// The token endpoint refused the code (reused, for another client, wrong verifier).
    CodeRefused,
    /// The provider granted scopes that were not asked for.
    ScopeEscalation,
    ProviderUnavailable,
}

impl ConnectRefusal {
    pub fn words(self) -> &'static str {
        match self {
            ConnectRefusal::UnknownState => {
                "That connection attempt is not known or was already used. Start again from the integrations page."
            }
            ConnectRefusal::Expired => "That connection attempt took longer than 10 minutes. Start again.",
            ConnectRefusal::OtherSession => {
                "That connection attempt was started in another browser session. Start again from this one."
            }
            ConnectRefusal::NotAllowed => "Your role no longer allows connecting integrations in this workspace.",
            ConnectRefusal::ProviderDenied => "The provider did not grant access, so nothing was connected.",
            ConnectRefusal::CodeRefused => {
                "The provider refused to complete the connection, so nothing was connected. Start again."
            }
            ConnectRefusal::ScopeEscalation => {
                "The provider granted more permissions than Fluxi asked for, so the connection was refused."
            }
            ConnectRefusal::ProviderUnavailable => "The provider could not be reached. Try again in a few minutes.",
        }
    }
}

/// Where the callback leads: the workspace's integrations page when the attempt belongs
/// to the caller, and what happened.
#[derive(Debug, Clone)]
pub struct Finished {
    pub slug: Option<String>,
    /// The provider's catalogue id, when the attempt was known.
    pub provider: Option<String>,
    pub provider_name: Option<String>,
    pub result: Result<(), ConnectRefusal>,
    /// Tokens of a connection this one replaced, waiting in the revocation queue.
    pub replaced: Option<Uuid>,
}

type AuthorizationRow = (Vec<u8>, Uuid, Uuid, String, Vec<Option<String>>, i32, Vec<u8>, OffsetDateTime);

/// The callback: checks the state, redeems the code, checks the granted scopes, looks up
/// the account at the provider, and stores the connection with its event.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    keyring: &Keyring,
    integrations: &Integrations,
    user_id: Uuid,
    signed_in_with: SignedInWith,
    session_binding: &[u8],
    params: &CallbackParams,
    now: OffsetDateTime,
) -> Result<Finished, IntegrationError> {
    let nowhere = |result| Finished { slug: None, provider: None, provider_name: None, result, replaced: None };
    let state = params.state.as_deref().unwrap_or("");
    let found: Option<AuthorizationRow> = if crate::tokens::well_formed(state) {
        // Deleted whatever happens next: a state works once.
        diesel::delete(ia::table.find(crate::tokens::token_hash(state)))
            .returning((
                ia::session_hash,
                ia::user_id,
                ia::workspace_id,
                ia::provider,
                ia::scopes,
                ia::key_version,
                ia::pkce_verifier,
                ia::expires_at,
            ))
            .get_result(conn)
            .await
            .optional()?
    } else {
        None
    };
    let Some((session_hash, started_by, workspace_id, provider_id, scopes, key_version, verifier, expires_at)) = found
    else {
        let event = Event::account(
            Some(user_id),
            Action::IntegrationConnectRefused,
            Outcome::Denied,
            Detail::ConnectRefused { provider: None, reason: ConnectRefusal::UnknownState },
        );
        audit.record_unless_repeated(conn, &[&b"connect-state"[..], user_id.as_bytes()].concat(), event).await?;
        return Ok(nowhere(Err(ConnectRefusal::UnknownState)));
    };
    let requested: Vec<String> = scopes.into_iter().flatten().collect();
    let pid = ProviderId::parse(&provider_id);
    let provider = integrations.catalogue().get(&provider_id);
    let refuse_in_workspace = |reason: ConnectRefusal| {
        Event::workspace(
            workspace_id,
            Action::IntegrationConnectRefused,
            Target::Workspace(workspace_id),
            Outcome::Denied,
            Detail::ConnectRefused { provider: pid.clone(), reason },
        )
    };
    if started_by != user_id || session_hash != crate::tokens::token_hash(&hex::encode(session_binding)) {
        audit.record(conn, refuse_in_workspace(ConnectRefusal::OtherSession)).await?;
        return Ok(nowhere(Err(ConnectRefusal::OtherSession)));
    }
    let slug: String = workspaces::table.find(workspace_id).select(workspaces::slug).first(conn).await?;
    let provider_name = provider.map(|p| p.name.clone());
    let done = |result| Finished {
        slug: Some(slug.clone()),
        provider: Some(provider_id.clone()),
        provider_name: provider_name.clone(),
        result,
        replaced: None,
    };
    let access = match authorize(conn, audit, user_id, signed_in_with, &slug).await {
        Ok(access) if access.can(Permission::ManageOwnIntegrations) => access,
        Ok(_) => {
            audit.record(conn, refuse_in_workspace(ConnectRefusal::NotAllowed)).await?;
            return Ok(done(Err(ConnectRefusal::NotAllowed)));
        }
        Err(_) => return Ok(nowhere(Err(ConnectRefusal::NotAllowed))),
    };
    let refusal = if expires_at <= now {
        Some(ConnectRefusal::Expired)
    } else if params.error.is_some() || params.code.is_none() {
        Some(ConnectRefusal::ProviderDenied)
    } else if provider.is_none_or(|p| !p.is_configured()) {
        Some(ConnectRefusal::ProviderUnavailable)
    } else {
        None
    };
    if let Some(reason) = refusal {
        audit.record(conn, refuse_in_workspace(reason)).await?;
        return Ok(done(Err(reason)));
    }
    let provider = provider.expect("checked above");
    let state_hash = crate::tokens::token_hash(state);
    let verifier = keyring.open(Purpose::PkceVerifier, &[&state_hash], &Sealed { key_version, bytes: verifier })?;
    let verifier = (!verifier.is_empty()).then(|| Zeroizing::new(String::from_utf8_lossy(&verifier).into_owned()));
    let code = params.code.as_deref().unwrap_or_default();
    let tokens = match provider::exchange_code(integrations, provider, code, verifier).await? {
        Ok(tokens) => tokens,
        Err(failure) => {
            let reason = if failure == Failure::Refused {
                ConnectRefusal::CodeRefused
            } else {
                ConnectRefusal::ProviderUnavailable
            };
            audit.record(conn, refuse_in_workspace(reason)).await?;
            return Ok(done(Err(reason)));
        }
    };
    let granted = tokens.scopes.clone().unwrap_or_else(|| requested.clone());
    let account = if granted.iter().any(|g| !requested.contains(g)) {
        Err(ConnectRefusal::ScopeEscalation)
    } else {
        provider::account_name(integrations, provider, &tokens.access_token)
            .await
            .map_err(|_| ConnectRefusal::ProviderUnavailable)
    };
    let account = match account {
        Ok(account) => account,
        Err(reason) => {
            // Not stored: the tokens the provider issued are revoked there at once.
            revoke_unstored(conn, keyring, integrations, provider, user_id, None, &tokens).await?;
            audit.record(conn, refuse_in_workspace(reason)).await?;
            return Ok(done(Err(reason)));
        }
    };
    match store(conn, audit, &access, keyring, provider, &account, &tokens, &granted, now).await {
        Ok(Ok(replaced)) => {
            Ok(Finished { slug: Some(slug), provider: Some(provider_id), provider_name, result: Ok(()), replaced })
        }
        outcome => {
            // Not stored: the tokens the provider just issued must not outlive this.
            revoke_unstored(conn, keyring, integrations, provider, user_id, Some(&account), &tokens).await?;
            let reason = outcome?.err().unwrap_or(ConnectRefusal::NotAllowed);
            audit.record(conn, refuse_in_workspace(reason)).await?;
            Ok(done(Err(reason)))
        }
    }
}

/// Stores a new connection (replacing the person's earlier one for this provider) with
/// its event, in one transaction — if the person may still connect integrations here:
/// the membership is read again under a lock, since a removal or demotion during the trip
/// to the provider would otherwise miss this connection. The replaced connection's tokens
/// go to the revocation queue, unless it reached the same account at the provider (then
/// they belong to the same grant, which revoking would end for the new connection too).
#[allow(clippy::too_many_arguments)]
async fn store(
    conn: &mut AsyncPgConnection,
    audit: &Audit<'_>,
    access: &WorkspaceAccess,
    keyring: &Keyring,
    provider: &super::Provider,
    account: &str,
    tokens: &provider::Tokens,
    granted: &[String],
    now: OffsetDateTime,
) -> Result<Result<Option<Uuid>, ConnectRefusal>, IntegrationError> {
    let (workspace, me) = (access.workspace_id(), access.user_id());
    let id = Uuid::new_v4();
    let parts = owner_parts(&workspace, &me, &id);
    let account_sealed = keyring.seal(Purpose::IntegrationAccount, &parts, account.as_bytes());
    let access_sealed = keyring.seal(Purpose::IntegrationAccessToken, &parts, tokens.access_token.as_bytes());
    let refresh_sealed = tokens
        .refresh_token
        .as_ref()
        .map(|r| keyring.seal(Purpose::IntegrationRefreshToken, &parts, r.as_bytes()).bytes);
    let expires_at = tokens.expires_in.map(|d| now + d);
    let pid = provider.id.clone();
    conn.transaction::<_, IntegrationError, _>(|c| {
        async move {
            let allowed = super::may_hold_connections(c, workspace, me).await?;
            if !allowed {
                return Ok(Err(ConnectRefusal::NotAllowed));
            }
            super::lock_slot(c, workspace, me, pid.as_str()).await?;
            tenancy::enter_scope(c, access.schema(), access.db_role()).await?;
            let old: Option<RemovedRow> =
                diesel::delete(ic::table.filter(ic::owner_id.eq(me)).filter(ic::provider.eq(pid.as_str())))
                    .returning(REMOVED_COLUMNS)
                    .get_result(c)
                    .await
                    .optional()?;
            diesel::insert_into(ic::table)
                .values((
                    ic::id.eq(id),
                    ic::provider.eq(pid.as_str()),
                    ic::owner_id.eq(me),
                    ic::kind.eq("oauth2"),
                    ic::key_version.eq(access_sealed.key_version),
                    ic::account.eq(&account_sealed.bytes),
                    ic::access_token.eq(&access_sealed.bytes),
                    ic::refresh_token.eq(refresh_sealed),
                    ic::scopes.eq(granted),
                    ic::access_expires_at.eq(expires_at),
                    ic::created_at.eq(now),
                    ic::updated_at.eq(now),
                    ic::updated_by.eq(me),
                ))
                .execute(c)
                .await?;
            tenancy::leave_scope(c).await?;
            let replaced = match &old {
                Some(row) => {
                    let old_parts = owner_parts(&workspace, &me, &row.0);
                    let same_account = row.7.as_ref().is_some_and(|bytes| {
                        let sealed = Sealed { key_version: row.4, bytes: bytes.clone() };
                        keyring
                            .open(Purpose::IntegrationAccount, &old_parts, &sealed)
                            .is_ok_and(|plain| plain.as_slice() == account.as_bytes())
                    });
                    // The same grant, at a provider where revoking ends all of it.
                    let ends_grant = provider.oauth().is_some_and(|o| o.revocation_ends_grant);
                    if same_account && ends_grant {
                        None
                    } else {
                        revocations::enqueue_removed_raw(c, workspace, row, now).await?
                    }
                }
                None => None,
            };
            let detail = Detail::Integration { provider: pid.clone() };
            let event = Event::workspace(
                workspace,
                Action::IntegrationConnected,
                Target::Connection(id),
                Outcome::Succeeded,
                detail,
            );
            audit.record(c, event).await?;
            Ok(Ok(replaced))
        }
        .scope_boxed()
    })
    .await
}

/// Revokes tokens that were issued but not stored — unless, at a provider where that ends
/// the person's whole authorization, they have a live connection there it would end too
/// (of this account, or of any when the account is not known).
async fn revoke_unstored(
    conn: &mut AsyncPgConnection,
    keyring: &Keyring,
    integrations: &Integrations,
    provider: &super::Provider,
    owner: Uuid,
    account: Option<&str>,
    tokens: &provider::Tokens,
) -> Result<(), IntegrationError> {
    if provider.oauth().is_some_and(|o| o.revocation_ends_grant) {
        let pid = provider.id.as_str().to_string();
        let account = account.map(|a| a.as_bytes().to_vec());
        let shared = conn
            .transaction::<_, diesel::result::Error, _>(|c| {
                async move { super::connected_elsewhere(c, keyring, owner, &pid, account.as_deref()).await }
                    .scope_boxed()
            })
            .await?;
        if shared {
            return Ok(());
        }
    }
    let refresh = tokens.refresh_token.as_deref().map(|s| s.as_str());
    let _ = provider::revoke(integrations, provider, Some(&tokens.access_token), refresh).await;
    Ok(())
}
