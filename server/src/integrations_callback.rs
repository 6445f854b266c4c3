//! `GET /integrations/callback`: where providers send the browser back after consent
//! (the one redirect URI registered with every provider). The vault checks the state and
//! finishes the connection (`fluxi_core::integrations::connect::finish`); this handler
//! only reads the request and says where to go next.

use app::ssr::AppState;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use fluxi_core::integrations::connect::{self, CallbackParams};
use fluxi_core::integrations::revocations;
use tower_sessions::Session;

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

fn see_other(to: String) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

pub async fn callback(
    State(state): State<AppState>,
    session: Session,
    Query(params): Query<CallbackParams>,
    req: Request,
) -> Response {
    let unavailable = |e: &dyn std::fmt::Debug| {
        tracing::warn!(error = ?e, "integration callback failed");
        plain(StatusCode::SERVICE_UNAVAILABLE, "The connection could not be finished. Try again in a moment.")
    };
    let user = match app::ssr::current_user(&state, &session).await {
        Ok(Some(user)) => user,
        Ok(None) => return see_other("/login?next=/workspaces".into()),
        Err(e) => return unavailable(&e),
    };
    let Some(binding) = session.id().map(|id| id.to_string().into_bytes()) else {
        return see_other("/login?next=/workspaces".into());
    };
    let (parts, _) = req.into_parts();
    let origin = app::ssr::origin_of(&state, &parts);
    let audit = app::ssr::audit_as(&state, &origin, &user);
    let signed_in_with = match app::ssr::signed_in_with(&session).await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let mut conn = match state.pool.get().await {
        Ok(conn) => conn,
        Err(e) => return unavailable(&e),
    };
    let now = state.clock.now();
    let finished = match connect::finish(
        &mut conn,
        &audit,
        &state.keyring,
        &state.integrations,
        user.id,
        signed_in_with,
        &binding,
        &params,
        now,
    )
    .await
    {
        Ok(finished) => finished,
        Err(e) => return unavailable(&e),
    };
    if let Some(queued) = finished.replaced {
        // The connection this one replaced: revoked now if the provider answers, else later.
        let _ = revocations::attempt(&mut conn, &audit, &state.keyring, &state.integrations, queued, now).await;
    }
    let Some(slug) = finished.slug else {
        return plain(
            StatusCode::BAD_REQUEST,
            "That connection attempt is not known, was already used, or belongs to another browser session. \
             Nothing was connected. Go back to the workspace's integrations page and start again.",
        );
    };
    let provider = finished.provider.unwrap_or_default();
    let outcome = match finished.result {
        Ok(()) => "connected=1".to_string(),
        Err(reason) => {
            let name = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            format!("refused={name}")
        }
    };
    see_other(format!("/w/{slug}/integrations?{outcome}&provider={provider}#{provider}"))
}
