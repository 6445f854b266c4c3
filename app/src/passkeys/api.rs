//! Server functions of passkeys. Each is a public endpoint: it checks the caller and
//! validates its input itself. A ceremony is started and finished by two calls; between
//! them its state stays on the server, bound to this browser by a signed cookie.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A passkey as the security page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    /// When it was added and last used, as `YYYY-MM-DD HH:MM UTC`.
    pub added: String,
    pub last_used: Option<String>,
}

#[cfg(feature = "ssr")]
fn shown(at: time::OffsetDateTime) -> String {
    at.format(&time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).unwrap_or_default()
}

#[server(prefix = "/api", endpoint = "passkeys")]
pub async fn passkeys() -> Result<Vec<PasskeyView>, AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let mut conn = ssr::conn(&state).await?;
    let list = fluxi_core::passkeys::list(&mut conn, user.id).await?;
    Ok(list
        .into_iter()
        .map(|p| PasskeyView {
            id: p.id.to_string(),
            name: p.name,
            added: shown(p.created_at),
            last_used: p.last_used_at.map(shown),
        })
        .collect())
}

/// "Add a passkey", first half: the name, and a step-up every time (a passkey signs in on
/// its own and outlives every session: a stolen session, even one that just confirmed
/// who it is, must not be able to add one). Returns the options for
/// `navigator.credentials.create`, as JSON.
#[server(prefix = "/api", endpoint = "start_passkey_registration")]
pub async fn start_passkey_registration(
    name: String,
    password: String,
    code: Option<String>,
) -> Result<String, AppError> {
    use crate::ssr;
    use fluxi_core::accounts::StepUpFor;
    use fluxi_core::audit::Action;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    fluxi_core::passkeys::validate_name(&name)?;
    let code = code.filter(|c| !c.trim().is_empty());
    ssr::step_up_now(&state, &user, &password, code.as_deref(), StepUpFor::account(Action::PasskeyAdded)).await?;
    let rp = state.relying_party()?;
    let mut conn = ssr::conn(&state).await?;
    let (ceremony, options) =
        fluxi_core::passkeys::start_registration(&mut conn, &rp, &user, state.clock.now()).await?;
    ssr::set_passkey_ceremony(&state, ceremony);
    serde_json::to_string(&options).map_err(AppError::internal)
}

/// "Add a passkey", second half: the authenticator's answer (`PublicKeyCredential.toJSON()`).
#[server(prefix = "/api", endpoint = "finish_passkey_registration")]
pub async fn finish_passkey_registration(name: String, credential: String) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::passkeys::PasskeyError;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let ceremony = ssr::take_passkey_ceremony(&state).ok_or(PasskeyError::NoChallenge)?;
    let credential = serde_json::from_str(&credential).map_err(|_| PasskeyError::Refused)?;
    let rp = state.relying_party()?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    fluxi_core::passkeys::finish_registration(&mut conn, &rp, &audit, user.id, ceremony, &name, &credential).await?;
    Ok(())
}

/// "Remove passkey": which one, and a step-up.
#[server(prefix = "/api", endpoint = "remove_passkey")]
pub async fn remove_passkey(passkey: String, password: String, code: Option<String>) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::accounts::StepUpFor;
    use fluxi_core::audit::Action;
    use fluxi_core::passkeys::PasskeyError;
    let state = ssr::state()?;
    let user = ssr::require_user(&state).await?;
    let id = uuid::Uuid::parse_str(passkey.trim()).map_err(|_| PasskeyError::NotFound)?;
    let code = code.filter(|c| !c.trim().is_empty());
    ssr::step_up(&state, &user, &password, code.as_deref(), None, StepUpFor::account(Action::PasskeyRemoved)).await?;
    let origin = ssr::origin(&state);
    let audit = ssr::audit_as(&state, &origin, &user);
    let mut conn = ssr::conn(&state).await?;
    fluxi_core::passkeys::remove(&mut conn, &audit, user.id, id).await?;
    leptos_axum::redirect("/account/security?passkey=removed#passkeys");
    Ok(())
}

/// "Sign in with a passkey", first half: options for `navigator.credentials.get` (any
/// passkey of this site), as JSON. Limited per client network: each start stores a
/// challenge.
#[server(prefix = "/api", endpoint = "start_passkey_sign_in")]
pub async fn start_passkey_sign_in() -> Result<String, AppError> {
    use crate::ssr;
    let state = ssr::state()?;
    let rp = state.relying_party()?;
    let origin = ssr::origin(&state);
    let now = state.clock.now();
    let mut conn = ssr::conn(&state).await?;
    let key = match origin.network.as_deref() {
        Some(network) => state.pseudonyms.current().pseudonym("passkey-network", network),
        None => b"passkey-unknown-network".to_vec(),
    };
    let limit = match origin.network {
        Some(_) => fluxi_core::passkeys::SIGN_IN_STARTS_PER_NETWORK,
        None => fluxi_core::passkeys::SIGN_IN_STARTS_UNKNOWN_NETWORK,
    };
    if let Err(wait) = fluxi_core::rate_limit::take(&mut conn, &key, limit, now).await? {
        return Err(AppError::too_many(
            "Too many passkey sign-ins from your network. Try again later.",
            Some(wait.try_into().unwrap_or_default()),
        ));
    }
    let (ceremony, options) = fluxi_core::passkeys::start_sign_in(&mut conn, &rp, now).await?;
    ssr::set_passkey_ceremony(&state, ceremony);
    serde_json::to_string(&options).map_err(AppError::internal)
}

/// "Sign in with a passkey", second half: the authenticator's answer. A passkey with user
/// verification counts as both factors.
#[server(prefix = "/api", endpoint = "finish_passkey_sign_in")]
pub async fn finish_passkey_sign_in(credential: String) -> Result<(), AppError> {
    use crate::ssr;
    use fluxi_core::passkeys::PasskeyError;
    use fluxi_core::sessions::SignedInWith;
    let state = ssr::state()?;
    let session = ssr::session().await?;
    let ceremony = ssr::take_passkey_ceremony(&state).ok_or(PasskeyError::NoChallenge)?;
    let credential = serde_json::from_str(&credential).map_err(|_| PasskeyError::Refused)?;
    let rp = state.relying_party()?;
    let origin = ssr::origin(&state);
    let device = ssr::device(&state);
    let audit = ssr::audit_with(&state, &origin, fluxi_core::audit::Actor::Anonymous { email_normalized: None });
    let place = fluxi_core::accounts::Place { network: origin.network.as_deref(), device: Some(&device) };
    let mut conn = ssr::conn(&state).await?;
    let user = fluxi_core::passkeys::finish_sign_in(&mut conn, &rp, &audit, ceremony, &credential, place).await?;
    drop(conn);
    ssr::start_session(&state, &session, &user, SignedInWith::SecondFactor).await?;
    ssr::remember_device(&state, &device);
    Ok(())
}
