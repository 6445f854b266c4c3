//! Integrations upkeep, every `every`: revokes disconnected integrations at their
//! providers (the due rows of the revocation queue, `fluxi_core::integrations::revocations`,
//! each by exactly one instance: row locks with SKIP LOCKED), and refreshes the access
//! tokens of connections in use ahead of expiry (`fluxi_core::integrations::refresh_due`,
//! through each connection's refresh lease).

use std::time::Duration;

use fluxi_core::audit::{Audit, SystemJob};
use fluxi_core::clock::SharedClock;
use fluxi_core::db::Pool;
use fluxi_core::integrations::Integrations;
use fluxi_core::secrets::Keyring;

/// Most revocations worked on per round (each may wait up to the HTTP timeout).
const PER_ROUND: usize = 50;

pub fn spawn(
    pool: Pool,
    clock: SharedClock,
    keyring: Keyring,
    integrations: Integrations,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let mut conn = match pool.get().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "integration revocations skipped: no database connection");
                    continue;
                }
            };
            let audit = Audit::system(SystemJob::IntegrationRevoker, clock.as_ref());
            let now = clock.now();
            match fluxi_core::integrations::revocations::run_due(
                &mut conn,
                &audit,
                &keyring,
                &integrations,
                now,
                PER_ROUND,
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(worked_on = n, "integration revocations tried"),
                Err(e) => tracing::warn!(error = %e, "integration revocation round failed"),
            }
            let audit = Audit::system(SystemJob::IntegrationRefresher, clock.as_ref());
            match fluxi_core::integrations::refresh_due(&mut conn, &audit, &keyring, &integrations, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(refreshed = n, "integration access tokens refreshed ahead of expiry"),
                Err(e) => tracing::warn!(error = %e, "integration refresh round failed"),
            }
        }
    })
}
