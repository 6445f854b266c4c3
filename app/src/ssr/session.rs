//! The session and the signed-in person of this request.

use std::sync::{Arc, Mutex};

use fluxi_core::accounts::{self, User};
use fluxi_core::audit::{Action, Actor};
use fluxi_core::db::PooledConn;
use fluxi_core::sessions::{
    AuthState, SessionCheck, SessionOrigin, SignedInWith, AUTH_KEY, ORIGIN_KEY, SIGNED_IN_USER_KEY,
};
use fluxi_core::workspaces::{self, WorkspaceAccess};
use leptos::prelude::*;
use tower_sessions::Session;
use uuid::Uuid;

use super::{conn, AppState};
use crate::error::AppError;

pub async fn session() -> Result<Session, AppError> {
    leptos_axum::extract::<Session>().await.map_err(AppError::internal)
}

/// Per-request memo of the signed-in user: a page render calls several server functions
/// (navigation, page data), and each needs the user; load it once per request. The memo
/// names the session it was loaded for and answers only for that session (never for a
/// request without a session id: a cookieless visitor, or one just signed in or out), so
/// that even a memo reached from the wrong request (see `own_reactive_owner` in the
/// server crate) cannot hand out another person.
#[derive(Clone, Default)]
pub struct RequestCache {
    user: Arc<Mutex<Option<KnownUser>>>,
    /// Held while the user is loaded: the resources of a page start concurrently, and
    /// without it each would miss the memo and load the user itself.
    loading: Arc<tokio::sync::Mutex<()>>,
}

/// Who is signed in (or nobody) in the session with this id.
type KnownUser = (tower_sessions::session::Id, Option<User>);

impl RequestCache {
    fn get(&self, session: &Session) -> Option<Option<User>> {
        let id = session.id()?;
        match self.user.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some((known, user)) if *known == id => Some(user.clone()),
            _ => None,
        }
    }
    fn set(&self, known: Option<KnownUser>) {
        *self.user.lock().unwrap_or_else(|p| p.into_inner()) = known;
    }
}

/// After signing out within a request, later lookups must not see the old user.
pub fn forget_cached_user() {
    if let Some(cache) = use_context::<RequestCache>() {
        cache.set(None);
    }
}

/// The signed-in user of this request, enforcing the idle and absolute timeouts.
/// An expired or dangling session is deleted and treated as signed out.
pub async fn current_user(state: &AppState, session: &Session) -> Result<Option<User>, AppError> {
    let Some(cache) = use_context::<RequestCache>() else {
        return load_current_user(state, session).await;
    };
    if let Some(known) = cache.get(session) {
        return Ok(known);
    }
    let _loading = cache.loading.lock().await;
    if let Some(known) = cache.get(session) {
        return Ok(known);
    }
    let loaded_for = session.id();
    let user = load_current_user(state, session).await?;
    // Kept only if the session is still the one it was loaded for (a sign-in or
    // sign-out meanwhile changes or drops the id).
    if let Some(id) = loaded_for.filter(|id| session.id() == Some(*id)) {
        cache.set(Some((id, user.clone())));
    }
    Ok(user)
}

async fn load_current_user(state: &AppState, session: &Session) -> Result<Option<User>, AppError> {
    let Some(mut auth) = session.get::<AuthState>(AUTH_KEY).await? else {
        return Ok(None);
    };
    let now = state.clock.now();
    match state.session_policy.check(&auth, now) {
        SessionCheck::IdleExpired | SessionCheck::AbsoluteExpired => {
            let actor = Actor::System(fluxi_core::audit::SystemJob::SessionCleanup);
            end_session(state, session, auth.user_id, Action::SessionExpired, actor).await?;
            return Ok(None);
        }
        SessionCheck::Active { touch: true } => {
            auth.last_seen_at = now;
            session.insert(AUTH_KEY, auth).await?;
        }
        SessionCheck::Active { touch: false } => {}
    }
    // Normally the session store read the account row together with the session.
    let user = match session.get::<User>(SIGNED_IN_USER_KEY).await?.filter(|u| u.id == auth.user_id) {
        Some(user) => user,
        None => {
            let mut conn = conn(state).await?;
            match accounts::find_user_by_id(&mut conn, auth.user_id).await? {
                Some(user) => user,
                None => {
                    session.flush().await?;
                    return Ok(None);
                }
            }
        }
    };
    // Every other session was signed out after this one was made (its row may have been
    // written back by a request that was in flight, or by a sign-in under way).
    if user.sessions_epoch != auth.sessions_epoch {
        let actor = Actor::System(fluxi_core::audit::SystemJob::SessionCleanup);
        end_session(state, session, auth.user_id, Action::SessionRevoked, actor).await?;
        return Ok(None);
    }
    Ok(Some(user))
}

/// This session survives signing out every other one: it takes on the account's new
/// `sessions_epoch`.
pub async fn adopt_sessions_epoch(session: &Session, sessions_epoch: i32) -> Result<(), AppError> {
    if let Some(mut auth) = session.get::<AuthState>(AUTH_KEY).await? {
        auth.sessions_epoch = sessions_epoch;
        session.insert(AUTH_KEY, auth).await?;
    }
    // The account row this request loaded is older than the bump.
    if let Some(mut user) = session.get::<User>(SIGNED_IN_USER_KEY).await? {
        user.sessions_epoch = sessions_epoch;
        session.insert(SIGNED_IN_USER_KEY, user).await?;
    }
    forget_cached_user();
    Ok(())
}

/// Ends this signed-in session (signed out, or found expired) with its audit event, then
/// forgets it in this request and tells the browser.
pub async fn end_session(
    state: &AppState,
    session: &Session,
    account: Uuid,
    action: Action,
    actor: Actor<'_>,
) -> Result<(), AppError> {
    if let Some(id) = session.id() {
        let origin = super::origin(state);
        let audit = super::audit_with(state, &origin, actor);
        let mut conn = conn(state).await?;
        fluxi_core::sessions::end_session(&mut conn, &audit, &id, account, action).await?;
    }
    session.flush().await?;
    forget_cached_user();
    Ok(())
}

/// Starts a signed-in session: a fresh session id (so a planted id is useless) holding
/// only the new sign-in state. A signed-in session this browser held before is revoked
/// (and recorded so, for its account).
pub async fn start_session(
    state: &AppState,
    session: &Session,
    user: &User,
    signed_in_with: SignedInWith,
) -> Result<(), AppError> {
    let now = state.clock.now();
    if let (Some(previous), Some(id)) = (session.get::<AuthState>(AUTH_KEY).await?, session.id()) {
        // The new sign-in ends the old one; the old account's activity must not name
        // whoever signed in now (it may be someone else on a shared browser).
        let origin = super::origin(state);
        let audit = super::audit_with(state, &origin, Actor::Anonymous { email_normalized: None });
        let mut conn = conn(state).await?;
        fluxi_core::sessions::end_session(&mut conn, &audit, &id, previous.user_id, Action::SessionRevoked).await?;
    }
    forget_cached_user();
    session.clear().await;
    session.cycle_id().await?;
    let second_factor = signed_in_with == SignedInWith::SecondFactor;
    session
        .insert(
            AUTH_KEY,
            AuthState {
                user_id: user.id,
                authenticated_at: now,
                last_seen_at: now,
                second_factor,
                stepped_up_at: None,
                sessions_epoch: user.sessions_epoch,
            },
        )
        .await?;
    // What "Where you're signed in" shows: parsed and truncated, never the raw values.
    let origin = super::origin(state);
    let where_from = SessionOrigin::new(origin.user_agent.as_deref(), origin.network.as_deref());
    session.insert(ORIGIN_KEY, where_from).await?;
    Ok(())
}

/// How this session was signed in (password only unless a second factor was given).
pub async fn signed_in_with(session: &Session) -> Result<SignedInWith, AppError> {
    Ok(session.get::<AuthState>(AUTH_KEY).await?.map_or(SignedInWith::PasswordOnly, |a| a.signed_in_with()))
}

/// Whether this session confirmed who it is within the step-up window (page data: the
/// sensitive forms then need no password).
pub async fn step_up_fresh(state: &AppState, session: &Session) -> Result<bool, AppError> {
    let auth = session.get::<AuthState>(AUTH_KEY).await?;
    Ok(auth.is_some_and(|a| state.session_policy.step_up_fresh(&a, state.clock.now())))
}

/// Marks this signed-in session as having given a second factor (an authenticator was
/// just confirmed in it), under a fresh session id.
pub async fn note_second_factor(session: &Session) -> Result<(), AppError> {
    if let Some(mut auth) = session.get::<AuthState>(AUTH_KEY).await? {
        auth.second_factor = true;
        session.cycle_id().await?;
        session.insert(AUTH_KEY, auth).await?;
    }
    Ok(())
}

/// The signed-in user, or `Unauthenticated`.
pub async fn require_user(state: &AppState) -> Result<User, AppError> {
    let session = session().await?;
    current_user(state, &session).await?.ok_or(AppError::Unauthenticated)
}

/// Signed-in user, pooled connection and their verified access to workspace `slug`.
pub async fn workspace_access(state: &AppState, slug: &str) -> Result<(User, PooledConn, WorkspaceAccess), AppError> {
    let user = require_user(state).await?;
    let mut conn = conn(state).await?;
    let origin = super::origin(state);
    let signed_in_with = signed_in_with(&session().await?).await?;
    let audit = super::audit_as(state, &origin, &user);
    let access = workspaces::authorize(&mut conn, &audit, user.id, signed_in_with, slug).await?;
    Ok((user, conn, access))
}
