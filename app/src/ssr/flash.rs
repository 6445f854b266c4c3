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

/// The forms whose pages show a flash (sign-up and sign-in, which work without
/// JavaScript down to their error messages), and the fields each keeps. Nothing else is
/// kept: no other form gets a flash, and no field that is not listed here — so never a
/// password, and never `next`, which can carry an invitation link's token (the page
/// reads it from its own address again).
/// The two-factor forms keep no value at all: codes are never stored.
const FLASHED_FORMS: [(&str, &[&str]); 7] = [
    ("signup", &["display_name", "email"]),
    ("login", &["email"]),
    ("verify_sign_in", &[]),
    ("start_totp_setup", &[]),
    ("confirm_totp_setup", &[]),
    ("regenerate_recovery_codes", &[]),
    ("disable_two_factor", &[]),
];

/// The values a flash of `form` keeps, or `None` when `form` gets no flash.
fn kept_values(form: &str, submitted: Vec<(String, String)>) -> Option<Vec<(String, String)>> {
    let (_, fields) = FLASHED_FORMS.iter().find(|(name, _)| *name == form)?;
    Some(submitted.into_iter().filter(|(name, _)| fields.contains(&name.as_str())).collect())
}

/// Stores the flash of a failed plain form post to `form`, if its page shows one.
pub async fn store_flash(session: &Session, form: &str, submitted: Vec<(String, String)>, error: AppError) {
    let Some(values) = kept_values(form, submitted) else { return };
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
    use super::kept_values;

    fn submitted(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_listed_fields_of_listed_forms_are_kept() {
        let login =
            submitted(&[("email", "a@example.test"), ("password", "hunter22hunter22"), ("next", "/invite/abc")]);
        assert_eq!(kept_values("login", login), Some(submitted(&[("email", "a@example.test")])));
        let signup = submitted(&[("display_name", "Ann"), ("email", "a@example.test"), ("password", "pw")]);
        assert_eq!(
            kept_values("signup", signup),
            Some(submitted(&[("display_name", "Ann"), ("email", "a@example.test")]))
        );
        for form in ["create_note", "invite_member", "transfer_ownership", "delete_workspace", "unknown"] {
            assert_eq!(kept_values(form, submitted(&[("title", "secret plans")])), None, "{form}");
        }
    }
}
