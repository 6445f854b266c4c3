//! Form flashes: what a plain HTML form post (no JavaScript) sent and why it failed, kept
//! in the session for one page view, so that the page it is redirected back to can show
//! the errors next to their fields and keep what was typed.

use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::error::AppError;

const FLASH_KEY: &str = "flash";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredFlash {
    /// The server function's endpoint name (e.g. `login`).
    pub form: String,
    pub error: AppError,
    pub values: Vec<(String, String)>,
}

/// Fields whose values are never kept: they would come back in the page's data. Matched
/// as parts of the field name, so `current_password` or `recovery_code` are covered too.
const SECRET_FIELD_PARTS: [&str; 5] = ["password", "token", "code", "secret", "key"];

fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_FIELD_PARTS.iter().any(|part| name.contains(part))
}

/// Stores the flash of a failed plain form post to `form`, without its secret fields.
pub async fn store_flash(session: &Session, form: &str, submitted: Vec<(String, String)>, error: AppError) {
    let values = submitted.into_iter().filter(|(name, _)| !is_secret_field(name)).collect();
    let flash = StoredFlash { form: form.into(), error, values };
    if let Err(e) = session.insert(FLASH_KEY, flash).await {
        tracing::warn!(error = %e, "could not store form flash");
    }
}

/// The flash of `form`, once: it is removed as it is read.
pub async fn take_flash(session: &Session, form: &str) -> Option<StoredFlash> {
    let stored: StoredFlash = session.get(FLASH_KEY).await.ok().flatten()?;
    if stored.form != form {
        return None;
    }
    let _ = session.remove::<StoredFlash>(FLASH_KEY).await;
    Some(stored)
}

#[cfg(test)]
mod tests {
    use super::is_secret_field;

    #[test]
    fn secret_fields_are_recognised_by_name() {
        for secret in ["password", "current_password", "new_password", "token", "code", "recovery_code", "Secret", "api_key"] {
            assert!(is_secret_field(secret), "{secret}");
        }
        for kept in ["email", "display_name", "next", "name", "slug", "role", "title", "body"] {
            assert!(!is_secret_field(kept), "{kept}");
        }
    }
}
