//! Server functions of email verification. Each is a public endpoint: it checks the
//! caller and validates its input itself.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What `/verify-email/:token` offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerificationLinkState {
    /// Sign in first: the link works only for the account it was sent to.
    SignedOut,
    /// The link is the signed-in account's and still works: confirm `email`.
    Ready {
        email: String,
    },
    AlreadyVerified,
    /// It does nothing; the message says why.
    Unusable {
        message: String,
    },
}

#[server(prefix = "/api", endpoint = "verification_link")]
pub async fn verification_link(token: String) -> Result<VerificationLinkState, AppError> {
    use crate::ssr;
    use fluxi_core::accounts::verification::{check_verification_link, VerificationError};
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let Some(user) = ssr::current_user(&state, &session).await? else {
        return Ok(VerificationLinkState::SignedOut);
    };
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    match check_verification_link(&mut conn, &audit, user.id, token.trim(), state.clock.now()).await {
        Ok(()) => Ok(VerificationLinkState::Ready { email: user.email }),
        Err(VerificationError::AlreadyVerified) => Ok(VerificationLinkState::AlreadyVerified),
        Err(VerificationError::Link(problem)) => Ok(VerificationLinkState::Unusable { message: problem.to_string() }),
        Err(e) => Err(e.into()),
    }
}

/// "Confirm email address": uses the link and marks the account verified.
#[server(prefix = "/api", endpoint = "verify_email")]
pub async fn verify_email(token: String) -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    let now = state.clock.now();
    fluxi_core::accounts::verification::verify_email(&mut conn, &audit, user.id, token.trim(), now).await?;
    leptos_axum::redirect("/account?email=verified");
    Ok(())
}

/// "Send a new link" (limited per account; the older link stops working).
#[server(prefix = "/api", endpoint = "resend_verification")]
pub async fn resend_verification() -> Result<(), AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    let now = state.clock.now();
    fluxi_core::accounts::verification::resend_verification_mail(&mut conn, &audit, &user, &state.base_url, now)
        .await?;
    leptos_axum::redirect("/account?email=sent#email");
    Ok(())
}
