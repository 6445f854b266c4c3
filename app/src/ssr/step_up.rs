//! Step-up re-authentication for sensitive actions.

use fluxi_core::accounts::User;

use super::AppState;
use crate::error::AppError;

/// The signed-in person's current password, checked like a sign-in, on the same count
/// (`fluxi_core::accounts::PasswordGate::check_current_password`). Callers hold no
/// database connection while it runs (the check is deliberately slow) and check again,
/// in their write's transaction, whatever they checked before it.
pub async fn step_up(state: &AppState, user: &User, password: &str) -> Result<(), AppError> {
    Ok(state.password_gate().check_current_password(user, password).await?)
}
