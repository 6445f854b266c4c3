//! Server functions of the password. Each is a public endpoint: it checks the caller and
//! validates its input itself.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// The new password against the sign-up rules, its errors next to the "New password" field.
#[cfg(feature = "ssr")]
fn check_new_password(new_password: &str) -> Result<(), AppError> {
    fluxi_core::accounts::validate_password(new_password).map_err(|e| AppError::field("new_password", e.to_string()))
}

/// What `/reset-password/:token` offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetLinkState {
    /// Choose a new password; `mfa`: the account's second factor is asked too.
    Usable {
        mfa: bool,
    },
    Unusable {
        message: String,
    },
}

/// "Change password": the current password (and code, with two-factor authentication
/// on) confirms it is the person; "Sign out all other sessions" is checked by default.
#[server(prefix = "/api", endpoint = "change_password")]
pub async fn change_password(
    password: String,
    code: Option<String>,
    new_password: String,
    sign_out_others: Option<String>,
) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::StepUpFor;
    use fluxi_core::audit::Action;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    // The new password's rules first: a refused one should not cost a step-up try.
    check_new_password(&new_password)?;
    let code = code.filter(|c| !c.trim().is_empty());
    ssr::step_up(&state, &user, &password, code.as_deref(), None, StepUpFor::account(Action::PasswordChanged)).await?;
    let session = ssr::session().await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let keep = session.id().filter(|_| sign_out_others.is_some());
    let epoch = fluxi_core::accounts::credentials::change_password(
        &state.pool,
        &state.hasher,
        &audit,
        &user,
        &new_password,
        keep.as_ref(),
    )
    .await?;
    if let Some(epoch) = epoch {
        ssr::adopt_sessions_epoch(&session, epoch).await?;
    }
    leptos_axum::redirect("/account/security?password=changed#password");
    Ok(())
}

/// "Send reset link": the same answer whether or not an account uses the address. The
/// account is looked up, and the mail queued, after the answer has gone (a task of its
/// own), so the answer's timing says nothing either.
#[server(prefix = "/api", endpoint = "request_password_reset")]
pub async fn request_password_reset(email: String) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::credentials::{accept_reset_request, queue_reset_link};
    let state = ssr::state()?;
    let origin = ssr::origin(&state);
    let now = state.clock.now();
    let mut conn = ssr::conn(&state).await?;
    let email_normalized =
        accept_reset_request(&mut conn, &state.pseudonyms, &email, origin.network.as_deref(), now).await?;
    drop(conn);
    let device = ssr::device(&state);
    ssr::after_answer(&state, "password reset mail", move |state, mut conn, origin| async move {
        let audit = ssr::audit_with(&state, &origin, fluxi_core::audit::Actor::Anonymous { email_normalized: None });
        let place = fluxi_core::accounts::Place { network: origin.network.as_deref(), device: Some(&device) };
        let (keys, base) = (&state.pseudonyms, &state.base_url);
        queue_reset_link(&mut conn, &audit, keys, &email_normalized, place, base, now).await
    });
    leptos_axum::redirect("/forgot-password?sent=1");
    Ok(())
}

#[server(prefix = "/api", endpoint = "reset_link")]
pub async fn reset_link(token: String) -> Result<ResetLinkState, AppError> {
    use crate::ssr;
    use fluxi_core::accounts::credentials::{reset_link_account, ResetError};
    let state = ssr::state()?;
    let mut conn = ssr::conn(&state).await?;
    match reset_link_account(&mut conn, token.trim(), state.clock.now()).await {
        Ok((_, mfa)) => Ok(ResetLinkState::Usable { mfa }),
        Err(ResetError::Link(problem)) => Ok(ResetLinkState::Unusable { message: problem.to_string() }),
        Err(e) => Err(e.into()),
    }
}

/// "Set new password": with the link, the new password and — with two-factor
/// authentication on — a code. Every session of the account is signed out; this browser
/// is signed in.
#[server(prefix = "/api", endpoint = "reset_password")]
pub async fn reset_password(token: String, new_password: String, code: Option<String>) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::credentials::{reset_link_account, reset_password, ResetError};
    use fluxi_core::sessions::SignedInWith;
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let origin = ssr::origin(&state);
    let token = token.trim();
    let now = state.clock.now();
    check_new_password(&new_password)?;
    let device = ssr::device(&state);
    let mut conn = ssr::conn(&state).await?;
    let mfa = match reset_link_account(&mut conn, token, now).await {
        Ok((user, true)) => Some(user),
        Ok((_, false)) => None,
        // Refused and recorded below, by the reset itself.
        Err(ResetError::Link(_)) => None,
        Err(e) => return Err(e.into()),
    };
    drop(conn);
    if let Some(user) = &mfa {
        ssr::check_link_second_factor(&state, &origin, user, code.as_deref()).await?;
    }
    let audit = ssr::audit_with(&state, &origin, fluxi_core::audit::Actor::Anonymous { email_normalized: None });
    let place = fluxi_core::accounts::Place { network: origin.network.as_deref(), device: Some(&device) };
    let user = reset_password(&state.pool, &state.hasher, &audit, token, &new_password, place).await?;
    let signed_in_with = if mfa.is_some() { SignedInWith::SecondFactor } else { SignedInWith::PasswordOnly };
    ssr::start_session(&state, &session, &user, signed_in_with).await?;
    ssr::remember_device(&state, &device);
    leptos_axum::redirect("/account");
    Ok(())
}
