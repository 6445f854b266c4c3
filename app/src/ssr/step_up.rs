//! Step-up re-authentication for sensitive actions.

use fluxi_core::accounts::{SecondFactor, StepUpFor, User};

use super::AppState;
use crate::error::AppError;

/// The signed-in person's current password — and, with two-factor authentication on, a
/// code from their app (`code`) or a recovery code (`recovery_code`) — checked like a
/// sign-in, on the same count (`fluxi_core::accounts::PasswordGate::check_current_password`);
/// the outcome is recorded in the trail of the workspace the action is for, or the
/// account's. Callers hold no database connection while it runs (the check is
/// deliberately slow) and check again, in their write's transaction, whatever they
/// checked before it.
pub async fn step_up(
    state: &AppState,
    user: &User,
    password: &str,
    code: Option<&str>,
    recovery_code: Option<&str>,
    purpose: StepUpFor,
) -> Result<(), AppError> {
    let origin = super::origin(state);
    // One field takes either: six digits are an app code, anything else a recovery code.
    let second = match (code.filter(|c| !c.trim().is_empty()), recovery_code.filter(|c| !c.trim().is_empty())) {
        (Some(code), _) if fluxi_core::mfa::normalize_code(code).is_some() => Some(SecondFactor::Code(code)),
        (Some(code), _) | (None, Some(code)) => Some(SecondFactor::RecoveryCode(code)),
        (None, None) => None,
    };
    Ok(state.password_gate(&origin).check_current_password(user, password, second, purpose).await?)
}
