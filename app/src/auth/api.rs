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
}

/// A failed form submission handed back to its page once (see `server::StoredFlash`).
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

#[server(prefix = "/api", endpoint = "signup")]
pub async fn signup(display_name: String, email: String, password: String) -> Result<(), AppError> {
    use crate::server::{self, fail};
    use fluxi_core::accounts::{self, CreateUserError, NewUser};

    let values = [("display_name", display_name.as_str()), ("email", email.as_str())];
    let state = server::state()?;
    let session = server::session().await?;

    let mut errors = Vec::new();
    let name = accounts::validate_display_name(&display_name).map_err(|e| errors.push(e));
    let email_ok = accounts::validate_email(&email).map_err(|e| errors.push(e));
    let _ = accounts::validate_password(&password).map_err(|e| errors.push(e));
    let (Ok(name), Ok(email_trimmed)) = (name, email_ok) else {
        return Err(fail("signup", &values, invalid(errors)).await);
    };
    if !errors.is_empty() {
        return Err(fail("signup", &values, invalid(errors)).await);
    }

    let hash = match state.hasher.hash(&password).await {
        Ok(h) => h,
        Err(fluxi_core::accounts::HashError::Busy) => return Err(fail("signup", &values, AppError::Busy).await),
        Err(e) => return Err(fail("signup", &values, server::internal(e)).await),
    };
    let mut conn = server::conn(&state).await?;
    let created = accounts::create_user(
        &mut conn,
        NewUser {
            email: &email_trimmed,
            email_normalized: &accounts::normalize_email(&email_trimmed),
            display_name: &name,
            password_hash: &hash,
        },
    )
    .await;
    drop(conn);
    let user = match created {
        Ok(user) => user,
        Err(CreateUserError::EmailTaken) => {
            let e = AppError::field("email", "An account with this email already exists. Sign in instead.");
            return Err(fail("signup", &values, e).await);
        }
        Err(CreateUserError::Database(e)) => return Err(fail("signup", &values, server::internal(e)).await),
    };
    server::start_session(&state, &session, &user).await?;
    leptos_axum::redirect("/account");
    Ok(())
}

#[cfg(feature = "ssr")]
fn invalid(errors: Vec<fluxi_core::accounts::InputError>) -> AppError {
    AppError::Invalid(
        errors
            .into_iter()
            .map(|e| crate::error::FieldError { field: e.field().into(), message: e.to_string() })
            .collect(),
    )
}

#[server(prefix = "/api", endpoint = "login")]
pub async fn login(email: String, password: String, next: Option<String>) -> Result<(), AppError> {
    use crate::server::{self, fail};
    use fluxi_core::accounts::{self, HashError, PasswordHasher, PASSWORD_MAX_CHARS};

    let next_value = next.clone().unwrap_or_default();
    let values = [("email", email.as_str()), ("next", next_value.as_str())];
    let state = server::state()?;
    let session = server::session().await?;

    let mut errors = Vec::new();
    if email.trim().is_empty() {
        errors.push(crate::error::FieldError { field: "email".into(), message: "Enter your email address.".into() });
    } else if email.chars().count() > 254 {
        errors.push(crate::error::FieldError { field: "email".into(), message: "Email address must be at most 254 characters.".into() });
    }
    if password.is_empty() {
        errors.push(crate::error::FieldError { field: "password".into(), message: "Enter your password.".into() });
    } else if password.chars().count() > PASSWORD_MAX_CHARS {
        errors.push(crate::error::FieldError {
            field: "password".into(),
            message: format!("Password must be at most {PASSWORD_MAX_CHARS} characters."),
        });
    }
    if !errors.is_empty() {
        return Err(fail("login", &values, AppError::Invalid(errors)).await);
    }

    let normalized = accounts::normalize_email(&email);
    let throttle_key = accounts::sign_in_key(&state.pseudonyms, &normalized);
    let throttle = &state.sign_in_throttle;
    // Also counted per client network, across accounts: against trying one common password
    // on many accounts, which no single account's count would notice.
    let client_key = server::client_network(&state).map(|network| accounts::client_sign_in_key(&state.pseudonyms, &network));
    let mut conn = server::conn(&state).await?;
    // Refused before the password is looked at: while blocked, even the right one fails.
    if let Some(wait) = accounts::sign_in_refused_for(&mut conn, throttle, &throttle_key, state.clock.now())
        .await
        .map_err(server::internal)?
    {
        return Err(fail("login", &values, server::too_many_wrong_passwords(wait)).await);
    }
    if let Some(key) = &client_key {
        if let Some(wait) = accounts::sign_in_refused_for(&mut conn, &state.client_sign_in_throttle, key, state.clock.now())
            .await
            .map_err(server::internal)?
        {
            return Err(fail("login", &values, server::too_many_failed_sign_ins_from_network(wait)).await);
        }
    }
    let login = accounts::find_login_by_email(&mut conn, &normalized).await.map_err(server::internal)?;
    drop(conn);
    // Unknown emails are verified against a dummy hash: same work, same answer.
    let verified = match state.hasher.verify(&password, login.as_ref().map(|(_, hash)| hash.as_str())).await {
        Ok(v) => v,
        Err(HashError::Busy) => return Err(fail("login", &values, AppError::Busy).await),
        Err(e) => return Err(fail("login", &values, server::internal(e)).await),
    };
    let Some((user, stored_hash)) = login.filter(|_| verified) else {
        // Unknown emails are counted too: a refusal never says whether an account exists.
        let mut conn = server::conn(&state).await?;
        accounts::record_failed_sign_in(&mut conn, throttle, &throttle_key, state.clock.now())
            .await
            .map_err(server::internal)?;
        if let Some(key) = &client_key {
            accounts::record_failed_sign_in(&mut conn, &state.client_sign_in_throttle, key, state.clock.now())
                .await
                .map_err(server::internal)?;
        }
        return Err(fail("login", &values, AppError::InvalidCredentials).await);
    };
    {
        // The account's count only: a client's count is not forgiven by one success, or
        // signing in to one's own account between tries would reset it.
        let mut conn = server::conn(&state).await?;
        accounts::clear_failed_sign_ins(&mut conn, &throttle_key).await.map_err(server::internal)?;
    }

    if PasswordHasher::needs_rehash(stored_hash.as_str()) {
        if let Ok(new_hash) = state.hasher.hash(&password).await {
            let mut conn = server::conn(&state).await?;
            if let Err(e) = accounts::update_password_hash(&mut conn, user.id, &new_hash).await {
                tracing::warn!(error = %e, "could not upgrade a password hash");
            }
        }
    }
    server::start_session(&state, &session, &user).await?;
    leptos_axum::redirect(&safe_next_path(next.as_deref()).unwrap_or_else(|| "/account".into()));
    Ok(())
}

#[server(prefix = "/api", endpoint = "logout")]
pub async fn logout() -> Result<(), AppError> {
    let session = crate::server::session().await?;
    // Deletes the server-side row; the old cookie is worthless from here on.
    session.flush().await.map_err(crate::server::internal)?;
    crate::server::forget_cached_user();
    leptos_axum::redirect("/login");
    Ok(())
}

#[server(prefix = "/api", endpoint = "current_user")]
pub async fn fetch_current_user() -> Result<Option<CurrentUser>, AppError> {
    let state = crate::server::state()?;
    let session = crate::server::session().await?;
    Ok(crate::server::current_user(&state, &session)
        .await?
        .map(|u| CurrentUser { display_name: u.display_name, email: u.email }))
}

/// Hands a plain-form page its last failed submission, once.
#[server(prefix = "/api", endpoint = "take_flash")]
pub async fn take_flash(form: String) -> Result<Option<FormFlash>, AppError> {
    use crate::server::{StoredFlash, FLASH_KEY};
    let session = crate::server::session().await?;
    let stored: Option<StoredFlash> = session.get(FLASH_KEY).await.ok().flatten();
    match stored {
        Some(flash) if flash.form == form => {
            let _ = session.remove::<StoredFlash>(FLASH_KEY).await;
            Ok(Some(FormFlash { error: flash.error, values: flash.values }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next_path;

    #[test]
    fn next_path_must_be_same_site() {
        assert_eq!(safe_next_path(Some("/account")), Some("/account".into()));
        assert_eq!(safe_next_path(Some("/account?tab=1")), Some("/account?tab=1".into()));
        for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", "account", "", "/\n/x", "javascript:alert(1)"] {
            assert_eq!(safe_next_path(Some(bad)), None, "{bad}");
        }
        assert_eq!(safe_next_path(None), None);
    }
}
