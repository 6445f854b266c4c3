//! Periodic clean-up of data that no longer matters.

use std::time::Duration;

use fluxi_core::accounts::SignInThrottle;
use fluxi_core::clock::SharedClock;
use fluxi_core::db::Pool;
use fluxi_core::sessions::delete_expired_sessions;

/// Deletes expired sessions and sign-in failure counts that no longer matter, and erases
/// the bodies of finished mails that still have them, every `every`, in the background.
pub fn spawn(pool: Pool, clock: SharedClock, throttle: SignInThrottle, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = clock.now();
            cleaned(
                "expired sessions removed",
                "expired-session cleanup failed",
                delete_expired_sessions(&pool, now).await,
            );
            let mut conn = match pool.get().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "cleanup round cut short: no database connection");
                    continue;
                }
            };
            cleaned(
                "stale sign-in failure counts removed",
                "sign-in failure cleanup failed",
                fluxi_core::accounts::delete_stale_sign_in_failures(&mut conn, &throttle, now).await,
            );
            cleaned(
                "browsers and networks not signed in from for 180 days forgotten",
                "familiar-place cleanup failed",
                fluxi_core::accounts::familiar::forget_stale(&mut conn, now).await,
            );
            cleaned(
                "finished rate-limit windows removed",
                "rate-limit cleanup failed",
                fluxi_core::rate_limit::delete_finished(&mut conn, now).await,
            );
            cleaned(
                "mailed links expired for a week removed",
                "mailed-link cleanup failed",
                fluxi_core::accounts::links::delete_expired(&mut conn, now - time::Duration::days(7)).await,
            );
            cleaned(
                "unfinished sign-ups expired for a day removed",
                "pending sign-up cleanup failed",
                fluxi_core::accounts::sign_up::delete_expired_sign_ups(&mut conn, now - time::Duration::days(1)).await,
            );
            cleaned(
                "unanswered passkey ceremonies removed",
                "passkey ceremony cleanup failed",
                fluxi_core::passkeys::delete_expired_challenges(&mut conn, now).await,
            );
            cleaned(
                "old workspace creations forgotten",
                "workspace creation log cleanup failed",
                fluxi_core::workspaces::delete_old_workspace_creations(&mut conn, now).await,
            );
            cleaned(
                "bodies of finished mails erased (marked by an older server version)",
                "outbox body cleanup failed",
                fluxi_core::outbox::erase_finished_bodies(&mut conn).await,
            );
        }
    })
}

/// Logs one clean-up step's outcome: how many rows it handled (when any), or why it failed
/// (the next round tries again).
fn cleaned(done: &str, failed: &str, outcome: Result<usize, impl std::fmt::Display>) {
    match outcome {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "{done}"),
        Err(e) => tracing::warn!(error = %e, "{failed}"),
    }
}
