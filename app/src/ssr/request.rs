//! What the request says about its client.

use axum::http::{header, request::Parts};
use leptos::prelude::*;

use super::AppState;

/// True for a plain HTML form post (no JavaScript): the browser will follow a redirect
/// and render a page, rather than read the server function's body. The same test
/// leptos_axum applies when it redirects such a post back to its page.
pub fn accepts_html(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

/// The network of the client this request came from (see `fluxi_core::client`), as used
/// by per-client limits. `None` only if the server was not started with connection info
/// (a wiring mistake, logged).
pub fn client_network(state: &AppState) -> Option<String> {
    client_network_of(state, &use_context::<Parts>()?)
}

/// [`client_network`] of a request outside Leptos (plain axum handlers).
pub fn client_network_of(state: &AppState, parts: &Parts) -> Option<String> {
    use fluxi_core::client::{client_address, client_network};
    let Some(peer) = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() else {
        tracing::warn!("no peer address: serve the router with into_make_service_with_connect_info");
        return None;
    };
    // Lossy, not `to_str`: a header line with a non-ASCII byte (which a client can send, and
    // a proxy may merge with its own entry) must still count its entries, or the request
    // would fall back to the proxy's address.
    let forwarded: Vec<String> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    Some(client_network(client_address(peer.0.ip(), forwarded.iter().map(String::as_str), state.trusted_proxies)))
}

/// The id the server gave this request (`server::middleware::request_id`), also sent back
/// in `X-Request-Id` so support can match a report to the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub uuid::Uuid);

/// Where this request came from, for its audit events (stored only as pseudonyms).
pub fn origin(state: &AppState) -> fluxi_core::audit::Origin {
    match use_context::<Parts>() {
        Some(parts) => origin_of(state, &parts),
        None => fluxi_core::audit::Origin::default(),
    }
}

/// [`origin`] of a request outside Leptos (plain axum handlers).
pub fn origin_of(state: &AppState, parts: &Parts) -> fluxi_core::audit::Origin {
    fluxi_core::audit::Origin {
        request_id: parts.extensions.get::<RequestId>().map(|r| r.0),
        network: client_network_of(state, parts),
        user_agent: parts.headers.get(header::USER_AGENT).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    }
}

/// The audit context of this request with `actor` acting.
pub fn audit_with<'a>(
    state: &'a AppState,
    origin: &'a fluxi_core::audit::Origin,
    actor: fluxi_core::audit::Actor<'a>,
) -> fluxi_core::audit::Audit<'a> {
    fluxi_core::audit::Audit {
        keys: Some(&state.pseudonyms),
        clock: state.clock.as_ref(),
        origin,
        actor,
        repeats: Some(&state.audit_repeats),
    }
}

/// Runs `work` after the answer has gone, in a task of its own, with a pooled connection
/// and this request's origin: for mails whose database work must not show in the answer's
/// timing (whether an address has an account). A failure is logged as "`what` not queued".
pub fn after_answer<W, F>(state: &AppState, what: &'static str, work: W)
where
    W: FnOnce(AppState, fluxi_core::db::PooledConn, fluxi_core::audit::Origin) -> F + Send + 'static,
    F: std::future::Future<Output = diesel::QueryResult<()>> + Send,
{
    let (state, origin) = (state.clone(), origin(state));
    tokio::spawn(async move {
        let done = match state.pool.get().await {
            Ok(conn) => work(state, conn, origin).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = done {
            tracing::warn!(%error, "{what} not queued");
        }
    });
}

/// The audit context of a signed-in person's request.
pub fn audit_as<'a>(
    state: &'a AppState,
    origin: &'a fluxi_core::audit::Origin,
    user: &'a fluxi_core::accounts::User,
) -> fluxi_core::audit::Audit<'a> {
    audit_with(state, origin, fluxi_core::audit::Actor::User { id: user.id, email_normalized: &user.email_normalized })
}

/// This browser, as its device cookie names it (`fluxi_core::accounts::familiar`); a new
/// id when it has none, or one that is not ours. Set the cookie after a successful sign-in
/// ([`remember_device`]).
pub fn device(state: &AppState) -> fluxi_core::accounts::familiar::DeviceId {
    use fluxi_core::accounts::familiar::{DeviceId, DEVICE_COOKIE};
    let keys = state.pseudonyms.current();
    use_context::<Parts>()
        .and_then(|parts| DeviceId::from_cookie(cookie(&parts, DEVICE_COOKIE)?, keys))
        .unwrap_or_else(DeviceId::random)
}

/// The value of the request's cookie `name`, if it sent one.
pub(crate) fn cookie<'p>(parts: &'p Parts, name: &str) -> Option<&'p str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Gives (or renews) this browser its device cookie: long-lived, HttpOnly, and only ever
/// sent to us.
pub fn remember_device(state: &AppState, device: &fluxi_core::accounts::familiar::DeviceId) {
    use fluxi_core::accounts::familiar::{DEVICE_COOKIE, DEVICE_COOKIE_MAX_AGE};
    let Some(res) = use_context::<leptos_axum::ResponseOptions>() else { return };
    let cookie = format!(
        "{DEVICE_COOKIE}={}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Lax",
        device.cookie_value(state.pseudonyms.current()),
        DEVICE_COOKIE_MAX_AGE.whole_seconds()
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
        res.append_header(header::SET_COOKIE, value);
    }
}

const PASSKEY_COOKIE: &str = "__Host-fluxi_passkey";
const PASSKEY_PURPOSE: &str = "passkey-ceremony";

/// Binds a passkey ceremony (its stored challenge `id`) to this browser: a signed,
/// HttpOnly cookie that lasts as long as the challenge.
pub fn set_passkey_ceremony(state: &AppState, id: uuid::Uuid) {
    let Some(res) = use_context::<leptos_axum::ResponseOptions>() else { return };
    let value = state.pseudonyms.current().sign(PASSKEY_PURPOSE, id.as_bytes());
    let max_age = fluxi_core::passkeys::CHALLENGE_VALID_FOR.whole_seconds();
    let cookie = format!("{PASSKEY_COOKIE}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Strict");
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
        res.append_header(header::SET_COOKIE, value);
    }
}

/// The passkey ceremony this browser started, if its cookie is ours; the response
/// removes the cookie (a ceremony answers once).
pub fn take_passkey_ceremony(state: &AppState) -> Option<uuid::Uuid> {
    let parts = use_context::<Parts>()?;
    let value = cookie(&parts, PASSKEY_COOKIE)?;
    let id = state.pseudonyms.current().verify_signed(PASSKEY_PURPOSE, value);
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        let removal = format!("{PASSKEY_COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict");
        if let Ok(value) = axum::http::HeaderValue::from_str(&removal) {
            res.append_header(header::SET_COOKIE, value);
        }
    }
    uuid::Uuid::from_slice(&id?).ok()
}
