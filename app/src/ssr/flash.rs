//! Form flashes: what a plain HTML form post (no JavaScript) sent and why it failed, kept
//! for one page view, so that the page it is redirected back to can show the errors next
//! to their fields and keep what was typed.
//!
//! A flash travels in a short-lived signed cookie, not in the session: a visitor without
//! a session (most failed sign-ins) then costs no database row, however many forms they
//! post. Signed under the pseudonym key, so a page never shows a message we did not write.

use axum::http::{header, request::Parts, HeaderValue};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

const FLASH_COOKIE: &str = "__Host-fluxi_flash";
const FLASH_PURPOSE: &str = "flash-cookie";
/// Long enough for the redirect to be followed, short enough not to linger.
const FLASH_MAX_AGE_SECONDS: u32 = 120;
/// Browsers keep cookies up to about 4 KB; a flash that would not fit keeps no values.
const MAX_COOKIE_VALUE: usize = 3500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFlash {
    /// The server function's endpoint name (e.g. `login`).
    pub form: String,
    pub error: AppError,
    pub values: Vec<(String, String)>,
    /// When it was made (Unix seconds): the signature holds it, so a copied flash is
    /// worthless after [`FLASH_MAX_AGE_SECONDS`] whatever the cookie's own expiry.
    pub issued_at: i64,
}

/// The forms whose pages show a flash (sign-up and sign-in, which work without
/// JavaScript down to their error messages), and the fields each keeps. Nothing else is
/// kept: no other form gets a flash, and no field that is not listed here — so never a
/// password, and never `next`, which can carry an invitation link's token (the page
/// reads it from its own address again).
/// The two-factor forms keep no value at all: codes are never stored.
const FLASHED_FORMS: [(&str, &[&str]); 24] = [
    ("signup", &["display_name", "email"]),
    // Never the token: it stays in the page's own address.
    ("confirm_sign_up", &[]),
    ("login", &["email"]),
    ("verify_sign_in", &[]),
    ("start_totp_setup", &[]),
    ("confirm_totp_setup", &[]),
    ("regenerate_recovery_codes", &[]),
    ("disable_two_factor", &[]),
    ("sign_out_session", &[]),
    ("sign_out_other_sessions", &[]),
    ("confirm_identity", &[]),
    ("change_password", &[]),
    ("request_password_reset", &["email"]),
    // Never the token: it stays in the page's own address.
    ("reset_password", &[]),
    ("verify_email", &[]),
    ("resend_verification", &[]),
    ("change_email", &["email"]),
    ("confirm_email_change", &[]),
    ("revert_email_change", &[]),
    ("remove_passkey", &[]),
    // Never the key itself: only which provider's card the error belongs to.
    ("save_api_key", &["provider"]),
    ("connect_integration", &[]),
    ("disconnect_integration", &[]),
    ("check_integration", &[]),
];

/// The values a flash of `form` keeps, or `None` when `form` gets no flash.
fn kept_values(form: &str, submitted: Vec<(String, String)>) -> Option<Vec<(String, String)>> {
    let (_, fields) = FLASHED_FORMS.iter().find(|(name, _)| *name == form)?;
    Some(submitted.into_iter().filter(|(name, _)| fields.contains(&name.as_str())).collect())
}

/// The `Set-Cookie` value carrying the flash of a failed plain form post to `form`, if
/// its page shows one.
pub fn flash_cookie(
    keys: &fluxi_core::pseudonym::Pseudonymizer,
    form: &str,
    submitted: Vec<(String, String)>,
    error: AppError,
    now: time::OffsetDateTime,
) -> Option<HeaderValue> {
    let values = kept_values(form, submitted)?;
    let mut flash = StoredFlash { form: form.into(), error, values, issued_at: now.unix_timestamp() };
    let mut value = keys.sign(FLASH_PURPOSE, &serde_json::to_vec(&flash).ok()?);
    if value.len() > MAX_COOKIE_VALUE {
        flash.values.clear();
        value = keys.sign(FLASH_PURPOSE, &serde_json::to_vec(&flash).ok()?);
    }
    if value.len() > MAX_COOKIE_VALUE {
        return None;
    }
    let cookie =
        format!("{FLASH_COOKIE}={value}; Max-Age={FLASH_MAX_AGE_SECONDS}; Path=/; Secure; HttpOnly; SameSite=Lax");
    HeaderValue::from_str(&cookie).ok()
}

/// The flash this request carries, if it is ours, unaltered, recent and for `form`.
fn read_flash(
    keys: &fluxi_core::pseudonym::Pseudonymizer,
    parts: &Parts,
    form: &str,
    now: time::OffsetDateTime,
) -> Option<StoredFlash> {
    let value = super::request::cookie(parts, FLASH_COOKIE)?;
    let flash: StoredFlash = serde_json::from_slice(&keys.verify_signed(FLASH_PURPOSE, value)?).ok()?;
    let age = now.unix_timestamp() - flash.issued_at;
    (flash.form == form && (0..=i64::from(FLASH_MAX_AGE_SECONDS)).contains(&age)).then_some(flash)
}

/// The flash of `form`, once: the response removes the cookie (any flash cookie: one for
/// another form belongs to a page the visitor has left).
pub fn take_flash(state: &super::AppState, form: &str) -> Option<StoredFlash> {
    let parts = use_context::<Parts>()?;
    super::request::cookie(&parts, FLASH_COOKIE)?;
    let flash = read_flash(state.pseudonyms.current(), &parts, form, state.clock.now());
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        let removal = format!("{FLASH_COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax");
        if let Ok(value) = HeaderValue::from_str(&removal) {
            res.append_header(header::SET_COOKIE, value);
        }
    }
    flash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(cookie: &str) -> Parts {
        let request = axum::http::Request::builder().header(header::COOKIE, cookie).body(()).unwrap();
        request.into_parts().0
    }

    #[test]
    fn a_flash_round_trips_only_unaltered_and_for_its_form() {
        let keys = fluxi_core::pseudonym::Pseudonymizer::random();
        let submitted = vec![("email".to_string(), "a@example.test".to_string())];
        let now = time::OffsetDateTime::now_utc();
        let set = flash_cookie(&keys, "login", submitted, AppError::InvalidCredentials, now).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("Secure") && set.contains("Max-Age=120"), "{set}");
        let pair = set.split(';').next().unwrap();
        let parts = request_with(&format!("other=1; {pair}"));
        let flash = read_flash(&keys, &parts, "login", now).expect("its own flash");
        assert_eq!(flash.values, vec![("email".to_string(), "a@example.test".to_string())]);
        assert_eq!(read_flash(&keys, &parts, "signup", now), None, "another form's");
        let later = now + time::Duration::seconds(121);
        assert_eq!(read_flash(&keys, &parts, "login", later), None, "too old, whatever the cookie says");
        let other_key = fluxi_core::pseudonym::Pseudonymizer::random();
        assert_eq!(read_flash(&other_key, &parts, "login", now), None, "not signed by us");
        let forged = keys.sign("another purpose", serde_json::to_vec(&flash).unwrap().as_slice());
        assert_eq!(read_flash(&keys, &request_with(&format!("{FLASH_COOKIE}={forged}")), "login", now), None);
    }

    #[test]
    fn an_oversized_flash_keeps_its_message_but_not_the_values() {
        let keys = fluxi_core::pseudonym::Pseudonymizer::random();
        let submitted = vec![("email".to_string(), "a".repeat(3000))];
        let now = time::OffsetDateTime::now_utc();
        let set = flash_cookie(&keys, "login", submitted, AppError::InvalidCredentials, now).unwrap();
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
        let flash = read_flash(&keys, &request_with(&pair), "login", now).unwrap();
        assert!(flash.values.is_empty());
        assert_eq!(flash.error, AppError::InvalidCredentials);
    }

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
