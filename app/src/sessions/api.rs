//! Server functions of "Where you're signed in". Each is a public endpoint: it checks the
//! caller and validates its input itself; a person only ever sees and ends their own
//! sessions.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// One signed-in session, as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Names the session in the "Sign out" form.
    pub handle: String,
    pub browser: String,
    pub system: String,
    /// Truncated ("203.0.113.0/24"); `None` when unknown.
    pub network: Option<String>,
    pub signed_in_at_utc: String,
    pub last_active_utc: String,
    pub this_device: bool,
    /// Signed in before this device: "Sign out" asks for the password (unless this
    /// session confirmed it recently).
    pub older: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsView {
    pub sessions: Vec<SessionEntry>,
    /// Step-up asks for a code too.
    pub mfa_enabled: bool,
    pub step_up_fresh: bool,
}

#[server(prefix = "/api", endpoint = "signed_in_sessions")]
pub async fn signed_in_sessions() -> Result<SessionsView, AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let session = ssr::session().await?;
    let now = state.clock.now();
    let mut conn = ssr::conn(&state).await?;
    let list = fluxi_core::sessions::active_sessions(&mut conn, user.id, session.id().as_ref(), now).await?;
    let mfa_enabled = fluxi_core::mfa::status(&mut conn, user.id, now).await?.enabled;
    let when = |t: time::OffsetDateTime| {
        t.format(&time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap_or_default()
    };
    Ok(SessionsView {
        sessions: list
            .into_iter()
            .map(|s| SessionEntry {
                handle: s.origin.handle.to_string(),
                browser: s.origin.browser,
                system: s.origin.system,
                network: s.origin.network,
                signed_in_at_utc: when(s.signed_in_at),
                last_active_utc: when(s.last_active_at),
                this_device: s.current,
                older: s.older_than_current,
            })
            .collect(),
        mfa_enabled,
        step_up_fresh: ssr::step_up_fresh(&state, &session).await?,
    })
}

/// "Sign out" of one other session. A session that signed in after this one ends at once
/// (someone who sees a session they do not know must be able to stop it); ending an older
/// one needs a recent step-up ("Confirm it's you"), or a stolen session could throw its
/// owner out.
#[server(prefix = "/api", endpoint = "sign_out_session")]
pub async fn sign_out_session(session: String) -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let handle = uuid::Uuid::parse_str(session.trim())
        .map_err(|_| AppError::Rejected("That session is not one of yours, or has already ended.".into()))?;
    let current = ssr::session().await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let now = state.clock.now();
    let stepped_up = ssr::step_up_fresh(&state, &current).await?;
    let mut conn = ssr::conn(&state).await?;
    let current = current.id();
    fluxi_core::sessions::revoke_session(&mut conn, &audit, user.id, handle, current.as_ref(), now, stepped_up).await?;
    leptos_axum::redirect("/account/security#sessions");
    Ok(())
}

/// "Confirm it's you": a step-up on its own, after which older sessions can be signed out
/// for the step-up window.
#[server(prefix = "/api", endpoint = "confirm_identity")]
pub async fn confirm_identity(password: String, code: Option<String>) -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let code = code.filter(|c| !c.trim().is_empty());
    let purpose = fluxi_core::accounts::StepUpFor::account(fluxi_core::audit::Action::SessionRevoked);
    ssr::step_up(&state, &user, &password, code.as_deref(), None, purpose).await?;
    leptos_axum::redirect("/account/security#sessions");
    Ok(())
}

/// "Sign out all other sessions" (step-up: a stolen session must not be able to throw
/// its owner out), keeping this one.
#[server(prefix = "/api", endpoint = "sign_out_other_sessions")]
pub async fn sign_out_other_sessions(password: String, code: Option<String>) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::StepUpFor;
    use fluxi_core::audit::Action;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let code = code.filter(|c| !c.trim().is_empty());
    ssr::step_up(&state, &user, &password, code.as_deref(), None, StepUpFor::account(Action::SessionRevoked)).await?;
    let current = ssr::session().await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    let now = state.clock.now();
    let (_, epoch) =
        fluxi_core::sessions::revoke_other_sessions(&mut conn, &audit, user.id, current.id().as_ref(), now).await?;
    ssr::adopt_sessions_epoch(&current, epoch).await?;
    leptos_axum::redirect("/account/security#sessions");
    Ok(())
}
