//! Catching up workspace schemas whose tenant migration lags behind.

use std::time::Duration;

use fluxi_core::db::Pool;

/// Brings lagging workspace schemas up to date in the background, every `every`: one
/// whose migration failed at start-up (a lock wait, say) answers 503 only until the next
/// round, and one created by an instance of an older version during a rolling deploy is
/// caught up too. When nothing is pending a round is one query.
pub fn spawn(pool: Pool, concurrency: usize, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await; // the first tick is immediate; start-up has just migrated
        loop {
            tick.tick().await;
            match fluxi_core::tenancy::migrations::migrate_fleet(&pool, concurrency).await {
                Ok(report) => {
                    if report.migrated > 0 {
                        tracing::info!(migrated = report.migrated, "lagging workspace schemas migrated");
                    }
                    if !report.failed.is_empty() {
                        // Each failure was logged with its reason by the runner.
                        tracing::error!(
                            failed = report.failed.len(),
                            "workspace schemas still behind; they answer 503 until migrated"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "fleet catch-up round failed"),
            }
        }
    })
}
