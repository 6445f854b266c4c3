//! Step-up re-authentication for sensitive actions.

use fluxi_core::accounts::{SecondFactor, StepUpFor, User};
use fluxi_core::sessions::{AuthState, AUTH_KEY};

use super::AppState;
use crate::error::AppError;

/// Confirms it is the signed-in person before a sensitive action: their current password
/// — and, with two-factor authentication on, a code from their app or a recovery code
/// (`code` takes either) — checked like a sign-in, on the same count
/// (`fluxi_core::accounts::PasswordGate::check_current_password`), and recorded in the
/// trail of the workspace the action is for, or the account's. A success holds for the
/// step-up window (`SessionPolicy::step_up_window`): actions within it do not ask again.
/// Callers hold no database connection while it runs (the check is deliberately slow) and
/// check again, in their write's transaction, whatever they checked before it.
pub async fn step_up(
    state: &AppState,
    user: &User,
    password: &str,
    code: Option<&str>,
    recovery_code: Option<&str>,
    purpose: StepUpFor,
) -> Result<(), AppError> {
    step_up_unless_recent(state, user, password, code, recovery_code, purpose, true).await
}

/// [`step_up`] that always asks, whatever the window: for adding a way in (a passkey),
/// which someone holding a session only for a few minutes must not be able to do.
pub async fn step_up_now(
    state: &AppState,
    user: &User,
    password: &str,
    code: Option<&str>,
    purpose: StepUpFor,
) -> Result<(), AppError> {
    step_up_unless_recent(state, user, password, code, None, purpose, false).await
}

async fn step_up_unless_recent(
    state: &AppState,
    user: &User,
    password: &str,
    code: Option<&str>,
    recovery_code: Option<&str>,
    purpose: StepUpFor,
    recent_will_do: bool,
) -> Result<(), AppError> {
    let session = super::session().await?;
    let now = state.clock.now();
    let mut auth = session.get::<AuthState>(AUTH_KEY).await?.filter(|a| a.user_id == user.id);
    if recent_will_do && auth.as_ref().is_some_and(|a| state.session_policy.step_up_fresh(a, now)) {
        return Ok(());
    }
    let origin = super::origin(state);
    // One field takes either: six digits are an app code, anything else a recovery code.
    let second = match (code.filter(|c| !c.trim().is_empty()), recovery_code.filter(|c| !c.trim().is_empty())) {
        (Some(code), _) if fluxi_core::mfa::normalize_code(code).is_some() => Some(SecondFactor::Code(code)),
        (Some(code), _) | (None, Some(code)) => Some(SecondFactor::RecoveryCode(code)),
        (None, None) => None,
    };
    state.password_gate(&origin).check_current_password(user, password, second, purpose).await?;
    if let Some(auth) = auth.as_mut() {
        auth.stepped_up_at = Some(now);
        session.insert(AUTH_KEY, *auth).await?;
    }
    Ok(())
}

/// The second factor a mailed link asks for (a reset, an email change's undo) when the
/// account has one: a code from the app or a recovery code, checked like a sign-in's
/// second step (same counts, replay refused). One try per submission.
pub async fn check_link_second_factor(
    state: &AppState,
    origin: &fluxi_core::audit::Origin,
    user: &User,
    code: Option<&str>,
) -> Result<(), AppError> {
    use fluxi_core::accounts::{AccountError, PendingSecondFactor};
    let code = code.map(str::trim).filter(|c| !c.is_empty()).ok_or(AccountError::SecondFactorMissing)?;
    let proof = match fluxi_core::mfa::normalize_code(code) {
        Some(_) => SecondFactor::Code(code),
        None => SecondFactor::RecoveryCode(code),
    };
    // No browser or network on it: the link's action remembers them, once it has worked
    // (so a failed one tells nobody of a "new sign-in").
    let mut pending = PendingSecondFactor::new(user.id, state.clock.now());
    pending.sessions_epoch = user.sessions_epoch;
    state.password_gate(origin).second_factor(&mut pending, proof).await.map_err(|e| match e {
        AccountError::TooManyCodes => AccountError::SecondFactor(fluxi_core::mfa::MfaError::WrongCode),
        e => e,
    })?;
    Ok(())
}
