//! Server functions of the email change. Each is a public endpoint: it checks the caller
//! and validates its input itself.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What `/confirm-email/:token` offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeLinkState {
    /// Sign in first: the link works only for the account that asked for the change.
    SignedOut,
    /// Confirm that `new_email` becomes the account's address.
    Ready {
        new_email: String,
    },
    Unusable {
        message: String,
    },
}

/// What `/revert-email/:token` offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevertLinkState {
    /// Choose a new password; `mfa`: the account's code is asked too.
    Usable {
        mfa: bool,
    },
    Unusable {
        message: String,
    },
}

/// "Change email address": the current password (and code, with two-factor
/// authentication on) confirms it is the person; the new address gets a link.
#[server(prefix = "/api", endpoint = "change_email")]
pub async fn change_email(password: String, code: Option<String>, email: String) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::StepUpFor;
    use fluxi_core::audit::Action;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    // The address's shape first: a mistyped one should not cost a step-up try.
    fluxi_core::accounts::validate_email(&email).map_err(|e| AppError::field("email", e.to_string()))?;
    let code = code.filter(|c| !c.trim().is_empty());
    ssr::step_up(&state, &user, &password, code.as_deref(), None, StepUpFor::account(Action::EmailChangeRequested))
        .await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    fluxi_core::accounts::email_change::request_email_change(&mut conn, &audit, &user, &email, &state.base_url).await?;
    leptos_axum::redirect("/account/security?email=sent#email-address");
    Ok(())
}

#[server(prefix = "/api", endpoint = "email_change_link")]
pub async fn email_change_link(token: String) -> Result<ChangeLinkState, AppError> {
    use crate::ssr;
    use fluxi_core::accounts::email_change::{change_link_address, EmailChangeError};
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let Some(user) = ssr::current_user(&state, &session).await? else {
        return Ok(ChangeLinkState::SignedOut);
    };
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    match change_link_address(&mut conn, &audit, user.id, token.trim(), state.clock.now()).await {
        Ok(new_email) => Ok(ChangeLinkState::Ready { new_email }),
        Err(EmailChangeError::Link(problem)) => Ok(ChangeLinkState::Unusable { message: problem.to_string() }),
        Err(e) => Err(e.into()),
    }
}

/// "Confirm new address": uses the link; the address becomes the account's, confirmed.
#[server(prefix = "/api", endpoint = "confirm_email_change")]
pub async fn confirm_email_change(token: String) -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    fluxi_core::accounts::email_change::confirm_email_change(&mut conn, &audit, user.id, token.trim()).await?;
    leptos_axum::redirect("/account?email=changed");
    Ok(())
}

#[server(prefix = "/api", endpoint = "revert_email_link")]
pub async fn revert_email_link(token: String) -> Result<RevertLinkState, AppError> {
    use crate::ssr;
    use fluxi_core::accounts::email_change::{revert_link_account, EmailChangeError};
    let state = ssr::state()?;
    let mut conn = ssr::conn(&state).await?;
    match revert_link_account(&mut conn, token.trim(), state.clock.now()).await {
        Ok((_, mfa)) => Ok(RevertLinkState::Usable { mfa }),
        Err(EmailChangeError::Link(problem)) => Ok(RevertLinkState::Unusable { message: problem.to_string() }),
        Err(e) => Err(e.into()),
    }
}

/// "Restore my address": with the link from the old address, a new password and — when
/// the account's authenticator predates the change — a code. Every session is signed out;
/// this browser is signed in.
#[server(prefix = "/api", endpoint = "revert_email_change")]
pub async fn revert_email_change(token: String, new_password: String, code: Option<String>) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::email_change::{revert_email_change, revert_link_account, EmailChangeError};
    use fluxi_core::sessions::SignedInWith;
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let origin = ssr::origin(&state);
    let token = token.trim();
    fluxi_core::accounts::validate_password(&new_password)
        .map_err(|e| AppError::field("new_password", e.to_string()))?;
    let mut conn = ssr::conn(&state).await?;
    let needs_code = match revert_link_account(&mut conn, token, state.clock.now()).await {
        Ok((user, true)) => Some(user),
        Ok((_, false)) => None,
        // Refused and recorded below, by the undo itself.
        Err(EmailChangeError::Link(_)) => None,
        Err(e) => return Err(e.into()),
    };
    drop(conn);
    if let Some(user) = &needs_code {
        ssr::check_link_second_factor(&state, &origin, user, code.as_deref()).await?;
    }
    let device = ssr::device(&state);
    let audit = ssr::audit_with(&state, &origin, fluxi_core::audit::Actor::Anonymous { email_normalized: None });
    let place = fluxi_core::accounts::Place { network: origin.network.as_deref(), device: Some(&device) };
    let user = revert_email_change(&state.pool, &state.hasher, &audit, token, &new_password, place).await?;
    let signed_in_with = if needs_code.is_some() { SignedInWith::SecondFactor } else { SignedInWith::PasswordOnly };
    ssr::start_session(&state, &session, &user, signed_in_with).await?;
    ssr::remember_device(&state, &device);
    leptos_axum::redirect("/account?email=restored");
    Ok(())
}
