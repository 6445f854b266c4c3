//! Step-up re-authentication for sensitive actions.

use fluxi_core::accounts::{StepUpFor, User};

use super::AppState;
use crate::error::AppError;

/// The signed-in person's current password, checked like a sign-in, on the same count
/// (`fluxi_core::accounts::PasswordGate::check_current_password`); a failure is recorded
/// in the trail of the workspace the action was for. Callers hold no database connection
/// while it runs (the check is deliberately slow) and check again, in their write's
/// transaction, whatever they checked before it.
pub async fn step_up(state: &AppState, user: &User, password: &str, purpose: StepUpFor) -> Result<(), AppError> {
    let origin = super::origin(state);
    Ok(state.password_gate(&origin).check_current_password(user, password, purpose).await?)
}
