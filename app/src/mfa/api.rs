//! Server functions of two-factor authentication: the second step of signing in, and the
//! "Two-factor authentication" section of `/account/security`. Each is a public endpoint:
//! it checks the caller and validates its input itself.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// The set-up waiting for its first code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSetup {
    /// Inline `<svg>` drawn by the server from the otpauth URI.
    pub qr_svg: String,
    /// The secret in base 32, grouped, for typing into the app.
    pub text_key: String,
    pub expires_at_utc: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityView {
    pub email: String,
    pub mfa_enabled: bool,
    pub pending: Option<PendingSetup>,
    pub recovery_codes_left: i64,
    /// Recovery codes made by the last action, shown once: gone on the next load.
    pub fresh_codes: Option<Vec<String>>,
    /// This session confirmed who it is within the step-up window: no password asked.
    pub step_up_fresh: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondStepState {
    /// A sign-in waits for its second factor in this session.
    pub waiting: bool,
    /// Its account has a passkey, which can be the second factor.
    pub passkeys: bool,
}

#[cfg(feature = "ssr")]
pub(crate) use imp::{PendingSignIn, PENDING_KEY};

#[cfg(feature = "ssr")]
mod imp {
    pub use crate::ssr;
    pub use fluxi_core::accounts::{PendingSecondFactor, SecondFactor, StepUpFor};
    pub use fluxi_core::audit::Action;
    pub use fluxi_core::mfa;
    use fluxi_core::secrets::{Purpose, Sealed};
    use serde::{Deserialize, Serialize};
    use tower_sessions::Session;

    use crate::error::AppError;

    /// The sign-in waiting for its second factor, and where to go after it.
    pub const PENDING_KEY: &str = "pending_second_factor";

    #[derive(Serialize, Deserialize)]
    pub struct PendingSignIn {
        pub pending: PendingSecondFactor,
        pub next: Option<String>,
    }

    /// Fresh recovery codes wait in the session for the page that shows them once — sealed
    /// (the session table must never hold them in clear), bound to the account.
    const FRESH_CODES_KEY: &str = "fresh_recovery_codes";

    #[derive(Serialize, Deserialize)]
    struct SealedCodes {
        key_version: i32,
        bytes: Vec<u8>,
    }

    pub async fn keep_fresh_codes(
        state: &ssr::AppState,
        session: &Session,
        user: uuid::Uuid,
        codes: &mfa::RecoveryCodes,
    ) -> Result<(), AppError> {
        let joined = zeroize::Zeroizing::new(codes.0.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("\n"));
        let sealed = state.keyring.seal(Purpose::RecoveryCode, &[user.as_bytes()], joined.as_bytes());
        session.insert(FRESH_CODES_KEY, SealedCodes { key_version: sealed.key_version, bytes: sealed.bytes }).await?;
        Ok(())
    }

    pub async fn take_fresh_codes(
        state: &ssr::AppState,
        session: &Session,
        user: uuid::Uuid,
    ) -> Result<Option<Vec<String>>, AppError> {
        let Some(stored) = session.remove::<SealedCodes>(FRESH_CODES_KEY).await? else { return Ok(None) };
        let sealed = Sealed { key_version: stored.key_version, bytes: stored.bytes };
        // Sealed for another account (a sign-in in between) or with a dropped key: not shown.
        let Ok(plain) = state.keyring.open(Purpose::RecoveryCode, &[user.as_bytes()], &sealed) else {
            return Ok(None);
        };
        Ok(Some(String::from_utf8_lossy(&plain).lines().map(str::to_string).collect()))
    }

    /// The security page, keeping a same-site `next` (where a workspace that requires
    /// two-factor authentication sent the person) for the "Continue" link.
    pub fn security_path(next: Option<&str>, anchor: &str) -> String {
        match crate::auth::api::safe_next_path(next) {
            Some(next) => {
                let encoded: String = next
                    .bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect();
                format!("/account/security?next={encoded}{anchor}")
            }
            None => format!("/account/security{anchor}"),
        }
    }

    pub fn blank(value: &Option<String>) -> Option<&str> {
        value.as_deref().filter(|v| !v.trim().is_empty())
    }
}

#[server(prefix = "/api", endpoint = "security_page")]
pub async fn security_page() -> Result<SecurityView, AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let session = ssr::session().await?;
    let now = state.clock.now();
    let mut conn = ssr::conn(&state).await?;
    let status = mfa::status(&mut conn, user.id, now).await?;
    let pending = match status.pending {
        true => {
            mfa::pending_enrolment(&mut conn, &state.keyring, now, user.id, &user.email).await?.map(|e| PendingSetup {
                qr_svg: e.qr_svg,
                text_key: e.text_key,
                expires_at_utc: e
                    .expires_at
                    .format(&time::macros::format_description!("[hour]:[minute] UTC"))
                    .unwrap_or_default(),
            })
        }
        false => None,
    };
    Ok(SecurityView {
        email: user.email.clone(),
        mfa_enabled: status.enabled,
        pending,
        recovery_codes_left: status.recovery_codes_left,
        fresh_codes: take_fresh_codes(&state, &session, user.id).await?,
        step_up_fresh: ssr::step_up_fresh(&state, &session).await?,
    })
}

/// "Set up authenticator app": a fresh secret, pending until confirmed.
#[server(prefix = "/api", endpoint = "start_totp_setup")]
pub async fn start_totp_setup(next: Option<String>) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let mut conn = ssr::conn(&state).await?;
    mfa::start_enrolment(&mut conn, &state.keyring, state.clock.now(), user.id, &user.email).await?;
    leptos_axum::redirect(&security_path(next.as_deref(), ""));
    Ok(())
}

/// "Enable two-factor authentication": the first code confirms the set-up. Step-up with
/// the password: someone holding a stolen session must not be able to bind their own
/// app to the account and lock its owner out.
#[server(prefix = "/api", endpoint = "confirm_totp_setup")]
pub async fn confirm_totp_setup(code: String, password: String, next: Option<String>) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let session = ssr::session().await?;
    if mfa::normalize_code(&code).is_none() {
        return Err(mfa::MfaError::MalformedCode.into());
    }
    ssr::step_up(&state, &user, &password, None, None, StepUpFor::account(Action::MfaEnabled)).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    let codes = mfa::confirm_enrolment(&mut conn, &audit, &state.keyring, user.id, &user.email, &code).await?;
    // The code just given proves the authenticator in this session.
    ssr::note_second_factor(&session).await?;
    keep_fresh_codes(&state, &session, user.id, &codes).await?;
    leptos_axum::redirect(&security_path(next.as_deref(), "#recovery-codes"));
    Ok(())
}

/// "Regenerate recovery codes" (step-up): the whole set is replaced.
#[server(prefix = "/api", endpoint = "regenerate_recovery_codes")]
pub async fn regenerate_recovery_codes(password: String, code: Option<String>) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let session = ssr::session().await?;
    let purpose = StepUpFor::account(Action::RecoveryCodesRegenerated);
    ssr::step_up(&state, &user, &password, blank(&code), None, purpose).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    let codes = mfa::regenerate_recovery_codes(&mut conn, &audit, &state.keyring, user.id).await?;
    keep_fresh_codes(&state, &session, user.id, &codes).await?;
    leptos_axum::redirect("/account/security#recovery-codes");
    Ok(())
}

/// "Turn off two-factor authentication" (step-up).
#[server(prefix = "/api", endpoint = "disable_two_factor")]
pub async fn disable_two_factor(password: String, code: Option<String>) -> Result<(), AppError> {
    use imp::*;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let purpose = StepUpFor::account(Action::MfaDisabled);
    ssr::step_up(&state, &user, &password, blank(&code), None, purpose).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    mfa::disable(&mut conn, &audit, user.id).await?;
    leptos_axum::redirect("/account/security");
    Ok(())
}

/// Whether `/login/mfa` has a sign-in to finish.
#[server(prefix = "/api", endpoint = "second_step")]
pub async fn second_step() -> Result<SecondStepState, AppError> {
    use imp::*;
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let pending = session.get::<PendingSignIn>(PENDING_KEY).await?.filter(|p| !p.pending.expired(state.clock.now()));
    let passkeys = match &pending {
        Some(p) => fluxi_core::passkeys::has_passkeys(&mut *ssr::conn(&state).await?, p.pending.user_id).await?,
        None => false,
    };
    Ok(SecondStepState { waiting: pending.is_some(), passkeys })
}

/// "Use a passkey" on the second step, first half: options for one of the account's
/// passkeys, as JSON.
#[server(prefix = "/api", endpoint = "start_passkey_second_step")]
pub async fn start_passkey_second_step() -> Result<String, AppError> {
    use fluxi_core::accounts::AccountError;
    use imp::*;
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let now = state.clock.now();
    let Some(PendingSignIn { pending, .. }) =
        session.get::<PendingSignIn>(PENDING_KEY).await?.filter(|p| !p.pending.expired(now))
    else {
        return Err(AccountError::SecondFactorExpired.into());
    };
    let rp = state.relying_party()?;
    let mut conn = ssr::conn(&state).await?;
    let (ceremony, options) = fluxi_core::passkeys::start_second_factor(&mut conn, &rp, pending.user_id, now)
        .await?
        .ok_or_else(|| AppError::Rejected("This account has no passkey. Use a code instead.".into()))?;
    ssr::set_passkey_ceremony(&state, ceremony);
    serde_json::to_string(&options).map_err(AppError::internal)
}

/// "Use a passkey" on the second step, second half: the passkey's answer, checked like a
/// code (same counts). Returns where to go next.
#[server(prefix = "/api", endpoint = "finish_passkey_second_step")]
pub async fn finish_passkey_second_step(credential: String) -> Result<String, AppError> {
    use fluxi_core::accounts::AccountError;
    use fluxi_core::mfa::MfaError;
    use imp::*;
    let state = ssr::state()?;
    let challenge = ssr::take_passkey_ceremony(&state).ok_or(AccountError::SecondFactor(MfaError::PasskeyRefused))?;
    let credential =
        serde_json::from_str(&credential).map_err(|_| AccountError::SecondFactor(MfaError::PasskeyRefused))?;
    let rp = state.relying_party()?;
    let next =
        finish_second_step(&state, SecondFactor::Passkey { rp: &rp, challenge, credential: &credential }).await?;
    Ok(next)
}

/// The second step of a sign-in: "Verify" with a code from the app, or a recovery code.
#[server(prefix = "/api", endpoint = "verify_sign_in")]
pub async fn verify_sign_in(code: Option<String>, recovery_code: Option<String>) -> Result<(), AppError> {
    use fluxi_core::accounts::AccountError;
    use imp::*;
    let state = ssr::state()?;
    let session = ssr::session().await?;
    if session.get::<PendingSignIn>(PENDING_KEY).await?.is_none() {
        return Err(AccountError::SecondFactorExpired.into());
    }
    let proof = match (blank(&code), blank(&recovery_code)) {
        (Some(code), _) => SecondFactor::Code(code),
        (None, Some(code)) => SecondFactor::RecoveryCode(code),
        (None, None) if recovery_code.is_some() => {
            return Err(AppError::field("recovery_code", "Enter one of your recovery codes."))
        }
        (None, None) => return Err(AppError::field("code", "Enter the 6-digit code from your authenticator app.")),
    };
    let next = finish_second_step(&state, proof).await?;
    leptos_axum::redirect(&next);
    Ok(())
}

/// Checks `proof` against the sign-in waiting in this session; on success signs in and
/// returns where to go next. Too many wrong answers, or an expired sign-in, end the wait.
#[cfg(feature = "ssr")]
async fn finish_second_step(
    state: &crate::ssr::AppState,
    proof: fluxi_core::accounts::SecondFactor<'_>,
) -> Result<String, AppError> {
    use fluxi_core::accounts::AccountError;
    use imp::*;
    let session = ssr::session().await?;
    let Some(PendingSignIn { mut pending, next }) = session.get::<PendingSignIn>(PENDING_KEY).await? else {
        return Err(AccountError::SecondFactorExpired.into());
    };
    let origin = ssr::origin(state);
    match state.password_gate(&origin).second_factor(&mut pending, proof).await {
        Ok(user) => {
            session.remove::<PendingSignIn>(PENDING_KEY).await?;
            ssr::start_session(state, &session, &user, fluxi_core::sessions::SignedInWith::SecondFactor).await?;
            if let Some(device) = &pending.device {
                ssr::remember_device(state, device);
            }
            Ok(crate::auth::api::safe_next_path(next.as_deref()).unwrap_or_else(|| "/account".into()))
        }
        Err(e @ (AccountError::TooManyCodes | AccountError::SecondFactorExpired)) => {
            session.remove::<PendingSignIn>(PENDING_KEY).await?;
            Err(e.into())
        }
        Err(e) => {
            session.insert(PENDING_KEY, PendingSignIn { pending, next }).await?;
            Err(e.into())
        }
    }
}
