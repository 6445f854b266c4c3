//! Integration server functions. Each authenticates, loads the caller's membership fresh
//! and leaves the permission checks to the vault (`fluxi_core::integrations`). Nothing
//! here ever returns a token or key: the page gets names, scopes in words, dates and the
//! last four characters of a key.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeView {
    pub name: String,
    pub means: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub id: String,
    /// Whose it is, in words ("You", or the member's name).
    pub owner: String,
    pub is_mine: bool,
    pub needs_reconnect: bool,
    /// "Connected as …" (OAuth).
    pub account: Option<String>,
    /// Granted scopes, in words (OAuth).
    pub scopes: Vec<String>,
    /// "••••abcd" (API keys).
    pub masked_key: Option<String>,
    pub saved_by: String,
    pub connected_on: String,
    pub updated_on: String,
    pub last_used: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCard {
    pub id: String,
    pub name: String,
    pub description: String,
    pub api_key: bool,
    pub configured: bool,
    pub scopes: Vec<ScopeView>,
    pub key_help: Option<String>,
    pub revocation_help: Option<String>,
    pub manage_url: Option<String>,
    pub mine: Option<ConnectionView>,
    /// Other members' connections (owners and admins only).
    pub others: Vec<ConnectionView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationsPage {
    pub slug: String,
    pub name: String,
    pub can_connect: bool,
    pub can_manage_all: bool,
    pub providers: Vec<ProviderCard>,
}

#[cfg(feature = "ssr")]
mod imp {
    use fluxi_core::integrations::{ConnectionInfo, Provider, ProviderKind, Status};

    use super::ConnectionView;

    fn day(at: time::OffsetDateTime) -> String {
        let f = time::macros::format_description!("[year]-[month]-[day]");
        at.to_offset(time::UtcOffset::UTC).format(&f).unwrap_or_default()
    }

    fn minute(at: time::OffsetDateTime) -> String {
        let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
        at.to_offset(time::UtcOffset::UTC).format(&f).unwrap_or_default()
    }

    pub fn view(
        c: &ConnectionInfo,
        provider: Option<&Provider>,
        me: uuid::Uuid,
        names: &std::collections::HashMap<uuid::Uuid, String>,
    ) -> ConnectionView {
        let name_of = |id: uuid::Uuid| {
            if id == me {
                "you".to_string()
            } else {
                names.get(&id).cloned().unwrap_or_else(|| "a former member".into())
            }
        };
        ConnectionView {
            id: c.id.to_string(),
            owner: if c.owner_id == me { "You".into() } else { name_of(c.owner_id) },
            is_mine: c.owner_id == me,
            needs_reconnect: c.status == Status::NeedsReconnect,
            account: c.account.clone(),
            scopes: c.scopes.iter().map(|s| provider.map_or_else(|| s.clone(), |p| p.scope_words(s))).collect(),
            masked_key: (c.kind == ProviderKind::ApiKey)
                .then(|| format!("••••{}", c.key_last4.clone().unwrap_or_default())),
            saved_by: name_of(c.updated_by),
            connected_on: day(c.created_at),
            updated_on: minute(c.updated_at),
            last_used: c.last_used_at.map(minute),
        }
    }

    pub fn parse_connection(raw: &str) -> Result<uuid::Uuid, crate::error::AppError> {
        uuid::Uuid::parse_str(raw.trim()).map_err(|_| crate::error::AppError::NotFound)
    }

    /// What ties an OAuth attempt to this browser session.
    pub async fn session_binding() -> Result<Vec<u8>, crate::error::AppError> {
        let session = crate::ssr::session().await?;
        session.id().map(|id| id.to_string().into_bytes()).ok_or(crate::error::AppError::Unauthenticated)
    }
}

#[server(prefix = "/api", endpoint = "integrations_page")]
pub async fn get_integrations_page(slug: String) -> Result<IntegrationsPage, AppError> {
    use crate::ssr;
    use fluxi_core::integrations::{self, ProviderKind};
    use fluxi_core::workspaces::Permission;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let can_connect = access.can(Permission::ManageOwnIntegrations);
    let can_manage_all = access.can(Permission::ManageIntegrations);
    let connections = integrations::list_connections(&mut conn, &access, &state.keyring).await?;
    let names: std::collections::HashMap<uuid::Uuid, String> = if can_manage_all {
        fluxi_core::workspaces::list_members(&conn, &access)
            .await?
            .into_iter()
            .map(|m| (m.user_id, m.display_name))
            .collect()
    } else {
        Default::default()
    };
    let catalogue = state.integrations.catalogue();
    let providers = catalogue
        .providers()
        .iter()
        .map(|p| {
            let of_provider: Vec<_> = connections.iter().filter(|c| c.provider == p.id.as_str()).collect();
            let mine =
                of_provider.iter().find(|c| c.owner_id == user.id).map(|c| imp::view(c, Some(p), user.id, &names));
            let others = of_provider
                .iter()
                .filter(|c| c.owner_id != user.id)
                .map(|c| imp::view(c, Some(p), user.id, &names))
                .collect();
            ProviderCard {
                id: p.id.as_str().into(),
                name: p.name.clone(),
                description: p.description.clone(),
                api_key: p.kind() == ProviderKind::ApiKey,
                configured: p.is_configured(),
                scopes: p.scopes.iter().map(|s| ScopeView { name: s.name.clone(), means: s.means.clone() }).collect(),
                key_help: p.key_format().map(|f| f.help.clone()),
                revocation_help: p.revocation_help.clone(),
                manage_url: p.manage_url.as_ref().map(|u| u.to_string()),
                mine,
                others,
            }
        })
        .collect();
    Ok(IntegrationsPage {
        slug: access.slug().into(),
        name: access.name().into(),
        can_connect,
        can_manage_all,
        providers,
    })
}

/// "Connect": sends the browser to the provider (a 303 for a plain form post).
#[server(prefix = "/api", endpoint = "connect_integration")]
pub async fn connect_integration(slug: String, provider: String) -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let (_user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let binding = imp::session_binding().await?;
    fluxi_core::integrations::take_provider_call(&mut conn, access.user_id(), state.clock.now()).await?;
    let url = fluxi_core::integrations::connect::start(
        &mut conn,
        &access,
        &state.keyring,
        &state.integrations,
        provider.trim(),
        &binding,
        state.clock.now(),
    )
    .await?;
    leptos_axum::redirect(url.as_str());
    Ok(())
}

/// "Save key": an API key for an API-key provider (saved or replaced).
#[server(prefix = "/api", endpoint = "save_api_key")]
pub async fn save_api_key(slug: String, provider: String, api_key: String) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::integrations::KeySaved;
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let provider = provider.trim().to_string();
    let saved = fluxi_core::integrations::save_api_key(
        &mut conn,
        &audit,
        &access,
        &state.keyring,
        &state.integrations,
        &provider,
        &api_key,
        state.clock.now(),
    )
    .await?;
    let what = match saved {
        KeySaved::Saved => "saved",
        KeySaved::Replaced => "replaced",
    };
    leptos_axum::redirect(&format!("/w/{}/integrations?key={what}&provider={provider}#{provider}", access.slug()));
    Ok(())
}

/// "Disconnect" (OAuth) or "Delete key": the tokens leave at once; revocation at the
/// provider is tried now, and the page says how it went.
#[server(prefix = "/api", endpoint = "disconnect_integration")]
pub async fn disconnect_integration(slug: String, connection: String) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::integrations::{self, revocations, Revocation};
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let id = imp::parse_connection(&connection)?;
    let now = state.clock.now();
    // Disconnecting is never refused; past the limit, revoking is left to the job.
    let may_call = integrations::take_provider_call(&mut conn, user.id, now).await.is_ok();
    let done = integrations::disconnect(&mut conn, &audit, &access, &state.integrations, id, now).await?;
    let revocation = match done.queued {
        // Disconnected already: a failed attempt is retried by the job, not an error here.
        Some(_) if !may_call => Revocation::Pending,
        Some(queued) => revocations::attempt(&mut conn, &audit, &state.keyring, &state.integrations, queued, now)
            .await
            .unwrap_or(Revocation::Pending),
        None => done.revocation,
    };
    let outcome = match revocation {
        Revocation::NotApplicable => "key-deleted",
        Revocation::NotOffered => "not-offered",
        Revocation::Revoked => "revoked",
        Revocation::Shared => "shared",
        Revocation::Pending | Revocation::GaveUp => "revocation-failed",
    };
    leptos_axum::redirect(&format!(
        "/w/{}/integrations?disconnected={outcome}&provider={}#{}",
        access.slug(),
        done.provider,
        done.provider
    ));
    Ok(())
}

/// "Check connection": uses the connection once (refreshing it first when due) to ask the
/// provider which account it reaches; the page says how it went.
#[server(prefix = "/api", endpoint = "check_integration")]
pub async fn check_integration(slug: String, connection: String) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::integrations::{self, IntegrationError};
    let state = ssr::state()?;
    let (user, mut conn, access) = ssr::workspace_access(&state, &slug).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let id = imp::parse_connection(&connection)?;
    let now = state.clock.now();
    integrations::take_provider_call(&mut conn, user.id, now).await?;
    let checked =
        match integrations::check(&mut conn, &audit, &access, &state.keyring, &state.integrations, id, now).await {
            Ok(found) => Ok((found.provider, "ok")),
            Err(IntegrationError::NeedsReconnecting) => Err("needs-reconnecting"),
            Err(IntegrationError::ProviderUnavailable) => Err("unavailable"),
            Err(other) => return Err(other.into()),
        };
    let (provider, outcome) = match checked {
        Ok((provider, outcome)) => (provider, outcome),
        Err(outcome) => (integrations::provider_of(&mut conn, &access, id).await?, outcome),
    };
    leptos_axum::redirect(&format!(
        "/w/{}/integrations?checked={outcome}&provider={provider}#{provider}",
        access.slug()
    ));
    Ok(())
}
