//! Server-side context shared by every server function (compiled only with `ssr`).


use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use fluxi_core::accounts::{self, PasswordHasher, User};
use fluxi_core::clock::SharedClock;
use fluxi_core::db::{Pool, PooledConn};
use fluxi_core::sessions::{AuthState, SessionCheck, SessionPolicy, AUTH_KEY, SIGNED_IN_USER_KEY};
use leptos::prelude::*;
use leptos_axum::ResponseOptions;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::error::AppError;

/// Everything a server function needs, built once at start-up. Cloned into the context
/// of every request (several times), hence one `Arc` instead of a clone per field.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> Self {
        Self(std::sync::Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

pub struct AppServices {
    pub pool: Pool,
    pub hasher: PasswordHasher,
    pub clock: SharedClock,
    pub session_policy: SessionPolicy,
    pub sign_in_throttle: fluxi_core::accounts::SignInThrottle,
    /// Failed sign-ins allowed per client network, across accounts (see `fluxi_core::client`).
    pub client_sign_in_throttle: fluxi_core::accounts::SignInThrottle,
    /// How many reverse proxies of ours stand in front of Fluxi (`FLUXI_TRUSTED_PROXIES`):
    /// how many `X-Forwarded-For` entries, from the right, name the client truthfully.
    pub trusted_proxies: usize,
    pub leptos_options: LeptosOptions,
    /// Public base URL for links in mails (e.g. invitation links).
    pub base_url: String,
    /// Whether the development mailbox page (`/dev/mailbox`) exists.
    pub dev_mailbox: bool,
    /// Longest a request may take before it is answered 503 (see `server::build_router`).
    pub request_timeout: std::time::Duration,
    /// Workspaces one account may create in any 24 hours (`FLUXI_WORKSPACES_PER_DAY`).
    pub workspaces_per_day: u32,
    /// Keyed pseudonyms for personal identifiers stored for matching only
    /// (`FLUXI_PSEUDONYM_KEY`; see `fluxi_core::pseudonym`).
    pub pseudonyms: fluxi_core::pseudonym::Pseudonymizer,
}

/// A short random reference that links a generic client-facing error to the log line
/// holding the details.
pub fn new_reference() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Logs an unexpected failure and returns the generic error shown to the person.
pub fn internal(error: impl std::fmt::Display) -> AppError {
    let reference = new_reference();
    tracing::error!(reference, %error, "internal error");
    AppError::Internal(reference)
}

pub fn state() -> Result<AppState, AppError> {
    use_context::<AppState>().ok_or_else(|| internal("AppState missing from context"))
}

pub async fn session() -> Result<Session, AppError> {
    leptos_axum::extract::<Session>().await.map_err(internal)
}

pub async fn conn(state: &AppState) -> Result<PooledConn, AppError> {
    state.pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "database pool exhausted or unreachable");
        with_status(AppError::Busy)
    })
}

/// True for a plain HTML form post (no JavaScript): the browser will follow a redirect
/// and render a page, rather than read the server function's body.
pub fn is_plain_form_post() -> bool {
    use_context::<Parts>()
        .and_then(|p| p.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).map(|v| v.contains("text/html")))
        .unwrap_or(false)
}

/// What a form sent last time, kept for one page view so that without JavaScript the
/// page can show the errors next to their fields and keep what was typed (never passwords).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredFlash {
    pub form: String,
    pub error: AppError,
    pub values: Vec<(String, String)>,
}

pub const FLASH_KEY: &str = "flash";

/// Turns a failed form submission into the right response: for JavaScript callers an
/// HTTP status matching the error; for plain form posts a flash message in the session
/// (leptos_axum then redirects back to the form's page, which shows it).
pub async fn fail(form: &str, values: &[(&str, &str)], error: AppError) -> AppError {
    if is_plain_form_post() {
        if let Ok(session) = session().await {
            let flash = StoredFlash {
                form: form.into(),
                error: error.clone(),
                values: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            };
            if let Err(e) = session.insert(FLASH_KEY, flash).await {
                tracing::warn!(error = %e, "could not store form flash");
            }
        }
    }
    with_status(error)
}

/// Per-request memo of the signed-in user: a page render calls several server functions
/// (navigation, page data), and each needs the user; load it once per request.
#[derive(Clone, Default)]
pub struct RequestCache {
    user: std::sync::Arc<std::sync::Mutex<Option<Option<User>>>>,
    /// Held while the user is loaded: the resources of a page start concurrently, and
    /// without it each would miss the memo and load the user itself.
    loading: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl RequestCache {
    fn get(&self) -> Option<Option<User>> {
        self.user.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, user: Option<Option<User>>) {
        *self.user.lock().unwrap_or_else(|p| p.into_inner()) = user;
    }
}

fn request_cache() -> Option<RequestCache> {
    use_context::<RequestCache>()
}

/// After signing out within a request, later lookups must not see the old user.
pub fn forget_cached_user() {
    if let Some(cache) = request_cache() {
        cache.set(None);
    }
}

/// The signed-in user of this request, enforcing the idle and absolute timeouts.
/// An expired or dangling session is deleted and treated as signed out.
pub async fn current_user(state: &AppState, session: &Session) -> Result<Option<User>, AppError> {
    let Some(cache) = request_cache() else {
        return load_current_user(state, session).await;
    };
    if let Some(known) = cache.get() {
        return Ok(known);
    }
    let _loading = cache.loading.lock().await;
    if let Some(known) = cache.get() {
        return Ok(known);
    }
    let user = load_current_user(state, session).await?;
    cache.set(Some(user.clone()));
    Ok(user)
}

async fn load_current_user(state: &AppState, session: &Session) -> Result<Option<User>, AppError> {
    let Some(mut auth) = session.get::<AuthState>(AUTH_KEY).await.map_err(internal)? else {
        return Ok(None);
    };
    let now = state.clock.now();
    match state.session_policy.check(&auth, now) {
        SessionCheck::IdleExpired | SessionCheck::AbsoluteExpired => {
            session.flush().await.map_err(internal)?;
            return Ok(None);
        }
        SessionCheck::Active { touch: true } => {
            auth.last_seen_at = now;
            session.insert(AUTH_KEY, auth).await.map_err(internal)?;
        }
        SessionCheck::Active { touch: false } => {}
    }
    // Normally the session store read the account row together with the session.
    if let Some(user) = session.get::<User>(SIGNED_IN_USER_KEY).await.map_err(internal)? {
        if user.id == auth.user_id {
            return Ok(Some(user));
        }
    }
    let mut conn = conn(state).await?;
    match accounts::find_user_by_id(&mut conn, auth.user_id).await.map_err(internal)? {
        Some(user) => Ok(Some(user)),
        None => {
            session.flush().await.map_err(internal)?;
            Ok(None)
        }
    }
}

/// Starts a signed-in session: a fresh session id (so a planted id is useless) holding
/// only the new sign-in state.
pub async fn start_session(state: &AppState, session: &Session, user: &User) -> Result<(), AppError> {
    let now = state.clock.now();
    if let Some(cache) = request_cache() {
        cache.set(None);
    }
    session.clear().await;
    session.cycle_id().await.map_err(internal)?;
    session
        .insert(AUTH_KEY, AuthState { user_id: user.id, authenticated_at: now, last_seen_at: now })
        .await
        .map_err(internal)
}

impl axum::extract::FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// The signed-in user, or `Unauthenticated`.
pub async fn require_user(state: &AppState) -> Result<User, AppError> {
    let session = session().await?;
    current_user(state, &session).await?.ok_or(AppError::Unauthenticated)
}

/// "Too many tries": 429 with `Retry-After` (whole seconds, rounded up) for JavaScript
/// callers; plain form posts get the message back on their page (see [`fail`]).
pub fn too_many(message: String, retry_after: time::Duration) -> AppError {
    if !is_plain_form_post() {
        if let Some(res) = use_context::<ResponseOptions>() {
            let seconds = retry_after.whole_seconds() + i64::from(retry_after.subsec_nanoseconds() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                res.insert_header(header::RETRY_AFTER, value);
            }
        }
    }
    AppError::TooMany(message)
}

/// "N minutes", rounded up.
fn in_minutes(wait: time::Duration) -> String {
    let minutes = (wait.whole_seconds() + 59) / 60;
    let plural = if minutes == 1 { "" } else { "s" };
    format!("{minutes} minute{plural}")
}

/// The answer while an account's password checks are blocked (sign-in and step-up share
/// one count: both guess the same password).
pub fn too_many_wrong_passwords(wait: time::Duration) -> AppError {
    too_many(format!("Too many wrong passwords for this account. Try again in {}.", in_minutes(wait)), wait)
}

/// The answer while sign-ins from the client's network are blocked.
pub fn too_many_failed_sign_ins_from_network(wait: time::Duration) -> AppError {
    too_many(format!("Too many failed sign-ins from your network. Try again in {}.", in_minutes(wait)), wait)
}

/// The network of the client this request came from (see `fluxi_core::client`), as used
/// by per-client limits. `None` only if the server was not started with connection info
/// (a wiring mistake, logged).
pub fn client_network(state: &AppState) -> Option<String> {
    use fluxi_core::client::{client_address, client_network};
    let parts = use_context::<Parts>()?;
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

/// Maps domain errors of workspace operations to what the person sees.
pub fn workspace_error(e: fluxi_core::workspaces::WorkspaceError) -> AppError {
    use fluxi_core::workspaces::WorkspaceError as E;
    match e {
        E::NotFound => AppError::NotFound,
        E::Forbidden => AppError::Forbidden,
        E::LastOwner => AppError::Rejected("A workspace must keep at least one owner.".into()),
        E::NoSuchMember => AppError::Rejected("That person is not a member of this workspace.".into()),
        E::Invalid(message) => AppError::Rejected(message),
        E::TooManyInvitations => AppError::TooMany(format!(
            "This workspace has sent {} invitations in the last 24 hours. Try again later.",
            fluxi_core::workspaces::invitations::INVITATIONS_PER_DAY
        )),
        E::Upgrading => AppError::Upgrading,
        E::TooManyWorkspaces(limit) => AppError::TooMany(format!(
            "You have created {limit} workspaces in the last 24 hours, the most allowed. Try again tomorrow."
        )),
        other => internal(other),
    }
}

/// Sets the HTTP status for an error answered to a JavaScript caller (plain form posts
/// keep leptos_axum's redirect back to the form, which shows the error).
pub fn with_status(error: AppError) -> AppError {
    if !is_plain_form_post() {
        if let Some(res) = use_context::<ResponseOptions>() {
            res.set_status(StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST));
            match error {
                AppError::Busy => res.insert_header(header::RETRY_AFTER, HeaderValue::from_static("2")),
                AppError::Upgrading => res.insert_header(header::RETRY_AFTER, HeaderValue::from_static("60")),
                _ => {}
            }
        }
    }
    error
}

/// Signed-in user, pooled connection and their verified access to workspace `slug`.
pub async fn workspace_access(
    state: &AppState,
    slug: &str,
) -> Result<(User, PooledConn, fluxi_core::workspaces::WorkspaceAccess), AppError> {
    let user = require_user(state).await.map_err(with_status)?;
    let mut conn = conn(state).await?;
    let access = fluxi_core::workspaces::authorize(&mut conn, user.id, slug)
        .await
        .map_err(|e| with_status(workspace_error(e)))?;
    Ok((user, conn, access))
}

/// Step-up re-authentication for sensitive actions: the signed-in person's current
/// password, checked like a sign-in (hashing permits, constant work).
/// The hash is read here, not carried by the per-request `User`, on a connection that is
/// back in the pool before the (deliberately slow) verification starts: callers must not
/// hold one either, so a burst of step-ups cannot tie up the pool. Whatever they checked
/// before must be checked again after it (see `fluxi_core::workspaces::transfer_ownership`).
pub async fn step_up(state: &AppState, user: &User, password: &str) -> Result<(), AppError> {
    if password.is_empty() || password.chars().count() > fluxi_core::accounts::PASSWORD_MAX_CHARS {
        return Err(with_status(AppError::field("password", "Enter your current password.")));
    }
    // Throttled like sign-in, on the same count: a stolen session must not become a way
    // to guess the password without limit.
    let throttle_key = accounts::sign_in_key(&state.pseudonyms, &user.email_normalized);
    let stored = {
        let mut conn = conn(state).await?;
        let refused = accounts::sign_in_refused_for(&mut conn, &state.sign_in_throttle, &throttle_key, state.clock.now())
            .await
            .map_err(internal)?;
        if let Some(wait) = refused {
            return Err(with_status(too_many_wrong_passwords(wait)));
        }
        accounts::find_password_hash(&mut conn, user.id).await.map_err(internal)?
    };
    // An account deleted meanwhile is checked against the dummy hash and refused.
    let verified = state.hasher.verify(password, stored.as_ref().map(|h| h.as_str())).await.map_err(|e| match e {
        accounts::HashError::Busy => with_status(AppError::Busy),
        other => internal(other),
    })?;
    let mut conn = conn(state).await?;
    if verified {
        accounts::clear_failed_sign_ins(&mut conn, &throttle_key).await.map_err(internal)?;
        Ok(())
    } else {
        accounts::record_failed_sign_in(&mut conn, &state.sign_in_throttle, &throttle_key, state.clock.now())
            .await
            .map_err(internal)?;
        Err(with_status(AppError::field("password", "That is not your current password.")))
    }
}

/// Content-Security-Policy of a server-rendered page. Scripts run only if they carry this
/// response's nonce — Leptos puts it on its hydration and resource scripts — or are
/// loaded by such a script (`'strict-dynamic'`: the app's JavaScript module);
/// `'wasm-unsafe-eval'` lets that module compile the app's WebAssembly. An injected
/// `<script>` or event-handler attribute does not run. Other responses get the stricter
/// default of `server::middleware::security_headers` (no scripts at all).
pub fn set_page_csp() {
    let (Some(nonce), Some(res)) = (leptos::nonce::use_nonce(), use_context::<ResponseOptions>()) else {
        return;
    };
    let policy = format!(
        "script-src 'nonce-{nonce}' 'strict-dynamic' 'wasm-unsafe-eval'; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'self'"
    );
    // The nonce is base64, always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&policy) {
        res.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}
