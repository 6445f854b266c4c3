//! Server functions for accounts. Each is a public POST endpoint: it validates every
//! field and checks the caller itself.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What the browser may know about the signed-in person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentUser {
    pub display_name: String,
    pub email: String,
    pub email_verified: bool,
}

/// A failed form submission handed back to its page once (see `ssr::StoredFlash`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormFlash {
    pub error: AppError,
    pub values: Vec<(String, String)>,
}

impl FormFlash {
    pub fn value(&self, field: &str) -> Option<String> {
        self.values.iter().find(|(k, _)| k == field).map(|(_, v)| v.clone())
    }
}

/// Only same-site paths are allowed as a post-sign-in destination: a single leading
/// slash, no scheme or host, no backslashes or control characters.
pub fn safe_next_path(next: Option<&str>) -> Option<String> {
    let next = next?.trim();
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && next.len() <= 512;
    ok.then(|| next.to_string())
}

/// What `/confirm-sign-up/:token` offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignUpLinkState {
    /// Give the sign-up's password to create the account at `email`.
    Usable {
        email: String,
    },
    Unusable {
        message: String,
    },
}

/// "Create account": the same answer whether or not the address has an account — the
/// fields checked, the sign-up counted and the password hashed either way, the mail
/// queued after the answer has gone (a task of its own, so its timing says nothing).
/// Nobody is signed in: the mailed link finishes the sign-up.
#[server(prefix = "/api", endpoint = "signup")]
pub async fn signup(
    display_name: String,
    email: String,
    password: String,
    next: Option<String>,
) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::sign_up::{accept_sign_up, queue_sign_up};
    let state = ssr::state()?;
    let network = ssr::client_network(&state);
    let now = state.clock.now();
    let from = fluxi_core::accounts::SignUpFrom {
        limits: &state.sign_up_limits,
        pseudonyms: &state.pseudonyms,
        client_network: network.as_deref(),
        now,
    };
    let accepted = accept_sign_up(&state.pool, &state.hasher, from, &display_name, &email, &password).await?;
    let next = safe_next_path(next.as_deref());
    ssr::after_answer(&state, "sign-up mail", move |state, mut conn, origin| async move {
        let audit = ssr::audit_with(&state, &origin, fluxi_core::audit::Actor::Anonymous { email_normalized: None });
        let (keys, base) = (&state.pseudonyms, &state.base_url);
        queue_sign_up(&mut conn, &audit, keys, &accepted, next.as_deref(), base, now).await
    });
    leptos_axum::redirect("/signup?sent=1");
    Ok(())
}

#[server(prefix = "/api", endpoint = "sign_up_link")]
pub async fn sign_up_link(token: String) -> Result<SignUpLinkState, AppError> {
    let state = crate::ssr::state()?;
    let mut conn = crate::ssr::conn(&state).await?;
    Ok(match fluxi_core::accounts::sign_up::sign_up_link(&mut conn, token.trim(), state.clock.now()).await? {
        Ok(email) => SignUpLinkState::Usable { email },
        Err(problem) => SignUpLinkState::Unusable { message: problem.to_string() },
    })
}

/// "Create account" on the mailed link's page: the link and the password chosen at
/// sign-up create the account, its address verified, and sign this browser in; then to
/// `next` (from the link: the page the sign-up started from), if it is a same-site path.
#[server(prefix = "/api", endpoint = "confirm_sign_up")]
pub async fn confirm_sign_up(token: String, password: String, next: Option<String>) -> Result<(), AppError> {
    use crate::ssr;
    if password.is_empty() {
        return Err(AppError::field("password", "Enter the password you chose when signing up."));
    }
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let origin = ssr::origin(&state);
    let device = ssr::device(&state);
    let audit = ssr::audit_with(&state, &origin, fluxi_core::audit::Actor::Anonymous { email_normalized: None });
    let place = fluxi_core::accounts::Place { network: origin.network.as_deref(), device: Some(&device) };
    let (pool, hasher, keys) = (&state.pool, &state.hasher, &state.pseudonyms);
    let user =
        fluxi_core::accounts::sign_up::confirm_sign_up(pool, hasher, &audit, token.trim(), &password, place, keys)
            .await?;
    ssr::start_session(&state, &session, &user, fluxi_core::sessions::SignedInWith::PasswordOnly).await?;
    ssr::remember_device(&state, &device);
    leptos_axum::redirect(&safe_next_path(next.as_deref()).unwrap_or_else(|| "/account".into()));
    Ok(())
}

#[server(prefix = "/api", endpoint = "login")]
pub async fn login(email: String, password: String, next: Option<String>) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::SignInOutcome;
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let origin = ssr::origin(&state);
    let next = safe_next_path(next.as_deref());
    let device = ssr::device(&state);
    let place = fluxi_core::accounts::Place { network: origin.network.as_deref(), device: Some(&device) };
    match state.password_gate(&origin).sign_in(&email, &password, place).await? {
        SignInOutcome::SignedIn(user) => {
            ssr::start_session(&state, &session, &user, fluxi_core::sessions::SignedInWith::PasswordOnly).await?;
            ssr::remember_device(&state, &device);
        }
        SignInOutcome::SecondFactorRequired(pending) => {
            // Nothing else is granted by this state; a fresh id all the same.
            session.cycle_id().await?;
            session.insert(crate::mfa::api::PENDING_KEY, crate::mfa::api::PendingSignIn { pending, next }).await?;
            leptos_axum::redirect("/login/mfa");
            return Ok(());
        }
    }
    leptos_axum::redirect(&next.unwrap_or_else(|| "/account".into()));
    Ok(())
}

#[server(prefix = "/api", endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    use fluxi_core::audit::{Action, Actor};
    let state = crate::ssr::state()?;
    let session = crate::ssr::session().await?;
    // Deletes the server-side row; the old cookie is worthless from here on.
    match crate::ssr::current_user(&state, &session).await? {
        Some(user) => {
            let actor = Actor::User { id: user.id, email_normalized: &user.email_normalized };
            crate::ssr::end_session(&state, &session, user.id, Action::SignedOut, actor).await?;
        }
        None => session.flush().await?,
    }
    crate::ssr::forget_cached_user();
    leptos_axum::redirect("/login");
    Ok(())
}

#[server(prefix = "/api", endpoint = "current_user")]
pub async fn fetch_current_user() -> Result<Option<CurrentUser>, AppError> {
    let state = crate::ssr::state()?;
    let session = crate::ssr::session().await?;
    Ok(crate::ssr::current_user(&state, &session).await?.map(|u| CurrentUser {
        display_name: u.display_name,
        email: u.email,
        email_verified: u.email_verified_at.is_some(),
    }))
}

/// Hands a plain-form page its last failed submission, once.
#[server(prefix = "/api", endpoint = "take_flash")]
pub async fn take_flash(form: String) -> Result<Option<FormFlash>, AppError> {
    let state = crate::ssr::state()?;
    Ok(crate::ssr::take_flash(&state, &form).map(|flash| FormFlash { error: flash.error, values: flash.values }))
}

#[cfg(test)]
mod tests {
    use super::safe_next_path;

    #[test]
    fn next_path_must_be_same_site() {
        assert_eq!(safe_next_path(Some("/account")), Some("/account".into()));
        assert_eq!(safe_next_path(Some("/account?tab=1")), Some("/account?tab=1".into()));
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/\\evil.example",
            "account",
            "",
            "/\n/x",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next_path(Some(bad)), None, "{bad}");
        }
        assert_eq!(safe_next_path(None), None);
    }
}
